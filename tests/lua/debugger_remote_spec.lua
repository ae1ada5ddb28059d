-- tests/lua/debugger_remote_spec.lua - `evlua console PORT debug`: the
-- debugger's prompt on a live process, one-shot from the command line.
-- Commands from stdin (not a terminal) until quit or the end of input;
-- the (evdb) prompt under tmux; a second debugger refused; bad commands
-- answered without ending the session.
local helper = require "helper"
local client = require "evlua.console_client"

-- The live process: a console port (continue waits 2 s for a stop) and a
-- task that counts, its line 9 run every 10 ms. LINE is that line.
local SERVER = [[
io.stdout:setvbuf("no")
local event = require "event"
assert(require("evlua.console").listen({ port = %d, debug_wait = 2 }))
count = 0
event.fork(function()
  event.running():set_name("counter")
  while true do
    local step = 1
    count = count + step
    event.sleep(0.01)
  end
end)
print("ready")
]]
local LINE = 9

local function start_server()
  local port = helper.free_port()
  local pid, out = helper.spawn_script(SERVER:format(port))
  helper.await_output(out, "ready")
  return port, pid
end

-- A console command on the live process (a new connection), its text.
local function console_eval(port, code)
  local s = assert(client.connect("127.0.0.1", port, nil, 30))
  local status, text = s:command("eval " .. code)
  s:close()
  assert.equal("ok", status, text)
  return text
end

-- `evlua console PORT debug` with stdin: stdout, stderr, exit status.
local function debug_oneshot(port, input)
  return helper.run({ "console", tostring(port), "debug" }, input)
end

describe("evlua console PORT debug", function()
  after_each(helper.cleanup)

  it("reads debugger commands from stdin until quit, the process serving meanwhile", function()
    local port, pid = start_server()
    local out, err, rc = debug_oneshot(port, table.concat({
      "break script.lua:" .. LINE,
      "continue",
      "print step",
      "set var step = 1000",
      "bt",
      "coroutines",
      "coroutine 3",
      "coroutine 2",
      "next",
      "",            -- an empty line repeats next
      "print count >= 1000",
      "quit",
      "print 'never sent'",
    }, "\n") .. "\n")
    assert.equal("", err)
    assert.equal(0, rc)
    assert.matches("evlua debugger, remote", out)
    assert.matches("Breakpoint 1 at [^\n]*script.lua:" .. LINE, out)
    assert.matches("Breakpoint 1, counter stopped at [^\n]*script.lua:" .. LINE, out)
    assert.matches("\n1\n", out)                             -- print step
    assert.matches("step = 1000\n", out)
    assert.matches("#0 +[^\n]*script.lua:" .. LINE .. " in", out)
    assert.matches("counter %[stopped at [^\n]*script.lua:" .. LINE, out)
    -- switching: to this console session (running), back to the counter
    assert.matches("%[coroutine 3: console session [^\n]*%] %(not stopped", out)
    assert.matches("%[coroutine 2: counter%] stopped at [^\n]*script.lua:" .. LINE, out)
    assert.matches("stopped at [^\n]*script.lua:" .. (LINE + 1), out)   -- next
    -- again: round the loop, after the sleep (the set step was added)
    assert.matches("stopped at [^\n]*script.lua:" .. (LINE - 1) .. " in [^\n]*\n[^\n]*\ntrue\n", out)
    assert.matches("Detached.\n$", out)
    assert.not_matches("never sent", out)
    -- the counter ran on with the value set, and runs on without stops
    local count = tonumber(console_eval(port, "return count"))
    assert.is_true(count >= 1000, tostring(count))
    helper.eventually(function()
      return tonumber(console_eval(port, "return count")) > count
    end, "the counter to go on")
    assert.is_true(helper.alive(pid))
  end)

  it("ends at the end of input, detached; bad commands are errors, the session goes on", function()
    local port = start_server()
    local out, err, rc = debug_oneshot(port, table.concat({
      "break script.lua:" .. LINE,
      "frobnicate",
      "print nosuch.field",
      "info breakpoints",
    }, "\n") .. "\n")
    assert.equal(1, rc)   -- a command failed
    assert.matches("error: unknown command 'frobnicate' %(try help%)\n", err)
    assert.matches("error: %(evaluate%):1: attempt to index a nil value", err)
    -- after the errors (hit once or not yet: the counter runs meanwhile)
    assert.matches("1 +y +%d+ +[^\n]*script.lua:" .. LINE, out)
    -- the connection's end detached: the breakpoint is gone
    assert.equal("0", console_eval(port, "return #require('evlua.debug_engine').breakpoints()"))
    local count = tonumber(console_eval(port, "return count"))
    helper.eventually(function()
      return tonumber(console_eval(port, "return count")) > count
    end, "the counter to run on")
  end)

  it("debugger.attach_console: breakpoint() does nothing until a session attaches", function()
    local port = helper.free_port()
    local pid, log = helper.spawn_script(([[
io.stdout:setvbuf("no")
local event = require "event"
local debugger = require "evlua.debugger"
assert(debugger.attach_console({ port = %d, debug_wait = 5 }))
rounds = 0
event.fork(function()
  event.running():set_name("looper")
  while true do
    debugger.breakpoint()
    rounds = rounds + 1
    event.sleep(0.01)
  end
end)
print("ready")
]]):format(port))
    helper.await_output(log, "ready")
    -- no session: the breakpoint() calls are no stops, the loop goes round
    helper.eventually(function() return tonumber(console_eval(port, "return rounds")) > 3 end,
                      "rounds without a session")
    local out, err, rc = debug_oneshot(port, "continue\nprint rounds > 3\nquit\n")
    assert.same({ "", 0 }, { err, rc })
    assert.matches("looper stopped at [^\n]*script.lua:10 in [^\n]*\n10\t    rounds = rounds %+ 1\n",
                   out)
    assert.matches("\ntrue\nDetached.\n$", out)
    assert.is_true(helper.alive(pid))
  end)

  it("shows the (evdb) prompt on a terminal, and refuses a second debugger", function()
    local port, pid = start_server()
    local term = helper.terminal(("%s console %d debug"):format(helper.evlua, port))
    local ok, failure = pcall(function()
      term:shows("evlua debugger, remote")
      term:shows("(evdb)")
      term:keys("-l " .. helper.quote("b script.lua:" .. LINE))
      term:keys("Enter")
      term:shows("Breakpoint 1 at ")
      term:keys("-l c")
      term:keys("Enter")
      term:shows("Breakpoint 1, counter stopped at ")
      -- a second session on the same process: refused, clearly
      local out, err, rc = debug_oneshot(port, "bt\n")
      assert.same({ "", 1 }, { out, rc })
      assert.matches("^error: a debugger session is already attached %(console session", err)
      term:keys("-l " .. helper.quote("p step"))
      term:keys("Enter")
      term:shows("(evdb) p step\n1\n(evdb)")
      term:keys("-l quit")
      term:keys("Enter")
      assert.equal("rc=0\n", term:exit_status())
    end)
    term:close()
    assert(ok, failure)
    assert.is_true(helper.alive(pid))
  end)
end)
