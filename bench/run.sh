#!/bin/sh
# bench/run.sh - run every benchmark beside its peer in the same run and
# print the figures with ratios (evlua / peer; above 1 means evlua wins).
#   BENCH_ROUNDS            rounds, best one kept (3)
#   BENCH_N                 loop benchmark size (1000000)
#   BENCH_ECHO_MIB          MiB streamed per throughput run (1024)
#   BENCH_PINGPONG_SECONDS  length of a ping-pong run (2)
#   BENCH_IDLE_CONNS        idle connections for the memory figure (10000)
#   BENCH_RPC_SECONDS       length of an rpc run (2)
#   BENCH_RPC_DEPTH         calls in flight in the pipelined rpc runs (64)
#   BENCH_EVLUA             the evlua binary to measure (./evlua)
#   BENCH_REDIS_SECONDS     length of each evlua redis run (2)
#   BENCH_MONGO_SECONDS     length of each mongo mode's timed run (2)
#   BENCH_PROCESS_N         runs per process benchmark round (2000)
#   BENCH_ONLY              sections to run, comma-separated
#                           (loop,echo,memory,rpc,redis,mongo,http,tools,process,udp,
#                           kcp: all)
#   BENCH_KCP_SECONDS, BENCH_KCP_BYTES   kcp ping-pong length (2), bulk size (10 MB)
#   BENCH_UDP_SECONDS       length of a udp echo run (2)
#   BENCH_HTTP_SECONDS, BENCH_HTTP_CONNS   see bench/http.sh (and bench/tools.sh)
set -eu
cd "$(dirname "$0")/.."
mkdir -p build/bench
N=${BENCH_N:-1000000}
ROUNDS=${BENCH_ROUNDS:-3}
ECHO_MIB=${BENCH_ECHO_MIB:-1024}
PP_SECONDS=${BENCH_PINGPONG_SECONDS:-2}
IDLE_CONNS=${BENCH_IDLE_CONNS:-10000}
RPC_SECONDS=${BENCH_RPC_SECONDS:-2}
RPC_DEPTH=${BENCH_RPC_DEPTH:-64}
EVLUA=${BENCH_EVLUA:-./evlua}
REDIS_SECONDS=${BENCH_REDIS_SECONDS:-2}
ONLY=${BENCH_ONLY:-loop,echo,memory,rpc,redis,mongo,http,tools,process,udp,kcp}
ECHO_C=build/bench/echo
RPC_C=build/bench/rpc

cc -O2 -o build/bench/loop_bench bench/c/loop_bench.c -lev
cc -O2 -o "$ECHO_C" bench/c/echo.c -lev
cc -O2 -o "$RPC_C" bench/c/rpc.c -lev
cc -O2 -o build/bench/udp_echo bench/c/udp_echo.c

# $TMP, started/forget (background processes ended at exit; each also
# runs under timeout(1), so nothing outlives a killed script for long),
# fail.
. bench/lib.sh

# want SECTION: whether BENCH_ONLY selects SECTION
want() {
  case ",$ONLY," in
  *",$1,"*) return 0 ;;
  esac
  return 1
}

# best NAME FILE: the highest figure for NAME over the rounds in FILE
best() { awk -v n="$1" '$1 == n && $2 > m { m = $2 } END { print m + 0 }' "$2"; }

# row LABEL EVLUA C: one table line with the ratio
row() {
  awk -v l="$1" -v e="$2" -v c="$3" \
    'BEGIN { printf "%-34s %14.0f %14.0f %8.3f\n", l, e, c, (c > 0 ? e / c : 0) }'
}

header() {
  printf '%-34s %14s %14s %8s\n' benchmark evlua "C libev" ratio
}

# == Loop ====================================================================

