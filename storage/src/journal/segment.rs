//! Segment files: their names, their 4096-byte header block, and the spare segments that are
//! created and zero-filled ahead of need on a background thread.
//!
//! Owns everything about a segment file that is not records: it never writes a record and never
//! touches the hot path except to hand over a ready spare (a rename) at rollover.
//!
//! # Files in `<data_dir>/journal/`
//!
//! * `journal-<first sequence, 20 digits>.seg`: an active or sealed segment.
//! * `spare-<counter, 20 digits>.spare`: a zero-filled, synced segment-sized file ready to become
//!   the next segment (renamed, then its header is written with the first group).
//! * `spare-<counter>.spare.tmp`: a spare being zero-filled; deleted at start-up if found.
//! * `*.dropped`: segments set aside by recovery with `allow_truncate_corruption`.
//!
//! # Segment header block (first 4096 bytes, little-endian)
//!
//! | offset | size | field                | meaning                                              |
//! | -----: | ---: | -------------------- | ---------------------------------------------------- |
//! |      0 |    8 | `magic`              | `TCHYJRNL`                                            |
//! |      8 |    4 | `format_version`     | [`SEGMENT_FORMAT_VERSION`]                           |
//! |     12 |    4 | `header_length`      | bytes covered by the CRC (56)                         |
//! |     16 |    8 | `segment_index`      | 0 for the first segment ever, then +1 per segment    |
//! |     24 |    8 | `first_sequence`     | sequence of the first record (also in the file name) |
//! |     32 |    8 | `epoch`              | journal generation that started the segment          |
//! |     40 |    8 | `segment_size_bytes` | file size, header block included                     |
//! |     48 |    8 | `created_unix_ns`    | wall-clock time the segment was started              |
//! |     56 |    4 | `crc32c`             | CRC32C of bytes `[0, 56)`                             |
//! |     60 | 4036 | zero                 |                                                      |
//!
//! Records start at offset 4096 and are packed back to back; a record never spans segments.

use super::io::BLOCK_SIZE_BYTES;
use super::record::{get_u32, get_u64};
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

/// Bytes of the header block at the start of every segment; records start after it.
pub const SEGMENT_HEADER_BYTES: usize = BLOCK_SIZE_BYTES;
/// Magic bytes that open every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"TCHYJRNL";
/// Version of the segment and record format written by this code.
pub const SEGMENT_FORMAT_VERSION: u32 = 1;
/// Bytes of zeros written per call while filling a spare.
const ZERO_FILL_CHUNK_BYTES: usize = 1 << 20;
const HEADER_CRC_OFFSET: usize = 56;

/// The decoded header block of a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// 0 for the first segment ever written, then +1 per segment.
    pub segment_index: u64,
    /// Sequence of the segment's first record.
    pub first_sequence: u64,
    /// Journal generation that started the segment.
    pub epoch: u64,
    /// File size, header block included.
    pub segment_size_bytes: u64,
    /// Wall-clock time the segment was started.
    pub created_unix_ns: u64,
}

impl SegmentHeader {
    /// Writes the header block into `out` (exactly [`SEGMENT_HEADER_BYTES`] bytes).
    pub fn encode(&self, out: &mut [u8]) {
        assert_eq!(out.len(), SEGMENT_HEADER_BYTES);
        out.fill(0);
        out[0..8].copy_from_slice(&SEGMENT_MAGIC);
        out[8..12].copy_from_slice(&SEGMENT_FORMAT_VERSION.to_le_bytes());
        out[12..16].copy_from_slice(&(HEADER_CRC_OFFSET as u32).to_le_bytes());
        out[16..24].copy_from_slice(&self.segment_index.to_le_bytes());
        out[24..32].copy_from_slice(&self.first_sequence.to_le_bytes());
        out[32..40].copy_from_slice(&self.epoch.to_le_bytes());
        out[40..48].copy_from_slice(&self.segment_size_bytes.to_le_bytes());
        out[48..56].copy_from_slice(&self.created_unix_ns.to_le_bytes());
        let crc = crc32c::crc32c(&out[..HEADER_CRC_OFFSET]);
        out[HEADER_CRC_OFFSET..HEADER_CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
    }

    /// Reads a header block, saying what is wrong with it if it is not valid.
    pub fn decode(bytes: &[u8]) -> Result<SegmentHeader, String> {
        if bytes.len() < SEGMENT_HEADER_BYTES {
            return Err(format!("header block truncated to {} bytes", bytes.len()));
        }
        if bytes[0..8] != SEGMENT_MAGIC {
            return Err("bad magic (not a journal segment, or never written)".to_string());
        }
        let version = get_u32(bytes, 8);
        if version != SEGMENT_FORMAT_VERSION {
            return Err(format!("format version {version}, this build reads {SEGMENT_FORMAT_VERSION} (run `tachyon upgrade`)"));
        }
        let stored = get_u32(bytes, HEADER_CRC_OFFSET);
        let computed = crc32c::crc32c(&bytes[..HEADER_CRC_OFFSET]);
        if stored != computed || get_u32(bytes, 12) as usize != HEADER_CRC_OFFSET {
            return Err(format!(
                "header CRC mismatch: stored {stored:#010x}, computed {computed:#010x}"
            ));
        }
        let header = SegmentHeader {
            segment_index: get_u64(bytes, 16),
            first_sequence: get_u64(bytes, 24),
            epoch: get_u64(bytes, 32),
            segment_size_bytes: get_u64(bytes, 40),
            created_unix_ns: get_u64(bytes, 48),
        };
        if header.segment_size_bytes < 2 * SEGMENT_HEADER_BYTES as u64
            || !header
                .segment_size_bytes
                .is_multiple_of(BLOCK_SIZE_BYTES as u64)
        {
            return Err(format!(
                "implausible segment size {}",
                header.segment_size_bytes
            ));
        }
        Ok(header)
    }
}

/// The file name of the segment whose first record has `first_sequence`.
pub fn segment_file_name(first_sequence: u64) -> String {
    format!("journal-{first_sequence:020}.seg")
}

/// The first sequence a segment file name carries, if `name` is a segment name.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("journal-")?.strip_suffix(".seg")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())?
}

