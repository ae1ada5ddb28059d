-- bench/echo.lua - channel benchmarks for evlua (compare bench/c/echo.c).
--   server PORT             echo server on 127.0.0.1:PORT (0: a free port);
--                           prints "port N", echoes until killed
--   throughput PORT MIB     stream MIB MiB to the server while reading the
--                           echo back; prints "throughput MiB/s"
--   pingpong PORT SECONDS   64-byte message, wait for its echo, repeat;
--                           prints "pingpong round-trips/s"
--   memory N [STYLE]        echo server that measures what N idle
--                           connections cost (see below)
-- The server is written the way a callback-style evlua service would be:
-- data() writes back what arrived, and stops taking input while the send
-- queue is above its high-water mark, until drain().
local event = require "event"
local core = require "evlua.core"
local Channel = require "evlua.channel"

io.stdout:setvbuf("line")   -- run.sh reads our lines through a pipe

local Echo = Channel:inherit()

function Echo:data()
  if self.blocked then return end   -- the input waits in the buffer
  local bytes = self:read()
  if bytes and self:write(bytes) == false then self.blocked = true end
end

function Echo:drain()
  self.blocked = false
  self:data()
end

local function listen(port, class, accept_cb)
  return assert(event.listen("127.0.0.1", port, accept_cb, class,
                             { backlog = 4096 }))
end

local function server(port)
  local listener = listen(math.tointeger(tonumber(port)) or 0, Echo,
                          function() end)
  print("port " .. listener:port())
end

local function connect(port)
  return assert(event.connect("127.0.0.1", math.tointeger(tonumber(port))))
end

-- A writer coroutine streams the bytes (waiting whenever the send queue
-- is full) while this one reads the echo back.
local function throughput(port, mib)
  mib = tonumber(mib)
  local total = math.floor(mib * 1024 * 1024)
  local chunk = ("x"):rep(64 * 1024)
  local ch = connect(port)
  local t0 = event.time()
  local writer = event.fork(function()
    local left = total
    while left > 0 do
      local part = left >= #chunk and chunk or chunk:sub(1, left)
      assert(ch:write(part))
      left = left - #part
    end
  end)
  local got = 0
  while got < total do
    local bytes = assert(ch:wait_read())
    got = got + #bytes
  end
  local dt = event.time() - t0
  assert(got == total, "more bytes came back than were sent")
  assert(writer:join())
  print(("throughput %.1f"):format(mib / dt))
  ch:close()
end

local function pingpong(port, seconds)
  seconds = tonumber(seconds)
  local msg = ("p"):rep(64)
  local ch = connect(port)
  local n = 0
  local t0 = event.time()
  local deadline = t0 + seconds
  repeat
    ch:write(msg)
    assert(ch:wait_read(64))
    n = n + 1
  until event.now() >= deadline
  print(("pingpong %.0f"):format(n / (event.time() - t0)))
  ch:close()
end

--[[ Memory per idle connection ==============================================
memory N [STYLE]: listen and print "port P"; wait for a line "measure" on
stdin (run.sh sends it once the client has said all N connections are
up), then for the N-th accept; then print the growth since start-up:
  lua   bytes of Lua heap per connection (collectgarbage "count")
  heap  bytes malloc handed out per connection (core.c_heap(); the Lua
        heap is malloc'd too, so this is Lua and C together)
  rss   resident bytes per connection (/proc/self/statm)
STYLE "callback" (default): Echo, nothing runs per connection while idle.
STYLE "coroutine": every accept_cb stays in a loop on ch:wait_read(), so
each idle connection also holds a parked coroutine.
=============================================================================]]

local page_size

local function rss_bytes()
  local f = assert(io.open("/proc/self/statm"))
  local _, resident = f:read("n", "n")
  f:close()
  return resident * page_size
end

local function snapshot()
  collectgarbage("collect")
  collectgarbage("collect")
  return { lua = collectgarbage("count") * 1024, heap = core.c_heap(),
           rss = rss_bytes() }
end

local function memory(n, style)
  n = math.tointeger(tonumber(n))
  style = style or "callback"
  local accepted, closed, all_in = 0, 0, {}
  local class = Echo:inherit()
  function class:disconnect() closed = closed + 1 end
  local function counted()
    accepted = accepted + 1
    if accepted == n then event.wakeup(all_in) end
  end
  local accept_cb = counted
  if style == "coroutine" then
    accept_cb = function(_, ch)
      counted()
      while true do
        local bytes = ch:wait_read()
        if not bytes then break end
        ch:write(bytes)
      end
    end
  end
  local getconf = io.popen("getconf PAGESIZE")
  page_size = assert(getconf:read("n"))
  getconf:close()
  local control = event.bind(0)
  local listener = listen(0, class, accept_cb)
  local before = snapshot()
  print("port " .. listener:port())
  local line = control:wait_line(60)
  assert(line == "measure", "expected 'measure' on stdin, got "
         .. tostring(line))
  if accepted < n then assert(event.wait(all_in, 60), "accepts missing") end
  assert(closed == 0, "connections closed while idle")
  local after = snapshot()
  for _, k in ipairs({ "lua", "heap", "rss" }) do
    print(("%s %.0f"):format(k, (after[k] - before[k]) / n))
  end
  os.exit(0)
end

local modes = { server = server, throughput = throughput,
                pingpong = pingpong, memory = memory }
local mode = modes[arg[1]]
if not mode then
  io.stderr:write("usage: evlua bench/echo.lua server PORT | throughput "
                  .. "PORT MIB | pingpong PORT SECONDS | memory N [STYLE]\n")
  os.exit(2)
end
mode(select(2, ...))
