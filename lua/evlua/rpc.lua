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
local net = require "evlua.net"

local argerror, fail_with = errors.argerror, errors.fail
local S = event._slots
local STATE <const>, CANCEL <const> = S.STATE, S.CANCEL
local WHAT <const>, ON <const> = S.WHAT, S.ON
local running, wake, resume_now, start_deadline = event.running,
  event._wake, event._resume_now, event._start_deadline
local co_yield = coroutine.yield

local rpc = {}

local RpcChannel = Channel:inherit()
RpcChannel.__name = "evlua.rpc.channel"
rpc.channel = RpcChannel

-- Defaults; a subclass or an instance may override them.
RpcChannel.max_message = 16 * 1024 * 1024   -- bytes of one message
RpcChannel.max_depth = 128                  -- nesting of one message
RpcChannel.max_params = 4096                -- parameters of one request
RpcChannel.max_inflight = 128               -- requests served at once
RpcChannel.max_sparse_keys = 256            -- see docs/rpc.md, "Limits"
RpcChannel.max_sparse_total = 4096
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

-- A connection past the listener's max_connections: closed at once,
-- before init (the peer sees its connection closed), with a warning at
-- most once a second (a flood of them would flood the log too).
local function refuse_connection(ch, server)
  server._refused = server._refused + 1
  local now = event.now()
  if now - server._warned_at >= 1 then
    server._warned_at = now
    event.warn(("rpc: refusing %s: max_connections (%d) reached, %d refused")
               :format(tostring(ch), server._max_connections, server._refused))
  end
  ch:close_immediately()
  return ch
end

-- The state lives here rather than in init, so that a subclass's init
-- need not call this one's.
function RpcChannel:_start(...)
  local server = self._server   -- set on the class by rpc.listen
  if server and server._nconns >= server._max_connections then
    return refuse_connection(self, server)
  end
  self._pending = {}
  self._next_id = 1
  self._free_ids, self._nfree = {}, 0   -- msgids answered, for reuse
  self._early = {}   -- task -> response that came before it waited
  self._due, self._due_at, self._due_timer = {}, math.huge, false
  self._serving = 0  -- requests taken and not answered yet
  -- _serving may reach _cap before serving pauses (see pause): max_inflight
  -- less the notifications being served. The rest of the pause state
  -- (_blocked, _held...) is nil until a first pause.
  self._cap = self.max_inflight
  -- fields read per message are the instance's own: a miss would walk
  -- the class chain
  self._failing, self._scan, self._draining = false, false, false
  -- counters of ch:stats()
  self._calls, self._errors, self._timeouts, self._served = 0, 0, 0, 0
  -- the peer, for the log line when the connection ends (the address
  -- cannot be read once the stream is closed)
  local name = tostring(self)
  if name == "channel (closed)" and self._stream:state() == "open" then
    name = ("channel (fd %d)"):format(self._stream:fd())   -- no peer: a pipe
  end
  self._name = name
  if server then
    server._conns[self] = true
    server._nconns = server._nconns + 1
  end
  Channel._start(self, ...)
  if not self._closed then
    fit_input(self)
    -- A peer's EOF should stop the reading only, so that the replies it
    -- is owed still go out (see _eof). The stream layer has no such mode
    -- yet (on EOF it stops taking writes and closes once its queue is
    -- empty); once it has one, stream:set_half_close(true) turns it on
    -- and the channel's dispatcher calls ch:_eof().
    local set_half_close = self._stream.set_half_close
    if set_half_close then set_half_close(self._stream, true) end
  end
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

-- A request whose handler raised (or returned what msgpack cannot
-- carry): logged, and answered with the error.
local function answer_failure(ch, msgid, method, e)
  event.error(("rpc: %s failed: %s"):format(method, e.traceback))
  local err = e.err
  if type(err) ~= "string" then err = tostring(err) end
  ch._stream:write_rpc_response(msgid, err)
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
-- for its last one (see fail below), one of a listener shutting down
-- closes after it.
local resume_soon   -- defined with the pausing, below

local function served(ch)
  local n = ch._serving - 1
  ch._serving = n
  ch._served = ch._served + 1
  if n == 0 then
    if ch._failing then
      event.wakeup(ch._failing)
    elseif ch._draining then
      ch:close()
    end
  end
  if n == ch._cap - 1 and ch._blocked then resume_soon(ch) end  -- below it again
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

-- Empty the parameter slots of a job (so the queue holds no stale
-- references) and pass them on.
local function cleared(h, n, ...)
  for i = h, h + n - 1 do queue[i] = nil end
  return ...
end

