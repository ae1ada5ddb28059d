#!/bin/sh
# bench/http.sh - HTTP hello world, keep-alive: wrk against an evlua server
# (bench/http.lua, one process), nginx + its Lua module (one worker,
# content_by_lua_block) and plain nginx (return 200), interleaved, best of
# BENCH_ROUNDS rounds. Run by bench/run.sh; runs alone too.
#   BENCH_ROUNDS          rounds (3)
#   BENCH_HTTP_SECONDS    length of one wrk run (5)
#   BENCH_HTTP_CONNS      keep-alive connections (50)
#   BENCH_EVLUA           the evlua binary to measure (./evlua)
#   BENCH_HTTP_HEADERS    "browser": every request also carries 8 headers
#                         a browser sends (wrk's default is Host only)
set -eu
cd "$(dirname "$0")/.."
mkdir -p build/bench
ROUNDS=${BENCH_ROUNDS:-3}
SECONDS_RUN=${BENCH_HTTP_SECONDS:-5}
CONNS=${BENCH_HTTP_CONNS:-50}
EVLUA=${BENCH_EVLUA:-./evlua}
NGX_MODULES=/usr/lib/nginx/modules

BENCH_TMP_NAME=bench-http
. bench/lib.sh   # $TMP, started, fail; servers end with the script

# nginx_conf NAME PORT LOCATION_BODY [MODULES]: a config in $TMP/NAME
nginx_conf() {
  mkdir -p "$TMP/$1"
  {
    echo "daemon off; master_process off; worker_processes 1;"
    echo "pid $TMP/$1/nginx.pid; error_log $TMP/$1/error.log;"
    [ -n "${4:-}" ] && echo "$4"
    echo "events { worker_connections 4096; }"
    echo "http { access_log off;"
    for t in client_body proxy fastcgi uwsgi scgi; do
      echo "  ${t}_temp_path $TMP/$1;"
    done
    echo "  server { listen 127.0.0.1:$2; location / { $3 } } }"
  } >"$TMP/$1/nginx.conf"
}

# start NAME COMMAND...: run a server in the background; sets PID
start() {
  name=$1
  shift
  timeout 900 "$@" >"$TMP/$name.out" 2>&1 &
  PID=$!
  started "$PID"
}

# The browser headers go in through a wrk script.
WRK_SCRIPT=
if [ "${BENCH_HTTP_HEADERS:-}" = browser ]; then
  WRK_SCRIPT="-s $TMP/headers.lua"
  cat >"$TMP/headers.lua" <<'EOF'
wrk.headers["User-Agent"] = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"
wrk.headers["Accept"] = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
wrk.headers["Accept-Language"] = "en-US,en;q=0.5"
wrk.headers["Accept-Encoding"] = "gzip, deflate, br"
wrk.headers["Cookie"] = "session=abcdef0123456789; theme=dark"
wrk.headers["Referer"] = "http://127.0.0.1/index.html"
wrk.headers["Cache-Control"] = "max-age=0"
wrk.headers["Upgrade-Insecure-Requests"] = "1"
EOF
fi

# cpu_ticks PID: user + system clock ticks the process has used
cpu_ticks() {
  awk '{ print $14 + $15 }' "/proc/$1/stat"
}

# wrk_round NAME PORT PID: one wrk run, "NAME req/s p50_us p99_us cpu_us"
# appended to build/bench/http.txt; cpu_us: the server's CPU time (user +
# system) per request, which still compares servers when wrk, not the
# server, is what limits the rate.
wrk_round() {
  ticks=$(cpu_ticks "$3")
  # shellcheck disable=SC2086 # WRK_SCRIPT is empty or two words
  wrk -t1 -c"$CONNS" -d"${SECONDS_RUN}s" --latency $WRK_SCRIPT "http://127.0.0.1:$2/" \
    >"$TMP/wrk.out" 2>&1 || fail "wrk failed: $(cat "$TMP/wrk.out")"
  ticks=$(($(cpu_ticks "$3") - ticks))
  awk -v n="$1" -v ticks="$ticks" -v hz="$(getconf CLK_TCK)" '
    function us(v) {
      if (v ~ /us$/) return v + 0
      if (v ~ /ms$/) return v * 1000
      if (v ~ /s$/) return v * 1000000
      return v + 0
    }
    /Non-2xx/ { bad = 1 }
    $1 == "50%" { p50 = us($2) }
    $1 == "99%" { p99 = us($2) }
    $2 == "requests" && $3 == "in" { reqs = $1 }
    $1 == "Requests/sec:" { rps = $2 }
    END {
      if (bad) rps = 0
      cpu = reqs > 0 ? ticks / hz * 1000000 / reqs : 0
      printf "%s %.0f %.0f %.0f %.2f\n", n, rps, p50, p99, cpu
    }
  ' "$TMP/wrk.out" >>build/bench/http.txt
}

