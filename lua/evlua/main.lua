-- evlua/main.lua - the evlua command line: options, `arg`, finding the
-- script, and starting the main chunk as a coroutine. Called by src/lua/main.c
-- as launcher(argv, info); returns an exit status to stop at once, or
-- nothing to run the loop. launcher.parse(argv) is the option parser
-- alone (for tests).

local core = require "evlua.core"
local event = require "event"
local fail = require("evlua.errors").fail

-- SIGUSR1 interrupts user code only, never evlua's own library (the
-- directory event.lua was loaded from): see src/lua/linterrupt.c.
core.interrupt_library(debug.getinfo(event.fork, "S").source
                       :match("^(@.*[/\\])event%.lua$") or "@<no library>")

-- Globals of every evlua process, so that the script, -e code, imported
-- files, the prompt and console evals use them without a require:
-- import (hot-reloadable loading, docs/import.md) and event.
_G.import = require "evlua.import"
_G.event = event

local USAGE = [==[
usage: %s [options] [script [args]]
Available options are:
  -e stat   execute string 'stat'
  -i        enter interactive mode after executing 'script'
  -l mod    require library 'mod' into global 'mod'
  -v        show version information
  -h, --help  show this help and exit
  --console [HOST:]PORT  open a console port (docs/console.md)
  --debug   stop before the script's first line at a gdb-style prompt
            (docs/debugger.md)
  --dap PORT  serve the Debug Adapter Protocol on 127.0.0.1:PORT
            (docs/debugger.md)
  --profile[=FILE]  profile the script; the report goes to FILE at exit
            (its format from the extension), or to stderr (docs/profiler.md)
  --        stop handling options
  -         stop handling options and execute stdin
A script NAME that is not a file is looked up as NAME.lua in the current
directory, in $EVLUA_SCRIPT_PATH (directories separated by ':') and in
evlua's examples directory.
`%s console [HOST:]PORT [command]` connects to a console port;
`%s stack PID` prints the Lua stacks of a running evlua process.
See evlua(1) for the environment variables.
]==]

local function report(progname, msg)
  io.stderr:write(progname, ": ", tostring(msg), "\n")
  io.stderr:flush()
end

