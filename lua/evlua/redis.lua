-- evlua/redis.lua - a Redis client for coroutine code, on channels.
--
-- One client is one connection that any number of coroutines share: each
-- command is written at once (the stream coalesces the writes of one loop
-- iteration into one send) and its coroutine waits in a FIFO; replies come
-- in order, so the data callback hands each one to the head of the FIFO.
-- N coroutines issuing commands at once cost one round trip.
--
-- Replies (decoded in C by src/lua/lredis.c, straight from the input buffer):
-- status and bulk strings -> strings, integers -> integers, arrays ->
-- tables; a nil reply -> nil (false inside an array, which has no holes);
-- an error reply -> nil, "ERR ..." (inside an array or a pipeline, an
-- error object { err = "ERR ..." }, see redis.is_error).
-- Transport failures -> nil, "timeout" | "closed" | a connect error; the
-- next command reconnects (at most once per backoff delay) and sends AUTH
-- and SELECT again.

local core = require "evlua.core"
local event = require "event"
local Channel = require "evlua.channel"
local errors = require "evlua.errors"
local argerror, fail = errors.argerror, errors.fail

local type, select, error, setmetatable, tostring, unpack =
  type, select, error, setmetatable, tostring, table.unpack
local running, wait_as, wakeup = event.running, event.wait_as, event.wakeup

local redis = {}

redis.defaults = {
  host = "127.0.0.1",
  port = 6379,
  db = 0,
  timeout = 10,                      -- seconds: connect, and each command
  max_reply = 64 * 1024 * 1024,      -- bytes of one reply
  max_elements = 8 * 1024 * 1024,    -- elements of one array
  max_depth = 32,                    -- arrays nested in arrays
  reconnect_delay = 0.1,             -- first wait after a failed connect
  max_reconnect_delay = 5,           -- the wait doubles up to this
  max_messages = 10000,              -- subscriber: messages held unread
}

-- Error replies inside arrays and pipelines.
local ErrorReply = { __name = "evlua.redis.error" }
ErrorReply.__index = ErrorReply
function ErrorReply:__tostring() return self.err end

-- redis.is_error(v) -> true when v is an error reply from inside an array
-- or a pipeline (its message is v.err)
function redis.is_error(v)
  return type(v) == "table" and getmetatable(v) == ErrorReply
end

-- redis.to_map(list) -> { [field] = value } from the flat field, value,
-- ... arrays of HGETALL, CONFIG GET and the like
function redis.to_map(list)
  if type(list) ~= "table" then
    argerror(1, "to_map", "table expected, got " .. type(list))
  end
  local map = {}
  for i = 1, #list - 1, 2 do map[list[i]] = list[i + 1] end
  return map
end

local DROPPED = setmetatable({}, { __name = "dropped reply" })

--[[ Options ================================================================]]

-- "redis://[[user]:password@]host[:port][/db]" -> options | nil, err,
-- "bad_url"
local function parse_url(url)
  local rest = url:match("^redis://(.*)$")
  if not rest then return fail("bad_url", "invalid redis url: " .. url) end
  local opts = {}
  local userinfo, hostpart = rest:match("^(.*)@(.*)$")
  if userinfo then
    local user, password = userinfo:match("^(.-):(.*)$")
    if user then
      opts.username = user ~= "" and user or nil
      opts.password = password
    else
      opts.password = userinfo
    end
    rest = hostpart
  end
  local host, port, db = rest:match("^([^:/]*):?(%d*)/?(%d*)$")
  if not host then return fail("bad_url", "invalid redis url: " .. url) end
  if host ~= "" then opts.host = host end
  if port ~= "" then opts.port = math.tointeger(tonumber(port)) end
  if db ~= "" then opts.db = math.tointeger(tonumber(db)) end
  return opts
end

