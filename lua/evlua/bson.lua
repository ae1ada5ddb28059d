-- evlua/bson.lua - Lua values to and from BSON (the codec is C, on libbson,
-- in src/lua/lbson.c; docs/bson.md states the mapping).
--
--   bson.encode(doc [, opts]) -> string | nil, err, "bad_value"
--       opts.max_depth: nesting limit (default 100)
--   bson.decode(s [, opts]) -> table | nil, err, "protocol"
--       opts.ordered: documents as bson.doc lists; opts.max_depth (200)
--   bson.array(t), bson.doc{"k1", v1, "k2", v2, ...}
--   bson.null, bson.ObjectId([hex]), bson.date([ms]), bson.binary(data
--   [, subtype]), bson.regex(pattern [, options]), bson.decimal128(s),
--   bson.timestamp(t, i), bson.int64(n), bson.int32(n), bson.minkey,
--   bson.maxkey, bson.type(v)

local core = require "evlua.core"
local errors = require "evlua.errors"

local argerror = errors.argerror
local bson_encode, bson_decode = core.bson_encode, core.bson_decode

local bson = {
  null = core.bson_null,
  ObjectId = core.bson_oid,
  date = core.bson_date,
  binary = core.bson_binary,
  regex = core.bson_regex,
  decimal128 = core.bson_decimal128,
  timestamp = core.bson_timestamp,
  int64 = core.bson_int64,
  int32 = core.bson_int32,
  minkey = core.bson_minkey,
  maxkey = core.bson_maxkey,
  type = core.bson_type,
}

local ARRAY, DOC = core.bson_array_mt, core.bson_doc_mt

local function options(opts, n, fname)
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    argerror(n, fname, "table expected, got " .. type(opts), 2)
  end
  return opts
end

function bson.encode(doc, opts)
  local t = type(doc)
  if t ~= "table" and t ~= "string" then
    argerror(1, "encode", "table expected, got " .. t)
  end
  opts = options(opts, 2, "encode")
  return bson_encode(doc, opts.max_depth)
end

function bson.decode(s, opts)
  if type(s) ~= "string" then argerror(1, "decode", "string expected, got " .. type(s)) end
  opts = options(opts, 2, "decode")
  return bson_decode(s, opts.ordered, opts.max_depth)
end

--[[ Arrays and ordered documents ============================================]]
-- A table with the array metatable encodes as an array even when empty
-- (decoded arrays have it too); a bson.doc is the flat list k1, v1, k2,
-- v2, ... encoded in that order, which also reads and writes by key.

function bson.array(t)
  if t == nil then t = {} end
  if type(t) ~= "table" then argerror(1, "array", "table expected, got " .. type(t)) end
  return setmetatable(t, ARRAY)
end

function bson.doc(t)
  if t == nil then t = {} end
  if type(t) ~= "table" then argerror(1, "doc", "table expected, got " .. type(t)) end
  local n = #t
  if n % 2 ~= 0 then argerror(1, "doc", "key, value pairs expected, got " .. n .. " items") end
  for i = 1, n, 2 do
    if type(t[i]) ~= "string" then
      argerror(1, "doc", "string key expected at item " .. i .. ", got " .. type(t[i]))
    end
  end
  return setmetatable(t, DOC)
end

-- The position of key in the ordered document d, or nil.
local function find(d, key)
  for i = 1, #d, 2 do
    if rawget(d, i) == key then return i end
  end
end

-- d.key reads the value of key (a linear search: ordered documents are
-- for order, plain tables for lookups).
function DOC.__index(d, key)
  if type(key) ~= "string" then return nil end
  local i = find(d, key)
  return i and rawget(d, i + 1)
end

-- d.key = v replaces the value of key, or appends the pair; d.key = nil
-- removes it.
function DOC.__newindex(d, key, value)
  if type(key) ~= "string" then
    rawset(d, key, value)
    return
  end
  local i = find(d, key)
  if i and value == nil then
    table.remove(d, i)
    table.remove(d, i)
  elseif i then
    rawset(d, i + 1, value)
  elseif value ~= nil then
    local n = #d
    rawset(d, n + 1, key)
    rawset(d, n + 2, value)
  end
end

-- pairs(d) walks the keys in order.
function DOC.__pairs(d)
  local i = -1
  return function()
    i = i + 2
    local k = rawget(d, i)
    if k ~= nil then return k, rawget(d, i + 1) end
  end, d, nil
end

return bson
