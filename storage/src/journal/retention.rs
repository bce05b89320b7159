//! Retention: removing the oldest sealed segments once they are older than a maximum age or the
//! journal holds more bytes than a maximum.
//!
//! Owns the decision which segments may go and their removal. It only ever removes a **prefix**
//! of the segment list (oldest first, stopping at the first segment that must stay), so the
//! journal never has a hole and recovery and replay see a journal that simply starts later. It
//! never removes the active segment (the one the writer appends to), never a spare, never a
//! segment holding a record at or above the caller's `protect_from` (still needed by a replay, or
//! not yet durable), and never anything once the journal is poisoned.
//!
//! # How old a segment is
//!
//! A sealed segment's age is measured from the moment the **next** segment was started (the
//! `created_unix_ns` in the next segment's header, or in memory for the active one). Every record
//! of the sealed segment was appended before that moment, so "started more than `max_age` ago"
//! implies "its newest record is older than `max_age`". This reads one 4096-byte header per
//! segment instead of scanning up to a whole segment for its last record, and it does not depend
//! on the publishers' `timestamp_ns`, which the journal does not order. The price is that a
//! segment may be kept up to one segment's fill time longer than the exact rule would keep it.
//!
//! # Cost
//!
//! `apply_retention` runs on the caller's thread and blocks for one `stat` and one header read per
//! segment, plus one unlink and one directory fsync per removed segment: call it from a
//! housekeeping timer (seconds to minutes apart), never per message.

use super::segment::{list_segments, sync_directory, SegmentFile, SegmentHeader};
use super::{Journal, JournalError, Sequence, SEGMENT_HEADER_BYTES};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

/// When sealed segments may be removed; a `None` limit never removes anything by itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Remove the oldest sealed segment while its newest record is older than this.
    pub max_age: Option<Duration>,
    /// Remove the oldest sealed segment while the segment files (`journal-*.seg`, the active one
    /// included, spares not) hold more bytes than this.
    pub max_bytes: Option<u64>,
}

/// What one [`Journal::apply_retention`] call removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Segment files removed.
    pub removed_segments: usize,
    /// Their bytes (file sizes).
    pub removed_bytes: u64,
    /// The oldest durable sequence still on disk afterwards (None while nothing is durable).
    pub first_sequence_kept: Option<Sequence>,
}

/// Why a segment was removed (for the log line).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reason {
    Age {
        sealed_ago: Duration,
        max_age: Duration,
    },
    Size {
        total_bytes: u64,
        max_bytes: u64,
    },
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Age {
                sealed_ago,
                max_age,
            } => write!(
                f,
                "its newest record is older than max_age: sealed {:.0} s ago, max_age {:.0} s",
                sealed_ago.as_secs_f64(),
                max_age.as_secs_f64()
            ),
            Reason::Size {
                total_bytes,
                max_bytes,
            } => write!(
                f,
                "the journal holds {total_bytes} bytes of segments, more than max_bytes {max_bytes}"
            ),
        }
    }
}

