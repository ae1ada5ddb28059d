-- tests/lua/dap_spec.lua - the Debug Adapter Protocol front-end
-- (evlua.dap): framing, JSON and bad input against an adapter in this
-- process, then a whole session of `evlua --dap PORT script.lua` driven by
-- Microsoft's DebugClient (tests/peers/dap/session.js).
local helper = require "helper"
local event = require "event"
local dap = require "evlua.dap"
local cjson = require "cjson"

-- A raw DAP client: send(tbl | raw bytes), recv() -> decoded message |
-- nil, err, code (the adapter closed the connection).
local function client(port)
  local ch = assert(event.connect("127.0.0.1", port))
  local c, seq = { ch = ch }, 0
  function c.send(msg)
    if type(msg) == "table" then
      seq = seq + 1
      msg.seq, msg.type = msg.seq or seq, msg.type or "request"
      msg = cjson.encode(msg)
      msg = "Content-Length: " .. #msg .. "\r\n\r\n" .. msg
    end
    assert(ch:write(msg))
  end
  function c.recv()
    local length
    while true do
      local line, err, code = ch:wait_line(5)
      if not line then return nil, err, code end
      if line == "" then break end
      length = tonumber(line:match("^Content%-Length: (%d+)$")) or length
    end
    local body = assert(ch:wait_read(length, 5))
    return cjson.decode(body), body
  end
  -- The next message that is not an output event.
  function c.next()
    while true do
      local msg, body = c.recv()
      if not msg or msg.event ~= "output" then return msg, body end
    end
  end
  -- Every message until the adapter closes: the texts of output events.
  function c.until_closed()
    local outputs = {}
    while true do
      local msg, _, code = c.recv()
      if not msg then return outputs, code end
      if msg.event == "output" then outputs[#outputs + 1] = msg.body.output end
    end
  end
  return c
end

describe("evlua.dap", function()
  local listener, port
  before_each(function()
    listener = assert(dap.listen({ port = 0, max_body = 200, max_header = 40 }))
    port = listener:port()
  end)
  after_each(function()
    listener:close()
    helper.eventually(function() return dap.session() == nil end, "the session to end")
    helper.cleanup()
  end)

  it("writes an empty list as [] and an empty table as {}, through cjson", function()
    assert.equal('{"breakpoints":[]}', dap.encode({ breakpoints = dap.array() }))
    assert.equal('{}', dap.encode({}))
    assert.equal('[1,"a\\u0000\\n",true,null]', dap.encode({ 1, "a\0\n", true, cjson.null }))
    assert.equal('{"x":null}', dap.encode({ x = 0 / 0 }))
    assert.same({ a = { 1, 2 } }, dap.decode('{"a":[1,2]}'))
    local v, err = dap.decode('{"a":')
    assert.is_nil(v)
    assert.matches("Expected", err)
  end)

  it("answers initialize with its capabilities, then sends initialized", function()
    local c = client(port)
    c.send({ command = "initialize", arguments = { adapterID = "test" } })
    local r = c.next()
    assert.same({ "response", "initialize", true, 1 },
                { r.type, r.command, r.success, r.request_seq })
    assert.is_true(r.body.supportsConditionalBreakpoints)
    assert.is_true(r.body.supportsHitConditionalBreakpoints)
    assert.is_true(r.body.supportsLogPoints)
    assert.is_true(r.body.supportsSetVariable)
    assert.is_true(r.body.supportsTerminateRequest)
    assert.is_true(r.body.supportsConfigurationDoneRequest)
    local e = c.next()
    assert.same({ "event", "initialized" }, { e.type, e.event })
    assert.is_true(e.seq > r.seq)
    c.ch:close()
  end)

  it("answers an unknown command with an error response and goes on", function()
    local c = client(port)
    c.send({ command = "initialize" })   -- no arguments at all
    assert.is_true(c.next().success)
    assert.equal("initialized", c.next().event)
    c.send({ command = "frobnicate", arguments = cjson.null })
    local r = c.next()
    assert.same({ "frobnicate", false }, { r.command, r.success })
    assert.equal("unknown command 'frobnicate'", r.message)
    c.send({ command = "setExceptionBreakpoints", arguments = { filters = {} } })
    local _, body = c.next()
    assert.matches('"breakpoints":%[%]', body)
    c.ch:close()
  end)

  it("refuses requests before initialize", function()
    local c = client(port)
    c.send({ command = "threads" })
    local r = c.next()
    assert.same({ false, "initialize first" }, { r.success, r.message })
    c.ch:close()
  end)

  it("closes the connection on a malformed header, and serves the next one", function()
    local c = client(port)
    c.send("Content-Length 12\r\n\r\n{}")
    local outputs, code = c.until_closed()
    assert.equal("closed", code)
    assert.matches("malformed header line", outputs[1])
    c = client(port)
    c.send({ command = "initialize" })
    assert.is_true(c.next().success)
    c.ch:close()
  end)

  it("closes the connection on bad JSON, on a body that is not an object, without a length", function()
    for _, bytes in ipairs({
      "Content-Length: 5\r\n\r\n{\"a\":",
      "Content-Length: 2\r\n\r\n[]",
      "X-Other: 1\r\n\r\n{}",
      "Content-Length: -1\r\n\r\n",
      "Content-Length: 3\r\n\r\n{\"type\":\"response\"}",
    }) do
      local c = client(port)
      c.send(bytes)
      local outputs, code = c.until_closed()
      assert.equal("closed", code, bytes)
      assert.matches("closing", outputs[1] or "", 1, true)
    end
  end)

  it("takes a body at max_body and closes on one past it", function()
    local function request_of(size)
      local head = '{"seq":1,"type":"request","command":"initialize","arguments":{"pad":"'
      local tail = '"}}'
      return head .. ("x"):rep(size - #head - #tail) .. tail
    end
    local c = client(port)
    local body = request_of(200)
    assert.equal(200, #body)
    c.send("Content-Length: 200\r\n\r\n" .. body)
    assert.is_true(c.next().success)
    c.ch:close()
    helper.eventually(function() return dap.session() == nil end, "the session to end")
    c = client(port)
    c.send("Content-Length: 201\r\n\r\n" .. request_of(201))
    local outputs, code = c.until_closed()
    assert.equal("closed", code)
    assert.matches("message of 201 bytes %(limit 200%)", outputs[1])
  end)

  it("takes a header line at max_header and closes on one past it", function()
    local c = client(port)
    local line = "X-Pad: " .. ("p"):rep(40 - 7)
    assert.equal(40, #line)
    c.send(line .. "\r\n")
    c.send({ command = "initialize" })
    assert.is_true(c.next().success)
    c.ch:close()
    helper.eventually(function() return dap.session() == nil end, "the session to end")
    c = client(port)
    c.send(line .. "p\r\n")
    local outputs, code = c.until_closed()
    assert.equal("closed", code)
    assert.matches("header line too long", outputs[1])
  end)

  it("closes the connection past max_headers header lines", function()
    local c = client(port)
    c.send(("X-A: 1\r\n"):rep(16) .. "Content-Length: 2\r\n\r\n{}")
    local outputs, code = c.until_closed()
    assert.equal("closed", code)
    assert.matches("too many header lines", outputs[1])
  end)

  it("attach, then disconnect: the session's breakpoints go, the process runs on", function()
    local engine = require "evlua.debug_engine"
    local dir = helper.tmpdir()
    helper.write_file(dir .. "/target.lua", "local x = 1\nreturn x\n")
    local c = client(port)
    c.send({ command = "initialize" })
    assert.is_true(c.next().success)
    assert.equal("initialized", c.next().event)
    c.send({ command = "attach", arguments = {} })
    assert.is_true(c.next().success)
    c.send({ command = "setBreakpoints", arguments = {
      source = { path = dir .. "/target.lua" }, breakpoints = { { line = 1 } } } })
    local r = c.next()
    assert.is_true(r.success)
    assert.equal(1, #r.body.breakpoints)
    assert.equal(1, #engine.breakpoints())
    c.send({ command = "configurationDone" })
    assert.is_true(c.next().success)
    c.send({ command = "threads" })
    r = c.next()
    assert.equal(0, r.body.threads[1].id)
    c.send({ command = "evaluate", arguments = { expression = "1 + 2" } })
    assert.equal("3", c.next().body.result)
    c.send({ command = "evaluate", arguments = { expression = "error('boom')" } })
    r = c.next()
    assert.is_false(r.success)
    assert.matches("boom", r.message)
    c.send({ command = "disconnect", arguments = {} })
    assert.is_true(c.next().success)
    assert.same({ {}, "closed" }, { c.until_closed() })
    assert.equal(0, #engine.breakpoints())
  end)

  it("survives garbage: every connection of random bytes ends, the next session is served", function()
    math.randomseed(18)
    for n = 1, 20 do
      local c = client(port)
      local bytes = {}
      for i = 1, n * 13 do bytes[i] = string.char(math.random(0, 255)) end
      if n % 2 == 0 then   -- a plausible header over a broken body
        bytes = { "Content-Length: " .. #bytes .. "\r\n\r\n", table.concat(bytes) }
      end
      c.send(table.concat(bytes) .. "\r\n\r\n")
      c.ch:close()
    end
    helper.eventually(function() return dap.session() == nil end, "the sessions to end")
    local c = client(port)
    c.send({ command = "initialize" })
    assert.is_true(c.next().success)
    c.ch:close()
  end)

  it("refuses a second session while one is open", function()
    local first = client(port)
    first.send({ command = "initialize" })
    assert.is_true(first.next().success)
    assert.equal("initialized", first.next().event)
    local second = client(port)
    local outputs, code = second.until_closed()
    assert.equal("closed", code)
    assert.matches("another debugger session is open", outputs[1])
    first.send({ command = "initialize" })   -- the first one is untouched
    assert.is_true(first.next().success)
    first.ch:close()
  end)

  it("closes a connection that sends nothing within first_timeout, freeing the session", function()
    local l = assert(dap.listen({ port = 0, first_timeout = 0.3 }))
    local idle = client(l:port())
    local outputs, code = idle.until_closed()   -- it sends nothing at all
    assert.equal("closed", code)
    assert.matches("timeout", outputs[1])
    helper.eventually(function() return dap.session() == nil end, "the session to end")
    -- the one session is free again, and past first_timeout a live one stays
    local c = client(l:port())
    c.send({ command = "initialize" })
    assert.is_true(c.next().success)
    assert.equal("initialized", c.next().event)
    event.sleep(0.5)
    c.send({ command = "initialize" })
    assert.is_true(c.next().success)
    c.ch:close()
    l:close()
  end)

  it("listens on loopback only and checks its options", function()
    assert.matches("first_timeout must be a number > 0",
                   helper.raised(dap.listen, { port = 0, first_timeout = 0 }))
    assert.matches("loopback", helper.raised(dap.listen, { port = 0, host = "0.0.0.0" }))
    assert.matches("max_body must be an integer >= 1",
                   helper.raised(dap.listen, { port = 0, max_body = 0 }))
    assert.matches("port or options table expected", helper.raised(dap.listen, "x"))
  end)
end)

-- The debuggee of the DebugClient session: a side channel on arg[1]
-- ("go" starts work(), every timer tick is sent as "tick N", then
-- "done <sum>"). LINES marks the lines session.js needs.
local DEBUGGEE = [[
local tick_port = math.tointeger(tonumber(arg[1]))
local ticks, clients, offset = 0, {}, 0
local function inner(n)
  local doubled = n * 2                    -- LINE inner
  return doubled
end
local function add(a, b, t)
  local sum = a + b + offset               -- LINE add
  return sum + 0 * #t.items
end
local function tally(i) return i end
local function work()
  local t = { name = "evlua", items = {} }
  for i = 1, 100 do t.items[i] = i end
  local sum = add(20, 7, t)                -- LINE call
  local r

  r = inner(sum)                           -- LINE moved
  local count = 0
  for i = 1, 5 do
    local x = i * 2                        -- LINE loop
    count = count + x + r * 0              -- LINE log
    count = count + tally(i) * 0           -- LINE hits
  end
  return sum
end
assert(event.listen("127.0.0.1", tick_port, function(_, ch)
  clients[ch] = true
  if ch:wait_line() == "go" then
    local sum = work()
    ch:write("done " .. sum .. "\n")
  end
  ch:wait_line()
  clients[ch] = nil
end))
pulses = 0
event.fork(function()
  event.running():set_name("pulse")
  while true do
    pulses = pulses + 1                    -- LINE pulse
    event.sleep(0.01)
  end
end)
event.timer(0.02, function()
  ticks = ticks + 1
  for ch in pairs(clients) do ch:write("tick " .. ticks .. "\n") end
end)
local ready = true                         -- LINE ready
return ready
]]

local function debuggee_lines()
  local lines, n = {}, 0
  for line in (DEBUGGEE .. "\n"):gmatch("([^\n]*)\n") do
    n = n + 1
    local name = line:match("%-%- LINE (%w+)$")
    if name then lines[name] = n end
    if line == "" and not lines.blank then lines.blank = n end
  end
  return lines
end

describe("evlua --dap with Microsoft's DebugClient", function()
  after_each(helper.cleanup)

  it("reports a bad port and a port in use as one line", function()
    local _, err, rc = helper.run({ "--dap", "abc", "-e", "print(1)" })
    assert.equal(1, rc)
    assert.matches("'%-%-dap' needs a port", err)
    local l = assert(event.listen("127.0.0.1", 0, function() end))
    local path = helper.tmpdir() .. "/s.lua"
    helper.write_file(path, "print('ran')\n")
    local out
    out, err, rc = helper.run({ "--dap", tostring(l:port()), path })
    l:close()
    assert.same({ "", 1 }, { out, rc })
    assert.matches("^[^\n]*: %-%-dap %d+: [^\n]*in use\n$", err)
  end)

  it("sets breakpoints, stops one coroutine while a timer ticks, steps, evaluates, terminates", function()
    assert(os.execute("tests/peers/dap_setup.sh"), "npm modules of the DAP test client")
    local dir = helper.tmpdir()
    local script = dir .. "/debuggee.lua"
    helper.write_file(script, DEBUGGEE)
    local dap_port, tick_port = helper.free_port(), helper.free_port()
    local out = dir .. "/output"
    local p = io.popen(("exec timeout -k 5 60 %s --dap %d %s %d >%s 2>&1 & echo $!"):format(
      helper.quote(helper.evlua), dap_port, script, tick_port, out))
    local pid = p:read("l")
    p:close()
    helper.await_output(out, "waiting for a DAP client")
    local lines = debuggee_lines()
    local json = cjson.encode(lines)
    local stdout, stderr, rc = helper.sh(("node tests/peers/dap/session.js %d %d %s %s"):format(
      dap_port, tick_port, script, helper.quote(json)))
    local report = stdout .. stderr .. "\ndebuggee:\n" .. helper.slurp(out)
    assert.equal(0, rc, report)
    assert.matches("\n1%.%.23\n", stdout)
    -- terminate, then disconnect: the debuggee ends by itself
    helper.eventually(function() return not helper.alive(pid) end, "the debuggee to exit")
    os.execute("kill -9 " .. pid .. " 2>/dev/null")
  end)
end)

--[[ The debuggee's life ====================================================]]
-- tests/peers/dap/lifecycle.js: thread events as a task starts and ends,
-- terminated when the main chunk leaves nothing to run, exited and
-- terminated at os.exit. LIFE is the debuggee; %s is how its worker ends.
local LIFE = [[
local event = require "event"
local worker = event.fork(function()
  event.running():set_name("worker")
  local code = 3                           -- LINE worker
  %s
end)
assert(worker:join())
]]

-- Run the debuggee under `evlua --dap` and lifecycle.js against it: the
-- client's report and exit status, and the debuggee's exit status.
local function lifecycle(mode, ending)
  assert(os.execute("tests/peers/dap_setup.sh"), "npm modules of the DAP test client")
  local dir = helper.tmpdir()
  local script = dir .. "/life.lua"
  local source = LIFE:format(ending)
  helper.write_file(script, source)
  local line = 0
  for l in source:gmatch("([^\n]*)\n") do
    line = line + 1
    if l:find("-- LINE worker", 1, true) then break end
  end
  local port = helper.free_port()
  local out, rc_file = dir .. "/output", dir .. "/rc"
  os.execute(("(timeout -k 5 60 %s --dap %d %s >%s 2>&1; echo rc=$? >%s) &"):format(
    helper.quote(helper.evlua), port, script, out, rc_file))
  helper.await_output(out, "waiting for a DAP client")
  local stdout, stderr, rc = helper.sh(("node tests/peers/dap/lifecycle.js %d %s %d %s"):format(
    port, script, line, mode))
  local debuggee_rc = tonumber(helper.await_output(rc_file, "rc=(%d+)\n"))
  return stdout .. stderr .. "\ndebuggee:\n" .. helper.slurp(out), rc, debuggee_rc
end

describe("the debuggee's life through Microsoft's DebugClient", function()
  after_each(helper.cleanup)

  it("sends thread started and exited, then terminated when the main chunk leaves nothing", function()
    local report, rc, debuggee_rc = lifecycle("end", "return code")
    assert.equal(0, rc, report)
    assert.matches("ok 3 %- the main chunk ended with nothing left to run: terminated", report)
    assert.equal(0, debuggee_rc, report)   -- the disconnect after a launch ended it
  end)

  it("sends exited with the status, then terminated, at os.exit", function()
    local report, rc, debuggee_rc = lifecycle("exit", "os.exit(code)")
    assert.equal(0, rc, report)
    assert.matches("ok 2 %- os.exit%(3%)", report)
    assert.equal(3, debuggee_rc, report)
  end)

  it("tracks nothing without a client, and puts os.exit back after one", function()
    local engine = require "evlua.debug_engine"
    local exit = os.exit
    assert.is_false(engine.tracking())
    local listener = assert(dap.listen(0))
    local c = client(listener:port())
    c.send({ command = "initialize" })
    assert.is_true(c.next().success)
    assert.equal("initialized", c.next().event)
    assert.is_false(engine.tracking())   -- not before configurationDone
    c.send({ command = "configurationDone" })
    assert.is_true(c.next().success)
    assert.is_true(engine.tracking())
    assert.not_equal(exit, os.exit)
    -- a task started now is announced, and its end
    local go = {}
    local task = event.fork(function() event.wait(go) end)
    local msg = c.next()
    assert.same({ "thread", "started" }, { msg.event, msg.body.reason })
    assert.matches("^coroutine #" .. math.tointeger(msg.body.threadId) .. " ", task:name())
    event.wakeup(go)
    msg = c.next()
    assert.same({ "thread", "exited" }, { msg.event, msg.body.reason })
    c.ch:close()
    helper.eventually(function() return dap.session() == nil end, "the session to end")
    assert.is_false(engine.tracking())
    assert.equal(exit, os.exit)
    listener:close()
  end)
end)
