//! The io_uring backend: O_DIRECT writes from one of two registered I/O buffers, each linked to an
//! fdatasync in the same submission (the combination that measured fastest on this disk).
//!
//! Owns the ring, the eventfd registered with it, the two I/O buffers and the open segment file.
//! It never uses SQPOLL (its kernel thread spins a core while waiting) nor DEFER_TASKRUN
//! (completions would wait for the next io_uring_enter, so the eventfd would not wake the shard),
//! and never hands out or frees a buffer while the kernel may still be writing from it.

use super::io::{
    AlignedBuffer, BackendKind, EventFd, IoBackend, WriteSyncOutcome, BLOCK_SIZE_BYTES,
    IO_BUFFER_COUNT,
};
use io_uring::{opcode, squeue, types, IoUring};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Submission queue entries: one write and one fdatasync in flight, with room to spare.
const RING_ENTRIES: u32 = 8;
const USER_DATA_WRITE: u64 = 1;
const USER_DATA_SYNC: u64 = 2;
/// Name of the file written once at start-up to prove O_DIRECT writes work in the directory.
const PROBE_FILE_NAME: &str = ".direct-io-probe";

/// io_uring + O_DIRECT write path.
pub struct UringBackend {
    ring: IoUring,
    eventfd: EventFd,
    buffers: [AlignedBuffer; IO_BUFFER_COUNT],
    registered_buffer: bool,
    file: Option<File>,
    /// The buffer the write in flight reads from, until both its completions are reaped.
    in_flight: Option<usize>,
    write_result: Option<i32>,
    sync_result: Option<i32>,
}

impl UringBackend {
    /// Sets up a ring and proves an O_DIRECT write+fdatasync works in `dir`; the error says which
    /// step failed, the likely cause and the fix.
    pub fn probe(dir: &Path, buffer_bytes: usize) -> Result<UringBackend, String> {
        let ring = IoUring::new(RING_ENTRIES).map_err(|error| describe_setup_error(&error))?;
        let eventfd = EventFd::new().map_err(|error| format!("eventfd failed: {error}"))?;
        ring.submitter()
            .register_eventfd(eventfd.fd())
            .map_err(|error| format!("io_uring eventfd registration failed: {error}"))?;
        let buffers: [AlignedBuffer; IO_BUFFER_COUNT] =
            std::array::from_fn(|_| AlignedBuffer::new(buffer_bytes));
        // Registered buffer number i is I/O buffer i (WriteFixed names it by that index).
        let iovecs = buffers.each_ref().map(|buffer| libc::iovec {
            iov_base: buffer.as_ptr() as *mut libc::c_void,
            iov_len: buffer.len(),
        });
        // SAFETY: the iovecs point at `buffers`, which live as long as the ring (both are fields
        // of the backend; Drop waits for in-flight I/O before either is freed).
        let registered = unsafe { ring.submitter().register_buffers(&iovecs) };
        let registered_buffer = match registered {
            Ok(()) => true,
            Err(error) => {
                let registered_bytes = IO_BUFFER_COUNT * buffer_bytes;
                tracing::warn!(buffer_bytes, registered_bytes, %error, "journal: cannot register the two I/O buffers with io_uring (RLIMIT_MEMLOCK? raise `ulimit -l` or lower max_buffered_bytes); using unregistered writes");
                false
            }
        };
        let mut backend = UringBackend {
            ring,
            eventfd,
            buffers,
            registered_buffer,
            file: None,
            in_flight: None,
            write_result: None,
            sync_result: None,
        };
        let probe_path = dir.join(PROBE_FILE_NAME);
        let result = backend.probe_write(&probe_path);
        let _ = std::fs::remove_file(&probe_path);
        backend.file = None;
        result?;
        Ok(backend)
    }

    fn probe_write(&mut self, probe_path: &Path) -> Result<(), String> {
        let file = open_direct(probe_path, true).map_err(|error| {
            if error.raw_os_error() == Some(libc::EINVAL) {
                format!("the filesystem of {} does not support O_DIRECT (tmpfs?): put data_dir on a real disk", probe_path.display())
            } else {
                format!("cannot open {} with O_DIRECT: {error}", probe_path.display())
            }
        })?;
        self.file = Some(file);
        self.submit_write_sync(0, 0, BLOCK_SIZE_BYTES)
            .map_err(|error| format!("io_uring submit failed: {error}"))?;
        let outcome = self.wait();
        match (outcome.write, outcome.sync) {
            (Ok(written), Ok(())) if written == BLOCK_SIZE_BYTES => Ok(()),
            (Ok(written), Err(error)) if written == BLOCK_SIZE_BYTES => {
                Err(format!("fdatasync through io_uring failed: {error}"))
            }
            (Ok(written), _) => Err(format!(
                "O_DIRECT probe write was short ({written} of {BLOCK_SIZE_BYTES} bytes)"
            )),
            (Err(error), _) if error.raw_os_error() == Some(libc::EINVAL) => Err(format!(
                "O_DIRECT write refused with EINVAL in {} (filesystem without direct I/O?)",
                probe_path.display()
            )),
            (Err(error), _) => Err(format!("O_DIRECT probe write failed: {error}")),
        }
    }

