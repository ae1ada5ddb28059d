-- tests/scripts/crash_fault.lua KIND - crash in C (core.crash_for_test,
-- there with EVLUA_TEST_CRASH=1) from Lua two functions deep in a task,
-- for tests/lua/crash_spec.lua.
-- luacheck: globals crash_outer
local core = require "evlua.core"
local event = require "event"

local function faulting_helper(kind)
  core.crash_for_test(kind)
end

function crash_outer(kind)
  faulting_helper(kind)
end

event.fork(function()
  crash_outer(arg[1])
end)
