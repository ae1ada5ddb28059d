-- tests/busted.lua - run busted inside the evlua runtime, so test bodies
-- run in a coroutine and may fork, sleep and wait.
--   evlua tests/busted.lua [busted options] tests/lua
package.path = "tests/lua/?.lua;" .. package.path
require "busted.runner" ({ standalone = false })
-- busted returns here only when everything passed; leftover timers or
-- sockets of a test must not keep the process alive.
os.exit(0, true)
