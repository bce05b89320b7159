//! A connection's spool file: where its frames go while it is too slow for memory.
//!
//! When a connection's outbound queue is over its budget (or the instance is over
//! `limits.message_memory_limit`), [`crate::outbound::Outbound`] appends each further frame here
//! instead of dropping the client. The writer task sends the memory queue first, then reads the
//! spool back in order, so the client receives every frame in the order it was queued. The spool
//! owns only the file and its offsets; it never decides *when* to spool, and it never talks to the
//! socket.
//!
//! This is the slow path: plain buffered `pwrite`s of up to [`WRITE_CHUNK_BYTES`] to the page
//! cache, never an fsync (the data is worthless after a restart: the client reconnects and
//! resumes by bookmark). Nothing here runs for a connection that keeps up.
//!
//! File layout: none beyond the wire. The file holds exactly the bytes that would have gone to
//! the socket, frame after frame, each frame its own 4-byte big-endian length prefix followed by
//! header and payload:
//!
//! ```text
//! offset 0          read_offset              written_end        (+ pending, still in memory)
//! | sent (a hole once punched) | backlog on disk ...  | backlog buffered in `pending` |
//! ```
//!
//! The file is named `tachyon-<pid>-<shard>-<slot>-<generation>.spool` under
//! `limits.message_disk_path`, created at the first spilled frame and removed as soon as the
//! backlog drains or the connection closes. Files of processes that no longer run are removed the
//! first time this process spools into the same folder.

use crate::stats::ShardStats;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tachyon_core::ids::ConnectionId;
use tracing::{info, warn};

/// Bytes buffered in memory before they are written to the file in one `pwrite`: small enough
/// that the write to the page cache takes microseconds on the shard thread.
pub(crate) const WRITE_CHUNK_BYTES: usize = 32 * 1024;

/// Sent bytes at the front of the file are given back to the file system (a punched hole) once
/// this many have accumulated, so a client that drains slowly but never catches up does not
/// fill the disk with bytes it already has.
const PUNCH_HOLE_AFTER_BYTES: u64 = 1 << 20;

/// The file system's block size assumed when punching holes (a hole smaller than a block frees
/// nothing).
const HOLE_ALIGNMENT_BYTES: u64 = 4096;

/// A `pending` buffer grown past this by one huge frame is shrunk again once written.
const PENDING_CAPACITY_KEPT_BYTES: usize = 4 * WRITE_CHUNK_BYTES;

/// Why a frame could not be spooled: the connection must be disconnected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SpoolRefusal {
    /// The backlog plus the frame would exceed `limits.message_disk_limit`.
    DiskLimit,
    /// The file could not be created, written or read; the text names the file and the error.
    Failed(String),
}

/// One connection's spool.
pub(crate) struct Spool {
    directory: PathBuf,
    connection: ConnectionId,
    disk_limit_bytes: u64,
    stats: Arc<ShardStats>,
    /// The open file and its path, from the first spilled frame until the backlog drains.
    file: Option<(File, PathBuf)>,
    /// Bytes appended but not yet written to the file; they follow `written_end`.
    pending: Vec<u8>,
    /// File offset just past the last byte written.
    written_end: u64,
    /// File offset of the next byte to send.
    read_offset: u64,
    /// Bytes at the front of the file given back with a punched hole.
    punched_to: u64,
}

impl Spool {
    /// A spool for `connection` under `directory`; nothing is created until the first frame.
    pub(crate) fn new(
        directory: PathBuf,
        connection: ConnectionId,
        disk_limit_bytes: u64,
        stats: Arc<ShardStats>,
    ) -> Spool {
        assert!(disk_limit_bytes > 0, "a spool needs a disk limit");
        Spool {
            directory,
            connection,
            disk_limit_bytes,
            stats,
            file: None,
            pending: Vec::new(),
            written_end: 0,
            read_offset: 0,
            punched_to: 0,
        }
    }

    /// Bytes spooled and not yet handed back to the writer.
    pub(crate) fn backlog_bytes(&self) -> u64 {
        self.written_end + self.pending.len() as u64 - self.read_offset
    }

    /// The limit on [`Spool::backlog_bytes`] (`limits.message_disk_limit`).
    pub(crate) fn disk_limit_bytes(&self) -> u64 {
        self.disk_limit_bytes
    }

    /// The file, while one exists.
    pub(crate) fn path(&self) -> Option<&Path> {
        self.file.as_ref().map(|(_, path)| path.as_path())
    }

