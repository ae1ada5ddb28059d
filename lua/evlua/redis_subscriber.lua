-- evlua/redis_subscriber.lua - Redis publish/subscribe for evlua.redis:
-- the subscriber object, on a connection of its own. Loaded by
-- redis.subscriber, r:subscribe and r:psubscribe (see docs/redis.md).

local event = require "event"
local redis = require "evlua.redis"
local errors = require "evlua.errors"

local argerror, fail = errors.argerror, errors.fail

local type, select, error, setmetatable, unpack =
  type, select, error, setmetatable, table.unpack
local wait_as, wakeup = event.wait_as, event.wakeup

local internal = redis._internal
local Conn, deliver, push_waiter, link, options, check_running =
  internal.Conn, internal.deliver, internal.push_waiter, internal.link,
  internal.options, internal.check_running

--[[ Pub/sub ================================================================]]
-- A subscriber has a connection of its own (a subscribed connection only
-- takes (P)(UN)SUBSCRIBE and PING). Messages queue up (at most max_messages;
-- beyond that no more of the input is decoded until they are received, and
-- TCP slows the server down once the input buffer is full) and
-- sub:receive() takes them in order. After a disconnect, receive reports
-- nil, "closed" once; the next call reconnects (retrying at the backoff's
-- pace while it waits) and subscribes again to every channel and pattern
-- (messages published meanwhile are lost).

local SubConn = Conn:inherit()
SubConn.__name = "evlua.redis.subscriber"

local CONFIRMS = { subscribe = "channels", unsubscribe = "channels",
                   psubscribe = "patterns", punsubscribe = "patterns" }

-- A confirmation of (un)subscribing: update the owner's sets and count
-- it against the command waiting at the FIFO's head.
local function confirmed(ch, sub, kind, name)
  local set = sub["_" .. CONFIRMS[kind]]
  if kind:sub(1, 2) == "un" or kind:sub(1, 3) == "pun" then
    if name then set[name] = nil end
  else
    set[name] = true
  end
  local h = ch._head
  if h > ch._tail then return end
  local w = ch._fifo[h]
  w.left = w.left - 1
  if w.left <= 0 or (w.all and next(set) == nil) then deliver(ch, true, true) end
end

function SubConn:_parse()
  local sub = self._owner
  local stream, resp = self._stream, self._resp
  local queue = sub._queue
  while queue.tail - queue.head + 1 < sub._opts.max_messages do
    local ok, v = resp:read(stream)
    if ok == nil then
      if v then self:_fail(v) end
      return
    end
    local kind = type(v) == "table" and v[1]
    if kind == "message" or kind == "pmessage" then
      local t = queue.tail + 1
      queue.tail = t
      queue[t] = v
      local r = sub._receiver
      if r then
        sub._receiver = false
        wakeup(r, true)
      end
    elseif kind and CONFIRMS[kind] then
      confirmed(self, sub, kind, v[2] or nil)
    elseif kind == "pong" or ok == false or v == "PONG" then
      local h = self._head
      if h <= self._tail then
        local w = self._fifo[h]
        if ok == false then deliver(self, false, v)
        elseif w.pong then deliver(self, true, true) end
      end
    end
  end
end

function SubConn:data()
  -- before it has an owner, the connection only gets AUTH/SELECT replies
  if self._owner then return self:_parse() end
  return Conn.data(self)
end

function SubConn:_ended(reason)
  Conn._ended(self, reason)
  local sub = self._owner
  if sub and sub._ch == self then
    -- the loss is reported once: to the waiting receive, or the next one
    local r = sub._receiver
    if r then
      sub._receiver = false
      wakeup(r, nil, self._error or "closed")
    else
      sub._lost = true
    end
  end
end

-- FIFO entries of a subscriber are tables { left = confirmations to
-- come, all = unsubscribing from everything, pong = a PING }; the waiting
-- task waits on its entry.
local function sub_command(sub, entry, ...)
  local ch, err, code = link(sub)
  if not ch then return nil, err, code end
  local ok, werr, wcode = ch._stream:write_command(...)
  if ok == nil then return nil, werr, wcode end
  push_waiter(ch, entry)
  local tag, value, vcode = wait_as("redis", (...), entry, sub._opts.timeout)
  if tag then return true end
  if tag == false then return nil, value, "redis" end   -- an error reply
  return nil, value, vcode
end

local Subscriber = {}
Subscriber.__index = Subscriber
Subscriber.__name = "evlua.redis.subscriber"

local function check_names(fname, ...)
  for i = 1, select("#", ...) do
    local v = select(i, ...)
    if type(v) ~= "string" then
      argerror(i, fname, "string expected, got " .. type(v), 2)
    end
  end
end

local function subscribe(self, cmd, fname, ...)
  check_running(fname)
  local n = select("#", ...)
  if n == 0 then
    argerror(1, fname, "channel name expected", 2)
  end
  check_names(fname, ...)
  return sub_command(self, { left = n }, cmd, ...)
end

-- sub:subscribe(channel, ...) / sub:psubscribe(pattern, ...) -> true |
-- nil, err, once the server confirmed every one.
function Subscriber:subscribe(...)
  return subscribe(self, "SUBSCRIBE", "subscribe", ...)
end

function Subscriber:psubscribe(...)
  return subscribe(self, "PSUBSCRIBE", "psubscribe", ...)
