-- bench/idle_module.lua - a module the HTTP benchmark server loads and
-- never calls while it serves: bench/tools.sh sets the debugger's
-- breakpoint here, "in an unrelated file".
local idle = {}

function idle.report(counts)
  local total = 0
  for _, n in pairs(counts) do total = total + n end
  return total
end

return idle
