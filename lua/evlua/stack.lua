-- evlua/stack.lua - `evlua stack [options] PID` and `evlua stack [options]
-- EXE CORE`: the Lua stacks of a running evlua process, or of a core file,
-- through gdb and tools/evlua-gdb.py (docs/gdb.md). gdb stops the process
-- while it reads the stacks (about half a second, most of it gdb loading
-- the libraries' symbols), then lets it go on.

local event = require "event"
local errors = require "evlua.errors"
local fail = errors.fail

local stack = {}

stack.USAGE = [[
usage: evlua stack [-a] [-l N] [-t seconds] PID
       evlua stack [-a] [-l N] [-t seconds] EXE CORE
  Prints the Lua stack of the coroutine running in evlua process PID, or
  of its main thread when its loop is idle, through gdb. With EXE CORE,
  reads a core file of the evlua binary EXE instead.
  -a          every coroutine instead: its status and its stack
  -l N        then the locals of frame N of the stack
  -t seconds  give up after this long (default 30)
]]

stack.TIMEOUT = 30

-- Mark where the commands' output starts and ends in gdb's stdout (gdb
-- prints its own lines on attaching and detaching).
local MARKER, END_MARKER = "@@evlua-stack@@", "@@evlua-stack-end@@"

local function file_exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

-- The gdb script: <tree>/tools in the source tree, <share>/tools once
-- installed; both beside the directory of event.lua.
function stack.script_path()
  local event_lua = package.searchpath("event", package.path)
  local lib_dir = event_lua and event_lua:match("^(.*)/[^/]*$") or "."
  local path = lib_dir .. "/../tools/evlua-gdb.py"
  if file_exists(path) then return path end
  return fail("ENOENT", path .. ": no such file (the gdb script)")
end

-- parse(args) -> { all, locals, timeout, pid | exe, core } | nil, message,
-- "bad_option" (or { help = true })
function stack.parse(args)
  local opts = { timeout = stack.TIMEOUT }
  local positional = {}
  local i = 1
  while args[i] ~= nil do
    local a = args[i]
    if a == "-h" or a == "--help" then
      return { help = true }
    elseif a == "-a" then
      opts.all = true
    elseif a == "-l" then
      opts.locals = math.tointeger(tonumber(args[i + 1]))
      if not opts.locals or opts.locals < 0 then
        return fail("bad_option", "-l needs a frame number")
      end
      i = i + 1
    elseif a == "-t" then
      opts.timeout = tonumber(args[i + 1])
      if not opts.timeout or opts.timeout <= 0 then
        return fail("bad_option", "-t needs a number of seconds")
      end
      i = i + 1
    elseif a:sub(1, 1) == "-" then
      return fail("bad_option", "unrecognized option '" .. a .. "'")
    else
      positional[#positional + 1] = a
    end
    i = i + 1
  end
  if #positional == 1 and positional[1]:match("^%d+$") then
    opts.pid = positional[1]
  elseif #positional == 2 then
    opts.exe, opts.core = positional[1], positional[2]
  else
    return fail("bad_option", "expected PID, or EXE CORE")
  end
  return opts
end

-- A live process must exist and have liblua mapped (gdb would attach to
-- any process; the script would then only say no liblua is there).
local function check_process(pid)
  local f = io.open("/proc/" .. pid .. "/maps")
  if not f then return fail("ESRCH", "process " .. pid .. ": no such process") end
  local maps = f:read("a") or ""
  f:close()
  if not maps:find("liblua5%.4") then
    return fail("not_evlua", "process " .. pid .. " is not an evlua process")
  end
  return true
end

local function gdb_argv(opts, script)
  local argv = { "gdb", "-nx", "-q", "-batch" }
  local function add(...)
    for _, a in ipairs({ ... }) do argv[#argv + 1] = a end
  end
  if opts.pid then
    -- /proc/PID/exe opens the binary even when it was replaced on disk
    add("/proc/" .. opts.pid .. "/exe", "-p", opts.pid)
  else
    add(opts.exe, opts.core)
  end
  add("-x", script, "-ex", "echo " .. MARKER .. "\\n")
  add("-ex", opts.all and "lua coroutines" or "lua bt")
  if opts.locals then add("-ex", "lua locals " .. opts.locals) end
  add("-ex", "echo " .. END_MARKER .. "\\n")
  return argv
end

-- What went wrong, from gdb's stderr: nil, message, code.
local function gdb_failure(stderr, opts)
  local script_error = stderr:match("evlua%-gdb: ([^\n]*)")
  if stderr:find("ptrace: Operation not permitted", 1, true) then
    return fail("EPERM", "ptrace refused attaching to process " .. opts.pid
                .. " (run as its user or root; see kernel.yama.ptrace_scope)")
  end
  if stderr:find("ptrace: No such process", 1, true) then
    return fail("ESRCH", "process " .. opts.pid .. ": no such process")
  end
  if script_error and script_error:find("not an evlua process", 1, true) then
    return fail("not_evlua", (opts.pid and "process " .. opts.pid or opts.core)
                .. ": " .. script_error)
  end
  if script_error then return fail("gdb", script_error) end
  local first = stderr:match("[^\n]+") or "gdb failed"
  return fail("gdb", first)
end

-- stack.run(opts) -> the stacks' text | nil, message, code. In a coroutine.
function stack.run(opts)
  if not event.running() then errors.need_coroutine("stack.run") end
  local script, err, code = stack.script_path()
  if not script then return nil, err, code end
  if opts.pid then
    local ok
    ok, err, code = check_process(opts.pid)
    if not ok then return nil, err, code end
  end
  local out, status
  out, status, code = event.run_process(gdb_argv(opts, script), {
    stderr = "capture", timeout = opts.timeout,
  })
  if not out then
    if code == "ENOENT" then
      return fail("ENOENT", "gdb not found: install it (apt-get install gdb)")
    end
    return nil, "gdb: " .. status, code   -- status: the message
  end
  local start = out:find(MARKER .. "\n", 1, true)
  local stop = out:find(END_MARKER, 1, true)
  local text = start and stop and out:sub(start + #MARKER + 1, stop - 1) or ""
  local script_failed = status.stderr:find("evlua-gdb: ", 1, true)
  if text == "" or script_failed then return gdb_failure(status.stderr, opts) end
  return text
end

function stack.command(opts)
  local text, err = stack.run(opts)
  if not text then
    io.stderr:write("evlua stack: ", err, "\n")
    return 1
  end
  io.stdout:write(text)
  return 0
end

return stack
