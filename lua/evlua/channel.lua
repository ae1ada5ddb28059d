-- evlua/channel.lua - the channel class: a buffered byte stream (TCP,
-- unix socket, pipe) that users subclass. The bytes live in C (a stream
-- userdata); this class adds callbacks, waiting reads, backpressure for
-- coroutine writers, timeouts and limits.
--
-- Callbacks (override in a subclass; they run as plain loop callbacks, so
-- they must not wait: fork a coroutine for that):
--   init(...)          the channel is connected (after connect/accept/bind)
--   data()             new bytes are buffered (unless a coroutine is
--                      waiting in wait_read/wait_line: it gets them)
--   drain()            the send queue fell below the low-water mark
--   disconnect(reason) the connection ended: "eof", "reset", "timeout",
--                      "send timeout", "local close" or an error message

local core = require "evlua.core"
local event = require "event"
local errors = require "evlua.errors"

local fail = errors.fail
local S = event._slots
local STATE <const>, CANCEL <const> = S.STATE, S.CANCEL
local WHAT <const>, ON <const> = S.WHAT, S.ON
local wake, start_deadline = event._wake, event._start_deadline
-- live[coroutine] -> its task (event.running's lookup, for the waiting
-- reads, which do it themselves)
local live = event._live_tasks()

local Channel = {}
Channel.__index = Channel
Channel.__name = "evlua.channel"

-- Class-wide defaults; a subclass or an instance may override them.
Channel.max_line = 64 * 1024     -- longest line wait_line/read_line accept
Channel.read_timeout = nil       -- default timeout of waiting reads (s)
Channel.write_timeout = nil      -- how long a full send may wait (s)
Channel.send_timeout = nil       -- s queued output may make no progress
                                 -- (nil: the stream's default, 60; 0 or
                                 -- false: never)

-- Metamethods are looked up raw, so a subclass copies them.
local METAMETHODS = { "__close", "__tostring", "__name" }

-- Channel:inherit() -> a subclass; channel:inherit() works on subclasses.
function Channel:inherit()
  local class = setmetatable({}, self)
  class.__index = class
  class.super = self
  for _, m in ipairs(METAMETHODS) do class[m] = self[m] end
  return class
end

-- Callbacks: no-ops by default.
function Channel:init() end
function Channel:data() end
function Channel:drain() end
function Channel:disconnect() end

--[[ Events from C ==========================================================]]

local function wake_all(list)
  if list then
    for i = #list, 1, -1 do
      event.wakeup(list[i])
      list[i] = nil
    end
  end
end

-- dispatch(channel, event, arg, code): every stream event comes through
-- here; a failed connect brings its message and code, data the task parked
-- in a waiting read, if any.
local function dispatch(ch, ev, arg, code)
  if ev == "data" then
    if arg then
      wake(arg, true)
    else
      ch:data()
    end
  elseif ev == "drain" then
    wake_all(ch._writers)
    ch:drain()
  elseif ev == "close" then
    ch:_ended(arg)
    ch:disconnect(arg)
  elseif ev == "eof" then   -- only on a stream:set_half_close(true) stream
    ch:_eof()
  elseif ev == "connect" then
    if arg then event.wakeup(ch, nil, arg, code) else event.wakeup(ch) end
  end
end
core.set_stream_dispatch(dispatch)

--[[ Construction ===========================================================]]

-- Wrap a stream in an instance of class without running init yet.
function Channel._wrap(class, stream)
  local ch = setmetatable({ _stream = stream }, class)
  stream:set_owner(ch)
  return ch
end

-- Apply the class's limits and timeouts, then run init(...).
function Channel:_start(...)
  local c = getmetatable(self)
  if c.max_input or c.high_water or c.low_water or c.idle_timeout then
    self:set_limits({ max_input = c.max_input, high_water = c.high_water,
                      low_water = c.low_water })
    if c.idle_timeout then self:set_timeouts({ idle = c.idle_timeout }) end
  end
  local send = c.send_timeout
  if send ~= nil then self._stream:set_send_timeout(send or 0) end
  self:init(...)
  return self
