-- evlua/mongo.lua - a MongoDB client for coroutine code, on channels.
--
-- One client is one connection that any number of coroutines share: every
-- request is an OP_MSG with its own requestID, written at once (the stream
-- coalesces the writes of one loop iteration), and its coroutine waits for
-- the reply whose responseTo names it, in whatever order replies come.
-- The wire (framing, BSON) is in C: stream:write_mongo and
-- stream:read_mongo (src/lua/lmongo.c over src/core/mongo.c, BSON through
-- src/lua/lbson.c).
--
-- Failures are nil, message, code [, info]:
--   code "mongo": the server answered with an error (ok ~= 1, write errors,
--     a write concern error); info = { code = 11000, codeName = ...,
--     message = ..., labels = {...}, write_errors = {...}, reply = ... }.
--   code "auth": authentication failed (info as above when the server
--     said why).
--   transport: "timeout", "closed", "protocol", "too_large", a connect
--     error ("ECONNREFUSED"...). The next request reconnects, at most once
--     per backoff delay.

local event = require "event"
local core = require "evlua.core"
local Channel = require "evlua.channel"
local errors = require "evlua.errors"
local uri = require "evlua.mongo_uri"
local scram = require "evlua.scram"
local net = require "evlua.net"
local bson = require "evlua.bson"

local argerror, fail = errors.argerror, errors.fail
local type, setmetatable, tostring, pairs, ipairs =
  type, setmetatable, tostring, pairs, ipairs
local running, wait_as, wakeup = event.running, event.wait_as, event.wakeup

local mongo = {}
mongo.VERSION = "0.1.0"

-- The BSON values, under the names the issue gives them too.
mongo.bson = bson
for k, v in pairs(bson) do
  if mongo[k] == nil and k ~= "encode" and k ~= "decode" then mongo[k] = v end
end

local doc, array = bson.doc, bson.array
local DOC = getmetatable(doc{})

-- An ordered document (bson.doc) or not.
local function is_doc(v) return getmetatable(v) == DOC end

-- A copy of an ordered document's flat k1, v1, k2, v2... list.
local function doc_fields(d)
  local list = {}
  for i = 1, #d do list[i] = rawget(d, i) end
  return list
end

-- The _id of a document to insert, given one (an ObjectId) if it has none.
local function ensure_id(d)
  local id = d._id
  if id == nil then
    id = bson.ObjectId()
    d._id = id
  end
  return id
end

mongo.defaults = {
  connect_timeout = 10,        -- seconds (connectTimeoutMS)
  socket_timeout = 30,         -- seconds each request may wait (socketTimeoutMS)
  max_message = 48000000,      -- until hello says otherwise
  max_bson = 16 * 1024 * 1024,
  max_batch = 100000,
  reconnect_min = 0.05,        -- rpc.client's backoff
  reconnect_max = 5,
}

--[[ Errors =================================================================]]

local function server_error(reply, fallback)
  local msg = reply.errmsg or reply.errMsg or fallback or "command failed"
  local info = { code = reply.code, codeName = reply.codeName, message = msg,
                 labels = reply.errorLabels, reply = reply }
  return nil, msg, "mongo", info
end
mongo._server_error = server_error

--[[ Connections ============================================================]]
-- A connection is a channel whose _pending maps requestIDs to the tasks
-- waiting for their replies. A reply nobody waits for any more (its
-- request timed out, or was fire-and-forget: killCursors from __gc) is
-- dropped; a requestID is never used twice on one connection, so no
-- reply reaches the wrong caller.

local Conn = Channel:inherit()
Conn.__name = "evlua.mongo.connection"
mongo.connection = Conn

local REPLY = setmetatable({}, { __name = "mongo reply" })
local next_request = 0

local function request_id()
  local id = next_request + 1
  if id > 0x7fffffff then id = 1 end
  next_request = id
  return id
end

function Conn:init()
  self._pending, self._early = {}, {}
  self._max_message = mongo.defaults.max_message
  self._max_bson = mongo.defaults.max_bson
  self._max_batch = mongo.defaults.max_batch
  self:set_limits({ max_input = self._max_message + 64 })
end

-- A fatal problem with the connection: log it, fail every request.
function Conn:_fail(err, code)
  event.error(("mongo: closing %s: %s"):format(self._name or tostring(self),
                                                err))
  self._error, self._error_code = err, code or "protocol"
  self:close_immediately()
end

-- Every complete reply in the input buffer.
function Conn:data()
  local stream, pending = self._stream, self._pending
  while true do
    local response_to, flags, body = stream:read_mongo(self._max_message)
    if response_to == nil then
      if flags then self:_fail(flags, body) end   -- err, code
      return
    end
    local task = pending[response_to]
    if task then
      pending[response_to] = nil
      if not wakeup(task, REPLY, body) then
        -- the task waits for something else (room in the send queue) or
        -- was woken already (its timeout, in this same loop iteration):
        -- it looks here before it gives up
        self._early[response_to] = body
      end
    end
  end
end

function Conn:_ended(reason)
  Channel._ended(self, reason)
  if not self._error and reason == "send timeout" then
    self._error = "send timeout: the server stopped reading"
    self._error_code = "timeout"
  end
  local err, code = self._error or "closed", self._error_code or "closed"
  local pending = self._pending
  if pending and next(pending) then
    self._pending = {}
    for _, task in pairs(pending) do wakeup(task, nil, err, code) end
  end
end

