-- tests/lua/leak_spec.lua - no memory is leaked after creating and
-- cancelling many timers and coroutines: valgrind checks the plain build,
-- LeakSanitizer the ASan build.
local helper = require "helper"

describe("leak check", function()
  after_each(helper.cleanup)

  it("frees every heap block after timers and coroutines churn", function()
    local script = "tests/scripts/churn.lua"
    if helper.asan then
      local out, err, rc = helper.sh("ASAN_OPTIONS=detect_leaks=1 "
        .. helper.quote(helper.evlua) .. " " .. script .. " 20000")
      assert.equal(0, rc, err)
      assert.equal("churned\t20000\n", out)
      assert.not_matches("LeakSanitizer", err, 1, true)
    else
      local out, err, rc = helper.sh("valgrind --leak-check=full "
        .. "--errors-for-leak-kinds=definite,indirect --error-exitcode=99 "
        .. helper.quote(helper.evlua) .. " " .. script .. " 5000")
      assert.equal(0, rc, err)
      assert.equal("churned\t5000\n", out)
      assert.matches("All heap blocks were freed", err, 1, true)
    end
  end)
end)
