-- examples/hello.lua - coroutines and timers on one loop.
--   ./evlua examples/hello.lua [ticks]
-- Three workers sleep for different times while a repeating timer ticks;
-- the main chunk waits for all of them, then the process exits.
local event = require "event"

local ticks = tonumber(arg and arg[1]) or 5

local clock = 0
local timer = event.timer(0.1, function()
  clock = clock + 1
  print(("tick %d"):format(clock))
end)

local function worker(name, pause, rounds)
  for i = 1, rounds do
    event.sleep(pause)
    print(("%s: round %d"):format(name, i))
  end
  return name .. " finished"
end

local workers = {}
for i, pause in ipairs({ 0.07, 0.11, 0.13 }) do
  workers[i] = event.fork(worker, "worker " .. i, pause, ticks)
end

for _, w in ipairs(workers) do
  local ok, result = w:join()
  print(ok and result or ("failed: " .. tostring(result)))
end

timer:cancel()
print("done")
