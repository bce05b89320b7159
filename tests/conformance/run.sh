#!/usr/bin/env bash
# Conformance suite: drives the real tachyon binary with the real AMPS Python client.
#
#   tests/conformance/run.sh [extra pytest args...]
#
# Env: TACHYON_BIN   server binary (default <repo>/target/release/tachyon)
#      TACHYON_VENV  virtualenv to use/create (default <repo>/.venv)
# Exit status is pytest's (0 = all passed; anything else = failure, incl. 5 = no tests ran).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
VENV="${TACHYON_VENV:-$REPO/.venv}"
export TACHYON_BIN="${TACHYON_BIN:-$REPO/target/release/tachyon}"
AMPS_PIN="amps-python-client==5.3.5.14"
PYTEST_PIN="pytest"

have_venv_module() {
    # venv needs ensurepip (Debian ships it separately in python3-venv / python3.X-venv)
    python3 -c 'import venv, ensurepip' >/dev/null 2>&1
}

if [ ! -x "$VENV/bin/python" ]; then
    if ! command -v python3 >/dev/null 2>&1; then
        echo "run.sh: python3 not found" >&2; exit 2
    fi
    if ! have_venv_module; then
        pyver="$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
        echo "run.sh: python3 venv/ensurepip missing; installing python3-venv via apt-get" >&2
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
            export DEBIAN_FRONTEND=noninteractive
            apt-get update -qq >/dev/null
            apt-get install -y -qq python3-venv >/dev/null || apt-get install -y -qq "python${pyver}-venv" >/dev/null
        else
            echo "run.sh: cannot install python3-venv (need root + apt-get)" >&2; exit 2
        fi
    fi
    rm -rf "$VENV"
    python3 -m venv "$VENV"
fi

# Install (or confirm) the pinned client; cheap no-op when already satisfied.
if ! "$VENV/bin/python" - <<'PY' >/dev/null 2>&1
import importlib.metadata as m, sys
sys.exit(0 if m.version("amps-python-client") == "5.3.5.14" and m.version("pytest") else 1)
PY
then
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$AMPS_PIN" "$PYTEST_PIN"
fi
"$VENV/bin/python" -c 'import AMPS' || { echo "run.sh: AMPS module does not import" >&2; exit 2; }

if [ ! -x "$TACHYON_BIN" ]; then
    echo "run.sh: server binary not found: $TACHYON_BIN (build with: cargo build --release --bin tachyon)" >&2
    exit 2
fi

cd "$REPO"
# Run the whole suite unless the arguments name tests/paths themselves (e.g. a file or file::test).
target=("$HERE")
for a in "$@"; do
    case "$a" in -*) ;; *) [ -e "${a%%::*}" ] && target=() ;; esac
done
set +e
"$VENV/bin/python" -m pytest -q -p no:cacheprovider "${target[@]}" "$@"
rc=$?
set -e
if [ "$rc" -ne 0 ]; then
    echo "run.sh: conformance suite FAILED (pytest exit status $rc)" >&2
fi
exit "$rc"