if want loop; then
  : >build/bench/loop_c.txt
  : >build/bench/loop_evlua.txt
  i=0
  while [ "$i" -lt "$ROUNDS" ]; do   # interleave the two so both see the same machine
    build/bench/loop_bench "$N" >>build/bench/loop_c.txt
    "$EVLUA" bench/loop.lua "$N" >>build/bench/loop_evlua.txt
    i=$((i + 1))
  done

  echo "Loop benchmarks (N=$N, best of $ROUNDS rounds, ops/s)"
  header
  for m in switches:coroutine-switches timers:timer-start+cancel-pairs expiries:timer-expiries; do
    key=${m%%:*}
    label=${m#*:}
    row "$label" "$(best "$key" build/bench/loop_evlua.txt)" \
      "$(best "$key" build/bench/loop_c.txt)"
  done
fi

# == Channels: echo ==========================================================

# start_server NAME COMMAND...: start a server in the background, its
# stdout on a FIFO open as fd 4; sets SERVER_PID and PORT from the
# "port N" line it prints once it listens, and SERVER_OS_PID from a
# "pid P" after it (the rpc servers; SERVER_PID is timeout's).
start_server() {
  fifo=$TMP/$1.out
  shift
  rm -f "$fifo"
  mkfifo "$fifo"
  timeout 600 "$@" >"$fifo" &
  SERVER_PID=$!
  started "$SERVER_PID"
  exec 4<"$fifo"
  read -r word PORT rest <&4 || fail "server '$*' exited before listening"
  [ "$word" = port ] || fail "server '$*' printed '$word $PORT'"
  SERVER_OS_PID=${rest#pid }
}

stop_server() {
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  forget "$SERVER_PID"
  exec 4<&-
}

# client OUT COMMAND...: run a client (at most 60 s), append its output.
# It runs in the background so that a signal reaches our traps at once.
client() {
  out=$1
  shift
  timeout 60 "$@" >>"$out" &
  pid=$!
  started "$pid"
  wait "$pid" || fail "client '$*' failed"
  forget "$pid"
}

# place PLACEMENT: srv_pin and cli_pin, the prefixes of the server's and
# the client's command. pinned: server on core 1, client on core 0 (the
# placement two services on one host have, and the figure of record);
# unpinned: wherever the kernel puts them (often both on one core, which
# slows a C pair more than evlua).
PLACEMENTS="pinned unpinned"
place() {
  srv_pin="" cli_pin=""
  if [ "$1" = pinned ]; then srv_pin="taskset -c 1" cli_pin="taskset -c 0"; fi
}

# run_pairs NAME ROUND: ROUNDS rounds of ROUND SERVER CLIENT PLACEMENT OUT
# for every server:client pair in PAIRS and every placement, interleaved;
# OUT is build/bench/NAME_SERVER_CLIENT_PLACEMENT.txt, emptied first.
run_pairs() {
  for placement in $PLACEMENTS; do
    for p in $PAIRS; do : >"build/bench/$1_${p%%:*}_${p#*:}_$placement.txt"; done
  done
  i=0
  while [ "$i" -lt "$ROUNDS" ]; do
    for placement in $PLACEMENTS; do
      for p in $PAIRS; do
        "$2" "${p%%:*}" "${p#*:}" "$placement" \
          "build/bench/$1_${p%%:*}_${p#*:}_$placement.txt"
      done
    done
    i=$((i + 1))
  done
}

# echo_round SERVER CLIENT PLACEMENT OUT: one throughput and one ping-pong
# run of client (evlua or c) against server (evlua or c), figures
# appended to OUT
echo_round() {
  place "$3"
  if [ "$1" = evlua ]; then
    start_server echo $srv_pin "$EVLUA" bench/echo.lua server 0
  else
    start_server echo $srv_pin "$ECHO_C" server 0
  fi
  if [ "$2" = evlua ]; then
    client "$4" $cli_pin "$EVLUA" bench/echo.lua throughput "$PORT" "$ECHO_MIB"
    client "$4" $cli_pin "$EVLUA" bench/echo.lua pingpong "$PORT" "$PP_SECONDS"
  else
    client "$4" $cli_pin "$ECHO_C" throughput "$PORT" "$ECHO_MIB"
    client "$4" $cli_pin "$ECHO_C" pingpong "$PORT" "$PP_SECONDS"
  fi
  stop_server
}

if want echo; then
  PAIRS="evlua:evlua c:c evlua:c c:evlua"   # server:client
  run_pairs echo echo_round

  echo
  echo "Channel benchmarks (127.0.0.1, server and client in separate processes,"
  echo "$ECHO_MIB MiB per throughput run, ${PP_SECONDS} s per ping-pong run, best of $ROUNDS rounds)"
  header
  for placement in $PLACEMENTS; do
    f=build/bench/echo
    for m in "throughput:echo-throughput, $placement (MiB/s)" \
             "pingpong:echo-pingpong, $placement (rt/s)"; do
      key=${m%%:*}
      c=$(best "$key" "${f}_c_c_$placement.txt")
      row "${m#*:}" "$(best "$key" "${f}_evlua_evlua_$placement.txt")" "$c"
      row "  evlua server, C client" "$(best "$key" "${f}_evlua_c_$placement.txt")" "$c"
      row "  C server, evlua client" "$(best "$key" "${f}_c_evlua_$placement.txt")" "$c"
    done
  done
fi

# == Channels: memory per idle connection ====================================

# Each side holds IDLE_CONNS descriptors; the hard limit bounds the count.
# (ulimit -n and -H are not POSIX, but dash and bash both have them.)
if want memory; then
  # shellcheck disable=SC3045
  {
    ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    fds=$(ulimit -n)
  }
  if [ "$fds" != unlimited ] && [ "$IDLE_CONNS" -gt $((fds - 64)) ]; then
    echo "bench: only $fds descriptors allowed, using $((fds - 64)) idle connections" >&2
    IDLE_CONNS=$((fds - 64))
  fi
fi

# idle_memory STYLE: an evlua server (bench/echo.lua memory) accepts
# IDLE_CONNS connections from the C client, which then stays idle; the
# server prints its growth per connection ("lua", "heap", "rss" lines),
# appended to build/bench/idle_STYLE.txt. Synchronisation: the client says
# "ready N" once every connection is up, run.sh then sends "measure" on the
# server's stdin, and the server also waits until it has accepted them all.
idle_memory() {
  rm -f "$TMP/ctl" "$TMP/server.out" "$TMP/client.out"
  mkfifo "$TMP/ctl" "$TMP/server.out" "$TMP/client.out"
  timeout 600 "$EVLUA" bench/echo.lua memory "$IDLE_CONNS" "$1" \
    <"$TMP/ctl" >"$TMP/server.out" &
  SERVER_PID=$!
  started "$SERVER_PID"
  exec 3>"$TMP/ctl" 4<"$TMP/server.out"
  read -r word PORT <&4 || fail "memory server exited before listening"
  timeout 600 "$ECHO_C" idle "$PORT" "$IDLE_CONNS" >"$TMP/client.out" 3>&- 4<&- &
  client_pid=$!
  started "$client_pid"
  exec 5<"$TMP/client.out"
  read -r word count <&5 || fail "idle client exited before connecting"
  [ "$word $count" = "ready $IDLE_CONNS" ] || fail "idle client said '$word $count'"
  echo measure >&3
  : >"build/bench/idle_$1.txt"
  for _ in lua heap rss; do
    read -r key value <&4 || fail "memory server exited before reporting"
    echo "$key $value" >>"build/bench/idle_$1.txt"
  done
  wait "$SERVER_PID" || fail "memory server failed"
  forget "$SERVER_PID"
  kill "$client_pid" 2>/dev/null || true
  wait "$client_pid" 2>/dev/null || true
  forget "$client_pid"
  exec 3>&- 4<&- 5<&-
}

if want memory; then
  idle_memory callback
  idle_memory coroutine

  echo
  echo "Memory per idle connection (evlua server, $IDLE_CONNS connections from a C client;"
  echo "bytes per connection; target: under 2048 bytes of user-space memory)"
  printf '%-22s %9s %9s %9s %9s  %s\n' "server style" "Lua heap" "C heap" \
    "Lua+C" RSS verdict
  for style in callback coroutine; do
    f=build/bench/idle_$style.txt
    awk -v s="$style" '{ v[$1] = $2 } END {
      verdict = (v["heap"] < 2048 && v["rss"] < 2048) ? "under 2 KiB" : "OVER 2 KiB"
      printf "%-22s %9d %9d %9d %9d  %s\n", s, v["lua"], v["heap"] - v["lua"],
        v["heap"], v["rss"], verdict }' "$f"
  done
fi

# == RPC =====================================================================

# rpc_run SERVER CLIENT MODE PLACEMENT OUT: an rpc server (evlua or c) and
# one client (evlua or c) in MODE (sequential or pipelined); the client's
# line "MODE calls/s cpu F server_cpu F" is appended to OUT.
rpc_run() {
  place "$4"
  if [ "$1" = evlua ]; then
    start_server rpc $srv_pin "$EVLUA" bench/rpc.lua server 0
  else
    start_server rpc $srv_pin "$RPC_C" server 0
  fi
  mode=$3
  if [ "$2" = evlua ]; then
    set -- "$5" $cli_pin "$EVLUA" bench/rpc.lua "$mode" "$PORT" "$RPC_SECONDS"
  else
    set -- "$5" $cli_pin "$RPC_C" "$mode" "$PORT" "$RPC_SECONDS"
  fi
  if [ "$mode" = pipelined ]; then
    client "$@" "$RPC_DEPTH" "$SERVER_OS_PID"
  else
    client "$@" "$SERVER_OS_PID"
  fi
  stop_server
}

# The baseline of the sequential calls: the C echo pair's 64-byte
# ping-pong, run again here so it shares each round with the rpc runs.
RPC_SEQ="evlua:evlua evlua:c c:evlua"
RPC_PIPE="evlua:evlua evlua:c c:evlua c:c"
if want rpc; then
  for pl in $PLACEMENTS; do
    : >"build/bench/rpc_echo_c_$pl.txt"
    for p in $RPC_SEQ; do : >"build/bench/rpc_seq_${p%%:*}_${p#*:}_$pl.txt"; done
    for p in $RPC_PIPE; do : >"build/bench/rpc_pipe_${p%%:*}_${p#*:}_$pl.txt"; done
  done
  i=0
  while [ "$i" -lt "$ROUNDS" ]; do
    for pl in $PLACEMENTS; do
      place "$pl"
      start_server echo $srv_pin "$ECHO_C" server 0
      client "build/bench/rpc_echo_c_$pl.txt" $cli_pin "$ECHO_C" pingpong "$PORT" "$RPC_SECONDS"
      stop_server
      for p in $RPC_SEQ; do
        rpc_run "${p%%:*}" "${p#*:}" sequential "$pl" \
          "build/bench/rpc_seq_${p%%:*}_${p#*:}_$pl.txt"
      done
      for p in $RPC_PIPE; do
        rpc_run "${p%%:*}" "${p#*:}" pipelined "$pl" \
          "build/bench/rpc_pipe_${p%%:*}_${p#*:}_$pl.txt"
      done
    done
    i=$((i + 1))
  done

  # rpc_row LABEL FILE PEER: the best run in FILE against the figure PEER,
  # with the server's and the client's CPU use in that run
  rpc_row() {
    awk -v l="$1" -v c="$3" '$2 > e { e = $2; cli = $4; srv = $6 } END {
      printf "%-34s %14.0f %14.0f %8.3f %8.2f %6.2f\n", l, e, c,
        (c > 0 ? e / c : 0), srv, cli }' "$2"
  }

  echo
  echo "RPC benchmarks (MessagePack-RPC, ch:call(\"echo\", 64-byte string) on one"
  echo "connection, 127.0.0.1, server and client in separate processes, ${RPC_SECONDS} s"
  echo "per run, best of $ROUNDS rounds; cpu: CPU time / wall time of the server and"
  echo "client processes in that run, 1.00 = one core busy)"
  printf '%-34s %14s %14s %8s %8s %6s\n' benchmark evlua "C libev" ratio \
    "cpu srv" cli
  for pl in $PLACEMENTS; do
    f=build/bench/rpc
    echo_c=$(best pingpong "${f}_echo_c_$pl.txt")
    rpc_row "rpc-sequential, $pl (calls/s)" "${f}_seq_evlua_evlua_$pl.txt" "$echo_c"
    rpc_row "  evlua server, C client" "${f}_seq_evlua_c_$pl.txt" "$echo_c"
    rpc_row "  C server, evlua client" "${f}_seq_c_evlua_$pl.txt" "$echo_c"
    rpc_c=$(best pipelined "${f}_pipe_c_c_$pl.txt")
    rpc_row "rpc-pipelined x$RPC_DEPTH, $pl" "${f}_pipe_evlua_evlua_$pl.txt" "$rpc_c"
    rpc_row "  evlua server, C client" "${f}_pipe_evlua_c_$pl.txt" "$rpc_c"
    rpc_row "  C server, evlua client" "${f}_pipe_c_evlua_$pl.txt" "$rpc_c"
    rpc_row "  evlua pair vs 300000" "${f}_pipe_evlua_evlua_$pl.txt" 300000
    rpc_row "  evlua server, C client vs 600000" "${f}_pipe_evlua_c_$pl.txt" 600000
  done
  echo "C libev: sequential against the 64-byte echo-pingpong of bench/c/echo.c"
  echo "(target, pinned: ratio >= 0.8), pipelined against the C rpc pair of"
  echo "bench/c/rpc.c; the \"vs\" lines against the targets of 300000 calls/s"
  echo "(evlua pair) and 600000 (evlua server, C client): ratio >= 1."
