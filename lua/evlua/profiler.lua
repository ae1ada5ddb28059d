-- evlua/profiler.lua - where the CPU time goes, and where the coroutines
-- wait (docs/profiler.md).
--
--   profiler.start([opts]) -> true | nil, err, code
--   profiler.stop() -> report | nil, err, code
--   report:top([n]), report:folded(), report:svg(), report:pprof(),
--   report:save(path [, format])
--
-- The C half (src/lua/lprofiler.c) samples the stacks (or, in exact mode,
-- follows calls and returns) into a trie; this file counts the samples per
-- coroutine, samples what the parked coroutines wait for, and turns the
-- trie into the report's formats.

local core = require "evlua.core"
local event = require "event"
local errors = require "evlua.errors"
local argerror, fail = errors.argerror, errors.fail

local profiler = {}

profiler.MAX_TASKS = 1000   -- coroutines listed one by one, the rest together

local STATE, WHAT, ID = event._slots.STATE, event._slots.WHAT, event._slots.ID

--[[ Coroutines =============================================================]]
-- One record per task seen: its CPU samples (sampled mode) and the
-- seconds it spent parked, by what it waited for. The wait sampler runs
-- opts.wait_hz times a second from the loop; each tick gives the time
-- since the previous one to every task parked now.

local session   -- the running profile's state, nil when stopped

