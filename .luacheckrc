-- luacheck configuration (make lint, which CI runs): the Lua library,
-- tests, benchmarks and examples.
std = "lua54"
max_line_length = 100
self = false         -- methods may ignore self (default handlers)
ignore = { "581" }   -- `not (x >= y)` is deliberate: it is true for NaN
-- evlua makes these globals for scripts, -e chunks and the console.
read_globals = { "event", "import" }
files["tests"] = { std = "+busted", max_line_length = 120 }