# child_of PID: the process timeout(1) started (the server itself)
child_of() {
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    pgrep -P "$1" && return
    sleep 0.1
  done
  fail "no server process under $1"
}

command -v wrk >/dev/null || fail "wrk is missing (scripts/install-deps.sh)"
[ -f "$NGX_MODULES/ngx_http_lua_module.so" ] ||
  fail "nginx's Lua module is missing (libnginx-mod-http-lua)"

# The evlua server prints its port; the nginx ones get a free port each.
rm -f "$TMP/evlua.fifo"
mkfifo "$TMP/evlua.fifo"
timeout 900 "$EVLUA" bench/http.lua server 0 >"$TMP/evlua.fifo" &
started "$!"
EVLUA_TIMEOUT_PID=$!
exec 4<"$TMP/evlua.fifo"
read -r word EVLUA_PORT <&4 || fail "evlua server exited before listening"
[ "$word" = port ] || fail "evlua server printed '$word $EVLUA_PORT'"
EVLUA_PID=$(child_of "$EVLUA_TIMEOUT_PID")

LUA_PORT=$("$EVLUA" bench/http.lua free-port)
nginx_conf nginx-lua "$LUA_PORT" 'default_type text/plain; content_by_lua_block { ngx.say("hello") }' \
  "load_module $NGX_MODULES/ndk_http_module.so; load_module $NGX_MODULES/ngx_http_lua_module.so;"
start nginx-lua nginx -p "$TMP/nginx-lua" -c "$TMP/nginx-lua/nginx.conf"
LUA_PID=$(child_of "$PID")
"$EVLUA" bench/http.lua await "$LUA_PORT" ||
  fail "nginx + lua did not start: $(cat "$TMP/nginx-lua.out" "$TMP/nginx-lua/error.log" 2>/dev/null)"

PLAIN_PORT=$("$EVLUA" bench/http.lua free-port)
nginx_conf nginx-plain "$PLAIN_PORT" 'default_type text/plain; return 200 "hello\n";'
start nginx-plain nginx -p "$TMP/nginx-plain" -c "$TMP/nginx-plain/nginx.conf"
PLAIN_PID=$(child_of "$PID")
"$EVLUA" bench/http.lua await "$PLAIN_PORT" ||
  fail "nginx did not start: $(cat "$TMP/nginx-plain.out" "$TMP/nginx-plain/error.log" 2>/dev/null)"

: >build/bench/http.txt
i=0
while [ "$i" -lt "$ROUNDS" ]; do   # interleaved: all see the same machine
  wrk_round evlua "$EVLUA_PORT" "$EVLUA_PID"
  wrk_round nginx-lua "$LUA_PORT" "$LUA_PID"
  wrk_round nginx "$PLAIN_PORT" "$PLAIN_PID"
  i=$((i + 1))
done

echo
echo "HTTP hello world (wrk -t1 -c$CONNS, keep-alive, ${SECONDS_RUN} s per run, best of $ROUNDS rounds;"
[ -n "$WRK_SCRIPT" ] && echo "every request with 8 more headers a browser sends;"
echo "latencies in microseconds from that round; ratio: evlua req/s / server req/s;"
echo "cpu: the server's CPU microseconds per request, least of the rounds; cpu ratio:"
echo "server cpu / evlua cpu, above 1 when evlua needs less CPU per request)"
printf '%-34s %10s %8s %8s %7s %7s %7s\n' server "req/s" p50 p99 ratio cpu "cpu-r"
awk '
  $2 > best[$1] { best[$1] = $2; p50[$1] = $3; p99[$1] = $4 }
  !($1 in cpu) || $5 < cpu[$1] { cpu[$1] = $5 }
  END {
    split("evlua nginx-lua nginx", order, " ")
    label["evlua"] = "evlua (evlua.http, one process)"
    label["nginx-lua"] = "nginx + content_by_lua, 1 worker"
    label["nginx"] = "nginx return 200, 1 worker"
    for (i = 1; i <= 3; i++) {
      n = order[i]
      printf "%-34s %10d %8d %8d %7.3f %7.2f %7.3f\n", label[n], best[n], p50[n],
        p99[n], (best[n] > 0 ? best["evlua"] / best[n] : 0), cpu[n],
        (cpu["evlua"] > 0 ? cpu[n] / cpu["evlua"] : 0)
    }
  }' build/bench/http.txt
