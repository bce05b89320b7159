//! Identifiers that carry meaning: shards, connections and subscriptions.

use std::fmt;
use std::sync::Arc;

/// A data-plane shard: one pinned executor thread that owns its connections and topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub u16);

impl ShardId {
    /// The shard's position in the shard list.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

impl fmt::Display for ShardId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "shard-{}", self.0)
    }
}

/// A client connection, unique for the life of the process.
///
/// The slot is reused after a connection closes; the generation tells a stale reference (a
/// delivery in flight for a closed connection) from the slot's new owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId {
    /// Shard that owns the connection for its whole life.
    pub shard: ShardId,
    /// Slot in the shard's connection table.
    pub slot: u32,
    /// Incremented each time the slot is reused.
    pub generation: u32,
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{}/{}.{}",
            self.shard, self.slot, self.generation
        )
    }
}

/// A subscription id chosen by the client (`sub_id`), unescaped. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubId(Arc<[u8]>);

impl SubId {
    /// Wraps the unescaped id bytes.
    pub fn new(bytes: &[u8]) -> SubId {
        SubId(Arc::from(bytes))
    }

    /// The id's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SubId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "SubId({})", String::from_utf8_lossy(&self.0))
    }
}

impl fmt::Display for SubId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&String::from_utf8_lossy(&self.0))
    }
}

/// FNV-1a 64-bit hash: stable across runs and builds, used for topic ownership and client name
/// hashes on the wire (which clients store), so it must never change.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_hash_is_fnv1a() {
        assert_eq!(stable_hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(stable_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
