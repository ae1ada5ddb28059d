-- evlua/pprof.lua - a profile in pprof's format (github.com/google/pprof,
-- proto/profile.proto): the protobuf encoding, written here, gzipped by
-- core.gzip. Readable by `go tool pprof`.
--
-- pprof.encode(profile) -> the gzipped bytes, where profile is
--   { sample_types = { { "samples", "count" }, { "cpu", "nanoseconds" } },
--     functions = { [id] = { name =, file =, line = } }   (ids from 1),
--     samples = { { locations = { leaf id, ..., root id }, values = { ... } } },
--     period_type = { "cpu", "nanoseconds" }, period =,
--     time_nanos =, duration_nanos = }
-- One location per function (its first line): evlua samples functions.

local core = require "evlua.core"

local char, concat = string.char, table.concat

local pprof = {}

--[[ Protobuf wire format ===================================================]]
-- Fields are tag (field << 3 | wire type) then a varint (type 0) or a
-- length and bytes (type 2). Negative integers take ten bytes, as int64.

local function varint(n)
  local out = {}
  repeat
    local b = n & 0x7f
    n = n >> 7   -- logical shift: a negative number ends after ten bytes
    if n ~= 0 then b = b | 0x80 end
    out[#out + 1] = char(b)
  until n == 0
  return concat(out)
end

local function int_field(field, n)
  if n == 0 then return "" end   -- proto3: zero is the default
  return varint(field << 3) .. varint(n)
end

local function bytes_field(field, s)
  return varint(field << 3 | 2) .. varint(#s) .. s
end

local function packed_field(field, list)
  local parts = {}
  for i = 1, #list do parts[i] = varint(list[i]) end
  return bytes_field(field, concat(parts))
end

--[[ profile.proto messages =================================================]]

-- The string table: index 0 is "", every other string once.
local function new_strings()
  local list, index = { "" }, { [""] = 0 }
  return list, function(s)
    s = tostring(s or "")
    local i = index[s]
    if i then return i end
    list[#list + 1] = s
    index[s] = #list - 1
    return #list - 1
  end
end

local function value_type(str, pair)   -- ValueType { type = 1, unit = 2 }
  return int_field(1, str(pair[1])) .. int_field(2, str(pair[2]))
end

function pprof.encode(p)
  local strings, str = new_strings()
  local out = {}
  for _, t in ipairs(p.sample_types) do
    out[#out + 1] = bytes_field(1, value_type(str, t))
  end
  for _, s in ipairs(p.samples) do   -- Sample { location_id = 1, value = 2 }
    out[#out + 1] = bytes_field(2, packed_field(1, s.locations)
                                   .. packed_field(2, s.values))
  end
  for id, f in ipairs(p.functions) do
    -- Location { id = 1, line = 4 }, Line { function_id = 1, line = 2 }
    local line = int_field(1, id) .. int_field(2, math.max(f.line or 0, 0))
    out[#out + 1] = bytes_field(4, int_field(1, id) .. bytes_field(4, line))
  end
  for id, f in ipairs(p.functions) do
    -- Function { id = 1, name = 2, system_name = 3, filename = 4,
    -- start_line = 5 }
    local name = str(f.name)
    out[#out + 1] = bytes_field(5, int_field(1, id) .. int_field(2, name)
                                   .. int_field(3, name) .. int_field(4, str(f.file))
                                   .. int_field(5, math.max(f.line or 0, 0)))
  end
  -- the fields after string_table refer to it: encode them first
  local tail = int_field(9, p.time_nanos or 0) .. int_field(10, p.duration_nanos or 0)
    .. bytes_field(11, value_type(str, p.period_type)) .. int_field(12, p.period or 0)
  for _, s in ipairs(strings) do out[#out + 1] = bytes_field(6, s) end
  out[#out + 1] = tail
  return core.gzip(concat(out))
end

return pprof
