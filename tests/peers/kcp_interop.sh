#!/bin/sh
# tests/peers/kcp_interop.sh - our KCP engine (build/peers/kcp_c_echo,
# src/core/kcp.c over UDP) against kcp-go (build/peers/kcp_peer), both
# directions, message and stream mode, clean and through a lossy relay
# (drop 10 %, duplicate 2 %, reorder 10 %). Prints one line per check and
# exits 1 if any failed.
#   make build/peers/kcp_peer build/peers/kcp_c_echo && tests/peers/kcp_interop.sh
set -u
cd "$(dirname "$0")/../.." || exit 2
P=build/peers/kcp_peer
E=build/peers/kcp_c_echo
BYTES=${KCP_BULK_BYTES:-10485760}
MSGS=${KCP_MESSAGES:-2000}
FAST_GO="-nodelay 1 -interval 10 -resend 2 -nc 1 -sndwnd 128 -rcvwnd 128"
FAST_C="--fast --wnd 128"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
failed=0 pids=""

# start NAME CMD...: run a server printing its port first; PORT gets it.
start() {
  name=$1; shift
  "$@" > "$TMP/$name" 2>> "$TMP/servers.err" &
  pids="$pids $!"
  for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
    PORT=$(head -n 1 "$TMP/$name" 2>/dev/null)
    [ -n "$PORT" ] && return 0
    sleep 0.1
  done
  echo "kcp_interop: $name did not start" >&2
  exit 1
}

stop_all() {
  for p in $pids; do kill "$p" 2>/dev/null; done
  for p in $pids; do wait "$p" 2>/dev/null; done
  pids=""
}

# check NAME CMD...: run a client; ok or FAIL with its output.
check() {
  name=$1; shift
  if out=$(timeout 150 "$@" 2>&1); then
    echo "ok   $name: $(echo "$out" | grep '^ok' | head -n 1)"
  else
    echo "FAIL $name: $out" | head -n 5
    stop_all
    sed 's/^/  server: /' "$TMP/servers.err" | tail -n 5
    failed=1
  fi
  stop_all
  : > "$TMP/servers.err"
}

# via LOSSY TARGET_PORT: PORT becomes the relay's port when LOSSY is 1.
via() {
  [ "$1" = 1 ] || return 0
  start relay $P relay -addr 127.0.0.1:0 -target "127.0.0.1:$2" \
    -drop 10 -dup 2 -reorder 10 -seed "$3"
}

for lossy in 0 1; do
  tag=clean; [ $lossy = 1 ] && tag=lossy
  # our client, kcp-go echo server
  start go $P echo-server -addr 127.0.0.1:0 $FAST_GO; via $lossy "$PORT" 1
  check "$tag evlua->kcp-go messages x$MSGS (1..1376 B)" \
    $E client 127.0.0.1 "$PORT" messages "$MSGS" $FAST_C --timeout 140
  start go $P echo-server -addr 127.0.0.1:0 $FAST_GO -stream; via $lossy "$PORT" 2
  check "$tag evlua->kcp-go stream $BYTES B" \
    $E client 127.0.0.1 "$PORT" bulk "$BYTES" --stream $FAST_C --timeout 140
  # kcp-go client, our echo server
  start c $E server $FAST_C --quiet 3000; via $lossy "$PORT" 3
  check "$tag kcp-go->evlua messages x$MSGS (1..1376 B)" \
    $P client -addr "127.0.0.1:$PORT" -test messages -n "$MSGS" \
    -sizes 1,100,1000,1376 $FAST_GO -timeout 140
  start c $E server --stream $FAST_C --quiet 3000; via $lossy "$PORT" 4
  check "$tag kcp-go->evlua stream $BYTES B" \
    $P client -addr "127.0.0.1:$PORT" -test bulk -bytes "$BYTES" -stream \
    $FAST_GO -timeout 140
done
# KCP's defaults on both sides (interval 100, congestion control on)
start go $P echo-server -addr 127.0.0.1:0
check "defaults evlua->kcp-go messages x500" \
  $E client 127.0.0.1 "$PORT" messages 500
start c $E server --quiet 3000
check "defaults kcp-go->evlua messages x500" \
  $P client -addr "127.0.0.1:$PORT" -test messages -n 500
exit $failed