-- Serve queued requests until none is left, under one xpcall for the
-- whole batch (not one per request): the handler's results are the
-- response, and results msgpack cannot carry fail like an error in the
-- handler. job = { ch, msgid, method } of the request being served (ch
-- false between requests), for the worker to answer when it raises.
local function serve_queue(job)
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
    queue[h], queue[h + 1], queue[h + 2], queue[h + 3] = nil, nil, nil, nil
    local handlers = ch.handlers
    local fn = handlers and handlers[method]
    if type(fn) ~= "function" then fn = handler_for(ch, method) end
    if not fn then
      cleared(h + 4, n)
      ch._stream:write_rpc_response(msgid, "unknown method: " .. method)
    else
      job[1], job[2], job[3] = ch, msgid, method
      -- the parameters are read before the handler runs: a handler that
      -- waits lets new requests reuse the slots
      if n == 1 then
        local a = queue[h + 4]
        queue[h + 4] = nil
        ch._stream:write_rpc_response(msgid, nil, fn(ch, a))
      elseif n == 0 then
        ch._stream:write_rpc_response(msgid, nil, fn(ch))
      else
        ch._stream:write_rpc_response(msgid, nil, fn(ch,
          cleared(h + 4, n, table.unpack(queue, h + 4, h + 3 + n))))
      end
      job[1] = false
    end
    served(ch)
  end
end

worker = function(token)
  local job = { false }
  while true do
    helper_scheduled = false
    while true do
      local ok, e = xpcall(serve_queue, on_handler_error, job)
      if ok then break end
      local ch = job[1]
      job[1] = false
      if not ch then error(e.err, 0) end   -- not a handler's: a bug here
      answer_failure(ch, job[2], job[3], e)
      served(ch)
    end
    if nidle >= MAX_IDLE then return end
    nidle = nidle + 1
    idle[nidle] = token
    event.wait_as("wait", "rpc requests", token)
  end
end

-- One notification, in its own coroutine: nothing to answer. It counts
-- towards max_inflight while it runs.
local function serve_notification(ch, method, _, ...)
  local fn = handler_for(ch, method)
  if not fn then
    event.warn("rpc: notification for unknown method " .. method)
  else
    local ok, e = xpcall(fn, on_handler_error, ch, ...)
    if not ok then
      event.error(("rpc: %s failed: %s"):format(method, e.traceback))
    end
  end
  local cap = ch._cap + 1
  ch._cap = cap
  if ch._serving == cap - 1 and ch._blocked then resume_soon(ch) end
end

-- A request with more than max_params parameters: it is otherwise a
-- valid message, so it gets an error response and the channel goes on.
local function refuse(ch, msgid, method, n)
  event.warn(("rpc: refusing %s from %s: %d parameters")
             :format(method, tostring(ch), n))
  ch._stream:write_rpc_response(msgid, ("too many parameters (%d, max_params %d)")
                                       :format(n, ch.max_params))
end

--[[ Call deadlines =========================================================]]
-- Calls that wait for the channel's call_timeout share one timer per
-- channel instead of starting and stopping one each: their deadlines are
-- in ch._due (msgid -> time; false for a call without one, or with a
-- timeout of its own, which times it with a deadline of its own). The
-- timer is due at the earliest (ch._due_at). As every such call waits
-- as long, the earliest is the oldest call's, and a call made later
-- changes nothing unless call_timeout was shortened meanwhile. On expiry
-- the timer fails every call past its deadline and restarts for the next.

local function expire_calls(timer, ch)
  local now = event.now()
  local pending, due, next_at = ch._pending, ch._due, math.huge
  for msgid, task in pairs(pending) do
    local at = due[msgid]
    if at then
      if at <= now then
        -- its id is not reused: a late response cannot reach a newer call
        pending[msgid], due[msgid] = nil, false
        wake(task, nil, "timeout", "timeout")
      elseif at < next_at then
        next_at = at
      end
    end
  end
  ch._due_at = next_at
  if next_at < math.huge then timer:start(next_at - now) end
end

-- Time the call msgid out at call_timeout, on the channel's timer.
local function set_due(ch, msgid)
  local timeout = ch.call_timeout
  if not timeout then
    ch._due[msgid] = false
    return
  end
  local at = event.now() + timeout
  ch._due[msgid] = at
  if at < ch._due_at then
    ch._due_at = at
    local timer = ch._due_timer
    if not timer then
      timer = core.timer(expire_calls, ch)
      ch._due_timer = timer
    end
    timer:start(timeout)
  end
end

local function stop_due(ch)
  ch._due_at = math.huge
  if ch._due_timer then ch._due_timer:stop() end
end

--[[ Pausing ================================================================]]
-- A channel stops taking requests while max_inflight of its requests and
-- notifications are being served, or while its output is above high_water
-- (a peer that sends requests and never reads the replies would make it
-- queue them without end). The requests are not refused, only left
-- unread, and TCP flow control slows the peer down. Responses still come
-- through until a request is at the head of the input (a handler may be
-- waiting for one of them); from then on reading stops as well. A
-- handler's end (served) or the output's drain resumes it, from a loop
-- callback (a zero timer): a worker must not run the data loop, which
-- resumes callers. The send timeout still drops a peer that stops reading
-- altogether.
-- The request path pays one compare: _serving against _cap (max_inflight
-- less the notifications being served). read_rpc watches the output
-- itself: above high_water it leaves a request unread and returns false.

