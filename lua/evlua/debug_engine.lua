-- evlua/debug_engine.lua - the debugger's engine: breakpoints, stepping,
-- stops, frames, variables and evaluation, for the front-ends (the gdb
-- prompt of evlua/debug_cli.lua, the DAP server of evlua/dap.lua).
-- docs/debugger.md, "Engine API (for front-ends)", is the contract.
--
-- The hook is src/lua/linterrupt.c's debug_hook (a C hook: only a C hook
-- may yield, and a stop in remote mode parks the coroutine at its line).
-- It calls handler() below. Without breakpoints, watches, steps or pauses
-- no hook is installed at all. With them every thread gets a hook on
-- calls only; a call into a file without breakpoints answers "skip" and
-- the C side never asks again for that file while the thread's mask is
-- calls only. A call into a file with breakpoints turns line events on
-- (mask "crl"); leaving it for other code keeps returns ("cr") until no
-- such frame is left on the stack ("c").

local core = require "evlua.core"
local event = require "event"
local trim = require("evlua.text").trim

local getinfo, getlocal, setlocal = debug.getinfo, debug.getlocal, debug.setlocal
local getupvalue, setupvalue = debug.getupvalue, debug.setupvalue
local co_running = coroutine.running
local type, tostring, pairs, ipairs, select = type, tostring, pairs, ipairs, select

local engine = {}

local SLOTS = event._slots
local STATE, WHAT, ON = SLOTS.STATE, SLOTS.WHAT, SLOTS.ON
local ID = 4   -- event.lua's task record: the id slot (see its Tasks section)
local main_thread = debug.getregistry()[1]   -- LUA_RIDX_MAINTHREAD

--[[ State ==================================================================]]

local mode = "local"          -- "local" (terminal) | "remote" (console, DAP)
local stop_fn                 -- engine.on_stop's
local event_fns = {}          -- engine.on_event's
local bps, next_bp = {}, 0    -- id -> breakpoint
local watches, next_watch = {}, 0
local stepping = {}           -- coroutine -> { how =, depth =, line =, reason = }
local stopped = {}            -- thread id -> { co, task, stop, depth }
local busy = 0                -- > 0: the engine evaluates; the hook is quiet
local armed = false
local handler                 -- the hook's handler, below
local own_sources = {}        -- the debugger's own files: never stopped in

local interest = {}           -- source -> true | false (cache)
local line_maps = {}          -- source -> { [line] = { bp, ... } } (cache)
local refined = {}            -- function -> true: its lines were checked

