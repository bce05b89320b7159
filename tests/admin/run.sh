#!/usr/bin/env bash
# Admin API suite: drives the real tachyon binary over HTTP (health, /amps/instance, /metrics).
#
#   tests/admin/run.sh [extra pytest args...]
#
# Env: TACHYON_BIN   server binary (default <repo>/target/release/tachyon)
#      TACHYON_VENV  virtualenv with pytest (default <repo>/.venv, as tests/conformance/run.sh makes it)
# Needs only the standard library and pytest. Exit status is pytest's (5 = no tests ran).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec "$HERE/../pytest-suite.sh" "$HERE" "admin API suite" "$@"
