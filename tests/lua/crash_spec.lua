-- tests/lua/crash_spec.lua - on SIGSEGV, SIGBUS, SIGFPE and SIGABRT evlua
-- writes the Lua traceback and the C backtrace, then dies by the signal.
local helper = require "helper"

local SCRIPT = "tests/scripts/crash_fault.lua"

local escape, line_of = helper.escape, helper.line_of

-- Run the crashing script with kind; no core file (ulimit -c 0): the
-- signal is what the test checks. Returns stderr and the shell's status.
local function crash(kind)
  local _, err, rc = helper.sh(("ulimit -c 0; EVLUA_TEST_CRASH=1 timeout -k 5 %d %s %s %s")
    :format(helper.TIMEOUT, helper.quote(helper.evlua), SCRIPT, kind))
  return err, rc
end

-- The traceback names the C function and both Lua functions, with the
-- lines of the calls, innermost first, then the C backtrace.
local function assert_traceback(err, title)
  local source = helper.slurp(SCRIPT)
  local where = escape(SCRIPT)
  assert.matches("evlua: fatal signal " .. escape(title) .. ", pid %d+\n"
                 .. "Lua traceback of the running coroutine:\n"
                 .. "\t%[C%]: in field 'crash_for_test'\n"
                 .. "\t" .. where .. ":" .. line_of(source, "core.crash_for_test(kind)")
                 .. ": in upvalue 'faulting_helper'\n"
                 .. "\t" .. where .. ":" .. line_of(source, "  faulting_helper(kind)")
                 .. ": in global 'crash_outer'\n"
                 .. "\t" .. where .. ":" .. line_of(source, "  crash_outer(arg[1])")
                 .. ": in function <", err)
  assert.matches("\nC backtrace:\n[^\n]*evlua[^\n]*%[0x%x+%]\n", err)
end

-- How the process ends: by the signal (128 + N), or under ASan by ASan's
-- own report after ours (its handler is the one put back; it exits 1).
local function assert_died(err, rc, signal_number, asan_name)
  if helper.asan and asan_name then
    assert.equal(1, rc)
    assert.matches("Lua traceback of the running coroutine:.*AddressSanitizer: "
                   .. asan_name, err)
  else
    assert.equal(128 + signal_number, rc)
  end
end

describe("a crash", function()
  after_each(helper.cleanup)

  it("by SIGSEGV prints the Lua traceback and the C backtrace, then dies by SIGSEGV", function()
    local err, rc = crash("segv")
    assert_traceback(err, "SIGSEGV (segmentation fault)")
    assert_died(err, rc, 11, "SEGV")
  end)

  it("by SIGABRT (abort) does the same and dies by SIGABRT", function()
    local err, rc = crash("abort")
    assert_traceback(err, "SIGABRT (aborted)")
    assert_died(err, rc, 6, nil)   -- ASan leaves SIGABRT alone
  end)

  it("by SIGFPE (an integer division by zero) does the same and dies by SIGFPE", function()
    local err, rc = crash("fpe")
    assert_traceback(err, "SIGFPE (arithmetic exception)")
    assert_died(err, rc, 8, "FPE")
  end)

  it("by SIGBUS (a page past the end of a file) does the same and dies by SIGBUS", function()
    local err, rc = crash("bus")
    assert_traceback(err, "SIGBUS (bus error)")
    assert_died(err, rc, 7, "BUS")
  end)

  it("by a C stack overflow is reported from the alternate stack", function()
    local err, rc = crash("stack")
    assert_traceback(err, "SIGSEGV (segmentation fault)")
    assert_died(err, rc, 11, "stack%-overflow")
  end)

  it("while the loop is idle says no Lua code was running", function()
    local pid, out = helper.spawn_script([[
io.stdout:setvbuf("no")
require("event").timer(3600, function() end)
print("ready")
]])
    helper.await_output(out, "ready\n")
    -- asleep in epoll_wait: no Lua code runs when the signal comes
    helper.eventually(function()
      local f = io.open("/proc/" .. pid .. "/stat")
      local stat = f and f:read("a") or ""
      if f then f:close() end
      return stat:match("^%d+ %b() (%a)") == "S"
    end, "an idle process")
    helper.kill(pid, "SEGV")
    local text = helper.await_output(out, "^(.*no Lua code was running[^\n]*\n)")
    assert.matches("evlua: fatal signal SIGSEGV %(segmentation fault%), pid " .. pid
                   .. "\nno Lua code was running %(the loop was idle%)\n", text)
    helper.eventually(function() return not helper.alive(pid) end, "its death")
  end)

  it("cannot be caused by accident: crash_for_test needs EVLUA_TEST_CRASH=1", function()
    local out, err, rc = helper.run({ "-e", "print(require('evlua.core').crash_for_test)" })
    assert.equal(0, rc, err)
    assert.equal("nil\n", out)
  end)
end)
