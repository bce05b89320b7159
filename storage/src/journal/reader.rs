//! Replay: reading journal records forward from a sequence or a timestamp, across sealed
//! segments and into the active one, so a bookmark subscription can stream history and then hand
//! over to live delivery.
//!
//! Owns its own read-only file handles (buffered reads, independent of the writer). It never
//! writes, and never returns a record past the limit set with [`JournalReader::set_limit`]: the
//! caller sets it to the journal's durable point so replay never shows a record that a crash
//! could still take back. At the end of the data it returns `None` and can be called again later
//! to pick up records written since.
//!
//! After retention removed a prefix of the segments, [`ReplayStart::Beginning`] and a sequence
//! below the oldest kept record both start at the oldest kept record; a reader that was still
//! behind the removed prefix gets [`JournalError::RemovedByRetention`] instead of a gap.

use super::recovery::{EndReason, SegmentScanner, Step};
use super::segment::list_segments;
use super::{journal_dir, JournalError, RecordView, Sequence};
use std::path::{Path, PathBuf};

/// Times a reader lists the segments again because the one it chose was removed (by retention)
/// before it could open it; each retry means another segment went, so this bounds a remover
/// racing far ahead, not a normal run.
const REMOVED_WHILE_OPENING_RETRIES_MAX: usize = 16;

/// Where replay starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayStart {
    /// The first record in the journal.
    Beginning,
    /// The record with this sequence (inclusive; pass a bookmark's sequence + 1 to resume after it).
    Sequence(Sequence),
    /// The first record whose timestamp is at or after this (nanoseconds since the Unix epoch;
    /// scans from the first segment).
    TimestampNs(u64),
}

impl ReplayStart {
    fn admits(self, sequence: Sequence, timestamp_ns: u64) -> bool {
        match self {
            ReplayStart::Beginning => true,
            ReplayStart::Sequence(first) => sequence >= first,
            ReplayStart::TimestampNs(first) => timestamp_ns >= first,
        }
    }
}

/// Reads records in sequence order from a starting point, following the journal as it grows.
pub struct JournalReader {
    journal_dir: PathBuf,
    start: ReplayStart,
    started: bool,
    limit: Option<Sequence>,
    scanner: Option<SegmentScanner>,
    /// The sequence the next segment must start with, once the first segment was read.
    next_segment_first: Option<Sequence>,
    /// Whether the current end of a segment was already re-read with fresh bytes.
    end_rechecked: bool,
}

impl JournalReader {
    /// A reader over the journal in `dir` (a data directory or its `journal` folder).
    pub fn open(dir: &Path, start: ReplayStart) -> Result<JournalReader, JournalError> {
        let journal_dir = journal_dir(dir);
        if !journal_dir.is_dir() {
            return Err(JournalError::Io {
                operation: "open",
                path: journal_dir,
                source: std::io::ErrorKind::NotFound.into(),
            });
        }
        Ok(JournalReader {
            journal_dir,
            start,
            started: false,
            limit: None,
            scanner: None,
            next_segment_first: None,
            end_rechecked: false,
        })
    }

    /// Never return records above `up_to` (set it to the journal's durable point).
    pub fn set_limit(&mut self, up_to: Sequence) {
        self.limit = Some(up_to);
    }

