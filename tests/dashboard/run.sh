#!/usr/bin/env bash
# Dashboard browser test: the real tachyon binary serves GET /dashboard to a real headless Chromium
# while a publisher runs; the page's numbers must move. Screenshots land in tests/dashboard/artifacts/.
#
#   tests/dashboard/run.sh [extra pytest args...]
#
# Needs Debian's chromium package (as root: apt-get update && apt-get install -y chromium); without
# it the test is skipped, or fails when TACHYON_REQUIRE_CHROMIUM=1 (set that in CI).
#
# Env: TACHYON_BIN               server binary (default <repo>/target/release/tachyon)
#      TACHYON_VENV              virtualenv with pytest (default <repo>/.venv)
#      CHROMIUM_BIN              browser (default /usr/lib/chromium/chromium, then chromium on PATH)
#      TACHYON_REQUIRE_CHROMIUM  1: fail instead of skipping when no browser is installed
# Needs only the standard library and pytest. Exit status is pytest's (5 = no tests ran).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
VENV="${TACHYON_VENV:-$REPO/.venv}"
export TACHYON_BIN="${TACHYON_BIN:-$REPO/target/release/tachyon}"

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
    echo "run.sh: dashboard browser test FAILED (pytest exit status $rc); screenshots in $HERE/artifacts/" >&2
fi
exit "$rc"
