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
event.timer(0.001, function() end)        -- still running at exit
event.fork(function() event.wait("forever") end)
event.timeout(0.01, function() event.breakout() end)
event.sleep(0.005)
print("churned", N)