fi

# == Redis ===================================================================

# One redis-server (no persistence) on a free port serves both clients,
# run one after the other: redis-benchmark and bench/redis.lua, GET and
# SET with the same 3-byte value and fixed key, in three shapes (see
# bench/README.md). redis-benchmark takes a request count: about
# REDIS_SECONDS worth at the rates this machine gives.
if want redis; then
  REDIS_PORT=$("$EVLUA" -e 'local l = assert(require("event").listen("127.0.0.1", 0, function() end)) print(l:port()) l:close()')
  timeout 1800 redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" \
    --appendonly no --dir "$TMP" >"$TMP/redis.log" 2>&1 &
  REDIS_PID=$!
  started "$REDIS_PID"
  tries=0
  until [ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]; do
    tries=$((tries + 1))
    [ "$tries" -lt 100 ] || fail "redis-server did not start: $(cat "$TMP/redis.log")"
    sleep 0.05
  done

  # redis_peer MODE OUT ARGS...: redis-benchmark's SET and GET rates as
  # "MODE set N" / "MODE get N" lines appended to OUT
  redis_peer() {
    mode=$1 out=$2
    shift 2
    timeout 120 redis-benchmark -p "$REDIS_PORT" -t set,get --csv "$@" 2>/dev/null |
      awk -F'"' -v m="$mode" '$2 == "SET" || $2 == "GET" { print m, tolower($2), $4 }' >>"$out" ||
      fail "redis-benchmark $* failed"
  }

  RB=build/bench/redis_peer.txt
  EV=build/bench/redis_evlua.txt
  : >"$RB"
  : >"$EV"
  i=0
  while [ "$i" -lt "$ROUNDS" ]; do
    redis_peer single "$RB" -c 1 -n $((25000 * REDIS_SECONDS))
    client "$EV" "$EVLUA" bench/redis.lua single "$REDIS_PORT" "$REDIS_SECONDS"
    redis_peer concurrent "$RB" -c 50 -n $((50000 * REDIS_SECONDS))
    sed -n 's/^concurrent /clients /p' "$RB" | tail -n 2 >>"$RB"
    client "$EV" "$EVLUA" bench/redis.lua concurrent "$REDIS_PORT" "$REDIS_SECONDS" 50
    client "$EV" "$EVLUA" bench/redis.lua clients "$REDIS_PORT" "$REDIS_SECONDS" 50
    redis_peer pipelined "$RB" -c 1 -P 16 -n $((250000 * REDIS_SECONDS))
    client "$EV" "$EVLUA" bench/redis.lua pipelined "$REDIS_PORT" "$REDIS_SECONDS" 16
    i=$((i + 1))
  done
  kill "$REDIS_PID" 2>/dev/null || true
  wait "$REDIS_PID" 2>/dev/null || true
  forget "$REDIS_PID"

  # redis_best MODE CMD FILE: the best rate of MODE CMD over the rounds
  redis_best() {
    awk -v m="$1" -v c="$2" '$1 == m && $2 == c && $3 > b { b = $3 } END { print b + 0 }' "$3"
  }

  echo
  echo "Redis benchmarks (GET/SET ops/s, 3-byte value, one redis-server on 127.0.0.1,"
  echo "evlua.redis (bench/redis.lua) and redis-benchmark taking turns, best of $ROUNDS"
  echo "rounds; target: ratio >= 0.9)"
  printf '%-34s %14s %14s %8s\n' benchmark evlua redis-benchmark ratio
  for m in "single:1 connection, unpipelined" \
           "concurrent:50 coroutines (vs -c 50)" \
           "clients:  50 clients (vs -c 50)" \
           "pipelined:pipelines of 16 (vs -P 16)"; do
    key=${m%%:*}
    for cmd in set get; do
      row "${m#*:} $(echo "$cmd" | tr a-z A-Z)" "$(redis_best "$key" "$cmd" "$EV")" \
        "$(redis_best "$key" "$cmd" "$RB")"
    done
  done
  echo "50 coroutines share one evlua client (one connection, their commands"
  echo "pipelined); \"50 clients\" gives each coroutine a client of its own, as"
  echo "redis-benchmark -c 50 has 50 connections. -P 16 runs with -c 1."
