//! The seam between the journal's logic and the operating system: one trait for "write this
//! aligned buffer at this offset of the active segment, then fdatasync", its two real
//! implementations (io_uring with O_DIRECT, buffered pwrite) and the choice between them.
//!
//! Owns the two I/O buffers (page-aligned, so they can be registered and used with O_DIRECT) and
//! the completion fd. The journal encodes records into one buffer while the kernel writes from the
//! other, so the disk never waits for a copy. A backend never decides what to write or when; it
//! never reports success for a write that was short or for a sync that failed (the journal checks
//! both results), and it never hands out the buffer a write in flight reads from.

use super::fallback::FallbackBackend;
use super::uring::UringBackend;
use super::JournalError;
use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::fmt;
use std::io;
use std::os::fd::RawFd;
use std::path::Path;

/// Alignment and granularity of every journal write (the O_DIRECT block).
pub const BLOCK_SIZE_BYTES: usize = 4096;
/// I/O buffers every backend owns: one being written by the kernel, one being filled by appends.
pub const IO_BUFFER_COUNT: usize = 2;

/// Which I/O path the operator asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BackendChoice {
    /// io_uring with O_DIRECT if this machine and filesystem allow it, else buffered with a warning.
    #[default]
    Auto,
    /// io_uring with O_DIRECT or refuse to start.
    Uring,
    /// Buffered pwrite + fdatasync (for tmpfs and tests).
    Fallback,
}

/// Which I/O path is in use, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendKind {
    /// io_uring, O_DIRECT, write and fdatasync linked in one submission.
    Uring {
        /// Whether the I/O buffer is registered with the ring (WriteFixed).
        registered_buffer: bool,
    },
    /// Buffered pwrite + fdatasync, done synchronously in `submit`.
    Fallback {
        /// Why io_uring/O_DIRECT was not used.
        reason: String,
    },
    /// A backend supplied by the caller (tests, simulations).
    Custom(&'static str),
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendKind::Uring { registered_buffer } => write!(
                f,
                "io_uring+O_DIRECT (registered buffer: {registered_buffer})"
            ),
            BackendKind::Fallback { reason } => write!(f, "buffered pwrite+fdatasync ({reason})"),
            BackendKind::Custom(name) => write!(f, "custom ({name})"),
        }
    }
}

/// The results of one write+sync submission, both as the OS reported them.
#[derive(Debug)]
pub struct WriteSyncOutcome {
    /// Bytes written, or the write error.
    pub write: io::Result<usize>,
    /// Whether fdatasync succeeded (cancelled if the write failed or was short).
    pub sync: io::Result<()>,
}

/// The file operations the journal needs; at most one write+sync is in flight at a time.
///
/// A backend owns [`IO_BUFFER_COUNT`] page-aligned I/O buffers of equal size, numbered from 0.
/// While a write from one of them is in flight, the other stays available through `buffer_mut`.
pub trait IoBackend: Send {
    /// Which backend this is.
    fn kind(&self) -> BackendKind;
    /// Makes `path` (an existing, preallocated segment file) the target of later writes; never
    /// called while a write is in flight.
    fn open_segment(&mut self, path: &Path) -> io::Result<()>;
    /// I/O buffer number `buffer` (below [`IO_BUFFER_COUNT`]); never called for the buffer a
    /// write in flight reads from.
    fn buffer_mut(&mut self, buffer: usize) -> &mut [u8];
    /// Starts writing `buffer_mut(buffer)[..length]` at `offset` of the open segment, then
    /// fdatasync. The buffer is left untouched until the outcome is reaped.
    fn submit_write_sync(&mut self, buffer: usize, offset: u64, length: usize) -> io::Result<()>;
    /// The outcome of the in-flight submission if it has finished; never blocks.
    fn poll(&mut self) -> Option<WriteSyncOutcome>;
    /// Blocks until the in-flight submission finishes.
    fn wait(&mut self) -> WriteSyncOutcome;
    /// A file descriptor that becomes readable when a completion may be ready.
    fn completion_fd(&self) -> RawFd;
}

/// A zeroed, page-aligned heap buffer, allocated once at start-up.
pub struct AlignedBuffer {
    pointer: *mut u8,
    length: usize,
}

