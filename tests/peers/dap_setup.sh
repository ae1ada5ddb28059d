#!/bin/sh
# Installs the npm packages of the DAP test client (tests/peers/dap:
# Microsoft's DebugClient, @vscode/debugadapter-testsupport) from its lock
# file (see npm_setup.sh).
exec sh "$(dirname "$0")/npm_setup.sh" dap @vscode/debugadapter-testsupport @vscode/debugprotocol
