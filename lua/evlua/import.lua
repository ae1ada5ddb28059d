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

--[[ Records ================================================================]]
-- One per imported file: path (canonical), chunkname ("@" .. path), env
-- (its global environment), value (what import returns), locals (the
-- chunk's top-level locals by name: a local function handed to a timer is
-- found through them), source, mtime and
-- size (when last read), read_at (when), functions (weak set of the file's
-- functions reachable from the module after the last load, for finding a
-- variable by name), defined (weak: table -> set of keys whose functions
-- the source defined, so a function dropped from the source can be dropped
-- from its table without touching keys added at run time).

local records, order = {}, {}

local WEAK_KEYS = { __mode = "k" }

-- read_source(path) -> source | nil, err, code. io.open's error has the
-- errno as a number only: core.file_stat names it ("ENOENT").
local function read_source(path)
  local f = io.open(path, "rb")
  if not f then
    local ok, err, code = core.file_stat(path)
    if not ok then return nil, err, code end
    return fail("unreadable", path .. ": cannot open")
  end
  local source = f:read("a")
  f:close()
  if not source then return fail("unreadable", path .. ": cannot read") end
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
-- false, err (the chunk raised err). locals: the chunk's top-level locals
-- by name, as it ended.
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

--[[ Planning ===============================================================]]
-- A planner pairs the new version with the old one. Nothing is modified
-- until apply(); an error while planning leaves the old state untouched.

local Planner = {}
Planner.__index = Planner

-- Old variables by name across the old version's functions, for a new
-- function whose counterpart lacks one (it began to use a module local):
-- name -> { f, index }, or false when two different variables share it.
local function index_old_variables(functions)
  local by_name = {}
  for f in pairs(functions) do
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
  return by_name
end

local function new_planner(rec)
  return setmetatable({
    rec = rec,
    chunkname = rec.chunkname,
    fmap = {},        -- old function -> new function
    back = {},        -- new function -> old function
    patches = {},     -- { table, key, value } (value nil: remove)
    defined = {},     -- table -> set of keys with the source's functions
    functions = setmetatable({}, WEAK_KEYS),   -- the new version's
    -- New functions wait in this queue: their variables are paired once
    -- the tables have been, so that every function reachable by a table
    -- path already knows its old counterpart. Also the list of upvalue
    -- joins to compute.
    newfuncs = {},
    queued = {},      -- set of newfuncs
    visited = {},     -- new tables walked
    paired = {},      -- new tables paired
    by_name = index_old_variables(rec.functions),
  }, Planner)
end

function Planner:mine(v)
  return type(v) == "function" and getinfo(v, "S").source == self.chunkname
end

