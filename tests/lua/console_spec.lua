-- tests/lua/console_spec.lua - the console port (evlua.console) and its
-- client (`evlua console`): every command's output, scripting from stdin,
-- passwords, limits, the --console flag and the prompt on a terminal.
local helper = require "helper"
local event = require "event"
local console = require "evlua.console"
local client = require "evlua.console_client"

local escape = helper.escape

-- Start a server process with a console on a free port; `setup` is Lua
-- run before it says "ready". Returns port, pid, output path, dir.
local function start_server(setup, console_opts)
  local port = helper.free_port()
  local dir = helper.tmpdir()
  local pid, out = helper.spawn_script(([[
io.stdout:setvbuf("no")
local event = require "event"
local opts = %s
opts.port = %d
assert(require("evlua.console").listen(opts))
%s
print("ready")
]]):format(console_opts or "{}", port, setup or ""), { dir })
  helper.await_output(out, "ready")
  return port, pid, out, dir
end

-- `evlua console 127.0.0.1:PORT args...`
local function console_cli(port, args, stdin, env)
  local argv = { "console", "127.0.0.1:" .. port }
  for _, a in ipairs(args or {}) do argv[#argv + 1] = a end
  return helper.run(argv, stdin, env)
end

describe("evlua console", function()
  after_each(helper.cleanup)

  it("answers every command, one command per run", function()
    local port, _, _, dir = start_server([[
      local dir = arg[1]
      local f = assert(io.open(dir .. "/mod.lua", "w"))
      f:write("local n = 0\nlocal M = {}\nfunction M.version() n = n + 1 return 'v1', n end\nreturn M\n")
      f:close()
      mod = import(dir .. "/mod.lua")
      event.timer(60, function() end)
      event.fork(function() event.wait({}) end):set_name("idle worker")
      app = assert(event.listen("127.0.0.1", 0, function(_, ch) peer = ch end))
    ]], "{ eval_timeout = 0.2 }")

    local out, err, rc = console_cli(port, { "ping" })
    assert.same({ "pong\n", "", 0 }, { out, err, rc })

    out, err, rc = console_cli(port, { "mem" })
    assert.equal(0, rc, err)
    assert.matches("^lua heap: %d+%.%d KiB\nc heap: %d+%.%d KiB\n$", out)

    out = console_cli(port, { "gc" })
    assert.matches("^lua heap: [%d.]+ KiB %-> [%d.]+ KiB %(freed %-?[%d.]+ KiB%)\n$", out)

    -- A connection to the app's listener, kept open while stats runs.
    local app_port = tonumber((console_cli(port, { "eval", "app:port()" })))
    local ch = assert(event.connect("127.0.0.1", app_port))
    helper.eventually(function()
      return console_cli(port, { "eval", "peer ~= nil" }) == "true\n"
    end, "the app's connection")
    out, err, rc = console_cli(port, { "stats" })
    assert.equal(0, rc, err)
    -- 2 connections: the app's and this console's; 2 listeners; the idle
    -- worker and the console session; the app's timer.
    assert.matches("^connections: 2\nlisteners: 2\ncoroutines: 2 %(0 ready%)\n"
                   .. "timers: 1\nfd watches: 0\nloop iterations: %d+\n"
                   .. "uptime: %d%d:%d%d:%d%d%.%d%d%d\npid: %d+\n$", out)
    ch:close()

    out = console_cli(port, { "ps" })
    assert.matches("idle worker [waiting wait table: ", out, 1, true)
    assert.matches("console ", out, 1, true)
    assert.matches("idle worker [waiting wait table: ", (console_cli(port, { "tasks" })), 1, true)

    out = console_cli(port, { "eval", "1 + 1" })
    assert.equal("2\n", out)
    out = console_cli(port, { "eval", "print('a', 1) print('b') return 'c', nil" })
    assert.equal("a\t1\nb\nc\tnil\n", out)
    out = console_cli(port, { "eval", "require('event').sleep(0.01) return 'slept'" })
    assert.equal("slept\n", out)
    out = console_cli(port, { "eval", "x_set_by_console = 5" })
    assert.equal("", out)
    assert.equal("5\n", (console_cli(port, { "eval", "x_set_by_console" })))
    out, err, rc = console_cli(port, { "eval", "error('boom')" })
    assert.same({ "", 1 }, { out, rc })
    assert.matches("^error: console:1: boom\nstack traceback:\n", err)
    out, err, rc = console_cli(port, { "eval", "require('event').sleep(5)" })
    assert.same({ "", 1 }, { out, rc })
    assert.equal("error: eval: no result after 0.2 s (cancelled at its next wait)\n", err)
    _, err, rc = console_cli(port, { "eval", "return +" })
    assert.equal(1, rc)
    assert.matches("^error: console:1: unexpected symbol", err)

    out = console_cli(port, { "eval", "mod.version()" })
    assert.equal("v1\t1\n", out)
    local path = require("evlua.core").realpath(dir .. "/mod.lua")
    helper.write_file(path, helper.slurp(path):gsub("'v1'", "'v2'"))
    out, err, rc = console_cli(port, { "reload" })
    assert.same({ "reloaded " .. path .. "\n", "", 0 }, { out, err, rc })
    assert.equal("nothing changed\n", (console_cli(port, { "reload" })))
    assert.equal("v2\t2\n", (console_cli(port, { "eval", "mod.version()" })))
    out = console_cli(port, { "reload", path })
    assert.equal("reloaded " .. path .. "\n", out)
    helper.write_file(path, "return {")
    out, err, rc = console_cli(port, { "reload" })
    assert.same({ "", 1 }, { out, rc })
    assert.matches("^error: failed: " .. escape(path) .. ":1: ", err)
    out, err, rc = console_cli(port, { "reload", path })
    assert.same({ "", 1 }, { out, rc })
    assert.matches("^error: " .. escape(path) .. ":1: ", err)
    assert.equal("v2\t3\n", (console_cli(port, { "eval", "mod.version()" })))

    out = console_cli(port, { "help" })
    for _, name in ipairs({ "ping", "mem", "gc", "stats", "ps", "tasks", "reload", "eval", "help", "quit" }) do
      assert.matches("\n?" .. name .. "[^\n]*  %S", out)
    end

    out, err, rc = console_cli(port, { "frobnicate" })
    assert.same({ "", "error: unknown command 'frobnicate' (try help)\n", 1 }, { out, err, rc })
  end)

  it("replies with the error when kill -USR1 breaks a dead loop in an eval", function()
    local port, pid = start_server()
    local dir = helper.tmpdir()
    -- The eval marks a file, then loops on the same line: once the file
    -- exists, the loop is all that runs in the server.
    local code = ("eval io.open(%q, 'w'):close() while true do end"):format(dir .. "/started")
    helper.sh(("(%s console %d %s >%s/out 2>%s/err; echo $? >%s/rc) &")
              :format(helper.quote(helper.evlua), port, helper.quote(code), dir, dir, dir))
    helper.eventually(function()
      local f = io.open(dir .. "/started")
      if f then f:close() end
      return f ~= nil
    end, "the eval's loop")
    helper.kill(pid, "USR1")
    helper.await_output(dir .. "/rc", "%d")
    assert.equal("1\n", helper.slurp(dir .. "/rc"))
    assert.equal("", helper.slurp(dir .. "/out"))
    assert.matches("^error: console:1: interrupted\nstack traceback:", helper.slurp(dir .. "/err"))
    assert.same({ "pong\n", "", 0 }, { console_cli(port, { "ping" }) })
  end)

  it("measures CPU use and loop iterations with top", function()
    -- a process that keeps one core busy in short slices on its loop
    local port = start_server([[
      event.fork(function()
        while true do
          local t = os.clock()
          while os.clock() - t < 0.005 do end
          event.sleep(0)
        end
      end)
    ]])
    local out, err, rc = console_cli(port, { "top", "0.3" })
    assert.equal(0, rc, err)
    local cpu, iterations = out:match("^cpu: ([%d.]+)%% of one core\nloop iterations/s: (%d+)\n")
    assert.truthy(cpu, out)
    assert.truthy(tonumber(cpu) > 20, out)
    assert.truthy(tonumber(iterations) > 10, out)
    assert.matches("\nlua heap: [%d.]+ KiB\nconnections: %d+\ncoroutines: %d+ %(%d+ ready%)\ntimers: %d+\n$", out)
    out, err, rc = console_cli(port, { "top", "x" })
    assert.equal("", out)
    assert.not_equal(0, rc)
    assert.matches("top: seconds between 0 and 60 expected", err, 1, true)
  end)

  it("runs commands from stdin and stops at quit", function()
    local port = start_server()
    local out, err, rc = console_cli(port, {}, "ping\n\neval 6 * 7\nnope\nquit\nping\n")
    assert.equal("pong\n42\nbye\n", out)
    assert.equal("error: unknown command 'nope' (try help)\n", err)
    assert.equal(1, rc)                              -- one command failed
    out, err, rc = console_cli(port, {}, "ping\neval 'x'")   -- no final newline
    assert.same({ "pong\nx\n", "", 0 }, { out, err, rc })
    out, err, rc = helper.sh("tools/console " .. port, "ping\n")
    assert.same({ "pong\n", "", 0 }, { out, err, rc })
  end)

  it("asks for the password first when the console has one", function()
    local port = start_server(nil, "{ password = 's3cret' }")
    local out, err, rc = console_cli(port, { "ping" })
    assert.same({ "", 1 }, { out, rc })
    assert.equal("error: password required (auth <password>)\n", err)
    out, err, rc = helper.run({ "console", "-p", "wrong", "127.0.0.1:" .. port, "ping" })
    assert.same({ "", 1 }, { out, rc })
    assert.equal("evlua console: 127.0.0.1:" .. port .. ": wrong password\n", err)
    out, err, rc = helper.run({ "console", "-p", "s3cret", tostring(port), "ping" })
    assert.same({ "pong\n", "", 0 }, { out, err, rc })
    out, err, rc = console_cli(port, { "ping" }, nil, { EVLUA_CONSOLE_PASSWORD = "s3cret" })
    assert.same({ "pong\n", "", 0 }, { out, err, rc })
  end)

  it("reports a console nobody listens on and bad arguments", function()
    local port = helper.free_port()
    local out, err, rc = console_cli(port, { "ping" })
    assert.same({ "", 1 }, { out, rc })
    assert.equal("evlua console: 127.0.0.1:" .. port .. ": connection refused\n", err)
    out, err, rc = helper.run({ "console" })
    assert.equal("", out)
    assert.equal(2, rc)
    assert.matches("^evlua console: HOST:PORT expected\nusage: evlua console", err)
    out, err, rc = helper.run({ "console", "-x", "1" })
    assert.equal("", out)
    assert.equal(2, rc)
    assert.matches("unrecognized option '-x'", err, 1, true)
  end)

  it("opens with --console and serves the script's globals", function()
    local port = helper.free_port()
    local out, err, rc = helper.run({ "--console", tostring(port), "-e", ([[
      answer = 42
      local client = require "evlua.console_client"
      local s = assert(client.connect("127.0.0.1", %d))
      print(s:command("eval answer"))
      print(s:command("ping"))
      s:close()
      os.exit(0)
    ]]):format(port) })
    assert.equal(0, rc, err)
    assert.equal("ok\t42\nok\tpong\n", out)
    assert.matches("INFO console listening on 127.0.0.1:" .. port, err, 1, true)
    out, err, rc = helper.run({ "--console", "nonsense", "-e", "print(1)" })
    assert.equal("", out)
    assert.equal(1, rc)
    assert.matches("--console: bad address 'nonsense'", err, 1, true)
  end)
end)

describe("console.listen", function()
  it("listens on 127.0.0.1 unless told otherwise", function()
    local l = assert(console.listen(0))
    assert.equal("127.0.0.1", l:addr())
    l:close()
    assert.has_error(function() console.listen("80") end,
                     "bad argument #1 to 'listen' (port or options table expected, got string)")
    assert.has_error(function() console.listen({ port = 70000 }) end,
                     "bad argument #1 to 'listen' (port between 0 and 65535 expected)")
  end)

  it("takes lines up to max_line bytes and closes on a longer one", function()
    local l = assert(console.listen({ port = 0, max_line = 100 }))
    local s = assert(client.connect("127.0.0.1", l:port(), nil, 10))
    local at_limit = "eval '" .. ("x"):rep(93) .. "'"
    assert.equal(100, #at_limit)
    assert.same({ "ok", ("x"):rep(93) }, { s:command(at_limit) })
    assert.same({ "error", "line too long" }, { s:command(at_limit .. "x") })
    assert.same({ nil, "closed", "closed" }, { s:command("ping") })
    s:close()
    l:close()
  end)

  it("serves up to max_sessions connections at once", function()
    local l = assert(console.listen({ port = 0, max_sessions = 2 }))
    local a = assert(client.connect("127.0.0.1", l:port(), nil, 10))
    local b = assert(client.connect("127.0.0.1", l:port(), nil, 10))
    assert.same({ "ok", "pong" }, { a:command("ping") })
    assert.same({ "ok", "pong" }, { b:command("ping") })
    local c = assert(client.connect("127.0.0.1", l:port(), nil, 10))
    assert.same({ "error", "too many console sessions (2)" }, { c:command("ping") })
    c:close()
    assert.same({ "ok", "bye" }, { a:command("quit") })
    -- The session ends when the console has closed its side.
    helper.eventually(function()
      local d = assert(client.connect("127.0.0.1", l:port(), nil, 10))
      local status = d:command("ping")
      d:close()
      return status == "ok"
    end, "a free session")
    b:close()
    l:close()
  end)

  it("sees event and import as globals in eval", function()
    local l = assert(console.listen(0))
    local s = assert(client.connect("127.0.0.1", l:port(), nil, 10))
    assert.same({ "ok", "true\ttrue" },
                { s:command("eval event == require('event'), import == require('evlua.import')") })
    assert.same({ "ok", "slept" }, { s:command("eval event.sleep(0.001) return 'slept'") })
    s:close()
    l:close()
  end)

  -- A raw connection: the client library closes on a refused password.
  local function raw_auth(port, lines)
    local ch = assert(event.connect("127.0.0.1", port))
    local replies = {}
    for _, line in ipairs(lines) do
      local started = event.time()
      assert(ch:write(line, "\n"))
      local header = ch:wait_line(30)
      if not header then break end
      local n = tonumber(header:match("^%a+ (%d+)$"))
      local body = n > 0 and ch:wait_read(n, 30) or ""
      replies[#replies + 1] = { header:match("^%a+") .. " " .. body, event.time() - started }
    end
    return ch, replies
  end

  it("answers a wrong password after auth_delay, up to max_auth_tries", function()
    local delay = 0.1
    -- the loop's clock may lag the wall clock by a few ms: a little slack
    local at_least = delay - 0.01
    local l = assert(console.listen({ port = 0, password = "pw", auth_delay = delay,
                                      max_auth_tries = 3 }))
    -- at the limit: two wrong passwords, then the right one
    local ch, replies = raw_auth(l:port(), { "auth a", "auth b", "auth pw", "ping" })
    assert.equal(4, #replies)
    for i = 1, 2 do
      assert.equal("error wrong password", replies[i][1])
      assert.truthy(replies[i][2] >= at_least, "answered after " .. replies[i][2] .. " s")
    end
    assert.equal("ok authenticated", replies[3][1])
    assert.equal("ok pong", replies[4][1])
    ch:close()
    -- past it: the third wrong password closes the connection
    ch, replies = raw_auth(l:port(), { "auth a", "auth b", "auth c" })
    assert.equal(3, #replies)
    for i = 1, 3 do
      assert.equal("error wrong password", replies[i][1])
      assert.truthy(replies[i][2] >= at_least, "answered after " .. replies[i][2] .. " s")
    end
    assert.same({ nil, "closed", "closed" }, { ch:wait_line(30) })
    ch:close()
    l:close()
  end)

  it("delays only the connection that gave a wrong password", function()
    local l = assert(console.listen({ port = 0, password = "pw", auth_delay = 3600 }))
    local guesser = assert(event.connect("127.0.0.1", l:port()))
    assert(guesser:write("auth wrong\n"))
    local answered = false
    event.fork(function() answered = guesser:wait_line() ~= nil end)
    -- another session is served while the guesser's coroutine sleeps
    local s = assert(client.connect("127.0.0.1", l:port(), "pw", 30))
    assert.same({ "ok", "pong" }, { s:command("ping") })
    assert.is_false(answered)
    s:close()
    guesser:close()
    l:close()
  end)

  it("closes a connection that does not authenticate within auth_timeout", function()
    local l = assert(console.listen({ port = 0, password = "pw", auth_timeout = 0.3,
                                      max_sessions = 1 }))
    -- a silent connection holds the one session...
    local silent = assert(event.connect("127.0.0.1", l:port()))
    local refused = assert(event.connect("127.0.0.1", l:port()))
    local busy = "too many console sessions (1)"
    assert.equal("error " .. #busy, refused:wait_line(30))
    assert.equal(busy, refused:read(#busy))
    refused:close()
    -- ...until auth_timeout: then it is told why and closed
    local t0 = event.now()
    local why = "not authenticated within 0.3 s"
    assert.equal("error " .. #why, silent:wait_line(30))
    assert.equal(why, silent:read(#why))
    assert.same({ nil, "closed", "closed" }, { silent:wait_line(30) })
    assert.truthy(event.now() - t0 < 5)
    silent:close()
    -- an operator who authenticates in time keeps the session past it
    local s = assert(client.connect("127.0.0.1", l:port(), "pw", 30))
    event.sleep(0.5)
    assert.same({ "ok", "pong" }, { s:command("ping") })
    s:close()
    l:close()
  end)

  it("checks auth_delay, max_auth_tries and auth_timeout", function()
    assert.has_error(function() console.listen({ port = 0, auth_timeout = 0 }) end,
                     "bad argument #1 to 'listen' (auth_timeout must be a number > 0)")
    assert.has_error(function() console.listen({ port = 0, auth_delay = -1 }) end,
                     "bad argument #1 to 'listen' (auth_delay must be a number >= 0)")
    assert.has_error(function() console.listen({ port = 0, max_auth_tries = 0 }) end,
                     "bad argument #1 to 'listen' (max_auth_tries must be an integer >= 1)")
  end)

  it("lets a process add its own commands", function()
    console.commands.hello = {
      usage = "hello <name>", help = "greet",
      run = function(_, args) return "hello, " .. args end,
    }
    local l = assert(console.listen(0))
    local s = assert(client.connect("127.0.0.1", l:port(), nil, 10))
    assert.same({ "ok", "hello, you" }, { s:command("hello you") })
    local _, help = s:command("help")
    assert.matches("hello <name>%s+greet", help)
    console.commands.hello = nil
    s:close()
    l:close()
  end)
end)

describe("console error codes", function()
  local commands = console.commands
  local session = { eval_timeout = 0.2 }

  it("gives every failing command a code beside its message", function()
    assert.same({ nil, "top: seconds between 0 and 60 expected", "usage" },
                { commands.top.run(session, "x") })
    assert.same({ nil, "usage: eval <lua>", "usage" }, { commands.eval.run(session, "") })
    local _, err, code = commands.eval.run(session, "return +")
    assert.matches("^console:1: unexpected symbol", err)
    assert.equal("syntax", code)
    _, err, code = commands.eval.run(session, "error('boom')")
    assert.matches("^console:1: boom\nstack traceback:", err)
    assert.equal("raised", code)
    assert.same({ nil, "eval: no result after 0.2 s (cancelled at its next wait)", "timeout" },
                { commands.eval.run(session, "require('event').sleep(5)") })
    local path = helper.tmpdir() .. "/never_imported.lua"
    helper.write_file(path, "return {}")
    local real = require("evlua.core").realpath(path)
    assert.same({ nil, "not imported: " .. real, "not_imported" },
                { commands.reload.run(session, path) })
    helper.cleanup()
  end)

  it("answers an unknown command, a raising command and a coded failure on the wire", function()
    commands.broken = { usage = "broken", help = "raises", run = function() error("oops") end }
    commands.coded = { usage = "coded", help = "fails", run = function() return nil, "nope", "mine" end }
    local l = assert(console.listen(0))
    local s = assert(client.connect("127.0.0.1", l:port(), nil, 10))
    assert.same({ "error", "unknown command 'nosuch' (try help)" }, { s:command("nosuch") })
    local status, text = s:command("broken")
    assert.equal("error", status)
    assert.matches("oops\nstack traceback:", text)
    assert.same({ "error", "nope" }, { s:command("coded") })
    commands.broken, commands.coded = nil, nil
    s:close()
    l:close()
  end)

  it("fails client.connect with bad_password on a wrong password", function()
    local l = assert(console.listen({ port = 0, password = "right", auth_delay = 0 }))
    assert.same({ nil, "wrong password", "bad_password" },
                { client.connect("127.0.0.1", l:port(), "wrong", 10) })
    local s = assert(client.connect("127.0.0.1", l:port(), "right", 10))
    s:close()
    l:close()
    local ok, perr = pcall(function() s:command("a\nb") end)
    assert.is_false(ok)
    assert.matches("console_spec.lua:%d+: bad argument #1 to 'command' %(one line expected%)", perr)
  end)

  it("reads the client's command line with bad_option and bad_address codes", function()
    assert.same({ nil, "HOST:PORT expected", "bad_option" }, { client.parse({}) })
    assert.same({ nil, "unrecognized option '-x'", "bad_option" }, { client.parse({ "-x", "1" }) })
    assert.same({ nil, "'-p' needs argument", "bad_option" }, { client.parse({ "-p" }) })
    assert.same({ nil, "'-t' needs a positive number of seconds", "bad_option" },
                { client.parse({ "-t", "0", "1" }) })
    assert.same({ nil, "bad address 'nonsense'", "bad_address" }, { client.parse({ "nonsense" }) })
    assert.same({ nil, "bad address '99999'", "bad_address" }, { client.parse({ "99999" }) })
    local opts = client.parse({ "-t", "5", "host:81", "eval", "1" })
    assert.same({ "host", 81, 5, "eval 1" }, { opts.host, opts.port, opts.timeout, opts.command })
  end)
end)

describe("evlua console on a terminal", function()
  local term
  after_each(function()
    if term then term:close() end
    helper.cleanup()
  end)

  it("prompts, runs commands and exits on end of input", function()
    local port = start_server("counter = 0")
    term = helper.terminal(helper.evlua .. " console " .. port)
    local prompt = "127.0.0.1:" .. port .. "> "
    -- (tmux drops the trailing space of the last prompt)
    assert.matches("connected to 127.0.0.1:" .. port, term:shows(prompt:sub(1, -2)), 1, true)
    term:keys("ping Enter")
    local bare = prompt:sub(1, -2)
    assert.matches(prompt .. "ping\npong\n" .. bare, term:shows("pong\n" .. bare), 1, true)
    term:keys(helper.quote("eval counter + 42") .. " Enter")
    assert.matches(prompt .. "eval counter + 42\n42\n" .. bare, term:shows("\n42\n" .. bare), 1, true)
    term:keys("C-d")
    assert.equal("rc=0\n", term:exit_status())
  end)
end)