-- Parse options; returns { actions, interactive, version, help, console,
-- script } where script is argv's index of the script (nil when none), or
-- nil, message, "bad_option".
local function parse(argv)
  local opts = { actions = {} }
  local i = 1
  while argv[i] ~= nil do
    local a = argv[i]
    if a == "--" then
      if argv[i + 1] ~= nil then opts.script = i + 1 end
      return opts
    elseif a == "-" or a:sub(1, 1) ~= "-" then
      opts.script = i
      return opts
    elseif a == "--console" then
      i = i + 1
      opts.console = argv[i]
      if opts.console == nil then return fail("bad_option", "'--console' needs argument") end
      i = i + 1
      goto continue
    elseif a == "--debug" then
      opts.debug = true
      i = i + 1
      goto continue
    elseif a == "--dap" then
      opts.dap = math.tointeger(tonumber(argv[i + 1] or ""))
      if not opts.dap or opts.dap < 0 or opts.dap > 65535 then
        return fail("bad_option", "'--dap' needs a port")
      end
      i = i + 2
      goto continue
    elseif a == "--profile" or a:sub(1, 10) == "--profile=" then
      opts.profile = a:sub(11) ~= "" and a:sub(11) or true
      i = i + 1
      goto continue
    end
    local flag, value = a:sub(2, 2), a:sub(3)
    if flag == "e" or flag == "l" then
      if value == "" then
        i = i + 1
        value = argv[i]
        if value == nil or value:sub(1, 1) == "-" then
          return fail("bad_option", "'-" .. flag .. "' needs argument")
        end
      end
      opts.actions[#opts.actions + 1] = { flag, value }
    elseif a == "-i" then
      opts.interactive, opts.version = true, true
    elseif a == "-v" then
      opts.version = true
    elseif a == "-h" or a == "--help" then
      opts.help = true
      return opts
    else
      return fail("bad_option", "unrecognized option '" .. a .. "'")
    end
    i = i + 1
    ::continue::
  end
  return opts
end

-- The global `arg`: the script at index 0, its arguments after it, the
-- interpreter and options at negative indices (as the stock lua does).
local function make_arg(argv, script)
  local base = script or 0
  local t = {}
  for i = 0, #argv do t[i - base] = argv[i] end
  return t
end

local function file_exists(path)
  local f = io.open(path, "r")
  if f then f:close() end
  return f ~= nil
end

-- Find a script: as given, else NAME.lua in the search directories.
local function find_script(name, info)
  if name == "-" or file_exists(name) or name:find("/", 1, true) then
    return name
  end
  if name:sub(-4) ~= ".lua" then
    local dirs = { "." }
    for dir in (os.getenv("EVLUA_SCRIPT_PATH") or ""):gmatch("[^:]+") do
      dirs[#dirs + 1] = dir
    end
    dirs[#dirs + 1] = info.lib_dir .. "/../examples"
    for _, dir in ipairs(dirs) do
      local path = dir .. "/" .. name .. ".lua"
      if file_exists(path) then return path end
    end
  end
  return name
end

-- A start-up failure (a syntax error, a missing module, a missing script)
-- is one plain message, as lua prints it, then exit status 1.
local function start_failed(progname, msg)
  report(progname, msg)
  core.exit(1)
end

-- The function an option runs, prepared when its turn comes (as lua does:
-- `-l nosuch -e 'x='` reports the module, `-e 'x=' -l nosuch` the syntax
-- error). Returns the function, or nil, message, code ("syntax", or
-- "raised" when require raised, a missing module included).
local function prepare_option(action)
  if action[1] == "e" then
    local fn, err = load(action[2], "=(command line)")
    if not fn then return fail("syntax", err) end
    return fn
  end
  local name = action[2]
  -- require called from pcall (C): no evlua location in its message
  local ok, mod = pcall(require, name)
  if not ok then return fail("raised", tostring(mod)) end
  return function() _G[name] = mod end
end

-- The script's main function with its arguments bound (stdin for "-" or
-- when script is nil), or nil, message, code ("ENOENT" when the file
-- cannot be opened, else "syntax").
local function prepare_script(argv, script)
  local name = script and argv[script] or "-"
  local fn, err = loadfile(name ~= "-" and name or nil)
  if not fn then
    if name ~= "-" and not file_exists(name) then
      return fail("ENOENT", "cannot open " .. name)
    end
    return fail("syntax", err)
  end
  local args = table.pack(table.unpack(argv, (script or #argv) + 1))
  return function() return fn(table.unpack(args, 1, args.n)) end
end

-- --console [HOST:]PORT: open the console port before the script runs.
-- Returns true | nil, message, code ("bad_address", or the listen's).
local function open_console(spec)
  local host, port = spec:match("^(.*):(%d+)$")
  if not host then host, port = nil, spec:match("^%d+$") end
  port = math.tointeger(tonumber(port))
  if not port or port > 65535 then
    return fail("bad_address", "--console: bad address '" .. spec .. "'")
  end
  local listener, err, code = require("evlua.console").listen({
    host = host ~= "" and host or nil, port = port,
    password = os.getenv("EVLUA_CONSOLE_PASSWORD"),
  })
  if not listener then return nil, "--console " .. spec .. ": " .. err, code end
  core.log("info", "console listening on " .. (host or "127.0.0.1") .. ":"
           .. listener:port())
  return true
end

-- The subcommands (`evlua console ...`, `evlua stack PID`): the module
-- whose main(args) -> status runs each. A file of that name in the current
-- directory still runs as a script.
local SUBCOMMANDS = { console = "evlua.console_client", stack = "evlua.stack" }

-- A subcommand's module has USAGE, parse(args) -> opts | nil, message
-- (args: the words after the subcommand's name; opts.help asks for the
-- usage) and command(opts) -> exit status.
local function run_subcommand(name, args)
  local module = require(SUBCOMMANDS[name])
  local opts, err = module.parse(args)
  if not opts then
    io.stderr:write("evlua ", name, ": ", err, "\n", module.USAGE)
    return 2
  end
  if opts.help then
    io.stdout:write(module.USAGE)
    return 0
  end
  return module.command(opts)
end

local function subcommand(argv, progname)
  _G.arg = make_arg(argv, 1)
  local args = table.move(argv, 2, #argv, 1, {})
  event._start_main(function()
    core.exit(run_subcommand(argv[1], args))
  end, function(traceback)
    report(progname, traceback)
    core.exit(1)
  end)
end

local function launch(argv, info)
  local progname = argv[0]
  if SUBCOMMANDS[argv[1]] and not file_exists(argv[1]) then
    return subcommand(argv, progname)
  end
  local opts, err = parse(argv)
  if not opts then
    report(progname, err)
    io.stderr:write(USAGE:format(progname, progname, progname))
    return 1
  end
  if opts.help then
    io.stdout:write(USAGE:format(progname, progname, progname))
    return 0
  end
  if opts.script then argv[opts.script] = find_script(argv[opts.script], info) end
  _G.arg = make_arg(argv, opts.script)
  if opts.version then print(core.version_string) end
  local repl, run_script = opts.interactive, opts.script ~= nil
  if not opts.script and #opts.actions == 0 and not opts.version then
    if core.isatty(0) then
      print(core.version_string)
      repl = true
    else
      run_script = true   -- the script is on stdin
    end
  end
  if #opts.actions == 0 and not run_script and not repl and not opts.console then
    return 0
  end
  -- Options run in order, then the script (a tail call: its traceback
  -- ends in "main chunk"), then the prompt.
  local function main_chunk()
    if opts.console then
      local ok, cerr = open_console(opts.console)
      if not ok then return start_failed(progname, cerr) end
    end
    for i, action in ipairs(opts.actions) do
      local fn, ferr = prepare_option(action)
      if not fn then return start_failed(progname, ferr) end
      if i == #opts.actions and not run_script and not repl then return fn() end
      fn()
    end
    if run_script then
      local fn, serr = prepare_script(argv, opts.script)
      if not fn then return start_failed(progname, serr) end
      if opts.debug then   -- the prompt before the script's first line
        require("evlua.debugger").start_terminal()
        local name = opts.script and argv[opts.script] or "-"
        require("evlua.debug_engine").stop_at_entry(name == "-" and "=stdin" or "@" .. name)
      end
      if opts.dap then
        local ok, derr = require("evlua.dap").start_main(opts.dap)
        if not ok then return start_failed(progname, "--dap " .. opts.dap .. ": " .. derr) end
      end
      if opts.profile then   -- profiler.start_main writes the report at exit
        local ok, perr = require("evlua.profiler").start_main(opts.profile)
        if not ok then return start_failed(progname, "--profile: " .. perr) end
      end
      if not repl then return fn() end
      fn()
    end
    if repl then require("evlua.repl").run() end
  end
  local function failed(traceback)
    report(progname, traceback)
    core.exit(1)
  end
  event._start_main(main_chunk, failed)
end

return setmetatable({ parse = parse }, {
  __call = function(_, argv, info) return launch(argv, info) end,
})
