-- tests/lua/import_spec.lua - import, import.reload, import.auto_reload:
-- new code swapped in place, module state kept, broken sources refused.
local helper = require "helper"
local event = require "event"

-- Write a module file; returns its path.
local function module_file(dir, name, source)
  local path = dir .. "/" .. name
  helper.write_file(path, source)
  return path
end

-- Replace every `from` in the file at path by `to`.
local function edit(path, from, to)
  local source = helper.slurp(path)
  local edited, n = source:gsub(from:gsub("%p", "%%%0"), (to:gsub("%%", "%%%%")))
  assert(n > 0, "edit: " .. from .. " not found")
  helper.write_file(path, edited)
end

local function within(dir, list)
  local mine = {}
  for _, path in ipairs(list or {}) do
    if path:sub(1, #dir + 1) == dir .. "/" then mine[#mine + 1] = path:sub(#dir + 2) end
  end
  return mine
end

describe("import", function()
  local dir
  before_each(function()
    -- realpath: import keys files by their canonical path
    dir = require("evlua.core").realpath(helper.tmpdir())
  end)
  after_each(helper.cleanup)

  it("is a global and require('evlua.import') alike", function()
    assert.equal(require("evlua.import"), import)
  end)

  it("loads a file once and returns what it returned", function()
    local path = module_file(dir, "once.lua", [[
      _G.import_spec_loads = (_G.import_spec_loads or 0) + 1
      return { path = ... }
    ]])
    _G.import_spec_loads = 0
    local m = import(path)
    assert.equal(path, m.path)                      -- the chunk gets its path
    assert.equal(m, import(path))
    assert.equal(1, _G.import_spec_loads)
    assert.same({ "once.lua" }, within(dir, import.files()))
  end)

  it("finds module names on package.path and relative paths from the current directory", function()
    module_file(dir, "named_mod.lua", "return { name = 'named' }")
    local saved = package.path
    package.path = dir .. "/?.lua;" .. saved
    local ok, m = pcall(import, "named_mod")
    package.path = saved
    assert.is_true(ok, m)
    assert.equal("named", m.name)
    local cwd = require("evlua.core").realpath(".")
    local rel = ("../"):rep(select(2, cwd:gsub("/", ""))) .. dir:sub(2) .. "/named_mod.lua"
    assert.equal(m, import(rel))
  end)

  it("raises for a missing file or a syntax error, as require does", function()
    assert.has_error(function() import(dir .. "/missing.lua") end,
                     dir .. "/missing.lua: no such file")
    local path = module_file(dir, "bad.lua", "return {\n")
    local ok, err = pcall(import, path)
    assert.is_false(ok)
    assert.matches(path:gsub("%p", "%%%0") .. ":2: unexpected symbol near <eof>", err)
    assert.has_error(function() import(42) end,
                     "bad argument #1 to 'import' (string expected, got number)")
  end)

  it("reports a file that imports itself while it loads", function()
    local path = module_file(dir, "cycle.lua", "return import(...)")
    local ok, err = pcall(import, path)
    assert.is_false(ok)
    assert.matches("import cycle: " .. path:gsub("%p", "%%%0") .. " is still loading", err)
    assert.same({}, within(dir, import.files()))    -- and it is not recorded
  end)

  it("keeps a file's globals in its own environment, returned when the file returns nothing", function()
    local path = module_file(dir, "globals.lua", [[
      hits = 0
      function handle() hits = hits + 1 return "v1", hits end
    ]])
    local env = import(path)
    assert.is_nil(rawget(_G, "handle"))
    assert.same({ "v1", 1 }, { env.handle() })
    edit(path, '"v1"', '"v2"')
    assert.is_true(import.reload(path))
    assert.same({ "v2", 2 }, { env.handle() })      -- the global hits stayed
    assert.is_nil(rawget(_G, "handle"))
  end)
end)

describe("import.reload", function()
  local dir
  before_each(function() dir = require("evlua.core").realpath(helper.tmpdir()) end)
  after_each(helper.cleanup)

  it("swaps the code of a handler table while a counter upvalue keeps its value", function()
    local path = module_file(dir, "counter.lua", [[
      local counter = 0
      local M = {}
      M.handlers = {
        incr = function() counter = counter + 1 return counter end,
        get = function() return "v1", counter end,
      }
      return M
    ]])
    local m = import(path)
    local handlers = m.handlers
    local elsewhere = { incr = m.handlers.incr }     -- another module's table
    local incr = m.handlers.incr                     -- a local of the caller
    for _ = 1, 3 do elsewhere.incr() end
    assert.same({ "v1", 3 }, { handlers.get() })

    edit(path, "counter = counter + 1", "counter = counter + 10")
    edit(path, '"v1"', '"v2"')
    assert.is_true(import.reload(path))

    assert.equal(m, import(path))                    -- same module table
    assert.equal(handlers, m.handlers)               -- same handler table
    assert.equal(13, elsewhere.incr())
    assert.equal(23, incr())
    assert.equal(33, m.handlers.incr())
    assert.same({ "v2", 33 }, { handlers.get() })
  end)

  it("makes timers, timeouts and suspended coroutines call the new code", function()
    local path = module_file(dir, "timers.lua", [[
      local event = require "event"
      local M = { log = {} }
      local ticks = 0
      local function tick() ticks = ticks + 1 M.log[#M.log + 1] = "tick v1" end
      local function step(how) M.log[#M.log + 1] = "step v1 " .. how end
      local function once() M.log[#M.log + 1] = "once v1" end
      local old = select(2, ...)
      if not old then
        M.timer = event.timer(0.002, tick)
        M.timeout = event.timeout(3600, once)
        M.loop = event.fork(function()
          local step_local = step
          while not M.stop do
            step("upvalue")
            step_local("local")
            M.log[#M.log + 1] = "loop v1"
            event.sleep(0.002)
          end
        end)
      end
      function M.ticks() return ticks end
      return M
    ]])
    local m = import(path)
    helper.eventually(function() return m.ticks() >= 2 end, "two ticks")
    edit(path, "tick v1", "tick v2")
    edit(path, "step v1", "step v2")
    edit(path, "once v1", "once v2")
    edit(path, "loop v1", "loop v2")
    local before = m.ticks()
    assert.is_true(import.reload(path))
    assert.equal(1, #within(dir, import.files()))   -- nothing was started twice
    m.log = {}
    m.timeout:start(0.001)      -- due now: its callback is the new code
    helper.eventually(function()
      local seen = table.concat(m.log, ",")
      return seen:find("tick v2", 1, true) and seen:find("step v2 upvalue", 1, true)
             and seen:find("step v2 local", 1, true) and seen:find("once v2", 1, true)
    end, "the new code")
    assert.is_true(m.ticks() > before)              -- the tick counter went on
    local seen = table.concat(m.log, ",")
    assert.not_matches("v1", (seen:gsub("loop v1", "")))
    -- The loop's own frame was running when the code changed: it goes on
    -- with its old code; what it calls is new.
    assert.matches("loop v1", seen, 1, true)
    assert.not_matches("loop v2", seen, 1, true)
    m.stop = true
    m.timer:cancel()
    assert.is_true(m.loop:join(5))
  end)

  it("changes a channel subclass's methods for a connection already open", function()
    local path = module_file(dir, "echo.lua", [[
      local event = require "event"
      local channel = require "evlua.channel"
      local Echo = channel:inherit()
      function Echo:data()
        local line = self:read_line()
        if line then self:write("v1 " .. line .. "\n") end
      end
      local M = {}
      function M.start()
        M.listener = assert(event.listen("127.0.0.1", 0, function() end, Echo))
        return M.listener:port()
      end
      return M
    ]])
    local m = import(path)
    local ch = assert(event.connect("127.0.0.1", m.start()))
    ch:write("one\n")
    assert.equal("v1 one", ch:wait_line(5))
    edit(path, '"v1 "', '"v2 "')
    assert.is_true(import.reload(path))
    ch:write("two\n")
    assert.equal("v2 two", ch:wait_line(5))
    ch:close()
    m.listener:close()
  end)

  it("refuses a broken new source and leaves the old code and state in place", function()
    local path = module_file(dir, "stable.lua", [[
      local n = 0
      local M = { config = { mode = "v1" } }
      function M.next() n = n + 1 return "v1", n end
      return M
    ]])
    local m = import(path)
    local config = m.config
    m.next()
    local good = helper.slurp(path)

    helper.write_file(path, good:gsub("return M", "return M +"))
    local ok, err, code = import.reload(path)
    assert.is_nil(ok)
    assert.matches(path:gsub("%p", "%%%0") .. ":5: unexpected symbol near <eof>", err)
    assert.equal("syntax", code)

    -- Fails at run time after redefining everything: nothing of it stays.
    helper.write_file(path, good:gsub('"v1"', '"v2"'):gsub("return M", "error('half way') return M"))
    ok, err, code = import.reload(path)
    assert.is_nil(ok)
    assert.equal(path .. ":4: half way", err)
    assert.equal("raised", code)

    assert.same({ "v1", 2 }, { m.next() })
    assert.equal(config, m.config)
    assert.equal("v1", m.config.mode)

    helper.write_file(path, good:gsub('"v1", n', '"v3", n'))
    assert.is_true(import.reload(path))
    assert.same({ "v3", 3 }, { m.next() })
    local other = module_file(dir, "other.lua", "return {}")
    assert.same({ nil, "not imported: " .. other, "not_imported" },
                { import.reload(other) })
    assert.same({ nil, dir .. "/gone.lua: no such file", "ENOENT" },
                { import.reload(dir .. "/gone.lua") })
  end)

  it("reports a file removed after its import with the errno code", function()
    local path = module_file(dir, "removed.lua", "return {}")
    import(path)
    os.remove(path)
    assert.same({ nil, path .. ": no such file", "ENOENT" }, { import.reload(path) })
  end)

  it("follows the documented rules for removed functions, changed initial values and new code", function()
    local path = module_file(dir, "rules.lua", [[
      local limit = 10
      local M = {}
      function M.limit() return limit end
      function M.old_api() return "old api" end
      function M.bump() limit = limit + 1 end
      return M
    ]])
    local m = import(path)
    local old_api = m.old_api
    m.bump()
    m.runtime_added = function() return "added at run time" end
    helper.write_file(path, [[
      local limit = 99                  -- initial value changed
      local extra = "new local"
      local M = {}
      function M.limit() return limit end
      function M.bump() limit = limit + 1 end
      function M.added() return extra, limit end
      return M
    ]])
    assert.is_true(import.reload(path))
    assert.equal(11, m.limit())                      -- the state stayed
    assert.is_nil(m.old_api)                         -- dropped from its table
    assert.equal("old api", old_api())               -- a held reference still works
    assert.equal("added at run time", m.runtime_added())   -- not the source's
    assert.same({ "new local", 11 }, { m.added() })  -- new code shares the state
    m.bump()
    assert.same({ "new local", 12 }, { m.added() })
  end)

  it("reloads a file that returns a function", function()
    local path = module_file(dir, "fn.lua", [[
      local calls = 0
      return function() calls = calls + 1 return "v1", calls end
    ]])
    local f = import(path)
    f()
    edit(path, '"v1"', '"v2"')
    assert.is_true(import.reload(path))
    assert.same({ "v2", 2 }, { f() })               -- the caller's local too
    assert.equal(f, import(path))
  end)

  it("reloads a module whose file ends with a tail call", function()
    local path = module_file(dir, "tail.lua", [[
      local event = require "event"
      local n = 0
      local function tick() n = n + 1 end
      local M = {}
      if not select(2, ...) then M.timer = event.timer(0.002, tick) end
      function M.n() return n end
      return setmetatable(M, { __index = function() return "v1" end })
    ]])
    local m = import(path)
    helper.eventually(function() return m.n() >= 1 end, "a tick")
    assert.equal("v1", m.anything)
    edit(path, "n = n + 1", "n = n + 1000")
    edit(path, '"v1"', '"v2"')
    assert.is_true(import.reload(path))
    assert.equal("v2", m.anything)                   -- the old metatable, patched
    local before = m.n()
    helper.eventually(function() return m.n() >= before + 1000 end, "a new tick")
    m.timer:cancel()
  end)
end)

describe("import.auto_reload", function()
  local dir
  before_each(function() dir = require("evlua.core").realpath(helper.tmpdir()) end)
  after_each(helper.cleanup)

  it("reloads exactly the files whose content changed", function()
    _G.import_spec_runs = {}
    local function source(name, version)
      return ([[
        _G.import_spec_runs[%q] = (_G.import_spec_runs[%q] or 0) + 1
        return { version = function() return %q end }
      ]]):format(name, name, version)
    end
    local paths, mods = {}, {}
    for _, name in ipairs({ "a", "b", "c", "d" }) do
      paths[name] = module_file(dir, name .. ".lua", source(name, "v1"))
      mods[name] = import(paths[name])
    end
    local function mtime(path) return (require("evlua.core").file_stat(path)) end
    local function set_mtime(path, t)
      local _, err, rc = helper.sh(("touch -d @%.9f %s"):format(t, helper.quote(path)))
      assert.equal(0, rc, err)
    end

    assert.same({}, within(dir, import.auto_reload()))

    -- a: touched (newer mtime), same content: not reloaded.
    set_mtime(paths.a, mtime(paths.a) + 5)
    -- b: new content with a newer mtime.
    helper.write_file(paths.b, source("b", "v2"))
    set_mtime(paths.b, mtime(paths.b) + 5)
    -- c: new content of the same size and the same mtime (an edit within
    -- one timestamp tick): the content decides.
    local c_time = mtime(paths.c)
    helper.write_file(paths.c, source("c", "v2"))
    set_mtime(paths.c, c_time)
    -- d: broken.
    helper.write_file(paths.d, "return {")

    local done, errors = import.auto_reload()
    assert.same({ "b.lua", "c.lua" }, within(dir, done))
    assert.matches(paths.d:gsub("%p", "%%%0") .. ":1:", errors[paths.d])
    assert.same({ a = 1, b = 2, c = 2, d = 1 }, _G.import_spec_runs)
    assert.same({ "v1", "v2", "v2", "v1" },
                { mods.a.version(), mods.b.version(), mods.c.version(), mods.d.version() })

    -- Nothing changed since: only the still broken file is reported.
    done, errors = import.auto_reload()
    assert.same({}, within(dir, done))
    assert.is_string(errors[paths.d])
    helper.write_file(paths.d, source("d", "v2"))
    done = import.auto_reload()
    assert.same({ "d.lua" }, within(dir, done))
    assert.equal("v2", mods.d.version())
    _G.import_spec_runs = nil
  end)
end)
