#!/bin/sh
# scripts/install-deps.sh - install the Debian packages evlua needs to build,
# test and benchmark. Idempotent: when everything is present it only runs
# dpkg-query once and prints nothing.
set -e

# Build: compiler, pkg-config, Lua 5.4, libev, c-ares and http-parser
# headers. (Redis replies are read by src/resp.c, not hiredis: see
# docs/redis.md.)
BUILD="gcc make pkg-config liblua5.4-dev libev-dev libc-ares-dev \
libhttp-parser-dev"
# Tests: the stock interpreter (for comparisons), busted, cmocka, valgrind,
# clang's sanitizer runtime for `make asan-test`, tmux (terminal tests), a
# DNS server and python3 (a silent UDP peer) for the DNS tests, and
# msgpack-rpc peers nobody here wrote: Neovim, and Python's msgpack and
# pynvim (tests call /usr/bin/python3, Debian's, which has them); curl
# and nginx as HTTP peers; redis-server for the Redis client.
TEST="lua5.4 lua-busted libcmocka-dev valgrind clang libclang-rt-14-dev tmux \
dnsmasq-base python3 neovim python3-msgpack python3-pynvim curl nginx \
redis-server"
# Benchmarks: wrk, and nginx with its Lua module as the HTTP peers;
# redis-benchmark (redis-tools) as the Redis client's peer.
BENCH="wrk nginx libnginx-mod-http-lua redis-tools"

PACKAGES="$BUILD $TEST $BENCH"

missing=""
for p in $PACKAGES; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  case "$status" in
    *" installed") ;;
    *) missing="$missing $p" ;;
  esac
done

[ -z "$missing" ] && exit 0

echo "install-deps: installing$missing" >&2
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
# Refresh the package lists once if they are missing or older than a day.
if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mtime -1 2>/dev/null | head -n 1)" ]; then
  $SUDO apt-get update -qq >/dev/null
fi
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
