#!/bin/bash
# tests/fresh/run.sh - the README's two commands on a new minimal Debian 12,
# as a new user would run them: debootstrap --variant=minbase bookworm into
# a folder, add git (and nothing else), clone the project's committed HEAD
# into it, then in a chroot run the README's first command (build and
# serve the flagship sample: it must answer HTTP) and its second one (the
# whole test suite). Also checks that the build step installs no test
# packages and that no system service is left listening. Slow (it
# installs every package): run by hand (make fresh-check), not in CI.
#
#   FRESH_DIR   where the base system and the chroot live (build/fresh)
#   FRESH_BASE_REUSE=1  start from the base system made by an earlier run
#               (only debootstrap's own output is reused, never a chroot)
# Needs root (debootstrap, chroot, mounts).
set -u
cd "$(dirname "$0")/../.." || exit 2
REPO=$PWD
FRESH_DIR=${FRESH_DIR:-$REPO/build/fresh}
BASE=$FRESH_DIR/base
ROOT=$FRESH_DIR/root
LOG=$FRESH_DIR/log
HTTP_PORT=8080   # the sample's default: the README's command takes no port

say() { echo "fresh-check: $*"; }
die() { say "$*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, chroot)"
command -v debootstrap >/dev/null && command -v curl >/dev/null ||
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    debootstrap curl >/dev/null || die "cannot install debootstrap and curl"

# The mirror this machine's apt already uses.
mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
  /etc/apt/sources.list.d/*.sources 2>/dev/null |
  sed -n 's/^deb \(\[[^]]*\] \)\?\(http[^ ]*\) .*/\2/p; s/^URIs: *\(http[^ ]*\).*/\1/p' |
  grep -v security | head -n 1)
[ -n "$mirror" ] || die "no Debian mirror found in /etc/apt"

mkdir -p "$FRESH_DIR"
if [ "${FRESH_BASE_REUSE:-}" != 1 ] || [ ! -e "$BASE/.complete" ]; then
  rm -rf "$BASE"
  say "debootstrap --variant=minbase bookworm"
  debootstrap --variant=minbase bookworm "$BASE" "$mirror" >"$FRESH_DIR/debootstrap.log" 2>&1 ||
    die "debootstrap failed (see $FRESH_DIR/debootstrap.log)"
  touch "$BASE/.complete"
fi

unmount_all() {
  for m in dev/pts dev sys proc; do umount -l "$ROOT/$m" 2>/dev/null; done
}
stop_sample() {
  [ -n "${sample_pid:-}" ] && kill -INT -- "-$sample_pid" 2>/dev/null
}
cleanup() {
  stop_sample
  sleep 1
  [ -n "${sample_pid:-}" ] && kill -KILL -- "-$sample_pid" 2>/dev/null
  unmount_all
}
trap cleanup EXIT

unmount_all
rm -rf "$ROOT"
cp -a "$BASE" "$ROOT"
rm -f "$ROOT/.complete"
mount -t proc proc "$ROOT/proc"
mount -t sysfs sys "$ROOT/sys"
mount --bind /dev "$ROOT/dev"
mount --bind /dev/pts "$ROOT/dev/pts"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
# This machine's network, like resolv.conf: where the host trusts an extra
# CA for Node.js (an egress proxy that inspects TLS), npm in the root must
# too, or the test step's npm install cannot reach the registry.
HOST_ENV=""
if [ -n "${NODE_EXTRA_CA_CERTS:-}" ] && [ -r "$NODE_EXTRA_CA_CERTS" ]; then
  cp "$NODE_EXTRA_CA_CERTS" "$ROOT/etc/host-extra-ca.crt"
  HOST_ENV="NODE_EXTRA_CA_CERTS=/etc/host-extra-ca.crt"
fi

# in_root COMMAND: run a shell command in the chroot, as a login would.
in_root() {
  chroot "$ROOT" /usr/bin/env -i HOME=/root TERM=xterm LANG=C.UTF-8 $HOST_ENV \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    /bin/sh -c "$1"
}
installed() { in_root "dpkg-query -W -f='\${Status}' $1 2>/dev/null | grep -q ' installed'"; }

say "adding git"
in_root "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
  --no-install-recommends git" >"$LOG.git" 2>&1 || die "cannot add git ($LOG.git)"
for tool in make cc ps; do
  in_root "command -v $tool" >/dev/null && die "the base system already has $tool"
done
git clone -q "$REPO" "$ROOT/root/evlua" || die "cannot clone $REPO"

# The README's two commands: the first code block after its heading.
commands=$(awk '/^## Two commands/ { inside = 1; next }
  inside && /^```sh/ { block = 1; next }
  block && /^```/ { exit }
  block { sub(/[ ]+#.*/, ""); print }' "$REPO/README.md")
first=$(echo "$commands" | sed -n 1p)
second=$(echo "$commands" | sed -n 2p)
[ -n "$first" ] && [ -n "$second" ] || die "no two commands in README.md"

say "1: $first"
start=$(date +%s)
setsid chroot "$ROOT" /usr/bin/env -i HOME=/root TERM=xterm LANG=C.UTF-8 $HOST_ENV \
  PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  /bin/sh -c "cd /root/evlua && $first" >"$LOG.first" 2>&1 &
sample_pid=$!
answer=""
for _ in $(seq 1 1800); do   # up to 30 minutes for installing and building
  answer=$(curl -s -m 2 "http://127.0.0.1:$HTTP_PORT/" 2>/dev/null) && [ -n "$answer" ] && break
  kill -0 "$sample_pid" 2>/dev/null || break
  sleep 1
done
first_secs=$(($(date +%s) - start))
result=0
if [ -n "$answer" ]; then
  say "1: the sample answered after ${first_secs}s: $answer"
else
  say "1: FAILED: no HTTP answer on port $HTTP_PORT after ${first_secs}s; its output:"
  tail -n 30 "$LOG.first" | sed 's/^/  | /'
  result=1
fi
for p in redis-server nginx clang lua-busted valgrind; do
  installed "$p" && { say "1: FAILED: the build step installed $p"; result=1; }
done
stop_sample
wait "$sample_pid" 2>/dev/null
sample_pid=""
say "1: output: $(wc -l <"$LOG.first") lines ($LOG.first)"

say "2: $second"
start=$(date +%s)
in_root "cd /root/evlua && $second" 2>&1 | tee "$LOG.second" |
  grep -E --line-buffered '^[^ ]+: [0-9]+ passed|^[0-9]+ passed|^install-deps|^  (not ok|#|\||output of|last lines)'
second_status=${PIPESTATUS[0]}
summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$LOG.second" | tail -n 1)
say "2: status $second_status after $(($(date +%s) - start))s: ${summary:-no summary line}"
[ "$second_status" -eq 0 ] || result=1

# Nothing the installs brought may be left serving (nginx on 80, redis on
# 6379): the chroot shares this machine's network.
for port in 80 6379; do
  hex=$(printf '%04X' "$port")
  if grep -qE "^ *[0-9]+: [0-9A-F]+:$hex [0-9A-F]+:0000 0A" /proc/net/tcp /proc/net/tcp6; then
    say "FAILED: something listens on port $port"
    result=1
  fi
done
[ -e "$ROOT/usr/sbin/policy-rc.d" ] && { say "FAILED: policy-rc.d left behind"; result=1; }

[ "$result" -eq 0 ] && say "passed" || say "FAILED"
exit "$result"
