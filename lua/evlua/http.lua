-- evlua/http.lua - the HTTP/1.x server (and, from evlua.http_client, the
-- client). Requests are parsed in C (core.http_parser, on the stream's
-- buffer); each one runs the user's callback in its own coroutine, and
-- the replies leave in request order whatever order the callbacks finish
-- in (pipelining).
--
-- Timeouts are checked by one sweep timer per server rather than a timer
-- per request, so the keep-alive hot path arms no timer at all.

local core = require "evlua.core"
local event = require "event"
local Channel = require "evlua.channel"
local util = require "evlua.http_util"
local argerror = require("evlua.errors").argerror

local http = {}

http.url_decode = util.url_decode
http.url_encode = util.url_encode
http.parse_query = util.parse_query
http.parse_url = util.parse_url
http.header = util.header
http.header_values = util.header_values
http.status_text = core.http_status_text

-- Server defaults; http.listen's opts override them one by one.
http.defaults = {
  max_url = 8 * 1024,            -- request target bytes (414)
  max_header_size = 32 * 1024,   -- request line + headers (431)
  max_headers = 100,             -- header lines (431)
  max_body = 8 * 1024 * 1024,    -- request body bytes (413)
  header_timeout = 10,           -- s to receive a request's headers (408)
  body_timeout = 60,             -- s to receive a request's body (408)
  idle_timeout = 60,             -- s a keep-alive connection may idle
  handler_timeout = 60,          -- s a callback has to reply (503)
  send_timeout = 60,             -- s a reply may wait for the client to
                                 -- read (then close; 0/false: never)
  max_connections = 10000,       -- more are answered 503 and closed
  max_pipeline = 32,             -- requests parsed ahead of their replies
  max_pipeline_body = 1024 * 1024,   -- body bytes of those: no more past it
  server = "evlua/" .. core.version,   -- Server header (false: none)
}

--[[ Requests ===============================================================]]

local Request = {}
Request.__index = Request
Request.__name = "evlua.http.request"
http.Request = Request