end

--[[ Reading ================================================================]]

-- ch:read([n]) -> n bytes | everything buffered (no n) | nil if not enough
function Channel:read(n)
  return self._stream:read(n)
end

-- ch:read_line() -> the next line without its "\n" or "\r\n" | nil if no
-- full line is buffered | nil, "line too long" past max_line bytes
function Channel:read_line()
  return self._stream:read_line(self.max_line)
end

-- The waiting reads are the stream module's C functions (core.stream_waiter),
-- called as the channel's methods: a coroutine parked in one holds no Lua
-- frame of this module and no coroutine.yield frame, and so the smallest
-- stack (issue 16; see event._fork_direct). Each takes what it waits for
-- from the stream if it is there; else it parks the running task (WHAT
-- "read", ON the channel) as the channel's reader, which data and close
-- wake (kept in the stream userdata, not in a field of the channel: a
-- field would grow its hash part, 32 bytes per connection), until
-- the value is in, the channel closes, the timeout (or read_timeout)
-- passes or the task is cancelled.
local function waiter(kind)
  return core.stream_waiter(kind, live, start_deadline, STATE, CANCEL, WHAT, ON)
end

-- ch:wait_read([n [, timeout]]) -> n bytes (or, without n, whatever
-- arrives) | nil, "timeout" | nil, "closed" | nil, "cancelled"
Channel.wait_read = waiter("read")

-- ch:wait_line([timeout]) -> line | nil, "line too long" | nil, "timeout"
-- | nil, "closed" | nil, "cancelled"
Channel.wait_line = waiter("line")

