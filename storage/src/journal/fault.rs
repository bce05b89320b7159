//! Fault injection for tests of the write path: a wrapper around the real I/O backend that lets a
//! set number of write+sync groups through and then fails the next one, at the write or at the
//! fdatasync, exactly as a real backend reports it.
//!
//! Owns only the count of groups and the planned fault. It is a **testing knob** (set through
//! [`JournalConfig::fault`](super::JournalConfig::fault), `None` by default) and must never be
//! enabled in production: the failure it reports is invented, and the journal reacts to it as to
//! a dying disk (it poisons itself and refuses every later call).
//!
//! The failing group never reaches the disk: the wrapped backend is not asked to write it. That
//! models the worst case of a failed fdatasync (the kernel dropped the dirty pages, so the data is
//! gone), and it keeps recovery after the fault deterministic: a reopen finds exactly the groups
//! that were reported durable.

use super::io::{BackendKind, IoBackend, WriteSyncOutcome};
use std::io;
use std::os::fd::RawFd;
use std::path::Path;

/// The step of a write+sync group that an injected fault breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultOperation {
    /// The data write fails (reported as a write error, the sync as cancelled).
    Write,
    /// The write succeeds but the fdatasync after it fails.
    Sync,
}

/// A planned I/O failure: `after_groups` write+sync groups succeed, the next one fails at
/// `operation`. A testing knob; see the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultPlan {
    /// Which step of the failing group fails.
    pub operation: FaultOperation,
    /// Groups that complete normally before the failing one (0: the first group fails).
    pub after_groups: u64,
}

/// Wraps a backend and fails one write+sync group as a [`FaultPlan`] says.
pub struct FaultyBackend {
    inner: Box<dyn IoBackend>,
    plan: FaultPlan,
    /// Groups handed to the wrapped backend so far.
    groups_submitted: u64,
    /// The invented outcome of the failing group, until it is reaped.
    injected: Option<WriteSyncOutcome>,
    /// Whether the fault has fired (no group is submitted after it: the journal is poisoned).
    fired: bool,
}

impl FaultyBackend {
    /// Wraps `inner` so that the group after the first `plan.after_groups` fails.
    pub fn new(inner: Box<dyn IoBackend>, plan: FaultPlan) -> FaultyBackend {
        FaultyBackend {
            inner,
            plan,
            groups_submitted: 0,
            injected: None,
            fired: false,
        }
    }

    fn invented_outcome(&self, length: usize) -> WriteSyncOutcome {
        let error = || {
            io::Error::other(format!(
                "injected {:?} fault after {} groups (JournalConfig::fault is set: a testing knob, never set it in production)",
                self.plan.operation, self.plan.after_groups
            ))
        };
        match self.plan.operation {
            FaultOperation::Write => WriteSyncOutcome {
                write: Err(error()),
                // What the real backends report for the sync linked to a failed write.
                sync: Err(io::Error::from_raw_os_error(libc::ECANCELED)),
            },
            FaultOperation::Sync => WriteSyncOutcome {
                write: Ok(length),
                sync: Err(error()),
            },
        }
    }

    /// Makes the wrapped backend's completion fd readable, so that a caller awaiting it (a shard's
    /// event loop) wakes up for the invented completion as it would for a real one.
    fn notify_completion(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64. Both real backends' completion fds are eventfds,
        // for which this is exactly `EventFd::notify`; on any other kind of descriptor the write
        // fails harmlessly (the error is ignored: a caller that polls still sees the outcome).
        let _ = unsafe { libc::write(self.inner.completion_fd(), (&one as *const u64).cast(), 8) };
    }
}

impl IoBackend for FaultyBackend {
    fn kind(&self) -> BackendKind {
        self.inner.kind()
    }

    fn open_segment(&mut self, path: &Path) -> io::Result<()> {
        self.inner.open_segment(path)
    }

    fn buffer_mut(&mut self, buffer: usize) -> &mut [u8] {
        self.inner.buffer_mut(buffer)
    }

    fn submit_write_sync(&mut self, buffer: usize, offset: u64, length: usize) -> io::Result<()> {
        assert!(
            self.injected.is_none(),
            "a second write submitted before the injected failure was reaped"
        );
        assert!(
            !self.fired,
            "a write submitted after an injected failure (the journal must be poisoned)"
        );
        if self.groups_submitted == self.plan.after_groups {
            self.fired = true;
            self.injected = Some(self.invented_outcome(length));
            self.notify_completion();
            return Ok(());
        }
        self.inner.submit_write_sync(buffer, offset, length)?;
        self.groups_submitted += 1;
        Ok(())
    }

    fn poll(&mut self) -> Option<WriteSyncOutcome> {
        if let Some(outcome) = self.injected.take() {
            return Some(outcome);
        }
        self.inner.poll()
    }

    fn wait(&mut self) -> WriteSyncOutcome {
        if let Some(outcome) = self.injected.take() {
            return outcome;
        }
        self.inner.wait()
    }

    fn completion_fd(&self) -> RawFd {
        self.inner.completion_fd()
    }
}