-- Send body (with the sequence seq_id of docs from first) and wait for
-- the reply: reply, last (the last document sent) | nil, err, code.
local function roundtrip(ch, timeout, body, seq_id, docs, first)
  local task = running()
  if not task then errors.need_coroutine("mongo request", 3) end
  if ch._closed then return nil, ch._error or "closed", ch._error_code or "closed" end
  local id = request_id()
  local ok, last, code = ch._stream:write_mongo(id, body, seq_id, docs, first,
                                                ch._max_batch, ch._max_message,
                                                ch._max_bson)
  if ok == nil then return nil, last, code end
  ch._pending[id] = task
  if ok == false then   -- above the high-water mark: wait for room first
    local started = event.now()
    local dok, err, dcode = ch:_wait_drain()
    local early = ch._early[id]
    if early then
      ch._early[id] = nil
      return early, last
    end
    if not dok then
      ch._pending[id] = nil
      if ch._closed and ch._error then return nil, ch._error, ch._error_code end
      return nil, err, dcode
    end
    if timeout then timeout = math.max(0, timeout - (event.now() - started)) end
  end
  local tag, reply, rcode = wait_as("mongo", "reply", task, timeout)
  if tag == REPLY then return reply, last end
  ch._pending[id] = nil
  local early = ch._early[id]
  if early then   -- it came after all
    ch._early[id] = nil
    return early, last
  end
  return nil, reply, rcode
end

-- Queue a request without waiting for its reply (killCursors when a
-- cursor is collected): its reply is dropped.
local function send_only(ch, body)
  if ch and not ch._closed then
    ch._stream:write_mongo(request_id(), body, nil, nil, nil, nil,
                           ch._max_message, ch._max_bson)
  end
end

-- A command on ch: the reply | nil, err, code [, info] (ok ~= 1).
local function command(ch, timeout, body, seq_id, docs, first)
  local reply, last, code = roundtrip(ch, timeout, body, seq_id, docs, first)
  if not reply then return nil, last, code end
  if reply.ok ~= 1 then return server_error(reply) end
  return reply, last
end

--[[ Options ================================================================]]

local function ms(v) return v and v / 1000 end

-- The fields of a parsed URI into o, where o has none of its own.
local function merge_uri(o, s)
  local parsed, err, code = uri.parse(s)
  if not parsed then return nil, err, code end
  for k, v in pairs(parsed.options or {}) do
    if o[k] == nil then o[k] = v end
  end
  for _, k in ipairs({ "hosts", "username", "password", "database" }) do
    if o[k] == nil then o[k] = parsed[k] end
  end
  if o.username and o.password == nil then   -- mongodb://user@host
    return fail("bad_url", ("no password for user '%s' in the URI (SCRAM "
                            .. "needs one: user:password@)"):format(o.username))
  end
  return o
end

