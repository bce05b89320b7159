#!/usr/bin/env bash
# The full latency benchmark suite (README: "Performance"): every scenario at its default
# durations against Tachyon, the raw TCP relay (the floor) and NATS, in one run, so the ratios
# come from the same conditions. The persisted-ack scenario's Tachyon keeps its transaction log
# in a fresh directory under target/ (the real disk, never tmpfs; removed afterwards). Writes
# everything under perf/results/<UTC timestamp>/:
#
#   report.txt     the printed tables, ratios and notes (stdout and stderr)
#   results.json   environment, settings, every result, every ratio
#   latency.svg    latency-by-percentile plot, one panel per combination, one line per system
#   hdr/           one V2 HdrHistogram (ns) per combination
#   micro/         criterion micro-benchmarks of the protocol and the router (BENCH_MICRO=1)
#   journal.txt    the transaction log on this disk: CRC32C, write throughput against fio's
#                  O_DIRECT bandwidth, recovery scan speed (`tachyon-bench journal`)
#   journal.json   the same as JSON
#
#   ci/bench.sh                       everything (~6 minutes of measurement)
#   ci/bench.sh pubsub filtered       only these scenarios (the journal is still measured)
#   BENCH_JOURNAL=0 ci/bench.sh       skip the journal measurements
#   STRICT=1 ci/bench.sh              exit non-zero if a rate was missed or messages were lost
#   BENCH_MICRO=1 ci/bench.sh         also run the criterion micro-benchmarks
#
# Figures are printed, never asserted: the machine is shared and timings swing ~2×. A failed
# measurement (a server that would not start, a broken connection) does fail the script.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs="${CARGO_JOBS:-1}"

missing=()
if ! command -v nats-server >/dev/null 2>&1 && [ ! -x /usr/sbin/nats-server ]; then
    missing+=(nats-server)
fi
command -v fio >/dev/null 2>&1 || missing+=(fio)
if [ "${#missing[@]}" -gt 0 ]; then
    sudo_cmd=""
    [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
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
    --tachyon-bin target/release/tachyon --journal-dir target \
    --json "$out/results.json" --hdr-dir "$out/hdr" --plot "$out/latency.svg" \
    "${strict[@]}" 2>&1 | tee "$out/report.txt" || status=$?

if [ -f "$out/latency.svg" ] && command -v rsvg-convert >/dev/null 2>&1; then
    rsvg-convert -o "$out/latency.png" "$out/latency.svg" || echo "note: rsvg-convert could not render the plot" >&2
fi

if [ "${BENCH_JOURNAL:-1}" = 1 ]; then
    # Measured in a fresh directory under target/, on the real disk (never tmpfs).
    target/release/tachyon-bench journal --json "$out/journal.json" 2>&1 \
        | tee "$out/journal.txt" || status=$?
fi

if [ "${BENCH_MICRO:-0}" = 1 ]; then
    mkdir -p "$out/micro"
    cargo bench -j "$jobs" -p tachyon-core --bench protocol --bench router -- \
        --warm-up-time 1 --measurement-time 3 2>&1 | tee "$out/micro/criterion.txt"
fi

echo "results in $out"
exit "$status"
