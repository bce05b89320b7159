#!/usr/bin/env bash
# Runs one pytest suite folder against the release binary: makes sure the virtualenv has pytest
# and the binary exists, then runs pytest in that folder. Used by tests/<suite>/run.sh.
#
#   tests/pytest-suite.sh <suite folder> <suite name for messages> [extra pytest args...]
#
# Env: TACHYON_BIN   server binary (default <repo>/target/release/tachyon)
#      TACHYON_VENV  virtualenv with pytest (default <repo>/.venv, as tests/conformance/run.sh makes it)
# Exit status is pytest's (5 = no tests ran); 2 when the binary is missing.
set -euo pipefail

SUITE="$(cd "$1" && pwd)"
NAME="$2"
shift 2
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${TACHYON_VENV:-$REPO/.venv}"
export TACHYON_BIN="${TACHYON_BIN:-$REPO/target/release/tachyon}"

if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/python" -c 'import pytest' 2>/dev/null \
    || "$VENV/bin/python" -m pip install -q --disable-pip-version-check pytest
if [ ! -x "$TACHYON_BIN" ]; then
    echo "$NAME: server binary not found: $TACHYON_BIN (build with: cargo build --release --bin tachyon)" >&2
    exit 2
fi

cd "$SUITE"
set +e
"$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
rc=$?
set -e
if [ "$rc" -ne 0 ]; then
    echo "$NAME FAILED (pytest exit status $rc)" >&2
fi
exit "$rc"
