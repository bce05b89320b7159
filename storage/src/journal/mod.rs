//! The transaction log: records appended by one shard, group-committed to preallocated segment
//! files with one write+fdatasync per group, recovered and replayed after a restart.
//!
//! Owns the write path's state machine (buffering, grouping, segment rollover, durability
//! reporting, poisoning). It never blocks in [`Journal::append`], [`Journal::submit`] or
//! [`Journal::poll_completions`] (with the io_uring backend), never reports a sequence durable
//! before the write **and** the fdatasync covering it completed, and after any I/O error never
//! writes again: every later call fails with [`JournalError::Failed`].
//!
//! # Driving it from a shard
//!
//! ```text
//! let seq = journal.append(&record)?;      // buffers only
//! journal.submit()?;                       // starts a write+sync if none is in flight
//! // await readability of journal.completion_fd(), then:
//! while let Some(durable) = journal.poll_completions()? { ack everything <= durable.up_to }
//! ```
//!
//! `poll_completions` starts the next group itself when one is buffered, so records appended
//! while a write is in flight go out in the next write without another `submit`.
//!
//! # Group layout and the partial-block rule
//!
//! A group is written as whole 4096-byte blocks starting at a block boundary. Records are packed
//! back to back (a record may span blocks); only the end of the group is padded with zeros. The
//! next group starts by **rewriting** the last, partially filled block of the previous group: the
//! bytes already there are written again unchanged, followed by the new records. A torn rewrite
//! can therefore only damage bytes that were never reported durable (this relies on the device
//! writing each 512-byte sector atomically, so a sector holds either the old or the new bytes,
//! which agree on the durable prefix). Everything after the durable point is covered by record
//! CRCs, the sequence chain and the epoch order, and recovery zeroes it (see `recovery`).
//!
//! A group never spans two segments: a record that does not fit in the rest of a segment starts
//! the next one, whose header block is written together with its first group.
//!
//! # Double buffering
//!
//! The backend owns two I/O buffers. `append` encodes each record straight into the *fill* buffer,
//! after the prefix its group needs (the carried partial block, or the new segment's header
//! block). `submit` pads the group, hands that buffer to the kernel and makes the other one the
//! fill buffer, first copying into it the new partial block (under one block) — or, when the
//! buffered records already cross into a later segment, those later runs. Records appended while
//! the write is in flight therefore land where the next write reads them, and when it completes
//! the next group starts at once, without a bulk copy between the disk's writes. The buffer being
//! written is never touched until its write and sync are reaped.
//!
//! # Retention and fault injection
//!
//! [`Journal::apply_retention`] removes the oldest sealed segments by age or total size, only ever
//! a prefix, so the journal starts later but never has a hole (see `retention`).
//! [`JournalConfig::fault`] is a testing knob that makes a chosen write+sync group fail, to test
//! the callers' handling of a poisoned journal (see `fault`).

mod fallback;
mod fault;
mod io;
mod publisher;
mod reader;
mod record;
mod recovery;
mod retention;
mod segment;
mod tools;
mod uring;

pub use fallback::FallbackBackend;
pub use fault::{FaultOperation, FaultPlan, FaultyBackend};
pub use io::{
    open_backend, AlignedBuffer, BackendChoice, BackendKind, EventFd, IoBackend, WriteSyncOutcome,
    BLOCK_SIZE_BYTES, IO_BUFFER_COUNT,
};
pub use publisher::PublisherTable;
pub use reader::{JournalReader, ReplayStart};
pub use record::{
    crc32c_implementation, decode, encode, encoded_len, Bookmark, DecodeError, Publisher, Record,
    RecordKind, RecordView, Sequence, RECORD_HEADER_BYTES, TOPIC_BYTES_MAX,
};
pub use recovery::{scan_journal, RecoveryReport, ScanOutcome, ScanProblem, SegmentSummary};
pub use retention::{RetentionPolicy, RetentionReport};
pub use segment::{
    list_segments, parse_segment_file_name, segment_file_name, SegmentFile, SegmentHeader,
    SEGMENT_FORMAT_VERSION, SEGMENT_HEADER_BYTES,
};
pub use tools::{dump, verify, VerifyReport};
pub use uring::UringBackend;