-- The options of a connect call, with the defaults filled in | nil, err,
-- "bad_url" (a url is data, from a config or the environment: a bad one
-- is a failure, not a programmer error). depth: argerror's, blaming the
-- caller of fname (1: fname calls options).
local function options(opts, fname, depth)
  depth = (depth or 1) + 1
  local err, code
  if type(opts) == "string" then
    opts, err, code = parse_url(opts)
    if not opts then return nil, err, code end
  elseif opts == nil then
    opts = {}
  elseif type(opts) ~= "table" then
    argerror(1, fname, "options table or url expected", depth)
  end
  local o = {}
  if opts.url then
    local parsed
    parsed, err, code = parse_url(opts.url)
    if not parsed then return nil, err, code end
    for k, v in pairs(parsed) do o[k] = v end
  end
  for k, v in pairs(opts) do if k ~= "url" then o[k] = v end end
  for k, v in pairs(redis.defaults) do if o[k] == nil then o[k] = v end end
  if type(o.timeout) ~= "number" or not (o.timeout > 0 and o.timeout < math.huge) then
    argerror(1, fname, "timeout must be a positive number", depth)
  end
  if math.type(o.db) ~= "integer" or o.db < 0 then
    argerror(1, fname, "db must be a non-negative integer", depth)
  end
  return o
end

--[[ Connections ============================================================]]
-- A connection is a channel whose FIFO holds, per command in flight, its
-- waiting task, or a batch (pipeline) with the command's index in it
-- (_slot), or DROPPED when the waiter gave up (cancelled).
--
-- Deadlines: commands with the client's own timeout are sent in order and
-- answered in order, so the oldest one waiting is the first to expire. One
-- timer per connection (the watchdog) watches it, instead of a timer per
-- command; a command with a timeout of its own (timed_call) waits with it.
-- When a command times out, everything sent after it waits behind it (a
-- BLPOP that blocks for ever, a hung server): the connection is closed,
-- every command waiting fails with "timeout", and the next command
-- connects afresh.

local Conn = Channel:inherit()
Conn.__name = "evlua.redis.connection"

function Conn:init()
  self._fifo, self._slot, self._deadline = {}, {}, {}
  self._head, self._tail = 1, 0
  self._watching, self._full = false, false
end

-- The C functions that encode and queue a command on a stream, and read
-- the next reply (src/lua/lredis.c), looked up on the first connection.
local write_command, read_reply

-- A fatal problem with the connection: pending commands get err.
function Conn:_fail(err, code)
  event.error(("redis: closing %s: %s"):format(tostring(self), err))
  self._error, self._error_code = err, code or "protocol"
  self:close_immediately()
end

local function timed_out(ch)
  if not ch._closed then
    ch._error, ch._error_code = "timeout", "timeout"
    ch:close_immediately()
  end
end

-- The watchdog fired: fail the connection if the oldest deadline passed,
-- else sleep until it.
local function watchdog(timer, ch)
  local deadline = ch._deadline
  for i = ch._head, ch._tail do
    local d = deadline[i]
    if d then
      local left = d - event.now()
      if left <= 0 then return timed_out(ch) end
      timer:start(left)
      return
    end
  end
  ch._watching = false
end

local function watch(ch, timeout)
  ch._watching = true
  local timer = ch._watchdog
  if not timer then
    timer = core.timer(watchdog, ch)
    ch._watchdog = timer
  end
  timer:start(timeout)
end

-- Queue a waiter (task, or batch with its slot) for the next reply, with
-- the client's timeout if given.
local function push_waiter(ch, w, slot, timeout)
  local t = ch._tail + 1
  ch._tail = t
  ch._fifo[t] = w
  if slot then ch._slot[t] = slot end
  if timeout then
    ch._deadline[t] = event.now() + timeout
    if not ch._watching then watch(ch, timeout) end
  end
  return t
end

local batch_reply

-- Hand a reply to the head of the FIFO; false when nothing waited for it.
local function deliver(ch, ok, value)
  local h = ch._head
  if h > ch._tail then return false end
  local fifo = ch._fifo
  local w = fifo[h]
  fifo[h] = nil
  ch._deadline[h] = nil
  local slot = ch._slot[h]
  if h == ch._tail then
    ch._head, ch._tail = 1, 0
  else
    ch._head = h + 1
  end
  if slot then
    ch._slot[h] = nil
    batch_reply(w, slot, ok, value)
  elseif w ~= DROPPED then
    wakeup(w, ok, value)
  end
  return true
end

-- Every complete reply in the input buffer, in order.
function Conn:data()
  local stream, resp = self._stream, self._resp
  -- bytes before the connection is set up (an early error from a full
  -- server) wait for the first reply
  if not resp then return end
  while true do
    local ok, value, code = read_reply(resp, stream)
    if ok == nil then
      if value then self:_fail(value, code) end
      return
    end
    if not deliver(self, ok, value) then
      return self:_fail("unexpected reply")
    end
  end
