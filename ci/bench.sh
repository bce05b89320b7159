#!/usr/bin/env bash
# The full latency benchmark suite (README: "Performance"): every scenario at its default
# durations against Tachyon, the raw TCP relay (the floor) and NATS, in one run, so the ratios
# come from the same conditions. Writes everything under perf/results/<UTC timestamp>/:
#
#   report.txt     the printed tables, ratios and notes (stdout and stderr)
#   results.json   environment, settings, every result, every ratio
#   latency.svg    latency-by-percentile plot, one panel per combination, one line per system
#   hdr/           one V2 HdrHistogram (ns) per combination
#   micro/         criterion micro-benchmarks of the protocol and the router (BENCH_MICRO=1)
#
#   ci/bench.sh                       everything (~5 minutes of measurement)
#   ci/bench.sh pubsub filtered       only these scenarios
#   STRICT=1 ci/bench.sh              exit non-zero if a rate was missed or messages were lost
#   BENCH_MICRO=1 ci/bench.sh         also run the criterion micro-benchmarks
#
# Figures are printed, never asserted: the machine is shared and timings swing ~2×. A failed
# measurement (a server that would not start, a broken connection) does fail the script.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs="${CARGO_JOBS:-1}"

if ! command -v nats-server >/dev/null 2>&1 && [ ! -x /usr/sbin/nats-server ]; then
    sudo_cmd=""
    [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq nats-server >/dev/null
fi

cargo build --release -j "$jobs" --bin tachyon
cargo build --release -j "$jobs" -p tachyon-perf

out="perf/results/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"
strict=()
[ "${STRICT:-0}" = 1 ] && strict=(--strict)
scenarios=("$@")
[ "${#scenarios[@]}" -gt 0 ] || scenarios=(all)

status=0
target/release/tachyon-bench scenario "${scenarios[@]}" \
    --tachyon-bin target/release/tachyon \
    --json "$out/results.json" --hdr-dir "$out/hdr" --plot "$out/latency.svg" \
    "${strict[@]}" 2>&1 | tee "$out/report.txt" || status=$?

if [ -f "$out/latency.svg" ] && command -v rsvg-convert >/dev/null 2>&1; then
    rsvg-convert -o "$out/latency.png" "$out/latency.svg" || echo "note: rsvg-convert could not render the plot" >&2
fi

if [ "${BENCH_MICRO:-0}" = 1 ]; then
    mkdir -p "$out/micro"
    cargo bench -j "$jobs" -p tachyon-core --bench protocol --bench router -- \
        --warm-up-time 1 --measurement-time 3 2>&1 | tee "$out/micro/criterion.txt"
fi

echo "results in $out"
exit "$status"
