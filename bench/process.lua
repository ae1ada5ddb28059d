-- bench/process.lua - processes run per second with event.run_process:
-- N runs of `/bin/true` (argv, no shell), CONC of them at a time, each
-- output captured. Prints "spawns <runs/s>".
--   evlua bench/process.lua [N [CONC]]
local event = require "event"

local n = math.tointeger(tonumber(arg[1])) or 2000
local conc = math.tointeger(tonumber(arg[2])) or 16
local left = n

local function worker()
  while left > 0 do
    left = left - 1
    local out, status = event.run_process({ "/bin/true" })
    assert(out == "" and status.code == 0, "a run failed")
  end
end

event.update_now()
local t0 = event.now()
local tasks = {}
for i = 1, conc do tasks[i] = event.fork(worker) end
for i = 1, conc do assert(tasks[i]:join()) end
event.update_now()
print(("spawns %.0f"):format(n / (event.now() - t0)))
