-- tests/scripts/churn.lua - creates and cancels many timers and coroutines,
-- then exits with some still pending, for leak checkers (valgrind, LSan).
local event = require "event"

local N = tonumber(arg[1]) or 20000
local fired = 0
for i = 1, N do
  local t = event.timeout(1 + i % 7, function() fired = fired + 1 end)
  if i % 10 ~= 0 then t:cancel() end      -- a tenth stays pending
end
local handles = {}
for i = 1, N do
  handles[i] = event.fork(function() return event.sleep(i % 3 == 0 and 100 or 0) end)
end
event.sleep(0)
for i = 1, N, 2 do handles[i]:cancel() end
-- Connections: echo a line over a few of them, leave some open at exit.
local Echo = require("evlua.channel"):inherit()
function Echo:data() local d = self:read() if d then self:write(d) end end
local listener = assert(event.listen("127.0.0.1", 0, function() end, Echo))
for i = 1, 50 do
  local ch = assert(event.connect("127.0.0.1", listener:port()))
  ch:write("line " .. i .. "\n")
  assert(ch:wait_line(5) == "line " .. i)
  if i % 3 == 0 then ch:close() elseif i % 3 == 1 then ch:close_immediately() end
end
event.timer(0.001, function() end)        -- still running at exit
event.fork(function() event.wait("forever") end)
event.timeout(0.01, function() event.breakout() end)
event.sleep(0.005)
print("churned", N)
