-- tests/scripts/dns_churn.lua - resolves names every way there is, replaces
-- the resolver with requests in flight, and exits with some still pending,
-- for leak checkers (valgrind, LSan).
--   evlua dns_churn.lua REFUSED_PORT SILENT_PORT [N]
local event = require "event"
local dns = require "evlua.dns"

local refused, silent = arg[1], arg[2]
local N = tonumber(arg[3]) or 200
local silent_cfg = { servers = { "127.0.0.1:" .. silent }, timeout = 5, tries = 2 }
assert(dns.configure(silent_cfg))

local results = {}
local function count(what) results[what] = (results[what] or 0) + 1 end

-- Left waiting on the silent server: some cancelled, some timing out,
-- some still pending at exit.
local waiters = {}
for i = 1, N do
  waiters[i] = event.fork(function()
    local _, err = dns.resolve("name" .. i .. ".test", { timeout = i % 2 == 0 and 0.05 or nil })
    count(err)
  end)
end
event.sleep(0)
for i = 1, N, 4 do waiters[i]:cancel() end

-- The in-flight requests keep the old resolver alive; these go to a new one.
assert(dns.configure{ servers = { "127.0.0.1:" .. refused }, timeout = 1, tries = 2 })
local done = {}
for i = 1, N do
  event.fork(function()
    local hosts = { "localhost", "127.0.0." .. i % 256, "::" .. i, "bad..name", "gone" .. i .. ".test" }
    local list, err = dns.resolve(hosts[i % #hosts + 1])
    count(list and "ok" or err)
    if i == N then event.wakeup(done) end
  end)
end
assert(event.wait(done, 10))
event.sleep(0.1)             -- the short timeouts expire
assert(dns.configure(silent_cfg))
for i = 1, 10 do event.fork(dns.resolve, "late" .. i .. ".test") end
event.sleep(0)
local keys = {}
for k, v in pairs(results) do keys[#keys + 1] = k .. "=" .. v end
table.sort(keys)
print(table.concat(keys, " "))
event.breakout()