fi

# == MongoDB =================================================================

# One test server (tests/peers/mongo/server.js, Node.js) per placement and
# round; evlua.mongo (bench/mongo.lua) and the official Node.js driver
# (bench/mongo_node.js) take turns against it, the first of the two
# alternating from round to round so that neither always meets a colder
# server. Each client runs the four modes (insert, insert_many of 100,
# find_one by _id with 1 and with 50 callers) for MONGO_SECONDS each and
# prints "MODE ops/s cpu F server_cpu F" per mode. Pinned: the server on
# core 1, the clients on core 0.
MONGO_SECONDS=${BENCH_MONGO_SECONDS:-2}
MONGO_SERVER=tests/peers/mongo/server.js

# mongo_round PLACEMENT ROUND: one server, both clients, their lines
# appended to build/bench/mongo_{evlua,node}_PLACEMENT.txt
mongo_round() {
  place "$1"
  # stdin of a background job is /dev/null: the server must not watch it
  start_server mongo $srv_pin node "$MONGO_SERVER" --port 0 --no-stdin-watch
  node_pid=$(pgrep -P "$SERVER_PID" | head -n 1)
  [ -n "$node_pid" ] || fail "no pid for the mongo test server"
  if [ $(($2 % 2)) -eq 0 ]; then order="evlua node"; else order="node evlua"; fi
  for c in $order; do
    if [ "$c" = evlua ]; then
      client "build/bench/mongo_evlua_$1.txt" $cli_pin "$EVLUA" bench/mongo.lua all \
        "$PORT" "$MONGO_SECONDS" "$node_pid"
    else
      client "build/bench/mongo_node_$1.txt" $cli_pin node bench/mongo_node.js all \
        "$PORT" "$MONGO_SECONDS" "$node_pid"
    fi
  done
  stop_server
}

