-- tests/busted.lua - run busted inside the evlua runtime, so test bodies
-- run in a coroutine and may fork, sleep and wait.
--   evlua tests/busted.lua [busted options] tests/lua
package.path = "tests/lua/?.lua;" .. package.path
-- Whole TAP lines: the log lines tests print on stderr go to the same file
-- (tests/run.sh) and must never land inside an "ok N" line.
io.stdout:setvbuf("line")
require "busted.runner" ({ standalone = false })
-- busted returns here only when everything passed; leftover timers or
-- sockets of a test must not keep the process alive.
os.exit(0, true)
