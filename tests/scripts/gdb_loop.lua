-- tests/scripts/gdb_loop.lua - a task stuck in a Lua dead loop three
-- functions deep, for tests/lua/gdb_spec.lua (the line numbers matter).
io.stdout:setvbuf("no")
local event = require "event"

local function spin_inner()
  local turns = 0
  while true do
    turns = turns + 1
  end
end

local function spin_middle()
  spin_inner()
end

function spin_outer()
  spin_middle()
end

event.fork(function()
  print("ready")
  spin_outer()
end)
