-- tests/lua/rpc_spec.lua - MessagePack-RPC: calls, notifications, errors,
-- concurrency, failures, limits, and interop with Neovim and pynvim.
local event = require "event"
local rpc = require "evlua.rpc"
local helper = require "helper"

local handlers = {
  add = function(_, a, b) return a + b end,
  echo = function(_, ...) return ... end,
  count = function(_, ...) return select("#", ...) end,
  none = function() end,
  boom = function() error("kaboom", 0) end,
  slow = function(_, seconds, value)
    event.sleep(seconds)
    return value
  end,
}

local function server(h, class)
  local listener = assert(rpc.listen("127.0.0.1", 0, h or handlers, class))
  return listener, listener:port()
end

describe("rpc", function()
  after_each(helper.cleanup)

  it("calls a handler and returns its result", function()
    local listener, port = server()
    local ch = assert(rpc.connect("127.0.0.1", port))
    assert.equal(5, ch:call("add", 2, 3))
    assert.equal(2.5, ch:call("add", 1, 1.5))
    ch:close()
    listener:close()
  end)

  it("round-trips nil, false, nested tables and binary strings exactly", function()
    local listener, port = server()
    local ch = assert(rpc.connect("127.0.0.1", port))
    local binary = ("\0\1\2\r\n\255"):rep(1000)
    local nested = { list = { 1, 2, { "x", false } }, map = { a = { b = { c = 1.5 } } } }
    assert.equal(binary, ch:call("echo", binary))
    assert.same(nested, ch:call("echo", nested))
    assert.is_false(ch:call("echo", false))
    local result, err = ch:call("echo", nil)
    assert.is_nil(result)
    assert.is_nil(err)
    -- every parameter arrives, trailing nils included
    assert.equal(4, ch:call("count", nil, false, nil, nil))
    ch:close()
    listener:close()
  end)

  it("returns several results as an array and none as nil", function()
    local listener, port = server()
    local ch = assert(rpc.connect("127.0.0.1", port))
    assert.same({ 1, nil, "three" }, ch:call("echo", 1, nil, "three"))
    assert.same({ nil, nil }, { ch:call("none") })
    ch:close()
    listener:close()
  end)

  it("turns a handler error into an error response; the channel goes on", function()
    local listener, port = server()
    local ch = assert(rpc.connect("127.0.0.1", port))
    assert.same({ nil, "kaboom", "remote" }, { ch:call("boom") })
    assert.same({ nil, "unknown method: nope", "remote" },
                { ch:call("nope") })
    assert.equal(3, ch:call("add", 1, 2))
    ch:close()
    listener:close()
  end)

  it("delivers notifications, which get no reply", function()
    local got = {}
    local listener, port = server({
      note = function(_, ...) got[#got + 1] = { ... } event.wakeup(got) end,
    })
    local ch = assert(rpc.connect("127.0.0.1", port))
    assert.is_true(ch:send("note", 1, "two"))
    assert.is_true(event.wait(got, 5))
    assert.same({ { 1, "two" } }, got)
    assert.equal(0, ch:pending())
    ch:close()
    listener:close()
  end)

  it("lets a handler wait and call another service", function()
    local backend, backend_port = server()
    local front, front_port = server({
      sum3 = function(_, a, b, c)
        local ch = assert(rpc.connect("127.0.0.1", backend_port))
        local ab = ch:call("add", a, b)
        event.sleep(0.001)
        local abc = ch:call("add", ab, c)
        ch:close()
        return abc
      end,
    })
    local ch = assert(rpc.connect("127.0.0.1", front_port))
    assert.equal(6, ch:call("sum3", 1, 2, 3))
    ch:close()
    front:close()
    backend:close()
  end)

  it("answers 10,000 concurrent calls from 1,000 coroutines on one channel", function()
    local listener, port = server()
    local ch = assert(rpc.connect("127.0.0.1", port))
    local wrong, done = 0, 0
    local finished = {}
    local in_flight_seen
    for c = 1, 1000 do
      event.fork(function()
        for i = 1, 10 do
          local a, b = c * 100, i
          if ch:call("add", a, b) ~= a + b then wrong = wrong + 1 end
        end
        done = done + 1
        if done == 1000 then event.wakeup(finished) end
      end)
    end
    event.sleep(0)
    event.sleep(0)
    in_flight_seen = ch:pending()
    assert.is_true(event.wait(finished, 60))
    assert.equal(0, wrong)
    assert.is_true(in_flight_seen >= 500, "only " .. in_flight_seen .. " in flight")
    ch:close()
    listener:close()
  end)

  it("matches responses that come back out of order", function()
    local listener, port = server()
    local ch = assert(rpc.connect("127.0.0.1", port))
    local order = {}
    local function call(seconds, value)
      local result = ch:call("slow", seconds, value)
      order[#order + 1] = result
    end
    local a, b = event.fork(call, 0.05, "slow"), event.fork(call, 0, "fast")
    a:join(5)
    b:join(5)
    assert.same({ "fast", "slow" }, order)
    ch:close()
    listener:close()
  end)

  it("times a call out while other calls on the channel succeed", function()
    local listener, port = server()
    local ch = assert(rpc.connect("127.0.0.1", port))
    local slow = event.fork(function() return ch:timed_call(0.05, "slow", 5, "late") end)
    for i = 1, 20 do assert.equal(i + 1, ch:call("add", i, 1)) end
    assert.same({ true, nil, "timeout", "timeout" }, { slow:join(5) })
    ch.call_timeout = 0.02
    assert.same({ nil, "timeout", "timeout" }, { ch:call("slow", 5, "late") })
    ch.call_timeout = 5
    assert.equal(3, ch:call("add", 1, 2))
    ch:close()
    listener:close()
  end)


  it("times calls out at call_timeout each from its own start, on one channel timer", function()
    local listener, port = server()
    local ch = assert(rpc.connect("127.0.0.1", port, { call_timeout = 0.1 }))
    local function slow_call()
      local started = event.now()
      local result, err = ch:call("slow", 5, "late")
      return result, err, event.now() - started
    end
    local first = event.fork(slow_call)
    event.sleep(0.05)   -- the second call's deadline is 0.05 s after the first's
    local second = event.fork(slow_call)
    assert.equal(3, ch:call("add", 1, 2))
    for _, task in ipairs({ first, second }) do
      local ok, result, err, elapsed = task:join(5)
      assert.is_true(ok)
      assert.same({ nil, "timeout" }, { result, err })
      assert.is_true(elapsed >= 0.1 and elapsed < 4, "timed out after " .. elapsed)
    end
    assert.equal(0, ch:pending())
    assert.equal(5, ch:call("add", 2, 3))   -- the channel goes on
    assert.equal(2, ch:stats().timeouts)
    ch:close()
    listener:close()
  end)

  it("cancels a waiting call; its late response reaches no later call", function()
    local listener, port = server()
    local ch = assert(rpc.connect("127.0.0.1", port))
    local waiting = event.fork(function() return ch:call("slow", 0.05, "late") end)
    repeat event.sleep(0) until ch:pending() == 1
    assert.is_true(waiting:cancel())
    assert.same({ true, nil, "cancelled", "cancelled" }, { waiting:join(5) })
    assert.equal(0, ch:pending())
    -- calls made while the cancelled one's response is on its way, and
    -- after it came, each get their own result
    assert.equal("first", ch:call("slow", 0.1, "first"))
    for i = 1, 20 do assert.equal(i, ch:call("echo", i)) end
    assert.equal(1, ch:stats().errors)
    ch:close()
    listener:close()
  end)

  it("calls from 20 callers whose requests fill the send queue", function()
    local listener, port = server()
    local ch = assert(rpc.connect("127.0.0.1", port))
    -- callers wait for the queue to drain before they wait for their
    -- responses; as the queue stays above low_water long after a request
    -- went out, a response may come before its caller is done waiting
    ch:set_limits({ high_water = 64 * 1024, low_water = 1 })
    local tasks = {}
    for t = 1, 20 do
      tasks[t] = event.fork(function()
        for i = 1, 3 do
          local big = ("%02d%d"):format(t, i):rep(64 * 1024)
          assert.equal(big, ch:call("echo", big))
        end
        return true
      end)
    end
    for t = 1, 20 do assert.same({ true, true }, { tasks[t]:join(20) }) end
    assert.equal(60, ch:stats().calls)
    assert.equal(0, ch:stats().errors)
    ch:close()
    listener:close()
  end)

  it("fails every pending call at once when the server dies", function()
    local pid, out = helper.spawn_script([[
      local event = require "event"
      local rpc = require "evlua.rpc"
      local l = assert(rpc.listen("127.0.0.1", 0, {
        hang = function() event.sleep(100) end,
        pid = function() return tonumber(io.open("/proc/self/stat"):read("a"):match("^%d+")) end,
      }))
      print("port " .. l:port())
      io.stdout:flush()
    ]])
    local port = tonumber(helper.await_output(out, "port (%d+)"))
    local ch = assert(rpc.connect("127.0.0.1", port))
    local calls = {}
    for i = 1, 5 do calls[i] = event.fork(function() return ch:call("hang") end) end
    event.sleep(0)
    assert.equal(5, ch:pending())
    local t0 = event.time()
    helper.kill(pid, "KILL")
    for i = 1, 5 do
      assert.same({ true, nil, "closed", "closed" }, { calls[i]:join(10) })
    end
    assert.is_true(event.time() - t0 < 5)
    assert.same({ nil, "closed", "closed" }, { ch:call("hang") })
  end)

  it("decodes a message split across many reads, and many in one read", function()
    local listener, port = server()
    local raw = assert(event.connect("127.0.0.1", port))
    local msgpack = rpc.msgpack
    local request = msgpack.encode({ 0, 7, "add", { 20, 22 } })
    for i = 1, #request do        -- one byte per segment (TCP_NODELAY)
      raw:write(request:sub(i, i))
      event.sleep(0.002)
    end
    local reply = raw:wait_read(#msgpack.encode({ 1, 7, msgpack.null, 42 }), 5)
    assert.same({ 1, 7, nil, 42 }, msgpack.decode(reply))
    -- ten requests in one write: ten responses
    local batch = {}
    for id = 1, 10 do batch[id] = msgpack.encode({ 0, id, "add", { id, 1 } }) end
    raw:write(table.concat(batch))
    local seen = {}
    local buffer = ""
    while #seen < 10 do
      buffer = buffer .. assert(raw:wait_read(nil, 5))
      local pos = 1
      while true do
        local msg, next_pos = msgpack.decode(buffer, pos)
        if not msg then break end
        seen[#seen + 1] = msg
        pos = next_pos
      end
      buffer = buffer:sub(pos)
    end
    table.sort(seen, function(a, b) return a[2] < b[2] end)
    for id = 1, 10 do assert.same({ 1, id, nil, id + 1 }, seen[id]) end
    raw:close()
    listener:close()
  end)

  it("closes only the channel that sends a malformed frame, and logs why", function()
    local log = helper.tmpdir() .. "/log"
    assert(event.log_file(log))
    local listener, port = server()
    local good = assert(rpc.connect("127.0.0.1", port))
    local bad = assert(event.connect("127.0.0.1", port))
    bad:write("\x94\x00\x01\xc1\x90")           -- 0xc1 is never valid
    assert.same({ nil, "closed", "closed" }, { bad:wait_read(1, 5) })
    local wrong = assert(event.connect("127.0.0.1", port))
    wrong:write(rpc.msgpack.encode({ 7, "not", "rpc" }))
    assert.same({ nil, "closed", "closed" }, { wrong:wait_read(1, 5) })
    assert.equal(3, good:call("add", 1, 2))
    event.log_file(nil)
    local text = helper.slurp(log)
    assert.matches("ERROR rpc: closing channel 127.0.0.1:%d+: bad message: invalid msgpack data\n", text)
    assert.matches("ERROR rpc: closing channel 127.0.0.1:%d+: bad message: invalid rpc message\n", text)
    good:close()
    listener:close()
  end)

  it("accepts a message of max_message bytes and closes on one byte more", function()
    local Limited = rpc.channel:inherit()
    Limited.max_message = 1000
    local listener, port = server(nil, Limited)
    local ch = assert(rpc.connect("127.0.0.1", port))
    -- [0, 0, "echo", ["xx..."]]: 1 + 1 + 1 + 5 + 1 + 3 header bytes
    local overhead = #rpc.msgpack.encode({ 0, 0, "echo", { ("x"):rep(900) } }) - 900
    local fits = ("x"):rep(1000 - overhead)
    assert.equal(fits, ch:call("echo", fits))
    assert.same({ nil, "closed", "closed" }, { ch:call("echo", fits .. "x") })
    listener:close()
  end)

  it("carries a 1 MiB argument and a 2 MB reply with the default limits", function()
    local listener, port = server({
      size = function(_, s) return #s end,
      make = function(_, n) return ("r"):rep(n) end,
      add = handlers.add,
    })
    local ch = assert(rpc.connect("127.0.0.1", port, { call_timeout = 20 }))
    assert.equal(1048576, ch:call("size", ("a"):rep(1048576)))
    assert.equal(("r"):rep(2000000), ch:call("make", 2000000))
    assert.equal(3, ch:call("add", 1, 2))   -- and the channel goes on
    ch:close()
    listener:close()
  end)

  it("takes messages of max_message bytes above the 1 MiB input default, both ways", function()
    local limit = 1536 * 1024
    local Big = rpc.channel:inherit()
    Big.max_message = limit
    local log = helper.tmpdir() .. "/log"
    assert(event.log_file(log))
    local listener, port = server({
      echo = handlers.echo,
      make = function(_, n) return ("r"):rep(n) end,
    }, Big)
    local ch = assert(rpc.connect("127.0.0.1", port, { class = Big, call_timeout = 20 }))
    -- request [0, 0, "echo", [s]] and response [1, 0, nil, s] share the overhead
    local overhead = #rpc.msgpack.encode({ 0, 0, "echo", { ("x"):rep(limit) } }) - limit
    local fits = ("x"):rep(limit - overhead)
    assert.equal(fits, ch:call("echo", fits))
    local reply_overhead = #rpc.msgpack.encode({ 1, 0, rpc.msgpack.null, ("x"):rep(limit) }) - limit
    assert.equal(limit - reply_overhead, #ch:call("make", limit - reply_overhead))
    -- a reply one byte too long closes the client's channel
    assert.same({ nil, "closed", "closed" },
                { ch:call("make", limit - reply_overhead + 1) })
    -- a request one byte too long closes the server's
    ch = assert(rpc.connect("127.0.0.1", port, { class = Big, call_timeout = 20 }))
    assert.same({ nil, "closed", "closed" }, { ch:call("echo", fits .. "x") })
    event.log_file(nil)
    local text = helper.slurp(log)
    local _, count = text:gsub("ERROR rpc: closing channel 127.0.0.1:%d+: bad message: message larger than "
                               .. limit .. " bytes\n", "")
    assert.equal(2, count)
    listener:close()
  end)

  it("closes at once on a header that announces more than max_message", function()
    local log = helper.tmpdir() .. "/log"
    assert(event.log_file(log))
    local listener, port = server()
    local headers = {
      "\x94\x00\x01\xa4echo\x91\xdb\x05\xf5\xe1\x00",   -- a 100 MB str
      "\x94\x00\x01\xa4echo\xdd\xff\xff\xff\xff",       -- 2^32-1 params
      "\x94\x00\x01\xa4echo\x91\xdf\x7f\xff\xff\xff",   -- a map of 2^31-1 pairs
      "\x94\x00\x01\xa4echo\x91\xc6\x01\x00\x00\x01",   -- bin, max_message + 1
    }
    for _, header in ipairs(headers) do
      local raw = assert(event.connect("127.0.0.1", port))
      raw:write(header)
      assert.same({ nil, "closed", "closed" }, { raw:wait_read(1, 5) })
    end
    -- exactly max_message announced: the connection waits for the bytes
    local raw = assert(event.connect("127.0.0.1", port))
    local max = rpc.channel.max_message
    local head = "\x94\x00\x01\xa4echo\x91\xc6" .. string.pack(">I4", max - 14)
    raw:write(head)
    assert.same({ nil, "timeout", "timeout" }, { raw:wait_read(1, 0.2) })
    raw:close()
    event.log_file(nil)
    local _, count = helper.slurp(log):gsub("rpc: closing channel [%d.:]+: bad message: message larger than", "")
    assert.equal(#headers, count)
    listener:close()
  end)

  it("closes a connection that stays idle past idle_timeout (listen and connect opts)", function()
    local listener = assert(rpc.listen("127.0.0.1", 0, handlers, nil, { idle_timeout = 0.05 }))
    local raw = assert(event.connect("127.0.0.1", listener:port()))
    raw:write("\x94\x00\x01")   -- half a request, then nothing
    assert.same({ nil, "closed", "closed" }, { raw:wait_read(1, 5) })
    local server2 = assert(rpc.listen("127.0.0.1", 0, handlers))
    local Watched = rpc.channel:inherit()
    local gone = {}
    function Watched:disconnect(reason) event.wakeup(gone, reason) end
    local ch = assert(rpc.connect("127.0.0.1", server2:port(),
                                  { class = Watched, idle_timeout = 0.05 }))
    assert.equal(3, ch:call("add", 1, 2))
    assert.same({ "timeout" }, { event.wait(gone, 5) })   -- the reason it woke with
    assert.has_error(function() rpc.connect("127.0.0.1", 1, { idle_timeout = "x" }) end,
      "bad argument #3 to 'connect' (idle_timeout must be a non-negative number)")
    assert.has_error(function() rpc.listen("127.0.0.1", 0, 42) end,
      "bad argument #3 to 'listen' (handler table expected, got number)")
    listener:close()
    server2:close()
  end)

  it("answers max_params parameters and refuses one more with an error response", function()
    local listener = assert(rpc.listen("127.0.0.1", 0, handlers, nil, { max_params = 10 }))
    local ch = assert(rpc.connect("127.0.0.1", listener:port()))
    local ten = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 }
    assert.equal(10, ch:call("count", table.unpack(ten)))
    assert.same({ nil, "too many parameters (11, max_params 10)",
                   "remote" },
                { ch:call("count", 0, table.unpack(ten)) })
    assert.equal(3, ch:call("add", 1, 2))         -- the channel goes on
    ch:close()
    listener:close()
    -- the default
    local port
    listener, port = server()
    ch = assert(rpc.connect("127.0.0.1", port))
    local many = {}
    for i = 1, rpc.channel.max_params do many[i] = i end
    assert.equal(4096, rpc.channel.max_params)
    assert.equal(#many, ch:call("count", table.unpack(many)))
    many[#many + 1] = 0
    assert.same({ nil, "too many parameters (4097, max_params 4096)",
                   "remote" },
                { ch:call("count", table.unpack(many)) })
    ch:close()
    listener:close()
  end)

  it("refuses 160,000 parameters without holding up another connection", function()
    local listener, port = server()
    local flood = assert(rpc.connect("127.0.0.1", port))
    local other = assert(rpc.connect("127.0.0.1", port))
    local many = {}
    for i = 1, 160000 do many[i] = i end
    local refused = event.fork(function()
      return flood:timed_call(20, "count", table.unpack(many))
    end)
    -- before the fix, decoding this message held the loop for ~40 s
    assert.equal(3, other:timed_call(20, "add", 1, 2))
    assert.same({ true, nil,
                   "too many parameters (160000, max_params 4096)",
                   "remote" },
                { refused:join(20) })
    flood:close()
    other:close()
    listener:close()
  end)

  it("serves max_params at its ceiling (100,000 parameters) and drops a notification past it", function()
    local got = {}
    local h = setmetatable({ note = function(_, ...) got[#got + 1] = select("#", ...) event.wakeup(got) end },
                           { __index = handlers })
    local listener = assert(rpc.listen("127.0.0.1", 0, h, nil, { max_params = 100000 }))
    local ch = assert(rpc.connect("127.0.0.1", listener:port(), { call_timeout = 20 }))
    local many = {}
    for i = 1, 100000 do many[i] = i end
    many[50000] = nil                               -- a nil in the middle travels too
    assert.equal(100000, ch:call("count", table.unpack(many, 1, 100000)))
    local echoed = ch:call("echo", table.unpack(many, 1, 100000))
    assert.equal(99999, echoed[99999])
    assert.is_nil(echoed[50000])
    many[100001] = 0
    assert.is_true(ch:send("note", table.unpack(many, 1, 100001)))  -- dropped, logged
    assert.is_true(ch:send("note", 1, 2))
    assert.is_true(event.wait(got, 10))
    assert.same({ 2 }, got)
    -- max_params beyond the ceiling is a programmer error
    assert.has_error(function() rpc.listen("127.0.0.1", 0, h, nil, { max_params = 100001 }) end,
      "bad argument #5 to 'listen' (max_params must be a number from 0 to 100000)")
    ch:close()
    listener:close()
  end)

  it("answers the valid requests before garbage, then closes and logs why", function()
    local log = helper.tmpdir() .. "/log"
    assert(event.log_file(log))
    local listener, port = server()
    local msgpack = rpc.msgpack
    local raw = assert(event.connect("127.0.0.1", port))
    -- a quick request, a slow one, then a byte that is never MessagePack
    raw:write(msgpack.encode({ 0, 1, "add", { 1, 2 } }) ..
              msgpack.encode({ 0, 2, "slow", { 0.05, "late" } }) .. "\xc1garbage")
    local want = msgpack.encode({ 1, 1, msgpack.null, 3 }) ..
                 msgpack.encode({ 1, 2, msgpack.null, "late" })
    assert.equal(want, raw:wait_read(#want, 5))
    assert.same({ nil, "closed", "closed" }, { raw:wait_read(1, 5) })
    -- a valid request, then a valid message that is not RPC
    raw = assert(event.connect("127.0.0.1", port))
    raw:write(msgpack.encode({ 0, 3, "add", { 2, 2 } }) .. msgpack.encode({ 9, 9 }))
    want = msgpack.encode({ 1, 3, msgpack.null, 4 })
    assert.equal(want, raw:wait_read(#want, 5))
    assert.same({ nil, "closed", "closed" }, { raw:wait_read(1, 5) })
    event.log_file(nil)
    local text = helper.slurp(log)
    assert.matches("ERROR rpc: closing channel 127.0.0.1:%d+: bad message: invalid msgpack data\n", text)
    assert.matches("ERROR rpc: closing channel 127.0.0.1:%d+: bad message: invalid rpc message\n", text)
    listener:close()
  end)

  it("fails a client's pending calls at once when the server's reply is garbage", function()
    local dir = helper.tmpdir()
    local log = dir .. "/log"
    assert(event.log_file(log))
    local fake = assert(event.listen("127.0.0.1", 0, function(_, c)
      c:wait_read(1, 5)
      c:write("\xc1")
    end))
    local ch = assert(rpc.connect("127.0.0.1", fake:port()))
    local other = event.fork(function() return ch:call("hang") end)
    assert.same({ nil, "closed", "closed" }, { ch:timed_call(5, "first") })
    assert.same({ true, nil, "closed", "closed" }, { other:join(5) })
    assert.same({ nil, "closed", "closed" },
                { ch:timed_call(5, "after") })   -- at once too
    helper.eventually(function() return ch:closed() end, "the close")
    assert.equal("bad message: invalid msgpack data", ch:closed())
    event.log_file(nil)
    assert.matches("rpc: closing channel 127.0.0.1:%d+: bad message: invalid msgpack data", helper.slurp(log))
    fake:close()
  end)

  it("answers with an error when a handler returns what msgpack cannot carry", function()
    local listener, port = server({ bad = function() return print end, add = handlers.add })
    local ch = assert(rpc.connect("127.0.0.1", port))
    local result, err = ch:call("bad")
    assert.is_nil(result)
    assert.matches("msgpack: cannot encode a function value$", err)
    assert.equal(3, ch:call("add", 1, 2))
    ch:close()
    listener:close()
  end)

  it("a subclass can be subclassed again and serve both ways", function()
    local Calling = rpc.channel:inherit()
    Calling.handlers = { ping = function() return "pong from client" end }
    local listener = assert(rpc.listen("127.0.0.1", 0, {
      call_back = function(ch) return ch:call("ping") end,
    }))
    local ch = assert(rpc.connect("127.0.0.1", listener:port(), { class = Calling }))
    assert.equal("pong from client", ch:call("call_back"))
    ch:close()
    listener:close()
  end)

  it("carries arrays and maps of 16 and of 65,536 entries and more, "
     .. "both ways", function()
    local listener, port = server()
    local ch = assert(rpc.connect("127.0.0.1", port))
    -- fixarray/fixmap up to 15, array16/map16 to 65,535, then 32-bit
    for _, n in ipairs({ 15, 16, 65535, 65536, 70000 }) do
      local list, map = {}, {}
      for i = 1, n do
        list[i] = i
        map["k" .. i] = i
      end
      local got = ch:call("echo", list)
      assert.equal(n, #got)
      assert.equal(n, got[n])
      assert.same(list, got)
      got = ch:call("echo", map)
      local count = 0
      for _ in pairs(got) do count = count + 1 end
      assert.equal(n, count)
      assert.same(map, got)
    end
    -- as many parameters (an array of the request) and results
    local many = {}
    for i = 1, 20 do many[i] = i end
    assert.equal(20, ch:call("count", table.unpack(many)))
    assert.same(many, ch:call("echo", table.unpack(many)))
    ch:close()
    listener:close()
  end)

  it("closes on every kind of frame that is msgpack but not rpc",
     function()
    local listener, port = server()
    local enc = rpc.msgpack.encode
    local frames = {
      enc(42),                               -- not an array
      enc({ "0", 1, "add", { 1, 2 } }),      -- kind not an integer
      enc({ 0, "1", "add", { 1, 2 } }),      -- id not an integer
      enc({ 0, 1, 7, { 1, 2 } }),            -- method not a string
      enc({ 0, 1, "add" }),                  -- request of 3
      enc({ 0, 1, "add", { 1, 2 }, 5 }),     -- request of 5
      enc({ 0, 1, "add", 5 }),               -- params not an array
      enc({ 1, "1", rpc.msgpack.null, 1 }),  -- response id not an integer
      enc({ 1, 1, rpc.msgpack.null }),       -- response of 3
      enc({ 2, 7, {} }),                     -- notification method
      enc({ 2, "add" }),                     -- notification of 2
      enc({ 2, "add", 5 }),                  -- notification params
      enc({ 3, 1, "add", {} }),              -- unknown kind
    }
    for i, frame in ipairs(frames) do
      local raw = assert(event.connect("127.0.0.1", port))
      assert.is_true(raw:write(frame))
      local data = raw:wait_read(1, 5)
      assert.is_nil(data, "frame " .. i .. " got an answer")
      raw:close()
    end
    -- a method name sent as bin is taken like a str
    local raw = assert(event.connect("127.0.0.1", port))
    assert.is_true(raw:write("\x94\x00\x07\xc4\x03add\x92\x01\x02"))
    local reply = raw:wait_read(5, 5)
    assert.same({ 1, 7, nil, 3 }, (rpc.msgpack.decode(reply)))
    raw:close()
    listener:close()
  end)

  it("rejects bad arguments", function()
    local listener, port = server()
    local ch = assert(rpc.connect("127.0.0.1", port))
    assert.has_error(function() ch:call(42) end)
    assert.has_error(function() ch:send(nil) end)
    assert.has_error(function() ch:call("echo", print) end, "msgpack: cannot encode a function value")
    assert.equal(1, ch:call("add", 0, 1))       -- still usable
    ch:close()
    listener:close()
  end)
end)

describe("rpc interop", function()
  after_each(helper.cleanup)

  it("pynvim's msgpack-rpc client calls an evlua server", function()
    local listener, port = server()
    local dir = helper.tmpdir()
    helper.write_file(dir .. "/client.py", [==[
import sys
from pynvim import msgpack_rpc
session = msgpack_rpc.tcp_session("127.0.0.1", int(sys.argv[1]))
session.error_wrapper = RuntimeError   # normally set by pynvim's Nvim class
print(session.request("add", 2, 3))
print(session.request("echo", [1, "two", {"k": True}], b"\x00\xff"))
try:
    session.request("boom")
except Exception as e:
    print("error:", e)
session.close()
]==])
    -- Python blocks in its own process; the loop keeps serving meanwhile.
    local out = dir .. "/out"
    os.execute(("(timeout 60 /usr/bin/python3 %s/client.py %d >%s 2>&1; echo done >>%s) &")
               :format(dir, port, out, out))
    local text = helper.await_output(out, "^(.*)done\n$")
    assert.equal("5\n[[1, 'two', {'k': True}], b'\\x00\\xff']\nerror: kaboom\n", text)
    listener:close()
  end)

  it("Neovim calls an evlua server with vim.rpcrequest", function()
    local listener, port = server()
    local dir = helper.tmpdir()
    helper.write_file(dir .. "/client.lua", ([[
      local ch = vim.fn.sockconnect("tcp", "127.0.0.1:%d", { rpc = true })
      local out = {}
      out[#out + 1] = vim.inspect(vim.rpcrequest(ch, "add", 40, 2))
      out[#out + 1] = vim.inspect(vim.rpcrequest(ch, "echo", { 1, "two", { k = true } }))
      local ok, err = pcall(vim.rpcrequest, ch, "boom")
      out[#out + 1] = tostring(ok) .. " " .. tostring(err):match("kaboom")
      vim.rpcnotify(ch, "none")
      local f = io.open("%s/result", "w")
      f:write(table.concat(out, "\n"), "\n")
      f:close()
    ]]):format(port, dir))
    local out = dir .. "/out"
    os.execute(("(timeout 60 nvim --headless --clean -c 'luafile %s/client.lua' -c 'qa!' >%s 2>&1; echo done >>%s) &")
               :format(dir, out, out))
    helper.await_output(out, "done\n$")
    assert.equal('42\n{ 1, "two", {\n    k = true\n  } }\nfalse kaboom\n',
                 helper.slurp(dir .. "/result"))
    listener:close()
  end)

  it("an evlua client calls Neovim's API", function()
    local port = helper.free_port()
    local p = io.popen(("timeout 60 nvim --headless --clean --listen 127.0.0.1:%d >/dev/null 2>&1 & echo $!")
                       :format(port))
    local pid = p:read("l")
    p:close()
    local ch
    for _ = 1, 500 do
      ch = rpc.connect("127.0.0.1", port)
      if ch then break end
      event.sleep(0.01)
    end
    assert.is_table(ch)
    assert.equal(3, ch:call("nvim_eval", "1 + 2"))
    assert.same({ 1, "a", { k = true } }, ch:call("nvim_eval", "[1, 'a', {'k': v:true}]"))
    assert.is_nil(ch:call("nvim_command", "let g:from_evlua = 'hello'"))
    assert.equal("hello", ch:call("nvim_get_var", "from_evlua"))
    local result, err = ch:call("nvim_eval", "NoSuchFunction()")
    assert.is_nil(result)
    assert.matches("E117", err[2])
    ch:send("nvim_command", "qa!")
    assert.same({ nil, "closed", "closed" }, { ch:wait_read(1, 10) })
    helper.kill(pid, "KILL")
  end)

  it("an evlua client calls a Python msgpack server", function()
    local dir = helper.tmpdir()
    helper.write_file(dir .. "/server.py", [==[
import msgpack, socket, sys
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(1)
print(srv.getsockname()[1], flush=True)
conn, _ = srv.accept()
unpacker = msgpack.Unpacker(raw=False)
while True:
    data = conn.recv(65536)
    if not data:
        break
    unpacker.feed(data)
    for kind, msgid, method, params in unpacker:
        if method == "mul":
            reply = [1, msgid, None, params[0] * params[1]]
        else:
            reply = [1, msgid, "no such method", None]
        conn.sendall(msgpack.packb(reply, use_bin_type=True))
]==])
    local out = dir .. "/out"
    os.execute(("timeout 60 /usr/bin/python3 %s/server.py >%s 2>&1 &"):format(dir, out))
    local port = tonumber(helper.await_output(out, "^(%d+)\n"))
    local ch = assert(rpc.connect("127.0.0.1", port))
    assert.equal(42, ch:call("mul", 6, 7))
    assert.equal(2.5, ch:call("mul", 5, 0.5))
    assert.same({ nil, "no such method", "remote" },
                { ch:call("div", 1, 2) })
    ch:close()
  end)
end)
