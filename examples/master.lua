-- examples/master.lua - a master process supervising HTTP workers.
--   evlua master [http_port [control_port [workers]]]
--   (or EVLUA_HTTP_PORT, EVLUA_CONTROL_PORT, EVLUA_WORKERS; defaults
--   8080, 8081 and one worker per core)
-- The master listens for its workers on the control port (MessagePack-RPC
-- on 127.0.0.1), then runs each worker (examples/httpd.lua) with
-- event.run_process in a coroutine of its own, restarting a worker that
-- exits, after a short backoff. The workers share the HTTP port
-- (SO_REUSEPORT), register with the master and report their stats to it.
-- SIGTERM or SIGINT: the workers finish their requests and exit, then the
-- master does (status 0). A second signal kills the workers at once.
--   curl localhost:8080/               (answered by one of the workers)
--   kill -9 <a worker's pid>           (the master starts another)
local event = require "event"
local rpc = require "evlua.rpc"

local function setting(argn, env, default)
  local v = arg and arg[argn] or os.getenv(env)
  return math.tointeger(tonumber(v)) or default
end

local function cores()
  local out = event.run_process({ "nproc" }, { stderr = "null" })
  return math.tointeger(tonumber(out or "")) or 1
end

local http_port = setting(1, "EVLUA_HTTP_PORT", 8080)
local control_port = setting(2, "EVLUA_CONTROL_PORT", 8081)
local nworkers = setting(3, "EVLUA_WORKERS", nil) or cores()
local MIN_BACKOFF, MAX_BACKOFF = 0.5, 10   -- seconds before a restart
local STABLE = 10         -- a worker up this long resets the backoff
local STOP_GRACE = 15     -- seconds workers get to stop before SIGKILL

-- The evlua binary running us (arg's lowest index) runs the workers too;
-- their script sits beside this one.
local function evlua_binary()
  local i = -1
  while arg and arg[i - 1] do i = i - 1 end
  return arg and arg[i] or "evlua"
end
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local worker_cmd = { evlua_binary(), here .. "httpd.lua" }

--[[ The control port: workers register and report =========================]]

local registered = {}   -- pid -> { id, pid, port, since, stats }

local WorkerChannel = rpc.channel:inherit()

function WorkerChannel:disconnect()
  if self.worker_pid then registered[self.worker_pid] = nil end
end

local handlers = {}

function handlers.register(ch, info)
  ch.worker_pid = info.pid
  registered[info.pid] = { id = info.id, pid = info.pid, port = info.port,
                           since = event.now(), stats = {} }
  event.info(("master: worker %d (pid %d) registered"):format(info.id, info.pid))
  return true
end

function handlers.stats(_, pid, stats)
  local w = registered[pid]
  if w then w.stats = stats end
end

-- workers() -> list of { id, pid, port, uptime, requests, connections }
function handlers.workers()
  local list = {}
  for _, w in pairs(registered) do
    list[#list + 1] = { id = w.id, pid = w.pid, port = w.port,
                        uptime = event.now() - w.since,
                        requests = w.stats.requests or 0,
                        connections = w.stats.connections or 0 }
  end
  table.sort(list, function(a, b) return a.id < b.id end)
  return list
end

local control, err = rpc.listen("127.0.0.1", control_port, handlers,
                                WorkerChannel)
if not control then
  event.error(("master: control port %d: %s"):format(control_port, err))
  os.exit(1)
end
event.info(("master: control port %d, %d workers on http port %d")
           :format(control:port(), nworkers, http_port))

--[[ Supervision ============================================================]]

local stopping = false
local running = {}       -- worker slot -> process while it runs
local resting = {}       -- worker slot -> true while it waits to restart

local function describe(out, status)
  if out == nil then return "could not run: " .. tostring(status) end
  if status.signal then return "was killed by SIG" .. (status.signal_name or status.signal) end
  return "exited with code " .. status.code
end

local function supervise(slot)
  local backoff = MIN_BACKOFF
  local env = { EVLUA_MASTER = "127.0.0.1:" .. control:port(),
                EVLUA_HTTP_PORT = tostring(http_port),
                EVLUA_WORKER_ID = tostring(slot) }
  while not stopping do
    local started, pid = event.now(), nil
    local out, status = event.run_process(worker_cmd, {
      env = env, stdout = "inherit",
      on_spawn = function(proc)
        running[slot], pid = proc, proc.pid
      end,
    })
    running[slot] = nil
    local what = ("worker %d (pid %s) %s"):format(slot, tostring(pid),
                                                  describe(out, status))
    if stopping then
      event.info("master: " .. what)
      break
    end
    if event.now() - started >= STABLE then backoff = MIN_BACKOFF end
    event.warn(("master: %s, restarting in %gs"):format(what, backoff))
    resting[slot] = true
    event.sleep(backoff)   -- cancelled when the master stops
    resting[slot] = nil
    backoff = math.min(backoff * 2, MAX_BACKOFF)
  end
end

local supervisors = {}
for slot = 1, nworkers do
  supervisors[slot] = event.fork(supervise, slot):set_name("worker " .. slot)
end

local function stop(signame)
  if stopping then   -- a second signal: no more waiting
    event.warn("master: " .. signame .. " again, killing the workers")
    for _, proc in pairs(running) do proc:kill("KILL") end
    return
  end
  stopping = true
  event.info(("master: %s, stopping the workers"):format(signame))
  for _, proc in pairs(running) do proc:kill("TERM") end
  for slot in pairs(resting) do supervisors[slot]:cancel() end
  local deadline = event.now() + STOP_GRACE
  for _, task in ipairs(supervisors) do
    if not task:join(math.max(0.01, deadline - event.now())) then
      for _, proc in pairs(running) do proc:kill("KILL") end
      task:join()
    end
  end
  control:close()
  event.info("master: stopped")
  event.breakout()
end

event.signal("TERM", function() stop("SIGTERM") end)
event.signal("INT", function() stop("SIGINT") end)
