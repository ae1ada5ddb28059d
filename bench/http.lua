-- bench/http.lua - the hello-world HTTP server wrk measures in
-- bench/run.sh (beside nginx + its Lua module and plain nginx), and two
-- helpers for the script:
--   server [PORT [TOOL]]  listen on 127.0.0.1:PORT (0: a free port), print
--                   "port N", answer every request "hello\n" until killed;
--                   TOOL (bench/tools.sh): "debugger" (loaded, remote mode,
--                   one breakpoint in bench/idle_module.lua, which no request runs) or
--                   "profiler" (sampling at 1 kHz)
--   free-port       print a TCP port nobody listens on now
--   await PORT      exit 0 once 127.0.0.1:PORT accepts a connection, 1
--                   after 10 s
local event = require "event"
local http = require "evlua.http"

io.stdout:setvbuf("line")   -- run.sh reads our lines through a pipe

local mode, port, tool = arg[1], math.tointeger(tonumber(arg[2])) or 0, arg[3]

-- The tools whose cost bench/tools.sh measures.
local function start_tool()
  if tool == "debugger" then
    local engine = require "evlua.debug_engine"
    engine.set_mode("remote")
    package.path = "bench/?.lua;" .. package.path
    require "idle_module"
    local bp = engine.set_breakpoint({ file = "idle_module.lua", line = 8 })
    assert(bp.verified ~= false, bp.message)
  elseif tool == "profiler" then
    assert(require("evlua.profiler").start({ hz = 1000 }))
  elseif tool ~= nil then
    error("unknown tool '" .. tool .. "'")
  end
end

if mode == "server" then
  start_tool()
  local server = assert(http.listen("127.0.0.1", port, function(_, request)
    request:reply(200, "OK", "hello\n")
  end, { backlog = 4096 }))
  print("port " .. server:port())
elseif mode == "free-port" then
  local l = assert(event.listen("127.0.0.1", 0, function() end))
  print(l:port())
  l:close()
elseif mode == "await" then
  local deadline = event.now() + 10
  while event.now() < deadline do
    local ch = event.connect("127.0.0.1", port, nil, 1)
    if ch then
      ch:close()
      os.exit(0)
    end
    event.sleep(0.02)
  end
  os.exit(1)
else
  io.stderr:write("usage: evlua bench/http.lua server [PORT [TOOL]] | free-port | await PORT\n")
  os.exit(2)
end
