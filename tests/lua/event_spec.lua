-- tests/lua/event_spec.lua - the event module: coroutines, sleep, timers,
-- wait/wakeup, cancellation, introspection. Runs inside evlua.
local event = require "event"
local core = require "evlua.core"
local helper = require "helper"

-- Wait for a token with a generous deadline so a broken feature fails the
-- test instead of hanging the suite.
local function await(token)
  local ok, err = event.wait(token, 10)
  assert.is_true(ok, err)
end

describe("event.fork", function()
  it("runs the coroutine on the next loop turn, not inside fork", function()
    local ran = false
    event.fork(function() ran = true end)
    assert.is_false(ran)
    event.sleep(0)
    assert.is_true(ran)
  end)

  it("passes arguments and join returns the results", function()
    local h = event.fork(function(a, b) return a + b, nil, "x" end, 2, 3)
    local n, ok, sum, none, x = select("#", h:join()), h:join()
    assert.equal(4, n)
    assert.is_true(ok)
    assert.equal(5, sum)
    assert.is_nil(none)
    assert.equal("x", x)
  end)

  it("carries any number of values, nils included, through fork, wakeup and join", function()
    for n = 0, 5 do
      local vals = {}   -- nil in the odd places
      for i = 2, n, 2 do vals[i] = i end
      local token = {}
      local h = event.fork(function(...)
        local args = table.pack(...)
        local woke = table.pack(event.wait(token, 5))
        return args, woke, table.unpack(vals, 1, n)
      end, table.unpack(vals, 1, n))
      event.sleep(0)
      assert.is_true(event.wakeup(token, table.unpack(vals, 1, n)))
      local res = table.pack(h:join(5))
      assert.equal(n + 3, res.n)
      assert.is_true(res[1])
      local args, woke = res[2], res[3]
      assert.equal(n, args.n)
      assert.equal(n == 0 and 1 or n, woke.n)   -- no values: true
      if n == 0 then assert.is_true(woke[1]) end
      for i = 1, n do
        assert.equal(vals[i], args[i])
        assert.equal(vals[i], woke[i])
        assert.equal(vals[i], res[3 + i])
      end
    end
  end)

  it("join reports the error of a failed coroutine", function()
    local h = event.fork(function() error("broken", 0) end)
    local ok, err = h:join()
    assert.is_false(ok)
    assert.equal("broken", err)
  end)

  it("join times out with nil, 'timeout' and can be retried", function()
    local token = {}
    local h = event.fork(function() event.wait(token) return "late" end)
    local ok, err = h:join(0.01)
    assert.is_nil(ok)
    assert.equal("timeout", err)
    event.wakeup(token)
    assert.same({ true, "late" }, { h:join(5) })
  end)

  it("lets several coroutines join the same one", function()
    local token = {}
    local h = event.fork(function() event.wait(token) return 7 end)
    local results = {}
    local function joiner()
      local _, value = h:join()
      results[#results + 1] = value
    end
    local a, b = event.fork(joiner), event.fork(joiner)
    event.sleep(0)
    event.wakeup(token)
    a:join(5)
    b:join(5)
    assert.same({ 7, 7 }, results)
  end)

  it("runs forked coroutines in the order they were forked", function()
    local order = {}
    for i = 1, 5 do event.fork(function() order[#order + 1] = i end) end
    event.sleep(0)
    assert.same({ 1, 2, 3, 4, 5 }, order)
  end)

  it("rejects a non-function", function()
    assert.has_error(function() event.fork(42) end,
      "bad argument #1 to 'fork' (function expected, got number)")
    assert.has_error(function() event.fork() end,
      "bad argument #1 to 'fork' (function expected, got nil)")
  end)

  it("a coroutine cannot join itself", function()
    local h
    h = event.fork(function() return pcall(h.join, h) end)
    local _, ok, err = h:join()
    assert.is_false(ok)
    assert.matches("cannot join itself", err)
  end)

  it("event.running returns the current handle", function()
    local h
    h = event.fork(function() return event.running() == h end)
    assert.same({ true, true }, { h:join() })
  end)
end)

describe("event.sleep", function()
  it("sleep(0) yields to other coroutines", function()
    local trace = {}
    local function worker(name)
      for i = 1, 3 do
        trace[#trace + 1] = name .. i
        event.sleep(0)
      end
    end
    local a, b = event.fork(worker, "a"), event.fork(worker, "b")
    a:join(5)
    b:join(5)
    assert.same({ "a1", "b1", "a2", "b2", "a3", "b3" }, trace)
  end)

  it("returns true after at least the given time", function()
    core.update_now()
    local t0 = event.now()
    assert.is_true(event.sleep(0.05))
    assert.is_true(event.now() - t0 >= 0.049)
  end)

  it("wakes sleepers in deadline order", function()
    local order = {}
    local done = {}
    for _, d in ipairs({ 0.03, 0.01, 0.02 }) do
      event.fork(function()
        event.sleep(d)
        order[#order + 1] = d
        if #order == 3 then event.wakeup(done) end
      end)
    end
    await(done)
    assert.same({ 0.01, 0.02, 0.03 }, order)
  end)

  it("rejects negative, NaN and infinite durations", function()
    for _, bad in ipairs({ -1, 0 / 0, math.huge, "1" }) do
      assert.has_error(function() event.sleep(bad) end)
    end
    local ok, err = pcall(event.sleep, -1)
    assert.is_false(ok)
    assert.matches("bad argument #1 to 'sleep' %(non%-negative number expected, got %-1", err)
  end)

  it("raises a clear error outside an event coroutine", function()
    local wrapped = coroutine.wrap(function() return pcall(event.sleep, 1) end)
    local ok, err = wrapped()
    assert.is_false(ok)
    assert.matches("event.sleep must run in a coroutine$", err)
    -- A plain loop callback runs on the main thread, outside any coroutine.
    local token = {}
    local message
    core.timer(function()
      message = select(2, pcall(event.sleep, 1))
      event.wakeup(token)
    end):start(0)
    await(token)
    assert.matches("event.sleep must run in a coroutine$", message)
  end)
end)

describe("timers", function()
  it("event.timeout fires once, in deadline order with others", function()
    local order, done = {}, {}
    for _, d in ipairs({ 0.03, 0.01, 0.02 }) do
      event.timeout(d, function()
        order[#order + 1] = d
        if #order == 3 then event.wakeup(done) end
      end)
    end
    await(done)
    assert.same({ 0.01, 0.02, 0.03 }, order)
  end)

  it("event.timer repeats until cancelled from inside the callback", function()
    local count, done = 0, {}
    local timer
    timer = event.timer(0.005, function(t)
      assert.equal(timer, t)
      count = count + 1
      if count == 3 then
        t:cancel()
        event.wakeup(done)
      end
    end)
    await(done)
    assert.is_false(timer:active())
    -- A later timeout proves time went on without another firing.
    local later = {}
    event.timeout(0.03, function() event.wakeup(later) end)
    await(later)
    assert.equal(3, count)
  end)

  it("a timer cancelled from outside never fires", function()
    local fired = false
    local t = event.timeout(0.01, function() fired = true end)
    t:cancel()
    t:cancel()   -- idempotent
    local done = {}
    event.timeout(0.02, function() event.wakeup(done) end)
    await(done)
    assert.is_false(fired)
  end)

  it("a timer callback runs in a coroutine and may sleep", function()
    local done = {}
    event.timeout(0, function()
      assert.is_true(event.sleep(0.001))
      event.wakeup(done, "slept")
    end)
    assert.equal("slept", event.wait(done, 5))
  end)

  it("rejects bad durations and callbacks", function()
    assert.has_error(function() event.timer(-1, print) end)
    assert.has_error(function() event.timer(0, print) end)
    assert.has_error(function() event.timeout(0 / 0, print) end)
    assert.has_error(function() event.timer(1, "nope") end,
      "bad argument #2 to 'timer' (function expected, got string)")
  end)

  it("reports the time left", function()
    local t = event.timeout(5, function() end)
    local left = t:remaining()
    assert.is_true(left > 4 and left <= 5)
    t:cancel()
    assert.is_nil(t:remaining())
  end)
end)

describe("event.wait / event.wakeup", function()
  it("passes values, including nils, to the waiter", function()
    local token = {}
    event.fork(function() event.wakeup(token, 1, nil, "three") end)
    local n = 0
    local a, b, c = (function(...) n = select("#", ...) return ... end)(event.wait(token, 5))
    assert.equal(3, n)
    assert.same({ 1, nil, "three" }, { a, b, c })
  end)

  it("returns true for a wakeup without values", function()
    event.fork(function() assert.is_true(event.wakeup("tok")) end)
    assert.is_true(event.wait("tok", 5))
  end)

  it("times out with nil, 'timeout' and forgets the waiter", function()
    local ok, err = event.wait("never", 0.01)
    assert.is_nil(ok)
    assert.equal("timeout", err)
    assert.is_false(event.wakeup("never"))
  end)

  it("wakeup of an unknown token returns false without error", function()
    assert.is_false(event.wakeup({}))
    assert.is_false(event.wakeup(nil))
  end)

  it("allows one waiter per token", function()
    local h = event.fork(function() return event.wait("dup", 5) end)
    event.sleep(0)
    assert.has_error(function() event.wait("dup") end,
      "bad argument #1 to 'wait' (token already has a waiter)")
    event.wakeup("dup", "first waiter")
    assert.same({ true, "first waiter" }, { h:join(5) })
  end)

  it("rejects nil and NaN tokens and bad timeouts", function()
    assert.has_error(function() event.wait(nil) end)
    assert.has_error(function() event.wait(0 / 0) end)
    assert.has_error(function() event.wait("t", -1) end)
  end)

  it("a second wakeup before the waiter runs returns false", function()
    local token = {}
    event.fork(function()
      assert.is_true(event.wakeup(token, "first"))
      assert.is_false(event.wakeup(token, "second"))
    end)
    assert.equal("first", event.wait(token, 5))
  end)
end)

describe("cancellation", function()
  it("makes the current wait return nil, 'cancelled'", function()
    local h = event.fork(function() return event.sleep(100) end)
    event.sleep(0)
    assert.is_true(h:cancel())
    assert.same({ true, nil, "cancelled", "cancelled" }, { h:join(5) })
  end)

  it("frees the token of a cancelled waiter", function()
    local h = event.fork(function() return event.wait("cancel-token") end)
    event.sleep(0)
    h:cancel()
    assert.same({ true, nil, "cancelled", "cancelled" }, { h:join(5) })
    assert.is_false(event.wakeup("cancel-token"))
  end)

  it("stops a coroutine that has not started yet", function()
    local ran = false
    local h = event.fork(function() ran = true end)
    h:cancel()
    assert.same({ false, "cancelled" }, { h:join(5) })
    event.sleep(0)
    assert.is_false(ran)
  end)

  it("works from inside: the next wait fails", function()
    local h
    h = event.fork(function()
      h:cancel()
      local a, b = event.sleep(1)
      return a, b, event.sleep(0)   -- delivered once only
    end)
    assert.same({ true, nil, "cancelled", true }, { h:join(5) })
  end)

  it("of a dead coroutine returns false", function()
    local h = event.fork(function() end)
    h:join()
    assert.is_false(h:cancel())
  end)

  it("cancels a join", function()
    local inner = event.fork(function() event.sleep(100) end)
    local outer = event.fork(function() return inner:join() end)
    event.sleep(0)
    outer:cancel()
    assert.same({ true, nil, "cancelled", "cancelled" }, { outer:join(5) })
    inner:cancel()
    inner:join(5)
  end)
end)

describe("event.tasks", function()
  it("lists live coroutines with what they wait on and a traceback", function()
    local h = event.fork(function() event.wait("listed-token", 10) end)
    h:set_name("lister")
    event.sleep(0)
    local found
    for _, t in ipairs(event.tasks()) do
      if t.handle == h then found = t end
    end
    assert.is_table(found)
    assert.equal("lister", found.name)
    assert.equal("waiting", found.state)
    assert.equal("wait", found.what)
    assert.equal("listed-token", found.on)
    assert.matches("event_spec.lua", found.traceback, 1, true)
    assert.matches("lister [waiting wait listed-token]", event.ps(), 1, true)
    event.wakeup("listed-token")
    h:join(5)
  end)

  it("names a coroutine by the function it runs", function()
    local h = event.fork(function() end)
    assert.matches("^coroutine #%d+ %(.*event_spec.lua:%d+%)$", h:name())
    assert.equal(h:name(), tostring(h))
  end)
end)

-- The loop's clock after Lua code blocked the loop (a blocking call, a
-- long computation): libev's cached time stays where the iteration began,
-- and a deadline or a timeout counted from it would end early by the time
-- lost. event.time() reads the real clock; only lower bounds are asserted.
describe("a stale loop clock", function()
  local function block(seconds)
    event.sleep(0)   -- a fresh iteration, then stall it
    os.execute("sleep " .. seconds)
  end

  it("event.now() catches up after the loop was blocked", function()
    event.sleep(0)
    local t0 = event.now()
    os.execute("sleep 1.2")
    assert.is_true(event.now() - t0 >= 1, "now moved " .. event.now() - t0)
  end)

  it("event.now() stays the same within a short iteration", function()
    event.sleep(0)
    local a = event.now()
    local b = event.now()
    assert.is_true(b - a < 0.05)
  end)

  it("event.wait counts its timeout from the real time", function()
    block(1.5)
    local t0 = event.time()
    local ok, err = event.wait({}, 1)
    assert.is_nil(ok)
    assert.equal("timeout", err)
    assert.is_true(event.time() - t0 >= 0.5, "waited " .. event.time() - t0)
  end)

  it("event.sleep and event.timeout count from the real time", function()
    block(1.5)
    local t0 = event.time()
    local fired
    event.timeout(0.8, function() fired = event.time() end)
    assert.is_true(event.sleep(1))
    assert.is_true(event.time() - t0 >= 0.5, "slept " .. event.time() - t0)
    helper.eventually(function() return fired end, "the timeout")
    assert.is_true(fired - t0 >= 0.4, "fired after " .. fired - t0)
  end)

  it("a join's timeout counts from the real time", function()
    local h = event.fork(function() event.wait("never woken") end)
    block(1.5)
    local t0 = event.time()
    assert.same({ nil, "timeout", "timeout" }, { h:join(1) })
    assert.is_true(event.time() - t0 >= 0.5, "joined " .. event.time() - t0)
    h:cancel()
  end)

  it("helper.await_output waits its whole deadline", function()
    local path = helper.tmpdir() .. "/log"
    helper.write_file(path, "nothing yet\n")
    block(1.5)
    local t0 = event.time()
    local ok, err = pcall(helper.await_output, path, "never there", 1)
    assert.is_false(ok)
    assert.matches("no \"never there\"", err)
    assert.is_true(event.time() - t0 >= 0.5, "gave up after " .. event.time() - t0)
  end)

  it("core.iteration() numbers the loop iterations", function()
    event.sleep(0)   -- running from the ready queue: the next turn polls
    local i = core.iteration()
    assert.equal(i, core.iteration())
    event.sleep(0)
    assert.is_true(core.iteration() > i)
  end)
end)

describe("core.c_heap", function()
  it("reports the bytes malloc has handed out, growing with allocations", function()
    collectgarbage()
    collectgarbage()   -- objects with finalizers are freed on the second cycle
    -- No collection while measuring: it would free other tests' garbage.
    collectgarbage("stop")
    local before = core.c_heap()
    assert.equal("integer", math.type(before))
    local kept = {}
    for i = 1, 1000 do kept[i] = ("x"):rep(1000) .. i end  -- Lua allocates with malloc
    local after = core.c_heap()
    collectgarbage("restart")
    -- The sanitizer build's allocator is not glibc's (mallinfo2 says 0).
    if helper.asan then
      assert.is_true(core.c_heap() >= 0)
    else
      assert.is_true(after - before >= 1000 * 1000)
    end
    assert.equal(1000, #kept)
  end)
end)

describe("scale", function()
  it("runs 100,000 concurrent sleeping coroutines", function()
    local N = 100000
    local woke, done = 0, {}
    event.sleep(0)   -- let coroutines of earlier tests end
    local base = event.stats().tasks
    for i = 1, N do
      event.fork(function()
        event.sleep((i % 100) / 1000)
        woke = woke + 1
        if woke == N then event.wakeup(done) end
      end)
    end
    event.sleep(0)
    assert.equal(base + N, event.stats().tasks)
    assert.is_true(event.stats().timers >= N - N / 100)  -- i % 100 == 0 yields
    await(done)
    assert.equal(N, woke)
    event.sleep(0)
    assert.equal(base, event.stats().tasks)
  end)

  it("starts and cancels 1,000,000 timers", function()
    local base = event.stats().timers
    local fired = 0
    local function cb() fired = fired + 1 end
    for _ = 1, 1000000 do
      local t = event.timeout(0.001, cb)
      t:cancel()
    end
    assert.equal(base, event.stats().timers)
    local done = {}
    event.timeout(0.01, function() event.wakeup(done) end)
    await(done)
    assert.equal(0, fired)
  end)

  it("frees what cancelled timers and finished coroutines held", function()
    -- In a process of its own, so no other test's coroutines or garbage
    -- move the figures.
    local out, err, rc = helper.run_script([[
      local event = require "event"
      local function churn()
        for _ = 1, 20000 do
          event.timeout(1, function() end):cancel()
          event.fork(function() event.sleep(0) end)
        end
        event.sleep(0)
        event.sleep(0)
      end
      churn()   -- warm up pools and tables
      collectgarbage()
      collectgarbage()
      local before = collectgarbage("count")
      local tasks, timers = event.stats().tasks, event.stats().timers
      churn()
      collectgarbage()
      collectgarbage()
      print(event.stats().tasks - tasks, event.stats().timers - timers,
            math.floor(collectgarbage("count") - before))
    ]])
    assert.equal(0, rc, err)
    local tasks, timers, grown = out:match("^(%-?%d+)\t(%-?%d+)\t(%-?%d+)\n$")
    assert.equal("0", tasks)
    assert.equal("0", timers)
    assert.is_true(tonumber(grown) < 256, "memory grew by " .. grown .. " KiB")
    helper.cleanup()
  end)
end)
