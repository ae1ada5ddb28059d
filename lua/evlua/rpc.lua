-- evlua/rpc.lua - MessagePack-RPC over channels.
-- Wire format (msgpack-rpc spec): request [0, msgid, method, params],
-- response [1, msgid, error, result], notification [2, method, params].
-- Either side of a connection may call the other.
--
-- Results: a handler's return values travel as the response's result:
-- no value -> nil, one value -> that value, several -> an array of them.
-- ch:call returns that result, or nil, err (err: the remote error,
-- "timeout", "closed" or "cancelled").

local event = require "event"
local errors = require "evlua.errors"
local core = require "evlua.core"
local Channel = require "evlua.channel"

local rpc = {}

local RpcChannel = Channel:inherit()
RpcChannel.__name = "evlua.rpc.channel"
rpc.channel = RpcChannel

-- Defaults; a subclass or an instance may override them.
RpcChannel.max_message = 16 * 1024 * 1024   -- bytes of one message
RpcChannel.max_depth = 128                  -- nesting of one message
RpcChannel.max_params = 4096                -- parameters of one request
RpcChannel.call_timeout = 30                -- seconds a call may wait
RpcChannel.idle_timeout = nil               -- seconds without traffic
RpcChannel.handlers = nil                   -- method name -> function

local RESPONSE = {}   -- tags a call's wakeup as a response
local MSGID_LIMIT = 0xffffffff

-- A message is decoded only once it is buffered whole, so the input
-- buffer must hold max_message bytes: with the stream's default (1 MiB)
-- a bigger message would stall reading before it could complete.
local function fit_input(ch)
  local max_message = ch.max_message
  ch:set_limits({ max_input = max_message })
  ch._input_for = max_message
end

-- The state lives here rather than in init, so that a subclass's init
-- need not call this one's.
function RpcChannel:_start(...)
  self._pending = {}
  self._next_id = 1
  self._free_ids, self._nfree = {}, 0   -- msgids answered, for reuse
  self._early = {}   -- task -> response that came before it waited
  self._serving = 0  -- requests taken and not answered yet
  -- fields read per message are the instance's own: a miss would walk
  -- the class chain
  self._failing, self._scan = false, false
  Channel._start(self, ...)
  if not self._closed then fit_input(self) end
  return self
end

--[[ Serving ================================================================]]

local function handler_for(ch, method)
  local handlers = ch.handlers
  local fn = handlers and handlers[method]
  if type(fn) == "function" or (type(fn) == "table" and getmetatable(fn)
                                 and getmetatable(fn).__call) then
    return fn
  end
end

local function on_handler_error(err)
  return { err = err, traceback = event.traceback(err, 2) }
end

local function reply(ch, msgid, method, ok, ...)
  if ok then return ... end   -- answer() has written the response
  local e = ...
  event.error(("rpc: %s failed: %s"):format(method, e.traceback))
  local err = e.err
  if type(err) ~= "string" then err = tostring(err) end
  return ch._stream:write_rpc_response(msgid, err)
end

-- The handler's results as the response, under serve's xpcall: results
-- msgpack cannot carry (a function) fail like an error in the handler,
-- with no second pcall per request.
local function answer(ch, msgid, fn, ...)
  return ch._stream:write_rpc_response(msgid, nil, fn(ch, ...))
end

-- One request, run by a worker coroutine (below).
local function serve(ch, msgid, method, _, ...)
  local fn = handler_for(ch, method)
  if not fn then
    return ch._stream:write_rpc_response(msgid, "unknown method: " .. method)
  end
  return reply(ch, msgid, method,
               xpcall(answer, on_handler_error, ch, msgid, fn, ...))
end

--[[ Request workers ========================================================]]
-- Requests wait in one queue (flattened: ch, msgid, method, n, params...)
-- served by a pool of worker coroutines, which costs far less than a new
-- coroutine per request. A worker serves one request at a time; before it
-- starts one while more are queued, it makes sure another worker is on its
-- way, so a handler that waits (sleeps, calls another service) holds up
-- nothing but itself.

local queue, qhead, qtail = {}, 1, 0
local idle, nidle = {}, 0      -- tokens of parked workers
local MAX_IDLE = 64
local helper_scheduled = false
local worker

-- A request was answered; a channel that is closing for bad input waits
-- for its last one (see fail below).
local function served(ch)
  local n = ch._serving - 1
  ch._serving = n
  if n == 0 and ch._failing then event.wakeup(ch._failing) end
end

local function schedule_worker()
  helper_scheduled = true
  if nidle > 0 then
    local token = idle[nidle]
    idle[nidle], nidle = nil, nidle - 1
    event.wakeup(token)
  else
    event.fork(worker, {}):set_name("rpc request worker")
  end
end

-- Empty a job's slots (so the queue holds no stale references) and pass
-- its parameters on.
local function cleared(h, n, ...)
  for i = h, h + 3 + n do queue[i] = nil end
  return ...
end