function Planner:patch(t, k, v)
  local p = self.patches
  p[#p + 1] = { t, k, v }
end

-- The old variable a new function's upvalue `name` stands for.
function Planner:old_variable(nf, name)
  local of = self.back[nf]
  if of then
    for i = 1, math.huge do
      local oname = getupvalue(of, i)
      if oname == nil then break end
      if oname == name then return of, i end
    end
  end
  local known = self.by_name[name]
  if known then return known[1], known[2] end
end

function Planner:enqueue(nf)
  if self.queued[nf] then return end
  self.queued[nf] = true
  self.functions[nf] = true
  local queue = self.newfuncs
  queue[#queue + 1] = nf
end

-- Walk a new value that has no counterpart: record the file's
-- functions and the function keys of its tables.
function Planner:visit(v)
  local t = type(v)
  if t == "function" then
    if self:mine(v) then self:enqueue(v) end
  elseif t == "table" then
    if self.visited[v] or self.paired[v] or is_shared_root(v) then return end
    self.visited[v] = true
    local keys = {}
    for k, x in next, v do
      if self:mine(x) then keys[k] = true end
      self:visit(x)
    end
    self.defined[v] = keys
    self:visit(getmetatable_raw(v))
  end
end

function Planner:pair_functions(of, nf)
  if self.fmap[of] == nil then self.fmap[of] = nf end
  if self.back[nf] == nil then self.back[nf] = of end
  self:enqueue(nf)
end

-- Pair the values of new's keys with old's; returns the set of new's
-- keys holding the source's functions.
function Planner:pair_keys(old, new)
  local keys = {}
  for k, nv in next, new do
    local ov = rawget(old, k)
    local tn, to = type(nv), type(ov)
    if self:mine(nv) then keys[k] = true end
    if ov == nil then
      self:patch(old, k, nv)              -- a new key
      self:visit(nv)
    elseif ov ~= nv then
      if tn == "function" and to == "function" then
        self:patch(old, k, nv)
        if self:mine(nv) then self:pair_functions(ov, nv) end
      elseif tn == "table" and to == "table" then
        self:pair_tables(ov, nv)
      elseif tn ~= to then
        self:patch(old, k, nv)            -- the type changed: code wins
        self:visit(nv)
      end                                 -- same type: the state stays
    end
  end
  return keys
end

-- The old table stays (others hold it); it takes the new functions and
-- new keys; values it already has are state and stay.
function Planner:pair_tables(old, new)
  if self.paired[new] or is_shared_root(old) or is_shared_root(new) then return end
  self.paired[new] = true
  local keys = self:pair_keys(old, new)
  -- Functions the previous source defined here and the new one drops.
  local before = self.rec.defined[old]
  if before then
    for k in pairs(before) do
      if rawget(new, k) == nil and self:mine(rawget(old, k)) then
        self:patch(old, k, nil)
      end
    end
  end
  self.defined[old] = keys
  local om, nm = getmetatable_raw(old), getmetatable_raw(new)
  if type(om) == "table" and type(nm) == "table" and om ~= nm then
    self:pair_tables(om, nm)
  elseif nm ~= om then
    self:visit(nm)
  end
end

-- Pair the variables (upvalues) of new function nf that hold tables or
-- functions with the old ones.
function Planner:pair_upvalues(nf)
  for u = 1, math.huge do
    local name, uv = getupvalue(nf, u)
    if name == nil then break end
    local ut = type(uv)
    if name ~= "_ENV" and (ut == "function" or ut == "table") then
      local of, j = self:old_variable(nf, name)
      local ov = of and select(2, getupvalue(of, j))
      if ut == "function" and type(ov) == "function" and ov ~= uv and self:mine(uv) then
        self:pair_functions(ov, uv)
      elseif ut == "table" and type(ov) == "table" and ov ~= uv then
        self:pair_tables(ov, uv)
      else
        self:visit(uv)
      end
    end
  end
end

-- Pair the queued functions' variables; this may queue more functions.
function Planner:pair_variables()
  local queue, i = self.newfuncs, 1
  while queue[i] do
    self:pair_upvalues(queue[i])
    i = i + 1
  end
end

-- Upvalue joins: each new function's variables become the old ones.
-- _ENV is the file's environment: the old one, always.
function Planner:compute_joins()
  local joins = {}
  for _, nf in ipairs(self.newfuncs) do
    for i = 1, math.huge do
      local name = getupvalue(nf, i)
      if name == nil then break end
      if name == "_ENV" then
        joins[#joins + 1] = { nf, i, env = true }
      else
        local of, j = self:old_variable(nf, name)
        if of then joins[#joins + 1] = { nf, i, of, j } end
      end
    end
  end
  self.joins = joins
end

--[[ Replacing references ===================================================]]
-- Every old function still referenced anywhere becomes its new version: in
-- tables (values, not keys), upvalues, userdata user values (a timer keeps
-- its callback there) and named locals of every coroutine's frames
-- (the running one's below import's own frames). Functions running
-- in a frame keep running their old code to the end of that call; their
-- upvalues are updated like any other.
--
-- Each replace_in_<type>(obj, fmap, push) replaces in one object, passes
-- what it reaches to push (the walk's stack) and returns how many
-- references it replaced.

local getlocal, setlocal = debug.getlocal, debug.setlocal
local getuservalue, setuservalue = debug.getuservalue, debug.setuservalue

local function replace_in_table(obj, fmap, push)
  local replaced = 0
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
  return replaced
end

local function replace_in_function(obj, fmap, push)
  local replaced = 0
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
  return replaced
end

local function replace_in_userdata(obj, fmap, push)
  local replaced = 0
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
  return replaced
end

-- The named locals of one frame; `own` when obj is the running thread,
-- whose level counts from replace_in_thread: one more from here.
local function replace_in_frame(obj, own, level, fmap, push)
  local replaced = 0
  for i = 1, math.huge do
    local name, v
    if own then name, v = getlocal(level + 1, i) else name, v = getlocal(obj, level, i) end
    if name == nil then break end
    local nv = fmap[v]
    if nv and name:sub(1, 1) ~= "(" then
      if own then setlocal(level + 1, i, nv) else setlocal(obj, level, i, nv) end
      replaced = replaced + 1
      v = nv
    end
    push(v)
  end
  return replaced
end

-- A thread: its frames. The running thread is read from here (level 1 is
-- this function): import's own frames are skipped, its callers' locals
-- replaced.
local function replace_in_thread(obj, fmap, push, running)
  local replaced = 0
  local own = obj == running
  for level = own and 1 or 0, math.huge do
    local info
    if own then info = getinfo(level, "fS") else info = getinfo(obj, level, "fS") end
    if not info then break end
    push(info.func)
    if not (own and info.source == SOURCE) then
      replaced = replaced + replace_in_frame(obj, own, level, fmap, push)
    end
  end
  return replaced
end

local replace_in = {
  table = replace_in_table,
  ["function"] = replace_in_function,
  userdata = replace_in_userdata,
  thread = replace_in_thread,
}

-- Walk everything reachable from the registry; returns the number of
-- references replaced.
local function replace_references(fmap)
  local running = coroutine.running()
  local seen = { [fmap] = true }
  local stack, n = { debug.getregistry() }, 1
  seen[stack[1]] = true
  local function push(v)
    if replace_in[type(v)] and not seen[v] then
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
    replaced = replaced + replace_in[type(obj)](obj, fmap, push, running)
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
  plan:visit(value)
  plan:visit(locals)
  plan:visit(env)
  plan:pair_variables()
  remember(rec, plan, source)
  return rec
end

-- Apply a plan: nothing here can fail on user data (raw accesses only).
local function apply(rec, plan)
  plan:compute_joins()
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
  if rec.loading then
    return fail("busy", rec.path .. ": reload already in progress")
  end
  local err, code
  if not source then
    source, err, code = read_source(rec.path)
    if not source then return nil, err, code end
  end
  local env = new_env()
  local chunk
  chunk, err = compile(rec, source, env)
  if not chunk then return fail("syntax", err) end
  rec.loading = true
  local ok, value, locals = run(rec, chunk, env, rec.value)
  rec.loading = nil
  if not ok then return fail("raised", value) end
  local plan = new_planner(rec)
  local old, new_value = rec.value, nil
  local planned, perr = pcall(function()
    if type(old) == "table" and type(value) == "table" then
      plan:pair_tables(old, value)
    elseif type(old) == "function" and plan:mine(value) then
      plan:pair_functions(old, value)
      new_value = value
    end
    plan:pair_tables(rec.locals, locals)
    plan:pair_tables(rec.env, env)
    plan:pair_variables()
  end)
  if not planned then
    return fail("raised", "reload failed while planning: " .. tostring(perr))
  end
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
-- nil, err, code. Size and mtime equal to the last read mean unchanged unless
-- that read came less than a second after the mtime (an edit in the same
-- timestamp tick would not show): then the content decides.
local function changed(rec)
  local mtime, size, code = core.file_stat(rec.path)
  if not mtime then return nil, size, code end
  if mtime == rec.mtime and size == rec.size and rec.read_at - mtime > 1 then
    return false
  end
  local source, err, rcode = read_source(rec.path)
  if not source then return nil, err, rcode end
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
