-- tests/lua/profiler_spec.lua - evlua.profiler: sampled and exact modes find
-- the hot function of a known workload, parked coroutines show wait time,
-- the formats (top, folded, SVG, pprof) are readable by their tools, the
-- limits, --profile, and the console's profile command on a live server.
local helper = require "helper"
local event = require "event"
local profiler = require "evlua.profiler"
local core = require "evlua.core"

local workload = dofile("tests/scripts/profile_hot.lua")
local WORKLOAD = "tests/scripts/profile_hot.lua"

-- Rounds of the 80/20 workload for at least a second of CPU time (by the
-- process's CPU clock, not a count of rounds: a faster machine would take
-- fewer samples): a few hundred at the kernel's tick (250 Hz here), so
-- 80/20 is well inside 10 points.
local UNITS, N = 12, 1000000
local clock = os.clock
local function second_of_work()
  local t0 = clock()
  repeat workload.run(1, N) until clock() - t0 >= 1
end

local function escape(s) return (s:gsub("%p", "%%%0")) end

-- The report's row for function fn (by its file and line: a Lua function's
-- name is the one its caller used, "?" when called from C or by a tail call).
local function row(report, fn)
  local info = debug.getinfo(fn, "S")
  local suffix = (" (%s:%d)"):format(info.short_src, info.linedefined)
  for _, r in ipairs(report:functions()) do
    if r.label:sub(-#suffix) == suffix then return r end
  end
  return nil
end

local function share(report, fn)
  local r = row(report, fn)
  assert(r, "no such function in\n" .. report:top())
  return r.self * 100 / report.whole
end

-- The share of hot among hot + cold, in percent.
local function hot_share(report)
  local hot, cold = share(report, workload.hot), share(report, workload.cold)
  return hot * 100 / (hot + cold)
end

local pcall, assert = pcall, assert   -- no lookups in busted's environment while profiling

local function profile(opts, fn)
  assert(profiler.start(opts))
  local ok, err = pcall(fn)
  local report = profiler.stop()
  assert(ok, err)
  return report
end

-- The depth of the deepest line of folded stacks.
local function deepest(folded)
  local max = 0
  for stack in folded:gmatch("([^\n]*) %d+\n") do
    local n = select(2, stack:gsub(";", "")) + 1
    if n > max then max = n end
  end
  return max
end

local function napper_fn() event.sleep(0.4) end

local function recurse(n)
  if n == 0 then return (workload.hot(N * 2)) end
  return (recurse(n - 1))   -- not a tail call: every level stays
end
local function deep() recurse(30) end

describe("profiler, sampled mode", function()
  after_each(helper.cleanup)

  it("finds the function taking 80 % of the CPU, and the one taking 20 %", function()
    local report = profile(nil, second_of_work)
    assert.equal("samples", report.mode)
    assert.is_true(report.whole > 100, report:top())
    local hot = hot_share(report)
    assert.is_true(hot > 70 and hot < 90, ("hot %.1f%%\n%s"):format(hot, report:top()))
    -- the top table lists hot first, with its file and line
    local first = report:top():match("\n%s+[%d.]+%s+[%d.]+%s+%d+%s+[%d.]+%s+([^\n]+)")
    assert.matches("^hot %(.*profile_hot%.lua:8%)$", first)
    -- every sample knows its coroutine: this test's task has them all
    local me = event.running():name()
    local mine
    for _, t in ipairs(report.tasks) do if t.name == me then mine = t end end
    assert.is_true(mine.cpu >= report.whole - report.c_samples - 2)
  end)

  it("shows a coroutine parked in event.sleep as waiting, not as CPU", function()
    local sleeper = event.fork(napper_fn)
    sleeper:set_name("napper task")
    local token = {}
    local waiter = event.fork(function() return event.wait(token) end)
    waiter:set_name("waiter task")
    local report = profile(nil, function()
      workload.run(1, N)
      sleeper:join()
      event.wakeup(token)
      waiter:join()
    end)
    local rec
    for _, t in ipairs(report.tasks) do if t.name == "napper task" then rec = t end end
    assert(rec, report:top())
    assert.equal(0, rec.cpu)
    assert.is_true(rec.waits.sleep > 0.2 and rec.waits.sleep < 1, report:top())
    assert.is_nil(row(report, napper_fn))
    -- another reason: event.wait's "wait", for as long as the sleep lasted
    assert.matches("waiter task: cpu 0.0%% %(0 samples%); waited: wait 0%.%d+ s", report:top())
    assert.matches("napper task: cpu 0.0%% %(0 samples%); waited: sleep 0%.%d+ s", report:top())
    -- the time this task itself spent in join is a wait too
    assert.matches(escape(event.running():name()) .. ": cpu [%d.]+%% %(%d+ samples%); "
                   .. "waited: join", report:top())
  end)

  it("keeps max_depth frames of a deeper stack, at the limit and past it", function()
    local full = profile({ max_depth = 1000 }, function() recurse(40) end)
    local depth = deepest(full:folded())
    assert.is_true(depth > 41, full:folded())
    assert.equal(0, full.truncated)
    local at = profile({ max_depth = depth }, function() recurse(40) end)
    assert.equal(0, at.truncated)
    assert.is_nil(at:folded():find("(truncated)", 1, true))
    local past = profile({ max_depth = depth - 1 }, function() recurse(40) end)
    assert.is_true(past.truncated > 0)
    -- the innermost frames stay, under the marker
    assert.matches("^%(truncated%);[^\n]*;hot %(", past:folded())
    assert.equal(depth, deepest(past:folded()))   -- depth - 1 frames + the marker
  end)

  it("takes no stale hook into coroutines created while it samples", function()
    local report = profile(nil, function()
      for _ = 1, 300 do
        local co = coroutine.create(function()
          workload.hot(20000)
          coroutine.yield()
        end)
        assert(coroutine.resume(co))
        -- yielded: the one-shot hook is off it, sample taken or not
        assert.is_nil(debug.gethook(co))
      end
    end)
    assert.is_true(report.whole > 0)
    assert.is_nil(debug.gethook())
  end)

  it("shares the hook slot: a hook set before keeps working through the samples", function()
    local calls = 0
    local function count() calls = calls + 1 end
    debug.sethook(count, "c")
    local report = profile(nil, function()
      for _ = 1, 40 do workload.hot(N // 2) end
    end)
    local hook, mask = debug.gethook()
    debug.sethook()
    assert.is_true(report.whole > 10, report:top())   -- samples were taken...
    assert.equal(count, hook)                          -- ...and the hook came back
    assert.equal("c", mask)
    assert.is_true(calls >= 40)
  end)

  it("stopped, leaves no timer and no hook", function()
    profile(nil, function() workload.run(1, N // 4) end)
    assert.is_false(core.profiler_running())
    assert.is_nil(debug.gethook())
    -- SIGPROF is ignored again, not caught (/proc's masks, bit 27 - 1)
    local status = helper.slurp("/proc/self/status")
    local caught = tonumber(status:match("SigCgt:%s*(%x+)"), 16)
    local ignored = tonumber(status:match("SigIgn:%s*(%x+)"), 16)
    assert.equal(0, caught & (1 << 26))
    assert.equal(1 << 26, ignored & (1 << 26))
  end)
end)

describe("profiler, exact mode", function()
  after_each(helper.cleanup)

  it("times hot and cold 80/20 and counts their calls", function()
    local report = profile({ mode = "calls" }, function() workload.run(UNITS, N) end)
    assert.equal("calls", report.mode)
    local hot = hot_share(report)
    assert.is_true(hot > 70 and hot < 90, ("hot %.1f%%\n%s"):format(hot, report:top()))
    assert.equal(4 * UNITS, row(report, workload.hot).calls)
    assert.equal(UNITS, row(report, workload.cold).calls)
    assert.equal(1, row(report, workload.run).calls)
    -- run's total includes its callees: hot and cold
    local run = row(report, workload.run)
    assert.is_true(run.total >= row(report, workload.hot).self + row(report, workload.cold).self)
    assert.matches("calls  function\n", report:top())
  end)

  it("follows tail calls", function()
    local function via_tail(n) return workload.hot(n) end
    local report = profile({ mode = "calls" }, function()
      for _ = 1, 3 do via_tail(N // 2) end
    end)
    assert.equal(3, row(report, via_tail).calls)
    assert.equal(3, row(report, workload.hot).calls)
    -- the tail-calling frame ended at the call: the time is hot's
    assert.is_true(row(report, via_tail).self < row(report, workload.hot).self / 10)
  end)

  it("does not count the time a coroutine is parked, and hooks new coroutines", function()
    local function napper()
      event.sleep(0.3)
      return workload.cold(1000)
    end
    local report = profile({ mode = "calls" }, function()
      local task = event.fork(napper)
      workload.run(1, N // 2)
      task:join()
      local gen = coroutine.wrap(function() coroutine.yield(workload.hot(1000)) end)
      gen()
    end)
    local nap = row(report, napper)
    assert(nap, report:top())
    assert.is_true(nap.total < 0.1e9, report:top())   -- it slept 0.3 s
    assert.equal(2, row(report, workload.cold).calls)   -- 1 from run, 1 in napper
    assert.equal(4 + 1, row(report, workload.hot).calls)   -- 4 from run, 1 in the wrap
  end)

  it("limits depth and nodes, at the limit and past it", function()
    -- a first run: busted's environment caches the globals it looks up
    profile({ mode = "calls" }, deep)
    local full = profile({ mode = "calls" }, deep)
    local depth, nodes = deepest(full:folded()), #full.parent
    local at = profile({ mode = "calls", max_depth = depth, max_nodes = nodes },
                       deep)
    assert.equal(0, at.truncated)
    assert.equal(0, at.overflowed)
    assert.equal((full:folded():gsub(" %d+\n", "\n")), (at:folded():gsub(" %d+\n", "\n")))
    local past = profile({ mode = "calls", max_depth = depth - 1 }, deep)
    assert.equal(1, past.truncated)
    assert.matches(";%(truncated%) %d+\n", past:folded())
    local few = profile({ mode = "calls", max_nodes = nodes - 1 }, deep)
    assert.is_true(few.overflowed > 0)
    assert.equal(nodes - 1, #few.parent)
  end)

  it("stopped, leaves no hook on a coroutine it hooked, once it runs again", function()
    local co = coroutine.create(function()
      coroutine.yield(debug.gethook() ~= nil)
      return debug.gethook()
    end)
    profile({ mode = "calls" }, function()
      local _, hooked = coroutine.resume(co)
      assert.is_true(hooked)   -- the exact mode's hook reached it
    end)
    assert.is_nil(debug.gethook())
    -- its slot is free for the debugger, though co has not run since
    assert.is_true(core.debug_sethook(co, "c"))
    assert.equal("c", core.debug_gethook(co))
    assert.is_true(core.debug_sethook(co, ""))
    local ok, hook = coroutine.resume(co)
    assert.is_true(ok)
    assert.is_nil(hook)
  end)

  it("refuses a second start and a thread whose hook slot is taken", function()
    assert(profiler.start({ mode = "calls" }))
    local ok, err, code = profiler.start()
    assert.same({ nil, "the profiler is already running", "busy" }, { ok, err, code })
    assert(profiler.stop())
    debug.sethook(function() end, "c")
    ok, err, code = profiler.start({ mode = "calls" })
    debug.sethook()
    assert.is_nil(ok)
    assert.equal("busy", code)
    assert.matches("hook", err)
    assert.is_false(profiler.running())
  end)
end)

describe("profiler reports", function()
  after_each(helper.cleanup)

  local report
  setup(function()
    report = profile(nil, second_of_work)
  end)

  it("folds stacks as flamegraph.pl reads them", function()
    local folded = report:folded()
    local total = 0
    for stack, n in folded:gmatch("([^\n]+) (%d+)\n") do
      assert.is_nil(stack:find("\n"))
      total = total + tonumber(n)
    end
    assert.equal(report.whole, total)
    assert.matches("[^\n]*;hot %([^\n]*profile_hot%.lua:8%) %d+\n", folded)
  end)

  it("draws an SVG with one rectangle per frame of the folded stacks", function()
    local dir = helper.tmpdir()
    assert(report:save(dir .. "/flame.svg"))
    helper.write_file(dir .. "/stacks.folded", report:folded())
    helper.write_file(dir .. "/check.py", [[
import sys, xml.etree.ElementTree as ET
ns = {"s": "http://www.w3.org/2000/svg"}
root = ET.parse(sys.argv[1]).getroot()
frames = root.findall("s:g", ns)
assert all(g.find("s:rect", ns) is not None for g in frames)
titles = [g.find("s:title", ns).text for g in frames]
prefixes = set()
for line in open(sys.argv[2]):
    stack = line.rsplit(" ", 1)[0].split(";")
    for i in range(1, len(stack) + 1):
        prefixes.add(tuple(stack[:i]))
print(len(frames), len(prefixes))
print(titles[0])
]])
    local out, err, rc = helper.sh(("python3 %s/check.py %s/flame.svg %s/stacks.folded")
                                   :format(dir, dir, dir))
    assert.equal(0, rc, err)
    local rects, prefixes = out:match("^(%d+) (%d+)\n")
    assert.equal(prefixes, rects)
    assert.matches("%(%d+ samples, [%d.]+%%%)", out)   -- the hover text
  end)

  it("writes pprof that go tool pprof reads, hot first", function()
    local dir = helper.tmpdir()
    assert(report:save(dir .. "/cpu.pb.gz"))
    local out, err, rc = helper.sh("go tool pprof -top " .. dir .. "/cpu.pb.gz")
    assert.equal(0, rc, err)
    -- the first row after the column names
    local first = out:match("flat%%%s+sum%%%s+cum%s+cum%%\n%s*[^\n]-%%%s+[^\n]-%%%s+[^\n]-%%%s+(%S+)")
    assert.equal("hot", first, out)
    assert.matches("Type: cpu", out)
  end)

  it("saves by extension, or fails with a code", function()
    local dir = helper.tmpdir()
    assert(report:save(dir .. "/r.txt"))
    assert.matches("^evlua profile: ", helper.slurp(dir .. "/r.txt"))
    assert(report:save(dir .. "/r.any", "folded"))
    assert.equal(report:folded(), helper.slurp(dir .. "/r.any"))
    local ok, err, code = report:save(dir .. "/r.png")
    assert.is_nil(ok)
    assert.equal("bad_format", code)
    assert.matches("r%.png", err)
    ok, err, code = report:save(dir .. "/no/such/dir/r.txt")
    assert.is_nil(ok)
    assert.equal("ENOENT", code)
    assert.matches("No such file", err)
  end)

  it("raises on bad arguments", function()
    assert.matches("bad argument #1 to 'start' %(options table expected, got string%)",
                   helper.raised(profiler.start, "x"))
    assert.matches("bad argument #1 to 'start' %(mode must be",
                   helper.raised(profiler.start, { mode = "wall" }))
    assert.matches("bad argument #1 to 'start' %(hz must be an integer from 1 to 100000%)",
                   helper.raised(profiler.start, { hz = 0 }))
    assert.matches("max_depth must be an integer from 1 to 1000",
                   helper.raised(profiler.start, { max_depth = 1001 }))
    assert.is_false(profiler.running())
    assert.matches("bad argument #1 to 'top'", helper.raised(report.top, report, 0))
    assert.matches("bad argument #2 to 'save'", helper.raised(report.save, report, "x", "png"))
    local ok, _, code = profiler.stop()
    assert.is_nil(ok)
    assert.equal("not_running", code)
  end)

  it("counts at most max_tasks coroutines one by one, the rest together", function()
    local function with_sleepers(max_tasks)
      local tasks = {}
      for i = 1, 5 do tasks[i] = event.fork(event.sleep, 0.05) end
      return profile({ max_tasks = max_tasks }, function()
        for _, t in ipairs(tasks) do t:join() end
      end)
    end
    local function names(r)
      local set = {}
      for _, t in ipairs(r.tasks) do set[#set + 1] = t.name end
      return set
    end
    local all = with_sleepers(1000)
    local seen = #all.tasks
    assert.is_true(seen >= 6, table.concat(names(all), ", "))
    local at = with_sleepers(seen)
    assert.is_nil(at:top():find("(other coroutines)", 1, true))
    local past = with_sleepers(seen - 1)
    assert.matches("%(other coroutines%): ", past:top())
  end)
end)

describe("evlua --profile", function()
  after_each(helper.cleanup)

  it("prints the top table to stderr when the script ends", function()
    local out, err, rc = helper.run({ "--profile", WORKLOAD, "4" })
    assert.equal(0, rc, err)
    assert.equal("", out)
    assert.matches("^evlua profile: %d+ samples", err)
    assert.matches("\n%s+[%d.]+%s+[%d.]+%s+%d+%s+[%d.]+%s+hot %(", err)
  end)

  it("writes FILE in the format of its extension, also at os.exit", function()
    local dir = helper.tmpdir()
    local _, err, rc = helper.run({ "--profile=" .. dir .. "/p.pb.gz", WORKLOAD, "4" })
    assert.equal(0, rc, err)
    local out = helper.sh("go tool pprof -top " .. dir .. "/p.pb.gz")
    assert.matches("%%%s+hot\n", out)
    local script = dir .. "/exits.lua"
    helper.write_file(script, ("dofile(%q).run(2, %d) os.exit(3)"):format(WORKLOAD, N))
    _, err, rc = helper.run({ "--profile=" .. dir .. "/p.folded", script })
    assert.equal(3, rc, err)
    assert.matches(";hot %([^\n]+%) %d+\n", helper.slurp(dir .. "/p.folded"))
    -- a script error ends the process through core.exit: the report is written
    helper.write_file(script, ("dofile(%q).run(2, %d) error('boom')"):format(WORKLOAD, N))
    _, err, rc = helper.run({ "--profile=" .. dir .. "/p.svg", script })
    assert.equal(1, rc)
    assert.matches("boom", err)
    assert.matches("^<%?xml", helper.slurp(dir .. "/p.svg"))
  end)

  it("refuses a FILE of unknown format before the script runs", function()
    local out, err, rc = helper.run({ "--profile=/tmp/x.png", WORKLOAD })
    assert.equal(1, rc)
    assert.equal("", out)
    assert.matches("%-%-profile: /tmp/x%.png: extension not", err)
  end)
end)

describe("profiling a live process", function()
  after_each(helper.cleanup)

  it("breaks a dead loop with SIGUSR1 while it samples", function()
    local pid, out = helper.spawn_script([[
io.stdout:setvbuf("no")
local event = require "event"
local profiler = require "evlua.profiler"
assert(profiler.start())
local function spin() print("spinning") while true do end end
local ok, err = event.fork(spin):join()
print("joined", ok, err)
local report = profiler.stop()
print(report:top(3))
]])
    helper.await_output(out, "spinning")
    event.sleep(0.3)   -- not a synchronisation: time for the sampler to see spin
    helper.kill(pid, "USR1")
    local text = helper.await_output(out, "^(.*joined.-\n.*samples.-script%.lua:5%).-\n)")
    assert.matches("joined\tfalse\t[^\n]*script%.lua:5: interrupted", text)
    assert.matches("\n%s+[%d.]+%s+[%d.]+%s+%d+%s+[%d.]+%s+%? %([^\n]*script%.lua:5%)", text)
  end)

  it("profiles an HTTP server from its console while wrk loads it", function()
    local _, _, has_wrk = helper.sh("command -v wrk")
    assert.equal(0, has_wrk, "wrk is missing (scripts/install-deps.sh test installs it)")
    local http_port, console_port = helper.free_port(), helper.free_port()
    local _, out = helper.spawn_script(([[
io.stdout:setvbuf("no")
local http = require "evlua.http"
assert(require("evlua.console").listen(%d))
local function hello_handler(_, request)
  local x = 0
  for i = 1, 2000 do x = x + i end   -- some Lua work to find
  request:reply(200, "OK", "hello " .. x .. "\n")
end
assert(http.listen("127.0.0.1", %d, hello_handler))
print("ready")
]]):format(console_port, http_port))
    helper.await_output(out, "ready")
    local dir = helper.tmpdir()
    local wrk = io.popen(("wrk -t1 -c4 -d4s http://127.0.0.1:%d/ >%s/wrk 2>&1 & echo $!")
                         :format(http_port, dir))
    wrk:close()
    local reply, err, rc = helper.run({ "console", "127.0.0.1:" .. console_port,
                                        "profile 2 " .. dir .. "/live.folded" })
    assert.equal(0, rc, err)
    assert.matches("^evlua profile: %d+ samples", reply)
    -- http.lua calls it "callback": a Lua function has its caller's name for it
    assert.matches("callback %([^\n]*script%.lua:4%)", reply)
    assert.matches("saved " .. escape(dir) .. "/live%.folded", reply)
    assert.matches(";callback %([^\n]*script%.lua:4%)[^\n]* %d+\n",
                   helper.slurp(dir .. "/live.folded"))
    -- the server kept serving: wrk's requests succeeded throughout
    local report = helper.await_output(dir .. "/wrk", "(Requests/sec:%s+[%d.]+)", 30)
    assert.is_true(tonumber(report:match("[%d.]+$")) > 100, helper.slurp(dir .. "/wrk"))
    local uout, uerr = helper.run({ "console", "127.0.0.1:" .. console_port, "profile 0" })
    assert.matches("seconds between 0 and", uout .. uerr)
  end)
end)
