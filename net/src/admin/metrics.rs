//! Prometheus text exposition format 0.0.4 for `GET /metrics`.
//!
//! Every family gets its `# HELP` and `# TYPE` line before its samples. Cardinality is bounded
//! by construction: the only label is `shard` (one value per data-plane shard), except the
//! single `tachyon_build_info` sample, which carries the version as Prometheus convention asks.
//! Nothing here may label by client, topic or anything else that grows with traffic.

use super::snapshot::{MetricKind, Snapshot, SHARD_COUNTERS};
use super::tree::unix_seconds;
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
        family(&mut out, name, help, MetricKind::Gauge);
        let _ = writeln!(out, "{name} {value}");
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
            family(&mut out, name, help, MetricKind::Gauge);
            let _ = writeln!(out, "{name} {value}");
        }
    }
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
