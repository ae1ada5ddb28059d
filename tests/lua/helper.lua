-- tests/lua/helper.lua - shared helpers for the Lua test suites.
local helper = {}

-- The evlua binary under test (set by tests/run.sh).
helper.evlua = os.getenv("EVLUA_BIN") or (os.getenv("PWD") .. "/evlua")
-- True when the binary is the AddressSanitizer build.
helper.asan = helper.evlua:find("/asan/", 1, true) ~= nil

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
helper.quote = shell_quote

local function slurp(path)
  local f = assert(io.open(path, "rb"))
  local data = f:read("a")
  f:close()
  return data
end
helper.slurp = slurp

function helper.write_file(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

-- A fresh temporary directory, removed by helper.cleanup().
local temps = {}
function helper.tmpdir()
  local p = io.popen("mktemp -d /tmp/evlua-test.XXXXXX")
  local dir = p:read("l")
  p:close()
  temps[#temps + 1] = dir
  return dir
end

function helper.cleanup()
  for _, dir in ipairs(temps) do os.execute("rm -rf " .. shell_quote(dir)) end
  temps = {}
end

-- Run a shell command line (blocking; fine in tests). Returns stdout,
-- stderr and the exit status (128+N for a signal, as the shell reports).
function helper.sh(cmdline, stdin)
  local dir = helper.tmpdir()
  local input = ""
  if stdin then
    helper.write_file(dir .. "/in", stdin)
    input = " <" .. dir .. "/in"
  end
  local full = ("(%s)%s >%s/out 2>%s/err; echo $? >%s/rc"):format(
    cmdline, input, dir, dir, dir)
  os.execute(full)
  local rc = tonumber(slurp(dir .. "/rc"))
  return slurp(dir .. "/out"), slurp(dir .. "/err"), rc
end

helper.TIMEOUT = 120   -- seconds any evlua run by a test may take

-- Run evlua with the given arguments (a list, each quoted).
function helper.run(args, stdin, env)
  local parts = {}
  for k, v in pairs(env or {}) do
    parts[#parts + 1] = k .. "=" .. shell_quote(v)
  end
  -- A hung process fails its test instead of hanging the suite.
  parts[#parts + 1] = "timeout -k 5 " .. helper.TIMEOUT
  parts[#parts + 1] = shell_quote(helper.evlua)
  for _, a in ipairs(args) do parts[#parts + 1] = shell_quote(a) end
  return helper.sh(table.concat(parts, " "), stdin)
end

-- Write `source` to a temporary script and run it with evlua.
function helper.run_script(source, args, env)
  local path = helper.tmpdir() .. "/script.lua"
  helper.write_file(path, source)
  local argv = { path }
  for _, a in ipairs(args or {}) do argv[#argv + 1] = a end
  local out, err, rc = helper.run(argv, nil, env)
  return out, err, rc, path
end

return helper
