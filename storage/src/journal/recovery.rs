//! Reading segments back: the record scanner shared by recovery, replay and the tools, the
//! read-only scan of a whole journal, and the repair recovery does before writing resumes.
//!
//! # Recovery rules
//!
//! * Segments are taken in file-name order. Each header must be valid, carry the sequence in its
//!   name, and continue the previous segment (index + 1, first sequence = previous last + 1).
//! * Records are read from offset 4096 until a zero length field ("nothing written here"), the end
//!   of the segment, or an invalid record. A record is invalid if its frame or CRC is bad, its
//!   sequence is not the previous one + 1, or its epoch is lower than the previous record's.
//! * An invalid record or header in the **last** segment is a torn tail: the write that carried it
//!   was never reported durable (one write+sync is in flight at a time, and a group never spans
//!   segments). The tail is cut there: every non-zero byte after the cut is overwritten with zeros
//!   and synced, so no stale record can ever reappear after new records; a last segment whose
//!   header is torn (and whose first record does not continue the journal) is deleted.
//! * Anything invalid **before** the last segment is corruption of durable data: start-up stops
//!   with the file and offset, unless `allow_truncate_corruption` is set, in which case the journal
//!   is cut there and later segments are renamed `*.dropped` for the operator.
//!
//! This module never writes records, and the read-only scan ([`scan_journal`]) never changes a
//! file.

use super::record::{
    decode, encoded_len, peek_length, DecodeError, RecordView, Sequence, RECORD_HEADER_BYTES,
};
use super::segment::{
    list_segments, sync_directory, write_zeros, SegmentHeader, SEGMENT_HEADER_BYTES,
};
use super::{JournalConfig, JournalError};
use crate::journal::io::BLOCK_SIZE_BYTES;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Bytes read from a segment file per read call when scanning.
const READ_CHUNK_BYTES: usize = 1 << 20;

/// A windowed reader over one file.
pub(crate) struct Cursor {
    file: File,
    buffer: Vec<u8>,
    buffer_offset: u64,
    file_length: u64,
}

impl Cursor {
    pub(crate) fn open(path: &Path) -> io::Result<Cursor> {
        let file = File::open(path)?;
        let file_length = file.metadata()?.len();
        Ok(Cursor {
            file,
            buffer: Vec::with_capacity(READ_CHUNK_BYTES),
            buffer_offset: 0,
            file_length,
        })
    }

    /// Up to `length` bytes at `offset` (fewer at the end of the file).
    pub(crate) fn read(&mut self, offset: u64, length: usize) -> io::Result<&[u8]> {
        if offset >= self.file_length {
            return Ok(&[]);
        }
        let wanted_end = (offset + length as u64).min(self.file_length);
        let buffer_end = self.buffer_offset + self.buffer.len() as u64;
        if offset < self.buffer_offset || wanted_end > buffer_end {
            let read_length = (length.max(READ_CHUNK_BYTES) as u64)
                .min(self.file_length.saturating_sub(offset))
                as usize;
            self.buffer.clear();
            self.buffer.resize(read_length, 0);
            self.file.read_exact_at(&mut self.buffer, offset)?;
            self.buffer_offset = offset;
        }
        let start = (offset - self.buffer_offset) as usize;
        let end = (wanted_end.max(offset) - self.buffer_offset) as usize;
        Ok(&self.buffer[start..end])
    }

    /// Forgets buffered bytes so the next read sees what was written since.
    pub(crate) fn invalidate(&mut self) -> io::Result<()> {
        self.buffer.clear();
        self.file_length = self.file.metadata()?.len();
        Ok(())
    }
}

/// Why a segment scan stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum EndReason {
    /// A zero length field: nothing written after this point.
    Zero,
    /// No room for another record header before the end of the segment.
    Full,
    /// An invalid record, and why.
    Invalid(String),
}

/// One step of a segment scan.
pub(crate) enum Step<'a> {
    /// A valid record at `offset`.
    Record { view: RecordView<'a>, offset: u64 },
    /// The scan stopped at `offset`.
    End { offset: u64, reason: EndReason },
}