/// A segment file found in the journal directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentFile {
    /// Its path.
    pub path: PathBuf,
    /// The first sequence its name carries.
    pub first_sequence: u64,
}

/// The segment files in `dir`, in sequence order.
pub fn list_segments(dir: &Path) -> io::Result<Vec<SegmentFile>> {
    let mut segments = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(first_sequence) = entry.file_name().to_str().and_then(parse_segment_file_name) {
            segments.push(SegmentFile {
                path: entry.path(),
                first_sequence,
            });
        }
    }
    segments.sort_by_key(|segment| segment.first_sequence);
    Ok(segments)
}

/// The wall clock in nanoseconds since the Unix epoch.
pub fn now_unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Makes a directory entry change (create, rename, unlink) durable.
pub fn sync_directory(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes zeros over `[from, to)` of `file` through the page cache.
pub fn write_zeros(file: &File, from: u64, to: u64) -> io::Result<()> {
    let zeros = vec![0u8; ZERO_FILL_CHUNK_BYTES.min((to - from) as usize).max(1)];
    let mut offset = from;
    while offset < to {
        let bytes = zeros.len().min((to - offset) as usize);
        file.write_all_at(&zeros[..bytes], offset)?;
        offset += bytes as u64;
    }
    Ok(())
}

struct SpareState {
    ready: VecDeque<PathBuf>,
    wanted: usize,
    next_counter: u64,
    shutdown: bool,
    last_error: Option<String>,
}

struct SpareShared {
    dir: PathBuf,
    segment_size_bytes: u64,
    state: Mutex<SpareState>,
    wake: Condvar,
}

/// Keeps `wanted` zero-filled spare segments ready, creating them on a background thread.
pub struct Preallocator {
    shared: Arc<SpareShared>,
    thread: Option<JoinHandle<()>>,
}

impl Preallocator {
    /// Adopts valid spares already in `dir`, deletes incomplete or wrong-sized ones, and starts
    /// the thread that tops the pool up to `wanted`.
    pub fn start(dir: &Path, segment_size_bytes: u64, wanted: usize) -> io::Result<Preallocator> {
        let mut ready = Vec::new();
        let mut next_counter = 0u64;
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix("spare-") else {
                continue;
            };
            let counter: Option<u64> = rest
                .split('.')
                .next()
                .and_then(|digits| digits.parse().ok());
            next_counter = next_counter.max(counter.map_or(0, |c| c + 1));
            let complete =
                name.ends_with(".spare") && entry.metadata()?.len() == segment_size_bytes;
            if complete {
                ready.push((counter.unwrap_or(0), entry.path()));
            } else {
                tracing::info!(path = %entry.path().display(), "journal: deleting an incomplete or wrong-sized spare segment");
                std::fs::remove_file(entry.path())?;
            }
        }
        ready.sort();
        let shared = Arc::new(SpareShared {
            dir: dir.to_path_buf(),
            segment_size_bytes,
            state: Mutex::new(SpareState {
                ready: ready.into_iter().map(|(_, path)| path).collect(),
                wanted,
                next_counter,
                shutdown: false,
                last_error: None,
            }),
            wake: Condvar::new(),
        });
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("journal-prealloc".to_string())
            .spawn(move || preallocate_loop(&thread_shared))?;
        Ok(Preallocator {
            shared,
            thread: Some(thread),
        })
    }

    /// Takes a ready spare, or creates one now (slow path, logged) if the thread is behind.
    pub fn take(&self) -> io::Result<PathBuf> {
        let counter = {
            let mut state = self.shared.state.lock().expect("spare state lock");
            self.shared.wake.notify_all();
            if let Some(path) = state.ready.pop_front() {
                return Ok(path);
            }
            state.next_counter += 1;
            state.next_counter - 1
        };
        tracing::warn!(
            segment_size_bytes = self.shared.segment_size_bytes,
            "journal: no spare segment was ready, zero-filling one on the write path; raise spare_segments or lower the segment size"
        );
        create_spare(
            &self.shared.dir,
            self.shared.segment_size_bytes,
            counter,
            None,
        )
    }

    /// Spares ready right now.
    pub fn ready_count(&self) -> usize {
        self.shared
            .state
            .lock()
            .expect("spare state lock")
            .ready
            .len()
    }

    /// The last error the background thread hit, if any (it retries on the next take).
    pub fn last_error(&self) -> Option<String> {
        self.shared
            .state
            .lock()
            .expect("spare state lock")
            .last_error
            .clone()
    }
}

