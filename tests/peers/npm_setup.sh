#!/bin/sh
# tests/peers/npm_setup.sh NAME MODULE... - install the npm packages of the
# test peer in tests/peers/NAME from its lock file. Quiet and quick when
# the lock file's packages are there (MODULE...: the ones that must be);
# after a first install it works offline (npm ci --prefer-offline uses
# npm's cache). mongo_setup.sh and dap_setup.sh call it.
set -eu
name=$1
shift
dir=$(cd "$(dirname "$0")/$name" && pwd)
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "${name}_setup.sh: node and npm are needed (Debian: apt-get install nodejs npm)" >&2
  exit 1
fi
installed() {
  stamp="$dir/node_modules/.package-lock.json"
  [ -f "$stamp" ] && [ ! "$dir/package-lock.json" -nt "$stamp" ] || return 1
  for module in "$@"; do [ -d "$dir/node_modules/$module" ] || return 1; done
}
installed "$@" && exit 0
cd "$dir"
if ! out=$(npm ci --prefer-offline --no-audit --no-fund --loglevel=error 2>&1); then
  printf '%s\n' "$out" >&2
  echo "${name}_setup.sh: npm ci failed in $dir" >&2
  exit 1
fi
