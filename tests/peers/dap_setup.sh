#!/bin/sh
# Installs the npm packages of the DAP test client (tests/peers/dap:
# Microsoft's DebugClient, @vscode/debugadapter-testsupport) from its lock
# file. Quiet and quick when they are already there; after a first install
# it works offline (npm ci --prefer-offline uses npm's cache).
set -eu
dir=$(cd "$(dirname "$0")/dap" && pwd)
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "dap_setup.sh: node and npm are needed (Debian: apt-get install nodejs npm)" >&2
  exit 1
fi
stamp="$dir/node_modules/.package-lock.json"
if [ -f "$stamp" ] && [ ! "$dir/package-lock.json" -nt "$stamp" ] \
   && [ -d "$dir/node_modules/@vscode/debugadapter-testsupport" ] \
   && [ -d "$dir/node_modules/@vscode/debugprotocol" ]; then
  exit 0
fi
cd "$dir"
if ! out=$(npm ci --prefer-offline --no-audit --no-fund --loglevel=error 2>&1); then
  printf '%s\n' "$out" >&2
  echo "dap_setup.sh: npm ci failed in $dir" >&2
  exit 1
fi
