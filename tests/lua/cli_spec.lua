-- tests/lua/cli_spec.lua - the evlua command: arguments, exit status,
-- tracebacks, script lookup, module paths, the loop's lifetime.
local helper = require "helper"

local run, run_script = helper.run, helper.run_script

describe("evlua script.lua", function()
  after_each(helper.cleanup)

  it("sets arg and ... as the stock lua does", function()
    local out, err, rc, path = run_script([[
      print(arg[-1] ~= nil, arg[0], arg[1], arg[2], #arg, select("#", ...), ...)
    ]], { "one", "two words" })
    assert.equal(0, rc, err)
    assert.equal(("true\t%s\tone\ttwo words\t2\t2\tone\ttwo words\n"):format(path), out)
  end)

  it("exits 0 after the main chunk and the loop's work are done", function()
    local out, err, rc = run_script([[
      local event = require "event"
      event.timeout(0.02, function() print("timeout fired") end)
      event.fork(function() event.sleep(0.01) print("fork woke") end)
      print("main returned")
    ]])
    assert.equal(0, rc, err)
    -- The two waits may end in either order on a loaded machine.
    assert.matches("^main returned\n", out)
    local lines = {}
    for line in out:gmatch("[^\n]+") do lines[#lines + 1] = line end
    table.sort(lines)
    assert.same({ "fork woke", "main returned", "timeout fired" }, lines)
  end)

  it("stops a loop with repeating timers on event.breakout()", function()
    local out, err, rc = run_script([[
      local event = require "event"
      local n = 0
      event.timer(0.001, function()
        n = n + 1
        if n == 3 then print("breakout") event.breakout() end
      end)
    ]])
    assert.equal(0, rc, err)
    assert.equal("breakout\n", out)
  end)

  it("runs the main chunk in a coroutine that can sleep", function()
    local out, err, rc = run_script([[
      local event = require "event"
      assert(event.sleep(0.01))
      print(coroutine.isyieldable(), event.running():name())
    ]])
    assert.equal(0, rc, err)
    assert.equal("true\tmain chunk\n", out)
  end)

  it("exits 1 with a traceback when the main chunk fails", function()
    local out, err, rc, path = run_script([[
      local function inner() error("main failed here") end
      inner()
      print("not reached")
    ]])
    assert.equal(1, rc)
    assert.equal("", out)
    assert.matches("^[^\n]*evlua: " .. path:gsub("%p", "%%%0") .. ":1: main failed here\n"
                   .. "stack traceback:\n", err)
    assert.matches("in local 'inner'", err, 1, true)
    assert.matches("in main chunk", err, 1, true)
    assert.not_matches("event.lua", err, 1, true)
  end)

  it("keeps serving after a forked coroutine fails, and names it", function()
    local out, err, rc, path = run_script([[
      local event = require "event"
      local ticks = 0
      event.fork(function() event.sleep(0.005) error("worker broke") end)
      event.timer(0.002, function(t)
        ticks = ticks + 1
        if ticks == 10 then t:cancel() print("ticks", ticks) end
      end)
    ]])
    assert.equal(0, rc, err)
    assert.equal("ticks\t10\n", out)
    local where = path:gsub("%p", "%%%0")
    assert.matches("ERROR coroutine #%d+ %(" .. where .. ":3%) failed: "
                   .. where .. ":3: worker broke\nstack traceback:", err)
  end)

  it("reports os.exit's status", function()
    local _, _, rc = run_script("os.exit(7)")
    assert.equal(7, rc)
    local _, _, rc2 = run_script("require('event').fork(function() os.exit(false) end)")
    assert.equal(1, rc2)
  end)

  it("reports a syntax error without running anything", function()
    local out, err, rc, path = run_script("print('x')\nlocal = 1\n")
    assert.equal(1, rc)
    assert.equal("", out)
    assert.matches(path:gsub("%p", "%%%0") .. ":2: .*near '='", err)
  end)

  it("reports a missing script", function()
    local _, err, rc = run({ "/nonexistent/script.lua" })
    assert.equal(1, rc)
    assert.matches("cannot open /nonexistent/script.lua", err, 1, true)
  end)
end)

describe("evlua options", function()
  after_each(helper.cleanup)

  it("-e runs code in a coroutine, before the script", function()
    local out, err, rc = run({ "-e", "x = 20", "-e",
      "require('event').sleep(0) print(x + 1)" })
    assert.equal(0, rc, err)
    assert.equal("21\n", out)
  end)

  it("-v prints the version", function()
    local out, _, rc = run({ "-v" })
    assert.equal(0, rc)
    assert.matches("^evlua %d+%.%d+%.%d+ %(Lua 5%.4%.%d+, libev %d+%.%d+%)\n$", out)
  end)

  it("-l loads a library into a global", function()
    local out, err, rc = run({ "-l", "event", "-e", "print(type(event.fork))" })
    assert.equal(0, rc, err)
    assert.equal("function\n", out)
  end)

  it("rejects an unknown option with the usage", function()
    local _, err, rc = run({ "-Z" })
    assert.equal(1, rc)
    assert.matches("unrecognized option '-Z'", err, 1, true)
    assert.matches("usage:", err, 1, true)
  end)

  it("fails an option it cannot read with the bad_option code", function()
    local out, err, rc = run({ "-e", [[
      local parse = require("evlua.main").parse
      for _, argv in ipairs({ { [0] = "evlua", "-Z" }, { [0] = "evlua", "-e" },
                              { [0] = "evlua", "--console" } }) do
        print(parse(argv))
      end
    ]] })
    assert.equal(0, rc, err)
    assert.equal("nil\tunrecognized option '-Z'\tbad_option\n"
                 .. "nil\t'-e' needs argument\tbad_option\n"
                 .. "nil\t'--console' needs argument\tbad_option\n", out)
  end)

  it("ends the prompt's line reader with nil, eof, eof", function()
    local out, err, rc = run({ "-e", [[
      local read = require("evlua.repl").line_reader(0)
      print(read())
      print(read())
    ]] }, "one line\n")
    assert.equal(0, rc, err)
    assert.equal("one line\nnil\teof\teof\n", out)
  end)

  it("reports a --console address it cannot use as one line, without a traceback", function()
    local out, err, rc = run({ "--console", "70000", "-e", "print(1)" })
    assert.same({ "", 1 }, { out, rc })
    assert.matches("^[^\n]*: %-%-console: bad address '70000'\n$", err)
  end)

  it("--help and -h print the usage on stdout and exit 0", function()
    for _, flag in ipairs({ "--help", "-h" }) do
      local out, err, rc = run({ flag })
      assert.same({ "", 0 }, { err, rc })
      assert.matches("^usage: %S+ %[options%] %[script %[args%]%]\n", out)
      assert.matches("-h, --help", out, 1, true)
    end
  end)

  it("makes event a global for -e code, as import is", function()
    local out, err, rc = run({ "-e", "print(event == require('event'), import == require('evlua.import'))" })
    assert.equal(0, rc, err)
    assert.equal("true\ttrue\n", out)
  end)

  it("reports a missing -l module as lua does, without evlua's internals", function()
    local out, err, rc = run({ "-l", "nosuch" })
    assert.same({ "", 1 }, { out, rc })
    assert.matches("^[^\n]*evlua: module 'nosuch' not found:\n\tno field package.preload%['nosuch'%]\n", err)
    assert.not_matches("main.lua", err, 1, true)
    assert.not_matches("stack traceback", err, 1, true)
  end)

  it("runs options in order, reporting the first that fails (as lua does)", function()
    local _, err, rc = run({ "-l", "nosuch", "-e", "x =" })
    assert.equal(1, rc)
    assert.matches("module 'nosuch' not found", err, 1, true)
    assert.not_matches("unexpected symbol", err, 1, true)
    _, err, rc = run({ "-e", "x =", "-l", "nosuch" })
    assert.equal(1, rc)
    assert.matches("^[^\n]*evlua: %(command line%):1: unexpected symbol near <eof>\n$", err)
    local out
    out, err, rc = run({ "-e", "print('first')", "-e", "x =" })
    assert.same({ "first\n", 1 }, { out, rc })
    assert.matches("(command line):1: unexpected symbol", err, 1, true)
  end)

  it("says in one line that it cannot find its library", function()
    local dir = helper.tmpdir()
    assert(os.execute("cp " .. helper.quote(helper.evlua) .. " " .. dir .. "/evlua"))
    local out, err, rc = helper.sh("env -u EVLUA_PATH " .. dir .. "/evlua -e 'print(1)'")
    assert.equal("", out)
    assert.not_equal(0, rc)
    assert.matches("^[^\n]*evlua: cannot find the evlua Lua library [^\n]*\n$", err)
  end)

  it("runs a script from stdin", function()
    local out, err, rc = run({ "-", "a" }, "print('from stdin', ...)")
    assert.equal(0, rc, err)
    assert.equal("from stdin\ta\n", out)
  end)

  it("runs stdin when it is not a terminal and nothing else is given", function()
    local out, err, rc = run({}, "print(1 + 1)")
    assert.equal(0, rc, err)
    assert.equal("2\n", out)
  end)
end)

describe("evlua NAME", function()
  after_each(helper.cleanup)

  it("finds NAME.lua in EVLUA_SCRIPT_PATH", function()
    local dir = helper.tmpdir()
    helper.write_file(dir .. "/greeter.lua", "print('hello from', arg[0], ...)")
    local out, err, rc = run({ "greeter", "x" }, nil,
                             { EVLUA_SCRIPT_PATH = "/nonexistent:" .. dir })
    assert.equal(0, rc, err)
    assert.equal("hello from\t" .. dir .. "/greeter.lua\tx\n", out)
  end)

  it("finds the bundled examples", function()
    local out, err, rc = helper.sh("cd / && " .. helper.quote(helper.evlua) .. " hello 3")
    assert.equal(0, rc, err)
    assert.matches("done", out)
  end)

  it("prefers a file in the current directory", function()
    local dir = helper.tmpdir()
    helper.write_file(dir .. "/hello.lua", "print('local hello')")
    local out, err, rc = helper.sh("cd " .. dir .. " && " .. helper.quote(helper.evlua) .. " hello")
    assert.equal(0, rc, err)
    assert.equal("local hello\n", out)
  end)
end)

describe("module search path", function()
  after_each(helper.cleanup)

  it("loads evlua modules and Debian's stock Lua modules", function()
    local out, err, rc = run({ "-e",
      "print(require('event') ~= nil, require('pl.utils') ~= nil, require('lfs') ~= nil)" })
    assert.equal(0, rc, err)
    assert.equal("true\ttrue\ttrue\n", out)
  end)

  it("EVLUA_PATH overrides it, ';;' standing for the default", function()
    local dir = helper.tmpdir()
    helper.write_file(dir .. "/mymod.lua", "return 'mine'")
    local out, err, rc = run({ "-e", "print((require('mymod')))" }, nil,
                             { EVLUA_PATH = dir .. "/?.lua;;" })
    assert.equal(0, rc, err)
    assert.equal("mine\n", out)
    -- Modules in the override shadow the stock ones.
    helper.write_file(dir .. "/dkjson.lua", "return 'shadowed'")
    local out2 = run({ "-e", "print((require('dkjson')))" }, nil,
                     { EVLUA_PATH = dir .. "/?.lua;;" })
    assert.equal("shadowed\n", out2)
    -- Without ";;" the override is the whole path: evlua's own library
    -- must then be in it, and its absence is reported clearly.
    local _, err3, rc3 = run({ "-e", "print(1)" }, nil,
                             { EVLUA_PATH = dir .. "/?.lua" })
    assert.equal(1, rc3)
    assert.matches("module 'evlua.main' not found", err3, 1, true)
  end)

  it("loads modules of a LuaRocks tree through LUA_PATH and LUA_CPATH", function()
    -- the layout `luarocks --lua-version 5.4 --tree DIR install` makes
    local tree = helper.tmpdir()
    assert(os.execute("mkdir -p " .. tree .. "/share/lua/5.4/rock " .. tree .. "/lib/lua/5.4"))
    helper.write_file(tree .. "/share/lua/5.4/rock/init.lua", "return 'from the tree'")
    local out, err, rc = run({ "-e", "print(require('rock'), package.cpath:match('^[^;]*'))" }, nil, {
      LUA_PATH = tree .. "/share/lua/5.4/?.lua;" .. tree .. "/share/lua/5.4/?/init.lua;;",
      LUA_CPATH = tree .. "/lib/lua/5.4/?.so;;",
    })
    assert.equal(0, rc, err)
    assert.equal("from the tree\t" .. tree .. "/lib/lua/5.4/?.so\n", out)
  end)

  it("works after make install into a prefix", function()
    if helper.asan then return end   -- installs ./evlua, the plain build
    local prefix = helper.tmpdir()
    local _, err, rc = helper.sh("make -s install PREFIX=" .. prefix)
    assert.equal(0, rc, err)
    local out, err2, rc2 = helper.sh("cd / && " .. prefix .. "/bin/evlua hello 1")
    assert.equal(0, rc2, err2)
    assert.matches("done", out)
    local out3 = helper.sh(prefix .. "/bin/evlua -e \"print(package.path:match('^[^;]*'))\"")
    assert.equal(prefix .. "/bin/../share/evlua/lua/?.lua\n", out3)
    local man = prefix .. "/share/man/man1/evlua.1"
    assert.equal(helper.slurp("man/evlua.1"), helper.slurp(man))
    -- evlua stack finds its gdb script in the installed tree
    local script = helper.sh("cd / && " .. prefix
      .. "/bin/evlua -e \"print(require('evlua.stack').script_path())\"")
    assert.equal(prefix .. "/bin/../share/evlua/lua/../tools/evlua-gdb.py\n", script)
    assert.equal(helper.slurp("tools/evlua-gdb.py"), helper.slurp(script:sub(1, -2)))
    _, err, rc = helper.sh("make -s uninstall PREFIX=" .. prefix)
    assert.equal(0, rc, err)
    assert.is_nil(io.open(man))
    assert.is_nil(io.open(prefix .. "/bin/evlua"))
  end)
end)

describe("the man page", function()
  -- man/evlua.1 as text: roff's \- is a plain dash, font changes go.
  local function man_text()
    return (helper.slurp("man/evlua.1"):gsub("\\%-", "-"):gsub("\\f[BIRP]", ""))
  end

  it("describes every option evlua --help prints", function()
    local help = run({ "--help" })
    local text = man_text()
    local flags = {}
    for line in help:gmatch("[^\n]+") do
      local column = line:match("^  (%-.-)  ") or line:match("^  (%-%-?)%s*$")
      for flag in (column or ""):gmatch("%-[%-%w]*") do flags[#flags + 1] = flag end
    end
    assert.truthy(#flags >= 9, help)
    for _, flag in ipairs(flags) do
      assert.truthy(text:find("\n%.[TI]?P?%s*[^\n]*" .. flag:gsub("%p", "%%%0") .. "%f[^%w-]", 1)
                    or text:find("\n.B " .. flag, 1, true), "man page lacks " .. flag)
    end
  end)

  it("names the environment variables, the console and luarocks", function()
    local text = man_text()
    for _, word in ipairs({ "EVLUA_PATH", "EVLUA_SCRIPT_PATH", "EVLUA_CONSOLE_PASSWORD",
                            "LUA_PATH", "LUA_CPATH", "evlua console", "luarocks",
                            "EXIT STATUS", "FILES", "EXAMPLES" }) do
      assert.truthy(text:find(word, 1, true), "man page lacks " .. word)
    end
  end)

  it("renders without warnings (groff, installed for the tests)", function()
    local out, err, rc = helper.sh("groff -man -ww -z man/evlua.1")
    assert.same({ "", "", 0 }, { out, err, rc })
  end)
end)

describe("interactive prompt", function()
  after_each(helper.cleanup)

  it("reads, evaluates and prints, with continuation lines and waits", function()
    local input = table.concat({
      "x = 20",
      "x + 1",
      "for i = 1, 2 do",
      "  print('line', i)",
      "end",
      "require('event').sleep(0.001) return 'slept'",
      "error('oops')",
      "y = 1 +",
      "",
    }, "\n")
    local out, err, rc = run({ "-i" }, input)
    assert.equal(0, rc, err)
    assert.matches("^evlua %S+ %(Lua", out)
    assert.matches("> 21\n", out, 1, true)
    assert.matches("> >> >> line\t1\nline\t2\n", out, 1, true)
    assert.matches("> slept\n", out, 1, true)
    assert.matches("stdin:1: oops", err, 1, true)
    assert.matches("<eof>", err, 1, true)
  end)
end)

describe("interactive prompt on a terminal", function()
  local term
  -- Ctrl-C signals the terminal's whole foreground group: the sh of
  -- helper.terminal (dash) would die of it before reporting evlua's exit
  -- status, so it catches SIGINT (its children get the default again).
  local function prompt_terminal()
    return helper.terminal("trap : INT; " .. helper.evlua)
  end
  after_each(function()
    if term then term:close() end
    helper.cleanup()
  end)

  it("starts with evlua alone, evaluates lines, exits on end of input", function()
    term = helper.terminal(helper.evlua)
    assert.matches(")\n>", term:shows(")\n>"), 1, true)  -- banner, then prompt
    term:keys(helper.quote("6 * 7") .. " Enter")
    assert.matches("\n42\n>", term:shows("\n42\n>"), 1, true)
    term:keys(helper.quote("require('event').sleep(0.01) print('after sleep')") .. " Enter")
    -- C-d typed before readline shows its prompt again would reach the
    -- terminal in cooked mode and be lost: wait for the prompt
    assert.matches("after sleep\n>", term:shows("after sleep\n>"), 1, true)
    term:keys("C-d")
    assert.equal("rc=0\n", term:exit_status())
  end)

  it("edits lines with readline: Up-arrow recalls the previous line", function()
    term = prompt_terminal()
    term:shows(")\n>")
    term:keys(helper.quote("1000 + 234") .. " Enter")
    term:shows("\n1234\n>")   -- keys typed before the prompt would echo
    term:keys("Up Enter")
    local twice = "> 1000 + 234\n1234\n> 1000 + 234\n1234\n>"
    assert.matches(twice, term:shows(twice), 1, true)
    -- Left-arrow moves into the line: 1 + 2 becomes 1 + 52
    term:keys(helper.quote("1 + 2") .. " Left " .. helper.quote("5") .. " End " .. helper.quote("0") .. " Enter")
    assert.matches("> 1 + 520\n521\n", term:shows("\n521\n>"), 1, true)
    term:keys("C-d")
    assert.equal("rc=0\n", term:exit_status())
  end)

  it("breaks a dead loop on Ctrl-C with interrupted! and keeps prompting", function()
    term = prompt_terminal()
    term:shows(")\n>")
    -- what prints "looping" is the line that then loops: once it shows,
    -- the loop is what runs
    term:keys(helper.quote("print('loop' .. 'ing') while true do end") .. " Enter")
    term:shows("\nlooping\n")
    term:keys("C-c")
    local screen = term:shows("interrupted!")
    assert.matches("stdin:1: interrupted!\nstack traceback:", screen, 1, true)
    term:keys(helper.quote("6 * 7") .. " Enter")
    assert.matches("\n42\n>", term:shows("\n42\n>"), 1, true)
    term:keys("C-d")
    assert.equal("rc=0\n", term:exit_status())
  end)

  it("clears the line on Ctrl-C at the prompt, and a pending continuation", function()
    term = prompt_terminal()
    term:shows(")\n>")
    term:keys(helper.quote("1 +"))
    term:shows("> 1 +")
    term:keys("C-c")
    term:shows("> 1 +\n>")
    term:keys(helper.quote("2 + 3") .. " Enter")   -- not "1 +2 + 3"
    assert.matches("\n> 2 + 3\n5\n", term:shows("\n5\n"), 1, true)
    term:keys(helper.quote("for i = 1, 2 do") .. " Enter")
    term:shows("\n>>")
    term:keys("C-c")
    term:shows(">>\n>")
    term:keys(helper.quote("'fresh'") .. " Enter")   -- a new chunk, not a continuation
    assert.matches("\n> 'fresh'\nfresh\n", term:shows("\nfresh\n>"), 1, true)
    term:keys("C-d")
    assert.equal("rc=0\n", term:exit_status())
  end)

  it("sees event as a global", function()
    term = prompt_terminal()
    term:shows(")\n>")
    term:keys(helper.quote("event == require('event')") .. " Enter")
    assert.matches("\ntrue\n>", term:shows("\ntrue\n>"), 1, true)
    term:keys("C-d")
    assert.equal("rc=0\n", term:exit_status())
  end)
end)
