-- evlua/console.lua - a console port into a running process: one command
-- per line, each answered with a framed reply (docs/console.md):
--   "ok <n>\n" or "error <n>\n", then exactly n bytes of text.
-- The client is `evlua console [HOST:]PORT` (evlua/console_client.lua).

local core = require "evlua.core"
local event = require "event"
local import = require "evlua.import"
local errors = require "evlua.errors"
local first_word = require("evlua.text").word
local argerror, fail = errors.argerror, errors.fail

local console = {}

console.DEFAULT_HOST = "127.0.0.1"
console.EVAL_TIMEOUT = 10       -- seconds an eval may take
console.MAX_LINE = 64 * 1024    -- longest command line
console.MAX_SESSIONS = 16       -- connections served at once
console.AUTH_DELAY = 1          -- seconds before answering a wrong password
console.MAX_AUTH_TRIES = 3      -- wrong passwords before the connection closes
console.AUTH_TIMEOUT = 10       -- seconds a connection has to authenticate
console.DEBUG_WAIT = 30         -- seconds a debugger's continue waits for a stop

--[[ Commands ===============================================================]]
-- console.commands[name] = { usage =, help =, run = function(session, args) }
-- run returns the reply text, or raises / returns nil, err, code for an
-- error reply (the reply carries err; code is for Lua callers of run).
-- A process may add its own commands to this table.

local commands = {}
console.commands = commands

local function kib(bytes) return ("%.1f KiB"):format(bytes / 1024) end

-- Open streams and listeners are anchored in the registry while open.
local function count_objects(metatable_name)
  local reg = debug.getregistry()
  local mt = reg[metatable_name]
  local n = 0
  if mt == nil then return 0 end
  for _, v in pairs(reg) do
    if type(v) == "userdata" and debug.getmetatable(v) == mt then n = n + 1 end
  end
  return n
end

local function pid()
  local f = io.open("/proc/self/stat")
  if not f then return "?" end
  local stat = f:read("l")
  f:close()
  return stat:match("^%d+") or "?"
end

local function format_uptime(s)
  local d, h, m = s // 86400, s % 86400 // 3600, s % 3600 // 60
  local text = ("%02d:%02d:%06.3f"):format(h, m, s % 60)
  if d > 0 then text = ("%dd "):format(d) .. text end
  return text
end

commands.ping = {
  usage = "ping", help = "check that the process answers",
  run = function() return "pong" end,
}

commands.mem = {
  usage = "mem", help = "memory: the Lua heap and all of the C heap (malloc, Lua included)",
  run = function()
    return ("lua heap: %s\nc heap: %s"):format(kib(collectgarbage("count") * 1024),
                                               kib(core.c_heap()))
  end,
}

commands.gc = {
  usage = "gc", help = "run a full garbage collection",
  run = function()
    local before = collectgarbage("count") * 1024
    collectgarbage("collect")
    local after = collectgarbage("count") * 1024
    return ("lua heap: %s -> %s (freed %s)"):format(kib(before), kib(after),
                                                    kib(before - after))
  end,
}

commands.stats = {
  usage = "stats", help = "connections, coroutines, timers, uptime",
  run = function()
    local s = event.stats()
    return table.concat({
      "connections: " .. count_objects("evlua.stream"),
      "listeners: " .. count_objects("evlua.listener"),
      "coroutines: " .. s.tasks .. " (" .. s.ready .. " ready)",
      "timers: " .. s.timers,
      "fd watches: " .. s.fdwatches,
      "loop iterations: " .. s.iterations,
      "uptime: " .. format_uptime(s.uptime),
      "pid: " .. pid(),
    }, "\n")
  end,
}