    fn take_completions(&mut self) {
        for entry in self.ring.completion() {
            match entry.user_data() {
                USER_DATA_WRITE => self.write_result = Some(entry.result()),
                USER_DATA_SYNC => self.sync_result = Some(entry.result()),
                other => panic!("unexpected io_uring completion user_data {other}"),
            }
        }
    }

    fn finished(&mut self) -> Option<WriteSyncOutcome> {
        let (Some(write), Some(sync)) = (self.write_result, self.sync_result) else {
            return None;
        };
        self.write_result = None;
        self.sync_result = None;
        self.in_flight = None;
        Some(WriteSyncOutcome {
            write: if write < 0 {
                Err(io::Error::from_raw_os_error(-write))
            } else {
                Ok(write as usize)
            },
            sync: if sync < 0 {
                Err(io::Error::from_raw_os_error(-sync))
            } else {
                Ok(())
            },
        })
    }
}

impl IoBackend for UringBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Uring {
            registered_buffer: self.registered_buffer,
        }
    }

    fn open_segment(&mut self, path: &Path) -> io::Result<()> {
        assert!(
            self.in_flight.is_none(),
            "segment switched while a write is in flight"
        );
        self.file = Some(open_direct(path, false)?);
        Ok(())
    }

    fn buffer_mut(&mut self, buffer: usize) -> &mut [u8] {
        assert_ne!(
            self.in_flight,
            Some(buffer),
            "I/O buffer {buffer} touched while the kernel writes from it"
        );
        self.buffers[buffer].as_mut_slice()
    }

    fn submit_write_sync(&mut self, buffer: usize, offset: u64, length: usize) -> io::Result<()> {
        assert!(
            self.in_flight.is_none(),
            "a second write submitted while one is in flight"
        );
        assert!(
            length > 0
                && length.is_multiple_of(BLOCK_SIZE_BYTES)
                && length <= self.buffers[buffer].len(),
            "write length {length}"
        );
        assert!(
            offset.is_multiple_of(BLOCK_SIZE_BYTES as u64),
            "write offset {offset}"
        );
        let fd = types::Fd(self.file.as_ref().expect("no open segment").as_raw_fd());
        let pointer = self.buffers[buffer].as_ptr();
        let write = if self.registered_buffer {
            opcode::WriteFixed::new(fd, pointer, length as u32, buffer as u16)
                .offset(offset)
                .build()
        } else {
            opcode::Write::new(fd, pointer, length as u32)
                .offset(offset)
                .build()
        };
        let write = write
            .flags(squeue::Flags::IO_LINK)
            .user_data(USER_DATA_WRITE);
        let sync = opcode::Fsync::new(fd)
            .flags(types::FsyncFlags::DATASYNC)
            .build()
            .user_data(USER_DATA_SYNC);
        // SAFETY: the buffer and the file stay alive and untouched until both completions are
        // reaped: buffer_mut (for this buffer), open_segment and Drop all wait for / refuse while
        // `in_flight` names it.
        unsafe {
            let mut queue = self.ring.submission();
            queue
                .push(&write)
                .map_err(|_| io::Error::other("io_uring submission queue full"))?;
            queue
                .push(&sync)
                .map_err(|_| io::Error::other("io_uring submission queue full"))?;
        }
        self.ring.submit()?;
        self.in_flight = Some(buffer);
        Ok(())
    }

    fn poll(&mut self) -> Option<WriteSyncOutcome> {
        // Clear first, then drain: a completion that lands in between re-arms the fd.
        self.eventfd.clear();
        self.take_completions();
        self.finished()
    }

    fn wait(&mut self) -> WriteSyncOutcome {
        assert!(self.in_flight.is_some(), "wait with nothing in flight");
        loop {
            if let Some(outcome) = self.poll() {
                return outcome;
            }
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    panic!("io_uring_enter failed while waiting for a journal write: {error}")
                }
            }
        }
    }

    fn completion_fd(&self) -> RawFd {
        self.eventfd.fd()
    }
}

impl Drop for UringBackend {
    fn drop(&mut self) {
        if self.in_flight.is_some() {
            // The kernel may still be reading the buffer: wait before it is freed.
            let _ = self.wait();
        }
    }
}

fn open_direct(path: &Path, create: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .custom_flags(libc::O_DIRECT | libc::O_CLOEXEC)
        .open(path)
}

fn describe_setup_error(error: &io::Error) -> String {
    match error.raw_os_error() {
        Some(libc::EPERM) => format!(
            "io_uring_setup refused ({error}): io_uring is disabled by `sysctl kernel.io_uring_disabled` (set it to 0) or by a seccomp profile (container: allow io_uring_setup)"
        ),
        Some(libc::ENOSYS) => format!("io_uring_setup is not implemented ({error}): kernel too old or built without io_uring"),
        Some(libc::ENOMEM) => format!("io_uring_setup ran out of locked memory ({error}): raise RLIMIT_MEMLOCK (`ulimit -l`, LimitMEMLOCK= in systemd)"),
        _ => format!("io_uring_setup failed: {error}"),
    }
}
