-- bench/redis.lua - Redis GET and SET through evlua.redis, to set beside
-- redis-benchmark on the same server (bench/run.sh, BENCH_ONLY=redis).
--   evlua bench/redis.lua MODE PORT SECONDS [N]
-- MODE:
--   single      one coroutine: a command, wait for its reply, repeat
--               (redis-benchmark -c 1)
--   concurrent  N coroutines sharing one client, each looping on a
--               command (redis-benchmark -c N; here one connection)
--   clients     N clients (N connections), one coroutine each
--               (redis-benchmark -c N: the same connections)
--   pipelined   one coroutine sending pipelines of N commands
--               (redis-benchmark -c 1 -P N)
-- Like redis-benchmark without -r, every command uses the key
-- "key:__rand_int__" and a 3-byte value. After a 0.2 s warm-up, SET then
-- GET run for SECONDS each; one line per command: "<mode> set <ops/s>".
local event = require "event"
local redis = require "evlua.redis"

io.stdout:setvbuf("line")

local KEY, VALUE = "key:__rand_int__", "xxx"
local WARMUP = 0.2

local function check(value, err)
  if value == nil and err then error("redis: " .. err, 0) end
end

local function single(r, cmd, deadline)
  local count = 0
  local op = cmd == "set" and function() return r:set(KEY, VALUE) end
                          or function() return r:get(KEY) end
  repeat
    for _ = 1, 100 do check(op()) end
    count = count + 100
  until event.now() >= deadline
  return count
end

local function concurrent(r, cmd, deadline, n)
  local count = 0
  local function worker()
    repeat
      if cmd == "set" then check(r:set(KEY, VALUE)) else check(r:get(KEY)) end
      count = count + 1
    until event.now() >= deadline
  end
  local tasks = {}
  for i = 1, n do tasks[i] = event.fork(worker) end
  for i = 1, n do
    local ok, err = tasks[i]:join()
    if not ok then error(err, 0) end
  end
  return count
end

-- r is a list of clients here, one coroutine on each
local function clients(list, cmd, deadline)
  local count = 0
  local tasks = {}
  for i, r in ipairs(list) do
    tasks[i] = event.fork(function()
      local c = single(r, cmd, deadline)
      count = count + c
    end)
  end
  for i = 1, #tasks do
    local ok, err = tasks[i]:join()
    if not ok then error(err, 0) end
  end
  return count
end

local function pipelined(r, cmd, deadline, n)
  local count = 0
  local fill = cmd == "set"
    and function(p) for _ = 1, n do p:set(KEY, VALUE) end end
    or function(p) for _ = 1, n do p:get(KEY) end end
  repeat
    local results, err = r:pipeline(fill)
    if not results then error("redis: " .. err, 0) end
    count = count + results.n
  until event.now() >= deadline
  return count
end

local modes = { single = single, concurrent = concurrent, clients = clients,
                pipelined = pipelined }

local mode, port, seconds, n = arg[1], tonumber(arg[2]), tonumber(arg[3]),
  math.tointeger(tonumber(arg[4] or 1))
local run = modes[mode]
if not run or not port or not seconds then
  io.stderr:write("usage: evlua bench/redis.lua single|concurrent|clients|pipelined "
                  .. "PORT SECONDS [N]\n")
  os.exit(2)
end

local function connect()
  return assert(redis.connect({ port = math.tointeger(port) }))
end
local r
if mode == "clients" then
  r = {}
  for i = 1, n do r[i] = connect() end
else
  r = connect()
end
for _, cmd in ipairs({ "set", "get" }) do
  event.update_now()
  run(r, cmd, event.now() + WARMUP, n)
  event.update_now()
  local t0 = event.time()
  local count = run(r, cmd, t0 + seconds, n)
  print(("%s %s %.0f"):format(mode, cmd, count / (event.time() - t0)))
end
if mode == "clients" then
  for _, c in ipairs(r) do c:close() end
else
  r:close()
end
