-- tests/lua/rpc_production_spec.lua - MessagePack-RPC for production:
-- listener:shutdown, rpc.client (reconnect, backoff, fast failure), the
-- disconnect log lines and ch:stats().
local event = require "event"
local rpc = require "evlua.rpc"
local helper = require "helper"

-- A server in a process of its own, on port (0: any); returns its pid and
-- port once it listens.
local SERVER = [[
  local event = require "event"
  local rpc = require "evlua.rpc"
  local seen = 0
  local l = assert(rpc.listen("127.0.0.1", tonumber(arg[1]), {
    add = function(_, a, b) return a + b end,
    hang = function(_, expected)
      seen = seen + 1
      if seen == expected then print("hanging " .. seen) io.stdout:flush() end
      event.sleep(100)
    end,
  }, nil, { max_inflight = 2000 }))   -- 1,000 calls in flight on one connection
  print("port " .. l:port())
  io.stdout:flush()
]]

local function spawn_server(port)
  local pid, out = helper.spawn_script(SERVER, { tostring(port or 0) })
  return pid, tonumber(helper.await_output(out, "port (%d+)")), out
end

local function kill_and_wait(pid)
  helper.kill(pid, "KILL")
  helper.eventually(function() return not helper.alive(pid) end, "the server to die")
end

-- Fork n calls of fn, and return a table for finished(): t[i] = { the
-- results of call i }, t.at[i] = event.time() when it returned.
local function fork_calls(n, fn)
  local results = { at = {}, left = n }
  for i = 1, n do
    event.fork(function()
      results[i] = table.pack(fn(i))
      results.at[i] = event.time()
      results.left = results.left - 1
      if results.left == 0 then event.wakeup(results) end
    end)
  end
  return results
end

-- Wait (at most seconds) until every call of fork_calls returned.
local function finished(results, seconds)
  if results.left == 0 then return true end
  return event.wait(results, seconds)
end

local slow_started, nstarted, expect_started = {}, 0, 0
local handlers = {
  add = function(_, a, b) return a + b end,
  boom = function() error("kaboom", 0) end,
  slow = function(_, seconds, value)
    nstarted = nstarted + 1
    if nstarted == expect_started then event.wakeup(slow_started) end
    event.sleep(seconds)
    return value
  end,
}

local function expect_slow(n)
  nstarted, expect_started = 0, n
end

