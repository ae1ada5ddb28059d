-- tests/lua/crypto_spec.lua - the libcrypto binding (src/lua/lcrypto.c):
-- published known-answer vectors, strict base64, argument errors, and
-- agreement with Python's hashlib, hmac and base64 on random inputs.
local core = require "evlua.core"
local helper = require "helper"

local function hex(s)
  return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end))
end

local function unhex(s)
  return (s:gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end))
end

describe("core.digest", function()
  it("matches the published SHA-1, SHA-256 and MD5 values", function()
    local cases = {
      { "sha1", "abc", "a9993e364706816aba3e25717850c26c9cd0d89d" },
      { "sha1", "", "da39a3ee5e6b4b0d3255bfef95601890afd80709" },
      { "sha256", "abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" },
      { "sha256", "", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" },
      { "md5", "abc", "900150983cd24fb0d6963f7d28e17f72" },
      { "md5", "", "d41d8cd98f00b204e9800998ecf8427e" },
    }
    for _, c in ipairs(cases) do
      assert.equal(c[3], hex(core.digest(c[1], c[2])))
    end
  end)

  it("hashes embedded zero bytes", function()
    assert.are_not.equal(core.digest("sha1", "a\0b"), core.digest("sha1", "a\0c"))
    assert.equal(20, #core.digest("sha1", ("\0"):rep(1000)))
  end)

  it("raises for an unknown hash name or a non-string", function()
    assert.matches("invalid option 'sha512'", helper.raised(core.digest, "sha512", "x"))
    assert.matches("bad argument #2", helper.raised(core.digest, "sha1", {}))
    assert.matches("bad argument #1", helper.raised(core.digest, nil, "x"))
  end)
end)

describe("core.hmac", function()
  it("matches RFC 4231 (HMAC-SHA-256)", function()
    local cases = {
      { ("\x0b"):rep(20), "Hi There",
        "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7" },
      { "Jefe", "what do ya want for nothing?",
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843" },
      { ("\xaa"):rep(20), ("\xdd"):rep(50),
        "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe" },
      { ("\xaa"):rep(131), "Test Using Larger Than Block-Size Key - Hash Key First",
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54" },
    }
    for _, c in ipairs(cases) do
      assert.equal(c[3], hex(core.hmac("sha256", c[1], c[2])))
    end
  end)

  it("matches RFC 2202 (HMAC-SHA-1)", function()
    local cases = {
      { ("\x0b"):rep(20), "Hi There", "b617318655057264e28bc0b6fb378c8ef146be00" },
      { "Jefe", "what do ya want for nothing?", "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79" },
      { ("\xaa"):rep(20), ("\xdd"):rep(50), "125d7342b9ac11cd91a39af48aa17b4f63f175d3" },
      { ("\xaa"):rep(80), "Test Using Larger Than Block-Size Key - Hash Key First",
        "aa4ae5e15272d00e95705637ce8a3b55ed402112" },
    }
    for _, c in ipairs(cases) do
      assert.equal(c[3], hex(core.hmac("sha1", c[1], c[2])))
    end
  end)

  it("takes an empty key", function()
    -- HMAC-SHA-256 with an empty key and empty data (a well-known value)
    assert.equal("b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad",
                 hex(core.hmac("sha256", "", "")))
  end)
end)

describe("core.pbkdf2", function()
  it("matches RFC 6070 (PBKDF2-HMAC-SHA1)", function()
    local cases = {
      { "password", "salt", 1, 20, "0c60c80f961f0e71f3a9b524af6012062fe037a6" },
      { "password", "salt", 2, 20, "ea6c014dc72d6f8ccd1ed92ace1d41f0d8de8957" },
      { "password", "salt", 4096, 20, "4b007901b765489abead49d926f721d065a429c1" },
      { "passwordPASSWORDpassword", "saltSALTsaltSALTsaltSALTsaltSALTsalt", 4096, 25,
        "3d2eec4fe41c849b80c8d83662c0e44a8b291a964cf2f07038" },
      { "pass\0word", "sa\0lt", 4096, 16, "56fa6aa75548099dcc37d7f03425e0c3" },
    }
    for _, c in ipairs(cases) do
      assert.equal(c[5], hex(core.pbkdf2("sha1", c[1], c[2], c[3], c[4])))
    end
  end)

  it("matches RFC 7914's PBKDF2-HMAC-SHA256 vector", function()
    assert.equal("55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc"
                 .. "49ca9cccf179b645991664b39d77ef317c71b845b1e30bd509112041d3a19783",
                 hex(core.pbkdf2("sha256", "passwd", "salt", 1, 64)))
  end)

  it("raises for iterations or lengths out of range", function()
    for _, n in ipairs({ 0, -1, 10000001, 16777216 }) do
      assert.matches("bad argument #4 .*iterations out of range",
                     helper.raised(core.pbkdf2, "sha1", "p", "s", n, 20))
    end
    assert.matches("bad argument #4", helper.raised(core.pbkdf2, "sha1", "p", "s", 1.5, 20))
    assert.matches("bad argument #5", helper.raised(core.pbkdf2, "sha1", "p", "s", 1, 0))
    assert.matches("bad argument #5", helper.raised(core.pbkdf2, "sha1", "p", "s", 1, 1025))
    assert.matches("invalid option", helper.raised(core.pbkdf2, "sha3", "p", "s", 1, 20))
  end)
end)

describe("core.random_bytes", function()
  it("returns n bytes, different each time", function()
    assert.equal("", core.random_bytes(0))
    local a, b = core.random_bytes(32), core.random_bytes(32)
    assert.equal(32, #a)
    assert.are_not.equal(a, b)
    assert.matches("bad argument #1", helper.raised(core.random_bytes, -1))
    assert.matches("bad argument #1", helper.raised(core.random_bytes, 1 << 21))
  end)
end)

describe("base64", function()
  it("matches RFC 4648's examples both ways", function()
    local cases = { { "", "" }, { "f", "Zg==" }, { "fo", "Zm8=" }, { "foo", "Zm9v" },
                    { "foob", "Zm9vYg==" }, { "fooba", "Zm9vYmE=" }, { "foobar", "Zm9vYmFy" } }
    for _, c in ipairs(cases) do
      assert.equal(c[2], core.base64_encode(c[1]))
      assert.equal(c[1], core.base64_decode(c[2]))
    end
  end)

  it("round-trips every byte value and every length to 70", function()
    local all = {}
    for i = 0, 255 do all[#all + 1] = string.char(i) end
    local s = table.concat(all)
    assert.equal(s, core.base64_decode(core.base64_encode(s)))
    for n = 0, 70 do
      local r = core.random_bytes(n)
      local e = core.base64_encode(r)
      assert.equal((n + 2) // 3 * 4, #e)
      assert.equal(r, core.base64_decode(e))
    end
  end)

  it("refuses bad characters, bad lengths and misplaced padding", function()
    local bad = { "Zg=", "Zg===", "Zm9v YmFy", "Zm9-", "Zm9_", "=Zm9", "Zm=v", "Zg==Zg==",
                  "====", "A===", "Zm9v\n", "Zh==", "Zm9=", "\0\0\0\0", "Zm9vYmF\255" }
    for _, s in ipairs(bad) do
      local v, err, code = core.base64_decode(s)
      assert.is_nil(v, s)
      assert.equal("bad_base64", code)
      assert.is_string(err)
    end
    local _, err = core.base64_decode("Zm9v!mFy")
    assert.equal("bad base64 character at 5", err)
    _, err = core.base64_decode("Zh==")
    assert.equal("base64 padding bits not zero", err)
  end)
end)

describe("core.xor", function()
  it("xors strings of equal length and refuses others", function()
    assert.equal("\x03\x00\xff", core.xor("\x01\x0f\xf0", "\x02\x0f\x0f"))
    assert.equal("", core.xor("", ""))
    assert.matches("bad argument #2 .*same length", helper.raised(core.xor, "ab", "a"))
  end)
end)

describe("agreement with Python (hashlib, hmac, base64)", function()
  after_each(helper.cleanup)

  it("computes the same digests, macs, keys and encodings for random inputs", function()
    local lines, expected = {}, {}
    for i = 1, 40 do
      local name = ({ "sha1", "sha256", "md5" })[i % 3 + 1]
      local key = core.random_bytes(i * 7 % 150)
      local data = core.random_bytes(i * 13 % 300)
      local iterations = i % 5 + 1
      local len = i % 40 + 1
      lines[#lines + 1] = table.concat({ name, hex(key), hex(data), iterations, len }, " ")
      expected[#expected + 1] = table.concat({
        hex(core.digest(name, data)),
        hex(core.hmac(name, key, data)),
        hex(core.pbkdf2(name, key, data, iterations, len)),
        core.base64_encode(data),
      }, " ")
    end
    local dir = helper.tmpdir()
    helper.write_file(dir .. "/in", table.concat(lines, "\n") .. "\n")
    helper.write_file(dir .. "/check.py", [[
import base64, hashlib, hmac, sys
for line in open(sys.argv[1]):
    name, key, data, it, n = line.split(" ")
    key, data = bytes.fromhex(key), bytes.fromhex(data)
    print(hashlib.new(name, data).hexdigest(),
          hmac.new(key, data, name).hexdigest(),
          hashlib.pbkdf2_hmac(name, key, data, int(it), int(n)).hex(),
          base64.b64encode(data).decode() or "")
]])
    local out, err, rc = helper.sh("/usr/bin/python3 " .. dir .. "/check.py " .. dir .. "/in")
    assert.equal(0, rc, err)
    local got = {}
    for l in out:gmatch("[^\n]+") do got[#got + 1] = l end
    assert.equal(#expected, #got)
    for i = 1, #expected do
      -- python prints an empty base64 as "", leaving a trailing space
      assert.equal(expected[i], (got[i]:gsub(" $", "")))
    end
    -- and the other way: Python's encodings decode here
    for i = 1, #lines do
      local data = unhex(lines[i]:match("^%S+ %S* (%S*)"))
      local b64 = got[i]:match(" (%S*)$") or ""
      assert.equal(data, core.base64_decode(b64))
    end
  end)
end)