    /// The next record, or `None` at the current end of the journal (call again later for more).
    pub fn next_record(&mut self) -> Result<Option<RecordView<'_>>, JournalError> {
        let io_error = |path: &Path| {
            let path = path.to_path_buf();
            move |source| JournalError::Io {
                operation: "read",
                path,
                source,
            }
        };
        let saved = loop {
            if self.scanner.is_none() && !self.open_next_segment()? {
                return Ok(None);
            }
            let scanner = self.scanner.as_mut().expect("opened above");
            if self
                .limit
                .is_some_and(|limit| scanner.expected_sequence > limit)
            {
                return Ok(None);
            }
            let saved = (scanner.offset, scanner.expected_sequence, scanner.epoch_min);
            let path = self.journal_dir.clone();
            let probe = match scanner.next().map_err(io_error(&path))? {
                Step::Record { view, .. } => Ok((view.bookmark.sequence, view.record.timestamp_ns)),
                Step::End { offset, reason } => Err((offset, reason)),
            };
            match probe {
                Ok((sequence, timestamp_ns))
                    if self.started || self.start.admits(sequence, timestamp_ns) =>
                {
                    self.started = true;
                    self.end_rechecked = false;
                    break saved;
                }
                Ok(_) => {}
                Err((offset, reason)) => {
                    if !self.end_of_segment(offset, reason)? {
                        return Ok(None);
                    }
                }
            }
        };
        // Read the chosen record again (same buffered bytes) so the borrow can be returned.
        let path = self.journal_dir.clone();
        let scanner = self.scanner.as_mut().expect("positioned above");
        (scanner.offset, scanner.expected_sequence, scanner.epoch_min) = saved;
        match scanner.next().map_err(io_error(&path))? {
            Step::Record { view, .. } => Ok(Some(view)),
            Step::End { .. } => unreachable!("the same bytes decoded a moment ago"),
        }
    }

    /// Opens the segment to read next; false if it does not exist (yet).
    fn open_next_segment(&mut self) -> Result<bool, JournalError> {
        let mut removed_while_opening = 0;
        loop {
            let segments = list_segments(&self.journal_dir).map_err(|source| JournalError::Io {
                operation: "list",
                path: self.journal_dir.clone(),
                source,
            })?;
            let chosen = match (self.next_segment_first, self.start) {
                (Some(first), _) => segments
                    .iter()
                    .position(|segment| segment.first_sequence == first),
                // A target below the first kept segment (removed by retention) starts at the
                // oldest record still there.
                (None, ReplayStart::Sequence(target)) => segments
                    .iter()
                    .rposition(|segment| segment.first_sequence <= target)
                    .or((!segments.is_empty()).then_some(0)),
                (None, _) => (!segments.is_empty()).then_some(0),
            };
            let Some(position) = chosen else {
                let Some(first) = self.next_segment_first else {
                    return Ok(false);
                };
                match segments.first() {
                    // Retention removes only a prefix: everything up to the segment this reader
                    // needs is gone, so it fell behind the caller's protect_from.
                    Some(oldest) if oldest.first_sequence > first => {
                        return Err(JournalError::RemovedByRetention {
                            wanted: first,
                            first_kept: oldest.first_sequence,
                        })
                    }
                    _ => {}
                }
                if let Some(later) = segments.iter().find(|s| s.first_sequence > first) {
                    return Err(JournalError::Corruption {
                        path: later.path.clone(),
                        offset: 0,
                        reason: format!("gap: expected a segment starting at sequence {first}"),
                    });
                }
                return Ok(false);
            };
            let segment = &segments[position];
            let last = position + 1 == segments.len();
            let opened = match SegmentScanner::open(&segment.path) {
                Err(source)
                    if source.kind() == std::io::ErrorKind::NotFound
                        && removed_while_opening < REMOVED_WHILE_OPENING_RETRIES_MAX =>
                {
                    // Retention removed it between the listing and the open: list again.
                    removed_while_opening += 1;
                    continue;
                }
                opened => opened.map_err(|source| JournalError::Io {
                    operation: "open",
                    path: segment.path.clone(),
                    source,
                })?,
            };
            return match opened {
                Ok(scanner) => {
                    self.scanner = Some(scanner);
                    Ok(true)
                }
                // The newest segment's header is written with its first group: not there yet.
                Err(_) if last => Ok(false),
                Err((_, reason)) => Err(JournalError::Corruption {
                    path: segment.path.clone(),
                    offset: 0,
                    reason,
                }),
            };
        }
    }

    /// Handles the end of the current segment's data; true if reading can go on in the next one.
    fn end_of_segment(&mut self, offset: u64, reason: EndReason) -> Result<bool, JournalError> {
        let scanner = self.scanner.as_mut().expect("a segment is open");
        let expected = scanner.expected_sequence;
        let segments = list_segments(&self.journal_dir).map_err(|source| JournalError::Io {
            operation: "list",
            path: self.journal_dir.clone(),
            source,
        })?;
        let next_exists = segments
            .iter()
            .any(|segment| segment.first_sequence > scanner.header.first_sequence);
        if !next_exists {
            // The active segment: more may be written here; forget the buffered bytes.
            let path = self.journal_dir.clone();
            scanner
                .cursor
                .invalidate()
                .map_err(|source| JournalError::Io {
                    operation: "stat",
                    path,
                    source,
                })?;
            return Ok(false);
        }
        if !self.end_rechecked {
            // The bytes buffered may predate the last write to this segment: read them again.
            self.end_rechecked = true;
            scanner.offset = offset;
            let path = self.journal_dir.clone();
            scanner
                .cursor
                .invalidate()
                .map_err(|source| JournalError::Io {
                    operation: "stat",
                    path,
                    source,
                })?;
            return Ok(true);
        }
        self.end_rechecked = false;
        if let EndReason::Invalid(reason) = reason {
            let path = segments
                .iter()
                .find(|s| s.first_sequence == scanner.header.first_sequence)
                .map(|s| s.path.clone())
                .unwrap_or_default();
            return Err(JournalError::Corruption {
                path,
                offset,
                reason,
            });
        }
        self.next_segment_first = Some(expected);
        self.scanner = None;
        Ok(true)
    }
}