/// Walks the records of one segment, checking frames, CRCs, sequence and epoch order.
pub(crate) struct SegmentScanner {
    pub(crate) cursor: Cursor,
    pub(crate) header: SegmentHeader,
    pub(crate) offset: u64,
    pub(crate) expected_sequence: Sequence,
    pub(crate) epoch_min: u64,
}

impl SegmentScanner {
    /// Opens `path` and reads its header (the inner error says what is wrong with the header).
    pub(crate) fn open(path: &Path) -> io::Result<Result<SegmentScanner, (Cursor, String)>> {
        let mut cursor = Cursor::open(path)?;
        let header = SegmentHeader::decode(cursor.read(0, SEGMENT_HEADER_BYTES)?);
        Ok(match header {
            Ok(header) => Ok(SegmentScanner {
                cursor,
                header,
                offset: SEGMENT_HEADER_BYTES as u64,
                expected_sequence: header.first_sequence,
                epoch_min: header.epoch,
            }),
            Err(reason) => Err((cursor, reason)),
        })
    }

    /// The next record, or where and why the scan stops (the position stays there).
    pub(crate) fn next(&mut self) -> io::Result<Step<'_>> {
        let offset = self.offset;
        let size = self.header.segment_size_bytes;
        if offset + RECORD_HEADER_BYTES as u64 > size {
            return Ok(Step::End {
                offset,
                reason: EndReason::Full,
            });
        }
        let length_max = (size - offset) as usize;
        let length = peek_length(self.cursor.read(offset, RECORD_HEADER_BYTES)?).unwrap_or(0);
        let bytes = self
            .cursor
            .read(offset, length.clamp(RECORD_HEADER_BYTES, length_max))?;
        let view = match decode(bytes, length_max) {
            Ok(view) => view,
            Err(DecodeError::End) => {
                return Ok(Step::End {
                    offset,
                    reason: EndReason::Zero,
                })
            }
            Err(DecodeError::Truncated { available: 0, .. }) => {
                return Ok(Step::End {
                    offset,
                    reason: EndReason::Zero,
                })
            }
            Err(error) => {
                return Ok(Step::End {
                    offset,
                    reason: EndReason::Invalid(error.to_string()),
                })
            }
        };
        if view.bookmark.sequence != self.expected_sequence {
            let reason = format!(
                "sequence {} where {} was expected",
                view.bookmark.sequence, self.expected_sequence
            );
            return Ok(Step::End {
                offset,
                reason: EndReason::Invalid(reason),
            });
        }
        if view.bookmark.epoch < self.epoch_min {
            let reason = format!(
                "epoch {} after epoch {} (a stale record from an older generation)",
                view.bookmark.epoch, self.epoch_min
            );
            return Ok(Step::End {
                offset,
                reason: EndReason::Invalid(reason),
            });
        }
        self.offset += length as u64;
        self.expected_sequence += 1;
        self.epoch_min = view.bookmark.epoch;
        Ok(Step::Record { view, offset })
    }
}

/// What one segment held, as seen by a scan.
#[derive(Clone, Debug)]
pub struct SegmentSummary {
    /// The file.
    pub path: PathBuf,
    /// Its header, if valid.
    pub header: Option<SegmentHeader>,
    /// Valid records.
    pub records: u64,
    /// Offset just past the last valid record.
    pub data_end: u64,
}

/// The first thing found wrong in a journal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanProblem {
    /// The file.
    pub path: PathBuf,
    /// Byte offset in the file.
    pub offset: u64,
    /// What is wrong.
    pub reason: String,
    /// True if it is in the last segment (a torn tail), false if durable data is damaged.
    pub torn_tail: bool,
    /// Position of the file in the segment list.
    pub segment_position: usize,
}

/// The result of reading a whole journal without changing it.
#[derive(Clone, Debug, Default)]
pub struct ScanOutcome {
    /// Every segment read, in order (those after a problem are not read).
    pub segments: Vec<SegmentSummary>,
    /// Segment files found.
    pub segment_files: usize,
    /// Valid records before the first problem.
    pub records: u64,
    /// Their bytes.
    pub record_bytes: u64,
    /// Sequence of the first valid record.
    pub first_sequence: Option<Sequence>,
    /// Sequence of the last valid record.
    pub last_sequence: Option<Sequence>,
    /// Highest epoch in any valid header or record.
    pub epoch_max: u64,
    /// The first problem, if any.
    pub problem: Option<ScanProblem>,
    /// Non-zero bytes after the last valid record of the last segment: (file, from, to).
    pub stale_tail: Option<(PathBuf, u64, u64)>,
}

