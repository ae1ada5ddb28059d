-- tests/lua/rpc_robustness_spec.lua - evlua.rpc against peers that
-- misbehave: a server that accepts and drops every connection (the
-- client's backoff), a client that half-closes after its requests (the
-- replies it is owed), a peer that sends garbage (the disconnect reason).
local event = require "event"
local rpc = require "evlua.rpc"
local helper = require "helper"

local handlers = {
  add = function(_, a, b) return a + b end,
  hang = function() event.sleep(100) end,
  slow = function(_, seconds, value)
    event.sleep(seconds)
    return value
  end,
}

-- Start tests/peers/rpc_peer.py MODE PORT ARG in the background; returns
-- the path of its output and its local port (the server's view of it).
local function python_peer(mode, port, arg)
  local out = helper.tmpdir() .. "/out"
  os.execute(("(timeout 60 /usr/bin/python3 tests/peers/rpc_peer.py %s %d %s >%s 2>&1;"
              .. " echo done >>%s) &"):format(mode, port, arg, out, out))
  return out, tonumber(helper.await_output(out, "local (%d+)\n"))
end

-- A server that accepts every connection and closes it at once (a crash
-- loop, an overloaded proxy). -> listener, counts (counts.n: connections)
local function dropping_server(port, keep)
  local counts = { n = 0 }
  local listener = assert(event.listen("127.0.0.1", port or 0, function(_, c)
    counts.n = counts.n + 1
    if keep then event.sleep(keep) end
    c:close()
  end))
  return listener, counts
end

-- The most connections a client may make in `elapsed` seconds against a
-- server that drops each one: the k-th drop in a row waits at least half
-- of min(max, min * 2^(k-1)).
local function schedule_bound(elapsed, min, max)
  local n, t = 1, 0   -- the first connect is at once
  while true do
    t = t + math.min(max, min * 2 ^ (n - 1)) / 2
    if t > elapsed then return n end
    n = n + 1
  end
end

describe("rpc.client backoff", function()
  after_each(helper.cleanup)

  it("backs off from a server that drops every connection, resets once one is healthy", function()
    local min, max = 0.02, 0.2
    local log = helper.tmpdir() .. "/log"
    assert(event.log_file(log))
    local listener, counts = dropping_server()
    local port = listener:port()
    local client = rpc.client("127.0.0.1", port, { reconnect_min = min, reconnect_max = max })
    local calls, t0 = 0, event.time()
    while event.time() - t0 < 1 do   -- a caller that keeps calling for 1 s
      local result, err, code = client:call("add", 1, 2)
      assert.is_nil(result)
      assert.equal("closed", code, err)
      calls = calls + 1
      event.sleep(0.002)
    end
    local elapsed = event.time() - t0
    local bound = schedule_bound(elapsed, min, max)
    -- Without backoff every call connects (hundreds of connects); with it
    -- the schedule allows about ten. The bound is the schedule's, which no
    -- slow machine can exceed (plus 3: the loop's cached clock may start a
    -- wait a little early).
    print(("\n  %d calls, %d connects in %.2f s (the schedule allows %d)")
          :format(calls, counts.n, elapsed, bound))
    assert.is_true(counts.n >= 2, counts.n)
    assert.is_true(counts.n <= bound + 3, counts.n .. " connects, bound " .. bound)
    local stats = client:stats()
    assert.is_true(stats.failures >= 2, stats.failures)
    -- every connect was made, and every one failed
    assert.is_true(stats.connects >= counts.n - 1 and stats.connects <= counts.n)
    assert.equal(stats.connects, stats.connect_failures)
    -- one log line per connection (each drop is news on a client), so the
    -- backoff bounds the log too (the reason: "eof", or a reset when the
    -- request met the closed socket)
    event.log_file(nil)
    local _, lines = helper.slurp(log):gsub("WARN rpc: channel 127%.0%.0%.1:" .. port
                                            .. " closed: ", "")
    assert.equal(counts.n, lines)
    listener:close()

    -- A healthy server on the same port: the first response resets the
    -- backoff, and its next drop reconnects at once.
    local server_ch
    local healthy = assert(rpc.listen("127.0.0.1", port, {
      add = handlers.add,
      mine = function(ch)
        server_ch = ch
        return "mine"
      end,
    }))
    helper.eventually(function() return client:stats().retry_in == 0 end, "the backoff")
    assert.equal("mine", client:call("mine"))
    assert.equal(0, client:stats().failures)
    local failures_before = client:stats().connect_failures
    server_ch:close()
    helper.eventually(function() return not client:stats().connected end, "the drop")
    assert.equal(0, client:stats().retry_in)
    assert.equal(3, client:call("add", 1, 2))   -- reconnected, no backoff
    stats = client:stats()
    assert.equal(failures_before, stats.connect_failures)
    assert.equal(0, stats.failures)
    client:close()
    healthy:close()
  end)

  it("counts a connection that stays up healthy_after seconds as healthy", function()
    assert(event.log_file(helper.tmpdir() .. "/log"))   -- each drop logs a line
    -- The server holds each connection 0.2 s, never answers, then closes.
    local listener = dropping_server(nil, 0.2)
    local port = listener:port()
    -- below the connection's life: healthy, the drop reconnects at once
    local client = rpc.client("127.0.0.1", port, { healthy_after = 0.05, reconnect_min = 5 })
    assert.same({ nil, "closed", "closed" }, { client:call("add", 1, 2) })
    local stats = client:stats()
    assert.same({ 1, 0, 0, 0 },
                { stats.connects, stats.connect_failures, stats.failures, stats.retry_in })
    client:close()
    -- above it: the drop counts as a failed attempt, the backoff starts
    client = rpc.client("127.0.0.1", port, { healthy_after = 5, reconnect_min = 5 })
    assert.same({ nil, "closed", "closed" }, { client:call("add", 1, 2) })
    stats = client:stats()
    assert.same({ 1, 1, 1 }, { stats.connects, stats.connect_failures, stats.failures })
    assert.is_true(stats.retry_in > 2, stats.retry_in)
    assert.same({ nil, "closed", "closed" }, { client:call("add", 1, 2) })   -- at once
    assert.equal(1, client:stats().connects)
    client:close()
    -- 0: every connection is healthy at once (no drop counts as a failure)
    listener:close()
    local counts
    listener, counts = dropping_server()
    client = rpc.client("127.0.0.1", listener:port(), { healthy_after = 0, reconnect_min = 5 })
    for _ = 1, 3 do assert.same({ nil, "closed", "closed" }, { client:call("add", 1, 2) }) end
    assert.same({ 3, 0 }, { client:stats().connects, client:stats().connect_failures })
    assert.equal(3, counts.n)
    client:close()
    listener:close()
    event.log_file(nil)
  end)

  it("rejects a bad healthy_after", function()
    for _, bad in ipairs({ -1, "x", math.huge, -math.huge }) do
      assert.has_error(function() rpc.client("127.0.0.1", 1, { healthy_after = bad }) end,
                       "bad argument #3 to 'client' (healthy_after must be a non-negative number)")
    end
  end)
end)

-- A Python peer sends n requests (those with an odd msgid to `odd`, the
-- others to "add"), then shuts down its write side; returns the replies
-- it got before the server closed (msgid -> result text), and the reason
-- the server's channel closed with.
local function half_close(n, odd, call_timeout, max_inflight)
  local closed = {}
  local Watched = rpc.channel:inherit()
  Watched.call_timeout = call_timeout
  Watched.max_inflight = max_inflight
  function Watched:disconnect(reason)
    closed.reason = reason
    event.wakeup(closed)
  end
  local listener = assert(rpc.listen("127.0.0.1", 0, handlers, Watched))
  local out = python_peer("halfclose", listener:port(), n .. " " .. odd)
  local text = helper.await_output(out, "^(.*)done\n$")
  if not closed.reason then assert.is_true(event.wait(closed, 5)) end
  listener:close()
  assert.matches("closed\n$", text)   -- the server closed...
  assert.not_matches("reset", text)    -- ...cleanly
  local got = {}
  for msgid, result in text:gmatch("reply (%d+) (%S+)\n") do
    got[tonumber(msgid)] = result
  end
  return got, closed.reason, text
end

describe("rpc half-close", function()
  after_each(helper.cleanup)

  it("answers the requests of a peer that shut down its write side, then closes", function()
    local n = 50
    local got, reason, text = half_close(n, "add")
    for msgid = 1, n do assert.equal(tostring(msgid + 1), got[msgid], text) end
    assert.equal("eof", reason)
  end)

  -- Handlers that wait: the stream reports the EOF and stays writable
  -- (stream:set_half_close), so their replies still go out.
  it("answers slow requests of a peer that shut down its write side, then closes", function()
    local n = 10
    local got, reason, text = half_close(n, "slow")
    for msgid = 1, n do
      local want = msgid % 2 == 1 and msgid * 10 or msgid + 1
      assert.equal(tostring(want), got[msgid], text)
    end
    assert.equal("eof", reason)
  end)

  it("answers the requests past max_inflight too, read after its EOF", function()
    -- 10 requests to handlers that wait, 2 at a time: the other 8 (and
    -- the EOF behind them) stay unread until there is room
    local n = 10
    local got, reason, text = half_close(n, "slow", nil, 2)
    for msgid = 1, n do
      local want = msgid % 2 == 1 and msgid * 10 or msgid + 1
      assert.equal(tostring(want), got[msgid], text)
    end
    assert.equal("eof", reason)
  end)

  it("closes a half-closed connection call_timeout after its EOF when a handler hangs", function()
    local t0 = event.time()
    local got, reason, text = half_close(6, "hang", 0.3)
    assert.is_true(event.time() - t0 < 20)   -- not the handler's 100 s
    for msgid = 1, 6 do
      assert.equal(msgid % 2 == 0 and tostring(msgid + 1) or nil, got[msgid], text)
    end
    assert.equal("eof", reason)
  end)
end)

describe("rpc bad input", function()
  after_each(helper.cleanup)

  -- A Python peer sends `bytes`; returns the reason the server's channel
  -- reported to disconnect, its closed(), and the lines logged about it.
  local function bad_peer(bytes, class)
    local log = helper.tmpdir() .. "/log"
    assert(event.log_file(log))
    local reasons = {}
    local Watched = (class or rpc.channel):inherit()
    function Watched:disconnect(reason)
      reasons[#reasons + 1] = reason
      reasons.closed = self:closed()
      event.wakeup(reasons)
    end
    local listener = assert(rpc.listen("127.0.0.1", 0, handlers, Watched))
    local hex = bytes:gsub(".", function(c) return ("%02x"):format(c:byte()) end)
    local out, peer_port = python_peer("garbage", listener:port(), hex)
    if not reasons[1] then assert.is_true(event.wait(reasons, 10)) end
    helper.await_output(out, "closed\ndone\n$")   -- the peer saw the close
    event.sleep(0.05)   -- a second disconnect or log line would come now
    event.log_file(nil)
    local lines = {}
    for line in helper.slurp(log):gmatch("[^\n]+") do
      if line:find("127.0.0.1:" .. peer_port, 1, true) then lines[#lines + 1] = line end
    end
    listener:close()
    assert.equal(1, #reasons)   -- disconnect ran once
    return reasons[1], reasons.closed, lines
  end

  it("reports bad MessagePack as the reason, logged once", function()
    local reason, closed, lines = bad_peer("\x94\x00\x01\xc1\x90")   -- 0xc1 never valid
    assert.equal("bad message: invalid msgpack data", reason)
    assert.equal(reason, closed)
    assert.equal(1, #lines, table.concat(lines, "\n"))
    assert.matches("ERROR rpc: closing channel 127%.0%.0%.1:%d+: bad message: invalid msgpack data$",
                   lines[1])
  end)

  it("reports a message that is not RPC, and one past max_message", function()
    local reason, closed, lines = bad_peer(rpc.msgpack.encode({ 7, "not", "rpc" }))
    assert.equal("bad message: invalid rpc message", reason)
    assert.equal(reason, closed)
    assert.equal(1, #lines, table.concat(lines, "\n"))
    local Small = rpc.channel:inherit()
    Small.max_message = 100
    reason, closed, lines = bad_peer(rpc.msgpack.encode({ 0, 1, "add", { ("x"):rep(200) } }),
                                     Small)
    assert.equal("bad message: message larger than 100 bytes", reason)
    assert.equal(reason, closed)
    assert.equal(1, #lines, table.concat(lines, "\n"))
  end)
end)
