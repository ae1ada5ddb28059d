-- tests/lua/helper.lua - shared helpers for the Lua test suites.
local helper = {}

-- The evlua binary under test (set by tests/run.sh).
helper.evlua = os.getenv("EVLUA_BIN") or (os.getenv("PWD") .. "/evlua")
-- True when the binary is the AddressSanitizer build.
helper.asan = helper.evlua:find("/asan/", 1, true) ~= nil

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
helper.quote = shell_quote

local function slurp(path)
  local f = assert(io.open(path, "rb"))
  local data = f:read("a")
  f:close()
  return data
end
helper.slurp = slurp

function helper.write_file(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

-- A fresh temporary directory, removed by helper.cleanup().
local temps = {}
function helper.tmpdir()
  local p = io.popen("mktemp -d /tmp/evlua-test.XXXXXX")
  local dir = p:read("l")
  p:close()
  temps[#temps + 1] = dir
  return dir
end

local spawned = {}   -- pids of background processes, killed by cleanup

function helper.cleanup()
  for _, pid in ipairs(spawned) do os.execute("kill -9 " .. pid .. " 2>/dev/null") end
  spawned = {}
  for _, dir in ipairs(temps) do os.execute("rm -rf " .. shell_quote(dir)) end
  temps = {}
end

-- The message of the error f(...) raises (fails the test if none).
function helper.raised(f, ...)
  local ok, err = pcall(f, ...)
  assert(not ok, "no error")
  return err
end

-- Run a shell command line (blocking; fine in tests). Returns stdout,
-- stderr and the exit status (128+N for a signal, as the shell reports).
function helper.sh(cmdline, stdin)
  local dir = helper.tmpdir()
  local input = ""
  if stdin then
    helper.write_file(dir .. "/in", stdin)
    input = " <" .. dir .. "/in"
  end
  local full = ("(%s)%s >%s/out 2>%s/err; echo $? >%s/rc"):format(
    cmdline, input, dir, dir, dir)
  os.execute(full)
  local rc = tonumber(slurp(dir .. "/rc"))
  return slurp(dir .. "/out"), slurp(dir .. "/err"), rc
end

helper.TIMEOUT = 120   -- seconds any evlua run by a test may take

-- Run evlua with the given arguments (a list, each quoted).
function helper.run(args, stdin, env)
  local parts = {}
  for k, v in pairs(env or {}) do
    parts[#parts + 1] = k .. "=" .. shell_quote(v)
  end
  -- A hung process fails its test instead of hanging the suite.
  parts[#parts + 1] = "timeout -k 5 " .. helper.TIMEOUT
  parts[#parts + 1] = shell_quote(helper.evlua)
  for _, a in ipairs(args) do parts[#parts + 1] = shell_quote(a) end
  return helper.sh(table.concat(parts, " "), stdin)
end

-- Write `source` to a temporary script and run it with evlua.
function helper.run_script(source, args, env)
  local path = helper.tmpdir() .. "/script.lua"
  helper.write_file(path, source)
  local argv = { path }
  for _, a in ipairs(args or {}) do argv[#argv + 1] = a end
  local out, err, rc = helper.run(argv, nil, env)
  return out, err, rc, path
end

-- A terminal for interactive programs: command runs in a detached tmux
-- session (100x20). term:keys(k) types tmux key names (quote text with
-- helper.quote), term:shows(text) polls the screen until it shows text
-- and returns the screen (the terminal gives no event to wait for), or
-- raises after 30 s;
-- term:exit_status() waits for the command to end and returns "rc=N\n",
-- term:close() kills the session.
function helper.terminal(command)
  local event = require "event"
  local session = ("evlua-term-%d-%d"):format(os.time(), math.random(1e6))
  local marker = helper.tmpdir() .. "/exited"
  local function tmux(args)
    local out, err, rc = helper.sh("tmux " .. args)
    assert(rc == 0, err)
    return out
  end
  local function screen() return helper.sh("tmux capture-pane -p -t " .. session) end
  tmux(("new-session -d -x 100 -y 20 -s %s %s"):format(session, shell_quote(
    "sh -c '" .. command .. "; echo rc=$? > " .. marker .. "; sleep 60'")))
  local term = {}
  function term:keys(keys) tmux("send-keys -t " .. session .. " " .. keys) end
  -- A busy machine (CI runs the suites beside the sanitizer build) can
  -- take seconds to start evlua under tmux: wait up to 30 s by the clock.
  function term:shows(text)
    local deadline = event.time() + 30
    repeat
      local s = screen()
      if s:find(text, 1, true) then return s end
      event.sleep(0.01)
    until event.time() > deadline
    error(("the terminal never showed %q; it shows:\n%s"):format(text, screen()), 2)
  end
  function term:exit_status()
    -- the shell creates the file before it writes the line: wait for both
    local deadline = event.time() + 30
    while event.time() < deadline do
      local f = io.open(marker)
      local text = f and f:read("a")
      if f then f:close() end
      if text and text:find("\n", 1, true) then return text end
      event.sleep(0.01)
    end
    return io.open(marker) and slurp(marker) or nil
  end
  function term:close() helper.sh("tmux kill-session -t " .. session) end
  return term
end

-- Whether process pid is alive (a zombie has released everything: dead).
function helper.alive(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return false end
  local stat = f:read("a")   -- nil if it ended since the open
  f:close()
  return stat ~= nil and stat:match("^%d+ %b() (%a)") ~= "Z"
end

-- Start `source` as an evlua script in the background (the loop of the
-- test keeps running). Returns its pid and the path of its stdout+stderr.
function helper.spawn_script(source, args)
  local dir = helper.tmpdir()
  helper.write_file(dir .. "/script.lua", source)
  local out = dir .. "/output"
  local argv = {}
  for _, a in ipairs(args or {}) do argv[#argv + 1] = shell_quote(a) end
  local p = io.popen(("exec %s %s %s >%s 2>&1 & echo $!"):format(
    shell_quote(helper.evlua), dir .. "/script.lua", table.concat(argv, " "),
    out))
  local pid = p:read("l")
  p:close()
  spawned[#spawned + 1] = pid
  return pid, out
end

-- Wait (polling, bounded) until the file at path contains `pattern`;
-- returns the captures or the whole text, or raises after `seconds`.
function helper.await_output(path, pattern, seconds)
  local event = require "event"
  local deadline = event.now() + (seconds or 30)
  while true do
    local f = io.open(path)
    local text = f and f:read("a") or ""
    if f then f:close() end
    local found = table.pack(text:match(pattern))
    if found[1] then return table.unpack(found, 1, found.n) end
    if event.now() > deadline then
      error(("no %q in %s after %ss: %s"):format(pattern, path, seconds or 30, text), 2)
    end
    event.sleep(0.01)
  end
end

-- Send a signal to a process started by spawn_script.
function helper.kill(pid, signal)
  os.execute(("kill -%s %s 2>/dev/null"):format(signal or "TERM", pid))
end

-- Wait (bounded, polling) until cond() is true: for states that have no
-- event to wait on. Raises "timed out waiting for <what>" after ~5 s.
function helper.eventually(cond, what)
  local event = require "event"
  for _ = 1, 1000 do
    if cond() then return end
    event.sleep(0.005)
  end
  error("timed out waiting for " .. what, 2)
end

-- A TCP port nobody listens on right now.
function helper.free_port()
  local event = require "event"
  local l = assert(event.listen("127.0.0.1", 0, function() end))
  local port = l:port()
  l:close()
  return port
end

-- Start a redis-server on 127.0.0.1 (a free port, or opts.port) without
-- persistence; opts.args: more "--name value" arguments as a list. Waits
-- (in a coroutine) until it accepts connections. Returns a table with
-- port, pid, dir and stop() (SIGKILL by default, as a crash would;
-- stop("TERM") for a clean shutdown). helper.cleanup() kills it too.
function helper.redis_server(opts)
  opts = opts or {}
  local dir = helper.tmpdir()
  local port = opts.port or helper.free_port()
  local args = { "--port", port, "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", dir, "--daemonize", "no" }
  for _, a in ipairs(opts.args or {}) do args[#args + 1] = a end
  local quoted = {}
  for i, a in ipairs(args) do quoted[i] = shell_quote(a) end
  local log = dir .. "/redis.log"
  local p = io.popen(("exec redis-server %s >%s 2>&1 & echo $!"):format(
    table.concat(quoted, " "), log))
  local pid = p:read("l")
  p:close()
  spawned[#spawned + 1] = pid
  -- generous: a loaded machine running sanitizer builds is slow to fork
  helper.await_output(log, "Ready to accept connections", 30)
  return {
    port = port, pid = pid, dir = dir, log = log,
    stop = function(signal)
      os.execute(("kill -%s %s 2>/dev/null"):format(signal or "KILL", pid))
      -- wait until it is gone, so the port is free for a restart
      for _ = 1, 500 do
        if not os.execute("kill -0 " .. pid .. " 2>/dev/null") then return end
        require("event").sleep(0.01)
      end
    end,
  }
end

-- helper.mongo_server([args]) -> { port, pid, log, stop([signal]) }: the
-- MongoDB wire test server (tests/peers/mongo/server.js, in memory) on a
-- free port, with its options in args (a string: "--auth user:pass ...").
-- cleanup stops it.
function helper.mongo_server(args)
  local dir = helper.tmpdir()
  local log = dir .. "/mongo.log"
  local p = io.popen(("exec node tests/peers/mongo/server.js --port 0 "
                      .. "--no-stdin-watch %s >%s 2>&1 & echo $!")
                     :format(args or "", log))
  local pid = p:read("l")
  p:close()
  spawned[#spawned + 1] = pid
  local port = helper.await_output(log, "port (%d+)", 30)
  return {
    port = tonumber(port), pid = pid, log = log,
    stop = function(signal)
      os.execute(("kill -%s %s 2>/dev/null"):format(signal or "KILL", pid))
    end,
  }
end

-- s with every punctuation character escaped, for a Lua pattern.
function helper.escape(s) return (s:gsub("%p", "%%%0")) end

-- The number of the first line of source containing text (plain).
function helper.line_of(source, text)
  local n = 0
  for line in (source .. "\n"):gmatch("([^\n]*)\n") do
    n = n + 1
    if line:find(text, 1, true) then return n end
  end
  error("no line with " .. text)
end

return helper
