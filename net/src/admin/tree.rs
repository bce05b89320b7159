//! The statistics tree in the AMPS monitoring style: `/amps/instance` and every path below it.
//!
//! The tree is rebuilt from a [`Snapshot`] per request (it is small) and a path walks it: object
//! keys by name, array entries by index (processors are numbered by shard, so
//! `/amps/instance/processors/1` is shard 1). This module renders only; it never reads an atomic
//! itself, and it renders the configuration by hand so `config.rs` needs no serializer.

use super::snapshot::{
    ClientSnapshot, ShardValues, Snapshot, SowSnapshot, CLIENT_VALUES, SHARD_COUNTERS,
};
use super::AdminState;
use crate::board::SubscriptionInfo;
use crate::config::Config;
use crate::latency::{LatencyCounts, LATENCY_BUCKET_BOUNDS_US};
use serde_json::{json, Map, Value};
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

/// The whole tree: `{"instance": {...}}`, so `/amps/<path>` is `root[path]`.
pub(crate) fn root(state: &AdminState, snapshot: &Snapshot) -> Value {
    json!({ "instance": instance(state, snapshot) })
}

/// `/amps/instance`.
fn instance(state: &AdminState, snapshot: &Snapshot) -> Value {
    let context = &state.context;
    let processors: Vec<Value> = snapshot
        .shards
        .iter()
        .enumerate()
        .map(|(shard, values)| {
            let mut processor = Map::new();
            processor.insert("id".into(), json!(shard));
            processor.insert("name".into(), json!(format!("tachyon-shard-{shard}")));
            insert_values(&mut processor, values);
            Value::Object(processor)
        })
        .collect();
    let mut totals = Map::new();
    insert_values(&mut totals, &snapshot.totals());
    let journal = snapshot.journal;
    let memory = snapshot.process.map(|process| {
        json!({
            "resident_bytes": process.resident_bytes,
            "resident_peak_bytes": process.resident_peak_bytes,
            "virtual_bytes": process.virtual_bytes,
            "locked_bytes": process.locked_bytes,
            "threads": process.threads,
        })
    });
    json!({
        "version": context.version,
        "started_at": rfc3339(snapshot.started_at),
        "started_at_unix_seconds": unix_seconds(snapshot.started_at),
        "uptime_seconds": snapshot.uptime.as_secs(),
        "admin": {
            "address": state.address.to_string(),
            "control_core": context.control_core.map(|core| core.0),
        },
        "placement": context.placement,
        "processors": processors,
        "transports": [{
            "id": "amps-tcp",
            "type": "tcp",
            "protocol": "amps",
            "message_type": "json",
            "address": context.config.transport.amps_tcp.to_string(),
        }],
        "journal": {
            "enabled": journal.enabled,
            "failed": journal.failed,
            "last_sequence": journal.last_sequence,
            "durable_up_to": journal.durable_up_to,
            "records_written": journal.records_written,
            "bytes_written": journal.bytes_written,
            "writes": journal.writes,
            "write_latency": latency(&journal.write_latency),
        },
        "latency": {
            "route": latency(&snapshot.route_latency),
        },
        "clients": clients(snapshot),
        "subscriptions": subscriptions(snapshot),
        "topics": topics(snapshot),
        "sow": sow(snapshot),
        "totals": totals,
        "memory": memory,
        "config": config(&context.config, state.address),
    })
}

/// `/amps/instance/clients`: each open connection by its id (`<shard>.<slot>.<generation>`).
fn clients(snapshot: &Snapshot) -> Value {
    let mut clients = Map::new();
    for client in &snapshot.clients {
        clients.insert(client.id.clone(), client_entry(client));
    }
    Value::Object(clients)
}

fn client_entry(client: &ClientSnapshot) -> Value {
    let mut entry = Map::new();
    entry.insert("id".into(), json!(client.id));
    entry.insert("name".into(), json!(client.identity.name));
    entry.insert("user".into(), json!(client.identity.user));
    entry.insert("logged_on".into(), json!(client.identity.logged_on));
    entry.insert("peer".into(), json!(client.peer.to_string()));
    entry.insert("shard".into(), json!(client.shard));
    entry.insert(
        "connected_at".into(),
        json!(rfc3339(
            UNIX_EPOCH + std::time::Duration::from_millis(client.connected_at_unix_ms)
        )),
    );
    for ((name, _), value) in CLIENT_VALUES.iter().zip(&client.values) {
        entry.insert((*name).into(), json!(value));
    }
    let subscriptions: Vec<Value> = client
        .subscriptions
        .iter()
        .map(|subscription| subscription_entry(subscription, Map::new()))
        .collect();
    entry.insert("subscriptions".into(), Value::Array(subscriptions));
    Value::Object(entry)
}

