-- evlua/repl.lua - the interactive prompt. It runs in a coroutine while the
-- loop keeps serving, so typed code may sleep, wait or fork.

local core = require "evlua.core"
local event = require "event"

local repl = {}

-- A line reader on a raw fd that parks the coroutine until input comes.
local function line_reader(fd)
  local buffer = ""
  local token = {}
  local watch = core.fdwatch(fd, "r", function() event.wakeup(token) end)
  return function()
    while true do
      local nl = buffer:find("\n", 1, true)
      if nl then
        local line = buffer:sub(1, nl - 1)
        buffer = buffer:sub(nl + 1)
        return line
      end
      watch:start()
      local ok, err = event.wait(token)
      watch:stop()
      if not ok then return nil, err end
      local data
      data, err = core.read(fd, 4096)
      if not data then return nil, err end
      if data == "" then   -- end of input
        if buffer == "" then return nil, "eof" end
        data = "\n"
      end
      buffer = buffer .. data
    end
  end
end

repl.line_reader = line_reader   -- line_reader(fd) -> read_line(): line | nil, err

local function incomplete(err)
  return err and err:sub(-5) == "<eof>"
end

-- Compile a line as an expression first, then as a statement, reading
-- continuation lines while the chunk is incomplete.
local function compile(line, read_line, write)
  local fn = load("return " .. line, "=stdin")
  if fn then return fn end
  local chunk = line
  local err
  while true do
    fn, err = load(chunk, "=stdin")
    if fn or not incomplete(err) then return fn, err end
    write(">> ")
    local more = read_line()
    if not more then return nil, err end
    chunk = chunk .. "\n" .. more
  end
end

local function print_results(ok, ...)
  if not ok then
    io.stderr:write(tostring((...)), "\n")
  elseif select("#", ...) > 0 then
    print(...)
  end
end

-- repl.run([fd]): read-eval-print until end of input, then exit 0.
function repl.run(fd)
  local read_line = line_reader(fd or 0)
  local function write(s)
    io.stdout:write(s)
    io.stdout:flush()
  end
  while true do
    write("> ")
    local line = read_line()
    if not line then break end
    local fn, err = compile(line, read_line, write)
    if fn then
      print_results(xpcall(fn, event.traceback))
    else
      io.stderr:write(err, "\n")
    end
  end
  write("\n")
  core.exit(0)
end

return repl
