//! Rebuilding persistent SOW topics from the transaction log after a crash.
//!
//! A persistent topic is snapshotted every few seconds; a journaled one also records, next to
//! its snapshot, the journal's durable point when the snapshot was taken. At start-up the
//! journaled records after that point are applied on top of the snapshot, so a `kill -9` loses
//! nothing the journal made durable. Replaying from an earlier point than necessary is harmless:
//! full publishes, merges and deletes applied again in log order end in the same state, which
//! is why the durable point (not the last appended one) is recorded, and why a missing
//! or unreadable point file means "replay the whole log".

use crate::journal::RecordHeaders;
use crate::shard::Shard;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tachyon_core::filter::Filter;
use tachyon_core::sow::{Bookmark, Durability, PublishMeta, SowTopic};
use tachyon_storage::journal::{JournalReader, RecordKind, RecordView, ReplayStart, Sequence};
use tracing::{info, warn};

/// The file beside a snapshot that records the journal's durable point at snapshot time.
pub(crate) fn journal_point_path(snapshot: &Path) -> PathBuf {
    snapshot.with_extension("journal-point")
}

/// Reads a recorded durable point; 0 (replay everything) when absent or unreadable.
fn read_journal_point(snapshot: &Path) -> Sequence {
    let path = journal_point_path(snapshot);
    match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().parse().unwrap_or_else(|_| {
            warn!(path = %path.display(), "unreadable journal point; replaying the whole journal into the SOW topic");
            0
        }),
        Err(_) => 0,
    }
}

/// Applies one journaled record to a SOW topic; a record the store refuses now (it refused it
/// when published, too) is counted, not fatal.
fn apply(topic: &mut SowTopic, view: &RecordView<'_>) -> bool {
    let record = view.record;
    let Some(headers) = RecordHeaders::decode(record.headers) else {
        return false;
    };
    let meta = PublishMeta {
        bookmark: Bookmark {
            publisher_id: record.publisher.client_name_hash,
            sequence: view.bookmark.sequence,
        },
        timestamp_unix_ns: record.timestamp_ns,
        correlation_id: headers.correlation_id,
        expiration: headers.expiration_seconds.map(Duration::from_secs),
    };
    match record.kind {
        RecordKind::Publish => topic
            .publish(headers.sow_key, record.payload, &meta)
            .is_ok(),
        RecordKind::DeltaPublish => topic
            .delta_publish(headers.sow_key, record.payload, &meta)
            .is_ok(),
        RecordKind::SowDelete => match headers.delete_by {
            Some(b'f') => std::str::from_utf8(record.payload)
                .ok()
                .and_then(|text| Filter::compile(text).ok())
                .map(|filter| {
                    topic.delete_by_filter(&filter);
                })
                .is_some(),
            Some(b'k') => topic.delete_by_keys(record.payload).is_ok(),
            Some(b'd') => topic
                .delete_by_data(headers.sow_key, record.payload)
                .is_ok(),
            _ => false,
        },
    }
}

impl Shard {
    /// Brings every owned, journaled, persistent SOW topic up to the journal's durable end.
    pub(crate) fn rebuild_sow_from_journal(&self) -> Result<(), String> {
        let Some(service) = self.journal.as_ref() else {
            return Ok(());
        };
        let journal_dir = service.journal.borrow().journal_dir().to_path_buf();
        let durable = service.durable_up_to();
        let mut topics = self.sow.topics.borrow_mut();
        for (name, topic) in topics.iter_mut() {
            if topic.config().durability != Durability::Persistent || !self.journaled.contains(name)
            {
                continue;
            }
            let snapshot = crate::sow::snapshot_path(&self.config.data_dir, &topic.config().topic);
            let point = read_journal_point(&snapshot);
            if point >= durable {
                continue;
            }
            let started = Instant::now();
            let mut reader = JournalReader::open(&journal_dir, ReplayStart::Sequence(point + 1))
                .map_err(|error| format!("SOW rebuild of {}: {error}", topic.config().topic))?;
            reader.set_limit(durable);
            let (mut applied, mut refused) = (0u64, 0u64);
            while let Some(view) = reader
                .next_record()
                .map_err(|error| format!("SOW rebuild of {}: {error}", topic.config().topic))?
            {
                if view.record.topic != &name[..] {
                    continue;
                }
                if apply(topic, &view) {
                    applied += 1;
                } else {
                    refused += 1;
                }
            }
            self.sow.dirty.borrow_mut().insert(name.clone());
            info!(topic = %topic.config().topic, from_sequence = point + 1, to_sequence = durable, applied, refused, records = topic.len(), elapsed_ms = started.elapsed().as_millis() as u64, "SOW topic rebuilt from the transaction log");
        }
        Ok(())
    }
}
