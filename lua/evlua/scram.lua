-- evlua/scram.lua - the client side of a SCRAM conversation (RFC 5802,
-- SCRAM-SHA-1; RFC 7677, SCRAM-SHA-256), without channel binding and
-- independent of how a protocol carries the messages (MongoDB's
-- saslStart/saslContinue commands live in evlua.mongo).
--
--   local conv = scram.client("SCRAM-SHA-256", user, password [, opts])
--   send(conv:first())                         -- "n,,n=user,r=<nonce>"
--   local msg, err = conv:final(server_first)  -- "c=biws,r=...,p=..."
--   local ok, err = conv:verify(server_final)  -- checks "v=..."
--
-- opts: nonce (fixes the client nonce, for tests), min_iterations (4096),
-- cache (a table of salted passwords; the module's own by default).
-- Failures are nil, message, code: "auth" (the server's e= message, a
-- wrong server signature, a server nonce not extending ours, too few
-- iterations), "protocol" (a malformed server message), "bad_password"
-- (SASLprep refused the password).
--
-- SASLprep (RFC 4013) as done here: non-ASCII spaces map to U+0020, the
-- "mapped to nothing" characters are removed, the prohibited characters
-- (RFC 3454 tables C.1.2 to C.9) and invalid UTF-8 are refused. NFKC
-- normalization, the bidi rule and the unassigned-code-point check are
-- not done: a non-ASCII password is used as given after that mapping, so
-- it must already be in NFKC form. ASCII passwords are exact.

local core = require "evlua.core"
local errors = require "evlua.errors"

local digest, hmac, pbkdf2 = core.digest, core.hmac, core.pbkdf2
local b64encode, b64decode, xor = core.base64_encode, core.base64_decode, core.xor
local fail = errors.fail
local byte, format = string.byte, string.format
local concat = table.concat

local scram = {}

local MECHANISMS = {
  ["SCRAM-SHA-1"] = { hash = "sha1", size = 20 },
  ["SCRAM-SHA-256"] = { hash = "sha256", size = 32 },
}

local DEFAULT_MIN_ITERATIONS = 4096
local CACHE_MAX = 64
local NOT_PRINTABLE = "[^\33-\43\45-\126]"   -- a nonce is printable ASCII but ','

--[[ SASLprep ==================================================================]]

-- Code point ranges, as flat lists of first, last pairs.
local SPACES = {   -- C.1.2, mapped to U+0020
  0x00A0, 0x00A0, 0x1680, 0x1680, 0x2000, 0x200B, 0x202F, 0x202F,
  0x205F, 0x205F, 0x3000, 0x3000,
}
local NOTHING = {   -- B.1, mapped to nothing
  0x00AD, 0x00AD, 0x034F, 0x034F, 0x1806, 0x1806, 0x180B, 0x180D,
  0x200B, 0x200D, 0x2060, 0x2060, 0xFE00, 0xFE0F, 0xFEFF, 0xFEFF,
}
local PROHIBITED = {
  0x0000, 0x001F, 0x007F, 0x009F,                           -- C.2.1, C.2.2
  0x06DD, 0x06DD, 0x070F, 0x070F, 0x180E, 0x180E, 0x200C, 0x200F,
  0x2028, 0x202E, 0x2060, 0x2063, 0x206A, 0x206F, 0x2FF0, 0x2FFB,
  0xD800, 0xF8FF,                                           -- C.5, C.3
  0xFDD0, 0xFDEF, 0xFEFF, 0xFEFF, 0xFFF9, 0xFFFD,          -- C.4, C.6
  0x0340, 0x0341, 0x1D173, 0x1D17A, 0xE0001, 0xE0001, 0xE0020, 0xE007F,
  0xF0000, 0xFFFFD, 0x100000, 0x10FFFD,                     -- C.3
}

local function in_ranges(ranges, c)
  for i = 1, #ranges, 2 do
    if c >= ranges[i] and c <= ranges[i + 1] then return true end
  end
  return false
end

-- scram.saslprep(s) -> prepared | nil, message, "bad_password"
function scram.saslprep(s)
  if not s:find("[\0-\31\127-\255]") then return s end   -- printable ASCII
  if not utf8.len(s) then return fail("bad_password", "password is not valid utf-8") end
  local out = {}
  for _, c in utf8.codes(s) do
    if in_ranges(NOTHING, c) then   -- first: U+200B is in both tables
      goto continue
    elseif in_ranges(SPACES, c) then
      out[#out + 1] = " "
    else
      -- C.4: the last two code points of every plane are non-characters
      if in_ranges(PROHIBITED, c) or c & 0xFFFE == 0xFFFE then
        return fail("bad_password", format("password has a prohibited character (U+%04X)", c))
      end
      out[#out + 1] = utf8.char(c)
    end
    ::continue::
  end
  return concat(out)
end

--[[ MongoDB's password ========================================================]]

local function hex(s)
  return (s:gsub(".", function(c) return format("%02x", byte(c)) end))
end

-- scram.mongo_password(mechanism, user, password) -> the password the
-- SCRAM conversation uses: MongoDB's SCRAM-SHA-1 hashes the password
-- first, hex(md5(user .. ":mongo:" .. password)); SCRAM-SHA-256 takes it
-- as is (the conversation SASLpreps it).
function scram.mongo_password(mechanism, user, password)
  if not MECHANISMS[mechanism] then
    errors.argerror(1, "mongo_password", "SCRAM-SHA-1 or SCRAM-SHA-256 expected")
  end
  if type(user) ~= "string" then errors.argerror(2, "mongo_password", "string expected") end
  if type(password) ~= "string" then errors.argerror(3, "mongo_password", "string expected") end
  if mechanism == "SCRAM-SHA-1" then
    return hex(digest("md5", user .. ":mongo:" .. password))
  end
  return password
end

--[[ The conversation ==========================================================]]

local default_cache, default_cache_size = {}, 0

-- The salted password, computed once per (mechanism, password, salt,
-- iterations): PBKDF2 is slow on purpose. The key is a digest, so the
-- cache holds no password in the clear.
local function salted_password(conv, salt, iterations)
  local m = conv.mech
  local key = digest("sha256", concat({ m.hash, conv.password, salt, iterations }, "\0"))
  local cache = conv.cache
  local hit = cache[key]
  if hit then return hit end
  local salted = pbkdf2(m.hash, conv.password, salt, iterations, m.size)
  if cache == default_cache then
    if default_cache_size >= CACHE_MAX then
      default_cache, default_cache_size = {}, 0
      cache = default_cache
      conv.cache = cache
    end
    default_cache_size = default_cache_size + 1
  end
  cache[key] = salted
  return salted
end

local function escape_user(s)
  return (s:gsub("[=,]", { ["="] = "=3D", [","] = "=2C" }))
end

local Conv = {}
Conv.__index = Conv

-- scram.client(mechanism, username, password [, opts]) -> conv | nil, err, code
function scram.client(mechanism, username, password, opts)
  local mech = MECHANISMS[mechanism]
  if not mech then errors.argerror(1, "scram.client", "SCRAM-SHA-1 or SCRAM-SHA-256 expected") end
  if type(username) ~= "string" then errors.argerror(2, "scram.client", "string expected") end
  if type(password) ~= "string" then errors.argerror(3, "scram.client", "string expected") end
  if opts ~= nil and type(opts) ~= "table" then
    errors.argerror(4, "scram.client", "table expected")
  end
  opts = opts or {}
  local nonce = opts.nonce
  if nonce ~= nil and (type(nonce) ~= "string" or nonce == "" or nonce:find(NOT_PRINTABLE)) then
    errors.argerror(4, "scram.client", "opts.nonce: printable ASCII without ',' expected")
  end
  local min_iterations = opts.min_iterations or DEFAULT_MIN_ITERATIONS
  if math.type(min_iterations) ~= "integer" or min_iterations < 1 then
    errors.argerror(4, "scram.client", "opts.min_iterations: positive integer expected")
  end
  if opts.cache ~= nil and type(opts.cache) ~= "table" then
    errors.argerror(4, "scram.client", "opts.cache: table expected")
  end
  local prepared, err, code = scram.saslprep(password)
  if not prepared then return nil, err, code end
  return setmetatable({
    mech = mech,
    mechanism = mechanism,
    username = username,
    password = prepared,
    nonce = nonce or b64encode(core.random_bytes(24)),
    min_iterations = min_iterations,
    cache = opts.cache or default_cache,
    state = "new",
  }, Conv)
end

-- conv:first() -> client-first-message ("n,,n=<user>,r=<nonce>")
function Conv:first()
  if self.state ~= "new" then error("scram: first() called twice", 2) end
  self.first_bare = "n=" .. escape_user(self.username) .. ",r=" .. self.nonce
  self.state = "first"
  return "n,," .. self.first_bare
end

-- The attributes of a server message: a list of { letter, value } in order.
local function attributes(msg)
  local list = {}
  for part in (msg .. ","):gmatch("([^,]*),") do
    local k, v = part:match("^(%a)=(.*)$")
    if not k then return nil end
    list[#list + 1] = { k, v }
  end
  return list
end

local function server_error(attrs)
  if attrs and attrs[1] and attrs[1][1] == "e" then
    return fail("auth", attrs[1][2] ~= "" and attrs[1][2] or "server error")
  end
end

-- conv:final(server_first) -> client-final-message | nil, err, code
function Conv:final(server_first)
  if self.state ~= "first" then error("scram: final() before first() or twice", 2) end
  if type(server_first) ~= "string" then errors.argerror(1, "final", "string expected") end
  self.state = "failed"
  local attrs = attributes(server_first)
  local nil_, err, code = server_error(attrs)
  if err then return nil_, err, code end
  if not attrs or #attrs < 3 then return fail("protocol", "malformed server-first-message") end
  if attrs[1][1] == "m" then return fail("protocol", "unsupported scram extension (m=)") end
  local r, s, i = attrs[1], attrs[2], attrs[3]
  if r[1] ~= "r" or s[1] ~= "s" or i[1] ~= "i" then
    return fail("protocol", "malformed server-first-message")
  end
  local server_nonce = r[2]
  if #server_nonce <= #self.nonce or server_nonce:sub(1, #self.nonce) ~= self.nonce then
    return fail("auth", "server nonce does not extend the client nonce")
  end
  if server_nonce:find(NOT_PRINTABLE) then
    return fail("protocol", "bad character in server nonce")
  end
  local salt = b64decode(s[2])
  if not salt or salt == "" then return fail("protocol", "salt is not base64") end
  local iterations = i[2]:match("^[1-9]%d*$") and tonumber(i[2])
  if math.type(iterations) ~= "integer" or iterations > 10000000 then
    return fail("protocol", "bad iteration count")
  end
  if iterations < self.min_iterations then
    return fail("auth", format("iteration count %d below the minimum %d",
                               iterations, self.min_iterations))
  end

  local h = self.mech.hash
  local salted = salted_password(self, salt, iterations)
  local client_key = hmac(h, salted, "Client Key")
  local stored_key = digest(h, client_key)
  local without_proof = "c=biws,r=" .. server_nonce   -- biws: base64 of "n,,"
  local auth_message = self.first_bare .. "," .. server_first .. "," .. without_proof
  local proof = xor(client_key, hmac(h, stored_key, auth_message))
  self.server_signature = hmac(h, hmac(h, salted, "Server Key"), auth_message)
  self.state = "final"
  return without_proof .. ",p=" .. b64encode(proof)
end

-- conv:verify(server_final) -> true | nil, err, code
function Conv:verify(server_final)
  if self.state ~= "final" then error("scram: verify() before final() or twice", 2) end
  if type(server_final) ~= "string" then errors.argerror(1, "verify", "string expected") end
  self.state = "failed"
  local attrs = attributes(server_final)
  local nil_, err, code = server_error(attrs)
  if err then return nil_, err, code end
  if not attrs or attrs[1][1] ~= "v" then
    return fail("protocol", "malformed server-final-message")
  end
  local got = b64decode(attrs[1][2])
  if not got then return fail("protocol", "server signature is not base64") end
  -- compared whole, without an early exit
  local expected = self.server_signature
  local diff = #got ~ #expected
  if diff == 0 then
    local x = xor(got, expected)
    for k = 1, #x do diff = diff | byte(x, k) end
  end
  if diff ~= 0 then return fail("auth", "server signature mismatch") end
  self.state = "done"
  return true
end

function Conv:__tostring()
  return format("evlua.scram.conversation (%s, %s)", self.mechanism, self.state)
end

scram.MECHANISMS = { "SCRAM-SHA-256", "SCRAM-SHA-1" }

return scram
