-- tests/scripts/gdb_loop.lua - a task stuck in a Lua dead loop three
-- functions deep, for tests/lua/gdb_spec.lua (the line numbers matter).
-- luacheck: globals spin_outer
io.stdout:setvbuf("no")
local event = require "event"

-- The loop on one line and its counter a parameter: gdb may stop it at
-- any instruction, the jump back to its start included (then the pc it
-- reads is the start's: the line and the active locals stay the same).
local function spin_inner(turns)
  while true do turns = turns + 1 end
end

local function spin_middle()
  spin_inner(0)
end

function spin_outer()
  spin_middle()
end

event.fork(function()
  print("ready")
  spin_outer()
end)
