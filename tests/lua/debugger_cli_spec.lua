-- tests/lua/debugger_cli_spec.lua - the debugger at the terminal: a real
-- `evlua --debug tests/scripts/debug_basic.lua` under tmux, typed into
-- one command at a time; each command waits for its own answer on the
-- screen (the echoed command line, then what only a working command
-- prints).
local helper = require "helper"

local SCRIPT = "tests/scripts/debug_basic.lua"
local PROMPT = "(evdb) "

-- The debuggee under tmux, started from the checkout (the script's path
-- stays short on the 100-column screen).
local function debug_session(script)
  local cwd = os.getenv("PWD")
  local term = helper.terminal(("cd %s && %s --debug %s"):format(cwd, helper.evlua, script))
  term:shows("(evdb)")   -- (the screen has no trailing blanks)
  return term
end

-- text as the screen shows it: a source line's tab (after its number) is
-- spaces to column 8 there
local function as_shown(text)
  return (text:gsub("(%d+)\t", function(n) return n .. (" "):rep(8 - #n) end))
end

-- Type line, then wait for the screen to show it echoed after the prompt
-- with expect right below it; returns the screen.
local function run(term, line, expect)
  term:keys("-l " .. helper.quote(line))
  term:keys("Enter")
  return term:shows(PROMPT .. line .. "\n" .. as_shown(expect))
end

describe("evlua --debug at the terminal", function()
  local term
  after_each(function()
    if term then term:close() end
    term = nil
    helper.cleanup()
  end)

  it("breaks, lists, walks frames, prints, sets, steps, watches, displays, quits", function()
    term = debug_session(SCRIPT)
    assert.matches("Stopped at entry, main chunk stopped at tests/scripts/debug_basic.lua:%d+",
                   term:shows("Stopped at entry"))
    -- list: by suffix, the lines around line 11, with their numbers
    run(term, "list debug_basic.lua:11", "  6      -- (a line without code")
    term:shows("  11   local function sum_squares(n)")
    -- break on a line without code: moved to the next line with code
    run(term, "b debug_basic.lua:6",
        "Breakpoint 1 at tests/scripts/debug_basic.lua:7 (moved from line 6)")
    run(term, "c", "Breakpoint 1, main chunk stopped at tests/scripts/debug_basic.lua:7 in square\n"
                   .. "7\t  local y = x * x")
    -- bt: every frame with file:line and function, C frames marked
    local screen = run(term, "bt", "*#0  tests/scripts/debug_basic.lua:7 in square\n"
                                   .. " #1  tests/scripts/debug_basic.lua:14 in sum_squares\n"
                                   .. " #2  tests/scripts/debug_basic.lua:19 in main chunk")
    assert.matches("#%d +%[C%] in xpcall", screen)
    -- frame 1: the caller's locals
    run(term, "frame 1", "*#1  tests/scripts/debug_basic.lua:14 in sum_squares\n"
                         .. "14\t    total = total + square(i)")
    run(term, "p i", "1")
    run(term, "p total", "0")
    run(term, "p { n = n, twice = n * 2 }", "{")
    term:shows("twice = 10")
    -- back to square: set var changes what the code computes next
    run(term, "down", "*#0  tests/scripts/debug_basic.lua:7 in square")
    run(term, "p x", "1")
    run(term, "set var x = 7", "x = 7")
    run(term, "next", "main chunk stopped at tests/scripts/debug_basic.lua:8 in square\n"
                      .. "8\t  return y")
    run(term, "p y", "49")
    run(term, "info locals", "y = 49")
    run(term, "info args", "x = 7")
    -- finish: back in the caller, the returned value added
    run(term, "finish", "main chunk stopped at tests/scripts/debug_basic.lua:13 in sum_squares")
    run(term, "p total", "49")
    run(term, "display total", "1: total = 49")
    run(term, "disable 1", "Disabled breakpoint 1")
    -- step: to the next line, then into the call (the display shows in
    -- sum_squares only, where total is a local)
    run(term, "step", "main chunk stopped at tests/scripts/debug_basic.lua:14 in sum_squares\n"
                      .. "14\t    total = total + square(i)\n1: total = 49")
    screen = run(term, "step", "main chunk stopped at tests/scripts/debug_basic.lua:7 in square\n"
                               .. "7\t  local y = x * x\n(evdb)")
    assert.not_matches("1: total = nil", screen)
    run(term, "finish", "main chunk stopped at tests/scripts/debug_basic.lua:13 in sum_squares\n"
                        .. "13\t  for i = 1, n do\n1: total = 53")
    -- watch: continue stops where total changes (1 + 4 + 9 with x = 7)
    run(term, "watch total", "Watchpoint 1: total = 53")
    -- (the 100-column screen wraps that line after "in sum_")
    run(term, "c", "Watchpoint: watch 1: total: 53 -> 62, main chunk stopped at "
                   .. "tests/scripts/debug_basic.lua:13 in sum_")
    term:shows(as_shown("13\t  for i = 1, n do\n1: total = 62"))
    run(term, "unwatch 1", "Deleted watchpoint 1")
    run(term, "next", "main chunk stopped at tests/scripts/debug_basic.lua:14 in sum_squares")
    -- until: the rest of the loop runs, to the line after it
    run(term, "until", "main chunk stopped at tests/scripts/debug_basic.lua:16 in sum_squares\n"
                       .. "16\t  return total\n1: total = 103")
    -- bad input: the session goes on
    run(term, "frobnicate", "error: unknown command 'frobnicate' (try help)")
    run(term, "p nosuch.field", "error: (evaluate):1: attempt to index a nil value "
                                .. "(global 'nosuch')")
    run(term, "p total", "103")
    -- quit ends the process there: the script never prints its result
    term:keys("-l quit")
    term:keys("Enter")
    assert.equal("rc=0\n", term:exit_status())
    assert.not_matches("result", term:shows(PROMPT .. "quit"))
  end)

  it("continues to the end of the script once the breakpoints are gone", function()
    term = debug_session(SCRIPT)
    run(term, "tbreak debug_basic.lua:16", "Temporary breakpoint 1 at "
                                           .. "tests/scripts/debug_basic.lua:16")
    run(term, "c", "Breakpoint 1, main chunk stopped at tests/scripts/debug_basic.lua:16")
    run(term, "info breakpoints", "No breakpoints.")
    run(term, "c", "result 55")
    assert.equal("rc=0\n", term:exit_status())
  end)

  it("debugger.debugger and debugger.breakpoint stop at the prompt (commands from stdin)", function()
    -- the task debugger.debugger starts is coroutine #2 (the main chunk #1)
    local out, err, rc = helper.run({ "tests/scripts/debug_api.lua" }, table.concat({
      "info upvalues", "info args", "up", "down", "help", "list work",
      "b debug_api.lua:10 if doubled == 42", "info breakpoints", "disable 2", "enable 2",
      "coroutines", "coroutine 1", "coroutine 99", "coroutine 2",
      "c", "p doubled", "delete 2", "c",
      "p calls", "c",
    }, "\n") .. "\n")
    assert.equal("", err)
    assert.equal(0, rc)
    -- debugger.debugger: the breakpoint, then the stop in the new task
    assert.matches("^Breakpoint 1 at tests/scripts/debug_api.lua:8\n", out)
    assert.matches("Breakpoint 1, coroutine #2 %([^\n]*%) stopped at "
                   .. "tests/scripts/debug_api.lua:8 in ", out)
    assert.matches("%(evdb%) calls = 0\n", out)                    -- info upvalues
    assert.matches("%(evdb%) n = 21\n", out)                       -- info args
    assert.matches("%(evdb%) %*#1  %[C%] in xpcall\n", out)        -- up
    assert.matches("%(evdb%) %*#0  tests/scripts/debug_api.lua:8 in ", out)   -- down
    assert.matches("\nbreak file:line %[if cond%] +set a breakpoint", out)     -- help
    assert.matches("\nquit +leave the debugger", out)
    -- list work: found in its caller's frame, in the other coroutine
    assert.matches("  7    local function work%(n%)\n=>8      calls = calls %+ 1\n", out)
    assert.matches("Breakpoint 2 at tests/scripts/debug_api.lua:10\n", out)
    assert.matches("2    y    0     tests/scripts/debug_api.lua:10 if doubled == 42\n", out)
    assert.matches("Disabled breakpoint 2\n%(evdb%) Enabled breakpoint 2\n", out)
    assert.matches("\n%*2 +coroutine #2 [^\n]*%[stopped at tests/scripts/debug_api.lua:8 "
                   .. "%(breakpoint%)%]\n", out)
    assert.matches("%[coroutine 1: main chunk%] %(not stopped", out)
    assert.matches("error: no coroutine 99\n", out)
    assert.matches("%[coroutine 2: coroutine #2 [^\n]*%] stopped at "
                   .. "tests/scripts/debug_api.lua:8\n", out)
    -- the condition held: the stop at line 10, where doubled is 42
    assert.matches("Breakpoint 2, coroutine #2 [^\n]* stopped at "
                   .. "tests/scripts/debug_api.lua:10 in [^\n]*\n10\t  return doubled\n"
                   .. "%(evdb%) 42\n%(evdb%) Deleted breakpoint 2\n", out)
    -- debugger.breakpoint(): the main chunk stops on the next line
    assert.matches("joined\ttrue\t42\nmain chunk stopped at tests/scripts/debug_api.lua:16 "
                   .. "in main chunk\n16\tlocal after = calls %* 100\n%(evdb%) 1\n", out)
    assert.matches("%(evdb%) after 100\n$", out)
  end)

  it("takes the end of input as quit", function()
    term = debug_session(SCRIPT)
    term:keys("C-d")
    assert.equal("rc=0\n", term:exit_status())
  end)
end)