local process, read_responses, paused_data

local function await_drain(ch)
  ch:_wait_drain()   -- or the channel closed, or write_timeout passed
  ch._drain_waiter = false
  if ch._blocked then resume_soon(ch) end
end

-- Whether serving must stay paused; while the output is what holds it,
-- a coroutine waits for the drain.
local function over_limits(ch)
  if ch._serving >= ch._cap then return true end
  if not ch._stream:full() then return false end
  if not ch._drain_waiter then
    ch._drain_waiter = true
    event.fork(await_drain, ch):set_name("rpc drain " .. ch._name)
  end
  return true
end

-- Read no more from the socket: the input buffer keeps what it holds, and
-- data() restores its size on resume (_input_for no longer matches).
local function stop_reading(ch)
  local stream = ch._stream
  local _, high, low = stream:limits()
  stream:set_limits(math.max(1, (stream:buffered())), high, low)
  ch._input_for = false
end

local function resume_reading(_, ch)
  ch._resuming = false
  if ch._closed or ch._failing or not ch._blocked or over_limits(ch) then
    return
  end
  ch._blocked, ch._held = false, false
  ch.data = nil   -- the class's again
  ch:data()
end

resume_soon = function(ch)
  if ch._resuming or ch._closed or ch._failing or over_limits(ch) then
    return
  end
  ch._resuming = true
  local timer = ch._resume_timer
  if not timer then
    timer = core.timer(resume_reading, ch)
    ch._resume_timer = timer
  end
  timer:start(0)
end

local function block(ch)
  if not ch._blocked then
    ch._blocked = true
    ch.data = paused_data   -- until resume_reading
  end
end

-- A request or notification taken reached max_inflight: pause (false
-- ends the data loop) and read on the responses only.
local function pause(ch)
  block(ch)
  read_responses(ch)
  return false
end

-- read_rpc's false: a request waits at the head of the input (while
-- paused, or with the output full).
local function hold(ch)
  block(ch)
  ch._held = true
  if ch._input_for then stop_reading(ch) end
  if not over_limits(ch) then resume_soon(ch) end  -- unless on its way
  return false
end

-- The responses at the head of the input, while paused.
read_responses = function(ch)
  if ch._held or ch._failing then return end   -- nothing behind a request
  local stream = ch._stream
  local max_message, max_depth, max_params = ch.max_message, ch.max_depth,
    ch.max_params
  while process(ch, stream:read_rpc(max_message, max_depth, max_params,
                                    ch._scan or nil, nil, nil, ch, true)) do end
end

-- ch:data() while paused (an instance field, so the class's data pays
-- nothing for the pause)
paused_data = read_responses

--[[ Messages ===============================================================]]

-- Fail every call waiting for a response on ch.
local function fail_pending(ch)
  local pending = ch._pending
  if pending and next(pending) then
    ch._pending = {}
    for _, task in pairs(pending) do wake(task, nil, "closed", "closed") end
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
-- The reason it closes with is "bad message: " and the decoder's error:
-- ch:closed() and disconnect get it, as the log line does.
local function fail(ch, err)
  if ch._failing then return end
  ch._failing = {}
  local reason = "bad message: " .. err
  ch._bad = reason
  event.error(("rpc: closing %s: %s"):format(ch._name, reason))
  -- The stream closes it with "local close" (stream:close takes no
  -- reason) and the dispatcher hands disconnect that: this instance's
  -- disconnect passes on the reason _ended recorded instead.
  local disconnect = ch.disconnect   -- the instance's own, or the class's
  ch.disconnect = function(self, why) return disconnect(self, self._closed or why) end
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

local function close_late(_, ch) ch:close() end

-- The peer shut down its write side (TCP half-close) and reading stopped:
-- no response can come now, so the calls waiting for one fail; the
-- requests it sent are answered, then the channel closes with "eof"
-- (served closes a draining channel after its last reply). The replies
-- get at most call_timeout; the send timeout bounds their flush.
function RpcChannel:_eof()
  if self._failing then return end   -- closing for bad input already
  if self._serving == 0 then return self:close() end  -- _ended fails calls
  self._draining = true
  self._lost = self:pending()        -- for the log line
  fail_pending(self)
  local timeout = self.call_timeout
  if timeout then
    self._eof_timer = core.timer(close_late, self):start(timeout)
  end
end

