//! The buffered fallback backend: pwrite + fdatasync through the page cache, done synchronously
//! inside `submit_write_sync`, for filesystems without O_DIRECT (tmpfs) or hosts without io_uring.
//!
//! Owns its two I/O buffers, the open segment file and an eventfd it signals after each write+sync so
//! a caller awaiting readiness behaves as with io_uring. It blocks the calling thread for the
//! duration of the sync; it must never be chosen silently (the journal logs why it is in use).

use super::io::{
    AlignedBuffer, BackendKind, EventFd, IoBackend, WriteSyncOutcome, IO_BUFFER_COUNT,
};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::RawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Buffered pwrite + fdatasync write path.
pub struct FallbackBackend {
    buffers: [AlignedBuffer; IO_BUFFER_COUNT],
    eventfd: EventFd,
    file: Option<File>,
    reason: String,
    finished: Option<WriteSyncOutcome>,
}

impl FallbackBackend {
    /// A fallback backend with I/O buffers of `buffer_bytes` each; `reason` says why it is in use.
    pub fn new(buffer_bytes: usize, reason: String) -> io::Result<FallbackBackend> {
        Ok(FallbackBackend {
            buffers: std::array::from_fn(|_| AlignedBuffer::new(buffer_bytes)),
            eventfd: EventFd::new()?,
            file: None,
            reason,
            finished: None,
        })
    }
}

impl IoBackend for FallbackBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Fallback {
            reason: self.reason.clone(),
        }
    }

    fn open_segment(&mut self, path: &Path) -> io::Result<()> {
        self.file = Some(OpenOptions::new().read(true).write(true).open(path)?);
        Ok(())
    }

    fn buffer_mut(&mut self, buffer: usize) -> &mut [u8] {
        // The write finished inside submit_write_sync: neither buffer is ever read by the kernel
        // after it returns, so both are always free.
        self.buffers[buffer].as_mut_slice()
    }

    fn submit_write_sync(&mut self, buffer: usize, offset: u64, length: usize) -> io::Result<()> {
        assert!(
            self.finished.is_none(),
            "a second write submitted before the first was reaped"
        );
        assert!(
            length <= self.buffers[buffer].len(),
            "write length {length}"
        );
        let file = self.file.as_ref().expect("no open segment");
        let bytes = &self.buffers[buffer].as_mut_slice()[..length];
        let mut written = 0usize;
        let write = loop {
            if written == length {
                break Ok(written);
            }
            match file.write_at(&bytes[written..], offset + written as u64) {
                Ok(0) => break Ok(written),
                Ok(count) => written += count,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => break Err(error),
            }
        };
        let sync = match &write {
            Ok(count) if *count == length => file.sync_data(),
            _ => Err(io::Error::from_raw_os_error(libc::ECANCELED)),
        };
        self.finished = Some(WriteSyncOutcome { write, sync });
        self.eventfd.notify();
        Ok(())
    }

    fn poll(&mut self) -> Option<WriteSyncOutcome> {
        self.eventfd.clear();
        self.finished.take()
    }

    fn wait(&mut self) -> WriteSyncOutcome {
        self.poll().expect("wait with nothing in flight")
    }

    fn completion_fd(&self) -> RawFd {
        self.eventfd.fd()
    }
}
