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
exec "$HERE/../pytest-suite.sh" "$HERE" "dashboard browser test (screenshots in $HERE/artifacts/)" "$@"