-- Handle one decoded message; false when no complete message is left.
process = function(ch, kind, ...)
  if kind == 1 then
    local msgid, err, result = ...
    local task = ch._pending[msgid]
    if task then
      ch._pending[msgid] = nil
      -- answered: the id can serve again (a timed-out one never does, so
      -- a late response cannot reach a newer call)
      local nfree = ch._nfree + 1
      ch._nfree = nfree
      ch._free_ids[nfree] = msgid
      if task[WHAT] == "write" then
        -- the caller is still waiting for its request to be sent
        ch._early[task] = { err, result }
      else
        -- the caller runs now, from this loop callback, rather than on
        -- the next drain of the ready queue (unless it was woken for
        -- another reason already: then the response is dropped)
        resume_now(task, RESPONSE, err, result)
        if ch._closed then return false end
      end
    end
  elseif kind == 0 then
    local msgid, method, n = ...
    if method == nil then   -- read_rpc stored it in the queue: msgid is its end
      qtail = msgid
      local serving = ch._serving + 1
      ch._serving = serving
      if not helper_scheduled then schedule_worker() end
      if serving >= ch._cap then return pause(ch) end
    elseif n > ch.max_params then
      refuse(ch, msgid, method, n)
    else
      -- its listener is shutting down (read_rpc queues nothing then):
      -- answer, but start nothing new
      ch._stream:write_rpc_response(msgid, "server shutting down")
    end
  elseif kind == 2 then
    local method, n = ...
    if n > ch.max_params then
      event.warn(("rpc: dropping notification %s from %s: %d parameters")
                 :format(method, tostring(ch), n))
    else
      local cap = ch._cap - 1   -- the notification counts as being served
      ch._cap = cap
      event.fork(serve_notification, ch, ...)
      if ch._serving >= cap then return pause(ch) end
    end
  elseif kind == false then
    return hold(ch)
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

-- Every complete message in the buffer, in order (while paused,
-- paused_data takes its place).
function RpcChannel:data()
  if self._failing then return end
  local stream = self._stream
  local max_message = self.max_message
  if self._input_for ~= max_message then fit_input(self) end
  local max_depth, max_params = self.max_depth, self.max_params
  -- requests go straight into the queue, unless the listener is
  -- shutting down
  local q = not self._draining and queue or nil
  while process(self, stream:read_rpc(max_message, max_depth, max_params,
                                      self._scan or nil, q, qtail, self)) do end
end

-- The connection ended. One log line per connection, with the peer's
-- address, when the end is news: a warning when calls were waiting for
-- responses or requests were being served, when the reason is an error
-- ("reset", "timeout"...) or, on an rpc.client's connection, whenever the
-- server went away; a plain "eof" of an idle connection is a debug line
-- (a server would log one per client otherwise), and a local close none.
-- A connection closed for bad input has logged why already (fail).
function RpcChannel:_ended(reason)
  if not self._name then return Channel._ended(self, reason) end  -- unstarted
  local waiting = self:pending() + (self._lost or 0)
  -- closed for bad input: that is the reason, not our close that followed
  if self._failing and reason == "local close" then reason = self._bad end
  Channel._ended(self, reason)
  if not self._failing and reason ~= "local close" then
    local news = waiting > 0 or self._serving > 0 or reason ~= "eof"
                 or self._log_drops
    local line = ("rpc: %s closed: %s"):format(self._name, reason)
    if waiting > 0 then
      line = line .. (" (%d calls pending)"):format(waiting)
    end
    if news then event.warn(line) else event.debug(line) end
  end
  fail_pending(self)
  stop_due(self)
  if self._eof_timer then self._eof_timer:stop() end
  if self._resume_timer then self._resume_timer:stop() end
  local server = self._server
  if server and server._conns[self] then
    server._conns[self] = nil
    server._nconns = server._nconns - 1
    if server._draining and not next(server._conns) then
      local waiters = server._waiters
      server._waiters = {}
      for _, token in ipairs(waiters) do event.wakeup(token) end
    end
  end
end

--[[ Calling ================================================================]]

-- A call that returns no result: count it on ch (a channel or an
-- rpc.client: both keep _errors and _timeouts), pass the failure on.
local function failed(ch, err, code)
  ch._errors = ch._errors + 1
  if code == "timeout" then ch._timeouts = ch._timeouts + 1 end
  return nil, err, code
end

-- The first half of a call, before its request is written: the checks,
-- the count and the message id. Returns the running task and the id, or
-- nothing when the channel is closed (or closing for bad input: no
-- response could be read any more).
local function begin_call(self, method, fname)
  if type(method) ~= "string" then
    errors.argerror(1, fname, "method name expected, got " .. type(method),
                    3)
  end
  local task = running()
  if not task then errors.need_coroutine("rpc call", 3) end
  self._calls = self._calls + 1
  if self._closed or self._failing then return end
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
  return task, msgid
end

