-- evlua/dns.lua - asynchronous name resolution: c-ares driven by the loop.
-- Exposed as event.dns (= dns.resolve).
--
--   local dns = require "evlua.dns"
--   local addrs, err = dns.resolve("example.com")   -- in a coroutine
--
-- One resolver per process, created on first use from /etc/resolv.conf
-- (or from dns.configure). The hosts file is read first, then DNS.
-- Numeric addresses and "localhost" never reach a server.

local core = require "evlua.core"
local event = require "event"
local errors = require "evlua.errors"

local type, tostring = type, tostring
local mtype = math.type
local argerror, fail = errors.argerror, errors.fail

local dns = {}

local settings     -- what dns.configure was given (nil: the system's)
local resolver     -- created on first use, replaced by dns.configure
local max_wait     -- resolver's bound on one request's lifetime

local FAMILIES = { inet = "inet", inet6 = "inet6" }
local MAX_TIMEOUT = 300   -- seconds per try
local MAX_TRIES = 10

local function positive(value)
  return type(value) == "number" and value > 0 and value < math.huge
end

-- The resolver, created on first use. Returns nil, err, code if c-ares
-- cannot start.
local function get_resolver()
  if resolver == nil then
    local r, err, code = core.dns_resolver(settings)
    if not r then return nil, err, code end
    resolver, max_wait = r, r:info().max_wait
  end
  return resolver
end

-- The target of every request: wake the coroutine waiting on it.
local function on_answer(req, _, list, err, code)
  event.wakeup(req, list, err, code)
end

-- dns.resolve(host [, opts]) -> { address, ... } | nil, err
-- opts.family: "inet" or "inet6" (default: both, IPv4 first);
-- opts.timeout: overall seconds. Must run in an event coroutine.
function dns.resolve(host, opts)
  if type(host) ~= "string" then
    argerror(1, "resolve", "string expected, got " .. type(host))
  end
  local family, timeout
  if opts ~= nil then
    if type(opts) ~= "table" then
      argerror(2, "resolve", "table expected, got " .. type(opts))
    end
    family, timeout = opts.family, opts.timeout
    if family ~= nil and not FAMILIES[family] then
      argerror(2, "resolve", "family must be \"inet\" or \"inet6\", got "
               .. tostring(family))
    end
    if timeout ~= nil and not positive(timeout) then
      argerror(2, "resolve", "timeout must be a positive number, got "
               .. tostring(timeout))
    end
  end
  if not event.running() then errors.need_coroutine("dns.resolve") end
  local addr, kind = core.dns_numeric(host)
  if addr then
    if family and family ~= kind then return fail("not_found", "not found") end
    return { addr }
  end
  local r, err, code = get_resolver()
  if not r then return nil, err, code end
  local req = r:resolve(host, family or "any", on_answer)
  local wait = max_wait
  if timeout and timeout < wait then wait = timeout end
  local list, why, wcode = event.wait(req, wait)
  if list == nil then
    req:cancel()   -- timeout or cancelled: a late answer is dropped
    return nil, why, wcode
  end
  return list
end

local function check_settings(opts)
  if type(opts) ~= "table" then
    argerror(1, "configure", "table expected, got " .. type(opts), 2)
  end
  local copy = {}
  local servers = opts.servers
  if servers ~= nil then
    if type(servers) ~= "table" then
      argerror(1, "configure", "servers must be a list of addresses", 2)
    end
    copy.servers = {}
    for i = 1, #servers do
      if type(servers[i]) ~= "string" then
        argerror(1, "configure", "servers must be a list of addresses", 2)
      end
      copy.servers[i] = servers[i]
    end
  end
  if opts.timeout ~= nil then
    if not positive(opts.timeout) or opts.timeout > MAX_TIMEOUT then
      argerror(1, "configure", "timeout must be a number of seconds in "
               .. "(0, " .. MAX_TIMEOUT .. "], got " .. tostring(opts.timeout), 2)
    end
    copy.timeout = opts.timeout
  end
  if opts.tries ~= nil then
    if mtype(opts.tries) ~= "integer" or opts.tries < 1
        or opts.tries > MAX_TRIES then
      argerror(1, "configure", "tries must be an integer in [1, "
               .. MAX_TRIES .. "], got " .. tostring(opts.tries), 2)
    end
    copy.tries = opts.tries
  end
  return copy
end

-- dns.configure([{ servers = { "ip[:port]", ... }, timeout = s, tries = n }])
-- -> true | nil, err. Replaces the resolver; what is left out comes from
-- /etc/resolv.conf. Lookups already running finish on the old resolver.
function dns.configure(opts)
  local new = nil
  if opts ~= nil then new = check_settings(opts) end
  local r, err, code = core.dns_resolver(new)
  if not r then
    if code == "bad_server" then argerror(1, "configure", err) end
    return nil, err, code
  end
  local old = resolver
  settings, resolver, max_wait = new, r, r:info().max_wait
  -- In-flight requests keep the old one alive until they end; an idle
  -- one can go now.
  if old and old:info().pending == 0 then old:close() end
  return true
end

-- dns.config() -> { servers = {...}, timeout = s, tries = n, max_wait = s,
-- pending = n }: the settings in force (creates the resolver, sends nothing).
function dns.config()
  local r, err, code = get_resolver()
  if not r then return nil, err, code end
  local info = r:info()
  return { servers = info.servers, timeout = info.timeout,
           tries = info.tries, max_wait = info.max_wait,
           pending = info.pending }
end

return dns
