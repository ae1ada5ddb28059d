-- tests/lua/redis_spec.lua - evlua.redis against a real redis-server
-- (Debian's, started on a free port without persistence), plus a few
-- fake servers on channels for replies no real server sends.
local event = require "event"
local redis = require "evlua.redis"
local core = require "evlua.core"
local helper = require "helper"

local server   -- one redis-server for most tests

local function connect(opts)
  opts = opts or {}
  opts.port = opts.port or server.port
  return assert(redis.connect(opts))
end

-- A fake server on a free port (or port): on_data(bytes, ch) is called
-- for every chunk of bytes received and answers with ch:write. Returns
-- the listener.
local function fake_server(on_data, port)
  local class = require("evlua.channel"):inherit()
  function class:data() on_data(self:read(), self) end
  return assert(event.listen("127.0.0.1", port or 0, function() end, class))
end

setup(function() server = helper.redis_server() end)
teardown(function()
  if server then server.stop() end
  helper.cleanup()
end)

describe("redis replies", function()
  local r
  before_each(function()
    r = connect()
    assert.equal("OK", r:flushall())
  end)
  after_each(function() r:close() end)

  it("maps status, integer, bulk and nil replies", function()
    assert.equal("OK", r:set("k", "v"))
    assert.equal("PONG", r:ping())
    assert.equal("v", r:get("k"))
    assert.equal(1, r:incr("n"))
    assert.equal(-41, r:decrby("n", 42))
    assert.equal(math.tointeger(9007199254740993), r:incrby("big", 9007199254740993))
    assert.is_nil(r:get("missing"))
    assert.equal(0, select("#", r:get("missing")) - 1)   -- just nil
  end)

  it("maps arrays and nested arrays to tables, nil elements to false", function()
    r:rpush("l", "a", "b", "c")
    assert.same({ "a", "b", "c" }, r:lrange("l", 0, -1))
    assert.same({}, r:lrange("empty", 0, -1))
    r:set("x", "1")
    assert.same({ "1", false, false }, r:mget("x", "nope", "nope2"))
    local v = r:eval("return {1, {2, {3, {'four'}}}, 'x', {}}", 0)
    assert.same({ 1, { 2, { 3, { "four" } } }, "x", {} }, v)
    r:hset("h", "f1", "v1", "f2", "v2")
    local flat = r:hgetall("h")
    assert.equal(4, #flat)
    assert.same({ f1 = "v1", f2 = "v2" }, redis.to_map(flat))
  end)

  it("returns nil, err for an error reply and keeps the connection", function()
    local ok, err = r:call("NOSUCHCOMMAND", "x")
    assert.is_nil(ok)
    assert.matches("^ERR unknown command", err)
    r:set("s", "text")
    ok, err = r:incr("s")
    assert.is_nil(ok)
    assert.equal("ERR value is not an integer or out of range", err)
    assert.equal("text", r:get("s"))
    ok, err = r:call("SET")
    assert.is_nil(ok)
    assert.matches("wrong number of arguments", err)
  end)

  it("gives error replies inside arrays as error objects", function()
    local v = r:eval("return {1, redis.error_reply('ERR inner'), 'x'}", 0)
    assert.equal(1, v[1])
    assert.is_true(redis.is_error(v[2]))
    assert.equal("ERR inner", v[2].err)
    assert.equal("ERR inner", tostring(v[2]))
    assert.equal("x", v[3])
    assert.is_false(redis.is_error("ERR inner"))
  end)

  it("keeps binary values intact: \\0, \\r\\n and every byte", function()
    local bytes = {}
    for i = 0, 255 do bytes[#bytes + 1] = string.char(i) end
    local all = table.concat(bytes)
    local values = { "a\0b", "\r\n", "x\r\ny\r\n\r\n", "$3\r\nfoo\r\n", all,
                     "", "-ERR not an error", "+OK", ":1", "*1\r\n" }
    for i, v in ipairs(values) do
      assert.equal("OK", r:set("bin" .. i, v))
      assert.equal(v, r:get("bin" .. i))
    end
    -- binary keys and binary fields too
    assert.equal(1, r:hset("h\0\r\n", "f\0", all))
    assert.same({ "f\0", all }, r:hgetall("h\0\r\n"))
  end)

  it("sends numbers as their decimal text, floats with every digit", function()
    assert.equal("OK", r:set("f", 0.1))
    assert.equal("0.1", r:get("f"))
    assert.equal("OK", r:set("third", 1 / 3))
    assert.equal(1 / 3, tonumber(r:get("third")))
    assert.equal("OK", r:set("i", 12345678901234))
    assert.equal("12345678901234", r:get("i"))
    assert.equal("3.5", r:incrbyfloat("fl", 3.5))
  end)

  it("stores and reads back a 10 MiB value", function()
    local chunk = {}
    for i = 0, 255 do chunk[#chunk + 1] = string.char(i) end
    local big = table.concat(chunk):rep(10 * 4096)   -- 10 MiB, every byte
    assert.equal(10 * 1024 * 1024, #big)
    assert.equal("OK", r:set("big", big))
    assert.equal(#big, r:strlen("big"))
    local back = r:get("big")
    assert.equal(#big, #back)
    assert.is_true(back == big)
    assert.equal("PONG", r:ping())
  end)

  it("turns method names into commands, words split at '_'", function()
    assert.equal("OK", r:client_setname("evlua-test"))
    assert.equal("evlua-test", r:client_getname())
    assert.equal("evlua-test", r:call("CLIENT", "GETNAME"))
    assert.matches("name=evlua%-test", r:call("CLIENT", "LIST"))
    assert.is_table(r:config_get("maxmemory"))
    assert.equal(1, r:exists("nothing") + 1)
  end)

  it("fails with bad_url for a url it cannot read, from connect and subscriber", function()
    assert.same({ nil, "invalid redis url: http://127.0.0.1", "bad_url" },
                { redis.connect("http://127.0.0.1") })
    assert.same({ nil, "invalid redis url: redis://h:x", "bad_url" },
                { redis.connect({ url = "redis://h:x" }) })
    assert.same({ nil, "invalid redis url: nope", "bad_url" },
                { redis.subscriber("nope") })
  end)

  it("raises for programmer errors", function()
    assert.has_error(function() r:set("k", {}) end)
    assert.has_error(function() r:call() end)
    assert.has_error(function() r:multi() end)
    assert.has_error(function() r:exec() end)
    assert.has_error(function() r:pipeline("not a function") end)
    assert.has_error(function() redis.connect({ timeout = -1 }) end,
                     "bad argument #1 to 'connect' (timeout must be a positive number)")
    assert.has_error(function() redis.connect({ db = "one" }) end,
                     "bad argument #1 to 'connect' (db must be a non-negative integer)")
    assert.has_error(function() redis.connect(42) end,
                     "bad argument #1 to 'connect' (options table or url expected)")
    assert.has_error(function() redis.subscriber({ timeout = 0 }) end,
                     "bad argument #1 to 'subscriber' (timeout must be a positive number)")
    assert.has_error(function() r:timed_call(-1, "PING") end,
                     "bad argument #1 to 'timed_call' (non-negative number expected)")
    assert.has_error(function() r:call() end,
                     "bad argument #1 to 'call' (command name expected, got nil)")
    assert.has_error(function() redis.to_map("x") end,
                     "bad argument #1 to 'to_map' (table expected, got string)")
    local ok, perr = pcall(function() redis.connect(42) end)
    assert.is_false(ok)
    assert.matches("^[^:]*redis_spec.lua:%d+: bad argument", perr)  -- blames the caller
    local out, err, rc = helper.run_script(([[
      local redis = require "evlua.redis"
      local r = assert(redis.connect{ port = %d })
      local t = coroutine.create(function() return r:get("k") end)
      local ok, e = coroutine.resume(t)
      print(ok, e)
      r:close()
    ]]):format(server.port))
    assert.equal(0, rc, err)
    assert.matches("false\t.*must run in a coroutine", out)
  end)
end)

describe("redis concurrency", function()
  it("serves 1,000 coroutines issuing 100 commands each on one client", function()
    local r = connect()
    r:flushall()
    local tasks = {}
    for i = 1, 1000 do
      tasks[i] = event.fork(function()
        local key = "c:" .. i
        for j = 1, 50 do
          local value = tostring(i * 1000 + j)
          local ok, err = r:set(key, value)
          if ok ~= "OK" then return "set " .. tostring(err) end
          local got = r:get(key)
          if got ~= value then return ("get %s: %s ~= %s"):format(key, tostring(got), value) end
        end
        return "done"
      end)
    end
    local done = 0
    for i = 1, 1000 do
      local ok, result = tasks[i]:join()
      assert.is_true(ok)
      assert.equal("done", result)
      done = done + 1
    end
    assert.equal(1000, done)
    assert.equal(1000, r:dbsize())
    r:close()
  end)

  it("sends the commands of coroutines waiting at once in one write", function()
    local chunks, commands = 0, 0
    local listener = fake_server(function(bytes, ch)
      chunks = chunks + 1
      local _, n = bytes:gsub("PING", "")
      commands = commands + n
      ch:write(("+PONG\r\n"):rep(n))
    end)
    local r = assert(redis.connect{ port = listener:port() })
    local tasks = {}
    for i = 1, 100 do tasks[i] = event.fork(function() return r:ping() end) end
    for i = 1, 100 do
      local ok, reply = tasks[i]:join()
      assert.is_true(ok)
      assert.equal("PONG", reply)
    end
    assert.equal(100, commands)
    assert.equal(1, chunks)    -- one round trip for all hundred
    r:close()
    listener:close()
  end)

  it("matches replies in order when a waiter is cancelled", function()
    local r = connect()
    r:set("a", "1")
    r:set("b", "2")
    local t = event.fork(function() return r:timed_call(5, "BLPOP", "nolist", 0.3) end)
    event.sleep(0.05)
    local other = event.fork(function() return r:get("a") end)
    event.sleep(0.01)
    t:cancel()
    local ok, v, err = t:join()
    assert.is_true(ok)
    assert.is_nil(v)
    assert.equal("cancelled", err)
    -- the late BLPOP reply (nil) is dropped; GET gets its own reply
    local ok2, a = other:join()
    assert.is_true(ok2)
    assert.equal("1", a)
    assert.equal("2", r:get("b"))
    r:close()
  end)
end)

describe("redis pipelines and transactions", function()
  local r
  before_each(function()
    r = connect()
    r:flushall()
  end)
  after_each(function() r:close() end)

  it("runs a pipeline and returns every reply", function()
    local results = assert(r:pipeline(function(p)
      p:set("a", "1")
      p:incr("a")
      p:get("a")
      p:get("missing")
      p:call("NOSUCH")
      p:lrange("a", 0, 1)
      p:call("ECHO", "last")
    end))
    assert.equal(7, results.n)
    assert.equal("OK", results[1])
    assert.equal(2, results[2])
    assert.equal("2", results[3])
    assert.is_nil(results[4])
    assert.is_true(redis.is_error(results[5]))
    assert.matches("^ERR unknown command", results[5].err)
    assert.is_true(redis.is_error(results[6]))
    assert.matches("^WRONGTYPE", results[6].err)
    assert.equal("last", results[7])
    assert.same({ n = 0 }, r:pipeline(function() end))
  end)

  it("pipelines many commands", function()
    local results = assert(r:pipeline(function(p)
      for i = 1, 5000 do p:rpush("list", i) end
    end))
    assert.equal(5000, results.n)
    assert.equal(5000, results[5000])
    assert.equal(5000, r:llen("list"))
  end)

  it("runs MULTI/EXEC transactions", function()
    local results = assert(r:transaction(function(t)
      t:set("x", "10")
      t:incrby("x", 5)
      t:get("x")
    end))
    assert.same({ "OK", 15, "15" }, results)
    -- a command failing while it runs: its error in place, the rest done
    results = assert(r:transaction(function(t)
      t:set("y", "text")
      t:incr("y")
      t:set("z", "after")
    end))
    assert.equal("OK", results[1])
    assert.is_true(redis.is_error(results[2]))
    assert.equal("OK", results[3])
    assert.equal("after", r:get("z"))
    -- a command refused while queuing: nothing runs
    local ok, err = r:transaction(function(t)
      t:set("w", "1")
      t:call("NOSUCH")
    end)
    assert.is_nil(ok)
    assert.matches("^EXECABORT", err)
    assert.is_nil(r:get("w"))
  end)

  it("keeps transactions of concurrent coroutines apart", function()
    local tasks = {}
    for i = 1, 50 do
      tasks[i] = event.fork(function()
        return r:transaction(function(t)
          t:set("t" .. i, i)
          t:incr("t" .. i)
          t:get("t" .. i)
        end)
      end)
    end
    for i = 1, 50 do
      local ok, results = tasks[i]:join()
      assert.is_true(ok)
      assert.same({ "OK", i + 1, tostring(i + 1) }, results)
    end
  end)
end)

describe("redis pub/sub", function()
  local r
  before_each(function() r = connect() end)
  after_each(function() r:close() end)

  it("delivers messages to a subscriber, in order", function()
    local sub = assert(r:subscribe("news", "sport"))
    assert.equal(1, r:publish("news", "first"))
    assert.equal(1, r:publish("sport", "second\0\r\n"))
    assert.same({ "message", "news", "first" }, { sub:receive(5) })
    assert.same({ "message", "sport", "second\0\r\n" }, { sub:receive(5) })
    assert.same({ nil, "timeout", "timeout" }, { sub:receive(0.05) })
    assert.is_true(sub:unsubscribe("sport"))
    assert.equal(0, r:publish("sport", "lost"))
    assert.equal(1, r:publish("news", "third"))
    assert.same({ "message", "news", "third" }, { sub:receive(5) })
    assert.is_true(sub:ping())
    sub:close()
    assert.same({ nil, "closed", "closed" }, { sub:receive(0.05) })
  end)

  it("delivers pattern messages with their pattern", function()
    local sub = assert(redis.subscriber({ port = server.port }))
    assert.is_true(sub:psubscribe("ev.*"))
    assert.equal(1, r:publish("ev.one", "payload"))
    assert.same({ "pmessage", "ev.one", "payload", "ev.*" }, { sub:receive(5) })
    assert.is_true(sub:punsubscribe())
    assert.equal(0, r:publish("ev.two", "nobody"))
    sub:close()
  end)

  it("wakes a waiting receive and calls a listen callback", function()
    local sub = assert(r:subscribe("chat"))
    local got = {}
    local listener = event.fork(function()
      return sub:listen(function(_, _, message)
        got[#got + 1] = message
        return message ~= "stop"
      end)
    end)
    event.sleep(0)
    for _, m in ipairs({ "a", "b", "stop" }) do r:publish("chat", m) end
    local ok, result = listener:join(5)
    assert.is_true(ok)
    assert.is_true(result)
    assert.same({ "a", "b", "stop" }, got)
    sub:close()
  end)

  it("ends listen with nil, closed, closed when the subscriber closes", function()
    local sub = assert(r:subscribe("chat"))
    local listener = event.fork(function()
      return sub:listen(function() end)
    end)
    event.sleep(0)
    sub:close()
    assert.same({ true, nil, "closed", "closed" }, { listener:join(5) })
    assert.has_error(function() sub:listen("x") end,
                     "bad argument #1 to 'listen' (function expected, got string)")
    assert.has_error(function() sub:subscribe() end,
                     "bad argument #1 to 'subscribe' (channel name expected)")
    assert.has_error(function() sub:subscribe("a", 2) end,
                     "bad argument #2 to 'subscribe' (string expected, got number)")
  end)

  it("holds at most max_messages unread and loses none", function()
    local sub = assert(redis.subscriber({ port = server.port, max_messages = 5 }))
    assert.is_true(sub:subscribe("burst"))
    for i = 1, 50 do r:publish("burst", tostring(i)) end
    helper.eventually(function() return sub:queued() == 5 end, "5 queued messages")
    event.sleep(0.05)
    assert.equal(5, sub:queued())   -- no more taken off the connection
    for i = 1, 50 do
      local kind, _, message = sub:receive(5)
      assert.equal("message", kind)
      assert.equal(tostring(i), message)
    end
    sub:close()
  end)
end)

describe("redis AUTH and SELECT", function()
  local secured
  setup(function()
    secured = helper.redis_server({ args = { "--requirepass", "s3cret" } })
  end)
  teardown(function() secured.stop() end)

  it("authenticates with requirepass", function()
    local r = assert(redis.connect({ port = secured.port, password = "s3cret" }))
    assert.equal("OK", r:set("k", "v"))
    assert.equal("v", r:get("k"))
    r:close()
    local url = assert(redis.connect(("redis://:s3cret@127.0.0.1:%d/0"):format(secured.port)))
    assert.equal("v", url:get("k"))
    url:close()
    -- AUTH username password (Redis 6 ACLs; "default" is the requirepass user)
    local acl = assert(redis.connect(("redis://default:s3cret@127.0.0.1:%d"):format(secured.port)))
    assert.equal("default", acl:acl_whoami())
    acl:close()
    local opts = assert(redis.connect({ url = ("redis://127.0.0.1:%d"):format(secured.port),
                                        username = "default", password = "s3cret" }))
    assert.equal("v", opts:get("k"))
    opts:close()
  end)

  it("fails to connect with a wrong password, and without one commands fail", function()
    local r, err = redis.connect({ port = secured.port, password = "wrong" })
    assert.is_nil(r)
    assert.matches("^WRONGPASS", err)
    local anon = assert(redis.connect({ port = secured.port }))
    local ok, nerr = anon:get("k")
    assert.is_nil(ok)
    assert.matches("^NOAUTH", nerr)
    anon:close()
  end)

  it("selects a database on connect and with select()", function()
    local r0 = connect()
    local r5 = connect({ db = 5 })
    r0:flushall()
    r5:set("where", "five")
    assert.is_nil(r0:get("where"))
    assert.equal("five", r5:get("where"))
    assert.equal("OK", r0:select(5))
    assert.equal("five", r0:get("where"))
    local url = assert(redis.connect(("redis://127.0.0.1:%d/5"):format(server.port)))
    assert.equal("five", url:get("where"))
    r0:close(); r5:close(); url:close()
  end)
end)

describe("redis failures", function()
  it("fails pending commands when the server dies and reconnects after a restart", function()
    local srv = helper.redis_server({ args = { "--requirepass", "pw" } })
    local r = assert(redis.connect({ port = srv.port, password = "pw", db = 3,
                                     reconnect_delay = 0.01, max_reconnect_delay = 0.05 }))
    assert.equal("OK", r:set("before", "1"))
    -- commands in flight when the server goes away
    local waiting = {}
    for i = 1, 20 do
      waiting[i] = event.fork(function() return r:timed_call(10, "BLPOP", "q" .. i, 0) end)
    end
    event.sleep(0.05)
    srv.stop()
    for i = 1, 20 do
      local ok, v, err = waiting[i]:join()
      assert.is_true(ok)
      assert.is_nil(v)
      assert.equal("closed", err)
    end
    -- down: commands fail at once with the connect error
    local v, err = r:ping()
    assert.is_nil(v)
    assert.is_string(err)
    -- back on the same port: a later command reconnects, with AUTH and SELECT
    srv = helper.redis_server({ port = srv.port, args = { "--requirepass", "pw" } })
    local reply
    helper.eventually(function()
      reply = r:set("after", "2")
      return reply == "OK"
    end, "a command after the restart")
    assert.equal("2", r:get("after"))
    local check = assert(redis.connect({ port = srv.port, password = "pw", db = 3 }))
    assert.equal("2", check:get("after"))
    check:close()
    r:close()
    srv.stop()
  end)

  it("backs off between failed connection attempts", function()
    local r, err = redis.connect({ port = helper.free_port() })
    assert.is_nil(r)
    assert.is_string(err)
    -- a fake server that answers PING and closes on QUIT
    local function serve(bytes, ch)
      local _, pings = bytes:gsub("PING", "")
      ch:write(("+PONG\r\n"):rep(pings))
      if bytes:find("QUIT", 1, true) then
        ch:write("+OK\r\n")
        ch:close()
      end
    end
    local listener = fake_server(serve)
    local port = listener:port()
    local client = assert(redis.connect({ port = port, timeout = 0.5,
                                          reconnect_delay = 1.5,
                                          max_reconnect_delay = 1.5 }))
    assert.equal("PONG", client:ping())
    listener:close()
    assert.equal("OK", client:quit())
    helper.eventually(function() return not client:connected() end, "the close")
    local v1, e1 = client:ping()   -- tries to connect, refused
    assert.is_nil(v1)
    assert.is_string(e1)
    -- the server is back, but within the backoff delay nobody tries: a
    -- command whose timeout ends first waits that long (yields) and gets
    -- the last connect error
    listener = fake_server(serve, port)
    local t0 = event.time()
    local v2, e2 = client:ping()
    assert.is_nil(v2)
    assert.equal(e1, e2)
    assert.is_true(event.time() - t0 >= 0.4, "failed after " .. event.time() - t0)
    -- one with time enough waits out the backoff, then reconnects
    assert.equal("PONG", client:timed_call(10, "PING"))
    client:close()
    listener:close()
  end)

  it("lets another coroutine reconnect when the one reconnecting is cancelled", function()
    local srv = helper.redis_server()
    -- db 1: a new connection sends SELECT first and waits for its reply
    local opts = { port = srv.port, db = 1, timeout = 30 }
    local r = assert(redis.connect(opts))
    assert.equal("OK", r:set("k", "v"))
    local admin = assert(redis.connect({ port = srv.port }))
    assert.equal(1, admin:client_kill("TYPE", "normal", "SKIPME", "yes"))
    admin:close()
    helper.eventually(function() return not r:connected() end, "the kill")
    -- frozen, the server's kernel still accepts connections, but SELECT
    -- goes unanswered until it resumes
    os.execute("kill -STOP " .. srv.pid)
    finally(function() os.execute("kill -CONT " .. srv.pid) end)
    local function waits_to_connect(h)
      local state, what, on = h:status()
      return state == "waiting" and what == "redis" and on == "connect"
    end
    local connecter = event.fork(function() return r:get("k") end)
    helper.eventually(function() return waits_to_connect(connecter) end,
                      "the first coroutine to reconnect")
    local other = event.fork(function() return r:get("k") end)
    helper.eventually(function() return waits_to_connect(other) end,
                      "the second one to wait for it")
    connecter:cancel()
    assert.same({ true, nil, "cancelled", "cancelled" }, { connecter:join(10) })
    -- the other one connects again itself, and gets its reply once the
    -- server is back
    event.sleep(0.05)
    assert.equal("waiting", (other:status()))
    os.execute("kill -CONT " .. srv.pid)
    assert.same({ true, "v" }, { other:join(20) })
    assert.equal("v", r:get("k"))
    r:close()
    srv.stop()
  end)

  it("makes a retry loop without a sleep wait during an outage, not spin", function()
    local srv = helper.redis_server()
    local delay = 0.05
    local r = assert(redis.connect({ port = srv.port, reconnect_delay = delay,
                                     max_reconnect_delay = 0.2 }))
    assert.equal("PONG", r:ping())
    srv.stop()
    local calls, CAP = 0, 100000   -- the cap ends a spinning loop
    local t0 = event.time()
    local loop = event.fork(function()
      while calls < CAP do
        calls = calls + 1
        local v = r:ping()
        if v then return v end
      end
    end)
    -- the loop must let this coroutine run for the outage to end
    event.sleep(0.5)
    srv = helper.redis_server({ port = srv.port })
    assert.same({ true, "PONG" }, { loop:join(30) })
    -- every failed call but the first waited out a backoff of at least
    -- `delay` (real time) before it tried again
    local elapsed = event.time() - t0
    assert.is_true(calls <= 2 + elapsed / (delay * 0.8),
                   calls .. " calls in " .. elapsed .. " s")
    r:close()
    srv.stop()
  end)

  it("subscribes again after the server restarts", function()
    local srv = helper.redis_server()
    local opts = { port = srv.port, reconnect_delay = 0.01, max_reconnect_delay = 0.05 }
    local sub = assert(redis.subscriber(opts))
    assert.is_true(sub:subscribe("alerts"))
    assert.is_true(sub:psubscribe("log.*"))
    local waiting = event.fork(function() return sub:receive(10) end)
    event.sleep(0.02)
    srv.stop()
    local ok, kind, err = waiting:join()
    assert.is_true(ok)
    assert.is_nil(kind)
    assert.equal("closed", err)
    srv = helper.redis_server({ port = srv.port })
    local pub = assert(redis.connect(opts))
    -- receive reconnects and subscribes again; publish until it has
    local got = event.fork(function() return sub:receive(10) end)
    helper.eventually(function()
      return pub:publish("alerts", "back") == 1
    end, "the subscriber to come back")
    local ok2, k, channel, message = got:join()
    assert.is_true(ok2)
    assert.same({ "message", "alerts", "back" }, { k, channel, message })
    assert.equal(1, pub:publish("log.x", "p"))
    assert.same({ "pmessage", "log.x", "p", "log.*" }, { sub:receive(5) })
    sub:close()
    pub:close()
    srv.stop()
  end)

  it("times out commands with the client's timeout (one watchdog per connection)", function()
    local r = connect({ timeout = 0.2 })
    assert.equal("PONG", r:ping())
    local t0 = event.now()
    local first = event.fork(function() return r:blpop("never", 0) end)
    local behind = event.fork(function()
      event.sleep(0.05)
      return r:get("anything")
    end)
    local ok, v, err = first:join()
    assert.is_true(ok)
    assert.is_nil(v)
    assert.equal("timeout", err)
    assert.is_true(event.now() - t0 >= 0.2)
    local ok2, bv, berr = behind:join()
    assert.is_true(ok2)
    assert.is_nil(bv)
    assert.equal("timeout", berr)
    -- answered commands leave the watchdog quiet: a slow but answering
    -- series of commands, each within its timeout, all succeed
    for _ = 1, 3 do
      assert.equal("PONG", r:ping())
      event.sleep(0.1)
    end
    assert.equal("OK", r:set("k", "v"))
    r:close()
  end)

  it("times out a command and recovers on the next one", function()
    local r = connect({ timeout = 5 })
    local behind = event.fork(function()
      event.sleep(0.02)
      return r:get("anything")
    end)
    local v, err = r:timed_call(0.2, "BLPOP", "never", 0)
    assert.is_nil(v)
    assert.equal("timeout", err)
    local ok, bv, berr = behind:join()
    assert.is_true(ok)
    assert.is_nil(bv)
    assert.equal("timeout", berr)   -- it waited behind the blocked BLPOP
    assert.equal("PONG", r:ping())
    r:close()
  end)

  it("closes the connection on a malformed reply with a clear error", function()
    local replies = { "?what\r\n", "+PONG\r\n" }
    local n = 0
    local listener = fake_server(function(_, ch)
      n = n + 1
      ch:write(replies[math.min(n, 2)])
    end)
    local r = assert(redis.connect({ port = listener:port() }))
    local v, err = r:ping()
    assert.is_nil(v)
    assert.equal("protocol error: invalid reply type", err)
    assert.equal("PONG", r:ping())   -- a new connection
    r:close()
    listener:close()
  end)

  it("fails on a reply nobody asked for", function()
    local listener = fake_server(function(_, ch) ch:write("+PONG\r\n+EXTRA\r\n") end)
    local r = assert(redis.connect({ port = listener:port() }))
    assert.equal("PONG", r:ping())
    helper.eventually(function() return not r:connected() end, "the close")
    r:close()
    listener:close()
  end)

  it("enforces max_reply at the limit and one past", function()
    local r = connect({ max_reply = 1000 })
    -- "$992\r\n" + 992 bytes + "\r\n" = 1000 bytes
    r:set("fits", ("x"):rep(992))
    r:set("over", ("x"):rep(993))
    assert.equal(992, #r:get("fits"))
    local v, err = r:get("over")
    assert.is_nil(v)
    assert.equal("reply larger than 1000 bytes", err)
    assert.equal(992, #r:get("fits"))
    r:close()
  end)

  it("enforces max_elements and max_depth at the limit and one past", function()
    local r = connect({ max_elements = 10, max_depth = 3 })
    r:del("ten")
    for i = 1, 11 do r:rpush("ten", i) end
    assert.equal(10, #r:lrange("ten", 0, 9))
    local v, err = r:lrange("ten", 0, 10)
    assert.is_nil(v)
    assert.equal("protocol error: too many elements", err)
    assert.same({ { { 1 } } }, r:eval("return {{{1}}}", 0))
    v, err = r:eval("return {{{{1}}}}", 0)
    assert.is_nil(v)
    assert.equal("protocol error: nesting too deep", err)
    assert.equal("PONG", r:ping())
    r:close()
  end)

  it("closes the connection of a client nobody references", function()
    local r = connect()
    do
      local dropped = connect()
      assert.equal("OK", dropped:client_setname("dropped-client"))
    end
    assert.matches("name=dropped%-client", r:client_list())
    collectgarbage("collect")
    collectgarbage("collect")
    helper.eventually(function()
      return not r:client_list():find("name=dropped-client", 1, true)
    end, "the server to see the connection closed")
    r:close()
  end)

  it("fails waiting commands with 'closed' when the client is closed", function()
    local r = connect()
    local t = event.fork(function() return r:timed_call(5, "BLPOP", "nothing", 2) end)
    event.sleep(0.02)
    r:close()
    local ok, v, err = t:join()
    assert.is_true(ok)
    assert.is_nil(v)
    assert.equal("closed", err)
    assert.same({ nil, "closed", "closed" }, { r:ping() })
  end)
end)

describe("RESP codec", function()
  it("encodes commands as arrays of bulk strings", function()
    assert.equal("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\na\0b\r\n",
                 core.resp_command("SET", "k", "a\0b"))
    assert.equal("*2\r\n$4\r\nINCR\r\n$2\r\n42\r\n", core.resp_command("INCR", 42))
    -- floats: the shortest text that reads back as the same number
    assert.equal("*1\r\n$3\r\n0.1\r\n", core.resp_command(0.1))
    local third = core.resp_command(1 / 3):match("\r\n([^$*]-)\r\n$")
    assert.equal(1 / 3, tonumber(third))
    assert.equal("*1\r\n$3\r\ninf\r\n", core.resp_command(math.huge))
    assert.has_error(function() core.resp_command("SET", true) end)
    local big = ("b"):rep(100000)
    assert.equal("*2\r\n$4\r\nECHO\r\n$100000\r\n" .. big .. "\r\n",
                 core.resp_command("ECHO", big))
  end)
end)

describe("redis limits on replies that are still incomplete", function()
  after_each(helper.cleanup)

  it("fails a reply past max_reply before its end arrives", function()
    -- an array whose first two elements already exceed 1000 bytes; its
    -- third element never comes
    local listener = fake_server(function(_, ch)
      local bulk = "$600\r\n" .. ("x"):rep(600) .. "\r\n"
      ch:write("*3\r\n" .. bulk .. bulk)
    end)
    local r = assert(redis.connect({ port = listener:port(),
                                     max_reply = 1000, timeout = 30 }))
    local t0 = event.now()
    local v, err = r:ping()
    assert.is_nil(v)
    assert.equal("reply larger than 1000 bytes", err)
    assert.is_true(event.now() - t0 < 25, "it waited for the timeout")
    r:close()
    listener:close()
  end)

  it("waits for the rest of a reply within max_reply", function()
    local listener = fake_server(function(_, ch)
      event.fork(function()   -- in two parts, a loop turn apart
        ch:write("$10\r\n01234")
        event.sleep(0.05)
        ch:write("56789\r\n")
      end)
    end)
    local r = assert(redis.connect({ port = listener:port(),
                                     max_reply = 1000 }))
    assert.equal("0123456789", r:ping())
    r:close()
    listener:close()
  end)
end)