-- The second half: wait for the response to the request msgid, whose
-- write returned ok, err, code. timeout: seconds, nil for none, or true
-- for the channel's call_timeout (on its timer).
local function finish_call(self, task, msgid, method, timeout, ok, err, code)
  if ok == nil then return failed(self, err, code) end
  local pending = self._pending
  pending[msgid] = task   -- a task waits for one thing at a time
  if timeout == true then
    set_due(self, msgid)
    timeout = nil
  else
    self._due[msgid] = false
  end
  if ok == false then   -- the send queue is full: wait for it first
    local started = timeout and event.now()
    ok, err, code = self:_wait_drain()
    if not ok then
      if pending[msgid] == task then pending[msgid] = nil end
      self._early[task] = nil
      return failed(self, err, code)
    end
    if timeout then timeout = math.max(0, timeout - (event.now() - started)) end
    local early = self._early[task]
    if early then
      self._early[task] = nil
      if early[1] ~= nil then return failed(self, early[1], "remote") end
      return early[2]
    end
  end
  -- Park inline until process resumes the task with the response (or a
  -- deadline, a cancel or the close of the channel wakes it).
  local tag, rerr, result
  if task[CANCEL] then
    task[CANCEL] = false
    tag, rerr, result = nil, "cancelled", "cancelled"
  else
    task[STATE], task[WHAT], task[ON] = "waiting", "call", method
    if timeout then start_deadline(task, timeout) end
    tag, rerr, result = co_yield()
    task[STATE] = "running"
    if task[CANCEL] then
      task[CANCEL] = false
      tag, rerr, result = nil, "cancelled", "cancelled"
    end
  end
  if tag == RESPONSE then
    if rerr ~= nil then return failed(self, rerr, "remote") end  -- the handler's
    return result
  end
  -- still ours unless a response or the deadline took it (and the id may
  -- serve a newer call already)
  if pending[msgid] == task then pending[msgid] = nil end
  return failed(self, rerr, result)   -- the wait's failure: result is its code
end

-- A call on ch with timeout (as finish_call takes it).
local function call(self, timeout, fname, method, ...)
  local task, msgid = begin_call(self, method, fname)
  if not task then return failed(self, "closed", "closed") end
  return finish_call(self, task, msgid, method, timeout,
                     self._stream:write_rpc_request(msgid, method, ...))
end

