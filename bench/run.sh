#!/bin/sh
# bench/run.sh - run every benchmark beside its peer in the same run and
# print the figures with ratios (evlua / peer; above 1 means evlua wins).
#   BENCH_ROUNDS            rounds, best one kept (3)
#   BENCH_N                 loop benchmark size (1000000)
#   BENCH_ECHO_MIB          MiB streamed per throughput run (1024)
#   BENCH_PINGPONG_SECONDS  length of a ping-pong run (2)
#   BENCH_IDLE_CONNS        idle connections for the memory figure (10000)
#   BENCH_EVLUA             the evlua binary to measure (./evlua)
set -eu
cd "$(dirname "$0")/.."
mkdir -p build/bench
N=${BENCH_N:-1000000}
ROUNDS=${BENCH_ROUNDS:-3}
ECHO_MIB=${BENCH_ECHO_MIB:-1024}
PP_SECONDS=${BENCH_PINGPONG_SECONDS:-2}
IDLE_CONNS=${BENCH_IDLE_CONNS:-10000}
EVLUA=${BENCH_EVLUA:-./evlua}
ECHO_C=build/bench/echo

cc -O2 -o build/bench/loop_bench bench/c/loop_bench.c -lev
cc -O2 -o "$ECHO_C" bench/c/echo.c -lev

# Every process started in the background is recorded here and ended (by
# its id) when the script exits, whichever way it exits. Each one also
# runs under timeout(1), so nothing outlives a killed script for long.
TMP=$(mktemp -d /tmp/evlua-bench.XXXXXX)
PIDS=""
started() { PIDS="$PIDS $1"; }
forget() { PIDS=$(echo " $PIDS " | sed "s/ $1 / /"); }
cleanup() {
  for p in $PIDS; do kill "$p" 2>/dev/null || true; done
  for p in $PIDS; do wait "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fail() {
  echo "bench: $*" >&2
  exit 1
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

# == Channels: echo ==========================================================

# start_server NAME COMMAND...: start an echo server in the background,
# its stdout on a FIFO open as fd 4; sets SERVER_PID and PORT from the
# "port N" line it prints once it listens.
start_server() {
  fifo=$TMP/$1.out
  shift
  rm -f "$fifo"
  mkfifo "$fifo"
  timeout 600 "$@" >"$fifo" &
  SERVER_PID=$!
  started "$SERVER_PID"
  exec 4<"$fifo"
  read -r word PORT <&4 || fail "server '$*' exited before listening"
  [ "$word" = port ] || fail "server '$*' printed '$word $PORT'"
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

# echo_round SERVER CLIENT OUT: one throughput and one ping-pong run of
# client (evlua or c) against server (evlua or c), figures appended to OUT
echo_round() {
  if [ "$1" = evlua ]; then
    start_server echo "$EVLUA" bench/echo.lua server 0
  else
    start_server echo "$ECHO_C" server 0
  fi
  if [ "$2" = evlua ]; then
    client "$3" "$EVLUA" bench/echo.lua throughput "$PORT" "$ECHO_MIB"
    client "$3" "$EVLUA" bench/echo.lua pingpong "$PORT" "$PP_SECONDS"
  else
    client "$3" "$ECHO_C" throughput "$PORT" "$ECHO_MIB"
    client "$3" "$ECHO_C" pingpong "$PORT" "$PP_SECONDS"
  fi
  stop_server
}

PAIRS="evlua:evlua c:c evlua:c c:evlua"   # server:client
for p in $PAIRS; do : >"build/bench/echo_${p%%:*}_${p#*:}.txt"; done
i=0
while [ "$i" -lt "$ROUNDS" ]; do
  for p in $PAIRS; do
    echo_round "${p%%:*}" "${p#*:}" "build/bench/echo_${p%%:*}_${p#*:}.txt"
  done
  i=$((i + 1))
done

echo
echo "Channel benchmarks (127.0.0.1, server and client in separate processes,"
echo "$ECHO_MIB MiB per throughput run, ${PP_SECONDS} s per ping-pong run, best of $ROUNDS rounds)"
header
for m in "throughput:echo-throughput (MiB/s)" "pingpong:echo-pingpong (round trips/s)"; do
  key=${m%%:*}
  c=$(best "$key" build/bench/echo_c_c.txt)
  row "${m#*:}" "$(best "$key" build/bench/echo_evlua_evlua.txt)" "$c"
  row "  evlua server, C client" "$(best "$key" build/bench/echo_evlua_c.txt)" "$c"
  row "  C server, evlua client" "$(best "$key" build/bench/echo_c_evlua.txt)" "$c"
done

# == Channels: memory per idle connection ====================================

# Each side holds IDLE_CONNS descriptors; the hard limit bounds the count.
# (ulimit -n and -H are not POSIX, but dash and bash both have them.)
# shellcheck disable=SC3045
{
  ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
  fds=$(ulimit -n)
}
if [ "$fds" != unlimited ] && [ "$IDLE_CONNS" -gt $((fds - 64)) ]; then
  echo "bench: only $fds descriptors allowed, using $((fds - 64)) idle connections" >&2
  IDLE_CONNS=$((fds - 64))
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
