#!/usr/bin/env bash
# Set up (first time) and run the whole test suite. Extra arguments go to pytest.
# The Mongo tests build and start a FerretDB test server when Go is installed, or use
# MONGODB_URL; set REQUIRE_MONGO=1 to fail instead of skipping when neither is there.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh "test"
exec .venv/bin/python -m pytest "$@"