-- Send bytes of req in order: straight to the socket when req is the
-- oldest unanswered request of its connection, else kept until it is.
local function emit(req, a, b, c)   -- up to three strings
  local conn = req._conn
  if conn._closed then return nil, "closed", "closed" end
  if conn._queue[conn._qhead] == req then
    local stream = conn._stream
    local ok, err, code
    if c then ok, err, code = stream:write(a, b, c)
    elseif b then ok, err, code = stream:write(a, b)
    else ok, err, code = stream:write(a) end
    if ok == false and event.running() then
      -- a slow client is send_timeout's to judge, not handler_timeout's
      req._draining = true
      ok, err, code = conn:_wait_drain()
      req._draining, req._since = false, false
    end
    return ok, err, code
  end
  local out = req._out
  if not out then
    out = {}
    req._out = out
  end
  out[#out + 1] = a
  if b then out[#out + 1] = b end
  if c then out[#out + 1] = c end
  return true
end

local advance, all_sent   -- defined with the connection

-- req:reply_header(key, value): add a header to the reply (before reply
-- or the first write). value: string, number, or a list (one line each).
-- core.http_reply_header checks and formats it; _rh collects the lines.
local reply_header_lines = core.http_reply_header
function Request:reply_header(key, value)
  local lines, kind = reply_header_lines(key, value)
  if self._status then error("reply_header: the reply has started", 2) end
  local rh = self._rh
  self._rh = rh and rh .. lines or lines
  if kind == 1 then
    self._close = true
  elseif kind == 2 then
    self._length = true
  end
end

local math_type, type = math.type, type

-- req._status, the state of the reply: false (nothing sent), STREAMING
-- (start() sent the head) or DONE.
local STREAMING <const>, DONE <const> = 1, 2
local function check_status(status, fname)
  if math_type(status) ~= "integer" or status < 100 or status > 999 then
    argerror(1, fname, "status code expected", 2)
  end
end

-- The reply is complete: let the next request's bytes go.
local function done(req)
  req._status = DONE
  local conn = req._conn
  if conn._queue[conn._qhead] == req then advance(conn) end
end

-- The flags of core.http_reply
local KEEP_ALIVE <const>, HTTP11 <const>, HEAD <const> = 1, 2, 4
local OWN_LENGTH <const>, OWN_CLOSE <const>, STREAM <const> = 8, 16, 32
local http_reply = core.http_reply

-- The core.http_reply flags and extra header lines of req's reply; the
-- connection stays open after it only if the request and the server
-- allow and no Connection: close header was set.
local function reply_flags(req)
  local flags, extra = req._flags, req._rh or nil
  if req.keep_alive and not req._conn._stopping then flags = flags | KEEP_ALIVE end
  if extra then
    if req._close then flags = flags & ~KEEP_ALIVE | OWN_CLOSE end
    if req._length then flags = flags | OWN_LENGTH end
  end
  return flags, extra
end

-- req:reply(status [, reason [, body]]) -> true | nil, err: the whole
-- reply at once, with Content-Length, formatted by core.http_reply.
-- Raises if a reply was already started, or on a bad status or reason
-- (core.http_reply checks them, and turns the body into a string).
function Request:reply(status, reason, body)
  if self._status then
    if self._expired then return nil, "timeout", "timeout" end
    error("reply: already replied", 2)
  end
  local conn = self._conn
  -- reply_flags(self) without a call in the common case: this runs for
  -- every request, and an armed debugger hooks every call
  local flags, extra = self._flags, nil
  if self._rh or conn._stopping then
    flags, extra = reply_flags(self)
  elseif self.keep_alive then
    flags = flags | KEEP_ALIVE
  end
  if flags & KEEP_ALIVE == 0 then self.keep_alive = false end
  local ok, err, code = true, nil, nil
  local oldest = conn._queue[conn._qhead] == self
  -- http_reply raises on a bad status or reason phrase before it writes:
  -- the request is still unanswered then (the error gets it a 500)
  if conn._closed then
    check_status(status, "reply")
    ok, err, code = nil, "closed", "closed"
  elseif oldest then
    ok, err, code = http_reply(conn._stream, status, reason, body, flags,
                               extra, conn.httpd.server_header)
  else   -- it waits for the replies before it
    self._out = { http_reply(nil, status, reason, body, flags, extra,
                             conn.httpd.server_header) }
  end
  self._status = DONE   -- done(self), inline: this runs for every request
  if ok == false and event.running() then
    ok, err, code = conn:_wait_drain()
  end
  if oldest then
    local h = conn._qhead
    if h == conn._qtail and self.keep_alive then   -- advance(), in short
      conn._queue[h] = nil
      -- all_sent's conditions, each of them: a new one there goes here too
      if conn._closed or conn._error or conn._stopping or conn._idle_off
         or conn._wait_continue or conn._blocked then
        all_sent(conn)
      else   -- all_sent(), in short: nothing waits for the queue to empty
        conn._qhead, conn._qtail = 1, 0
      end
    else
      advance(conn)
    end
  end
  return ok, err, code
end

-- req:start(status [, reason]): begin a streamed reply (chunked for
-- HTTP/1.1 unless a Content-Length header was set; for HTTP/1.0 the body
-- ends with the connection). write() starts a 200 reply by itself.
function Request:start(status, reason)
  check_status(status, "start")
  if self._status then
    if self._expired then return nil, "timeout", "timeout" end
    error("start: already replied", 2)
  end
  local flags, extra = reply_flags(self)
  local chunked = false
  if not self._length then
    if flags & HTTP11 ~= 0 then
      chunked = true
    else   -- HTTP/1.0: the body ends with the connection
      flags = flags & ~KEEP_ALIVE
    end
  end
  local head, none = http_reply(nil, status, reason, "", flags | STREAM, extra,
                                self._conn.httpd.server_header)   -- may raise
  if flags & KEEP_ALIVE == 0 then self.keep_alive = false end
  self._status, self._chunked = STREAMING, chunked
  self._head = self.method == "HEAD"
  return emit(self, head, none)
end

-- req:write(chunk) -> true | nil, err: send part of a streamed reply; in
-- a coroutine it waits while the connection's send queue is full.
function Request:write(chunk)
  if type(chunk) ~= "string" then
    argerror(1, "write", "string expected, got " .. type(chunk))
  end
  if not self._status then self:start(200) end
  if self._status ~= STREAMING then
    if self._expired then return nil, "timeout", "timeout" end
    error("write: reply already finished", 2)
  end
  self._since = false   -- handler_timeout runs again from this write
  if chunk == "" or self._head then return true end
  if self._chunked then
    return emit(self, ("%x\r\n"):format(#chunk), chunk, "\r\n")
  end
  return emit(self, chunk)
end

-- req:finish([chunk]) -> true | nil, err: end a streamed reply.
function Request:finish(chunk)
  if chunk then self:write(chunk) end
  if not self._status then self:start(200) end
  if self._status == DONE then return true end
  local ok, err = true, nil
  if self._chunked and not self._head then ok, err = emit(self, "0\r\n\r\n") end
  done(self)
  return ok, err
end

-- req:header(name) -> a request header's value, any case (joined with
-- ", " when repeated), or nil.
function Request:header(name)
  return util.header(self.headers, name)
end

-- req:parsed_url() -> http.parse_url(req.url), computed once.
function Request:parsed_url()
  local u = self._url
  if not u then
    u = util.parse_url(self.url) or { path = self.url, query = {} }
    self._url = u
  end
  return u
end

-- req:peer() -> host, port of the client
function Request:peer()
  return self._conn:peer()
end

-- req:replied() -> whether a reply has started
function Request:replied()
  return self._status and true or false
end

--[[ Connections ============================================================]]

local Conn = Channel:inherit()
Conn.__name = "evlua.http.connection"

local CONTINUE = "HTTP/1.1 100 Continue\r\n\r\n"

-- Answer status with a short text and close (errors of the connection,
-- not of a request).
local function send_error(conn, status)
  local text = (core.http_status_text(status) or "Error") .. "\n"
  conn:write(http_reply(nil, status, nil, text, HTTP11, "Content-Type: text/plain\r\n",
                        conn.httpd.server_header))
end

function Conn:init()
  local srv = self.httpd
  srv.nconn = srv.nconn + 1
  srv.conns[self] = true
  srv:_arm()
  if srv.nconn > srv.opts.max_connections or srv.closed then
    self._stopped = true
    send_error(self, 503)
    self:close()
    return
  end
  self._parser = core.http_parser("request", srv.opts)
  self.httpd = srv   -- read per request: an instance field, not the class's
  -- Fields read on every request, set here so that lookups hit the
  -- instance instead of walking the class chain.
  self._reader = false
  self._closed = false
  self._stopped, self._stopping, self._error = false, false, false
  self._blocked, self._wait_continue, self._idle_off = false, false, false
  self._queue, self._workers = {}, {}
  self._max_pipeline = srv.opts.max_pipeline
  self._max_pipeline_body = srv.opts.max_pipeline_body
  self._qhead, self._qtail = 1, 0
  self._stream:set_idle_timeout(srv.opts.idle_timeout)
  -- nothing waits in a read on a server connection: the stream calls
  -- data() itself, not through the channel dispatcher
  self._stream:set_data_handler(self.data)
  -- The first request's headers are due within header_timeout of the
  -- connection, so a client that connects and stays silent is cut too.
  self._read_deadline = event.now() + srv.opts.header_timeout
  self._partial = "headers"
  srv.slow[self] = true
end

-- The connection cannot go on (a parse error, a timeout): answer status
-- once the replies before it are out, then close.
local function stop_with(conn, status)
  conn._stopped = true
  conn._error = status
  conn.httpd.slow[conn] = nil
  if conn._qhead > conn._qtail then advance(conn) end
end

-- Answer req for its callback (500, 503): a plain-text reply of its own,
-- without the headers the callback had added (a Content-Length of the
-- reply it meant to send would frame this one wrongly).
local function builtin_reply(req, status, text)
  req._rh = "Content-Type: text/plain\r\n"
  req._close, req._length = nil, nil
  return req:reply(status, nil, text)
end

-- The callback has returned (ok) or failed (err) without finishing its
-- reply: log, and finish or cut the reply.
local function unfinished(req, ok, err)
  if not ok then
    event.error(("http: %s %s failed: %s"):format(req.method, req.url, err))
    if req._status == DONE then return end   -- it failed after its reply
  elseif not req._status then
    event.error(("http: %s %s: the callback returned without replying")
                :format(req.method, req.url))
  end
  if req._status then   -- streaming: finish it (or cut it on error)
    if ok then return req:finish() end
    req._conn._stopping = true
    req.keep_alive = false
    done(req)
    return
  end
  builtin_reply(req, 500, "Internal Server Error\n")
end

-- Callbacks run in pooled worker coroutines: a worker parks here between
-- requests, so a request costs a wakeup rather than a new task.
local idle_workers, nidle = {}, 0
local MAX_IDLE_WORKERS = 256

local wake = event._wake
local S = event._slots
local STATE, CO, CANCEL, WHAT, ON = S.STATE, S.CO, S.CANCEL, S.WHAT, S.ON
local co_resume, co_yield = coroutine.resume, coroutine.yield

-- The callback runs unprotected: an error ends the worker's task, whose
-- _on_failure answers the request. w.req is the request being served.
-- The worker parks inline, and dispatch resumes it inline (as evlua.rpc's
-- calls do): with the debugger armed every call of a request costs a
-- hook, so a request makes as few as it can.
local function worker_body(w)
  local task = w.task
  task._on_failure = function(traceback) unfinished(w.req, false, traceback) end
  while true do
    local req = w.req
    local srv = req._conn.httpd
    srv.callback(srv, req, req.method, req.url, req.headers, req.body)
    if req._status ~= DONE then unfinished(req, true) end
    w.req = nil
    if nidle >= MAX_IDLE_WORKERS then return end
    nidle = nidle + 1
    idle_workers[nidle] = w
    repeat   -- a late cancel may wake it without a request
      if task[CANCEL] then
        task[CANCEL] = false
      else
        task[STATE], task[WHAT], task[ON] = "waiting", "http request", w
        co_yield()
        task[STATE], task[CANCEL] = "running", false
      end
    until w.req
  end
end

-- A parsed request joins conn's queue and goes to a worker (kept beside
-- it in _workers, for expire). Its fields read on every request are
-- present, so that their lookups do not fall through to the class (and
-- reply_header adds no key).
local function dispatch(conn, deferred, method, url, headers, body,
                        keep_alive, version, trailers)
  local w   -- an idle worker, or a new one
  if nidle == 0 then
    w = {}
  else
    w = idle_workers[nidle]
    idle_workers[nidle] = nil
    nidle = nidle - 1
  end
  local req = setmetatable({ _conn = conn, method = method, url = url,
                             headers = headers, body = body,
                             keep_alive = keep_alive, version = version,
                             trailers = trailers,
                             -- reply_flags' part from the request line
                             _flags = (version >= 11 and HTTP11 or 0)
                                      | (method == "HEAD" and HEAD or 0),
                             _status = false, _rh = false },
                           Request)
  local tail = conn._qtail + 1
  conn._qtail = tail
  conn._queue[tail] = req
  conn._workers[tail] = w
  w.req = req
  local task = w.task
  if not task then
    w.task = event.fork(worker_body, w)
  elseif deferred then
    wake(task)
  elseif task[STATE] == "waiting" then   -- else a cancel woke it: it runs soon
    -- event._resume_now, inline: an idle worker has no deadline running
    task[STATE] = "running"
    local ok, err = co_resume(task[CO])
    if not ok then core.log("error", "http: worker: " .. tostring(err)) end
  end
end

-- The parser stopped for more bytes: partial ("headers" or "body") while
-- inside a request, whose header or body timeout then runs; nil between
-- requests.
local function track_partial(conn, partial)
  if partial then
    if conn._partial ~= partial then
      conn._partial = partial
      conn._read_deadline = event.now() + (partial == "headers"
        and conn.httpd.opts.header_timeout or conn.httpd.opts.body_timeout)
      conn.httpd.slow[conn] = true
    end
  else
    conn._partial = false
    conn._read_deadline = false
    conn.httpd.slow[conn] = nil
  end
end

-- Whether the requests waiting for their replies hold max_pipeline_body
-- bytes of bodies or more: then no more are parsed, so a connection pins
-- at most max_pipeline_body + max_body, not max_pipeline bodies.
-- Only pipelined requests get here (the queue is not empty).
local function pipeline_full(conn)
  local n, queue = 0, conn._queue
  for i = conn._qhead, conn._qtail do
    local body = queue[i].body
    if body then n = n + #body end
  end
  return n >= conn._max_pipeline_body
end

-- Parse every buffered request (up to max_pipeline unanswered ones).
-- deferred: not called from the stream's data event, so the workers are
-- queued to run (resumed from the loop) rather than resumed now.
function Conn:data(deferred)
  if self._stopped then return end
  local parser, stream = self._parser, self._stream
  local max_pipeline = self._max_pipeline
  while true do
    local queued = self._qtail - self._qhead + 1
    if queued >= max_pipeline or self._wait_continue
       or (queued > 0 and pipeline_full(self)) then
      self._blocked = true
      return   -- resumed by advance()
    end
    local kind, a, b, headers, body, keep_alive, version, more, trailers =
      parser:parse(stream)
    if kind == "request" then
      if self._read_deadline then
        self.httpd.slow[self] = nil
        self._read_deadline = false
        self._partial = false
      end
      dispatch(self, deferred, a, b, headers, body, keep_alive, version,
               trailers)
      if not keep_alive then
        self._stopped = true
        return
      end
      if not more then return end
    elseif kind == nil then
      track_partial(self, a)
      return
    elseif kind == "continue" then
      -- the client sends its body once told to go on: the body timeout
      -- starts then, not while earlier replies are still being worked on
      self._read_deadline, self._partial = false, false
      self.httpd.slow[self] = nil
      if self._qhead > self._qtail then
        self:write(CONTINUE)
      else
        self._wait_continue = true
        return
      end
    else   -- "error"
      event.debug(("http: %s: %s"):format(tostring(self), b))
      stop_with(self, a)
      return
    end
  end
end

-- The oldest reply is complete: send the replies queued behind it that
-- are ready, then resume parsing or close.
advance = function(conn)
  local queue, h = conn._queue, conn._qhead
  local req = queue[h]
  while req do
    local out = req._out
    if out then   -- its bytes waited for the replies before it
      req._out = false
      conn._stream:write(table.unpack(out))
    end
    if req._status ~= DONE then
      conn._qhead = h
      return
    end
    queue[h] = nil
    h = h + 1
    if not req.keep_alive then
      conn._qhead = h
      conn._stopped = true
      conn:close()
      return
    end
    req = queue[h]
  end
  all_sent(conn)
end

-- (Request:reply tests every condition below before calling this: a new
-- one goes there too.)
-- Every reply is out: start the queue over, so that it stays in the
-- table's array part instead of growing keys forever; then go on with
-- what waited for it.
all_sent = function(conn)
  conn._qhead, conn._qtail = 1, 0
  if conn._closed then return end
  if conn._error then
    send_error(conn, conn._error)
    conn:close()
    return
  end
  if conn._stopping then
    conn:close()
    return
  end
  if conn._idle_off then
    conn._idle_off = false
    conn._stream:set_idle_timeout(conn.httpd.opts.idle_timeout)
  end
  if conn._wait_continue then
    conn._wait_continue = false
    conn:write(CONTINUE)
  end
  if conn._blocked and not conn._stopped then
    conn._blocked = false
    conn:data(true)
  end
end

function Conn:disconnect()
  local srv = self.httpd
  srv.nconn = srv.nconn - 1
  srv.conns[self] = nil
  srv.slow[self] = nil
  if srv.nconn == 0 and srv.closed then event.wakeup(srv) end   -- shutdown
end

--[[ Servers ================================================================]]

local Server = {}
Server.__index = Server
Server.__name = "evlua.http.server"

-- One sweep per server checks header and handler deadlines, so the
-- request path arms no timer. It runs while the server has connections
-- and ticks at a quarter of the shortest timeout (at most once a second).
function Server:_arm()
  if self._sweep or self.closed then return end
  self._sweep = event.timer(self._tick, function() self:_check() end)
end

-- req (with its worker w) had no reply within handler_timeout.
local function expire(srv, req, w)
  event.error(("http: %s %s: no reply after %gs"):format(
    req.method, req.url, srv.opts.handler_timeout))
  if w.task and w.req == req then w.task:cancel() end
  -- the callback, cancelled, may still reply: it gets nil, "timeout"
  req._expired = true
  if req._status then   -- a streamed reply cut short
    req._conn._stopping = true
    req.keep_alive = false
    done(req)
  else
    builtin_reply(req, 503, "Service Unavailable\n")
  end
end

function Server:_check()
  local now = event.now()
  for conn in pairs(self.slow) do
    local deadline = conn._read_deadline
    if deadline and deadline <= now and not conn._closed then
      event.debug(("http: %s: %s timeout"):format(tostring(conn), conn._partial))
      stop_with(conn, 408)
    end
  end
  local oldest = now - self.opts.handler_timeout
  for conn in pairs(self.conns) do
    local queue = conn._queue
    if queue and conn._qhead <= conn._qtail then
      -- A reply is pending: the idle timeout must not cut the connection
      -- while the callback works. Requests answered within a tick never
      -- get here, which keeps the timer calls off the request path; the
      -- tick is at most a quarter of idle_timeout, so this comes first.
      if not conn._idle_off then
        conn._idle_off = true
        conn._stream:set_idle_timeout(0)
      end
      for i = conn._qhead, conn._qtail do
        local req = queue[i]
        if req and req._status ~= DONE and not req._draining then
          -- stamped on the first tick that sees it: no clock read per
          -- request; the timeout may fire up to a tick late
          local since = req._since
          if not since then
            req._since = now
          elseif since <= oldest then
            expire(self, req, conn._workers[i])
          end
        end
      end
    end
  end
  if self.nconn == 0 and self._sweep then
    self._sweep:cancel()
    self._sweep = nil
  end
end

-- httpd:close(): stop accepting; idle keep-alive connections close now,
-- busy ones after their current replies.
function Server:close()
  if self.closed then return end
  self.closed = true
  self.listener:close()
  for conn in pairs(self.conns) do
    conn._stopping = true
    conn._stopped = true
    if conn._qhead and conn._qhead > conn._qtail then conn:close() end
  end
  if self._sweep then
    self._sweep:cancel()
    self._sweep = nil
  end
end

-- httpd:shutdown([timeout]) -> true | nil, "timeout". In a coroutine:
-- close(), then wait until every connection has sent its replies and
-- closed; after timeout seconds the connections left are cut.
function Server:shutdown(timeout)
  self:close()
  if self.nconn == 0 then return true end
  local ok, err, code = event.wait_as("http shutdown", self, self, timeout)
  if ok then return true end
  for conn in pairs(self.conns) do
    conn:close_immediately()   -- no disconnect callback: do its work
    Conn.disconnect(conn)
  end
  return nil, err, code
end

-- httpd:port() -> the port it listens on
function Server:port()
  return self.listener:port()
end

-- httpd:stats() -> { connections =, inflight = } (requests not answered)
function Server:stats()
  local n = 0
  for conn in pairs(self.conns) do
    if conn._queue then n = n + conn._qtail - conn._qhead + 1 end
  end
  return { connections = self.nconn, inflight = n }
end

-- http.listen(ip, port, callback [, opts]) -> server | nil, err.
-- callback(server, request, method, url, headers, body) runs in its own
-- coroutine per request; opts: the limits and timeouts of http.defaults,
-- plus backlog and reuseport (see event.listen).
function http.listen(ip, port, callback, opts)
  if type(callback) ~= "function" then
    argerror(3, "listen", "function expected, got " .. type(callback))
  end
  if opts ~= nil and type(opts) ~= "table" then
    argerror(4, "listen", "table expected, got " .. type(opts))
  end
  local o = {}
  for k, v in pairs(http.defaults) do o[k] = v end
  for k, v in pairs(opts or {}) do
    if http.defaults[k] == nil and k ~= "backlog" and k ~= "reuseport" then
      argerror(4, "listen", "unknown option '" .. tostring(k) .. "'")
    end
    o[k] = v
  end
  for _, k in ipairs({ "header_timeout", "body_timeout", "idle_timeout",
                       "handler_timeout" }) do
    if type(o[k]) ~= "number" or not (o[k] > 0) then
      argerror(4, "listen", k .. " must be a positive number")
    end
  end
  for k, least in pairs({ max_pipeline = 1, max_pipeline_body = 0, max_connections = 1 }) do
    if math.type(o[k]) ~= "integer" or o[k] < least then
      argerror(4, "listen", ("%s must be an integer >= %d"):format(k, least))
    end
  end
  local send = o.send_timeout
  if send ~= false and (type(send) ~= "number" or not (send >= 0 and send < math.huge)) then
    argerror(4, "listen", "send_timeout must be false or a non-negative number")
  end
  if o.server ~= false and (type(o.server) ~= "string" or o.server:find("[\r\n%z]")) then
    argerror(4, "listen", "server must be false or a string without CR, LF or NUL")
  end
  core.http_parser("request", o)   -- raises on a bad limit
  local srv = setmetatable({ callback = callback, opts = o, nconn = 0,
                             conns = {}, slow = {} }, Server)
  srv.server_header = o.server and ("Server: " .. o.server .. "\r\n") or ""
  srv._tick = math.min(1, o.header_timeout / 4, o.body_timeout / 4,
                       o.handler_timeout / 4, o.idle_timeout / 4)
  local class = Conn:inherit()
  class.httpd = srv
  class.send_timeout = o.send_timeout   -- applied by Channel:_start
  local listener, err, code = event.listen(ip, port, nil, class,
                                           { backlog = o.backlog,
                                             reuseport = o.reuseport })
  if not listener then return nil, err, code end
  srv.listener = listener
  return srv
end

http.connection = Conn

--[[ Client =================================================================]]

local client = require "evlua.http_client"
http.request = client.request
http.close_idle = client.close_idle

return http