use segment::Preallocator;
use std::collections::VecDeque;
use std::fmt;
use std::ops::Range;
use std::os::fd::RawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Name of the journal's folder inside the data directory.
pub const JOURNAL_DIR_NAME: &str = "journal";
/// Default segment size: 64 MiB.
pub const SEGMENT_SIZE_BYTES_DEFAULT: u64 = 64 << 20;
/// Default number of zero-filled spare segments kept ready.
pub const SPARE_SEGMENTS_DEFAULT: usize = 2;
/// Default bound on bytes appended but not yet handed to a write.
pub const MAX_BUFFERED_BYTES_DEFAULT: usize = 1 << 20;
/// Default largest record (header, topic, headers and payload).
pub const MAX_RECORD_BYTES_DEFAULT: usize = 512 << 10;
/// Default number of publishers the dedup table holds before it grows.
pub const EXPECTED_PUBLISHERS_DEFAULT: usize = 1024;

/// How the journal is sized and which I/O path it uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalConfig {
    /// Size of each segment file, header block included (a multiple of 4096, at least 8192).
    pub segment_size_bytes: u64,
    /// Zero-filled spare segments kept ready ahead of need (at least 1).
    pub spare_segments: usize,
    /// Bytes appended but not yet handed to a write beyond which `append` refuses.
    pub max_buffered_bytes: usize,
    /// Largest encoded record accepted.
    pub max_record_bytes: usize,
    /// Which I/O path to use.
    pub backend: BackendChoice,
    /// Cut the journal at damage found before the last segment instead of refusing to start.
    pub allow_truncate_corruption: bool,
    /// Publishers the dedup table is sized for at start-up.
    pub expected_publishers: usize,
    /// Testing knob: fail one write+sync group as planned (see [`FaultPlan`]). Always `None` in
    /// production; the server's configuration file cannot set it.
    pub fault: Option<FaultPlan>,
}

impl Default for JournalConfig {
    fn default() -> JournalConfig {
        JournalConfig {
            segment_size_bytes: SEGMENT_SIZE_BYTES_DEFAULT,
            spare_segments: SPARE_SEGMENTS_DEFAULT,
            max_buffered_bytes: MAX_BUFFERED_BYTES_DEFAULT,
            max_record_bytes: MAX_RECORD_BYTES_DEFAULT,
            backend: BackendChoice::Auto,
            allow_truncate_corruption: false,
            expected_publishers: EXPECTED_PUBLISHERS_DEFAULT,
            fault: None,
        }
    }
}

impl JournalConfig {
    /// Bytes of each of the two I/O buffers this configuration needs (what a custom backend must
    /// provide): one holds the group being written, the other the records appended meanwhile.
    pub fn io_buffer_bytes(&self) -> usize {
        let block = BLOCK_SIZE_BYTES;
        let runs_max = self.runs_max();
        // Every buffered run (records bound for one segment) starts at a block boundary.
        let bytes = self.max_buffered_bytes.div_ceil(block) * block // the buffered records
            + runs_max * block // per run: the rewritten partial block of the previous group, or a new segment's header block
            + runs_max * block; // per run: zero padding to the next block boundary
        assert!(bytes >= self.max_buffered_bytes + runs_max * (SEGMENT_HEADER_BYTES + block - 1));
        bytes
    }

    /// The most runs (records bound for one segment) the buffered bytes can hold at once.
    ///
    /// Every run after the first starts a segment, and every run between the first and the last
    /// ended because the next run's first record did not fit: two such neighbours hold more than a
    /// segment's data. So `n` runs hold more than `(n - 1) / 2` segments' data, all buffered.
    fn runs_max(&self) -> usize {
        let segment_data_bytes =
            (self.segment_size_bytes as usize).saturating_sub(SEGMENT_HEADER_BYTES);
        2 * (self.max_buffered_bytes / (segment_data_bytes + 1)) + 2
    }

    fn validate(&self) -> Result<(), JournalError> {
        let block = BLOCK_SIZE_BYTES as u64;
        let bad = |field, value: u64, reason: &'static str| {
            Err(JournalError::Config {
                field,
                value,
                reason,
            })
        };
        if !self.segment_size_bytes.is_multiple_of(block) || self.segment_size_bytes < 2 * block {
            return bad(
                "segment_size_bytes",
                self.segment_size_bytes,
                "must be a multiple of 4096 and at least 8192",
            );
        }
        if self.spare_segments == 0 {
            return bad("spare_segments", 0, "must be at least 1");
        }
        if self.max_record_bytes < RECORD_HEADER_BYTES {
            return bad(
                "max_record_bytes",
                self.max_record_bytes as u64,
                "must be at least the 64-byte record header",
            );
        }
        if self.max_record_bytes as u64 > self.segment_size_bytes - SEGMENT_HEADER_BYTES as u64 {
            return bad(
                "max_record_bytes",
                self.max_record_bytes as u64,
                "must fit in a segment after its 4096-byte header",
            );
        }
        if self.max_buffered_bytes < self.max_record_bytes {
            return bad(
                "max_buffered_bytes",
                self.max_buffered_bytes as u64,
                "must be at least max_record_bytes",
            );
        }
        Ok(())
    }
}

