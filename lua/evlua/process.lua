-- evlua/process.lua - child processes: event.run_process, and
-- process.spawn for callers that need the process while it runs. The
-- bytes and the events are C (src/core/process.c: posix_spawn, pipes, libev's
-- child watcher); this module checks arguments and shapes the results.

local core = require "evlua.core"
local event = require "event"
local errors = require "evlua.errors"

local process = {}

-- Defaults; the opts of spawn/run_process override them per call.
process.defaults = {
  max_output = 16 * 1024 * 1024,   -- bytes of stdout + stderr kept
  kill_after = 5,                  -- s from SIGTERM to SIGKILL
}

local SHELL = "/bin/sh"

local OPTIONS = {
  cwd = "string", env = "table", clear_env = "boolean", stdin = "string",
  stdout = "string", stderr = "string", timeout = "number",
  kill_after = "number", max_output = "number", lines = "boolean",
  on_spawn = "function",
}
local STDOUT_MODES = { capture = true, inherit = true, null = true }
local STDERR_MODES = { capture = true, inherit = true, null = true, stdout = true }

local argerror, fail = errors.argerror, errors.fail

-- The code of each `why` process:result() can give (src/lua/lprocess.c).
local WHY_CODE = { timeout = "timeout", ["output too large"] = "too_large" }

