-- evlua/udp.lua - UDP sockets (docs/udp.md). The socket itself is C
-- (src/core/udp.c, src/lua/ludp.c): recvmmsg takes many datagrams per
-- wakeup, and what one loop iteration sends leaves in one sendmmsg.
--
--   local sock = udp.bind("127.0.0.1", 0, { on_datagram = function(s, data, ip, port)
--     s:sendto(data, ip, port)
--   end })
--
-- Without on_datagram, datagrams wait in a bounded queue for
-- sock:recvfrom([timeout]) in a coroutine.

local core = require "evlua.core"
local event = require "event"
local errors = require "evlua.errors"
local net = require "evlua.net"

local argerror, fail = errors.argerror, errors.fail
local check_port = net.check_port
local udp_open = core.udp_open

local udp = {}

udp.MAX_QUEUE = 1024        -- datagrams waiting for recvfrom
udp.MAX_SEND_QUEUE = 1024   -- datagrams waiting for the socket buffer
udp.MAX_DATAGRAM = 65507    -- longer ones arrive cut, counted truncated

local Socket = {}
Socket.__index = Socket

--[[ Options =================================================================]]

local function check_count(opts, k, default, max, fname)
  local v = opts[k]
  if v == nil then return default end
  if math.type(v) ~= "integer" or v < 1 or v > max then
    argerror(3, fname, k .. " must be an integer from 1 to " .. max, 3)
  end
  return v
end

local function check_opts(opts, fname)
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    argerror(3, fname, "table expected, got " .. type(opts), 2)
  end
  for k in pairs(opts) do
    if k ~= "on_datagram" and k ~= "max_queue" and k ~= "max_send_queue"
       and k ~= "max_datagram" then
      argerror(3, fname, "unknown option '" .. tostring(k) .. "'", 2)
    end
  end
  if opts.on_datagram ~= nil and type(opts.on_datagram) ~= "function" then
    argerror(3, fname, "on_datagram must be a function", 2)
  end
  return opts
end

--[[ Receiving ===============================================================]]

-- The queue is a ring of three slots per datagram (data, ip, port) in
-- self._q, from _head to _tail.
local function enqueue(_, self, data, ip, port)
  local n = self._tail - self._head
  if n >= self._max_queue * 3 then
    self._dropped = self._dropped + 1
    return
  end
  local q, t = self._q, self._tail
  q[t], q[t + 1], q[t + 2] = data, ip, port
  self._tail = t + 3
  if n == 0 and self._reading then event.wakeup(self) end
end

local function dequeue(self)
  local q, h = self._q, self._head
  local data, ip, port = q[h], q[h + 1], q[h + 2]
  q[h], q[h + 1], q[h + 2] = nil, nil, nil
  h = h + 3
  if h == self._tail then h, self._tail = 1, 1 end
  self._head = h
  return data, ip, port
end

-- sock:recvfrom([timeout]) -> data, ip, port | nil, "timeout" |
-- nil, "closed". In a coroutine; one reader at a time.
function Socket:recvfrom(timeout)
  if self._tail > self._head then return dequeue(self) end
  if self._closed then return fail("closed") end
  if self._on_datagram then
    errors.argerror(1, "recvfrom", "the socket has an on_datagram callback")
  end
  if not event.running() then errors.need_coroutine("sock:recvfrom") end
  if self._reading then
    error("recvfrom: another coroutine is already reading this socket", 2)
  end
  self._reading = true
  local ok, err, code = event.wait_as("recvfrom", self, self, timeout)
  self._reading = false
  if self._tail > self._head then return dequeue(self) end
  if ok then return fail("closed") end
  return nil, err, code
end

--[[ Sending =================================================================]]

-- sock:sendto(data, ip, port) -> true | nil, err, code. Queued, written
-- before the loop next polls; a full queue is nil, "would block", "EAGAIN".
function Socket:sendto(data, ip, port)
  return self._u:sendto(data, ip, port)
end

