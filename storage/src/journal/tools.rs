//! Operator tools behind `tachyon journal dump|verify <dir>`: read-only walks of a journal that
//! print every record or report its health.
//!
//! Owns only formatting and reporting. It never repairs or changes a file (recovery does that
//! when the server starts) and never takes the data-directory lock, so it can run beside a live
//! server (it may then see a torn tail that is only an in-flight write).

use super::recovery::{scan_journal, ScanProblem, SegmentSummary};
use super::{journal_dir, JournalError, RecordView, Sequence};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Bytes of each payload shown by `dump`.
const DUMP_PAYLOAD_PREVIEW_BYTES: usize = 64;

/// The health of a journal as `verify` sees it.
#[derive(Clone, Debug)]
pub struct VerifyReport {
    /// The directory read.
    pub journal_dir: PathBuf,
    /// Segment files found.
    pub segment_files: usize,
    /// Segments read (those after a problem are not).
    pub segments: Vec<SegmentSummary>,
    /// Valid records.
    pub records: u64,
    /// Their bytes.
    pub record_bytes: u64,
    /// First valid sequence.
    pub first_sequence: Option<Sequence>,
    /// Last valid sequence.
    pub last_sequence: Option<Sequence>,
    /// The first problem found.
    pub problem: Option<ScanProblem>,
    /// Non-zero bytes after the last record of the last segment (a torn or in-flight write).
    pub stale_tail_bytes: u64,
    /// How long the scan took.
    pub duration: Duration,
}

impl VerifyReport {
    /// True if nothing is wrong and nothing would be cut at start-up.
    pub fn is_clean(&self) -> bool {
        self.problem.is_none() && self.stale_tail_bytes == 0
    }

    /// True if the server would refuse to start on this journal (damage before the tail).
    pub fn is_corrupt(&self) -> bool {
        self.problem
            .as_ref()
            .is_some_and(|problem| !problem.torn_tail)
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seconds = self.duration.as_secs_f64().max(1e-9);
        writeln!(f, "journal {}", self.journal_dir.display())?;
        writeln!(
            f,
            "  segments: {} files, {} read",
            self.segment_files,
            self.segments.len()
        )?;
        writeln!(
            f,
            "  records: {} ({} bytes), sequences {:?}..={:?}",
            self.records, self.record_bytes, self.first_sequence, self.last_sequence
        )?;
        writeln!(
            f,
            "  scan: {:.3} s, {:.2} GB/s of records",
            seconds,
            self.record_bytes as f64 / seconds / 1e9
        )?;
        match &self.problem {
            None => writeln!(f, "  problems: none")?,
            Some(problem) => writeln!(
                f,
                "  {}: {} at offset {}: {}",
                if problem.torn_tail {
                    "torn tail (start-up will cut it)"
                } else {
                    "CORRUPTION (start-up refuses without allow_truncate_corruption)"
                },
                problem.path.display(),
                problem.offset,
                problem.reason
            )?,
        }
        if self.stale_tail_bytes > 0 {
            writeln!(
                f,
                "  stale bytes after the last record: {} (start-up zeroes them)",
                self.stale_tail_bytes
            )?;
        }
        write!(
            f,
            "  verdict: {}",
            if self.is_clean() {
                "clean"
            } else if self.is_corrupt() {
                "corrupt"
            } else {
                "torn tail"
            }
        )
    }
}

/// Checks every header, CRC and sequence in the journal in `dir` without changing anything.
pub fn verify(dir: &Path) -> Result<VerifyReport, JournalError> {
    walk(dir, &mut |_, _, _| Ok(()))
}

/// Writes one line per segment and per record of the journal in `dir` to `out`, then the
/// verify report.
pub fn dump(dir: &Path, out: &mut dyn Write) -> Result<VerifyReport, JournalError> {
    let mut current: Option<PathBuf> = None;
    let report = walk(dir, &mut |view, path, offset| {
        if current.as_deref() != Some(path) {
            writeln!(out, "segment {}", path.display())?;
            current = Some(path.to_path_buf());
        }
        let record = &view.record;
        let preview = &record.payload[..record.payload.len().min(DUMP_PAYLOAD_PREVIEW_BYTES)];
        writeln!(
            out,
            "  @{offset} seq={} epoch={} kind={:?} ts_ns={} topic={:?} publisher={:#018x}/{} headers={:?} payload={}B {:?}{}",
            view.bookmark.sequence,
            view.bookmark.epoch,
            record.kind,
            record.timestamp_ns,
            String::from_utf8_lossy(record.topic),
            record.publisher.client_name_hash,
            record.publisher.client_sequence,
            String::from_utf8_lossy(record.headers),
            record.payload.len(),
            String::from_utf8_lossy(preview),
            if preview.len() < record.payload.len() { "…" } else { "" },
        )
    })?;
    for segment in &report.segments {
        match &segment.header {
            Some(header) => writeln!(
                out,
                "{}: index {} first_sequence {} epoch {} size {} records {} data_end {}",
                segment.path.display(),
                header.segment_index,
                header.first_sequence,
                header.epoch,
                header.segment_size_bytes,
                segment.records,
                segment.data_end
            ),
            None => writeln!(out, "{}: invalid header", segment.path.display()),
        }
        .map_err(|source| JournalError::Io {
            operation: "write the dump for",
            path: segment.path.clone(),
            source,
        })?;
    }
    writeln!(out, "{report}").map_err(|source| JournalError::Io {
        operation: "write the dump for",
        path: report.journal_dir.clone(),
        source,
    })?;
    Ok(report)
}

fn walk(
    dir: &Path,
    visit: &mut dyn FnMut(&RecordView<'_>, &Path, u64) -> std::io::Result<()>,
) -> Result<VerifyReport, JournalError> {
    let started = Instant::now();
    let journal_dir = journal_dir(dir);
    let mut visit_error = None;
    let outcome = scan_journal(&journal_dir, &mut |view, path, offset| {
        if visit_error.is_none() {
            if let Err(error) = visit(view, path, offset) {
                visit_error = Some(error);
            }
        }
    })
    .map_err(|source| JournalError::Io {
        operation: "scan",
        path: journal_dir.clone(),
        source,
    })?;
    if let Some(source) = visit_error {
        return Err(JournalError::Io {
            operation: "write the dump of",
            path: journal_dir,
            source,
        });
    }
    Ok(VerifyReport {
        stale_tail_bytes: outcome
            .stale_tail
            .as_ref()
            .map_or(0, |(_, from, to)| to - from),
        journal_dir,
        segment_files: outcome.segment_files,
        segments: outcome.segments,
        records: outcome.records,
        record_bytes: outcome.record_bytes,
        first_sequence: outcome.first_sequence,
        last_sequence: outcome.last_sequence,
        problem: outcome.problem,
        duration: started.elapsed(),
    })
}