-- Message mode (a KCP channel's default): input arrives as the peer's
-- whole messages. Other channels raise: they have no boundaries to keep.
local function check_messages(self, fname)
  if not self._stream:message_mode() then
    error(fname .. ": not a message-mode channel (KCP without stream = "
          .. "true)", 3)
  end
end

-- ch:read_message() -> the next whole message as the peer wrote it | nil
-- if none is buffered. Reads of other kinds (read_line) may be mixed in:
-- this takes what is left of the message they started.
function Channel:read_message()
  check_messages(self, "read_message")
  return self._stream:read_message()
end

-- ch:wait_message([timeout]) -> message | nil, "timeout" | nil, "closed"
-- | nil, "cancelled"
Channel.wait_message = waiter("message")

--[[ Writing ================================================================]]

-- Wait until the send queue drains below the low-water mark.
local function wait_drain(self)
  local stream = self._stream
  local deadline = self.write_timeout and event.now() + self.write_timeout
  while stream:full() do
    if self._closed or stream:state() ~= "open" then return fail("closed") end
    local left = deadline and deadline - event.now()
    if left and left <= 0 then return fail("timeout") end
    local token = {}
    local writers = self._writers
    if not writers then
      writers = {}
      self._writers = writers
    end
    writers[#writers + 1] = token
    local ok, err, code = event.wait_as("write", self, token, left)
    if not ok then
      for i = #writers, 1, -1 do
        if writers[i] == token then table.remove(writers, i) end
      end
      return nil, err, code
    end
  end
  return true
end

Channel._wait_drain = wait_drain

-- ch:write(...) -> true | nil, "closed" (| nil, "timeout" with a
-- write_timeout). The strings are queued in order. Above the high-water
-- mark a coroutine waits until the queue drains below the low-water mark;
-- a plain callback gets false (the bytes are queued all the same) and can
-- wait for drain().
function Channel:write(...)
  local ok, err, code = self._stream:write(...)
  if ok == false and event.running() then return wait_drain(self) end
  return ok, err, code
end

-- ch:send(...) is write(...) unless a subclass (rpc) gives it a meaning.
Channel.send = Channel.write

--[[ Closing ================================================================]]

-- The peer shut down its write side, on a stream set to half-close
-- (stream:set_half_close(true), as evlua.rpc's channels are): what a
-- subclass owes the peer may still go out. By default: close.
function Channel:_eof()
  self:close()
end

-- ch:close(): send what is queued, then close; disconnect("local close")
-- runs afterwards from the loop.
function Channel:close()
  self._stream:close()
end

-- ch:close_immediately(): close now and drop unsent bytes; disconnect does
-- not run. Waiting coroutines get nil, "closed".
function Channel:close_immediately()
  self._stream:close_silently()
  if not self._closed then self:_ended("local close") end
end

-- The connection ended: record why and wake every waiting coroutine.
-- Subclasses extend it (rpc fails its pending calls); disconnect is the
-- user's callback and may be replaced freely.
function Channel:_ended(reason)
  self._closed = reason
  -- the reader: in the stream, or (a stream with a data handler) here
  local reader = self._reader or self._stream:reader()
  if reader then wake(reader, true) end
  wake_all(self._writers)
end

function Channel:__close()
  self:close()
end

-- ch:closed() -> the reason it closed, or false while open
function Channel:closed()
  return self._closed or false
end

--[[ Information and settings ===============================================]]

-- ch:peer() / ch:local_addr() -> host, port | nil, err
function Channel:peer()
  return self._stream:peer()
end

function Channel:local_addr()
  return self._stream:local_addr()
end

-- ch:stats() -> { bytes_in, bytes_out, buffered_in, buffered_out, state
-- [, kcp = the session's counters (docs/kcp.md)] }. On a KCP channel
-- buffered_out is the bytes sent and not yet acknowledged.
function Channel:stats()
  local s = self._stream
  local bytes_in, bytes_out = s:counters()
  local buffered_in, buffered_out = s:buffered()
  return { bytes_in = bytes_in, bytes_out = bytes_out,
           buffered_in = buffered_in, buffered_out = buffered_out,
           state = s:state(), kcp = s.kcp_stats and s:kcp_stats() or nil }
end

-- ch:fd() -> the file descriptor (-1 once closed)
function Channel:fd()
  return self._stream:fd()
end

-- ch:set_timeouts{ idle =, read =, write =, send =, linger = } (seconds):
--   idle: close with "timeout" after this long without traffic (0: never)
--   send: close with "send timeout" when queued output makes no progress
--         for this long (default 60; 0 or false: never)
--   read: default timeout of wait_read/wait_line
--   write: how long a coroutine may wait for a full queue to drain
--   linger: how long close() may spend flushing (default 30)
function Channel:set_timeouts(t)
  if t.idle then self._stream:set_idle_timeout(t.idle) end
  if t.linger then self._stream:set_linger(t.linger) end
  if t.send ~= nil then self._stream:set_send_timeout(t.send or 0) end
  if t.read then self.read_timeout = t.read end
  if t.write then self.write_timeout = t.write end
  return self
end

-- ch:set_limits{ max_input =, high_water =, low_water =, max_line = }
--   max_input: input buffered before reading pauses (default 1 MiB)
--   high_water/low_water: send queue marks (default 1 MiB / 256 KiB)
--   max_line: longest line accepted (default 64 KiB, at most max_input)
function Channel:set_limits(t)
  local s = self._stream
  local max_input, high, low = s:limits()
  s:set_limits(t.max_input or max_input, t.high_water or high,
               t.low_water or low)
  if t.max_line then self.max_line = t.max_line end
  max_input = s:limits()
  if self.max_line > max_input then self.max_line = max_input end
  return self
end

function Channel:__tostring()
  local host, port = self:peer()
  if not host then return "channel (closed)" end
  if port == 0 then return "channel " .. host end
  return ("channel %s:%d"):format(host, port)
end

return Channel
