-- tests/lua/msgpack_spec.lua - the MessagePack codec: round trips of every
-- type, boundaries, limits, bad input, and agreement with Python's msgpack.
local msgpack = require "evlua.msgpack"
local helper = require "helper"

local encode, decode = msgpack.encode, msgpack.decode

local function round_trip(v)
  local s = encode(v)
  local back, pos = decode(s)
  assert.equal(#s + 1, pos)
  return back, s
end

describe("msgpack", function()
  it("keeps integers integers and floats floats", function()
    local ints = { 0, 1, 127, 128, 255, 256, 65535, 65536, 4294967295,
                   4294967296, math.maxinteger, -1, -32, -33, -128, -129,
                   -32768, -32769, -2147483648, -2147483649, math.mininteger,
                   1 << 53 }
    for _, v in ipairs(ints) do
      local back = round_trip(v)
      assert.equal("integer", math.type(back))
      assert.equal(v, back)
    end
    for _, v in ipairs({ 0.5, -1.25, 2^53, 2^53 + 2, 1e308, -1e-308, 3.0, math.huge, -math.huge }) do
      local back = round_trip(v)
      assert.equal("float", math.type(back))
      assert.equal(v, back)
    end
  end)

  it("keeps -0.0 and NaN", function()
    assert.equal(-math.huge, 1 / round_trip(-0.0))
    local nan = round_trip(0 / 0)
    assert.is_true(nan ~= nan)
  end)

  it("maps unsigned integers above 2^63-1 to floats", function()
    assert.equal(2.0^64, decode("\xcf\xff\xff\xff\xff\xff\xff\xff\xff"))
  end)

  it("carries strings of every header size exactly, text as str", function()
    for _, n in ipairs({ 0, 31, 32, 255, 256, 65535, 65536 }) do
      local s = ("a\0\r\n"):rep(n // 4 + 1):sub(1, n)
      local back, encoded = round_trip(s)
      assert.equal(s, back)
      local header = n < 32 and 1 or n < 256 and 2 or n < 65536 and 3 or 5
      assert.equal(n + header, #encoded)
      assert.is_true(n < 32 and encoded:byte() == 0xa0 + n or encoded:byte() >= 0xd9)
    end
  end)

  it("carries binary strings (not UTF-8) as bin", function()
    for _, n in ipairs({ 1, 255, 256, 65535, 65536 }) do
      local s = ("\255\0\r\n"):rep(n // 4 + 1):sub(1, n)
      local back, encoded = round_trip(s)
      assert.equal(s, back)
      local header = n < 256 and 2 or n < 65536 and 3 or 5
      assert.equal(n + header, #encoded)
      assert.equal(n < 256 and 0xc4 or n < 65536 and 0xc5 or 0xc6, encoded:byte())
    end
    assert.equal("bin", decode("\xc4\x03bin"))
    -- valid UTF-8 stays str; overlong forms and surrogates are binary
    assert.equal(0xa2, encode("é"):byte())
    assert.equal(0xa4, encode("😀"):byte())
    assert.equal(0xc4, encode("\xc0\xaf"):byte())
    assert.equal(0xc4, encode("\xed\xa0\x80"):byte())
    assert.equal(0xc4, encode("\xf4\x90\x80\x80"):byte())
  end)

  it("encodes sequences as arrays and other tables as maps", function()
    assert.equal("\x93\x01\x02\x03", encode({ 1, 2, 3 }))
    assert.equal("\x90", encode({}))                          -- empty: array
    assert.equal("\x80", encode(msgpack.map({})))             -- unless forced
    assert.equal("\x81\xa1a\x01", encode({ a = 1 }))
    -- a hole makes a map with integer keys
    local holed = decode(encode({ 1, nil, 3 }))
    assert.same({ [1] = 1, [3] = 3 }, holed)
    assert.equal(0x82, encode({ 1, nil, 3 }):byte())
    -- extra keys beside 1..n make a map too
    assert.equal(0x82, encode({ 1, x = 2 }):byte())
    assert.equal(0x92, encode(msgpack.array({ 1, 2, x = 3 })):byte())
    local nested = { list = { 1, { true, false } }, map = { k = "v" }, [7] = 1.5 }
    assert.same(nested, (round_trip(nested)))
  end)

  it("null stands for nil inside tables", function()
    assert.equal("\x93\x01\xc0\x03", encode(msgpack.array({ 1, msgpack.null, 3 })))
  end)

  it("decodes ext values into tables", function()
    assert.same({ ext = 5, data = "\7" }, (decode("\xd4\x05\x07")))
  end)

  it("nests up to the depth limit, and not one level more", function()
    local function nest(n)
      local v = {}
      for _ = 2, n do v = { v } end
      return v
    end
    assert.is_string(encode(nest(128)))
    assert.has_error(function() encode(nest(129)) end,
      "msgpack: nesting deeper than 128 levels")
    assert.is_string(encode(nest(10), 10))
    assert.has_error(function() encode(nest(11), 10) end)
    local deep = ("\x91"):rep(128) .. "\x01"
    assert.is_table((decode(deep)))
    assert.same({ nil, "nesting too deep", "protocol" },
                { decode("\x91" .. deep) })
  end)

  it("detects cycles with a clear error", function()
    local t = {}
    t.self = t
    assert.has_error(function() encode(t) end, "msgpack: cannot encode a table cycle")
    local shared = {}
    assert.is_string(encode({ shared, shared }))          -- not a cycle
  end)

  it("refuses values it cannot encode", function()
    assert.has_error(function() encode(print) end, "msgpack: cannot encode a function value")
    assert.has_error(function() encode({ co = coroutine.create(print) }) end)
  end)

  it("returns an error for truncated input at every byte boundary", function()
    local s = encode({ 1, "two", { three = 3.0, four = { 4, 4 } }, ("x"):rep(300), -70000 })
    for i = 0, #s - 1 do
      local v, err = decode(s:sub(1, i))
      assert.is_nil(v)
      assert.equal("truncated msgpack data", err)
    end
    assert.is_table((decode(s)))
  end)

  it("survives garbage", function()
    math.randomseed(42)
    for _ = 1, 5000 do
      local bytes = {}
      for i = 1, math.random(1, 40) do bytes[i] = string.char(math.random(0, 255)) end
      local ok = pcall(decode, table.concat(bytes))
      assert.is_true(ok)
    end
    assert.same({ nil, "invalid msgpack data", "protocol" }, { decode("\xc1") })
  end)

  it("decodes consecutive values from a position", function()
    local s = encode(1) .. encode("two") .. encode({ 3 })
    local a, p1 = decode(s)
    local b, p2 = decode(s, p1)
    local c, p3 = decode(s, p2)
    assert.same({ 1, "two", { 3 }, #s + 1 }, { a, b, c, p3 })
  end)

  it("agrees with Python's msgpack both ways", function()
    local dir = helper.tmpdir()
    local value = { int = -70000, big = 2^40 | 0, float = 0.25, str = "h\0llo",
                    list = { 1, 2, { 3 } }, yes = true, no = false }
    helper.write_file(dir .. "/from_lua.bin", encode(value))
    local out, err, rc = helper.sh("/usr/bin/python3 -c " .. helper.quote([==[
import msgpack, sys
v = msgpack.unpackb(open(sys.argv[1], "rb").read(), raw=False)
assert v == {"int": -70000, "big": 2**40, "float": 0.25, "str": "h\0llo",
             "list": [1, 2, [3]], "yes": True, "no": False}, v
data = msgpack.packb([1, -1, 2**63 - 1, -2**63, 1.5, "x" * 70000, b"\x00\xff", None, {"k": [True]}],
                     use_bin_type=True)
open(sys.argv[2], "wb").write(data)
print("ok")
]==]) .. " " .. dir .. "/from_lua.bin " .. dir .. "/from_python.bin")
    assert.equal(0, rc, err)
    assert.equal("ok\n", out)
    local v = decode(helper.slurp(dir .. "/from_python.bin"))
    assert.same({ 1, -1, math.maxinteger, math.mininteger, 1.5, ("x"):rep(70000),
                  "\0\255", nil, { k = { true } } }, v)
    helper.cleanup()
  end)
end)

describe("msgpack containers", function()
  it("switches array and map headers at 16 and 65,536 entries", function()
    local function seq(n)
      local t = {}
      for i = 1, n do t[i] = 0 end
      return t
    end
    local function keyed(n)
      local t = {}
      for i = 1, n do t["k" .. i] = 0 end
      return t
    end
    local heads = {
      { 15, "\x9f", "\x8f" },
      { 16, "\xdc\x00\x10", "\xde\x00\x10" },
      { 65535, "\xdc\xff\xff", "\xde\xff\xff" },
      { 65536, "\xdd\x00\x01\x00\x00", "\xdf\x00\x01\x00\x00" },
    }
    for _, h in ipairs(heads) do
      local n, ahead, mhead = h[1], h[2], h[3]
      local back, s = round_trip(seq(n))
      assert.equal(ahead, s:sub(1, #ahead))
      assert.equal(n, #back)
      back, s = round_trip(keyed(n))
      assert.equal(mhead, s:sub(1, #mhead))
      assert.equal(0, back["k" .. n])
      -- cut anywhere in the header or the entries: an error, not a value
      for _, cut in ipairs({ 1, #ahead, #s // 2, #s - 1 }) do
        assert.is_nil((decode(s:sub(1, cut))))
      end
    end
  end)

  it("drops map entries whose key no Lua table can hold", function()
    -- { nil = 1, NaN = 2, "a" = 3 }
    local nan = "\xcb\x7f\xf8\x00\x00\x00\x00\x00\x00"
    assert.same({ a = 3 }, (decode("\x83\xc0\x01" .. nan .. "\x02\xa1a\x03")))
  end)

  it("forces a map of a sequence and an array of a keyed table", function()
    assert.equal("\x82\x01\x0a\x02\x14", encode(msgpack.map({ 10, 20 })))
    assert.equal("\x90", encode(msgpack.array({ x = 1 })))
    -- integer keys beyond the length make a map
    assert.equal(0x81, encode({ [5] = 1 }):byte())
    assert.equal(0x82, encode({ 1, [0] = 1 }):byte())
  end)
end)

-- Lua hashes integer and float keys without a seed: keys an attacker
-- picks to share one bucket make a map cost O(n^2) to build. The decoder
-- bounds the "sparse" keys (neither strings, booleans nor integers k
-- with |k| <= 2n in a map of n entries): max_sparse_keys per map (256),
-- max_sparse_total per value (4096), both past as nil, err, "too_large".
describe("msgpack sparse map keys", function()
  -- a map32 of the keys (integers as int64, floats as float64), values true
  local function map_of(keys)
    local parts = { "\xdf" .. string.pack(">I4", #keys) }
    for _, k in ipairs(keys) do
      parts[#parts + 1] = (math.type(k) == "integer"
                           and "\xd3" .. string.pack(">i8", k)
                           or "\xcb" .. string.pack(">d", k)) .. "\xc3"
    end
    return table.concat(parts)
  end
  local function sparse(n, from)
    local keys = {}
    for i = 1, n do keys[i] = 10 ^ 9 // 1 + (from or 0) + i end
    return keys
  end
  local function array_of(...)
    local items = { ... }
    return "\xdd" .. string.pack(">I4", #items) .. table.concat(items)
  end
  local function count(t)
    local n = 0
    for _ in pairs(t) do n = n + 1 end
    return n
  end
  local PER_MAP = "a map has more than %d sparse keys (max_sparse_keys)"
  local TOTAL = "more than %d sparse map keys in a message (max_sparse_total)"

  it("decodes max_sparse_keys sparse keys in a map, fails on one more", function()
    assert.equal(256, count(assert(decode(map_of(sparse(256))))))
    assert.same({ nil, PER_MAP:format(256), "too_large" },
                { decode(map_of(sparse(257))) })
    assert.equal(3, count(assert(decode(map_of(sparse(3)), 1, nil, 3))))
    assert.same({ nil, PER_MAP:format(3), "too_large" },
                { decode(map_of(sparse(4)), 1, nil, 3) })
    assert.same({ nil, PER_MAP:format(0), "too_large" },
                { decode(map_of(sparse(1)), 1, nil, 0) })
  end)

  it("counts the sparse keys of the whole value against max_sparse_total", function()
    local maps = {}
    for i = 1, 16 do maps[i] = map_of(sparse(256, i * 1000)) end
    local t = assert(decode(array_of(table.unpack(maps))))   -- 4096: the default
    assert.equal(16, #t)
    maps[17] = map_of(sparse(1))
    assert.same({ nil, TOTAL:format(4096), "too_large" },
                { decode(array_of(table.unpack(maps))) })
    local at = array_of(map_of(sparse(2)), map_of(sparse(3)))
    assert.equal(2, #assert(decode(at, 1, nil, nil, 5)))
    assert.same({ nil, TOTAL:format(4), "too_large" },
                { decode(at, 1, nil, nil, 4) })
    -- nested maps count too
    local nested = "\x81\xa1a" .. map_of(sparse(3))
    assert.same({ nil, TOTAL:format(2), "too_large" },
                { decode(nested, 1, nil, nil, 2) })
  end)

  it("does not count string, boolean and small integer keys", function()
    -- 1,000 entries: the even keys 2..1000 and -2..-1000 (|k| <= 2n)
    local keys = {}
    for i = 1, 500 do
      keys[#keys + 1] = 2 * i
      keys[#keys + 1] = -2 * i
    end
    keys[#keys + 1] = 0
    local t = assert(decode(map_of(keys), 1, nil, 0, 0))
    assert.equal(1001, count(t))
    assert.is_true(t[-1000] and t[1000] and t[0])
    -- integral floats are integer keys in a Lua table: small ones are free
    t = assert(decode(map_of({ 1.0, 2.0, -3.0 }), 1, nil, 0, 0))
    assert.is_true(t[1] and t[2] and t[-3])
    assert.same({ a = 1, [true] = 2, [false] = 3 },
                (decode("\x83\xa1a\x01\xc3\x02\xc2\x03", 1, nil, 0, 0)))
    -- and a sparse array of Lua's, encoded as a map, stays within them
    local holes = {}
    for i = 1, 1000, 2 do holes[i] = i end
    assert.same(holes, (decode(encode(holes), 1, nil, 0, 0)))
  end)

  it("counts other numbers and tables as keys", function()
    for _, k in ipairs({ 0.5, 2 ^ 40, -(2 ^ 40), 7.0 }) do   -- 7 > 2n (n = 1)
      assert.same({ nil, PER_MAP:format(0), "too_large" },
                  { decode(map_of({ k }), 1, nil, 0) }, tostring(k))
    end
    assert.same({ nil, PER_MAP:format(0), "too_large" },
                { decode("\x81\x90\x01", 1, nil, 0) })   -- { [{}] = 1 }
    -- uint64 above 2^63-1 (a float in Lua)
    assert.same({ nil, PER_MAP:format(0), "too_large" },
                { decode("\x81\xcf\xff\xff\xff\xff\xff\xff\xff\xff\x01", 1, nil, 0) })
  end)

  it("refuses the probe's colliding map of 80,000 keys (6.5 s without the limit)", function()
    -- keys i * ((size - 1) | 1) share one bucket of a table of that size
    local keys, m = {}, (131072 - 1) | 1
    for i = 1, 80000 do keys[i] = i * m end
    local t0 = os.clock()
    assert.same({ nil, PER_MAP:format(256), "too_large" }, { decode(map_of(keys)) })
    print(("\n  refused in %.1f ms"):format((os.clock() - t0) * 1000))
  end)

  it("raises on a limit that is not a non-negative integer", function()
    assert.has_error(function() decode("\x80", 1, nil, -1) end,
                     "bad argument #4 to 'decode' (non-negative limit expected)")
    assert.has_error(function() decode("\x80", 1, nil, nil, -1) end,
                     "bad argument #5 to 'decode' (non-negative limit expected)")
    assert.has_error(function() decode("\x80", 1, nil, 1.5) end)
  end)
end)

describe("msgpack arguments", function()
  it("raises on a depth or a position out of range", function()
    assert.has_error(function() encode({}, 0) end)
    assert.has_error(function() encode({}, 513) end)
    assert.has_error(function() decode("\x90", 1, 0) end)
    assert.has_error(function() decode("\x90", 1, 513) end)
    assert.has_error(function() decode("\x90", 0) end)
    assert.has_error(function() decode("\x90", 3) end)
    -- the position just past the end is no value, not an error
    assert.is_nil((decode("\x90", 2)))
    assert.same({}, (decode("\x90", 1, 1)))
    assert.equal("\x91\x90", encode({ {} }, 2))
    assert.has_error(function() encode({ {} }, 1) end)
  end)
end)

-- stream:read_msgpack decodes straight from a stream's input buffer: it
-- answers nil until a whole value has arrived, and fails as soon as the
-- bytes already there are bad or announce more than max_size.
describe("stream:read_msgpack", function()
  local event = require "event"

  -- A connected client channel and the server's stream, whose every
  -- arrival of bytes runs read_msgpack(...) and hands over the results.
  local function reading_pair(...)
    local args = table.pack(...)
    local accepted, ready, got = nil, {}, {}
    local l = assert(event.listen("127.0.0.1", 0, function(_, ch)
      accepted = ch
      event.wakeup(ready)
    end))
    local client = assert(event.connect("127.0.0.1", l:port()))
    if not accepted then assert.is_true(event.wait(ready, 5)) end
    l:close()
    local stream = accepted._stream
    stream:set_data_handler(function()
      event.wakeup(got, table.pack(stream:read_msgpack(
        table.unpack(args, 1, args.n))))
    end)
    -- send(bytes) -> what read_msgpack answered once they arrived
    local function send(bytes)
      assert.is_true(client:write(bytes))
      return assert(event.wait(got, 5))
    end
    return send, function() client:close() accepted:close() end
  end

  it("gives nil until the value is whole, then the value; bytes after it "
     .. "stay for the next read", function()
    local send, close = reading_pair()
    local bytes = encode({ list = { 1, 2, 3 }, name = ("x"):rep(100) })
    local r = send(bytes:sub(1, 50))
    assert.same({ n = 1 }, r)   -- nil: not complete yet
    r = send(bytes:sub(51) .. "\x92")   -- and the start of the next
    assert.same({ list = { 1, 2, 3 }, name = ("x"):rep(100) }, r[1])
    r = send("\x01\x02")
    assert.same({ 1, 2 }, r[1])
    close()
  end)

  it("fails with too_large on a header announcing more than max_size, "
     .. "before the bytes arrive", function()
    local send, close = reading_pair(100)
    -- str32 of 1,000,000 bytes: only its 5-byte header is there
    local r = send("\xdb\x00\x0f\x42\x40")
    assert.same({ nil, "message larger than 100 bytes", "too_large", n = 3 },
                r)
    close()
    -- a whole value of 101 bytes: as large, as refused
    send, close = reading_pair(100)
    r = send(encode(("x"):rep(99)))
    assert.same({ nil, "message larger than 100 bytes", "too_large", n = 3 },
                r)
    close()
  end)

  it("fails with protocol on bad bytes and on nesting past max_depth",
     function()
    local send, close = reading_pair(nil, 2)
    local r = send("\xc1")   -- a type byte MessagePack never uses
    assert.same({ nil, "invalid msgpack data", "protocol", n = 3 }, r)
    close()
    send, close = reading_pair(nil, 2)
    r = send("\x91\x91\x91\x01")
    assert.same({ nil, "nesting too deep", "protocol", n = 3 }, r)
    close()
  end)

  it("fails with too_large past the sparse key limits, and takes the value",
     function()
    local send, close = reading_pair(nil, nil, 2, 3)
    local function keys(n)   -- a map of n keys 10^9 + i
      local t = {}
      for i = 1, n do t[10 ^ 9 // 1 + i] = true end
      return encode(t)
    end
    local r = send(keys(2))   -- at the limits
    assert.is_true(r[1][10 ^ 9 // 1 + 1] and r[1][10 ^ 9 // 1 + 2])
    r = send(keys(3))
    assert.same({ nil, "a map has more than 2 sparse keys (max_sparse_keys)",
                  "too_large", n = 3 }, r)
    r = send("\x92" .. keys(2) .. keys(2))   -- 4 in all, past 3
    assert.same({ nil, "more than 3 sparse map keys in a message "
                  .. "(max_sparse_total)", "too_large", n = 3 }, r)
    r = send("\x01")   -- the refused values were taken: the next one reads
    assert.same({ 1, n = 1 }, r)
    close()
  end)

  it("raises on a max_size, a depth or max_params out of range", function()
    local core = require "evlua.core"
    local l = assert(core.listen("127.0.0.1", 0, nil, false, function() end))
    local s = assert(core.stream_connect("127.0.0.1", l:port()))
    assert.has_error(function() s:read_msgpack(0) end,
                     "bad argument #1 to 'read_msgpack' (positive size expected)")
    assert.has_error(function() s:read_msgpack(nil, 0) end,
                     "bad argument #2 to 'read_msgpack' (depth out of range)")
    for _, bad in ipairs({ -1, 100001 }) do
      assert.has_error(function() s:read_rpc(nil, nil, bad) end,
                       "bad argument #3 to 'read_rpc' (max_params out of range)")
    end
    s:close_silently()
    l:close()
  end)
end)
