-- tests/lua/mongo_spec.lua - evlua.mongo: the OP_MSG wire binding
-- (stream:write_mongo, stream:read_mongo) between two evlua channels, the
-- client against the Node.js MongoDB wire server of tests/peers/mongo (the
-- real peer: it runs the official drivers' conformance suite), and a few
-- servers written here for what no healthy server does (replies out of
-- order, too large, malformed, never, or a connection cut mid-request).
local event = require "event"
local core = require "evlua.core"
local Channel = require "evlua.channel"
local mongo = require "evlua.mongo"
local bson = require "evlua.bson"
local helper = require "helper"

local SERVER_JS = "tests/peers/mongo/server.js"

-- Start the Node server (args: a string of its options); waits until it
-- listens. Returns { port, pid, stop() }.
local function start_server(args, port)
  local dir = helper.tmpdir()
  local log = dir .. "/server.log"
  local p = io.popen(("exec node %s --port %d --no-stdin-watch %s >%s 2>&1 & echo $!")
                     :format(SERVER_JS, port or 0, args or "", log))
  local pid = p:read("l")
  p:close()
  local got = helper.await_output(log, "port (%d+)", 30)
  local s = { port = tonumber(got), pid = pid, log = log }
  function s.stop()
    os.execute("kill -9 " .. pid .. " 2>/dev/null")
    helper.eventually(function()
      return not os.execute("kill -0 " .. pid .. " 2>/dev/null")
    end, "the server to exit")
  end
  return s
end

local servers = {}
local function server(args, port)
  local s = start_server(args, port)
  servers[#servers + 1] = s
  return s
end

local main   -- one server with users for most tests

setup(function()
  assert(os.execute("tests/peers/mongo_setup.sh"), "npm modules for the test server")
  main = server("--auth bob:s3cr%40t --auth old:pw1:SCRAM-SHA-1 --auth app:pw2@appdb")
end)
teardown(function()
  for _, s in ipairs(servers) do s.stop() end
  helper.cleanup()
end)

local function url(s, user, extra)
  return ("mongodb://%s127.0.0.1:%d/%s"):format(user and user .. "@" or "",
                                                s.port, extra or "")
end

local function connect_main()
  return assert(mongo.connect(url(main, "bob:s3cr%40t", "?authSource=admin")))
end

--[[ Wire =====================================================================]]

-- A listener whose connections call on_request(ch, response_to, flags,
-- body, request_id, sequences) for every OP_MSG they receive (raw: bodies
-- as bytes), and on_fail(err, code) before they close for bad input.
local function raw_server(on_request, raw, on_fail)
  local class = Channel:inherit()
  function class:data()
    while true do
      local a, b, c, d, e = self._stream:read_mongo(nil, raw)
      if a == nil then
        if b then
          if on_fail then on_fail(b, c) end
          self:close()
        end
        return
      end
      on_request(self, a, b, c, d, e)
    end
  end
  return assert(event.listen("127.0.0.1", 0, function() end, class))
end

local function reply(ch, request_id, body)
  return ch:write((assert(core.mongo_message(request_id, 0, 999, body))))
end

describe("the OP_MSG binding", function()
  it("writes a body and a document sequence that read_mongo takes back", function()
    local got = {}
    local l = raw_server(function(_, ...) got[#got + 1] = table.pack(...) end)
    local ch = assert(event.connect("127.0.0.1", l:port()))
    local ok, last = ch._stream:write_mongo(42, bson.doc{ "insert", "c", "$db", "d" },
                                            "documents", { { a = 1 }, { a = 2 } })
    assert.is_true(ok)
    assert.equal(2, last)
    helper.eventually(function() return #got == 1 end, "the message")
    local m = got[1]
    assert.equal(0, m[1])          -- responseTo
    assert.equal(0, m[2])          -- flags
    assert.equal("c", m[3].insert)
    assert.equal("d", m[3]["$db"])
    assert.equal(42, m[4])         -- requestID
    assert.equal(2, #m[5].documents)
    assert.equal(2, m[5].documents[2].a)
    ch:close()
    l:close()
  end)

  it("reads bodies as bytes when asked, and checks a checksum", function()
    local got, failed = {}, nil
    local l = raw_server(function(_, ...) got[#got + 1] = table.pack(...) end, true,
                         function(err, code) failed = { err, code } end)
    local ch = assert(event.connect("127.0.0.1", l:port()))
    local msg = assert(core.mongo_message(3, 1, 8, { x = 1 }, "s", { { y = 2 } }))  -- flag 1: CRC-32C
    ch:write(msg)
    helper.eventually(function() return #got == 1 end, "the message")
    assert.equal(3, got[1][1])
    assert.equal(1, got[1][2])
    assert.equal(bson.encode({ x = 1 }), got[1][3])
    assert.equal(bson.encode({ y = 2 }), got[1][5].s[1])
    -- the same message with one bit of its body changed
    local flipped = msg:sub(1, 30) .. string.char(msg:byte(31) ~ 1) .. msg:sub(32)
    local ch2 = assert(event.connect("127.0.0.1", l:port()))
    ch2:write(flipped)
    helper.eventually(function() return ch2:closed() end, "the close")
    assert.same({ "protocol error: checksum mismatch", "protocol" }, failed)
    assert.equal(1, #got)
    ch:close()
    l:close()
  end)

  it("waits for a message that arrives in pieces", function()
    local got, calls = {}, 0
    local class = Channel:inherit()
    function class:data()
      calls = calls + 1
      local rt, _, body = self._stream:read_mongo()
      if rt then got[#got + 1] = body end
    end
    local l = assert(event.listen("127.0.0.1", 0, function() end, class))
    local ch = assert(event.connect("127.0.0.1", l:port()))
    local msg = core.mongo_message(5, 0, 1, { hello = 1, s = ("x"):rep(100) })
    ch:write(msg:sub(1, 10))
    helper.eventually(function() return calls >= 1 end, "the first piece")
    ch:write(msg:sub(11, 60))
    helper.eventually(function() return calls >= 2 end, "the second piece")
    assert.equal(0, #got)
    ch:write(msg:sub(61))
    helper.eventually(function() return #got == 1 end, "the whole message")
    assert.equal(("x"):rep(100), got[1].s)
    ch:close()
    l:close()
  end)

  it("splits a sequence by count and by message size, and refuses what cannot fit", function()
    local docs = {}
    for i = 1, 10 do docs[i] = { i = i, pad = ("p"):rep(100) } end
    local body = bson.doc{ "insert", "c" }
    local msg, last = core.mongo_message(0, 0, 1, body, "documents", docs, 1, 3)
    assert.equal(3, last)
    assert.is_string(msg)
    msg, last = core.mongo_message(0, 0, 1, body, "documents", docs, 4, 100)
    assert.equal(10, last)
    assert.is_string(msg)
    -- 500 bytes hold the header, the body and 3 documents, not 4
    local one = #bson.encode(docs[1])
    msg, last = core.mongo_message(0, 0, 1, body, "documents", docs, 1, 100, 500)
    assert.equal(3, last)
    assert.is_true(#msg <= 500)
    assert.is_true(#msg + one > 500)
    local ok, err, code = core.mongo_message(0, 0, 1, body, "documents", docs, 1, 100, 100)
    assert.is_nil(ok)
    assert.equal("too_large", code)
    assert.matches("does not fit", err)
    ok, err, code = core.mongo_message(0, 0, 1, body, "documents", docs, 1, 100, nil, 50)
    assert.is_nil(ok)
    assert.equal("too_large", code)
    assert.matches("document 1 of " .. one .. " bytes", err)
    ok, err, code = core.mongo_message(0, 0, 1, body, "documents", { { f = print } })
    assert.is_nil(ok)
    assert.equal("bad_document", code)
    assert.matches("^document 1: ", err)
    ok, err, code = core.mongo_message(0, 0, 1, "not bson")
    assert.is_nil(ok)
    assert.equal("bad_document", code)
    assert.matches("not one encoded BSON document", err)
    assert.matches("request id", helper.raised(core.mongo_message, 0, 0, 2 ^ 40, body))
    assert.matches("zero byte", helper.raised(core.mongo_message, 0, 0, 1, body, "a\0b", {}))
  end)

  it("fails on bad framing, too large messages and malformed BSON", function()
    local function first_failure(bytes, max)
      local result
      local class = Channel:inherit()
      function class:data()
        if result then return end
        local rt, err, code = self._stream:read_mongo(max)
        if rt then result = { "ok" } elseif err then result = { err, code } end
      end
      local l = assert(event.listen("127.0.0.1", 0, function() end, class))
      local ch = assert(event.connect("127.0.0.1", l:port()))
      ch:write(bytes)
      helper.eventually(function() return result end, "a result")
      ch:close()
      l:close()
      return result[1], result[2]
    end
    local good = core.mongo_message(1, 0, 1, { ok = 1 })
    assert.equal("ok", (first_failure(good)))
    local err, code = first_failure(good, 20)
    assert.equal("too_large", code)
    assert.matches("larger than 20 bytes", err)
    err, code = first_failure(("\0"):rep(16))
    assert.equal("protocol", code)
    assert.matches("length", err)
    -- an OP_REPLY header: not OP_MSG
    err, code = first_failure(string.pack("<i4i4i4i4", 36, 1, 0, 1) .. ("\0"):rep(20))
    assert.equal("protocol", code)
    assert.matches("OP_MSG", err)
    -- a body with an element of type 0x7e (none): framing fine, BSON not
    local bad_doc = string.pack("<i4", 8) .. "\x7ea\0\0"
    err, code = first_failure(string.pack("<i4i4i4i4I4", 21 + #bad_doc, 1, 0, 2013, 0)
                              .. "\0" .. bad_doc)
    assert.equal("protocol", code)
    assert.matches("malformed bson", err)
  end)
end)

--[[ Servers written here =====================================================]]

local HELLO = { ok = 1, isWritablePrimary = true, maxWireVersion = 21,
                maxBsonObjectSize = 16 * 1024 * 1024,
                maxMessageSizeBytes = 48000000, maxWriteBatchSize = 100000 }

-- A fake mongod: hello is answered with HELLO (and the fields of extra);
-- every other command goes to on_command(ch, request_id, body).
local function fake_mongod(on_command, extra)
  return raw_server(function(ch, _, _, body, request_id)
    if body.hello or body.isMaster then
      local h = {}
      for k, v in pairs(HELLO) do h[k] = v end
      for k, v in pairs(extra or {}) do h[k] = v end
      reply(ch, request_id, h)
    else
      on_command(ch, request_id, body)
    end
  end)
end

describe("the client with servers written here", function()
  it("matches replies that come out of order to their callers", function()
    local held = {}
    local l = fake_mongod(function(ch, id, body)
      held[#held + 1] = { ch, id, body.tag }
      if #held == 10 then   -- answer the ten in reverse order
        for i = 10, 1, -1 do
          reply(held[i][1], held[i][2], { ok = 1, tag = held[i][3] })
        end
      end
    end)
    local c = assert(mongo.connect({ host = "127.0.0.1", port = l:port() }))
    local tasks = {}
    for i = 1, 10 do
      tasks[i] = event.fork(function()
        return c:db("x"):run_command(bson.doc{ "ping", 1, "tag", i })
      end)
    end
    for i = 1, 10 do
      local ok, r = tasks[i]:join()
      assert.is_true(ok)
      assert.equal(i, r.tag)
    end
    c:close()
    l:close()
  end)

  it("fails every pending request at once when the server cuts the connection", function()
    local seen = 0
    local l = fake_mongod(function(ch)
      seen = seen + 1
      if seen == 3 then ch:close_immediately() end
    end)
    local c = assert(mongo.connect({ host = "127.0.0.1", port = l:port() }))
    local tasks = {}
    for i = 1, 3 do
      tasks[i] = event.fork(function() return c:db("x"):run_command({ ping = 1 }) end)
    end
    local started = event.now()
    for i = 1, 3 do
      local ok, r, err, code = tasks[i]:join()
      assert.is_true(ok)
      assert.is_nil(r)
      assert.equal("closed", code, err)
    end
    assert.is_true(event.now() - started < 5)
    assert.is_false(c:stats().connected)
    -- the next request connects again
    l:close()
    c:close()
  end)

  it("times a request out after socketTimeoutMS and keeps the connection", function()
    local n = 0
    local late
    local l = fake_mongod(function(ch, id, body)
      n = n + 1
      if n == 1 then
        late = { ch, id }   -- never answered in time
      else
        reply(late[1], late[2], { ok = 1, tag = "late" })   -- the stale reply first
        reply(ch, id, { ok = 1, tag = body.tag })
      end
    end)
    local c = assert(mongo.connect(("mongodb://127.0.0.1:%d/?socketTimeoutMS=100")
                                   :format(l:port())))
    local started = event.now()
    local r, err, code = c:db("x"):run_command(bson.doc{ "ping", 1, "tag", "first" })
    assert.is_nil(r)
    assert.equal("timeout", code, err)
    assert.is_true(event.now() - started >= 0.09)
    r = assert(c:db("x"):run_command(bson.doc{ "ping", 1, "tag", "second" }))
    assert.equal("second", r.tag)
    assert.equal(1, c:stats().connects)
    c:close()
    l:close()
  end)

  it("closes the connection on a reply above maxMessageSizeBytes", function()
    local l = fake_mongod(function(ch, id)
      reply(ch, id, { ok = 1, big = ("b"):rep(5000) })
    end, { maxMessageSizeBytes = 2000 })
    local c = assert(mongo.connect({ host = "127.0.0.1", port = l:port() }))
    assert.equal(2000, c:hello().maxMessageSizeBytes)
    local r, err, code = c:db("x"):run_command({ ping = 1 })
    assert.is_nil(r)
    assert.equal("too_large", code)
    assert.matches("larger than 2000 bytes", err)
    assert.is_false(c:stats().connected)
    c:close()
    l:close()
  end)

  it("closes the connection on a reply with malformed BSON", function()
    local l = fake_mongod(function(ch, id)
      local bad_doc = string.pack("<i4", 8) .. "\x7ea\0\0"
      ch:write(string.pack("<i4i4i4i4I4", 21 + #bad_doc, 1, id, 2013, 0) .. "\0" .. bad_doc)
    end)
    local c = assert(mongo.connect({ host = "127.0.0.1", port = l:port() }))
    local r, err, code = c:db("x"):run_command({ ping = 1 })
    assert.is_nil(r)
    assert.equal("protocol", code)
    assert.matches("malformed bson", err)
    c:close()
    l:close()
  end)

  it("gives up a handshake after connectTimeoutMS, and tries the next host", function()
    local l = raw_server(function() end)   -- accepts, never answers
    local started = event.now()
    local c, err, code = mongo.connect(("mongodb://127.0.0.1:%d/?connectTimeoutMS=150")
                                       :format(l:port()))
    assert.is_nil(c)
    assert.equal("timeout", code, err)
    assert.is_true(event.now() - started >= 0.14)
    assert.is_true(event.now() - started < 5)
    local good = fake_mongod(function(ch, id) reply(ch, id, { ok = 1, who = "second" }) end)
    c = assert(mongo.connect(("mongodb://127.0.0.1:%d,127.0.0.1:%d/")
                             :format(helper.free_port(), good:port())))
    assert.equal("second", assert(c:db("x"):run_command({ ping = 1 })).who)
    c:close()
    l:close()
    good:close()
  end)

  it("sends the write concern of the URI, or of the operation", function()
    local seen = {}
    local l = fake_mongod(function(ch, id, body)
      seen[#seen + 1] = body.writeConcern or false
      reply(ch, id, { ok = 1, n = 1 })
    end)
    local c = assert(mongo.connect(("mongodb://127.0.0.1:%d/?w=majority&journal=true&wTimeoutMS=500")
                                   :format(l:port())))
    local coll = c:collection("x.y")
    assert(coll:insert_one({ a = 1 }))
    assert(coll:delete_one({ a = 1 }, { write_concern = { w = 0 } }))
    c:close()
    c = assert(mongo.connect({ host = "127.0.0.1", port = l:port() }))
    assert(c:collection("x.y"):update_one({}, { ["$set"] = { a = 2 } }))
    assert.same({ w = "majority", j = true, wtimeout = 500 }, seen[1])
    assert.same({ w = 0 }, seen[2])
    assert.is_false(seen[3])
    c:close()
    l:close()
  end)

  it("falls back to isMaster for a server without hello", function()
    local asked = {}
    local l = raw_server(function(ch, _, _, body, id)
      if body.hello then
        asked[#asked + 1] = "hello"
        reply(ch, id, { ok = 0, code = 59, codeName = "CommandNotFound",
                        errmsg = "no such command: 'hello'" })
      elseif body.isMaster then
        asked[#asked + 1] = "isMaster"
        assert(body.client.driver.name == "evlua")
        reply(ch, id, HELLO)
      else
        reply(ch, id, { ok = 1 })
      end
    end)
    local c = assert(mongo.connect({ host = "127.0.0.1", port = l:port() }))
    assert.same({ "hello", "isMaster" }, asked)
    assert.equal(1, assert(c:db("x"):run_command({ ping = 1 })).ok)
    c:close()
    l:close()
  end)

  it("sends the hello handshake with the client metadata", function()
    local hello
    local l = raw_server(function(ch, _, _, body, id)
      hello = hello or body
      reply(ch, id, HELLO)
    end)
    local c = assert(mongo.connect(("mongodb://127.0.0.1:%d/?appName=myapp"):format(l:port())))
    assert.equal(1, hello.hello)
    assert.equal("admin", hello["$db"])
    assert.equal("evlua", hello.client.driver.name)
    assert.equal(mongo.VERSION, hello.client.driver.version)
    assert.equal("myapp", hello.client.application.name)
    assert.is_string(hello.client.os.type)
    assert.matches("Lua", hello.client.platform)
    c:close()
    l:close()
  end)
end)

--[[ The test server ==========================================================]]

describe("connecting and authenticating", function()
  it("authenticates with SCRAM-SHA-256 (negotiated) and a percent-encoded password", function()
    local c = connect_main()
    local r = assert(c:db("admin"):run_command({ connectionStatus = 1 }))
    assert.equal("bob", r.authInfo.authenticatedUsers[1].user)
    assert.equal(1, r.ok)
    c:close()
  end)

  it("authenticates with SCRAM-SHA-1 and with an authSource", function()
    local c = assert(mongo.connect(url(main, "old:pw1", "?authMechanism=SCRAM-SHA-1")))
    assert.equal(1, assert(c:db("admin"):run_command({ ping = 1 })).ok)
    c:close()
    c = assert(mongo.connect(url(main, "app:pw2", "appdb")))   -- authSource: appdb
    assert.equal("app", assert(c:db("appdb"):run_command({ connectionStatus = 1 }))
                          .authInfo.authenticatedUsers[1].user)
    c:close()
    c = assert(mongo.connect({ host = "127.0.0.1", port = main.port, username = "app",
                               password = "pw2", authSource = "appdb" }))
    c:close()
  end)

  it("fails with code auth for a wrong password or user, with the server's code", function()
    local c, err, code, info = mongo.connect(url(main, "bob:wrong", "?authSource=admin"))
    assert.is_nil(c)
    assert.equal("auth", code)
    assert.matches("authentication failed", err)
    assert.equal(18, info.code)
    c, err, code = mongo.connect(url(main, "nobody:x"))
    assert.is_nil(c)
    assert.equal("auth", code, err)
    -- SCRAM-SHA-256 asked for a user that has only SCRAM-SHA-1
    c, err, code = mongo.connect(url(main, "old:pw1", "?authMechanism=SCRAM-SHA-256"))
    assert.is_nil(c)
    assert.equal("auth", code, err)
  end)

  it("fails to connect with the connect error, and raises for bad arguments", function()
    local port = helper.free_port()
    local c, _, code = mongo.connect(("mongodb://127.0.0.1:%d"):format(port))
    assert.is_nil(c)
    assert.equal("ECONNREFUSED", code)
    c, _, code = mongo.connect("http://x")
    assert.is_nil(c)
    assert.equal("bad_url", code)
    assert.matches("uri string or options table", helper.raised(mongo.connect, 42))
    assert.matches("socket_timeout must be", helper.raised(mongo.connect, { socket_timeout = -1 }))
    assert.matches("authMechanism must be",
                   helper.raised(mongo.connect, { authMechanism = "PLAIN", username = "u",
                                                  password = "p" }))
    assert.matches("password must be", helper.raised(mongo.connect, { username = "u" }))
    -- a URI is data: a user without a password is a bad URI, not a raise
    local err
    c, err, code = mongo.connect(url(main, "bob"))
    assert.is_nil(c)
    assert.equal("bad_url", code)
    assert.matches("no password for user 'bob'", err)
    _, _, code = mongo.connect({ uri = url(main, "bob") })
    assert.equal("bad_url", code)
    assert.matches("must run in a coroutine", helper.raised(function()
      local co = coroutine.wrap(mongo.connect)
      co("mongodb://127.0.0.1")
    end))
  end)

  it("refuses commands without the server's authentication", function()
    local c = assert(mongo.connect(url(main)))
    local r, err, code, info = c:db("test"):run_command({ find = "x" })
    assert.is_nil(r)
    assert.equal("mongo", code)
    assert.equal(13, info.code, err)
    c:close()
  end)
end)

describe("commands and CRUD", function()
  local c, coll
  before_each(function()
    c = connect_main()
    coll = c:collection("test.crud")
    assert(coll:drop())
  end)
  after_each(function() c:close() end)

  it("runs commands, with the server's error code and codeName", function()
    local r = assert(c:run_command("admin", { ping = 1 }))
    assert.equal(1, r.ok)
    local err, code, info
    r, err, code, info = c:db("test"):run_command({ nosuchcommand = 1 })
    assert.is_nil(r)
    assert.equal("mongo", code)
    assert.equal(59, info.code)
    assert.equal("CommandNotFound", info.codeName)
    assert.matches("nosuchcommand", err)
    r = assert(c:db("test"):run_command(bson.doc{ "count", "crud", "query", {} }))
    assert.equal(0, r.n)
    assert.matches("ordered", helper.raised(c.run_command, c, "test", { a = 1, b = 2 }))
  end)

  it("inserts one and many, with the ids given", function()
    local r = assert(coll:insert_one({ name = "ann" }))
    assert.equal("objectId", bson.type(r.inserted_id))
    assert.equal(1, r.inserted_count)
    r = assert(coll:insert_many({ { _id = 1, name = "bo" }, { name = "cy" } }))
    assert.equal(2, r.inserted_count)
    assert.equal(1, r.inserted_ids[1])
    assert.equal("objectId", bson.type(r.inserted_ids[2]))
    assert.equal(3, coll:count_documents())
    local d = assert(coll:find_one({ _id = r.inserted_ids[2] }))
    assert.equal("cy", d.name)
  end)

  it("refuses an empty insert_many, as the drivers do, and reads a proxy list", function()
    local before = c:stats().requests
    assert.matches("bad argument #1 to 'insert_many' %(non%-empty list of documents expected%)",
                   helper.raised(coll.insert_many, coll, {}))
    assert.equal(before, c:stats().requests)   -- nothing was sent
    -- a list behind __len and __index goes through them (the wire layer
    -- reads its list raw, so insert_many hands it a copy)
    local backing = { { _id = 1 }, { _id = 2 } }
    local proxy = setmetatable({}, { __len = function() return #backing end,
                                     __index = function(_, i) return backing[i] end })
    local r = assert(coll:insert_many(proxy))
    assert.equal(2, r.inserted_count)
    assert.same({ 1, 2 }, r.inserted_ids)
    assert.equal(2, coll:count_documents())
  end)

  it("reports duplicate keys with code 11000, ordered and unordered", function()
    assert(coll:insert_one({ _id = 1 }))
    local r, err, code, info = coll:insert_one({ _id = 1 })
    assert.is_nil(r)
    assert.equal("mongo", code)
    assert.equal(11000, info.code)
    assert.matches("E11000", err)
    -- ordered: stops at the duplicate
    r, err, code, info = coll:insert_many({ { _id = 2 }, { _id = 1 }, { _id = 3 } })
    assert.is_nil(r)
    assert.equal("mongo", code)
    assert.equal(11000, info.code, err)
    assert.equal(1, info.result.n)
    assert.equal(2, info.write_errors[1].index)
    assert.is_nil(coll:find_one({ _id = 3 }))
    -- unordered: goes on after it
    r, err, code, info = coll:insert_many({ { _id = 4 }, { _id = 1 }, { _id = 5 } },
                                          { ordered = false })
    assert.is_nil(r)
    assert.equal("mongo", code, err)
    assert.equal(2, info.result.n)
    assert.truthy(coll:find_one({ _id = 5 }))
  end)

  it("updates, replaces and upserts, with the counts the drivers report", function()
    assert(coll:insert_many({ { _id = 1, n = 1 }, { _id = 2, n = 1 }, { _id = 3, n = 2 } }))
    local r = assert(coll:update_one({ n = 1 }, { ["$set"] = { x = true } }))
    assert.equal(1, r.matched_count)
    assert.equal(1, r.modified_count)
    assert.is_nil(r.upserted_id)
    r = assert(coll:update_many({ n = 1 }, { ["$set"] = { x = true } }))
    assert.equal(2, r.matched_count)
    assert.equal(1, r.modified_count)
    r = assert(coll:replace_one({ _id = 3 }, { n = 3 }))
    assert.equal(1, r.modified_count)
    assert.same({ _id = 3, n = 3 }, coll:find_one({ _id = 3 }))
    r = assert(coll:update_one({ _id = 9 }, { ["$set"] = { n = 9 } }, { upsert = true }))
    assert.equal(0, r.matched_count)
    assert.equal(9, r.upserted_id)
    r = assert(coll:replace_one({ name = "new" }, { name = "new" }, { upsert = true }))
    assert.equal("objectId", bson.type(r.upserted_id))
    local _, err, code, info = coll:update_one({ _id = 1 }, { ["$bogus"] = { a = 1 } })
    assert.equal("mongo", code, err)
    assert.is_number(info.code)
    -- updates need operators, replacements must have none (as the drivers)
    assert.matches("requires atomic operators",
                   helper.raised(coll.update_one, coll, { _id = 1 }, { n = 5 }))
    assert.matches("requires atomic operators",
                   helper.raised(coll.update_many, coll, {}, bson.doc{ "$set", { a = 1 }, "n", 5 }))
    assert.matches("must not contain atomic operators",
                   helper.raised(coll.replace_one, coll, { _id = 1 }, { ["$set"] = { n = 5 } }))
    assert.matches("requires atomic operators",
                   helper.raised(coll.find_one_and_update, coll, { _id = 1 }, { n = 5 }))
    assert.matches("filter document expected",
                   helper.raised(coll.count_documents, coll, 5))
    assert.matches("filter document expected",
                   helper.raised(coll.find_one_and_delete, coll, "x"))
    assert.matches("bad argument #2 to 'distinct'", helper.raised(coll.distinct, coll, "a", 5))
    assert.same({ _id = 1, n = 1, x = true }, coll:find_one({ _id = 1 }))
  end)

  it("deletes one and many, counts and lists distinct values", function()
    local docs = {}
    for i = 1, 10 do docs[i] = { i = i, even = i % 2 == 0 } end
    assert(coll:insert_many(docs))
    assert.equal(1, assert(coll:delete_one({ even = true })).deleted_count)
    assert.equal(4, assert(coll:delete_many({ even = true })).deleted_count)
    assert.equal(5, coll:count_documents({}))
    assert.equal(5, coll:estimated_document_count())
    assert.equal(2, coll:count_documents({ i = { ["$gt"] = 5 } }))
    assert.equal(1, coll:count_documents({}, { skip = 2, limit = 1 }))
    local values = assert(coll:distinct("even"))
    assert.same({ false }, values)
    table.sort(values)
    assert.equal(3, #assert(coll:distinct("i", { i = { ["$lt"] = 6 } })))
  end)

  it("finds with filter, projection, sort, skip and limit", function()
    local docs = {}
    for i = 1, 20 do docs[i] = { _id = i, g = i % 3, s = ("s%02d"):format(i) } end
    assert(coll:insert_many(docs))
    local rows = assert(assert(coll:find({ g = 1 }, {
      sort = bson.doc{ "_id", -1 }, projection = { s = 1 }, skip = 1, limit = 3,
    })):to_array())
    assert.same({ { _id = 16, s = "s16" }, { _id = 13, s = "s13" }, { _id = 10, s = "s10" } },
                rows)
    rows = assert(assert(coll:find({}, { sort = bson.doc{ "g", 1, "_id", -1 }, limit = 2 }))
                    :to_array())
    assert.equal(18, rows[1]._id)
    assert.equal(15, rows[2]._id)
    assert.is_nil(coll:find_one({ g = 7 }))
    assert.equal(20, coll:find_one({}, { sort = bson.doc{ "_id", -1 } })._id)
    assert.matches("must be ordered", helper.raised(coll.find, coll, {}, { sort = { a = 1, b = 1 } }))
  end)

  it("aggregates and finds and modifies", function()
    assert(coll:insert_many({ { k = "a", v = 1 }, { k = "b", v = 2 }, { k = "a", v = 3 } }))
    local rows = assert(assert(coll:aggregate({
      { ["$group"] = { _id = "$k", total = { ["$sum"] = "$v" } } },
      { ["$sort"] = { _id = 1 } },
    })):to_array())
    assert.same({ { _id = "a", total = 4 }, { _id = "b", total = 2 } }, rows)
    local before = assert(coll:find_one_and_update({ k = "b" }, { ["$inc"] = { v = 10 } }))
    assert.equal(2, before.v)
    local after = assert(coll:find_one_and_update({ k = "b" }, { ["$inc"] = { v = 10 } },
                                                  { return_document = "after" }))
    assert.equal(22, after.v)
    local up = assert(coll:find_one_and_update({ k = "z" }, { ["$set"] = { v = 0 } },
                                               { upsert = true, return_document = "after" }))
    assert.equal("z", up.k)
    local gone = assert(coll:find_one_and_delete({ k = "a" }, { sort = { v = -1 } }))
    assert.equal(3, gone.v)
    assert.is_nil(coll:find_one_and_delete({ k = "nothing" }))
    assert.equal(3, coll:count_documents())
    local replaced = assert(coll:find_one_and_replace({ k = "z" }, { k = "zz" },
                                                      { return_document = "after",
                                                        projection = { _id = 0 } }))
    assert.same({ k = "zz" }, replaced)
    assert.equal(1, coll:count_documents({ k = "zz" }))
  end)

  it("creates, lists and drops indexes; lists collections and databases", function()
    assert(coll:insert_one({ a = 1, b = 1 }))
    assert.equal("a_1_b_-1", assert(coll:create_index(bson.doc{ "a", 1, "b", -1 })))
    assert.equal("uniq", assert(coll:create_index({ u = 1 }, { name = "uniq", unique = true })))
    assert.same({ "x_1", "y_1" }, assert(coll:create_indexes({ { key = { x = 1 } },
                                                                 { key = { y = 1 } } })))
    local names = {}
    for _, ix in ipairs(assert(coll:list_indexes())) do names[#names + 1] = ix.name end
    table.sort(names)
    assert.same({ "_id_", "a_1_b_-1", "uniq", "x_1", "y_1" }, names)
    assert(coll:insert_one({ u = 5 }))
    local _, _, _, info = coll:insert_one({ u = 5 })
    assert.equal(11000, info.code)
    assert(coll:drop_index("uniq"))
    assert(coll:insert_one({ u = 5 }))
    local found = false
    for _, col in ipairs(assert(c:db("test"):list_collections())) do
      if col.name == "crud" then found = true end
    end
    assert.is_true(found)
    found = false
    for _, d in ipairs(assert(c:list_databases())) do
      if d.name == "test" then found = true end
    end
    assert.is_true(found)
    assert.is_true(coll:drop())
    assert.is_true(coll:drop())   -- already gone
    assert.equal(0, coll:estimated_document_count())
    local other = c:db("dropme")
    assert(other:collection("c"):insert_one({}))
    assert.is_true(other:drop())
    for _, d in ipairs(assert(c:list_databases())) do
      assert.is_true(d.name ~= "dropme")
    end
  end)

  it("keeps every BSON type through the server", function()
    local d = {
      _id = bson.ObjectId(), i32 = bson.int32(7), i64 = math.maxinteger, f = 1.0,
      neg = -2.5, s = "héllo", t = true, n = bson.null, date = bson.date(1700000000123),
      bin = bson.binary("\0\1\2", 4), re = bson.regex("^a.c$", "i"),
      dec = bson.decimal128("12.50"), ts = bson.timestamp(1700000000, 3),
      min = bson.minkey, max = bson.maxkey, nested = { a = { b = { 1, 2, 3 } } },
      empty_doc = {}, empty_array = bson.array{},
    }
    assert(coll:insert_one(d))
    local back = assert(coll:find_one({ _id = d._id }))
    assert.equal(d._id, back._id)
    assert.equal(7, back.i32)
    assert.equal(math.maxinteger, back.i64)
    assert.equal("integer", math.type(back.i64))
    assert.equal("float", math.type(back.f))
    assert.equal(-2.5, back.neg)
    assert.equal("héllo", back.s)
    assert.is_true(back.t)
    assert.equal(bson.null, back.n)
    assert.equal(d.date, back.date)
    assert.equal(d.bin, back.bin)
    assert.equal(4, back.bin.subtype)
    assert.equal(d.re, back.re)
    assert.equal(tostring(d.dec), tostring(back.dec))
    assert.equal(d.ts, back.ts)
    assert.equal(bson.minkey, back.min)
    assert.equal(bson.maxkey, back.max)
    assert.same({ 1, 2, 3 }, back.nested.a.b)
    assert.equal("array", bson.type(back.empty_array))
    assert.same({}, back.empty_doc)
    assert.is_nil(back.absent)
  end)
end)

describe("cursors", function()
  local c, coll
  setup(function()
    c = connect_main()
    coll = c:collection("test.cursor")
    assert(coll:drop())
    local docs = {}
    for i = 1, 7 do docs[i] = { _id = i } end
    assert(coll:insert_many(docs))
  end)
  teardown(function() c:close() end)

  local function alive(id)
    local r, _, _, info = c:db("test"):run_command(bson.doc{
      "getMore", id, "collection", "cursor", "batchSize", 1 })
    if r then return true end
    assert.equal(43, info.code)   -- CursorNotFound
    return false
  end

  it("runs getMore as batches run out", function()
    local cur = assert(coll:find({}, { batch_size = 2, sort = { _id = 1 } }))
    local ids = {}
    for d in cur:iter() do ids[#ids + 1] = d._id end
    assert.same({ 1, 2, 3, 4, 5, 6, 7 }, ids)
    assert.is_nil(cur:next())
    cur = assert(coll:find({}, { batch_size = 3, limit = 5, sort = { _id = 1 } }))
    assert.equal(5, #assert(cur:to_array()))
  end)

  it("kills the server's cursor on close, on break and when collected", function()
    local cur = assert(coll:find({}, { batch_size = 2 }))
    assert.truthy(cur:next())
    local id = cur._id
    assert.is_true(id ~= 0)
    cur:close()
    cur:close()
    assert.is_nil(cur:next())
    assert.is_false(alive(id))

    cur = assert(coll:find({}, { batch_size = 2 }))
    id = cur._id
    for _ in cur:iter() do break end   -- luacheck: ignore 512
    assert.is_false(alive(id))

    do
      local cur2 = assert(coll:find({}, { batch_size = 2 }))
      id = cur2._id
      cur2 = nil   -- luacheck: ignore 311
    end
    collectgarbage("collect")
    collectgarbage("collect")
    assert.is_false(alive(id))

    -- a cursor the server no longer has: next fails with its code, iter raises
    cur = assert(coll:find({}, { batch_size = 2 }))
    assert(c:db("test"):run_command(bson.doc{ "killCursors", "cursor",
                                              "cursors", bson.array{ cur._id } }))
    assert.truthy(cur:next())
    assert.truthy(cur:next())
    local d, err, code, info = cur:next()
    assert.is_nil(d)
    assert.equal("mongo", code, err)
    assert.equal(43, info.code)
    cur = assert(coll:find({}, { batch_size = 1 }))
    assert(c:db("test"):run_command(bson.doc{ "killCursors", "cursor",
                                              "cursors", bson.array{ cur._id } }))
    assert.matches("mongo cursor: ", helper.raised(function()
      for _ in cur:iter() do end
    end))

    -- a cursor whose connection dropped fails at once (the server's cursor
    -- went with it) and the client reconnects for the next request
    cur = assert(coll:find({}, { batch_size = 2 }))
    assert.truthy(cur:next())
    assert.truthy(cur:next())
    c._ch:close_immediately()
    d, err, code = cur:next()
    assert.is_nil(d)
    assert.equal("closed", code)
    assert.matches("cursor's connection closed", err)
    assert.is_nil(cur:next())
    assert.equal(7, coll:count_documents())

    cur = assert(coll:aggregate({ { ["$match"] = {} } }, { batch_size = 1 }))
    id = cur._id
    do
      local _ <close> = cur
    end
    assert.is_false(alive(id))
  end)
end)

describe("sharing and limits", function()
  it("serves 100 coroutines on one connection", function()
    local c = connect_main()
    local coll = c:collection("test.shared")
    assert(coll:drop())
    local tasks = {}
    for i = 1, 100 do
      tasks[i] = event.fork(function()
        assert(coll:insert_one({ _id = i, sq = i * i }))
        return coll:find_one({ _id = i })
      end)
    end
    for i = 1, 100 do
      local ok, d = tasks[i]:join()
      assert.is_true(ok, d)
      assert.equal(i * i, d.sq)
    end
    assert.equal(100, coll:count_documents())
    assert.equal(1, c:stats().connects)
    c:close()
  end)

  it("drops a server that stops reading after send_timeout", function()
    -- answers hello, then never reads again
    local class = Channel:inherit()
    local stalled = false
    function class:data()
      if stalled then return end
      local _, _, body, id = self._stream:read_mongo()
      if body and body.hello then
        stalled = true
        reply(self, id, HELLO)
      end
    end
    local l = assert(event.listen("127.0.0.1", 0, function() end, class))
    local c = assert(mongo.connect({ host = "127.0.0.1", port = l:port(),
                                     socket_timeout = 10, send_timeout = 0.3 }))
    local pad = ("s"):rep(1024 * 1024)
    local docs = {}
    for i = 1, 40 do docs[i] = { _id = i, pad = pad } end   -- 40 MB: fills every buffer
    local started = event.now()
    local r, err, code = c:collection("x.y"):insert_many(docs)
    local took = event.now() - started
    assert.is_nil(r)
    assert.equal("timeout", code, err)
    assert.is_true(took >= 0.29, took)   -- not before the limit
    assert.is_true(took < 5, took)       -- long before socket_timeout
    assert.is_false(c:stats().connected)
    assert.matches("send_timeout must be", helper.raised(mongo.connect, { send_timeout = 0 }))
    c:close()
    l:close()
  end)

  it("sends batches larger than the send queue's high-water mark", function()
    local waits = 0
    local wait_drain = mongo.connection._wait_drain
    mongo.connection._wait_drain = function(...)
      waits = waits + 1
      return wait_drain(...)
    end
    local c = connect_main()
    local coll = c:collection("test.large")
    assert(coll:drop())
    local pad = ("L"):rep(1024 * 1024)
    local function batch(base)
      local docs = {}
      for i = 1, 5 do docs[i] = { _id = base + i, pad = pad } end   -- 5 MB
      return docs
    end
    local other = event.fork(function() return coll:insert_many(batch(100)) end)
    local r = assert(coll:insert_many(batch(0)))
    local ok, r2 = other:join()
    mongo.connection._wait_drain = nil   -- Channel's again
    assert.is_true(waits > 0)
    assert.equal(5, r.inserted_count)
    assert.is_true(ok)
    assert.equal(5, r2.inserted_count)
    assert.equal(10, coll:count_documents())
    assert.equal(pad, coll:find_one({ _id = 103 }).pad)
    assert(coll:drop())
    c:close()
  end)

  it("splits insert_many by maxWriteBatchSize and maxMessageSizeBytes", function()
    local s = server("--max-write-batch 10 --max-message-size 60000")
    local c = assert(mongo.connect(url(s)))
    assert.equal(10, c:hello().maxWriteBatchSize)
    local coll = c:collection("test.batches")
    local docs = {}
    for i = 1, 35 do docs[i] = { i = i } end
    local r = assert(coll:insert_many(docs))
    assert.equal(35, r.inserted_count)
    docs = {}
    for i = 1, 20 do docs[i] = { i = i, pad = ("x"):rep(10000) } end   -- 200 KB
    r = assert(coll:insert_many(docs))
    assert.equal(20, r.inserted_count)
    assert.equal(55, coll:count_documents())
    local _, err, code = coll:insert_one({ pad = ("y"):rep(70000) })
    assert.equal("too_large", code, err)
    c:close()
    s.stop()
    -- maxBsonObjectSize: refused before anything is sent
    s = server("--max-bson-size 5000")
    c = assert(mongo.connect(url(s)))
    coll = c:collection("test.big")
    _, err, code = coll:insert_many({ { i = 1 }, { pad = ("z"):rep(6000) } })
    assert.equal("too_large", code)
    assert.matches("document 2 of %d+ bytes above the maximum document size %(5000%)", err)
    assert.equal(0, coll:count_documents())
    assert(coll:insert_one({ pad = ("z"):rep(4000) }))
    c:close()
    s.stop()
  end)

  it("waits out its backoff between reconnect attempts, failing fast meanwhile", function()
    -- a server that answers the first connection's hello, then drops every
    -- connection as soon as it is accepted: each reconnect attempt fails
    local accepted, dropping, first = 0, false, nil
    local class = Channel:inherit()
    function class:data()
      while true do
        local rt, _, _, request_id = self._stream:read_mongo()
        if rt == nil or dropping then return end
        reply(self, request_id, { ok = 1, isWritablePrimary = true, maxWireVersion = 17 })
      end
    end
    local listener = assert(event.listen("127.0.0.1", 0, function(_, ch)
      accepted = accepted + 1
      if dropping then ch:close() else first = ch end
    end, class))
    local min, max = 0.1, 0.4
    local c = assert(mongo.connect({ host = "127.0.0.1", port = listener:port(),
                                     reconnect_min = min, reconnect_max = max }))
    assert.equal(1, c:stats().connects)
    dropping = true
    first:close_immediately()
    local coll = c:collection("test.backoff")
    -- call until 5 attempts have failed; an attempt is a call during
    -- which the client's failure count grows
    local attempts, fast, last_attempt = {}, 0, nil
    while #attempts < 5 do
      local failures = c:stats().failures
      local turn = core.iteration()
      local r, err, code = coll:find_one({})
      assert.is_nil(r)
      assert.is_string(code, err)
      if c:stats().failures > failures then
        attempts[#attempts + 1] = event.now()
        last_attempt = code
        -- right after a failed attempt the next one is not due: this call
        -- fails at once (within this loop iteration) with the same error
        local again = core.iteration()
        local r2, err2, code2 = coll:find_one({})
        assert.is_nil(r2)
        assert.equal(last_attempt, code2, err2)
        assert.equal(again, core.iteration())   -- no wait: the same loop turn
        assert.equal(#attempts, c:stats().failures)
        fast = fast + 1
      elseif last_attempt then   -- within a backoff: its error, at once
        assert.equal(last_attempt, code, err)
        assert.equal(turn, core.iteration())
      end
      event.sleep(0.01)   -- paces the calls; the assertions need no timing
    end
    -- attempt k + 1 waited at least half its capped delay after attempt k
    -- (the jitter's lower bound): min, 2 min, 4 min... capped at max
    for k = 1, #attempts - 1 do
      local cap = math.min(max, min * 2 ^ (k - 1))
      assert.is_true(attempts[k + 1] - attempts[k] >= cap / 2 - 1e-6,
                     ("attempt %d came %.3f s after the previous one, before "
                      .. "its backoff (%.3f s)"):format(k + 1, attempts[k + 1] - attempts[k],
                                                         cap / 2))
    end
    assert.equal(5, fast)
    -- every attempt was one connection (the server closing it is what
    -- failed the attempt, so it was counted first), and there were no
    -- others: the first connection plus one per attempt
    assert.equal(1 + #attempts, accepted)
    assert.equal(1, c:stats().connects)
    c:close()
    listener:close()
  end)

  it("reconnects after the server is killed, failing meanwhile", function()
    local s = server()
    local port = s.port
    local c = assert(mongo.connect(url(s) .. "?connectTimeoutMS=2000"))
    local coll = c:collection("test.restart")
    assert(coll:insert_one({ _id = 1 }))
    s.stop()
    local r, err, code = coll:find_one({ _id = 1 })
    assert.is_nil(r)
    assert.is_string(code, err)
    r, err, code = coll:find_one({ _id = 1 })   -- refused, or the backoff's error
    assert.is_nil(r)
    assert.is_string(code, err)
    assert.is_false(c:stats().connected)
    -- killed while 20 coroutines keep requests in flight: each request
    -- ends (answered, or failed at once), none hangs or gets another's reply
    s = server(nil, port)
    local busy = {}
    local stop = false
    for w = 1, 20 do
      busy[w] = event.fork(function()
        local answered, failed = 0, 0
        local i = 0
        while not stop do
          i = i + 1
          local d, e = coll:find_one_and_update({ _id = w * 1000 }, { ["$set"] = { i = i } },
                                                { upsert = true, return_document = "after" })
          if d then
            assert(d._id == w * 1000 and d.i == i, "a reply for another request")
            answered = answered + 1
          else
            assert(type(e) == "string")
            failed = failed + 1
            if failed > 2 then event.sleep(0.01) end   -- the backoff's fast failures
          end
        end
        return answered, failed
      end)
    end
    helper.eventually(function() return c:stats().requests > 200 end, "requests in flight")
    s.stop()
    helper.eventually(function() return not c:stats().connected end, "the disconnect")
    stop = true
    for w = 1, 20 do
      local ok, answered = busy[w]:join(10)
      assert.is_true(ok, answered)
      assert.is_true(answered > 0)
    end
    server(nil, port)
    local got
    helper.eventually(function()
      got = coll:insert_one({ _id = 2 })
      return got
    end, "a reconnect")
    assert.equal(2, got.inserted_id)
    assert.equal(3, c:stats().connects)
    c:close()
    local _, _, ccode = coll:find_one({})
    assert.equal("closed", ccode)
  end)
end)