-- sock:send(data) -> true | nil, err, code (a connected socket).
function Socket:send(data)
  return self._u:send(data)
end

--[[ State ===================================================================]]

-- sock:addr() -> ip, port: the local address.
function Socket:addr() return self._u:addr() end

-- sock:port() -> the local port.
function Socket:port()
  local _, port = self._u:addr()
  return port
end

-- sock:peer() -> ip, port of a connected socket.
function Socket:peer() return self._u:peer() end

function Socket:fd() return self._u:fd() end

-- sock:stats() -> { sent, received, dropped, truncated, send_errors,
-- queued (to send), waiting (to be read) }
function Socket:stats()
  local s = self._u:stats()
  s.dropped = self._dropped
  s.waiting = (self._tail - self._head) // 3
  return s
end

function Socket:closed() return self._closed end

-- sock:close(): idempotent; a coroutine in recvfrom gets nil, "closed".
-- Datagrams already queued for recvfrom stay readable.
function Socket:close()
  if self._closed then return end
  self._closed = true
  self._u:close()
  if self._reading then event.wakeup(self) end
end

Socket.__close = Socket.close

function Socket:__tostring()
  return "evlua.udp.socket (" .. (self._closed and "closed" or
    ("fd " .. self._u:fd())) .. ")"
end

--[[ Opening =================================================================]]

local function open(ip, port, opts, fname)
  local self = setmetatable({
    _q = {}, _head = 1, _tail = 1, _dropped = 0, _closed = false,
    _reading = false,
    _max_queue = check_count(opts, "max_queue", udp.MAX_QUEUE, 1 << 24, fname),
    _on_datagram = opts.on_datagram,
  }, Socket)
  local on_datagram = opts.on_datagram
  local target = enqueue
  if on_datagram then
    target = function(_, sock, data, from_ip, from_port)
      on_datagram(sock, data, from_ip, from_port)
    end
  end
  local u, err, code = udp_open(ip, port,
    check_count(opts, "max_datagram", udp.MAX_DATAGRAM, 65536, fname),
    check_count(opts, "max_send_queue", udp.MAX_SEND_QUEUE, 1 << 24, fname),
    target, self)
  if not u then return nil, err, code end
  self._u = u
  return self
end

-- udp.bind(ip, port [, opts]) -> socket | nil, err, code. ip: numeric
-- IPv4 or IPv6, "*" (any IPv4) or "localhost"; port 0 picks a free one.
-- opts: on_datagram(sock, data, ip, port), max_queue, max_send_queue,
-- max_datagram.
function udp.bind(ip, port, opts)
  if type(ip) ~= "string" then
    argerror(1, "bind", "string expected, got " .. type(ip))
  end
  check_port(port, 2, "bind")
  opts = check_opts(opts, "bind")
  if ip == "localhost" then ip = "127.0.0.1" end
  if not core.numeric_host(ip) or ip:sub(1, 5) == "unix:" then
    return fail("bad_address", "udp.bind needs a numeric address or \"*\"")
  end
  local sock, err, code = open(ip, port, opts, "bind")   -- (no tail call:
  return sock, err, code             -- open's checks blame bind's caller)
end

-- udp.connect(host, port [, opts]) -> socket | nil, err, code: a socket
-- on a free local port that sends to host:port and receives only its
-- datagrams. host may be a name (resolved with event.dns: then in a
-- coroutine).
function udp.connect(host, port, opts)
  if type(host) ~= "string" then
    argerror(1, "connect", "string expected, got " .. type(host))
  end
  check_port(port, 2, "connect")
  opts = check_opts(opts, "connect")
  local addr, aerr, acode = net.one_address(host)
  if not addr then return nil, aerr, acode end
  local sock, err, code = open(addr:find(":", 1, true) and "::" or "0.0.0.0",
                               0, opts, "connect")
  if not sock then return nil, err, code end
  local ok, cerr, ccode = sock._u:connect(addr, port)
  if not ok then
    sock:close()
    return nil, cerr, ccode
  end
  return sock
end

return udp
