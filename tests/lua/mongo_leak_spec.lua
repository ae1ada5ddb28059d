-- tests/lua/mongo_leak_spec.lua - the BSON encoder's buffers (the state's
-- scratch document, src/lua/lbson.c) leak nothing when a message is
-- abandoned half-built: an argument error raised after the body was
-- encoded, a document that cannot be encoded deep inside, user values
-- whose metamethods raise. A child evlua runs the cases many times under
-- LeakSanitizer (the ASan build) or valgrind (the plain build).
local helper = require "helper"

-- Each case asserts its own outcome; the child prints "ok" at the end.
local SCRIPT = [==[
local core = require "evlua.core"
local bson = require "evlua.bson"
local n = tonumber(arg[1])
-- above libbson's 120 inline bytes: encoding it allocates
local body = { insert = "c", pad = string.rep("x", 4000) }

-- The body as the message carries it (after the header, flags and kind).
local function body_of(msg)
  local len = string.unpack("<i4", msg, 22)
  return bson.decode(msg:sub(22, 21 + len))
end

local function raising(what)
  return function() error(what .. " called") end
end

-- a table whose metamethods all raise: encoding reads it raw
local hostile = setmetatable({ a = 1 }, {
  __pairs = raising("__pairs"), __index = raising("__index"),
  __len = raising("__len"), __tostring = raising("__tostring"),
})
-- a list of documents behind __len and __index: the wire reads it raw
local proxy = setmetatable({}, { __len = function() return 3 end,
                                 __index = raising("__index") })
-- a function 20 levels down, after 4 KB of fields
local deep = { pad = body.pad }
local at = deep
for _ = 1, 20 do
  at.child = {}
  at = at.child
end
at.f = print

for _ = 1, n do
  -- raised after the body was encoded into the scratch document
  local ok, err = pcall(core.mongo_message, 0, 0, 1, body, "a\0b", {})
  assert(not ok and err:find("zero byte"), err)
  -- the next message starts from a clean scratch document
  local msg, last = assert(core.mongo_message(0, 0, 1, body, "documents", { { x = 1 } }))
  assert(last == 1 and body_of(msg).pad == body.pad)

  msg, last = assert(core.mongo_message(0, 0, 1, body, "documents", proxy))
  assert(last == 0, "the proxy's __len was not used")
  local s = assert(bson.encode({ h = hostile }))
  assert(bson.decode(s).h.a == 1)

  local r, e, code = core.mongo_message(0, 0, 1, body, "documents", { body, deep })
  assert(r == nil and code == "bad_document" and e:find("^document 2: child%.child"), e)
  r, e, code = bson.encode(deep)
  assert(r == nil and code == "bad_value" and e:find("^child%.child.*function"), e)
end
-- one document above the scratch's keep size (1 MiB), freed after use
local big = assert(bson.encode({ s = string.rep("y", 2 * 1024 * 1024) }))
assert(#bson.decode(big).s == 2 * 1024 * 1024)
print("ok")
]==]

describe("the BSON encoder's buffers", function()
  after_each(helper.cleanup)

  it("leak nothing when a message is abandoned half-built", function()
    local path = helper.tmpdir() .. "/leak.lua"
    helper.write_file(path, SCRIPT)
    local cmd
    if helper.asan then
      cmd = "ASAN_OPTIONS=detect_leaks=1 " .. helper.quote(helper.evlua) .. " "
            .. path .. " 200"
    else
      cmd = "valgrind --leak-check=full --errors-for-leak-kinds=definite,indirect "
            .. "--error-exitcode=99 " .. helper.quote(helper.evlua) .. " " .. path .. " 20"
    end
    local out, err, rc = helper.sh(cmd)
    assert.equal(0, rc, err)
    assert.equal("ok\n", out)
    if helper.asan then
      assert.not_matches("LeakSanitizer", err, 1, true)
    else
      assert.matches("no leaks are possible", err, 1, true)
    end
  end)
end)
