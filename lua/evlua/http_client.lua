-- evlua/http_client.lua - the HTTP/1.1 client behind http.request:
-- responses parsed in C (core.http_parser in response mode), keep-alive
-- connections reused per host:port, redirects followed only when asked.

local core = require "evlua.core"
local event = require "event"
local Channel = require "evlua.channel"
local util = require "evlua.http_util"
local errors = require "evlua.errors"

local argerror, fail = errors.argerror, errors.fail

local client = {}

client.DEFAULT_TIMEOUT = 30       -- s for a whole request
client.MAX_IDLE_PER_HOST = 16     -- pooled connections per host:port
client.IDLE_TIMEOUT = 30          -- s a pooled connection may stay idle
client.MAX_BODY = 64 * 1024 * 1024
client.USER_AGENT = "evlua/" .. core.version

local Conn = Channel:inherit()
Conn.__name = "evlua.http.client_connection"

local pool = {}   -- "host:port" -> list of idle connections

-- Wake the coroutine waiting for this connection's response. Bytes on
-- an idle pooled connection answer nothing we asked: drop it.
function Conn:data()
  local w = self._waiter
  if w then
    event.wakeup(w)
  elseif self._idle then
    self:close_immediately()
  end
end

local function unpool(conn)
  local list = conn._pool_key and pool[conn._pool_key]
  if not list then return end
  for i = #list, 1, -1 do
    if list[i] == conn then table.remove(list, i) end
  end
  if #list == 0 then pool[conn._pool_key] = nil end
end

function Conn:_ended(reason)
  Channel._ended(self, reason)
  unpool(self)
  local w = self._waiter
  if w then event.wakeup(w) end
end

local function pooled(key)
  local list = pool[key]
  while list and #list > 0 do
    local conn = table.remove(list)
    if #list == 0 then pool[key] = nil end
    if not conn._closed then
      conn._idle = false
      conn._stream:set_idle_timeout(0)
      return conn
    end
  end
end

