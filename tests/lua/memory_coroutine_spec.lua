-- tests/lua/memory_coroutine_spec.lua - an accept callback's coroutine
-- (event._fork_direct): it runs the callback itself, so a connection
-- parked in wait_read holds no scheduler frames, only the callback's and
-- the C waiter's, and keeps its coroutine's initial stack; and it still
-- ends, fails, times out and cancels like any task.
local event = require "event"
local helper = require "helper"

local eventually = helper.eventually

local function lua_heap()
  collectgarbage("collect")
  collectgarbage("collect")
  return collectgarbage("count") * 1024
end

-- Lua heap per connection of n idle connections (both ends are in this
-- process) served by accept_cb (nil: no task per connection), once
-- parked() says all are waiting. Every channel is closed, and its close
-- event run, before it returns: a closed stream stays anchored until
-- then, and would be freed inside the next measurement.
local function heap_per_connection(n, accept_cb, parked)
  local accepted, ended = 0, 0
  local Counted = require("evlua.channel"):inherit()
  function Counted:init() accepted = accepted + 1 end   -- both ends
  function Counted:disconnect() ended = ended + 1 end
  local listener = assert(event.listen("127.0.0.1", 0, accept_cb, Counted,
                                       { backlog = n }))
  local before = lua_heap()
  local clients = {}
  for i = 1, n do
    clients[i] = assert(event.connect("127.0.0.1", listener:port(), Counted))
  end
  eventually(function() return accepted == 2 * n end, n .. " connections")
  if parked then eventually(function() return parked() == n end, "parked readers") end
  local bytes = (lua_heap() - before) / n
  for _, ch in ipairs(clients) do ch:close() end
  eventually(function() return ended == 2 * n end, "the closes")
  listener:close()
  return bytes
end

describe("accept callback coroutines", function()
  after_each(helper.cleanup)

  it("park in wait_read with only their own frames under the yield", function()
    local task
    local listener = assert(event.listen("127.0.0.1", 0, function(_, ch)
      task = event.running()
      ch:wait_read()
    end))
    local client = assert(event.connect("127.0.0.1", listener:port()))
    eventually(function() return task and task:status() == "waiting" end, "the reader")
    local tb
    for _, t in ipairs(event.tasks()) do
      if t.handle == task then tb = t.traceback end
    end
    assert.matches("memory_coroutine_spec.lua", tb, 1, true)
    assert.is_nil(tb:find("xpcall", 1, true))
    assert.is_nil(tb:find("event.lua", 1, true))
    assert.is_nil(tb:find("channel.lua", 1, true))
    -- two frames: the waiter (a C function that yields itself: no
    -- coroutine.yield frame above it) and the callback
    local co = task[event._slots.CO]
    assert.equal("C", debug.getinfo(co, 0, "S").what)
    assert.equal("Lua", debug.getinfo(co, 1, "S").what)
    assert.is_nil(debug.getinfo(co, 2, "S"))
    client:close()
    listener:close()
  end)

  it("cost less than a stack doubling more than an idle channel", function()
    -- A parked coroutine whose stack doubled (40 to 80 slots: 640 bytes)
    -- under task_body and xpcall cost about 2.2 KiB more than an idle
    -- channel without one; with its own frames only, about 1.4 KiB; with
    -- the C waiter (one CallInfo less), the 7-slot task record and the
    -- reader kept in the stream, about 1,280 bytes.
    local n = 200
    local idle = heap_per_connection(n)
    local readers = 0
    local with_reader = heap_per_connection(n, function(_, ch)
      readers = readers + 1
      ch:wait_read()
      readers = readers - 1
    end, function() return readers end)
    assert.is_true(with_reader - idle < 1380,
                   ("a parked reader costs %.0f bytes"):format(with_reader - idle))
  end)

  it("end: the task is dead with the callback's results", function()
    local task
    local listener = assert(event.listen("127.0.0.1", 0, function(_, ch)
      task = event.running()
      return ch:wait_read(), "done"
    end))
    local client = assert(event.connect("127.0.0.1", listener:port()))
    eventually(function() return task and task:status() == "waiting" end, "the reader")
    client:write("hi")
    assert.same({ true, "hi", "done" }, { task:join(5) })
    assert.equal("dead", task:status())
    client:close()
    listener:close()
  end)

  it("fail: the error is logged with the callback's traceback", function()
    local log = helper.tmpdir() .. "/log"
    assert(event.log_file(log))
    local task
    local listener = assert(event.listen("127.0.0.1", 0, function(_, ch)
      task = event.running()
      ch:wait_read()
      error("accept failed here")
    end))
    local client = assert(event.connect("127.0.0.1", listener:port()))
    eventually(function() return task and task:status() == "waiting" end, "the reader")
    client:write("x")
    local ok, err = task:join(5)
    event.log_file(nil)
    assert.is_false(ok)
    assert.matches("accept failed here", err, 1, true)
    local text = assert(io.open(log)):read("a")
    assert.matches("failed: [^\n]*accept failed here\nstack traceback:", text)
    assert.matches("memory_coroutine_spec.lua:%d+: in function", text)
    assert.is_nil(text:find("xpcall", 1, true))
    client:close()
    listener:close()
  end)

  it("time out and cancel in wait_read", function()
    local results, tasks = {}, {}
    local listener = assert(event.listen("127.0.0.1", 0, function(_, ch)
      tasks[#tasks + 1] = event.running()
      local first = { ch:wait_read(nil, #tasks == 1 and 0.05 or nil) }
      results[#results + 1] = first[2]
    end))
    local a = assert(event.connect("127.0.0.1", listener:port()))
    eventually(function() return #results == 1 end, "the timeout")
    assert.equal("timeout", results[1])
    local b = assert(event.connect("127.0.0.1", listener:port()))
    eventually(function() return tasks[2] and tasks[2]:status() == "waiting" end, "reader 2")
    assert.is_true(tasks[2]:cancel())
    eventually(function() return #results == 2 end, "the cancel")
    assert.equal("cancelled", results[2])
    assert.equal("dead", tasks[1]:status())
    assert.equal("dead", tasks[2]:status())
    a:close()
    b:close()
    listener:close()
  end)
end)