-- ch:call(method, ...) -> result | nil, err; waits at most call_timeout.
-- (call's two halves are written out here: this is the hot path.)
function RpcChannel:call(method, ...)
  local task, msgid = begin_call(self, method, "call")
  if not task then return failed(self, "closed", "closed") end
  return finish_call(self, task, msgid, method, true,
                     self._stream:write_rpc_request(msgid, method, ...))
end

-- ch:timed_call(seconds, method, ...): call with its own timeout.
function RpcChannel:timed_call(timeout, method, ...)
  if type(timeout) ~= "number" or not (timeout >= 0) then
    errors.argerror(1, "timed_call", "non-negative number expected")
  end
  return call(self, timeout, "timed_call", method, ...)
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

-- ch:stats() -> Channel:stats() (bytes_in, bytes_out, buffered_in,
-- buffered_out, state) and calls (made on this channel), errors (of
-- them, those that returned no result: a remote error, a timeout, a
-- close...), timeouts (of the errors), pending (calls waiting), served
-- (requests from the peer answered) and serving (requests being served).
function RpcChannel:stats()
  local t = Channel.stats(self)
  t.calls, t.errors, t.timeouts = self._calls, self._errors, self._timeouts
  t.pending, t.served, t.serving = self:pending(), self._served, self._serving
  return t
end

--[[ Listeners ==============================================================]]
-- rpc.listen's listener: event.listen's, which knows the channels it
-- accepted (weakly; each leaves when it closes) so that shutdown can
-- wait for their requests and close them.

local Listener = {}
Listener.__index = Listener
Listener.__name = "evlua.rpc.listener"
rpc.listener = Listener

Listener.shutdown_timeout = 10   -- seconds shutdown waits by default

-- listener:close(): stop accepting; the connections accepted stay open
-- (listener:shutdown closes them).
function Listener:close()
  return self._listener:close()
end
Listener.__close = Listener.close

for _, name in ipairs({ "pause", "resume", "addr", "port", "backlog" }) do
  Listener[name] = function(self) return self._listener[name](self._listener) end
end

function Listener:__tostring()
  return (tostring(self._listener):gsub("^evlua%.listener", Listener.__name))
end

-- listener:stats() -> { connections =, serving = (requests taken and not
-- answered yet, over every connection), refused = (connections closed at
-- once for max_connections) }
function Listener:stats()
  local n, serving = 0, 0
  for ch in pairs(self._conns) do
    n, serving = n + 1, serving + ch._serving
  end
  return { connections = n, serving = serving, refused = self._refused }
end

-- listener:shutdown([timeout]) -> true | nil, "timeout", "timeout". In a
-- coroutine: stop accepting, let the requests in flight finish (their
-- responses are written and flushed; a request arriving meanwhile gets the
-- error response "server shutting down"), close each connection once it
-- has answered everything (idle ones at once), and return when all are
-- closed. After timeout seconds (default shutdown_timeout, 10) the
-- connections left are cut, their unsent replies dropped.
function Listener:shutdown(timeout)
  if timeout == nil then timeout = self.shutdown_timeout end
  if type(timeout) ~= "number" or not (timeout >= 0) then
    argerror(1, "shutdown", "non-negative number expected")
  end
  if not event.running() then errors.need_coroutine("listener:shutdown") end
  self._listener:close()
  self._draining = true
  for ch in pairs(self._conns) do
    if not ch._draining then
      ch._draining = true
      if ch._serving == 0 and not ch._failing then ch:close() end
    end
  end
  if not next(self._conns) then return true end
  local token = {}
  local waiters = self._waiters
  waiters[#waiters + 1] = token
  local ok, err, code = event.wait_as("rpc shutdown", self, token, timeout)
  if ok then return true end
  for i = #waiters, 1, -1 do
    if waiters[i] == token then table.remove(waiters, i) end
  end
  for ch in pairs(self._conns) do
    ch:close_immediately()   -- no disconnect callback: run it here
    ch:disconnect("local close")
  end
  return nil, err, code
end

--[[ Entry points ===========================================================]]

-- Channel fields that rpc.listen and rpc.connect take from opts, with
-- the largest value each may take.
local OPTIONS = { "max_message", "max_depth", "max_params", "call_timeout",
                  "idle_timeout", "max_inflight", "max_sparse_keys",
                  "max_sparse_total" }
local CEILING = { max_depth = 512, max_params = 100000 }
local FLOOR = { max_inflight = 1 }
local INTEGER = { max_inflight = true, max_sparse_keys = true,
                  max_sparse_total = true }

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
      local ceiling, floor = CEILING[name] or math.huge, FLOOR[name] or 0
      if type(value) ~= "number" or not (value >= floor and value <= ceiling)
         or INTEGER[name] and math.type(value) ~= "integer" then
        local noun = INTEGER[name] and "integer" or "number"
        local range
        if ceiling < math.huge then
          range = ("a %s from %d to %d"):format(noun, floor, ceiling)
        elseif floor > 0 then
          range = ("an %s from %d up"):format(noun, floor)
        else
          range = "a non-negative " .. noun
        end
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
-- opts: those of event.listen, max_connections (the most open at once;
-- more are closed as they come; default none), and the OPTIONS for the
-- channels it accepts.
function rpc.listen(ip, port, handlers, class, opts)
  class = configured(class, handlers, opts, "listen", 3, 5):inherit()
  local max_connections = opts and opts.max_connections
  if max_connections ~= nil and (math.type(max_connections) ~= "integer"
                                 or max_connections < 1) then
    argerror(5, "listen", "max_connections must be an integer from 1 up")
  end
  local server = setmetatable({ _conns = setmetatable({}, { __mode = "k" }),
                                _draining = false, _waiters = {},
                                _nconns = 0, _refused = 0, _warned_at = -math.huge,
                                _max_connections = max_connections or math.huge },
                              Listener)
  class._server = server   -- RpcChannel:_start registers each channel
  local listener, err, code = event.listen(ip, port, nil, class, opts)
  if not listener then return nil, err, code end
  server._listener = listener
  return server
end

-- rpc.connect(host, port [, opts]) -> channel | nil, err. In a coroutine.
-- opts: timeout (connect), class, handlers (for calls from the server),
-- and the OPTIONS (max_message, max_depth... idle_timeout).
function rpc.connect(host, port, opts)
  opts = opts or {}
  local class = configured(opts.class, opts.handlers, opts, "connect", 3, 3)
  return event.connect(host, port, class, opts.timeout)
end

--[[ Clients ================================================================]]
-- rpc.client: one server's connection, made on first use and remade after
-- it drops. Attempts that fail space the next one out (capped exponential
-- backoff with jitter); until it is due, calls fail at once with the last
-- attempt's error. A connection made is not yet a success: a server that
-- accepts and drops at once (a crash loop, an overloaded proxy) would be
-- reconnected to on every call. The backoff resets only once the
-- connection proves healthy (a response to a call, or healthy_after
-- seconds up); one that ends before counts as a failed attempt.

local Client = {}
Client.__index = Client
Client.__name = "evlua.rpc.client"
rpc.client_class = Client

rpc.RECONNECT_MIN = 0.05   -- seconds after the first failed attempt
rpc.RECONNECT_MAX = 5      -- the most the backoff grows to
rpc.HEALTHY_AFTER = 1      -- seconds up that prove a connection healthy

local function positive(opts, name, fname)
  local v = opts[name]
  if v ~= nil and (type(v) ~= "number" or not (v > 0 and v < math.huge)) then
    argerror(3, fname, name .. " must be a positive number", 3)
  end
  return v
end

local judge   -- judge(client, ch): was the connection that ended healthy?

-- rpc.client(host, port [, opts]) -> client. No coroutine needed: nothing
-- connects before the first call. opts: those of rpc.connect (timeout:
-- of each connect attempt, by default the call's own timeout; class,
-- handlers, the limits) and reconnect_min, reconnect_max, healthy_after
-- (seconds).
function rpc.client(host, port, opts)
  if type(host) ~= "string" then
    argerror(1, "client", "string expected, got " .. type(host))
  end
  if host:sub(1, 5) == "unix:" then port = port or 0 end
  net.check_port(port, 2, "client")
  if opts ~= nil and type(opts) ~= "table" then
    argerror(3, "client", "table expected, got " .. type(opts))
  end
  opts = opts or {}
  local class = configured(opts.class, opts.handlers, opts, "client", 3, 3)
  class = class:inherit()
  class._log_drops = true   -- a lost server is always worth a log line
  local min = positive(opts, "reconnect_min", "client") or rpc.RECONNECT_MIN
  local max = positive(opts, "reconnect_max", "client") or rpc.RECONNECT_MAX
  if min > max then
    argerror(3, "client", "reconnect_min must not exceed reconnect_max")
  end
  local healthy_after = opts.healthy_after
  if healthy_after == nil then
    healthy_after = rpc.HEALTHY_AFTER
  elseif type(healthy_after) ~= "number"
         or not (healthy_after >= 0 and healthy_after < math.huge) then
    argerror(3, "client", "healthy_after must be a non-negative number")
  end
  local self = setmetatable({
    _host = host, _port = port, _class = class,
    _timeout = positive(opts, "timeout", "client"),
    _min = min, _max = max, _healthy_after = healthy_after,
    _ch = false, _closed = false, _connecting = false, _proven = false,
    _failures = 0, _retry_at = 0, _backoff = 0, _err = false, _code = false,
    _calls = 0, _errors = 0, _timeouts = 0, _connects = 0,
    _connect_failures = 0, _bytes_in = 0, _bytes_out = 0,
  }, Client)
  -- judge each connection as it ends, while the time of its end is now
  local ended = class._ended
  class._ended = function(ch, reason)
    ended(ch, reason)
    if ch._client then judge(ch._client, ch) end
  end
  return self
end

-- Forget a channel that closed, keeping its byte counts.
local function forget(self, ch)
  local bytes_in, bytes_out = ch._stream:counters()
  self._bytes_in = self._bytes_in + bytes_in
  self._bytes_out = self._bytes_out + bytes_out
  self._ch = false
end

local function wake_each(list, ...)
  for i = 1, #list do event.wakeup(list[i], ...) end
end

-- A failed attempt: the next may come after a random time between half
-- and all of min * 2^(n-1), capped at max (n: failures in a row). -> n
local function note_failure(self, err, code)
  local n = self._failures + 1
  self._failures = n
  self._connect_failures = self._connect_failures + 1
  local cap = math.min(self._max, self._min * 2 ^ math.min(n - 1, 60))
  local delay = cap / 2 + math.random() * cap / 2
  self._backoff, self._retry_at = delay, event.now() + delay
  self._err, self._code = err, code
  return n
end

-- The connection ch proved healthy (a response came): the backoff resets.
local function proven(self, ch)
  self._proven = ch
  self._failures = 0
end

-- The connection ch ended (or went bad): healthy if it proved so or stayed
-- up healthy_after seconds, and then the next attempt is at once (as the
-- backoff was reset); otherwise it was a failed attempt, and the next one
-- waits for the backoff. Once per connection.
judge = function(self, ch)
  if ch._judged then return end
  ch._judged = true
  if self._closed or self._ch ~= ch then return end   -- our close, or gone
  if self._proven == ch or event.now() - ch._up_at >= self._healthy_after then
    self._failures = 0
  else
    -- its own close was logged (with the reason) by the channel
    note_failure(self, "closed", "closed")
  end
end

-- One connect attempt, shared by every coroutine that needs it meanwhile.
local function attempt(self, timeout)
  local waiting = {}
  self._connecting = waiting
  local ch, err, code = event.connect(self._host, self._port, self._class,
                                      timeout)
  self._connecting = false
  if ch then
    if self._closed then   -- closed while connecting
      ch:close()
      wake_each(waiting, nil, "closed", "closed")
      return fail_with("closed")
    end
    -- the failures in a row stay counted until ch proves healthy (judge)
    self._ch, self._retry_at = ch, 0
    ch._client, ch._up_at = self, event.now()
    self._connects = self._connects + 1
    wake_each(waiting, true)
    return ch
  end
  if code == "cancelled" then   -- this caller's end, not the server's
    wake_each(waiting, false)   -- another waiter tries again
    return nil, err, code
  end
  if note_failure(self, err, code) == 1 then   -- once per outage, not per attempt
    event.warn(("rpc: cannot connect to %s:%s: %s"):format(self._host,
                                                          self._port, err))
  end
  wake_each(waiting, nil, err, code)
  return nil, err, code
end

-- The open channel, connecting when there is none (in a coroutine; a
-- plain callback gets nil, "closed"). -> ch | nil, err, code
local function connection(self, timeout)
  while true do
    if self._closed then return fail_with("closed") end
    local ch = self._ch
    if ch then
      if not ch._closed and not ch._failing then return ch end
      judge(self, ch)   -- unless it was judged as it ended
      forget(self, ch)
    end
    if event.now() < self._retry_at then return nil, self._err, self._code end
    if not event.running() then return fail_with("closed") end
    local waiting = self._connecting
    if not waiting then
      timeout = self._timeout or math.min(timeout or net.CONNECT_TIMEOUT,
                                          net.CONNECT_TIMEOUT)
      if timeout <= 0 then return fail_with("timeout") end
      return attempt(self, timeout)
    end
    local token = {}
    waiting[#waiting + 1] = token
    local ok, err, code = event.wait_as("connect", self, token, timeout)
    if ok == nil then return nil, err, code end
    -- true: connected; false: the attempt was cancelled, try again
  end
end

local function client_call(self, timeout, fname, method, ...)
  if type(method) ~= "string" then
    argerror(1, fname, "method name expected, got " .. type(method), 2)
  end
  if not event.running() then errors.need_coroutine("client:" .. fname, 2) end
  self._calls = self._calls + 1
  local ch = self._ch
  if self._closed or not ch or ch._closed or ch._failing then
    -- connecting first: the call gets what is left of its time
    if timeout == true then timeout = self._class.call_timeout end
    local started = event.now()
    local err, code
    ch, err, code = connection(self, timeout)
    if not ch then return failed(self, err, code) end
    if timeout then timeout = math.max(0, timeout - (event.now() - started)) end
  end
  local result, err, code = call(ch, timeout, fname, method, ...)
  if result == nil and err ~= nil then
    if code == "remote" and self._proven ~= ch then proven(self, ch) end
    return failed(self, err, code)
  end
  if self._proven ~= ch then proven(self, ch) end   -- a response came
  return result
end

-- client:call(method, ...) -> result | nil, err, code: ch:call on the
-- connection (connecting first if need be), within call_timeout in all.
function Client:call(method, ...)
  return client_call(self, true, "call", method, ...)
end

-- client:timed_call(seconds, method, ...): call with its own timeout
-- (the connect included).
function Client:timed_call(timeout, method, ...)
  if type(timeout) ~= "number" or not (timeout >= 0) then
    argerror(1, "timed_call", "non-negative number expected")
  end
  return client_call(self, timeout, "timed_call", method, ...)
end

-- client:send(method, ...) -> true | nil, err, code: a notification. It
-- connects like a call when there is no connection; while none can be
-- made it fails (the last attempt's error, or "closed" outside a
-- coroutine), so a notification is never dropped unseen. Once queued on
-- a connection it is sent: msgpack-rpc has no acknowledgement.
function Client:send(method, ...)
  if type(method) ~= "string" then
    argerror(1, "send", "method name expected, got " .. type(method))
  end
  local ch, err, code = connection(self, self._class.call_timeout)
  if not ch then return nil, err, code end
  return ch:send(method, ...)
end

-- client:channel() -> the connection's rpc channel | nil, err, code (in
-- a coroutine, connecting if need be)
function Client:channel()
  if not event.running() then errors.need_coroutine("client:channel") end
  return connection(self, self._class.call_timeout)
end

-- client:close(): close the connection; every later use fails with
-- nil, "closed", "closed". Idempotent.
function Client:close()
  if self._closed then return end
  self._closed = true
  local ch = self._ch
  if ch then
    ch:close()
    forget(self, ch)
  end
end
Client.__close = Client.close

-- client:stats() -> { calls, errors, timeouts (as ch:stats(), over every
-- connection, calls that failed to connect included), connected,
-- connects (made), connect_failures (attempts that failed), failures
-- (in a row, now), backoff (seconds the last failure set), retry_in
-- (seconds until the next attempt may be made), bytes_in, bytes_out }
function Client:stats()
  local ch = self._ch
  local connected = ch and not ch._closed and not ch._failing or false
  local bytes_in, bytes_out = self._bytes_in, self._bytes_out
  if ch then
    local i, o = ch._stream:counters()
    bytes_in, bytes_out = bytes_in + i, bytes_out + o
  end
  return { calls = self._calls, errors = self._errors,
           timeouts = self._timeouts, connected = connected,
           connects = self._connects, connect_failures = self._connect_failures,
           failures = self._failures, backoff = self._backoff,
           retry_in = math.max(0, self._retry_at - event.now()),
           bytes_in = bytes_in, bytes_out = bytes_out }
end

function Client:__tostring()
  local ch = self._ch
  local state = self._closed and "closed"
                or (ch and not ch._closed) and "connected" or "disconnected"
  return ("%s (%s:%s, %s)"):format(Client.__name, self._host, self._port,
                                   state)
end

-- The codec, for other uses of MessagePack.

rpc.msgpack = require "evlua.msgpack"

return rpc
