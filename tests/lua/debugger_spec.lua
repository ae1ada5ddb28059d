-- tests/lua/debugger_spec.lua - the debugger's engine (evlua.debug_engine):
-- breakpoints (moved lines, suffix match, conditions, hit counts, log
-- points, import.reload), stops in remote mode parking one coroutine, a
-- stop in a plain callback skipped, no hook without breakpoints; and the
-- remote gdb session through the console port of a live HTTP server.
local helper = require "helper"
local event = require "event"
local core = require "evlua.core"
local engine = require "evlua.debug_engine"
local import = require "evlua.import"

local MOD = [[
local M = {}

function M.add(a, b)
  local s = a + b

  return s
end

function M.loop(n)
  local t = 0
  for i = 1, n do
    t = t + i
  end
  return t
end

return M
]]

-- A module in a fresh directory, loaded from its path.
local function module(source, name)
  local dir = helper.tmpdir()
  local path = dir .. "/" .. (name or "dbgmod") .. ".lua"
  helper.write_file(path, source or MOD)
  return dofile(path), path, dir
end

-- Collect the engine's stops and events, resuming each stop with how.
local function recorder(how)
  local rec = { stops = {}, events = {} }
  engine.on_stop(function(stop)
    rec.stops[#rec.stops + 1] = stop
    if rec.on_stop then rec.on_stop(stop) end
    if stop.thread ~= nil and engine.stopped(stop.thread) then
      engine.resume(stop.thread, rec.how or how or "continue")
    end
  end)
  rec.fn = engine.on_event(function(ev) rec.events[#rec.events + 1] = ev end)
  return rec
end

local function reset(rec)
  engine.detach()
  engine.on_stop(nil)
  if rec then engine.off_event(rec.fn) end
  engine.set_mode("local")
end

describe("debugger engine", function()
  local rec
  after_each(function()
    reset(rec)
    rec = nil
    helper.cleanup()
  end)

  it("installs no hook without breakpoints, and takes it off after", function()
    assert.is_nil(debug.gethook())
    assert.is_nil(core.debug_gethook())
    local _, path = module()
    local bp = engine.set_breakpoint({ file = path, line = 4 })
    assert.equal("c", core.debug_gethook())
    assert.is_true(engine.armed())
    engine.clear_breakpoint(bp.id)
    assert.is_false(engine.armed())
    assert.is_nil(debug.gethook())
    -- a coroutine run after the last breakpoint went has none either
    local seen = "unset"
    event.fork(function() seen = debug.gethook() end):join()
    assert.is_nil(seen)
  end)

  it("reads the called function from Lua's layout, and stops the same without", function()
    local mod, path = module()
    rec = recorder()
    local bp = engine.set_breakpoint({ file = path, line = 4 })
    -- this liblua's layout is the one peek reads (Debian's 5.4)
    assert.is_true(core.debug_peek())
    for _ = 1, 3 do event.sleep(0) end   -- calls into skipped files
    assert.equal(3, mod.add(1, 2))
    assert.is_true(core.debug_peek())   -- no call found it wrong
    assert.is_false(core.debug_peek(false))   -- lua_getinfo only, from now
    event.sleep(0)
    assert.equal(5, mod.add(2, 3))
    assert.is_true(core.debug_peek(true))
    assert.equal(2, #rec.stops)
    assert.same({ bp, bp }, { rec.stops[1].bp, rec.stops[2].bp })
  end)

  it("moves a breakpoint on a line without code to the next line with code", function()
    local mod, path = module()
    rec = recorder()
    local bp = engine.set_breakpoint({ file = path, line = 5 })
    assert.same({ 6, 5, true, "moved from line 5" },
                { bp.line, bp.requested_line, bp.verified, bp.message })
    assert.equal(7, mod.add(3, 4))
    assert.equal(1, #rec.stops)
    assert.same({ "breakpoint", path, 6, bp }, { rec.stops[1].reason, rec.stops[1].file,
                                                rec.stops[1].line, rec.stops[1].bp })
  end)

  it("matches files by suffix and sees the frame's locals", function()
    local mod, path = module(nil, "suffixmod")
    rec = recorder()
    local seen = {}
    rec.on_stop = function(stop)
      seen.a = engine.evaluate(stop.thread, 0, "a")
      seen.sum = engine.evaluate(stop.thread, 0, "a + b")
      seen.frames = engine.frames(stop.thread)
      seen.set = engine.set_variable(stop.thread, 0, "s", "100")
    end
    local bp = engine.set_breakpoint({ file = "suffixmod.lua", line = 6 })
    assert.equal(100, mod.add(20, 22))   -- set var changed the local
    assert.same({ path, true }, { bp.file, bp.verified })   -- found when loaded
    assert.same({ "20", "42", "100" }, { seen.a, seen.sum, seen.set })
    assert.same({ "add", path, 6, "Lua" }, { seen.frames[1].name, seen.frames[1].file,
                                            seen.frames[1].line, seen.frames[1].what })
    -- a suffix must end at a path separator: "xmod.lua" is not "mod.lua"
    local bp2 = engine.set_breakpoint({ file = "ixmod.lua", line = 6 })
    assert.is_false(bp2.verified)
    mod.add(1, 1)
    assert.equal(2, #rec.stops)
  end)

  it("honours conditions, hit counts and temporary breakpoints", function()
    local mod, path = module()
    rec = recorder()
    local bp = engine.set_breakpoint({ file = path, line = 12, condition = "i % 2 == 0" })
    mod.loop(6)
    assert.equal(3, #rec.stops)      -- i = 2, 4, 6
    assert.equal(3, bp.hits)
    engine.clear_breakpoint(bp.id)
    rec.stops = {}
    local hc = engine.set_breakpoint({ file = path, line = 12, hit_condition = ">= 4" })
    mod.loop(6)
    assert.equal(3, #rec.stops)      -- hits 4, 5, 6
    engine.clear_breakpoint(hc.id)
    rec.stops = {}
    engine.set_breakpoint({ file = path, line = 12, hit_condition = "%3" })
    mod.loop(9)
    assert.equal(3, #rec.stops)
    engine.detach()
    rec.stops = {}
    local tb = engine.set_breakpoint({ file = path, line = 12, temporary = true })
    mod.loop(5)
    assert.equal(1, #rec.stops)
    assert.is_nil(engine.breakpoints()[1])
    assert.equal(tb, rec.stops[1].bp)
  end)

  it("prints log points without stopping", function()
    local mod, path = module()
    rec = recorder()
    engine.set_breakpoint({ file = path, line = 12, log_message = "i is {i}, t is {t}" })
    assert.equal(6, mod.loop(3))
    assert.equal(0, #rec.stops)
    local out = {}
    for _, ev in ipairs(rec.events) do
      if ev.event == "output" then out[#out + 1] = ev.text end
    end
    assert.same({ "i is 1, t is 0\n", "i is 2, t is 1\n", "i is 3, t is 3\n" }, out)
  end)

  it("steps: next, step, finish", function()
    local mod, path = module()
    rec = recorder()
    local lines = {}
    local plan = { "step", "next", "finish" }
    -- (the for line has code each time round: no breakpoint there)
    rec.on_stop = function(stop)
      lines[#lines + 1] = stop.file:match("[^/]*$") .. ":" .. stop.line
      rec.how = table.remove(plan, 1) or "continue"
    end
    local bp = engine.set_breakpoint({ file = path, line = 10 })
    mod.loop(2)
    engine.clear_breakpoint(bp.id)
    -- 10 (break), step -> 11, next -> 12 (in the loop), finish -> the caller
    assert.same({ "dbgmod.lua:10", "dbgmod.lua:11", "dbgmod.lua:12" },
                { lines[1], lines[2], lines[3] })
    assert.matches("debugger_spec.lua:%d+$", lines[4])
  end)

  it("keeps breakpoints across import.reload of their file", function()
    local dir = helper.tmpdir()
    local path = dir .. "/reloaded.lua"
    helper.write_file(path, MOD)
    local mod = import(path)
    rec = recorder()
    engine.set_breakpoint({ file = "reloaded.lua", line = 12 })
    mod.loop(1)
    assert.equal(1, #rec.stops)
    helper.write_file(path, MOD:gsub("t = t %+ i", "t = t + 2 * i"))
    assert(import.reload(path))
    assert.equal(12, mod.loop(3))   -- the new code runs, and stops
    assert.equal(4, #rec.stops)
    assert.equal(12, rec.stops[4].line)
  end)

  it("parks only the stopped coroutine in remote mode", function()
    local mod, path = module()
    engine.set_mode("remote")
    local stops = {}
    engine.on_stop(function(stop) stops[#stops + 1] = stop end)
    engine.set_breakpoint({ file = path, line = 6 })
    local result
    local task = event.fork(function() result = mod.add(1, 2) end)
    local ticks = 0
    local other = event.fork(function()
      for _ = 1, 5 do event.sleep(0.001) ticks = ticks + 1 end
    end)
    helper.eventually(function() return #stops == 1 end, "the stop")
    assert.is_true(other:join(5))
    assert.equal(5, ticks)           -- others ran while it was parked
    assert.is_nil(result)
    local id = stops[1].thread
    assert.equal(select(2, task:status()), "debugger")
    local threads = {}
    for _, t in ipairs(engine.threads()) do threads[t.id] = t.status end
    assert.equal("stopped", threads[id])
    assert.same({ "1", "3" }, { (engine.evaluate(id, 0, "a")), (engine.evaluate(id, 0, "s")) })
    assert.equal("add", engine.frames(id)[1].name)
    assert.is_true(engine.resume(id, "continue"))
    assert.is_true(task:join(5))
    assert.equal(3, result)
  end)

  it("keeps task:cancel() of a stopped task for its next wait once resumed", function()
    local mod, path = module()
    engine.set_mode("remote")
    local stops = {}
    engine.on_stop(function(stop) stops[#stops + 1] = stop end)
    engine.set_breakpoint({ file = path, line = 6 })
    local sum, slept, code
    local task = event.fork(function()
      sum = mod.add(1, 2)
      local _
      slept, _, code = event.sleep(5)
    end)
    helper.eventually(function() return #stops == 1 end, "the stop")
    local id = stops[1].thread
    assert.is_true(task:cancel())
    -- still stopped where it was (not woken: "ready"), the cancel kept
    assert.same({ "waiting", "debugger", "breakpoint" }, { task:status() })
    assert.equal(stops[1], engine.stopped(id))
    local listed
    for _, t in ipairs(engine.threads()) do if t.id == id then listed = t end end
    assert.is_true(listed.cancelled)
    assert.is_true(engine.resume(id, "continue"))
    -- resumed: the line ran on, and the sleep after it failed at once
    assert.is_true(task:join(1))
    assert.same({ 3, nil, "cancelled" }, { sum, slept, code })
  end)

  it("skips a stop in a plain loop callback instead of hanging", function()
    local mod, path = module()
    engine.set_mode("remote")
    rec = recorder()
    engine.set_breakpoint({ file = path, line = 6 })
    local result
    local watch = core.timer(function() result = mod.add(2, 3) end)
    watch:start(0.001)
    helper.eventually(function() return result ~= nil end, "the callback")
    assert.equal(5, result)
    assert.equal(0, #rec.stops)
    local skipped
    for _, ev in ipairs(rec.events) do if ev.event == "skipped" then skipped = ev end end
    assert.same({ path, 6, "not a coroutine" }, { skipped.file, skipped.line, skipped.why })
  end)

  it("stops when a watched value changes", function()
    local mod, path = module()
    rec = recorder()
    engine.set_breakpoint({ file = path, line = 11 })
    local watched
    rec.on_stop = function(stop)
      if stop.reason == "breakpoint" then
        engine.clear_breakpoint(stop.bp.id)
        watched = engine.watch("t", stop.thread, 0)
      elseif stop.reason == "watch" then
        engine.unwatch(watched.id)
      end
    end
    mod.loop(2)
    assert.equal("watch", rec.stops[2].reason)
    -- t changed on line 12 (0 -> 1): the stop is at the next line run, the
    -- for loop's jump back on line 11
    assert.equal(11, rec.stops[2].line)
    assert.matches("t: 0 %-> 1", rec.stops[2].description)
  end)

  it("gives the interrupt's signal the hook slot back", function()
    local _, path = module()
    engine.set_breakpoint({ file = path, line = 6 })
    local pid = io.open("/proc/self/stat"):read("l"):match("^%d+")
    local ok, err = pcall(function()
      os.execute("kill -USR1 " .. pid)
      local n = 0
      while true do n = n + 1 end
    end)
    assert.is_false(ok)
    assert.matches("interrupted", err)
    assert.equal("c", core.debug_gethook())   -- the debugger's hook came back
  end)
end)

--[[ Remote session =========================================================]]

describe("debugger through the console port", function()
  after_each(helper.cleanup)

  it("parks one request while the server keeps serving", function()
    local client = require "evlua.console_client"
    local http = require "evlua.http"
    local port = helper.free_port()
    local pid, out = helper.spawn_script(([[
io.stdout:setvbuf("no")
local event = require "event"
local http = require "evlua.http"
assert(require("evlua.console").listen({ port = %d, debug_wait = 0.5 }))
ticks = 0
event.timer(0.01, function() ticks = ticks + 1 end)
local server = assert(http.listen("127.0.0.1", 0, function(_, request)
  local path = request:parsed_url().path
  if path == "/slow" then
    local answer = 40
    answer = answer + 2
    request:reply(200, nil, "slow " .. answer)
  else
    request:reply(200, nil, "fast")
  end
end))
print("ready " .. server:port())
]]):format(port))
    local http_port = helper.await_output(out, "ready (%d+)")
    local script = out:gsub("output$", "script.lua")
    local s = assert(client.connect("127.0.0.1", port, nil, 30))
    local function cmd(line)
      local status, text = s:command(line)
      assert.equal("ok", status, line .. ": " .. tostring(text))
      return text
    end
    assert.matches("evlua debugger", cmd("debug"))
    -- a second debugger on the same process is refused
    local s2 = assert(client.connect("127.0.0.1", port, nil, 30))
    local st2, text2 = s2:command("debug")
    assert.same({ "error", true }, { st2, text2:find("already attached", 1, true) ~= nil })
    s2:close()
    assert.matches("Breakpoint 1 at .*script.lua:11", cmd("break script.lua:11"))
    local base = "http://127.0.0.1:" .. http_port
    local slow
    local slow_task = event.fork(function()
      local status, _, body = http.request({ url = base .. "/slow" })
      slow = { status, body }
    end)
    local stop = cmd("continue")
    assert.matches("Breakpoint 1, .- stopped at .*script.lua:11", stop)
    assert.matches("answer = answer %+ 2", stop)
    assert.equal("40", cmd("print answer"))
    local ticks = tonumber(cmd("print ticks"))
    -- while the request is parked: 100 others are answered, ticks go on
    for _ = 1, 100 do
      local status, _, body = http.request({ url = base .. "/fast" })
      assert.same({ 200, "fast" }, { status, body })
    end
    helper.eventually(function() return tonumber(cmd("print ticks")) > ticks end, "ticks")
    assert.is_nil(slow)
    assert.matches("stopped at .*script.lua:11", cmd("coroutines"))
    assert.matches("#0 +.*script.lua:11 in", cmd("bt"))
    assert.equal("answer = 1000", cmd("set var answer = 1000"))
    assert.matches("script.lua:12", cmd("next"))
    assert.equal("1002", cmd("p answer"))
    -- continue waits for the next stop (debug_wait): none comes
    assert.matches("^Running; no stop within 0.5 s", cmd("continue"))
    assert.is_true(slow_task:join(10))
    assert.same({ 200, "slow 1002" }, slow)
    local status, text = s:command("frobnicate")
    assert.same({ "error", "unknown command 'frobnicate' (try help)" }, { status, text })
    status, text = s:command("print nosuch.field")
    assert.equal("error", status)
    assert.matches("attempt to index", text)
    assert.equal("Detached.", cmd("detach"))
    assert.equal("pong", cmd("ping"))   -- back to the console's commands
    s:close()
    assert.is_true(helper.alive(pid))
    assert.is_truthy(script)
  end)
end)