/// `/amps/instance/subscriptions`: every subscription of every client, one list.
fn subscriptions(snapshot: &Snapshot) -> Value {
    let mut all = Vec::new();
    for client in &snapshot.clients {
        for subscription in &client.subscriptions {
            let mut owner = Map::new();
            owner.insert("client".into(), json!(client.id));
            owner.insert("client_name".into(), json!(client.identity.name));
            all.push(subscription_entry(subscription, owner));
        }
    }
    Value::Array(all)
}

/// One subscription, after the fields already in `entry`.
fn subscription_entry(subscription: &SubscriptionInfo, mut entry: Map<String, Value>) -> Value {
    entry.insert("sub_id".into(), json!(subscription.sub_id));
    entry.insert("topic".into(), json!(subscription.topic));
    entry.insert("filter".into(), json!(subscription.filter));
    entry.insert("bookmark".into(), json!(subscription.bookmark));
    entry.insert("paused".into(), json!(subscription.paused));
    Value::Object(entry)
}

/// A SOW topic's size.
fn sow_entry(sow: &SowSnapshot) -> Value {
    json!({
        "records": sow.records,
        "bytes_used": sow.bytes_used,
        "bytes_free": sow.bytes_free,
        "slabs": sow.slabs,
    })
}

/// `/amps/instance/topics`: each topic routed so far, by name, with its subscription count.
fn topics(snapshot: &Snapshot) -> Value {
    let mut counts: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for subscription in snapshot
        .clients
        .iter()
        .flat_map(|client| &client.subscriptions)
    {
        *counts.entry(subscription.topic.as_str()).or_default() += 1;
    }
    let mut topics = Map::new();
    for (name, topic) in &snapshot.topics {
        let subscriptions = counts.get(name.as_str()).copied().unwrap_or(0);
        topics.insert(
            name.clone(),
            json!({
                "messages_in": topic.messages_in,
                "bytes_in": topic.bytes_in,
                "deliveries": topic.deliveries,
                "subscriptions": subscriptions,
                "sow": topic.sow.as_ref().map(sow_entry),
            }),
        );
    }
    Value::Object(topics)
}

/// `/amps/instance/sow`: each SOW topic's size.
fn sow(snapshot: &Snapshot) -> Value {
    let mut topics = Map::new();
    for (name, topic) in &snapshot.topics {
        if let Some(sow) = &topic.sow {
            topics.insert(name.clone(), sow_entry(sow));
        }
    }
    Value::Object(topics)
}

/// A latency histogram: count, mean, quantiles (each the upper bound of its power-of-two
/// bucket, so within a factor of two above the true value) and the buckets themselves.
pub(crate) fn latency(counts: &LatencyCounts) -> Value {
    let quantile = |q: f64| {
        counts.quantile_upper_bound_us(q).map(|bound| {
            if bound == u64::MAX {
                json!("overflow")
            } else {
                json!(bound)
            }
        })
    };
    json!({
        "count": counts.count,
        "mean_us": (counts.count > 0).then(|| counts.sum_ns as f64 / counts.count as f64 / 1000.0),
        "p50_us_at_most": quantile(0.50),
        "p90_us_at_most": quantile(0.90),
        "p99_us_at_most": quantile(0.99),
        "bucket_bounds_us": LATENCY_BUCKET_BOUNDS_US,
        "bucket_counts": counts.buckets,
    })
}

/// Adds each shard counter under its field name.
fn insert_values(object: &mut Map<String, Value>, values: &ShardValues) {
    for (counter, value) in SHARD_COUNTERS.iter().zip(values) {
        object.insert(counter.name.into(), json!(value));
    }
}