local function release(conn, key)
  local list = pool[key]
  if not list then
    list = {}
    pool[key] = list
  end
  if #list >= client.MAX_IDLE_PER_HOST then
    conn:close()
    return
  end
  conn._pool_key = key
  conn._idle = true
  conn._stream:set_idle_timeout(client.IDLE_TIMEOUT)
  list[#list + 1] = conn
end

-- http.close_idle(): close every pooled keep-alive connection.
function client.close_idle()
  local all = pool
  pool = {}
  for _, list in pairs(all) do
    for _, conn in ipairs(list) do conn:close() end
  end
end

local function request_bytes(method, u, headers, body)
  local target = u.raw_path .. (u.raw_query and ("?" .. u.raw_query) or "")
  local host = u.host:find(":", 1, true) and ("[" .. u.host .. "]") or u.host
  if u.port ~= 80 then host = host .. ":" .. u.port end
  local parts = { method, " ", target, " HTTP/1.1\r\n" }
  local seen = {}
  for k, v in pairs(headers or {}) do
    util.check_header(k, v, "request")
    seen[k:lower()] = true
    if type(v) == "table" then
      for _, x in ipairs(v) do parts[#parts + 1] = k .. ": " .. x .. "\r\n" end
    else
      parts[#parts + 1] = k .. ": " .. v .. "\r\n"
    end
  end
  if not seen.host then parts[#parts + 1] = "Host: " .. host .. "\r\n" end
  if not seen["user-agent"] then
    parts[#parts + 1] = "User-Agent: " .. client.USER_AGENT .. "\r\n"
  end
  if body and not seen["content-length"] and not seen["transfer-encoding"] then
    parts[#parts + 1] = "Content-Length: " .. #body .. "\r\n"
  end
  parts[#parts + 1] = "\r\n"
  if body then parts[#parts + 1] = body end
  return table.concat(parts), seen.connection == true
end

-- Read one final response from conn. Returns status, headers, body,
-- keep_alive | nil, err, got_bytes (whether any response byte came), code.
local function read_response(conn, head, deadline)
  local parser, stream = conn._parser, conn._stream
  local token = {}
  local got = false
  while true do
    local kind, status, _, headers, body, keep = parser:parse(stream, conn._closed, head)
    if kind == "response" then
      got = true
      if status >= 200 or status == 101 then return status, headers, body, keep end
    elseif kind == "error" then
      return nil, "bad response: " .. tostring(body), true, "protocol"
    else
      if not got and (status or stream:buffered() > 0) then got = true end
      if conn._closed then return nil, "closed", got, "closed" end
      local left = deadline - event.now()
      if left <= 0 then return nil, "timeout", got, "timeout" end
      conn._waiter = token
      local ok, err, code = event.wait_as("http response", conn, token, left)
      conn._waiter = nil
      if not ok and err then return nil, err, got, code end
    end
  end
  -- not reached (max_body is enforced by the parser)
end

local function connect(u, key, deadline, max_body)
  local left = deadline - event.now()
  if left <= 0 then return fail("timeout") end
  local conn, err, code = event.connect(u.host, u.port, Conn, left)
  if not conn then return nil, err, code end
  conn._parser = core.http_parser("response", { max_body = max_body })
  conn._key = key
  return conn
end

-- One request on one connection (a pooled one first; if it turns out
-- stale before any response byte, once more on a fresh one).
local function exchange(method, u, t, deadline)
  local key = u.host .. ":" .. u.port
  local max_body = t.max_body or client.MAX_BODY
  local bytes, has_connection = request_bytes(method, u, t.headers, t.body)
  local conn = not t.no_reuse and pooled(key)
  local reused = conn ~= nil
  while true do
    if not conn then
      local err, code
      conn, err, code = connect(u, key, deadline, max_body)
      if not conn then return nil, err, code end
    end
    local ok, err, code = conn:write(bytes)
    local status, headers, body, keep
    if ok then
      status, headers, body, keep = read_response(conn, method == "HEAD", deadline)
    end
    if status then
      if keep and not has_connection and not conn._closed and not t.no_reuse then
        release(conn, key)
      else
        conn:close()
      end
      return status, headers, body
    end
    local got   -- read_response's nil, err, got, code
    if ok then err, got, code = headers, body, keep end
    conn:close_immediately()
    -- A pooled connection the server closed meanwhile: retry once.
    if not (reused and not got and code == "closed") then
      return nil, err, code
    end
    conn, reused = nil, false
  end
end

local REDIRECTS = { [301] = true, [302] = true, [303] = true, [307] = true,
                    [308] = true }

-- http.request{ url =, method = "GET", headers = {}, body = nil,
-- timeout = 30, redirects = 0, max_body = 64 MiB, no_reuse = false }
-- -> status, headers, body | nil, err. In a coroutine. headers of the
-- response: lowercase names, repeated ones as lists. redirects: how many
-- 3xx Location hops to follow (303, and 301/302 after POST, turn into
-- GET without a body).
function client.request(t)
  if type(t) == "string" then t = { url = t } end
  if type(t) ~= "table" then
    argerror(1, "request", "table expected, got " .. type(t))
  end
  if not event.running() then errors.need_coroutine("http.request") end
  if type(t.url) ~= "string" then
    argerror(1, "request", "url string expected")
  end
  local method = t.method or "GET"
  if type(method) ~= "string" or not method:find("^%u+$") then
    argerror(1, "request", "method must be an upper-case token")
  end
  if t.body ~= nil and type(t.body) ~= "string" then
    argerror(1, "request", "body must be a string")
  end
  local timeout = t.timeout or client.DEFAULT_TIMEOUT
  if type(timeout) ~= "number" or not (timeout > 0) then
    argerror(1, "request", "timeout must be a positive number")
  end
  local deadline = event.now() + timeout
  local url = t.url
  local hops = t.redirects or 0
  local req = t
  while true do
    local u, err = util.parse_url(url)
    if not u or not u.host then return fail("bad_url", err or "invalid url") end
    if u.scheme ~= "http" then
      return fail("bad_url", "unsupported scheme: " .. u.scheme)
    end
    local status, headers, body = exchange(method, u, req, deadline)
    if not status then return nil, headers, body end   -- err, code
    local location = REDIRECTS[status] and util.header(headers, "location")
    if not location or hops <= 0 then return status, headers, body end
    hops = hops - 1
    if location:sub(1, 1) == "/" then
      location = u.scheme .. "://" .. u.host .. ":" .. u.port .. location
    end
    url = location
    if status == 303 or ((status == 301 or status == 302) and method == "POST") then
      method = "GET"
      req = { headers = t.headers, max_body = t.max_body, no_reuse = t.no_reuse }
    end
  end
end

return client
