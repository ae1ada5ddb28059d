-- event.lua - the evlua event module: coroutines, waiting, timers, time
-- and logging. Every blocking call parks the running coroutine on one wait
-- primitive (park) with an optional deadline; the loop wakes it.
--
-- Scheduling rules (docs/event.md explains them to users):
--  * event.fork queues a task; queued tasks run when the loop next drains
--    its ready queue (before it polls for I/O), never inside the caller.
--  * wakeups and cancellations queue the woken task the same way, so Lua
--    code never runs nested inside other Lua code (no re-entrancy).
--  * timer deadlines resume their coroutine straight from the loop.

local core = require "evlua.core"
local errors = require "evlua.errors"

local co_create, co_resume, co_yield, co_running, co_status =
  coroutine.create, coroutine.resume, coroutine.yield, coroutine.running,
  coroutine.status
local pack, unpack = table.pack, table.unpack
local traceback, getinfo = debug.traceback, debug.getinfo
local type, select, tostring, error, setmetatable, pairs, getmetatable =
  type, select, tostring, error, setmetatable, pairs, getmetatable

local event = {}

--[[ Tasks ==================================================================]]
-- A task is one run of a function in a coroutine. Its record (the handle)
-- keeps its fields in the array part, sized once by the constructor: 7
-- slots of 16 bytes and no hash part, where named fields cost a 24-byte
-- node each, rounded up to a power of two (every idle connection served
-- by a coroutine holds one: issue 16). Slots:
--   STATE: "ready" (queued) | "running" | "waiting" (parked) | "dead"
--   CO: the coroutine (false until started and once dead); FN, ID
--   CANCEL: the next wait fails with nil, "cancelled"
--   WHAT, ON: what a parked task waits for ("sleep", 2.5), ("wait",
--     token)...; stale (unread) while it runs
-- Once dead, the last three hold the join results instead: RN their count,
-- R1 and R2 the first two, or R1 all of them packed when more.
-- The values a task resumes with (its arguments, a wakeup's values) are
-- not in the record: they travel with its entry in the ready queue.
-- Rarely used fields are named: label, main, joiners, _on_failure.
-- Coroutines are pooled: a finished task's coroutine runs the next task.

local STATE <const>, CO <const>, FN <const>, ID <const> = 1, 2, 3, 4
local CANCEL <const>, WHAT <const>, ON <const> = 5, 6, 7
local RN <const>, R1 <const>, R2 <const> = 5, 6, 7

local Task = {}
Task.__index = Task

-- live: every task not yet dead, keyed by its coroutine once started
-- (event.running's lookup), by itself before.
local live, nlive, last_id = {}, 0, 0
local deadline_of = setmetatable({}, { __mode = "k" }) -- coroutine -> timer
local pool, npool = {}, 0
local POOL_MAX = 256

-- The ready queue (two arrays, swapped by drain): ENTRY slots per queued
-- task: the task and the values it resumes with, as n, a, b, c (see
-- values_of).
local ready, nready, spare = {}, 0, {}
local ENTRY <const> = 5

local function push_ready(task, n, a, b, c)
  local k = nready * ENTRY
  nready = nready + 1
  ready[k + 1], ready[k + 2], ready[k + 3], ready[k + 4], ready[k + 5] =
    task, n, a, b, c
  if nready == 1 then core.set_ready(true) end
end

-- Values as n, a, b, c: their count (false: none), up to three in a, b, c
-- (false when unused), more packed in a.
local function values_of(...)
  local n = select("#", ...)
  if n == 0 then return false, false, false, false end
  if n == 1 then return 1, (...), false, false end
  if n == 2 then
    local a, b = ...
    return 2, a, b, false
  end
  if n == 3 then return 3, ... end
  return n, pack(...), false, false
end

-- The values of n, a, b, c again.
local function values(n, a, b, c)
  if not n then return end
  if n == 1 then return a
  elseif n == 2 then return a, b
  elseif n == 3 then return a, b, c
  elseif n > 3 then return unpack(a, 1, n) end
end

local task_body   -- the body of every task coroutine, below

local ended   -- below: what follows each resume of a task's coroutine

-- Start or resume a queued task, now, with the values n, a, b, c (see
-- values_of). A direct task (event._fork_direct) gets a coroutine of its
-- own on the task's function; the others take one from the pool, on
-- task_body.
local function run(task, n, a, b, c)
  task[STATE] = "running"
  local co = task[CO]
  if co then return ended(task, co, co_resume(co, values(n, a, b, c))) end
  if co == nil then   -- direct: nil, not false, until started
    co = co_create(task[FN])
    task[CO] = co
    live[task], live[co] = nil, task
    return ended(task, co, co_resume(co, values(n, a, b, c)))
  end
  if npool > 0 then
    co, pool[npool], npool = pool[npool], nil, npool - 1
  else
    co = co_create(task_body)
  end
  task[CO] = co
  live[task], live[co] = nil, task
  return ended(task, co, co_resume(co, task, values(n, a, b, c)))
end

-- Run the tasks queued so far; tasks queued meanwhile wait for the next
-- loop iteration, so sleep(0) lets I/O in. (A cancelled task that never
-- started is dead by now: its entry is skipped.)
local function drain()
  local q, n = ready, nready
  ready, nready, spare = spare, 0, q
  for k = 0, (n - 1) * ENTRY, ENTRY do
    local task, vn, a, b, c = q[k + 1], q[k + 2], q[k + 3], q[k + 4], q[k + 5]
    q[k + 1], q[k + 2], q[k + 3], q[k + 4], q[k + 5] = nil, nil, nil, nil, nil
    if task[STATE] == "ready" then run(task, vn, a, b, c) end
  end
  if nready == 0 then core.set_ready(false) end
end
core.set_drain(drain)

-- A new task, not queued (its arguments go with its ready-queue entry).
-- co is false for a pooled task, nil for a direct one (see run).
local function new_task(co, fn)
  if type(fn) ~= "function" then
    errors.argerror(1, "fork", "function expected, got " .. type(fn), 2)
  end
  last_id = last_id + 1
  local task = { "ready", co, fn, last_id, false, false, false }
  setmetatable(task, Task)
  live[task] = task
  nlive = nlive + 1
  return task
end

-- A deadline passed: resume its coroutine's task with nil, "timeout",
-- here rather than from C, so that a direct task that ends is settled.
local function on_deadline(_, co, ...)
  local task = live[co]
  if task and co_status(co) == "suspended" then
    task[STATE] = "running"
    return ended(task, co, co_resume(co, ...))
  end
end

-- Start the running task's deadline: it resumes the task with nil,
-- "timeout" unless stopped first.
local function start_deadline(task, timeout)
  local co = task[CO]
  local deadline = deadline_of[co]
  if not deadline then
    deadline = core.timer(on_deadline, co)
    deadline_of[co] = deadline
  end
  deadline:start(timeout)
end

local function stop_deadline(co)
  local deadline = deadline_of[co]
  if deadline then deadline:stop() end
end

-- Queue a parked task to resume with the given values. Returns false if
-- it is not parked (already woken, or dead).
local function wake(task, ...)
  if task[STATE] ~= "waiting" then return false end
  task[STATE] = "ready"
  local deadline = deadline_of[task[CO]]
  if deadline then deadline:stop() end
  push_ready(task, values_of(...))
  return true
end

-- A parked task runs again: what and on stay (stale, unread while running).
local function resumed(task, ...)
  task[STATE] = "running"
  if task[CANCEL] then
    task[CANCEL] = false
    return nil, "cancelled", "cancelled"
  end
  return ...
end

-- Park the running task until something wakes it; with a timeout, the
-- deadline resumes it with nil, "timeout". Returns the wakeup's values.
local function park(task, what, on, timeout)
  if task[CANCEL] then
    task[CANCEL] = false
    return nil, "cancelled", "cancelled"
  end
  task[STATE], task[WHAT], task[ON] = "waiting", what, on
  if timeout then start_deadline(task, timeout) end
  return resumed(task, co_yield())
end

-- The task running now; raises the "must run in a coroutine" error for
-- the caller of `fname` otherwise.
local function current(fname)
  local task = live[co_running()]
  if task then return task end
  errors.need_coroutine(fname, 2)
end

local function check_duration(value, fname, argn)
  if type(value) ~= "number" or not (value >= 0) or value == math.huge then
    errors.argerror(argn, fname, "non-negative number expected, got "
                    .. tostring(value), 2)
  end
  return value
end

function Task:name()
  if self.label then return self.label end
  local info = getinfo(self[FN], "S")
  return ("coroutine #%d (%s:%d)"):format(self[ID], info.short_src,
                                          info.linedefined)
end

function Task:__tostring()
  return self:name()
end

-- event.traceback(msg [, level]) -> msg with a traceback of the running
-- coroutine, without the scheduler's frames below the task's function.
-- Works as an xpcall message handler; non-string errors are described.
-- An error value as a message: non-strings are described.
local function describe(msg)
  if type(msg) ~= "string" then
    local mt = getmetatable(msg)
    if mt and mt.__tostring then return tostring(msg) end
    return "(error object is a " .. type(msg) .. " value)"
  end
  return msg
end

function event.traceback(msg, level)
  local tb = traceback(describe(msg), (level or 1) + 1)
  local cut = tb:find("\n\t[C]: in function 'xpcall'", 1, true)
  if cut then
    tb = tb:sub(1, cut - 1):gsub("\n\t%(%.%.%.tail calls%.%.%.%)$", "")
  end
  return tb
end

-- Capture an error with its traceback inside the failing coroutine.
local function on_error(err)
  return { err = err, traceback = event.traceback(err, 2) }
end

-- A dead task's join results (RN, R1, R2: see the slots).
local function results(task)
  local n = task[RN]
  if n == 1 then return task[R1]
  elseif n == 2 then return task[R1], task[R2] end
  return unpack(task[R1], 1, n)
end

-- Mark a task dead with its join results (n values: a, b or a packed)
-- and wake its joiners.
local function settle(task, n, a, b)
  live[task[CO] or task] = nil
  nlive = nlive - 1
  task[STATE], task[CO] = "dead", false
  task[RN], task[R1], task[R2] = n, a, b
  local joiners = task.joiners
  if joiners then
    task.joiners = nil
    for i = 1, #joiners do wake(joiners[i], results(task)) end
  end
end

local main_failed   -- set by event._start_main: reports the main chunk's error

-- Settle a task with what its xpcall returned; report an error.
-- A task with an _on_failure(traceback) function (evlua.http's workers)
-- reports its own error; the function runs first, in the task.
local function finish(task, ok, ...)
  if ok then
    local n = select("#", ...)
    if n == 0 then return settle(task, 1, true, false) end
    if n == 1 then return settle(task, 2, true, (...)) end
    return settle(task, n + 1, pack(true, ...), false)
  end
  local e = ...
  local on_failure = task._on_failure
  if on_failure then on_failure(e.traceback) end
  settle(task, 2, false, e.err)
  if task.main then
    main_failed(e.traceback)
  elseif not on_failure then
    core.log("error", task:name() .. " failed: " .. e.traceback)
  end
end

-- The error of a direct task (its coroutine is dead, its stack still
-- there), as on_error gives a pooled task's: the traceback starts where
-- the error was raised and ends at the task's function.
local function direct_error(co, err)
  local tb = traceback(co, describe(err)):gsub("\n\t%(%.%.%.tail calls%.%.%.%)$", "")
  return { err = err, traceback = tb }
end

-- After each resume of task's coroutine co with its results: a direct task
-- that returned or raised is settled (a pooled one settles itself, in
-- task_body); an error escaping task_body is a bug of the scheduler's.
ended = function(task, co, ok, ...)
  if ok then
    -- a yield leaves the task parked or queued, rarely running (the
    -- debugger's or an interrupt's yield): then the coroutine is alive
    if task[STATE] ~= "running" or co_status(co) ~= "dead" then return end
    stop_deadline(co)
    return finish(task, true, ...)
  end
  if task[STATE] == "dead" then
    core.log("error", "evlua scheduler: " .. traceback(co, tostring(...)))
    return
  end
  stop_deadline(co)
  return finish(task, false, direct_error(co, ...))
end

-- The body of every task coroutine: run(task) starts it with the task and
-- its arguments; once the task is done the coroutine waits in the pool
-- for the next one (a tail call: the stack does not grow).
task_body = function(task, ...)
  finish(task, xpcall(task[FN], on_error, ...))
  local co = co_running()
  stop_deadline(co)
  if npool >= POOL_MAX then return end
  npool = npool + 1
  pool[npool] = co
  -- drop the finished task's references while parked in the pool
  task, co = nil, nil  -- luacheck: ignore 311
  return task_body(co_yield())       -- the next task, from run()
end

--[[ Task handles ===========================================================]]

-- handle:join([timeout]) -> true, results... | false, err | nil, "timeout"
function Task:join(timeout)
  local me = current("join")
  if timeout ~= nil then check_duration(timeout, "join", 1) end
  if self[STATE] == "dead" then return results(self) end
  if self == me then error("a coroutine cannot join itself", 2) end
  local joiners = self.joiners
  if not joiners then
    joiners = {}
    self.joiners = joiners
  end
  joiners[#joiners + 1] = me
  return self:_unjoin(me, park(me, "join", self, timeout))
end

function Task:_unjoin(me, ...)
  local joiners = self.joiners
  if joiners then   -- woken by timeout or cancel: stop waiting for self
    for i = #joiners, 1, -1 do
      if joiners[i] == me then table.remove(joiners, i) end
    end
  end
  return ...
end

-- handle:cancel() -> true if the task was still alive.
-- A parked task resumes now with nil, "cancelled"; a task that has not
-- started never runs; a running or already woken task gets nil,
-- "cancelled" from its next wait, and so does one stopped at a debugger
-- breakpoint (parked mid-line, no wait to fail) once the debugger
-- resumes it.
function Task:cancel()
  local state = self[STATE]
  if state == "dead" then return false end
  if state == "waiting" and self[WHAT] ~= "debugger" then
    wake(self, nil, "cancelled", "cancelled")
  elseif state == "ready" and not self[CO] then
    settle(self, 2, false, "cancelled")
  else
    self[CANCEL] = true
  end
  return true
end

function Task:status()
  local state = self[STATE]
  if state == "running" or state == "dead" or not self[WHAT] then
    return state
  end
  return state, self[WHAT], self[ON]
end

-- handle:set_name(label) -> handle; label replaces the default name that
-- handle:name() returns.
function Task:set_name(label)
  self.label = label
  return self
end

--[[ Coroutines =============================================================]]

-- event.fork(fn, ...) -> handle; fn(...) runs in a new coroutine on the
-- next loop turn.
function event.fork(fn, ...)
  local task = new_task(false, fn)
  push_ready(task, values_of(...))
  return task
end

-- event._fork_direct(fn, ...): event.fork for a task whose coroutine runs
-- fn itself, for tasks that may park for long (evlua.net's accept
-- callbacks). Its parked coroutine is smaller: no task_body and xpcall
-- frames under fn (two CallInfos), and the Lua stack under the yield stays
-- under the 20 free slots a C function's frame needs, so it keeps its
-- initial 40 slots instead of doubling to 80 (issue 16: 1.3 KiB less per
-- idle connection). The cost: no coroutine pool, and every resume of it
-- must go through this module (run, _resume_now, deadlines), which settles
-- it when it ends: so never for tasks that other modules resume
-- themselves (evlua.http's workers).
function event._fork_direct(fn, ...)
  local task = new_task(nil, fn)
  push_ready(task, values_of(...))
  return task
end

-- Run fn(...) in a new task right now (from a loop callback).
local function spawn_now(fn, ...)
  run(new_task(false, fn), values_of(...))
end

-- event.running() -> the running task's handle, or nil outside a task.
function event.running()
  return live[co_running()]
end

-- event.sleep(sec) -> true | nil, "cancelled"
function event.sleep(sec)
  local task = current("event.sleep")
  check_duration(sec, "sleep", 1)
  if sec == 0 then  -- yield: run again on the next loop iteration
    if task[CANCEL] then
      task[CANCEL] = false
      return nil, "cancelled", "cancelled"
    end
    task[STATE], task[WHAT], task[ON] = "ready", "sleep", 0
    push_ready(task, false, false, false, false)
    co_yield()
    task[STATE] = "running"
    if task[CANCEL] then
      task[CANCEL] = false
      return nil, "cancelled", "cancelled"
    end
    return true
  end
  local ok, err, code = park(task, "sleep", sec, sec)
  if code == "timeout" then return true end
  return ok, err, code
end

--[[ wait / wakeup ==========================================================]]

local waiters = {}   -- token -> parked task

local function unwait(token, task, ...)
  if waiters[token] == task then waiters[token] = nil end
  task[STATE] = "running"
  if task[CANCEL] then
    task[CANCEL] = false
    return nil, "cancelled", "cancelled"
  end
  return ...
end

-- event.wait(token [, timeout]) -> the values given to wakeup (true when
-- none) | nil, "timeout" | nil, "cancelled". One waiter per token.
function event.wait(token, timeout)
  return event.wait_as("wait", token, token, timeout)
end

-- event.wait_as(what, on, token [, timeout]): event.wait for modules,
-- which describe the wait for event.tasks ("read", channel...). It parks
-- inline (no frame of park's under the yield: a parked coroutine's stack
-- is smaller).
function event.wait_as(what, on, token, timeout)
  local task = current("event.wait")
  if token == nil or token ~= token then
    errors.argerror(1, "wait", "token expected, got " .. tostring(token))
  end
  if timeout ~= nil then check_duration(timeout, "wait", 2) end
  if waiters[token] then
    errors.argerror(1, "wait", "token already has a waiter")
  end
  if task[CANCEL] then
    task[CANCEL] = false
    return nil, "cancelled", "cancelled"
  end
  waiters[token] = task
  task[STATE], task[WHAT], task[ON] = "waiting", what, on
  if timeout then start_deadline(task, timeout) end
  return unwait(token, task, co_yield())
end

-- event.wakeup(token, ...) -> true if a coroutine waited on token (it
-- resumes on this loop iteration with ...), false otherwise.
function event.wakeup(token, ...)
  if token == nil then return false end
  local task = waiters[token]
  if task == nil then return false end
  waiters[token] = nil
  if select("#", ...) == 0 then return wake(task, true) end
  return wake(task, ...)
end

-- Shortcuts for modules that park their own tasks (evlua.http's request
-- path, evlua.channel's waiting reads): no token, no waiters entry, and
-- the yield can be made from the module's own frame.
-- event._park(task, what, on [, timeout]) parks task, the running one,
-- until _wake(task) or _resume_now(task) (or a cancel: then it returns
-- nil, "cancelled"; or the timeout: nil, "timeout").
-- A request that arrives in a channel's data event resumes its worker
-- right away (_resume_now) instead of on the next drain of the ready
-- queue. Inside a task the caller queues it instead (_wake, like
-- event.wakeup), so Lua code still never runs nested inside another task.
-- (evlua.rpc keeps the ready queue: its one worker drains a whole batch of
-- requests per wakeup, which pipelined calls need.)
event._park = park

-- event._wake(task, ...) queues a parked task to resume with ... (like
-- event.wakeup); event._resume_now(task, ...) resumes it at once with ...,
-- for loop callbacks only (never from inside a task). Both return false if
-- it is not parked.
event._wake = wake

function event._resume_now(task, ...)
  if task[STATE] ~= "waiting" then return false end
  task[STATE] = "running"   -- run(task), less what _park never sets
  local co = task[CO]
  stop_deadline(co)
  ended(task, co, co_resume(co, ...))
  return true
end

-- For evlua.channel, which parks inline: the slot numbers of a task
-- record and the deadline starter.
event._slots = { STATE = STATE, CO = CO, CANCEL = CANCEL, WHAT = WHAT,
                 ON = ON, ID = ID }
-- For evlua.profiler's wait sampler: the live tasks (values), not copied.
function event._live_tasks() return live end
event._start_deadline = start_deadline

--[[ Timers =================================================================]]

local function fire(timer, fn)
  spawn_now(fn, timer)
end

local function check_callback(fn, fname)
  if type(fn) ~= "function" then
    errors.argerror(2, fname, "function expected, got " .. type(fn), 2)
  end
end

-- event.timer(sec, fn) -> timer; fn(timer) runs every sec seconds, each
-- time in a new coroutine, until timer:cancel().
function event.timer(sec, fn)
  check_duration(sec, "timer", 1)
  if sec == 0 then
    errors.argerror(1, "timer", "positive number expected, got 0")
  end
  check_callback(fn, "timer")
  return core.timer(fire, fn):start(sec, sec)
end

-- event.timeout(sec, fn) -> timer; fn(timer) runs once after sec seconds.
function event.timeout(sec, fn)
  check_duration(sec, "timeout", 1)
  check_callback(fn, "timeout")
  return core.timer(fire, fn):start(sec)
end

--[[ Signals ================================================================]]

local function on_signal(_, fn, signum)
  spawn_now(fn, core.signal_name(signum) or signum)
end

-- event.signal(name, fn) -> handle; fn(name) runs in a new coroutine each
-- time the signal arrives ("TERM", "SIGINT", 1...), until handle:cancel().
-- While handled, the signal loses its default action.
function event.signal(name, fn)
  local signum = core.signal_number(name)
  if not signum then
    errors.argerror(1, "signal", "unknown signal " .. tostring(name))
  end
  check_callback(fn, "signal")
  local ok, watcher = pcall(core.signal, signum, on_signal, fn)
  if not ok then
    errors.argerror(1, "signal", tostring(name)
                    .. " is reserved by the runtime")
  end
  return watcher:start()
end

--[[ Loop and time ==========================================================]]

event.now = core.now
event.time = core.time
event.update_now = core.update_now
event.breakout = core.breakout

--[[ Logging ================================================================]]

local function log(level, ...)
  local n = select("#", ...)
  local msg
  if n == 1 then
    msg = tostring((...))
  else
    local parts = pack(...)
    for i = 1, n do parts[i] = tostring(parts[i]) end
    msg = table.concat(parts, " ", 1, n)
  end
  core.log(level, msg)
end

function event.error(...) log("error", ...) end
function event.warn(...) log("warn", ...) end
function event.info(...) log("info", ...) end
function event.debug(...) log("debug", ...) end

-- event.log_file(path | nil) -> true | nil, err (nil: back to stderr)
event.log_file = core.log_open
-- event.log_level([name]) -> previous level ("error", "warn", "info", "debug")
event.log_level = core.log_level

--[[ Channels and names =====================================================]]
-- Loaded on first use: they need this module themselves.

function event.listen(...) return require("evlua.net").listen(...) end
function event.connect(...) return require("evlua.net").connect(...) end
function event.bind(...) return require("evlua.net").bind(...) end
-- event.dns(host [, opts]) -> list of addresses | nil, err
function event.dns(...) return require("evlua.dns").resolve(...) end
-- event.run_process(cmd [, opts]) -> output, status | nil, err
function event.run_process(...) return require("evlua.process").run(...) end

--[[ Introspection ==========================================================]]

-- event.tasks() -> list of { id, name, state, what, on, traceback } for
-- every live coroutine, by id.
function event.tasks()
  local list = {}
  for _, task in pairs(live) do
    local state, what, on = task:status()
    local co = task[CO]
    list[#list + 1] = {
      id = task[ID], name = task:name(), state = state,
      what = what, on = on, handle = task,
      traceback = co and traceback(co) or nil,
    }
  end
  table.sort(list, function(a, b) return a.id < b.id end)
  return list
end

-- event.ps() -> a text table of the live coroutines with their tracebacks
function event.ps()
  local out = {}
  for _, t in ipairs(event.tasks()) do
    local waiting = ""
    if t.what then waiting = " " .. t.what .. " " .. tostring(t.on) end
    out[#out + 1] = ("%s [%s%s]"):format(t.name, t.state, waiting)
    if t.traceback then
      out[#out + 1] = "  " .. t.traceback:gsub("\n", "\n  ")
    end
  end
  return table.concat(out, "\n")
end

-- event.stats() -> { tasks, ready, timers, fdwatches, memory_kb, uptime }
function event.stats()
  local s = core.stats()
  s.tasks, s.ready = nlive, nready
  s.memory_kb = collectgarbage("count")
  s.pooled = npool
  return s
end

--[[ Start-up (used by the evlua launcher) ==================================]]

-- event._start_main(fn, on_error, ...): run the main chunk as a task;
-- on_error(traceback) handles an error escaping it.
function event._start_main(fn, failed, ...)
  main_failed = failed
  local task = event.fork(fn, ...)
  task.main = true
  task.label = "main chunk"
  return task
end

return event
