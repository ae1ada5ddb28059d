-- evlua/net.lua - listen, connect and bind: where channels come from.
-- Exposed as event.listen, event.connect and event.bind.

local core = require "evlua.core"
local event = require "event"
local Channel = require "evlua.channel"
local errors = require "evlua.errors"

local argerror, fail = errors.argerror, errors.fail

local net = {}

net.CONNECT_TIMEOUT = 30   -- seconds, when event.connect gets none

-- The argument checks every module making channels shares (evlua.udp,
-- evlua.kcp too): called from the public function itself, they blame its
-- caller.
function net.check_class(class, argn, fname)
  if class == nil then return Channel end
  if type(class) ~= "table" or type(class._wrap) ~= "function" then
    argerror(argn, fname, "channel class expected", 2)
  end
  return class
end

function net.check_port(port, argn, fname)
  if math.type(port) ~= "integer" or port < 0 or port > 65535 then
    argerror(argn, fname, "port between 0 and 65535 expected", 2)
  end
end

local check_class, check_port = net.check_class, net.check_port

-- The one address a datagram socket sends to: host itself when numeric
-- ("localhost" is 127.0.0.1), else the first that event.dns gives (then
-- in a coroutine). -> address | nil, err, code
function net.one_address(host)
  if host == "localhost" then return "127.0.0.1" end
  if core.numeric_host(host) and host:sub(1, 5) ~= "unix:" then return host end
  local addrs, err, code = event.dns(host)
  if not addrs then return nil, err, code end
  return addrs[1]
end

-- A new connection: its channel, its init(), then accept_cb in a task of
-- its own; without accept_cb no task is made (a server whose channel class
-- does all the work costs none per connection).
local function on_accept(_, ctx, stream)
  local ch = ctx.class._wrap(ctx.class, stream)
  ch:_start()
  local accept = ctx.accept
  if accept then event._fork_direct(accept, ctx.listener, ch) end
end

-- event.listen(ip, port, accept_cb | nil [, channel_class [, opts]]) ->
-- listener | nil, err. ip: numeric IPv4/IPv6, "*" (any IPv4), "localhost",
-- or "unix:/path". accept_cb(listener, channel), if given, runs in a new
-- coroutine per connection. opts: backlog (default: the system's limit,
-- somaxconn), reuseport (SO_REUSEPORT).
function net.listen(ip, port, accept_cb, class, opts)
  if type(ip) ~= "string" then
    argerror(1, "listen", "string expected, got " .. type(ip))
  end
  if ip:sub(1, 5) == "unix:" then port = port or 0 end
  check_port(port, 2, "listen")
  if accept_cb ~= nil and type(accept_cb) ~= "function" then
    argerror(3, "listen", "function or nil expected, got " .. type(accept_cb))
  end
  class = check_class(class, 4, "listen")
  opts = opts or {}
  if ip == "localhost" then ip = "127.0.0.1" end
  if not core.numeric_host(ip) then
    return fail("bad_address",
                "listen needs a numeric address, \"*\" or unix:/path")
  end
  local ctx = { accept = accept_cb, class = class }
  local listener, err, code = core.listen(ip, port, opts.backlog,
                                          opts.reuseport, on_accept, ctx)
  if not listener then return nil, err, code end
  ctx.listener = listener
  return listener
end

-- Try one address: a connected channel, or nil, err, code.
local function try_connect(class, host, port, timeout)
  local stream, err, code = core.stream_connect(host, port)
  if not stream then return nil, err, code end
  local ch = class._wrap(class, stream)
  local ok, cerr, ccode = event.wait_as("connect", host .. ":" .. port, ch,
                                        timeout)
  if ok == true then return ch end
  stream:close_silently()
  return nil, cerr, ccode
end

-- event.connect(host, port [, channel_class [, timeout]]) -> channel |
-- nil, err. In a coroutine. host: numeric, a name (resolved with
-- event.dns, each address tried in turn), or "unix:/path".
function net.connect(host, port, class, timeout)
  if not event.running() then errors.need_coroutine("event.connect") end
  if type(host) ~= "string" then
    argerror(1, "connect", "string expected, got " .. type(host))
  end
  if host:sub(1, 5) == "unix:" then port = port or 0 end
  check_port(port, 2, "connect")
  class = check_class(class, 3, "connect")
  timeout = timeout or net.CONNECT_TIMEOUT
  if type(timeout) ~= "number" or not (timeout > 0) then
    argerror(4, "connect", "positive number expected")
  end
  local deadline = event.now() + timeout
  local addrs
  if core.numeric_host(host) then
    addrs = { host }
  else
    local err, code
    addrs, err, code = event.dns(host, { timeout = timeout })
    if not addrs then return nil, err, code end
  end
  local err, code = "no address", "not_found"
  for _, addr in ipairs(addrs) do
    local left = deadline - event.now()
    if left <= 0 then return fail("timeout") end
    local ch
    ch, err, code = try_connect(class, addr, port, left)
    if ch then return ch:_start() end
    -- the wait's own end, not this address's: no other address is tried
    if code == "timeout" or code == "cancelled" then return nil, err, code end
  end
  return nil, err, code
end

-- event.bind(fd [, channel_class]) -> channel reading and writing fd (a
-- pipe, a socket, stdin...). The channel owns fd from now on.
function net.bind(fd, class)
  if math.type(fd) ~= "integer" or fd < 0 then
    argerror(1, "bind", "file descriptor expected")
  end
  class = check_class(class, 2, "bind")
  return class._wrap(class, core.stream_bind(fd)):_start()
end

return net
