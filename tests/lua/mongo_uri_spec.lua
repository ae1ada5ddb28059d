-- tests/lua/mongo_uri_spec.lua - MongoDB connection strings
-- (evlua.mongo_uri): a table of good URIs with what they parse to, and a
-- table of bad ones with the error each must give.
local uri = require "evlua.mongo_uri"
local helper = require "helper"

local parse = uri.parse

describe("mongo_uri.parse, good URIs", function()
  local good = {
    { "mongodb://localhost",
      { hosts = { { host = "localhost", port = 27017 } }, options = { authSource = "admin" } } },
    { "mongodb://localhost/",
      { hosts = { { host = "localhost", port = 27017 } }, options = { authSource = "admin" } } },
    { "mongodb://Example.COM:27018/",
      { hosts = { { host = "example.com", port = 27018 } }, options = { authSource = "admin" } } },
    { "mongodb://h1,h2:1,[::1],[fe80::1:2]:65535/",
      { hosts = { { host = "h1", port = 27017 }, { host = "h2", port = 1 },
                  { host = "::1", port = 27017 }, { host = "fe80::1:2", port = 65535 } },
        options = { authSource = "admin" } } },
    { "mongodb://127.0.0.1:27017/app",
      { hosts = { { host = "127.0.0.1", port = 27017 } }, database = "app",
        options = { authSource = "app" } } },
    { "mongodb://alice@h/",
      { hosts = { { host = "h", port = 27017 } }, username = "alice",
        options = { authSource = "admin" } } },
    { "mongodb://alice:@h/",
      { hosts = { { host = "h", port = 27017 } }, username = "alice", password = "",
        options = { authSource = "admin" } } },
    { "mongodb://b%40b:p%3Aw%2F%25%40d+x@h/db?authSource=other",
      { hosts = { { host = "h", port = 27017 } }, username = "b@b", password = "p:w/%@d+x",
        database = "db", options = { authSource = "other" } } },
    { "mongodb://%C3%BCser:p%C3%A4ss@h/",
      { hosts = { { host = "h", port = 27017 } }, username = "üser", password = "päss",
        options = { authSource = "admin" } } },
    { "mongodb://u:p@h/my%2Ddb?",
      { hosts = { { host = "h", port = 27017 } }, username = "u", password = "p",
        database = "my-db", options = { authSource = "my-db" } } },
    { "mongodb://h/?authsource=x&AUTHMECHANISM=scram-sha-256&connecttimeoutms=100&SocketTimeoutMS=0"
      .. "&serverselectiontimeoutms=5000&APPNAME=my%20app&maxpoolsize=10&MinPoolSize=2"
      .. "&retrywrites=TRUE&w=majority&journal=false&tls=false&replicaset=rs0&directconnection=true",
      nil, "authMechanism SCRAM-SHA-256 needs a user name" },
    { "mongodb://u@h/?authsource=x&AUTHMECHANISM=scram-sha-256&connecttimeoutms=100&SocketTimeoutMS=0"
      .. "&serverselectiontimeoutms=5000&APPNAME=my%20app&maxpoolsize=10&MinPoolSize=2"
      .. "&retrywrites=TRUE&w=majority&journal=false&tls=false&replicaset=rs0&directconnection=true",
      { hosts = { { host = "h", port = 27017 } }, username = "u",
        options = { authSource = "x", authMechanism = "SCRAM-SHA-256", connectTimeoutMS = 100,
                    socketTimeoutMS = 0, serverSelectionTimeoutMS = 5000, appName = "my app",
                    maxPoolSize = 10, minPoolSize = 2, retryWrites = true, w = "majority",
                    journal = false, tls = false, replicaSet = "rs0", directConnection = true } } },
    { "mongodb://u@h/?authMechanism=SCRAM-SHA-1&w=2&ssl=false&maxPoolSize=0&minPoolSize=5",
      { hosts = { { host = "h", port = 27017 } }, username = "u",
        options = { authSource = "admin", authMechanism = "SCRAM-SHA-1", w = 2, tls = false,
                    maxPoolSize = 0, minPoolSize = 5 } } },
  }

  for _, case in ipairs(good) do
    local s, want = case[1], case[2]
    if want then
      it("reads " .. s, function()
        local got, err = parse(s)
        assert.is_table(got, err)
        assert.same(want.hosts, got.hosts)
        assert.equal(want.username, got.username)
        assert.equal(want.password, got.password)
        assert.equal(want.database, got.database)
        assert.same(want.options, got.options)
        assert.same({}, got.unknown)
        assert.same({}, got.warnings)
      end)
    end
  end

  it("keeps integers as integers and booleans as booleans", function()
    local o = parse("mongodb://h/?connectTimeoutMS=2147483647&retryWrites=false&w=0"
                    .. "&maxStalenessSeconds=-1")
    assert.equal(-1, o.options.maxStalenessSeconds)
    assert.equal("integer", math.type(o.options.connectTimeoutMS))
    assert.equal(2147483647, o.options.connectTimeoutMS)
    assert.is_false(o.options.retryWrites)
    assert.equal(0, o.options.w)
  end)

  it("keeps unknown options, flagged, and warns about repeated ones", function()
    local o = parse("mongodb://h/?fooBar=1&readPreference=secondary&fooBar=2&appName=a&appname=b")
    assert.equal("2", o.options.fooBar)
    assert.same({ "fooBar" }, o.unknown)
    assert.equal("secondary", o.options.readPreference)
    assert.equal("b", o.options.appName)
    assert.equal(3, #o.warnings)
    assert.matches("unknown option fooBar", o.warnings[1])
    assert.matches("appName given more than once", o.warnings[3])
  end)

  it("raises for a non-string", function()
    assert.matches("bad argument #1 to 'parse'", helper.raised(parse, nil))
    assert.matches("bad argument #1 to 'parse'", helper.raised(parse, {}))
  end)
end)

describe("mongo_uri.parse, bad URIs", function()
  local bad = {
    -- scheme and shape
    { "", "bad_url", "starts with mongodb://" },
    { "http://h/", "bad_url", "starts with mongodb://" },
    { "MONGODB://h/", "bad_url", "starts with mongodb://" },
    { "mongodb+srv://cluster0.example.net/", "unsupported", "mongodb+srv:// is not supported" },
    { "mongodb://", "bad_url", "no host" },
    { "mongodb:///db", "bad_url", "no host" },
    { "mongodb://u:p@/db", "bad_url", "no host" },
    { "mongodb://h?w=1", "bad_url", "a '/' is required between the hosts and the options" },
    -- hosts and ports
    { "mongodb://h1,,h2/", "bad_url", "empty host" },
    { "mongodb://h1,/", "bad_url", "empty host" },
    { "mongodb://h:/", "bad_url", "bad port ''" },
    { "mongodb://h:0/", "bad_url", "bad port '0'" },
    { "mongodb://h:65536/", "bad_url", "bad port '65536'" },
    { "mongodb://h:-1/", "bad_url", "bad port '-1'" },
    { "mongodb://h:27a/", "bad_url", "bad port '27a'" },
    { "mongodb://h:99999999999999999999/", "bad_url", "bad port" },
    { "mongodb://:27017/", "bad_url", "empty host" },
    { "mongodb://::1/", "bad_url", "IPv6 addresses go in brackets" },
    { "mongodb://[::1/", "bad_url", "unclosed '['" },
    { "mongodb://[::1]x/", "bad_url", "bad host" },
    { "mongodb://[zz::1]/", "bad_url", "bad IPv6 address" },
    { "mongodb://[]/", "bad_url", "bad IPv6 address" },
    { "mongodb://h_o$t/", "bad_url", "bad character in host" },
    { "mongodb://%2Ftmp%2Fmongodb-27017.sock/", "unsupported", "unix domain sockets" },
    -- user info
    { "mongodb://a@b@h/", "bad_url", "must be percent-encoded" },
    { "mongodb://a:b:c@h/", "bad_url", "must be percent-encoded (a second ':')" },
    { "mongodb://us/er:p@h/", "bad_url", "must be percent-encoded (a '/' before the '@')" },
    { "mongodb://us?er:p@h/", "bad_url", "must be percent-encoded" },
    { "mongodb://u:p[@h/", "bad_url", "must be percent-encoded" },
    { "mongodb://u%2:p@h/", "bad_url", "bad percent-encoding" },
    { "mongodb://u:p%zz@h/", "bad_url", "bad percent-encoding" },
    { "mongodb://u:p%@h/", "bad_url", "bad percent-encoding" },
    { "mongodb://@h/", "bad_url", "empty user name" },
    { "mongodb://:p@h/", "bad_url", "empty user name" },
    -- database
    { "mongodb://h/a%2Fb", "bad_url", "bad database name" },
    { "mongodb://h/a b", "bad_url", "bad database name" },
    { "mongodb://h/a$b", "bad_url", "bad database name" },
    { "mongodb://h/a%", "bad_url", "bad percent-encoding in the database name" },
    -- options
    { "mongodb://h/?w", "bad_url", "option 'w' has no '=value'" },
    { "mongodb://h/?=1", "bad_url", "empty name" },
    { "mongodb://h/?appName=%", "bad_url", "bad percent-encoding in option" },
    { "mongodb://h/?connectTimeoutMS=abc", "bad_url",
      "option connectTimeoutMS: non-negative integer expected, got 'abc'" },
    { "mongodb://h/?socketTimeoutMS=-5", "bad_url", "socketTimeoutMS: non-negative integer" },
    { "mongodb://h/?serverSelectionTimeoutMS=1.5", "bad_url", "serverSelectionTimeoutMS" },
    { "mongodb://h/?maxPoolSize=", "bad_url", "maxPoolSize: non-negative integer" },
    { "mongodb://h/?maxPoolSize=2147483648", "bad_url", "maxPoolSize: non-negative integer" },
    { "mongodb://h/?maxPoolSize=2&minPoolSize=3", "bad_url", "minPoolSize 3 is above maxPoolSize 2" },
    { "mongodb://h/?retryWrites=1", "bad_url", "option retryWrites: true or false expected, got '1'" },
    { "mongodb://h/?journal=yes", "bad_url", "journal: true or false expected" },
    { "mongodb://h/?directConnection=", "bad_url", "directConnection: true or false" },
    { "mongodb://h/?w=-1", "bad_url", "option w: non-negative integer or name expected" },
    { "mongodb://h/?w=", "bad_url", "option w is empty" },
    { "mongodb://h/?appName=", "bad_url", "option appName is empty" },
    { "mongodb://h/?appName=" .. ("x"):rep(129), "bad_url", "longer than 128 bytes" },
    { "mongodb://h/?replicaSet=", "bad_url", "option replicaSet is empty" },
    { "mongodb://h/?authSource=", "bad_url", "option authSource is empty" },
    { "mongodb://u@h/?authMechanism=PLAIN", "unsupported", "authMechanism PLAIN is unsupported" },
    { "mongodb://u@h/?authMechanism=MONGODB-X509", "unsupported", "MONGODB-X509 is unsupported" },
    { "mongodb://u@h/?authMechanism=GSSAPI", "unsupported", "GSSAPI is unsupported" },
    { "mongodb://u@h/?authMechanism=SCRAM-SHA-512", "unsupported", "SCRAM-SHA-512 is unsupported" },
    { "mongodb://h/?authMechanism=SCRAM-SHA-1", "bad_url", "needs a user name" },
    { "mongodb://h/?tls=true", "unsupported", "tls not supported" },
    { "mongodb://h/?ssl=true", "unsupported", "tls not supported" },
    { "mongodb://h/?tls=true&ssl=false", "bad_url", "tls and ssl disagree" },
    { "mongodb://h/?tls=maybe", "bad_url", "tls: true or false expected" },
    { "mongodb://h1,h2/?directConnection=true", "bad_url", "directConnection=true with more than one host" },
  }

  for _, case in ipairs(bad) do
    local s, want_code, want_msg = case[1], case[2], case[3]
    it(("refuses %q"):format(#s > 70 and s:sub(1, 70) .. "..." or s), function()
      local o, err, code = parse(s)
      assert.is_nil(o)
      assert.equal(want_code, code)
      assert.is_truthy(err:find(want_msg, 1, true), err)
    end)
  end

  it("never echoes the password in an error", function()
    for _, s in ipairs({ "mongodb://u:s3cr3t@/db", "mongodb://u:s3cr3t@h:0/", "mongodb://u:s3cr3t@h,,x/",
                         "mongodb://u:s3cr3t@h/?w=-1", "mongodb://u:s3cr3t@[zz]/" }) do
      local o, err = parse(s)
      assert.is_nil(o)
      assert.is_nil(err:find("s3cr3t", 1, true), err)
    end
  end)
end)