/// Reads every segment in `journal_dir` in order, calling `visit` for each valid record (with its
/// file and offset), and stops at the first problem. Changes nothing.
pub fn scan_journal(
    journal_dir: &Path,
    visit: &mut dyn FnMut(&RecordView<'_>, &Path, u64),
) -> io::Result<ScanOutcome> {
    let files = list_segments(journal_dir)?;
    let mut outcome = ScanOutcome {
        segment_files: files.len(),
        ..ScanOutcome::default()
    };
    let mut previous: Option<(u64, Sequence)> = None; // (segment index, next expected sequence)
    for (position, file) in files.iter().enumerate() {
        let last = position + 1 == files.len();
        let problem = |offset, reason: String, torn_tail| ScanProblem {
            path: file.path.clone(),
            offset,
            reason,
            torn_tail,
            segment_position: position,
        };
        let mut scanner = match SegmentScanner::open(&file.path)? {
            Ok(scanner) => scanner,
            Err((mut cursor, reason)) => {
                let continues = last
                    && first_record_continues(
                        &mut cursor,
                        previous.map_or(file.first_sequence, |(_, next)| next),
                    )?;
                let reason = format!("segment header: {reason}");
                outcome.segments.push(SegmentSummary {
                    path: file.path.clone(),
                    header: None,
                    records: 0,
                    data_end: 0,
                });
                outcome.problem = Some(problem(0, reason, last && !continues));
                break;
            }
        };
        let header = scanner.header;
        outcome.epoch_max = outcome.epoch_max.max(header.epoch);
        let mismatch = if header.first_sequence != file.first_sequence {
            Some(format!(
                "header says first sequence {}, file name says {}",
                header.first_sequence, file.first_sequence
            ))
        } else {
            match previous {
                Some((index, _)) if header.segment_index != index + 1 => Some(format!(
                    "segment index {} follows {index}",
                    header.segment_index
                )),
                Some((_, next)) if header.first_sequence != next => Some(format!(
                    "gap: segment starts at sequence {} but the previous one ended before {next}",
                    header.first_sequence
                )),
                _ => None,
            }
        };
        if let Some(reason) = mismatch {
            outcome.segments.push(SegmentSummary {
                path: file.path.clone(),
                header: Some(header),
                records: 0,
                data_end: 0,
            });
            outcome.problem = Some(problem(0, reason, false));
            break;
        }
        let mut records = 0u64;
        let (data_end, reason) = loop {
            match scanner.next()? {
                Step::Record { view, offset } => {
                    visit(&view, &file.path, offset);
                    records += 1;
                    outcome.record_bytes += encoded_len(&view.record) as u64;
                    outcome.first_sequence.get_or_insert(view.bookmark.sequence);
                    outcome.last_sequence = Some(view.bookmark.sequence);
                    outcome.epoch_max = outcome.epoch_max.max(view.bookmark.epoch);
                }
                Step::End { offset, reason } => break (offset, reason),
            }
        };
        outcome.records += records;
        outcome.segments.push(SegmentSummary {
            path: file.path.clone(),
            header: Some(header),
            records,
            data_end,
        });
        previous = Some((header.segment_index, scanner.expected_sequence));
        if last {
            let stale_end =
                last_nonzero_block_end(&mut scanner.cursor, data_end, header.segment_size_bytes)?;
            if stale_end > data_end {
                outcome.stale_tail = Some((file.path.clone(), data_end, stale_end));
            }
        }
        if let EndReason::Invalid(reason) = reason {
            outcome.problem = Some(problem(data_end, reason, last));
            break;
        }
    }
    Ok(outcome)
}

/// Whether the record at offset 4096 is valid and carries `expected` (a header was damaged
/// after the segment was written, rather than torn before it was).
fn first_record_continues(cursor: &mut Cursor, expected: Sequence) -> io::Result<bool> {
    let bytes = cursor.read(SEGMENT_HEADER_BYTES as u64, READ_CHUNK_BYTES)?;
    Ok(decode(bytes, bytes.len()).is_ok_and(|view| view.bookmark.sequence == expected))
}

/// The end (rounded up to a block) of the last block in `[from, size)` holding a non-zero byte,
/// or `from` if all of it is zero.
fn last_nonzero_block_end(cursor: &mut Cursor, from: u64, size: u64) -> io::Result<u64> {
    let mut last_nonzero = None;
    let mut offset = from;
    while offset < size {
        let chunk = cursor.read(offset, READ_CHUNK_BYTES.min((size - offset) as usize))?;
        if chunk.is_empty() {
            break;
        }
        if let Some(position) = chunk.iter().rposition(|&byte| byte != 0) {
            last_nonzero = Some(offset + position as u64);
        }
        offset += chunk.len() as u64;
    }
    Ok(last_nonzero.map_or(from, |last| {
        (last / BLOCK_SIZE_BYTES as u64 + 1) * BLOCK_SIZE_BYTES as u64
    }))
}

/// What recovery found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Valid records kept.
    pub records: u64,
    /// Their bytes.
    pub record_bytes: u64,
    /// Segment files kept.
    pub segments: usize,
    /// Sequence of the first record kept (None if the journal is empty).
    pub first_sequence: Option<Sequence>,
    /// Sequence of the last record kept (None if the journal is empty).
    pub last_sequence: Option<Sequence>,
    /// Non-zero bytes overwritten with zeros after the cut (torn or stale data).
    pub dropped_bytes: u64,
    /// Record frames recognisable in the dropped bytes (best effort: the first invalid one counts).
    pub dropped_records: u64,
    /// Segment files deleted (torn activation) or renamed `*.dropped` (corruption).
    pub dropped_segments: usize,
    /// Why anything was dropped.
    pub reason: Option<String>,
    /// How long the scan and repair took.
    pub duration: Duration,
}

