-- evlua/console_client.lua - `evlua console [options] [HOST:]PORT
-- [command...]`: talk to a process's console port (evlua/console.lua).
-- One command as arguments, commands on stdin, or an interactive prompt.

local core = require "evlua.core"
local event = require "event"
local errors = require "evlua.errors"
local argerror, fail = errors.argerror, errors.fail

local client = {}

client.USAGE = [[
usage: evlua console [-p password] [-t seconds] [HOST:]PORT [command...]
  Connects to the console port of an evlua process (HOST defaults to
  127.0.0.1) and runs the command given as arguments, the commands read
  from stdin (one per line), or an interactive prompt on a terminal.
  The command debug opens the debugger (docs/debugger.md): its commands
  follow, from the (evdb) prompt or stdin, until quit or detach.
  -p password  send this password first (default: $EVLUA_CONSOLE_PASSWORD)
  -t seconds   how long to wait for a reply (default 60)
  Commands: ping, mem, gc, stats, ps, reload [file], eval <lua>, help, quit.
]]

local Session = {}
Session.__index = Session

-- Read one framed reply: "ok <n>" | "error <n>", then n bytes.
local function read_reply(ch, timeout)
  local header, err, code = ch:wait_line(timeout)
  if not header then return nil, err, code end
  local status, n = header:match("^(%a+) (%d+)$")
  if not status then
    return fail("protocol", "bad reply from the console: " .. header)
  end
  local parts, left = {}, tonumber(n)
  while left > 0 do
    local chunk, rerr, rcode = ch:wait_read(math.min(left, 64 * 1024),
                                            timeout)
    if not chunk then return nil, rerr, rcode end
    parts[#parts + 1] = chunk
    left = left - #chunk
  end
  return status, table.concat(parts)
end

-- session:command(line) -> "ok" | "error", text | nil, err, code (the
-- connection failed)
function Session:command(line)
  if line:find("\n", 1, true) then
    argerror(1, "command", "one line expected")
  end
  local ok, err, code = self.channel:write(line, "\n")
  if not ok then return nil, err, code end
  return read_reply(self.channel, self.timeout)
end

function Session:close()
  self.channel:close()
end

-- client.connect(host, port [, password [, timeout]]) -> session |
-- nil, err, code: the connection's failure, or the console's reply to
-- the password with code "bad_password". In a coroutine.
function client.connect(host, port, password, timeout)
  local ch, err, code = event.connect(host, port, nil, timeout)
  if not ch then return nil, err, code end
  local session = setmetatable({ channel = ch, timeout = timeout }, Session)
  if password then
    local status, text, scode = session:command("auth " .. password)
    if status ~= "ok" then
      ch:close()
      if status == nil then return nil, text, scode end
      return fail("bad_password", text)
    end
  end
  return session
end

local function write_body(out, text)
  if text == "" then return end
  out:write(text)
  if text:sub(-1) ~= "\n" then out:write("\n") end
  out:flush()
end

-- Send one line and print the reply; returns true if it succeeded,
-- false for an error reply, nil when the connection is gone.
local function run_line(session, line)
  local status, text = session:command(line)
  if status == "ok" then
    write_body(io.stdout, text)
    return true
  elseif status == "error" then
    write_body(io.stderr, "error: " .. text)
    return false
  end
  write_body(io.stderr, "evlua console: " .. tostring(text))
  return nil
end

-- client.parse(args) -> { host =, port =, password =, timeout =, command =,
-- help = } | nil, err, code ("bad_option", or "bad_address" for the
-- target); args are the words after "console".
function client.parse(args)
  local opts = { password = os.getenv("EVLUA_CONSOLE_PASSWORD"), timeout = 60 }
  local i = 1
  while args[i] and args[i]:sub(1, 1) == "-" do
    local a = args[i]
    if a == "-p" or a == "-t" then
      local value = args[i + 1]
      if value == nil then return fail("bad_option", "'" .. a .. "' needs argument") end
      if a == "-p" then
        opts.password = value
      else
        opts.timeout = tonumber(value)
        if not opts.timeout or opts.timeout <= 0 then
          return fail("bad_option", "'-t' needs a positive number of seconds")
        end
      end
      i = i + 2
    elseif a == "-h" or a == "--help" then
      opts.help = true
      return opts
    else
      return fail("bad_option", "unrecognized option '" .. a .. "'")
    end
  end
  local target = args[i]
  if not target then return fail("bad_option", "HOST:PORT expected") end
  local host, port = target:match("^(.*):(%d+)$")
  if not host then host, port = "127.0.0.1", target:match("^%d+$") end
  port = math.tointeger(tonumber(port))
  if not port or port > 65535 then
    return fail("bad_address", "bad address '" .. target .. "'")
  end
  opts.host, opts.port = host ~= "" and host or "127.0.0.1", port
  if args[i + 1] then opts.command = table.concat(args, " ", i + 1) end
  return opts
end

-- Lines from read_line to the session until the end of input or a line
-- that leaves (once answered); interactive shows a prompt. mode.blank:
-- send empty lines too (the debugger repeats its last command then);
-- mode.leaves: the first words that leave.
local function line_loop(session, read_line, prompt, mode)
  local failed = false
  while true do
    if prompt then
      io.stdout:write(prompt)
      io.stdout:flush()
    end
    local line = read_line()
    if not line then
      if prompt then io.stdout:write("\n") end   -- after the prompt Ctrl-D left
      break
    end
    if mode.blank or line:match("%S") then
      local ok = run_line(session, line)
      if ok == nil then return 1 end
      if not ok then failed = true end
      if mode.leaves[line:match("^%s*(%S*)")] then break end
    end
  end
  return failed and 1 or 0
end

local CONSOLE_MODE = { leaves = { quit = true, exit = true } }
-- `evlua console PORT debug`: the console's debug command, then every
-- line read is a debugger command until quit, detach or the end of
-- input. Stops the code hits while no command runs arrive with the next
-- command's answer.
local DEBUG_MODE = { blank = true, leaves = { quit = true, q = true, detach = true } }
client.DEBUG_PROMPT = "(evdb) "

-- client.command(opts) -> exit status: opts from client.parse, run by
-- `evlua console` (evlua/main.lua).
function client.command(opts)
  local session, err = client.connect(opts.host, opts.port, opts.password, opts.timeout)
  if not session then
    io.stderr:write(("evlua console: %s:%d: %s\n"):format(opts.host, opts.port, err))
    return 1
  end
  local code
  if opts.command and opts.command:match("^%s*debug%s*$") then
    local read_line = require("evlua.repl").line_reader(0)
    code = 1
    if run_line(session, "debug") then
      code = line_loop(session, read_line, core.isatty(0) and client.DEBUG_PROMPT or nil,
                       DEBUG_MODE)
    end
  elseif opts.command then
    local ok = run_line(session, opts.command)
    code = ok and 0 or 1
  else
    local read_line = require("evlua.repl").line_reader(0)
    local prompt
    if core.isatty(0) then
      print(("connected to %s:%d (help lists the commands; quit or Ctrl-D leaves)")
            :format(opts.host, opts.port))
      prompt = ("%s:%d> "):format(opts.host, opts.port)
    end
    code = line_loop(session, read_line, prompt, CONSOLE_MODE)
  end
  session:close()
  return code
end

return client
