-- bench/udp.lua - the evlua side of the UDP benchmark (bench/run.sh):
--   evlua bench/udp.lua server PORT   prints "port N", echoes every datagram
-- (the client is bench/c/udp_echo.c's, for both servers).
local udp = require "evlua.udp"

local mode, port = arg[1], tonumber(arg[2])
if mode ~= "server" or not port then
  io.stderr:write("usage: evlua bench/udp.lua server PORT\n")
  os.exit(2)
end

local sock = assert(udp.bind("127.0.0.1", port, {
  max_send_queue = 4096,
  on_datagram = function(s, data, ip, from_port)
    s:sendto(data, ip, from_port)
  end,
}))
io.stdout:write("port ", sock:port(), "\n")
io.stdout:flush()
