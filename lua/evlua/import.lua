-- evlua/import.lua - hot reload of Lua files. import(file) loads a file
-- once; import.reload(file) runs its new source and swaps the code in
-- place while the module's state (tables, values, upvalues) survives.
-- docs/import.md states the rules; in short, a reload:
--  1. compiles and runs the new source in a fresh environment, touching
--     nothing (any error: return nil, err, the old code keeps running);
--  2. pairs the new module with the old one (tables by key, functions'
--     upvalues by name) and plans: old function -> new function, upvalue
--     joins (new functions share the old variables), table patches;
--  3. applies the plan, then walks everything reachable from the registry
--     (tables, upvalues, userdata user values such as a timer's callback,
--     locals of suspended coroutines) replacing each old function by its
--     new version.

local core = require "evlua.core"
local fail = require("evlua.errors").fail
local argerror = require("evlua.errors").argerror

local type, next, rawget, rawset, pairs, ipairs, tostring, error, select =
  type, next, rawget, rawset, pairs, ipairs, tostring, error, select
local getinfo, getupvalue, setupvalue, upvaluejoin, upvalueid =
  debug.getinfo, debug.getupvalue, debug.setupvalue, debug.upvaluejoin,
  debug.upvalueid
local getmetatable_raw = debug.getmetatable

local import = {}
local SOURCE = debug.getinfo(1, "S").source   -- this file's chunk name

--[[ Records ================================================================
One per imported file: path (canonical), chunkname ("@" .. path), env
(its global environment), value (what import returns), locals (the
chunk's top-level locals by name: a local function handed to a timer is
found through them), source, mtime and
size (when last read), read_at (when), functions (weak set of the file's
functions reachable from the module after the last load, for finding a
variable by name), defined (weak: table -> set of keys whose functions
the source defined, so a function dropped from the source can be dropped
from its table without touching keys added at run time).
==========================================================================]]

local records, order = {}, {}

local WEAK_KEYS = { __mode = "k" }

