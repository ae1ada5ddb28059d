#!/bin/sh
# tests/run.sh EVLUA [--lua-only] [SPEC...] - run the test suites against
# the evlua binary EVLUA: every C unit test (unless --lua-only; those in
# $C_TEST_DIR, build/tests by default), then
# every tests/lua/*_spec.lua (or just the SPECs named), each in a process
# of its own. Prints a line per suite as it finishes (name, counts,
# seconds); for a failed test, its own message and output only; ends with
# one line "N passed, N failed[, N skipped]". Full logs: build/test-logs/.
set -u
EVLUA=${1:?usage: tests/run.sh path/to/evlua [--lua-only] [spec...]}
shift
LUA_ONLY=
if [ "${1:-}" = "--lua-only" ]; then LUA_ONLY=1; shift; fi
cd "$(dirname "$0")/.." || exit 2
EVLUA_BIN=$(cd "$(dirname "$EVLUA")" && pwd)/$(basename "$EVLUA")
export EVLUA_BIN
LOG_DIR=build/test-logs/$(echo "$EVLUA" | tr '/.' '__')
mkdir -p "$LOG_DIR"
# A suite that hangs fails instead of stopping the run.
SUITE_TIMEOUT=${SUITE_TIMEOUT:-600}

export CMOCKA_MESSAGE_OUTPUT=TAP
passed=0 failed=0 skipped=0

now_ms() { echo $(($(date +%s%N) / 1000000)); }

# failures FILE: each failed test's own lines: what it printed (the lines
# since the previous result, at most 40) and its diagnostics.
failures() {
  awk '
    /^(not )?ok [0-9]/ || /^1\.\./ {
      bad = 0
      if ($0 ~ /^not ok/) {
        if (n > 0) print "  output of the test:"
        for (i = (n > 40 ? n - 40 : 0); i < n; i++) print "  | " out[i]
        print "  " $0
        bad = 1
      }
      n = 0
      next
    }
    bad && /^#/ { print "  " $0; next }
    { bad = 0; out[n++] = $0 }
  ' "$1"
}

# run_suite NAME LOG COMMAND...: run one suite (TAP on stdout), count it.
run_suite() {
  name=$1 log=$2
  shift 2
  start=$(now_ms)
  timeout -k 10 "$SUITE_TIMEOUT" "$@" >"$log" 2>&1
  status=$?
  secs=$(awk -v ms=$(($(now_ms) - start)) 'BEGIN { printf "%.1f", ms / 1000 }')
  ok=$(grep -c '^ok ' "$log")
  skip=$(grep -c '^ok .*# SKIP' "$log")
  bad=$(grep -c '^not ok ' "$log")
  ok=$((ok - skip))
  note=""
  if [ "$status" -ne 0 ] && [ "$bad" -eq 0 ]; then
    bad=1
    [ "$status" -eq 124 ] && note=" (timed out after ${SUITE_TIMEOUT}s)" ||
      note=" (exited with status $status)"
  fi
  echo "$name: $ok passed, $bad failed, $skip skipped, ${secs}s$note"
  if [ "$bad" -ne 0 ]; then
    failures "$log"
    if [ -n "$note" ]; then
      echo "  last lines of $log:"
      tail -n 15 "$log" | sed 's/^/  | /'
    fi
  fi
  passed=$((passed + ok)) failed=$((failed + bad)) skipped=$((skipped + skip))
}

if [ -z "$LUA_ONLY" ] && [ $# -eq 0 ]; then
  for t in "${C_TEST_DIR:-build/tests}"/test_*; do
    [ -x "$t" ] || continue
    name=$(basename "$t")
    run_suite "$name" "$LOG_DIR/$name.tap" "$t"
  done
  # The MongoDB test server that the mongo specs use, checked first against
  # the official Node.js driver and libmongoc: it must behave like mongod
  # for evlua.mongo's tests to mean anything.
  run_suite mongo_conformance "$LOG_DIR/mongo_conformance.tap" \
    tests/peers/mongo/conformance.sh
fi

if [ $# -eq 0 ]; then set -- tests/lua/*_spec.lua; fi
for spec in "$@"; do
  name=$(basename "$spec" .lua)
  run_suite "$name" "$LOG_DIR/$name.tap" \
    "$EVLUA_BIN" tests/busted.lua -o TAP "$spec"
done

if [ "$skipped" -gt 0 ]; then
  echo "$passed passed, $failed failed, $skipped skipped"
else
  echo "$passed passed, $failed failed"
fi
[ "$failed" -eq 0 ]
