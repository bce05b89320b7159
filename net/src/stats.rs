//! Counters the shards keep, readable from any thread without locks.
//!
//! Each shard owns one [`ShardStats`] and is its only writer; readers (the log at shutdown, the
//! admin API later) load the atomics with relaxed ordering. Counters only grow; gauges (open connections, spool backlog) go both ways.

use std::sync::atomic::{AtomicU64, Ordering};

/// One shard's counters.
#[derive(Debug, Default)]
pub struct ShardStats {
    /// Connections accepted.
    pub connections_accepted: AtomicU64,
    /// Connections currently open.
    pub connections_open: AtomicU64,
    /// Frames read from clients.
    pub frames_in: AtomicU64,
    /// Bytes read from clients.
    pub bytes_in: AtomicU64,
    /// Messages published on this shard's connections.
    pub messages_published: AtomicU64,
    /// Frames queued to clients (deliveries, acks, heartbeats).
    pub frames_out: AtomicU64,
    /// Bytes written to clients.
    pub bytes_out: AtomicU64,
    /// Commands refused with a failure ack.
    pub commands_refused: AtomicU64,
    /// Connections closed for a protocol violation (oversized or unparseable frame).
    pub protocol_errors: AtomicU64,
    /// Connections closed as slow consumers: over their memory budget with spooling off, their
    /// spool over `limits.message_disk_limit`, or their spool file failing.
    pub slow_consumers_disconnected: AtomicU64,
    /// Times a connection started spooling to disk (over its memory budget, or the instance over
    /// `limits.message_memory_limit`).
    pub spools_opened: AtomicU64,
    /// Frames appended to spool files.
    pub messages_spooled: AtomicU64,
    /// Bytes appended to spool files.
    pub bytes_spooled: AtomicU64,
    /// Bytes in spool files not yet read back for sending (a gauge).
    pub spool_backlog_bytes: AtomicU64,
    /// Connections closed because their spool would have passed `limits.message_disk_limit`
    /// (also counted in `slow_consumers_disconnected`).
    pub spool_limit_disconnects: AtomicU64,
    /// Connections closed for missing heartbeats or logon.
    pub timeouts: AtomicU64,
    /// When the shard's loop last ran (milliseconds since the Unix epoch; 0 before it started):
    /// the watchdog's evidence of progress.
    pub last_active_unix_ms: AtomicU64,
}

impl ShardStats {
    /// Adds `amount` to a counter (single writer: the owning shard).
    pub fn add(counter: &AtomicU64, amount: u64) {
        counter.fetch_add(amount, Ordering::Relaxed);
    }

    /// Subtracts `amount` from a gauge.
    pub fn sub(counter: &AtomicU64, amount: u64) {
        counter.fetch_sub(amount, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
