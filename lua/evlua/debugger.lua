-- evlua/debugger.lua - the debugger's public module (docs/debugger.md):
--   debugger.debugger(func, file, line)  run func in a coroutine with a
--                                        breakpoint at file:line, gdb
--                                        prompt on the terminal
--   debugger.breakpoint()                stop here (JavaScript's debugger;)
--   debugger.attach_console([port|opts]) remote mode through the console
--                                        port: `evlua console PORT debug`
--   debugger.start_terminal()            the gdb prompt on the terminal
--                                        for every stop (what --debug uses)
-- The engine is evlua/debug_engine.lua, the commands evlua/debug_cli.lua.

local core = require "evlua.core"
local event = require "event"
local engine = require "evlua.debug_engine"
local cli = require "evlua.debug_cli"

engine.own(debug.getinfo(1, "S").source)

local debugger = { engine = engine }

debugger.PROMPT = "(evdb) "

local terminal   -- the terminal's cli session, once started

local function out(text)
  if text and text ~= "" then
    io.stdout:write(text, "\n")
  end
  io.stdout:flush()
end

-- At the terminal the whole process stops: the prompt reads stdin right
-- inside the stopped code (the loop does not run meanwhile).
local function prompt_loop(stop)
  out(terminal:stopped(stop))
  while true do
    io.stdout:write(debugger.PROMPT)
    io.stdout:flush()
    local line = io.stdin:read("l")
    if line == nil then   -- end of input: as quit
      out("")
      os.exit(0, true)
    end
    local text, action = terminal:execute(line)
    out(text)
    if action == "quit" then os.exit(0, true) end
    if action == "resumed" or action == "detach" then return end
  end
end

local function on_local_event(ev)
  if ev.event == "output" then
    io.stdout:write(ev.text)
    io.stdout:flush()
  end
end

-- debugger.start_terminal(): stops show the gdb prompt on the terminal
-- (local mode: the whole process waits while it is shown).
function debugger.start_terminal()
  if terminal then return terminal end
  local ok, err = engine.claim("terminal")
  if not ok then error(err, 2) end
  engine.set_mode("local")
  terminal = cli.new({ remote = false })
  engine.on_stop(prompt_loop)
  engine.on_event(on_local_event)
  return terminal
end

-- debugger.debugger(func, file, line [, ...]) -> task: a breakpoint at
-- file:line, then func(...) in a new coroutine; stops show the prompt
-- (on the terminal unless a remote session drives the engine).
function debugger.debugger(func, file, line, ...)
  if type(func) ~= "function" then error("debugger: function expected", 2) end
  if engine.owner() == nil and engine.mode() == "local" then debugger.start_terminal() end
  local bp = engine.set_breakpoint({ file = file, line = line })
  if engine.mode() == "local" then
    out(("Breakpoint %d at %s:%d%s"):format(bp.id, bp.file, bp.line,
                                            bp.message and " (" .. bp.message .. ")" or ""))
  end
  return event.fork(func, ...)
end

-- debugger.breakpoint(): stop the caller at its next line. In remote
-- mode (attach_console) with no session attached it does nothing, as
-- JavaScript's `debugger;` without a debugger.
function debugger.breakpoint()
  if engine.owner() == nil then
    if engine.mode() == "remote" then return end
    debugger.start_terminal()
  end
  engine.break_here()
end

-- debugger.attach_console([port | console options]) -> listener | nil,
-- err: remote mode; a breakpoint parks only its coroutine. With a port,
-- opens a console port too (`evlua console PORT debug` connects).
function debugger.attach_console(opts)
  engine.set_mode("remote")
  if opts == nil then return true end
  local listener, err, code = require("evlua.console").listen(opts)
  if not listener then return nil, err, code end
  core.log("info", "debugger: console listening on port " .. listener:port())
  return listener
end

-- debugger.listen_dap(opts) -> the DAP port (evlua.dap): editors attach to
-- this live process.
function debugger.listen_dap(opts)
  return require("evlua.dap").listen(opts)
end

return debugger