local function read_source(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local source = f:read("a")
  f:close()
  if not source then return nil, path .. ": cannot read" end
  return source
end

-- import(file) accepts a path (absolute, or relative to the current
-- directory) or a module name looked up on package.path ("game.room").
local function resolve(file, fname)
  if type(file) ~= "string" then
    argerror(1, fname, "string expected, got " .. type(file), 2)
  end
  local path = file
  if not file:find("/", 1, true) and not file:find("%.lua$") then
    local found, err = package.searchpath(file, package.path)
    if not found then
      return fail("not_found",
                  "module '" .. file .. "' not found:" .. err)
    end
    path = found
  end
  return core.realpath(path)
end

local function compile(rec, source, env)
  -- A "#!" first line is skipped, keeping the line numbers.
  return load(source:gsub("^#[^\n]*", "", 1), rec.chunkname, "t", env)
end

local function new_env()
  return setmetatable({}, { __index = _G })
end

-- Run the chunk as chunk(path, old_value); returns true, value, locals |
-- false, err. locals: the chunk's top-level locals by name, as it ended.
local function run(rec, chunk, env, old)
  local ok, locals, value = core.run_capture(chunk, rec.path, old)
  if not ok then
    if type(value) ~= "string" then
      value = "(error object is a " .. type(value) .. " value)"
    end
    return false, value
  end
  if value == nil then value = env end
  return true, value, locals
end

-- Tables a module walk never enters: the whole program hangs off them.
local function is_shared_root(t)
  return t == _G or t == package.loaded or t == package.preload
      or t == debug.getregistry()
end

--[[ Planning ===============================================================
A planner pairs the new version with the old one. Nothing is modified
until apply(); an error while planning leaves the old state untouched.
==========================================================================]]

local function new_planner(rec)
  local chunkname = rec.chunkname
  local plan = {
    fmap = {},        -- old function -> new function
    back = {},        -- new function -> old function
    patches = {},     -- { table, key, value } (value nil: remove)
    defined = {},     -- table -> set of keys with the source's functions
    functions = setmetatable({}, WEAK_KEYS),   -- the new version's
    newfuncs = {},    -- list of them, for upvalue joins
  }
  local pair_tables, pair_functions, visit

  local function mine(v)
    return type(v) == "function" and getinfo(v, "S").source == chunkname
  end

  local function patch(t, k, v)
    local p = plan.patches
    p[#p + 1] = { t, k, v }
  end

  -- Old variables by name across the old version's functions, for a new
  -- function whose counterpart lacks one (it began to use a module local):
  -- name -> { f, index }, or false when two different variables share it.
  local by_name = {}
  for f in pairs(rec.functions) do
    for i = 1, math.huge do
      local name = getupvalue(f, i)
      if name == nil then break end
      local known = by_name[name]
      if known == nil then
        by_name[name] = { f, i }
      elseif known and upvalueid(known[1], known[2]) ~= upvalueid(f, i) then
        by_name[name] = false
      end
    end
  end

  -- The old variable a new function's upvalue `name` stands for.
  local function old_variable(nf, name)
    local of = plan.back[nf]
    if of then
      for i = 1, math.huge do
        local oname = getupvalue(of, i)
        if oname == nil then break end
        if oname == name then return of, i end
      end
    end
    local known = by_name[name]
    if known then return known[1], known[2] end
  end

  -- New functions wait in a queue: their variables are paired once the
  -- tables have been, so that every function reachable by a table path
  -- already knows its old counterpart.
  local queue, queued = plan.newfuncs, {}
  local visited, paired = {}, {}   -- new tables walked / paired

  local function enqueue(nf)
    if queued[nf] then return end
    queued[nf] = true
    plan.functions[nf] = true
    queue[#queue + 1] = nf
  end

  -- Walk a new value that has no counterpart: record the file's
  -- functions and the function keys of its tables.
  visit = function(v)
    local t = type(v)
    if t == "function" then
      if mine(v) then enqueue(v) end
    elseif t == "table" then
      if visited[v] or paired[v] or is_shared_root(v) then return end
      visited[v] = true
      local keys = {}
      for k, x in next, v do
        if mine(x) then keys[k] = true end
        visit(x)
      end
      plan.defined[v] = keys
      visit(getmetatable_raw(v))
    end
  end

  pair_functions = function(of, nf)
    if plan.fmap[of] == nil then plan.fmap[of] = nf end
    if plan.back[nf] == nil then plan.back[nf] = of end
    enqueue(nf)
  end

  -- The old table stays (others hold it); it takes the new functions and
  -- new keys; values it already has are state and stay.
  pair_tables = function(old, new)
    if paired[new] or is_shared_root(old) or is_shared_root(new) then return end
    paired[new] = true
    local keys = {}
    for k, nv in next, new do
      local ov = rawget(old, k)
      local tn, to = type(nv), type(ov)
      if mine(nv) then keys[k] = true end
      if ov == nil then
        patch(old, k, nv)                 -- a new key
        visit(nv)
      elseif ov ~= nv then
        if tn == "function" and to == "function" then
          patch(old, k, nv)
          if mine(nv) then pair_functions(ov, nv) end
        elseif tn == "table" and to == "table" then
          pair_tables(ov, nv)
        elseif tn ~= to then
          patch(old, k, nv)               -- the type changed: code wins
          visit(nv)
        end                               -- same type: the state stays
      end
    end
    -- Functions the previous source defined here and the new one drops.
    local before = rec.defined[old]
    if before then
      for k in pairs(before) do
        if rawget(new, k) == nil and mine(rawget(old, k)) then patch(old, k, nil) end
      end
    end
    plan.defined[old] = keys
    local om, nm = getmetatable_raw(old), getmetatable_raw(new)
    if type(om) == "table" and type(nm) == "table" and om ~= nm then
      pair_tables(om, nm)
    elseif nm ~= om then
      visit(nm)
    end
  end

  -- Pair the queued functions' variables (upvalues) that hold tables or
  -- functions with the old ones; this may queue more functions.
  function plan.pair_variables()
    local i = 1
    while queue[i] do
      local nf = queue[i]
      i = i + 1
      for u = 1, math.huge do
        local name, uv = getupvalue(nf, u)
        if name == nil then break end
        local ut = type(uv)
        if name ~= "_ENV" and (ut == "function" or ut == "table") then
          local of, j = old_variable(nf, name)
          local ov = of and select(2, getupvalue(of, j))
          if ut == "function" and type(ov) == "function" and ov ~= uv and mine(uv) then
            pair_functions(ov, uv)
          elseif ut == "table" and type(ov) == "table" and ov ~= uv then
            pair_tables(ov, uv)
          else
            visit(uv)
          end
        end
      end
    end
  end

  -- Upvalue joins: each new function's variables become the old ones.
  -- _ENV is the file's environment: the old one, always.
  function plan.compute_joins()
    local joins = {}
    for _, nf in ipairs(plan.newfuncs) do
      for i = 1, math.huge do
        local name = getupvalue(nf, i)
        if name == nil then break end
        if name == "_ENV" then
          joins[#joins + 1] = { nf, i, env = true }
        else
          local of, j = old_variable(nf, name)
          if of then joins[#joins + 1] = { nf, i, of, j } end
        end
      end
    end
    plan.joins = joins
  end

  plan.pair_tables, plan.pair_functions, plan.visit = pair_tables, pair_functions, visit
  plan.mine = mine
  return plan
end

--[[ Replacing references ===================================================
Every old function still referenced anywhere becomes its new version: in
tables (values, not keys), upvalues, userdata user values (a timer keeps
its callback there) and named locals of every coroutine's frames
(the running one's below import's own frames). Functions running
in a frame keep running their old code to the end of that call; their
upvalues are updated like any other.
==========================================================================]]

local function replace_references(fmap)
  local getlocal, setlocal = debug.getlocal, debug.setlocal
  local getuservalue, setuservalue = debug.getuservalue, debug.setuservalue
  local running = coroutine.running()
  local seen = { [fmap] = true }
  local stack, n = { debug.getregistry() }, 1
  seen[stack[1]] = true
  local function push(v)
    local t = type(v)
    if (t == "table" or t == "function" or t == "userdata" or t == "thread")
       and not seen[v] then
      seen[v] = true
      n = n + 1
      stack[n] = v
    end
  end
  local replaced = 0
  while n > 0 do
    local obj = stack[n]
    stack[n] = nil
    n = n - 1
    local t = type(obj)
    if t == "table" then
      for k, v in next, obj do
        local nv = fmap[v]
        if nv then
          rawset(obj, k, nv)          -- an existing key: safe during next
          replaced = replaced + 1
          v = nv
        end
        push(k)
        push(v)
      end
      push(getmetatable_raw(obj))
    elseif t == "function" then
      for i = 1, math.huge do
        local name, v = getupvalue(obj, i)
        if name == nil then break end
        local nv = fmap[v]
        if nv then
          setupvalue(obj, i, nv)
          replaced = replaced + 1
          v = nv
        end
        push(v)
      end
    elseif t == "userdata" then
      push(getmetatable_raw(obj))
      for i = 1, math.huge do
        local v, present = getuservalue(obj, i)
        if not present then break end
        local nv = fmap[v]
        if nv then
          setuservalue(obj, nv, i)
          replaced = replaced + 1
          v = nv
        end
        push(v)
      end
    else                           -- a thread: its frames
      -- The running thread is read from here (level 1 is this function):
      -- import's own frames are skipped, its callers' locals replaced.
      local own = obj == running
      local first = own and 1 or 0
      for level = first, math.huge do
        local info
        if own then info = getinfo(level, "fS") else info = getinfo(obj, level, "fS") end
        if not info then break end
        push(info.func)
        if not (own and info.source == SOURCE) then
          for i = 1, math.huge do
            local name, v
            if own then name, v = getlocal(level, i) else name, v = getlocal(obj, level, i) end
            if name == nil then break end
            local nv = fmap[v]
            if nv and name:sub(1, 1) ~= "(" then
              if own then setlocal(level, i, nv) else setlocal(obj, level, i, nv) end
              replaced = replaced + 1
              v = nv
            end
            push(v)
          end
        end
      end
    end
  end
  return replaced
end

--[[ Loading and reloading ==================================================]]

-- Remember what the module looks like now, for the next reload.
local function remember(rec, plan, source)
  rec.functions = plan.functions
  local defined = setmetatable({}, WEAK_KEYS)
  for t, keys in pairs(plan.defined) do defined[t] = keys end
  rec.defined = defined
  rec.source = source
  rec.mtime, rec.size = core.file_stat(rec.path)
  rec.read_at = core.time()
end

local function load_file(path)
  local source, err = read_source(path)
  if not source then error(err, 0) end
  local rec = { path = path, chunkname = "@" .. path, loading = true,
                functions = setmetatable({}, WEAK_KEYS),
                defined = setmetatable({}, WEAK_KEYS) }
  local env = new_env()
  local chunk
  chunk, err = compile(rec, source, env)
  if not chunk then error(err, 0) end
  records[path] = rec          -- marks it loading: a cycle is an error
  local ok, value, locals = run(rec, chunk, env, nil)
  if not ok then
    records[path] = nil
    error(value, 0)
  end
  rec.env, rec.value, rec.locals, rec.loading = env, value, locals, nil
  order[#order + 1] = path
  local plan = new_planner(rec)
  plan.visit(value)
  plan.visit(locals)
  plan.visit(env)
  plan.pair_variables()
  remember(rec, plan, source)
  return rec
end

-- Apply a plan: nothing here can fail on user data (raw accesses only).
local function apply(rec, plan)
  plan.compute_joins()
  for _, j in ipairs(plan.joins) do
    if j.env then
      setupvalue(j[1], j[2], rec.env)
    else
      upvaluejoin(j[1], j[2], j[3], j[4])
    end
  end
  for _, p in ipairs(plan.patches) do rawset(p[1], p[2], p[3]) end
  return replace_references(plan.fmap)
end

local function reload_record(rec, source)
  if rec.loading then return nil, rec.path .. ": reload already in progress" end
  local err
  if not source then
    source, err = read_source(rec.path)
    if not source then return nil, err end
  end
  local env = new_env()
  local chunk
  chunk, err = compile(rec, source, env)
  if not chunk then return nil, err end
  rec.loading = true
  local ok, value, locals = run(rec, chunk, env, rec.value)
  rec.loading = nil
  if not ok then return nil, value end
  local plan = new_planner(rec)
  local old, new_value = rec.value, nil
  local planned, perr = pcall(function()
    if type(old) == "table" and type(value) == "table" then
      plan.pair_tables(old, value)
    elseif type(old) == "function" and plan.mine(value) then
      plan.pair_functions(old, value)
      new_value = value
    end
    plan.pair_tables(rec.locals, locals)
    plan.pair_tables(rec.env, env)
    plan.pair_variables()
  end)
  if not planned then return nil, "reload failed while planning: " .. tostring(perr) end
  apply(rec, plan)
  if new_value then rec.value = new_value end
  remember(rec, plan, source)
  return true
end

--[[ API ====================================================================]]

-- import(file) -> the module: what the file returned, or its environment
-- (its globals) when it returned nothing. Loaded once; errors raise.
local function import_file(file)
  local path, err = resolve(file, "import")
  if not path then error(err, 2) end
  local rec = records[path]
  if rec then
    if rec.loading and not rec.value then
      error("import cycle: " .. path .. " is still loading", 2)
    end
    return rec.value
  end
  return load_file(path).value
end

-- import.reload(file) -> true | nil, err. The old code keeps running if
-- the new source fails to compile or run.
function import.reload(file)
  local path, err, code = resolve(file, "reload")
  if not path then return nil, err, code end
  local rec = records[path]
  if not rec then
    return fail("not_imported", "not imported: " .. path)
  end
  return reload_record(rec)
end

-- Has the file changed since it was last read? Returns changed, source |
-- nil, err. Size and mtime equal to the last read mean unchanged unless
-- that read came less than a second after the mtime (an edit in the same
-- timestamp tick would not show): then the content decides.
local function changed(rec)
  local mtime, size = core.file_stat(rec.path)
  if not mtime then return nil, size end
  if mtime == rec.mtime and size == rec.size and rec.read_at - mtime > 1 then
    return false
  end
  local source, err = read_source(rec.path)
  if not source then return nil, err end
  if source == rec.source then
    rec.mtime, rec.size, rec.read_at = mtime, size, core.time()
    return false
  end
  return true, source
end

-- import.auto_reload() -> list of the files reloaded (in import order)
-- [, { [path] = err } for changed files that failed to reload].
function import.auto_reload()
  local done, errors = {}, nil
  for _, path in ipairs(order) do
    local rec = records[path]
    local is_changed, source = changed(rec)
    local ok, err = is_changed, source
    if is_changed then ok, err = reload_record(rec, source) end
    if ok then
      done[#done + 1] = path
    elseif ok == nil then
      errors = errors or {}
      errors[path] = err
    end
  end
  return done, errors
end

-- import.files() -> the canonical paths of the imported files, in order
function import.files()
  return table.move(order, 1, #order, 1, {})
end

return setmetatable(import, {
  __call = function(_, file) return import_file(file) end,
})
