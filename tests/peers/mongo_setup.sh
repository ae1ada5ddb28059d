#!/bin/sh
# Installs the npm packages of the MongoDB test server (tests/peers/mongo)
# from its lock file. Quiet and quick when they are already there; after a
# first install it works offline (npm ci --prefer-offline uses npm's cache).
set -eu
dir=$(cd "$(dirname "$0")/mongo" && pwd)
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "mongo_setup.sh: node and npm are needed (Debian: apt-get install nodejs npm)" >&2
  exit 1
fi
stamp="$dir/node_modules/.package-lock.json"
if [ -f "$stamp" ] && [ ! "$dir/package-lock.json" -nt "$stamp" ] \
   && [ -d "$dir/node_modules/mongodb" ] && [ -d "$dir/node_modules/mingo" ] && [ -d "$dir/node_modules/bson" ]; then
  exit 0
fi
cd "$dir"
if ! out=$(npm ci --prefer-offline --no-audit --no-fund --loglevel=error 2>&1); then
  printf '%s\n' "$out" >&2
  echo "mongo_setup.sh: npm ci failed in $dir" >&2
  exit 1
fi
