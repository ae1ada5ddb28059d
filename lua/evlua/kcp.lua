-- evlua/kcp.lua - KCP (reliable, ordered delivery over UDP) sessions as
-- channels (docs/kcp.md). The engine and the sessions are C
-- (src/core/kcp.c, src/core/kcpnet.c, src/lua/lkcp.c); each session is a
-- stream like a TCP connection's, so a channel class, its callbacks,
-- waiting reads, backpressure and evlua.rpc work on it unchanged.
--
--   local l = kcp.listen("127.0.0.1", 0, function(_, ch)
--     local msg = ch:wait_message()
--     ch:write(msg)
--   end)
--   local ch = kcp.connect("127.0.0.1", l:port())

local core = require "evlua.core"
local event = require "event"
local errors = require "evlua.errors"
local net = require "evlua.net"

local argerror, fail = errors.argerror, errors.fail
local check_class, check_port = net.check_class, net.check_port

local kcp = {}

kcp.MTU_MAX = 1500   -- kcp-go reads 1500-byte datagrams

--[[ Options =================================================================]]

-- name -> { lowest, highest } (integers); stream is a boolean.
local RANGES = {
  nodelay = { 0, 2 }, interval = { 10, 5000 }, resend = { 0, 0x7fffffff },
  nc = { 0, 1 }, sndwnd = { 1, 32768 }, rcvwnd = { 1, 32768 },
  mtu = { 25, kcp.MTU_MAX }, dead_link = { 1, 0x7fffffff },
  max_sessions = { 1, 1 << 24 }, max_accept_rate = { 1, 1 << 24 },
}
-- Options of the channels rather than of the engine.
local CHANNEL = { max_input = true, high_water = true, low_water = true }

local function check_opts(opts, argn, fname, extra)
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    argerror(argn, fname, "table expected, got " .. type(opts), 2)
  end
  for k, v in pairs(opts) do
    local range = RANGES[k]
    if range then
      if math.type(v) ~= "integer" or v < range[1] or v > range[2] then
        argerror(argn, fname, ("%s must be an integer from %d to %d")
                 :format(k, range[1], range[2]), 2)
      end
    elseif k == "stream" then
      if type(v) ~= "boolean" then
        argerror(argn, fname, "stream must be a boolean", 2)
      end
    elseif CHANNEL[k] then
      if math.type(v) ~= "integer" or v < 1 then
        argerror(argn, fname, k .. " must be a positive integer", 2)
      end
    elseif not (extra and extra[k]) then
      argerror(argn, fname, "unknown option '" .. tostring(k) .. "'", 2)
    end
  end
  return opts
end

-- The channel options in opts, applied before init() runs (as a class's
-- own limits are).
local function channel_limits(opts)
  if opts.max_input or opts.high_water or opts.low_water then
    return { max_input = opts.max_input, high_water = opts.high_water,
             low_water = opts.low_water }
  end
end

local function start(class, stream, limits)
  local ch = class._wrap(class, stream)
  if limits then ch:set_limits(limits) end
  return ch:_start()
end

--[[ Listening ===============================================================]]

-- A new session: its channel, init(), then accept_cb in a task of its own
-- (none without accept_cb, as for event.listen).
local function on_session(_, ctx, stream)
  local ch = start(ctx.class, stream, ctx.limits)
  local accept = ctx.accept
  if accept then event.fork(accept, ctx.listener, ch) end
end

local Listener = {}
Listener.__index = Listener
Listener.__name = "evlua.kcp.listener"

-- listener:port() -> the local UDP port | nil, "closed"
function Listener:port() return self._l:port() end

-- listener:stats() -> { datagrams, dropped, drop_short, drop_cmd,
-- drop_len, drop_conv, drop_no_session, drop_limit, drop_rate, drop_engine,
-- accepted, sessions, wakeups, sent, send_errors } | nil, "closed"
function Listener:stats() return self._l:stats() end

-- listener:close(): no new sessions; the open ones go on, and the socket
-- closes with the last of them. Idempotent.
function Listener:close() self._l:close() end
Listener.__close = Listener.close

function Listener:__tostring() return tostring(self._l) end

-- kcp.listen(ip, port, accept_cb | nil [, class [, opts]]) -> listener |
-- nil, err, code. One UDP socket for every session; a datagram from a new
-- address or conv opens a session with that conv. opts: nodelay,
-- interval, resend, nc, sndwnd, rcvwnd, mtu, stream, dead_link,
-- max_sessions, max_accept_rate (new sessions per second), and
-- max_input, high_water, low_water for the channels.
function kcp.listen(ip, port, accept_cb, class, opts)
  if type(ip) ~= "string" then
    argerror(1, "listen", "string expected, got " .. type(ip))
  end
  check_port(port, 2, "listen")
  if accept_cb ~= nil and type(accept_cb) ~= "function" then
    argerror(3, "listen", "function or nil expected, got " .. type(accept_cb))
  end
  class = check_class(class, 4, "listen")
  opts = check_opts(opts, 5, "listen")
  if ip == "localhost" then ip = "127.0.0.1" end
  if not core.numeric_host(ip) or ip:sub(1, 5) == "unix:" then
    return fail("bad_address", "kcp.listen needs a numeric address or \"*\"")
  end
  local ctx = { accept = accept_cb, class = class,
                limits = channel_limits(opts) }
  local l, err, code = core.kcp_listen(ip, port, opts, on_session, ctx)
  if not l then return nil, err, code end
  local self = setmetatable({ _l = l }, Listener)
  ctx.listener = self
  return self
end

--[[ Connecting ==============================================================]]

local CONNECT_EXTRA = { conv = true }

-- kcp.connect(host, port [, class [, opts]]) -> channel | nil, err, code.
-- KCP has no handshake: the channel is open at once, and the server sees
-- the session with the first data. A host name is resolved with event.dns
-- (then in a coroutine). opts: those of kcp.listen but max_sessions and
-- max_accept_rate, and
-- conv (else a random one).
function kcp.connect(host, port, class, opts)
  if type(host) ~= "string" then
    argerror(1, "connect", "string expected, got " .. type(host))
  end
  check_port(port, 2, "connect")
  class = check_class(class, 3, "connect")
  opts = check_opts(opts, 4, "connect", CONNECT_EXTRA)
  local conv = opts.conv
  if conv == nil then
    conv = math.random(1, 0xffffffff)
  elseif math.type(conv) ~= "integer" or conv < 0 or conv > 0xffffffff then
    argerror(4, "connect", "conv must be an integer from 0 to 0xffffffff")
  end
  if opts.max_sessions ~= nil or opts.max_accept_rate ~= nil then
    argerror(4, "connect", "max_sessions and max_accept_rate are a "
             .. "listener's options")
  end
  local addr, aerr, acode = net.one_address(host)
  if not addr then return nil, aerr, acode end
  local stream, err, code = core.kcp_connect(addr, port, opts, conv)
  if not stream then return nil, err, code end
  return start(class, stream, channel_limits(opts))
end

return kcp
