-- evlua/main.lua - the evlua command line: options, `arg`, finding the
-- script, and starting the main chunk as a coroutine. Called by src/main.c
-- as launcher(argv, info); returns an exit status to stop at once, or
-- nothing to run the loop.

local core = require "evlua.core"
local event = require "event"

-- SIGUSR1 interrupts user code only, never evlua's own library (the
-- directory event.lua was loaded from): see src/interrupt.c.
core.interrupt_library(debug.getinfo(event.fork, "S").source
                       :match("^(@.*[/\\])event%.lua$") or "@<no library>")

-- import(file): hot-reloadable loading (docs/import.md), a global as in
-- the original project.
_G.import = require "evlua.import"

local USAGE = [==[
usage: %s [options] [script [args]]
Available options are:
  -e stat   execute string 'stat'
  -i        enter interactive mode after executing 'script'
  -l mod    require library 'mod' into global 'mod'
  -v        show version information
  --console [HOST:]PORT  open a console port (docs/console.md)
  --        stop handling options
  -         stop handling options and execute stdin
A script NAME that is not a file is looked up as NAME.lua in the current
directory, in $EVLUA_SCRIPT_PATH (directories separated by ':') and in
evlua's examples directory.
`%s console [HOST:]PORT [command]` connects to a console port.
]==]

local function report(progname, msg)
  io.stderr:write(progname, ": ", tostring(msg), "\n")
  io.stderr:flush()
end

-- Parse options; returns { actions, interactive, version, script } where
-- script is argv's index of the script (nil when none), or nil, message.
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
      if opts.console == nil then return nil, "'--console' needs argument" end
      i = i + 1
      goto continue
    end
    local flag, value = a:sub(2, 2), a:sub(3)
    if flag == "e" or flag == "l" then
      if value == "" then
        i = i + 1
        value = argv[i]
        if value == nil or value:sub(1, 1) == "-" then
          return nil, "'-" .. flag .. "' needs argument"
        end
      end
      opts.actions[#opts.actions + 1] = { flag, value }
    elseif a == "-i" then
      opts.interactive, opts.version = true, true
    elseif a == "-v" then
      opts.version = true
    else
      return nil, "unrecognized option '" .. a .. "'"
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

-- Load every chunk before running any, so a syntax error stops start-up
-- with a plain message (as lua does).
local function load_chunks(opts, argv, info)
  local steps = {}
  for _, action in ipairs(opts.actions) do
    if action[1] == "e" then
      local fn, err = load(action[2], "=(command line)")
      if not fn then return nil, err end
      steps[#steps + 1] = fn
    else
      local name = action[2]
      steps[#steps + 1] = function() _G[name] = require(name) end
    end
  end
  if opts.script then
    local name = argv[opts.script]
    local fn, err = loadfile(name ~= "-" and name or nil)
    if not fn then
      if not file_exists(name) and name ~= "-" then
        err = "cannot open " .. name
      end
      return nil, err
    end
    local args = table.pack(table.unpack(argv, opts.script + 1))
    steps[#steps + 1] = function() return fn(table.unpack(args, 1, args.n)) end
  end
  return steps
end

-- --console [HOST:]PORT: open the console port before the script runs.
local function open_console(spec)
  local host, port = spec:match("^(.*):(%d+)$")
  if not host then host, port = nil, spec:match("^%d+$") end
  port = math.tointeger(tonumber(port))
  if not port then error("--console: bad address '" .. spec .. "'", 0) end
  local listener, err = require("evlua.console").listen({
    host = host ~= "" and host or nil, port = port,
    password = os.getenv("EVLUA_CONSOLE_PASSWORD"),
  })
  if not listener then error("--console " .. spec .. ": " .. err, 0) end
  core.log("info", "console listening on " .. (host or "127.0.0.1") .. ":"
           .. listener:port())
end

-- `evlua console ...`: the console client (a file named "console" in the
-- current directory still runs as a script).
local function console_client(argv, progname)
  _G.arg = make_arg(argv, 1)
  local args = table.move(argv, 2, #argv, 1, {})
  event._start_main(function()
    core.exit(require("evlua.console_client").main(args))
  end, function(traceback)
    report(progname, traceback)
    core.exit(1)
  end)
end

return function(argv, info)
  local progname = argv[0]
  if argv[1] == "console" and not file_exists("console") then
    return console_client(argv, progname)
  end
  local opts, err = parse(argv)
  if not opts then
    report(progname, err)
    io.stderr:write(USAGE:format(progname, progname))
    return 1
  end
  if opts.script then argv[opts.script] = find_script(argv[opts.script], info) end
  _G.arg = make_arg(argv, opts.script)
  local steps
  steps, err = load_chunks(opts, argv, info)
  if not steps then
    report(progname, err)
    return 1
  end
  if opts.version then print(core.version_string) end
  local repl = opts.interactive
  if not opts.script and #opts.actions == 0 and not opts.version then
    if core.isatty(0) then
      print(core.version_string)
      repl = true
    else
      steps[1] = assert(loadfile(nil))   -- the script is on stdin
    end
  end
  if #steps == 0 and not repl and not opts.console then return 0 end
  local function main_chunk()
    if opts.console then open_console(opts.console) end
    for i = 1, #steps do
      if i == #steps and not repl then return steps[i]() end
      steps[i]()
    end
    if repl then require("evlua.repl").run() end
  end
  local function failed(traceback)
    report(progname, traceback)
    core.exit(1)
  end
  event._start_main(main_chunk, failed)
end
