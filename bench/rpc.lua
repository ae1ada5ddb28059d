-- bench/rpc.lua - MessagePack-RPC benchmarks for evlua (compare
-- bench/c/rpc.c, and bench/c/echo.c for the ping-pong baseline).
--   server PORT                  rpc server on 127.0.0.1:PORT (0: a free
--                                port) whose "echo" handler returns its
--                                argument; prints "port N pid P", serves
--                                until killed
--   sequential PORT SECONDS [SERVER_PID]
--                                one coroutine: ch:call("echo", payload),
--                                wait for the result, repeat
--   pipelined PORT SECONDS DEPTH [SERVER_PID]
--                                DEPTH coroutines, each looping on
--                                ch:call("echo", payload), so DEPTH calls
--                                are in flight at all times
-- The payload is a 64-byte string. After a 0.2 s warm-up and a timed run
-- of SECONDS a client prints one line and closes:
--   "<mode> <calls/s> cpu <F> [server_cpu <F>]"
-- F: CPU time (user + system) over the timed run's wall time, for this
-- process and (given its pid) the server: 1.00 is one core kept busy.
local event = require "event"
local rpc = require "evlua.rpc"

io.stdout:setvbuf("line")   -- run.sh reads our lines through a pipe

local PAYLOAD = ("p"):rep(64)
local WARMUP = 0.2          -- seconds of calls before the clock starts

local handlers = {
  echo = function(_, value) return value end,
}

local function server(port)
  local listener = assert(rpc.listen("127.0.0.1",
                                     math.tointeger(tonumber(port)) or 0,
                                     handlers, nil, { backlog = 4096 }))
  local f = assert(io.open("/proc/self/stat"))
  local pid = f:read("n")
  f:close()
  print(("port %d pid %d"):format(listener:port(), pid))
end

-- CPU seconds (user + system) process `pid` ("self" by default) has used
-- so far, from /proc/PID/stat.
local ticks_per_second
local function cpu_seconds(pid)
  if not ticks_per_second then
    local getconf = io.popen("getconf CLK_TCK")
    ticks_per_second = getconf and getconf:read("n") or 100
    if getconf then getconf:close() end
  end
  local f = assert(io.open("/proc/" .. (pid or "self") .. "/stat"))
  local stat = f:read("a")
  f:close()
  -- the fields after the ")" that ends the command name start with
  -- field 3 (state); utime and stime are fields 14 and 15
  local fields = {}
  for word in stat:match("%) (.*)"):gmatch("%S+") do
    fields[#fields + 1] = word
  end
  return (tonumber(fields[12]) + tonumber(fields[13])) / ticks_per_second
end

local function connect(port)
  return assert(rpc.connect("127.0.0.1", math.tointeger(tonumber(port))))
end

-- `depth` coroutines each call echo until `deadline`; returns the number
-- of calls completed.
local function run_calls(ch, depth, deadline)
  local count = 0
  local function caller()
    repeat
      local result, err = ch:call("echo", PAYLOAD)
      if result ~= PAYLOAD then error("echo failed: " .. tostring(err)) end
      count = count + 1
    until event.now() >= deadline
  end
  local tasks = {}
  for i = 1, depth do tasks[i] = event.fork(caller) end
  for i = 1, depth do
    local ok, err = tasks[i]:join()
    if not ok then error(err, 0) end
  end
  return count
end

-- With the server's process id, its CPU use over the same timed run is
-- printed too ("server_cpu F").
local function client(mode, port, seconds, depth, server_pid)
  seconds = tonumber(seconds)
  local ch = connect(port)
  run_calls(ch, depth, event.time() + WARMUP)
  event.update_now()
  local cpu0 = cpu_seconds()
  local server0 = server_pid and cpu_seconds(server_pid)
  local t0 = event.time()
  local n = run_calls(ch, depth, t0 + seconds)
  local dt = event.time() - t0
  local line = ("%s %.0f cpu %.2f"):format(mode, n / dt,
                                           (cpu_seconds() - cpu0) / dt)
  if server_pid then
    line = line .. (" server_cpu %.2f"):format(
      (cpu_seconds(server_pid) - server0) / dt)
  end
  print(line)
  ch:close()
end

local modes = {
  server = server,
  sequential = function(port, seconds, server_pid)
    client("sequential", port, seconds, 1, server_pid)
  end,
  pipelined = function(port, seconds, depth, server_pid)
    client("pipelined", port, seconds, math.tointeger(tonumber(depth)),
           server_pid)
  end,
}
local mode = modes[arg[1]]
if not mode then
  io.stderr:write("usage: evlua bench/rpc.lua server PORT | sequential PORT "
                  .. "SECONDS [SERVER_PID] | pipelined PORT SECONDS DEPTH "
                  .. "[SERVER_PID]\n")
  os.exit(2)
end
mode(select(2, ...))
