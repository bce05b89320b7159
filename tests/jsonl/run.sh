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
REPO="$(cd "$HERE/../.." && pwd)"
VENV="${TACHYON_VENV:-$REPO/.venv}"
export TACHYON_BIN="${TACHYON_BIN:-$REPO/target/release/tachyon}"

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
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/python" -c 'import pytest' 2>/dev/null \
    || "$VENV/bin/python" -m pip install -q --disable-pip-version-check pytest
if [ ! -x "$TACHYON_BIN" ]; then
    echo "run.sh: server binary not found: $TACHYON_BIN (build with: cargo build --release --bin tachyon)" >&2
    exit 2
fi

cd "$HERE"
set +e
"$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
rc=$?
set -e
if [ "$rc" -ne 0 ]; then
    echo "run.sh: JSON Lines suite FAILED (pytest exit status $rc)" >&2
fi
exit "$rc"
