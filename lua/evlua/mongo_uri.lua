-- evlua/mongo_uri.lua - MongoDB connection strings, read as the official
-- drivers read them (the "Connection String" specification):
--
--   mongodb://[user[:password]@]host1[:port1][,host2[:port2]...][/[db][?options]]
--
--   local uri = require "evlua.mongo_uri"
--   local o, err, code = uri.parse("mongodb://bob:p%40ss@[::1],db2:27018/app?appname=x")
--   --> { hosts = { { host = "::1", port = 27017 }, { host = "db2", port = 27018 } },
--   -->   username = "bob", password = "p@ss", database = "app",
--   -->   options = { appName = "x", authSource = "app" },
--   -->   unknown = {}, warnings = {} }
--
-- User, password and database are percent-decoded (RFC 3986: '+' stays
-- '+'); an unescaped ':' in the password, '@', '/', '?', '#', '[' or ']'
-- in the user info, or a '%' not followed by two hex digits is an error.
-- Host names are lowercased; IPv6 addresses go in brackets; the port
-- defaults to 27017. Option names are case-insensitive and come back in
-- the documented camelCase; integers and booleans ("true"/"false") are
-- checked. An unknown option is kept under the name as written and
-- listed in `unknown`, with a line in `warnings`. options.authSource is
-- always set: as given, else the database, else "admin".
--
-- Failures are nil, message, code: "bad_url" for a malformed string,
-- "unsupported" for what evlua does not do (mongodb+srv://, tls=true, an
-- authMechanism other than SCRAM-SHA-1 and SCRAM-SHA-256, unix sockets).

local errors = require "evlua.errors"

local fail = errors.fail
local format, lower, upper = string.format, string.lower, string.upper

local M = {}

local DEFAULT_PORT = 27017

local function bad(fmt, ...)
  return fail("bad_url", format(fmt, ...))
end

local function unsupported(fmt, ...)
  return fail("unsupported", format(fmt, ...))
end

-- Percent-decoding; nil for a '%' without two hex digits after it.
local function decode(s)
  for at in s:gmatch("()%%") do
    if not s:find("^%x%x", at + 1) then return nil end
  end
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

--[[ Options ===================================================================]]

-- The known options: lowercased name -> { camelCase name, kind }.
local KNOWN = {}
local function known(kind, ...)
  for _, name in ipairs({ ... }) do KNOWN[lower(name)] = { name, kind } end
end
known("string", "authSource", "appName", "replicaSet", "readPreference",
      "readConcernLevel", "compressors", "authMechanismProperties",
      "readPreferenceTags")
known("mechanism", "authMechanism")
known("ms", "connectTimeoutMS", "socketTimeoutMS", "serverSelectionTimeoutMS",
      "heartbeatFrequencyMS", "localThresholdMS", "maxIdleTimeMS",
      "waitQueueTimeoutMS", "wTimeoutMS", "maxStalenessSeconds")
known("count", "maxPoolSize", "minPoolSize", "maxConnecting")
known("boolean", "retryWrites", "retryReads", "journal", "directConnection",
      "loadBalanced", "tls", "ssl")
known("w", "w")

local MECHANISMS = { ["SCRAM-SHA-1"] = true, ["SCRAM-SHA-256"] = true }
local MAX_INTEGER = 2147483647   -- the drivers read these as int32

local function check_value(name, kind, value)
  if kind == "string" then
    if value == "" then return bad("option %s is empty", name) end
    if name == "appName" and #value > 128 then
      return bad("option appName is longer than 128 bytes")
    end
    return value
  elseif kind == "mechanism" then
    local m = upper(value)
    if not MECHANISMS[m] then
      return unsupported("authMechanism %s is unsupported (SCRAM-SHA-1 and SCRAM-SHA-256 are)",
                         value)
    end
    return m
  elseif kind == "ms" or kind == "count" then
    if name == "maxStalenessSeconds" and value == "-1" then return -1 end   -- "no maximum"
    local n = value:match("^%d+$") and math.tointeger(tonumber(value))
    if not n or n > MAX_INTEGER then
      return bad("option %s: non-negative integer expected, got '%s'", name, value)
    end
    if name == "maxConnecting" and n == 0 then
      return bad("option maxConnecting must be positive")
    end
    return n
  elseif kind == "boolean" then
    local v = lower(value)
    if v == "true" then return true end
    if v == "false" then return false end
    return bad("option %s: true or false expected, got '%s'", name, value)
  else   -- w: a count of servers or a tag set name ("majority")
    if value:match("^%-?%d+$") then
      local n = math.tointeger(tonumber(value))
      if not n or n < 0 or n > MAX_INTEGER then
        return bad("option w: non-negative integer or name expected, got '%s'", value)
      end
      return n
    end
    if value == "" then return bad("option w is empty") end
    return value
  end
end

