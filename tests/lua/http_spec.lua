-- tests/lua/http_spec.lua - the HTTP server and client: curl against a
-- server in another process, raw sockets for pipelining and limits, a
-- slowloris client, 500 keep-alive connections, and the evlua client
-- against the evlua server and against nginx.
local event = require "event"
local http = require "evlua.http"
local helper = require "helper"

-- Raw replies ===============================================================

-- Read one reply from a channel: status, headers (lowercase), body. The
-- body is read by Content-Length, chunked encoding, or to the close.
local function read_reply(ch, head)
  local line, err = ch:wait_line(10)
  if not line then return nil, err end
  local status = tonumber(line:match("^HTTP/1%.%d (%d%d%d)"))
  assert(status, "bad status line: " .. line)
  local headers = {}
  while true do
    local h = assert(ch:wait_line(10))
    if h == "" then break end
    local k, v = h:match("^([^:]+):%s*(.*)$")
    headers[k:lower()] = v
  end
  local body = ""
  if head or status == 100 or status == 204 or status == 304 then
    return status, headers, body
  end
  if headers["content-length"] then
    local n = tonumber(headers["content-length"])
    if n > 0 then body = assert(ch:wait_read(n, 10)) end
  elseif headers["transfer-encoding"] == "chunked" then
    local parts = {}
    while true do
      local size = tonumber(assert(ch:wait_line(10)), 16)
      if size == 0 then
        assert.equal("", ch:wait_line(10))
        break
      end
      parts[#parts + 1] = assert(ch:wait_read(size, 10))
      assert.equal("", ch:wait_line(10))
    end
    body = table.concat(parts)
  else
    local parts = {}
    while true do
      local chunk = ch:wait_read(nil, 10)
      if not chunk then break end
      parts[#parts + 1] = chunk
    end
    body = table.concat(parts)
  end
  return status, headers, body
end

local eventually = helper.eventually

-- Wait until the peer closes the channel; returns the seconds it took.
local function await_close(ch, seconds)
  local t0 = event.now()
  while true do
    local data, err = ch:wait_read(nil, seconds or 10)
    if not data then
      assert.equal("closed", err)
      return event.now() - t0
    end
  end
end

local function echo_handler(_, req, method, url, _headers, body)
  if url == "/sleep" then event.sleep(0.2) end
  req:reply_header("X-Method", method)
  req:reply(200, "OK", url .. " " .. body)
end

local function server(handler, opts)
  local srv = assert(http.listen("127.0.0.1", 0, handler or echo_handler, opts))
  return srv, srv:port()
end

local function connect(port)
  return assert(event.connect("127.0.0.1", port))
end

-- A server in another process, for blocking clients (curl) ==================

local SERVER_SCRIPT = [[
local event = require "event"
local http = require "evlua.http"
local srv = assert(http.listen("127.0.0.1", 0, function(_, req, method, url, headers, body)
  if url == "/stream" then
    for i = 1, 3 do
      req:write("part" .. i .. "\n")
      event.sleep(0.01)
    end
    return req:finish()
  end
  req:reply_header("X-Expect", headers.expect or "none")
  req:reply_header("X-TE", headers["transfer-encoding"] or "none")
  req:reply(200, "OK", method .. " " .. url .. " " .. #body .. " " .. body)
end))
print("port " .. srv:port())
io.stdout:flush()
]]

local function spawn_server()
  local _, out = helper.spawn_script(SERVER_SCRIPT)
  return tonumber(helper.await_output(out, "port (%d+)"))
end

local function curl(args)
  return helper.sh("curl -s -S --max-time 20 " .. args)
end

describe("http server with curl", function()
  after_each(helper.cleanup)

  it("answers GET, reusing one keep-alive connection", function()
    local port = spawn_server()
    local base = "http://127.0.0.1:" .. port
    local out, err, rc = curl("-v " .. base .. "/a " .. base .. "/b")
    assert.equal(0, rc, err)
    assert.equal("GET /a 0 GET /b 0 ", out)
    assert.truthy(err:find("Re-using existing connection", 1, true), err)
    assert.truthy(err:find("< Server: evlua/", 1, true))
    assert.truthy(err:find("< Date: %a%a%a, %d%d %a%a%a %d%d%d%d"))
  end)

  it("speaks HTTP/1.0 and closes after the reply", function()
    local port = spawn_server()
    local out, err, rc = curl("-i --http1.0 http://127.0.0.1:" .. port .. "/old")
    assert.equal(0, rc, err)
    assert.truthy(out:find("Connection: close\r\n", 1, true), out)
    assert.truthy(out:find("\r\n\r\nGET /old 0 $"), out)
    -- with keep-alive asked for, the connection stays
    out, err = curl("-v --http1.0 -H 'Connection: keep-alive' http://127.0.0.1:"
                    .. port .. "/x http://127.0.0.1:" .. port .. "/y")
    assert.equal("GET /x 0 GET /y 0 ", out)
    assert.truthy(err:find("< Connection: keep-alive", 1, true), err)
    assert.truthy(err:find("Re-using existing connection", 1, true), err)
  end)

  it("takes chunked uploads", function()
    local port = spawn_server()
    local dir = helper.tmpdir()
    local data = ("0123456789abcdef"):rep(20000)   -- 320000 bytes
    helper.write_file(dir .. "/up", data)
    local out, err, rc = curl("-H 'Transfer-Encoding: chunked' --data-binary @"
                              .. dir .. "/up -D " .. dir .. "/h http://127.0.0.1:" .. port .. "/up")
    assert.equal(0, rc, err)
    assert.equal("POST /up 320000 " .. data, out)
    assert.truthy(helper.slurp(dir .. "/h"):find("X-TE: chunked", 1, true))
  end)

  it("answers Expect: 100-continue before the body", function()
    local port = spawn_server()
    local out, err, rc = curl("-v -H 'Expect: 100-continue' --data-binary hello "
                              .. "http://127.0.0.1:" .. port .. "/c")
    assert.equal(0, rc, err)
    assert.equal("POST /c 5 hello", out)
    assert.truthy(err:find("< HTTP/1.1 100 Continue", 1, true), err)
    assert.truthy(err:find("< X-Expect: 100-continue", 1, true), err)
  end)

  it("answers 400 to curl sending HTTP/1.1 without Host", function()
    local port = spawn_server()
    local out, err, rc = curl("-i -H 'Host:' http://127.0.0.1:" .. port .. "/nohost")
    assert.equal(0, rc, err)
    assert.truthy(out:find("^HTTP/1.1 400 Bad Request\r\n"), out)
    out, err, rc = curl("-i http://127.0.0.1:" .. port .. "/host")
    assert.equal(0, rc, err)
    assert.truthy(out:find("^HTTP/1.1 200 OK\r\n"), out)
  end)

  it("answers HEAD with the headers only", function()
    local port = spawn_server()
    local out, err, rc = curl("-I http://127.0.0.1:" .. port .. "/h")
    assert.equal(0, rc, err)
    assert.truthy(out:find("^HTTP/1.1 200 OK\r\n"), out)
    assert.truthy(out:find("Content-Length: 10\r\n", 1, true), out)   -- "HEAD /h 0 "
    assert.truthy(out:find("\r\n\r\n$"), out)
  end)

  it("streams a chunked reply", function()
    local port = spawn_server()
    local out, err, rc = curl("-i http://127.0.0.1:" .. port .. "/stream")
    assert.equal(0, rc, err)
    assert.truthy(out:find("Transfer-Encoding: chunked\r\n", 1, true), out)
    assert.truthy(out:find("\r\n\r\npart1\npart2\npart3\n$"), out)
  end)
end)

describe("http server", function()
  after_each(helper.cleanup)

  it("answers pipelined requests in order, each in its own coroutine", function()
    local srv, port = server()
    local ch = connect(port)
    ch:write("GET /sleep HTTP/1.1\r\nHost: x\r\n\r\n"
             .. "POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
             .. "GET /last HTTP/1.1\r\nHost: x\r\n\r\n")
    local t0 = event.now()
    local _, _, body1 = read_reply(ch)
    local _, h2, body2 = read_reply(ch)
    local _, _, body3 = read_reply(ch)
    assert.same({ "/sleep ", "/p abc", "/last " }, { body1, body2, body3 })
    assert.equal("POST", h2["x-method"])
    assert.truthy(event.now() - t0 < 1)
    ch:close()
    srv:close()
  end)

  -- Pipelined POSTs of the given body sizes to callbacks that wait until
  -- released: checks that reading pauses with `expected` requests parsed
  -- (the queue the connection keeps, and the callbacks started), then
  -- that every request is answered once released.
  local function assert_pipelined(opts, bodies, expected)
    local started, released, gates, enough = 0, false, {}, {}
    local srv, port = server(function(_, req)
      started = started + 1
      if started == expected then event.wakeup(enough) end
      if not released then
        local gate = {}
        gates[#gates + 1] = gate
        event.wait(gate, 30)
      end
      req:reply(200, nil, "ok")
    end, opts)
    local ch = connect(port)
    for _, size in ipairs(bodies) do
      ch:write("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: " .. size .. "\r\n\r\n"
               .. ("b"):rep(size))
    end
    assert.truthy(event.wait(enough, 10))
    local conn = next(srv.conns)
    local deadline = event.now() + 10   -- the rest of the bytes arrive
    while not conn._blocked and event.now() < deadline do event.sleep(0.01) end
    assert.is_true(conn._blocked)
    assert.same({ expected, expected }, { started, conn._qtail - conn._qhead + 1 })
    released = true
    for _, gate in ipairs(gates) do event.wakeup(gate) end
    for _ = 1, #bodies do assert.equal(200, (read_reply(ch))) end
    assert.equal(#bodies, started)
    ch:close()
    srv:close()
  end

  it("parses at most max_pipeline requests ahead of their replies", function()
    assert_pipelined({ max_pipeline = 3 }, { 0, 0, 0, 0, 0 }, 3)
    assert_pipelined({ max_pipeline = 4 }, { 0, 0, 0, 0, 0 }, 4)
  end)

  it("stops parsing ahead once the waiting bodies reach max_pipeline_body", function()
    -- under the limit: 999 bytes wait, so the third request is read too
    assert_pipelined({ max_pipeline_body = 1000 }, { 500, 499, 10, 10 }, 3)
    -- at it: 1000 bytes wait, the third waits for them
    assert_pipelined({ max_pipeline_body = 1000 }, { 500, 500, 10 }, 2)
    -- a request is read when none waits, whatever its size
    assert_pipelined({ max_pipeline_body = 10 }, { 5000, 0 }, 1)
    assert.has_error(function() http.listen("127.0.0.1", 0, echo_handler,
                                            { max_pipeline_body = -1 }) end,
                     "bad argument #4 to 'listen' (max_pipeline_body must be an integer >= 0)")
    assert.has_error(function() http.listen("127.0.0.1", 0, echo_handler,
                                            { max_pipeline = 0 }) end,
                     "bad argument #4 to 'listen' (max_pipeline must be an integer >= 1)")
  end)

  it("parses requests arriving byte by byte", function()
    local srv, port = server()
    local ch = connect(port)
    local request = "POST /bytes?x=1 HTTP/1.1\r\nHost: x\r\nX-Long-Header: "
                    .. ("h"):rep(300) .. "\r\nTransfer-Encoding: chunked\r\n\r\n"
                    .. "3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nTrailer: t\r\n\r\n"
    for i = 1, #request do
      ch:write(request:sub(i, i))
      if i % 7 == 0 then event.sleep(0) end   -- let the server read pieces
    end
    local status, _, body = read_reply(ch)
    assert.equal(200, status)
    assert.equal("/bytes?x=1 abcde", body)
    ch:close()
    srv:close()
  end)

  it("answers 400 to a malformed request and closes", function()
    local srv, port = server()
    for _, bad in ipairs({ "GARBAGE\r\n\r\n", "GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
                           "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: x\r\n\r\n",
                           "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n" }) do
      local ch = connect(port)
      ch:write(bad)
      assert.equal(400, (read_reply(ch)))
      await_close(ch)
    end
    srv:close()
  end)

  it("refuses what RFC 9112 refuses: 400 for names, Host; 505 for versions", function()
    local srv, port = server(function(_, req, method, _url, headers)
      req:reply(200, nil, method .. " " .. req.version .. " " .. tostring(headers.host))
    end)
    local cases = {
      -- a space before the colon: http-parser alone read this as chunked
      { 400, "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n"
             .. "3\r\nabc\r\n0\r\n\r\n" },
      { 400, "GET / HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n" },
      { 400, "GET / HTTP/1.1\r\nHost: x\r\nBad@Name: v\r\n\r\n" },
      { 400, "GET / HTTP/1.1\r\n\r\n" },                          -- no Host
      { 400, "GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n" },   -- two
      { 400, "GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n" },
      { 505, "GET / HTTP/9.9\r\nHost: x\r\n\r\n" },
      { 505, "GET / HTTP/2.0\r\nHost: x\r\n\r\n" },
      { 505, "GET / HTTP/0.9\r\nHost: x\r\n\r\n" },
      -- one transfer coding, chunked, once
      { 501, "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
             .. "0\r\n\r\n" },
      { 400, "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
             .. "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" },
      -- chunk data must end in CRLF: else "XX0..." hides a second request
      { 400, "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
             .. "3\r\nabcXX0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n" },
      -- and what stays allowed
      { 200, "GET / HTTP/1.0\r\n\r\n", "GET 10 nil" },
      { 200, "GET / HTTP/1.2\r\nHost: x\r\n\r\n", "GET 11 x" },   -- as 1.1
      { 200, "GET / HTTP/1.1\r\nHost: x\r\nX-Ok_!#$%&'*+.^`|~: 1\r\n\r\n", "GET 11 x" },
    }
    for _, case in ipairs(cases) do
      local ch = connect(port)
      ch:write(case[2])
      local status, headers, body = read_reply(ch)
      assert.equal(case[1], status, case[2])
      if case[3] then
        assert.equal(case[3], body)
      else
        assert.equal("close", headers.connection)
        await_close(ch)
      end
      ch:close()
    end
    srv:close()
  end)

  it("keeps chunked trailers apart from the headers (request.trailers)", function()
    local seen = {}
    local srv, port = server(function(_, req, _, _, headers, body)
      seen[#seen + 1] = { headers = headers, trailers = req.trailers, body = body }
      req:reply(204)
    end, { max_headers = 4 })
    local ch = connect(port)
    local head = "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                 .. "3\r\nabc\r\n0\r\n"
    ch:write(head .. "Host: evil\r\nX-T: 1\r\n\r\n", head .. "\r\n")
    assert.equal(204, (read_reply(ch)))
    assert.equal(204, (read_reply(ch)))
    assert.same({ host = "x", ["transfer-encoding"] = "chunked" }, seen[1].headers)
    assert.same({ host = "evil", ["x-t"] = "1" }, seen[1].trailers)
    assert.equal("abc", seen[1].body)
    assert.is_nil(seen[2].trailers)
    -- trailers count towards max_headers: 2 + 2 above, 2 + 3 here
    ch:write(head .. "A: 1\r\nB: 2\r\nC: 3\r\n\r\n")
    assert.equal(431, (read_reply(ch)))
    await_close(ch)
    -- a trailer name is a token too
    ch = connect(port)
    ch:write(head .. "Bad Name: 1\r\n\r\n")
    assert.equal(400, (read_reply(ch)))
    await_close(ch)
    srv:close()
  end)

  it("answers the good requests before a malformed one", function()
    local srv, port = server()
    local ch = connect(port)
    ch:write("GET /sleep HTTP/1.1\r\nHost: x\r\n\r\nBROKEN\r\n\r\n")
    local status, _, body = read_reply(ch)
    assert.equal(200, status)
    assert.equal("/sleep ", body)
    assert.equal(400, (read_reply(ch)))
    await_close(ch)
    srv:close()
  end)

  -- Each limit: a request at the limit passes, one byte or one item past
  -- it gets the limit's status.
  local function try(port, request)
    local ch = connect(port)
    ch:write(request)
    local status, headers, body = read_reply(ch)
    ch:close()
    return status, headers, body
  end

  it("limits the URL length (414)", function()
    local srv, port = server(nil, { max_url = 100 })
    local url = "/" .. ("u"):rep(99)
    assert.equal(200, try(port, "GET " .. url .. " HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert.equal(414, try(port, "GET " .. url .. "x HTTP/1.1\r\nHost: x\r\n\r\n"))
    srv:close()
  end)

  it("limits the header block size (431)", function()
    -- counted: URL + header names + header values ("/", "Host", "x", "X")
    local srv, port = server(nil, { max_header_size = 200 })
    local value = ("v"):rep(193)
    assert.equal(200, try(port, "GET / HTTP/1.1\r\nHost: x\r\nX: " .. value .. "\r\n\r\n"))
    assert.equal(431, try(port, "GET / HTTP/1.1\r\nHost: x\r\nX: " .. value .. "v\r\n\r\n"))
    srv:close()
  end)

  it("limits the header count (431)", function()
    local srv, port = server(nil, { max_headers = 5 })
    local five = ("H: x\r\n"):rep(4)   -- and Host
    assert.equal(200, try(port, "GET / HTTP/1.1\r\nHost: x\r\n" .. five .. "\r\n"))
    assert.equal(431, try(port, "GET / HTTP/1.1\r\nHost: x\r\n" .. five .. "H: x\r\n\r\n"))
    srv:close()
  end)

  it("limits the body size (413), from Content-Length before the body", function()
    local srv, port = server(nil, { max_body = 100 })
    local body = ("b"):rep(100)
    local status, _, reply = try(port, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" .. body)
    assert.equal(200, status)
    assert.equal("/ " .. body, reply)
    -- headers only: the 413 comes without waiting for the body
    assert.equal(413, try(port, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n\r\n"))
    local function chunked(n)
      return "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
             .. ("%x\r\n%s\r\n0\r\n\r\n"):format(n, ("c"):rep(n))
    end
    assert.equal(200, try(port, chunked(100)))
    assert.equal(413, try(port, chunked(101)))
    srv:close()
  end)

  it("turns a callback error into 500 and goes on serving", function()
    local logged = {}
    local srv, port = server(function(_, req, _, url)
      if url == "/boom" then error("kaboom") end
      if url == "/none" then return end
      req:reply(200, nil, "fine")
    end)
    local log = event.error
    event.error = function(msg) logged[#logged + 1] = msg end
    local ch = connect(port)
    ch:write("GET /boom HTTP/1.1\r\nHost: x\r\n\r\n",
             "GET /none HTTP/1.1\r\nHost: x\r\n\r\n",
             "GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
    local s1 = read_reply(ch)
    local s2 = read_reply(ch)
    local s3, _, b3 = read_reply(ch)
    event.error = log
    assert.same({ 500, 500, 200, "fine" }, { s1, s2, s3, b3 })
    assert.truthy(logged[1]:find("kaboom", 1, true))
    assert.truthy(logged[1]:find("stack traceback", 1, true))
    assert.truthy(logged[2]:find("without replying", 1, true))
    ch:close()
    srv:close()
  end)

  it("lets a callback cut off by handler_timeout reply without raising", function()
    local late = {}
    local srv, port = server(function(_, req)
      late.wait = { event.sleep(30) }   -- cancelled at the timeout
      late.reply = { req:reply(200, nil, "too late") }
      late.write = { req:write("too late") }
      event.wakeup(late)
    end, { handler_timeout = 0.2 })
    local log, logged = event.error, {}
    event.error = function(msg) logged[#logged + 1] = msg end
    local ch = connect(port)
    ch:write("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    local status = read_reply(ch)
    assert.truthy(late.write or event.wait(late, 10))
    event.error = log
    assert.equal(503, status)
    assert.same({ nil, "cancelled", "cancelled" }, late.wait)
    assert.same({ nil, "timeout", "timeout" }, late.reply)
    assert.same({ nil, "timeout", "timeout" }, late.write)
    assert.equal(1, #logged)   -- "no reply after", and no second error
    ch:close()
    srv:close()
  end)

  it("gives its own 500 and 503 a Content-Type and drops the callback's headers", function()
    local srv, port = server(function(_, req, _, url)
      req:reply_header("Content-Type", "application/json")
      req:reply_header("Content-Length", 1000)
      if url == "/boom" then error("kaboom") end
      event.sleep(30)
    end, { handler_timeout = 0.2 })
    local log = event.error
    event.error = function() end
    local ch = connect(port)
    ch:write("GET /boom HTTP/1.1\r\nHost: x\r\n\r\nGET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    local s1, h1, b1 = read_reply(ch)
    local s2, h2, b2 = read_reply(ch)
    event.error = log
    assert.same({ 500, "text/plain", "Internal Server Error\n" },
                { s1, h1["content-type"], b1 })
    assert.same({ 503, "text/plain", "Service Unavailable\n" },
                { s2, h2["content-type"], b2 })
    assert.equal(tostring(#b1), h1["content-length"])
    ch:close()
    srv:close()
  end)

  it("times a streamed reply between writes, not as a whole (handler_timeout)", function()
    local srv, port = server(function(_, req, _, url)
      local pause = url == "/steady" and 0.1 or 2
      req:write("first\n")
      for i = 1, 10 do   -- 1 s in all when steady: past handler_timeout
        event.sleep(pause)
        if not req:write(("part %d\n"):format(i)) then return end
      end
      req:finish()
    end, { handler_timeout = 0.4 })
    local log = event.error
    event.error = function() end
    local steady = connect(port)
    steady:write("GET /steady HTTP/1.1\r\nHost: x\r\n\r\n")
    local status, _, body = read_reply(steady)
    assert.equal(200, status)
    assert.truthy(body:find("part 10\n", 1, true), body)
    steady:close()
    -- a stream that stalls past handler_timeout is cut
    local stalled = connect(port)
    stalled:write("GET /stalled HTTP/1.1\r\nHost: x\r\n\r\n")
    local took = await_close(stalled, 10)
    event.error = log
    assert.truthy(took < 1.9, took)
    srv:close()
  end)

  it("logs an error raised after the reply and keeps the connection", function()
    local logged = {}
    local srv, port = server(function(_, req, _, url)
      req:reply(200, nil, url)
      if url == "/late" then error("after the reply") end
    end)
    local log = event.error
    event.error = function(msg) logged[#logged + 1] = msg end
    local ch = connect(port)
    ch:write("GET /late HTTP/1.1\r\nHost: x\r\n\r\nGET /next HTTP/1.1\r\nHost: x\r\n\r\n")
    local s1, _, b1 = read_reply(ch)
    local s2, _, b2 = read_reply(ch)
    event.error = log
    assert.same({ 200, "/late", 200, "/next" }, { s1, b1, s2, b2 })
    assert.equal(1, #logged)
    assert.truthy(logged[1]:find("GET /late failed: .*after the reply"), logged[1])
    ch:close()
    srv:close()
  end)

  it("formats reply heads: reasons, Date, Server, framing, Connection", function()
    -- the status line and the header lines of one reply, as sent
    local function read_head(ch)
      local status = assert(ch:wait_line(10))
      local lines = {}
      while true do
        local line = assert(ch:wait_line(10))
        if line == "" then return status, lines end
        lines[#lines + 1] = line
      end
    end
    local function count(lines, pattern)
      local n = 0
      for _, line in ipairs(lines) do
        if line:find(pattern) then n = n + 1 end
      end
      return n
    end
    local srv, port = server(function(_, req, _, url)
      if url == "/made" then return req:reply(201, "Made It", "x") end
      if url == "/odd" then return req:reply(299) end
      if url == "/own-length" then
        req:reply_header("Content-Length", 3)
        return req:reply(200, nil, "abc")
      end
      if url == "/not-modified" then return req:reply(304) end
      req:reply_header("Connection", "close")
      req:reply(200, nil, "bye")
    end, { server = "test-server/1" })
    local ch = connect(port)
    ch:write("GET /made HTTP/1.1\r\nHost: x\r\n\r\nGET /odd HTTP/1.1\r\nHost: x\r\n\r\n"
             .. "GET /own-length HTTP/1.1\r\nHost: x\r\n\r\nGET /not-modified HTTP/1.1\r\nHost: x\r\n\r\n"
             .. "GET /close HTTP/1.1\r\nHost: x\r\n\r\n")
    -- per reply: status line, { header line pattern = times }, body
    local expected = {
      { "HTTP/1.1 201 Made It", {
          ["^Date: %a%a%a, %d%d %a%a%a %d%d%d%d %d%d:%d%d:%d%d GMT$"] = 1,
          ["^Server: test%-server/1$"] = 1, ["^Content%-Length: 1$"] = 1,
          ["^Connection"] = 0 }, "x" },
      { "HTTP/1.1 299 Unknown", { ["^Content%-Length: 0$"] = 1 }, "" },
      { "HTTP/1.1 200 OK", { ["^Content%-Length"] = 1 }, "abc" },
      { "HTTP/1.1 304 Not Modified", { ["^Content%-Length"] = 0 }, "" },
      { "HTTP/1.1 200 OK", { ["^Connection: close$"] = 1 }, "bye" },
    }
    for _, e in ipairs(expected) do
      local status, lines = read_head(ch)
      assert.equal(e[1], status)
      for pattern, times in pairs(e[2]) do
        assert.equal(times, count(lines, pattern), e[1] .. " " .. pattern)
      end
      if e[3] ~= "" then assert.equal(e[3], ch:wait_read(#e[3], 10)) end
    end
    await_close(ch)
    srv:close()
  end)

  it("answers 500 to a reason phrase that would inject a header", function()
    local logged = {}
    local srv, port = server(function(_, req, _, url)
      if url == "/stream" then req:start(200, "OK\r\nX-Evil: 1") end
      req:reply(200, "OK\r\nX-Evil: 1", "no")
    end)
    local log = event.error
    event.error = function(msg) logged[#logged + 1] = msg end
    local ch = connect(port)
    ch:write("GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    local s1, h1 = read_reply(ch)
    local s2, h2 = read_reply(ch)
    event.error = log
    assert.same({ 500, 500 }, { s1, s2 })
    assert.is_nil(h1["x-evil"])
    assert.is_nil(h2["x-evil"])
    assert.truthy(logged[1]:find("bad reason phrase", 1, true), logged[1])
    ch:close()
    srv:close()
  end)

  it("checks reply headers: token names, values without CR, LF or NUL", function()
    local errors = {}
    local srv, port = server(function(_, req)
      for _, h in ipairs({ { "Bad Name", "x" }, { "", "x" }, { 42, "x" },
                           { "X-A", "a\r\nX-Evil: 1" }, { "X-B", "b\0" },
                           { "X-C", { "ok", "c\n" } }, { "X-D", true } }) do
        local ok, err = pcall(req.reply_header, req, h[1], h[2])
        errors[#errors + 1] = not ok and err or "accepted"
      end
      req:reply_header("X-Number", 7)
      req:reply_header("X-List", { "one", 2 })
      req:reply(200, nil, "ok")
    end)
    local ch = connect(port)
    ch:write("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    local status, headers = read_reply(ch)
    assert.equal(200, status)
    assert.equal("7", headers["x-number"])
    assert.equal("2", headers["x-list"])   -- read_reply keeps the last line
    assert.is_nil(headers["x-evil"])
    assert.is_nil(headers["x-a"])
    assert.equal(7, #errors)
    for i = 1, 3 do assert.truthy(errors[i]:find("(header name expected)", 1, true), errors[i]) end
    for i = 4, 6 do
      assert.truthy(errors[i]:find("(header value without CR, LF or NUL expected)", 1, true),
                    errors[i])
    end
    assert.truthy(errors[7]:find("string, number or list of them expected", 1, true), errors[7])
    ch:close()
    srv:close()
  end)

  it("raises on a bad status, then still takes a good reply", function()
    local errors = {}
    local srv, port = server(function(_, req)
      for _, status in ipairs({ "200", 99, 1000, 200.5, false }) do
        local ok, err = pcall(req.reply, req, status, nil, "x")
        errors[#errors + 1] = not ok and err or "accepted"
      end
      req:reply(201, nil, 42)   -- a body that is not a string is tostring'd
    end)
    local ch = connect(port)
    ch:write("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    local status, _, body = read_reply(ch)
    assert.same({ 201, "42" }, { status, body })
    assert.equal(5, #errors)
    for _, err in ipairs(errors) do
      assert.truthy(err:find("bad argument #1 to 'reply' (status code expected)", 1, true), err)
    end
    ch:close()
    srv:close()
  end)

  it("refuses a Server header value with CR or LF", function()
    assert.has_error(function()
      http.listen("127.0.0.1", 0, function() end, { server = "x\r\nX-Evil: 1" })
    end, "bad argument #4 to 'listen' (server must be false or a string without CR, LF or NUL)")
  end)

  it("sends no Server header with server = false", function()
    local srv, port = server(function(_, req) req:reply(200) end, { server = false })
    local ch = connect(port)
    ch:write("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    local status, headers = read_reply(ch)
    assert.equal(200, status)
    assert.is_nil(headers.server)
    assert.equal("keep-alive", headers.connection)
    ch:write("GET / HTTP/1.0\r\n\r\n")   -- still open: keep-alive held
    assert.equal(200, (read_reply(ch)))
    await_close(ch)
    srv:close()
  end)

  it("answers 503 when a callback runs past the handler timeout", function()
    local cancelled = {}
    local srv, port = server(function(_, req)
      local ok, err = event.sleep(30)
      cancelled[#cancelled + 1] = err
      if ok then req:reply(200) end
    end, { handler_timeout = 0.2 })
    local log = event.error
    event.error = function() end
    local ch = connect(port)
    ch:write("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    local t0 = event.now()
    local status = read_reply(ch)
    event.error = log
    assert.equal(503, status)
    assert.truthy(event.now() - t0 < 2)
    assert.same({ "cancelled" }, cancelled)
    ch:close()
    srv:close()
  end)

  it("cuts off a slowloris client (408) while serving the others", function()
    local srv, port = server(nil, { header_timeout = 0.5 })
    local slow = connect(port)
    local result = {}
    local slow_task = event.fork(function()
      local request = "GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " .. ("s"):rep(100) .. "\r\n\r\n"
      for i = 1, #request do   -- a byte every 20 ms: 2.6 s in all
        if not slow:write(request:sub(i, i)) then break end
        if slow:closed() then break end
        event.sleep(0.02)
      end
    end)
    local reader = event.fork(function()
      local t0 = event.now()
      result.status = read_reply(slow)
      result.closed_after = await_close(slow) + (event.now() - t0)
    end)
    -- meanwhile another client is served again and again
    local ch = connect(port)
    local served = 0
    while not result.closed_after do
      ch:write("GET /fast HTTP/1.1\r\nHost: x\r\n\r\n")
      local status = read_reply(ch)
      assert.equal(200, status)
      served = served + 1
      event.sleep(0.01)
    end
    reader:join()
    slow_task:join()
    assert.equal(408, result.status)
    assert.truthy(result.closed_after < 2, result.closed_after)
    assert.truthy(served > 10, served)
    ch:close()
    srv:close()
  end)

  it("answers 408 to a request body that trickles in past body_timeout", function()
    local srv, port = server(nil, { body_timeout = 0.4 })
    -- within the limit: a body sent in two parts 0.1 s apart is served
    local ok = connect(port)
    ok:write("POST /ok HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12345")
    event.sleep(0.1)
    ok:write("67890")
    local status, _, body = read_reply(ok)
    assert.equal(200, status)
    assert.matches("1234567890", body, 1, true)
    ok:close()
    -- past it: a byte every 50 ms of a 100-byte body
    local slow = connect(port)
    slow:write("POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
    local t0 = event.now()
    local writer = event.fork(function()
      for _ = 1, 100 do
        if slow:closed() or not slow:write("x") then break end
        event.sleep(0.05)
      end
    end)
    assert.equal(408, (read_reply(slow)))
    local took = await_close(slow) + (event.now() - t0)
    assert.truthy(took > 0.3 and took < 3, took)
    writer:cancel()
    srv:close()
  end)

  it("answers 408 to a client that sends only empty lines past header_timeout", function()
    -- empty lines before a request line are skipped by the parser; they
    -- must not stop the header timeout, on a new connection or between
    -- keep-alive requests (idle_timeout is reset by every byte)
    local srv, port = server(nil, { header_timeout = 0.4, idle_timeout = 30 })
    for _, first in ipairs({ "", "GET / HTTP/1.1\r\nHost: x\r\n\r\n" }) do
      local ch = connect(port)
      if first ~= "" then
        ch:write(first)
        assert.equal(200, (read_reply(ch)))
      end
      local writer = event.fork(function()
        for _ = 1, 100 do   -- a CRLF every 0.1 s, for up to 10 s
          if ch:closed() or not ch:write("\r\n") then break end
          event.sleep(0.1)
        end
      end)
      local t0 = event.now()
      assert.equal(408, (read_reply(ch)))
      local took = await_close(ch) + (event.now() - t0)
      assert.truthy(took < 5, took)
      writer:cancel()
    end
    srv:close()
  end)

  it("answers 408 to a connection that sends nothing within header_timeout", function()
    local srv, port = server(nil, { header_timeout = 0.3 })
    local ch = connect(port)
    local t0 = event.now()
    assert.equal(408, (read_reply(ch)))
    await_close(ch)
    local took = event.now() - t0
    assert.truthy(took > 0.25 and took < 2, took)
    srv:close()
  end)

  it("closes idle keep-alive connections after idle_timeout", function()
    local srv, port = server(nil, { idle_timeout = 0.3 })
    local ch = connect(port)
    ch:write("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert.equal(200, (read_reply(ch)))
    local took = await_close(ch, 5)
    assert.truthy(took > 0.2 and took < 2, took)
    srv:close()
  end)

  -- A 16 MiB reply: far more than the socket buffers hold.
  local BIG = 16 * 1024 * 1024
  local function big_handler(_, req) req:reply(200, nil, ("b"):rep(BIG)) end

  it("closes a connection whose client stops reading (send_timeout)", function()
    local srv, port = server(big_handler, { send_timeout = 0.2 })
    local ch = connect(port)
    ch:set_limits({ max_input = 1 })   -- reads (next to) nothing
    ch:write("GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
    eventually(function() return srv:stats().connections == 1 end, "connection")
    eventually(function() return srv:stats().connections == 0 end, "send timeout")
    ch:close_immediately()
    srv:close()
  end)

  it("keeps a slow client that goes on reading (send_timeout)", function()
    local srv, port = server(big_handler, { send_timeout = 0.3 })
    local ch = connect(port)
    ch:set_limits({ max_input = 1024 * 1024 })
    ch:write("GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
    local got, t0 = 0, event.now()
    while got <= BIG do   -- the head comes first: the body's end is past BIG
      local bytes = assert(ch:wait_read(nil, 10))
      got = got + #bytes
      if got < BIG / 2 then event.sleep(0.1) end   -- slow, then catching up
    end
    assert.truthy(event.now() - t0 > 0.3)
    assert.equal(1, srv:stats().connections)   -- still open (keep-alive)
    ch:close()
    srv:close()
  end)

  it("limits concurrent connections (503)", function()
    local srv, port = server(nil, { max_connections = 2 })
    local a, b = connect(port), connect(port)
    a:write("GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
    b:write("GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
    assert.equal(200, (read_reply(a)))
    assert.equal(200, (read_reply(b)))
    local c = connect(port)
    assert.equal(503, (read_reply(c)))
    await_close(c)
    a:close()
    b:close()
    -- once they are gone, new connections are served again
    eventually(function() return srv:stats().connections == 0 end, "disconnects")
    local d = connect(port)
    d:write("GET /d HTTP/1.1\r\nHost: x\r\n\r\n")
    assert.equal(200, (read_reply(d)))
    assert.equal(1, srv:stats().connections)
    d:close()
    srv:close()
  end)

  it("answers HEAD without a body and keeps the connection", function()
    local srv, port = server()
    local ch = connect(port)
    ch:write("HEAD /h HTTP/1.1\r\nHost: x\r\n\r\nGET /g HTTP/1.1\r\nHost: x\r\n\r\n")
    local status, headers, body = read_reply(ch, true)
    assert.equal(200, status)
    assert.equal("3", headers["content-length"])
    assert.equal("", body)
    local _, _, body2 = read_reply(ch)
    assert.equal("/g ", body2)
    ch:close()
    srv:close()
  end)

  it("keeps repeated headers and looks names up in any case", function()
    local seen
    local srv, port = server(function(_, req, _, _, headers)
      seen = { headers = headers, cookie = req:header("COOKIE"),
               all = http.header_values(headers, "Cookie") }
      req:reply_header("Set-Cookie", { "a=1", "b=2" })
      req:reply(204)
    end)
    local ch = connect(port)
    ch:write("GET / HTTP/1.1\r\nHost: x\r\nCookie: a\r\nX-One: 1\r\ncookie: b\r\n\r\n")
    local status = read_reply(ch)
    assert.equal(204, status)
    assert.same({ "a", "b" }, seen.headers.cookie)
    assert.equal("1", seen.headers["x-one"])
    assert.equal("a, b", seen.cookie)
    assert.same({ "a", "b" }, seen.all)
    ch:close()
    srv:close()
  end)

  it("keeps repeated headers in order among many headers", function()
    local seen
    local srv, port = server(function(_, req, _, _, headers)
      seen = headers
      req:reply(204)
    end)
    -- past 32 headers repeated names are grouped another way (lhttp.c)
    for _, total in ipairs({ 10, 32, 33, 40 }) do
      local lines = { "GET / HTTP/1.0" }   -- no Host: every header counted here
      for i = 1, total do
        lines[#lines + 1] = i % 3 == 0 and ("X-Rep: v" .. i) or ("X-H" .. i .. ": " .. i)
      end
      local ch = connect(port)
      ch:write(table.concat(lines, "\r\n") .. "\r\n\r\n")
      assert.equal(204, (read_reply(ch)))
      local expected = {}
      for i = 3, total, 3 do expected[#expected + 1] = "v" .. i end
      assert.same(expected, seen["x-rep"])
      assert.equal("1", seen["x-h1"])
      local last = total % 3 == 0 and total - 1 or total   -- not an X-Rep line
      assert.equal(tostring(last), seen["x-h" .. last])
      local n = 0
      for _ in pairs(seen) do n = n + 1 end
      assert.equal(total - #expected + 1, n)
      ch:close()
    end
    srv:close()
  end)

  it("serves 500 keep-alive connections x 20 requests", function()
    local srv, port = server(function(_, req, _, url)
      req:reply(200, nil, url)
    end)
    local CONNS, REQS = 500, 20
    local ok, tasks = 0, {}
    for c = 1, CONNS do
      tasks[c] = event.fork(function()
        local ch = assert(event.connect("127.0.0.1", port))
        for r = 1, REQS do
          local url = "/" .. c .. "/" .. r
          ch:write("GET " .. url .. " HTTP/1.1\r\nHost: x\r\n\r\n")
          local status, _, body = read_reply(ch)
          if status == 200 and body == url then ok = ok + 1 end
        end
        ch:close()
      end)
    end
    for _, t in ipairs(tasks) do t:join() end
    assert.equal(CONNS * REQS, ok)
    srv:close()
  end)

  it("raises on bad arguments", function()
    assert.has_error(function() http.listen("127.0.0.1", 0, "nope") end)
    assert.has_error(function() http.listen("127.0.0.1", 0, function() end, { bogus = 1 }) end)
    assert.has_error(function() http.listen("127.0.0.1", 0, function() end, { max_url = 0 }) end)
    assert.has_error(function() http.listen("127.0.0.1", 0, function() end, { send_timeout = -1 }) end)
    assert.has_error(function() http.listen("127.0.0.1", 0, function() end, { send_timeout = "x" }) end)
    local srv = assert(http.listen("127.0.0.1", 0, function() end, { send_timeout = false }))
    srv:close()
  end)
end)

describe("http client", function()
  after_each(helper.cleanup)

  it("talks to the evlua server, reusing connections", function()
    local conns
    local srv, port = server(function(_, req, method, url, _, body)
      if url == "/chunked" then
        req:write("one,")
        req:write("two")
        return req:finish()
      end
      req:reply(201, "Made", method .. " " .. body)
    end)
    local base = "http://127.0.0.1:" .. port
    local status, headers, body = http.request{ url = base .. "/x", method = "POST", body = "hi" }
    assert.same({ 201, "POST hi" }, { status, body })
    assert.truthy(headers.date)
    conns = srv:stats().connections
    for _ = 1, 5 do assert.equal(201, (http.request{ url = base .. "/y" })) end
    assert.equal(conns, srv:stats().connections)   -- the same connection
    status, headers, body = http.request{ url = base .. "/chunked" }
    assert.same({ 200, "chunked", "one,two" }, { status, headers["transfer-encoding"], body })
    status, headers, body = http.request{ url = base .. "/z", method = "HEAD" }
    assert.same({ 201, "5", "" }, { status, headers["content-length"], body })   -- "HEAD "
    http.close_idle()
    srv:close()
  end)

  it("follows redirects only when asked", function()
    local srv, port = server(function(_, req, _, url)
      if url == "/old" then
        req:reply_header("Location", "/new")
        return req:reply(302)
      end
      req:reply(200, nil, "new place")
    end)
    local base = "http://127.0.0.1:" .. port
    local status, headers = http.request{ url = base .. "/old" }
    assert.same({ 302, "/new" }, { status, headers.location })
    local s2, _, body = http.request{ url = base .. "/old", redirects = 3 }
    assert.same({ 200, "new place" }, { s2, body })
    http.close_idle()
    srv:close()
  end)

  it("opens a new connection when the server closed the pooled one", function()
    local srv, port = server(nil, { idle_timeout = 0.1 })
    local base = "http://127.0.0.1:" .. port
    assert.equal(200, (http.request{ url = base .. "/1" }))
    -- the server drops the idle connection; the pooled one is now stale
    eventually(function() return srv:stats().connections == 0 end, "idle close")
    assert.equal(200, (http.request{ url = base .. "/2" }))
    http.close_idle()
    srv:close()
  end)

  it("returns nil, err for refused connections, timeouts and bad urls", function()
    local port = helper.free_port()
    local ok, err, code = http.request{ url = "http://127.0.0.1:" .. port .. "/" }
    assert.is_nil(ok)
    assert.equal("connection refused", err)
    assert.equal("ECONNREFUSED", code)   -- callers compare the code
    local srv, sport = server(function() event.sleep(5) end)
    ok, err, code = http.request{ url = "http://127.0.0.1:" .. sport .. "/",
                                  timeout = 0.2 }
    assert.same({ nil, "timeout", "timeout" }, { ok, err, code })
    assert.same({ nil, "unsupported scheme: ftp", "bad_url" },
                { http.request{ url = "ftp://x/" } })
    assert.same({ nil, "invalid url", "bad_url" }, { http.request{ url = "nope" } })
    local garbage = assert(event.listen("127.0.0.1", 0, function(_, ch)
      ch:write("NOT HTTP AT ALL\r\n\r\n")
    end))
    ok, err, code = http.request{ url = "http://127.0.0.1:" .. garbage:port() .. "/",
                                  timeout = 5 }
    assert.is_nil(ok)
    assert.matches("^bad response: ", err)
    assert.equal("protocol", code)
    garbage:close()
    assert.has_error(function() http.request{ url = "http://x/", method = 1 } end)
    srv:close()
  end)

  it("fetches a static file from nginx", function()
    local dir = helper.tmpdir()
    local port = helper.free_port()
    local data = ("nginx static file\n"):rep(5000)
    helper.write_file(dir .. "/file.txt", data)
    helper.write_file(dir .. "/nginx.conf", ([[
daemon off;
worker_processes 1;
pid %s/nginx.pid;
error_log %s/error.log;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path %s;
  proxy_temp_path %s;
  fastcgi_temp_path %s;
  uwsgi_temp_path %s;
  scgi_temp_path %s;
  server {
    listen 127.0.0.1:%d;
    root %s;
    location /chunky { chunked_transfer_encoding on; return 200 "short"; }
  }
}
]]):format(dir, dir, dir, dir, dir, dir, dir, port, dir))
    local p = io.popen(("exec timeout 60 /usr/sbin/nginx -p %s -c %s/nginx.conf "
                        .. ">%s/out 2>&1 & echo $!"):format(dir, dir, dir))
    local pid = p:read("l")
    p:close()
    finally(function() helper.kill(pid) end)
    -- nginx is up once it accepts connections
    local status, headers, body
    for _ = 1, 500 do
      status, headers, body = http.request{ url = "http://127.0.0.1:" .. port .. "/file.txt" }
      if status then break end
      event.sleep(0.01)
    end
    assert.equal(200, status, headers)
    assert.equal(data, body)
    assert.truthy(headers.server:find("nginx", 1, true))
    status = http.request{ url = "http://127.0.0.1:" .. port .. "/missing" }
    assert.equal(404, status)
    status, headers, body = http.request{ url = "http://127.0.0.1:" .. port .. "/file.txt",
                                          method = "HEAD" }
    assert.same({ 200, tostring(#data), "" }, { status, headers["content-length"], body })
    http.close_idle()
  end)
end)

describe("http helpers", function()
  it("parses URLs and query strings with percent-decoding", function()
    local u = http.parse_url("http://example.com:8080/a%20b/c+d?x=1&y=a+b&x=2&flag#frag")
    assert.equal("http", u.scheme)
    assert.equal("example.com", u.host)
    assert.equal(8080, u.port)
    assert.equal("/a b/c+d", u.path)
    assert.equal("/a%20b/c+d", u.raw_path)
    assert.same({ x = { "1", "2" }, y = "a b", flag = "" }, u.query)
    assert.equal("frag", u.fragment)
    u = http.parse_url("/only/path")
    assert.same({ "/only/path", {} }, { u.path, u.query })
    assert.equal(80, http.parse_url("http://[::1]/").port)
    assert.equal("::1", http.parse_url("http://[::1]:81/").host)
    assert.same({ nil, "invalid url", "bad_url" }, { http.parse_url("nope") })
    assert.same({ nil, "invalid url", "bad_url" }, { http.parse_url("http://:80/") })
    assert.same({ nil, "invalid url", "bad_url" }, { http.parse_url("http://h:70000/") })
    assert.same({ nil, "invalid url", "bad_url" }, { http.parse_url("http://h:8x/") })
    assert.same({ "h", 80 }, { http.parse_url("http://h:/").host, http.parse_url("http://h:/").port })
  end)

  it("parses a URL in time linear in its length", function()
    -- a host of digits, then a bad port: the split used to backtrack over
    -- every digit from every digit (a megabyte then took hours, not ms)
    local digits = ("9"):rep(1000000)
    assert.same({ nil, "invalid url", "bad_url" },
                { http.parse_url("http://" .. digits .. ":9x/") })
    assert.equal(digits, http.parse_url("http://" .. digits .. ":99/").host)
    assert.equal("a b&c=d%", http.url_decode("a%20b%26c%3dd%"))
    assert.equal("a%20b%26c%3Dd", http.url_encode("a b&c=d"))
    assert.same({ ["a b"] = "c&d" }, http.parse_query("a+b=c%26d"))
    assert.equal("OK", http.status_text(200))
    assert.equal("Not Found", http.status_text(404))
  end)
end)

describe("http limits on input that is still incomplete", function()
  after_each(helper.cleanup)

  -- Send `head` (never finished) and read the reply: it must come
  -- without the rest of the request, then the connection closes.
  local function refused(opts, head)
    local srv, port = server(nil, opts)
    local ch = connect(port)
    assert.is_true(ch:write(head))
    local status = read_reply(ch)
    local data = ch:wait_read(nil, 10)
    assert.is_nil(data)
    ch:close()
    srv:close()
    return status
  end

  it("431 for a header block past max_header_size before its end",
     function()
    assert.equal(431, refused({ max_header_size = 200 },
      "GET / HTTP/1.1\r\nHost: x\r\nX: " .. ("v"):rep(300)))
    assert.equal(431, refused({ max_header_size = 200 },
      "GET / HTTP/1.1\r\nHost: x\r\n" .. ("N"):rep(300)))
  end)

  it("414 for a URL past max_url before the request line ends", function()
    assert.equal(414, refused({ max_url = 100 },
      "GET /" .. ("u"):rep(200)))
  end)

  it("413 for a chunked body past max_body before its last chunk",
     function()
    assert.equal(413, refused({ max_body = 100 },
      "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
      .. "40\r\n" .. ("c"):rep(64) .. "\r\n40\r\n" .. ("c"):rep(64)))
    -- a body of Content-Length, partly sent, within the limit: it waits
    local srv, port = server(nil, { max_body = 100 })
    local ch = connect(port)
    assert.is_true(ch:write("POST / HTTP/1.1\r\nHost: x\r\n"
                            .. "Content-Length: 100\r\n\r\n"
                            .. ("b"):rep(50)))
    local data, err = ch:wait_read(nil, 0.2)
    assert.is_nil(data)
    assert.equal("timeout", err)
    assert.is_true(ch:write(("b"):rep(50)))
    local status, _, body = read_reply(ch)
    assert.equal(200, status)
    assert.equal("/ " .. ("b"):rep(100), body)
    ch:close()
    srv:close()
  end)
end)

describe("http reply status lines", function()
  after_each(helper.cleanup)

  local REASONS = {}
  for code, reason in ([[200=OK;201=Created;202=Accepted;
203=Non-Authoritative Information;204=No Content;205=Reset Content;
206=Partial Content;207=Multi-Status;208=Already Reported;226=IM Used;
300=Multiple Choices;301=Moved Permanently;302=Found;303=See Other;
304=Not Modified;305=Use Proxy;307=Temporary Redirect;
308=Permanent Redirect;400=Bad Request;401=Unauthorized;
402=Payment Required;403=Forbidden;404=Not Found;405=Method Not Allowed;
406=Not Acceptable;407=Proxy Authentication Required;408=Request Timeout;
409=Conflict;410=Gone;411=Length Required;412=Precondition Failed;
413=Payload Too Large;414=URI Too Long;415=Unsupported Media Type;
416=Range Not Satisfiable;417=Expectation Failed;421=Misdirected Request;
422=Unprocessable Entity;423=Locked;424=Failed Dependency;
426=Upgrade Required;428=Precondition Required;429=Too Many Requests;
431=Request Header Fields Too Large;451=Unavailable For Legal Reasons;
500=Internal Server Error;501=Not Implemented;502=Bad Gateway;
503=Service Unavailable;504=Gateway Timeout;
505=HTTP Version Not Supported;506=Variant Also Negotiates;
507=Insufficient Storage;508=Loop Detected;510=Not Extended;
511=Network Authentication Required]]):gmatch("(%d+)=([^;]+)") do
    REASONS[tonumber(code)] = reason
  end

  -- GET /CODE[/REASON] answers CODE with REASON (or the standard one).
  local function status_server()
    return server(function(_, req, _, url)
      local code, reason = url:match("^/(%d+)/?(.*)$")
      req:reply(tonumber(code), reason ~= "" and reason or nil, "body")
    end)
  end

  local function status_line(port, path)
    local ch = connect(port)
    assert.is_true(ch:write("GET " .. path .. " HTTP/1.1\r\nHost: x\r\n"
                            .. "Connection: close\r\n\r\n"))
    local line = ch:wait_line(10)
    ch:close()
    return line
  end

  it("gives every standard status its reason phrase", function()
    local srv, port = status_server()
    local n = 0
    for code, reason in pairs(REASONS) do
      assert.equal(("HTTP/1.1 %d %s"):format(code, reason),
                   status_line(port, "/" .. code))
      n = n + 1
    end
    assert.equal(56, n)
    srv:close()
  end)

  it("says Unknown for a code without a phrase, keeps a reason given",
     function()
    local srv, port = status_server()
    assert.equal("HTTP/1.1 299 Unknown", status_line(port, "/299"))
    assert.equal("HTTP/1.1 200 Fine", status_line(port, "/200/Fine"))
    assert.equal("HTTP/1.1 404 Not%20Found",
                 status_line(port, "/404/Not%20Found"))
    assert.equal("HTTP/1.1 404 Nope", status_line(port, "/404/Nope"))
    -- twice in the same second: the cached prefix
    assert.equal("HTTP/1.1 404 Not Found", status_line(port, "/404"))
    assert.equal("HTTP/1.1 404 Not Found", status_line(port, "/404"))
    srv:close()
  end)
end)

describe("http reply heads, uncommon cases", function()
  after_each(helper.cleanup)

  it("takes every token character in a header name", function()
    local name = "X-09az_AZ!#$%&'*+.^`|~"
    local srv, port = server(function(_, req)
      req:reply_header(name, "v")
      assert.has_error(function() req:reply_header("X(", "v") end)
      assert.has_error(function() req:reply_header("X@", "v") end)
      req:reply(200, nil, "ok")
    end)
    local ch = connect(port)
    assert.is_true(ch:write("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
    local status, headers = read_reply(ch)
    assert.equal(200, status)
    assert.equal("v", headers[name:lower()])
    ch:close()
    srv:close()
  end)

  it("formats the status line itself for a long Server value", function()
    local long = ("s"):rep(300)
    local srv, port = server(function(_, req, _, url)
      local code = tonumber(url:match("%d+"))
      req:reply(code, url:find("/r$") and "Mine" or nil, "ok")
    end, { server = long })
    for path, want in pairs({ ["/404"] = "HTTP/1.1 404 Not Found",
                              ["/299"] = "HTTP/1.1 299 Unknown",
                              ["/200/r"] = "HTTP/1.1 200 Mine" }) do
      local ch = connect(port)
      assert.is_true(ch:write("GET " .. path .. " HTTP/1.1\r\nHost: x\r\n\r\n"))
      assert.equal(want, ch:wait_line(10))
      local server_header
      repeat
        local h = assert(ch:wait_line(10))
        server_header = server_header or h:match("^Server: (.*)$")
      until h == ""
      assert.equal(long, server_header)
      ch:close()
    end
    srv:close()
  end)
end)
