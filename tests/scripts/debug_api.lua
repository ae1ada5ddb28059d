-- tests/scripts/debug_api.lua - evlua.debugger from Lua, at the terminal
-- (tests/lua/debugger_cli_spec.lua relies on the line numbers: 8 and 10
-- in work, 16 after debugger.breakpoint()).
local debugger = require "evlua.debugger"

local calls = 0
local function work(n)
  calls = calls + 1
  local doubled = n * 2
  return doubled
end

local task = debugger.debugger(work, "debug_api.lua", 8, 21)
print("joined", task:join())
debugger.breakpoint()
local after = calls * 100
print("after " .. after)
