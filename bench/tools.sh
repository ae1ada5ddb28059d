#!/bin/sh
# bench/tools.sh - what the debugger and the profiler cost a server: wrk
# against three evlua HTTP hello servers (bench/http.lua) in the same run,
# interleaved: one plain, one with the debugger loaded and a breakpoint in
# a file no request runs (target: at least 0.95x of plain), one sampling
# with the profiler at 1 kHz (target: at least 0.97x). Each placement:
# pinned (servers on core 1, wrk on core 0: the figure of record) and
# unpinned. BENCH_ROUNDS rounds, each server first in turn; the report
# has the best round of each and the median of the rounds' ratios. Run
# by bench/run.sh; runs alone.
#   BENCH_ROUNDS          rounds (3)
#   BENCH_HTTP_SECONDS    length of one wrk run (5)
#   BENCH_HTTP_CONNS      keep-alive connections (50)
#   BENCH_EVLUA           the evlua binary to measure (./evlua)
set -eu
cd "$(dirname "$0")/.."
mkdir -p build/bench
ROUNDS=${BENCH_ROUNDS:-3}
SECONDS_RUN=${BENCH_HTTP_SECONDS:-5}
CONNS=${BENCH_HTTP_CONNS:-50}
EVLUA=${BENCH_EVLUA:-./evlua}
TOOLS="plain debugger profiler"

BENCH_TMP_NAME=bench-tools
. bench/lib.sh   # $TMP, started, fail; servers end with the script

command -v wrk >/dev/null || fail "wrk is missing (scripts/install-deps.sh)"
command -v taskset >/dev/null || fail "taskset is missing (util-linux)"

# start_server TOOL PIN...: an evlua server with TOOL (plain: none) under
# the PIN command; sets PORT (it prints its port once it listens).
start_server() {
  tool=$1 tool_arg=$1
  shift
  [ "$tool" = plain ] && tool_arg=""
  rm -f "$TMP/fifo"
  mkfifo "$TMP/fifo"
  # shellcheck disable=SC2086 # tool_arg is empty or one word
  timeout 900 "$@" "$EVLUA" bench/http.lua server 0 $tool_arg >"$TMP/fifo" 2>"$TMP/server.err" &
  started "$!"
  exec 4<"$TMP/fifo"
  read -r word PORT <&4 || fail "the $tool server exited: $(cat "$TMP/server.err")"
  [ "$word" = port ] || fail "the server printed '$word $PORT'"
}

# rotate WORD...: the words, the first one moved to the end
rotate() {
  first=$1
  shift
  echo "$@" "$first"
}

# wrk_round NAME PORT PIN...: one wrk run, "NAME req/s" appended to
# build/bench/tools.txt
wrk_round() {
  name=$1 port=$2
  shift 2
  "$@" wrk -t1 -c"$CONNS" -d"${SECONDS_RUN}s" "http://127.0.0.1:$port/" >"$TMP/wrk.out" 2>&1 ||
    fail "wrk failed: $(cat "$TMP/wrk.out")"
  awk -v n="$name" '
    /Non-2xx|Socket errors/ { bad = 1 }
    $1 == "Requests/sec:" { rps = $2 }
    END { printf "%s %.0f\n", n, (bad ? 0 : rps) }
  ' "$TMP/wrk.out" >>build/bench/tools.txt
}

: >build/bench/tools.txt
for placement in pinned unpinned; do
  srv_pin="" cli_pin=""
  if [ "$placement" = pinned ]; then srv_pin="taskset -c 1" cli_pin="taskset -c 0"; fi
  ports=""
  for tool in $TOOLS; do
    # shellcheck disable=SC2086 # the pin is empty or three words
    start_server "$tool" $srv_pin
    ports="$ports $tool:$PORT"
  done
  i=0
  while [ "$i" -lt "$ROUNDS" ]; do   # interleaved: all see the same machine
    ports=$(rotate $ports)   # and each goes first in turn
    for tp in $ports; do
      # shellcheck disable=SC2086
      wrk_round "$placement-${tp%%:*}" "${tp#*:}" $cli_pin
    done
    i=$((i + 1))
  done
done

echo
echo "Debugger and profiler cost, HTTP hello world (wrk -t1 -c$CONNS, keep-alive,"
echo "${SECONDS_RUN} s per run, $ROUNDS rounds; req/s and ratio: the best round of each"
echo "server over plain's best; median: of each round's ratio to plain in that round)"
printf '%-52s %10s %7s %7s %7s\n' server "req/s" ratio median target
awk '
  # the median of the n values in a[1..n] (sorted here)
  function median(a, n,   i, j, t) {
    for (i = 2; i <= n; i++)
      for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  $2 > best[$1] { best[$1] = $2 }
  { round[$1]++; rps[$1, round[$1]] = $2 }
  END {
    split("pinned unpinned", places, " ")
    split("plain debugger profiler", tools, " ")
    label["plain"] = "no tool"
    label["debugger"] = "debugger loaded, 1 breakpoint in an unrelated file"
    label["profiler"] = "profiler sampling at 1 kHz"
    target["debugger"] = "0.95"; target["profiler"] = "0.97"; target["plain"] = "-"
    for (p = 1; p <= 2; p++) {
      printf "%s (%s)\n", places[p], (p == 1 ? "server on core 1, wrk on core 0" : "as the kernel places them")
      base = best[places[p] "-plain"]
      for (t = 1; t <= 3; t++) {
        n = places[p] "-" tools[t]
        k = 0
        for (r = 1; r <= round[n]; r++) {
          b = rps[places[p] "-plain", r]
          if (b > 0) ratios[++k] = rps[n, r] / b
        }
        printf "  %-50s %10d %7.3f %7.3f %7s\n", label[tools[t]], best[n],
          (base > 0 ? best[n] / base : 0), (k > 0 ? median(ratios, k) : 0),
          target[tools[t]]
      }
    }
  }' build/bench/tools.txt