end

local function unsubscribe(self, cmd, setname, fname, ...)
  check_running(fname)
  check_names(fname, ...)
  local n = select("#", ...)
  if n == 0 then
    local count = 0
    for _ in pairs(self[setname]) do count = count + 1 end
    return sub_command(self, { left = math.max(count, 1), all = true }, cmd)
  end
  return sub_command(self, { left = n }, cmd, ...)
end

-- sub:unsubscribe([channel, ...]) / sub:punsubscribe([pattern, ...]):
-- without names, from every one.
function Subscriber:unsubscribe(...)
  return unsubscribe(self, "UNSUBSCRIBE", "_channels", "unsubscribe", ...)
end

function Subscriber:punsubscribe(...)
  return unsubscribe(self, "PUNSUBSCRIBE", "_patterns", "punsubscribe", ...)
end

-- sub:ping() -> true | nil, err
function Subscriber:ping()
  check_running("ping")
  return sub_command(self, { left = 1, pong = true }, "PING")
end

-- sub:receive([timeout]) -> kind, channel, message[, pattern] |
-- nil, "timeout" | nil, "closed" | nil, err. kind is "message" or
-- "pmessage" (then pattern is the pattern that matched).
function Subscriber:receive(timeout)
  local task = check_running("receive")
  if timeout ~= nil and (type(timeout) ~= "number" or not (timeout >= 0)) then
    argerror(1, "receive", "non-negative number expected")
  end
  local deadline = timeout and event.now() + timeout
  local queue = self._queue
  while true do
    local h = queue.head
    if h <= queue.tail then
      local v = queue[h]
      queue[h] = nil
      if h == queue.tail then queue.head, queue.tail = 1, 0
      else queue.head = h + 1 end
      local ch = self._ch
      if ch and not ch._closed and ch._stream:buffered() > 0 then
        ch:_parse()   -- reading may have paused at max_messages
      end
      if v[1] == "pmessage" then return "pmessage", v[3], v[4], v[2] end
      return v[1], v[2], v[3]
    end
    if self._closed then return fail("closed") end
    if self._lost then
      self._lost = false
      return fail("closed")
    end
    local left = deadline and deadline - event.now()
    if left and left <= 0 then return fail("timeout") end
    local ch, err, code = link(self, left)
    if not ch then
      -- keep trying while the caller waits: link waits out the backoff
      -- before each attempt, so this does not spin
      if code == "cancelled" then return nil, err, code end
      if left and deadline - event.now() <= 0 then return nil, err, code end
    else
      if self._receiver then
        error("receive: another coroutine is already receiving", 2)
      end
      self._receiver = task
      local ok, werr, wcode = wait_as("redis", "receive", task, left)
      if self._receiver == task then self._receiver = false end
      if not ok then return nil, werr, wcode end
    end
  end
end

-- sub:queued() -> the number of messages received and not taken yet
function Subscriber:queued()
  local q = self._queue
  return q.tail - q.head + 1
end

-- sub:listen(fn): call fn(kind, channel, message, pattern) for every
-- message until fn returns false or the subscriber is closed. Returns
-- what ended it: true (fn returned false) | nil, "closed", "closed" (or
-- the error, and its code, that receive returned as the subscriber closed).
function Subscriber:listen(fn)
  check_running("listen")
  if type(fn) ~= "function" then
    argerror(1, "listen", "function expected, got " .. type(fn))
  end
  while true do
    local kind, channel, message, pattern = self:receive()
    if kind then
      if fn(kind, channel, message, pattern) == false then return true end
    elseif self._closed then
      return nil, channel, message   -- receive's err, code
    end
  end
end

-- A new connection: subscribe again to what we had.
function Subscriber:_linked(ch)
  local channels, patterns = {}, {}
  for name in pairs(self._channels) do channels[#channels + 1] = name end
  for name in pairs(self._patterns) do patterns[#patterns + 1] = name end
  if #channels > 0 then
    local ok, err, code = sub_command(self, { left = #channels },
                                      "SUBSCRIBE", unpack(channels))
    if not ok then return nil, err, code end
  end
  if #patterns > 0 then
    local ok, err, code = sub_command(self, { left = #patterns },
                                      "PSUBSCRIBE", unpack(patterns))
    if not ok then return nil, err, code end
  end
  return ch
end

-- sub:close(): close the connection; a waiting receive gets nil, "closed".
function Subscriber:close()
  self._closed = true
  local ch = self._ch
  self._ch = nil
  if ch then ch:close_immediately() end
  local r = self._receiver
  if r then
    self._receiver = false
    wakeup(r, nil, "closed", "closed")
  end
end

Subscriber.__close = Subscriber.close

-- subscriber.new(opts | url) -> subscriber | nil, err. In a coroutine.
local function new(opts)
  local o, err, code = options(opts, "subscriber", 2)
  if not o then return nil, err, code end
  local sub = setmetatable({ _opts = o, _class = SubConn, _channels = {},
                             _patterns = {}, _queue = { head = 1, tail = 0 },
                             _retry_at = 0, _delay = false,
                             _connecting = false, _receiver = false,
                             _lost = false }, Subscriber)
  local ch
  ch, err, code = link(sub)
  if not ch then return nil, err, code end
  return sub
end

return { new = new, class = Subscriber }
