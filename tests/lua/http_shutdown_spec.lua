-- tests/lua/http_shutdown_spec.lua - httpd:shutdown: stop accepting, let
-- the requests in flight finish, then return; cut them at the timeout.
local event = require "event"
local http = require "evlua.http"
local helper = require "helper"

local REQUEST = "GET %s HTTP/1.1\r\nHost: localhost\r\n\r\n"

-- Read one reply with a Content-Length body: status, body.
local function read_reply(ch)
  local line = assert(ch:wait_line(10))
  local status = tonumber(line:match("^HTTP/1%.1 (%d+)"))
  local length = 0
  while true do
    local h = assert(ch:wait_line(10))
    if h == "" then break end
    length = tonumber(h:match("^[Cc]ontent%-[Ll]ength: (%d+)")) or length
  end
  return status, length > 0 and assert(ch:wait_read(length, 10)) or ""
end

describe("httpd:shutdown", function()
  local release, entered, server

  before_each(function()
    release, entered = {}, false
    server = assert(http.listen("127.0.0.1", 0, function(_, request)
      if request.url == "/slow" then
        entered = true
        event.wait(release)
        request:reply(200, nil, "finished")
      else
        request:reply(200, nil, "quick")
      end
    end))
  end)

  after_each(function() server:close() end)

  it("lets the requests in flight finish, closes idle connections, refuses new ones",
     function()
    local port = server:port()
    local idle = assert(event.connect("127.0.0.1", port))
    idle:write(REQUEST:format("/"))
    assert.same({ 200, "quick" }, { read_reply(idle) })
    local busy = assert(event.connect("127.0.0.1", port))
    busy:write(REQUEST:format("/slow"))
    helper.eventually(function() return entered end, "the slow request")

    local stopper = event.fork(function() return server:shutdown(10) end)
    -- the idle keep-alive connection closes at once
    assert.same({ nil, "closed", "closed" }, { idle:wait_read(nil, 10) })
    -- no new connections
    assert.is_nil(event.connect("127.0.0.1", port))
    -- the busy one still waits for its reply, and so does shutdown
    assert.equal("waiting", (stopper:status()))
    assert.equal(1, server:stats().connections)

    event.wakeup(release)
    assert.same({ 200, "finished" }, { read_reply(busy) })
    assert.same({ nil, "closed", "closed" }, { busy:wait_read(nil, 10) })
    assert.same({ true, true }, { stopper:join(10) })
    assert.equal(0, server:stats().connections)
  end)

  it("returns at once without connections", function()
    assert.is_true(server:shutdown(1))
    assert.is_true(server:shutdown(1))   -- idempotent
  end)

  it("cuts what is left at the timeout: nil, 'timeout'", function()
    local busy = assert(event.connect("127.0.0.1", server:port()))
    busy:write(REQUEST:format("/slow"))
    helper.eventually(function() return entered end, "the slow request")
    assert.same({ nil, "timeout", "timeout" }, { server:shutdown(0.1) })
    assert.same({ nil, "closed", "closed" }, { busy:wait_read(nil, 10) })
    assert.equal(0, server:stats().connections)
    event.wakeup(release)   -- the late reply goes nowhere, harmlessly
    event.sleep(0)
  end)
end)