if want mongo; then
  sh tests/peers/mongo_setup.sh || fail "cannot install the mongo test server's npm packages"
  for pl in $PLACEMENTS; do
    : >"build/bench/mongo_evlua_$pl.txt"
    : >"build/bench/mongo_node_$pl.txt"
  done
  i=0
  while [ "$i" -lt "$ROUNDS" ]; do
    for pl in $PLACEMENTS; do mongo_round "$pl" "$i"; done
    i=$((i + 1))
  done

  # mongo_best MODE FILE: "ops srv cli" of the best run of MODE in FILE
  mongo_best() {
    awk -v m="$1" '$1 == m && $2 > b { b = $2; cli = $4; srv = $6 }
      END { printf "%.0f %.2f %.2f\n", b, srv, cli }' "$2"
  }

  echo
  echo "MongoDB benchmarks (evlua.mongo vs the official Node.js driver 6.x, one"
  echo "test server (tests/peers/mongo/server.js, Node.js) on 127.0.0.1 for both,"
  echo "${MONGO_SECONDS} s per mode, best of $ROUNDS rounds; cpu: CPU time / wall time of"
  echo "the server and the client in the best run of each, 1.00 = one core busy)"
  printf '%-38s %9s %9s %7s %10s %10s\n' benchmark evlua node ratio \
    "cpu srv/cli" "(node run)"
  for pl in $PLACEMENTS; do
    for m in "insert:insert_one, $pl (docs/s)" \
             "insert_many:insert_many x100, $pl (docs/s)" \
             "find_one:find_one by _id, 1 caller, $pl" \
             "find_one_50:  50 callers, $pl"; do
      key=${m%%:*}
      # shellcheck disable=SC2046
      set -- $(mongo_best "$key" "build/bench/mongo_evlua_$pl.txt") \
        $(mongo_best "$key" "build/bench/mongo_node_$pl.txt")
      awk -v l="${m#*:}" -v e="$1" -v es="$2" -v ec="$3" -v n="$4" -v ns="$5" -v nc="$6" \
        'BEGIN { printf "%-38s %9.0f %9.0f %7.3f %10s %10s\n", l, e, n, (n > 0 ? e / n : 0),
                 sprintf("%.2f/%.2f", es, ec), sprintf("%.2f/%.2f", ns, nc) }'
    done
  done
  echo "find_one rows: calls/s. 50 callers: 50 coroutines on evlua's one client"
  echo "(one connection), 50 async loops on one MongoClient (its pool opens a"
  echo "connection per caller). Target: ratio >= 1."
