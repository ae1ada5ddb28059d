#!/bin/bash
# Runs the conformance suites of the MongoDB test server: the official
# Node.js driver (conformance.js) and Debian's libmongoc
# (conformance_mongoc.c) against server.js. One TAP stream on stdout;
# exit status 0 only when every test passed.
#
# usage: tests/peers/mongo/conformance.sh   (from anywhere)
# env:   BUILD_DIR (default <repo>/build), CC (default cc)
set -u
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
build=${BUILD_DIR:-$root/build}/peers
cc=${CC:-cc}

bail() { echo "Bail out! $*"; exit 1; }

sh "$here/../mongo_setup.sh" || bail "npm packages of tests/peers/mongo could not be installed"
pkg-config --exists libmongoc-1.0 || bail "libmongoc-1.0 not found (apt-get install libmongoc-dev)"
mkdir -p "$build" || bail "cannot create $build"
bin=$build/conformance_mongoc
if [ ! -x "$bin" ] || [ "$here/conformance_mongoc.c" -nt "$bin" ]; then
  # shellcheck disable=SC2046
  "$cc" -O1 -g -Wall -Wextra -Werror -o "$bin" "$here/conformance_mongoc.c" \
    $(pkg-config --cflags --libs libmongoc-1.0) >&2 || bail "conformance_mongoc.c does not build"
fi

tmp=$(mktemp -d) || bail "mktemp failed"
pids=()
cleanup() {
  for fd in 7 8; do eval "exec $fd>&-" 2>/dev/null; done   # closing stdin stops a server
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
  rm -rf "$tmp"
}
trap cleanup EXIT

# start_server VAR FD NAME ARGS...: sets VAR to the port. The server's stdin
# is a fifo that this script holds open on FD, so the server goes away when
# the script does.
start_server() {
  local var=$1 fd=$2 name=$3; shift 3
  mkfifo "$tmp/$name.in"
  node "$here/server.js" --port 0 "$@" <"$tmp/$name.in" >"$tmp/$name.out" 2>"$tmp/$name.err" &
  pids+=($!)
  eval "exec $fd>\"$tmp/$name.in\""
  local i
  for i in $(seq 1 100); do
    if grep -q '^port ' "$tmp/$name.out" 2>/dev/null; then
      printf -v "$var" '%s' "$(awk '/^port /{print $2; exit}' "$tmp/$name.out")"; return 0
    fi
    kill -0 "${pids[-1]}" 2>/dev/null || break
    sleep 0.05
  done
  cat "$tmp/$name.err" >&2
  return 1
}

port= small=
start_server port 7 main --auth 'root:p%40ss%3Aw%2Frd%25' --auth sha1only:pw1:SCRAM-SHA-1 \
  --auth sha256only:pw2:SCRAM-SHA-256 --auth appuser:apppw@appdb || bail "server.js did not start"
start_server small 8 small --max-write-batch 10 || bail "server.js (small limits) did not start"

{
  MONGO_PORT=$port TAP_NO_PLAN=1 node "$here/conformance.js" || echo "not ok - node: conformance.js exited $?"
  TAP_NO_PLAN=1 "$bin" "$port" "$small" || echo "not ok - mongoc: conformance_mongoc exited $?"
} 2>&1 | awk '
  /^(not )?ok( [0-9]+)? - / {
    n++
    bad = ($1 == "not")
    if (bad) failed++
    sub(/^(not )?ok( [0-9]+)? - /, "")
    printf "%sok %d - %s\n", bad ? "not " : "", n, $0
    next
  }
  { print }
  END {
    printf "1..%d\n# mongo conformance: %d passed, %d failed\n", n, n - failed, failed
    exit failed ? 1 : 0
  }'
