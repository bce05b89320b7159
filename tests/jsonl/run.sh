#!/usr/bin/env bash
# JSON Lines suite: drives the real tachyon binary's JSON Lines over HTTP port with curl
# (POST /publish, POST /sow, GET /subscribe), with raw AMPS clients on the other side.
#
#   tests/jsonl/run.sh [extra pytest args...]
#
# Env: TACHYON_BIN   server binary (default <repo>/target/release/tachyon)
#      TACHYON_VENV  virtualenv with pytest (default <repo>/.venv, as tests/conformance/run.sh makes it)
# Needs curl, the standard library and pytest. Exit status is pytest's (5 = no tests ran).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if ! command -v curl >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "run.sh: curl not found; installing it with apt-get" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null
        apt-get install -y -qq curl >/dev/null
    else
        echo "run.sh: curl not found (apt-get install curl)" >&2
        exit 2
    fi
fi
exec "$HERE/../pytest-suite.sh" "$HERE" "JSON Lines suite" "$@"
