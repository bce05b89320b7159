//! One reading of the instance's counters, taken per request and shared by the JSON tree and
//! `/metrics`, plus the one table that names, documents and classifies every shard counter.
//!
//! Reading is a relaxed load per atomic: the shards never wait for the admin API. Values from
//! different shards are not a single atomic cut, which monitoring does not need.

use super::AdminContext;
use crate::board::{get, ClientIdentity, ClientStats, SubscriptionInfo, TopicStats};
use crate::latency::LatencyCounts;
use crate::stats::ShardStats;
use std::collections::BTreeMap;
use std::net::SocketAddr;
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
    /// Records written and synced.
    pub(crate) records_written: u64,
    /// Bytes written and synced.
    pub(crate) bytes_written: u64,
    /// Write+sync groups completed.
    pub(crate) writes: u64,
    /// How long write+sync groups took.
    pub(crate) write_latency: LatencyCounts,
}

/// One client connection's values.
#[derive(Clone, Debug)]
pub(crate) struct ClientSnapshot {
    /// The id the admin API names it by (`<shard>.<slot>.<generation>`).
    pub(crate) id: String,
    /// The shard that owns the connection.
    pub(crate) shard: u16,
    /// The client's address.
    pub(crate) peer: SocketAddr,
    /// When it connected (ms since the Unix epoch).
    pub(crate) connected_at_unix_ms: u64,
    /// Name, user, logged on.
    pub(crate) identity: ClientIdentity,
    /// Its subscriptions.
    pub(crate) subscriptions: Vec<SubscriptionInfo>,
    /// Counters and gauges, in [`CLIENT_VALUES`] order.
    pub(crate) values: [u64; CLIENT_VALUES.len()],
}

/// Where one per-client value lives.
pub(crate) type ClientValue = fn(&ClientStats) -> &AtomicU64;

/// The per-client values: name (as in the tree) and where each lives.
pub(crate) const CLIENT_VALUES: [(&str, ClientValue); 9] = [
    ("bytes_in", |client| &client.bytes_in),
    ("frames_in", |client| &client.frames_in),
    ("messages_in", |client| &client.messages_in),
    ("bytes_out", |client| &client.bytes_out),
    ("frames_out", |client| &client.frames_out),
    ("messages_out", |client| &client.messages_out),
    ("queue_depth_bytes", |client| &client.queued_bytes),
    ("spooled_bytes", |client| &client.spooled_bytes),
    ("spools_opened", |client| &client.spools_opened),
];

/// One topic's values, added up over the shards that route it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TopicSnapshot {
    /// Messages published to it.
    pub(crate) messages_in: u64,
    /// Payload bytes published to it.
    pub(crate) bytes_in: u64,
    /// Deliveries of its messages.
    pub(crate) deliveries: u64,
    /// Its SOW, when it is a SOW topic.
    pub(crate) sow: Option<SowSnapshot>,
}

/// A SOW topic's size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct SowSnapshot {
    /// Records stored.
    pub(crate) records: u64,
    /// Bytes in allocated record blocks.
    pub(crate) bytes_used: u64,
    /// Bytes of slab space not in any block.
    pub(crate) bytes_free: u64,
    /// Slabs allocated.
    pub(crate) slabs: u64,
}

impl TopicSnapshot {
    fn add(&mut self, stats: &TopicStats) {
        self.messages_in += get(&stats.messages_in);
        self.bytes_in += get(&stats.bytes_in);
        self.deliveries += get(&stats.deliveries);
        if stats.sow.load(std::sync::atomic::Ordering::Relaxed) {
            let sow = self.sow.get_or_insert_with(SowSnapshot::default);
            sow.records += get(&stats.sow_records);
            sow.bytes_used += get(&stats.sow_bytes_used);
            sow.bytes_free += get(&stats.sow_bytes_free);
            sow.slabs += get(&stats.sow_slabs);
        }
    }
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
    /// Open connections, by shard then slot.
    pub(crate) clients: Vec<ClientSnapshot>,
    /// Topics by name.
    pub(crate) topics: BTreeMap<String, TopicSnapshot>,
    /// Receipt-to-queued routing latency, all shards together.
    pub(crate) route_latency: LatencyCounts,
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
            records_written: get(&shared.records_written),
            bytes_written: get(&shared.bytes_written),
            writes: get(&shared.writes),
            write_latency: shared.write_latency.read(),
        };
        let mut clients = Vec::new();
        let mut topics: BTreeMap<String, TopicSnapshot> = BTreeMap::new();
        let mut route_latency = LatencyCounts::default();
        for board in &context.boards {
            for client in board.clients() {
                clients.push(ClientSnapshot::take(&client));
            }
            for topic in board.topics() {
                topics.entry(topic.name.clone()).or_default().add(&topic);
            }
            route_latency.add(&board.route_latency.read());
        }
        Snapshot {
            shards,
            journal,
            started_at: context.started_at,
            uptime: SystemTime::now()
                .duration_since(context.started_at)
                .unwrap_or_default(),
            process: ProcessSnapshot::read(),
            clients,
            topics,
            route_latency,
        }
    }

    /// The client the admin API calls `id`, by its id or, when exactly one client has it, by
    /// its logon name.
    pub(crate) fn client(&self, id: &str) -> Result<&ClientSnapshot, ClientLookup> {
        if let Some(client) = self.clients.iter().find(|client| client.id == id) {
            return Ok(client);
        }
        let mut named = self
            .clients
            .iter()
            .filter(|client| client.identity.logged_on && client.identity.name == id);
        match (named.next(), named.next()) {
            (Some(client), None) => Ok(client),
            (Some(_), Some(_)) => Err(ClientLookup::Ambiguous),
            (None, _) => Err(ClientLookup::Missing),
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

/// Why a client id named no single client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ClientLookup {
    /// No open connection has that id or name.
    Missing,
    /// Several connections logged on with that name: use the connection id.
    Ambiguous,
}

impl ClientSnapshot {
    /// Reads one client's entry.
    pub(crate) fn take(client: &ClientStats) -> ClientSnapshot {
        let mut values = [0; CLIENT_VALUES.len()];
        for (value, (_, read)) in values.iter_mut().zip(&CLIENT_VALUES) {
            *value = get(read(client));
        }
        ClientSnapshot {
            id: client_id(client),
            shard: client.connection.shard.0,
            peer: client.peer,
            connected_at_unix_ms: client.connected_at_unix_ms,
            identity: client.identity(),
            subscriptions: client.subscriptions(),
            values,
        }
    }
}

/// The admin API's id for a connection: `<shard>.<slot>.<generation>`, safe in a URL path.
pub(crate) fn client_id(client: &ClientStats) -> String {
    let connection = client.connection;
    format!(
        "{}.{}.{}",
        connection.shard.0, connection.slot, connection.generation
    )
}