end

function Conn:_ended(reason)
  Channel._ended(self, reason)
  if self._watchdog then self._watchdog:stop() end
  self._watching = false
  local err, code = self._error or "closed", self._error_code or "closed"
  local fifo, slots = self._fifo, self._slot
  local head, tail = self._head, self._tail
  self._fifo, self._slot, self._deadline = {}, {}, {}
  self._head, self._tail = 1, 0
  for i = head, tail do
    local w, slot = fifo[i], slots[i]
    if slot then
      batch_reply(w, slot, nil, err, code)
    elseif w ~= DROPPED and w ~= nil then
      wakeup(w, nil, err, code)
    end
  end
end

-- Wait for the send queue to drain if the last write filled it.
local function wait_room(ch)
  if ch._stream:full() then return ch:_wait_drain() end
  return true
end

--[[ Batches: the replies of a pipeline =====================================]]
-- A batch is the object a pipeline function gets (p:set(...) sends SET at
-- once) and collects the replies: _task, _ch, _n sent, _got answered,
-- _results, _failed (an error ends it) and _code (its code), _sealed (all
-- sent).

local Batch = {}

local function new_batch(task, ch, timeout)
  -- every field is set: a nil one would be looked up through the
  -- command factory on each access
  return setmetatable({ _task = task, _ch = ch, _timeout = timeout, _n = 0,
                        _got = 0, _results = {}, _failed = false,
                        _code = false,
                        _sealed = false }, Batch)
end

batch_reply = function(b, i, ok, value, code)
  if b._failed then return end
  if ok == nil then
    b._failed, b._code = value, code or "closed"
    -- before it is sealed, the task may be waiting for something else
    -- inside the pipeline function (batch_wait sees _failed then)
    if b._sealed then wakeup(b._task, nil, value) end
    return
  end
  if ok then
    b._results[i] = value
  else
    b._results[i] = setmetatable({ err = value }, ErrorReply)
  end
  local got = b._got + 1
  b._got = got
  if got == b._n and b._sealed then wakeup(b._task, true) end
end

