-- tests/lua/udp_spec.lua - evlua.udp (src/core/udp.c, src/lua/ludp.c):
-- both receiving styles, connected sockets, every limit at and past it,
-- and a client in another language (python3's socket module).
local event = require "event"
local udp = require "evlua.udp"
local helper = require "helper"

local raised = helper.raised

local function echo_server(opts)
  opts = opts or {}
  opts.on_datagram = function(s, data, ip, port) s:sendto(data, ip, port) end
  return assert(udp.bind("127.0.0.1", 0, opts))
end

describe("udp", function()
  it("binds IPv4 and IPv6 on a free port and reports its address", function()
    local a = assert(udp.bind("127.0.0.1", 0))
    local ip, port = a:addr()
    assert.equal("127.0.0.1", ip)
    assert.is_true(port > 0)
    assert.equal(port, a:port())
    local b = assert(udp.bind("::1", 0))
    assert.equal("::1", (b:addr()))
    assert.truthy(tostring(a):find("^evlua.udp.socket %(fd %d+%)$"))
    a:close()
    b:close()
    assert.equal("evlua.udp.socket (closed)", tostring(a))
  end)

  it("queues datagrams for recvfrom, with the sender's address", function()
    local srv = assert(udp.bind("127.0.0.1", 0))
    local c = assert(udp.bind("127.0.0.1", 0))
    assert(c:sendto("one", "127.0.0.1", srv:port()))
    assert(c:sendto("two", "127.0.0.1", srv:port()))
    assert.same({ "one", "127.0.0.1", c:port() }, { srv:recvfrom(5) })
    assert.same({ "two", "127.0.0.1", c:port() }, { srv:recvfrom(5) })
    assert.same({ nil, "timeout", "timeout" }, { srv:recvfrom(0.05) })
    local st = srv:stats()
    assert.equal(2, st.received)
    assert.equal(2, c:stats().sent)
    srv:close()
    c:close()
  end)

  it("echoes through on_datagram, IPv6 too", function()
    for _, ip in ipairs({ "127.0.0.1", "::1" }) do
      local srv = assert(udp.bind(ip, 0, { on_datagram = function(s, d, fip, fport)
        s:sendto(d:upper(), fip, fport)
      end }))
      local c = assert(udp.connect(ip, srv:port()))
      assert.same({ ip, srv:port() }, { c:peer() })
      for i = 1, 20 do assert(c:send("ping " .. i)) end
      for i = 1, 20 do
        assert.same({ "PING " .. i, ip, srv:port() }, { c:recvfrom(5) })
      end
      srv:close()
      c:close()
    end
  end)

  it("a connected socket receives only its peer's datagrams", function()
    local srv = echo_server()
    local other = assert(udp.bind("127.0.0.1", 0))
    local c = assert(udp.connect("localhost", srv:port()))
    local _, cport = c:addr()
    assert(other:sendto("stranger", "127.0.0.1", cport))
    assert(c:send("mine"))
    assert.equal("mine", (c:recvfrom(5)))
    assert.same({ nil, "timeout", "timeout" }, { c:recvfrom(0.1) })
    srv:close(); other:close(); c:close()
  end)

  it("close wakes a waiting recvfrom with nil, 'closed'; queued datagrams stay readable", function()
    local s = assert(udp.bind("127.0.0.1", 0))
    local reader = event.fork(function() return s:recvfrom(10) end)
    event.sleep(0)
    s:close()
    assert.same({ true, nil, "closed", "closed" }, { reader:join(5) })
    local t = assert(udp.bind("127.0.0.1", 0))
    local c = assert(udp.connect("127.0.0.1", t:port()))
    assert(c:send("kept"))
    assert.equal("kept", (t:recvfrom(5)))
    assert(c:send("after"))
    while t:stats().received < 2 do event.sleep(0.01) end
    t:close()
    assert.equal("after", (t:recvfrom()))
    assert.same({ nil, "closed", "closed" }, { t:recvfrom() })
    c:close()
    c:close()   -- idempotent
    assert.same({ nil, "closed", "closed" }, { c:sendto("x", "127.0.0.1", 9) })
    assert.same({ nil, "closed", "closed" }, { c:addr() })
  end)

  it("keeps max_queue datagrams for recvfrom and counts the rest as dropped", function()
    local s = assert(udp.bind("127.0.0.1", 0, { max_queue = 4 }))
    local c = assert(udp.connect("127.0.0.1", s:port()))
    for i = 1, 4 do assert(c:send(tostring(i))) end
    while s:stats().waiting < 4 do event.sleep(0.01) end
    assert.equal(0, s:stats().dropped)      -- at the limit: all kept
    for i = 5, 7 do assert(c:send(tostring(i))) end
    while s:stats().received < 7 do event.sleep(0.01) end
    local st = s:stats()
    assert.equal(4, st.waiting)
    assert.equal(3, st.dropped)             -- past it: counted
    for i = 1, 4 do assert.equal(tostring(i), (s:recvfrom(1))) end
    s:close(); c:close()
  end)

  it("cuts a datagram longer than max_datagram and counts it truncated", function()
    local s = assert(udp.bind("127.0.0.1", 0, { max_datagram = 8 }))
    local c = assert(udp.connect("127.0.0.1", s:port()))
    assert(c:send("12345678"))
    assert(c:send("123456789"))
    assert.equal("12345678", (s:recvfrom(5)))
    assert.equal("12345678", (s:recvfrom(5)))
    assert.equal(1, s:stats().truncated)
    s:close(); c:close()
  end)

  it("takes datagrams up to 65507 bytes; a larger one is EMSGSIZE", function()
    local s = assert(udp.bind("127.0.0.1", 0))
    local c = assert(udp.connect("127.0.0.1", s:port()))
    assert(c:send(("x"):rep(65507)))
    assert.equal(65507, #s:recvfrom(5))
    local ok, err, code = c:send(("x"):rep(65508))
    assert.is_nil(ok)
    assert.equal("EMSGSIZE", code)
    assert.truthy(err:find("too long"))
    s:close(); c:close()
  end)

  it("queues max_send_queue datagrams per iteration, then would block", function()
    local s = assert(udp.bind("127.0.0.1", 0))
    local c = assert(udp.connect("127.0.0.1", s:port(), { max_send_queue = 3 }))
    for i = 1, 3 do assert(c:send(tostring(i))) end      -- at the limit
    assert.same({ nil, "would block", "EAGAIN" }, { c:send("4") })
    assert.equal(3, c:stats().queued)
    for i = 1, 3 do assert.equal(tostring(i), (s:recvfrom(5))) end
    assert.equal(0, c:stats().queued)                   -- written: room again
    assert(c:send("5"))
    assert.equal("5", (s:recvfrom(5)))
    s:close(); c:close()
  end)

  it("sends what one iteration queues together, many datagrams per call", function()
    local s = assert(udp.bind("127.0.0.1", 0))
    local c = assert(udp.connect("127.0.0.1", s:port()))
    for i = 1, 100 do assert(c:send(("%03d"):format(i))) end
    assert.equal(100, c:stats().queued)   -- nothing left before the iteration ended
    for i = 1, 100 do assert.equal(("%03d"):format(i), (s:recvfrom(5))) end
    assert.equal(100, c:stats().sent)
    s:close(); c:close()
  end)

  it("checks its arguments", function()
    assert.truthy(raised(udp.bind, 1, 0):find("bad argument #1 to 'bind'"))
    assert.truthy(raised(udp.bind, "127.0.0.1", 70000):find("port between"))
    assert.truthy(raised(udp.bind, "127.0.0.1", 0, { bogus = 1 })
      :find("unknown option 'bogus'"))
    assert.truthy(raised(udp.bind, "127.0.0.1", 0, { max_queue = 0 })
      :find("max_queue must be an integer"))
    assert.truthy(raised(udp.bind, "127.0.0.1", 0, { on_datagram = 1 })
      :find("on_datagram must be a function"))
    assert.same({ nil, "udp.bind needs a numeric address or \"*\"", "bad_address" },
                { udp.bind("example.com", 0) })
    local s = assert(udp.bind("127.0.0.1", 0, { on_datagram = function() end }))
    assert.truthy(raised(s.recvfrom, s):find("on_datagram callback"))
    assert.truthy(raised(s.sendto, s, "x", "not an ip", 1)
      :find("numeric IPv4 or IPv6 address expected"))
    assert.same({ nil, "destination address required", "EDESTADDRREQ" },
                { s:send("x") })
    s:close()
  end)

  it("blames its caller's line for a bad argument", function()
    local line = debug.getinfo(1, "l").currentline
    local port = raised(function() local s = udp.bind("127.0.0.1", 70000); return s end)
    local opt = raised(function() local s = udp.bind("127.0.0.1", 0, { max_queue = 0 }); return s end)
    assert.equal("udp_spec.lua:" .. line + 1 .. ":", port:match("[%w_]+%.lua:%d+:"))
    assert.equal("udp_spec.lua:" .. line + 2 .. ":", opt:match("[%w_]+%.lua:%d+:"))
  end)

  it("a port in use is EADDRINUSE", function()
    local a = assert(udp.bind("127.0.0.1", 0))
    local ok, err, code = udp.bind("127.0.0.1", a:port())
    assert.is_nil(ok)
    assert.equal("EADDRINUSE", code)
    assert.truthy(err:find("^bind: "))
    a:close()
  end)

  it("echoes to a python3 client", function()
    local srv = echo_server()
    local script = ([[
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
for i in range(50):
    msg = ("datagram %%d " %% i).encode() * (i + 1)
    s.sendto(msg, ("127.0.0.1", %d))
    data, addr = s.recvfrom(65536)
    assert data == msg, (data, msg)
print("ok", addr[1])
]]):format(srv:port())
    local out, status = event.run_process({ "python3", "-c", script })
    assert.equal(0, status.code)
    assert.equal("ok " .. srv:port() .. "\n", out)
    assert.equal(50, srv:stats().received)
    srv:close()
  end)
end)