fi

# == HTTP ====================================================================

# wrk against evlua, nginx + Lua and nginx (knobs: see bench/http.sh)
if want http; then
  bench/http.sh
fi

# == Debugger and profiler cost ==============================================

# wrk against evlua plain, with the debugger armed, and profiled (knobs:
# see bench/tools.sh)
if want tools; then
  bench/tools.sh
fi

# == UDP =====================================================================

# udp_round SERVER PLACEMENT OUT: the C client keeps 64 datagrams of 64
# bytes in flight against SERVER (evlua or c) for UDP_SECONDS; PLACEMENT
# "pinned" puts the server on core 1 and the client on core 0 (two
# services on one host), "unpinned" leaves it to the kernel.
udp_round() {
  place "$2"
  if [ "$1" = evlua ]; then
    start_server udp $srv_pin "$EVLUA" bench/udp.lua server 0
  else
    start_server udp $srv_pin build/bench/udp_echo server 0
  fi
  client "$3" $cli_pin build/bench/udp_echo client "$PORT" "$UDP_SECONDS" 64 64
  stop_server
}

if want udp; then
  UDP_SECONDS=${BENCH_UDP_SECONDS:-2}
  for f in evlua_pinned c_pinned evlua_unpinned c_unpinned; do
    : >"build/bench/udp_$f.txt"
  done
  i=0
  while [ "$i" -lt "$ROUNDS" ]; do
    for placement in $PLACEMENTS; do
      udp_round evlua $placement "build/bench/udp_evlua_$placement.txt"
      udp_round c $placement "build/bench/udp_c_$placement.txt"
    done
    i=$((i + 1))
  done
  echo
  echo "UDP benchmarks (the C client, 64 datagrams of 64 bytes in flight,"
  echo "${UDP_SECONDS} s per run, best of $ROUNDS rounds; C: recvmmsg/sendmmsg echo)"
  header
  for placement in $PLACEMENTS; do
    row "udp echo, $placement (datagrams/s)" \
      "$(best udp_echo "build/bench/udp_evlua_$placement.txt")" \
      "$(best udp_echo "build/bench/udp_c_$placement.txt")"
  done
