-- bench/mongo.lua - MongoDB client benchmarks for evlua.mongo, to set beside
-- bench/mongo_node.js (the official Node.js driver doing the same) on the
-- same test server (bench/run.sh, BENCH_ONLY=mongo).
--   evlua bench/mongo.lua MODES PORT SECONDS [SERVER_PID]
-- MODES is a comma-separated list of (or "all"):
--   insert       one coroutine: insert_one of a new document, wait, repeat
--   insert_many  one coroutine: insert_many of 100 new documents, repeat
--                (the figure counts documents)
--   find_one     one coroutine: find_one({ _id = k }) over 1,000 documents
--   find_one_50  50 coroutines sharing the one client, each looping on
--                find_one({ _id = k })
-- Every mode starts on a dropped collection (bench.evlua); the find modes
-- first insert the 1,000 documents they read. After a warm-up of 0.25 s
-- and a timed run of SECONDS, each mode prints one line:
--   "<mode> <ops/s> cpu <F> [server_cpu <F>]"
-- F: CPU time (user + system) over the timed run's wall time, for this
-- process and (given its pid) the server: 1.00 is one core kept busy.
local event = require "event"
local mongo = require "evlua.mongo"

io.stdout:setvbuf("line")   -- run.sh reads our lines through a pipe

local WARMUP = 0.25         -- seconds of requests before the clock starts
local FIND_DOCS = 1000      -- documents the find modes read from
local BATCH = 100           -- documents per insert_many
local NAME = ("n"):rep(24)  -- every document: { [_id,] i, name, score }

local ticks_per_second
local function cpu_seconds(pid)
  if not ticks_per_second then
    local p = io.popen("getconf CLK_TCK")
    ticks_per_second = p and p:read("n") or 100
    if p then p:close() end
  end
  local f = assert(io.open("/proc/" .. (pid or "self") .. "/stat"))
  local stat = f:read("a")
  f:close()
  -- after the ")" closing the command name come fields 3 (state) on;
  -- utime and stime are fields 14 and 15
  local fields = {}
  for word in stat:match("%) (.*)"):gmatch("%S+") do fields[#fields + 1] = word end
  return (tonumber(fields[12]) + tonumber(fields[13])) / ticks_per_second
end

local function check(value, err, code)
  if value == nil and err then error(("mongo: %s (%s)"):format(err, tostring(code)), 0) end
  return value
end

-- Each mode: setup(coll) once, then run(coll, deadline) -> operations done
-- (called for the warm-up and for the timed run).
local modes = {}

local function drop(coll) check(coll:drop()) end

modes.insert = {
  setup = drop,
  run = function(coll, deadline)
    local count = 0
    repeat
      check(coll:insert_one({ i = count, name = NAME, score = 1.5 }))
      count = count + 1
    until event.now() >= deadline
    return count
  end,
}

modes.insert_many = {
  setup = drop,
  run = function(coll, deadline)
    local count = 0
    repeat
      local docs = {}
      for k = 1, BATCH do docs[k] = { i = count + k, name = NAME, score = 1.5 } end
      local r = check(coll:insert_many(docs))
      if r.inserted_count ~= BATCH then error("insert_many: " .. tostring(r.inserted_count), 0) end
      count = count + BATCH
    until event.now() >= deadline
    return count
  end,
}

local function fill(coll)
  drop(coll)
  for first = 0, FIND_DOCS - 1, BATCH do
    local docs = {}
    for k = 1, BATCH do
      docs[k] = { _id = first + k - 1, i = first + k - 1, name = NAME, score = 1.5 }
    end
    check(coll:insert_many(docs))
  end
end

-- `callers` coroutines each looping on find_one by _id until `deadline`
local function finder(callers)
  return function(coll, deadline)
    local count = 0
    local function loop(start)
      local k = start
      repeat
        local d = check(coll:find_one({ _id = k }))
        if not d or d._id ~= k then error("find_one: wrong document for _id " .. k, 0) end
        k = (k + 1) % FIND_DOCS
        count = count + 1
      until event.now() >= deadline
    end
    if callers == 1 then
      loop(0)
      return count
    end
    local tasks = {}
    for c = 1, callers do tasks[c] = event.fork(loop, (c * 20) % FIND_DOCS) end
    for c = 1, callers do
      local ok, err = tasks[c]:join()
      if not ok then error(err, 0) end
    end
    return count
  end
end

modes.find_one = { setup = fill, run = finder(1) }
modes.find_one_50 = { setup = fill, run = finder(50) }

local ORDER = { "insert", "insert_many", "find_one", "find_one_50" }

local list, port, seconds, server_pid = arg[1], math.tointeger(tonumber(arg[2])),
  tonumber(arg[3]), arg[4]
local chosen = {}
if list == "all" then
  chosen = ORDER
elseif list then
  for m in list:gmatch("[^,]+") do
    if not modes[m] then list = nil break end
    chosen[#chosen + 1] = m
  end
end
if not list or not port or not seconds then
  io.stderr:write("usage: evlua bench/mongo.lua all|MODE[,MODE...] PORT SECONDS [SERVER_PID]\n"
                  .. "  MODE: " .. table.concat(ORDER, ", ") .. "\n")
  os.exit(2)
end

local client = check(mongo.connect({ host = "127.0.0.1", port = port, appName = "bench" }))
local coll = client:collection("bench.evlua")
for _, name in ipairs(chosen) do
  local m = modes[name]
  m.setup(coll)
  event.update_now()
  m.run(coll, event.now() + WARMUP)
  event.update_now()
  local cpu0 = cpu_seconds()
  local server0 = server_pid and cpu_seconds(server_pid)
  local t0 = event.time()
  local n = m.run(coll, t0 + seconds)
  local dt = event.time() - t0
  local line = ("%s %.0f cpu %.2f"):format(name, n / dt, (cpu_seconds() - cpu0) / dt)
  if server_pid then
    line = line .. (" server_cpu %.2f"):format((cpu_seconds(server_pid) - server0) / dt)
  end
  print(line)
end
drop(coll)
client:close()
