-- evlua/errors.lua - the one shape of every error (CONTRIBUTING.md,
-- "Errors"; the C side is evlua_fail in src/lua/runtime.c).
--
--   return errors.fail("timeout")               --> nil, "timeout", "timeout"
--   return errors.fail("protocol", "bad reply") --> nil, "bad reply", "protocol"
--   errors.argerror(1, "connect", "string expected, got nil")
--   errors.need_coroutine("event.connect")
--
-- Runtime failures return nil, message, code: callers compare the code,
-- never the message. Programmer errors raise.

local error, format = error, string.format

local errors = {}

-- errors.fail(code [, message]) -> nil, message, code. Without a message
-- the code is the message too (the evlua words: "timeout", "closed"...).
function errors.fail(code, message)
  return nil, message or code, code
end

-- errors.argerror(n, fname, msg [, depth]) raises "bad argument #n to
-- 'fname' (msg)" against the caller of the function `depth` levels up
-- (1, the default: the function calling argerror).
function errors.argerror(n, fname, msg, depth)
  error(format("bad argument #%d to '%s' (%s)", n, fname, msg),
        (depth or 1) + 2)
end

-- errors.need_coroutine(fname [, depth]) raises "fname must run in a
-- coroutine" (one started by event.fork, or the main chunk) against the
-- caller of the function `depth` levels up, as argerror does.
function errors.need_coroutine(fname, depth)
  error(fname .. " must run in a coroutine", (depth or 1) + 2)
end

return errors
