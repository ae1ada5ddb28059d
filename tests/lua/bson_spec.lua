-- tests/lua/bson_spec.lua - the BSON codec (libbson underneath): every type
-- both ways, integer widths and element types checked on bytes built by
-- hand from the BSON spec, arrays versus documents, ordered documents,
-- encode errors naming the path, malformed input, and agreement with
-- Python's bson (pymongo's, Debian's python3-bson).
local bson = require "evlua.bson"
local helper = require "helper"

local encode, decode = bson.encode, bson.decode
local pack = string.pack

-- BSON by hand (bsonspec.org): a document is int32 total length, the
-- elements, a 0 byte; an element is a type byte, the key as a C string,
-- the value.
local function doc(...)
  local body = table.concat({ ... })
  return pack("<i4", #body + 5) .. body .. "\0"
end
local function el(type_byte, key, value)
  return string.char(type_byte) .. key .. "\0" .. value
end
local function str(s) return pack("<i4", #s + 1) .. s .. "\0" end

local function round_trip(v, opts)
  local s = assert(encode(v))
  return assert(decode(s, opts)), s
end

-- The error of encode(v): asserts nil, message, "bad_value".
local function encode_error(v, opts)
  local s, err, code = encode(v, opts)
  assert.is_nil(s)
  assert.equal("bad_value", code)
  return err
end

local function decode_error(s)
  local v, err, code = decode(s)
  assert.is_nil(v)
  assert.equal("protocol", code)
  return err
end

describe("bson numbers", function()
  it("encodes integers as int32 when they fit, else int64", function()
    local cases = {
      { 0, el(0x10, "n", pack("<i4", 0)) },
      { 2^31 - 1 | 0, el(0x10, "n", pack("<i4", 2147483647)) },
      { 2^31 | 0, el(0x12, "n", pack("<i8", 2147483648)) },
      { -2^31 | 0, el(0x10, "n", pack("<i4", -2147483648)) },
      { -2^31 - 1 | 0, el(0x12, "n", pack("<i8", -2147483649)) },
      { math.maxinteger, el(0x12, "n", pack("<i8", math.maxinteger)) },
      { math.mininteger, el(0x12, "n", pack("<i8", math.mininteger)) },
    }
    for _, c in ipairs(cases) do
      local back, s = round_trip({ n = c[1] })
      assert.equal(doc(c[2]), s)
      assert.equal("integer", math.type(back.n))
      assert.equal(c[1], back.n)
    end
  end)

  it("keeps floats doubles, 1.0 included", function()
    for _, v in ipairs({ 1.0, 0.5, -0.0, 2^53, 1e308, math.huge, -math.huge }) do
      local back, s = round_trip({ x = v })
      assert.equal(doc(el(0x01, "x", pack("<d", v))), s)
      assert.equal("float", math.type(back.x))
      assert.equal(v, back.x)
    end
    assert.equal(-math.huge, 1 / round_trip({ z = -0.0 }).z)
    local nan = round_trip({ x = 0 / 0 }).x
    assert.is_true(nan ~= nan)
  end)

  it("forces a width with bson.int64 and bson.int32", function()
    assert.equal(doc(el(0x12, "n", pack("<i8", 5))), encode({ n = bson.int64(5) }))
    assert.equal(doc(el(0x10, "n", pack("<i4", -7))), encode({ n = bson.int32(-7) }))
    assert.equal(5, bson.int64(5):value())
    assert.equal(bson.int64(5), bson.int64(5))
    assert.are_not.equal(bson.int64(5), bson.int32(5))
    assert.equal("evlua.bson.int64 (5)", tostring(bson.int64(5)))
    assert.matches("integer from %-2%^31", helper.raised(bson.int32, 2^31 | 0))
    -- decoded, an int64 is a plain integer again
    assert.equal(5, decode(encode({ n = bson.int64(5) })).n)
  end)

  it("decodes int32, int64 and double bytes made by hand", function()
    local v = assert(decode(doc(el(0x10, "a", pack("<i4", -1)),
                                el(0x12, "b", pack("<i8", 1 << 40)),
                                el(0x01, "c", pack("<d", 3.0)))))
    assert.same({ a = -1, b = 1 << 40, c = 3.0 }, v)
    assert.equal("integer", math.type(v.a))
    assert.equal("integer", math.type(v.b))
    assert.equal("float", math.type(v.c))
  end)
end)

describe("bson strings, booleans and null", function()
  it("carries UTF-8 strings, NUL bytes included", function()
    for _, s in ipairs({ "", "héllo", "a\0b", ("x"):rep(70000), "日本" }) do
      local back, bytes = round_trip({ s = s })
      assert.equal(doc(el(0x02, "s", str(s))), bytes)
      assert.equal(s, back.s)
    end
  end)

  it("refuses strings that are not UTF-8, naming the key", function()
    local err = encode_error({ outer = { name = "ab\255" } })
    assert.matches("outer.name: string is not valid UTF-8", err, 1, true)
    assert.equal(doc(el(0x05, "b", pack("<i4", 2) .. "\0\255\0")),
                 encode({ b = bson.binary("\255\0") }))
  end)

  it("encodes booleans and bson.null", function()
    assert.equal(doc(el(0x08, "t", "\1"), el(0x0a, "n", "")),
                 encode(bson.doc { "t", true, "n", bson.null }))
    local back = round_trip({ t = true, f = false, n = bson.null })
    assert.same({ t = true, f = false, n = bson.null }, back)
  end)

  it("tells null from absent", function()
    local v = decode(doc(el(0x0a, "n", "")))
    assert.equal(bson.null, v.n)
    assert.is_nil(v.absent)
    assert.equal(doc(), encode({ absent = nil }))
    assert.equal("null", bson.type(bson.null))
    -- the same value as msgpack.null: a decoded null can go out over rpc
    assert.equal(require("evlua.msgpack").null, bson.null)
  end)
end)

describe("bson arrays and documents", function()
  it("encodes a 1..n table as an array with keys 0..n-1", function()
    local back, s = round_trip({ a = { 10, "x", true } })
    assert.equal(doc(el(0x04, "a", doc(el(0x10, "0", pack("<i4", 10)),
                                       el(0x02, "1", str("x")),
                                       el(0x08, "2", "\1")))), s)
    assert.same({ 10, "x", true }, back.a)
    assert.equal("array", bson.type(back.a))
  end)

  it("encodes the empty table as a document, bson.array{} as an array", function()
    assert.equal(doc(el(0x03, "e", doc())), encode({ e = {} }))
    assert.equal(doc(el(0x04, "e", doc())), encode({ e = bson.array {} }))
    assert.equal(doc(el(0x04, "e", doc(el(0x10, "0", pack("<i4", 1))))),
                 encode({ e = bson.array { 1 } }))
    -- a decoded empty array stays an array when encoded again
    local back = decode(encode({ e = bson.array() }))
    assert.equal("array", bson.type(back.e))
    assert.equal(doc(el(0x04, "e", doc())), encode(back))
    assert.equal("object", bson.type(decode(encode({ e = {} })).e))
    assert.equal("object", bson.type({}))
  end)

  it("refuses sparse and mixed tables, naming the path and key", function()
    assert.matches("^s: integer key", encode_error({ s = { [1] = 1, [3] = 3 } }))
    assert.matches("^m: integer key 1 in a document",
                   encode_error({ m = { 1, x = 2 } }))
    assert.matches("^a%[2%]: float key 1.5", encode_error({ a = { {}, { [1.5] = 0 } } }))
    assert.matches("^document: boolean key true", encode_error({ [true] = 1 }))
    assert.matches("bson.array with holes", encode_error({ a = bson.array { 1, x = 2 } }))
  end)

  it("refuses an array as the top document", function()
    assert.matches("an array cannot be a document", encode_error({ 1, 2 }))
    assert.matches("an array cannot be a document", encode_error(bson.array { 1 }))
  end)

  it("nests documents and arrays both ways", function()
    local v = { a = { b = { c = { 1, { d = "deep" } } } }, list = { { x = 1 }, { x = 2 } } }
    assert.same(v, round_trip(v))
  end)
end)

describe("bson ordered documents", function()
  it("encodes bson.doc in its order", function()
    local s = encode(bson.doc { "find", "users", "filter", {}, "limit", 1, "$db", "test" })
    assert.equal(doc(el(0x02, "find", str("users")), el(0x03, "filter", doc()),
                     el(0x10, "limit", pack("<i4", 1)), el(0x02, "$db", str("test"))), s)
    local sort = encode({ sort = bson.doc { "b", -1, "a", 1 } })
    assert.equal(doc(el(0x03, "sort", doc(el(0x10, "b", pack("<i4", -1)),
                                          el(0x10, "a", pack("<i4", 1))))), sort)
  end)

  it("decodes in order with {ordered = true}", function()
    local s = doc(el(0x10, "z", pack("<i4", 1)), el(0x10, "a", pack("<i4", 2)),
                  el(0x03, "m", doc(el(0x08, "y", "\1"), el(0x08, "b", "\0"))),
                  el(0x04, "l", doc(el(0x10, "0", pack("<i4", 9)))))
    local d = decode(s, { ordered = true })
    assert.equal("z", d[1])
    assert.equal("a", d[3])
    assert.equal("m", d[5])
    assert.equal(2, d.a)
    assert.same({ "y", true, "b", false }, { d.m[1], d.m[2], d.m[3], d.m[4] })
    assert.equal("array", bson.type(d.l))
    local keys = {}
    for k in pairs(d) do keys[#keys + 1] = k end
    assert.same({ "z", "a", "m", "l" }, keys)
    assert.equal(s, encode(d))   -- the same bytes again
  end)

  it("reads, replaces, appends and removes by key", function()
    local d = bson.doc { "a", 1, "b", 2 }
    assert.equal(2, d.b)
    assert.is_nil(d.c)
    d.b = 20
    d.c = 3
    d.a = nil
    assert.same({ "b", 20, "c", 3 }, { d[1], d[2], d[3], d[4] })
    assert.equal(4, #d)
    assert.equal(doc(el(0x10, "b", pack("<i4", 20)), el(0x10, "c", pack("<i4", 3))), encode(d))
  end)

  it("checks its construction", function()
    assert.matches("key, value pairs expected", helper.raised(bson.doc, { "a" }))
    assert.matches("string key expected at item 3", helper.raised(bson.doc, { "a", 1, 2, 3 }))
    local d = bson.doc { "a", 1 }
    rawset(d, 3, 7)
    rawset(d, 4, 8)
    assert.matches("^document: bson.doc item 3 is a number", encode_error(d))
  end)
end)

describe("bson typed values", function()
  it("ObjectId: hex, time, equality, table keys", function()
    local hex = "5f0c3b2a9d1e4f6a7b8c9d0e"
    local oid = bson.ObjectId(hex)
    assert.equal(hex, oid:hex())
    assert.equal(0x5f0c3b2a, oid:time())
    assert.equal("evlua.bson.objectid (" .. hex .. ")", tostring(oid))
    assert.equal("objectId", bson.type(oid))
    local s = encode({ _id = oid })
    local bytes = hex:gsub("..", function(h) return string.char(tonumber(h, 16)) end)
    assert.equal(doc(el(0x07, "_id", bytes)), s)
    local back = decode(s)._id
    assert.equal(oid, back)
    assert.is_true(rawequal(oid, back))   -- the same value: usable as a key
    local seen = { [oid] = "found" }
    assert.equal("found", seen[decode(s)._id])
    assert.equal(oid, bson.ObjectId(hex:upper()))
    assert.is_true(bson.ObjectId("000000000000000000000001") < oid)
  end)

  it("ObjectId() makes new ones from libbson's generator", function()
    local a, b = bson.ObjectId(), bson.ObjectId()
    assert.are_not.equal(a, b)
    assert.matches("^%x+$", a:hex())
    assert.equal(24, #a:hex())
    assert.is_true(math.abs(a:time() - os.time()) < 5)
    assert.matches("24 hexadecimal digits", helper.raised(bson.ObjectId, "123"))
    assert.matches("24 hexadecimal digits",
                   helper.raised(bson.ObjectId, "zz0c3b2a9d1e4f6a7b8c9d0e"))
  end)

  it("date: milliseconds, ISO-8601 UTC", function()
    local d = bson.date(1714564800250)
    assert.equal(1714564800250, d:ms())
    assert.equal("2024-05-01T12:00:00.250Z", d:iso())
    assert.equal("evlua.bson.date (2024-05-01T12:00:00.250Z)", tostring(d))
    assert.equal("1969-12-31T23:59:59.999Z", bson.date(-1):iso())
    local back, s = round_trip({ d = d })
    assert.equal(doc(el(0x09, "d", pack("<i8", 1714564800250))), s)
    assert.equal(d, back.d)
    assert.is_true(bson.date(1) < d)
    assert.is_true(math.abs(bson.date():ms() - os.time() * 1000) < 5000)
    assert.equal("date", bson.type(d))
  end)

  it("binary with its subtype", function()
    local b = bson.binary("\0\1\2\255", 0x80)
    assert.equal("\0\1\2\255", b.data)
    assert.equal(0x80, b.subtype)
    assert.equal("evlua.bson.binary (subtype 128, 4 bytes)", tostring(b))
    local back, s = round_trip({ b = b })
    assert.equal(doc(el(0x05, "b", pack("<i4", 4) .. "\x80\0\1\2\255")), s)
    assert.equal(b, back.b)
    assert.are_not.equal(b, bson.binary("\0\1\2\255"))
    assert.equal(0, bson.binary("x").subtype)
    local uuid = round_trip({ u = bson.binary(("u"):rep(16), 4) }).u
    assert.equal(4, uuid.subtype)
    assert.equal(("u"):rep(16), uuid.data)
    -- the old binary subtype 2 carries its length twice; libbson strips it
    local old = decode(doc(el(0x05, "o", pack("<i4", 7) .. "\2" .. pack("<i4", 3) .. "abc"))).o
    assert.equal("abc", old.data)
    assert.equal(2, old.subtype)
    assert.matches("subtype from 0 to 255", helper.raised(bson.binary, "x", 256))
  end)

  it("regex with options", function()
    local r = bson.regex("^a.*z$", "i")
    assert.equal("^a.*z$", r.pattern)
    assert.equal("i", r.options)
    assert.equal("evlua.bson.regex (/^a.*z$/i)", tostring(r))
    local back, s = round_trip({ r = r })
    assert.equal(doc(el(0x0b, "r", "^a.*z$\0i\0")), s)
    assert.equal(r, back.r)
    assert.equal("", bson.regex("x").options)
    assert.matches("without NUL", helper.raised(bson.regex, "a\0b"))
    assert.matches('options from "ilmsux"', helper.raised(bson.regex, "a", "iq"))
    -- libbson writes the options sorted
    assert.equal("imx", decode(encode({ r = bson.regex("a", "xim") })).r.options)
  end)

  it("decimal128 through libbson", function()
    local d = bson.decimal128("1.5")
    assert.equal("1.5", d:string())
    assert.equal("evlua.bson.decimal128 (1.5)", tostring(d))
    local back, s = round_trip({ d = d })
    -- 15 x 10^-1: coefficient 15, exponent bias 6176 - 1 = 6175 << 49
    assert.equal(doc(el(0x13, "d", pack("<I8<I8", 15, 6175 << 49))), s)
    assert.equal(d, back.d)
    assert.equal("-Infinity", bson.decimal128("-Infinity"):string())
    assert.equal("decimal", bson.type(d))
    assert.matches("decimal number expected", helper.raised(bson.decimal128, "1.5x"))
  end)

  it("timestamp, minkey and maxkey", function()
    local ts = bson.timestamp(1700000000, 7)
    assert.equal(1700000000, ts.t)
    assert.equal(7, ts.i)
    assert.equal("evlua.bson.timestamp (1700000000, 7)", tostring(ts))
    local back, s = round_trip(bson.doc { "ts", ts, "min", bson.minkey, "max", bson.maxkey })
    -- uint64: the increment in the low half, the seconds in the high half
    assert.equal(doc(el(0x11, "ts", pack("<I4<I4", 7, 1700000000)), el(0xff, "min", ""),
                     el(0x7f, "max", "")), s)
    assert.equal(ts, back.ts)
    assert.is_true(rawequal(bson.minkey, back.min))
    assert.is_true(rawequal(bson.maxkey, back.max))
    assert.is_true(bson.timestamp(1700000000, 6) < ts)
    assert.same({ "timestamp", "minKey", "maxKey" },
                { bson.type(ts), bson.type(bson.minkey), bson.type(bson.maxkey) })
  end)

  it("decodes the deprecated types to documented values", function()
    local oid = ("\1"):rep(12)
    local v = decode(doc(el(0x06, "undef", ""),
                         el(0x0e, "sym", str("name")),
                         el(0x0c, "ptr", str("db.coll") .. oid),
                         el(0x0d, "code", str("return 1")),
                         el(0x0f, "cws", pack("<i4", 4 + #str("f()") + #doc(el(0x10, "x", pack("<i4", 1))))
                                 .. str("f()") .. doc(el(0x10, "x", pack("<i4", 1))))))
    assert.equal(bson.null, v.undef)
    assert.equal("name", v.sym)
    assert.equal("db.coll", v.ptr["$ref"])
    assert.equal(bson.ObjectId(("01"):rep(12)), v.ptr["$id"])
    assert.same({ ["$code"] = "return 1" }, v.code)
    assert.same({ ["$code"] = "f()", ["$scope"] = { x = 1 } }, v.cws)
  end)

  it("names every type with bson.type", function()
    assert.same({ "int", "long", "double", "string", "bool", "array", "object", "object" },
                { bson.type(1), bson.type(1 << 40), bson.type(1.0), bson.type("s"),
                  bson.type(false), bson.type({ 1 }), bson.type({ a = 1 }), bson.type(bson.doc {}) })
    assert.is_nil(bson.type(print))
    assert.is_nil(bson.type(nil))
  end)
end)

describe("bson encode errors", function()
  it("names the key of a value it cannot encode", function()
    assert.matches("^a.b%[2%].x: cannot encode a userdata value",
                   encode_error({ a = { b = { 1, { x = io.stdout } } } }))
    assert.matches("^f: cannot encode a function value", encode_error({ f = print }))
    assert.matches("^co: cannot encode a thread value", encode_error({ co = coroutine.create(print) }))
    assert.matches("^a: nil value", encode_error(bson.doc { "a", nil, "b", 1 }))
  end)

  it("refuses cycles", function()
    local t = { x = {} }
    t.x.back = t
    assert.matches("^x.back: table cycle", encode_error(t))
    -- the same table twice, side by side, is not a cycle
    local shared = { 1 }
    assert.same({ a = { 1 }, b = { 1 } }, round_trip({ a = shared, b = shared }))
  end)

  it("refuses keys with a NUL byte or bad UTF-8", function()
    assert.equal("o.a\\0b: key with a NUL byte", encode_error({ o = { ["a\0b"] = 1 } }))
    assert.matches("key is not valid UTF-8", encode_error({ ["\255"] = 1 }), 1, true)
  end)

  it("limits nesting to 100 levels, or the max_depth option", function()
    local function nest(n)
      local t = {}
      for _ = 2, n do t = { a = t } end
      return t
    end
    assert.truthy(encode(nest(100)))
    assert.matches("nesting deeper than 100 levels", encode_error(nest(101)))
    assert.truthy(encode(nest(101), { max_depth = 101 }))
    assert.matches("nesting deeper than 5 levels", encode_error(nest(6), { max_depth = 5 }))
    assert.matches("max_depth from 1 to 1000", helper.raised(encode, {}, { max_depth = 0 }))
    -- decoding allows 200 by default (a stored document inside a reply)
    assert.truthy(decode(encode(nest(200), { max_depth = 200 })))
  end)

  it("raises for what is not a document", function()
    assert.matches("bad argument #1 to 'encode' %(table expected, got number%)",
                   helper.raised(encode, 5))
    assert.matches("bad argument #1 to 'decode' %(string expected, got nil%)",
                   helper.raised(decode))
    assert.matches("bad argument #2 to 'encode'", helper.raised(encode, {}, 5))
  end)

  it("takes an encoded document, checked", function()
    local s = encode({ a = 1 })
    assert.equal(s, encode(s))
    assert.matches("invalid bson", encode_error("\5\0\0\0\1"))
  end)
end)

describe("bson malformed input", function()
  local good = doc(el(0x02, "s", str("hi")), el(0x03, "d", doc(el(0x10, "n", pack("<i4", 1)))))

  it("fails on every truncation of a valid document", function()
    assert.truthy(decode(good))
    for n = 0, #good - 1 do
      assert.matches("invalid bson", decode_error(good:sub(1, n)))
    end
  end)

  it("fails on bad lengths and terminators", function()
    assert.matches("bad document length", decode_error(pack("<i4", 6) .. "\0"))
    assert.matches("bad document length", decode_error(good .. "\0"))   -- trailing byte
    assert.matches("bad document length", decode_error(good:sub(1, -2) .. "\1"))
    -- a string length running past the document
    assert.matches("invalid bson", decode_error(doc(el(0x02, "s", pack("<i4", 100) .. "hi\0"))))
    -- a string without its NUL
    assert.matches("invalid bson", decode_error(doc(el(0x02, "s", pack("<i4", 3) .. "hix"))))
    -- an embedded document whose length disagrees
    assert.matches("invalid bson", decode_error(doc(el(0x03, "d", pack("<i4", 9) .. "\0"))))
    -- an embedded document with a bad terminator
    assert.matches("invalid bson", decode_error(doc(el(0x03, "d", pack("<i4", 5) .. "\1"))))
    -- an unknown element type
    assert.matches("corrupt element", decode_error(doc(el(0x20, "x", ""))))
  end)

  it("fails on strings and keys that are not UTF-8", function()
    assert.matches("not valid UTF-8", decode_error(doc(el(0x02, "s", str("a\255")))), 1, true)
    assert.matches("key is not valid UTF-8", decode_error(doc(el(0x0a, "\255", ""))), 1, true)
    assert.matches("not valid UTF-8",
                   decode_error(doc(el(0x03, "d", doc(el(0x02, "s", str("\192\128")))))), 1, true)
  end)

  it("fails on nesting past the limit", function()
    local s = doc()
    for _ = 2, 201 do s = doc(el(0x03, "a", s)) end
    assert.matches("nesting deeper than 200 levels", decode_error(s))
    assert.truthy(decode(s, { max_depth = 201 }))
    local v, err = decode(s, { max_depth = 10 })
    assert.is_nil(v)
    assert.matches("nesting deeper than 10", err)
  end)

  it("decodes big documents in linear time", function()
    local parts = {}
    for i = 1, 100000 do parts[i] = el(0x07, "k" .. i, ("\7"):rep(12)) end
    local s = doc(table.concat(parts))
    local t0 = os.clock()
    local v = assert(decode(s))
    assert.equal(bson.ObjectId(("07"):rep(12)), v.k100000)
    assert.is_true(os.clock() - t0 < 5)
  end)
end)

describe("bson interop", function()
  it("agrees with Python's bson (python3-bson) both ways", function()
    local dir = helper.tmpdir()
    local oid = bson.ObjectId("5f0c3b2a9d1e4f6a7b8c9d0e")
    local value = bson.doc {
      "i32", 2147483647, "i64", 2147483648, "neg", -2147483649, "f", 1.0, "s", "héllo",
      "t", true, "n", bson.null, "arr", { 1, "two", { three = 3 } }, "empty", bson.array {},
      "oid", oid, "date", bson.date(1714564800250), "bin", bson.binary("\0\255", 0x80),
      "uuid", bson.binary(("\17"):rep(16), 4), "re", bson.regex("^x", "im"),
      "dec", bson.decimal128("-12.345E+6"), "ts", bson.timestamp(1700000000, 9),
      "min", bson.minkey, "max", bson.maxkey, "sub", bson.doc { "z", 1, "a", 2 },
    }
    helper.write_file(dir .. "/from_lua.bin", assert(encode(value)))
    local out, err, rc = helper.sh("/usr/bin/python3 -c " .. helper.quote([==[
import bson, sys, datetime, uuid
from bson import ObjectId, Int64, Binary, Regex, Decimal128, Timestamp, MinKey, MaxKey, SON
from bson.binary import UuidRepresentation
from bson.codec_options import CodecOptions
data = open(sys.argv[1], "rb").read()
opts = CodecOptions(document_class=SON, uuid_representation=UuidRepresentation.STANDARD)
d = bson.decode(data, opts)
assert list(d.keys())[:4] == ["i32", "i64", "neg", "f"], list(d.keys())
assert type(d["i32"]) is int and d["i32"] == 2147483647
assert type(d["i64"]) is Int64 and d["i64"] == 2147483648
assert type(d["neg"]) is Int64 and d["neg"] == -2147483649
assert type(d["f"]) is float and d["f"] == 1.0
assert d["s"] == "h\u00e9llo" and d["t"] is True and d["n"] is None
assert d["arr"] == [1, "two", {"three": 3}] and d["empty"] == []
assert d["oid"] == ObjectId("5f0c3b2a9d1e4f6a7b8c9d0e")
assert d["date"] == datetime.datetime(2024, 5, 1, 12, 0, 0, 250000), d["date"]
assert d["bin"] == Binary(b"\x00\xff", 0x80)
assert d["uuid"] == uuid.UUID(bytes=b"\x11" * 16), d["uuid"]
assert isinstance(d["re"], Regex) and d["re"].pattern == "^x" and d["re"].flags == 10, d["re"]
assert d["dec"] == Decimal128("-12.345E+6"), d["dec"]
assert d["ts"] == Timestamp(1700000000, 9)
assert d["min"] == MinKey() and d["max"] == MaxKey()
assert list(d["sub"].items()) == [("z", 1), ("a", 2)]
assert bson.encode(d, codec_options=opts) == data  # the same bytes from pymongo's encoder
out = SON([("find", "c"), ("n32", -5), ("n64", Int64(5)), ("big", 2**40), ("f", 2.0),
           ("s", "\u65e5"), ("null", None), ("list", [True, {"k": []}]),
           ("oid", ObjectId("000102030405060708090a0b")),
           ("date", datetime.datetime(1969, 12, 31, 23, 59, 59, 999000)),
           ("bin", Binary(b"raw", 0)), ("re", Regex("a|b", "ix")),
           ("dec", Decimal128("0.001")), ("ts", Timestamp(5, 6)), ("min", MinKey())])
open(sys.argv[2], "wb").write(bson.encode(out))
print("ok")
]==]) .. " " .. dir .. "/from_lua.bin " .. dir .. "/from_python.bin")
    assert.equal(0, rc, err)
    assert.equal("ok\n", out)
    local data = helper.slurp(dir .. "/from_python.bin")
    local v = assert(decode(data))
    assert.equal(-5, v.n32)
    assert.equal(5, v.n64)
    assert.equal(1 << 40, v.big)
    assert.equal("float", math.type(v.f))
    assert.equal("日", v.s)
    assert.equal(bson.null, v.null)
    assert.same({ true, { k = {} } }, v.list)
    assert.equal("array", bson.type(v.list[2].k))
    assert.equal(bson.ObjectId("000102030405060708090a0b"), v.oid)
    assert.equal(-1, v.date:ms())
    assert.equal(bson.binary("raw"), v.bin)
    assert.equal(bson.regex("a|b", "ix"), v.re)
    assert.equal("0.001", v.dec:string())
    assert.equal(bson.timestamp(5, 6), v.ts)
    assert.is_true(rawequal(bson.minkey, v.min))
    -- in order, and the same bytes when encoded again (n64 aside: evlua
    -- has no int64 integers apart from bson.int64)
    local ordered = assert(decode(data, { ordered = true }))
    assert.equal("find", ordered[1])
    ordered.n64 = bson.int64(5)
    assert.equal(data, encode(ordered))
    helper.cleanup()
  end)
end)
