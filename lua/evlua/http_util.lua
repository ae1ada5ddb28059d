-- evlua/http_util.lua - URL, query-string and header helpers shared by the
-- HTTP server and client (exposed as http.url_decode, http.parse_url...).

local errors = require "evlua.errors"
local argerror, fail = errors.argerror, errors.fail

local util = {}

local function hex_char(h)
  return string.char(tonumber(h, 16))
end

-- util.url_decode(s [, plus]) -> s with %XX sequences decoded; with plus,
-- "+" becomes a space too (query strings). Malformed escapes stay as they
-- are.
function util.url_decode(s, plus)
  if plus then s = s:gsub("+", " ") end
  return (s:gsub("%%(%x%x)", hex_char))
end

local function escape_char(c)
  return ("%%%02X"):format(c:byte())
end

-- util.url_encode(s) -> s with every byte outside the unreserved set
-- (RFC 3986: letters, digits, "-", ".", "_", "~") percent-encoded.
function util.url_encode(s)
  return (s:gsub("[^%w%-%._~]", escape_char))
end

-- util.parse_query(qs) -> table: decoded name -> decoded value, or -> a
-- list of the values when the name comes several times. A name without
-- "=" gets the value "".
function util.parse_query(qs)
  local t = {}
  if not qs then return t end
  for pair in qs:gmatch("[^&;]+") do
    local k, v = pair:match("^([^=]*)=(.*)$")
    if not k then k, v = pair, "" end
    k, v = util.url_decode(k, true), util.url_decode(v, true)
    local old = t[k]
    if old == nil then
      t[k] = v
    elseif type(old) == "table" then
      old[#old + 1] = v
    else
      t[k] = { old, v }
    end
  end
  return t
end

-- util.parse_url(url) -> { scheme =, host =, port =, path =, raw_path =,
-- query = {...}, raw_query =, fragment = } for an absolute URL
-- ("http://host:port/path?q") or a request target ("/path?q"). path is
-- percent-decoded ("+" kept), query is parse_query(raw_query). Returns nil,
-- "invalid url", "bad_url" when the URL has no usable form.
function util.parse_url(url)
  if type(url) ~= "string" then
    argerror(1, "parse_url", "string expected, got " .. type(url))
  end
  local u = {}
  local rest = url
  local scheme, after = rest:match("^(%a[%w+.-]*)://(.*)$")
  if scheme then
    u.scheme = scheme:lower()
    local authority
    authority, rest = after:match("^([^/?#]*)(.*)$")
    authority = authority:gsub("^.*@", "")   -- userinfo is not used
    local host, port = authority:match("^%[([^%]]+)%]:?(%d*)$")   -- IPv6
    if not host then   -- host[:port], split at the first colon
      -- (not by "^([^:]*):?(%d*)$": backtracking over a host of digits
      -- makes that quadratic, and the URL may come from a client)
      local colon = authority:find(":", 1, true)
      host = colon and authority:sub(1, colon - 1) or authority
      port = colon and authority:sub(colon + 1) or ""
      if not port:find("^%d*$") then host = nil end
    end
    if not host or host == "" then return fail("bad_url", "invalid url") end
    u.host = host
    u.port = tonumber(port) or (u.scheme == "https" and 443 or 80)
    if u.port > 65535 then return fail("bad_url", "invalid url") end
  elseif rest:sub(1, 1) ~= "/" and rest ~= "*" then
    return fail("bad_url", "invalid url")
  end
  local fragment
  rest, fragment = rest:match("^([^#]*)#?(.*)$")
  if fragment ~= "" then u.fragment = fragment end
  local path, query = rest:match("^([^?]*)%??(.*)$")
  if path == "" then path = "/" end
  u.raw_path = path
  u.path = util.url_decode(path)
  if rest:find("?", 1, true) then u.raw_query = query end
  u.query = util.parse_query(u.raw_query)
  return u
end

-- util.header(headers, name) -> the value of header name (any case) in a
-- headers table (lowercase names, repeated headers as lists); several
-- values are joined with ", " as RFC 9110 allows. nil when absent.
function util.header(headers, name)
  local v = headers[name]
  if v == nil then v = headers[name:lower()] end
  if type(v) == "table" then return table.concat(v, ", ") end
  return v
end

-- util.header_values(headers, name) -> the list of the values of header
-- name, in order (empty when absent): for headers that must not be joined
-- (Set-Cookie).
function util.header_values(headers, name)
  local v = headers[name]
  if v == nil then v = headers[name:lower()] end
  if v == nil then return {} end
  if type(v) == "table" then return { table.unpack(v) } end
  return { v }
end

-- util.check_header(key, value, fname): raise unless key is a token and
-- value has no CR or LF (header injection).
function util.check_header(key, value, fname)
  if type(key) ~= "string" or not key:find("^[%w!#$%%&'*+%-.^_`|~]+$") then
    argerror(1, fname, "header name expected", 2)
  end
  local tv = type(value)
  if tv == "number" then return end
  if tv == "table" then
    for _, v in ipairs(value) do util.check_header(key, v, fname) end
    return
  end
  if tv ~= "string" or value:find("[\r\n]") then
    argerror(2, fname, "header value without CR or LF expected", 2)
  end
end

return util
