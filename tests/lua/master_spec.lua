-- tests/lua/master_spec.lua - the master/worker sample end to end: run
-- `evlua master` with 2 workers on free ports, spread requests over the
-- workers, kill -9 one and watch it replaced while requests succeed, then
-- SIGTERM the master and see every process end with status 0.
local event = require "event"
local process = require "evlua.process"
local rpc = require "evlua.rpc"
local helper = require "helper"

local alive = helper.alive

-- GET / over `n` connections with curl; returns the list of worker pids
-- that answered, or nil, err if a request failed.
local function get_pids(port, n)
  local argv = { "curl", "-sS", "--max-time", "10", "-H", "Connection: close" }
  for _ = 1, n do argv[#argv + 1] = "http://127.0.0.1:" .. port .. "/" end
  local out, status = event.run_process(argv, { stderr = "capture", lines = true })
  if not out then return nil, status end
  if status.code ~= 0 then return nil, "curl: " .. status.stderr end
  local pids = {}
  for _, line in ipairs(out) do
    local pid = tonumber(line:match("^hello from worker %d+ %(pid (%d+)%)$"))
    if not pid then return nil, "unexpected answer: " .. line end
    pids[#pids + 1] = pid
  end
  if #pids ~= n then return nil, #pids .. " answers for " .. n .. " requests" end
  return pids
end

local function set_of(list)
  local s, n = {}, 0
  for _, v in ipairs(list) do
    if not s[v] then n = n + 1 end
    s[v] = true
  end
  return s, n
end

describe("examples/master.lua", function()
  local master, control
  after_each(function()
    if control then control:close() end
    if master and master:running() then master:kill("KILL") end
    control, master = nil, nil
    helper.cleanup()
  end)

  -- The registered workers, from the master's control port.
  local function workers()
    return assert(control:call("workers"))
  end

  it("serves from every worker, replaces a killed one, stops cleanly", function()
    local http_port, control_port = helper.free_port(), helper.free_port()
    -- `evlua master` finds examples/master.lua by name
    master = assert(process.spawn({ helper.evlua, "master", http_port,
                                    control_port, 2 },
                                  { stderr = "stdout", timeout = 120 }))
    helper.eventually(function()
      control = control or rpc.connect("127.0.0.1", control_port)
      return control and #workers() == 2
    end, "2 registered workers")
    local first = workers()
    local registered = set_of({ first[1].pid, first[2].pid })

    -- several connections reach more than one worker
    local pids = assert(get_pids(http_port, 20))
    local answered, n = set_of(pids)
    assert.equal(2, n)
    for pid in pairs(answered) do assert.is_true(registered[pid]) end

    -- kill -9 one worker: requests keep succeeding, a new one registers
    local victim = first[1].pid
    assert(event.run_process({ "kill", "-9", victim }))
    helper.eventually(function() return not alive(victim) end, "the worker to die")
    local replacement, requests = nil, 0
    local deadline = event.now() + 20
    while not replacement and event.now() < deadline do
      assert(get_pids(http_port, 2))
      requests = requests + 2
      for _, w in ipairs(workers()) do
        if not registered[w.pid] then replacement = w end
      end
    end
    assert.is_table(replacement, "no worker replaced the killed one")
    assert.equal(first[1].id, replacement.id)
    assert.is_true(requests >= 2)
    helper.eventually(function() return #workers() == 2 end, "2 workers again")
    answered = set_of(assert(get_pids(http_port, 20)))
    assert.is_true(answered[replacement.pid], "the new worker answers")
    assert.is_nil(answered[victim])
    -- the workers report their stats to the master
    helper.eventually(function()
      local total = 0
      for _, w in ipairs(workers()) do total = total + w.requests end
      return total > 0
    end, "stats from the workers")

    -- a request in flight when the master gets SIGTERM is answered
    local slow = event.fork(event.run_process,
      { "curl", "-sS", "--max-time", "20",
        "http://127.0.0.1:" .. http_port .. "/slow?ms=1500" }, { stderr = "capture" })
    helper.eventually(function()
      for _, w in ipairs(workers()) do
        if w.connections > 0 then return true end
      end
    end, "the slow request to arrive")
    local all = { first[1].pid, first[2].pid, replacement.pid }
    control:close()
    control = nil
    assert.is_true(master:kill("TERM"))
    local out, status = master:wait(60)
    assert.is_string(out, status)
    assert.equal(0, status.code, out)

    local ok, body, st = slow:join(30)
    assert.is_true(ok)
    assert.equal(0, st.code, st.stderr)
    assert.matches("^slow reply from worker %d+ %(pid %d+%) after 1500 ms\n$", body)

    assert.matches("worker 1 %(pid " .. victim .. "%) was killed by SIGKILL, restarting", out)
    for _, w in ipairs({ first[2], replacement }) do
      assert.matches(("master: worker %d %%(pid %d%%) exited with code 0")
                     :format(w.id, w.pid), out)
    end
    assert.matches("master: stopped", out, 1, true)
    for _, pid in ipairs(all) do assert.is_false(alive(pid)) end
    assert.is_nil(event.connect("127.0.0.1", http_port))
  end)

  it("leaves no worker behind when the master is killed", function()
    local http_port, control_port = helper.free_port(), helper.free_port()
    master = assert(process.spawn({ helper.evlua, "examples/master.lua", http_port,
                                    control_port, 1 },
                                  { stderr = "stdout", timeout = 120 }))
    helper.eventually(function()
      control = control or rpc.connect("127.0.0.1", control_port)
      return control and #workers() == 1
    end, "1 registered worker")
    local pid = workers()[1].pid
    assert.is_true(master:kill("KILL"))   -- its group only: not the worker's
    local out, status = master:wait(30)
    assert.equal("KILL", status.signal_name, out)
    helper.eventually(function() return not alive(pid) end, "the worker to stop")
  end)
end)