commands.top = {
  usage = "top [seconds]",
  help = "CPU use, loop iterations/s and counts over an interval (1 s)",
  run = function(_, args)
    local seconds = args == "" and 1 or tonumber(args)
    if not seconds or seconds <= 0 or seconds > 60 then
      return fail("usage", "top: seconds between 0 and 60 expected")
    end
    local before, cpu, start = event.stats(), os.clock(), event.time()
    event.sleep(seconds)
    local after, elapsed = event.stats(), event.time() - start
    return table.concat({
      ("cpu: %.1f%% of one core"):format((os.clock() - cpu) / elapsed * 100),
      ("loop iterations/s: %.0f"):format((after.iterations - before.iterations) / elapsed),
      "lua heap: " .. kib(collectgarbage("count") * 1024),
      "connections: " .. count_objects("evlua.stream"),
      "coroutines: " .. after.tasks .. " (" .. after.ready .. " ready)",
      "timers: " .. after.timers,
    }, "\n")
  end,
}

console.MAX_PROFILE = 3600   -- seconds a profile command may sample

-- The process goes on serving while this session's coroutine sleeps.
commands.profile = {
  usage = "profile SECONDS [FILE]",
  help = "profile the process for SECONDS: the top functions and coroutines; "
    .. "FILE (.txt, .folded, .svg, .pb.gz) gets the report too (docs/profiler.md)",
  run = function(_, args)
    local seconds, file = args:match("^(%S+)%s*(.-)$")
    seconds = tonumber(seconds)
    if not seconds or seconds <= 0 or seconds > console.MAX_PROFILE then
      return fail("usage", ("profile: seconds between 0 and %g expected")
                           :format(console.MAX_PROFILE))
    end
    local profiler = require "evlua.profiler"
    if file ~= "" and not profiler.format_of(file) then
      return fail("usage", "profile: FILE must end in .txt, .folded, .svg, .pb.gz or .pprof")
    end
    local ok, err, code = profiler.start()
    if not ok then return nil, err, code end
    event.sleep(seconds)
    local report = profiler.stop()
    local text = report:top()
    if file ~= "" then
      local saved, serr, scode = report:save(file)
      if not saved then return nil, serr, scode end
      text = text .. "saved " .. file .. "\n"
    end
    return text
  end,
}

local function ps()
  local text = event.ps()
  if text == "" then return "no coroutines" end
  return text
end
commands.ps = { usage = "ps", help = "every coroutine, what it waits on, its traceback", run = ps }
commands.tasks = { usage = "tasks", help = "the same as ps", run = ps }

