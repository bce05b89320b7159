//! The State of the World: per-topic last-value caches keyed by configured fields.
//!
//! This module owns the SOW records of every SOW topic — where they live in memory
//! ([`slab`]), how a message's key is found ([`key`]), how records are written, replaced, merged,
//! queried, deleted and expired ([`store`], [`query`], [`delta`]), what a subscription with `oof`
//! or delta delivery must be told ([`oof`], [`delta`]), and the byte layout a snapshot of a topic
//! has ([`snapshot`]). It must never do I/O: the server turns the outcomes into frames
//! (`protocol::sow_reply`), journal appends and files.
//!
//! # How the server uses it
//!
//! ```
//! use tachyon_core::sow::{PublishMeta, SowTopic, SowTopicConfig};
//!
//! let config = SowTopicConfig::new("orders", &["/id"]);
//! let mut topic = SowTopic::new(config).unwrap();
//! let meta = PublishMeta { timestamp_unix_ns: 1, ..PublishMeta::default() };
//! let outcome = topic.publish(None, br#"{"id":1,"qty":5}"#, &meta).unwrap();
//! assert!(outcome.previous().is_none());
//! let result = topic.query(None, None, None, None).unwrap();
//! assert_eq!(result.records.len(), 1);
//! ```

pub mod config;
pub mod delta;
pub mod key;
pub mod oof;
pub mod query;
pub mod record;
pub mod slab;
pub mod snapshot;
pub mod store;

pub use config::{ConfigError, Durability, SowTopicConfig};
pub use delta::{DeltaError, DeltaOutcome};
pub use key::{KeyError, KeyExtractor, KeyKind, SowKey, SowKeyRef, WireKey};
pub use oof::{OofReason, UpdateAction};
pub use query::{OrderBy, OrderByError, OrderTerm};
pub use record::RECORD_HEADER_BYTES;
pub use record::{Bookmark, OwnedRecord, PublishMeta, RecordView};
pub use slab::RecordRef;
pub use snapshot::SnapshotError;
pub use store::{
    DeleteOutcome, PublishOutcome, QueryResult, SowError, SowStats, SowStore, SowTopic,
};

/// Smallest "largest storable message" whatever the slab size, as AMPS guarantees: a message of
/// up to 1 MiB is always storable (a dedicated slab is made for it when it outgrows the topic's).
pub const MESSAGE_BYTES_MIN_LIMIT: usize = 1 << 20;
/// Default slab size per topic, in bytes.
pub const SLAB_SIZE_BYTES_DEFAULT: usize = 1 << 20;

#[cfg(test)]
mod tests;