impl Journal {
    /// Removes the oldest sealed segments, in order, while the oldest one's newest record is older
    /// than `policy.max_age` (measured against `now_unix_ns`, wall clock in nanoseconds since the
    /// Unix epoch) or the segment files hold more than `policy.max_bytes`. A segment holding any
    /// record with sequence `>= protect_from` stays, and so does every segment after it; pass the
    /// lowest sequence still needed by a replay or not yet acknowledged as durable.
    ///
    /// Each removal is made durable (directory fsync) before the next, so a crash keeps a prefix
    /// removal. Blocks on file-system calls: call it from a housekeeping timer.
    pub fn apply_retention(
        &mut self,
        policy: &RetentionPolicy,
        protect_from: Sequence,
        now_unix_ns: u64,
    ) -> Result<RetentionReport, JournalError> {
        if let Some(cause) = &self.failure {
            // After an I/O error the state of the directory is not known well enough to delete.
            return Err(JournalError::Failed {
                cause: cause.clone(),
            });
        }
        let mut report = RetentionReport {
            first_sequence_kept: self.first_sequence,
            ..RetentionReport::default()
        };
        let Some(active) = &self.active else {
            // Nothing was ever written: there is no sealed segment.
            return Ok(report);
        };
        let active_first_sequence = active.header.first_sequence;
        let active_created_unix_ns = active.header.created_unix_ns;
        // Every record of a sealed segment is durable (a segment is started only after the group
        // before it completed), but never trust that more than the caller's bound.
        let protect_from = protect_from.min(self.durable_up_to + 1);
        let dir = self.journal_dir.clone();
        let io_error = |operation: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| JournalError::Io {
                operation,
                path,
                source,
            }
        };
        let segments = list_segments(&dir).map_err(io_error("list", &dir))?;
        let mut sizes_bytes = Vec::with_capacity(segments.len());
        for segment in &segments {
            let metadata =
                std::fs::metadata(&segment.path).map_err(io_error("stat", &segment.path))?;
            sizes_bytes.push(metadata.len());
        }
        let mut total_bytes: u64 = sizes_bytes.iter().sum();
        for (position, segment) in segments.iter().enumerate() {
            // The active segment is the newest file; nothing from it on may go.
            if segment.first_sequence >= active_first_sequence {
                break;
            }
            let Some(next) = segments.get(position + 1) else {
                break;
            };
            let last_sequence = next.first_sequence - 1;
            if next.first_sequence > protect_from {
                break;
            }
            let sealed_unix_ns = if next.first_sequence == active_first_sequence {
                active_created_unix_ns
            } else {
                read_created_unix_ns(next)?
            };
            let sealed_ago = Duration::from_nanos(now_unix_ns.saturating_sub(sealed_unix_ns));
            let reason = match (policy.max_age, policy.max_bytes) {
                (Some(max_age), _) if sealed_ago > max_age => Reason::Age {
                    sealed_ago,
                    max_age,
                },
                (_, Some(max_bytes)) if total_bytes > max_bytes => Reason::Size {
                    total_bytes,
                    max_bytes,
                },
                _ => break,
            };
            assert!(
                last_sequence < protect_from && next.first_sequence <= active_first_sequence,
                "retention chose a segment holding a protected or active record"
            );
            let bytes = sizes_bytes[position];
            std::fs::remove_file(&segment.path).map_err(io_error("remove", &segment.path))?;
            // The file is gone from the namespace now, whatever the sync below says.
            self.first_sequence = Some(next.first_sequence);
            report.first_sequence_kept = self.first_sequence;
            report.removed_segments += 1;
            report.removed_bytes += bytes;
            total_bytes -= bytes;
            // POSIX does not order unlinks across a crash: syncing after each one keeps what a
            // crash leaves a prefix removal (a hole would stop recovery as a gap).
            sync_directory(&dir).map_err(io_error("sync directory", &dir))?;
            tracing::info!(
                path = %segment.path.display(),
                first_sequence = segment.first_sequence,
                last_sequence,
                bytes,
                reason = %reason,
                "journal: retention removed a sealed segment"
            );
        }
        Ok(report)
    }
}

/// The `created_unix_ns` of a sealed segment's header.
fn read_created_unix_ns(segment: &SegmentFile) -> Result<u64, JournalError> {
    let mut block = [0u8; SEGMENT_HEADER_BYTES];
    let file = std::fs::File::open(&segment.path).map_err(|source| JournalError::Io {
        operation: "open",
        path: segment.path.clone(),
        source,
    })?;
    file.read_exact_at(&mut block, 0)
        .map_err(|source| JournalError::Io {
            operation: "read the header of",
            path: segment.path.clone(),
            source,
        })?;
    SegmentHeader::decode(&block)
        .map(|header| header.created_unix_ns)
        .map_err(|reason| JournalError::Corruption {
            path: segment.path.clone(),
            offset: 0,
            reason: format!("segment header: {reason}"),
        })
}
