-- tests/scripts/debug_basic.lua - the debuggee of the terminal session in
-- tests/lua/debugger_cli_spec.lua, which relies on these line numbers:
-- square's body is lines 7-8, the loop of sum_squares lines 13-14.

local function square(x)
  -- (a line without code: a breakpoint here moves to line 7)
  local y = x * x
  return y
end

local function sum_squares(n)
  local total = 0
  for i = 1, n do
    total = total + square(i)
  end
  return total
end

local result = sum_squares(5)
print("result " .. result)