// SAFETY: the buffer is plain owned memory; the raw pointer is not shared with other threads
// except the kernel during an in-flight write, which its owner waits for before dropping it.
unsafe impl Send for AlignedBuffer {}

impl AlignedBuffer {
    /// Allocates `length` bytes (a positive multiple of the block size), zeroed.
    pub fn new(length: usize) -> AlignedBuffer {
        assert!(
            length > 0 && length.is_multiple_of(BLOCK_SIZE_BYTES),
            "aligned buffer length {length}"
        );
        let layout =
            Layout::from_size_align(length, BLOCK_SIZE_BYTES).expect("aligned buffer layout");
        // SAFETY: the layout has a non-zero size.
        let pointer = unsafe { alloc_zeroed(layout) };
        assert!(
            !pointer.is_null(),
            "out of memory allocating the {length}-byte journal I/O buffer"
        );
        AlignedBuffer { pointer, length }
    }

    /// The bytes.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: pointer is a live allocation of `length` bytes owned by self, and the &mut self
        // borrow makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.pointer, self.length) }
    }

    /// The start address (for registration with the kernel).
    pub fn as_ptr(&self) -> *const u8 {
        self.pointer
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.length
    }

    /// Always false: the buffer has at least one block.
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl Drop for AlignedBuffer {
    fn drop(&mut self) {
        let layout =
            Layout::from_size_align(self.length, BLOCK_SIZE_BYTES).expect("aligned buffer layout");
        // SAFETY: allocated in `new` with exactly this layout and not freed before.
        unsafe { dealloc(self.pointer, layout) }
    }
}

/// A non-blocking eventfd, closed on drop.
pub struct EventFd(RawFd);

impl EventFd {
    /// Creates a non-blocking, close-on-exec eventfd.
    pub fn new() -> io::Result<EventFd> {
        // SAFETY: eventfd takes no pointers.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(EventFd(fd))
    }

    /// The descriptor.
    pub fn fd(&self) -> RawFd {
        self.0
    }

    /// Makes the fd readable.
    pub fn notify(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our own eventfd.
        let _ = unsafe { libc::write(self.0, (&one as *const u64).cast(), 8) };
    }

    /// Resets the counter so the fd is no longer readable (non-blocking).
    pub fn clear(&self) {
        let mut value: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64 from our own non-blocking eventfd.
        let _ = unsafe { libc::read(self.0, (&mut value as *mut u64).cast(), 8) };
    }
}

impl Drop for EventFd {
    fn drop(&mut self) {
        // SAFETY: closing a descriptor we own exactly once.
        unsafe { libc::close(self.0) };
    }
}

/// Opens the backend the operator chose for segments in `journal_dir`, with I/O buffers of
/// `buffer_bytes` each; `Auto` falls back to buffered I/O with a warning saying why.
pub fn open_backend(
    journal_dir: &Path,
    choice: BackendChoice,
    buffer_bytes: usize,
) -> Result<Box<dyn IoBackend>, JournalError> {
    let fallback = |reason: String| -> Result<Box<dyn IoBackend>, JournalError> {
        let backend =
            FallbackBackend::new(buffer_bytes, reason).map_err(|source| JournalError::Io {
                operation: "create the completion eventfd for",
                path: journal_dir.to_path_buf(),
                source,
            })?;
        Ok(Box::new(backend))
    };
    match choice {
        BackendChoice::Fallback => fallback("configured".to_string()),
        BackendChoice::Uring | BackendChoice::Auto => {
            match UringBackend::probe(journal_dir, buffer_bytes) {
                Ok(backend) => Ok(Box::new(backend)),
                Err(reason) if choice == BackendChoice::Auto => {
                    tracing::warn!(dir = %journal_dir.display(), %reason, "journal: io_uring/O_DIRECT unavailable, using buffered pwrite+fdatasync (higher, less steady latency)");
                    fallback(reason)
                }
                Err(reason) => Err(JournalError::UringUnavailable {
                    dir: journal_dir.to_path_buf(),
                    reason,
                }),
            }
        }
    }
}