fi

# == KCP =====================================================================

# kcp_round SERVER CLIENT PLACEMENT OUT: a ping-pong run (64 bytes,
# windows 128) and a bulk run (stream mode, windows 1024) of CLIENT (evlua
# or go) against SERVER (evlua or go: tests/peers/kcp_peer.go, kcp-go),
# all in kcp-go's fast mode; PLACEMENT as for udp_round. kcp-go gets the
# 4 MiB socket buffers evlua asks for (kcptun's default too): with the
# kernel's 208 KiB a window of 1024 segments overflows the receiver's
# buffer, and the run measures its losses instead of the engines.
KCP_GO=build/peers/kcp_peer
KCP_FAST="-nodelay 1 -interval 10 -resend 2 -nc 1 -sockbuf 4194304"
kcp_server() {   # SERVER WND [stream]
  if [ "$1" = evlua ]; then
    start_server kcp $srv_pin "$EVLUA" bench/kcp.lua server "$2" ${3:-}
  else
    # kcp-go's server prints its bare port: read_port takes it
    start_server_bare kcp $srv_pin "$KCP_GO" echo-server -addr 127.0.0.1:0 \
      $KCP_FAST -sndwnd "$2" -rcvwnd "$2" ${3:+-stream}
  fi
}
kcp_round() {
  place "$3"
  kcp_server "$1" 128
  if [ "$2" = evlua ]; then
    client "$4" $cli_pin "$EVLUA" bench/kcp.lua pingpong "$PORT" "$KCP_SECONDS"
  else
    client "$4" $cli_pin "$KCP_GO" client -addr "127.0.0.1:$PORT" -test pingpong \
      -seconds "$KCP_SECONDS" -size 64 $KCP_FAST -sndwnd 128 -rcvwnd 128
  fi
  stop_server
  kcp_server "$1" 1024 stream
  if [ "$2" = evlua ]; then
    client "$4" $cli_pin "$EVLUA" bench/kcp.lua bulk "$PORT" "$KCP_BYTES"
  else
    client "$4" $cli_pin "$KCP_GO" client -addr "127.0.0.1:$PORT" -test bulk \
      -bytes "$KCP_BYTES" $KCP_FAST -sndwnd 1024 -rcvwnd 1024 -stream
  fi
  stop_server
}