/// "Every record up to and including `up_to` is written and synced."
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Durable {
    /// The highest durable sequence.
    pub up_to: Sequence,
    /// The write+sync that made it durable; `None` when it already was.
    pub group: Option<GroupWritten>,
}

/// One completed write+sync of a group of records (for statistics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupWritten {
    /// Records in the group.
    pub records: u64,
    /// Bytes written, padded to whole blocks (what the disk saw).
    pub bytes: u64,
    /// From handing the write to the kernel to its sync completing.
    pub took: std::time::Duration,
}

/// The step of the write path that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoOperation {
    /// Turning a spare into the next segment (rename, directory sync, open).
    StartSegment,
    /// Handing the write to the kernel.
    Submit,
    /// The data write.
    Write,
    /// The data write wrote fewer bytes than asked.
    ShortWrite,
    /// fdatasync.
    Sync,
}

/// The I/O error that poisoned the journal, with what an operator needs to act on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IoFailure {
    /// Which step failed.
    pub operation: IoOperation,
    /// The segment file.
    pub path: PathBuf,
    /// Byte offset of the write in the file.
    pub offset: u64,
    /// Bytes of the write.
    pub bytes: usize,
    /// What the OS said.
    pub error: String,
    /// Every record up to here is durable; nothing after it is.
    pub durable_up_to: Sequence,
}

impl fmt::Display for IoFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} of {} bytes at offset {} of {} failed: {}; the journal is read-only and durable up to sequence {} \
             (check the disk and free space, `dmesg` for I/O errors, then restart: recovery keeps every durable record)",
            self.operation,
            self.bytes,
            self.offset,
            self.path.display(),
            self.error,
            self.durable_up_to
        )
    }
}