-- The environment list ("NAME=value") for opts.env / opts.clear_env, or
-- nil to inherit ours unchanged.
local function environment(opts, fname, level)
  if not opts.env and not opts.clear_env then return nil end
  local vars = opts.clear_env and {} or core.environ()
  for k, v in pairs(opts.env or {}) do
    if type(k) ~= "string" or k == "" or k:find("=", 1, true) then
      argerror(2, fname, "env names must be strings without '='", level)
    end
    if v == false then
      vars[k] = nil
    elseif type(v) == "string" or type(v) == "number" then
      vars[k] = tostring(v)
    else
      argerror(2, fname, "env value for " .. k
               .. " must be a string or false", level)
    end
  end
  local list = {}
  for k, v in pairs(vars) do list[#list + 1] = k .. "=" .. v end
  return list
end

-- The spec for core.process_spawn and a label, or raise for the caller
-- `level` frames up.
local function make_spec(cmd, opts, fname, level)
  local spec, label = {}, nil
  if type(cmd) == "string" then
    spec.file, spec.argv, label = SHELL, { SHELL, "-c", cmd }, cmd
  elseif type(cmd) == "table" then
    local argv = {}
    for i = 1, #cmd do
      local a = cmd[i]
      if type(a) ~= "string" and type(a) ~= "number" then
        argerror(1, fname, "argv entries must be strings", level)
      end
      argv[i] = tostring(a)
    end
    if #argv == 0 then argerror(1, fname, "argv is empty", level) end
    spec.file, spec.argv, label = argv[1], argv, table.concat(argv, " ")
  else
    argerror(1, fname, "string or argv table expected, got " .. type(cmd),
             level)
  end
  if opts == nil then opts = {} end
  if type(opts) ~= "table" then
    argerror(2, fname, "table expected, got " .. type(opts), level)
  end
  for k, v in pairs(opts) do
    local want = OPTIONS[k]
    if not want then
      argerror(2, fname, "unknown option '" .. tostring(k) .. "'", level)
    end
    if type(v) ~= want then
      argerror(2, fname, k .. " must be a " .. want, level)
    end
  end
  if opts.stdout and not STDOUT_MODES[opts.stdout] then
    argerror(2, fname, "stdout must be \"capture\", \"inherit\" or \"null\"",
             level)
  end
  if opts.stderr and not STDERR_MODES[opts.stderr] then
    argerror(2, fname, "stderr must be \"inherit\", \"capture\", \"stdout\" "
             .. "or \"null\"", level)
  end
  for _, k in ipairs({ "timeout", "kill_after", "max_output" }) do
    local v = opts[k]
    if v ~= nil and not (v > 0 and v < math.huge) then
      argerror(2, fname, k .. " must be a positive number", level)
    end
  end
  spec.cwd = opts.cwd
  spec.env = environment(opts, fname, level + 1)
  spec.input = opts.stdin
  spec.stdout = opts.stdout or "capture"
  spec.stderr = opts.stderr or "inherit"
  spec.timeout = opts.timeout
  spec.kill_after = opts.kill_after or process.defaults.kill_after
  spec.max_output = opts.max_output or process.defaults.max_output
  return spec, label, opts
end

--[[ Process handles ========================================================]]

local Process = {}
Process.__index = Process
Process.__name = "evlua.process"

local function on_done(_, proc)
  event.wakeup(proc)
end

-- Lines of s: split at "\n"; a last line without "\n" counts too.
local function split_lines(s)
  local lines, n, pos = {}, 0, 1
  while true do
    local nl = s:find("\n", pos, true)
    if not nl then break end
    n = n + 1
    lines[n] = s:sub(pos, nl - 1)
    pos = nl + 1
  end
  if pos <= #s then lines[n + 1] = s:sub(pos) end
  return lines
end

local function spawn(cmd, opts, fname, level)
  local spec, label
  spec, label, opts = make_spec(cmd, opts, fname, level + 1)
  local proc = setmetatable({ cmd = label, _lines = opts.lines,
                              _stderr = spec.stderr == "capture" }, Process)
  local ud, err, code = core.process_spawn(spec, on_done, proc)
  if not ud then return nil, err, code end
  proc._ud, proc.pid = ud, ud:pid()
  return proc, nil, opts
end

-- process.spawn(cmd [, opts]) -> process | nil, err. The process runs on
-- its own; proc:wait() collects what event.run_process returns.
function process.spawn(cmd, opts)
  local proc, err, code = spawn(cmd, opts, "spawn", 2)
  if not proc then return nil, err, code end
  return proc
end

-- proc:running() -> true until the process has exited and its output is
-- complete
function Process:running()
  return self._ud:running()
end

-- Collect the result once done: output, status | nil, err.
function Process:_result()
  local r = self._r
  if not r then
    local out, err, code, sig, why = self._ud:result()
    r = { out = out, err = err, code = code, sig = sig, why = why }
    self._r = r
    self._ud:close()   -- frees the buffers now rather than at the next GC
  end
  if r.why then return fail(WHY_CODE[r.why], r.why) end
  local status = { code = r.code, signal = r.sig, pid = self.pid,
                   signal_name = r.sig and core.signal_name(r.sig) or nil,
                   stderr = self._stderr and r.err or nil }
  if self._lines then return split_lines(r.out), status end
  return r.out, status
end

-- proc:wait([timeout]) -> output, status | nil, err (see docs/process.md).
-- In a coroutine; one coroutine at a time may wait for a process.
function Process:wait(timeout)
  if self._r == nil and self._ud:running() then
    local ok, err, code = event.wait_as("process", self.cmd, self, timeout)
    if not ok and self._ud:running() then return nil, err, code end
  end
  return self:_result()
end

local function signal_number(sig, fname)
  local n = core.signal_number(sig == nil and "TERM" or sig)
  if not n then argerror(1, fname, "unknown signal " .. tostring(sig), 2) end
  return n
end

-- proc:kill([sig]) -> true | nil, "exited". sig: "TERM" (default),
-- "SIGKILL", 9... It goes to the process group: the child's children too.
function Process:kill(sig)
  local n = signal_number(sig, "kill")
  if self._r then return fail("exited") end
  return self._ud:signal(n)
end

-- proc:terminate(): SIGTERM now, SIGKILL kill_after seconds later if the
-- process is still there. Idempotent.
function Process:terminate()
  if not self._r then self._ud:terminate() end
end

function Process:__tostring()
  return ("process %d (%s)"):format(self.pid, self.cmd)
end

--[[ event.run_process ======================================================]]

-- Starting a process holds the loop until the child has called exec
-- (posix_spawn): a fraction of a millisecond on most machines, a few on
-- some virtual ones. So that a burst of starts from many coroutines does
-- not add up in one loop iteration, run_process lets the loop turn (timers,
-- I/O) once the starts of the current iteration have taken SPAWN_SLICE.
local SPAWN_SLICE = 0.005
local slice_iteration, slice_used = nil, 0

local function spawn_in_turn(cmd, opts)
  while true do
    local turn = core.iteration()
    if turn ~= slice_iteration then slice_iteration, slice_used = turn, 0 end
    if slice_used < SPAWN_SLICE then break end
    event.sleep(0)
  end
  -- the C timer of opts.timeout counts from the loop's clock: not stale
  event.now()
  local started = event.time()
  local proc, err, checked = spawn(cmd, opts, "run_process", 3)
  slice_used = slice_used + (event.time() - started)
  return proc, err, checked
end

-- event.run_process(cmd [, opts]) -> output, status | nil, err. In a
-- coroutine. Cancelling the coroutine terminates the process.
function process.run(cmd, opts)
  if not event.running() then errors.need_coroutine("event.run_process") end
  local proc, err, third = spawn_in_turn(cmd, opts)
  if not proc then return nil, err, third end   -- third: the code
  opts = third                                  -- or the checked opts
  if opts.on_spawn then
    local ok, e = pcall(opts.on_spawn, proc)
    if not ok then   -- nobody will wait for it: do not leave it running
      proc:terminate()
      error(e, 0)
    end
  end
  local out, status, code = proc:wait()   -- or nil, err, code
  if out == nil and proc:running() then proc:terminate() end
  return out, status, code
end

-- process.pid() -> the pid of this process
process.pid = core.getpid
-- process.signal_number(name | number) -> number | nil
process.signal_number = core.signal_number
-- process.signal_name(number) -> "TERM" | nil
process.signal_name = core.signal_name

return process