# start_server for a server that prints its port alone on the first line
start_server_bare() {
  fifo=$TMP/$1.out
  shift
  rm -f "$fifo"
  mkfifo "$fifo"
  timeout 600 "$@" >"$fifo" &
  SERVER_PID=$!
  started "$SERVER_PID"
  exec 4<"$fifo"
  read -r PORT <&4 || fail "server '$*' exited before listening"
}

if want kcp; then
  [ -x "$KCP_GO" ] || make -s "$KCP_GO" || fail "cannot build $KCP_GO"
  KCP_SECONDS=${BENCH_KCP_SECONDS:-2}
  KCP_BYTES=${BENCH_KCP_BYTES:-10485760}
  PAIRS="evlua:evlua go:go evlua:go go:evlua"   # server:client
  run_pairs kcp kcp_round
  echo
  echo "KCP benchmarks (kcp-go's fast mode: nodelay 1, interval 10, resend 2, nc 1;"
  echo "ping-pong: 64 bytes, windows 128, ${KCP_SECONDS} s; bulk: $KCP_BYTES bytes"
  echo "echoed, stream mode, windows 1024; best of $ROUNDS rounds)"
  printf '%-34s %14s %14s %8s\n' benchmark evlua kcp-go ratio
  for placement in $PLACEMENTS; do
    f=build/bench/kcp
    # bulk lines: "ok bulk N bytes [crc C] X MB/s": the figure before MB/s
    mbs() { awk '$1 == "ok" && $2 == "bulk" { v = $(NF - 1); if (v > m) m = v }
                 END { print m + 0 }' "$1"; }
    go=$(best pingpong "${f}_go_go_$placement.txt")
    row "pingpong, $placement (rt/s)" "$(best pingpong "${f}_evlua_evlua_$placement.txt")" "$go"
    row "  evlua server, kcp-go client" "$(best pingpong "${f}_evlua_go_$placement.txt")" "$go"
    row "  kcp-go server, evlua client" "$(best pingpong "${f}_go_evlua_$placement.txt")" "$go"
    go=$(mbs "${f}_go_go_$placement.txt")
    row "bulk, $placement (MB/s)" "$(mbs "${f}_evlua_evlua_$placement.txt")" "$go"
    row "  evlua server, kcp-go client" "$(mbs "${f}_evlua_go_$placement.txt")" "$go"
    row "  kcp-go server, evlua client" "$(mbs "${f}_go_evlua_$placement.txt")" "$go"
  done
  # 10,000 idle sessions, both ends in one evlua process, over 12 s (more
  # than the 10 s an idle session sleeps between checks); target: < 1 %
  # (shellcheck disable=SC3045: dash and bash both have ulimit -n)
  idle=$( (ulimit -n 30000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
          timeout 300 "$EVLUA" bench/kcp.lua idle 10000 12) |
         awk '$1 == "idle_cpu" { print $2 }')
  printf '%-34s %14s %14s %8s\n' "10,000 idle sessions (% of a core)" \
    "${idle:-failed}" "" ""
fi

# == Processes ===============================================================

# run_process throughput beside Python's asyncio subprocesses (Debian's
# python3): /bin/true, 16 at a time, stdout captured
if want process; then
  PROCESS_N=${BENCH_PROCESS_N:-2000}
  : >build/bench/process_evlua.txt
  : >build/bench/process_python.txt
  i=0
  while [ "$i" -lt "$ROUNDS" ]; do
    client build/bench/process_evlua.txt "$EVLUA" bench/process.lua "$PROCESS_N" 16
    client build/bench/process_python.txt /usr/bin/python3 bench/process.py "$PROCESS_N" 16
    i=$((i + 1))
  done
  echo
  echo "Process benchmarks ($PROCESS_N runs of /bin/true, 16 at a time, output captured,"
  echo "best of $ROUNDS rounds)"
  printf '%-34s %14s %14s %8s\n' benchmark evlua "py asyncio" ratio
  row "run_process (runs/s)" "$(best spawns build/bench/process_evlua.txt)" \
    "$(best spawns build/bench/process_python.txt)"
fi