    /// Appends one frame (its `header` bytes, then its `payload`). `Ok(true)` when this frame
    /// created the file, i.e. the connection just started spooling.
    pub(crate) fn append(&mut self, header: &[u8], payload: &[u8]) -> Result<bool, SpoolRefusal> {
        let frame_bytes = (header.len() + payload.len()) as u64;
        if self.backlog_bytes() + frame_bytes > self.disk_limit_bytes {
            return Err(SpoolRefusal::DiskLimit);
        }
        let opened = if self.file.is_none() {
            self.open().map_err(SpoolRefusal::Failed)?;
            true
        } else {
            false
        };
        self.pending.extend_from_slice(header);
        self.pending.extend_from_slice(payload);
        ShardStats::add(&self.stats.messages_spooled, 1);
        ShardStats::add(&self.stats.bytes_spooled, frame_bytes);
        ShardStats::add(&self.stats.spool_backlog_bytes, frame_bytes);
        if self.pending.len() >= WRITE_CHUNK_BYTES {
            self.write_pending().map_err(SpoolRefusal::Failed)?;
        }
        Ok(opened)
    }

    /// Appends up to `max_bytes` of the backlog, oldest first, to `buffer`; returns how many.
    pub(crate) fn read_into(
        &mut self,
        buffer: &mut Vec<u8>,
        max_bytes: usize,
    ) -> Result<usize, SpoolRefusal> {
        let moved = if self.read_offset < self.written_end {
            let count = (self.written_end - self.read_offset).min(max_bytes as u64) as usize;
            let start = buffer.len();
            buffer.resize(start + count, 0);
            let (file, path) = self.file.as_ref().expect("bytes were written to a file");
            if let Err(error) = file.read_exact_at(&mut buffer[start..], self.read_offset) {
                buffer.truncate(start);
                return Err(SpoolRefusal::Failed(format!(
                    "cannot read spool file {}: {error}",
                    path.display()
                )));
            }
            self.read_offset += count as u64;
            self.punch_sent_bytes();
            count
        } else {
            // Everything on file is sent: the rest is still in `pending`, so take it from there
            // without a round trip through the file. The file offsets move past it as if it had
            // been written and read (the next write leaves a hole, which costs nothing).
            let count = self.pending.len().min(max_bytes);
            buffer.extend_from_slice(&self.pending[..count]);
            self.pending.drain(..count);
            self.written_end += count as u64;
            self.read_offset += count as u64;
            count
        };
        ShardStats::sub(&self.stats.spool_backlog_bytes, moved as u64);
        if self.backlog_bytes() == 0 {
            self.remove_file();
        }
        Ok(moved)
    }

    /// Drops the backlog and removes the file (the connection is closing).
    pub(crate) fn discard(&mut self) {
        ShardStats::sub(&self.stats.spool_backlog_bytes, self.backlog_bytes());
        self.pending.clear();
        self.remove_file();
    }

    fn open(&mut self) -> Result<(), String> {
        std::fs::create_dir_all(&self.directory).map_err(|error| {
            format!(
                "cannot create the spool folder {} (limits.message_disk_path): {error}",
                self.directory.display()
            )
        })?;
        sweep_stale_files_once(&self.directory);
        let id = self.connection;
        let path = self.directory.join(format!(
            "tachyon-{}-{}-{}-{}.spool",
            std::process::id(),
            id.shard.0,
            id.slot,
            id.generation
        ));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|error| format!("cannot create spool file {}: {error}", path.display()))?;
        ShardStats::add(&self.stats.spools_opened, 1);
        self.file = Some((file, path));
        self.written_end = 0;
        self.read_offset = 0;
        self.punched_to = 0;
        Ok(())
    }

    fn write_pending(&mut self) -> Result<(), String> {
        let (file, path) = self.file.as_ref().expect("appending opened the file");
        file.write_all_at(&self.pending, self.written_end)
            .map_err(|error| format!("cannot write spool file {}: {error}", path.display()))?;
        self.written_end += self.pending.len() as u64;
        self.pending.clear();
        if self.pending.capacity() > PENDING_CAPACITY_KEPT_BYTES {
            self.pending.shrink_to(WRITE_CHUNK_BYTES);
        }
        Ok(())
    }

    /// Gives the sent front of the file back to the file system, best effort.
    fn punch_sent_bytes(&mut self) {
        let end = self.read_offset / HOLE_ALIGNMENT_BYTES * HOLE_ALIGNMENT_BYTES;
        if end < self.punched_to + PUNCH_HOLE_AFTER_BYTES {
            return;
        }
        let (file, _) = self.file.as_ref().expect("bytes were read from a file");
        // SAFETY: fallocate only reads its integer arguments; the descriptor is open (owned by
        // `file`). A file system without hole punching returns EOPNOTSUPP, which costs only disk.
        unsafe {
            libc::fallocate(
                file.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                self.punched_to as libc::off_t,
                (end - self.punched_to) as libc::off_t,
            );
        }
        self.punched_to = end;
    }

    fn remove_file(&mut self) {
        if let Some((file, path)) = self.file.take() {
            drop(file);
            if let Err(error) = std::fs::remove_file(&path) {
                if error.kind() != io::ErrorKind::NotFound {
                    warn!(path = %path.display(), "cannot remove spool file: {error}");
                }
            }
        }
        if self.pending.capacity() > PENDING_CAPACITY_KEPT_BYTES {
            self.pending = Vec::new();
        }
        self.written_end = 0;
        self.read_offset = 0;
        self.punched_to = 0;
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        self.discard();
    }
}

