-- tests/lua/userdata_spec.lua - the rules every C userdata type keeps
-- (CONTRIBUTING.md, "Userdata"): __tostring names the type, close is
-- idempotent, a closed handle answers nil, "closed", "closed".
local core = require "evlua.core"
local event = require "event"

local function noop() end

-- One of every userdata type the bindings create, by type name.
local function one_of_each()
  local l = assert(core.listen("127.0.0.1", 0, nil, false, noop))
  local r = assert(core.dns_resolver({ servers = { "127.0.0.1:9" } }))
  return {
    ["evlua.timer"] = core.timer(noop),
    ["evlua.fdwatch"] = core.fdwatch(0, "r", noop),
    ["evlua.signal"] = core.signal(core.signal_number("USR2"), noop),
    ["evlua.listener"] = l,
    ["evlua.stream"] = assert(core.stream_connect("127.0.0.1", l:port())),
    ["evlua.mp_scanner"] = core.mp_scanner(),
    ["evlua.resp_reader"] = core.resp_reader(),
    ["evlua.http_parser"] = core.http_parser("request", {}),
    ["evlua.dns.resolver"] = r,
    ["evlua.dns.request"] = r:resolve("127.0.0.1", "any", noop),
    ["evlua.process"] = assert(core.process_spawn(
      { file = "true", argv = { "true" } }, noop)),
    ["evlua.udp"] = assert(core.udp_open("127.0.0.1", 0, 2048, 16, noop)),
    ["evlua.kcp.listener"] = assert(core.kcp_listen("127.0.0.1", 0, nil,
                                                    noop)),
    -- evlua.bson's typed values (immutable: nothing to close)
    ["evlua.bson.objectid"] = core.bson_oid(),
    ["evlua.bson.date"] = core.bson_date(0),
    ["evlua.bson.binary"] = core.bson_binary("x"),
    ["evlua.bson.regex"] = core.bson_regex("x"),
    ["evlua.bson.decimal128"] = core.bson_decimal128("1"),
    ["evlua.bson.timestamp"] = core.bson_timestamp(0, 0),
    ["evlua.bson.int64"] = core.bson_int64(0),
    ["evlua.bson.int32"] = core.bson_int32(0),
    ["evlua.bson.minkey"] = core.bson_minkey,
    ["evlua.bson.maxkey"] = core.bson_maxkey,
  }
end

describe("userdata", function()
  it("has __tostring naming its type, on every type", function()
    local all = one_of_each()
    for name, ud in pairs(all) do
      local s = tostring(ud)
      assert.equal(name .. " (", s:sub(1, #name + 2), s)
    end
    for _, ud in pairs(all) do
      if ud.close then ud:close() end
    end
  end)

  it("closes idempotently and then answers nil, 'closed', 'closed'", function()
    local all = one_of_each()
    local closed = {
      ["evlua.listener"] = function(l) return l:addr() end,
      ["evlua.stream"] = function(s) return s:peer() end,
      ["evlua.dns.resolver"] = function(r) return r:info() end,
      ["evlua.process"] = function(p) return p:signal(0) end,
      ["evlua.udp"] = function(u) return u:sendto("x", "127.0.0.1", 9) end,
      ["evlua.kcp.listener"] = function(l) return l:port() end,
    }
    for name, use in pairs(closed) do
      local ud = all[name]
      if name == "evlua.stream" then ud:close_silently() else ud:close() end
      ud:close()
      local ok, msg, code = use(ud)
      assert.is_nil(ok, name)
      assert.equal("closed", msg, name)
      assert.equal("closed", code, name)
      assert.matches("closed", tostring(ud), 1, true)
    end
    event.sleep(0)
  end)
end)
