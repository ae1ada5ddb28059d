-- tests/lua/process_spec.lua - child processes (event.run_process,
-- evlua.process) and signal handlers (event.signal), against real
-- programs: sh, cat, head, sleep, printf, ls.
local event = require "event"
local process = require "evlua.process"
local helper = require "helper"

local MiB = 1024 * 1024

local alive = helper.alive

-- Children of this process that are zombies (not reaped).
local function zombies()
  local out = assert(event.run_process({ "ps", "--no-headers", "-o", "stat=",
                                         "--ppid", tostring(process.pid()) },
                                       { lines = true }))
  local n = 0
  for _, stat in ipairs(out) do
    if stat:match("^Z") then n = n + 1 end
  end
  return n
end

describe("event.run_process", function()
  after_each(helper.cleanup)

  it("captures 1 MiB of output exactly", function()
    local dir = helper.tmpdir()
    local bytes = {}
    for i = 1, MiB / 4 do bytes[i] = string.pack("<I4", (i * 2654435761) % 2^32) end
    local data = table.concat(bytes)
    helper.write_file(dir .. "/data", data)
    local out, status = event.run_process("cat " .. dir .. "/data")
    assert.equal(0, status.code)
    assert.equal(MiB, #out)
    assert.is_true(out == data, "the bytes differ")
  end)

  it("feeds stdin while it reads stdout (1 MiB each way, no deadlock)", function()
    local data = ("0123456789abcdef"):rep(MiB / 16)
    local out, status = event.run_process({ "cat" }, { stdin = data })
    assert.equal(0, status.code)
    assert.is_true(out == data, "the bytes differ")
    -- without stdin the child reads /dev/null: end of file at once
    assert.equal("0\n", (event.run_process("wc -c")))
    assert.equal("", (event.run_process({ "cat" }, { stdin = "" })))
  end)

  it("reports exit codes", function()
    for _, code in ipairs({ 0, 1, 3, 255 }) do
      local out, status = event.run_process("echo out; exit " .. code)
      assert.equal("out\n", out)
      assert.equal(code, status.code)
      assert.is_nil(status.signal)
      assert.is_number(status.pid)
    end
  end)

  it("reports the signal that ended the process", function()
    local out, status = event.run_process("echo before; kill -TERM $$; echo after")
    assert.equal("before\n", out)
    assert.is_nil(status.code)
    assert.equal(15, status.signal)
    assert.equal("TERM", status.signal_name)
    local _, st = event.run_process("kill -9 $$")
    assert.same({ 9, "KILL" }, { st.signal, st.signal_name })
  end)

  it("runs an argv table without a shell", function()
    local out, status = event.run_process({ "printf", "%s|", "a b", "$HOME", "*", 42 })
    assert.equal(0, status.code)
    assert.equal("a b|$HOME|*|42|", out)
  end)

  it("returns nil, err when the program cannot run", function()
    local out, err, code = event.run_process({ "/nonexistent/program" })
    assert.is_nil(out)
    assert.equal("/nonexistent/program: no such file or directory", err)
    assert.equal("ENOENT", code)   -- callers compare the code
    out, err = event.run_process({ "no-such-program-evlua" })
    assert.is_nil(out)
    assert.matches("no such file or directory", err, 1, true)
    -- through the shell, the shell reports it with 127
    local _, status = event.run_process("no-such-program-evlua", { stderr = "null" })
    assert.equal(127, status.code)
    out, err, code = event.run_process("pwd", { cwd = "/nonexistent/dir" })
    assert.is_nil(out)
    assert.equal("/nonexistent/dir: no such file or directory", err)
    assert.equal("ENOENT", code)
    -- a cwd that exists but is a file: refused before the spawn
    local file = helper.tmpdir() .. "/file"
    helper.write_file(file, "")
    out, err, code = event.run_process("pwd", { cwd = file })
    assert.is_nil(out)
    assert.equal(file .. ": not a directory", err)
    assert.equal("ENOTDIR", code)
  end)

  it("splits the output into lines with opts.lines", function()
    local lines = event.run_process({ "printf", "a\nb\n\nlast" }, { lines = true })
    assert.same({ "a", "b", "", "last" }, lines)
    assert.same({ "x" }, (event.run_process("echo x", { lines = true })))
    assert.same({}, (event.run_process("true", { lines = true })))
  end)

  it("captures stderr on request, merges or drops it", function()
    local cmd = "echo out; echo err >&2"
    local out, status = event.run_process(cmd, { stderr = "capture" })
    assert.equal("out\n", out)
    assert.equal("err\n", status.stderr)
    out, status = event.run_process(cmd, { stderr = "stdout" })
    assert.equal("out\nerr\n", out)
    assert.is_nil(status.stderr)
    out = event.run_process(cmd, { stderr = "null" })
    assert.equal("out\n", out)
    out, status = event.run_process(cmd, { stdout = "null", stderr = "capture" })
    assert.equal("", out)
    assert.equal("err\n", status.stderr)
  end)

  it("runs in opts.cwd with opts.env", function()
    local dir = helper.tmpdir()
    assert.equal(dir .. "\n", (event.run_process("pwd", { cwd = dir })))
    local out = event.run_process({ "/usr/bin/env" },
                                  { env = { EVLUA_A = "one", HOME = false } })
    assert.matches("\nEVLUA_A=one\n", "\n" .. out, 1, true)
    assert.not_matches("\nHOME=", "\n" .. out, 1, true)
    assert.matches("\nPATH=" .. os.getenv("PATH") .. "\n", "\n" .. out, 1, true)
    out = event.run_process({ "/usr/bin/env" }, { clear_env = true, env = { ONLY = 1 } })
    assert.equal("ONLY=1\n", out)
  end)

  it("kills a process at its timeout: nil, 'timeout'", function()
    local t0 = event.now()
    local out, err, code = event.run_process("sleep 100", { timeout = 0.2 })
    assert.is_nil(out)
    assert.equal("timeout", err)
    assert.equal("timeout", code)
    assert.is_true(event.now() - t0 < 10)
  end)

  -- A shell that writes `file` once it is set up; its timeout fires 1 s
  -- after the start, well after that.
  local function spawn_ready(script, opts)
    local file = helper.tmpdir() .. "/ready"
    local proc = assert(process.spawn(script:gsub("READY", file), opts))
    helper.eventually(function()
      local f = io.open(file)
      local text = f and f:read("a")
      if f then f:close() end
      return text and text ~= ""
    end, "the script to start")
    return proc, helper.slurp(file)
  end

  it("reaches the children of a shell at the timeout (process group)", function()
    local proc, pid = spawn_ready("sleep 100 & echo $! >READY; wait", { timeout = 1 })
    pid = assert(tonumber(pid))
    assert.is_true(alive(pid))
    assert.same({ nil, "timeout", "timeout" }, { proc:wait() })
    helper.eventually(function() return not alive(pid) end, "the sleep to die")
  end)

  it("sends SIGKILL kill_after seconds after an ignored SIGTERM", function()
    local t0 = event.now()
    local proc = spawn_ready("trap '' TERM; echo >READY; sleep 100",
                             { timeout = 1, kill_after = 0.3 })
    assert.same({ nil, "timeout", "timeout" }, { proc:wait() })
    local took = event.now() - t0
    assert.is_true(took >= 1.3 - 0.01, "took " .. took)
    assert.is_true(took < 10, "took " .. took)
  end)

  it("SIGKILLs the group when the shell died of SIGTERM but a member "
     .. "ignoring it keeps the pipes", function()
    local proc, pid = spawn_ready(
      "sh -c 'trap \"\" TERM; echo $$ >READY; exec sleep 100' & wait",
      { timeout = 1, kill_after = 0.2 })
    pid = assert(tonumber(pid))
    local out, err = proc:wait()
    assert.is_nil(out)
    assert.equal("timeout", err)
    -- the member held the pipes until SIGKILL: it is gone now
    helper.eventually(function() return not alive(pid) end, "the sleep to die")
  end)

  it("gives up on the output kill_after seconds after SIGKILL when a "
     .. "process outside the group keeps the pipes", function()
    local t0 = event.now()
    local proc, pid = spawn_ready(
      "trap '' TERM; setsid sh -c 'echo $$ >READY; exec sleep 100' & wait",
      { timeout = 1, kill_after = 0.2 })
    pid = assert(tonumber(pid))
    local out, err = proc:wait()
    assert.is_nil(out)
    assert.equal("timeout", err)
    local took = event.now() - t0
    assert.is_true(took < 10, "took " .. took)
    -- SIGKILL to the group could not reach it: it still holds the pipes
    assert.is_true(alive(pid))
    os.execute("kill -9 " .. pid)
    helper.eventually(function() return not alive(pid) end, "the holder to die")
  end)

  it("bounds the output: max_output bytes are fine, one more kills it", function()
    local out, status = event.run_process("head -c 65536 /dev/zero",
                                          { max_output = 65536 })
    assert.equal(65536, #out)
    assert.equal(0, status.code)
    assert.same({ nil, "output too large", "too_large" },
                { event.run_process("head -c 65537 /dev/zero", { max_output = 65536 }) })
    -- stderr counts too
    assert.same({ nil, "output too large", "too_large" },
                { event.run_process("head -c 40000 /dev/zero >&2; head -c 40000 /dev/zero",
                                    { max_output = 65536, stderr = "capture" }) })
    -- an endless writer is stopped
    assert.same({ nil, "output too large", "too_large" },
                { event.run_process({ "yes" }, { max_output = MiB }) })
    assert.equal(16 * MiB, process.defaults.max_output)
  end)

  it("reads until end of file: output of a background child is kept", function()
    local out, status = event.run_process("(sleep 0.2; echo late) & echo early")
    assert.equal(0, status.code)
    assert.equal("early\nlate\n", out)
  end)

  it("runs 50 processes at once while a timer keeps its schedule", function()
    -- Each start holds the loop until the child has called exec; the 50
    -- starts are spread over loop iterations, so the timer keeps ticking
    -- during the burst of starts as well as while the processes run.
    local period = 0.01
    local tick_times = {}
    local timer = event.timer(period, function()
      event.update_now()
      tick_times[#tick_times + 1] = event.now()
    end)
    local spawned, burst_end = 0, nil
    local function started()
      spawned = spawned + 1
      if spawned == 50 then
        event.update_now()
        burst_end = event.now()
      end
    end
    event.update_now()
    local t0 = event.now()
    local tasks = {}
    for i = 1, 50 do
      tasks[i] = event.fork(event.run_process, "sleep 1; echo " .. i,
                            { on_spawn = started })
    end
    for i = 1, 50 do
      local ok, out, status = tasks[i]:join()
      assert.is_true(ok)
      assert.equal(i .. "\n", out)
      assert.equal(0, status.code)
    end
    timer:cancel()
    event.update_now()
    local t1 = event.now()
    -- together, not one after the other (that would be 50 s)
    assert.is_true(t1 - t0 < 10, "took " .. (t1 - t0))
    -- the longest stretch without a tick, overall and during the starts
    local function max_gap(from, to)
      local gap, last = 0, from
      for _, t in ipairs(tick_times) do
        if t > from and t <= to then
          gap = math.max(gap, t - last)
          last = t
        end
      end
      return math.max(gap, to - last)
    end
    assert.is_true(#tick_times >= (t1 - t0) / period / 4,
                   ("%d ticks in %.2fs"):format(#tick_times, t1 - t0))
    assert.is_true(max_gap(t0, t1) < 0.5,
                   ("the loop stalled for %.3fs"):format(max_gap(t0, t1)))
    -- a burst of starts long enough to matter (some virtual machines
    -- take milliseconds per start) was cut into loop iterations
    local burst = burst_end - t0
    if burst >= 0.05 then
      assert.is_true(max_gap(t0, burst_end) < burst * 0.75,
                     ("no tick for %.3fs of a %.3fs burst of starts")
                     :format(max_gap(t0, burst_end), burst))
    end
  end)

  it("leaks no fd and leaves no zombie after 1,000 runs", function()
    -- In a process of its own: what other tests leave running (timers,
    -- handles the collector has not closed yet) must not move the count.
    local out, err, rc = helper.run_script([[
      local event = require "event"
      local process = require "evlua.process"
      -- The listing leaves out the pipe it is written to: until the fork
      -- returns, this process may still hold that pipe's write end too.
      local function fds()
        local lines = assert(event.run_process(
          "ls -l /proc/" .. process.pid() .. "/fd; readlink /proc/self/fd/1",
          { lines = true }))
        local own_pipe = table.remove(lines)
        local list = {}
        for _, line in ipairs(lines) do
          if not line:find(own_pipe, 1, true) then list[#list + 1] = line end
        end
        return #list, table.concat(list, "\n")
      end
      fds()   -- the first run loads what later runs reuse
      local before, before_list = fds()
      local failures = 0
      local workers = {}
      for w = 1, 10 do
        workers[w] = event.fork(function()
          for i = 1, 100 do
            local opts = ({ {}, { stderr = "capture" }, { stdin = "x" } })[i % 3 + 1]
            local out, status = event.run_process({ "echo", w, i }, opts)
            if out ~= w .. " " .. i .. "\n" or status.code ~= 0 then
              failures = failures + 1
            end
          end
        end)
      end
      for w = 1, 10 do assert(workers[w]:join()) end
      local after, after_list = fds()
      if after ~= before then   -- say which one, for whoever debugs it
        io.stderr:write(before_list, "\n--- after:\n", after_list, "\n")
      end
      local ps = assert(event.run_process({ "ps", "--no-headers", "-o", "stat=",
                                            "--ppid", tostring(process.pid()) },
                                          { lines = true }))
      local zombies = 0
      for _, stat in ipairs(ps) do
        if stat:match("^Z") then zombies = zombies + 1 end
      end
      print(failures, before, after, zombies)
    ]])
    assert.equal(0, rc, err)
    local failures, before, after, zombie_count =
      out:match("^(%d+)\t(%d+)\t(%d+)\t(%d+)\n$")
    assert.equal("0", failures)
    assert.equal(before, after, err)
    assert.equal("0", zombie_count)
  end)

  it("gives the child only fds 0-2, even ones opened without O_CLOEXEC", function()
    local f = assert(io.open("/dev/null"))   -- stdio opens without O_CLOEXEC
    local out = event.run_process({ "ls", "/proc/self/fd" }, { lines = true })
    f:close()
    table.sort(out)
    assert.same({ "0", "1", "2", "3" }, out)   -- 3: ls's own directory
  end)

  it("shows up in event.ps as 'process <cmd>' while it waits", function()
    local task = event.fork(event.run_process, "sleep 0.3")
    helper.eventually(function()
      return event.ps():find("[waiting process sleep 0.3]", 1, true)
    end, "the process in event.ps")
    assert.is_true((task:join()))
  end)

  it("terminates the process when the waiting coroutine is cancelled", function()
    local proc
    local task = event.fork(event.run_process, "sleep 100",
                            { on_spawn = function(p) proc = p end })
    helper.eventually(function() return proc ~= nil end, "the spawn")
    assert.is_true(alive(proc.pid))
    task:cancel()
    assert.same({ true, nil, "cancelled", "cancelled" }, { task:join() })
    helper.eventually(function() return not alive(proc.pid) end, "the process to die")
    helper.eventually(function() return zombies() == 0 end, "the child reaped")
  end)

  it("terminates the process when on_spawn raises, and raises that error", function()
    local pid
    local ok, err = pcall(event.run_process, "sleep 100", {
      on_spawn = function(p) pid = p.pid error("no thanks", 0) end })
    assert.is_false(ok)
    assert.equal("no thanks", err)
    helper.eventually(function() return not alive(pid) end, "the process to die")
  end)

  it("raises on programmer errors", function()
    -- a coroutine the scheduler did not start cannot wait
    assert.has_error(coroutine.wrap(function() event.run_process("true") end),
                     "event.run_process must run in a coroutine")
    local function check(cmd, opts, msg)
      local ok, err = pcall(event.run_process, cmd, opts)
      assert.is_false(ok)
      assert.matches(msg, err, 1, true)
    end
    check(nil, nil, "bad argument #1 to 'run_process' (string or argv table expected, got nil)")
    check({}, nil, "bad argument #1 to 'run_process' (argv is empty)")
    check("true", { tiemout = 1 }, "unknown option 'tiemout'")
    check("true", { timeout = -1 }, "timeout must be a positive number")
    check("true", { stdout = "stdout" }, "stdout must be")
    check("true", { env = { ["A=B"] = "x" } }, "env names")
  end)
end)

describe("process.spawn", function()
  after_each(helper.cleanup)

  it("gives a handle: pid, wait with a timeout, kill with a signal", function()
    local proc = assert(process.spawn("echo started; sleep 100"))
    assert.is_true(alive(proc.pid))
    assert.is_true(proc:running())
    assert.same({ nil, "timeout", "timeout" }, { proc:wait(0.05) })
    assert.is_true(proc:kill("USR2"))
    local out, status = proc:wait(10)
    assert.equal("started\n", out)
    assert.equal("USR2", status.signal_name)
    assert.same({ nil, "exited", "exited" }, { proc:kill() })
    assert.equal("started\n", (proc:wait()))   -- the result stays
    assert.has_error(function() proc:kill("NOPE") end)
  end)

  it("escalates to SIGKILL once however often terminate is called",
     function()
    local t0 = event.now()
    local ready = helper.tmpdir() .. "/ready"
    local proc = assert(process.spawn("trap '' TERM; echo >" .. ready
                                      .. "; sleep 100", { kill_after = 0.3 }))
    helper.eventually(function()
      local f = io.open(ready)
      local text = f and f:read("a")
      if f then f:close() end
      return text and text ~= ""
    end, "the trap to be set")
    proc:terminate()
    proc:terminate()
    local out, status = proc:wait(10)
    assert.equal("", out)
    assert.equal("KILL", status.signal_name)   -- TERM was ignored
    assert.is_true(event.now() - t0 < 5)
    proc:terminate()   -- done: nothing to do
  end)
end)

describe("process signal names", function()
  it("maps names and numbers both ways; unknown ones give nil", function()
    assert.equal(15, process.signal_number("TERM"))
    assert.equal(15, process.signal_number("SIGTERM"))
    assert.equal(9, process.signal_number(9))
    assert.equal("KILL", process.signal_name(9))
    for _, bad in ipairs({ 0, -1, 65, 1000, "NOPE", "SIG" }) do
      assert.is_nil(process.signal_number(bad), tostring(bad))
    end
    assert.is_nil(process.signal_name(0))
    assert.has_error(function() process.signal_number(1.5) end)
  end)
end)

-- core.process_spawn is the C half under evlua.process: it checks the
-- spec itself, so that no caller can hand posix_spawn a bad one.
describe("core.process_spawn", function()
  local core = require "evlua.core"
  local function noop() end

  local NONE = {}
  local function spec(fields)
    local s = { file = "true", argv = { "true" } }
    for k, v in pairs(fields) do
      if v == NONE then s[k] = nil else s[k] = v end
    end
    return s
  end

  it("raises on a bad spec or target, naming what is wrong", function()
    local many = {}
    for i = 1, 5000 do many[i] = "x" end
    local cases = {
      { spec({ file = NONE }), "file expected" },
      { spec({ file = false }), "file: string expected, got boolean" },
      { spec({ cwd = 1 }), "cwd: string expected, got number" },
      { spec({ input = {} }), "input: string expected, got table" },
      { spec({ stdout = "stdout" }), "stdout cannot go to stdout" },
      { spec({ stdout = "pipe" }), "stdout: invalid mode 'pipe'" },
      { spec({ stderr = 2 }), "stderr: mode expected, got number" },
      { spec({ timeout = "1" }), "timeout: number expected, got string" },
      { spec({ max_output = -1 }), "max_output out of range" },
      { spec({ max_output = 1e16 }), "max_output out of range" },
      { spec({ timeout = -1 }), "timeouts must be positive" },
      { spec({ kill_after = 0 }), "timeouts must be positive" },
      { spec({ argv = NONE }), "argv expected" },
      { spec({ argv = {} }), "argv expected" },
      { spec({ argv = "true" }), "string lists expected" },
      { spec({ argv = { "true", 1 } }), "string lists expected" },
      { spec({ argv = { "true", {} } }), "string lists expected" },
      { spec({ argv = many }), "too many strings" },
      { spec({ env = { "A=1", true } }), "string lists expected" },
    }
    for _, case in ipairs(cases) do
      local ok, err = pcall(core.process_spawn, case[1], noop)
      assert.is_false(ok, case[2])
      assert.matches("bad argument #1 to '[%w._]*process_spawn' %(" ..
                     case[2]:gsub("%p", "%%%0") .. "%)", err)
    end
    local ok, err = pcall(core.process_spawn, spec({}), nil)
    assert.is_false(ok)
    assert.matches("bad argument #2 to '[%w._]*process_spawn' %(function "
                   .. "or coroutine expected, got nil%)", err)
  end)

  it("raises for a result asked too early or a bad signal; signals after "
     .. "the end give nil, 'exited', 'exited'", function()
    local token = {}
    local ud = assert(core.process_spawn(
      spec({ file = "sleep", argv = { "sleep", "100" } }),
      function() event.wakeup(token) end))
    assert.equal("evlua.process (pid " .. ud:pid() .. ", running)",
                 tostring(ud))
    assert.has_error(function() ud:result() end, "process is still running")
    for _, bad in ipairs({ -1, 65 }) do
      local ok, err = pcall(ud.signal, ud, bad)
      assert.is_false(ok)
      assert.matches("bad argument #2 to '.-' %(invalid signal%)", err)
    end
    assert.is_true(ud:signal(0))   -- still there
    assert.is_true(ud:signal(process.signal_number("TERM")))
    assert.is_true(event.wait(token, 10))
    assert.is_false(ud:running())
    assert.same({ nil, "exited", "exited" }, { ud:signal(0) })
    local out, err, code, sig = ud:result()
    assert.same({ "", "", nil, 15 }, { out, err, code, sig })
    ud:close()
  end)

  it("close on a running child sends it SIGTERM", function()
    local ud = assert(core.process_spawn(
      spec({ file = "sleep", argv = { "sleep", "100" } }), noop))
    local pid = ud:pid()
    assert.is_true(alive(pid))
    ud:close()
    assert.equal("evlua.process (pid " .. pid .. ", closed)", tostring(ud))
    helper.eventually(function() return not alive(pid) end,
                      "the closed child to die")
  end)
end)

describe("event.signal", function()
  after_each(helper.cleanup)

  it("runs a handler in a coroutine for each signal, until cancelled", function()
    local got = {}
    local h = event.signal("SIGUSR2", function(name)
      got[#got + 1] = name
      event.sleep(0)   -- it is a coroutine
    end)
    local pid = process.pid()
    assert(event.run_process({ "kill", "-USR2", pid }))
    helper.eventually(function() return #got == 1 end, "the first signal")
    assert(event.run_process({ "kill", "-USR2", pid }))
    helper.eventually(function() return #got == 2 end, "the second signal")
    assert.same({ "USR2", "USR2" }, got)
    h:cancel()
    h:cancel()   -- idempotent
    assert.is_false(h:active())
  end)

  it("lets a script stop cleanly on SIGTERM", function()
    local out, err, rc = helper.run_script([[
      local event = require "event"
      local process = require "evlua.process"
      local l = assert(event.listen("127.0.0.1", 0, function() end))
      event.signal("TERM", function(name)
        print("got " .. name)
        l:close()   -- nothing left: the process ends
      end)
      event.fork(event.run_process, { "kill", "-TERM", process.pid() })
    ]])
    assert.equal(0, rc, err)
    assert.equal("got TERM\n", out)
  end)

  it("does not keep the process alive by itself", function()
    local out, err, rc = helper.run_script([[
      local event = require "event"
      event.signal("HUP", function() end)
      print("done")
    ]])
    assert.equal(0, rc, err)
    assert.equal("done\n", out)
  end)

  it("refuses unknown and reserved signals", function()
    assert.has_error(function() event.signal("NOPE", function() end) end,
                     "bad argument #1 to 'signal' (unknown signal NOPE)")
    for _, name in ipairs({ "USR1", "CHLD", "KILL", "STOP" }) do
      assert.has_error(function() event.signal(name, function() end) end,
                       "bad argument #1 to 'signal' (" .. name
                       .. " is reserved by the runtime)")
    end
    assert.has_error(function() event.signal("TERM") end)
  end)
end)