worker = function(token)
  while true do
    helper_scheduled = false
    while qhead <= qtail do
      local h = qhead
      local n = queue[h + 3]
      qhead = h + 4 + n
      if qhead > qtail then
        qhead, qtail = 1, 0
      elseif not helper_scheduled then
        schedule_worker()
      end
      local ch, msgid, method = queue[h], queue[h + 1], queue[h + 2]
      serve(ch, msgid, method, n,
            cleared(h, n, table.unpack(queue, h + 4, h + 3 + n)))
      served(ch)
    end
    if nidle >= MAX_IDLE then return end
    nidle = nidle + 1
    idle[nidle] = token
    event.wait_as("wait", "rpc requests", token)
  end
end

local function enqueue(ch, msgid, method, n, ...)
  local t = qtail
  queue[t + 1], queue[t + 2], queue[t + 3], queue[t + 4] = ch, msgid, method, n
  if n <= 8 then
    for i = 1, n do queue[t + 4 + i] = (select(i, ...)) end
  else
    -- select(i, ...) costs O(n) each: a loop of them is O(n^2)
    table.move({ ... }, 1, n, t + 5, queue)
  end
  qtail = t + 4 + n
  ch._serving = ch._serving + 1
  if not helper_scheduled then schedule_worker() end
end

-- One notification, in its own coroutine: nothing to answer.
local function serve_notification(ch, method, _, ...)
  local fn = handler_for(ch, method)
  if not fn then
    event.warn("rpc: notification for unknown method " .. method)
    return
  end
  local ok, e = xpcall(fn, on_handler_error, ch, ...)
  if not ok then
    event.error(("rpc: %s failed: %s"):format(method, e.traceback))
  end
end

-- A request with more than max_params parameters: it is otherwise a
-- valid message, so it gets an error response and the channel goes on.
local function refuse(ch, msgid, method, n)
  event.warn(("rpc: refusing %s from %s: %d parameters")
             :format(method, tostring(ch), n))
  ch._stream:write_rpc_response(msgid, ("too many parameters (%d, max_params %d)")
                                       :format(n, ch.max_params))
end

-- Fail every call waiting for a response on ch.
local function fail_pending(ch)
  local pending = ch._pending
  if pending and next(pending) then
    ch._pending = {}
    for _, token in pairs(pending) do
      event.wakeup(token, nil, "closed", "closed")
    end
  end
end

-- Close ch once the requests it sent before the bad input are answered
-- (waiting at most call_timeout): their responses are owed.
local function close_when_served(ch)
  if ch._serving > 0 then
    event.wait_as("wait", "rpc requests before closing", ch._failing,
                  ch.call_timeout)
  end
  ch:close()
end

-- Bad input (malformed, or past a limit): log why, read no more, fail the
-- calls that wait for responses (none can come now), answer the requests
-- already taken, then close.
local function fail(ch, err)
  if ch._failing then return end
  ch._failing = {}
  event.error(("rpc: closing %s: %s"):format(tostring(ch), err))
  local stream = ch._stream
  local _, high, low = stream:limits()
  stream:set_limits(math.max(1, stream:buffered()), high, low)  -- stop reading
  fail_pending(ch)
  if ch._serving == 0 then
    ch:close()
  else
    event.fork(close_when_served, ch):set_name("rpc closing " .. tostring(ch))
  end
end

-- Handle one decoded message; false when no complete message is left.
local function process(ch, kind, ...)
  if kind == 1 then
    local msgid, err, result = ...
    local token = ch._pending[msgid]
    if token then
      ch._pending[msgid] = nil
      -- answered: the id can serve again (a timed-out one never does, so
      -- a late response cannot reach a newer call)
      local nfree = ch._nfree + 1
      ch._nfree = nfree
      ch._free_ids[nfree] = msgid
      if not event.wakeup(token, RESPONSE, err, result) then
        -- the caller is still waiting for its request to be sent
        ch._early[token] = { err, result }
      end
    end
  elseif kind == 0 then
    local msgid, method, n = ...
    if n > ch.max_params then
      refuse(ch, msgid, method, n)
    else
      enqueue(ch, ...)
    end
  elseif kind == 2 then
    local method, n = ...
    if n > ch.max_params then
      event.warn(("rpc: dropping notification %s from %s: %d parameters")
                 :format(method, tostring(ch), n))
    else
      event.fork(serve_notification, ch, ...)
    end
  else
    local err = ...
    if err then
      fail(ch, err)
    elseif not ch._scan and ch._stream:buffered() > 0 then
      -- a message comes in pieces: keep its scan from read to read
      ch._scan = core.mp_scanner()
    end
    return false
  end
  return true
end

-- Every complete message in the buffer, in order.
function RpcChannel:data()
  if self._failing then return end
  local stream = self._stream
  local max_message = self.max_message
  if self._input_for ~= max_message then fit_input(self) end
  local max_depth, max_params = self.max_depth, self.max_params
  while process(self, stream:read_rpc(max_message, max_depth, max_params,
                                      self._scan or nil)) do end
end

function RpcChannel:_ended(reason)
  Channel._ended(self, reason)
  fail_pending(self)
end

--[[ Calling ================================================================]]