local function parse_options(query, o)
  local options, unknown, warnings = o.options, o.unknown, o.warnings
  for pair in (query .. "&"):gmatch("([^&]*)&") do
    if pair == "" then goto continue end
    local rawkey, rawvalue = pair:match("^([^=]*)=(.*)$")
    if not rawkey then return bad("option '%s' has no '=value'", pair) end
    local key, value = decode(rawkey), decode(rawvalue)
    if not key or not value then return bad("bad percent-encoding in option '%s'", pair) end
    if key == "" then return bad("option with an empty name") end
    local spec = KNOWN[lower(key)]
    if spec then
      local name, kind = spec[1], spec[2]
      local v, err, code = check_value(name, kind, value)
      if v == nil then return nil, err, code end
      if options[name] ~= nil then
        warnings[#warnings + 1] = format("option %s given more than once: the last one wins", name)
      end
      options[name] = v
    else
      if options[key] == nil then unknown[#unknown + 1] = key end
      options[key] = value
      warnings[#warnings + 1] = format("unknown option %s (ignored)", key)
    end
    ::continue::
  end
  if options.tls ~= nil and options.ssl ~= nil and options.tls ~= options.ssl then
    return bad("options tls and ssl disagree")
  end
  if options.ssl ~= nil then
    if options.tls == nil then options.tls = options.ssl end
    options.ssl = nil
  end
  if options.tls then return unsupported("tls not supported") end
  local max, min = options.maxPoolSize, options.minPoolSize
  if max and min and max ~= 0 and min > max then
    return bad("minPoolSize %d is above maxPoolSize %d", min, max)
  end
  return true
end

--[[ Hosts and user info =======================================================]]

local function parse_port(s, where)
  local n = s:match("^%d+$") and math.tointeger(tonumber(s))
  if not n or n < 1 or n > 65535 then return bad("bad port '%s' in '%s'", s, where) end
  return n
end

local function parse_host(s)
  if s == "" then return bad("empty host") end
  local host, rest
  if s:sub(1, 1) == "[" then
    host, rest = s:match("^%[([^%]]*)%](.*)$")
    if not host then return bad("unclosed '[' in host '%s'", s) end
    if not host:find(":") or host:find("[^%x:%.]") then
      return bad("bad IPv6 address '%s'", host)
    end
    if rest ~= "" and rest:sub(1, 1) ~= ":" then return bad("bad host '%s'", s) end
  else
    host, rest = s:match("^([^:]*)(.*)$")
    if rest:find(":", 2, true) then
      return bad("host '%s' has more than one ':' (IPv6 addresses go in brackets)", s)
    end
    if host:find("%%2[fF]") or host:find("%.sock$") then
      return unsupported("unix domain sockets are unsupported ('%s')", s)
    end
    if host == "" then return bad("empty host in '%s'", s) end
    if host:find("[^%w%-%._]") then return bad("bad character in host '%s'", s) end
  end
  local port = DEFAULT_PORT
  if rest ~= "" then
    local err, code
    port, err, code = parse_port(rest:sub(2), s)
    if not port then return nil, err, code end
  end
  return { host = lower(host), port = port }
end

local function parse_userinfo(info, o)
  if info:find("[@/?#%[%]]") then
    return bad("user name and password must be percent-encoded ('@', '/', '?', '#', '[', ']')")
  end
  local user, password = info:match("^([^:]*):(.*)$")
  if not user then user = info end
  if password and password:find(":", 1, true) then
    return bad("user name and password must be percent-encoded (a second ':')")
  end
  local u, p = decode(user), password and decode(password)
  if not u or (password and not p) then
    return bad("bad percent-encoding in the user name or password")
  end
  if u == "" then return bad("empty user name") end
  o.username, o.password = u, p
  return true
end

--[[ parse =====================================================================]]

-- uri.parse(s) -> { hosts, username, password, database, options,
-- unknown, warnings } | nil, message, code
function M.parse(s)
  if type(s) ~= "string" then errors.argerror(1, "parse", "string expected, got " .. type(s)) end
  if s:sub(1, 14) == "mongodb+srv://" then
    return unsupported("mongodb+srv:// is not supported (list the hosts in a mongodb:// URI)")
  end
  if s:sub(1, 10) ~= "mongodb://" then return bad("a MongoDB URI starts with mongodb://") end
  local rest = s:sub(11)
  local hostpart, path
  local slash = rest:find("/", 1, true)
  if slash then
    hostpart, path = rest:sub(1, slash - 1), rest:sub(slash + 1)
  else
    if rest:find("?", 1, true) then
      return bad("a '/' is required between the hosts and the options")
    end
    hostpart = rest
  end
  local o = { hosts = {}, options = {}, unknown = {}, warnings = {} }

  -- user info: everything before the last '@' (an '@' left in it is an error)
  local at = hostpart:match("^.*()@")
  local hostlist = hostpart
  if at then
    local ok, err, code = parse_userinfo(hostpart:sub(1, at - 1), o)
    if not ok then return nil, err, code end
    hostlist = hostpart:sub(at + 1)
  end
  if hostlist == "" then return bad("no host") end
  for h in (hostlist .. ","):gmatch("([^,]*),") do
    local host, err, code = parse_host(h)
    if not host then return nil, err, code end
    o.hosts[#o.hosts + 1] = host
  end

  if path then
    local db, query = path:match("^([^?]*)%?(.*)$")
    if not db then db = path end
    if db:find("@", 1, true) then
      return bad("user name and password must be percent-encoded (a '/' before the '@')")
    end
    local name = decode(db)
    if not name then return bad("bad percent-encoding in the database name") end
    if name:find('[/\\ "$]') then return bad("bad database name '%s'", name) end
    if name ~= "" then o.database = name end
    if query then
      local ok, err, code = parse_options(query, o)
      if not ok then return nil, err, code end
    end
  end

  local options = o.options
  if options.directConnection and #o.hosts > 1 then
    return bad("directConnection=true with more than one host")
  end
  if options.authMechanism and not o.username then
    return bad("authMechanism %s needs a user name", options.authMechanism)
  end
  options.authSource = options.authSource or o.database or "admin"
  return o
end

return M
