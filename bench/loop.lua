-- bench/loop.lua - loop benchmarks for evlua (compare bench/c/loop_bench.c).
--   switches : 1000 coroutines doing event.sleep(0) (yield and resume)
--   timers   : event.timeout(...) + timer:cancel() pairs
--   expiries : one-shot timers due at once, each callback in a coroutine
-- Prints "name ops_per_second".
local event = require "event"

local N = tonumber(arg[1]) or 1000000

local function switches(n, k)
  local per = n // k
  local t0 = event.time()
  local handles = {}
  for i = 1, k do
    handles[i] = event.fork(function()
      for _ = 1, per do event.sleep(0) end
    end)
  end
  for i = 1, k do handles[i]:join() end
  return per * k / (event.time() - t0)
end

local function timers(n)
  local function never() error("fired") end
  local timeout = event.timeout
  local t0 = event.time()
  for _ = 1, n do timeout(0.001, never):cancel() end
  return n / (event.time() - t0)
end

local function expiries(n)
  local fired, done = 0, {}
  local function cb()
    fired = fired + 1
    if fired == n then event.wakeup(done) end
  end
  local t0 = event.time()
  for _ = 1, n do event.timeout(0, cb) end
  event.wait(done)
  return n / (event.time() - t0)
end

collectgarbage()
print(("switches %.0f"):format(switches(2 * N, 1000)))
collectgarbage()
print(("timers %.0f"):format(timers(N)))
collectgarbage()
print(("expiries %.0f"):format(expiries(N // 5)))
