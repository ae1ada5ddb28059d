-- tests/lua/scram_spec.lua - the SCRAM client (evlua.scram): the example
-- exchanges of RFC 5802 and RFC 7677 byte for byte, every check of the
-- server's messages, MongoDB's SHA-1 password, the salted-password cache,
-- SASLprep's tables against Python's stringprep, and whole conversations
-- checked by a verifier written in Python from the RFC.
local core = require "evlua.core"
local scram = require "evlua.scram"
local helper = require "helper"

local RFC5802 = {
  nonce = "fyko+d2lbbFgONRv9qkxdawL",
  first = "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
  server_first = "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
  final = "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
  server_final = "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=",
}

local RFC7677 = {
  nonce = "rOprNGfwEbeRWgbNEkqO",
  first = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
  server_first = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                 .. "s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
  final = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
          .. "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
  server_final = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
}

local function sha1_conv(opts)
  opts = opts or {}
  opts.nonce = opts.nonce or RFC5802.nonce
  local conv = scram.client("SCRAM-SHA-1", "user", "pencil", opts)
  conv:first()
  return conv
end

describe("scram, the RFC examples", function()
  it("reproduces RFC 5802's SCRAM-SHA-1 exchange", function()
    local conv = scram.client("SCRAM-SHA-1", "user", "pencil", { nonce = RFC5802.nonce })
    assert.equal(RFC5802.first, conv:first())
    assert.equal(RFC5802.final, conv:final(RFC5802.server_first))
    assert.is_true(conv:verify(RFC5802.server_final))
  end)

  it("reproduces RFC 7677's SCRAM-SHA-256 exchange", function()
    local conv = scram.client("SCRAM-SHA-256", "user", "pencil", { nonce = RFC7677.nonce })
    assert.equal(RFC7677.first, conv:first())
    assert.equal(RFC7677.final, conv:final(RFC7677.server_first))
    assert.is_true(conv:verify(RFC7677.server_final))
  end)

  it("makes a fresh random nonce per conversation", function()
    local a = scram.client("SCRAM-SHA-256", "u", "p"):first()
    local b = scram.client("SCRAM-SHA-256", "u", "p"):first()
    assert.matches("^n,,n=u,r=[%w+/]+=*$", a)
    assert.is_true(#a >= #"n,,n=u,r=" + 32)
    assert.are_not.equal(a, b)
  end)

  it("escapes '=' and ',' in the user name", function()
    local conv = scram.client("SCRAM-SHA-256", "a=b,c=", "p", { nonce = "abc" })
    assert.equal("n,,n=a=3Db=2Cc=3D,r=abc", conv:first())
  end)
end)

describe("scram, the server's messages", function()
  it("fails on a tampered server signature", function()
    local conv = sha1_conv()
    conv:final(RFC5802.server_first)
    local v, err, code = conv:verify("v=rmF9pqV8S7suAoZWja4dJRkFsKA=")
    assert.is_nil(v)
    assert.equal("server signature mismatch", err)
    assert.equal("auth", code)
    conv = sha1_conv()
    conv:final(RFC5802.server_first)
    assert.equal("auth", select(3, conv:verify("v=" .. core.base64_encode(("x"):rep(20)))))
    conv = sha1_conv()
    conv:final(RFC5802.server_first)
    assert.equal("auth", select(3, conv:verify("v=cm1G")))   -- a prefix only
  end)

  it("fails when the server nonce does not extend the client's", function()
    local cases = {
      "r=fyko+d2lbbFgONRv9qkxdaw,s=QSXCR+Q6sek8bf92,i=4096",      -- shorter
      "r=fyko+d2lbbFgONRv9qkxdawL,s=QSXCR+Q6sek8bf92,i=4096",     -- no server part
      "r=Xyko+d2lbbFgONRv9qkxdawL3rfc,s=QSXCR+Q6sek8bf92,i=4096", -- another prefix
      "r=3rfcfyko+d2lbbFgONRv9qkxdawL,s=QSXCR+Q6sek8bf92,i=4096", -- ours, not first
    }
    for _, msg in ipairs(cases) do
      local v, err, code = sha1_conv():final(msg)
      assert.is_nil(v)
      assert.equal("server nonce does not extend the client nonce", err)
      assert.equal("auth", code)
    end
  end)

  it("fails below the minimum iteration count, which is configurable", function()
    local msg = "r=fyko+d2lbbFgONRv9qkxdawLxyz,s=QSXCR+Q6sek8bf92,i=4095"
    local v, err, code = sha1_conv():final(msg)
    assert.is_nil(v)
    assert.equal("iteration count 4095 below the minimum 4096", err)
    assert.equal("auth", code)
    assert.matches("^c=biws,r=fyko%+d2lbbFgONRv9qkxdawLxyz,p=",
                   sha1_conv({ min_iterations = 1000 }):final(msg))
    assert.equal("auth", select(3, sha1_conv({ min_iterations = 10000 }):final(RFC5802.server_first)))
  end)

  it("fails on malformed server-first messages", function()
    local cases = {
      "", "garbage", "r=fyko+d2lbbFgONRv9qkxdawLx", "r=fyko+d2lbbFgONRv9qkxdawLx,s=QSXCR+Q6sek8bf92",
      "s=QSXCR+Q6sek8bf92,r=fyko+d2lbbFgONRv9qkxdawLx,i=4096",
      "r=fyko+d2lbbFgONRv9qkxdawLx,s=QSXCR+Q6sek8bf9,i=4096",    -- salt not base64
      "r=fyko+d2lbbFgONRv9qkxdawLx,s=,i=4096",                    -- empty salt
      "r=fyko+d2lbbFgONRv9qkxdawLx,s=QSXCR+Q6sek8bf92,i=40x6",
      "r=fyko+d2lbbFgONRv9qkxdawLx,s=QSXCR+Q6sek8bf92,i=-4096",
      "r=fyko+d2lbbFgONRv9qkxdawLx,s=QSXCR+Q6sek8bf92,i=04096",
      "r=fyko+d2lbbFgONRv9qkxdawLx,s=QSXCR+Q6sek8bf92,i=99999999999",
      "m=ext,r=fyko+d2lbbFgONRv9qkxdawLx,s=QSXCR+Q6sek8bf92,i=4096",
      "r=fyko+d2lbbFgONRv9qkxdawL\1,s=QSXCR+Q6sek8bf92,i=4096",
    }
    for _, msg in ipairs(cases) do
      local v, err, code = sha1_conv():final(msg)
      assert.is_nil(v, msg)
      assert.equal("protocol", code, msg)
      assert.is_string(err)
    end
  end)

  it("accepts extensions after the iteration count", function()
    local conv = sha1_conv()
    local final = conv:final(RFC5802.server_first .. ",x=future")
    assert.matches("^c=biws,r=fyko", final)
  end)

  it("returns the server's e= error as its message", function()
    local v, err, code = sha1_conv():final("e=unknown-user")
    assert.is_nil(v)
    assert.equal("unknown-user", err)
    assert.equal("auth", code)
    local conv = sha1_conv()
    conv:final(RFC5802.server_first)
    v, err, code = conv:verify("e=invalid-proof")
    assert.is_nil(v)
    assert.equal("invalid-proof", err)
    assert.equal("auth", code)
    conv = sha1_conv()
    conv:final(RFC5802.server_first)
    assert.equal("protocol", select(3, conv:verify("x=1")))
  end)

  it("raises when the steps run out of order", function()
    local conv = scram.client("SCRAM-SHA-1", "user", "pencil")
    assert.matches("before first", helper.raised(conv.final, conv, RFC5802.server_first))
    assert.matches("before final", helper.raised(conv.verify, conv, RFC5802.server_final))
    conv:first()
    assert.matches("twice", helper.raised(conv.first, conv))
    conv:final(RFC5802.server_first)
    assert.matches("twice", helper.raised(conv.final, conv, RFC5802.server_first))
    conv = sha1_conv()
    assert.matches("bad argument #1", helper.raised(conv.final, conv, 42))
  end)

  it("raises for bad arguments", function()
    assert.matches("bad argument #1", helper.raised(scram.client, "SCRAM-MD5", "u", "p"))
    assert.matches("bad argument #1", helper.raised(scram.client, "scram-sha-1", "u", "p"))
    assert.matches("bad argument #2", helper.raised(scram.client, "SCRAM-SHA-1", nil, "p"))
    assert.matches("bad argument #3", helper.raised(scram.client, "SCRAM-SHA-1", "u", 5))
    assert.matches("opts.nonce", helper.raised(scram.client, "SCRAM-SHA-1", "u", "p", { nonce = "a,b" }))
    assert.matches("opts.nonce", helper.raised(scram.client, "SCRAM-SHA-1", "u", "p", { nonce = "" }))
    assert.matches("opts.min_iterations",
                   helper.raised(scram.client, "SCRAM-SHA-1", "u", "p", { min_iterations = 0 }))
    assert.matches("bad argument #1", helper.raised(scram.mongo_password, "PLAIN", "u", "p"))
  end)
end)

describe("scram, the salted-password cache", function()
  it("computes PBKDF2 once per password, salt and count, and reads the cache", function()
    local cache = {}
    local function run(salt, iterations)
      local conv = sha1_conv({ cache = cache })
      return conv, conv:final(("r=fyko+d2lbbFgONRv9qkxdawLx,s=%s,i=%d"):format(salt, iterations))
    end
    local function count()
      local n = 0
      for _ in pairs(cache) do n = n + 1 end
      return n
    end
    local _, a = run("QSXCR+Q6sek8bf92", 4096)
    local _, b = run("QSXCR+Q6sek8bf92", 4096)
    assert.equal(a, b)
    assert.equal(1, count())
    run("QSXCR+Q6sek8bf93", 4096)
    run("QSXCR+Q6sek8bf92", 4097)
    assert.equal(3, count())
    for _, v in pairs(cache) do assert.equal(20, #v) end
    -- no password in the clear among the keys
    for k in pairs(cache) do assert.is_nil(k:find("pencil", 1, true)) end
    -- a poisoned entry is what the next conversation uses: the RFC proof changes
    cache = {}
    local conv = sha1_conv({ cache = cache })
    assert.equal(RFC5802.final, conv:final(RFC5802.server_first))
    for k in pairs(cache) do cache[k] = ("\0"):rep(20) end
    conv = sha1_conv({ cache = cache })
    assert.are_not.equal(RFC5802.final, conv:final(RFC5802.server_first))
    assert.equal("auth", select(3, conv:verify(RFC5802.server_final)))
  end)
end)

describe("scram.saslprep", function()
  after_each(helper.cleanup)

  it("maps and refuses as RFC 4013's examples say (those without NFKC)", function()
    assert.equal("IX", scram.saslprep("I\u{AD}X"))
    assert.equal("user", scram.saslprep("user"))
    assert.equal("USER", scram.saslprep("USER"))
    assert.equal("a b", scram.saslprep("a\u{A0}b"))
    assert.equal("a b", scram.saslprep("a\u{3000}b"))
    assert.equal("ab", scram.saslprep("a\u{200B}b"))
    assert.equal("pässwörd", scram.saslprep("pässwörd"))
    for _, s in ipairs({ "\u{7}", "a\0b", "x\u{E000}", "\u{FFFF}", "\u{10FFFE}",
                         "\u{E0041}", "\u{2FF0}", "\u{202E}", "\xff\xfe", "\xed\xa0\x80" }) do
      local v, err, code = scram.saslprep(s)
      assert.is_nil(v)
      assert.equal("bad_password", code)
      assert.is_string(err)
    end
    local _, _, code = scram.client("SCRAM-SHA-256", "u", "bell\u{7}")
    assert.equal("bad_password", code)
  end)

  it("agrees with Python's stringprep tables code point by code point", function()
    -- python3 says, for each code point, r(emoved), s(pace), x(prohibited)
    -- or k(ept) by RFC 3454's tables B.1, C.1.2 and C.2.1 to C.9
    local ranges = { { 0, 0x3100 }, { 0xD7F0, 0xFFFF }, { 0x1D170, 0x1D180 },
                     { 0x1FFFC, 0x20001 }, { 0xE0000, 0xE0081 }, { 0xEFFFE, 0xF0001 },
                     { 0x10FFFC, 0x10FFFF } }
    local mine = {}
    for _, r in ipairs(ranges) do
      for c = r[1], r[2] do
        local s = utf8.char(c)
        local v = scram.saslprep(s)
        mine[#mine + 1] = v == nil and "x" or v == "" and "r" or (v == " " and c ~= 32) and "s" or "k"
      end
    end
    local dir = helper.tmpdir()
    local list = {}
    for _, r in ipairs(ranges) do list[#list + 1] = r[1] .. " " .. r[2] end
    helper.write_file(dir .. "/ranges", table.concat(list, "\n") .. "\n")
    helper.write_file(dir .. "/prep.py", [[
import stringprep as t, sys
out = []
for line in open(sys.argv[1]):
    a, b = map(int, line.split())
    for c in range(a, b + 1):
        ch = chr(c)
        if t.in_table_b1(ch): out.append("r")
        elif t.in_table_c12(ch): out.append("s")
        elif (t.in_table_c21_c22(ch) or t.in_table_c3(ch) or t.in_table_c4(ch) or t.in_table_c5(ch)
              or t.in_table_c6(ch) or t.in_table_c7(ch) or t.in_table_c8(ch) or t.in_table_c9(ch)):
            out.append("x")
        else: out.append("k")
print("".join(out))
]])
    local out, err, rc = helper.sh("/usr/bin/python3 " .. dir .. "/prep.py " .. dir .. "/ranges")
    assert.equal(0, rc, err)
    out = out:gsub("\n$", "")
    local theirs = out
    assert.equal(#theirs, #mine)
    local diffs = {}
    local i = 0
    for _, r in ipairs(ranges) do
      for c = r[1], r[2] do
        i = i + 1
        if mine[i] ~= theirs:sub(i, i) then
          diffs[#diffs + 1] = ("U+%04X: %s, python %s"):format(c, mine[i], theirs:sub(i, i))
        end
      end
    end
    assert.equal("", table.concat(diffs, "; "))
  end)
end)

describe("scram.mongo_password", function()
  after_each(helper.cleanup)

  it("is hex(md5(user:mongo:password)) for SCRAM-SHA-1, as Python computes it", function()
    local pairs_ = { { "user", "pencil" }, { "admin", "p@ss:w0rd" }, { "ünï", "ção\0x" } }
    local dir = helper.tmpdir()
    local lines = {}
    for _, p in ipairs(pairs_) do
      local h = {}
      for _, s in ipairs(p) do h[#h + 1] = (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end)) end
      lines[#lines + 1] = h[1] .. " " .. h[2]
    end
    helper.write_file(dir .. "/in", table.concat(lines, "\n") .. "\n")
    local out, err, rc = helper.sh("/usr/bin/python3 -c " .. helper.quote([[
import hashlib, sys
for line in open(sys.argv[1]):
    u, p = (bytes.fromhex(x) for x in line.split())
    print(hashlib.md5(u + b":mongo:" + p).hexdigest())
]]) .. " " .. dir .. "/in")
    assert.equal(0, rc, err)
    local i = 0
    for line in out:gmatch("[^\n]+") do
      i = i + 1
      assert.equal(line, scram.mongo_password("SCRAM-SHA-1", pairs_[i][1], pairs_[i][2]))
      assert.matches("^%x+$", line)
    end
    assert.equal(#pairs_, i)
    assert.equal("pencil", scram.mongo_password("SCRAM-SHA-256", "user", "pencil"))
  end)
end)

describe("scram against a verifier written in Python from the RFC", function()
  after_each(helper.cleanup)

  -- The server side: StoredKey and ServerKey from the password, the client
  -- proof checked, the server signature or e=invalid-proof printed.
  local VERIFIER = [[
import base64, hashlib, hmac, sys
mech, password, first, server_first, final = open(sys.argv[1], "rb").read().decode().split("\n")[:5]
h = {"SCRAM-SHA-1": "sha1", "SCRAM-SHA-256": "sha256"}[mech]
attrs = dict(a.split("=", 1) for a in server_first.split(","))
salted = hashlib.pbkdf2_hmac(h, password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"]))
mac = lambda k, m: hmac.new(k, m.encode(), h).digest()
client_key_expected = mac(salted, "Client Key")
stored = hashlib.new(h, client_key_expected).digest()
without_proof, proof = final.rsplit(",p=", 1)
assert without_proof == "c=biws,r=" + attrs["r"], "bad channel binding or nonce"
auth = first[3:] + "," + server_first + "," + without_proof
sig = mac(stored, auth)
client_key = bytes(a ^ b for a, b in zip(base64.b64decode(proof), sig))
if hashlib.new(h, client_key).digest() != stored:
    print("e=invalid-proof")
else:
    print("v=" + base64.b64encode(mac(mac(salted, "Server Key"), auth)).decode())
]]

  local function converse(mechanism, user, password, server_password, iterations)
    local conv = assert(scram.client(mechanism, user, password))
    local first = conv:first()
    local cnonce = first:match("r=(.*)$")
    local server_first = ("r=%s%s,s=%s,i=%d"):format(
      cnonce, core.base64_encode(core.random_bytes(18)), core.base64_encode(core.random_bytes(16)),
      iterations)
    local final = assert(conv:final(server_first))
    local dir = helper.tmpdir()
    helper.write_file(dir .. "/v.py", VERIFIER)
    helper.write_file(dir .. "/in", table.concat({ mechanism, server_password, first, server_first, final }, "\n"))
    local out, err, rc = helper.sh("/usr/bin/python3 " .. dir .. "/v.py " .. dir .. "/in")
    assert.equal(0, rc, err)
    return conv:verify((out:gsub("\n$", "")))
  end

  it("authenticates with the right password, both mechanisms", function()
    assert.is_true(converse("SCRAM-SHA-256", "alice", "s3cret, with = signs", "s3cret, with = signs", 4096))
    assert.is_true(converse("SCRAM-SHA-256", "bob", "pässwörd", "pässwörd", 15000))
    local mp = scram.mongo_password("SCRAM-SHA-1", "carol", "hunter2")
    assert.is_true(converse("SCRAM-SHA-1", "carol", mp, mp, 10000))
  end)

  it("is refused with the wrong password, with the server's message", function()
    local v, err, code = converse("SCRAM-SHA-256", "alice", "wrong", "right", 4096)
    assert.is_nil(v)
    assert.equal("invalid-proof", err)
    assert.equal("auth", code)
    v, err = converse("SCRAM-SHA-1", "carol", scram.mongo_password("SCRAM-SHA-1", "carol", "a"),
                      scram.mongo_password("SCRAM-SHA-1", "carol", "b"), 4096)
    assert.is_nil(v)
    assert.equal("invalid-proof", err)
  end)
end)
