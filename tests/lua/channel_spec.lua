-- tests/lua/channel_spec.lua - channels over real sockets: listen,
-- connect, bind, echo, backpressure, close semantics, limits, timeouts.
local event = require "event"
local channel = require "evlua.channel"
local dns = require "evlua.dns"
local helper = require "helper"

-- An echo server class: every byte that arrives goes back.
local Echo = channel:inherit()
function Echo:data()
  local bytes = self:read()
  if bytes then self:write(bytes) end
end

local function echo_server(class)
  local listener = assert(event.listen("127.0.0.1", 0, function() end, class or Echo))
  return listener, listener:port()
end

local eventually = helper.eventually

-- Deterministic pseudo-random chunk i of `size` bytes.
local function chunk(i, size)
  local seed = ("%08x"):format(i * 2654435761 % 4294967296)
  return seed:rep(size // #seed + 1):sub(1, size)
end

describe("channels", function()
  after_each(helper.cleanup)

  it("echo server and client built from a subclass", function()
    local events = {}
    local Server = Echo:inherit()
    function Server:init() events[#events + 1] = "init" end
    function Server:disconnect(reason) events[#events + 1] = "disconnect " .. reason end
    local accepted = {}
    local listener = assert(event.listen("127.0.0.1", 0, function(l, ch)
      accepted[#accepted + 1] = { l, ch }
    end, Server))
    local ch = assert(event.connect("127.0.0.1", listener:port()))
    assert.is_true(ch:write("hello\n", "two parts\r\n"))
    assert.equal("hello", ch:wait_line(5))
    assert.equal("two parts", ch:wait_line(5))
    assert.is_true(ch:write("12345"))
    assert.equal("123", ch:wait_read(3, 5))
    assert.equal("45", ch:wait_read(2, 5))
    eventually(function() return #accepted == 1 end, "accept")
    assert.equal(listener, accepted[1][1])
    assert.equal(getmetatable(accepted[1][2]), Server)
    local host, port = accepted[1][2]:peer()
    assert.equal("127.0.0.1", host)
    assert.equal(select(2, ch:local_addr()), port)
    ch:close()
    eventually(function() return #events == 2 end, "server disconnect")
    assert.same({ "init", "disconnect eof" }, events)
    listener:close()
  end)

  it("listens without an accept callback: init runs, no task is forked", function()
    local inits = 0
    local Server = Echo:inherit()
    function Server:init() inits = inits + 1 end
    -- count the tasks net.lua forks per connection, with and without one
    local fork, forks = event.fork, 0
    local function serve(accept_cb)
      local listener = assert(event.listen("127.0.0.1", 0, accept_cb, Server))
      for i = 1, 3 do
        local ch = assert(event.connect("127.0.0.1", listener:port()))
        ch:write("ping " .. i .. "\n")
        assert.equal("ping " .. i, ch:wait_line(5))
        ch:close()
      end
      listener:close()
    end
    -- (accept callbacks are forked with event._fork_direct)
    local direct = event._fork_direct
    event.fork = function(...) forks = forks + 1 return fork(...) end
    event._fork_direct = function(...) forks = forks + 1 return direct(...) end
    local ok, err = pcall(serve, nil)
    local without = forks
    if ok then ok, err = pcall(serve, function() end) end
    event.fork, event._fork_direct = fork, direct
    assert(ok, err)
    assert.equal(6, inits)
    assert.equal(0, without)
    assert.equal(3, forks - without)   -- the count does see forks
    assert.has_error(function() event.listen("127.0.0.1", 0, "nope") end,
      "bad argument #3 to 'listen' (function or nil expected, got string)")
  end)

  it("serves 1,000 concurrent clients", function()
    local listener, port = echo_server()
    local N, ok = 1000, 0
    local handles = {}
    for i = 1, N do
      handles[i] = event.fork(function()
        local ch = assert(event.connect("127.0.0.1", port, nil, 10))
        ch:write("client " .. i .. "\n")
        local line = ch:wait_line(10)
        ch:close_immediately()
        if line == "client " .. i then ok = ok + 1 end
      end)
    end
    for i = 1, N do assert.is_true((handles[i]:join(30))) end
    assert.equal(N, ok)
    listener:close()
  end)

  it("moves 100 MiB both ways at once, byte for byte", function()
    local listener, port = echo_server()
    local ch = assert(event.connect("127.0.0.1", port))
    local SIZE, COUNT = 1024 * 1024, 100
    local sender = event.fork(function()
      for i = 1, COUNT do assert(ch:write(chunk(i, SIZE))) end
    end)
    local mismatches = 0
    for i = 1, COUNT do
      local got = ch:wait_read(SIZE, 30)
      if got ~= chunk(i, SIZE) then mismatches = mismatches + 1 end
    end
    assert.is_true((sender:join(30)))
    assert.equal(0, mismatches)
    local stats = ch:stats()
    assert.equal(SIZE * COUNT, stats.bytes_in)
    assert.equal(SIZE * COUNT, stats.bytes_out)
    ch:close()
    listener:close()
  end)

  it("100 MiB with a sha256 checksum against a Python client", function()
    local listener, port = echo_server()
    local script = helper.tmpdir() .. "/client.py"
    helper.write_file(script, [[
import hashlib, socket, sys, threading
size = 100 * 1024 * 1024
block = bytes(range(256)) * 4096          # 1 MiB
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
sent = hashlib.sha256()
def send():
    left = size
    i = 0
    while left:
        b = block[i % 256:] + block[:i % 256]
        s.sendall(b)
        sent.update(b)
        left -= len(b)
        i += 1
t = threading.Thread(target=send)
t.start()
got, n = hashlib.sha256(), 0
while n < size:
    d = s.recv(1 << 20)
    if not d:
        break
    got.update(d)
    n += len(d)
t.join()
print(n, sent.hexdigest() == got.hexdigest())
]])
    -- The loop must keep running while Python talks to us, so the client
    -- runs in the background and we wait for its output file.
    local out = script .. ".out"
    os.execute(("python3 %s %d > %s 2>&1 &"):format(script, port, out))
    eventually(function()
      local f = io.open(out)
      local text = f and f:read("a")
      if f then f:close() end
      return text and text:find("\n")
    end, "the python client")
    assert.equal(("%d True\n"):format(100 * 1024 * 1024), helper.slurp(out))
    listener:close()
  end)

  it("makes a coroutine sender wait for a slow reader, memory bounded", function()
    local MAX_INPUT, HIGH, LOW = 256 * 1024, 128 * 1024, 32 * 1024
    local Lazy = channel:inherit()
    Lazy.max_input = MAX_INPUT
    local server
    local listener = assert(event.listen("127.0.0.1", 0, function(_, ch) server = ch end, Lazy))
    local ch = assert(event.connect("127.0.0.1", listener:port()))
    ch:set_limits({ high_water = HIGH, low_water = LOW })
    local CHUNK, COUNT = 64 * 1024, 512          -- 32 MiB
    local sent = 0
    local writer = event.fork(function()
      for i = 1, COUNT do
        assert(ch:write(chunk(i, CHUNK)))
        sent = i
      end
    end)
    eventually(function()
      return server ~= nil and writer:status() == "waiting"
        and server:stats().buffered_in == MAX_INPUT
    end, "the writer to block and the reader to stop")
    -- The kernel's socket buffers may still take bytes for a while (they
    -- grow on demand): wait until the writer has stayed put for 20 ms.
    local last
    for _ = 1, 250 do
      if sent == last and writer:status() == "waiting" then break end
      last = sent
      event.sleep(0.02)
    end
    local blocked_at = sent
    assert.is_true(blocked_at < COUNT)
    -- Bounded on both sides: the reader stopped reading at max_input, the
    -- writer's queue is above the high-water mark by at most one chunk.
    local server_stats, client_stats = server:stats(), ch:stats()
    assert.is_true(server_stats.buffered_in <= MAX_INPUT)
    assert.is_true(client_stats.buffered_out >= HIGH)
    assert.is_true(client_stats.buffered_out <= HIGH + CHUNK)
    -- While nobody reads, the writer stays blocked far from the end (the
    -- kernel's autotuned socket buffers may take a few more MiB of the
    -- 32, so this is not an exact standstill) and both sides stay bounded.
    event.sleep(0.05)
    assert.is_true(sent < COUNT // 2, sent)
    assert.equal("waiting", (writer:status()))
    assert.is_true(server:stats().buffered_in <= MAX_INPUT)
    assert.is_true(ch:stats().buffered_out <= HIGH + CHUNK)
    -- Reading resumes the flow; every byte arrives in order.
    for i = 1, COUNT do
      assert.equal(chunk(i, CHUNK), server:wait_read(CHUNK, 10))
      assert.is_true(server:stats().buffered_in <= MAX_INPUT)
    end
    assert.is_true((writer:join(10)))
    assert.equal(COUNT, sent)
    ch:close()
    listener:close()
  end)

  it("a plain callback sender sees the full state instead of waiting", function()
    local results, drained = {}, false
    local Pusher = channel:inherit()
    -- 16 MiB: more than the kernel's socket buffers take at once.
    local SIZE, COUNT = 64 * 1024, 256
    function Pusher:init()
      self:set_limits({ high_water = SIZE, low_water = 1024 })
      for i = 1, COUNT do results[i] = self:write(chunk(i, SIZE)) end
    end
    function Pusher:drain() drained = true end
    local listener = assert(event.listen("127.0.0.1", 0, function() end, Pusher))
    local ch = assert(event.connect("127.0.0.1", listener:port()))
    ch:set_limits({ max_input = SIZE })           -- read slowly
    eventually(function() return #results == COUNT end, "the pusher")
    assert.is_true(results[1])
    assert.is_false(results[COUNT])
    assert.is_false(drained)
    for i = 1, COUNT do assert.equal(chunk(i, SIZE), ch:wait_read(SIZE, 10)) end
    assert.is_true(drained)
    listener:close()
  end)
end)

describe("peer failures", function()
  after_each(helper.cleanup)

  it("bytes written just before os.exit still reach the peer", function()
    local got
    local Server = channel:inherit()
    function Server:data() got = (got or "") .. self:read() end
    local listener = assert(event.listen("127.0.0.1", 0, function() end, Server))
    helper.spawn_script(([[
      local event = require "event"
      local ch = assert(event.connect("127.0.0.1", %d))
      ch:write("last words\n")
      os.exit(0)
    ]]):format(listener:port()))
    eventually(function() return got == "last words\n" end, "the bytes")
    listener:close()
  end)

  it("a peer killed mid-transfer (reset) reaches disconnect and fails readers", function()
    local reason
    local Server = channel:inherit()
    function Server:disconnect(why) reason = why end
    local server
    local listener = assert(event.listen("127.0.0.1", 0, function(_, ch) server = ch end, Server))
    -- A peer process that connects, sends some bytes and never reads.
    local dir = helper.tmpdir()
    helper.write_file(dir .. "/peer.lua", ([[
      local event = require "event"
      local ch = assert(event.connect("127.0.0.1", %d))
      ch:write("ready\n")
      event.sleep(60)
    ]]):format(listener:port()))
    local p = io.popen(helper.quote(helper.evlua) .. " " .. dir .. "/peer.lua >/dev/null 2>&1 & echo $!")
    local pid = p:read("l")
    p:close()
    eventually(function() return server ~= nil end, "the peer")
    assert.equal("ready", server:wait_line(10))
    -- Fill the peer's receive buffer so its death resets the connection.
    local writer = event.fork(function()
      while server:write(chunk(1, 64 * 1024)) do end
    end)
    eventually(function() return writer:status() == "waiting" end, "a full pipe")
    local reader = event.fork(function() return server:wait_read(10, 30) end)
    event.sleep(0)
    os.execute("kill -9 " .. pid)
    assert.same({ true, nil, "closed", "closed" }, { reader:join(30) })
    assert.is_true((writer:join(30)))
    assert.equal("reset", reason)
    assert.equal("reset", server:closed())
    listener:close()
  end)

  it("close flushes queued data before closing, close_immediately drops it", function()
    local SIZE = 32 * 1024 * 1024
    local disconnects = {}
    local Sender = channel:inherit()
    function Sender:init() self:set_limits({ high_water = 2 * SIZE }) end
    function Sender:disconnect(why) disconnects[#disconnects + 1] = why end
    local mode
    local listener = assert(event.listen("127.0.0.1", 0, function(_, ch)
      ch:write(("x"):rep(SIZE))
      if mode == "close" then ch:close() else ch:close_immediately() end
    end, Sender))
    local function receive_all()
      local ch = assert(event.connect("127.0.0.1", listener:port()))
      local total = 0
      while true do
        local data = ch:wait_read(nil, 30)
        if not data then break end
        total = total + #data
      end
      return total, ch:closed()
    end
    mode = "close"
    local total, why = receive_all()
    assert.equal(SIZE, total)
    assert.equal("eof", why)
    mode = "close_immediately"
    local total2 = receive_all()
    assert.is_true(total2 < SIZE)
    event.sleep(0.01)
    assert.same({ "local close" }, disconnects)   -- none for close_immediately
    listener:close()
  end)
end)

describe("connect", function()
  after_each(function()
    dns.configure({ servers = { "127.0.0.1:9" }, timeout = 0.2, tries = 1 })
  end)

  it("fails with 'connection refused' when nobody listens", function()
    local listener, port = echo_server()
    listener:close()
    local t0 = event.time()
    local ch, err = event.connect("127.0.0.1", port)
    assert.is_nil(ch)
    assert.equal("connection refused", err)
    assert.is_true(event.time() - t0 < 5)
  end)

  it("times out against a listener whose backlog is full", function()
    local listener = assert(event.listen("127.0.0.1", 0, function() end, nil, { backlog = 0 }))
    listener:pause()
    local port = listener:port()
    local filled = {}
    -- The first connections fill the backlog; then SYNs go unanswered.
    local ch, err
    for i = 1, 8 do
      ch, err = event.connect("127.0.0.1", port, nil, 0.2)
      if not ch then break end
      filled[i] = ch
    end
    assert.is_nil(ch)
    assert.equal("timeout", err)
    for _, c in ipairs(filled) do c:close_immediately() end
    listener:close()
  end)

  it("defaults the backlog to somaxconn and an explicit one is kept", function()
    local f = io.open("/proc/sys/net/core/somaxconn")
    local somaxconn = f and tonumber(f:read("l")) or 4096
    if f then f:close() end
    local listener = assert(event.listen("127.0.0.1", 0, function() end))
    assert.equal(math.min(somaxconn, 65535), listener:backlog())
    listener:close()
    listener = assert(event.listen("127.0.0.1", 0, function() end, nil, { backlog = 7 }))
    assert.equal(7, listener:backlog())
    listener:close()
  end)

  it("queues a burst of 1,000 connections without SYN retries", function()
    -- The listener accepts nothing meanwhile, so every handshake must fit
    -- in the kernel's queue: with a 511 backlog the 513th SYN is dropped
    -- and its connect can only time out while the queue stays full.
    local listener = assert(event.listen("127.0.0.1", 0, function() end))
    if listener:backlog() < 1000 then
      listener:close()
      return pending("somaxconn below 1000 on this machine")
    end
    listener:pause()
    local port, N = listener:port(), 1000
    local handles = {}
    for i = 1, N do
      handles[i] = event.fork(function()
        return event.connect("127.0.0.1", port, nil, 3)
      end)
    end
    local connected = 0
    for i = 1, N do
      local _, ch, err = handles[i]:join(10)
      assert(ch, err)
      connected = connected + 1
      handles[i] = ch
    end
    assert.equal(N, connected)
    for i = 1, N do handles[i]:close_immediately() end
    listener:close()
  end)

  it("fails promptly when the name does not resolve", function()
    dns.configure({ servers = { "127.0.0.1:9" }, timeout = 0.2, tries = 1 })
    local t0 = event.time()
    local ch, err = event.connect("no-such-host.invalid", 80, nil, 2)
    assert.is_nil(ch)
    assert.is_string(err)
    assert.is_true(event.time() - t0 < 2.5)
  end)

  it("resolves localhost through the hosts file", function()
    local listener, port = echo_server()
    local ch = assert(event.connect("localhost", port))
    ch:write("via name\n")
    assert.equal("via name", ch:wait_line(5))
    ch:close()
    listener:close()
  end)

  it("rejects bad arguments and waiting outside a coroutine", function()
    assert.has_error(function() event.connect(42, 1) end)
    assert.has_error(function() event.connect("127.0.0.1", 70000) end)
    assert.has_error(function() event.connect("127.0.0.1", 1, "nope") end)
    local ok, err = coroutine.wrap(function() return pcall(event.connect, "127.0.0.1", 1) end)()
    assert.is_false(ok)
    assert.matches("must run in a coroutine", err)
  end)
end)

describe("addresses", function()
  after_each(helper.cleanup)

  it("works over IPv6", function()
    local listener = assert(event.listen("::1", 0, function() end, Echo))
    assert.equal("::1", (listener:addr()))
    local ch = assert(event.connect("::1", listener:port()))
    ch:write("six\n")
    assert.equal("six", ch:wait_line(5))
    ch:close()
    listener:close()
  end)

  it("works over unix sockets, replacing a stale socket file", function()
    local path = "unix:" .. helper.tmpdir() .. "/echo.sock"
    local listener = assert(event.listen(path, nil, function() end, Echo))
    assert.equal(path, (listener:addr()))
    local ch = assert(event.connect(path))
    ch:write("unix\n")
    assert.equal("unix", ch:wait_line(5))
    ch:close()
    listener:close()                 -- leaves the socket file behind
    local again = assert(event.listen(path, nil, function() end, Echo))
    again:close()
  end)

  it("reports a port in use, and allows sharing it with reuseport", function()
    local a = assert(event.listen("127.0.0.1", 0, function() end))
    local b, err = event.listen("127.0.0.1", a:port(), function() end)
    assert.is_nil(b)
    assert.equal("bind: address already in use", err)
    a:close()
    local c = assert(event.listen("127.0.0.1", 0, function() end, nil, { reuseport = true }))
    local d = assert(event.listen("127.0.0.1", c:port(), function() end, nil, { reuseport = true }))
    c:close()
    d:close()
  end)

  it("rejects names it cannot listen on", function()
    local l, err = event.listen("example.com", 0, function() end)
    assert.is_nil(l)
    assert.matches("numeric address", err)
    assert.has_error(function() event.listen("127.0.0.1", -1, function() end) end)
    assert.has_error(function() event.listen("127.0.0.1", 0, "no") end)
  end)

  it("binds an existing fd (stdin of a process)", function()
    local out, err, rc = helper.run({ "-e", [[
      local event = require "event"
      local ch = event.bind(0)
      print(ch:wait_line(5))
      print(ch:wait_line(5))
      print(ch:wait_line(5))
    ]] }, "first\nsecond\n")
    assert.equal(0, rc, err)
    assert.equal("first\nsecond\nnil\tclosed\tclosed\n", out)
  end)
end)

describe("limits and timeouts", function()
  it("a line of max_line bytes passes, one more byte is too long", function()
    local listener, port = echo_server()
    local ch = assert(event.connect("127.0.0.1", port))
    ch:set_limits({ max_line = 10 })
    ch:write(("a"):rep(10) .. "\n")
    assert.equal(("a"):rep(10), ch:wait_line(5))
    ch:write(("b"):rep(11) .. "\n")
    assert.same({ nil, "line too long", "too_large" }, { ch:wait_line(5) })
    ch:close()
    listener:close()
  end)

  it("stops reading at max_input and resumes when the reader takes bytes", function()
    local server
    local Small = channel:inherit()
    Small.max_input = 1000
    local listener = assert(event.listen("127.0.0.1", 0, function(_, ch) server = ch end, Small))
    local ch = assert(event.connect("127.0.0.1", listener:port()))
    ch:write(("z"):rep(5000))
    eventually(function() return server and server:stats().buffered_in == 1000 end, "1000 bytes")
    event.sleep(0.02)
    assert.equal(1000, server:stats().buffered_in)    -- not one byte more
    assert.equal(("z"):rep(1000), server:read(1000))
    assert.equal(("z"):rep(1000), server:wait_read(1000, 5))
    assert.has_error(function() server:wait_read(1001) end)
    ch:close()
    listener:close()
  end)

  it("wait_read and wait_line time out and the channel stays usable", function()
    local listener, port = echo_server()
    local ch = assert(event.connect("127.0.0.1", port))
    assert.same({ nil, "timeout", "timeout" }, { ch:wait_line(0.02) })
    assert.same({ nil, "timeout", "timeout" }, { ch:wait_read(1, 0.02) })
    ch.read_timeout = 0.02
    assert.same({ nil, "timeout", "timeout" }, { ch:wait_read(1) })
    ch:write("still here\n")
    assert.equal("still here", ch:wait_line(5))
    ch:close()
    listener:close()
  end)

  it("closes an idle connection with reason 'timeout'", function()
    local reason
    local Idle = channel:inherit()
    Idle.idle_timeout = 0.05
    function Idle:disconnect(why) reason = why end
    local listener = assert(event.listen("127.0.0.1", 0, function() end, Idle))
    local ch = assert(event.connect("127.0.0.1", listener:port()))
    assert.same({ nil, "closed", "closed" }, { ch:wait_read(1, 5) })
    assert.equal("eof", ch:closed())
    assert.equal("timeout", reason)
    listener:close()
  end)

  it("dates activity after a blocking step by the real time, not the stale loop clock", function()
    local accepted = {}
    local listener = assert(event.listen("127.0.0.1", 0, function(_, c)
      accepted[1] = c
      event.wakeup(accepted)
    end))
    local ch = assert(event.connect("127.0.0.1", listener:port()))
    if not accepted[1] then event.wait(accepted, 5) end
    ch:set_timeouts({ idle = 1 })
    os.execute("sleep 1.5")   -- blocks the loop: its cached time is 1.5 s old
    local written_at = event.time()
    ch:write("x")             -- activity now: a full second of idle time left
    -- (no timeout on this wait: starting its timer would refresh the clock)
    assert.equal("x", accepted[1]:wait_read(1))
    assert.falsy(ch:closed())
    assert.same({ nil, "closed", "closed" }, { ch:wait_read(1, 5) })
    assert.is_true(event.time() - written_at >= 0.5)
    ch:close()
    listener:close()
  end)

  -- A server class that sends `size` bytes as soon as a client connects;
  -- Sender.reason(timeout) awaits its disconnect reason.
  local function sender_class(size, send_timeout, close_after)
    local Sender = channel:inherit()
    Sender.send_timeout = send_timeout
    local why
    function Sender:init()
      Sender.conn = self
      self:write(("s"):rep(size))
      if close_after then self:close() end
    end
    function Sender:disconnect(reason)
      why = reason
      event.wakeup(Sender)
    end
    function Sender.reason(timeout)
      if not why then event.wait(Sender, timeout) end
      return why
    end
    return Sender
  end

  -- A client that reads nothing: max_input = 1, so its kernel buffer
  -- fills and stays full.
  local function stalled_client(port)
    local ch = assert(event.connect("127.0.0.1", port))
    ch:set_limits({ max_input = 1 })
    return ch
  end

  it("defaults send_timeout to 60 s; set_timeouts{ send = } changes it", function()
    local listener, port = echo_server()
    local ch = assert(event.connect("127.0.0.1", port))
    assert.equal(60, select(2, ch._stream:timeouts()))
    ch:set_timeouts({ send = 0.5 })
    assert.equal(0.5, select(2, ch._stream:timeouts()))
    ch:set_timeouts({ send = false })
    assert.equal(0, select(2, ch._stream:timeouts()))
    ch:close()
    listener:close()
  end)

  it("closes with 'send timeout' when a peer stops reading, releasing the queue", function()
    local SIZE = 16 * 1024 * 1024   -- far more than the socket buffers
    local Sender = sender_class(SIZE, 0.2)
    local listener = assert(event.listen("127.0.0.1", 0, function() end, Sender))
    local t0 = event.now()
    local client = stalled_client(listener:port())
    assert.equal("send timeout", Sender.reason(10))
    assert.truthy(event.now() - t0 >= 0.2)
    local stats = Sender.conn:stats()
    assert.equal("closed", stats.state)
    assert.equal(0, stats.buffered_out)   -- the queue's memory is freed
    assert.truthy(stats.bytes_out < SIZE)
    client:close_immediately()
    listener:close()
  end)

  it("applies the send timeout while close() flushes too", function()
    local Sender = sender_class(16 * 1024 * 1024, 0.2, true)
    local listener = assert(event.listen("127.0.0.1", 0, function() end, Sender))
    local client = stalled_client(listener:port())
    assert.equal("send timeout", Sender.reason(10))
    client:close_immediately()
    listener:close()
  end)

  it("keeps a slow reader whose stalls each stay under send_timeout", function()
    local SIZE = 4 * 1024 * 1024
    -- each stall is 0.1 s, a tenth of send_timeout, so a loaded machine
    -- cannot stretch one past it; at most 256 KiB per read makes 16 stalls
    local Sender = sender_class(SIZE, 1, true)
    local listener = assert(event.listen("127.0.0.1", 0, function() end, Sender))
    local client = assert(event.connect("127.0.0.1", listener:port()))
    client:set_limits({ max_input = 256 * 1024 })
    local t0, got = event.now(), 0
    while true do
      local bytes = client:wait_read(nil, 10)
      if not bytes then break end
      got = got + #bytes
      event.sleep(0.1)   -- the reader's pace, not synchronisation
    end
    assert.equal(SIZE, got)
    -- stalled for longer than send_timeout in total, never that long at once
    assert.truthy(event.now() - t0 > 1)
    assert.equal("local close", Sender.reason(10))
    listener:close()
  end)

  it("costs an idle peer nothing: the send timeout needs queued output", function()
    local Sender = sender_class(100, 0.05)
    local listener = assert(event.listen("127.0.0.1", 0, function() end, Sender))
    local client = stalled_client(listener:port())
    -- the 100 bytes left at once; nothing is queued, so nothing expires
    assert.is_nil(Sender.reason(0.3))
    assert.equal("open", Sender.conn:stats().state)
    client:close()
    assert.equal("eof", Sender.reason(10))
    listener:close()
  end)

  it("a cancelled reader gets nil, 'cancelled' and frees the channel", function()
    local listener, port = echo_server()
    local ch = assert(event.connect("127.0.0.1", port))
    local reader = event.fork(function() return ch:wait_line() end)
    event.sleep(0)
    assert.has_error(function() ch:wait_line() end,
      "wait_line: another coroutine is already reading this channel")
    reader:cancel()
    assert.same({ true, nil, "cancelled", "cancelled" }, { reader:join(5) })
    ch:write("next\n")
    assert.equal("next", ch:wait_line(5))
    ch:close()
    listener:close()
  end)

  it("keeps a parked reader in the stream, not in a field of the channel", function()
    local listener, port = echo_server()
    local ch = assert(event.connect("127.0.0.1", port))
    local reader = event.fork(function() return ch:wait_read(5, 5) end)
    event.sleep(0)
    assert.equal("waiting", reader:status())
    assert.equal(reader, ch._stream:reader())
    -- the channel table holds only its stream: a reader field would grow
    -- its hash part for every idle connection
    for k in pairs(ch) do assert.equal("_stream", k) end
    ch:write("hello")
    assert.same({ true, "hello" }, { reader:join(5) })
    assert.is_nil(ch._stream:reader())
    ch:close()
    listener:close()
  end)

  it("wakes a reader parked on a stream with a data handler when it closes", function()
    local listener, port = echo_server()
    local ch = assert(event.connect("127.0.0.1", port))
    local handled = 0
    ch._stream:set_data_handler(function() handled = handled + 1 end)
    local reader = event.fork(function() return ch:wait_read(1, 5) end)
    event.sleep(0)
    assert.equal("waiting", reader:status())
    assert.equal(reader, rawget(ch, "_reader"))   -- the handler has the slot
    assert.has_error(function() ch:wait_read(1) end,
      "wait_read: another coroutine is already reading this channel")
    ch:close_immediately()
    assert.same({ true, nil, "closed", "closed" }, { reader:join(5) })
    assert.is_nil(rawget(ch, "_reader"))
    assert.equal(0, handled)
    listener:close()
  end)

  it("refuses a data handler while a reader is parked", function()
    local listener, port = echo_server()
    local ch = assert(event.connect("127.0.0.1", port))
    local reader = event.fork(function() return ch:wait_read(1, 5) end)
    event.sleep(0)
    assert.has_error(function() ch._stream:set_data_handler(print) end,
      "set_data_handler: a coroutine is waiting in a read on this stream")
    reader:cancel()
    assert.same({ true, nil, "cancelled", "cancelled" }, { reader:join(5) })
    ch._stream:set_data_handler(nil)   -- free again
    ch:close()
    listener:close()
  end)

  it("checks the waiting reads' arguments", function()
    local listener, port = echo_server()
    local ch = assert(event.connect("127.0.0.1", port))
    local max = ch._stream:limits()
    local count = "bad argument #1 to 'wait_read' (count between 0 and max_input ("
      .. max .. ") expected)"
    assert.has_error(function() ch:wait_read(1.5) end, count)
    assert.has_error(function() ch:wait_read(2.0) end, count)
    assert.has_error(function() ch:wait_read(-1) end, count)
    assert.has_error(function() ch:wait_read("3") end, count)
    assert.has_error(function() ch:wait_read(1, {}) end,
      "bad argument #2 to 'wait_read' (number expected, got table)")
    assert.has_error(function() ch:wait_line({}) end,
      "bad argument #1 to 'wait_line' (number expected, got table)")
    assert.has_error(function() ch:wait_message() end,
      "wait_message: not a message-mode channel (KCP without stream = true)")
    local ok, err = coroutine.wrap(function() return pcall(ch.wait_read, ch) end)()
    assert.is_false(ok)
    assert.matches("wait_read must run in a coroutine", err)
    ch:write("ok")
    assert.equal("ok", ch:wait_read(2, "5"))   -- a numeric string is a number
    ch:close()
    listener:close()
  end)

  it("a write after close fails with nil, 'closed'", function()
    local listener, port = echo_server()
    local ch = assert(event.connect("127.0.0.1", port))
    ch:close()
    assert.same({ nil, "closed", "closed" }, { ch:write("late") })
    ch:close()    -- idempotent
    ch:close_immediately()
    listener:close()
  end)
end)

describe("listeners", function()
  after_each(helper.cleanup)

  it("pause keeps new connections in the backlog, resume accepts them",
     function()
    local accepted = 0
    local listener = assert(event.listen("127.0.0.1", 0, function()
      accepted = accepted + 1
    end, Echo))
    listener:pause()
    local ch = assert(event.connect("127.0.0.1", listener:port()))
    assert.is_true(ch:write("waiting"))
    -- some loop turns with the connection ready to accept
    event.sleep(0.05)
    assert.equal(0, accepted)
    listener:resume()
    assert.equal("waiting", ch:wait_read(7, 5))
    assert.equal(1, accepted)
    ch:close()
    listener:close()
    listener:resume()   -- closed: nothing to restart
  end)

  it("backs off while out of fds and accepts once one is free", function()
    local dir = helper.tmpdir()
    local script = dir .. "/emfile.lua"
    helper.write_file(script, [[
      local event = require "event"
      local accepted = 0
      local l = assert(event.listen("127.0.0.1", 0, function()
        accepted = accepted + 1
      end))
      local files = {}
      while true do
        local f = io.open("/dev/null")
        if not f then break end
        files[#files + 1] = f
      end
      print("filled", #files > 0)
      -- one fd for the client; none is left for accept(2)
      table.remove(files):close()
      local ch = assert(event.connect("127.0.0.1", l:port()))
      local cpu = os.clock()
      event.sleep(0.3)                 -- a few retries of the back-off
      print("while full", accepted)
      -- a listener that kept polling would have burnt the 0.3 s
      print("spun", os.clock() - cpu > 0.2)
      table.remove(files):close()
      for _ = 1, 2000 do
        if accepted > 0 then break end
        event.sleep(0.005)
      end
      print("after", accepted)
      ch:close()
      l:close()
    ]])
    local out, err, rc = helper.sh(("ulimit -n 64; timeout -k 5 %d %s %s")
      :format(helper.TIMEOUT, helper.quote(helper.evlua),
              helper.quote(script)))
    assert.equal(0, rc, err)
    assert.equal("filled\ttrue\nwhile full\t0\nspun\tfalse\nafter\t1\n", out)
  end)
end)

describe("lines", function()
  after_each(helper.cleanup)

  it("strips \\r\\n, keeps empty lines, refuses a long line before its "
     .. "newline", function()
    local listener, port = echo_server()
    local ch = assert(event.connect("127.0.0.1", port))
    ch:set_limits({ max_line = 10 })
    ch:write("crlf\r\n\n\r\nlast")
    assert.equal("crlf", ch:wait_line(5))
    assert.equal("", ch:wait_line(5))
    assert.equal("", ch:wait_line(5))
    -- "last" has no newline yet: no line, and not too long either
    assert.is_nil(ch:read_line())
    local line, err = ch:wait_line(0.05)
    assert.is_nil(line)
    assert.equal("timeout", err)
    ch:write("\n")
    assert.equal("last", ch:wait_line(5))
    -- 11 bytes and no newline: refused without waiting for one
    ch:write(("x"):rep(11))
    line, err = ch:wait_line(5)
    assert.is_nil(line)
    assert.equal("line too long", err)
    ch:close()
    listener:close()
  end)
end)