/// The segment writing resumes in after recovery.
pub(crate) struct RecoveredTail {
    pub(crate) path: PathBuf,
    pub(crate) header: SegmentHeader,
    pub(crate) data_end: u64,
}

/// Everything the journal needs from recovery.
pub(crate) struct Recovered {
    pub(crate) report: RecoveryReport,
    pub(crate) tail: Option<RecoveredTail>,
    pub(crate) next_segment_index: u64,
    pub(crate) epoch_max: u64,
}

/// Scans `journal_dir`, visiting every valid record, then cuts a torn tail (or refuses on
/// corruption, per `config`) so that writing can resume safely.
pub(crate) fn recover(
    journal_dir: &Path,
    config: &JournalConfig,
    visit: &mut dyn FnMut(&RecordView<'_>),
) -> Result<Recovered, JournalError> {
    let started = Instant::now();
    let io_error = |operation: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| JournalError::Io {
            operation,
            path,
            source,
        }
    };
    let outcome = scan_journal(journal_dir, &mut |view, _, _| visit(view))
        .map_err(io_error("scan", journal_dir))?;
    let mut report = RecoveryReport {
        records: outcome.records,
        record_bytes: outcome.record_bytes,
        first_sequence: outcome.first_sequence,
        last_sequence: outcome.last_sequence,
        ..RecoveryReport::default()
    };
    let mut segments = outcome.segments.clone();
    if let Some(problem) = &outcome.problem {
        if !problem.torn_tail && !config.allow_truncate_corruption {
            return Err(JournalError::Corruption {
                path: problem.path.clone(),
                offset: problem.offset,
                reason: problem.reason.clone(),
            });
        }
        report.reason = Some(format!(
            "{} at offset {} of {}",
            problem.reason,
            problem.path.display(),
            problem.offset
        ));
        for later in list_segments(journal_dir)
            .map_err(io_error("list", journal_dir))?
            .into_iter()
            .skip(problem.segment_position + 1)
        {
            set_aside(&later.path).map_err(io_error("rename", &later.path))?;
            report.dropped_segments += 1;
        }
        if segments.last().is_some_and(|segment| {
            segment.header.is_none() || segment.records == 0 && problem.offset == 0
        }) {
            let segment = segments.pop().expect("checked above");
            report.dropped_bytes += std::fs::metadata(&segment.path)
                .map(|m| m.len())
                .unwrap_or(0);
            if problem.torn_tail {
                std::fs::remove_file(&segment.path).map_err(io_error("remove", &segment.path))?;
            } else {
                set_aside(&segment.path).map_err(io_error("rename", &segment.path))?;
            }
            report.dropped_segments += 1;
        }
        sync_directory(journal_dir).map_err(io_error("sync directory", journal_dir))?;
    }
    let mut tail = None;
    if let Some(last) = segments.last() {
        let header = last.header.expect("kept segments have valid headers");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&last.path)
            .map_err(io_error("open", &last.path))?;
        let length = file.metadata().map_err(io_error("stat", &last.path))?.len();
        // Recomputed here rather than taken from the scan: after a cut in an earlier segment the
        // scan never looked past it.
        let mut cursor = Cursor::open(&last.path).map_err(io_error("open", &last.path))?;
        let stale_end =
            last_nonzero_block_end(&mut cursor, last.data_end, header.segment_size_bytes)
                .map_err(io_error("read", &last.path))?;
        if stale_end > last.data_end {
            report.dropped_records += count_frames(&last.path, last.data_end, stale_end)
                .map_err(io_error("read", &last.path))?;
            report.dropped_bytes += stale_end - last.data_end;
            write_zeros(&file, last.data_end, stale_end)
                .map_err(io_error("zero the torn tail of", &last.path))?;
        }
        if length < header.segment_size_bytes {
            tracing::warn!(path = %last.path.display(), length, size = header.segment_size_bytes, "journal: segment file is shorter than its size; extending it");
            file.set_len(header.segment_size_bytes)
                .map_err(io_error("extend", &last.path))?;
        }
        if stale_end > last.data_end || length < header.segment_size_bytes {
            file.sync_all().map_err(io_error("sync", &last.path))?;
        }
        tail = Some(RecoveredTail {
            path: last.path.clone(),
            header,
            data_end: last.data_end,
        });
    }
    report.segments = segments.len();
    report.duration = started.elapsed();
    if report.dropped_bytes > 0 || report.dropped_segments > 0 {
        tracing::warn!(
            dropped_bytes = report.dropped_bytes,
            dropped_records = report.dropped_records,
            dropped_segments = report.dropped_segments,
            reason = report.reason.as_deref().unwrap_or("stale bytes after the last record"),
            last_sequence = ?report.last_sequence,
            "journal: cut the tail during recovery"
        );
    }
    tracing::info!(records = report.records, segments = report.segments, last_sequence = ?report.last_sequence, duration_ms = report.duration.as_millis() as u64, "journal: recovered");
    let next_segment_index = segments
        .last()
        .and_then(|s| s.header)
        .map_or(0, |header| header.segment_index + 1);
    Ok(Recovered {
        report,
        tail,
        next_segment_index,
        epoch_max: outcome.epoch_max,
    })
}

/// Renames `path` to `path.dropped` so the operator can inspect it.
fn set_aside(path: &Path) -> io::Result<()> {
    let mut dropped = path.as_os_str().to_owned();
    dropped.push(".dropped");
    tracing::warn!(path = %path.display(), "journal: setting aside a segment after the cut");
    std::fs::rename(path, PathBuf::from(dropped))
}

/// Record frames recognisable by walking length fields from `from` (best effort, for the log).
fn count_frames(path: &Path, from: u64, to: u64) -> io::Result<u64> {
    let mut cursor = Cursor::open(path)?;
    let mut offset = from;
    let mut frames = 0;
    while offset + RECORD_HEADER_BYTES as u64 <= to {
        match peek_length(cursor.read(offset, RECORD_HEADER_BYTES)?) {
            Some(length) if length >= RECORD_HEADER_BYTES => {
                frames += 1;
                offset += length as u64;
            }
            _ => break,
        }
    }
    Ok(frames.max(1))
}
