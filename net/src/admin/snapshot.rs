//! One reading of the instance's counters, taken per request and shared by the JSON tree and
//! `/metrics`, plus the one table that names, documents and classifies every shard counter.
//!
//! Reading is a relaxed load per atomic: the shards never wait for the admin API. Values from
//! different shards are not a single atomic cut, which monitoring does not need.

use super::AdminContext;
use crate::stats::ShardStats;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime};

/// Whether a value only grows (a Prometheus counter) or goes both ways (a gauge).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MetricKind {
    /// Only grows; Prometheus names it `…_total`.
    Counter,
    /// Goes up and down.
    Gauge,
}

/// One field of [`ShardStats`]: its name, kind and meaning.
pub(crate) struct ShardCounter {
    /// The field name, also the key in the JSON tree.
    pub(crate) name: &'static str,
    /// Counter or gauge.
    pub(crate) kind: MetricKind,
    /// One sentence for the Prometheus `# HELP` line.
    pub(crate) help: &'static str,
    /// Where the value lives.
    pub(crate) read: fn(&ShardStats) -> &AtomicU64,
}

impl ShardCounter {
    /// The Prometheus metric name: `tachyon_<name>_total` for counters, `tachyon_<name>` for gauges.
    pub(crate) fn metric_name(&self) -> String {
        match self.kind {
            MetricKind::Counter => format!("tachyon_{}_total", self.name),
            MetricKind::Gauge => format!("tachyon_{}", self.name),
        }
    }
}

/// Every [`ShardStats`] field, in declaration order. A test compares this table with the struct,
/// so a counter added there and forgotten here fails the build's tests, not an operator.
pub(crate) const SHARD_COUNTERS: [ShardCounter; 17] = [
    ShardCounter {
        name: "connections_accepted",
        kind: MetricKind::Counter,
        help: "Client connections accepted.",
        read: |stats| &stats.connections_accepted,
    },
    ShardCounter {
        name: "connections_open",
        kind: MetricKind::Gauge,
        help: "Client connections currently open.",
        read: |stats| &stats.connections_open,
    },
    ShardCounter {
        name: "frames_in",
        kind: MetricKind::Counter,
        help: "Frames read from clients.",
        read: |stats| &stats.frames_in,
    },
    ShardCounter {
        name: "bytes_in",
        kind: MetricKind::Counter,
        help: "Bytes read from clients.",
        read: |stats| &stats.bytes_in,
    },
    ShardCounter {
        name: "messages_published",
        kind: MetricKind::Counter,
        help: "Messages published on this shard's connections.",
        read: |stats| &stats.messages_published,
    },
    ShardCounter {
        name: "frames_out",
        kind: MetricKind::Counter,
        help: "Frames queued to clients (deliveries, acks, heartbeats).",
        read: |stats| &stats.frames_out,
    },
    ShardCounter {
        name: "bytes_out",
        kind: MetricKind::Counter,
        help: "Bytes written to clients.",
        read: |stats| &stats.bytes_out,
    },
    ShardCounter {
        name: "commands_refused",
        kind: MetricKind::Counter,
        help: "Commands refused with a failure ack.",
        read: |stats| &stats.commands_refused,
    },
    ShardCounter {
        name: "protocol_errors",
        kind: MetricKind::Counter,
        help: "Connections closed for a protocol violation (oversized or unparseable frame).",
        read: |stats| &stats.protocol_errors,
    },
    ShardCounter {
        name: "slow_consumers_disconnected",
        kind: MetricKind::Counter,
        help: "Connections closed as slow consumers (over budget with spooling off, spool over limits.message_disk_limit, or spool failure).",
        read: |stats| &stats.slow_consumers_disconnected,
    },
    ShardCounter {
        name: "spools_opened",
        kind: MetricKind::Counter,
        help: "Times a connection started spooling to disk (over its memory budget or the instance over limits.message_memory_limit).",
        read: |stats| &stats.spools_opened,
    },
    ShardCounter {
        name: "messages_spooled",
        kind: MetricKind::Counter,
        help: "Frames appended to spool files.",
        read: |stats| &stats.messages_spooled,
    },
    ShardCounter {
        name: "bytes_spooled",
        kind: MetricKind::Counter,
        help: "Bytes appended to spool files.",
        read: |stats| &stats.bytes_spooled,
    },
    ShardCounter {
        name: "spool_backlog_bytes",
        kind: MetricKind::Gauge,
        help: "Bytes in spool files not yet read back for sending.",
        read: |stats| &stats.spool_backlog_bytes,
    },
    ShardCounter {
        name: "spool_limit_disconnects",
        kind: MetricKind::Counter,
        help: "Connections closed because their spool would have passed limits.message_disk_limit.",
        read: |stats| &stats.spool_limit_disconnects,
    },
    ShardCounter {
        name: "timeouts",
        kind: MetricKind::Counter,
        help: "Connections closed for missing heartbeats or logon.",
        read: |stats| &stats.timeouts,
    },
    ShardCounter {
        name: "last_active_unix_ms",
        kind: MetricKind::Gauge,
        help: "When the shard's loop last ran (ms since the Unix epoch); the watchdog's progress stamp.",
        read: |stats| &stats.last_active_unix_ms,
    },
];

