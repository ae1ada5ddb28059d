-- examples/httpd.lua - an HTTP worker process. Several of them share one
-- port (SO_REUSEPORT: the kernel spreads the connections), so the service
-- uses every core. Started by examples/master.lua, a worker registers with
-- the master over MessagePack-RPC, reports its stats every second, and
-- exits when the master goes away.
--   evlua httpd [port]                     alone (default 8080)
--   curl localhost:8080/                   which worker answered
--   curl 'localhost:8080/slow?ms=500'      a slow request
-- The master passes EVLUA_MASTER (host:port of its control port),
-- EVLUA_HTTP_PORT and EVLUA_WORKER_ID in the environment. SIGTERM or
-- SIGINT: stop accepting, finish the requests in flight, exit 0.
local event = require "event"
local http = require "evlua.http"
local rpc = require "evlua.rpc"
local process = require "evlua.process"

local host = os.getenv("EVLUA_HTTP_HOST") or "127.0.0.1"
local port = math.tointeger(tonumber(arg and arg[1] or os.getenv("EVLUA_HTTP_PORT")))
  or 8080
local id = math.tointeger(tonumber(os.getenv("EVLUA_WORKER_ID"))) or 0
local master_addr = os.getenv("EVLUA_MASTER")
local GRACE = 10   -- seconds in-flight requests get at shutdown

local pid = process.pid()
local name = ("worker %d (pid %d)"):format(id, pid)
local served = 0

local routes = {}

function routes.hello(request)
  request:reply_header("Content-Type", "text/plain")
  request:reply(200, nil, ("hello from %s\n"):format(name))
end

function routes.slow(request)
  local ms = tonumber(request:parsed_url().query.ms) or 1000
  event.sleep(math.min(ms, 60000) / 1000)
  request:reply(200, nil, ("slow reply from %s after %d ms\n"):format(name, ms))
end

local server

function routes.stats(request)
  local s = server:stats()
  request:reply(200, nil, ("%s: %d requests, %d connections\n")
                :format(name, served, s.connections))
end

server = assert(http.listen(host, port, function(_, request)
  served = served + 1
  local path = request:parsed_url().path
  local route = routes[path:match("^/(%w+)$") or "hello"] or routes.hello
  route(request)
end, { reuseport = true }))

local master, stats_timer, signals

local function stop(why)
  if not server then return end
  local srv = server
  server = nil
  event.info(("%s: %s, finishing the requests in flight"):format(name, why))
  if stats_timer then stats_timer:cancel() end
  for _, s in ipairs(signals) do s:cancel() end
  local ok = srv:shutdown(GRACE)
  if master then master:close() end
  event.info(("%s: stopped (%s)"):format(name, ok and "all requests answered"
                                           or "requests cut after the grace time"))
  event.breakout()   -- exit status 0
end

signals = {
  event.signal("TERM", function() stop("SIGTERM") end),
  event.signal("INT", function() stop("SIGINT") end),
}

if master_addr then
  local mhost, mport = master_addr:match("^(.*):(%d+)$")
  local Master = rpc.channel:inherit()
  -- The master went away (killed, or stopped without us): do not linger
  -- as an orphan holding the port.
  function Master:disconnect() event.fork(stop, "master gone") end
  local ch, err = rpc.connect(mhost, math.tointeger(tonumber(mport)),
                              { class = Master, timeout = 5 })
  if not ch then
    event.error(("%s: cannot reach the master at %s: %s"):format(name, master_addr, err))
    return stop("no master")
  end
  master = ch
  assert(master:call("register", { id = id, pid = pid, port = server:port() }))
  stats_timer = event.timer(1, function()
    local s = server and server:stats()
    if s then
      master:send("stats", pid, { requests = served, connections = s.connections,
                                  inflight = s.inflight,
                                  memory_kb = math.floor(collectgarbage("count")) })
    end
  end)
end
event.info(("%s: serving http://%s:%d/"):format(name, host, server:port()))
