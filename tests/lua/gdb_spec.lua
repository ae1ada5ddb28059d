-- tests/lua/gdb_spec.lua - tools/evlua-gdb.py (lua bt, lua coroutines,
-- lua locals) on live processes and gcore core files, and `evlua stack`.
local helper = require "helper"

local GDB_SCRIPT = os.getenv("PWD") .. "/tools/evlua-gdb.py"
local GDB_TIMEOUT = 60   -- seconds one gdb run may take

local escape, line_of = helper.escape, helper.line_of

-- Start tests/scripts/<name>.lua as a background evlua and wait for its
-- "ready". Returns the pid, the script's path and its source.
local function start(name)
  local source = helper.slurp("tests/scripts/" .. name .. ".lua")
  local pid, out = helper.spawn_script(source)
  helper.await_output(out, "ready\n")
  return pid, out:gsub("/output$", "/script.lua"), source
end

-- The process state letter: "S" while evlua sleeps in epoll_wait (its
-- only place to sleep), "R" while it runs; and its CPU time in ticks.
local function proc_state(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return nil end
  local stat = f:read("a")
  f:close()
  local state, rest = stat:match("^%d+ %b() (%a) (.*)$")
  local fields = {}
  for word in rest:gmatch("%S+") do fields[#fields + 1] = word end
  -- utime and stime: fields 14 and 15 of stat, 11 and 12 after the state
  return state, tonumber(fields[11]) + tonumber(fields[12])
end

-- Start the dead loop and wait until it has spun for 0.2 s of CPU time:
-- the way from its "ready" into the loop takes microseconds, so by then
-- it is in the loop (there is no event to wait for inside a dead loop).
local function start_loop()
  local pid, path, source = start("gdb_loop")
  local _, started = proc_state(pid)
  local event = require "event"
  local deadline = event.time() + GDB_TIMEOUT
  repeat
    local _, ticks = proc_state(pid)
    if ticks >= started + 20 then return pid, path, source end
    event.sleep(0.01)
  until event.time() > deadline
  error("the loop never spun")
end

-- Run gdb in batch mode with the script and the commands; target is
-- "-p PID" or "EXE CORE". Returns stdout, stderr, status.
local function gdb(target, ...)
  local parts = { "timeout -k 5", GDB_TIMEOUT, "gdb -nx -q -batch", target,
                  "-x", helper.quote(GDB_SCRIPT) }
  for _, command in ipairs({ ... }) do
    parts[#parts + 1] = "-ex " .. helper.quote(command)
  end
  return helper.sh(table.concat(parts, " "))
end

local function live(pid) return "/proc/" .. pid .. "/exe -p " .. pid end

-- gcore's core file of pid, in a temporary directory (cleanup removes it),
-- with the binary as /proc/PID/exe: the very file the process runs, even
-- if a build replaced ./evlua since.
local function core_of(pid)
  local path = helper.tmpdir() .. "/core"
  local _, err, rc = helper.sh(("timeout -k 5 %d gcore -o %s %s"):format(
    GDB_TIMEOUT, path, pid))
  assert(rc == 0, err)
  return "/proc/" .. pid .. "/exe " .. path .. "." .. pid
end

-- The dead loop's expected stack: frame lines of the three functions,
-- innermost first, as "lua bt" prints them.
local function assert_loop_stack(text, path, source)
  local where = escape(path)
  local inner_def = line_of(source, "local function spin_inner(turns)")
  local middle_def = line_of(source, "local function spin_middle()")
  local outer_def = line_of(source, "function spin_outer()")
  assert.matches("#0  " .. where .. ":" .. line_of(source, "turns = turns + 1")
                 .. " in function <" .. where .. ":" .. inner_def .. ">\n", text)
  assert.matches("#1  " .. where .. ":" .. line_of(source, "  spin_inner(0)")
                 .. " in function <" .. where .. ":" .. middle_def .. ">\n", text)
  -- a global function: found by name
  assert.matches("#2  " .. where .. ":" .. line_of(source, "  spin_middle()")
                 .. " in function spin_outer <" .. where .. ":" .. outer_def .. ">\n",
                 text)
  assert.matches("#3  " .. where .. ":" .. line_of(source, "  spin_outer()"), text)
end

-- Each reading test runs twice: on the live process, and on a gcore core
-- file of it. gcore of the ASan build would dump its terabytes of shadow
-- memory mappings: skipped there.
local MODES = { "live", "core file" }
local ASAN_CORE = "gcore of an ASan process dumps its shadow memory: too slow"

local function target_of(mode, pid)
  if mode == "live" then return live(pid) end
  return core_of(pid)
end

describe("tools/evlua-gdb.py", function()
  after_each(helper.cleanup)

  for _, mode in ipairs(MODES) do
    local skip = mode ~= "live" and helper.asan

    it("lua bt shows the dead loop three functions deep (" .. mode .. ")", function()
      if skip then return pending(ASAN_CORE) end
      local pid, path, source = start_loop()
      local out, err, rc = gdb(target_of(mode, pid), "lua bt")
      assert.equal(0, rc, err)
      assert.matches("Lua 5%.4%.%d, running thread 0x%x+:\n", out)
      assert_loop_stack(out, path, source)
      assert.is_true(helper.alive(pid))   -- gdb let it go on
    end)

    it("lua locals shows the loop's counter (" .. mode .. ")", function()
      if skip then return pending(ASAN_CORE) end
      local pid = start_loop()
      local target = target_of(mode, pid)
      local out, err, rc = gdb(target, "lua locals", "lua locals 2")
      assert.equal(0, rc, err)
      -- frame 0, spin_inner: its one local is a number that keeps growing
      assert.matches("#0  [^\n]* in function <[^\n]*>\n    turns = %d+\n", out)
      assert.matches("#2  [^\n]* in function spin_outer <[^\n]*>\n    %(no locals%)\n",
                     out)
      _, err, rc = gdb(target, "lua locals 9")
      assert.equal(1, rc)
      assert.matches("evlua%-gdb: no frame #9 %(there are 6%)", err)
    end)

    it("lua bt on an idle process says no Lua code runs (" .. mode .. ")", function()
      if skip then return pending(ASAN_CORE) end
      local pid = start("gdb_idle")
      helper.eventually(function() return proc_state(pid) == "S" end, "an idle process")
      local out, err, rc = gdb(target_of(mode, pid), "lua bt")
      assert.equal(0, rc, err)
      assert.matches("no Lua code running %(the loop is idle%); main thread 0x%x+:\n"
                     .. "%(no Lua frames%)", out)
    end)

    it("lua coroutines lists the parked coroutines and what they wait for (" .. mode
       .. ")", function()
      if skip then return pending(ASAN_CORE) end
      local pid, path, source = start("gdb_idle")
      helper.eventually(function() return proc_state(pid) == "S" end, "an idle process")
      local where = escape(path)
      local out, err, rc = gdb(target_of(mode, pid), "lua coroutines")
      assert.equal(0, rc, err)
      assert.matches("main thread 0x%x+ %(idle%)\n", out)
      -- the sleeper: yield <- event._park <- event.sleep <- nap_for_long
      -- with what event.lua's task record says it waits for
      assert.matches("coroutine 0x%x+ %(suspended, waiting: sleep 3600%)\n"
                     .. "    #0  %[C%] function coroutine%.yield\n"
                     .. "    #1  [^\n]*/event%.lua:%d+ in function event%._park [^\n]*\n"
                     .. "    #2  [^\n]*/event%.lua:%d+ in function event%.sleep [^\n]*\n"
                     .. "    #3  " .. where .. ":" .. line_of(source, "event.sleep(3600)")
                     .. " in function <" .. where .. ":"
                     .. line_of(source, "local function nap_for_long") .. ">\n", out)
      -- the reader: the channel's C waiter (it yields itself), then
      -- read_quiet_peer
      assert.matches("coroutine 0x%x+ %(suspended, waiting: read table: 0x%x+%)\n"
                     .. "    #0  %[C%] function [^\n]*\n"
                     .. "    #1  " .. where .. ":" .. line_of(source, "ch:wait_line()")
                     .. " in function <" .. where .. ":"
                     .. line_of(source, "local function read_quiet_peer") .. ">\n", out)
    end)
  end

  it("lua coroutines marks the running coroutine and the main thread that resumed it", function()
    local pid, path = start_loop()
    local out, err, rc = gdb(live(pid), "lua coroutines")
    assert.equal(0, rc, err)
    assert.matches("main thread 0x%x+ %(normal%)\n    #0  %[C%] function coroutine%.resume\n",
                   out)
    assert.matches("coroutine 0x%x+ %(running%)\n    #0  " .. escape(path) .. ":", out)
  end)

  it("refuses a process that is not evlua", function()
    local p = io.popen("exec sleep 600 >/dev/null & echo $!")
    local pid = p:read("l")
    p:close()
    local _, err = gdb("-p " .. pid, "lua bt")
    os.execute("kill " .. pid)
    assert.matches("evlua%-gdb: no liblua here", err)
  end)
end)

describe("evlua stack", function()
  after_each(helper.cleanup)

  it("prints the running coroutine's stack, all coroutines with -a, locals with -l", function()
    local pid, path, source = start_loop()
    local out, err, rc = helper.run({ "stack", pid })
    assert.equal(0, rc, err)
    assert.matches("^Lua 5%.4%.%d, running thread 0x%x+:\n", out)
    assert_loop_stack(out, path, source)
    assert.not_matches("Inferior", out)   -- gdb's own lines are left out
    out, err, rc = helper.run({ "stack", "-a", "-l", "0", pid })
    assert.equal(0, rc, err)
    assert.matches("coroutine 0x%x+ %(running%)\n", out)
    assert.matches("\n#0  [^\n]*\n    turns = %d+\n$", out)
  end)

  it("reads a core file given with the binary", function()
    if helper.asan then return pending(ASAN_CORE) end
    local pid, path, source = start_loop()
    local target = core_of(pid)
    local exe, core = target:match("^(%S+) (%S+)$")
    local out, err, rc = helper.run({ "stack", exe, core })
    assert.equal(0, rc, err)
    assert_loop_stack(out, path, source)
  end)

  it("fails with a clear message: no such process, not evlua, no gdb, bad usage", function()
    local _, err, rc = helper.run({ "stack", "999999999" })
    assert.equal(1, rc)
    assert.equal("evlua stack: process 999999999: no such process\n", err)
    local p = io.popen("exec sleep 600 >/dev/null & echo $!")
    local sleeper = p:read("l")
    p:close()
    _, err, rc = helper.run({ "stack", sleeper })
    os.execute("kill " .. sleeper)
    assert.equal(1, rc)
    assert.equal("evlua stack: process " .. sleeper .. " is not an evlua process\n", err)
    local pid = start("gdb_idle")
    _, err, rc = helper.sh(("timeout -k 5 %d env PATH=/nonexistent %s stack %s"):format(
      GDB_TIMEOUT, helper.quote(helper.evlua), pid))
    assert.equal(1, rc)
    assert.equal("evlua stack: gdb not found: install it (apt-get install gdb)\n", err)
    _, err, rc = helper.run({ "stack" })
    assert.equal(2, rc)
    assert.matches("^evlua stack: expected PID, or EXE CORE\nusage: evlua stack", err)
  end)
end)