local function task_record(s, task)
  local rec = s.by_task[task or s]
  if rec then return rec end
  if s.ntasks >= s.max_tasks then
    rec = s.others
    if not rec then
      rec = { id = math.huge, name = "(other coroutines)", cpu = 0, waits = {} }
      s.others = rec
      s.records[#s.records + 1] = rec
    end
  else
    s.ntasks = s.ntasks + 1
    local id, name = 0, "(loop callbacks, no coroutine)"
    if task then id, name = task[ID], task:name() end
    rec = { id = id, name = name, task = task, cpu = 0, waits = {} }
    s.records[#s.records + 1] = rec
  end
  s.by_task[task or s] = rec
  return rec
end

local function count_cpu()
  local s = session
  if not s then return end
  local task = event.running()
  local rec = task_record(s, task)
  rec.cpu = rec.cpu + 1
end

-- A task parked at this tick and the previous one is taken to have waited
-- the whole time between (a tick late because Lua code kept the loop
-- busy included); one that parked since, one tick period at most.
local function count_waits(s)
  s = s or session
  if not s then return end
  local now = event.time()
  local dt = now - s.last_tick
  s.last_tick = now
  local was, waiting = s.waiting, setmetatable({}, { __mode = "k" })
  for _, task in pairs(event._live_tasks()) do
    if task[STATE] == "waiting" then
      local what = tostring(task[WHAT] or "?")
      waiting[task] = what
      local rec = task_record(s, task)
      local credit = was[task] == what and dt or math.min(dt, s.tick_period)
      rec.waits[what] = (rec.waits[what] or 0) + credit
    end
  end
  s.waiting = waiting
end

--[[ Start and stop =========================================================]]

-- The integer options and their ranges (lprofiler.c checks them again).
local LIMITS = {
  { "hz", 1, 100000 }, { "max_depth", 1, 1000 }, { "max_nodes", 1, 100000000 },
  { "wait_hz", 1, 10000 }, { "max_tasks", 1, math.maxinteger },
}

local function check_opts(opts, fname)
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    argerror(1, fname, "options table expected, got " .. type(opts), 2)
  end
  if opts.mode ~= nil and opts.mode ~= "samples" and opts.mode ~= "calls" then
    argerror(1, fname, 'mode must be "samples" or "calls"', 2)
  end
  for _, limit in ipairs(LIMITS) do
    local name, lo, hi = limit[1], limit[2], limit[3]
    local v = opts[name]
    if v ~= nil and (math.type(v) ~= "integer" or v < lo or v > hi) then
      argerror(1, fname, ("%s must be an integer from %d to %d"):format(name, lo, hi), 2)
    end
  end
  return opts
end

-- profiler.start([{ mode = "samples" | "calls", hz = 1000, max_depth =
-- 200, max_nodes = 100000, wait_hz = 100, max_tasks = 1000 }]) -> true |
-- nil, err, "busy"
function profiler.start(opts)
  opts = check_opts(opts, "start")
  if session then return fail("busy", "the profiler is already running") end
  local s = {
    opts = opts, by_task = setmetatable({}, { __mode = "k" }), records = {},
    ntasks = 0, max_tasks = opts.max_tasks or profiler.MAX_TASKS,
    last_tick = event.time(), started = os.time(), waiting = {},
    tick_period = 1 / (opts.wait_hz or 100),
  }
  local copts = { mode = opts.mode, hz = opts.hz, max_depth = opts.max_depth,
                  max_nodes = opts.max_nodes, wait_hz = opts.wait_hz }
  -- the tasks parked now are counted from now on (before the C profiler
  -- starts: exact mode sees only the caller's own code)
  s.tick_period = 0
  count_waits(s)
  s.tick_period = 1 / (opts.wait_hz or 100)
  local ok, err, code
  if opts.mode == "calls" then
    ok, err, code = core.profiler_start(copts, nil, count_waits)
  else
    ok, err, code = core.profiler_start(copts, count_cpu, count_waits)
  end
  if not ok then return nil, err, code end
  session = s
  return true
end

-- profiler.running() -> boolean
function profiler.running()
  return session ~= nil
end

local Report = {}
Report.__index = Report

-- profiler.stop() -> report | nil, "not running", "not_running"
function profiler.stop()
  local s = session
  if not s then return fail("not_running", "the profiler is not running") end
  local raw = assert(core.profiler_stop())
  count_waits()   -- the time since the last tick
  session = nil
  for _, rec in ipairs(s.records) do
    if rec.task then
      rec.name = rec.task:name()   -- a label set since it was first seen
      rec.task = nil
    end
  end
  raw.tasks = s.records
  raw.started = s.started
  return setmetatable(profiler._build(raw), Report)
end

--[[ The report =============================================================]]
-- nodes 1..n of the trie with parent[i] < i (0 is the root), frame[i] and
-- weight[i] (samples, or nanoseconds in exact mode). In sampled mode the
-- samples taken while no Lua code ran become one more root child.

local function frame_label(f)
  if f.marker then return f.name end
  local name = f.name
  if f.c then return (name or "?") .. " [C]" end
  if f.line == 0 then name = name or "main chunk" end
  return ("%s (%s:%d)"):format(name or "?", f.source, f.line)
end

-- Add a synthetic root child (the loop in C) to the trie.
local function add_c_node(r)
  if r.mode ~= "samples" or r.c_samples == 0 then return end
  local frames = r.frames
  frames[#frames + 1] = { name = "(C: the loop, system calls)", marker = true,
                          calls = 0 }
  local n = #r.parent + 1
  r.parent[n], r.frame[n], r.weight[n] = 0, #frames, r.c_samples
end

-- total[i]: the weight of node i's subtree; kids[i]: its children.
local function subtree_totals(r)
  local n = #r.parent
  local total, kids = {}, {}
  total[0] = r.root
  kids[0] = {}
  for i = 1, n do
    total[i] = r.weight[i]
    kids[i] = {}
  end
  for i = n, 1, -1 do
    local p = r.parent[i]
    total[p] = total[p] + total[i]
  end
  for i = 1, n do
    local k = kids[r.parent[i]]
    k[#k + 1] = i
  end
  return total, kids
end

-- Per function: self (its nodes' weights) and total (the subtrees of its
-- outermost nodes, so recursion counts once), by a walk of the trie.
local function function_stats(r)
  local self, total, on_path = {}, {}, {}
  for f = 1, #r.frames do self[f], total[f], on_path[f] = 0, 0, 0 end
  local stack = { { 0, false } }   -- node, children done
  while #stack > 0 do
    local top = stack[#stack]
    local node, done = top[1], top[2]
    local f = node > 0 and r.frame[node]
    if done then
      stack[#stack] = nil
      if f then on_path[f] = on_path[f] - 1 end
    else
      top[2] = true
      if f then
        self[f] = self[f] + r.weight[node]
        if on_path[f] == 0 then total[f] = total[f] + r.total[node] end
        on_path[f] = on_path[f] + 1
      end
      for _, c in ipairs(r.kids[node]) do stack[#stack + 1] = { c, false } end
    end
  end
  return self, total
end

function profiler._build(raw)
  local r = raw
  add_c_node(r)
  r.labels = {}
  for i, f in ipairs(r.frames) do
    r.labels[i] = frame_label(f):gsub("[;\n]", ":")
  end
  r.total, r.kids = subtree_totals(r)
  r.self_of, r.total_of = function_stats(r)
  r.unit = r.mode == "calls" and "nanoseconds" or "samples"
  r.whole = r.total[0]   -- every sample, or every nanosecond in exact mode
  return r
end


local function percent(part, whole)
  if whole == 0 then return 0 end
  return part * 100 / whole
end

-- The functions by self weight, then total: { { frame =, self =, total =,
-- calls =, label = }, ... }
function Report:functions()
  local list = {}
  for f, frame in ipairs(self.frames) do
    if self.total_of[f] > 0 or (frame.calls or 0) > 0 then
      list[#list + 1] = { frame = f, label = self.labels[f], self = self.self_of[f],
                          total = self.total_of[f], calls = frame.calls }
    end
  end
  table.sort(list, function(a, b)
    if a.self ~= b.self then return a.self > b.self end
    if a.total ~= b.total then return a.total > b.total end
    return a.label < b.label
  end)
  return list
end

local function header(r)
  local lines = {}
  local w = r.whole
  if r.mode == "samples" then
    local lua = w - r.c_samples
    lines[1] = ("evlua profile: %d samples of %.3f s of CPU time (%d Hz asked, %.0f Hz got); "
                .. "Lua %.1f%%, C %.1f%% (the loop, system calls)")
      :format(w, r.cpu, r.hz, w / math.max(r.cpu, 1e-9), percent(lua, w),
              percent(r.c_samples, w))
    if r.requested > r.taken then
      lines[#lines + 1] = ("%d samples dropped (their coroutine yielded first)")
        :format(r.requested - r.taken)
    end
  else
    lines[1] = ("evlua profile (exact): %.3f s in Lua functions"):format(w / 1e9)
  end
  lines[2] = ("wall %.3f s, of which idle in the loop %.3f s (%.1f%%)")
    :format(r.elapsed, r.idle, percent(r.idle, r.elapsed))
  if r.truncated > 0 then
    lines[#lines + 1] = ("%d stacks deeper than max_depth %d (cut: \"(truncated)\")")
      :format(r.truncated, r.max_depth)
  end
  if r.overflowed > 0 then
    lines[#lines + 1] = ("%d samples past max_nodes %d (kept in a shorter stack)")
      :format(r.overflowed, r.max_nodes)
  end
  return lines
end

local function wait_summary(waits)
  local names = {}
  for what in pairs(waits) do names[#names + 1] = what end
  table.sort(names, function(a, b) return waits[a] > waits[b] end)
  local parts = {}
  for _, what in ipairs(names) do
    parts[#parts + 1] = ("%s %.3f s"):format(what, waits[what])
  end
  return table.concat(parts, ", ")
end

local function task_lines(r, lines)
  local list = {}
  for _, t in ipairs(r.tasks) do list[#list + 1] = t end
  table.sort(list, function(a, b)
    if a.cpu ~= b.cpu then return a.cpu > b.cpu end
    return a.id < b.id
  end)
  if #list == 0 then return end
  lines[#lines + 1] = ""
  lines[#lines + 1] = "coroutines:"
  local w = r.whole
  for _, t in ipairs(list) do
    local parts = {}
    if r.mode == "samples" then
      parts[1] = ("cpu %.1f%% (%d samples)"):format(percent(t.cpu, w), t.cpu)
    end
    local waits = wait_summary(t.waits)
    if waits ~= "" then parts[#parts + 1] = "waited: " .. waits end
    lines[#lines + 1] = ("  %s: %s"):format(t.name, table.concat(parts, "; "))
  end
end

-- report:top([n]) -> the text table of the n (20) heaviest functions
function Report:top(n)
  if n ~= nil and (math.type(n) ~= "integer" or n < 1) then
    argerror(1, "top", "positive integer expected, got " .. tostring(n))
  end
  n = n or 20
  local lines = header(self)
  local w = self.whole
  lines[#lines + 1] = ""
  if self.mode == "samples" then
    lines[#lines + 1] = ("%7s %7s %8s %10s  %s"):format("self%", "total%", "samples",
                                                      "cpu ms", "function")
  else
    lines[#lines + 1] = ("%7s %7s %10s %10s %9s  %s"):format("self%", "total%", "self ms",
                                                          "total ms", "calls", "function")
  end
  -- a sample stands for the CPU time measured over all of them
  local ms_per_sample = w > 0 and (self.cpu or 0) * 1000 / w or 0
  for i, fn in ipairs(self:functions()) do
    if i > n then break end
    if self.mode == "samples" then
      lines[#lines + 1] = ("%7.1f %7.1f %8d %10.1f  %s"):format(
        percent(fn.self, w), percent(fn.total, w), fn.self, fn.self * ms_per_sample,
        fn.label)
    else
      lines[#lines + 1] = ("%7.1f %7.1f %10.3f %10.3f %9d  %s"):format(
        percent(fn.self, w), percent(fn.total, w), fn.self / 1e6, fn.total / 1e6,
        fn.calls, fn.label)
    end
  end
  task_lines(self, lines)
  return table.concat(lines, "\n") .. "\n"
end

-- The path of labels from the root to node i.
local function path_of(r, i)
  local parts = {}
  while i > 0 do
    parts[#parts + 1] = r.labels[r.frame[i]]
    i = r.parent[i]
  end
  local n = #parts
  for k = 1, n // 2 do parts[k], parts[n + 1 - k] = parts[n + 1 - k], parts[k] end
  return parts
end

-- report:folded() -> "root;...;leaf weight" lines (flamegraph.pl,
-- speedscope): samples, or nanoseconds in exact mode
function Report:folded()
  local lines = {}
  for i = 1, #self.parent do
    if self.weight[i] > 0 then
      lines[#lines + 1] = table.concat(path_of(self, i), ";") .. " " .. self.weight[i]
    end
  end
  if #lines == 0 then return "" end
  return table.concat(lines, "\n") .. "\n"
end

-- report:svg([{ width =, title = }]) -> a flame graph (SVG, no script)
function Report:svg(opts)
  return require("evlua.profiler_svg").render(self, opts or {})
end

-- report:pprof() -> the gzipped protobuf of `go tool pprof`
function Report:pprof()
  local functions = {}
  for i, f in ipairs(self.frames) do
    functions[i] = { name = self.labels[i]:gsub(" %(.*%)$", ""):gsub(" %[C%]$", ""),
                     file = f.source or f.name, line = f.line }
  end
  local samples = {}
  -- the kernel counts CPU time per tick: a sample stands for the CPU time
  -- measured over the samples taken, not for 1/hz
  local period = 1
  if self.mode == "samples" then
    period = self.whole > 0 and math.floor(self.cpu * 1e9 / self.whole) or 1e9 // self.hz
  end
  for i = 1, #self.parent do
    local w = self.weight[i]
    if w > 0 then
      local locations, node = {}, i
      while node > 0 do
        locations[#locations + 1] = self.frame[node]
        node = self.parent[node]
      end
      local values = self.mode == "samples" and { w, w * period } or { w }
      samples[#samples + 1] = { locations = locations, values = values }
    end
  end
  local sample_types = self.mode == "samples"
    and { { "samples", "count" }, { "cpu", "nanoseconds" } }
    or { { "time", "nanoseconds" } }
  return require("evlua.pprof").encode({
    sample_types = sample_types, functions = functions, samples = samples,
    period_type = { self.mode == "samples" and "cpu" or "time", "nanoseconds" },
    period = period, time_nanos = (self.started or 0) * 1000000000,
    duration_nanos = math.floor(self.elapsed * 1e9),
  })
end

local FORMATS = { top = true, folded = true, svg = true, pprof = true }
-- io.open's errno, by name (Linux numbers) for the error's code
local ERRNO_NAMES = { [2] = "ENOENT", [13] = "EACCES", [20] = "ENOTDIR", [21] = "EISDIR",
                      [28] = "ENOSPC", [30] = "EROFS" }

-- The format of a file name: .txt, .folded, .svg, .pb.gz or .pprof
function profiler.format_of(path)
  if path:match("%.txt$") then return "top" end
  if path:match("%.folded$") then return "folded" end
  if path:match("%.svg$") then return "svg" end
  if path:match("%.pb%.gz$") or path:match("%.pprof$") then return "pprof" end
  return nil
end

-- report:save(path [, format]) -> true | nil, err, code. format: "top",
-- "folded", "svg" or "pprof"; by default from path's extension.
function Report:save(path, format)
  if type(path) ~= "string" then
    argerror(1, "save", "string expected, got " .. type(path))
  end
  if format ~= nil and not FORMATS[format] then
    argerror(2, "save", 'format "top", "folded", "svg" or "pprof" expected')
  end
  format = format or profiler.format_of(path)
  if not format then
    return fail("bad_format", path .. ": extension not .txt, .folded, .svg, .pb.gz or .pprof")
  end
  local f, err, errno = io.open(path, "wb")
  if not f then return nil, err, ERRNO_NAMES[errno] or "EIO" end
  local ok, werr = f:write(self[format](self))
  f:close()
  if not ok then return nil, werr, "EIO" end
  return true
end

--[[ evlua --profile[=FILE] =================================================]]
-- The report is written once, when the process ends: the loop ending or
-- core.exit (both close the Lua state, which finalizes the sentinel
-- below), or os.exit (wrapped here). Killed by a signal: no report.

local function write_main_report(target)
  if not session then return end
  local report = profiler.stop()
  if target == true then
    io.stderr:write(report:top())
    return
  end
  local ok, err = report:save(target)
  if not ok then io.stderr:write("evlua --profile: ", err, "\n") end
end

-- profiler.start_main(true | FILE) -> true | nil, err
function profiler.start_main(target)
  if target ~= true and not profiler.format_of(target) then
    return nil, target .. ": extension not .txt, .folded, .svg, .pb.gz or .pprof"
  end
  local ok, err = profiler.start()
  if not ok then return nil, err end
  local written = false
  local function finish()
    if written then return end
    written = true
    write_main_report(target)
  end
  local os_exit = os.exit
  os.exit = function(...)   -- luacheck: ignore 122 (the report goes first)
    finish()
    return os_exit(...)
  end
  profiler._sentinel = setmetatable({}, { __gc = finish })
  return true
end

return profiler
