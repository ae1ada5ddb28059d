-- tests/scripts/gdb_idle.lua - an idle process with parked coroutines
-- (one in event.sleep, one reading a channel), for tests/lua/gdb_spec.lua.
io.stdout:setvbuf("no")
local event = require "event"

local function nap_for_long()
  event.sleep(3600)
end

local function read_quiet_peer(ch)
  local line = ch:wait_line()
  return line
end

local listener = assert(event.listen("127.0.0.1", 0, function() end))
event.fork(function()
  local ch = assert(event.connect("127.0.0.1", listener:port()))
  event.fork(nap_for_long)
  event.fork(read_quiet_peer, ch)
  event.sleep(0)   -- both are parked before the test looks
  print("ready")
end)
