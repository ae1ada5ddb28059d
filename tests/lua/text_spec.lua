-- tests/lua/text_spec.lua - evlua.text: the trimming and splitting the
-- line protocols use (console, debugger commands, DAP headers), and that
-- they stay linear on the inputs that made patterns quadratic.
local text = require "evlua.text"

describe("evlua.text", function()
  it("trims white space at both ends only", function()
    assert.equal("a b", text.trim("  \t a b \r\n"))
    assert.equal("x", text.trim("x"))
    assert.equal("", text.trim(""))
    assert.equal("", text.trim(" \t\r\n "))
  end)

  it("splits off the first word and trims the rest", function()
    assert.same({ "help", "" }, { text.word("help") })
    assert.same({ "eval", "1 +  2" }, { text.word("  eval   1 +  2  ") })
    assert.same({ "", "" }, { text.word("   ") })
    assert.same({ "", "" }, { text.word("") })
  end)

  it("takes time linear in the input on long runs of inner spaces", function()
    -- "^%s*(.-)%s*$" retried "%s*$" from every position of such a run: a
    -- megabyte then took hours; a linear scan takes milliseconds
    local spaces = (" "):rep(1000000)
    assert.equal("a" .. spaces .. "b", text.trim(" a" .. spaces .. "b "))
    assert.same({ "auth", "x" .. spaces .. "y" },
                { text.word("auth x" .. spaces .. "y" .. spaces) })
    assert.equal("", text.trim(spaces))
  end)
end)