describe("rpc listener:shutdown", function()
  after_each(helper.cleanup)

  it("answers every slow request in flight, then closes, refusing new connections", function()
    local listener = assert(rpc.listen("127.0.0.1", 0, handlers))
    local port = listener:port()
    local gone = 0
    local Watched = rpc.channel:inherit()
    local all_gone = {}
    function Watched:disconnect()
      gone = gone + 1
      if gone == 3 then event.wakeup(all_gone) end
    end
    local chs = {}
    for i = 1, 3 do chs[i] = assert(rpc.connect("127.0.0.1", port, { class = Watched })) end
    expect_slow(15)
    local calls = fork_calls(15, function(i)
      return chs[(i % 3) + 1]:call("slow", 0.2, i)
    end)
    assert.is_true(event.wait(slow_started, 10))
    assert.same({ connections = 3, serving = 15, refused = 0 }, listener:stats())
    local shutdown = event.fork(function() return listener:shutdown(5) end)
    event.sleep(0)   -- shutdown has begun
    assert.same({ nil, "connection refused", "ECONNREFUSED" },
                { rpc.connect("127.0.0.1", port) })
    -- a request arriving meanwhile is refused, not started
    assert.same({ nil, "server shutting down", "remote" }, { chs[1]:call("add", 1, 2) })
    assert.is_true(finished(calls, 10))
    for i = 1, 15 do assert.same({ i, n = 1 }, calls[i]) end
    assert.same({ true, true }, { shutdown:join(10) })
    assert.is_true(event.wait(all_gone, 5))
    for i = 1, 3 do assert.equal("eof", chs[i]:closed()) end
    assert.same({ connections = 0, serving = 0, refused = 0 }, listener:stats())
  end)

  it("closes idle connections at once and returns at once with none", function()
    local listener = assert(rpc.listen("127.0.0.1", 0, handlers))
    assert.is_true(listener:shutdown(0))   -- no connection: at the bound
    listener = assert(rpc.listen("127.0.0.1", 0, handlers))
    local ch = assert(rpc.connect("127.0.0.1", listener:port()))
    assert.equal(3, ch:call("add", 1, 2))
    local t0 = event.time()
    assert.is_true(listener:shutdown())
    assert.is_true(event.time() - t0 < 1)
    assert.same({ nil, "closed", "closed" }, { ch:call("add", 1, 2) })
  end)

  it("cuts what is left after the timeout", function()
    local listener = assert(rpc.listen("127.0.0.1", 0, handlers))
    local ch = assert(rpc.connect("127.0.0.1", listener:port()))
    expect_slow(2)
    local calls = fork_calls(2, function(i)
      return ch:call("slow", i == 1 and 0.05 or 30, i)
    end)
    assert.is_true(event.wait(slow_started, 10))
    local t0 = event.time()
    assert.same({ nil, "timeout", "timeout" }, { listener:shutdown(0.3) })
    local took = event.time() - t0
    assert.is_true(took >= 0.25 and took < 5, took)
    assert.is_true(finished(calls, 5))
    assert.same({ 1, n = 1 }, calls[1])             -- within the timeout
    assert.same({ nil, "closed", "closed", n = 3 }, calls[2])
    assert.equal(0, listener:stats().connections)
  end)

  it("times out at once with timeout 0 and requests in flight; rejects bad timeouts", function()
    local listener = assert(rpc.listen("127.0.0.1", 0, handlers))
    local ch = assert(rpc.connect("127.0.0.1", listener:port()))
    expect_slow(1)
    local calls = fork_calls(1, function() return ch:call("slow", 30, 1) end)
    assert.is_true(event.wait(slow_started, 10))
    assert.same({ nil, "timeout", "timeout" }, { listener:shutdown(0) })
    assert.is_true(finished(calls, 5))
    assert.same({ nil, "closed", "closed", n = 3 }, calls[1])
    assert.has_error(function() listener:shutdown(-1) end,
                     "bad argument #1 to 'shutdown' (non-negative number expected)")
    assert.has_error(function() listener:shutdown("x") end)
  end)

  it("forgets the connections that closed (no leak)", function()
    local gone, all_gone = 0, {}
    local Watched = rpc.channel:inherit()
    function Watched:disconnect()
      gone = gone + 1
      if gone == 20 then event.wakeup(all_gone) end
    end
    local listener = assert(rpc.listen("127.0.0.1", 0, handlers, Watched))
    for _ = 1, 20 do
      local ch = assert(rpc.connect("127.0.0.1", listener:port()))
      assert.equal(2, ch:call("add", 1, 1))
      ch:close()
    end
    assert.is_true(event.wait(all_gone, 5))
    assert.same({ connections = 0, serving = 0, refused = 0 }, listener:stats())
    listener:close()
  end)

  it("forwards the listener's methods and names itself", function()
    local listener = assert(rpc.listen("127.0.0.1", 0, handlers))
    assert.matches("^evlua%.rpc%.listener %(", tostring(listener))
    assert.equal("127.0.0.1", (listener:addr()))
    assert.is_number(listener:backlog())
    listener:close()
    listener:close()   -- idempotent
    assert.same({ nil, "closed", "closed" }, { listener:addr() })
  end)
end)

