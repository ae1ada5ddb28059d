-- tests/lua/kcp_spec.lua - evlua.kcp (src/core/kcpnet.c, src/lua/lkcp.c):
-- against kcp-go (tests/peers/kcp_peer.go, a peer nobody here wrote) in
-- both directions, message and stream mode, 10 MB bulk, a lossy relay;
-- evlua to evlua, rpc over KCP, every limit at and past it, bad
-- datagrams, dead links, idle sessions.
local event = require "event"
local kcp = require "evlua.kcp"
local rpc = require "evlua.rpc"
local udp = require "evlua.udp"
local Channel = require "evlua.channel"
local helper = require "helper"

local raised = helper.raised

local PEER = "build/peers/kcp_peer"
local FAST = { nodelay = 1, interval = 10, resend = 2, nc = 1 }

-- The kcp-go peer must be there: install-deps installs golang, so a
-- missing one fails the suite instead of skipping.
setup(function()
  if not io.open(PEER) then
    assert(os.execute("flock /tmp/evlua-build.lock make -s " .. PEER
                      .. " >/dev/null"), "cannot build " .. PEER)
  end
end)

local started = {}
teardown(function()
  for _, pid in ipairs(started) do helper.kill(pid, "KILL") end
end)

local function merge(a, b)
  local t = {}
  for k, v in pairs(a or {}) do t[k] = v end
  for k, v in pairs(b or {}) do t[k] = v end
  return t
end

