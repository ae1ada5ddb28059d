-- tests/lua/interrupt_spec.lua - kill -USR1 breaks a Lua dead loop; the
-- process goes on serving timers and connections.
local helper = require "helper"
local event = require "event"
local rpc = require "evlua.rpc"

local function escape(s) return (s:gsub("%p", "%%%0")) end

-- The process state letter from /proc/<pid>/stat: "S" while it sleeps in
-- epoll_wait (the only place a single-threaded evlua sleeps), "R" while
-- it runs (a dead loop).
local function proc_state(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return nil end
  local stat = f:read("a")
  f:close()
  return stat:match("^%d+ %b() (%a)")
end

describe("kill -USR1", function()
  after_each(helper.cleanup)

  it("breaks dead loops one after the other while a timer keeps firing", function()
    -- Each marker is printed on the line of its loop, so the loop's line
    -- is the only line the interrupt can name.
    local pid, out = helper.spawn_script([[
io.stdout:setvbuf("no")
local event = require "event"
local ticks = 0
event.timer(0.01, function() ticks = ticks + 1 print("tick " .. ticks) end)
local function plain() print("spinning 1") while true do end end
local function calls_library() print("spinning 2") while true do local _ = event.running() end end
local gen = coroutine.wrap(function() print("spinning 3") while true do end end)
local loops = { plain, calls_library, gen }
for round = 1, 3 do
  local started = ticks
  while ticks < started + 2 do event.sleep(0.005) end   -- the timer runs
  local ok, err = event.fork(loops[round]):join()
  print("round " .. round .. " joined", ok, err)
end
local after = ticks
while ticks < after + 2 do event.sleep(0.005) end
print("served ticks after the last loop")
os.exit(0)
]])
    local where = escape(out:gsub("/output$", "/script.lua"))
    local lines = { 5, 6, 7 }
    for round = 1, 3 do
      helper.await_output(out, "spinning " .. round)
      helper.kill(pid, "USR1")
      local text = helper.await_output(out, "(round " .. round .. " joined[^\n]*\n)")
      assert.matches("false\t" .. where .. ":" .. lines[round] .. ": interrupted", text)
    end
    local text = helper.await_output(out, "^(.*served ticks after the last loop\n)")
    -- Each interrupted coroutine was logged with a traceback naming the
    -- file and the line where it looped.
    for round = 1, 2 do
      assert.matches("ERROR coroutine #%d+ %(" .. where .. ":%d+%) failed: "
                     .. where .. ":" .. lines[round] .. ": interrupted\nstack traceback:\n\t"
                     .. where .. ":" .. lines[round] .. ": in ", text)
    end
    -- The coroutine.wrap generator died; the error reached the task that
    -- called it, as any error in a wrapped coroutine does.
    assert.matches("ERROR coroutine #%d+ %([^)]*%) failed: "
                   .. where .. ":7: interrupted\nstack traceback:", text)
    -- The timer fired between the loops and after the last one.
    assert.matches("round 3 joined[^\n]*\n.*tick %d+\n.*served", text)
  end)

  it("does nothing while no Lua code runs, and callbacks after it run normally", function()
    local port = helper.free_port()
    local pid, out = helper.spawn_script(([[
io.stdout:setvbuf("no")
local core = require "evlua.core"
local rpc = require "evlua.rpc"
assert(rpc.listen("127.0.0.1", %d, {
  stats = function() return core.interrupt_stats() end,
}))
print("listening")
]]):format(port))
    helper.await_output(out, "listening")
    local ch
    helper.eventually(function()
      ch = rpc.connect("127.0.0.1", port)
      return ch ~= nil
    end, "the server")
    for n = 1, 3 do
      -- Asleep in epoll: no Lua code runs when the signal arrives.
      helper.eventually(function() return proc_state(pid) == "S" end, "an idle process")
      helper.kill(pid, "USR1")
      local stats = assert(ch:call("stats"))
      assert.same({ received = n, idle = n, raised = 0, ignored = 0 }, stats)
    end
    ch:close()
    assert.not_matches("interrupted", helper.slurp(out))
    assert.is_true(os.execute("kill -0 " .. pid))   -- still alive
  end)

  it("breaks a dead loop in a channel callback; the connection's peer still gets served", function()
    local port = helper.free_port()
    local pid, out = helper.spawn_script(([[
io.stdout:setvbuf("no")
local event = require "event"
local channel = require "evlua.channel"
local Spin = channel:inherit()
function Spin:data()
  local line = self:read_line()
  if line == "spin" then print("spinning") while true do end end
  if line then self:write("echo " .. line .. "\n") end
end
assert(event.listen("127.0.0.1", %d, function() end, Spin))
print("listening")
]]):format(port))
    helper.await_output(out, "listening")
    local ch
    helper.eventually(function()
      ch = event.connect("127.0.0.1", port)
      return ch ~= nil
    end, "the server")
    ch:write("spin\n")
    helper.await_output(out, "spinning")
    helper.kill(pid, "USR1")
    local where = escape(out:gsub("/output$", "/script.lua"))
    helper.await_output(out, "ERROR callback failed: " .. where .. ":7: interrupted\nstack traceback:")
    ch:write("hello\n")
    assert.equal("echo hello", ch:wait_line(10))
    ch:close()
  end)

  it("never raises inside evlua's library when no user code is on the stack", function()
    -- The script declares itself part of the library: its loop then looks
    -- like the scheduler's own code, which an interrupt must not break.
    local pid, out = helper.spawn_script([[
io.stdout:setvbuf("no")
local core = require "evlua.core"
core.interrupt_library(debug.getinfo(1, "S").source)
require("event").fork(function() print("spinning") while true do end end)
]])
    helper.await_output(out, "spinning")
    helper.kill(pid, "USR1")
    helper.await_output(out, "WARN SIGUSR1: only evlua's scheduler was running; nothing interrupted")
    assert.not_matches(": interrupted", helper.slurp(out))
    assert.equal("R", proc_state(pid))   -- still looping: nothing was broken
    helper.kill(pid, "KILL")
  end)
end)

-- The runtime replaces coroutine.resume and coroutine.wrap (to know which
-- coroutine runs when a signal comes); they must behave as Lua's own.
-- What each case gives was checked against the stock lua5.4.
describe("coroutine.resume and coroutine.wrap", function()
  it("pass values and errors as Lua's own do", function()
    local f = coroutine.wrap(function(a)
      local b = coroutine.yield(a + 1)
      error(b)
    end)
    assert.equal(2, f(1))
    local ok, err = pcall(f, "boom")
    assert.is_false(ok)
    assert.matches("^[^:]*interrupt_spec%.lua:%d+: boom$", err)
    assert.same({ false, "cannot resume dead coroutine" }, { pcall(f) })
    -- an error value that is not a string comes through as it is
    local obj = setmetatable({}, { __tostring = function() return "obj" end })
    ok, err = pcall(coroutine.wrap(function() error(obj) end))
    assert.is_false(ok)
    assert.equal(obj, err)
    -- the failed coroutine's to-be-closed variables are closed
    local closed = false
    ok = pcall(coroutine.wrap(function()
      local _ <close> = setmetatable({}, { __close = function() closed = true end })
      error("with tbc")
    end))
    assert.is_false(ok)
    assert.is_true(closed)
    -- resume: every argument and result, nils included
    local co = coroutine.create(function(...) return select("#", ...), ... end)
    assert.same({ true, 3, 1, nil, 3, n = 5 },
                table.pack(coroutine.resume(co, 1, nil, 3)))
    assert.same({ false, "cannot resume dead coroutine" },
                { coroutine.resume(co) })
    local many = coroutine.wrap(function() return table.unpack({}, 1, 250) end)
    assert.equal(250, select("#", many()))
  end)

  it("raise on arguments of the wrong type", function()
    local function raised(f, ...)
      local ok, err = pcall(f, ...)
      assert.is_false(ok)
      return err
    end
    assert.matches("^bad argument #1 to '[%w.]*resume' %(coroutine expected, "
                   .. "got number%)$", raised(coroutine.resume, 42))
    assert.matches("^bad argument #1 to '[%w.]*wrap' %(function expected, "
                   .. "got number%)$", raised(coroutine.wrap, 42))
    local core = require "evlua.core"
    assert.matches("(prefix too long)",
                   raised(core.interrupt_library, ("x"):rep(4096)), 1, true)
  end)
end)
