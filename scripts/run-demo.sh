#!/usr/bin/env bash
# Set up (first time) and run the demo server on the embedded SQLite store.
# Extra arguments go to server.py, e.g. --port 9000 or --store memory://
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh "mongo,redis,postgres,demo"
exec .venv/bin/python server.py "$@"