commands.reload = {
  usage = "reload [file]",
  help = "reload an imported file, or every imported file changed on disk",
  run = function(_, args)
    if args ~= "" then
      local ok, err, code = import.reload(args)
      if not ok then return nil, err, code end
      return "reloaded " .. args
    end
    local done, failures = import.auto_reload()
    local lines = {}
    for _, path in ipairs(done) do lines[#lines + 1] = "reloaded " .. path end
    if failures then
      local failed = {}
      for _, err in pairs(failures) do failed[#failed + 1] = err end
      table.sort(failed)
      for _, err in ipairs(failed) do lines[#lines + 1] = "failed: " .. err end
      return fail("reload_failed", table.concat(lines, "\n"))
    end
    if #lines == 0 then return "nothing changed" end
    return table.concat(lines, "\n")
  end,
}

-- Compile like the REPL: an expression first, then a statement.
local function compile_eval(code, env)
  local fn = load("return " .. code, "=console", "t", env)
  if fn then return fn end
  return load(code, "=console", "t", env)
end

local function pack_results(ok, ...)
  return ok, table.pack(...)
end

commands.eval = {
  usage = "eval <lua>",
  help = "run Lua code in the process (in a coroutine; it may wait), print its results",
  run = function(session, code)
    if code == "" then return fail("usage", "usage: eval <lua>") end
    local output = {}
    -- print() writes into the reply; every other global is the process's.
    local env = setmetatable({
      print = function(...)
        local parts = table.pack(...)
        for i = 1, parts.n do parts[i] = tostring(parts[i]) end
        output[#output + 1] = table.concat(parts, "\t", 1, parts.n)
      end,
    }, { __index = _G, __newindex = _G })
    local fn, err = compile_eval(code, env)
    if not fn then return fail("syntax", err) end
    local task = event.fork(function() return pack_results(xpcall(fn, event.traceback)) end)
    task:set_name("console eval")
    local done, ok, results = task:join(session.eval_timeout)
    if done == nil then
      task:cancel()
      return fail("timeout", ("eval: no result after %g s (cancelled at its next wait)")
                             :format(session.eval_timeout))
    end
    if not ok then return fail("raised", tostring(results[1])) end
    if results.n > 0 then
      for i = 1, results.n do results[i] = tostring(results[i]) end
      output[#output + 1] = table.concat(results, "\t", 1, results.n)
    end
    return table.concat(output, "\n")
  end,
}

commands.debug = {
  usage = "debug",
  help = "the debugger's gdb-style prompt (docs/debugger.md); detach or quit leaves it",
  run = function(session)
    local engine = require "evlua.debug_engine"
    local name = "console session " .. tostring(session.channel):gsub("^channel ", "")
    local ok, err = engine.claim(name)
    if not ok then return fail("busy", err) end
    engine.set_mode("remote")
    local dbg = require("evlua.debug_cli").new({ remote = true, wait = session.debug_wait })
    engine.on_stop(function(stop) dbg:stop_arrived(stop) end)
    dbg.on_event = engine.on_event(function(ev)
      if ev.event == "output" then
        dbg:notice((ev.text:gsub("\n$", "")))
      elseif ev.event == "skipped" then
        dbg:notice(("Skipped a stop at %s:%d (%s): %s"):format(ev.file, ev.line,
                                                               ev.reason, ev.why))
      end
    end)
    dbg.owner = name
    session.debugging = dbg
    return "evlua debugger, remote: a stop parks only its coroutine. "
      .. "help lists the commands; detach or quit leaves."
  end,
}

-- Leave the debugger: breakpoints gone, stopped coroutines resumed.
local function end_debugging(session)
  local dbg = session.debugging
  if not dbg then return end
  session.debugging = nil
  local engine = require "evlua.debug_engine"
  engine.off_event(dbg.on_event)
  engine.on_stop(nil)
  engine.detach()
  engine.release(dbg.owner)
end

commands.help = {
  usage = "help", help = "this list",
  run = function()
    local names = {}
    for name in pairs(commands) do names[#names + 1] = name end
    table.sort(names)
    local width = 0
    for _, name in ipairs(names) do width = math.max(width, #commands[name].usage) end
    local lines = {}
    for _, name in ipairs(names) do
      local c = commands[name]
      lines[#lines + 1] = ("%-" .. width .. "s  %s"):format(c.usage, c.help)
    end
    lines[#lines + 1] = ("%-" .. width .. "s  %s"):format("quit", "close this console")
    return table.concat(lines, "\n")
  end,
}

--[[ Sessions ===============================================================]]

local function reply(ch, status, text)
  text = tostring(text or "")
  return ch:write(status, " ", #text, "\n", text)
end

-- run_command(session, name, args) -> reply text | nil, err, code
local function run_command(session, name, args)
  local command = commands[name]
  if not command then
    return fail("unknown_command", "unknown command '" .. name .. "' (try help)")
  end
  local ok, text, err, code = xpcall(command.run, event.traceback, session, args)
  if not ok then return fail("raised", text) end
  if text == nil then return nil, err or "failed", code or "failed" end
  return text
end

-- A wrong password: answered after auth_delay (only this connection's
-- coroutine sleeps), so guessing costs time; after max_auth_tries the
-- connection closes. Returns true while the connection may try again.
local function refuse_password(session, ch)
  session.auth_failures = session.auth_failures + 1
  event.sleep(session.auth_delay)
  reply(ch, "error", "wrong password")
  if session.auth_failures >= session.max_auth_tries then
    ch:close()
    return false
  end
  return true
end

-- Serve one connection: read a line, answer it, until quit or close. A
-- connection that has not authenticated within auth_timeout is closed:
-- otherwise max_sessions silent ones would lock the operator out.
local function serve(session, ch)
  local authenticated = session.password == nil
  local auth_deadline = event.now() + session.auth_timeout
  session.auth_failures = 0
  while true do
    local line, err, code = ch:wait_line(not authenticated
                                         and math.max(auth_deadline - event.now(), 0) or nil)
    if not line then
      if code == "too_large" then   -- longer than max_line
        reply(ch, "error", err)
        ch:close()
      elseif code == "timeout" then
        reply(ch, "error", "not authenticated within " .. session.auth_timeout .. " s")
        ch:close()
      end
      return
    end
    local name, args = first_word(line)
    if name == "auth" then
      if session.password ~= nil and args ~= session.password then
        if not refuse_password(session, ch) then return end
      else
        authenticated = true
        reply(ch, "ok", "authenticated")
      end
    elseif not authenticated then
      reply(ch, "error", "password required (auth <password>)")
      ch:close()
      return
    elseif session.debugging then   -- every line is a debugger command
      local text, action = session.debugging:execute(line)
      if action == "detach" then end_debugging(session) end
      reply(ch, text:match("^error: ") and "error" or "ok", (text:gsub("^error: ", "")))
    elseif name == "quit" or name == "exit" then
      reply(ch, "ok", "bye")
      ch:close()
      return
    elseif name ~= "" then
      local text, cerr = run_command(session, name, args)
      if text then reply(ch, "ok", text) else reply(ch, "error", cerr) end
    else
      reply(ch, "ok", "")
    end
  end
end

local function check_options(opts)
  if math.type(opts) == "integer" then opts = { port = opts } end
  if type(opts) ~= "table" then
    argerror(1, "listen", "port or options table expected, got " .. type(opts), 2)
  end
  local port = opts.port
  if math.type(port) ~= "integer" or port < 0 or port > 65535 then
    argerror(1, "listen", "port between 0 and 65535 expected", 2)
  end
  if opts.password ~= nil and type(opts.password) ~= "string" then
    argerror(1, "listen", "password must be a string", 2)
  end
  local delay, tries = opts.auth_delay, opts.max_auth_tries
  if delay ~= nil and (type(delay) ~= "number" or delay < 0 or delay ~= delay) then
    argerror(1, "listen", "auth_delay must be a number >= 0", 2)
  end
  local timeout = opts.auth_timeout
  if timeout ~= nil and (type(timeout) ~= "number" or not (timeout > 0)
                         or timeout == math.huge) then
    argerror(1, "listen", "auth_timeout must be a number > 0", 2)
  end
  if tries ~= nil and (math.type(tries) ~= "integer" or tries < 1) then
    argerror(1, "listen", "max_auth_tries must be an integer >= 1", 2)
  end
  return opts
end

-- console.listen(port | { port =, host =, password =, eval_timeout =,
-- max_line =, max_sessions =, auth_delay =, max_auth_tries =,
-- auth_timeout = }) ->
-- listener | nil, err. host defaults to 127.0.0.1.
function console.listen(opts)
  opts = check_options(opts)
  local session_defaults = {
    password = opts.password,
    eval_timeout = opts.eval_timeout or console.EVAL_TIMEOUT,
    debug_wait = opts.debug_wait or console.DEBUG_WAIT,
    auth_delay = opts.auth_delay or console.AUTH_DELAY,
    max_auth_tries = opts.max_auth_tries or console.MAX_AUTH_TRIES,
    auth_timeout = opts.auth_timeout or console.AUTH_TIMEOUT,
  }
  local max_line = opts.max_line or console.MAX_LINE
  local max_sessions = opts.max_sessions or console.MAX_SESSIONS
  local sessions = 0
  return event.listen(opts.host or console.DEFAULT_HOST, opts.port, function(_, ch)
    if sessions >= max_sessions then
      reply(ch, "error", "too many console sessions (" .. max_sessions .. ")")
      ch:close()
      return
    end
    sessions = sessions + 1
    ch:set_limits({ max_line = max_line })
    event.running():set_name("console session " .. tostring(ch):gsub("^channel ", ""))
    local session = setmetatable({ channel = ch }, { __index = session_defaults })
    local ok, err = pcall(serve, session, ch)
    end_debugging(session)
    sessions = sessions - 1
    ch:close()
    if not ok then error(err, 0) end
  end)
end

return console