/// One shard's values, in [`SHARD_COUNTERS`] order.
pub(crate) type ShardValues = [u64; SHARD_COUNTERS.len()];

/// The journal's state as the shards last published it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct JournalSnapshot {
    /// Whether any topic is journaled (a journal exists).
    pub(crate) enabled: bool,
    /// The journal hit an I/O error and takes no more writes.
    pub(crate) failed: bool,
    /// The sequence of the last record appended.
    pub(crate) last_sequence: u64,
    /// Every record up to this sequence is durable.
    pub(crate) durable_up_to: u64,
}

/// The process's memory and threads as the kernel reports them (`/proc/self/status`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ProcessSnapshot {
    /// Resident set size (`VmRSS`).
    pub(crate) resident_bytes: u64,
    /// Peak resident set size (`VmHWM`).
    pub(crate) resident_peak_bytes: u64,
    /// Virtual memory size (`VmSize`).
    pub(crate) virtual_bytes: u64,
    /// Memory locked with mlock/mlockall (`VmLck`).
    pub(crate) locked_bytes: u64,
    /// Threads in the process.
    pub(crate) threads: u64,
}

impl ProcessSnapshot {
    /// Reads `/proc/self/status`; `None` where procfs is not mounted.
    fn read() -> Option<ProcessSnapshot> {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .map(|status| ProcessSnapshot::parse(&status))
    }

    /// Parses the `Key:\tvalue [kB]` lines of `/proc/<pid>/status`; missing keys read as 0.
    pub(crate) fn parse(status: &str) -> ProcessSnapshot {
        let mut process = ProcessSnapshot::default();
        for line in status.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let mut words = value.split_whitespace();
            let number: u64 = words.next().and_then(|n| n.parse().ok()).unwrap_or(0);
            let bytes = if words.next() == Some("kB") {
                number.saturating_mul(1024)
            } else {
                number
            };
            match key {
                "VmRSS" => process.resident_bytes = bytes,
                "VmHWM" => process.resident_peak_bytes = bytes,
                "VmSize" => process.virtual_bytes = bytes,
                "VmLck" => process.locked_bytes = bytes,
                "Threads" => process.threads = number,
                _ => {}
            }
        }
        process
    }
}

/// Everything a request reports, read once.
pub(crate) struct Snapshot {
    /// One entry per shard, indexed by shard number.
    pub(crate) shards: Vec<ShardValues>,
    /// The journal.
    pub(crate) journal: JournalSnapshot,
    /// When the instance started.
    pub(crate) started_at: SystemTime,
    /// Time since `started_at` (zero if the clock went backwards).
    pub(crate) uptime: Duration,
    /// Memory and threads, when procfs can say.
    pub(crate) process: Option<ProcessSnapshot>,
}

impl Snapshot {
    /// Reads every counter now.
    pub(crate) fn take(context: &AdminContext) -> Snapshot {
        let shards = context
            .stats
            .iter()
            .map(|stats| {
                let mut values: ShardValues = [0; SHARD_COUNTERS.len()];
                for (value, counter) in values.iter_mut().zip(&SHARD_COUNTERS) {
                    *value = ShardStats::get((counter.read)(stats));
                }
                values
            })
            .collect();
        let shared = &context.journal;
        let journal = JournalSnapshot {
            enabled: context.config.journal.enabled(),
            failed: shared.has_failed(),
            last_sequence: ShardStats::get(&shared.last_sequence),
            durable_up_to: ShardStats::get(&shared.durable_up_to),
        };
        Snapshot {
            shards,
            journal,
            started_at: context.started_at,
            uptime: SystemTime::now()
                .duration_since(context.started_at)
                .unwrap_or_default(),
            process: ProcessSnapshot::read(),
        }
    }

    /// Each value summed over the shards (for gauges too: open connections add up).
    pub(crate) fn totals(&self) -> ShardValues {
        let mut totals: ShardValues = [0; SHARD_COUNTERS.len()];
        for values in &self.shards {
            for (total, value) in totals.iter_mut().zip(values) {
                *total = total.saturating_add(*value);
            }
        }
        totals
    }
}
