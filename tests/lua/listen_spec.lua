-- tests/lua/listen_spec.lua - listeners (src/lua/llisten.c): argument
-- checks, pause and close from inside the accept handler, and pause and
-- resume while accept(2) backs off for want of fds.
local core = require "evlua.core"
local event = require "event"
local Channel = require "evlua.channel"
local helper = require "helper"

local function noop() end

local raised = helper.raised

-- n clients connecting to port at once: their connects are issued before
-- the loop runs again, so they all wait in the backlog together.
local function connect_all(port, n)
  local clients = {}
  for i = 1, n do
    clients[i] = Channel._wrap(Channel, assert(core.stream_connect("127.0.0.1",
                                                                   port)))
  end
  return clients
end

local function close_all(list)
  for _, ch in ipairs(list) do ch:close_immediately() end
end

describe("event.listen", function()
  it("takes opts.backlog and reports it; raises when out of range", function()
    local l = assert(event.listen("127.0.0.1", 0, noop, nil, { backlog = 7 }))
    assert.equal(7, l:backlog())
    l:close()
    for _, bad in ipairs({ -1, 1 << 31 }) do
      assert.matches("backlog out of range",
                     raised(event.listen, "127.0.0.1", 0, noop, nil,
                            { backlog = bad }), 1, true)
    end
  end)

  it("refuses a name that is not a numeric address: nil, message, "
     .. "bad_address", function()
    local l, err, code = event.listen("example.invalid", 0, noop)
    assert.is_nil(l)
    assert.matches("numeric address", err, 1, true)
    assert.equal("bad_address", code)
  end)
end)

describe("core.listen", function()
  it("raises on a port out of range or a host that is no address", function()
    for _, port in ipairs({ -1, 65536 }) do
      assert.matches("^bad argument #2 to '.-' %(port out of range%)$",
                     raised(core.listen, "127.0.0.1", port, nil, false, noop))
    end
    assert.matches("^bad argument #1 to '.-' %(numeric address or "
                   .. "unix:/path expected%)$",
                   raised(core.listen, "localhost", 0, nil, false, noop))
  end)
end)

describe("the accept handler", function()
  it("pausing stops the accepts of the same batch; resume accepts the "
     .. "rest", function()
    local accepted, token = {}, {}
    local l = assert(core.listen("127.0.0.1", 0, nil, false,
      function(listener, _, stream)
        accepted[#accepted + 1] = Channel._wrap(Channel, stream)
        listener:pause()
        event.wakeup(token)
      end))
    local clients = connect_all(l:port(), 3)
    for n = 1, 3 do
      assert.is_true(event.wait(token, 5))
      -- the handler paused: the others stayed in the backlog
      assert.equal(n, #accepted)
      l:resume()
    end
    close_all(clients)
    close_all(accepted)
    l:close()
  end)

  it("closing stops the accepts of the same batch", function()
    local accepted, token = {}, {}
    local l = assert(core.listen("127.0.0.1", 0, nil, false,
      function(listener, _, stream)
        accepted[#accepted + 1] = Channel._wrap(Channel, stream)
        listener:close()
        event.wakeup(token)
      end))
    local clients = connect_all(l:port(), 3)
    assert.is_true(event.wait(token, 5))
    assert.equal(1, #accepted)
    assert.equal("evlua.listener (closed)", tostring(l))
    l:resume()   -- closed: nothing to restart
    assert.equal(1, #accepted)
    close_all(clients)
    close_all(accepted)
  end)
end)

describe("a listener out of fds", function()
  after_each(helper.cleanup)

  it("stays paused when fds free up during its back-off; resume accepts",
     function()
    local script = helper.tmpdir() .. "/paused.lua"
    helper.write_file(script, [[
      local event = require "event"
      local accepted = 0
      local l = assert(event.listen("127.0.0.1", 0, function(_, ch)
        accepted = accepted + 1
        ch:close()
      end))
      local files = {}
      while true do
        local f = io.open("/dev/null")
        if not f then break end
        files[#files + 1] = f
      end
      table.remove(files):close()   -- one fd for the client
      local ch = assert(event.connect("127.0.0.1", l:port()))
      event.sleep(0.05)   -- accept(2) failed: backing off (0.1 s)
      print("full", accepted)
      l:pause()
      for _, f in ipairs(files) do f:close() end
      event.sleep(0.2)    -- the retry came while paused
      print("paused", accepted)
      l:resume()
      for _ = 1, 2000 do
        if accepted > 0 then break end
        event.sleep(0.005)
      end
      print("resumed", accepted)
      ch:close()
      l:close()
    ]])
    local out, err, rc = helper.sh(("ulimit -n 64; timeout -k 5 %d %s %s")
      :format(helper.TIMEOUT, helper.quote(helper.evlua),
              helper.quote(script)))
    assert.equal(0, rc, err)
    assert.equal("full\t0\npaused\t0\nresumed\t1\n", out)
  end)
end)
