-- evlua/debug_cli.lua - the gdb-style command interpreter of the debugger,
-- shared by the terminal (`evlua --debug`, evlua/debugger.lua) and the
-- console port (`evlua console PORT debug`, evlua/console.lua). It turns
-- one command line into text and drives evlua/debug_engine.lua; the
-- front-end reads the lines and writes the text. docs/debugger.md lists
-- the commands.

local engine = require "evlua.debug_engine"
local event = require "event"
local trim = require("evlua.text").trim

engine.own(debug.getinfo(1, "S").source)

local cli = {}

local Session = {}
Session.__index = Session

-- cli.new{ remote = bool, wait = seconds (remote: how long continue and
-- the steps wait for the next stop) } -> session
function cli.new(opts)
  opts = opts or {}
  local self = setmetatable({
    remote = opts.remote and true or false, wait = opts.wait or 30,
    thread = nil, level = 0, displays = {}, last = nil, list_at = nil,
    notices = {}, token = {},
  }, Session)
  return self
end

--[[ Helpers ================================================================]]

local file_cache = {}
local function file_lines(path)
  local lines = file_cache[path]
  if lines then return lines end
  local f = io.open(path)
  if not f then return nil end
  lines = {}
  for l in f:lines() do lines[#lines + 1] = l end
  f:close()
  file_cache[path] = lines
  return lines
end

local function source_line(path, line)
  local lines = file_lines(path)
  return lines and lines[line]
end

local function frame(self)
  if self.thread == nil then return nil end
  local frames = engine.frames(self.thread, self.level, 1)
  return frames[1]
end

local function thread_name(id)
  if id == 0 then return "main thread" end
  for _, t in ipairs(engine.threads()) do
    if t.id == id then return t.name end
  end
  return "coroutine " .. tostring(id)
end

-- The text announcing a stop (and the displays).
function Session:stopped(stop)
  self.thread, self.level = stop.thread, 0
  self.list_at = nil
  local head
  if stop.reason == "breakpoint" then
    head = ("Breakpoint %d, %s"):format(stop.bp.id, thread_name(stop.thread))
  elseif stop.reason == "watch" then
    head = ("Watchpoint: %s, %s"):format(stop.description or "", thread_name(stop.thread))
  elseif stop.reason == "entry" then
    head = "Stopped at entry, " .. thread_name(stop.thread)
  else
    head = thread_name(stop.thread)
  end
  local top = frame(self)
  local out = { ("%s stopped at %s:%d%s"):format(head, stop.file, stop.line,
                                               top and " in " .. top.name or "") }
  local text = source_line(stop.file, stop.line)
  if text then out[#out + 1] = ("%d\t%s"):format(stop.line, text) end
  for i, d in ipairs(self.displays) do
    -- a display made in a function shows in that function only (as gdb's
    -- shows only where its names are in scope)
    if d and (d.func == nil or (top and top.func == d.func)) then
      local v, err = engine.evaluate(self.thread, 0, d.expr)
      out[#out + 1] = ("%d: %s = %s"):format(i, d.expr, v or ("<error: " .. tostring(err) .. ">"))
    end
  end
  return table.concat(out, "\n")
end

-- A file:line, or a line of the selected frame's file.
local function location(self, spec)
  local file, line = spec:match("^(.-):(%d+)$")
  if not file then
    line = spec:match("^%d+$")
    local f = frame(self)
    file = f and f.file
  end
  return file, tonumber(line)
end

--[[ Commands ===============================================================]]

local commands, aliases = {}, {}
local help = {}

local function def(names, usage, text, fn)
  for i, name in ipairs(names) do
    if i == 1 then commands[name] = fn else aliases[name] = names[1] end
  end
  help[#help + 1] = { usage = usage, text = text }
end

def({ "help", "h" }, "help", "this list", function()
  local width = 0
  for _, h in ipairs(help) do width = math.max(width, #h.usage) end
  local out = {}
  for _, h in ipairs(help) do
    out[#out + 1] = ("%-" .. width .. "s  %s"):format(h.usage, h.text)
  end
  return table.concat(out, "\n")
end)

local function set_break(self, args, temporary)
  local spec, cond = args:match("^(%S+)%s+if%s+(.+)$")
  spec = spec or args:match("^(%S+)$")
  if not spec then return nil, "usage: break file:line [if cond]" end
  local file, line = location(self, spec)
  if not file or not line then return nil, "usage: break file:line [if cond]" end
  local ok, bp = pcall(engine.set_breakpoint, { file = file, line = line,
                                               condition = cond, temporary = temporary })
  if not ok then return nil, tostring(bp):gsub("^.-set_breakpoint: ", "") end
  local out = ("%s %d at %s:%d"):format(temporary and "Temporary breakpoint" or "Breakpoint",
                                        bp.id, bp.file, bp.line)
  if bp.message then out = out .. " (" .. bp.message .. ")" end
  return out
end

def({ "break", "b" }, "break file:line [if cond]", "set a breakpoint (file matches by suffix)",
    function(self, args) return set_break(self, args, false) end)
def({ "tbreak" }, "tbreak file:line [if cond]", "a breakpoint deleted once hit",
    function(self, args) return set_break(self, args, true) end)

def({ "delete", "d" }, "delete [n]", "delete breakpoint n (all without n)", function(_, args)
  if args == "" then
    for _, bp in ipairs(engine.breakpoints()) do engine.clear_breakpoint(bp.id) end
    return "Deleted all breakpoints"
  end
  local id = tonumber(args)
  if not id or not engine.clear_breakpoint(id) then return nil, "no breakpoint " .. args end
  return "Deleted breakpoint " .. id
end)

local function toggle(on)
  return function(_, args)
    local id = tonumber(args)
    if not id or not engine.enable(id, on) then return nil, "no breakpoint " .. args end
    return (on and "Enabled" or "Disabled") .. " breakpoint " .. id
  end
end
def({ "disable" }, "disable n", "disable breakpoint n", toggle(false))
def({ "enable" }, "enable n", "enable breakpoint n", toggle(true))

local function need_stop(self)
  if self.thread == nil or not engine.stopped(self.thread) then
    return nil, "no coroutine is stopped (coroutines lists them)"
  end
  return true
end

local function variables_text(list)
  if #list == 0 then return "none" end
  local out = {}
  for _, v in ipairs(list) do out[#out + 1] = v.name .. " = " .. v.value end
  return table.concat(out, "\n")
end

local function scope_vars(self, name)
  for _, s in ipairs(engine.scopes(self.thread, self.level)) do
    if s.name == name then return (engine.variables(s.ref)) end
  end
  return {}
end

def({ "info", "i" }, "info breakpoints|locals|args|upvalues|watch|display",
    "list breakpoints, the frame's variables, watches, displays", function(self, args)
  local what = args:match("^(%a+)") or ""
  if ("breakpoints"):sub(1, #what) == what and what ~= "" then
    local list = engine.breakpoints()
    if #list == 0 then return "No breakpoints." end
    local out = { "Num  Enb  Hits  Where" }
    for _, bp in ipairs(list) do
      local where = ("%s:%d"):format(bp.file, bp.line)
      if bp.condition then where = where .. " if " .. bp.condition end
      if bp.temporary then where = where .. " (temporary)" end
      if not bp.verified then where = where .. " (pending)" end
      out[#out + 1] = ("%-4d %-4s %-5d %s"):format(bp.id, bp.enabled and "y" or "n", bp.hits, where)
    end
    return table.concat(out, "\n")
  elseif what == "watch" or what == "watchpoints" then
    local out = {}
    for _, w in ipairs(engine.watches()) do
      out[#out + 1] = ("%d  %s = %s"):format(w.id, w.expr, engine.format(w.value, 1))
    end
    return #out > 0 and table.concat(out, "\n") or "No watchpoints."
  elseif what == "display" then
    local out = {}
    for i, d in ipairs(self.displays) do if d then out[#out + 1] = i .. ": " .. d.expr end end
    return #out > 0 and table.concat(out, "\n") or "No displays."
  end
  local ok, err = need_stop(self)
  if not ok then return nil, err end
  if what == "locals" then
    local f = frame(self)
    local list = scope_vars(self, "Locals")
    return variables_text(table.move(list, (f and f.nparams or 0) + 1, #list, 1, {}))
  elseif what == "args" then
    local f = frame(self)
    return variables_text(table.move(scope_vars(self, "Locals"), 1, f and f.nparams or 0, 1, {}))
  elseif what == "upvalues" then
    return variables_text(scope_vars(self, "Upvalues"))
  end
  return nil, "info what? (breakpoints, locals, args, upvalues, watch, display)"
end)

local function frame_line(f, selected)
  local where = f.what == "C" and "[C]" or ("%s:%d"):format(f.file, f.line)
  return ("%s#%-2d %s in %s"):format(selected and "*" or " ", f.level, where, f.name)
end

def({ "backtrace", "bt", "where" }, "backtrace", "every frame of the stopped coroutine",
    function(self)
  local ok, err = need_stop(self)
  if not ok then return nil, err end
  local out = {}
  for _, f in ipairs((engine.frames(self.thread))) do
    out[#out + 1] = frame_line(f, f.level == self.level)
  end
  return table.concat(out, "\n")
end)

local function select_frame(self, level)
  local ok, err = need_stop(self)
  if not ok then return nil, err end
  local frames, total = engine.frames(self.thread, level, 1)
  if level < 0 or level >= total or not frames[1] then return nil, "no frame " .. level end
  self.level, self.list_at = level, nil
  local f = frames[1]
  local out = frame_line(f, true)
  local text = f.what ~= "C" and source_line(f.file, f.line)
  if text then out = out .. "\n" .. f.line .. "\t" .. text end
  return out
end

def({ "frame", "f" }, "frame [n]", "select frame n (show the selected one)", function(self, args)
  return select_frame(self, tonumber(args) or self.level)
end)
def({ "up" }, "up [n]", "select the caller's frame", function(self, args)
  return select_frame(self, self.level + (tonumber(args) or 1))
end)
def({ "down" }, "down [n]", "select the callee's frame", function(self, args)
  return select_frame(self, self.level - (tonumber(args) or 1))
end)

-- The function a name (a.b.c) stands for in the selected frame, else in
-- any frame of any coroutine, as gdb finds one anywhere (`list work`
-- inside work, which is a local of its caller). Only names are looked
-- up everywhere: an expression could have effects.
local function find_function(self, name)
  local _, _, _, fn = engine.evaluate(self.thread, self.level, name)
  if type(fn) == "function" or not name:match("^[%a_][%w_]*[%w_.]*$") then return fn end
  for _, t in ipairs(engine.threads()) do
    local _, total = engine.frames(t.id, 0, 0)
    for level = 0, total - 1 do
      local _, _, _, v = engine.evaluate(t.id, level, name)
      if type(v) == "function" then return v end
    end
  end
end

def({ "list", "l" }, "list [[file:]line | function]", "source around a line", function(self, args)
  local file, line
  if args == "" then
    if self.list_at then
      file, line = self.list_at[1], self.list_at[2] + 5
    else
      local f = frame(self)
      if not f then return nil, "no source selected: list file:line" end
      file, line = f.file, f.line
    end
  elseif args:match(":%d+$") or args:match("^%d+$") then
    file, line = location(self, args)
  else   -- a function: a name seen from the selected frame, or any frame
    local fn = find_function(self, args)
    if type(fn) ~= "function" then return nil, "no function " .. args end
    local info = debug.getinfo(fn, "S")
    if info.what == "C" then return nil, args .. " is a C function" end
    file, line = info.source:gsub("^@", ""), info.linedefined + 4
  end
  if not file then return nil, "no file" end
  file = engine.resolve(file) or file   -- by suffix, as break does
  local lines = file_lines(file)
  if not lines then return nil, "cannot read " .. file end
  local first, last = math.max(1, line - 5), math.min(#lines, line + 4)
  if first > #lines then return nil, ("line %d is past the end of %s"):format(line, file) end
  local f = frame(self)
  local out = {}
  for i = first, last do
    local mark = (f and f.file == file and f.line == i) and "=>" or "  "
    out[#out + 1] = ("%s%-4d %s"):format(mark, i, lines[i])
  end
  self.list_at = { file, line }
  return table.concat(out, "\n")
end)

def({ "print", "p" }, "print expr", "evaluate expr in the selected frame", function(self, args)
  if args == "" then return nil, "usage: print expr" end
  local v, err = engine.evaluate(self.thread, self.level, args)
  if not v then return nil, err end
  return v
end)

def({ "set" }, "set var name = expr", "assign to a local, upvalue or global", function(self, args)
  local name, expr = args:match("^var%s+([%a_][%w_]*)%s*=%s*(.+)$")
  if not name then name, expr = args:match("^([%a_][%w_]*)%s*=%s*(.+)$") end
  if not name then return nil, "usage: set var name = expr" end
  local v, err = engine.set_variable(self.thread, self.level, name, expr)
  if not v then return nil, err end
  return name .. " = " .. v
end)

def({ "display" }, "display [expr]", "show expr at every stop (the list without expr)",
    function(self, args)
  if args == "" then return commands.info(self, "display") end
  local f = self.thread ~= nil and engine.stopped(self.thread) and frame(self)
  self.displays[#self.displays + 1] = { expr = args, func = f and f.func or nil }
  local v = self.thread and engine.evaluate(self.thread, self.level, args)
  return ("%d: %s = %s"):format(#self.displays, args, v or "?")
end)

def({ "undisplay" }, "undisplay n", "stop showing display n", function(self, args)
  local n = tonumber(args)
  if not n or not self.displays[n] then return nil, "no display " .. args end
  self.displays[n] = false
  return "Deleted display " .. n
end)

def({ "watch" }, "watch expr", "stop when the value of expr changes", function(self, args)
  if args == "" then return nil, "usage: watch expr" end
  local stopped = self.thread ~= nil and engine.stopped(self.thread)
  local w, err = engine.watch(args, stopped and self.thread or nil, self.level)
  if not w then return nil, err end
  return ("Watchpoint %d: %s = %s"):format(w.id, w.expr, engine.format(w.value, 1))
end)

def({ "unwatch" }, "unwatch n", "delete watchpoint n", function(_, args)
  local n = tonumber(args)
  if not n or not engine.unwatch(n) then return nil, "no watchpoint " .. args end
  return "Deleted watchpoint " .. n
end)

def({ "coroutines", "threads" }, "coroutines", "every live coroutine, what it waits on",
    function(self)
  local out = {}
  for _, t in ipairs(engine.threads()) do
    local state = t.status
    local stop = engine.stopped(t.id)
    if stop then state = ("stopped at %s:%d (%s)"):format(stop.file, stop.line, stop.reason)
    elseif t.waits then state = state .. " " .. t.waits end
    if t.cancelled then state = state .. ", cancelled: its next wait fails" end
    local mark = t.id == self.thread and "*" or " "
    out[#out + 1] = ("%s%-4d %s [%s]"):format(mark, t.id, t.name, state)
  end
  return table.concat(out, "\n")
end)

def({ "coroutine", "thread" }, "coroutine n", "select coroutine n", function(self, args)
  local id = tonumber(args)
  if not id then return nil, "usage: coroutine n" end
  local known = false
  for _, t in ipairs(engine.threads()) do if t.id == id then known = true end end
  if not known then return nil, "no coroutine " .. args end
  self.thread, self.level, self.list_at = id, 0, nil
  local stop = engine.stopped(id)
  local head = ("[coroutine %d: %s]"):format(id, thread_name(id))
  if stop then return ("%s stopped at %s:%d"):format(head, stop.file, stop.line) end
  return head .. " (not stopped: backtrace shows where it waits)"
end)

-- Resume the selected stopped coroutine; remote: wait for the next stop.
local function resume(how)
  return function(self)
    -- a stop not yet reported: report it (this reply carries it)
    if self.pending_stop then return "", nil end
    local stop = self.thread and engine.stopped(self.thread)
    if not stop then
      if how ~= "continue" or not self.remote then
        return nil, "no coroutine is stopped (coroutines lists them)"
      end
    else
      local ok, err = engine.resume(self.thread, how)
      if not ok then return nil, err end
    end
    if not self.remote then return "", "resumed" end
    return self:wait_stop(), "resumed"
  end
end

def({ "step", "s" }, "step", "run to the next line, into calls", resume("step"))
def({ "next", "n" }, "next", "run to the next line in this function or its callers", resume("next"))
def({ "finish", "fin" }, "finish", "run until the selected function returns", resume("finish"))
def({ "until", "u" }, "until", "next, but never back to a line above (out of a loop)",
    resume("until"))
def({ "continue", "c", "cont" }, "continue",
    "resume the stopped coroutine (remote: wait for a stop)", resume("continue"))

def({ "detach" }, "detach", "delete breakpoints and watches, resume everything, leave",
    function()
  engine.detach()
  return "Detached.", "detach"
end)

def({ "quit", "q" }, "quit", "leave the debugger (terminal: end the process; remote: detach)",
    function(self)
  if self.remote then
    engine.detach()
    return "Detached.", "detach"
  end
  return "", "quit"
end)

--[[ Sessions ===============================================================]]

-- session:execute(line) -> text, action: action is "resumed" (the
-- stopped code runs again), "detach", "quit" or nil. Errors come back as
-- text too, "error: ..." (an empty line repeats the last command).
function Session:execute(line)
  line = trim(line)
  if line == "" then line = self.last or "" end
  if line == "" then return "" end
  local name, args = line:match("^(%S+)%s*(.*)$")
  name = aliases[name] or name
  local fn = commands[name]
  if not fn then return ("error: unknown command '%s' (try help)"):format(name) end
  self.last = line
  local ok, text, action = pcall(fn, self, args)
  if not ok then return "error: " .. tostring(text) end
  if text == nil then return "error: " .. tostring(action) end
  local notices = self:take_notices()
  if notices ~= "" then text = notices .. (text ~= "" and "\n" .. text or "") end
  return text, action
end

-- Remote: stops and log output arrive from the engine between commands.
function Session:notice(text)
  self.notices[#self.notices + 1] = text
  event.wakeup(self.token)
end

function Session:take_notices()
  local text = table.concat(self.notices, "\n")
  self.notices = {}
  self.pending_stop = false
  return text
end

function Session:stop_arrived(stop)
  self.pending_stop = true
  self:notice(self:stopped(stop))
end

-- Wait (remote) for the next stop; its announcement, or a note.
function Session:wait_stop()
  local deadline = event.now() + self.wait
  while not self.pending_stop do
    local left = deadline - event.now()
    if left <= 0 then break end
    event.wait(self.token, left)
  end
  if self.pending_stop then return "" end   -- the notices carry it
  return ("Running; no stop within %g s (the next command reports stops)"):format(self.wait)
end

return cli