impl Drop for Preallocator {
    fn drop(&mut self) {
        self.shared.state.lock().expect("spare state lock").shutdown = true;
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn preallocate_loop(shared: &SpareShared) {
    loop {
        let counter = {
            let mut state = shared.state.lock().expect("spare state lock");
            while !state.shutdown
                && (state.ready.len() >= state.wanted || state.last_error.is_some())
            {
                state = shared.wake.wait(state).expect("spare state lock");
                // A take after an error is the signal to retry.
                if state.ready.len() < state.wanted {
                    state.last_error = None;
                }
            }
            if state.shutdown {
                return;
            }
            let counter = state.next_counter;
            state.next_counter += 1;
            counter
        };
        let created = create_spare(
            &shared.dir,
            shared.segment_size_bytes,
            counter,
            Some(shared),
        );
        let mut state = shared.state.lock().expect("spare state lock");
        match created {
            Ok(path) => state.ready.push_back(path),
            Err(error) if error.kind() == io::ErrorKind::Interrupted && state.shutdown => return,
            Err(error) => {
                tracing::warn!(dir = %shared.dir.display(), %error, "journal: cannot preallocate a spare segment (disk full?)");
                state.last_error = Some(error.to_string());
            }
        }
    }
}

/// Creates `spare-<counter>.spare`: zero-filled through `.tmp`, synced, renamed, directory synced.
fn create_spare(
    dir: &Path,
    segment_size_bytes: u64,
    counter: u64,
    shared: Option<&SpareShared>,
) -> io::Result<PathBuf> {
    let final_path = dir.join(format!("spare-{counter:020}.spare"));
    let temporary_path = dir.join(format!("spare-{counter:020}.spare.tmp"));
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temporary_path)?;
    let zeros = vec![0u8; ZERO_FILL_CHUNK_BYTES];
    let mut written = 0u64;
    while written < segment_size_bytes {
        if shared.is_some_and(|s| s.state.lock().map(|state| state.shutdown).unwrap_or(true)) {
            drop(file);
            let _ = std::fs::remove_file(&temporary_path);
            return Err(io::Error::new(io::ErrorKind::Interrupted, "shutting down"));
        }
        let bytes = zeros.len().min((segment_size_bytes - written) as usize);
        file.write_all(&zeros[..bytes])?;
        written += bytes as u64;
    }
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temporary_path, &final_path)?;
    sync_directory(dir)?;
    Ok(final_path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_rejects_damage() {
        let header = SegmentHeader {
            segment_index: 3,
            first_sequence: 1001,
            epoch: 2,
            segment_size_bytes: 65536,
            created_unix_ns: 5,
        };
        let mut block = vec![0u8; SEGMENT_HEADER_BYTES];
        header.encode(&mut block);
        assert_eq!(SegmentHeader::decode(&block), Ok(header));
        for byte in 0..HEADER_CRC_OFFSET + 4 {
            let mut damaged = block.clone();
            damaged[byte] ^= 0x10;
            assert!(SegmentHeader::decode(&damaged).is_err(), "byte {byte}");
        }
        assert!(SegmentHeader::decode(&[0u8; SEGMENT_HEADER_BYTES]).is_err());
    }

    #[test]
    fn segment_names_round_trip() {
        assert_eq!(segment_file_name(17), "journal-00000000000000000017.seg");
        assert_eq!(
            parse_segment_file_name(&segment_file_name(u64::MAX)),
            Some(u64::MAX)
        );
        assert_eq!(parse_segment_file_name("journal-17.seg"), None);
        assert_eq!(
            parse_segment_file_name("spare-00000000000000000001.spare"),
            None
        );
    }
}
