#!/usr/bin/env bash
# Set up (first time) and run the demo server on the embedded SQLite store.
# Extra arguments go to server.py, e.g. --port 9000 or --store memory://
# The demo installs only what it uses: a database driver (the setup.cfg extra mongo,
# redis or postgres) is added when --store / --users (or SESSION_STORE, MONGODB_URL,
# USERS_URL) name a URL that needs it.
set -euo pipefail
cd "$(dirname "$0")/.."

# The URLs the server will open: flags win over the environment.
urls=("${SESSION_STORE:-${MONGODB_URL:-}}" "${USERS_URL:-}")
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[$i]}" in
    --store|--users) urls+=("${args[$((i + 1))]:-}") ;;
    --store=*|--users=*) urls+=("${args[$i]#*=}") ;;
  esac
done
extras="demo"
for url in "${urls[@]}"; do
  extra=""
  case "${url%%://*}" in
    mongodb|mongodb+srv) extra="mongo" ;;
    redis|rediss|redis+cluster|rediss+cluster) extra="redis" ;;
    postgres|postgresql) extra="postgres" ;;
  esac
  if [ -n "$extra" ] && [[ ",$extras," != *",$extra,"* ]]; then
    extras="$extras,$extra"
    if [ ! -f ".venv/.installed-$(echo "$extras" | tr ',' '-')" ]; then
      echo "run-demo: ${url%%://*}:// needs its database driver: installing the [$extra] extra" >&2
    fi
  fi
done
# A first run prints nothing but this: setuptools' notes about editable installs
# (BuildBackendWarning) and pip's version notice are not for the demo's user. Errors still show.
export PIP_QUIET=2 PIP_DISABLE_PIP_VERSION_CHECK=1
if [ ! -f ".venv/.installed-$(echo "$extras" | tr ',' '-')" ]; then
  echo "run-demo: installing the demo's packages into .venv (first run, or setup.cfg changed)" >&2
fi
source scripts/bootstrap.sh "$extras"
exec .venv/bin/python server.py "$@"
