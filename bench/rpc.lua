-- bench/rpc.lua - MessagePack-RPC benchmarks for evlua (compare
-- bench/c/rpc.c, and bench/c/echo.c for the ping-pong baseline).
--   server PORT                  rpc server on 127.0.0.1:PORT (0: a free
--                                port) whose "echo" handler returns its
--                                argument; prints "port N pid P", serves
--                                until killed
--   sequential PORT SECONDS      one coroutine: ch:call("echo", payload),
--                                wait for the result, repeat
--   pipelined PORT SECONDS DEPTH DEPTH coroutines, each looping on
--                                ch:call("echo", payload), so DEPTH calls
--                                are in flight at all times
-- The payload is a 64-byte string. A client prints one line,
--   "<mode> <calls/s> cpu <fraction of one core this process used>"
-- after a short warm-up and a timed run of SECONDS, then closes.
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

-- CPU seconds (user + system) this process has used so far.
local ticks_per_second
local function cpu_seconds()
  if not ticks_per_second then
    local getconf = io.popen("getconf CLK_TCK")
    ticks_per_second = getconf and getconf:read("n") or 100
    if getconf then getconf:close() end
  end
  local f = assert(io.open("/proc/self/stat"))
  local stat = f:read("a")
  f:close()
  -- fields after the ")" that ends the command name: state is field 3,
  -- utime and stime are fields 14 and 15
  local rest = stat:match("%) (.*)")
  local fields = {}
  for word in rest:gmatch("%S+") do fields[#fields + 1] = word end
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

local function client(mode, port, seconds, depth)
  seconds = tonumber(seconds)
  depth = math.tointeger(tonumber(depth)) or 1
  local ch = connect(port)
  run_calls(ch, depth, event.time() + WARMUP)
  event.update_now()
  local cpu0, t0 = cpu_seconds(), event.time()
  local n = run_calls(ch, depth, t0 + seconds)
  local dt, cpu = event.time() - t0, cpu_seconds() - cpu0
  print(("%s %.0f cpu %.2f"):format(mode, n / dt, cpu / dt))
  ch:close()
end

local modes = {
  server = server,
  sequential = function(port, seconds) client("sequential", port, seconds, 1) end,
  pipelined = function(port, seconds, depth)
    client("pipelined", port, seconds, depth or 64)
  end,
}
local mode = modes[arg[1]]
if not mode then
  io.stderr:write("usage: evlua bench/rpc.lua server PORT | sequential PORT "
                  .. "SECONDS | pipelined PORT SECONDS DEPTH\n")
  os.exit(2)
end
mode(select(2, ...))
