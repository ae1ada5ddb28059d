-- tests/lua/dns_spec.lua - asynchronous DNS (evlua.dns): numeric
-- addresses, the hosts file, a real DNS server (dnsmasq on loopback),
-- silent and refusing servers, many concurrent lookups, cancellation, bad
-- arguments, leaks. Runs inside evlua.
--
-- Network rule: nothing here may reach a non-loopback address. Every test
-- that could send a query first configures 127.0.0.1 servers only, and the
-- suite ends on a loopback configuration.
local event = require "event"
local core = require "evlua.core"
local dns = require "evlua.dns"
local helper = require "helper"

local DEAD = "127.0.0.1:1"      -- nothing listens: queries are refused

local function now()
  core.update_now()
  return event.now()
end

-- A UDP port that was free a moment ago.
local function free_port()
  local p = io.popen([[python3 -c 'import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])']])
  local port = tonumber(p:read("l"))
  p:close()
  assert(port, "python3 could not find a free port")
  return port
end

-- A UDP socket on 127.0.0.1 that reads nothing and answers nothing: a DNS
-- server that never replies. Returns { port =, stop = fn }.
local function silent_server()
  local p = io.popen([[exec python3 -u -c 'import os, socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
print(os.getpid(), s.getsockname()[1])
time.sleep(120)']])
  local pid, port = (p:read("l") or ""):match("^(%d+) (%d+)$")
  assert(pid, "python3 could not start a silent UDP server")
  return {
    port = tonumber(port),
    stop = function()
      os.execute("kill " .. pid)
      p:close()
    end,
  }
end

local function dnsmasq_path()
  for _, path in ipairs({ "/usr/sbin/dnsmasq", "/usr/bin/dnsmasq" }) do
    local f = io.open(path)
    if f then
      f:close()
      return path
    end
  end
  return "dnsmasq"
end

-- Point the resolver at port on 127.0.0.1 only.
local function use_server(port, timeout, tries)
  assert(dns.configure({ servers = { "127.0.0.1:" .. port },
                         timeout = timeout or 1, tries = tries or 2 }))
end

local function use_dead_server()
  assert(dns.configure({ servers = { DEAD }, timeout = 0.5, tries = 2 }))
end

-- The refusal of a name proves it went to the (dead) server. One family:
-- with two queries c-ares may report the second one's fate, a timeout,
-- when the ICMP error surfaced on the other query's send.
local function assert_refused(host)
  assert.same({ nil, "refused", "refused" },
              { dns.resolve(host, { family = "inet" }) })
end

-- Start dnsmasq on a free loopback port, answering *.svc.test with
-- 127.0.0.42 and ::42 and *.nx.test with NXDOMAIN, and refusing anything
-- else (it has no upstream). Ready once it answers a lookup.
local function start_dnsmasq()
  local dir = helper.tmpdir()
  for _ = 1, 5 do
    local port = free_port()
    local p = io.popen(("%s --no-daemon --no-resolv --no-hosts "
      .. "--conf-file=/dev/null --pid-file= --port=%d "
      .. "--listen-address=127.0.0.1 --bind-interfaces "
      .. "--address=/svc.test/127.0.0.42 --address=/svc.test/::42 "
      .. "--address=/nx.test/ >%s/dnsmasq.log 2>&1 & echo $!")
      :format(dnsmasq_path(), port, dir))
    local pid = p:read("l")
    p:close()
    local server = {
      port = port,
      stop = function() os.execute("kill " .. pid .. " 2>/dev/null") end,
    }
    use_server(port, 0.2, 1)
    local deadline = now() + 5
    while now() < deadline do
      if dns.resolve("ready.svc.test", { family = "inet" }) then
        use_server(port)
        return server
      end
      -- Exited (the port was taken meanwhile)? Try another port.
      if not os.execute("kill -0 " .. pid .. " 2>/dev/null") then break end
      event.sleep(0.02)       -- polling a starting process: no event exists
    end
    server.stop()
  end
  error("dnsmasq did not start: " .. helper.slurp(dir .. "/dnsmasq.log"))
end

-- { name = { v4 = {...}, v6 = {...} } } from /etc/hosts
local function read_hosts()
  local map = {}
  local f = io.open("/etc/hosts")
  if not f then return map end
  for line in f:lines() do
    line = line:gsub("#.*", "")
    local addr, names = line:match("^%s*(%S+)%s+(.-)%s*$")
    if addr then
      local v6 = addr:find(":", 1, true) ~= nil
      for name in names:gmatch("%S+") do
        local e = map[name] or { v4 = {}, v6 = {} }
        map[name] = e
        local list = v6 and e.v6 or e.v4
        local seen = false
        for _, a in ipairs(list) do seen = seen or a == addr end
        if not seen then list[#list + 1] = addr end
      end
    end
  end
  f:close()
  return map
end

-- Safety first: the system resolver would send to a non-loopback server.
setup(use_dead_server)
teardown(use_dead_server)

describe("dns.resolve without a server", function()
  before_each(use_dead_server)

  it("returns numeric addresses as they are", function()
    local t0 = now()
    assert.same({ "127.0.0.1" }, dns.resolve("127.0.0.1"))
    assert.same({ "10.1.2.3" }, dns.resolve("10.1.2.3"))
    assert.same({ "::1" }, dns.resolve("::1"))
    assert.same({ "2001:db8::1" }, dns.resolve("2001:db8::1"))
    assert.same({ "::1" }, dns.resolve("[::1]"))
    assert.same({ "::1" }, dns.resolve("0:0::1"))             -- canonical
    assert.same({ "::ffff:1.2.3.4" }, dns.resolve("::ffff:1.2.3.4"))
    assert.same({ "127.0.0.1" }, dns.resolve("127.0.0.1", { family = "inet" }))
    assert.same({ "::1" }, dns.resolve("::1", { family = "inet6" }))
    assert.same({ nil, "not found", "not_found" },
                { dns.resolve("::1", { family = "inet" }) })
    assert.same({ nil, "not found", "not_found" },
                { dns.resolve("127.0.0.1", { family = "inet6" }) })
    assert.equal(0, dns.config().pending)   -- no request was started
    assert.is_true(now() - t0 < 0.1)
    -- The dead server does refuse a name, so the answers above were not
    -- looked up.
    assert_refused("anything.test")
  end)

  it("answers localhost from the hosts file, never from DNS", function()
    local entry = read_hosts().localhost
    local v4 = entry and #entry.v4 > 0 and entry.v4 or { "127.0.0.1" }
    assert.same(v4, dns.resolve("localhost", { family = "inet" }))
    local list = assert(dns.resolve("localhost"))
    assert.equal(v4[1], list[1])              -- IPv4 first
    assert.same(list, dns.resolve("LocalHost."))
    local v6 = assert(dns.resolve("localhost", { family = "inet6" }))
    for _, a in ipairs(v6) do assert.matches(":", a, 1, true) end
    assert.same({ "127.0.0.1" }, dns.resolve("db.localhost", { family = "inet" }))
  end)

  it("answers other names of /etc/hosts", function()
    local name, entry
    for n, e in pairs(read_hosts()) do
      if #e.v4 > 0 and n ~= "localhost" and not n:find("localhost", 1, true)
          and n:match("^[%w%-_.]+$") and (name == nil or n < name) then
        name, entry = n, e
      end
    end
    if not name then
      pending("/etc/hosts names no host besides localhost")
      return
    end
    assert.same(entry.v4, dns.resolve(name, { family = "inet" }))
    local list = assert(dns.resolve(name))
    assert.equal(entry.v4[1], list[1])
    assert.equal(#entry.v4 + #entry.v6, #list)
  end)

  it("rejects invalid names with nil, 'bad name'", function()
    local bad = { "", ".", "a..b", ".lead", "has space", "tab\tname",
                  "under/slash", "x:y", "a\0b", "caf\195\169.test",
                  ("a"):rep(64) .. ".test", ("ab."):rep(90) .. "test" }
    for _, host in ipairs(bad) do
      assert.same({ nil, "bad name", "bad_name" }, { dns.resolve(host) }, host)
    end
    -- the limits themselves are fine (and refused by the dead server)
    assert_refused(("a"):rep(63) .. ".test")
  end)

  it("reports a refusing server (ICMP port unreachable) as 'refused' at once",
     function()
    assert(dns.configure({ servers = { "127.0.0.1:" .. free_port() },
                           timeout = 2, tries = 2 }))
    local t0 = now()
    assert_refused("nobody.listens.test")
    assert.same({ nil, "refused", "refused" },
                { dns.resolve("nobody.listens.test", { family = "inet6" }) })
    assert.is_true(now() - t0 < 1, "took " .. now() - t0)
  end)
end)

describe("dns.resolve against a real DNS server", function()
  local server
  setup(function() server = start_dnsmasq() end)
  teardown(function()
    use_dead_server()
    if server then server.stop() end
  end)
  before_each(function() use_server(server.port) end)

  it("returns the server's answer, IPv4 first", function()
    assert.same({ "127.0.0.42", "::42" }, dns.resolve("svc.test"))
    assert.same({ "127.0.0.42", "::42" }, dns.resolve("api.svc.test."))
  end)

  it("asks for one family with opts.family", function()
    assert.same({ "127.0.0.42" }, dns.resolve("svc.test", { family = "inet" }))
    assert.same({ "::42" }, dns.resolve("svc.test", { family = "inet6" }))
  end)

  it("returns nil, 'not found' for NXDOMAIN, promptly", function()
    local t0 = now()
    assert.same({ nil, "not found", "not_found" },
                { dns.resolve("missing.nx.test") })
    assert.same({ nil, "not found", "not_found" },
                { dns.resolve("missing.nx.test", { family = "inet6" }) })
    assert.is_true(now() - t0 < 0.5, "took " .. now() - t0)
  end)

  it("returns nil, 'refused' when the server refuses", function()
    assert.same({ nil, "refused", "refused" },
                { dns.resolve("elsewhere.example") })
  end)

  it("serves 200 concurrent lookups from as many coroutines", function()
    local N, left, done = 200, 200, {}
    local got, want = {}, {}
    for i = 1, N do
      local host, opts, expect
      local kind = i % 5
      if kind == 0 then
        host, expect = "h" .. i .. ".svc.test", { "127.0.0.42", "::42" }
      elseif kind == 1 then
        host, expect = "h" .. i .. ".nx.test", { nil, "not found", "not_found" }
      elseif kind == 2 then
        host, opts, expect = "h" .. i .. ".svc.test", { family = "inet" },
                             { "127.0.0.42" }
      elseif kind == 3 then
        host, opts, expect = "h" .. i .. ".svc.test", { family = "inet6" },
                             { "::42" }
      else
        host, expect = "10.0." .. i // 256 .. "." .. i % 256,
                       { "10.0." .. i // 256 .. "." .. i % 256 }
      end
      want[i] = expect
      event.fork(function()
        local list, err, code = dns.resolve(host, opts)
        got[i] = list or { nil, err, code }
        left = left - 1
        if left == 0 then event.wakeup(done) end
      end)
    end
    event.sleep(0)          -- every coroutine has sent its queries
    assert.equal(160, dns.config().pending)   -- all in flight at once
    assert.is_true(event.wait(done, 10))
    assert.same(want, got)
    assert.equal(0, dns.config().pending)
  end)

  it("drops the answer to a cancelled request", function()
    local r = assert(core.dns_resolver({
      servers = { "127.0.0.1:" .. server.port }, timeout = 1, tries = 2 }))
    local called = false
    local first = r:resolve("first.svc.test", "any", function() called = true end)
    assert.is_true(first:pending())
    first:cancel()
    first:cancel()                              -- idempotent
    assert.is_false(first:pending())
    -- Sent after the first on the same socket, answered after it.
    local token = {}
    r:resolve("second.svc.test", "inet", function(req, tok, list, err)
      assert.is_false(req:pending())
      event.wakeup(tok, list, err)
    end, token)
    assert.same({ "127.0.0.42" }, event.wait(token, 5))
    assert.equal(0, r:info().pending)           -- the first one came back
    assert.is_false(called)
    r:close()
    r:close()
    -- a closed handle answers as every closed handle does
    assert.same({ nil, "closed", "closed" },
                { r:resolve("x.svc.test", "any", print) })
  end)

  it("survives a resolver closed or collected from inside a callback", function()
    for _, hosts in ipairs({ { "10.0.0.1", "10.0.0.2", "10.0.0.3" },
                             { "a.svc.test", "b.svc.test", "c.svc.test" } }) do
      local r = assert(core.dns_resolver({
        servers = { "127.0.0.1:" .. server.port }, timeout = 1, tries = 2 }))
      local calls, token = 0, {}
      for _, host in ipairs(hosts) do
        r:resolve(host, "inet", function(_, _, list)
          calls = calls + 1
          assert.is_table(list)
          r:close()                   -- the others are dropped silently
          event.wakeup(token)
        end)
      end
      assert.is_true(event.wait(token, 5))
      assert.equal(1, calls)
      assert.same({ nil, "closed", "closed" }, { r:info() })
    end
    -- Collected with a cancelled request still out.
    local r = assert(core.dns_resolver({
      servers = { "127.0.0.1:" .. server.port }, timeout = 1, tries = 2 }))
    r:resolve("gone.svc.test", "any", print):cancel()
    r = nil   -- luacheck: ignore
    collectgarbage()
    collectgarbage()
    assert.same({ "127.0.0.42" }, dns.resolve("svc.test", { family = "inet" }))
  end)

  it("finishes lookups in flight on the old resolver after configure", function()
    local h = event.fork(function() return dns.resolve("inflight.svc.test") end)
    event.sleep(0)                        -- its query is out
    use_dead_server()                     -- new lookups go elsewhere now
    assert.same({ true, { "127.0.0.42", "::42" } }, { h:join(5) })
    assert_refused("after.svc.test")
  end)
end)

describe("dns.resolve against a server that never answers", function()
  local silent
  setup(function() silent = silent_server() end)
  teardown(function()
    use_dead_server()
    if silent then silent.stop() end
  end)

  it("gives up with nil, 'timeout' after the configured time", function()
    use_server(silent.port, 0.3, 1)
    local deadline = dns.config().max_wait
    local t0 = now()
    assert.same({ nil, "timeout", "timeout" },
                { dns.resolve("no.answer.test") })
    local took = now() - t0
    assert.is_true(took >= 0.25, "took " .. took)
    assert.is_true(took < 0.3 + 0.5 and took < deadline, "took " .. took)
  end)

  it("honours opts.timeout as an overall deadline", function()
    use_server(silent.port, 5, 2)
    local t0 = now()
    assert.same({ nil, "timeout", "timeout" },
                { dns.resolve("no.answer.test", { timeout = 0.1 }) })
    local took = now() - t0
    assert.is_true(took >= 0.09 and took < 0.6, "took " .. took)
  end)

  it("does not block the loop while it waits", function()
    use_server(silent.port, 0.5, 1)
    local ticks = 0
    local timer = event.timer(0.01, function() ticks = ticks + 1 end)
    local list, err = dns.resolve("no.answer.test")
    timer:cancel()
    assert.is_nil(list)
    assert.equal("timeout", err)
    assert.is_true(ticks >= 20, "only " .. ticks .. " ticks")
  end)

  it("lets a waiting coroutine be cancelled", function()
    use_server(silent.port, 5, 2)
    local h = event.fork(function() return dns.resolve("no.answer.test") end)
    event.sleep(0)
    local state, what = h:status()
    assert.equal("waiting", state)
    assert.equal("wait", what)
    local t0 = now()
    h:cancel()
    assert.same({ true, nil, "cancelled", "cancelled" }, { h:join(1) })
    assert.is_true(now() - t0 < 0.5)
    assert.same({ "::1" }, dns.resolve("::1"))   -- still serving
  end)
end)

describe("dns.configure and dns.config", function()
  after_each(function()
    use_dead_server()
    helper.cleanup()
  end)

  it("normalises server addresses and reports the settings", function()
    assert.is_true(dns.configure({
      servers = { "127.0.0.1", "::1", "[::1]:5353", "127.0.0.2:54" },
      timeout = 0.5, tries = 3 }))
    local c = dns.config()
    assert.same({ "127.0.0.1:53", "[::1]:53", "[::1]:5353", "127.0.0.2:54" },
                c.servers)
    assert.equal(0.5, c.timeout)
    assert.equal(3, c.tries)
    assert.is_true(c.max_wait >= 0.5 * 3)
  end)

  it("defaults to resolv.conf's options, else 2 s and 2 tries", function()
    -- A fresh process reads /etc/resolv.conf; it resolves nothing.
    local code = [[
      local c = require("evlua.dns").config()
      print(("%g %d %d"):format(c.timeout, c.tries, #c.servers))]]
    local conf = helper.slurp("/etc/resolv.conf")
    local timeout = tonumber(conf:match("\noptions[^\n]*timeout:(%d+)")) or 2
    local tries = tonumber(conf:match("\noptions[^\n]*attempts:(%d+)")) or 2
    local out, err, rc = helper.run_script(code, nil, { RES_OPTIONS = "" })
    assert.equal(0, rc, err)
    local t, n, servers = out:match("^(%S+) (%d+) (%d+)\n$")
    assert.equal(timeout, tonumber(t))
    assert.equal(tries, tonumber(n))
    assert.is_true(tonumber(servers) >= 1)
    out, err, rc = helper.run_script(code, nil,
                                     { RES_OPTIONS = "timeout:3 attempts:4" })
    assert.equal(0, rc, err)
    assert.matches("^3 4 %d+\n$", out)
  end)

  it("raises on bad settings and keeps the old ones", function()
    assert(dns.configure({ servers = { "127.0.0.1:1" }, timeout = 0.5, tries = 1 }))
    local bad = {
      { "x", "table expected, got string" },
      { { servers = "127.0.0.1" }, "servers must be a list of addresses" },
      { { servers = { 53 } }, "servers must be a list of addresses" },
      { { servers = { "dns.example" } }, "bad server address 'dns.example'" },
      { { servers = { "127.0.0.1:99999" } }, "bad server address" },
      { { servers = { "[::1" } }, "bad server address" },
      { { timeout = 0 }, "timeout must be" },
      { { timeout = -1 }, "timeout must be" },
      { { timeout = 1 / 0 }, "timeout must be" },
      { { tries = 0 }, "tries must be" },
      { { tries = 1.5 }, "tries must be" },
      { { tries = 11 }, "tries must be" },
    }
    for _, case in ipairs(bad) do
      local ok, err = pcall(dns.configure, case[1])
      assert.is_false(ok)
      assert.matches("bad argument #1 to 'configure' (" .. case[2], err, 1, true)
    end
    assert.same({ "127.0.0.1:1" }, dns.config().servers)
  end)

  it("gets the bad_server code from the C resolver, which knows the cause", function()
    assert.same({ nil, "bad server address 'dns.example'", "bad_server" },
                { core.dns_resolver({ servers = { "127.0.0.1", "dns.example" } }) })
    local r = assert(core.dns_resolver({ servers = { "127.0.0.1" } }))
    r:close()
  end)
end)

describe("dns.resolve arguments", function()
  it("raises on a non-string host and bad options", function()
    assert.has_error(function() dns.resolve() end,
      "bad argument #1 to 'resolve' (string expected, got nil)")
    assert.has_error(function() dns.resolve(42) end,
      "bad argument #1 to 'resolve' (string expected, got number)")
    assert.has_error(function() dns.resolve("localhost", "inet") end,
      "bad argument #2 to 'resolve' (table expected, got string)")
    assert.has_error(function() dns.resolve("localhost", { family = "ipx" }) end,
      "bad argument #2 to 'resolve' (family must be \"inet\" or \"inet6\", got ipx)")
    for _, t in ipairs({ 0, -1, 0 / 0, 1 / 0, "1" }) do
      assert.has_error(function() dns.resolve("localhost", { timeout = t }) end)
    end
  end)

  it("raises outside an event coroutine", function()
    local ok, err = coroutine.wrap(function()
      return pcall(dns.resolve, "localhost")
    end)()
    assert.is_false(ok)
    assert.matches("dns.resolve must run in a coroutine$", err)
    local token, message = {}, nil
    core.timer(function()
      message = select(2, pcall(dns.resolve, "::1"))
      event.wakeup(token)
    end):start(0)
    assert.is_true(event.wait(token, 5))
    assert.matches("dns.resolve must run in a coroutine$", message)
  end)
end)

describe("dns leak check", function()
  local silent
  setup(function() silent = silent_server() end)
  teardown(function()
    if silent then silent.stop() end
    helper.cleanup()
  end)

  it("frees every heap block after resolving and exiting mid-lookup", function()
    local script = "tests/scripts/dns_churn.lua " .. free_port() .. " "
                   .. silent.port
    local expected = "bad name=40 cancelled=50 ok=120 refused=40 timeout=100\n"
    if helper.asan then
      local out, err, rc = helper.sh("ASAN_OPTIONS=detect_leaks=1 "
        .. helper.quote(helper.evlua) .. " " .. script .. " 200")
      assert.equal(0, rc, err)
      assert.equal(expected, out)
      assert.not_matches("LeakSanitizer", err, 1, true)
    else
      local out, err, rc = helper.sh("valgrind --leak-check=full "
        .. "--errors-for-leak-kinds=definite,indirect --error-exitcode=99 "
        .. helper.quote(helper.evlua) .. " " .. script .. " 200")
      assert.equal(0, rc, err)
      assert.equal(expected, out)
      assert.matches("All heap blocks were freed", err, 1, true)
    end
  end)
end)
