-- tests/lua/core_spec.lua - the C half under the Lua library (evlua.core):
-- the checks the bindings make of their own arguments, however they are
-- called, and what the dispatcher does with a callback or a coroutine
-- that fails: it logs the error with a traceback and the loop goes on.
local core = require "evlua.core"
local event = require "event"
local helper = require "helper"

local function noop() end

local raised = helper.raised

-- What luaL_argerror says for argument n, whatever the function's name.
local function bad_argument(n, text)
  return "^bad argument #" .. n .. " to '.-' %(" .. text:gsub("%p", "%%%0")
         .. "%)$"
end

describe("the dispatcher", function()
  after_each(helper.cleanup)

  it("logs a failing callback with its traceback and keeps the loop "
     .. "running", function()
    local out, err, rc = helper.run_script([[
      local core = require "evlua.core"
      local event = require "event"
      local function fire(f) core.timer(f):start(0) end
      fire(function() error("boom") end)
      fire(function() error({}) end)
      fire(function() error(setmetatable({}, {
        __tostring = function() return "custom error object" end })) end)
      fire(function() error(setmetatable({}, {
        __tostring = function() return 42 end })) end)
      event.sleep(0.01)
      print("still running")
    ]])
    assert.equal(0, rc, err)
    assert.equal("still running\n", out)
    assert.matches("callback failed: [^\n]*: boom\nstack traceback:", err)
    assert.matches("callback failed: (error object is a table value)\n"
                   .. "stack traceback:", err, 1, true)
    assert.matches("callback failed: custom error object\n", err, 1, true)
    -- a __tostring that gives no string: described like any table
    local _, tables = err:gsub("%(error object is a table value%)", "")
    assert.equal(2, tables, err)
  end)

  it("logs a coroutine target that fails, and drops an event for a dead "
     .. "one", function()
    local out, err, rc = helper.run_script([[
      local core = require "evlua.core"
      local event = require "event"
      local failing = coroutine.create(function()
        coroutine.yield()
        error("failed after the wait")
      end)
      coroutine.resume(failing)           -- now waiting in its yield
      core.timer(failing):start(0)
      local dead = coroutine.create(function() end)
      coroutine.resume(dead)
      core.timer(dead):start(0)
      event.sleep(0.01)
      print(coroutine.status(failing), coroutine.status(dead))
    ]])
    assert.equal(0, rc, err)
    assert.equal("dead\tdead\n", out)
    assert.matches("coroutine failed: [^\n]*: failed after the wait\n"
                   .. "stack traceback:", err)
    assert.matches("event for a coroutine that is not suspended was dropped",
                   err, 1, true)
  end)

  it("raises when a target is neither a function nor a coroutine", function()
    for _, target in ipairs({ false, 1, "f", {} }) do
      assert.matches(bad_argument(1, "function or coroutine expected, got "
                                  .. type(target)),
                     raised(core.timer, target))
    end
  end)
end)

describe("userdata methods", function()
  it("raise when called on another type", function()
    local timer = core.timer(noop)
    local listener = assert(core.listen("127.0.0.1", 0, nil, false, noop))
    local start = getmetatable(timer).__index.start
    assert.matches(bad_argument(1, "evlua.timer expected, got evlua.listener"),
                   raised(start, listener, 1))
    assert.matches(bad_argument(1, "evlua.timer expected, got number"),
                   raised(start, 1, 1))
    assert.matches(bad_argument(1, "evlua.timer expected, got FILE*"),
                   raised(start, io.stdout, 1))
    listener:close()
  end)
end)

describe("core.timer", function()
  it("refuses durations that are negative, NaN or infinite", function()
    local t = core.timer(noop)
    for _, bad in ipairs({ -1, 0 / 0, math.huge }) do
      assert.matches(bad_argument(2, "non-negative number expected"),
                     raised(t.start, t, bad))
      assert.matches(bad_argument(3, "non-negative number expected"),
                     raised(t.start, t, 1, bad))
    end
    assert.is_false(t:active())
    t:start(10)
    assert.matches("^evlua.timer %(.*, active%)$", tostring(t))
    t:stop()
    assert.is_false(t:active())
  end)
end)

