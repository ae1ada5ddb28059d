-- examples/http_server.lua - a small HTTP service on evlua.http.
--   ./evlua examples/http_server.lua [port]     (default 8080; Ctrl-C ends)
--   curl 'localhost:8080/hello?name=you'
--   curl -d 'some text' localhost:8080/echo
--   curl localhost:8080/slow        (waits without holding up the others)
--   curl localhost:8080/count       (a streamed, chunked reply)
local event = require "event"
local http = require "evlua.http"

local port = math.tointeger(tonumber(arg and arg[1])) or 8080
local started = event.now()
local served = 0

local routes = {}

function routes.hello(request, u)
  request:reply_header("Content-Type", "text/plain")
  request:reply(200, nil, "hello, " .. (u.query.name or "world") .. "\n")
end

function routes.echo(request)
  request:reply_header("Content-Type", request:header("content-type") or "text/plain")
  request:reply(200, nil, request.body)
end

function routes.slow(request)
  event.sleep(1)
  request:reply(200, nil, "that took a second\n")
end

function routes.count(request)
  for i = 1, 5 do
    request:write(i .. "\n")
    event.sleep(0.2)
  end
  request:finish()
end

function routes.stats(request)
  request:reply(200, nil, ("served %d requests in %.0f s\n")
                :format(served, event.now() - started))
end

local server = assert(http.listen("127.0.0.1", port, function(_, request)
  served = served + 1
  local u = request:parsed_url()
  local route = routes[u.path:match("^/(%w+)$") or ""]
  if not route then return request:reply(404, nil, "try /hello, /echo, /slow, /count, /stats\n") end
  route(request, u)
end))
print(("listening on http://127.0.0.1:%d/"):format(server:port()))
