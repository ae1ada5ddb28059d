-- tests/scripts/profile_hot.lua - a known CPU workload for profiler_spec:
-- hot() takes about 80 % of the CPU time, cold() about 20 % (the same loop
-- with no calls in it, four calls of hot to one of cold). As a script,
-- `evlua --profile=FILE tests/scripts/profile_hot.lua [units]` runs
-- `units` rounds (10); dofile returns the functions.
local M = {}

function M.hot(n)
  local x = 0
  for i = 1, n do x = (x + i * 7) % 1000003 end
  return x
end

function M.cold(n)
  local x = 0
  for i = 1, n do x = (x + i * 7) % 1000003 end
  return x
end

-- The 80/20 workload: rounds of 4 hot(n) to 1 cold(n).
function M.run(units, n)
  local hot, cold = M.hot, M.cold
  for _ = 1, units do
    for _ = 1, 4 do hot(n) end
    cold(n)
  end
end

if arg and arg[0] and arg[0]:match("profile_hot%.lua$") then
  M.run(tonumber(arg[1]) or 10, 1000000)
end
return M
