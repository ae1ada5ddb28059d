#!/bin/sh
# Installs the npm packages of the MongoDB test server (tests/peers/mongo)
# from its lock file (see npm_setup.sh).
exec sh "$(dirname "$0")/npm_setup.sh" mongo mongodb mingo bson