-- The list a followed by the list b.
local function cat(a, b)
  local t = table.move(a, 1, #a, 1, {})
  return table.move(b, 1, #b, #t + 1, t)
end

-- kcp_peer's flags for opts (the same names as ours).
local function flags(opts)
  local args = {}
  for k, v in pairs(opts or {}) do
    if k == "stream" then
      if v then args[#args + 1] = "-stream" end
    else
      args[#args + 1] = "-" .. k
      args[#args + 1] = tostring(v)
    end
  end
  return args
end

-- Start a long-running kcp_peer (echo-server, relay); returns its port.
local function start_peer(args)
  local dir = helper.tmpdir()
  local out = dir .. "/peer.out"
  local p = io.popen(("exec %s %s >%s 2>&1 & echo $!"):format(PEER,
    table.concat(args, " "), out))
  local pid = p:read("l")
  p:close()
  started[#started + 1] = pid
  return tonumber(helper.await_output(out, "^(%d+)\n", 10)), pid
end

-- Run a kcp_peer client to the end: its output, which must start "ok".
local function run_client(port, args)
  local argv = { PEER, "client", "-addr", "127.0.0.1:" .. port,
                 "-timeout", "20" }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  local out, status = event.run_process(argv, { stderr = "stdout" })
  assert.equal(0, status.code, out)
  assert.matches("^ok ", out)
  return out
end

-- An evlua echo server: every message (message mode) or every byte
-- (stream mode) goes back as it came.
local Echo = Channel:inherit()
function Echo:data()
  if self._stream:message_mode() then
    local m = self:read_message()
    while m do
      self:write(m)
      m = self:read_message()
    end
  else
    local bytes = self:read()
    if bytes then self:write(bytes) end
  end
end

local function echo_server(opts)
  return assert(kcp.listen("127.0.0.1", 0, nil, Echo, opts))
end

-- One KCP push segment (cmd 81) as kcp-go would send it.
local function push(conv, sn, data, cmd)
  return string.pack("<I4BBI2I4I4I4I4", conv, cmd or 81, 0, 128, 0, sn, 0,
                     #data) .. data
end

-- A pattern of n bytes that shows a missing or swapped byte.
local function pattern(n)
  local parts, chunk = {}, ""
  for i = 0, 255 do chunk = chunk .. string.char((i * 7 + 3) % 256) end
  for i = 1, n // #chunk do parts[i] = chunk end
  parts[#parts + 1] = chunk:sub(1, n % #chunk)
  return table.concat(parts)
end

describe("kcp with kcp-go", function()
  it("an evlua client keeps message boundaries through a kcp-go echo server", function()
    local port = start_peer({ "echo-server", "-addr", "127.0.0.1:0" })
    local ch = assert(kcp.connect("127.0.0.1", port, nil, FAST))
    local sizes = { 1, 100, 1000, 1376, 1375, 2, 1376 }
    for i, n in ipairs(sizes) do assert(ch:write(("%d"):format(i % 10):rep(n))) end
    for i, n in ipairs(sizes) do
      assert.equal(("%d"):format(i % 10):rep(n), ch:wait_message(5))
    end
    ch:close()
  end)

  it("an evlua client streams 10 MB through a kcp-go echo server", function()
    local opts = merge(FAST, { stream = true, sndwnd = 512, rcvwnd = 512 })
    local port = start_peer(cat({ "echo-server", "-addr", "127.0.0.1:0" },
                                  flags(opts)))
    local ch = assert(kcp.connect("127.0.0.1", port, nil, opts))
    local data = pattern(10 * 1024 * 1024)
    event.fork(function() assert(ch:write(data)) end)
    local got = {}
    local n = 0
    while n < #data do
      local part = assert(ch:wait_read(nil, 10))
      got[#got + 1] = part
      n = n + #part
    end
    assert.equal(data, table.concat(got))
    ch:close()
  end)

  it("a kcp-go client's messages up to 1376 bytes keep their boundaries", function()
    local l = echo_server()
    local out = run_client(l:port(), { "-test", "messages", "-n", "300",
                                       "-sizes", "1,100,1000,1376,17" })
    assert.equal("ok messages 300\n", out)
    assert.equal(1, l:stats().accepted)
    l:close()
  end)

  it("a kcp-go client sends 10 MB in stream mode and gets every byte back", function()
    local opts = merge(FAST, { stream = true, sndwnd = 1024, rcvwnd = 1024 })
    local l = echo_server(opts)
    local out = run_client(l:port(), cat({ "-test", "bulk", "-bytes",
                                              tostring(10 * 1024 * 1024) },
                                            flags(opts)))
    assert.matches("^ok bulk 10485760 bytes", out)
    print(out)
    l:close()
  end)

  it("through a lossy relay (drop 10 %, dup 2 %, reorder) every byte arrives in order, both ways", function()
    local opts = merge(FAST, { stream = true, sndwnd = 256, rcvwnd = 256 })
    local l = echo_server(opts)
    local relay = start_peer({ "relay", "-addr", "127.0.0.1:0", "-target",
                               "127.0.0.1:" .. l:port(), "-drop", "10",
                               "-dup", "2", "-reorder", "10" })
    run_client(relay, cat({ "-test", "bulk", "-bytes", "1000000" },
                            flags(opts)))
    -- and an evlua client through a relay to a kcp-go server, messages
    local server = start_peer(cat({ "echo-server", "-addr", "127.0.0.1:0" },
                                    flags(FAST)))
    local relay2 = start_peer({ "relay", "-addr", "127.0.0.1:0", "-target",
                                "127.0.0.1:" .. server, "-seed", "7" })
    local ch = assert(kcp.connect("127.0.0.1", relay2, nil, FAST))
    for i = 1, 200 do assert(ch:write(("%d:"):format(i) .. ("r"):rep(i * 6))) end
    for i = 1, 200 do
      assert.equal(("%d:"):format(i) .. ("r"):rep(i * 6), ch:wait_message(10))
    end
    assert.is_true(ch:stats().kcp.retransmits + ch:stats().kcp.fast_retransmits > 0)
    ch:close()
    l:close()
  end)
end)

describe("kcp between evlua peers", function()
  it("is a channel: lines, messages mixed with lines, close, disconnect", function()
    local closed = {}
    local Server = Channel:inherit()
    function Server:disconnect(reason) closed[#closed + 1] = reason end
    local got = {}
    local l = assert(kcp.listen("127.0.0.1", 0, function(_, ch)
      got[#got + 1] = ch:wait_line(5)     -- "first" (message 1 whole)
      got[#got + 1] = ch:wait_message(5)  -- "second\nthird", message 2
      got[#got + 1] = ch:wait_line(5)     -- half of message 3
      got[#got + 1] = ch:wait_message(5)  -- what is left of it
      ch:write("bye\n")
      ch:close()
    end, Server, FAST))
    assert.matches("^evlua.kcp.listener %(port %d+%)$", tostring(l))
    local ch = assert(kcp.connect("localhost", l:port(), nil, FAST))
    assert.matches("^evlua.stream %(kcp, open%)$", tostring(ch._stream))
    assert.same({ "127.0.0.1", l:port() }, { ch:peer() })
    assert(ch:write("first\n"))
    assert(ch:write("second\n", "third"))   -- one write: one message
    assert(ch:write("fourth\nfifth"))
    assert.equal("bye", ch:wait_line(5))
    helper.eventually(function() return #closed == 1 end, "disconnect")
    assert.same({ "first", "second\nthird", "fourth", "fifth" }, got)
    assert.same({ "local close" }, closed)
    assert.equal(0, l:stats().sessions)
    ch:close()
    l:close()
    assert.equal("evlua.kcp.listener (closed)", tostring(l))
    assert.same({ nil, "closed", "closed" }, { l:port() })
  end)

  it("stream mode has no messages: read_message raises", function()
    local l = echo_server(merge(FAST, { stream = true }))
    local ch = assert(kcp.connect("127.0.0.1", l:port(), nil,
                                  merge(FAST, { stream = true })))
    assert(ch:write("abc\n"))
    assert.equal("abc", ch:wait_line(5))
    assert.matches("not a message%-mode channel", raised(ch.read_message, ch))
    assert.matches("not a message%-mode channel", raised(ch.wait_message, ch))
    local tcp = assert(event.listen("127.0.0.1", 0))
    local t = assert(event.connect("127.0.0.1", tcp:port()))
    assert.matches("not a message%-mode channel", raised(t.read_message, t))
    t:close(); tcp:close(); ch:close(); l:close()
  end)

  it("runs evlua.rpc: the rpc class on KCP channels, both modes", function()
    for _, mode in ipairs({ false, true }) do
      local opts = merge(FAST, { stream = mode })
      local Server = rpc.channel:inherit()
      Server.handlers = {
        add = function(_, a, b) return a + b end,
        echo = function(_, s) return s end,
      }
      local l = assert(kcp.listen("127.0.0.1", 0, nil, Server, opts))
      local c = assert(kcp.connect("127.0.0.1", l:port(), rpc.channel, opts))
      assert.equal(5, c:call("add", 2, 3))
      local big = pattern(mode and 2000000 or 100000)
      assert.equal(big, c:call("echo", big))
      local tasks = {}
      for i = 1, 50 do
        tasks[i] = event.fork(function() return c:call("add", i, i) end)
      end
      for i = 1, 50 do assert.same({ true, 2 * i }, { tasks[i]:join(10) }) end
      c:close()
      l:close()
    end
  end)

  it("close flushes what is unacknowledged before disconnect", function()
    local got = {}
    local Sink = Channel:inherit()
    function Sink:data() got[#got + 1] = self:read() end
    local l = assert(kcp.listen("127.0.0.1", 0, nil, Sink,
                                merge(FAST, { stream = true })))
    local reason
    local C = Channel:inherit()
    function C:disconnect(r) reason = r end
    local ch = assert(kcp.connect("127.0.0.1", l:port(), C,
                                  merge(FAST, { stream = true })))
    local data = pattern(300000)
    ch:write(data)
    ch:close()
    helper.eventually(function() return reason ~= nil end, "disconnect")
    assert.equal("local close", reason)
    assert.equal(data, table.concat(got))
    l:close()
  end)

  it("an idle timeout ends a quiet session whose peer vanished", function()
    local reason
    local Quiet = Channel:inherit()
    Quiet.idle_timeout = 0.2
    function Quiet:disconnect(r) reason = r end
    local l = assert(kcp.listen("127.0.0.1", 0, nil, Quiet, FAST))
    local ch = assert(kcp.connect("127.0.0.1", l:port(), nil, FAST))
    assert(ch:write("hello"))
    helper.eventually(function() return l:stats().sessions == 1 end, "session")
    ch:close_immediately()   -- gone without a word, as KCP peers go
    helper.eventually(function() return reason ~= nil end, "idle timeout")
    assert.equal("timeout", reason)
    assert.equal(0, l:stats().sessions)
    l:close()
  end)

  it("dead_link ends a session whose peer vanished with disconnect('timeout')", function()
    local silent = assert(udp.bind("127.0.0.1", 0))   -- reads, never acks
    local reason
    local C = Channel:inherit()
    function C:disconnect(r) reason = r end
    local ch = assert(kcp.connect("127.0.0.1", silent:port(), C,
                                  merge(FAST, { dead_link = 3 })))
    assert(ch:write("anyone?"))
    helper.eventually(function() return reason ~= nil end, "dead link")
    assert.equal("timeout", reason)
    assert.same({ nil, "closed", "closed" }, { ch:write("x") })
    silent:close()
  end)
end)

describe("kcp limits", function()
  it("blames its caller's line for a bad argument", function()
    local line = debug.getinfo(1, "l").currentline
    local port = raised(function() local l = kcp.listen("127.0.0.1", 70000); return l end)
    local opt = raised(function() local l = kcp.listen("127.0.0.1", 0, nil, nil, { mtu = 1501 }); return l end)
    local class = raised(function() local c = kcp.connect("127.0.0.1", 1, 42); return c end)
    for i, err in ipairs({ port, opt, class }) do
      assert.equal("kcp_spec.lua:" .. line + i .. ":", err:match("[%w_]+%.lua:%d+:"))
    end
  end)

  it("mtu up to 1500 is taken, 1501 refused; windows 1..32768", function()
    local l = assert(kcp.listen("127.0.0.1", 0, nil, Echo,
                                merge(FAST, { mtu = 1500 })))
    local ch = assert(kcp.connect("127.0.0.1", l:port(), nil,
                                  merge(FAST, { mtu = 1500 })))
    local m = ("x"):rep(1476 * 3)
    assert(ch:write(m))
    assert.equal(m, ch:wait_message(5))
    ch:close(); l:close()
    assert.matches("mtu must be an integer from 25 to 1500",
                   raised(kcp.listen, "127.0.0.1", 0, nil, nil, { mtu = 1501 }))
    assert.matches("mtu must be", raised(kcp.connect, "127.0.0.1", 9, nil,
                                         { mtu = 1501 }))
    assert.matches("sndwnd must be", raised(kcp.listen, "127.0.0.1", 0, nil,
                                            nil, { sndwnd = 32769 }))
    assert.matches("rcvwnd must be", raised(kcp.listen, "127.0.0.1", 0, nil,
                                            nil, { rcvwnd = 0 }))
    assert.matches("unknown option 'bogus'",
                   raised(kcp.listen, "127.0.0.1", 0, nil, nil, { bogus = 1 }))
    local w = assert(kcp.listen("127.0.0.1", 0, nil, nil,
                                { sndwnd = 32768, rcvwnd = 32768 }))
    w:close()
  end)

  it("a message of 255 fragments passes, one byte more is too_large", function()
    local l = echo_server(FAST)
    local ch = assert(kcp.connect("127.0.0.1", l:port(), nil, FAST))
    local max = 255 * (1400 - 24)
    assert.same({ nil, "message too large", "too_large" },
                { ch:write(("y"):rep(max + 1)) })
    local m = pattern(max)
    assert.is_true(ch:write(m))
    assert.equal(m, ch:wait_message(10))
    ch:close(); l:close()
  end)

  it("max_input stops taking data (the window closes) until it is read", function()
    local server_ch
    local l = assert(kcp.listen("127.0.0.1", 0, function(_, ch)
      server_ch = ch
    end, nil, merge(FAST, { stream = true, max_input = 4096, rcvwnd = 16 })))
    local ch = assert(kcp.connect("127.0.0.1", l:port(), nil,
                                  merge(FAST, { stream = true })))
    local data = pattern(200000)
    ch:write(data)
    helper.eventually(function() return server_ch ~= nil end, "accept")
    event.sleep(0.3)
    local st = server_ch:stats()
    assert.equal(4096, st.buffered_in)            -- at max_input, no more
    assert.is_true(ch:stats().buffered_out > 100000)   -- the rest waits
    local got = server_ch:wait_read(4096, 5)
    while #got < #data do got = got .. assert(server_ch:wait_read(nil, 5)) end
    assert.equal(data, got)
    ch:close(); l:close()
  end)

  it("max_sessions: the session past it costs only its datagram", function()
    local l = assert(kcp.listen("127.0.0.1", 0, nil, nil,
                                { max_sessions = 3 }))
    local s = assert(udp.bind("127.0.0.1", 0))
    for conv = 1, 4 do assert(s:sendto(push(conv, 0, "hi"), "127.0.0.1", l:port())) end
    helper.eventually(function() return l:stats().datagrams == 4 end, "datagrams")
    local st = l:stats()
    assert.equal(3, st.sessions)
    assert.equal(3, st.accepted)
    assert.equal(1, st.drop_limit)
    assert.equal(1, st.dropped)
    assert.matches("max_sessions must be", raised(kcp.listen, "127.0.0.1", 0,
                                                  nil, nil, { max_sessions = 0 }))
    s:close(); l:close()
  end)

  it("max_accept_rate: new sessions past it this second are refused", function()
    local l = assert(kcp.listen("127.0.0.1", 0, nil, nil,
                                { max_accept_rate = 2 }))
    local s = assert(udp.bind("127.0.0.1", 0))
    for conv = 1, 3 do assert(s:sendto(push(conv, 0, "hi"), "127.0.0.1", l:port())) end
    helper.eventually(function() return l:stats().datagrams == 3 end, "datagrams")
    assert.equal(2, l:stats().sessions)
    assert.equal(1, l:stats().drop_rate)
    assert(s:sendto(push(1, 1, "again"), "127.0.0.1", l:port()))   -- known
    helper.eventually(function() return l:stats().datagrams == 4 end, "datagram")
    assert.equal(1, l:stats().dropped)
    assert.matches("listener's options", raised(kcp.connect, "127.0.0.1", 9,
                                               nil, { max_accept_rate = 1 }))
    s:close(); l:close()
  end)

  it("bad datagrams cost nothing but the datagram, counted in stats()", function()
    local accepted = 0
    local l = assert(kcp.listen("127.0.0.1", 0, function() accepted = accepted + 1 end))
    local s = assert(udp.bind("127.0.0.1", 0))
    local port = l:port()
    local good = push(7, 0, "hello")
    local bad = {
      { "short", "abc" },
      { "short", good:sub(1, 23) },
      { "short", good .. "x" },                          -- trailing byte
      { "cmd", push(7, 0, "x", 99) },
      { "len", good:sub(1, 24) .. "hell" },               -- len 5, 4 there
      { "len", string.pack("<I4BBI2I4I4I4I4", 7, 81, 0, 1, 0, 0, 0, 0xffffffff) },
      { "conv", good .. push(8, 1, "x") },                -- two convs
      { "no_session", string.pack("<I4BBI2I4I4I4I4", 9, 82, 0, 1, 0, 0, 0, 0) },
      { "short", ("z"):rep(1600) },                       -- past 1500
    }
    for _, b in ipairs(bad) do assert(s:sendto(b[2], "127.0.0.1", port)) end
    helper.eventually(function() return l:stats().datagrams == #bad end, "datagrams")
    local st = l:stats()
    local want = { short = 0, cmd = 0, len = 0, conv = 0, no_session = 0 }
    for _, b in ipairs(bad) do want[b[1]] = want[b[1]] + 1 end
    for reason, n in pairs(want) do assert.equal(n, st["drop_" .. reason], reason) end
    assert.equal(#bad, st.dropped)
    assert.equal(0, st.sessions)
    -- and the listener still serves a good session
    assert(s:sendto(good, "127.0.0.1", port))
    local ack = s:recvfrom(5)
    assert.equal(82, ack:byte(5))
    helper.eventually(function() return accepted == 1 end, "accept")
    s:close(); l:close()
  end)

  it("a client's socket counts what it drops in ch:stats().kcp.socket", function()
    local s = assert(udp.bind("127.0.0.1", 0))
    local ch = assert(kcp.connect("127.0.0.1", s:port()))
    ch:write("hi")
    local first, ip, port = s:recvfrom(5)
    local conv = string.unpack("<I4", first)
    assert(s:sendto("abc", ip, port))                    -- short
    assert(s:sendto(push(conv + 1, 0, "x"), ip, port))   -- not its conv
    helper.eventually(function() return ch:stats().kcp.socket.dropped == 2 end, "drops")
    local sock = ch:stats().kcp.socket
    assert.equal(1, sock.drop_short)
    assert.equal(1, sock.drop_conv)
    assert.equal(2, sock.datagrams)
    -- its session's own segments still reach it
    assert(s:sendto(push(conv, 0, "back"), ip, port))
    assert.equal("back", ch:wait_message(5))
    ch:close(); s:close()
  end)

  it("1,000 idle sessions leave the loop asleep", function()
    local l = assert(kcp.listen("127.0.0.1", 0, nil, nil, FAST))
    local s = assert(udp.bind("127.0.0.1", 0, { on_datagram = function() end }))
    for conv = 1, 1000 do
      assert(s:sendto(push(conv, 0, "x"), "127.0.0.1", l:port()))
      if conv % 100 == 0 then event.sleep(0.01) end
    end
    helper.eventually(function() return l:stats().sessions == 1000 end, "sessions")
    event.sleep(0.2)   -- the acks are out
    local before = l:stats().wakeups
    local cpu = os.clock()
    event.sleep(1)
    local woke = l:stats().wakeups - before
    assert.is_true(woke < 50, "wakeups: " .. woke)
    assert.is_true(os.clock() - cpu < 0.05, "cpu: " .. (os.clock() - cpu))
    s:close(); l:close()
  end)
end)