describe("rpc.client", function()
  after_each(helper.cleanup)

  it("fails 1,000 calls in flight at once when the server is killed, and logs it once", function()
    local log = helper.tmpdir() .. "/log"
    assert(event.log_file(log))
    local pid, port, out = spawn_server()
    local client = rpc.client("127.0.0.1", port)
    assert.equal(3, client:call("add", 1, 2))
    local calls = fork_calls(1000, function() return client:call("hang", 1000) end)
    helper.await_output(out, "hanging 1000")   -- all 1,000 reached the server
    local t0 = event.time()
    helper.kill(pid, "KILL")
    assert.is_true(finished(calls, 20))
    local last = 0
    for i = 1, 1000 do
      assert.same({ nil, "closed", "closed", n = 3 }, calls[i])
      last = math.max(last, calls.at[i] - t0)
    end
    -- The issue asks for "within 100 ms" (measured here: a few ms); the
    -- bound asserted is 1 s, far below call_timeout (30 s), so that a
    -- busy machine does not fail the test.
    print(("\n  1,000 pending calls failed %.1f ms after the kill"):format(last * 1000))
    assert.is_true(last < 1, last)
    local stats = client:stats()
    assert.equal(1001, stats.calls)
    assert.equal(1000, stats.errors)
    assert.equal(0, stats.timeouts)
    event.log_file(nil)
    local text = helper.slurp(log)
    local _, lines = text:gsub("rpc: channel 127%.0%.0%.1:" .. port
                               .. " closed: %a+ %(1000 calls pending%)\n", "")
    assert.equal(1, lines, text)
    client:close()
  end)

  it("reaches a restarted server (same port) again", function()
    local pid, port, out = spawn_server()
    local client = rpc.client("127.0.0.1", port)
    assert.equal(3, client:call("add", 1, 2))
    local calls = fork_calls(5, function() return client:call("hang", 5) end)
    helper.await_output(out, "hanging 5")
    kill_and_wait(pid)
    assert.is_true(finished(calls, 10))
    for i = 1, 5 do assert.same({ nil, "closed", "closed", n = 3 }, calls[i]) end
    spawn_server(port)
    assert.equal(7, client:call("add", 3, 4))    -- the first reconnect is at once
    local stats = client:stats()
    assert.equal(2, stats.connects)
    assert.equal(0, stats.connect_failures)
    assert.is_true(stats.connected)
    client:close()
  end)

  it("fails fast while the server is down, and send fails visibly", function()
    local port = helper.free_port()
    local client = rpc.client("127.0.0.1", port, { call_timeout = 10,
                                                   reconnect_min = 5 })
    local t0 = event.time()
    assert.same({ nil, "connection refused", "ECONNREFUSED" }, { client:call("add", 1, 2) })
    -- within the backoff: no new attempt, the last error at once
    assert.same({ nil, "connection refused", "ECONNREFUSED" }, { client:call("add", 1, 2) })
    assert.same({ nil, "connection refused", "ECONNREFUSED" }, { client:send("note", 1) })
    assert.same({ nil, "connection refused", "ECONNREFUSED" },
                { client:timed_call(1, "add", 1, 2) })
    assert.is_true(event.time() - t0 < 1)          -- well under call_timeout
    local stats = client:stats()
    assert.equal(1, stats.connect_failures)
    assert.equal(3, stats.calls)
    assert.equal(3, stats.errors)
    assert.is_false(stats.connected)
    assert.is_true(stats.retry_in > 2 and stats.retry_in <= 5, stats.retry_in)
    client:close()
    assert.same({ nil, "closed", "closed" }, { client:call("add", 1, 2) })
    assert.same({ nil, "closed", "closed" }, { client:send("note") })
  end)

  it("send on a dropped connection reconnects or fails, never vanishes", function()
    local got, notes = {}, {}
    local listener = assert(rpc.listen("127.0.0.1", 0, {
      note = function(_, v) notes[#notes + 1] = v event.wakeup(got) end,
    }))
    local port = listener:port()
    -- healthy_after = 0: a connection that only carried notifications
    -- (nothing acknowledges them) counts as healthy, so the next send
    -- tries to reconnect at once (rpc_robustness_spec has the default)
    local client = rpc.client("127.0.0.1", port, { reconnect_min = 5, healthy_after = 0 })
    assert.is_true(client:send("note", 1))
    assert.is_true(event.wait(got, 5))
    assert.is_true(listener:shutdown())
    helper.eventually(function() return not client:stats().connected end, "the drop")
    assert.same({ nil, "connection refused", "ECONNREFUSED" }, { client:send("note", 2) })
    -- outside a coroutine, with no connection to send on
    local outside
    event.timeout(0, function() outside = { client:send("note", 3) } event.wakeup(got) end)
    assert.is_true(event.wait(got, 5))
    assert.same({ nil, "connection refused", "ECONNREFUSED" }, outside)
    assert.same({ 1 }, notes)
    client:close()
  end)

  it("shares one connect attempt between coroutines calling at once", function()
    local listener = assert(rpc.listen("127.0.0.1", 0, handlers))
    local port = listener:port()
    local client = rpc.client("127.0.0.1", port)
    assert.equal("evlua.rpc.client (127.0.0.1:" .. port .. ", disconnected)",
                 tostring(client))
    local calls = fork_calls(100, function(i) return client:call("add", i, 1) end)
    assert.is_true(finished(calls, 10))
    for i = 1, 100 do assert.same({ i + 1, n = 1 }, calls[i]) end
    assert.equal(1, client:stats().connects)
    assert.matches("connected%)$", tostring(client))
    listener:close()
    -- and one failed attempt, when the server is down
    local down = rpc.client("127.0.0.1", helper.free_port())
    calls = fork_calls(100, function() return down:call("add", 1, 1) end)
    assert.is_true(finished(calls, 10))
    for i = 1, 100 do
      assert.same({ nil, "connection refused", "ECONNREFUSED", n = 3 }, calls[i])
    end
    assert.equal(1, down:stats().connect_failures)
    client:close()
    assert.equal("evlua.rpc.client (127.0.0.1:" .. port .. ", closed)",
                 tostring(client))
  end)

  it("grows the backoff from reconnect_min and caps it at reconnect_max", function()
    local client = rpc.client("127.0.0.1", helper.free_port(),
                              { reconnect_min = 0.01, reconnect_max = 0.04 })
    local caps = { 0.01, 0.02, 0.04, 0.04, 0.04, 0.04 }
    for n, cap in ipairs(caps) do
      local attempts = client:stats().connect_failures
      assert.same({ nil, "connection refused", "ECONNREFUSED" }, { client:call("add") })
      local stats = client:stats()
      assert.equal(attempts + 1, stats.connect_failures)   -- a real attempt
      assert.equal(n, stats.failures)
      -- between half and all of min * 2^(n-1), and never past the cap
      assert.is_true(stats.backoff >= cap / 2 and stats.backoff <= cap,
                     n .. ": " .. stats.backoff)
      -- before it is due: no attempt
      assert.same({ nil, "connection refused", "ECONNREFUSED" }, { client:call("add") })
      assert.equal(attempts + 1, client:stats().connect_failures)
      event.sleep(client:stats().retry_in + 0.001)    -- the backoff under test
    end
  end)

  it("resets the backoff once it connects; takes reconnect_min = reconnect_max", function()
    local port = helper.free_port()
    local client = rpc.client("127.0.0.1", port,
                              { reconnect_min = 0.02, reconnect_max = 0.02 })
    for _ = 1, 3 do
      assert.is_nil(client:call("add", 1, 1))
      local b = client:stats().backoff
      assert.is_true(b >= 0.01 and b <= 0.02, b)
      event.sleep(client:stats().retry_in + 0.001)
    end
    local listener = assert(rpc.listen("127.0.0.1", port, handlers))
    assert.equal(2, client:call("add", 1, 1))
    assert.equal(0, client:stats().failures)
    assert.equal(0, client:stats().retry_in)
    client:close()
    listener:close()
  end)

  it("counts the connect in a call's timeout; timed_call(0) needing a connect times out", function()
    local listener = assert(rpc.listen("127.0.0.1", 0, handlers))
    local client = rpc.client("127.0.0.1", listener:port())
    assert.same({ nil, "timeout", "timeout" }, { client:timed_call(0, "add", 1, 2) })
    assert.equal(0, client:stats().connects)
    assert.equal(3, client:timed_call(5, "add", 1, 2))
    assert.same({ nil, "timeout", "timeout" }, { client:timed_call(0.05, "slow", 1, 0) })
    local stats = client:stats()
    assert.same({ 3, 2, 2 }, { stats.calls, stats.errors, stats.timeouts })
    client:close()
    listener:close()
  end)

  it("serves calls from the server with opts.handlers, and gives its channel", function()
    local listener = assert(rpc.listen("127.0.0.1", 0, {
      ask_back = function(ch) return ch:call("whoami") end,
    }))
    local client = rpc.client("127.0.0.1", listener:port(), {
      handlers = { whoami = function() return "the client" end },
      call_timeout = 5,
    })
    assert.equal("the client", client:call("ask_back"))
    local ch = assert(client:channel())
    assert.equal(5, ch.call_timeout)
    assert.equal(1, ch:stats().served)
    client:close()
    client:close()   -- idempotent
    listener:close()
  end)

  it("rejects bad arguments and options", function()
    assert.has_error(function() rpc.client(1, 2) end,
                     "bad argument #1 to 'client' (string expected, got number)")
    assert.has_error(function() rpc.client("127.0.0.1", 70000) end)
    assert.has_error(function() rpc.client("127.0.0.1", 1, 5) end)
    for _, bad in ipairs({ 0, -1, "x", math.huge }) do
      assert.has_error(function() rpc.client("127.0.0.1", 1, { reconnect_min = bad }) end,
                       "bad argument #3 to 'client' (reconnect_min must be a positive number)")
      assert.has_error(function() rpc.client("127.0.0.1", 1, { reconnect_max = bad }) end)
      assert.has_error(function() rpc.client("127.0.0.1", 1, { timeout = bad }) end)
    end
    assert.has_error(function()
      rpc.client("127.0.0.1", 1, { reconnect_min = 2, reconnect_max = 1 })
    end, "bad argument #3 to 'client' (reconnect_min must not exceed reconnect_max)")
    assert.has_error(function() rpc.client("127.0.0.1", 1, { call_timeout = -1 }) end)
    local client = rpc.client("127.0.0.1", 1)
    assert.has_error(function() client:call(42) end)
    assert.has_error(function() client:send(nil) end)
    assert.has_error(function() client:timed_call(-1, "x") end)
  end)
end)

describe("rpc stats and logs", function()
  after_each(helper.cleanup)

  it("counts calls, errors, timeouts, served and bytes", function()
    local server_ch
    local h = setmetatable({ mine = function(ch) server_ch = ch end }, { __index = handlers })
    local listener = assert(rpc.listen("127.0.0.1", 0, h))
    local ch = assert(rpc.connect("127.0.0.1", listener:port()))
    ch:call("mine")
    for i = 1, 3 do assert.equal(i + 1, ch:call("add", i, 1)) end
    assert.same({ nil, "kaboom", "remote" }, { ch:call("boom") })
    assert.same({ nil, "timeout", "timeout" }, { ch:timed_call(0.01, "slow", 0.5, 1) })
    local s = ch:stats()
    assert.same({ 6, 2, 1, 0 }, { s.calls, s.errors, s.timeouts, s.pending })
    assert.is_true(s.bytes_in > 0 and s.bytes_out > 0)
    assert.equal("open", s.state)
    helper.eventually(function() return server_ch:stats().served == 6 end, "the slow reply")
    local ss = server_ch:stats()
    assert.same({ 0, 0, 6, 0 }, { ss.calls, ss.errors, ss.served, ss.serving })
    assert.equal(s.bytes_out, ss.bytes_in)
    ch:close()
    listener:close()
  end)

  it("logs a server connection's end only when it is news", function()
    local log = helper.tmpdir() .. "/log"
    assert(event.log_file(log))
    local prev = event.log_level("debug")
    local closed = {}
    local Watched = rpc.channel:inherit()
    function Watched:disconnect(reason) event.wakeup(closed, reason) end
    local listener = assert(rpc.listen("127.0.0.1", 0, handlers, Watched))
    local ch = assert(rpc.connect("127.0.0.1", listener:port()))
    assert.equal(2, ch:call("add", 1, 1))
    ch:close()
    assert.same({ "eof" }, { event.wait(closed, 5) })
    event.log_level(prev)
    event.log_file(nil)
    local text = helper.slurp(log)
    assert.matches("DEBUG rpc: channel 127%.0%.0%.1:%d+ closed: eof\n", text)
    assert.not_matches("WARN", text)
    listener:close()
  end)
end)
