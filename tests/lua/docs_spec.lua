-- tests/lua/docs_spec.lua - every ```lua block in README.md and docs/*.md
-- runs with evlua; when an ```output block follows, stdout must match it.
local helper = require "helper"

-- the MongoDB test server's npm packages
assert(os.execute("sh tests/peers/mongo_setup.sh"))

-- Return the list of { code =, output =, line = } examples in a file.
local function examples(path)
  local list = {}
  local text = helper.slurp(path)
  local line = 1
  local pos = 1
  while true do
    local s, e, info, body = text:find("```(%w*)\n(.-)\n```\n?", pos)
    if not s then break end
    line = line + select(2, text:sub(pos, s):gsub("\n", ""))
    if info == "lua" then
      list[#list + 1] = { code = body, line = line }
    elseif info == "output" and #list > 0 and list[#list].output == nil then
      list[#list].output = body .. "\n"
    end
    line = line + select(2, text:sub(s + 1, e):gsub("\n", ""))
    pos = e + 1
  end
  return list
end

local files = { "README.md" }
local p = io.popen("ls docs/*.md")
for f in p:lines() do files[#files + 1] = f end
p:close()

-- Examples of evlua.redis talk to a server on the default port 6379: each
-- such example gets a fresh redis-server on a free port, and 6379 in its
-- code becomes that port.
local function uses_redis(code)
  return code:find("evlua.redis", 1, true) ~= nil
end

-- Examples of evlua.mongo likewise get the MongoDB test server
-- (tests/peers/mongo) on a free port for 27017.
local function uses_mongo(code)
  return code:find("evlua.mongo", 1, true) ~= nil
end

for _, file in ipairs(files) do
  describe(file, function()
    after_each(helper.cleanup)
    for _, ex in ipairs(examples(file)) do
      -- Snippets that only show the shape of a call (a bare require) are
      -- still run, to catch typos in module names.
      it("example at line " .. ex.line .. " runs", function()
        local code = ex.code
        if uses_redis(code) then
          local server = helper.redis_server()
          code = code:gsub("6379", tostring(server.port))
        end
        if uses_mongo(code) then
          local server = helper.mongo_server()
          code = code:gsub("27017", tostring(server.port))
        end
        local out, err, rc = helper.run_script(code)
        assert.equal(0, rc, err)
        if ex.output then assert.equal(ex.output, out) end
      end)
    end
  end)
end