/// Removes, once per folder and process, spool files left by processes that no longer run (a
/// crash or a kill leaves them behind). The lock is taken only when a spool file is created.
fn sweep_stale_files_once(directory: &Path) {
    static SWEPT: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
    {
        let mut swept = SWEPT
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if swept.iter().any(|done| done == directory) {
            return;
        }
        swept.push(directory.to_path_buf());
    }
    let Ok(entries) = std::fs::read_dir(directory) else {
        return;
    };
    let own = std::process::id();
    let mut removed = 0usize;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(spool_file_pid) else {
            continue;
        };
        if pid != own
            && !Path::new(&format!("/proc/{pid}")).exists()
            && std::fs::remove_file(entry.path()).is_ok()
        {
            removed += 1;
        }
    }
    if removed > 0 {
        info!(folder = %directory.display(), removed, "removed spool files of processes that no longer run");
    }
}

/// The process id in a spool file's name, `tachyon-<pid>-….spool`.
fn spool_file_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("tachyon-")?;
    if !rest.ends_with(".spool") {
        return None;
    }
    rest.split('-').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tachyon_core::ids::ShardId;

    fn folder(test: &str) -> PathBuf {
        let folder =
            std::env::temp_dir().join(format!("tachyon-spool-test-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&folder);
        folder
    }

    fn spool(directory: &Path, limit: u64) -> (Spool, Arc<ShardStats>) {
        let stats = Arc::new(ShardStats::default());
        let id = ConnectionId {
            shard: ShardId(0),
            slot: 3,
            generation: 1,
        };
        (
            Spool::new(directory.to_path_buf(), id, limit, stats.clone()),
            stats,
        )
    }

    fn files(directory: &Path) -> Vec<String> {
        std::fs::read_dir(directory)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|entry| entry.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn frames_come_back_in_order_through_file_and_buffer() {
        let directory = folder("order");
        let (mut spool, stats) = spool(&directory, 64 << 20);
        assert!(spool.path().is_none(), "no file before the first frame");
        let mut expected = Vec::new();
        for index in 0..5_000u32 {
            let header = format!("[{index}:");
            let payload = vec![(index % 251) as u8; (index % 97) as usize];
            let opened = spool.append(header.as_bytes(), &payload).unwrap();
            assert_eq!(opened, index == 0);
            expected.extend_from_slice(header.as_bytes());
            expected.extend_from_slice(&payload);
        }
        assert_eq!(spool.backlog_bytes(), expected.len() as u64);
        assert_eq!(ShardStats::get(&stats.messages_spooled), 5_000);
        assert_eq!(ShardStats::get(&stats.spools_opened), 1);
        assert_eq!(files(&directory).len(), 1);
        let mut received = Vec::new();
        while spool.backlog_bytes() > 0 {
            let moved = spool.read_into(&mut received, 7_001).unwrap();
            assert!(moved > 0 && moved <= 7_001);
        }
        assert_eq!(received, expected);
        assert_eq!(ShardStats::get(&stats.spool_backlog_bytes), 0);
        assert!(
            files(&directory).is_empty(),
            "a drained spool removes its file"
        );
        assert!(spool.path().is_none());
    }

    #[test]
    fn appends_interleaved_with_reads_keep_their_order() {
        let directory = folder("interleaved");
        let (mut spool, _) = spool(&directory, 64 << 20);
        let mut expected = Vec::new();
        let mut received = Vec::new();
        for round in 0..50u32 {
            for index in 0..300u32 {
                let frame = format!("<{round}.{index}>").repeat(1 + index as usize % 40);
                spool.append(frame.as_bytes(), b"").unwrap();
                expected.extend_from_slice(frame.as_bytes());
            }
            // Read some, not all: the next appends land behind the unread rest.
            spool.read_into(&mut received, 20_000).unwrap();
        }
        while spool.backlog_bytes() > 0 {
            spool.read_into(&mut received, 65_536).unwrap();
        }
        assert_eq!(received, expected);
    }

    #[test]
    fn the_disk_limit_refuses_without_losing_what_is_spooled() {
        let directory = folder("limit");
        let (mut spool, _) = spool(&directory, 1_000);
        spool.append(&[1; 600], &[2; 300]).unwrap();
        assert_eq!(
            spool.append(b"header", &[3; 100]),
            Err(SpoolRefusal::DiskLimit)
        );
        assert_eq!(spool.backlog_bytes(), 900);
        spool.append(&[4; 100], b"").unwrap();
        let mut received = Vec::new();
        spool.read_into(&mut received, 500).unwrap();
        // Reading makes room again: the limit is on the backlog, not on all bytes ever spooled.
        spool.append(&[5; 400], b"").unwrap();
        assert_eq!(spool.backlog_bytes(), 900);
    }

    #[test]
    fn discarding_and_dropping_remove_the_file() {
        let directory = folder("discard");
        let (mut spool, stats) = spool(&directory, 1 << 20);
        spool.append(&[9; 100_000], b"").unwrap();
        assert_eq!(files(&directory).len(), 1);
        spool.discard();
        assert!(files(&directory).is_empty());
        assert_eq!(ShardStats::get(&stats.spool_backlog_bytes), 0);
        spool.append(&[9; 10], b"").unwrap();
        assert_eq!(files(&directory).len(), 1);
        drop(spool);
        assert!(files(&directory).is_empty());
        assert_eq!(ShardStats::get(&stats.spool_backlog_bytes), 0);
        assert_eq!(ShardStats::get(&stats.spools_opened), 2);
    }

    #[test]
    fn a_spool_folder_that_cannot_be_created_is_named_in_the_refusal() {
        let blocker = folder("blocked");
        std::fs::create_dir_all(blocker.parent().unwrap()).unwrap();
        std::fs::write(&blocker, b"a file where the folder should be").unwrap();
        let (mut spool, _) = spool(&blocker.join("spool"), 1 << 20);
        match spool.append(b"x", b"") {
            Err(SpoolRefusal::Failed(message)) => {
                assert!(message.contains("limits.message_disk_path"), "{message}");
                assert!(message.contains("blocked"), "{message}");
            }
            other => panic!("expected a failure, got {other:?}"),
        }
        std::fs::remove_file(&blocker).unwrap();
    }

    #[test]
    fn stale_files_of_dead_processes_are_swept() {
        let directory = folder("sweep");
        std::fs::create_dir_all(&directory).unwrap();
        // Pid 0x7fff_fff0 is above any pid_max, so no such process runs.
        let stale = directory.join("tachyon-2147483632-0-1-1.spool");
        let unrelated = directory.join("notes.txt");
        std::fs::write(&stale, b"old").unwrap();
        std::fs::write(&unrelated, b"keep").unwrap();
        let (mut spool, _) = spool(&directory, 1 << 20);
        spool.append(b"x", b"").unwrap();
        assert!(!stale.exists());
        assert!(unrelated.exists());
        assert_eq!(spool_file_pid("tachyon-42-0-1-2.spool"), Some(42));
        assert_eq!(spool_file_pid("tachyon-42-0-1-2.txt"), None);
    }

    #[test]
    fn sent_bytes_are_punched_out_of_the_file() {
        let directory = folder("punch");
        let (mut spool, _) = spool(&directory, 64 << 20);
        for _ in 0..64 {
            spool.append(&[7; 64 * 1024], b"").unwrap();
        }
        let mut received = Vec::new();
        for _ in 0..40 {
            received.clear();
            spool.read_into(&mut received, 64 * 1024).unwrap();
        }
        assert!(spool.punched_to >= PUNCH_HOLE_AFTER_BYTES);
        assert!(spool.punched_to <= spool.read_offset);
        // The unsent rest still reads back intact.
        let mut rest = Vec::new();
        while spool.backlog_bytes() > 0 {
            spool.read_into(&mut rest, 1 << 20).unwrap();
        }
        assert_eq!(rest.len(), 24 * 64 * 1024);
        assert!(rest.iter().all(|&byte| byte == 7));
    }
}