/// Why a journal call failed.
#[derive(Debug, Error)]
pub enum JournalError {
    /// The append buffer is full: wait for a completion (poll) before appending more.
    #[error("journal backpressure: {buffered_bytes} bytes buffered + {record_bytes} > limit {limit_bytes} (the disk is behind; raise max_buffered_bytes or slow publishers)")]
    Backpressure {
        /// Bytes buffered now.
        buffered_bytes: usize,
        /// Bytes of the refused record.
        record_bytes: usize,
        /// The configured bound.
        limit_bytes: usize,
    },
    /// The record is larger than any record the journal accepts.
    #[error("record of {record_bytes} bytes exceeds the journal limit of {limit_bytes} bytes (raise max_record_bytes, keeping it within segment_size_bytes - 4096)")]
    RecordTooLarge {
        /// Encoded bytes of the record.
        record_bytes: usize,
        /// The limit.
        limit_bytes: usize,
    },
    /// An earlier I/O error made the journal read-only.
    #[error("journal failed: {cause}")]
    Failed {
        /// The error that poisoned it.
        cause: IoFailure,
    },
    /// An I/O error while opening or recovering.
    #[error("journal: cannot {operation} {path}: {source}")]
    Io {
        /// What was being done.
        operation: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// Durable data is damaged before the tail.
    #[error("journal corruption in {path} at offset {offset}: {reason} (run `tachyon journal verify`; to start anyway and drop everything from here on, set allow_truncate_corruption)")]
    Corruption {
        /// The file.
        path: PathBuf,
        /// Byte offset in the file.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A replay needs records that retention has already removed.
    #[error("journal replay needs sequence {wanted}, but retention removed it: the journal now starts at sequence {first_kept} \
             (the replay fell behind; pass the lowest sequence any replay still needs as protect_from to apply_retention)")]
    RemovedByRetention {
        /// The sequence the replay needed next.
        wanted: Sequence,
        /// The oldest sequence still on disk.
        first_kept: Sequence,
    },
    /// A configuration value is out of range.
    #[error("journal config: {field} = {value}: {reason}")]
    Config {
        /// The field.
        field: &'static str,
        /// Its value.
        value: u64,
        /// The rule it breaks.
        reason: &'static str,
    },
    /// io_uring/O_DIRECT was required but cannot be used.
    #[error("journal: io_uring with O_DIRECT unavailable for {dir}: {reason}")]
    UringUnavailable {
        /// The journal directory.
        dir: PathBuf,
        /// Which step failed, the likely cause and the fix.
        reason: String,
    },
}

/// The journal directory for `dir`: `dir/journal` if that exists or `dir` holds no segments.
pub fn journal_dir(dir: &Path) -> PathBuf {
    let nested = dir.join(JOURNAL_DIR_NAME);
    let holds_segments = list_segments(dir).is_ok_and(|segments| !segments.is_empty());
    if nested.is_dir() || !holds_segments {
        nested
    } else {
        dir.to_path_buf()
    }
}

struct ActiveSegment {
    path: PathBuf,
    header: SegmentHeader,
    /// Block-aligned offset where the next write starts.
    write_offset: u64,
    /// Bytes at the start of the I/O buffer that the next write rewrites (the partial block).
    carry_bytes: usize,
}

struct AppendPosition {
    segment_index: u64,
    segment_size_bytes: u64,
    offset: u64,
    /// Whether a run has already started this segment (or it exists on disk).
    started: bool,
}

/// Buffered records bound for one segment, written as one group.
struct Run {
    segment_index: u64,
    start_offset: u64,
    bytes: usize,
    first_sequence: Sequence,
    last_sequence: Sequence,
    starts_segment: bool,
    /// Block-aligned offset in the fill buffer where the group's write starts.
    buffer_offset: usize,
    /// Bytes before the records: the new segment's header block, or the carried partial block.
    prefix_bytes: usize,
}

impl Run {
    /// Offset in the fill buffer just after the run's last record.
    fn buffer_end(&self) -> usize {
        self.buffer_offset + self.prefix_bytes + self.bytes
    }
}

struct InFlight {
    write_offset: u64,
    first_sequence: Sequence,
    data_bytes: usize,
    padded_bytes: usize,
    last_sequence: Sequence,
    submitted_at: std::time::Instant,
}

/// The transaction log of one shard.
pub struct Journal {
    journal_dir: PathBuf,
    config: JournalConfig,
    backend: Box<dyn IoBackend>,
    spares: Preallocator,
    /// The I/O buffer `append` encodes into; the other one may be in flight.
    fill_buffer: usize,
    /// Bytes at the start of the fill buffer holding the partial last block of the latest group
    /// handed to a write: a run continuing that segment rewrites them.
    fill_carry_bytes: usize,
    /// Bytes appended but not yet handed to a write (the records of `runs`).
    buffered_bytes: usize,
    /// The runs in the fill buffer, oldest first; only the first may continue a segment.
    runs: VecDeque<Run>,
    runs_max: usize,
    next_sequence: Sequence,
    epoch: u64,
    durable_up_to: Sequence,
    /// The oldest durable sequence still on disk (None while nothing is durable).
    first_sequence: Option<Sequence>,
    in_flight: Option<InFlight>,
    active: Option<ActiveSegment>,
    append_position: AppendPosition,
    failure: Option<IoFailure>,
    publishers: PublisherTable,
    recovery: RecoveryReport,
}

impl Journal {
    /// Opens (creating if needed) the journal in `<data_dir>/journal`, recovering what is there.
    pub fn open(data_dir: &Path, config: JournalConfig) -> Result<Journal, JournalError> {
        Journal::open_visiting(data_dir, config, &mut |_| {})
    }

    /// Like [`Journal::open`], calling `visit` for every recovered record in order.
    pub fn open_visiting(
        data_dir: &Path,
        config: JournalConfig,
        visit: &mut dyn FnMut(&RecordView<'_>),
    ) -> Result<Journal, JournalError> {
        config.validate()?;
        let dir = data_dir.join(JOURNAL_DIR_NAME);
        std::fs::create_dir_all(&dir).map_err(|source| JournalError::Io {
            operation: "create",
            path: dir.clone(),
            source,
        })?;
        let backend = open_backend(&dir, config.backend, config.io_buffer_bytes())?;
        Journal::open_with_backend(data_dir, config, backend, visit)
    }

    /// Like [`Journal::open_visiting`] with a caller-supplied I/O backend (simulation tests).
    /// A [`JournalConfig::fault`] plan wraps this backend too.
    pub fn open_with_backend(
        data_dir: &Path,
        config: JournalConfig,
        backend: Box<dyn IoBackend>,
        visit: &mut dyn FnMut(&RecordView<'_>),
    ) -> Result<Journal, JournalError> {
        config.validate()?;
        let mut backend = match config.fault {
            Some(plan) => {
                tracing::warn!(?plan, "journal: fault injection is on (a testing knob): a write+sync group will fail on purpose");
                Box::new(FaultyBackend::new(backend, plan)) as Box<dyn IoBackend>
            }
            None => backend,
        };
        let dir = data_dir.join(JOURNAL_DIR_NAME);
        std::fs::create_dir_all(&dir).map_err(|source| JournalError::Io {
            operation: "create",
            path: dir.clone(),
            source,
        })?;
        for buffer in 0..IO_BUFFER_COUNT {
            assert!(
                backend.buffer_mut(buffer).len() >= config.io_buffer_bytes(),
                "backend I/O buffer {buffer} smaller than config.io_buffer_bytes()"
            );
        }
        let mut publishers = PublisherTable::with_capacity(config.expected_publishers);
        let recovered = recovery::recover(&dir, &config, &mut |view| {
            publishers.observe(view.record.publisher);
            visit(view);
        })?;
        let spares = Preallocator::start(&dir, config.segment_size_bytes, config.spare_segments)
            .map_err(|source| JournalError::Io {
                operation: "start preallocating spares in",
                path: dir.clone(),
                source,
            })?;
        let last_sequence = recovered.report.last_sequence.unwrap_or(0);
        let (active, append_position) = match &recovered.tail {
            Some(tail) => {
                let block = BLOCK_SIZE_BYTES as u64;
                let write_offset = tail.data_end / block * block;
                let carry_bytes = (tail.data_end - write_offset) as usize;
                let io_error = |operation| {
                    let path = tail.path.clone();
                    move |source| JournalError::Io {
                        operation,
                        path,
                        source,
                    }
                };
                let file = std::fs::File::open(&tail.path).map_err(io_error("open"))?;
                file.read_exact_at(&mut backend.buffer_mut(0)[..carry_bytes], write_offset)
                    .map_err(io_error("read the partial block of"))?;
                backend
                    .open_segment(&tail.path)
                    .map_err(io_error("open for writing"))?;
                let active = ActiveSegment {
                    path: tail.path.clone(),
                    header: tail.header,
                    write_offset,
                    carry_bytes,
                };
                let position = AppendPosition {
                    segment_index: tail.header.segment_index,
                    segment_size_bytes: tail.header.segment_size_bytes,
                    offset: tail.data_end,
                    started: true,
                };
                (Some(active), position)
            }
            None => (
                None,
                AppendPosition {
                    segment_index: recovered.next_segment_index,
                    segment_size_bytes: config.segment_size_bytes,
                    offset: SEGMENT_HEADER_BYTES as u64,
                    started: false,
                },
            ),
        };
        let runs_max = config.runs_max();
        // The partial block of the tail was read into buffer 0, where the first run starts.
        let fill_carry_bytes = active.as_ref().map_or(0, |active| active.carry_bytes);
        tracing::info!(dir = %dir.display(), backend = %backend.kind(), crc32c = crc32c_implementation(), last_sequence, "journal: open");
        Ok(Journal {
            journal_dir: dir,
            fill_buffer: 0,
            fill_carry_bytes,
            buffered_bytes: 0,
            runs: VecDeque::with_capacity(runs_max),
            runs_max,
            next_sequence: last_sequence + 1,
            epoch: recovered.epoch_max + 1,
            durable_up_to: last_sequence,
            first_sequence: recovered.report.first_sequence,
            in_flight: None,
            active,
            append_position,
            failure: None,
            publishers,
            recovery: recovered.report,
            backend,
            spares,
            config,
        })
    }

    /// Buffers `record` for the next group (no I/O) and returns its sequence.
    pub fn append(&mut self, record: &Record<'_>) -> Result<Sequence, JournalError> {
        if let Some(cause) = &self.failure {
            return Err(JournalError::Failed {
                cause: cause.clone(),
            });
        }
        let length = encoded_len(record);
        let limit_bytes = self.config.max_record_bytes;
        if length > limit_bytes || record.topic.len() > TOPIC_BYTES_MAX {
            return Err(JournalError::RecordTooLarge {
                record_bytes: length,
                limit_bytes,
            });
        }
        if self.buffered_bytes + length > self.config.max_buffered_bytes {
            return Err(JournalError::Backpressure {
                buffered_bytes: self.buffered_bytes,
                record_bytes: length,
                limit_bytes: self.config.max_buffered_bytes,
            });
        }
        let position = &mut self.append_position;
        if position.offset + length as u64 > position.segment_size_bytes {
            *position = AppendPosition {
                segment_index: position.segment_index + 1,
                segment_size_bytes: self.config.segment_size_bytes,
                offset: SEGMENT_HEADER_BYTES as u64,
                started: false,
            };
        }
        let sequence = self.next_sequence;
        if !position.started
            || self
                .runs
                .back()
                .is_none_or(|run| run.segment_index != position.segment_index)
        {
            assert!(
                self.runs.len() < self.runs_max,
                "{} runs buffered, sized for {}",
                self.runs.len(),
                self.runs_max
            );
            let (buffer_offset, prefix_bytes) = if position.started {
                // The segment continues from the latest group handed to a write, whose partial
                // last block `submit` already carried to the start of this buffer.
                assert!(
                    self.runs.is_empty(),
                    "only the fill buffer's first run continues a segment"
                );
                (0, self.fill_carry_bytes)
            } else {
                // A new segment: its header block, then its records, from a block boundary.
                let buffer_offset = self
                    .runs
                    .back()
                    .map_or(0, |run| run.buffer_end().next_multiple_of(BLOCK_SIZE_BYTES));
                (buffer_offset, SEGMENT_HEADER_BYTES)
            };
            assert!(
                (position.offset - prefix_bytes as u64).is_multiple_of(BLOCK_SIZE_BYTES as u64),
                "run at segment offset {} with a {prefix_bytes}-byte prefix",
                position.offset
            );
            self.runs.push_back(Run {
                segment_index: position.segment_index,
                start_offset: position.offset,
                bytes: 0,
                first_sequence: sequence,
                last_sequence: sequence,
                starts_segment: !position.started,
                buffer_offset,
                prefix_bytes,
            });
            position.started = true;
        }
        let run = self.runs.back_mut().expect("a run was just ensured");
        let start = run.buffer_end();
        encode(
            record,
            Bookmark {
                epoch: self.epoch,
                sequence,
            },
            &mut self.backend.buffer_mut(self.fill_buffer)[start..start + length],
        );
        run.bytes += length;
        run.last_sequence = sequence;
        position.offset += length as u64;
        self.buffered_bytes += length;
        self.next_sequence += 1;
        self.publishers.observe(record.publisher);
        Ok(sequence)
    }

    /// Starts the write+sync of the oldest buffered group if no write is in flight; true if it
    /// started one.
    pub fn submit(&mut self) -> Result<bool, JournalError> {
        if let Some(cause) = &self.failure {
            return Err(JournalError::Failed {
                cause: cause.clone(),
            });
        }
        if self.in_flight.is_some() || self.runs.is_empty() {
            return Ok(false);
        }
        let run = self.runs.pop_front().expect("checked non-empty");
        if run.starts_segment {
            self.start_segment(run.segment_index, run.first_sequence)?;
        }
        let active = self
            .active
            .as_mut()
            .expect("a segment is active when a run is written");
        assert_eq!(
            active.header.segment_index, run.segment_index,
            "run for another segment"
        );
        let prefix_bytes = if run.starts_segment {
            SEGMENT_HEADER_BYTES
        } else {
            active.carry_bytes
        };
        assert_eq!(
            active.write_offset + prefix_bytes as u64,
            run.start_offset,
            "group does not continue the segment"
        );
        assert_eq!(
            run.prefix_bytes, prefix_bytes,
            "the fill buffer's prefix does not match the segment"
        );
        assert_eq!(
            run.buffer_offset, 0,
            "a group is written from the start of its buffer"
        );
        let written_buffer = self.fill_buffer;
        let buffer = self.backend.buffer_mut(written_buffer);
        if run.starts_segment {
            active.header.encode(&mut buffer[..SEGMENT_HEADER_BYTES]);
        }
        let data_bytes = prefix_bytes + run.bytes;
        let padded_bytes = data_bytes.div_ceil(BLOCK_SIZE_BYTES) * BLOCK_SIZE_BYTES;
        assert!(
            padded_bytes <= buffer.len(),
            "group of {padded_bytes} bytes exceeds the I/O buffer"
        );
        assert!(
            active.write_offset + padded_bytes as u64 <= active.header.segment_size_bytes,
            "group runs past the segment end"
        );
        buffer[data_bytes..padded_bytes].fill(0);
        let write_offset = active.write_offset;
        // Ready the other buffer for the records appended while this group is written: it gets
        // the later runs if the buffered records already crossed into another segment (at most
        // once per segment), else the partial last block that the next group rewrites.
        let next_buffer = (written_buffer + 1) % IO_BUFFER_COUNT;
        match self.runs.front() {
            Some(later) => {
                let moved = later.buffer_offset..self.runs.back().expect("non-empty").buffer_end();
                copy_to_buffer_start(
                    &mut *self.backend,
                    written_buffer,
                    moved.clone(),
                    next_buffer,
                );
                for later in &mut self.runs {
                    later.buffer_offset -= moved.start;
                }
                self.fill_carry_bytes = 0;
            }
            None => {
                let block_start = data_bytes / BLOCK_SIZE_BYTES * BLOCK_SIZE_BYTES;
                copy_to_buffer_start(
                    &mut *self.backend,
                    written_buffer,
                    block_start..data_bytes,
                    next_buffer,
                );
                self.fill_carry_bytes = data_bytes - block_start;
            }
        }
        self.fill_buffer = next_buffer;
        self.buffered_bytes -= run.bytes;
        if let Err(error) =
            self.backend
                .submit_write_sync(written_buffer, write_offset, padded_bytes)
        {
            return Err(self.poison(
                IoOperation::Submit,
                write_offset,
                padded_bytes,
                error.to_string(),
            ));
        }
        self.in_flight = Some(InFlight {
            write_offset,
            first_sequence: run.first_sequence,
            data_bytes,
            padded_bytes,
            last_sequence: run.last_sequence,
            submitted_at: std::time::Instant::now(),
        });
        Ok(true)
    }

    /// Reaps a finished write+sync without blocking: the new durable point, `None` if nothing
    /// finished, or the failure. Starts the next buffered group after a success.
    pub fn poll_completions(&mut self) -> Result<Option<Durable>, JournalError> {
        if let Some(cause) = &self.failure {
            return Err(JournalError::Failed {
                cause: cause.clone(),
            });
        }
        if self.in_flight.is_none() {
            return Ok(None);
        }
        let Some(outcome) = self.backend.poll() else {
            return Ok(None);
        };
        let durable = self.complete(outcome)?;
        // A failure here poisons the journal and is reported by the next call; this group is durable.
        let _ = self.submit();
        Ok(Some(durable))
    }

    /// Blocks until every record up to `sequence` is durable (tools and tests).
    pub fn wait_durable(&mut self, sequence: Sequence) -> Result<Durable, JournalError> {
        assert!(
            sequence < self.next_sequence,
            "waiting for sequence {sequence}, last appended {}",
            self.next_sequence - 1
        );
        loop {
            if let Some(cause) = &self.failure {
                return Err(JournalError::Failed {
                    cause: cause.clone(),
                });
            }
            if self.durable_up_to >= sequence {
                return Ok(Durable {
                    up_to: self.durable_up_to,
                    group: None,
                });
            }
            if self.in_flight.is_none() {
                let started = self.submit()?;
                assert!(
                    started,
                    "sequence {sequence} is neither durable, in flight nor buffered"
                );
            }
            let outcome = self.backend.wait();
            self.complete(outcome)?;
        }
    }

    /// A descriptor that becomes readable when [`Journal::poll_completions`] may have news.
    pub fn completion_fd(&self) -> RawFd {
        self.backend.completion_fd()
    }

    /// The highest durable sequence (0 if none).
    pub fn durable_up_to(&self) -> Sequence {
        self.durable_up_to
    }

    /// The oldest durable sequence still on disk (None while nothing is durable). Kept in memory:
    /// recovery sets it, the first durable group or [`Journal::apply_retention`] moves it.
    pub fn first_sequence(&self) -> Option<Sequence> {
        self.first_sequence
    }

    /// The sequence of the last record appended (0 if none).
    pub fn last_sequence(&self) -> Sequence {
        self.next_sequence - 1
    }

    /// This journal generation's epoch (stamped in the bookmark of every record it appends).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Bytes appended but not yet handed to a write.
    pub fn buffered_bytes(&self) -> usize {
        self.buffered_bytes
    }

    /// Whether a write+sync is in flight.
    pub fn write_in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    /// The I/O error that made the journal read-only, if any.
    pub fn failure(&self) -> Option<&IoFailure> {
        self.failure.as_ref()
    }

    /// Which I/O path is in use.
    pub fn backend_kind(&self) -> BackendKind {
        self.backend.kind()
    }

    /// The publisher dedup table (recovered, then updated on every append).
    pub fn publishers(&self) -> &PublisherTable {
        &self.publishers
    }

    /// What recovery found and did when this journal was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.recovery
    }

    /// The directory holding the segment files.
    pub fn journal_dir(&self) -> &Path {
        &self.journal_dir
    }

    /// Zero-filled spare segments ready now.
    pub fn spare_segments_ready(&self) -> usize {
        self.spares.ready_count()
    }

    /// The last error the spare-preallocation thread hit (disk full?), if any.
    pub fn preallocation_error(&self) -> Option<String> {
        self.spares.last_error()
    }

    /// The configuration in use.
    pub fn config(&self) -> &JournalConfig {
        &self.config
    }

    fn start_segment(
        &mut self,
        segment_index: u64,
        first_sequence: Sequence,
    ) -> Result<(), JournalError> {
        let path = self.journal_dir.join(segment_file_name(first_sequence));
        let started = (|| {
            let spare = self.spares.take()?;
            std::fs::rename(&spare, &path)?;
            segment::sync_directory(&self.journal_dir)?;
            self.backend.open_segment(&path)
        })();
        if let Err(error) = started {
            self.active = Some(ActiveSegment {
                path,
                header: self.placeholder_header(segment_index, first_sequence),
                write_offset: 0,
                carry_bytes: 0,
            });
            return Err(self.poison(IoOperation::StartSegment, 0, 0, error.to_string()));
        }
        let header = self.placeholder_header(segment_index, first_sequence);
        self.active = Some(ActiveSegment {
            path,
            header,
            write_offset: 0,
            carry_bytes: 0,
        });
        Ok(())
    }

    fn placeholder_header(&self, segment_index: u64, first_sequence: Sequence) -> SegmentHeader {
        SegmentHeader {
            segment_index,
            first_sequence,
            epoch: self.epoch,
            segment_size_bytes: self.config.segment_size_bytes,
            created_unix_ns: segment::now_unix_ns(),
        }
    }

    fn complete(&mut self, outcome: WriteSyncOutcome) -> Result<Durable, JournalError> {
        let flight = self
            .in_flight
            .take()
            .expect("a completion without a write in flight");
        match outcome.write {
            Ok(written) if written == flight.padded_bytes => {}
            Ok(written) => {
                let error = format!("wrote {written} of {} bytes", flight.padded_bytes);
                return Err(self.poison(
                    IoOperation::ShortWrite,
                    flight.write_offset,
                    flight.padded_bytes,
                    error,
                ));
            }
            Err(error) => {
                return Err(self.poison(
                    IoOperation::Write,
                    flight.write_offset,
                    flight.padded_bytes,
                    error.to_string(),
                ))
            }
        }
        if let Err(error) = outcome.sync {
            return Err(self.poison(
                IoOperation::Sync,
                flight.write_offset,
                flight.padded_bytes,
                error.to_string(),
            ));
        }
        assert!(
            flight.last_sequence > self.durable_up_to,
            "durable point went backwards"
        );
        self.durable_up_to = flight.last_sequence;
        self.first_sequence.get_or_insert(flight.first_sequence);
        let block_start = flight.data_bytes / BLOCK_SIZE_BYTES * BLOCK_SIZE_BYTES;
        let active = self
            .active
            .as_mut()
            .expect("a segment is active after a write");
        // `submit` already carried the partial block to the start of the fill buffer.
        active.write_offset = flight.write_offset + block_start as u64;
        active.carry_bytes = flight.data_bytes - block_start;
        Ok(Durable {
            up_to: self.durable_up_to,
            group: Some(GroupWritten {
                records: flight.last_sequence - flight.first_sequence + 1,
                bytes: flight.padded_bytes as u64,
                took: flight.submitted_at.elapsed(),
            }),
        })
    }

    fn poison(
        &mut self,
        operation: IoOperation,
        offset: u64,
        bytes: usize,
        error: String,
    ) -> JournalError {
        let path = self
            .active
            .as_ref()
            .map(|active| active.path.clone())
            .unwrap_or_else(|| self.journal_dir.clone());
        let cause = IoFailure {
            operation,
            path,
            offset,
            bytes,
            error,
            durable_up_to: self.durable_up_to,
        };
        tracing::error!(%cause, "journal: I/O failure, refusing further writes");
        self.failure = Some(cause.clone());
        JournalError::Failed { cause }
    }
}

/// Copies `range` of I/O buffer `from` to the start of I/O buffer `to`, one block at a time
/// through the stack (a backend lends one buffer at a time). Used before `from` is written.
fn copy_to_buffer_start(backend: &mut dyn IoBackend, from: usize, range: Range<usize>, to: usize) {
    let mut block = [0u8; BLOCK_SIZE_BYTES];
    for start in range.clone().step_by(BLOCK_SIZE_BYTES) {
        let end = (start + BLOCK_SIZE_BYTES).min(range.end);
        let chunk = &mut block[..end - start];
        chunk.copy_from_slice(&backend.buffer_mut(from)[start..end]);
        let at = start - range.start;
        backend.buffer_mut(to)[at..at + chunk.len()].copy_from_slice(chunk);
    }
}