-- Send one command of the batch (the batch's timeout applies).
local function batch_send(b, _, ...)
  if b._failed then return end
  local ch = b._ch
  local ok, err, code = write_command(ch._stream, ...)
  if ok == nil then
    b._failed, b._code = err, code
    return
  end
  local n = b._n + 1
  b._n = n
  push_waiter(ch, b, n, b._timeout)
  return n
end

-- Wait until every reply of the batch is in: results (with n) | nil, err.
local function batch_wait(b, what)
  b._sealed = true
  if not b._failed and b._got < b._n then
    local ok, err, code = wait_as("redis", what, b._task)
    if not ok and not b._failed then b._failed, b._code = err, code end
  end
  if b._failed then return nil, b._failed, b._code end
  local results = b._results
  results.n = b._n
  return results
end

--[[ Linking: connect, authenticate, select, with backoff ===================]]

-- Open a connection of class for the options; AUTH and SELECT are sent
-- first. Returns the channel or nil, err.
local function open(o, class)
  local ch, err, code = event.connect(o.host, o.port, class, o.timeout)
  if not ch then return nil, err, code end
  ch._resp = core.resp_reader(o.max_reply, o.max_elements, o.max_depth,
                              ErrorReply)
  local max_input = ch._stream:limits()
  if o.max_reply + 4096 > max_input then
    ch:set_limits({ max_input = o.max_reply + 4096 })
  end
  if not write_command then
    write_command, read_reply = ch._stream.write_command, ch._resp.read
  end
  if o.password or o.db ~= 0 then
    local b = new_batch(running(), ch, o.timeout)
    if o.password then
      if o.username then
        batch_send(b, nil, "AUTH", o.username, o.password)
      else
        batch_send(b, nil, "AUTH", o.password)
      end
    end
    if o.db ~= 0 then batch_send(b, nil, "SELECT", o.db) end
    local results, berr, bcode = batch_wait(b, "connect")
    if results then
      for i = 1, results.n do   -- the server refused AUTH or SELECT
        if redis.is_error(results[i]) then
          berr, bcode = results[i].err, "redis"
        end
      end
    end
    if berr then
      ch:close_immediately()
      return nil, berr, bcode
    end
  end
  return ch
end

-- A connecter that was cancelled wakes the coroutines waiting for its
-- connection with this: one of them connects instead.
local TAKE_OVER = setmetatable({}, { __name = "take over reconnecting" })

-- Take task off the list of those waiting for a connection (it gave up):
-- the connecter must not wake it later, on a token it uses again.
local function leave(list, task)
  for i = #list, 1, -1 do
    if list[i] == task then
      table.remove(list, i)
      return
    end
  end
end

-- One connection attempt by the running coroutine; the others wait for
-- it on obj._connecting. Returns the channel or nil, err.
local function attempt(obj)
  local connecting = {}
  obj._connecting = connecting
  local ch, err, code = open(obj._opts, obj._class)
  obj._connecting = false
  if ch and obj._closed then   -- closed by its owner meanwhile
    ch:close_immediately()
    ch, err, code = nil, "closed", "closed"
  end
  if ch then
    obj._ch, obj._delay, obj._retry_at = ch, false, 0
    if obj._linked then   -- a subscriber: its connection hands it messages
      ch._owner = obj
      local ok, lerr, lcode = obj:_linked(ch)
      if not ok then
        ch:close_immediately()
        obj._ch, ch, err, code = false, nil, lerr, lcode
      end
    end
  end
  if code == "cancelled" then
    -- the cancel concerns this coroutine, not the server: no backoff,
    -- and the others go on without it
    for i = 1, #connecting do wakeup(connecting[i], TAKE_OVER) end
    return nil, err, code
  end
  if not ch then
    local o = obj._opts
    local delay = obj._delay and obj._delay * 2 or o.reconnect_delay
    if delay > o.max_reconnect_delay then delay = o.max_reconnect_delay end
    obj._delay, obj._last_error, obj._last_code = delay, err, code
    obj._retry_at = event.now() + delay
  end
  for i = 1, #connecting do
    if ch then
      wakeup(connecting[i], ch)
    else
      wakeup(connecting[i], nil, err, code)
    end
  end
  return ch, err, code
end

-- The open connection of obj (a client or subscriber), connecting if
-- there is none, within timeout seconds (default: the client's). One
-- coroutine connects, the others wait for it. After a failed attempt
-- nobody tries again before the backoff delay has passed: a caller waits
-- it out (yielding) and tries then, or, if the backoff outlasts its
-- timeout, gets the last connect error when the timeout is up. So a
-- retry loop without a sleep cannot spin.
local function link(obj, timeout)
  local ch = obj._ch
  if ch and not ch._closed then return ch end
  local task = running()
  local deadline = event.now() + (timeout or obj._opts.timeout)
  while true do
    if obj._closed then return errors.fail("closed") end
    ch = obj._ch
    if ch and not ch._closed then return ch end
    local left = deadline - event.now()
    local connecting = obj._connecting
    if connecting then
      if left <= 0 then return errors.fail("timeout") end
      connecting[#connecting + 1] = task
      local got, err, code = wait_as("redis", "connect", task, left)
      if got ~= TAKE_OVER then
        if got then return got end
        leave(connecting, task)
        return nil, err, code
      end
    else
      local pause = obj._retry_at - event.now()
      if pause <= 0 then return attempt(obj) end
      -- (never longer than the delay, should the clock step back)
      if pause > obj._delay then pause = obj._delay end
      local outlasts = pause >= left
      if outlasts then pause = left end
      if pause > 0 then
        local ok, err, code = event.sleep(pause)
        if not ok then return nil, err, code end
      end
      if outlasts then return nil, obj._last_error, obj._last_code end
    end
  end
end

--[[ Command classes ========================================================]]
-- Any method name a class does not define is a command: r:get(k) sends GET,
-- r:client_list() sends CLIENT LIST (an underscore separates words), as
-- send(self, nil, words..., args...) (the nil: no timeout of its own).

local function command_class(class, send)
  class.__index = class
  return setmetatable(class, { __index = function(cls, name)
    if type(name) ~= "string" or not name:match("^%a[%w_]*$") then return nil end
    local words = {}
    for w in name:gmatch("[^_]+") do words[#words + 1] = w:upper() end
    local fn
    if #words == 1 then
      local c = words[1]
      fn = function(self, ...) return send(self, nil, c, ...) end
    elseif #words == 2 then
      local a, b = words[1], words[2]
      fn = function(self, ...) return send(self, nil, a, b, ...) end
    else
      local n = #words
      fn = function(self, ...)
        local args = { unpack(words, 1, n) }
        local extra = select("#", ...)
        for i = 1, extra do args[n + i] = (select(i, ...)) end
        return send(self, nil, unpack(args, 1, n + extra))
      end
    end
    rawset(cls, name, fn)
    return fn
  end })
end

--[[ Client =================================================================]]

local Client = {}

local function check_running(fname)
  local task = running()
  if not task then errors.need_coroutine("redis " .. fname, 2) end
  return task
end

-- call(self, timeout, ...): send a command and wait for its reply.
-- timeout is nil for the client's own (the connection's watchdog watches
-- it) or the seconds of a timed_call.
local function call(self, timeout, ...)
  local task = running()
  if not task then errors.need_coroutine("redis commands", 2) end
  local ch = self._ch
  if not ch or ch._closed then
    local err, code
    ch, err, code = link(self, timeout)
    if not ch then return nil, err, code end
  end
  if ch._full then
    ch._full = false
    local ok, err, code = wait_room(ch)
    if not ok then return nil, err, code end
  end
  local ok, err, code = write_command(ch._stream, ...)
  if not ok then
    if ok == nil then return nil, err, code end
    ch._full = true   -- queued above the high-water mark
  end
  local t = push_waiter(ch, task, nil, not timeout and self._timeout or nil)
  local tag, value, vcode = wait_as("redis", (...), task, timeout)
  if tag then return value end
  if tag == false then return nil, value, "redis" end   -- an error reply
  if ch._fifo[t] == task then   -- still unanswered
    ch._fifo[t] = DROPPED
    if vcode == "timeout" then timed_out(ch) end
  end
  return nil, value, vcode
end

command_class(Client, call)

local function check_name(name, fname)
  if type(name) ~= "string" and type(name) ~= "number" then
    argerror(1, fname, "command name expected, got " .. type(name), 2)
  end
end

-- r:call(name, args...) -> reply | nil, err: any command, words as
-- separate arguments (r:call("CLIENT", "LIST")).
function Client:call(name, ...)
  check_name(name, "call")
  return call(self, nil, name, ...)
end

-- r:timed_call(seconds, name, args...): call with its own timeout (for
-- blocking commands such as BLPOP, give one above theirs).
function Client:timed_call(timeout, name, ...)
  if type(timeout) ~= "number" or not (timeout >= 0) then
    argerror(1, "timed_call", "non-negative number expected")
  end
  check_name(name, "timed_call")
  return call(self, timeout, name, ...)
end

-- r:select(db): SELECT, remembered for reconnects.
function Client:select(db)
  local ok, err, code = call(self, nil, "SELECT", db)
  if ok then self._opts.db = math.tointeger(tonumber(db)) or self._opts.db end
  return ok, err, code
end

command_class(Batch, batch_send)

-- p:call(name, args...) queues any command.
function Batch:call(name, ...)
  check_name(name, "call")
  return batch_send(self, nil, name, ...)
end

-- r:pipeline(fn) -> results | nil, err. fn(p) queues commands (p:set(k,
-- v), p:get(k), p:call(...)), which go out at once; then all replies are
-- awaited. results[i] is the reply of the i-th command (nil for a nil
-- reply, an error object for an error reply), results.n their count.
function Client:pipeline(fn)
  local task = check_running("pipeline")
  if type(fn) ~= "function" then
    argerror(1, "pipeline", "function expected")
  end
  local ch, err, code = link(self)
  if not ch then return nil, err, code end
  local b = new_batch(task, ch, self._timeout)
  local ok, ferr = pcall(fn, b)
  if not ok then
    b._failed, b._code = "aborted", "aborted"
    error(ferr, 0)
  end
  if ch._stream:full() then wait_room(ch) end
  return batch_wait(b, "pipeline")
end

local Recorder = {}
command_class(Recorder, function(t, _, ...)
  local cmds = t._cmds
  cmds[#cmds + 1] = table.pack(...)
end)
function Recorder:call(name, ...)
  check_name(name, "call")
  local cmds = self._cmds
  cmds[#cmds + 1] = table.pack(name, ...)
end

-- r:transaction(fn) -> the replies of the commands | nil, err. fn(t)
-- records commands (t:incr(k), t:call(...)); they are sent as MULTI,
-- the commands, EXEC, in one piece, so no other coroutine's command can
-- land inside. A command the server refuses to queue aborts it all
-- (nil, "EXECABORT ..."); a command failing while it runs gives an error
-- object in its place.
function Client:transaction(fn)
  check_running("transaction")
  if type(fn) ~= "function" then
    argerror(1, "transaction", "function expected")
  end
  local t = setmetatable({ _cmds = {} }, Recorder)
  fn(t)
  local cmds = t._cmds
  local results, err, code = self:pipeline(function(p)
    p:call("MULTI")
    for i = 1, #cmds do p:call(unpack(cmds[i], 1, cmds[i].n)) end
    p:call("EXEC")
  end)
  if not results then return nil, err, code end
  for i = 1, results.n - 1 do
    if redis.is_error(results[i]) then
      local exec = results[results.n]
      if redis.is_error(exec) then return nil, exec.err, "redis" end
      return nil, results[i].err, "redis"
    end
  end
  local exec = results[results.n]
  if redis.is_error(exec) then return nil, exec.err, "redis" end
  if exec == nil then return errors.fail("aborted") end
  return exec
end

local function refuse(what, instead)
  return function()
    error(("redis: %s on a shared client; use %s"):format(what, instead), 2)
  end
end
Client.multi = refuse("MULTI", "r:transaction(fn)")
Client.exec = refuse("EXEC", "r:transaction(fn)")
Client.discard = refuse("DISCARD", "r:transaction(fn)")
Client.monitor = refuse("MONITOR", "a connection of its own")

-- r:close(): close the connection; waiting commands get nil, "closed",
-- and the client cannot be used any more.
function Client:close()
  self._closed = true
  local ch = self._ch
  self._ch = false
  if ch then ch:close_immediately() end
end

Client.__close = Client.close

-- A client nobody references any more closes its connection (a client's
-- connection does not reference it back; a waiting command's coroutine
-- does, so none is waiting then).
function Client:__gc()
  local ch = self._ch
  if ch and not ch._closed then ch:close_immediately() end
end

-- r:connected() -> whether a connection is open now
function Client:connected()
  local ch = self._ch
  return ch and not ch._closed or false
end

function Client:__tostring()
  local o = self._opts
  return ("redis client %s:%s/%d"):format(o.host, o.port, o.db)
end
Client.__name = "evlua.redis.client"

-- redis.connect(opts | url) -> client | nil, err. In a coroutine.
-- opts: host, port, password, username, db, timeout, and limits (see
-- redis.defaults); url: "redis://[[user]:password@]host[:port][/db]".
function redis.connect(opts)
  check_running("connect")
  local o, oerr, ocode = options(opts, "connect")
  if not o then return nil, oerr, ocode end
  -- every field is set: a nil one would be looked up through the command
  -- factory on each access
  local r = setmetatable({ _opts = o, _timeout = o.timeout, _class = Conn,
                           _ch = false, _closed = false, _connecting = false,
                           _retry_at = 0, _delay = false, _last_error = false,
                           _last_code = false, _linked = false }, Client)
  local ch, err, code = link(r)
  if not ch then return nil, err, code end
  return r
end

--[[ Pub/sub: lua/evlua/redis_subscriber.lua ================================]]

redis._internal = {
  Conn = Conn, deliver = deliver, push_waiter = push_waiter, link = link,
  options = options, check_running = check_running,
}

-- redis.subscriber(opts | url) -> a subscriber (its own connection),
-- subscribed to nothing yet | nil, err. In a coroutine.
function redis.subscriber(opts)
  check_running("subscriber")
  return require("evlua.redis_subscriber").new(opts)
end

-- r:subscribe(channel, ...) / r:psubscribe(pattern, ...) -> a subscriber
-- on a new connection with the client's options, subscribed | nil, err
local function subscribed(client, method, ...)
  local sub, err, code = redis.subscriber(client._opts)
  if not sub then return nil, err, code end
  local ok, serr, scode = sub[method](sub, ...)
  if not ok then
    sub:close()
    return nil, serr, scode
  end
  return sub
end

function Client:subscribe(...) return subscribed(self, "subscribe", ...) end
function Client:psubscribe(...) return subscribed(self, "psubscribe", ...) end

-- r:subscriber() -> a subscriber with the client's options, not
-- subscribed yet | nil, err
function Client:subscriber()
  return redis.subscriber(self._opts)
end

redis.client = Client
redis.connection = Conn

return redis
