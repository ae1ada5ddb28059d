# bench/lib.sh - sourced by bench/run.sh and bench/http.sh (POSIX sh).
# A temporary directory $TMP, and every process started in the
# background recorded with `started PID` (and `forget PID` once it has
# been waited for): they are ended, and $TMP removed, when the script
# exits, whichever way it exits. `fail MESSAGE` stops the script.

TMP=$(mktemp -d "/tmp/evlua-${BENCH_TMP_NAME:-bench}.XXXXXX")
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
