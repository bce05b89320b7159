//! Prometheus text exposition format 0.0.4 for `GET /metrics`.
//!
//! Every family gets its `# HELP` and `# TYPE` line before its samples. Cardinality is bounded
//! by construction: the only labels are `shard` (one value per data-plane shard) and a
//! histogram's `le` (a fixed set of bucket bounds), except the single `tachyon_build_info`
//! sample, which carries the version as Prometheus convention asks. Per-client and per-topic
//! figures are in the JSON tree, not here.
//! Nothing here may label by client, topic or anything else that grows with traffic.

use super::snapshot::{MetricKind, Snapshot, SHARD_COUNTERS};
use super::tree::unix_seconds;
use crate::latency::{LatencyCounts, LATENCY_BUCKET_BOUNDS_US};
use std::fmt::Write;

/// The `Content-Type` of the exposition.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders every metric.
pub(crate) fn render(snapshot: &Snapshot, version: &str) -> String {
    let mut out = String::with_capacity(256 * (SHARD_COUNTERS.len() + 8));
    for (index, counter) in SHARD_COUNTERS.iter().enumerate() {
        let name = counter.metric_name();
        family(&mut out, &name, counter.help, counter.kind);
        for (shard, values) in snapshot.shards.iter().enumerate() {
            let _ = writeln!(out, "{name}{{shard=\"{shard}\"}} {}", values[index]);
        }
    }
    let journal = snapshot.journal;
    let gauges: [(&str, &str, f64); 7] = [
        (
            "tachyon_shards",
            "Data-plane shards (network processors) running.",
            snapshot.shards.len() as f64,
        ),
        (
            "tachyon_journal_enabled",
            "1 when a transaction log is configured (any journaled topic), else 0.",
            flag(journal.enabled),
        ),
        (
            "tachyon_journal_failed",
            "1 when the journal hit an I/O error and refuses journaled publishes until restart.",
            flag(journal.failed),
        ),
        (
            "tachyon_journal_last_sequence",
            "Sequence of the last record appended to the journal.",
            journal.last_sequence as f64,
        ),
        (
            "tachyon_journal_durable_sequence",
            "Every journal record up to this sequence is durable on disk.",
            journal.durable_up_to as f64,
        ),
        (
            "tachyon_uptime_seconds",
            "Seconds since the instance started.",
            snapshot.uptime.as_secs_f64(),
        ),
        (
            "tachyon_start_time_seconds",
            "Start time of the instance since the Unix epoch, in seconds.",
            unix_seconds(snapshot.started_at),
        ),
    ];
    for (name, help, value) in gauges {
        unlabelled(&mut out, name, help, MetricKind::Gauge, value);
    }
    if let Some(process) = snapshot.process {
        let gauges: [(&str, &str, u64); 5] = [
            (
                "tachyon_memory_resident_bytes",
                "Resident memory of the process (VmRSS).",
                process.resident_bytes,
            ),
            (
                "tachyon_memory_resident_peak_bytes",
                "Peak resident memory of the process (VmHWM).",
                process.resident_peak_bytes,
            ),
            (
                "tachyon_memory_virtual_bytes",
                "Virtual memory of the process (VmSize).",
                process.virtual_bytes,
            ),
            (
                "tachyon_memory_locked_bytes",
                "Memory locked by mlock or mlockall (VmLck).",
                process.locked_bytes,
            ),
            (
                "tachyon_threads",
                "Threads in the process.",
                process.threads,
            ),
        ];
        for (name, help, value) in gauges {
            unlabelled(&mut out, name, help, MetricKind::Gauge, value);
        }
    }
    let journal_counters: [(&str, &str, u64); 3] = [
        (
            "tachyon_journal_records_written_total",
            "Journal records written and synced.",
            journal.records_written,
        ),
        (
            "tachyon_journal_bytes_written_total",
            "Journal bytes written and synced (padded to whole blocks).",
            journal.bytes_written,
        ),
        (
            "tachyon_journal_writes_total",
            "Journal write+sync groups completed (one sync each).",
            journal.writes,
        ),
    ];
    for (name, help, value) in journal_counters {
        unlabelled(&mut out, name, help, MetricKind::Counter, value);
    }
    let topic_gauges: [(&str, &str, usize); 3] = [
        (
            "tachyon_clients",
            "Client connections listed by the admin API.",
            snapshot.clients.len(),
        ),
        (
            "tachyon_subscriptions",
            "Subscriptions of all clients.",
            snapshot
                .clients
                .iter()
                .map(|client| client.subscriptions.len())
                .sum(),
        ),
        (
            "tachyon_topics",
            "Topics routed since start (each shard tracks a bounded number by name).",
            snapshot.topics.len(),
        ),
    ];
    for (name, help, value) in topic_gauges {
        unlabelled(&mut out, name, help, MetricKind::Gauge, value);
    }
    histogram(
        &mut out,
        "tachyon_route_latency_seconds",
        "From a message's receipt to its deliveries queued for every subscriber (routing, filtering, SOW update).",
        &snapshot.route_latency,
    );
    histogram(
        &mut out,
        "tachyon_journal_write_latency_seconds",
        "From a journal write being handed to the kernel to its sync completing.",
        &journal.write_latency,
    );
    family(
        &mut out,
        "tachyon_build_info",
        "Always 1; the version label names the running build.",
        MetricKind::Gauge,
    );
    let _ = writeln!(
        out,
        "tachyon_build_info{{version=\"{}\"}} 1",
        escape_label(version)
    );
    out
}

/// A histogram family: cumulative `_bucket{le=…}` samples in seconds, `+Inf`, `_sum`, `_count`.
fn histogram(out: &mut String, name: &str, help: &str, counts: &LatencyCounts) {
    let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
    let _ = writeln!(out, "# TYPE {name} histogram");
    let mut cumulative = 0u64;
    for (bound_us, count) in LATENCY_BUCKET_BOUNDS_US.iter().zip(&counts.buckets) {
        cumulative += count;
        let _ = writeln!(
            out,
            "{name}_bucket{{le=\"{}\"}} {cumulative}",
            *bound_us as f64 / 1e6
        );
    }
    cumulative += counts.buckets[LATENCY_BUCKET_BOUNDS_US.len()];
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
    let _ = writeln!(out, "{name}_sum {}", counts.sum_ns as f64 / 1e9);
    let _ = writeln!(out, "{name}_count {cumulative}");
}

/// A family with one sample and no labels.
fn unlabelled(
    out: &mut String,
    name: &str,
    help: &str,
    kind: MetricKind,
    value: impl std::fmt::Display,
) {
    family(out, name, help, kind);
    let _ = writeln!(out, "{name} {value}");
}

/// Writes a family's `# HELP` and `# TYPE` lines.
fn family(out: &mut String, name: &str, help: &str, kind: MetricKind) {
    let kind = match kind {
        MetricKind::Counter => "counter",
        MetricKind::Gauge => "gauge",
    };
    let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn flag(value: bool) -> f64 {
    if value {
        1.0
    } else {
        0.0
    }
}

/// HELP text escapes backslash and newline.
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Label values escape backslash, double quote and newline.
pub(crate) fn escape_label(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
