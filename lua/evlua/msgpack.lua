-- evlua/msgpack.lua - MessagePack for Lua values (the codec is C, in
-- src/lua/lmsgpack.c; docs/rpc.md states the mapping rules).
--
--   msgpack.encode(value [, max_depth]) -> string
--   msgpack.decode(s [, pos [, max_depth [, max_sparse_keys
--                  [, max_sparse_total]]]]) -> value, next_pos | nil, err
--     (the sparse key limits, 256 per map and 4096 in all by default,
--     bound the maps whose integer keys could share a hash bucket:
--     docs/rpc.md, "Limits")
--   msgpack.array(t) / msgpack.map(t) -> t, forced to encode as that kind
--   msgpack.null: encodes as nil where a Lua nil cannot stand (in a table)

local core = require "evlua.core"

local msgpack = {
  encode = core.mp_encode,
  decode = core.mp_decode,
  null = core.mp_null,
}

local ARRAY = { __msgpack = "array" }
local MAP = { __msgpack = "map" }

function msgpack.array(t)
  return setmetatable(t or {}, ARRAY)
end

function msgpack.map(t)
  return setmetatable(t or {}, MAP)
end

return msgpack