-- The timeouts in seconds (the URI's in ms) and their checks.
local function timeouts(o)
  local d = mongo.defaults
  o.connect_timeout = o.connect_timeout or ms(o.connectTimeoutMS)
                      or d.connect_timeout
  o.socket_timeout = o.socket_timeout or ms(o.socketTimeoutMS)
                     or d.socket_timeout
  if o.socket_timeout == 0 then o.socket_timeout = nil end   -- 0: no limit
  if o.connect_timeout == 0 then o.connect_timeout = net.CONNECT_TIMEOUT end
  if o.send_timeout == nil then o.send_timeout = o.socket_timeout end
  for _, name in ipairs({ "connect_timeout", "socket_timeout", "send_timeout",
                          "reconnect_min", "reconnect_max" }) do
    local v = o[name]
    if v ~= nil and (type(v) ~= "number" or not (v > 0 and v < math.huge)) then
      argerror(1, "connect", name .. " must be a positive number of seconds", 3)
    end
  end
end

local function check_options(o)
  o.authSource = o.authSource or o.auth_source or o.database or "admin"
  o.authMechanism = o.authMechanism or o.auth_mechanism
  o.appName = o.appName or o.app_name
  local mech = o.authMechanism
  if mech ~= nil and mech ~= "SCRAM-SHA-1" and mech ~= "SCRAM-SHA-256" then
    argerror(1, "connect", "authMechanism must be SCRAM-SHA-1 or SCRAM-SHA-256", 3)
  end
  if type(o.hosts) ~= "table" or not o.hosts[1] then
    argerror(1, "connect", "hosts must be a list of { host =, port = }", 3)
  end
  if o.username ~= nil and type(o.username) ~= "string" then
    argerror(1, "connect", "username must be a string", 3)
  end
  if o.username and type(o.password) ~= "string" then
    argerror(1, "connect", "password must be a string", 3)
  end
end

-- uri string or options table -> options | nil, err, code
local function options(arg)
  local o = {}
  if type(arg) == "table" then
    for k, v in pairs(arg) do o[k] = v end
  elseif type(arg) ~= "string" then
    argerror(1, "connect", "uri string or options table expected, got "
             .. type(arg), 2)
  end
  local s = type(arg) == "string" and arg or o.uri or o.url
  if s then
    local ok, err, code = merge_uri(o, s)
    if not ok then return nil, err, code end
  end
  o.hosts = o.hosts or { { host = o.host or "127.0.0.1", port = o.port or 27017 } }
  timeouts(o)
  check_options(o)
  return o
end

--[[ Handshake and authentication ===========================================]]

local function read_first_line(path)
  local f = io.open(path, "r")
  if not f then return nil end
  local line = f:read("l")
  f:close()
  return line
end

local os_info   -- read once
local function client_metadata(app_name)
  if not os_info then
    local ostype = read_first_line("/proc/sys/kernel/ostype")
    local release = read_first_line("/proc/sys/kernel/osrelease")
    os_info = { type = ostype or (package.config:sub(1, 1) == "\\" and "Windows"
                                  or "unknown"),
                name = ostype and (ostype .. (release and " " .. release or ""))
                       or nil,
                version = release }
  end
  local md = { driver = { name = "evlua", version = mongo.VERSION },
               os = os_info, platform = _VERSION }
  if app_name then md.application = { name = app_name } end
  return md
end

local function bytes_of(v)
  if type(v) == "string" then return v end
  return v and v.data or ""
end

-- One saslStart/saslContinue round: the reply | nil, err, code [, info]
-- (the server's refusal has code "auth").
local function sasl_step(ch, o, fields)
  fields[#fields + 1] = "$db"
  fields[#fields + 1] = o.authSource
  local reply, err, code, info = command(ch, o.connect_timeout, doc(fields))
  if reply then return reply end
  if code == "mongo" then code = "auth" end
  return nil, "authentication failed: " .. err, code, info
end

local function mechanism(o, mechs)
  if o.authMechanism then return o.authMechanism end
  for _, m in ipairs(mechs or {}) do
    if m == "SCRAM-SHA-256" then return m end
  end
  return "SCRAM-SHA-1"
end

-- SCRAM over saslStart/saslContinue: true | nil, err, code [, info]
local function authenticate(ch, o, mechs)
  local mech = mechanism(o, mechs)
  local password = scram.mongo_password(mech, o.username, o.password)
  local conv, err, code = scram.client(mech, o.username, password)
  if not conv then return nil, err, code end
  local reply, info
  reply, err, code, info = sasl_step(ch, o, {
    "saslStart", 1, "mechanism", mech, "payload", bson.binary(conv:first()),
    "autoAuthorize", 1, "options", { skipEmptyExchange = true } })
  if not reply then return nil, err, code, info end
  local final
  final, err, code = conv:final(bytes_of(reply.payload))
  if not final then return nil, "authentication failed: " .. err, code end
  local id = reply.conversationId
  reply, err, code, info = sasl_step(ch, o, {
    "saslContinue", 1, "conversationId", id, "payload", bson.binary(final) })
  if not reply then return nil, err, code, info end
  local ok
  ok, err, code = conv:verify(bytes_of(reply.payload))
  if not ok then return nil, "authentication failed: " .. err, code end
  for _ = 1, 2 do   -- servers that ignore skipEmptyExchange
    if reply.done then return true end
    reply, err, code, info = sasl_step(ch, o, {
      "saslContinue", 1, "conversationId", id, "payload", bson.binary("") })
    if not reply then return nil, err, code, info end
  end
  if reply.done then return true end
  return fail("auth", "authentication did not finish")
end

-- Connect to one of the hosts, say hello, authenticate: ch | nil, err...
local function open(o)
  local ch, err, code
  for _, h in ipairs(o.hosts) do
    ch, err, code = event.connect(h.host, h.port, Conn, o.connect_timeout)
    if ch then break end
  end
  if not ch then return nil, err, code end
  ch._name = tostring(ch)
  -- a server that stops reading: a request waits for room at most its
  -- socket timeout, and the connection drops after send_timeout without
  -- progress
  ch:set_timeouts({ send = o.send_timeout, write = o.socket_timeout })
  local hello = { "hello", 1, "helloOk", true,
                  "client", client_metadata(o.appName) }
  if o.username then
    hello[#hello + 1] = "saslSupportedMechs"
    hello[#hello + 1] = o.authSource .. "." .. o.username
  end
  hello[#hello + 1] = "$db"
  hello[#hello + 1] = "admin"
  local reply, info
  reply, err, code, info = command(ch, o.connect_timeout, doc(hello))
  if not reply and info and info.code == 59 then   -- before 4.4.2: no hello
    hello[1] = "isMaster"
    reply, err, code, info = command(ch, o.connect_timeout, doc(hello))
  end
  if not reply then
    ch:close_immediately()
    return nil, "hello failed: " .. err, code, info
  end
  ch._hello = reply
  local function limit(v, d)
    return math.type(v) == "integer" and v > 0 and v or d
  end
  ch._max_bson = limit(reply.maxBsonObjectSize, ch._max_bson)
  ch._max_message = limit(reply.maxMessageSizeBytes, ch._max_message)
  ch._max_batch = limit(reply.maxWriteBatchSize, ch._max_batch)
  ch:set_limits({ max_input = ch._max_message + 64 })
  if o.username then
    local ok
    ok, err, code, info = authenticate(ch, o, reply.saslSupportedMechs)
    if not ok then
      ch:close_immediately()
      return nil, err, code, info
    end
  end
  return ch
end

--[[ Clients ================================================================]]
-- The client keeps one connection, made at connect and remade on the
-- first request after it drops. Attempts that fail space the next one out
-- (capped exponential backoff with jitter, as rpc.client); until it is
-- due, requests fail at once with the last attempt's error.

local Client = {}
Client.__index = Client
Client.__name = "evlua.mongo.client"
mongo.client_class = Client

local function wake_each(list, ...)
  for i = 1, #list do wakeup(list[i], ...) end
end

local function attempt(self)
  local waiting = {}
  self._connecting = waiting
  local ch, err, code, info = open(self._opts)
  self._connecting = false
  if ch and self._closed then
    ch:close()
    ch, err, code = nil, "closed", "closed"
  end
  if ch then
    self._ch, self._failures, self._retry_at = ch, 0, 0
    self._connects = self._connects + 1
    wake_each(waiting, true)
    return ch
  end
  if code ~= "cancelled" then
    local n = self._failures + 1
    self._failures = n
    local o = self._opts
    local min, max = o.reconnect_min or mongo.defaults.reconnect_min,
      o.reconnect_max or mongo.defaults.reconnect_max
    local cap = math.min(max, min * 2 ^ math.min(n - 1, 60))
    local delay = cap / 2 + math.random() * cap / 2
    self._retry_at = event.now() + delay
    self._err, self._code, self._info = err, code, info
    if n == 1 and self._connects > 0 then
      event.warn(("mongo: cannot reconnect: %s"):format(err))
    end
  end
  wake_each(waiting, false)
  return nil, err, code, info
end

-- The open connection, connecting when there is none.
local function connection(self)
  while true do
    if self._closed then return fail("closed") end
    local ch = self._ch
    if ch and not ch._closed then return ch end
    if event.now() < self._retry_at then
      return nil, self._err, self._code, self._info
    end
    local waiting = self._connecting
    if not waiting then return attempt(self) end
    local task = running()
    waiting[#waiting + 1] = task
    local ok, err, code = wait_as("mongo", "connect", task,
                                  self._opts.connect_timeout)
    if ok == nil then
      for i = #waiting, 1, -1 do
        if waiting[i] == task then table.remove(waiting, i) end
      end
      return nil, err, code
    end
    if ok == false and not self._connecting and self._retry_at > event.now() then
      return nil, self._err, self._code, self._info
    end
  end
end

-- Cursors collected while open, and the timer that kills them (see
-- Cursor:__gc).
local doomed, reaper, reap = {}, nil, nil

-- self:_command(body [, seq_id, docs, first]) -> reply, last | nil, err, ...
function Client:_command(body, seq_id, docs, first)
  if not running() then errors.need_coroutine("mongo request", 2) end
  local ch, err, code, info = connection(self)
  if not ch then return nil, err, code, info end
  self._requests = self._requests + 1
  if doomed[1] then reap() end   -- collected cursors' kills go first
  return command(ch, self._opts.socket_timeout, body, seq_id, docs, first)
end

-- mongo.connect(uri_or_opts) -> client | nil, err, code [, info]. In a
-- coroutine. opts: uri (its options as defaults), hosts = {{host=,port=}}
-- or host, port; username, password, authSource, authMechanism,
-- connectTimeoutMS, socketTimeoutMS (or connect_timeout, socket_timeout
-- in seconds), appName, reconnect_min, reconnect_max (seconds).
function mongo.connect(arg)
  local o, err, code = options(arg)
  if not o then return nil, err, code end
  if not running() then errors.need_coroutine("mongo.connect") end
  local wc
  if o.w ~= nil or o.wTimeoutMS ~= nil or o.journal ~= nil then
    wc = { w = o.w, wtimeout = o.wTimeoutMS, j = o.journal }
  end
  local self = setmetatable({
    _write_concern = wc,
    _opts = o, _ch = false, _closed = false, _connecting = false,
    _failures = 0, _retry_at = 0, _err = false, _code = false, _info = nil,
    _connects = 0, _requests = 0, _dbs = {},
  }, Client)
  local ch, info
  ch, err, code, info = attempt(self)
  if not ch then return nil, err, code, info end
  return self
end

-- client:close(): close the connection; later requests fail "closed".
function Client:close()
  if self._closed then return end
  self._closed = true
  local ch = self._ch
  if ch then ch:close() end
end
Client.__close = Client.close
Client.__gc = Client.close   -- a client nobody holds closes its connection

function Client:__tostring()
  local ch = self._ch
  local state = self._closed and "closed"
                or (ch and not ch._closed) and "connected" or "disconnected"
  local h = self._opts.hosts[1]
  return ("%s (%s:%s, %s)"):format(Client.__name, h.host, h.port, state)
end

-- client:hello() -> the server's hello reply (limits, version...)
function Client:hello()
  local ch = self._ch
  return ch and ch._hello
end

-- client:stats() -> { requests, connects, connected, pending, failures }
function Client:stats()
  local ch = self._ch
  local pending = 0
  if ch and ch._pending then
    for _ in pairs(ch._pending) do pending = pending + 1 end
  end
  return { requests = self._requests, connects = self._connects,
           connected = ch and not ch._closed or false, pending = pending,
           failures = self._failures }
end

-- The command name and the fields of cmd, then "$db": a doc. cmd is a
-- bson.doc (order kept) or a table with one key.
local function with_db(cmd, db, fname)
  if is_doc(cmd) then
    local list = doc_fields(cmd)
    list[#list + 1] = "$db"
    list[#list + 1] = db
    return doc(list)
  end
  if type(cmd) ~= "table" then
    argerror(1, fname, "command document expected, got " .. type(cmd), 2)
  end
  local k, v = next(cmd)
  if k == nil or next(cmd, k) ~= nil then
    argerror(1, fname, "a command with several fields must be ordered: "
             .. "mongo.doc{\"name\", value, ...}", 2)
  end
  return doc{ k, v, "$db", db }
end

-- client:run_command(db, cmd) -> reply | nil, err, code [, info]
function Client:run_command(db, cmd)
  if type(db) ~= "string" then
    argerror(1, "run_command", "database name expected, got " .. type(db))
  end
  return (self:_command(with_db(cmd, db, "run_command")))
end

--[[ Databases ==============================================================]]

local Database = {}
Database.__index = Database
Database.__name = "evlua.mongo.database"
mongo.database_class = Database

-- client:db(name) -> database
function Client:db(name)
  if type(name) ~= "string" or name == "" then
    argerror(1, "db", "database name expected")
  end
  local d = self._dbs[name]
  if not d then
    d = setmetatable({ client = self, name = name, _colls = {} }, Database)
    self._dbs[name] = d
  end
  return d
end

function Database:__tostring()
  return ("%s (%s)"):format(Database.__name, self.name)
end

-- db:run_command(cmd) -> reply | nil, err, code [, info]
function Database:run_command(cmd)
  local reply, err, code, info =
    self.client:_command(with_db(cmd, self.name, "run_command"))
  return reply, err, code, info
end

-- client:list_databases() -> { { name =, sizeOnDisk =, empty = }... }
function Client:list_databases(filter)
  local reply, err, code, info = self:_command(doc{
    "listDatabases", 1, "filter", filter or {}, "$db", "admin" })
  if not reply then return nil, err, code, info end
  return reply.databases or {}
end

--[[ Cursors ================================================================]]

local Cursor = {}
Cursor.__index = Cursor
Cursor.__name = "evlua.mongo.cursor"
mongo.cursor_class = Cursor

local function kill_body(c)
  return doc{ "killCursors", c._coll, "cursors", array{ c._id },
              "$db", c._db }
end

-- A cursor on the first reply of find/aggregate/listIndexes...
local function new_cursor(client, db, reply, opts)
  if not reaper then reaper = core.timer(reap) end
  local cur = reply.cursor or {}
  local ns = cur.ns or ""
  local coll = ns:match("^[^.]*%.(.*)$") or ns
  return setmetatable({
    _client = client, _ch = client._ch, _db = db, _coll = coll,
    _id = cur.id or 0, _batch = cur.firstBatch or {}, _i = 0,
    _batch_size = opts and opts.batch_size, _limit = opts and opts.limit,
    _returned = 0, _closed = false,
  }, Cursor)
end

local function cursor_done(c)
  c._closed = true
  c._batch, c._i = {}, 0
end

-- cursor:next() -> the next document | nil (no more) | nil, err, code...
function Cursor:next()
  if self._closed then return nil end
  local limit = self._limit
  if limit and limit > 0 and self._returned >= limit then
    self:close()
    return nil
  end
  local i = self._i + 1
  local batch = self._batch
  while i > #batch do
    if self._id == 0 then
      cursor_done(self)
      return nil
    end
    if self._client._ch ~= self._ch or self._ch._closed then
      -- the server's cursor went with the connection that opened it
      cursor_done(self)
      return nil, "cursor's connection closed", "closed"
    end
    local body = { "getMore", self._id, "collection", self._coll }
    if self._batch_size then
      body[5], body[6] = "batchSize", self._batch_size
    end
    body[#body + 1] = "$db"
    body[#body + 1] = self._db
    local reply, err, code, info = self._client:_command(doc(body))
    if not reply then
      cursor_done(self)
      return nil, err, code, info
    end
    local cur = reply.cursor or {}
    self._id = cur.id or 0
    batch = cur.nextBatch or {}
    self._batch, i = batch, 1
  end
  self._i = i
  self._returned = self._returned + 1
  local d = batch[i]
  batch[i] = false   -- the cursor keeps no reference to what it gave
  return d
end

-- cursor:close(): kill the server's cursor if it is still open (the reply
-- is not waited for). Idempotent.
function Cursor:close()
  if self._id ~= 0 then
    local client = self._client
    local ch = client._ch
    if ch == self._ch then send_only(ch, kill_body(self)) end
    self._id = 0
  end
  cursor_done(self)
end
Cursor.__close = Cursor.close

-- A cursor collected while open: a finalizer may run inside any
-- allocation, the encoder's included, so it only notes the cursor; a
-- zero-delay timer (started by the first one) sends the killCursors.
reap = function()
  local list = doomed
  doomed = {}
  for i = 1, #list do
    local c = list[i]
    if c._client._ch == c._ch then send_only(c._ch, kill_body(c)) end
  end
end

function Cursor:__gc()
  if self._id ~= 0 and not self._closed then
    doomed[#doomed + 1] = { _client = self._client, _ch = self._ch,
                            _coll = self._coll, _db = self._db, _id = self._id }
    self._id = 0
    if #doomed == 1 and reaper then reaper:start(0) end
  end
end

local function iter_next(c)
  local d, err = c:next()
  if d == nil and err then error("mongo cursor: " .. err, 2) end
  return d
end

-- for doc in cursor:iter() do ... end: a loop that breaks early (or
-- raises) closes the cursor. A failed getMore raises.
function Cursor:iter()
  return iter_next, self, nil, self
end

-- cursor:to_array() -> { docs... } | nil, err, code...
function Cursor:to_array()
  local out = {}
  while true do
    local d, err, code, info = self:next()
    if d == nil then
      if err then return nil, err, code, info end
      return out
    end
    out[#out + 1] = d
  end
end

function Cursor:__tostring()
  return ("%s (%s.%s, %s)"):format(Cursor.__name, self._db, self._coll,
                                   self._closed and "closed" or "open")
end

-- db:list_collections([filter]) -> { { name =, type =, ... }... }
function Database:list_collections(filter)
  local reply, err, code, info = self.client:_command(doc{
    "listCollections", 1, "filter", filter or {}, "cursor", {},
    "$db", self.name })
  if not reply then return nil, err, code, info end
  return new_cursor(self.client, self.name, reply):to_array()
end

--[[ Collections ============================================================]]

local Collection = {}
Collection.__index = Collection
Collection.__name = "evlua.mongo.collection"
mongo.collection_class = Collection

-- db:collection(name) -> collection
function Database:collection(name)
  if type(name) ~= "string" or name == "" then
    argerror(1, "collection", "collection name expected")
  end
  local c = self._colls[name]
  if not c then
    c = setmetatable({ client = self.client, db = self, name = name,
                       _db = self.name }, Collection)
    self._colls[name] = c
  end
  return c
end

-- client:collection("db.coll") -> collection
function Client:collection(ns)
  local db, coll
  if type(ns) == "string" then db, coll = ns:match("^([^.]+)%.(.+)$") end
  if not db then argerror(1, "collection", "\"db.collection\" expected") end
  return self:db(db):collection(coll)
end

function Collection:__tostring()
  return ("%s (%s.%s)"):format(Collection.__name, self._db, self.name)
end

-- Append the options present in opts to the list body, as name, value:
-- map = { { "lua_name", "serverName" }... }.
local function add_options(body, opts, map)
  if not opts then return body end
  for _, m in ipairs(map) do
    local v = opts[m[1]]
    if v ~= nil then
      body[#body + 1] = m[2]
      body[#body + 1] = v
    end
  end
  return body
end

local function finish(body, db)
  body[#body + 1] = "$db"
  body[#body + 1] = db
  return doc(body)
end

-- Write errors in an ok:1 reply as a failure.
local function write_failure(reply, offset, acc)
  local we = reply.writeErrors
  if we and #we > 0 then
    local list = {}
    for i, e in ipairs(we) do
      -- index: of the document (statement) in the caller's list, from 1
      list[i] = { index = (e.index or 0) + offset + 1, code = e.code,
                  message = e.errmsg, codeName = e.codeName }
    end
    acc.write_errors = acc.write_errors or {}
    for _, e in ipairs(list) do acc.write_errors[#acc.write_errors + 1] = e end
    return true
  end
  local wce = reply.writeConcernError
  if wce then
    acc.write_concern_error = wce
    return true
  end
  return false
end

local function write_error_result(acc, reply)
  local first = acc.write_errors and acc.write_errors[1]
  local msg = first and first.message
              or acc.write_concern_error and acc.write_concern_error.errmsg
              or "write failed"
  local info = { code = first and first.code
                        or acc.write_concern_error and acc.write_concern_error.code,
                 codeName = first and first.codeName,
                 message = msg, write_errors = acc.write_errors,
                 write_concern_error = acc.write_concern_error,
                 reply = reply, result = acc.result }
  return nil, msg, "mongo", info
end

-- Send the write command (insert/update/delete) over docs in as many
-- batches as the server's limits ask: { n =, nModified =, upserted = }
-- | nil, err, code, info.
-- The write concern of a write: opts.write_concern, else the client's
-- (the URI's w, wTimeoutMS, journal), else none (the server's default).
local function write_concern(coll, opts)
  local wc = opts and opts.write_concern
  if wc ~= nil then return wc end
  return coll.client._write_concern
end

local function write_batches(coll, name, seq_id, docs, opts, extra)
  local n = #docs
  local ordered = not (opts and opts.ordered == false)
  local wc = write_concern(coll, opts)
  local total = { n = 0, nModified = 0, upserted = {} }
  local acc = { result = total }
  local first = 1
  while first <= n do
    local body = { name, coll.name, "ordered", ordered }
    for i = 1, #extra do body[#body + 1] = extra[i] end
    if wc then
      body[#body + 1] = "writeConcern"
      body[#body + 1] = wc
    end
    local reply, last, code, info = coll.client:_command(
      finish(body, coll._db), seq_id, docs, first)
    if not reply then return nil, last, code, info end
    total.n = total.n + (reply.n or 0)
    total.nModified = total.nModified + (reply.nModified or 0)
    for _, u in ipairs(reply.upserted or {}) do
      total.upserted[#total.upserted + 1] = { index = u.index + first - 1,
                                              _id = u._id }
    end
    if write_failure(reply, first - 1, acc) and ordered then
      return write_error_result(acc, reply)
    end
    first = last + 1
  end
  if acc.write_errors or acc.write_concern_error then
    return write_error_result(acc)
  end
  return total
end

local function check_doc(v, i, fname)
  if type(v) ~= "table" then
    argerror(i, fname, "document expected, got " .. type(v), 2)
  end
end

-- An optional filter (argument 1): nil or a document.
local function check_filter(filter, fname)
  if filter ~= nil and type(filter) ~= "table" then
    argerror(1, fname, "filter document expected, got " .. type(filter), 2)
  end
end

-- The top-level keys of a document, in order for a mongo.doc.
local function keys_of(d)
  local list = {}
  if is_doc(d) then
    for i = 1, #d, 2 do list[#list + 1] = rawget(d, i) end
  else
    for k in pairs(d) do list[#list + 1] = k end
  end
  return list
end

local function is_operator(k)
  return type(k) == "string" and k:sub(1, 1) == "$"
end

-- An update (argument 2) is operators ({ ["$set"] = ... }) or a pipeline
-- (a list of stages), as the drivers require.
local function check_update(upd, fname)
  if type(upd) ~= "table" then
    argerror(2, fname, "update document expected, got " .. type(upd), 2)
  end
  if getmetatable(upd) == getmetatable(array{}) or rawget(upd, 1) ~= nil
     and not is_doc(upd) then
    return   -- a pipeline
  end
  local keys = keys_of(upd)
  if #keys == 0 then argerror(2, fname, "update document is empty", 2) end
  for _, k in ipairs(keys) do
    if not is_operator(k) then
      argerror(2, fname, "update document requires atomic operators ($set, "
               .. "$inc...); to replace a document use replace_one", 2)
    end
  end
end

-- A replacement (argument 2) is a document without operators.
local function check_replacement(d, fname)
  if type(d) ~= "table" then
    argerror(2, fname, "replacement document expected, got " .. type(d), 2)
  end
  for _, k in ipairs(keys_of(d)) do
    if is_operator(k) then
      argerror(2, fname, "replacement document must not contain atomic "
               .. "operators (" .. k .. ")", 2)
    end
  end
end

-- coll:insert_one(doc) -> { inserted_id = } | nil, err, code, info
function Collection:insert_one(d, opts)
  check_doc(d, 1, "insert_one")
  local id = ensure_id(d)
  local r, err, code, info = write_batches(self, "insert", "documents", { d },
                                           opts, add_options({}, opts, {
                                             { "bypass_document_validation",
                                               "bypassDocumentValidation" } }))
  if not r then return nil, err, code, info end
  return { inserted_id = id, inserted_count = r.n }
end

-- coll:insert_many(docs [, { ordered = true }]) -> { inserted_ids =,
-- inserted_count = } | nil, err, code, info (info.result: what was done).
-- An empty list raises, as the drivers refuse an empty batch.
function Collection:insert_many(docs, opts)
  if type(docs) ~= "table" then
    argerror(1, "insert_many", "list of documents expected, got " .. type(docs))
  end
  local n = #docs
  if n == 0 then
    argerror(1, "insert_many", "non-empty list of documents expected")
  end
  -- a plain copy: the wire layer reads the list raw, and docs may be a
  -- proxy (__len, __index)
  local ids, list = {}, {}
  for i = 1, n do
    local d = docs[i]
    check_doc(d, 1, "insert_many")
    ids[i] = ensure_id(d)
    list[i] = d
  end
  local r, err, code, info = write_batches(self, "insert", "documents", list,
                                           opts, add_options({}, opts, {
                                             { "bypass_document_validation",
                                               "bypassDocumentValidation" } }))
  if not r then
    if info and info.result then info.result.inserted_ids = ids end
    return nil, err, code, info
  end
  return { inserted_ids = ids, inserted_count = r.n }
end

local function update_result(r)
  local up = r.upserted[1]
  return { matched_count = r.n - #r.upserted, modified_count = r.nModified,
           upserted_id = up and up._id, upserted_count = #r.upserted }
end

local function update(coll, fname, filter, upd, opts, multi)
  check_doc(filter, 1, fname)   -- (a tail call of the method: depth 2)
  local stmt = { q = filter, u = upd, multi = multi,
                 upsert = opts and opts.upsert or false }
  if opts then
    stmt.arrayFilters = opts.array_filters
    stmt.hint = opts.hint
    stmt.collation = opts.collation
  end
  local r, err, code, info = write_batches(coll, "update", "updates", { stmt },
                                           { write_concern = opts and opts.write_concern },
                                           {})
  if not r then return nil, err, code, info end
  return update_result(r)
end

-- coll:update_one(filter, update [, { upsert = }]) -> { matched_count,
-- modified_count, upserted_id, upserted_count } | nil, err, code, info
function Collection:update_one(filter, upd, opts)
  check_update(upd, "update_one")
  return update(self, "update_one", filter, upd, opts, false)
end

function Collection:update_many(filter, upd, opts)
  check_update(upd, "update_many")
  return update(self, "update_many", filter, upd, opts, true)
end

function Collection:replace_one(filter, replacement, opts)
  check_replacement(replacement, "replace_one")
  return update(self, "replace_one", filter, replacement, opts, false)
end

local function delete(coll, fname, filter, limit, opts)
  check_doc(filter, 1, fname)   -- (a tail call of the method: depth 2)
  local stmt = { q = filter, limit = limit }
  if opts then stmt.collation, stmt.hint = opts.collation, opts.hint end
  local r, err, code, info = write_batches(coll, "delete", "deletes", { stmt },
                                           { write_concern = opts and opts.write_concern },
                                           {})
  if not r then return nil, err, code, info end
  return { deleted_count = r.n }
end

-- coll:delete_one(filter) -> { deleted_count = } | nil, err, code, info
function Collection:delete_one(filter, opts)
  return delete(self, "delete_one", filter, 1, opts)
end

function Collection:delete_many(filter, opts)
  return delete(self, "delete_many", filter, 0, opts)
end

local FIND_OPTIONS = {
  { "sort", "sort" }, { "projection", "projection" }, { "hint", "hint" },
  { "skip", "skip" }, { "limit", "limit" }, { "batch_size", "batchSize" },
  { "single_batch", "singleBatch" }, { "comment", "comment" },
  { "max_time_ms", "maxTimeMS" }, { "collation", "collation" },
  { "allow_disk_use", "allowDiskUse" },
}

-- A sort of several keys must say their order: a mongo.doc.
local function check_sort(opts, fname)
  local sort = opts and opts.sort
  if sort == nil or is_doc(sort) then return end
  if type(sort) ~= "table" then
    argerror(2, fname, "sort must be a document", 2)
  end
  local k = next(sort)
  if k ~= nil and next(sort, k) ~= nil then
    argerror(2, fname, "a sort of several keys must be ordered: "
             .. "mongo.doc{\"a\", 1, \"b\", -1}", 2)
  end
end

-- coll:find([filter [, opts]]) -> cursor | nil, err, code, info. opts:
-- projection, sort (a mongo.doc for several keys), skip, limit,
-- batch_size, hint, comment, max_time_ms, collation.
function Collection:find(filter, opts)
  if filter ~= nil then check_doc(filter, 1, "find") end
  check_sort(opts, "find")
  local body = add_options({ "find", self.name, "filter", filter or {} },
                           opts, FIND_OPTIONS)
  local reply, err, code, info = self.client:_command(finish(body, self._db))
  if not reply then return nil, err, code, info end
  return new_cursor(self.client, self._db, reply, opts)
end

-- coll:find_one([filter [, opts]]) -> doc | nil (none) | nil, err, ...
function Collection:find_one(filter, opts)
  local o = {}
  for k, v in pairs(opts or {}) do o[k] = v end
  o.limit, o.single_batch, o.batch_size = 1, true, nil
  local c, err, code, info = self:find(filter, o)
  if not c then return nil, err, code, info end
  local d = c:next()
  c:close()
  return d
end

local AGG_OPTIONS = {
  { "allow_disk_use", "allowDiskUse" }, { "max_time_ms", "maxTimeMS" },
  { "comment", "comment" }, { "hint", "hint" }, { "collation", "collation" },
  { "let", "let" },
}

-- coll:aggregate(pipeline [, opts]) -> cursor | nil, err, ...
function Collection:aggregate(pipeline, opts)
  if type(pipeline) ~= "table" then
    argerror(1, "aggregate", "pipeline (list of stages) expected")
  end
  local body = add_options({ "aggregate", self.name, "pipeline",
                             array(pipeline), "cursor",
                             { batchSize = opts and opts.batch_size } },
                           opts, AGG_OPTIONS)
  local reply, err, code, info = self.client:_command(finish(body, self._db))
  if not reply then return nil, err, code, info end
  return new_cursor(self.client, self._db, reply, opts)
end

-- coll:count_documents([filter [, { skip =, limit = }]]) -> n
function Collection:count_documents(filter, opts)
  check_filter(filter, "count_documents")
  local pipeline = { { ["$match"] = filter or {} } }
  if opts and opts.skip then pipeline[#pipeline + 1] = { ["$skip"] = opts.skip } end
  if opts and opts.limit then pipeline[#pipeline + 1] = { ["$limit"] = opts.limit } end
  pipeline[#pipeline + 1] = { ["$group"] = { _id = 1, n = { ["$sum"] = 1 } } }
  local c, err, code, info = self:aggregate(pipeline)
  if not c then return nil, err, code, info end
  local rows
  rows, err, code, info = c:to_array()
  if not rows then return nil, err, code, info end
  return rows[1] and rows[1].n or 0
end

-- coll:estimated_document_count() -> n (the collection's metadata count)
function Collection:estimated_document_count()
  local reply, err, code, info = self.client:_command(finish({ "count", self.name },
                                                             self._db))
  if not reply then return nil, err, code, info end
  return reply.n
end

-- coll:distinct(key [, filter]) -> { values... }
function Collection:distinct(key, filter)
  if type(key) ~= "string" then argerror(1, "distinct", "field name expected") end
  if filter ~= nil and type(filter) ~= "table" then
    argerror(2, "distinct", "filter document expected, got " .. type(filter))
  end
  local reply, err, code, info = self.client:_command(finish({
    "distinct", self.name, "key", key, "query", filter or {} }, self._db))
  if not reply then return nil, err, code, info end
  return reply.values or {}
end

local function find_and_modify(coll, fname, filter, fields, opts)
  check_sort(opts, fname)   -- (a tail call of the method)
  local body = { "findAndModify", coll.name, "query", filter or {} }
  for i = 1, #fields do body[#body + 1] = fields[i] end
  add_options(body, opts, { { "sort", "sort" }, { "projection", "fields" },
                            { "upsert", "upsert" } })
  local wc = write_concern(coll, opts)
  if wc then
    body[#body + 1] = "writeConcern"
    body[#body + 1] = wc
  end
  local reply, err, code, info = coll.client:_command(finish(body, coll._db))
  if not reply then return nil, err, code, info end
  if reply.value == bson.null then return nil end
  return reply.value
end

-- coll:find_one_and_update(filter, update [, { return_document = "after",
-- upsert =, sort =, projection = }]) -> doc | nil (none) | nil, err, ...
function Collection:find_one_and_update(filter, upd, opts)
  check_filter(filter, "find_one_and_update")
  check_update(upd, "find_one_and_update")
  return find_and_modify(self, "find_one_and_update", filter, { "update", upd, "new",
    opts and opts.return_document == "after" or false }, opts)
end

function Collection:find_one_and_replace(filter, replacement, opts)
  check_filter(filter, "find_one_and_replace")
  check_replacement(replacement, "find_one_and_replace")
  return find_and_modify(self, "find_one_and_replace", filter, { "update", replacement, "new",
    opts and opts.return_document == "after" or false }, opts)
end

-- coll:find_one_and_delete(filter [, { sort =, projection = }]) -> doc | nil
function Collection:find_one_and_delete(filter, opts)
  check_filter(filter, "find_one_and_delete")
  return find_and_modify(self, "find_one_and_delete", filter,
                         { "remove", true }, opts)
end

-- The default name of an index: "a_1_b_-1".
local function index_name(keys)
  local parts = {}
  local fields = is_doc(keys) and doc_fields(keys) or nil
  if fields then
    for i = 1, #fields, 2 do
      parts[#parts + 1] = fields[i] .. "_" .. tostring(fields[i + 1])
    end
  else
    local k, v = next(keys)
    if k == nil or next(keys, k) ~= nil then return nil end
    parts[1] = k .. "_" .. tostring(v)
  end
  return table.concat(parts, "_")
end

-- coll:create_indexes({ { key = mongo.doc{...}, name =, unique = }... })
-- -> { names... } | nil, err, ...
function Collection:create_indexes(specs)
  if type(specs) ~= "table" then argerror(1, "create_indexes", "list expected") end
  local list, names = {}, {}
  for i, s in ipairs(specs) do
    local spec = {}
    for k, v in pairs(s) do spec[k] = v end
    if type(spec.key) ~= "table" then
      argerror(1, "create_indexes", "index " .. i .. ": key document expected")
    end
    spec.name = spec.name or index_name(spec.key)
    if not spec.name then
      argerror(1, "create_indexes", "index " .. i .. ": a key of several "
               .. "fields must be a mongo.doc (or give a name)")
    end
    list[i], names[i] = spec, spec.name
  end
  local reply, err, code, info = self.client:_command(finish({
    "createIndexes", self.name, "indexes", array(list) }, self._db))
  if not reply then return nil, err, code, info end
  return names
end

-- coll:create_index(keys [, opts]) -> name | nil, err, ...
function Collection:create_index(keys, opts)
  local spec = { key = keys }
  for k, v in pairs(opts or {}) do spec[k] = v end
  local names, err, code, info = self:create_indexes({ spec })
  if not names then return nil, err, code, info end
  return names[1]
end

-- coll:list_indexes() -> { { key =, name =, ... }... }
function Collection:list_indexes()
  local reply, err, code, info = self.client:_command(finish({
    "listIndexes", self.name, "cursor", {} }, self._db))
  if not reply then return nil, err, code, info end
  return new_cursor(self.client, self._db, reply):to_array()
end

-- coll:drop_index(name) -> true | nil, err, ...
function Collection:drop_index(name)
  local reply, err, code, info = self.client:_command(finish({
    "dropIndexes", self.name, "index", name }, self._db))
  if not reply then return nil, err, code, info end
  return true
end

-- coll:drop() -> true | nil, err, ... (a collection that does not exist
-- is dropped already)
function Collection:drop()
  local reply, err, code, info = self.client:_command(finish({
    "drop", self.name }, self._db))
  if not reply then
    if info and (info.code == 26 or info.codeName == "NamespaceNotFound") then
      return true
    end
    return nil, err, code, info
  end
  return true
end

-- db:drop() -> true | nil, err, ...
function Database:drop()
  local reply, err, code, info = self.client:_command(doc{
    "dropDatabase", 1, "$db", self.name })
  if not reply then return nil, err, code, info end
  return true
end

return mongo