local function call(self, timeout, method, ...)
  if type(method) ~= "string" then
    errors.argerror(1, "call", "method name expected, got " .. type(method),
                    2)
  end
  local task = event.running()
  if not task then errors.need_coroutine("rpc call", 2) end
  -- closing for bad input: no response could be read any more
  if self._closed or self._failing then return errors.fail("closed") end
  -- Small reused ids keep _pending in its array part; ever-new ids make
  -- it a hash that can rehash on every call.
  local msgid
  local nfree = self._nfree
  if nfree > 0 then
    msgid = self._free_ids[nfree]
    self._free_ids[nfree] = nil
    self._nfree = nfree - 1
  else
    msgid = self._next_id
    self._next_id = msgid < MSGID_LIMIT and msgid + 1 or 1
  end
  local ok, err, code = self._stream:write_rpc_request(msgid, method, ...)
  if ok == nil then return nil, err, code end
  local token = task   -- a task waits for one thing at a time
  self._pending[msgid] = token
  if ok == false then   -- the send queue is full: wait for it first
    local started = event.now()
    ok, err, code = self:_wait_drain()
    if not ok then
      self._pending[msgid] = nil
      self._early[task] = nil
      return nil, err, code
    end
    if timeout then timeout = math.max(0, timeout - (event.now() - started)) end
    local early = self._early[task]
    if early then
      self._early[task] = nil
      if early[1] ~= nil then return nil, early[1], "remote" end
      return early[2]
    end
  end
  local tag, rerr, result = event.wait_as("call", method, token, timeout)
  if tag == RESPONSE then
    if rerr ~= nil then return nil, rerr, "remote" end   -- the handler's
    return result
  end
  self._pending[msgid] = nil
  return nil, rerr, result   -- the wait's failure: result is its code
end

-- ch:call(method, ...) -> result | nil, err; waits at most call_timeout.
function RpcChannel:call(method, ...)
  return call(self, self.call_timeout, method, ...)
end

-- ch:timed_call(seconds, method, ...): call with its own timeout.
function RpcChannel:timed_call(timeout, method, ...)
  if type(timeout) ~= "number" or not (timeout >= 0) then
    errors.argerror(1, "timed_call", "non-negative number expected")
  end
  return call(self, timeout, method, ...)
end

-- ch:send(method, ...) -> true | nil, err: a notification, no reply.
function RpcChannel:send(method, ...)
  if type(method) ~= "string" then
    errors.argerror(1, "send", "method name expected, got " .. type(method))
  end
  local ok, err, code = self._stream:write_rpc_notify(method, ...)
  if ok == false then
    if event.running() then return self:_wait_drain() end
    return true
  end
  return ok, err, code
end

-- ch:pending() -> number of calls waiting for a response
function RpcChannel:pending()
  local n = 0
  for _ in pairs(self._pending or {}) do n = n + 1 end
  return n
end

--[[ Entry points ===========================================================]]

-- Channel fields that rpc.listen and rpc.connect take from opts, with
-- the largest value each may take.
local OPTIONS = { "max_message", "max_depth", "max_params", "call_timeout",
                  "idle_timeout" }
local CEILING = { max_depth = 512, max_params = 100000 }

-- class, or a subclass of it with the handlers and the OPTIONS in opts.
-- handlers_arg and opts_arg: where the caller took them, for the errors.
local function configured(class, handlers, opts, fname, handlers_arg, opts_arg)
  class = class or RpcChannel
  if handlers ~= nil and type(handlers) ~= "table" then
    errors.argerror(handlers_arg, fname, "handler table expected, got "
                    .. type(handlers), 2)
  end
  local sub
  if handlers ~= nil then
    sub = class:inherit()
    sub.handlers = handlers
  end
  for _, name in ipairs(OPTIONS) do
    local value = opts and opts[name]
    if value ~= nil then
      local ceiling = CEILING[name] or math.huge
      if type(value) ~= "number" or not (value >= 0 and value <= ceiling) then
        local range = ceiling == math.huge and "a non-negative number"
                      or "a number from 0 to " .. ceiling
        errors.argerror(opts_arg, fname, name .. " must be " .. range, 2)
      end
      sub = sub or class:inherit()
      sub[name] = value
    end
  end
  return sub or class
end

-- rpc.listen(ip, port, handlers [, class [, opts]]) -> listener | nil, err
-- handlers[method](ch, ...) serves each request in its own coroutine.
-- opts: those of event.listen, and max_message, max_depth, max_params,
-- call_timeout, idle_timeout for the channels it accepts.
function rpc.listen(ip, port, handlers, class, opts)
  class = configured(class, handlers, opts, "listen", 3, 5)
  return event.listen(ip, port, nil, class, opts)
end

-- rpc.connect(host, port [, opts]) -> channel | nil, err. In a coroutine.
-- opts: timeout (connect), class, handlers (for calls from the server),
-- max_message, max_depth, max_params, call_timeout, idle_timeout.
function rpc.connect(host, port, opts)
  opts = opts or {}
  local class = configured(opts.class, opts.handlers, opts, "connect", 3, 3)
  return event.connect(host, port, class, opts.timeout)
end

-- The codec, for other uses of MessagePack.

rpc.msgpack = require "evlua.msgpack"

return rpc