/// The effective configuration, key for key as the TOML file spells it. `admin_address` stands
/// in for the `[admin]` table, which the admin API knows from its context.
pub(crate) fn config(config: &Config, admin_address: SocketAddr) -> Value {
    let runtime = &config.runtime;
    let limits = &config.limits;
    let journal = &config.journal;
    let sow_topics: Vec<Value> = config
        .sow
        .topics
        .iter()
        .map(|topic| {
            json!({
                "topic": topic.topic,
                "key_fields": topic.key_fields,
                "slab_size_bytes": topic.slab_size_bytes,
                "durability": topic.durability,
                "expiration_seconds": topic.expiration_seconds,
            })
        })
        .collect();
    json!({
        "data_dir": config.data_dir.display().to_string(),
        "transport": { "amps_tcp": config.transport.amps_tcp.to_string() },
        "runtime": {
            "shards": runtime.shards,
            "cores": runtime.cores,
            "nic": runtime.nic,
            "spin_before_park_us": runtime.spin_before_park_us,
            "io_memory_bytes": runtime.io_memory_bytes,
            "lock_memory": runtime.lock_memory,
            "topic_routing": snake_case(&format!("{:?}", runtime.topic_routing)),
        },
        "limits": {
            "frame_bytes_max": limits.frame_bytes_max,
            "client_outbound_bytes_max": limits.client_outbound_bytes_max,
            "subscriptions_per_client_max": limits.subscriptions_per_client_max,
            "receive_buffer_bytes": limits.receive_buffer_bytes,
            "mesh_channel_depth": limits.mesh_channel_depth,
            "logon_timeout_seconds": limits.logon_timeout_seconds,
            "message_memory_limit": limits.message_memory_limit,
            "message_disk_path": limits.spool_directory(&config.data_dir).display().to_string(),
            "message_disk_limit": limits.message_disk_limit,
        },
        "sow": {
            "snapshot_interval_seconds": config.sow.snapshot_interval_seconds,
            "topics": sow_topics,
        },
        "journal": {
            "topics": journal.topics,
            "segment_size_bytes": journal.segment_size_bytes,
            "spare_segments": journal.spare_segments,
            "max_record_bytes": journal.max_record_bytes,
            "max_buffered_bytes": journal.max_buffered_bytes,
            "backend": journal.backend,
            "persisted_ack_interval_ms": journal.persisted_ack_interval_ms,
            "retention_max_age_seconds": journal.retention_max_age_seconds,
            "retention_max_bytes": journal.retention_max_bytes,
            "allow_truncate_corruption": journal.allow_truncate_corruption,
            "fault_injection": journal.fault_injection.as_ref().map(|fault| json!({
                "operation": fault.operation,
                "after_groups": fault.after_groups,
            })),
        },
        "admin": { "address": admin_address.to_string() },
        "jsonl": { "address": config.jsonl.address.to_string() },
        "watchdog": {
            "stuck_after_ms": config.watchdog.stuck_after_ms,
            "minidump_after_seconds": config.watchdog.minidump_after_seconds,
            "minidump_dir": config.watchdog.minidump_dir.display().to_string(),
            "debug_block_command": config.watchdog.debug_block_command,
        },
        "logging": {
            "file": config.logging.file.as_ref().map(|file| file.display().to_string()),
            "max_bytes": config.logging.max_bytes,
            "keep": config.logging.keep,
            "compress": config.logging.compress,
        },
    })
}

/// A path that names nothing in the tree: how far it got and what exists there.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct NotFound {
    /// The segments that matched.
    pub(crate) found: Vec<String>,
    /// The children of the last node that matched (keys, or index range for an array).
    pub(crate) children: Vec<String>,
}

/// Walks the `/`-separated `path` down from `node`; empty segments (doubled or trailing slashes) are skipped.
pub(crate) fn lookup<'a>(node: &'a Value, path: &str) -> Result<&'a Value, NotFound> {
    let mut node = node;
    let mut found = Vec::new();
    for segment in path.split('/').filter(|segment| !segment.is_empty()) {
        let next = match node {
            Value::Object(object) => object.get(segment),
            Value::Array(array) => segment
                .parse::<usize>()
                .ok()
                .and_then(|index| array.get(index)),
            _ => None,
        };
        match next {
            Some(child) => {
                node = child;
                found.push(segment.to_string());
            }
            None => {
                let children = match node {
                    Value::Object(object) => object.keys().cloned().collect(),
                    Value::Array(array) if !array.is_empty() => {
                        vec![format!("0..={}", array.len() - 1)]
                    }
                    _ => Vec::new(),
                };
                return Err(NotFound { found, children });
            }
        }
    }
    Ok(node)
}

/// `OrderedFifo` → `ordered_fifo`, the spelling the config file uses for enum values.
fn snake_case(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 4);
    for (index, character) in camel.chars().enumerate() {
        if character.is_ascii_uppercase() {
            if index > 0 {
                out.push('_');
            }
            out.push(character.to_ascii_lowercase());
        } else {
            out.push(character);
        }
    }
    out
}

/// Seconds since the Unix epoch, with milliseconds.
pub(crate) fn unix_seconds(time: SystemTime) -> f64 {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    since.as_millis() as f64 / 1000.0
}

/// `2024-05-01T12:34:56.789Z`: RFC 3339 in UTC, without a date library.
pub(crate) fn rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since.as_secs();
    let (year, month, day) = tachyon_core::civil::civil_from_days((seconds / 86_400) as i64);
    let second_of_day = seconds % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        second_of_day / 3600,
        second_of_day % 3600 / 60,
        second_of_day % 60,
        since.subsec_millis()
    )
}
