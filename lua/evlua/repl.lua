-- evlua/repl.lua - the interactive prompt. It runs in a coroutine while the
-- loop keeps serving, so typed code may sleep, wait or fork. On a terminal
-- lines are edited with readline (history with Up-arrow); Ctrl-C breaks
-- the code running (as lua does: "interrupted!") or clears the line.

local core = require "evlua.core"
local event = require "event"
local fail = require("evlua.errors").fail

local repl = {}

--[[ Readers ================================================================]]
-- A reader is { read = function(prompt) -> line | nil, err, code (code
-- "eof", "interrupted" or a read error's); interrupt = function() } where
-- interrupt() makes a read in progress return nil, "interrupted",
-- "interrupted" (Ctrl-C at the prompt).

-- Lines from a raw fd (a pipe, a file): the prompt is written as is.
local function plain_reader(fd)
  local buffer = ""
  local token = {}
  local interrupted = false   -- set by interrupt(), even between two waits
  local watch = core.fdwatch(fd, "r", function() event.wakeup(token) end)
  local reader = {}

  local function next_line()
    local nl = buffer:find("\n", 1, true)
    if not nl then return nil end
    local line = buffer:sub(1, nl - 1)
    buffer = buffer:sub(nl + 1)
    return line
  end

  function reader.read(prompt)
    interrupted = false
    if prompt then
      io.stdout:write(prompt)
      io.stdout:flush()
    end
    while true do
      local line = next_line()
      if line then return line end
      watch:start()
      local ok, err, code = event.wait(token)
      watch:stop()
      if interrupted then ok, err, code = fail("interrupted") end
      if not ok then
        if code == "interrupted" then io.stdout:write("\n") end
        return nil, err, code
      end
      local data
      data, err, code = core.read(fd, 4096)
      if not data then return nil, err, code end
      if data == "" then   -- end of input
        if buffer == "" then return fail("eof") end
        data = "\n"
      end
      buffer = buffer .. data
    end
  end

  function reader.interrupt()
    interrupted = true
    event.wakeup(token)
  end
  return reader
end

-- Lines edited with readline (src/lua/lreadline.c): the coroutine waits for
-- stdin to be readable and feeds readline, so the loop never blocks.
local function readline_reader(fd)
  local token = {}
  local interrupted = false   -- set by interrupt(), even between two waits
  local watch = core.fdwatch(fd, "r", function() event.wakeup(token) end)
  local reader = {}

  function reader.read(prompt)
    interrupted = false
    core.readline_start(prompt or "")
    watch:start()
    while true do
      local ok, err, code = event.wait(token)
      if interrupted then ok, err, code = fail("interrupted") end
      if not ok then
        watch:stop()
        core.readline_cancel()
        return nil, err, code
      end
      local line, ferr, fcode = core.readline_feed()
      if line or ferr then
        watch:stop()
        if line and line:find("%S") then core.readline_add_history(line) end
        return line, ferr, fcode
      end
    end
  end

  function reader.interrupt()
    interrupted = true
    event.wakeup(token)
  end
  return reader
end

-- repl.line_reader(fd) -> read_line(): line | nil, err (no prompt, no
-- editing: for commands piped to a client).
function repl.line_reader(fd)
  return plain_reader(fd).read
end

--[[ Read, evaluate, print ==================================================]]

local function incomplete(err)
  return err and err:sub(-5) == "<eof>"
end

-- Compile a line as an expression first, then as a statement, reading
-- continuation lines while the chunk is incomplete. Returns the function,
-- or nil, message (nil, nil when Ctrl-C abandoned the chunk).
local function compile(line, read)
  local fn = load("return " .. line, "=stdin")
  if fn then return fn end
  local chunk = line
  local err
  while true do
    fn, err = load(chunk, "=stdin")
    if fn or not incomplete(err) then return fn, err end
    local more, _, rcode = read(">> ")
    if not more then
      if rcode == "interrupted" then return nil, nil end
      return nil, err
    end
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

-- Ctrl-C while the prompt is active. When Lua code runs, src/lua/linterrupt.c
-- breaks it itself; what reaches here came while no code ran: the prompt
-- waiting for a line (clear it), or typed code waiting (cancel the wait).
-- Returns a function that stops catching.
local function catch_interrupts(reader, busy)
  local fd = core.catch_sigint(true)
  if not fd then return function() end end
  local task = event.running()
  local watch = core.fdwatch(fd, "r", function()
    core.read(fd, 64)   -- one byte per signal: drop them all
    if not busy() then
      reader.interrupt()
    elseif task:status() == "waiting" then
      task:cancel()
    end
  end)
  watch:start()
  return function()
    watch:stop()
    core.catch_sigint(false)
  end
end

-- repl.run([fd]): read-eval-print until end of input, then exit 0.
function repl.run(fd)
  fd = fd or 0
  local reader = core.isatty(fd) and readline_reader(fd) or plain_reader(fd)
  local running = false
  local stop_catching = catch_interrupts(reader, function() return running end)
  local function read(prompt)
    local line, err, code = reader.read(prompt)
    if code == "cancelled" then return fail("interrupted") end
    return line, err, code
  end
  while true do
    local line, _, code = read("> ")
    if not line then
      if code ~= "interrupted" then break end
    else
      local fn, cerr = compile(line, read)
      if fn then
        running = true
        print_results(xpcall(fn, event.traceback))
        running = false
      elseif cerr then
        io.stderr:write(cerr, "\n")
      end
    end
  end
  stop_catching()
  io.stdout:write("\n")
  io.stdout:flush()
  core.exit(0)
end

return repl
