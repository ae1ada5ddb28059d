#!/bin/sh
# tests/run.sh EVLUA [--lua-only] - run every test suite against the evlua
# binary EVLUA and end with one line "N passed, N failed[, N skipped]".
# Suites print TAP; a suite that dies without finishing counts as a failure.
set -u
EVLUA=${1:?usage: tests/run.sh path/to/evlua [--lua-only]}
LUA_ONLY=${2:-}
cd "$(dirname "$0")/.." || exit 2
EVLUA_BIN=$(cd "$(dirname "$EVLUA")" && pwd)/$(basename "$EVLUA")
export EVLUA_BIN
LOG_DIR=build/test-logs
mkdir -p "$LOG_DIR"

passed=0 failed=0 skipped=0

# count_tap NAME FILE STATUS: add a suite's TAP results to the totals.
count_tap() {
  name=$1 file=$2 status=$3
  ok=$(grep -c '^ok ' "$file")
  skip=$(grep -c '^ok .*# SKIP' "$file")
  bad=$(grep -c '^not ok ' "$file")
  ok=$((ok - skip))
  if [ "$status" -ne 0 ] && [ "$bad" -eq 0 ]; then
    echo "$name: exited with status $status before reporting a failure" >&2
    bad=1
  fi
  if [ "$bad" -ne 0 ]; then
    echo "---- $name: failures (full log: $file)" >&2
    grep -A 30 '^not ok ' "$file" | head -n 200 >&2
    [ "$status" -ne 0 ] && tail -n 30 "$file" >&2
  fi
  echo "$name: $ok passed, $bad failed, $skip skipped"
  passed=$((passed + ok)) failed=$((failed + bad)) skipped=$((skipped + skip))
}

if [ "$LUA_ONLY" != "--lua-only" ]; then
  for t in build/tests/test_*; do
    [ -x "$t" ] || continue
    log="$LOG_DIR/$(basename "$t").tap"
    CMOCKA_MESSAGE_OUTPUT=TAP "$t" >"$log" 2>&1
    count_tap "$(basename "$t")" "$log" $?
  done
fi

log="$LOG_DIR/lua$(echo "$EVLUA" | tr '/.' '__').tap"
"$EVLUA_BIN" tests/busted.lua -o TAP tests/lua >"$log" 2>&1
count_tap "lua tests ($EVLUA)" "$log" $?

if [ "$skipped" -gt 0 ]; then
  echo "$passed passed, $failed failed, $skipped skipped"
else
  echo "$passed passed, $failed failed"
fi
[ "$failed" -eq 0 ]
