#!/bin/sh
# scripts/install-deps.sh STEP... - install the Debian packages a step
# needs: build (make), test (make test, asan-test, fuzz), bench (make
# bench), coverage (make coverage: the test packages and gcovr). Idempotent: when everything is present it only asks dpkg-query
# and prints nothing. Services that Debian starts on install (nginx,
# redis-server) are kept from starting: the tests start their own.
set -e

# Build: compiler, make, pkg-config, Lua 5.4, libev, c-ares, http-parser,
# readline, libbson (BSON for evlua.mongo), libssl (libcrypto: SCRAM's
# PBKDF2, HMAC and SHA) and zlib (the profiler's gzipped pprof) headers,
# and lua-cjson (the debugger's DAP port speaks JSON). (Redis replies are read by src/core/resp.c, not hiredis:
# see docs/redis.md.)
BUILD="gcc make pkg-config libc6-dev liblua5.4-dev libev-dev libc-ares-dev \
libhttp-parser-dev libreadline-dev libbson-dev libssl-dev zlib1g-dev lua-cjson"
# Tests: cmocka (C unit tests); busted and the stock interpreter (for
# comparisons); clang and its sanitizer runtime (asan-test, fuzz);
# valgrind; tmux (terminal tests); procps (ps, kill); groff-base (the
# man page must render without warnings); luacheck (make lint); a DNS
# server and
# python3 (a silent UDP peer) for the DNS tests; msgpack-rpc peers nobody
# here wrote: Neovim, and Python's msgpack and pynvim (tests call
# /usr/bin/python3, Debian's, which has them); curl and nginx as HTTP
# peers (wrk loads a server the profiler tests profile); redis-server for
# the Redis client; Go and kcp-go (built offline,
# GOPATH mode) as the KCP peer (tests/peers/kcp_peer.go); Node.js for the
# MongoDB test server (tests/peers/mongo: npm's mongodb driver, bson and
# mingo, installed by tests/peers/mongo_setup.sh), libmongoc as its second
# conformance client, and Python's bson (pymongo's) for BSON interop;
# gdb for the Lua stack tools (tools/evlua-gdb.py, evlua stack) and their
# tests; Go's pprof (golang-go) reads the profiler's output.
TEST="libcmocka-dev lua5.4 lua-busted clang libclang-rt-14-dev valgrind tmux \
procps groff-base lua-check dnsmasq-base python3 python3-msgpack python3-pynvim neovim curl nginx wrk \
redis-server golang-go golang-github-xtaci-kcp-dev nodejs libmongoc-dev python3-bson gdb"
# Benchmarks: wrk, and nginx with its Lua module as the HTTP peers;
# redis-benchmark (redis-tools) as the Redis client's peer; taskset
# (util-linux) pins server and client to their cores; Node.js runs the
# MongoDB test server and the official driver beside evlua.mongo (npm
# comes with NodeSource's nodejs; Debian's is the separate npm package,
# and tests/peers/mongo_setup.sh says so when it is missing).
BENCH="wrk nginx libnginx-mod-http-lua redis-tools util-linux procps \
golang-go golang-github-xtaci-kcp-dev nodejs"

[ $# -gt 0 ] || {
  echo "usage: $0 build|test|bench|coverage..." >&2; exit 2; }
packages=""
for step in "$@"; do
  case "$step" in
    build) packages="$packages $BUILD" ;;
    test) packages="$packages $BUILD $TEST" ;;
    bench) packages="$packages $BUILD $BENCH" ;;
    coverage) packages="$packages $BUILD $TEST gcovr" ;;
    *) echo "$0: unknown step '$step' (build, test, bench or coverage)" >&2
       exit 2 ;;
  esac
done

missing=""
for p in $packages; do
  case " $missing " in *" $p "*) continue ;; esac
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  case "$status" in
    *" installed") ;;
    *) missing="$missing $p" ;;
  esac
done
# npm: Debian's package, unless an npm is there already (the nodejs of
# NodeSource bundles one and conflicts with Debian's npm).
case " $packages " in
  *" nodejs "*) command -v npm >/dev/null 2>&1 || missing="$missing npm" ;;
esac
[ -z "$missing" ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-deps: missing packages:$missing (no apt-get here: install them by hand)" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || {
    echo "install-deps: missing packages:$missing (run as root, or install sudo)" >&2
    exit 1
  }
  SUDO="sudo"
fi
echo "install-deps: installing$missing" >&2

# While we install, invoke-rc.d and deb-systemd-invoke ask policy-rc.d
# whether to start a service: 101 says no. One already there is kept.
POLICY=/usr/sbin/policy-rc.d
if [ ! -e "$POLICY" ]; then
  printf '#!/bin/sh\n# evlua install-deps: start no service while installing\nexit 101\n' |
    $SUDO tee "$POLICY" >/dev/null
  $SUDO chmod 755 "$POLICY"
  trap '$SUDO rm -f "$POLICY"' EXIT
fi

export DEBIAN_FRONTEND=noninteractive
# Refresh the package lists once if they are missing or older than a day.
if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mtime -1 2>/dev/null | head -n 1)" ]; then
  $SUDO apt-get update -qq >/dev/null
fi
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null

# Under systemd a unit is also enabled for the next boot: not these.
if [ -d /run/systemd/system ]; then
  for unit in nginx redis-server; do
    case " $missing " in
      *" $unit "*) $SUDO systemctl disable --now "$unit" >/dev/null 2>&1 || true ;;
    esac
  done
fi
