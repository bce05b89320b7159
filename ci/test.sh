#!/usr/bin/env bash
# The one command that tests Tachyon on a fresh machine (README: "Test").
#
# Installs what it needs (Debian packages, cargo-fuzz, a Python virtualenv with the real AMPS
# client), then: format check, clippy with warnings denied, every Rust test, the conformance suite
# (journal, crash, logging and watchdog tests included), the admin API, dashboard (headless
# Chromium) and JSON Lines suites against the release binary, a short
# fuzz run of each target, and smoke passes of the latency, scenario and journal benchmarks (figures
# printed, never asserted).
#
#   ci/test.sh              everything
#   SKIP_FUZZ=1 ci/test.sh  skip the fuzz runs (e.g. on a laptop without cargo-fuzz)
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
step() { printf '\n== %s (%ds) ==\n' "$*" "$(( $(date +%s) - started ))"; }

step "system packages"
packages=(libhwloc-dev libudev-dev pkg-config nats-server python3-venv fio curl elfutils chromium fonts-dejavu-core)
missing=()
for package in "${packages[@]}"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
    sudo_cmd=""
    [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo_cmd apt-get update -qq
    $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi
echo "packages present: ${packages[*]}"

step "format"
cargo fmt --all -- --check

step "clippy (warnings denied)"
cargo clippy --workspace --all-targets --release -- -D warnings

step "build"
cargo build --workspace --release --all-targets

step "rust tests"
cargo test --workspace --release

step "micro-benchmarks run once as tests (so they never rot)"
cargo test --workspace --release --benches

step "conformance (real AMPS Python client against the release binary)"
TACHYON_BIN="$PWD/target/release/tachyon" tests/conformance/run.sh

step "admin API (health, statistics tree, Prometheus metrics over real HTTP)"
TACHYON_BIN="$PWD/target/release/tachyon" tests/admin/run.sh

step "dashboard in headless Chromium"
TACHYON_REQUIRE_CHROMIUM=1 TACHYON_BIN="$PWD/target/release/tachyon" tests/dashboard/run.sh

step "JSON Lines over HTTP (curl against the binary)"
TACHYON_BIN="$PWD/target/release/tachyon" tests/jsonl/run.sh

if [ "${SKIP_FUZZ:-0}" != 1 ]; then
    step "fuzz (short runs)"
    command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked --quiet
    for target in frame_header filter_parse; do
        # cargo fuzz passes -Zsanitizer; RUSTC_BOOTSTRAP lets the stable toolchain accept it.
        log="$(mktemp)"
        if ! (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" -- \
                -max_total_time="${FUZZ_SECONDS:-30}" -print_final_stats=1) >"$log" 2>&1; then
            tail -n 60 "$log" >&2
            echo "fuzz target $target failed (crash artifacts, if any, are in fuzz/artifacts/$target)" >&2
            exit 1
        fi
        echo "fuzz $target: $(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}') inputs, no crash"
        rm -f "$log"
    done
fi

step "latency benchmark (smoke: figures only, nothing asserted)"
target/release/tachyon-bench latency --smoke --tachyon-bin target/release/tachyon

step "scenario suite (smoke: every scenario, a second each, figures only)"
target/release/tachyon-bench scenario all --smoke --tachyon-bin target/release/tachyon

step "journal benchmark (smoke: CRC32C, write throughput against fio, recovery scan)"
target/release/tachyon-bench journal --smoke

step "done"
