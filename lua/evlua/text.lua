-- evlua/text.lua - splitting and trimming the lines of line protocols
-- (the console, the debugger's commands, DAP's header lines) in linear
-- time. A pattern like "^%s*(.-)%s*$" is quadratic: after a long run of
-- inner white space the lazy capture retries "%s*$" from every position,
-- so one 64 KiB line from a client could hold the process for seconds.
local text = {}

-- s without its leading and trailing white space.
function text.trim(s)
  local first = s:find("%S")
  if not first then return "" end
  return s:match(".*%S", first)   -- greedy from one start: linear
end

-- The first word of s, and the rest trimmed ("" for either when absent).
function text.word(s)
  local word, rest = s:match("^%s*(%S*)(.*)$")
  return word, text.trim(rest)
end

return text
