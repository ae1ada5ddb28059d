-- evlua/dap.lua - the Debug Adapter Protocol front-end of the debugger
-- (docs/debugger.md, "Editors (DAP)"): an editor connects to a loopback
-- TCP port and drives evlua.debug_engine in remote mode, so a breakpoint
-- parks only the coroutine that hit it while the process keeps serving.
--
-- Messages are framed as the protocol says: header lines ("Content-Length:
-- N"), an empty line, then N bytes of JSON. JSON goes through Debian's
-- lua-cjson, whose decoder gives cjson.null for null and floats for every
-- number; encoding lays out tables here (see "JSON") so that a list with
-- no elements is written [] and never {}.
--
-- dap.listen(port | opts) serves any number of connections one after
-- another, one debugging session at a time (a second connection while one
-- is open is told so and closed). `evlua --dap PORT script.lua` calls
-- dap.start_main(port): the script starts once an editor has configured
-- its breakpoints (configurationDone).

local core = require "evlua.core"
local event = require "event"
local cjson = require("cjson").new()   -- our own settings, nobody else's
local errors = require "evlua.errors"
local trim = require("evlua.text").trim
local argerror, fail = errors.argerror, errors.fail

local dap = {}

dap.HOST = "127.0.0.1"            -- loopback only
dap.MAX_HEADER = 1024             -- longest header line (bytes, without CRLF)
dap.MAX_HEADERS = 16              -- header lines before the empty one
dap.MAX_BODY = 1024 * 1024        -- largest message body (bytes)
dap.MAX_DEPTH = 64                -- deepest nesting of a request's JSON
dap.READ_TIMEOUT = nil            -- seconds a message may take (nil: none)
dap.FIRST_TIMEOUT = 10            -- seconds until the first message: an idle
                                  -- connection must not hold the one session

cjson.decode_max_depth(dap.MAX_DEPTH)
cjson.encode_max_depth(dap.MAX_DEPTH)
cjson.encode_invalid_numbers(false)
cjson.decode_invalid_numbers(false)

local null = cjson.null

--[[ JSON ===================================================================]]
-- cjson writes every string, number, boolean and null (escaping is its
-- job). Tables are laid out here: a table with the dap.array metatable,
-- or any table whose [1] is set, is a JSON array; an empty one is [].
-- Any other table is an object; an empty one is {}. Our messages build
-- every list (breakpoints, threads, stackFrames, scopes, variables) with
-- dap.array, so an empty list reaches the editor as [].

local ARRAY = { __name = "dap.array" }
local function array(t) return setmetatable(t or {}, ARRAY) end
dap.array = array

local encode_value
local function encode_table(t, out, depth)
  if depth > dap.MAX_DEPTH then error("dap: message nested too deep", 0) end
  if getmetatable(t) == ARRAY or t[1] ~= nil then
    out[#out + 1] = "["
    for i = 1, #t do
      if i > 1 then out[#out + 1] = "," end
      encode_value(t[i], out, depth + 1)
    end
    out[#out + 1] = "]"
    return
  end
  out[#out + 1] = "{"
  local first = true
  for k, v in pairs(t) do
    if type(k) == "number" then k = tostring(math.tointeger(k) or k) end
    if type(k) == "string" then
      if not first then out[#out + 1] = "," end
      first = false
      out[#out + 1] = cjson.encode(k)
      out[#out + 1] = ":"
      encode_value(v, out, depth + 1)
    end
  end
  out[#out + 1] = "}"
end

function encode_value(v, out, depth)
  local tv = type(v)
  if tv == "table" then return encode_table(v, out, depth) end
  if tv == "number" and v ~= v or v == math.huge or v == -math.huge then
    out[#out + 1] = "null"   -- JSON has no NaN or infinity
  elseif tv == "string" or tv == "number" or tv == "boolean" or v == null then
    out[#out + 1] = cjson.encode(v)
  else
    out[#out + 1] = cjson.encode(tostring(v))
  end
end

-- dap.encode(value) -> JSON text
function dap.encode(v)
  local out = {}
  encode_value(v, out, 0)
  return table.concat(out)
end

-- dap.decode(text) -> value | nil, message
function dap.decode(text)
  local ok, v = pcall(cjson.decode, text)
  if not ok then return nil, tostring(v) end
  return v
end

-- A decoded value without JSON's null.
local function value(v)
  if v == null then return nil end
  return v
end

local function int(v)
  v = value(v)
  if type(v) ~= "number" then return nil end
  return math.tointeger(v)
end

local function str(v)
  v = value(v)
  if type(v) ~= "string" then return nil end
  return v
end

--[[ Framing ================================================================]]

-- read_message(session [, timeout]) -> decoded message | nil, message, code
-- ("closed", "timeout", "protocol", "too_large"); each wait takes at most
-- timeout (default: the session's read_timeout). A failure ends the
-- connection.
local function read_message(s, timeout)
  local ch, length = s.channel, nil
  timeout = timeout or s.read_timeout
  local lines = 0
  while true do
    local line, err, code = ch:wait_line(timeout)
    if not line then
      if code == "too_large" then return fail("too_large", "header line too long") end
      return nil, err, code
    end
    if #line > s.max_header then return fail("too_large", "header line too long") end
    if line == "" then
      if lines > 0 then break end   -- stray empty lines before a header
    else
      lines = lines + 1
      if lines > s.max_headers then return fail("too_large", "too many header lines") end
      local name, v = line:match("^([%w%-]+):(.*)$")
      if not name then return fail("protocol", "malformed header line") end
      v = trim(v)
      if name:lower() == "content-length" then
        if not v:match("^%d+$") or #v > 12 then
          return fail("protocol", "bad Content-Length")
        end
        length = tonumber(v)
      end
    end
  end
  if not length then return fail("protocol", "no Content-Length header") end
  if length > s.max_body then
    return fail("too_large", ("message of %d bytes (limit %d)"):format(length, s.max_body))
  end
  local parts, left = {}, length
  local max_input = ch._stream:limits()
  while left > 0 do
    local piece, err, code = ch:wait_read(math.min(left, max_input), timeout)
    if not piece then return nil, err, code end
    parts[#parts + 1] = piece
    left = left - #piece
  end
  local msg, err = dap.decode(table.concat(parts))
  if msg == nil then return fail("protocol", "bad JSON: " .. err) end
  if type(msg) ~= "table" or getmetatable(msg) or msg[1] ~= nil then
    return fail("protocol", "a message must be a JSON object")
  end
  return msg
end

local function send(s, msg)
  if s.closed then return end
  s.seq = s.seq + 1
  msg.seq = s.seq
  local body = dap.encode(msg)
  s.channel:write("Content-Length: ", #body, "\r\n\r\n", body)
end

local function send_event(s, name, body)
  send(s, { type = "event", event = name, body = body })
end

local function respond(s, req, body)
  send(s, { type = "response", request_seq = req.seq, success = true,
            command = req.command, body = body })
end

local function respond_error(s, req, message)
  send(s, { type = "response", request_seq = req.seq, success = false,
            command = req.command, message = message,
            body = { error = { id = 1, format = message, showUser = false } } })
end

--[[ The engine =============================================================]]
-- One engine per process, one session at a time: its callbacks are set
-- once and reach the session that is open (if any).

local engine
local current          -- the open session, or nil

local function thread_name(t)
  return t.name or ("coroutine " .. tostring(t.id))
end

local function on_stop(stop)
  local s = current
  if not s then return end
  engine.sync_threads()   -- a new coroutine's thread event comes first
  s.stopped[stop.thread] = true
  local reason = stop.reason
  local body = { reason = reason, threadId = stop.thread,
                 allThreadsStopped = false, description = stop.description }
  if reason == "breakpoint" and stop.bp then
    body.hitBreakpointIds = array { stop.bp.id }
  elseif reason == "watch" then
    body.reason = "data breakpoint"
  end
  send_event(s, "stopped", body)
end

local function on_engine_event(ev)
  local s = current
  if not s then return end
  local kind = ev.event
  if kind == "output" then
    send_event(s, "output", { category = ev.category or "console", output = ev.text })
  elseif kind == "thread" then
    if ev.reason == "exited" then s.stopped[ev.thread] = nil end
    send_event(s, "thread", { reason = ev.reason, threadId = ev.thread })
  elseif kind == "continued" then
    s.stopped[ev.thread] = nil
    send_event(s, "continued", { threadId = ev.thread, allThreadsContinued = false })
  elseif kind == "exited" then
    send_event(s, "exited", { exitCode = ev.status })
  elseif kind == "terminated" then
    -- the process ends, or its main chunk ended leaving nothing to run:
    -- the editor disconnects, and after a launch that ends the process
    if s.terminate_on_disconnect then s.terminating = true end
    send_event(s, "terminated", {})
  elseif kind == "skipped" then
    send_event(s, "output", { category = "console", output =
      ("breakpoint at %s:%s skipped (%s)\n"):format(tostring(ev.file), tostring(ev.line),
                                                    ev.reason or "not a coroutine") })
  end
end

local function get_engine()
  if not engine then
    engine = require "evlua.debug_engine"
    engine.own(debug.getinfo(1, "S").source)   -- never stop in the adapter
    engine.on_event(on_engine_event)           -- a list: it acts while current
  end
  return engine
end

-- A session takes the engine (one front-end at a time, the console's
-- included): remote mode, and its stops come here.
local function claim()
  local e = get_engine()
  local ok, err = e.claim("dap")
  if not ok then return nil, err end
  e.set_mode("remote")
  e.on_stop(on_stop)
  return true
end

--[[ Requests ===============================================================]]
-- handlers[command](session, arguments, request) -> body | nil, message.
-- A handler that raises answers with the error; the session goes on.

local handlers = {}
dap.handlers = handlers

local CAPABILITIES = {
  supportsConfigurationDoneRequest = true,
  supportsConditionalBreakpoints = true,
  supportsHitConditionalBreakpoints = true,
  supportsLogPoints = true,
  supportsSetVariable = true,
  supportsTerminateRequest = true,
  supportsEvaluateForHovers = true,
  supportsDelayedStackTraceLoading = true,
  supportTerminateDebuggee = true,
}

function handlers.initialize(s)
  s.initialized = true
  s.after = function() send_event(s, "initialized", {}) end
  return CAPABILITIES
end

local function start(s, args, how)
  s.terminate_on_disconnect = how == "launch"
  s.stop_on_entry = args.stopOnEntry == true
  return {}
end
function handlers.launch(s, args) return start(s, args, "launch") end
function handlers.attach(s, args) return start(s, args, "attach") end

function handlers.configurationDone(s)
  s.configured = true
  engine.track(true)   -- thread events from now on (the threads request lists the rest)
  if dap._on_configured then
    local fn = dap._on_configured
    dap._on_configured = nil
    fn()
  end
  return {}
end

local function bp_body(bp, path)
  return {
    id = bp.id, verified = bp.verified and true or false, line = bp.line,
    message = bp.message, source = { path = bp.file or path },
  }
end

function handlers.setBreakpoints(s, args)
  local source = value(args.source) or {}
  local path = str(source.path) or str(source.name)
  if not path then return nil, "setBreakpoints: source.path expected" end
  local e = get_engine()
  e.clear_file(path)
  s.files[path] = true
  local list = array()
  local wanted = value(args.breakpoints)
  if type(wanted) ~= "table" then
    wanted = {}
    for i, line in ipairs(value(args.lines) or {}) do wanted[i] = { line = line } end
  end
  for _, b in ipairs(wanted) do
    local line = int(b.line)
    if not line then
      list[#list + 1] = { verified = false, message = "line number expected" }
    else
      local bp, err = e.set_breakpoint {
        file = path, line = line, condition = str(b.condition),
        hit_condition = str(b.hitCondition), log_message = str(b.logMessage),
      }
      if bp then
        list[#list + 1] = bp_body(bp, path)
      else
        list[#list + 1] = { verified = false, line = line, message = tostring(err) }
      end
    end
  end
  return { breakpoints = list }
end

function handlers.setExceptionBreakpoints()
  return { breakpoints = array() }
end

function handlers.threads()
  local list = array()
  for _, t in ipairs(get_engine().threads()) do
    local name = thread_name(t)
    if t.status == "stopped" then name = name .. " (stopped)" end
    list[#list + 1] = { id = t.id, name = name }
  end
  return { threads = list }
end

-- Frame ids stand for (thread, level) until that thread runs again.
local function frame_id(s, thread, level)
  s.next_frame = s.next_frame + 1
  s.frame_ids[s.next_frame] = { thread = thread, level = level }
  return s.next_frame
end

local function check_thread(args)
  local thread = int(args.threadId)
  if not thread then error("threadId expected", 0) end
  return thread
end

local function lookup_frame(s, args)
  local id = int(args.frameId)
  if id == nil then return nil end
  local f = s.frame_ids[id]
  if not f then error("unknown frame " .. tostring(id) .. " (the thread ran since)", 0) end
  return f
end

function handlers.stackTrace(s, args)
  local thread = check_thread(args)
  local first = int(args.startFrame) or 0
  local count = int(args.levels)
  if count == 0 then count = nil end
  local frames, total = get_engine().frames(thread, first, count)
  if not frames then return nil, total or "no such thread" end
  local list = array()
  for _, f in ipairs(frames) do
    local item = {
      id = frame_id(s, thread, f.level), name = f.name or "?",
      line = f.line or 0, column = f.line and 1 or 0,
    }
    if f.file and f.what ~= "C" then
      item.source = { path = f.file, name = f.file:match("[^/]*$") }
    else
      item.presentationHint = "subtle"
    end
    list[#list + 1] = item
  end
  return { stackFrames = list, totalFrames = total or #list }
end

function handlers.scopes(s, args)
  local f = lookup_frame(s, args)
  if not f then return nil, "frameId expected" end
  local list = array()
  for _, scope in ipairs(get_engine().scopes(f.thread, f.level)) do
    s.scope_refs[scope.ref] = f
    list[#list + 1] = {
      name = scope.name, variablesReference = scope.ref or 0,
      expensive = scope.name == "Globals",
      presentationHint = scope.name == "Locals" and "locals" or nil,
    }
  end
  return { scopes = list }
end

function handlers.variables(_, args)
  local ref = int(args.variablesReference)
  if not ref then return nil, "variablesReference expected" end
  local start_at, count = int(args.start), int(args.count)
  if count == 0 then count = nil end
  -- DAP counts from 0, the engine from 1 (as Lua lists do)
  local vars, total = get_engine().variables(ref, start_at and start_at + 1, count)
  if not vars then return nil, total or "unknown variablesReference" end
  local list = array()
  for _, v in ipairs(vars) do
    list[#list + 1] = { name = tostring(v.name), value = tostring(v.value),
                        type = v.type, variablesReference = v.ref or 0 }
  end
  return { variables = list }
end

function handlers.evaluate(s, args)
  local expr = str(args.expression)
  if not expr then return nil, "expression expected" end
  local f = lookup_frame(s, args)
  local result, kind, ref = get_engine().evaluate(f and f.thread, f and f.level, expr)
  if result == nil and kind ~= nil and ref == nil then return nil, tostring(kind) end
  return { result = tostring(result), type = kind, variablesReference = ref or 0 }
end

function handlers.setVariable(s, args)
  local ref, name, expr = int(args.variablesReference), str(args.name), str(args.value)
  if not (ref and name and expr) then return nil, "variablesReference, name and value expected" end
  local f = s.scope_refs[ref]
  if not f then return nil, "only locals, upvalues and globals can be set" end
  local result, err = get_engine().set_variable(f.thread, f.level, name, expr)
  if result == nil and err ~= nil then return nil, tostring(err) end
  return { value = tostring(result) }
end

-- The thread runs again: its frame ids and scope references lapse.
local function forget_thread(s, thread)
  s.stopped[thread] = nil
  for id, f in pairs(s.frame_ids) do
    if f.thread == thread then s.frame_ids[id] = nil end
  end
  for ref, f in pairs(s.scope_refs) do
    if f.thread == thread then s.scope_refs[ref] = nil end
  end
end

local function resumer(how)
  return function(s, args)
    local thread = check_thread(args)
    forget_thread(s, thread)
    local ok, err = get_engine().resume(thread, how)
    if ok == nil and err ~= nil then return nil, tostring(err) end
    if how == "continue" then return { allThreadsContinued = false } end
    return {}
  end
end
handlers.continue = resumer("continue")
handlers.next = resumer("next")
handlers.stepIn = resumer("step")
handlers.stepOut = resumer("finish")

function handlers.pause(_, args)
  local ok, err = get_engine().pause(check_thread(args))
  if ok == nil and err ~= nil then return nil, tostring(err) end
  return {}
end

-- End the session: our breakpoints go, stopped coroutines run on.
local function detach(s)
  if not engine then return end
  for path in pairs(s.files) do pcall(engine.clear_file, path) end
  s.files = {}
  for thread in pairs(s.stopped) do pcall(engine.resume, thread, "continue") end
  s.stopped = {}
end

-- disconnect: detach, or end the process (terminateDebuggee; by default
-- after a launch or a terminate) once the answer is written.
function handlers.disconnect(s, args)
  local kill = value(args.terminateDebuggee)
  if kill == nil then kill = s.terminate_on_disconnect or s.terminating end
  s.after = function()
    detach(s)
    if kill then s.exit_status = 0 end
    s.closing = true
  end
  return {}
end

-- terminate: the debuggee is to end. Breakpoints go, stopped coroutines
-- run on, the terminated event tells the editor, which then disconnects
-- (or closes the connection): the process ends then.
function handlers.terminate(s)
  s.after = function()
    detach(s)
    s.terminating = true
    send_event(s, "terminated", {})
  end
  return {}
end

--[[ Sessions ===============================================================]]

local function handle(s, req)
  if req.type ~= "request" or type(req.command) ~= "string" then
    return nil, "protocol", "not a request"
  end
  if type(req.seq) ~= "number" then return nil, "protocol", "request without seq" end
  local fn = handlers[req.command]
  if not fn then
    respond_error(s, req, "unknown command '" .. req.command .. "'")
    return true
  end
  if req.command ~= "initialize" and not s.initialized then
    respond_error(s, req, "initialize first")
    return true
  end
  local args = value(req.arguments)
  if type(args) ~= "table" then args = {} end
  local ok, body, err = xpcall(fn, event.traceback, s, args, req)
  if not ok then
    respond_error(s, req, req.command .. ": " .. tostring(body):match("^[^\n]*"))
  elseif body == nil then
    respond_error(s, req, tostring(err or (req.command .. " failed")))
  else
    respond(s, req, body)
  end
  if s.after then
    local after = s.after
    s.after = nil
    after()
  end
  return true
end

local function serve(s)
  local timeout = s.first_timeout   -- then the read_timeout
  while not s.closing do
    local msg, err, code = read_message(s, timeout)
    timeout = nil
    if not msg then
      if code ~= "closed" and code ~= "cancelled" then
        send_event(s, "output", { category = "important",
                                  output = "evlua: " .. tostring(err) .. " (closing)\n" })
      end
      return
    end
    local ok, herr = handle(s, msg)
    if not ok then
      send_event(s, "output", { category = "important",
                                output = "evlua: " .. tostring(herr) .. " (closing)\n" })
      return
    end
  end
end

local function check_limit(opts, name, fname)
  local v = opts[name]
  if v ~= nil and (math.type(v) ~= "integer" or v < 1) then
    argerror(1, fname, name .. " must be an integer >= 1", 3)
  end
end

local function check_options(opts, fname)
  if math.type(opts) == "integer" then opts = { port = opts } end
  if type(opts) ~= "table" then
    argerror(1, fname, "port or options table expected, got " .. type(opts), 2)
  end
  local port = opts.port
  if math.type(port) ~= "integer" or port < 0 or port > 65535 then
    argerror(1, fname, "port between 0 and 65535 expected", 2)
  end
  check_limit(opts, "max_header", fname)
  check_limit(opts, "max_headers", fname)
  check_limit(opts, "max_body", fname)
  for _, name in ipairs({ "read_timeout", "first_timeout" }) do
    local t = opts[name]
    if t ~= nil and (type(t) ~= "number" or t <= 0 or t ~= t) then
      argerror(1, fname, name .. " must be a number > 0", 2)
    end
  end
  return opts
end

local function session_task(opts, ch)
  if current then
    local s = { channel = ch, seq = 0 }
    send_event(s, "output", { category = "important", output =
      "evlua: another debugger session is open on this process; refused\n" })
    send_event(s, "terminated", {})
    ch:close()
    return
  end
  local claimed, cerr = claim()
  if not claimed then
    local s = { channel = ch, seq = 0 }
    send_event(s, "output", { category = "important", output = "evlua: " .. cerr .. "; refused\n" })
    send_event(s, "terminated", {})
    ch:close()
    return
  end
  local s = {
    channel = ch, seq = 0, files = {}, stopped = {}, frame_ids = {},
    scope_refs = {}, next_frame = 0,
    max_header = opts.max_header or dap.MAX_HEADER,
    max_headers = opts.max_headers or dap.MAX_HEADERS,
    max_body = opts.max_body or dap.MAX_BODY,
    read_timeout = opts.read_timeout or dap.READ_TIMEOUT,
    first_timeout = opts.first_timeout or dap.FIRST_TIMEOUT,
  }
  current = s
  engine.own_task(event.running())   -- the session is no thread of the debuggee's
  engine.own_object(ch._stream)
  ch:set_limits({ max_line = s.max_header + 1 })   -- and its "\r"
  event.running():set_name("dap session " .. tostring(ch):gsub("^channel ", ""))
  local ok, err = pcall(serve, s)
  if current == s then current = nil end
  engine.track(false)
  detach(s)
  engine.release("dap")
  if engine.owner() == nil then engine.on_stop(nil) end   -- stops skip, none hangs
  if s.terminating and not s.exit_status then s.exit_status = 0 end
  s.closed = true
  if s.exit_status then
    local status = s.exit_status
    if ch:closed() then
      core.exit(status)
    else
      ch.disconnect = function() core.exit(status) end
    end
  end
  ch:close()
  if not ok then error(err, 0) end
end

-- dap.listen(port | { port =, host =, max_header =, max_headers =,
-- max_body =, read_timeout =, first_timeout = }) -> listener | nil, err,
-- code. host must
-- be a loopback address (127.0.0.1, the default, or ::1).
function dap.listen(opts)
  opts = check_options(opts, "listen")
  local host = opts.host or dap.HOST
  if host ~= "127.0.0.1" and host ~= "::1" and host ~= "localhost" then
    argerror(1, "listen", "host must be a loopback address (the debugger runs any code)")
  end
  local listener, err, code = event.listen(host, opts.port, function(_, ch)
    return session_task(opts, ch)
  end)
  if not listener then return nil, err, code end
  get_engine().own_object(listener)   -- keeps no debuggee alive
  return listener
end

-- dap.start_main(port | opts): for `evlua --dap PORT script.lua`: listen,
-- then wait (in the main coroutine) until an editor has connected and
-- sent configurationDone; then the script runs. Returns true | nil, err,
-- code.
function dap.start_main(opts)
  local listener, err, code = dap.listen(opts)
  if not listener then return nil, err, code end
  local token = {}
  dap._on_configured = function() event.wakeup(token) end
  core.log("info", "waiting for a DAP client on " .. dap.HOST .. ":" .. listener:port())
  event.wait_as("dap client", listener, token)
  local s = current
  if s and s.stop_on_entry and type(arg) == "table" and type(arg[0]) == "string" then
    engine.stop_at_entry("@" .. arg[0], coroutine.running())
  end
  return true
end

-- The session open now (for tests): nil or a table.
function dap.session() return current end

return dap
