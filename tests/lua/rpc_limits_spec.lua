-- tests/lua/rpc_limits_spec.lua - the limits that keep one MessagePack-RPC
-- connection from hurting the whole process, against a Python peer
-- (tests/peers/rpc_peer.py): sparse map keys (hash flooding), requests
-- served at once (max_inflight), and replies a peer does not read
-- (backpressure).
local event = require "event"
local rpc = require "evlua.rpc"
local helper = require "helper"

-- Start tests/peers/rpc_peer.py MODE PORT ARGS... in the background;
-- returns the path of its output.
local function python_peer(port, mode, ...)
  local out = helper.tmpdir() .. "/out"
  local args = table.concat({ ... }, " ")
  os.execute(("(timeout 60 /usr/bin/python3 tests/peers/rpc_peer.py %s %d %s >%s 2>&1;"
              .. " echo done >>%s) &"):format(mode, port, args, out, out))
  helper.await_output(out, "local %d+\n")
  return out
end

-- A class that records its channels (the server's side of each peer) and
-- the reason each closed.
local function recording_class()
  local class = rpc.channel:inherit()
  class.conns, class.reasons = {}, {}
  function class:init() class.conns[#class.conns + 1] = self end
  function class:disconnect(reason) class.reasons[#class.reasons + 1] = reason end
  return class
end

local function count_keys(_, maps)
  local n = 0
  for _, t in ipairs(maps) do
    for _ in pairs(t) do n = n + 1 end
  end
  return n
end

describe("rpc sparse map keys", function()
  after_each(helper.cleanup)

  local function serve(opts)
    local class = recording_class()
    local listener = assert(rpc.listen("127.0.0.1", 0, {
      count = count_keys,
      add = function(_, a, b) return a + b end,
    }, class, opts))
    return listener, class
  end

  it("serves a map with max_sparse_keys sparse keys, closes on one more", function()
    local log = helper.tmpdir() .. "/log"
    assert(event.log_file(log))
    local listener, class = serve({ max_sparse_keys = 10 })
    local out = python_peer(listener:port(), "sparse", 1, 10)
    helper.await_output(out, "done\n")
    local text = helper.slurp(out)
    assert.matches("reply 1 10\nreply 2 3\n", text)
    helper.eventually(function() return #class.reasons == 1 end, "the peer's close")
    assert.equal("eof", class.reasons[1])   -- the peer closed, not bad input
    out = python_peer(listener:port(), "sparse", 1, 11)
    helper.await_output(out, "done\n")
    text = helper.slurp(out)
    assert.not_matches("reply", text)   -- the message cost the connection
    helper.eventually(function() return #class.reasons == 2 end, "the close")
    local reason = "bad message: a map has more than 10 sparse keys (max_sparse_keys)"
    assert.equal(reason, class.reasons[2])
    event.log_file(nil)
    assert.matches(helper.escape(reason), helper.slurp(log))
    listener:close()
  end)

  it("the default max_sparse_keys (256) and a colliding map past it", function()
    local listener, class = serve()
    local out = python_peer(listener:port(), "sparse", 1, 256)
    helper.await_output(out, "done\n")
    assert.matches("reply 1 256\n", helper.slurp(out))
    out = python_peer(listener:port(), "sparse", 1, 257)
    helper.await_output(out, "done\n")
    assert.not_matches("reply", helper.slurp(out))
    helper.eventually(function() return #class.reasons == 2 end, "the close")
    assert.matches("more than 256 sparse keys", class.reasons[2])
    listener:close()
  end)

  it("counts the sparse keys of a whole message against max_sparse_total", function()
    local listener, class = serve({ max_sparse_keys = 10, max_sparse_total = 30 })
    local out = python_peer(listener:port(), "sparse", 3, 10)   -- 30: at it
    helper.await_output(out, "done\n")
    assert.matches("reply 1 30\nreply 2 3\n", helper.slurp(out))
    out = python_peer(listener:port(), "sparse", 4, 8)          -- 32: past it
    helper.await_output(out, "done\n")
    assert.not_matches("reply", helper.slurp(out))
    helper.eventually(function() return #class.reasons == 2 end, "the close")
    assert.equal("bad message: more than 30 sparse map keys in a message "
                 .. "(max_sparse_total)", class.reasons[2])
    listener:close()
  end)

  it("applies rpc.connect's limits to the responses it reads", function()
    local listener = assert(rpc.listen("127.0.0.1", 0, {
      sparse = function(_, n)
        local t = {}
        for i = 1, n do t[10 ^ 9 // 1 + i] = true end
        return t
      end,
    }))
    local ch = assert(rpc.connect("127.0.0.1", listener:port(),
                                  { max_sparse_keys = 2 }))
    local t = assert(ch:call("sparse", 2))
    assert.is_true(t[10 ^ 9 // 1 + 2])
    assert.same({ nil, "closed", "closed" }, { ch:call("sparse", 3) })
    helper.eventually(function() return ch:closed() end, "the close")
    assert.equal("bad message: a map has more than 2 sparse keys (max_sparse_keys)",
                 ch:closed())
    listener:close()
  end)

  it("checks the options", function()
    for _, bad in ipairs({ -1, 1.5, "10" }) do
      assert.has_error(function()
        rpc.listen("127.0.0.1", 0, {}, nil, { max_sparse_keys = bad })
      end, "bad argument #5 to 'listen' (max_sparse_keys must be a "
           .. "non-negative integer)")
    end
    assert.has_error(function()
      rpc.client("127.0.0.1", 1, { max_sparse_total = -1 })
    end, "bad argument #3 to 'client' (max_sparse_total must be a "
         .. "non-negative integer)")
    for _, bad in ipairs({ 0, 2.5 }) do
      assert.has_error(function()
        rpc.connect("127.0.0.1", 1, { max_inflight = bad })
      end, "bad argument #3 to 'connect' (max_inflight must be an integer "
           .. "from 1 up)")
    end
  end)
end)

-- Handlers that wait until the test lets them go, counting how many run
-- at once. -> handlers, state (running, peak, started, release(n))
local function gated_handlers()
  local state = { running = 0, peak = 0, started = 0, tokens = {} }
  local function gate()
    state.running = state.running + 1
    state.started = state.started + 1
    state.peak = math.max(state.peak, state.running)
    local token = {}
    state.tokens[#state.tokens + 1] = token
    event.wait(token, 30)
    state.running = state.running - 1
  end
  -- let the n oldest waiting handlers go
  function state.release(n)
    for _ = 1, n do
      local token = table.remove(state.tokens, 1)
      if token then event.wakeup(token) end
    end
  end
  return { wait = gate, nwait = gate }, state
end

describe("rpc max_inflight", function()
  after_each(helper.cleanup)

  it("serves max_inflight requests of one connection at once", function()
    local handlers, state = gated_handlers()
    local class = recording_class()
    local listener = assert(rpc.listen("127.0.0.1", 0, handlers, class,
                                       { max_inflight = 8 }))
    local out = python_peer(listener:port(), "requests", 8, "wait")
    helper.eventually(function() return state.running == 8 end, "8 handlers")
    assert.equal(8, listener:stats().serving)
    state.release(8)
    helper.await_output(out, "replies 8\n")
    assert.equal(8, state.peak)
    listener:close()
  end)

  it("leaves requests past max_inflight unread until a handler finishes", function()
    local handlers, state = gated_handlers()
    local class = recording_class()
    local listener = assert(rpc.listen("127.0.0.1", 0, handlers, class,
                                       { max_inflight = 8 }))
    local out = python_peer(listener:port(), "requests", 20, "wait")
    helper.eventually(function() return state.running == 8 end, "8 handlers")
    local ch = class.conns[1]
    -- the other 12 arrived and wait in the input, not in handlers
    helper.eventually(function() return ch:stats().buffered_in > 0 end,
                      "the rest of the requests")
    local stats = ch:stats()
    assert.equal(8, stats.serving)
    assert.equal(8, state.started)
    state.release(1)   -- one finishes: one more is read and starts
    helper.eventually(function() return state.started == 9 end, "the 9th")
    assert.equal(8, state.running)
    assert.equal(1, ch:stats().served)
    for _ = 1, 20 do   -- the rest, a few at a time
      state.release(3)
      event.sleep(0.01)
    end
    helper.await_output(out, "replies 20\n")
    assert.equal(20, state.started)   -- none was refused
    assert.equal(8, state.peak)
    listener:close()
  end)

  it("counts the notifications whose handlers run", function()
    local handlers, state = gated_handlers()
    local class = recording_class()
    local listener = assert(rpc.listen("127.0.0.1", 0, handlers, class,
                                       { max_inflight = 4 }))
    python_peer(listener:port(), "notify", 10, "nwait")
    helper.eventually(function() return state.running == 4 end, "4 handlers")
    local ch = class.conns[1]
    helper.eventually(function() return ch:stats().buffered_in > 0 end,
                      "the other notifications")
    assert.equal(4, state.started)
    while state.started < 10 do
      state.release(1)
      event.sleep(0.005)
    end
    state.release(10)
    helper.eventually(function() return state.running == 0 end, "the end")
    assert.equal(4, state.peak)
    listener:close()
  end)

  it("still reads responses while paused: a handler may wait for one", function()
    -- the server's handlers call back into the client, which answers; at
    -- max_inflight, the callbacks' responses must still come through (as
    -- long as no request is ahead of them: see docs/rpc.md)
    local listener = assert(rpc.listen("127.0.0.1", 0, {
      ask = function(ch, i) return ch:call("back", i) end,
    }, nil, { max_inflight = 2 }))
    local Client = rpc.channel:inherit()
    Client.handlers = { back = function(_, i)
      event.sleep(0.001)
      return i * 2
    end }
    local ch = assert(rpc.connect("127.0.0.1", listener:port(), { class = Client }))
    local results, left, done = {}, 2, {}
    for i = 1, 2 do
      event.fork(function()
        results[i] = ch:call("ask", i)
        left = left - 1
        if left == 0 then event.wakeup(done) end
      end)
    end
    assert.is_true(event.wait(done, 10))
    for i = 1, 2 do assert.equal(i * 2, results[i]) end
    ch:close()
    listener:close()
  end)
end)

describe("rpc backpressure", function()
  after_each(helper.cleanup)

  it("stops reading a peer that does not read its replies, and resumes", function()
    local class = recording_class()
    local listener = assert(rpc.listen("127.0.0.1", 0, {
      echo = function(_, s) return s end,
    }, class))
    local n, size = 4000, 10000   -- 40 MB of requests, as many of replies
    local go = helper.tmpdir() .. "/go"
    collectgarbage()
    local heap0 = collectgarbage("count")
    local out = python_peer(listener:port(), "noread", n, size, go)
    local sent = tonumber(helper.await_output(out, "stalled (%d+)\n"))
    local ch = class.conns[1]
    local stats = ch:stats()
    local heap = collectgarbage("count") - heap0
    print(("\n  peer stalled after %.1f MB; the server queued %.1f MB of "
           .. "replies, %.1f MB of input, Lua heap +%.1f MB"):format(
           sent / 1e6, stats.buffered_out / 1e6, stats.buffered_in / 1e6,
           heap / 1024))
    -- Without backpressure the server reads everything the peer sends
    -- and queues a reply for each: the peer never stalls, 40 MB queue.
    -- With it: high_water (1 MiB) and the replies of the requests already
    -- taken (at most max_inflight of 10 KB) at most; 8 MiB is generous.
    assert.is_true(sent < n * size / 2, sent)
    assert.is_true(stats.buffered_out < 8 * 1024 * 1024, stats.buffered_out)
    assert.is_true(stats.serving <= rpc.channel.max_inflight, stats.serving)
    assert.is_true(heap < 32 * 1024, heap)   -- KiB
    helper.write_file(go, "")
    helper.await_output(out, "replies (%d+)\n")   -- then it all goes through
    assert.matches("replies " .. n .. "\n", helper.slurp(out))
    for _, reason in ipairs(class.reasons) do assert.equal("eof", reason) end
    listener:close()
  end)

  it("still drops a peer that stops reading, at the send timeout", function()
    local class = recording_class()
    class.send_timeout = 0.5
    local listener = assert(rpc.listen("127.0.0.1", 0, {
      echo = function(_, s) return s end,
    }, class))
    local go = helper.tmpdir() .. "/never"
    python_peer(listener:port(), "noread", 4000, 10000, go)
    helper.eventually(function() return #class.reasons == 1 end, "the drop")
    assert.equal("send timeout", class.reasons[1])
    listener:close()
  end)
end)

describe("rpc max_connections", function()
  after_each(helper.cleanup)

  it("serves max_connections at once and closes the ones past it", function()
    local log = helper.tmpdir() .. "/log"
    assert(event.log_file(log))
    local listener = assert(rpc.listen("127.0.0.1", 0, {
      add = function(_, a, b) return a + b end,
    }, nil, { max_connections = 2 }))
    local port = listener:port()
    local a = assert(rpc.connect("127.0.0.1", port))
    local b = assert(rpc.connect("127.0.0.1", port))
    assert.equal(3, a:call("add", 1, 2))   -- at the limit: both served
    assert.equal(5, b:call("add", 2, 3))
    local c = assert(rpc.connect("127.0.0.1", port))   -- the kernel accepts it
    assert.same({ nil, "closed", "closed" }, { c:call("add", 1, 1) })
    assert.same({ connections = 2, serving = 0, refused = 1 }, listener:stats())
    a:close()
    helper.eventually(function() return listener:stats().connections == 1 end,
                      "the close")
    local d = assert(rpc.connect("127.0.0.1", port))   -- room again
    assert.equal(7, d:call("add", 3, 4))
    event.log_file(nil)
    assert.matches("rpc: refusing channel 127%.0%.0%.1:%d+: max_connections %(2%) "
                   .. "reached, 1 refused", helper.slurp(log))
    b:close()
    d:close()
    listener:close()
    assert.has_error(function()
      rpc.listen("127.0.0.1", 0, {}, nil, { max_connections = 0 })
    end, "bad argument #5 to 'listen' (max_connections must be an integer from 1 up)")
  end)
end)
