#!/bin/sh
# bench/run.sh - run every benchmark beside its peer in the same run and
# print the figures with ratios (evlua / peer; above 1 means evlua wins).
set -eu
cd "$(dirname "$0")/.."
mkdir -p build/bench
N=${BENCH_N:-1000000}
ROUNDS=${BENCH_ROUNDS:-3}

cc -O2 -o build/bench/loop_bench bench/c/loop_bench.c -lev

# best NAME FILE: the highest figure for NAME over the rounds in FILE
best() { awk -v n="$1" '$1 == n && $2 > m { m = $2 } END { print m + 0 }' "$2"; }

: >build/bench/loop_c.txt
: >build/bench/loop_evlua.txt
i=0
while [ "$i" -lt "$ROUNDS" ]; do   # interleave the two so both see the same machine
  build/bench/loop_bench "$N" >>build/bench/loop_c.txt
  ./evlua bench/loop.lua "$N" >>build/bench/loop_evlua.txt
  i=$((i + 1))
done

echo "Loop benchmarks (N=$N, best of $ROUNDS rounds, ops/s)"
printf '%-34s %14s %14s %8s\n' benchmark evlua "C libev" ratio
for m in switches:coroutine-switches timers:timer-start+cancel-pairs expiries:timer-expiries; do
  key=${m%%:*}
  label=${m#*:}
  e=$(best "$key" build/bench/loop_evlua.txt)
  c=$(best "$key" build/bench/loop_c.txt)
  awk -v l="$label" -v e="$e" -v c="$c" \
    'BEGIN { printf "%-34s %14.0f %14.0f %8.3f\n", l, e, c, e / c }'
done
