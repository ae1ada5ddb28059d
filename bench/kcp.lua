-- bench/kcp.lua - the evlua side of the KCP benchmark (bench/run.sh), with
-- the settings of kcp-go's fast mode (nodelay 1, interval 10, resend 2,
-- nc 1) and windows of WND:
--   evlua bench/kcp.lua server WND [stream]     prints "port N", echoes
--   evlua bench/kcp.lua pingpong PORT SECONDS   64-byte round trips
--   evlua bench/kcp.lua bulk PORT BYTES         stream mode, echoed back
--   evlua bench/kcp.lua idle N SECONDS          N idle sessions (listener and
--                                               clients in this process):
--                                               "idle_cpu P" (% of a core)
-- The clients print what bench/run.sh reads: "pingpong N round trips/s",
-- "ok bulk N bytes ... X MB/s", as tests/peers/kcp_peer.go does.
local event = require "event"
local kcp = require "evlua.kcp"
local Channel = require "evlua.channel"

local mode = arg[1]

local function options(wnd, stream)
  return { nodelay = 1, interval = 10, resend = 2, nc = 1,
           sndwnd = wnd, rcvwnd = wnd, stream = stream or nil }
end

local Echo = Channel:inherit()
function Echo:data()
  local bytes = self:read()
  if bytes and #bytes > 0 then self:write(bytes) end
end

local MessageEcho = Channel:inherit()
function MessageEcho:data()
  for msg in function() return self:read_message() end do self:write(msg) end
end

if mode == "server" then
  local stream = arg[3] == "stream"
  local l = assert(kcp.listen("127.0.0.1", 0, nil,
                              stream and Echo or MessageEcho,
                              options(tonumber(arg[2]), stream)))
  io.stdout:write("port ", l:port(), "\n")
  io.stdout:flush()
elseif mode == "pingpong" then
  local ch = assert(kcp.connect("127.0.0.1", tonumber(arg[2]), nil, options(128)))
  local msg, n = ("x"):rep(64), 0
  local start = event.time()
  local stop = start + tonumber(arg[3])
  while event.time() < stop do
    ch:write(msg)
    assert(ch:wait_message(5))
    n = n + 1
  end
  print(("pingpong %.0f round trips/s"):format(n / (event.time() - start)))
  ch:close_immediately()
elseif mode == "bulk" then
  local total = tonumber(arg[3])
  local ch = assert(kcp.connect("127.0.0.1", tonumber(arg[2]), nil,
                                options(1024, true)))
  local start = event.time()
  event.fork(function()
    local chunk = ("b"):rep(64 * 1024)
    local left = total
    while left > 0 do
      local n = math.min(left, #chunk)
      ch:write(n == #chunk and chunk or chunk:sub(1, n))
      left = left - n
    end
  end)
  local got = 0
  while got < total do got = got + #assert(ch:wait_read(nil, 10)) end
  local secs = event.time() - start
  print(("ok bulk %d bytes %.1f MB/s"):format(got, got / secs / 1e6))
  ch:close_immediately()
elseif mode == "idle" then
  local n, seconds = tonumber(arg[2]), tonumber(arg[3])
  local opts = options(32)
  opts.max_sessions = n
  local l = assert(kcp.listen("127.0.0.1", 0, nil, MessageEcho, opts))
  local clients = {}
  for i = 1, n do
    clients[i] = assert(kcp.connect("127.0.0.1", l:port(), nil, options(32)))
    clients[i]:write("hello")   -- opens the session on the listener's side
  end
  while l:stats().sessions < n do event.sleep(0.05) end
  event.sleep(1)                -- the greetings' acks settle
  local cpu0, t0 = os.clock(), event.time()
  event.sleep(seconds)
  print(("idle_cpu %.3f"):format((os.clock() - cpu0) / (event.time() - t0) * 100))
  os.exit(0)
else
  io.stderr:write("usage: see the head of bench/kcp.lua\n")
  os.exit(2)
end