-- evlua's own library (the directory of event.lua): steps started in
-- user code do not stop there, and one that leaves user code for it
-- below where it started ends (the task returned to the scheduler).
local LIBRARY = getinfo(event.fork, "S").source:match("^(@.*[/\\])event%.lua$") or "@<none>"
local function is_library(source) return source:sub(1, #LIBRARY) == LIBRARY end
engine._is_library = is_library

local other_ids = setmetatable({}, { __mode = "k" })   -- coroutine -> id
local next_other = 0

local function emit(ev)
  for _, fn in ipairs(event_fns) do
    local ok, err = pcall(fn, ev)
    if not ok then core.log("error", "debugger: event handler: " .. tostring(err)) end
  end
end

--[[ Threads ================================================================]]
-- A thread is a task (its event.lua id), the main thread (0) or another
-- coroutine (a negative id, from a coroutine.create in user code).

local function thread_id(co, task)
  if co == main_thread then return 0 end
  task = task or event.running()
  if task and task[SLOTS.CO] == co then return task[ID], task end
  local id = other_ids[co]
  if not id then
    next_other = next_other - 1
    id = next_other
    other_ids[co] = id
  end
  return id
end

-- The coroutine of a thread id (nil: no such live thread).
local function thread_co(id)
  if id == nil or id == 0 then return main_thread end
  local rec = stopped[id]
  if rec then return rec.co end
  for _, t in ipairs(event.tasks()) do
    if t.id == id then return t.handle[SLOTS.CO] or nil end
  end
  for co, oid in pairs(other_ids) do
    if oid == id then return co end
  end
end
engine._thread_co = thread_co

function engine.threads()
  local list = { { id = 0, name = "main thread",
                   status = stopped[0] and "stopped" or "running" } }
  for _, t in ipairs(event.tasks()) do
    local status = t.state
    if stopped[t.id] then status = "stopped" end
    local waits
    if status == "waiting" and t.what then waits = t.what .. " " .. tostring(t.on) end
    list[#list + 1] = { id = t.id, name = t.name, status = status, waits = waits,
                        -- task:cancel() of a stopped task: its next wait
                        -- fails "cancelled" once resumed (event.lua)
                        cancelled = t.handle[SLOTS.CANCEL] or nil }
  end
  for id, rec in pairs(stopped) do
    if id < 0 then
      list[#list + 1] = { id = id, name = tostring(rec.co), status = "stopped" }
    end
  end
  return list
end

--[[ Frames =================================================================]]
-- Level 0 is the innermost frame of the stopped code. For the thread
-- running now (a stop at the terminal runs the prompt inside the hook)
-- the levels are found below the handler's frame; a parked coroutine's
-- level 0 is its own top frame.

-- A coroutine parked by a stop in remote mode: its record. A hook that
-- yields leaves the frame's pc one instruction back (Lua resumes it
-- there), so its current line and active locals are read at the stop and
-- kept: locals0 (names by slot) and line.
local function parked_rec(co)
  for _, rec in pairs(stopped) do
    if rec.co == co and rec.task then return rec end
  end
end

-- The level, for the caller of find_base, of the frame the hook stopped.
local function find_base()
  local lv = 2
  while true do
    local info = getinfo(lv, "f")
    if not info then return nil end
    if info.func == handler then return lv end
    lv = lv + 1
  end
end

local function info_at(co, level, what)
  if co == co_running() then
    local base = find_base()
    if not base then return nil end
    return getinfo(base + level, what)
  end
  return getinfo(co, level, what)
end

local function getlocal_at(co, level, n)
  if co == co_running() then
    local base = find_base()
    if not base then return nil end
    return getlocal(base + level, n)
  end
  return getlocal(co, level, n)
end

local function setlocal_at(co, level, n, value)
  if co == co_running() then
    local base = find_base()
    if not base then return nil end
    return setlocal(base + level, n, value)
  end
  return setlocal(co, level, n, value)
end

local function path_of(source)
  if source:sub(1, 1) == "@" then return source:sub(2) end
  return source
end

local function frame_name(info)
  if info.what == "main" then return "main chunk" end
  if info.name then return info.name end
  if info.what == "C" then return "?" end
  return ("function <%s:%d>"):format(info.short_src, info.linedefined)
end

-- engine.frames(thread [, start [, count]]) -> list, total
function engine.frames(thread, start, count)
  local co = thread_co(thread)
  if not co then return {}, 0 end
  start = start or 0
  local list, level = {}, 0
  while true do
    local info = info_at(co, level, "Slnuf")
    if not info then break end
    if level == 0 and co ~= co_running() then
      local rec = parked_rec(co)
      if rec then info.currentline = rec.line end
    end
    if level >= start and (not count or #list < count) then
      list[#list + 1] = {
        level = level, name = frame_name(info),
        file = info.what == "C" and "[C]" or path_of(info.source),
        line = info.currentline, nparams = info.nparams or 0, func = info.func,
        what = info.what == "main" and "main" or (info.what == "C" and "C" or "Lua"),
      }
    end
    level = level + 1
  end
  return list, level
end

--[[ Values and variables ===================================================]]

local refs, next_ref = {}, 1   -- ref -> { kind, ... }; 1: the globals
local GLOBALS_REF = 1

local function reset_refs()
  refs, next_ref = {}, 1
end

local function ref_of(value)
  local t = type(value)
  if t == "table" or (t == "userdata" and getmetatable(value) ~= nil) then
    next_ref = next_ref + 1
    refs[next_ref] = { kind = "value", value = value }
    return next_ref
  end
  return 0
end

local function short(value, depth)
  local t = type(value)
  if t == "string" then return ("%q"):format(value):gsub("\\\n", "\\n") end
  if t ~= "table" then
    local ok, s = pcall(tostring, value)
    return ok and s or t
  end
  local mt = getmetatable(value)
  if mt and mt.__tostring then
    local ok, s = pcall(tostring, value)
    if ok then return s end
  end
  depth = depth or 2
  if depth <= 0 then return "{...}" end
  local parts, n = {}, 0
  for k, v in pairs(value) do
    n = n + 1
    if n > 20 then parts[#parts + 1] = "..." break end
    local key
    if type(k) == "string" and k:match("^[%a_][%w_]*$") then key = k
    else key = "[" .. short(k, 0) .. "]" end
    parts[#parts + 1] = key .. " = " .. short(v, depth - 1)
  end
  return "{" .. table.concat(parts, ", ") .. "}"
end
engine.format = short

-- The frame's function (nil for C frames) and its _ENV.
local function frame_env(co, level)
  local info = co and info_at(co, level, "fS")
  local fn = info and info.func
  local env = _G
  if fn and info.what ~= "C" then
    for i = 1, math.huge do
      local name, v = getupvalue(fn, i)
      if not name then break end
      if name == "_ENV" then env = v break end
    end
  end
  return fn, env
end

-- Locals of a frame: { { name, value, index } } (the later of two with a
-- name shadows the earlier; temporaries "(...)" left out, varargs too).
local function frame_locals(co, level)
  local list = {}
  local rec = level == 0 and co ~= co_running() and parked_rec(co)
  if rec and rec.locals0 then   -- a parked coroutine: its names at the stop
    for _, l in ipairs(rec.locals0) do
      local _, v = getlocal_at(co, 0, l.index)
      list[#list + 1] = { name = l.name, value = v, index = l.index }
    end
    return list
  end
  for i = 1, math.huge do
    local name, v = getlocal_at(co, level, i)
    if not name then break end
    if name:sub(1, 1) ~= "(" then list[#list + 1] = { name = name, value = v, index = i } end
  end
  return list
end

local function frame_upvalues(fn)
  local list = {}
  if not fn then return list end
  for i = 1, math.huge do
    local name, v = getupvalue(fn, i)
    if not name then break end
    if name ~= "_ENV" then list[#list + 1] = { name = name, value = v, index = i } end
  end
  return list
end

function engine.scopes(thread, level)
  local co = thread_co(thread)
  level = level or 0
  next_ref = next_ref + 1
  refs[next_ref] = { kind = "locals", co = co, level = level }
  local locals_ref = next_ref
  next_ref = next_ref + 1
  refs[next_ref] = { kind = "upvalues", co = co, level = level }
  return {
    { name = "Locals", ref = locals_ref },
    { name = "Upvalues", ref = next_ref },
    { name = "Globals", ref = GLOBALS_REF },
  }
end

local function variable(name, value)
  return { name = name, value = short(value, 1), type = type(value), ref = ref_of(value) }
end

-- engine.variables(ref [, start [, count]]) -> list, total (start is
-- 1-based, as Lua lists are).
function engine.variables(ref, start, count)
  local list = {}
  local r = ref == GLOBALS_REF and { kind = "value", value = _G } or refs[ref]
  if not r then return list, 0 end
  if r.kind == "locals" then
    for _, l in ipairs(frame_locals(r.co, r.level)) do
      list[#list + 1] = variable(l.name, l.value)
    end
  elseif r.kind == "upvalues" then
    local fn = frame_env(r.co, r.level)
    for _, u in ipairs(frame_upvalues(fn)) do list[#list + 1] = variable(u.name, u.value) end
  else
    local v = r.value
    if type(v) == "table" then
      local keys = {}
      for k in pairs(v) do keys[#keys + 1] = k end
      table.sort(keys, function(a, b)
        local ta, tb = type(a), type(b)
        if ta ~= tb then return ta < tb end
        if ta == "number" or ta == "string" then return a < b end
        return tostring(a) < tostring(b)
      end)
      for _, k in ipairs(keys) do
        local name = type(k) == "string" and k or "[" .. short(k, 0) .. "]"
        list[#list + 1] = variable(name, v[k])
      end
    end
    local mt = getmetatable(v)
    if mt ~= nil then list[#list + 1] = variable("(metatable)", mt) end
  end
  local total = #list
  if start or count then
    local page = {}
    start = start or 1
    for i = start, math.min(total, start + (count or total) - 1) do page[#page + 1] = list[i] end
    list = page
  end
  return list, total
end

--[[ Evaluation =============================================================]]
-- An expression sees the frame's locals, then its upvalues, then its
-- _ENV (the globals, or an imported file's environment); assigning to a
-- name writes the local, upvalue or global it finds.

local function eval_env(co, level)
  local fn, genv = frame_env(co, level)
  local locals, ups = {}, {}
  if co then
    for _, l in ipairs(frame_locals(co, level)) do locals[l.name] = l end
    for _, u in ipairs(frame_upvalues(fn)) do ups[u.name] = u end
  end
  return setmetatable({}, {
    __index = function(_, k)
      local l = locals[k]
      if l then return (select(2, getlocal_at(co, level, l.index))) end
      local u = ups[k]
      if u then return (select(2, getupvalue(fn, u.index))) end
      return genv[k]
    end,
    __newindex = function(_, k, v)
      local l = locals[k]
      if l then setlocal_at(co, level, l.index, v) return end
      local u = ups[k]
      if u then setupvalue(fn, u.index, v) return end
      genv[k] = v
    end,
  })
end

local function pack_ok(ok, ...) return ok, select("#", ...), ... end

-- Run code (an expression, else a statement) in a frame: ok, n, values...
local function run_in(co, level, code)
  local env = eval_env(co, level)
  local chunk = load("return " .. code, "=(evaluate)", "t", env)
  if not chunk then
    local err
    chunk, err = load(code, "=(evaluate)", "t", env)
    if not chunk then return false, 1, err end
  end
  busy = busy + 1
  local results = table.pack(pack_ok(pcall(chunk)))
  busy = busy - 1
  return table.unpack(results, 1, results.n)
end

-- engine.evaluate(thread, level, expr) -> value_string, type, ref | nil, err
function engine.evaluate(thread, level, expr)
  local co = thread ~= nil and thread_co(thread) or nil
  if thread ~= nil and not co then return nil, "no thread " .. tostring(thread) end
  local ok, n, value = run_in(co, level or 0, expr)
  if not ok then return nil, tostring(value) end
  if n == 0 then return "", "nil", nil end
  return short(value, 3), type(value), ref_of(value), value
end

-- engine.set_variable(thread, level, name, expr) -> value_string | nil, err
function engine.set_variable(thread, level, name, expr)
  if type(name) ~= "string" or not name:match("^[%a_][%w_]*$") then
    return nil, "a variable name expected, got " .. tostring(name)
  end
  local co = thread ~= nil and thread_co(thread) or nil
  local ok, _, value = run_in(co, level or 0, expr)
  if not ok then return nil, tostring(value) end
  local env = eval_env(co, level or 0)
  env[name] = value
  return short(value, 2)
end

--[[ Breakpoints ============================================================]]

local function matches(path, pattern)
  if path == pattern then return true end
  path, pattern = path:gsub("^%./", ""), pattern:gsub("^%./", "")
  return path == pattern
    or (#path > #pattern and path:sub(-#pattern - 1) == "/" .. pattern)
end

local function source_matches(source, pattern)
  return source:sub(1, 1) == "@" and matches(source:sub(2), pattern)
end

-- The paths of loaded Lua files: modules, imported files, files seen.
local seen_sources = {}
local function known_paths()
  local paths = {}
  local function add_fn(f)
    local s = getinfo(f, "S").source
    if s:sub(1, 1) == "@" then paths[s:sub(2)] = true end
  end
  for _, mod in pairs(package.loaded) do
    if type(mod) == "table" then
      for _, v in pairs(mod) do if type(v) == "function" then add_fn(v) end end
    elseif type(mod) == "function" then
      add_fn(mod)
    end
  end
  for s in pairs(seen_sources) do paths[path_of(s)] = true end
  -- the files of stopped code: a script run by path is no module, and
  -- the call hook may not have seen it yet (`b script.lua:9` at entry)
  for id in pairs(stopped) do
    for _, f in ipairs((engine.frames(id))) do
      if f.what ~= "C" then paths[f.file] = true end
    end
  end
  return paths
end

local function readable(path)
  local f = io.open(path)
  if f then f:close() end
  return f ~= nil
end

local function resolve(pattern)
  for path in pairs(known_paths()) do
    if matches(path, pattern) then return path end
  end
  if readable(pattern) then return pattern end
end

-- engine.resolve(file) -> the path of a loaded (or readable) Lua file
-- the name matches by suffix, as breakpoints match | nil
function engine.resolve(file)
  if type(file) ~= "string" then error("resolve: file name expected", 2) end
  return resolve(file)
end

-- Lines of a file that may hold code: not blank, not only a comment,
-- not inside a long comment or string, not a lone closing keyword.
local function code_lines(path)
  local f = io.open(path)
  if not f then return nil end
  local text = f:read("a")
  f:close()
  local lines, n, long_close = {}, 0, nil
  for line in (text .. "\n"):gmatch("(.-)\r?\n") do
    n = n + 1
    local rest = line
    if long_close then
      local e = rest:find(long_close, 1, true)
      if not e then goto next_line end
      rest = rest:sub(e + #long_close)
      long_close = nil
    end
    do
      local code = ""
      while true do
        local s, e, eq = rest:find("%-%-%[(=*)%[")
        local cs = rest:find("%-%-")
        if s and cs == s then
          code = code .. rest:sub(1, s - 1)
          local close = "]" .. eq .. "]"
          local ce = rest:find(close, e + 1, true)
          if not ce then long_close = close break end
          rest = rest:sub(ce + #close)
        else
          if cs then rest = rest:sub(1, cs - 1) end
          code = code .. rest
          local ls, le, leq = rest:find("%[(=*)%[")
          if ls and not rest:find(("]" .. leq .. "]"), le + 1, true) then
            long_close = "]" .. leq .. "]"
          end
          break
        end
      end
      code = trim(code)
      if code ~= "" and not code:match("^else$") and not code:match("^[%)%]}],?$")
         and not code:match("^end[%),]*$") and code ~= "do" and code ~= "then" then
        lines[n] = true
      end
    end
    ::next_line::
  end
  lines.count = n
  return lines
end

local function set_mask(co, mask)
  core.debug_sethook(co, mask)
end

local function changed()
  interest, line_maps, refined = {}, {}, {}
  if armed then core.debug_handler(handler) end   -- forgets the skipped files
end

local arm   -- below

-- The coroutines alive now: the main thread's and every task's.
local function live_threads()
  local list = { main_thread }
  for _, t in ipairs(event.tasks()) do
    local co = t.handle[SLOTS.CO]
    if co then list[#list + 1] = co end
  end
  return list
end

-- The files on every coroutine's stack are loaded files too (a script
-- run by path is no module): a breakpoint there is found at once.
local function note_stacks()
  for _, co in ipairs(live_threads()) do
    for lv = 0, math.huge do
      local info = getinfo(co, lv, "S")
      if not info then break end
      seen_sources[info.source] = true
    end
  end
end

local is_interesting   -- below

-- A coroutine already inside a function of a file with breakpoints (a
-- task looping there, parked in event.sleep now) makes no call into it
-- again: with only calls hooked it would never stop there. Such a one
-- gets returns hooked too, so coming back into that frame turns line
-- events on (the handler's "return" case).
local function hook_stacks()
  if not armed then return end
  for _, co in ipairs(live_threads()) do
    if co ~= co_running() and core.debug_gethook(co) == "c" then
      for lv = 0, math.huge do
        local info = getinfo(co, lv, "S")
        if not info then break end
        if is_interesting(info.source) then
          set_mask(co, "cr")
          break
        end
      end
    end
  end
end

local function place(bp)
  local path = resolve(bp.pattern)
  bp.file = path or bp.pattern
  bp.verified = path ~= nil
  bp.line, bp.message = bp.requested_line, nil
  if path then
    local lines = code_lines(path)
    if lines then
      local l = bp.requested_line
      while l <= lines.count and not lines[l] do l = l + 1 end
      if l > lines.count then
        bp.verified = false
        bp.message = "no code at or after line " .. bp.requested_line
      elseif l ~= bp.requested_line then
        bp.line = l
        bp.message = "moved from line " .. bp.requested_line
      end
    end
  else
    bp.message = "no loaded file matches " .. bp.pattern .. " (yet)"
  end
end

function engine.set_breakpoint(spec)
  if type(spec) ~= "table" then error("set_breakpoint: table expected", 2) end
  local file = spec.file or spec.path
  local line = math.tointeger(spec.line)
  if type(file) ~= "string" or file == "" then error("set_breakpoint: file expected", 2) end
  if not line or line < 1 then error("set_breakpoint: line number expected", 2) end
  next_bp = next_bp + 1
  local bp = {
    id = next_bp, pattern = file, requested_line = line, enabled = true, hits = 0,
    condition = spec.condition, hit_condition = spec.hit_condition,
    log_message = spec.log_message, temporary = spec.temporary and true or false,
  }
  if bp.condition then
    local ok, err = load("return " .. bp.condition, "=(condition)")
    if not ok then error("set_breakpoint: bad condition: " .. err, 2) end
  end
  note_stacks()
  place(bp)
  bps[bp.id] = bp
  changed()
  arm()
  hook_stacks()
  return bp
end

function engine.clear_breakpoint(id)
  if not bps[id] then return false end
  bps[id] = nil
  changed()
  arm()
  return true
end

function engine.clear_file(file)
  for id, bp in pairs(bps) do
    if bp.pattern == file or bp.file == file or matches(bp.file, file) then bps[id] = nil end
  end
  changed()
  arm()
end

function engine.enable(id, on)
  local bp = bps[id]
  if not bp then return false end
  bp.enabled = on and true or false
  changed()
  arm()
  if on then hook_stacks() end
  return true
end

function engine.breakpoints()
  local list = {}
  for _, bp in pairs(bps) do list[#list + 1] = bp end
  table.sort(list, function(a, b) return a.id < b.id end)
  return list
end

-- Watches: { id, expr, value (last seen), known }
-- engine.watch(expr [, thread, level]) -> watch | nil, err: the value
-- now is taken in that frame (the global scope without one).
function engine.watch(expr, thread, level)
  local ok = load("return " .. expr, "=(watch)")
  if not ok then return nil, "bad expression: " .. expr end
  next_watch = next_watch + 1
  local co = thread ~= nil and thread_co(thread) or nil
  -- set in a frame, it watches that function's view of the names (a
  -- local there is no local of its callees): only its lines check it
  local info = co and info_at(co, level or 0, "f")
  local w = { id = next_watch, expr = expr, fn = info and info.func }
  local _, n, v = run_in(co, level or 0, expr)
  if n > 0 then w.value, w.known = v, true end
  watches[w.id] = w
  changed()
  arm()
  hook_stacks()
  return w
end

function engine.unwatch(id)
  if not watches[id] then return false end
  watches[id] = nil
  changed()
  arm()
  return true
end

function engine.watches()
  local list = {}
  for _, w in pairs(watches) do list[#list + 1] = w end
  table.sort(list, function(a, b) return a.id < b.id end)
  return list
end

--[[ The hook ===============================================================]]

is_interesting = function(source)
  local v = interest[source]
  if v ~= nil then return v end
  seen_sources[source] = true
  v = false
  if not own_sources[source] then
    if next(watches) then
      v = true
    else
      for _, bp in pairs(bps) do
        if bp.enabled and source_matches(source, bp.pattern) then v = true break end
      end
    end
  end
  interest[source] = v
  return v
end

-- { [line] = { bp... } } for a source with breakpoints.
local function line_map(source)
  local map = line_maps[source]
  if map then return map end
  map = {}
  for _, bp in pairs(bps) do
    if bp.enabled and source_matches(source, bp.pattern) then
      local list = map[bp.line] or {}
      list[#list + 1] = bp
      map[bp.line] = list
      if not bp.verified then   -- found now: a file loaded after the break
        bp.file, bp.verified = path_of(source), true
      end
    end
  end
  line_maps[source] = map
  return map
end

-- A function entered: a breakpoint inside it on a line without code moves
-- to the function's next line with code (its active lines say which).
local function refine(level, source)
  local info = getinfo(level, "fSL")
  if not info or refined[info.func] or not info.activelines then return end
  refined[info.func] = true
  local active = info.activelines
  local moved = false
  for _, bp in pairs(bps) do
    local l = bp.line
    if source_matches(source, bp.pattern) and l >= info.linedefined
       and l <= info.lastlinedefined and not active[l] then
      local to = l + 1
      while to <= info.lastlinedefined and not active[to] do to = to + 1 end
      if active[to] and not bp.exact then
        bp.line = to
        bp.message = "moved from line " .. bp.requested_line
        moved = true
      end
    elseif source_matches(source, bp.pattern) and active[l] then
      bp.exact = true
    end
  end
  if moved then line_maps = {} end
end

local function depth_of(base)
  local d = base
  while getinfo(d, "l") do d = d + 1 end
  return d - base
end

local function hit_ok(bp)
  local hc = bp.hit_condition
  if not hc or hc == "" then return true end
  local op, n = hc:match("^%s*([<>=%%!~]*)%s*(%d+)%s*$")
  n = tonumber(n)
  if not n then return true end
  local h = bp.hits
  if op == "" or op == "==" or op == "=" then return h == n
  elseif op == ">=" then return h >= n
  elseif op == ">" then return h > n
  elseif op == "<=" then return h <= n
  elseif op == "<" then return h < n
  elseif op == "%" then return n > 0 and h % n == 0
  elseif op == "!=" or op == "~=" then return h ~= n end
  return true
end

local function interpolate(co, msg)
  return (msg:gsub("{(.-)}", function(expr)
    local ok, n, v = run_in(co, 0, expr)
    if not ok then return "{" .. tostring(v) .. "}" end
    if n == 0 then return "nil" end
    return type(v) == "string" and v or short(v, 2)
  end))
end


-- Stop the thread running now (inside the hook) -> the handler's answer.
local function do_stop(co, reason, bp, source, line, yieldable, description)
  local id, task = thread_id(co)
  local base = find_base()
  local stop = {
    thread = id, reason = reason, bp = bp, file = path_of(source), line = line,
    description = description,
  }
  local depth = depth_of(base)
  if mode == "remote" then
    if not stop_fn then   -- no front-end: nobody could resume it
      emit({ event = "skipped", file = stop.file, line = line, reason = reason,
             thread = id, why = "no debugger attached" })
      return nil
    end
    if co == main_thread or not task or not yieldable then
      emit({ event = "skipped", file = stop.file, line = line, reason = reason,
             thread = id,
             why = co == main_thread and "not a coroutine"
               or (not task and "not a task") or "not yieldable here" })
      return nil
    end
    local locals0 = {}
    for i = 1, math.huge do
      local name = getlocal(base, i)
      if not name then break end
      if name:sub(1, 1) ~= "(" then locals0[#locals0 + 1] = { name = name, index = i } end
    end
    task[STATE], task[WHAT], task[ON] = "waiting", "debugger", reason
    stopped[id] = { co = co, task = task, stop = stop, depth = depth, line = line,
                    locals0 = locals0 }
    local reporter = event.fork(function()
      if stop_fn then stop_fn(stop) end
    end):set_name("debugger stop")
    engine.own_task(reporter)
    return "yield"
  end
  -- local: everything stops while the front-end runs, inside the hook
  local rec = { co = co, stop = stop, depth = depth, line = line }
  stopped[id] = rec
  busy = busy + 1
  if stop_fn then
    local ok, err = xpcall(stop_fn, debug.traceback, stop)
    if not ok then core.log("error", "debugger: " .. tostring(err)) end
  end
  busy = busy - 1
  if stopped[id] == rec then   -- no resume: continue
    stopped[id] = nil
    stepping[co] = nil
    reset_refs()
  end
  return nil
end

local function on_line(co, source, line, yieldable)
  if own_sources[source] then return end
  -- a step or pause of this thread
  local st = stepping[co]
  if st then
    local stop_it = false
    if st.how == "entry" then
      stop_it = source == st.source
    elseif is_library(source) and not st.in_library then
      if st.depth and depth_of(3) < st.depth then
        stepping[co] = nil   -- back in the scheduler: the step is over
        set_mask(co, "c")
        arm()
      end
    elseif st.how == "pause" or st.how == "step" then
      stop_it = true
    else
      local depth = depth_of(3)
      if st.how == "next" then stop_it = depth <= st.depth
      elseif st.how == "finish" then stop_it = depth < st.depth
      elseif st.how == "until" then
        stop_it = depth < st.depth or (depth == st.depth and line > st.line)
      end
    end
    if stop_it then
      stepping[co] = nil
      local reason = st.how == "pause" and "pause" or (st.how == "entry" and "entry" or "step")
      return (do_stop(co, reason, nil, source, line, yieldable))
    end
  end
  -- (is_interesting, not the cache alone: a breakpoint set since the
  -- thread entered this function emptied the cache)
  local map = is_interesting(source) and line_map(source)
  local list = map and map[line]
  if list then
    for _, bp in ipairs(list) do
      if bp.enabled then
        local go = true
        if bp.condition then
          local ok, n, v = run_in(co, 0, bp.condition)
          go = ok and n > 0 and v and true or false
        end
        if go then
          bp.hits = bp.hits + 1
          if hit_ok(bp) then
            if bp.log_message then
              emit({ event = "output", text = interpolate(co, bp.log_message) .. "\n",
                     bp = bp })
            else
              if bp.temporary then engine.clear_breakpoint(bp.id) end
              return (do_stop(co, "breakpoint", bp, source, line, yieldable,
                              ("breakpoint %d"):format(bp.id)))
            end
          end
        end
      end
    end
  end
  if next(watches) then
    local fn = getinfo(3, "f").func   -- the function of this line
    for _, w in pairs(watches) do
      local ok, n, v
      if w.fn == nil or w.fn == fn then ok, n, v = run_in(co, 0, w.expr) end
      if ok and n > 0 then
        if w.known and v ~= w.value then
          local old = w.value
          w.value = v
          return (do_stop(co, "watch", nil, source, line, yieldable,
                          ("watch %d: %s: %s -> %s"):format(w.id, w.expr, short(old, 1),
                                                            short(v, 1))))
        end
        w.value, w.known = v, true
      end
    end
  end
end

handler = function(ev, source, line, yieldable)
  if busy > 0 then return nil end
  local co = co_running()
  -- (no tail calls: find_base looks for this frame)
  if ev == "line" then return (on_line(co, source, line, yieldable)) end
  if stepping[co] then return nil end   -- stepping: every line, mask stays
  if ev == "return" then
    local caller = getinfo(3, "S")
    if caller and is_interesting(caller.source) then
      set_mask(co, "crl")
      return nil
    end
    local lv = 4
    while true do
      local info = getinfo(lv, "S")
      if not info then break end
      if is_interesting(info.source) then set_mask(co, "cr") return nil end
      lv = lv + 1
    end
    set_mask(co, "c")
    return nil
  end
  -- a call or tail call
  if is_interesting(source) then
    refine(3, source)
    set_mask(co, "crl")
    return nil
  end
  local mask = core.debug_gethook(co)
  if mask == "crl" then set_mask(co, "cr") return nil end
  if mask == "c" then return "skip" end
  return nil
end

-- Hooks on while there is anything to stop for; none otherwise.
arm = function()
  local need = next(bps) ~= nil or next(watches) ~= nil or next(stepping) ~= nil
  if need and not armed then
    armed = true
    core.debug_handler(handler)
    core.debug_sethook(main_thread, "c")
    local me = co_running()
    if me ~= main_thread then core.debug_sethook(me, "c") end
    for _, t in ipairs(event.tasks()) do
      local co = t.handle[SLOTS.CO]
      if co and co ~= me then core.debug_sethook(co, "c") end
    end
  elseif not need and armed and next(stopped) == nil then
    armed = false
    core.debug_handler(nil)
  end
end

--[[ Running and stopping ===================================================]]

function engine.set_mode(m)
  if m ~= "local" and m ~= "remote" then error("set_mode: 'local' or 'remote' expected", 2) end
  mode = m
end

function engine.mode() return mode end

function engine.on_stop(fn) stop_fn = fn end

function engine.on_event(fn)
  event_fns[#event_fns + 1] = fn
  return fn
end

function engine.off_event(fn)
  for i = #event_fns, 1, -1 do
    if event_fns[i] == fn then table.remove(event_fns, i) end
  end
end

function engine.stopped(thread)
  if thread ~= nil then
    local rec = stopped[thread]
    return rec and rec.stop
  end
  local list = {}
  for _, rec in pairs(stopped) do list[#list + 1] = rec.stop end
  table.sort(list, function(a, b) return a.thread < b.thread end)
  return list
end

-- engine.resume(thread, how) -> true | nil, err
function engine.resume(thread, how)
  how = how or "continue"
  local rec = stopped[thread]
  if not rec then return nil, "thread " .. tostring(thread) .. " is not stopped" end
  if how ~= "continue" then
    if how ~= "next" and how ~= "step" and how ~= "finish" and how ~= "until" then
      return nil, "resume: unknown way '" .. tostring(how) .. "'"
    end
    stepping[rec.co] = { how = how, depth = rec.depth, line = rec.line,
                         in_library = is_library("@" .. rec.stop.file) }
    set_mask(rec.co, "crl")
  end
  stopped[thread] = nil
  reset_refs()
  arm()
  emit({ event = "continued", thread = thread })
  if rec.task then event._wake(rec.task) end
  return true
end

-- engine.pause(thread): stop it at its next Lua line.
function engine.pause(thread)
  local co = thread_co(thread)
  if not co then return nil, "no thread " .. tostring(thread) end
  stepping[co] = { how = "pause" }
  arm()
  set_mask(co, "crl")
  return true
end

-- engine.stop_at_entry(source [, co]): stop the coroutine (the running
-- one) at the first line it runs in source (a chunk name, "@path").
function engine.stop_at_entry(source, co)
  co = co or co_running()
  stepping[co] = { how = "entry", source = source }
  arm()
  set_mask(co, "crl")
end

-- engine.break_here([reason]): stop the caller at its next line
-- (debugger.breakpoint()).
function engine.break_here()
  local co = co_running()
  stepping[co] = { how = "step" }
  arm()
  set_mask(co, "crl")
end

-- engine.own(source): never stop in this file (the front-ends' own).
function engine.own(source) own_sources[source] = true end
engine.own(debug.getinfo(1, "S").source)

-- One front-end session at a time may drive the engine.
local owner
function engine.claim(name)
  if owner and owner ~= name then
    return nil, "a debugger session is already attached (" .. owner .. ")", "busy"
  end
  owner = name
  return true
end

function engine.release(name)
  if owner == name then owner = nil end
end

function engine.owner() return owner end

-- engine.detach(): breakpoints and watches gone, stopped threads resumed.
function engine.detach()
  bps, watches = {}, {}
  for co in pairs(stepping) do stepping[co] = nil end
  for id in pairs(stopped) do engine.resume(id, "continue") end
  changed()
  arm()
end

--[[ The debuggee's life ====================================================]]
-- While a front-end asks (engine.track(true): the DAP adapter, while a
-- client is attached) the engine reports what a debugger's threads view
-- needs: "thread" events (reason "started" or "exited", thread = the task
-- id) as tasks come and go, "exited" (status =) and "terminated" when the
-- process ends through os.exit or core.exit, and "terminated" when the
-- main chunk has ended leaving nothing that could run again (no task,
-- timer, fd watch, stream or listener but the front-end's own).
-- event.lua has no hook for a task's start and end, so a timer compares
-- the live tasks every TRACK_INTERVAL seconds (and engine.sync_threads()
-- does at once: before a stop is announced, say); a task that starts and
-- ends between two looks is never reported. Without a tracker none of
-- this runs.

engine.TRACK_INTERVAL = 0.1

-- event.lua's live tasks (the values), read without building
-- event.tasks()'s tracebacks.
local live_tasks = event._live_tasks()

local own_tasks = setmetatable({}, { __mode = "k" })     -- task -> true
local own_objects = setmetatable({}, { __mode = "k" })   -- userdata -> true
local tracking = false
local known_tasks = {}      -- id -> task, at the last look
local track_timer
local real_os_exit, real_core_exit, our_os_exit, our_core_exit

-- engine.own_task(task): a front-end's task, never reported as a thread.
function engine.own_task(task)
  own_tasks[task] = true
  return task
end

-- engine.own_object(userdata): a front-end's stream, listener or timer:
-- it does not keep the debuggee alive.
function engine.own_object(ud)
  own_objects[ud] = true
  return ud
end

local function each_live_task(fn)
  for _, task in pairs(live_tasks) do
    if not own_tasks[task] and task[STATE] ~= "dead" then fn(task) end
  end
end

-- Signal watchers keep no loop running (libev unrefs them).
local NOT_KEEPING = { ["evlua.signal"] = true }

-- Whether anything but the front-ends could still run code: a live task,
-- or an active evlua resource (anchored in the registry while active).
local function anything_left()
  local found = false
  each_live_task(function() found = true end)
  if found or core.stats().fdwatches > 0 then return true end
  for _, v in pairs(debug.getregistry()) do
    if type(v) == "userdata" and not own_objects[v] then
      local mt = debug.getmetatable(v)
      local name = mt and mt.__name
      if type(name) == "string" and name:match("^evlua%.") and not NOT_KEEPING[name] then
        return true
      end
    end
  end
  return false
end

-- engine.sync_threads(): report the tasks started and ended since the
-- last look (tracking only).
function engine.sync_threads()
  if not tracking then return end
  local now, started, exited = {}, {}, {}
  each_live_task(function(task)
    now[task[ID]] = task
    if not known_tasks[task[ID]] then started[#started + 1] = task[ID] end
  end)
  local main_ended = false
  for id, task in pairs(known_tasks) do
    if not now[id] then
      exited[#exited + 1] = id
      if task.main then main_ended = true end
    end
  end
  known_tasks = now
  table.sort(started)
  table.sort(exited)
  for _, id in ipairs(started) do emit({ event = "thread", reason = "started", thread = id }) end
  for _, id in ipairs(exited) do emit({ event = "thread", reason = "exited", thread = id }) end
  if main_ended and not anything_left() then emit({ event = "terminated" }) end
end

-- The process ends: the front-ends hear it first (os.exit writes what
-- was queued to the sockets; a core.exit from a task is flushed with the
-- rest of its loop iteration).
local function exit_status(code)
  if code == true or code == nil then return 0 end
  if code == false then return 1 end
  return math.tointeger(code) or 0
end

local function announce_exit(code)
  if not tracking then return end
  engine.sync_threads()
  emit({ event = "exited", status = exit_status(code) })
  emit({ event = "terminated" })
  engine.track(false)
end

-- engine.track(on): thread, exited and terminated events on or off.
function engine.track(on)
  if on and not tracking then
    tracking = true
    known_tasks = {}
    each_live_task(function(task) known_tasks[task[ID]] = task end)
    track_timer = core.timer(function() engine.sync_threads() end)
    engine.own_object(track_timer)
    track_timer:start(engine.TRACK_INTERVAL, engine.TRACK_INTERVAL)
    real_os_exit, real_core_exit = os.exit, core.exit
    our_os_exit = function(code, close)
      announce_exit(code)
      return real_os_exit(code, close)
    end
    our_core_exit = function(code)
      announce_exit(code)
      return real_core_exit(code)
    end
    os.exit, core.exit = our_os_exit, our_core_exit   -- luacheck: ignore 122
  elseif not on and tracking then
    tracking = false
    known_tasks = {}
    track_timer:stop()
    track_timer = nil
    -- (unless someone wrapped them since: theirs stay, calling ours)
    if os.exit == our_os_exit then os.exit = real_os_exit end   -- luacheck: ignore 122
    if core.exit == our_core_exit then core.exit = real_core_exit end
  end
end

function engine.tracking() return tracking end

-- Whether a hook is installed now (for tests and the docs' cost claim).
function engine.armed() return armed end

engine._emit = emit
engine._path_of = path_of

return engine