describe("core.fdwatch and core.read", function()
  after_each(helper.cleanup)

  it("raise on a negative fd, a mode without r or w, a size out of range",
     function()
    assert.matches(bad_argument(1, "invalid file descriptor"),
                   raised(core.fdwatch, -1, "r", noop))
    assert.matches(bad_argument(2, "\"r\" or \"w\" expected"),
                   raised(core.fdwatch, 0, "x", noop))
    for _, bad in ipairs({ 0, -1, (1 << 24) + 1 }) do
      assert.matches(bad_argument(2, "out of range"),
                     raised(core.read, 0, bad))
    end
  end)

  it("reports a writable socket with \"w\"; reads fail with nil, "
     .. "message, code", function()
    local listener = assert(event.listen("127.0.0.1", 0, noop))
    local ch = assert(event.connect("127.0.0.1", listener:port()))
    local fd = ch:fd()
    local token = {}
    local w = core.fdwatch(fd, "w", function(_, _, mode)
      event.wakeup(token, mode)
    end)
    w:start()
    w:start()   -- already started: nothing changes
    assert.matches("^evlua.fdwatch %(.*, active%)$", tostring(w))
    assert.equal("w", event.wait(token, 5))
    w:stop()
    -- nothing has arrived on the nonblocking socket
    assert.same({ nil, "again", "EAGAIN" }, { core.read(fd, 16) })
    ch:close()
    listener:close()
    local r = { core.read(1 << 20, 16) }   -- no such fd
    assert.same({ nil, "EBADF" }, { r[1], r[3] })
  end)
end)

describe("core.signal", function()
  it("raises on signal numbers out of range and on the runtime's own",
     function()
    for _, bad in ipairs({ 0, -1, 65 }) do
      assert.matches(bad_argument(1, "invalid signal number"),
                     raised(core.signal, bad, noop))
    end
    for _, name in ipairs({ "CHLD", "USR1" }) do
      assert.matches(bad_argument(1, "signal reserved by the runtime"),
                     raised(core.signal, core.signal_number(name), noop))
    end
    local s = core.signal(core.signal_number("USR2"), noop)
    s:start()
    s:start()   -- already started: nothing changes
    assert.matches("^evlua.signal %(.*, active%)$", tostring(s))
    s:stop()
    assert.is_false(s:active())
  end)
end)

describe("event.log_level and event.log_file", function()
  after_each(helper.cleanup)

  it("raise on an unknown level; a log file that cannot open gives nil, "
     .. "message, code", function()
    local level = event.log_level()
    assert.matches(bad_argument(1, "unknown log level 'loud'"),
                   raised(event.log_level, "loud"))
    assert.equal(level, event.log_level())   -- unchanged
    local path = helper.tmpdir() .. "/no/such/dir/x.log"
    assert.same({ nil, path .. ": no such file", "ENOENT" },
                { event.log_file(path) })
  end)
end)

describe("core.resp_command and core.resp_reader", function()
  it("encode floats in the shortest form that reads back the same",
     function()
    assert.equal("*4\r\n$3\r\nSET\r\n$3\r\n0.1\r\n$18\r\n0.3333333333333333\r\n"
                 .. "$19\r\n0.30000000000000004\r\n",
                 core.resp_command("SET", 0.1, 1 / 3, 0.1 + 0.2))
    assert.equal("*2\r\n$4\r\nINCR\r\n$2\r\n42\r\n", core.resp_command("INCR", 42))
  end)

  it("encode every argument when more are big than fit in one writev",
     function()
    local args, expect = {}, { "*81\r\n$4\r\nMSET\r\n" }
    for i = 1, 80 do
      args[i] = string.char(64 + i % 26):rep(64 * 1024)
      expect[#expect + 1] = "$65536\r\n" .. args[i] .. "\r\n"
    end
    local s = core.resp_command("MSET", table.unpack(args))
    assert.equal(#table.concat(expect), #s)
    assert.is_true(s == table.concat(expect), "the bytes differ")
  end)

  it("raise without a command name, on an argument of another type, on "
     .. "limits out of range", function()
    assert.matches(bad_argument(1, "command name expected"),
                   raised(core.resp_command))
    assert.matches(bad_argument(2, "string or number expected, got table"),
                   raised(core.resp_command, "GET", {}))
    for i, bad in ipairs({ 0, -1 }) do
      local args = { nil, nil, nil }
      args[i] = bad
      assert.matches(bad_argument(i, "limit out of range"),
                     raised(core.resp_reader, table.unpack(args, 1, 3)))
    end
    assert.matches(bad_argument(3, "limit out of range"),
                   raised(core.resp_reader, nil, nil, 1001))
    assert.matches(bad_argument(4, "table expected, got string"),
                   raised(core.resp_reader, nil, nil, nil, "mt"))
  end)
end)
