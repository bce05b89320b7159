//! A connection's outbound queue: frames waiting to be sent, within a memory budget, with a spool
//! file behind it for a client that falls behind.
//!
//! Headers (and whole small control frames such as acks) are written into one reusable byte
//! buffer; payloads stay where the publisher's receive buffer put them and are queued as shared
//! references. A flush hands the kernel one `sendmsg` with an iovec per piece, so payload bytes are
//! never copied between receive and send, and nothing is allocated once the buffers have grown.
//!
//! A frame that would take the queue over its budget (`limits.client_outbound_bytes_max`), or
//! that arrives while the instance's queues together are over `limits.message_memory_limit` and
//! this queue already holds a fair amount, is spilled to the connection's [`Spool`] instead; from
//! then on every frame goes behind it to the spool until the writer has read the spool back
//! (memory first, then the spool, in order). Only a frame the spool refuses (its backlog would
//! pass `limits.message_disk_limit`, or the disk failed) is an [`Overflow`]: the caller
//! disconnects the client, so one stalled client never grows memory or disk without bound.
//!
//! A connection that keeps up pays two compares per frame for all this, plus the shard's memory
//! ledger (a thread-local add; see [`ledger`]). No syscall, no allocation, no shared atomic.

use crate::spool::{Spool, SpoolRefusal};
use bytes::Bytes;
use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::path::Path;

/// Pieces one `sendmsg` carries at most (well under the kernel's IOV_MAX of 1024).
const IOVECS_PER_SEND_MAX: usize = 128;

/// Where the header buffer is compacted: once this many written bytes sit at its front.
const COMPACT_AFTER_BYTES: usize = 64 * 1024;

/// Bytes read back from the spool into memory at a time (at most the budget).
pub(crate) const REFILL_CHUNK_BYTES: usize = 64 * 1024;

/// While the instance is over `limits.message_memory_limit`, a queue holding at least this much
/// (or a quarter of its budget, if smaller) spills further frames; smaller queues belong to
/// clients that keep up and stay in memory, so they are not slowed down by disk writes.
const PRESSURE_FLOOR_BYTES: usize = 64 * 1024;

/// Instance-wide accounting of bytes queued in memory, kept per shard thread.
///
/// Each shard thread counts its queues' bytes in a thread-local ledger and reserves room in one
/// process-wide atomic in chunks of [`RESERVATION_CHUNK_BYTES`], so the shared atomic is touched
/// once per 64 KiB of net growth or shrinkage, not per frame, and no shard waits for another. The
/// atomic therefore over-states the true total by at most two chunks per shard, and a shard sees
/// another shard's growth at its own next reservation (at most one chunk later) or, when it
/// already believes the instance is over the limit, at once.
pub(crate) mod ledger {
    use std::cell::Cell;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Granularity of reservations in the shared total.
    pub(crate) const RESERVATION_CHUNK_BYTES: u64 = 64 * 1024;

    /// Bytes reserved by every shard of the process (one instance per process).
    static INSTANCE_RESERVED_BYTES: AtomicU64 = AtomicU64::new(0);

    /// One thread's share: what its queues hold and what it has reserved in a shared total.
    pub(crate) struct Ledger {
        used: Cell<u64>,
        reserved: Cell<u64>,
        /// The shared total as this thread last saw it.
        instance_seen: Cell<u64>,
    }

    thread_local! {
        static SHARD: Ledger = const { Ledger::new() };
    }

    impl Ledger {
        /// An empty ledger.
        pub(crate) const fn new() -> Ledger {
            Ledger {
                used: Cell::new(0),
                reserved: Cell::new(0),
                instance_seen: Cell::new(0),
            }
        }

        /// Counts `bytes` more queued.
        #[inline]
        pub(crate) fn charge(&self, total: &AtomicU64, bytes: usize) {
            let used = self.used.get() + bytes as u64;
            self.used.set(used);
            if used > self.reserved.get() {
                self.reserve(total, used);
            }
        }

        /// Counts `bytes` fewer queued.
        #[inline]
        pub(crate) fn release(&self, total: &AtomicU64, bytes: usize) {
            let used = self.used.get();
            debug_assert!(bytes as u64 <= used, "released {bytes} of {used} bytes");
            let used = used.saturating_sub(bytes as u64);
            self.used.set(used);
            if self.reserved.get() - used > 2 * RESERVATION_CHUNK_BYTES {
                self.give_back(total, used);
            }
        }

        /// Whether the shared total is over `limit`, re-read when the last sighting said so.
        #[inline]
        pub(crate) fn over(&self, total: &AtomicU64, limit: u64) -> bool {
            self.instance_seen.get() > limit && self.refresh_over(total, limit)
        }

        #[cold]
        fn refresh_over(&self, total: &AtomicU64, limit: u64) -> bool {
            let seen = total.load(Ordering::Relaxed);
            self.instance_seen.set(seen);
            seen > limit
        }

        #[cold]
        fn reserve(&self, total: &AtomicU64, used: u64) {
            let more = (used - self.reserved.get()).next_multiple_of(RESERVATION_CHUNK_BYTES);
            self.reserved.set(self.reserved.get() + more);
            self.instance_seen
                .set(total.fetch_add(more, Ordering::Relaxed) + more);
        }

        #[cold]
        fn give_back(&self, total: &AtomicU64, used: u64) {
            let keep = used.next_multiple_of(RESERVATION_CHUNK_BYTES);
            let excess = self.reserved.get() - keep;
            self.reserved.set(keep);
            self.instance_seen
                .set(total.fetch_sub(excess, Ordering::Relaxed) - excess);
        }

        /// Bytes this ledger counts as queued.
        #[cfg(test)]
        pub(crate) fn used(&self) -> u64 {
            self.used.get()
        }
    }

    /// Counts `bytes` more queued on this shard.
    #[inline]
    pub(crate) fn charge(bytes: usize) {
        SHARD.with(|ledger| ledger.charge(&INSTANCE_RESERVED_BYTES, bytes));
    }

    /// Counts `bytes` fewer queued on this shard.
    #[inline]
    pub(crate) fn release(bytes: usize) {
        SHARD.with(|ledger| ledger.release(&INSTANCE_RESERVED_BYTES, bytes));
    }

    /// Whether the instance's queues together are over `limit` bytes.
    #[inline]
    pub(crate) fn instance_over(limit: u64) -> bool {
        SHARD.with(|ledger| ledger.over(&INSTANCE_RESERVED_BYTES, limit))
    }

    /// Bytes this thread's queues hold.
    #[cfg(test)]
    pub(crate) fn shard_used() -> u64 {
        SHARD.with(Ledger::used)
    }
}

enum Segment {
    /// Bytes of the header buffer up to this offset.
    Inline { end: usize },
    /// A payload shared with the publisher's receive buffer.
    Shared(Bytes),
}

/// Where a queued frame went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Queued {
    /// Into memory: the common case.
    Memory,
    /// Behind earlier frames in the spool file.
    Spooled,
    /// Into the spool file, which this frame created: the connection just started spooling,
    /// because its own budget was full (`budget_full`) or the instance was over its limit.
    SpoolOpened {
        /// The frame did not fit the connection's budget (else: instance-wide pressure).
        budget_full: bool,
    },
}

/// Why a frame could not be queued at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OverflowCause {
    /// Over the memory budget with spooling off (`limits.message_disk_limit = 0`).
    SpoolingOff,
    /// The spool's backlog would pass `limits.message_disk_limit`.
    DiskLimit,
    /// The spool file could not be written or read; names the file and the error.
    SpoolFailed(String),
}

/// A frame neither memory nor the spool would take: the client must be disconnected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Overflow {
    /// Bytes queued in memory before the push.
    pub queued_bytes: usize,
    /// Bytes the push would add.
    pub frame_bytes: usize,
    /// The memory budget (`limits.client_outbound_bytes_max`).
    pub budget_bytes: usize,
    /// Bytes spooled on disk and not yet sent.
    pub spooled_bytes: u64,
    /// The spool's limit (`limits.message_disk_limit`); 0 when spooling is off.
    pub disk_limit_bytes: u64,
    /// Which limit or failure it was.
    pub cause: OverflowCause,
}

impl std::fmt::Display for Overflow {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.cause {
            OverflowCause::SpoolingOff => write!(
                formatter,
                "{} bytes queued + {} more would exceed the {} byte budget (limits.client_outbound_bytes_max) and spooling is off (limits.message_disk_limit = 0)",
                self.queued_bytes, self.frame_bytes, self.budget_bytes
            ),
            OverflowCause::DiskLimit => write!(
                formatter,
                "{} bytes spooled + {} more would exceed the {} byte spool limit (limits.message_disk_limit); {} bytes queued in memory (budget {} bytes, limits.client_outbound_bytes_max)",
                self.spooled_bytes, self.frame_bytes, self.disk_limit_bytes, self.queued_bytes, self.budget_bytes
            ),
            OverflowCause::SpoolFailed(detail) => write!(
                formatter,
                "{detail}; {} bytes spooled (limit {} bytes, limits.message_disk_limit), {} bytes queued in memory (budget {} bytes, limits.client_outbound_bytes_max)",
                self.spooled_bytes, self.disk_limit_bytes, self.queued_bytes, self.budget_bytes
            ),
        }
    }
}

/// What a flush achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flushed {
    /// Everything queued was sent.
    All,
    /// The socket's send buffer is full; wait until it drains.
    WouldBlock,
}

/// What a refill from the spool achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refill {
    /// Nothing to do: memory still holds frames, or nothing is spooled.
    Nothing,
    /// Spooled bytes moved into memory; more remain on disk.
    More,
    /// The last spooled bytes moved into memory; the spool file is gone and new frames go to
    /// memory again.
    Drained,
}

pub(crate) struct Outbound {
    headers: Vec<u8>,
    /// Bytes at the front of `headers` already sent.
    headers_sent: usize,
    segments: VecDeque<Segment>,
    /// Bytes of the front segment already sent.
    front_sent: usize,
    queued_bytes: usize,
    budget_bytes: usize,
    iovecs: Vec<libc::iovec>,
    /// `limits.message_memory_limit`: over it, queues past the pressure floor spill.
    instance_memory_limit_bytes: u64,
    pressure_floor_bytes: usize,
    /// Where frames go once memory is full; `None`: spooling is off.
    spool: Option<Box<Spool>>,
    /// The spool holds bytes: every new frame goes behind them.
    spooling: bool,
}

impl Outbound {
    /// A queue without a spool or instance limit: over budget is an [`Overflow`] at once.
    pub(crate) fn new(budget_bytes: usize) -> Outbound {
        Outbound {
            headers: Vec::with_capacity(16 * 1024),
            headers_sent: 0,
            segments: VecDeque::with_capacity(256),
            front_sent: 0,
            queued_bytes: 0,
            budget_bytes,
            iovecs: Vec::with_capacity(IOVECS_PER_SEND_MAX),
            instance_memory_limit_bytes: u64::MAX,
            pressure_floor_bytes: (budget_bytes / 4).min(PRESSURE_FLOOR_BYTES),
            spool: None,
            spooling: false,
        }
    }

    /// A queue that spools to `spool` when over its budget, or when the instance's queues
    /// together hold more than `instance_memory_limit_bytes`.
    pub(crate) fn with_spool(
        budget_bytes: usize,
        instance_memory_limit_bytes: u64,
        spool: Option<Spool>,
    ) -> Outbound {
        let mut outbound = Outbound::new(budget_bytes);
        outbound.instance_memory_limit_bytes = instance_memory_limit_bytes;
        outbound.spool = spool.map(Box::new);
        outbound
    }

    /// Bytes queued in memory.
    pub(crate) fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// Bytes spooled on disk and not yet moved back to memory.
    pub(crate) fn spooled_bytes(&self) -> u64 {
        self.spool.as_ref().map_or(0, |spool| spool.backlog_bytes())
    }

    /// The spool file, while the connection is spooling.
    pub(crate) fn spool_path(&self) -> Option<&Path> {
        self.spool.as_ref().and_then(|spool| spool.path())
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// Whether a frame of `frame_bytes` goes to the spool rather than memory.
    #[inline]
    fn must_spill(&self, frame_bytes: usize) -> bool {
        self.spooling
            || self.queued_bytes + frame_bytes > self.budget_bytes
            || (self.queued_bytes >= self.pressure_floor_bytes
                && ledger::instance_over(self.instance_memory_limit_bytes))
    }

    /// Moves the frame written at `headers[start..]` (plus `payload`) to the spool.
    #[cold]
    #[inline(never)]
    fn spill(&mut self, start: usize, payload: &[u8]) -> Result<Queued, Overflow> {
        let header = &self.headers[start..];
        let frame_bytes = header.len() + payload.len();
        let appended = match self.spool.as_mut() {
            None => Err(Overflow {
                queued_bytes: self.queued_bytes,
                frame_bytes,
                budget_bytes: self.budget_bytes,
                spooled_bytes: 0,
                disk_limit_bytes: 0,
                cause: OverflowCause::SpoolingOff,
            }),
            Some(spool) => spool.append(header, payload).map_err(|refusal| Overflow {
                queued_bytes: self.queued_bytes,
                frame_bytes,
                budget_bytes: self.budget_bytes,
                spooled_bytes: spool.backlog_bytes(),
                disk_limit_bytes: spool.disk_limit_bytes(),
                cause: match refusal {
                    SpoolRefusal::DiskLimit => OverflowCause::DiskLimit,
                    SpoolRefusal::Failed(detail) => OverflowCause::SpoolFailed(detail),
                },
            }),
        };
        self.headers.truncate(start);
        let opened = appended?;
        self.spooling = true;
        Ok(if opened {
            Queued::SpoolOpened {
                budget_full: self.queued_bytes + frame_bytes > self.budget_bytes,
            }
        } else {
            Queued::Spooled
        })
    }

    fn push_inline_end(&mut self) {
        let end = self.headers.len();
        match self.segments.back_mut() {
            Some(Segment::Inline { end: last }) => *last = end,
            _ => self.segments.push_back(Segment::Inline { end }),
        }
    }

    /// Queues a frame written entirely by `write` (which appends the whole frame, prefix included).
    pub(crate) fn push_inline(
        &mut self,
        write: impl FnOnce(&mut Vec<u8>),
    ) -> Result<Queued, Overflow> {
        let start = self.headers.len();
        write(&mut self.headers);
        let frame_bytes = self.headers.len() - start;
        if self.must_spill(frame_bytes) {
            return self.spill(start, &[]);
        }
        self.queued_bytes += frame_bytes;
        ledger::charge(frame_bytes);
        self.push_inline_end();
        Ok(Queued::Memory)
    }

    /// Queues a frame whose prefix and header `write` appends, followed by a shared payload.
    pub(crate) fn push_with_payload(
        &mut self,
        write: impl FnOnce(&mut Vec<u8>),
        payload: Bytes,
    ) -> Result<Queued, Overflow> {
        let start = self.headers.len();
        write(&mut self.headers);
        let frame_bytes = self.headers.len() - start + payload.len();
        if self.must_spill(frame_bytes) {
            return self.spill(start, &payload);
        }
        self.queued_bytes += frame_bytes;
        ledger::charge(frame_bytes);
        self.push_inline_end();
        if !payload.is_empty() {
            self.segments.push_back(Segment::Shared(payload));
        }
        Ok(Queued::Memory)
    }

    /// Once memory is sent, moves the next spooled bytes (up to [`REFILL_CHUNK_BYTES`]) into
    /// memory for the next flush. The writer calls this after each complete flush.
    pub(crate) fn refill_from_spool(&mut self) -> Result<Refill, Overflow> {
        if !self.spooling || !self.segments.is_empty() {
            return Ok(Refill::Nothing);
        }
        // An empty queue has an empty header buffer (see `consume`), so the spooled bytes become
        // one inline segment at its start.
        assert!(self.headers.len() == self.headers_sent);
        self.headers.clear();
        self.headers_sent = 0;
        let spool = self.spool.as_mut().expect("spooling needs a spool");
        assert!(spool.backlog_bytes() > 0, "spooling with an empty spool");
        let moved = spool
            .read_into(&mut self.headers, REFILL_CHUNK_BYTES.min(self.budget_bytes))
            .map_err(|refusal| Overflow {
                queued_bytes: 0,
                frame_bytes: 0,
                budget_bytes: self.budget_bytes,
                spooled_bytes: spool.backlog_bytes(),
                disk_limit_bytes: spool.disk_limit_bytes(),
                cause: match refusal {
                    SpoolRefusal::DiskLimit => OverflowCause::DiskLimit,
                    SpoolRefusal::Failed(detail) => OverflowCause::SpoolFailed(detail),
                },
            })?;
        let drained = spool.backlog_bytes() == 0;
        assert!(moved > 0, "a non-empty spool gave nothing");
        self.queued_bytes += moved;
        ledger::charge(moved);
        self.push_inline_end();
        if drained {
            self.spooling = false;
            return Ok(Refill::Drained);
        }
        Ok(Refill::More)
    }

    /// Drops whatever is spooled, removes the file and spools nothing more (the connection is
    /// closing: a frame over budget from now on is an [`Overflow`], which closing ignores).
    pub(crate) fn close_spool(&mut self) {
        // Dropping the spool removes its file.
        self.spool = None;
        self.spooling = false;
    }

    /// Sends as much as the socket takes without blocking.
    pub(crate) fn flush(&mut self, fd: RawFd) -> io::Result<Flushed> {
        while !self.segments.is_empty() {
            self.fill_iovecs();
            // SAFETY: every iovec points into `self.headers` or a `Bytes` held by
            // `self.segments`; neither is touched until `sendmsg` returns. `message` lives on
            // the stack for the duration of the call.
            let sent = unsafe {
                let mut message: libc::msghdr = std::mem::zeroed();
                message.msg_iov = self.iovecs.as_mut_ptr();
                message.msg_iovlen = self.iovecs.len() as _;
                libc::sendmsg(fd, &message, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
            };
            if sent < 0 {
                let error = io::Error::last_os_error();
                return match error.kind() {
                    io::ErrorKind::WouldBlock => Ok(Flushed::WouldBlock),
                    io::ErrorKind::Interrupted => continue,
                    _ => Err(error),
                };
            }
            self.consume(sent as usize);
        }
        Ok(Flushed::All)
    }

    /// The first unsent bytes, for a blocking-style write that waits for the socket.
    pub(crate) fn front(&self) -> &[u8] {
        match self.segments.front() {
            Some(Segment::Inline { end }) => &self.headers[self.headers_sent..*end],
            Some(Segment::Shared(bytes)) => &bytes[self.front_sent..],
            None => &[],
        }
    }

    fn fill_iovecs(&mut self) {
        self.iovecs.clear();
        let mut inline_start = self.headers_sent;
        for (index, segment) in self.segments.iter().enumerate() {
            if self.iovecs.len() == IOVECS_PER_SEND_MAX {
                break;
            }
            let piece: &[u8] = match segment {
                Segment::Inline { end } => {
                    let piece = &self.headers[inline_start..*end];
                    inline_start = *end;
                    piece
                }
                Segment::Shared(bytes) if index == 0 => &bytes[self.front_sent..],
                Segment::Shared(bytes) => bytes,
            };
            self.iovecs.push(libc::iovec {
                iov_base: piece.as_ptr() as *mut libc::c_void,
                iov_len: piece.len(),
            });
        }
    }

    /// Marks `sent` bytes from the front as sent.
    pub(crate) fn consume(&mut self, mut sent: usize) {
        assert!(
            sent <= self.queued_bytes,
            "sent {sent} bytes but only {} were queued",
            self.queued_bytes
        );
        self.queued_bytes -= sent;
        ledger::release(sent);
        while sent > 0 {
            let remaining = match self.segments.front().expect("bytes sent beyond the queue") {
                Segment::Inline { end } => end - self.headers_sent,
                Segment::Shared(bytes) => bytes.len() - self.front_sent,
            };
            let step = remaining.min(sent);
            sent -= step;
            match self.segments.front() {
                Some(Segment::Inline { .. }) => self.headers_sent += step,
                _ => self.front_sent += step,
            }
            if step == remaining {
                self.segments.pop_front();
                self.front_sent = 0;
            }
        }
        if self.segments.is_empty() {
            self.headers.clear();
            self.headers_sent = 0;
        } else if self.headers_sent >= COMPACT_AFTER_BYTES {
            self.compact();
        }
    }

    fn compact(&mut self) {
        let shift = self.headers_sent;
        self.headers.drain(..shift);
        self.headers_sent = 0;
        for segment in self.segments.iter_mut() {
            if let Segment::Inline { end } = segment {
                *end -= shift;
            }
        }
    }
}

impl Drop for Outbound {
    fn drop(&mut self) {
        // What was never sent leaves the shard's memory ledger with the queue; the spool removes
        // its own file.
        ledger::release(self.queued_bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::ShardStats;
    use std::io::Read;
    use std::os::fd::AsRawFd;

    fn pair() -> (
        std::os::unix::net::UnixStream,
        std::os::unix::net::UnixStream,
    ) {
        std::os::unix::net::UnixStream::pair().unwrap()
    }

    #[test]
    fn frames_go_out_in_order_with_shared_payloads() {
        let (writer, mut reader) = pair();
        let mut outbound = Outbound::new(1 << 20);
        outbound
            .push_inline(|buffer| buffer.extend_from_slice(b"ack1|"))
            .unwrap();
        let payload = Bytes::from_static(b"PAYLOAD");
        outbound
            .push_with_payload(
                |buffer| buffer.extend_from_slice(b"hdr|"),
                payload.slice(1..4),
            )
            .unwrap();
        outbound
            .push_inline(|buffer| buffer.extend_from_slice(b"|ack2"))
            .unwrap();
        assert_eq!(outbound.queued_bytes(), 5 + 4 + 3 + 5);
        assert_eq!(outbound.flush(writer.as_raw_fd()).unwrap(), Flushed::All);
        assert!(outbound.is_empty());
        let mut received = vec![0; 17];
        reader.read_exact(&mut received).unwrap();
        assert_eq!(received, b"ack1|hdr|AYL|ack2");
    }

    #[test]
    fn budget_refuses_and_leaves_the_queue_intact() {
        let mut outbound = Outbound::new(10);
        outbound
            .push_inline(|buffer| buffer.extend_from_slice(b"12345678"))
            .unwrap();
        let over = outbound
            .push_with_payload(
                |buffer| buffer.extend_from_slice(b"h"),
                Bytes::from_static(b"xx"),
            )
            .unwrap_err();
        assert_eq!(
            over,
            Overflow {
                queued_bytes: 8,
                frame_bytes: 3,
                budget_bytes: 10,
                spooled_bytes: 0,
                disk_limit_bytes: 0,
                cause: OverflowCause::SpoolingOff,
            }
        );
        assert!(over.to_string().contains("limits.message_disk_limit = 0"));
        assert_eq!(outbound.queued_bytes(), 8);
        assert_eq!(outbound.front(), b"12345678");
    }

    #[test]
    fn partial_sends_resume_mid_segment() {
        let mut outbound = Outbound::new(1 << 20);
        outbound
            .push_with_payload(
                |buffer| buffer.extend_from_slice(b"abc"),
                Bytes::from_static(b"defg"),
            )
            .unwrap();
        outbound
            .push_inline(|buffer| buffer.extend_from_slice(b"hi"))
            .unwrap();
        outbound.consume(2);
        assert_eq!(outbound.front(), b"c");
        outbound.consume(3);
        assert_eq!(outbound.front(), b"fg");
        outbound.consume(2);
        assert_eq!(outbound.front(), b"hi");
        outbound.consume(2);
        assert!(outbound.is_empty());
    }

    #[test]
    fn a_full_socket_reports_would_block_and_keeps_the_rest() {
        let (writer, mut reader) = pair();
        let mut outbound = Outbound::new(64 << 20);
        let payload = Bytes::from(vec![7u8; 1 << 20]);
        for _ in 0..8 {
            outbound
                .push_with_payload(|buffer| buffer.extend_from_slice(b"h"), payload.clone())
                .unwrap();
        }
        assert_eq!(
            outbound.flush(writer.as_raw_fd()).unwrap(),
            Flushed::WouldBlock
        );
        let left = outbound.queued_bytes();
        assert!(left > 0 && left < 8 * ((1 << 20) + 1));
        let mut drained = vec![0; (8 * ((1 << 20) + 1)) - left];
        reader.read_exact(&mut drained).unwrap();
        assert_eq!(drained[0], b'h');
        assert_eq!(drained[1], 7);
    }

    fn spool_folder(test: &str) -> std::path::PathBuf {
        let folder = std::env::temp_dir().join(format!(
            "tachyon-outbound-test-{}-{test}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&folder);
        folder
    }

    fn spooling_outbound(
        folder: &std::path::Path,
        budget_bytes: usize,
        instance_limit_bytes: u64,
        disk_limit_bytes: u64,
    ) -> (Outbound, std::sync::Arc<crate::stats::ShardStats>) {
        let stats = std::sync::Arc::new(crate::stats::ShardStats::default());
        let id = tachyon_core::ids::ConnectionId {
            shard: tachyon_core::ids::ShardId(1),
            slot: 7,
            generation: 2,
        };
        let spool = Spool::new(folder.to_path_buf(), id, disk_limit_bytes, stats.clone());
        (
            Outbound::with_spool(budget_bytes, instance_limit_bytes, Some(spool)),
            stats,
        )
    }

    fn files(folder: &std::path::Path) -> usize {
        std::fs::read_dir(folder).map_or(0, |entries| entries.count())
    }

    /// What the writer task does, without a socket: send up to `max_bytes` from the front,
    /// refilling from the spool whenever memory runs dry.
    fn drain(outbound: &mut Outbound, received: &mut Vec<u8>, mut max_bytes: usize) {
        while max_bytes > 0 {
            if outbound.is_empty() && outbound.refill_from_spool().unwrap() == Refill::Nothing {
                return;
            }
            let front = outbound.front();
            let count = front.len().min(max_bytes);
            received.extend_from_slice(&front[..count]);
            outbound.consume(count);
            max_bytes -= count;
        }
    }

    fn frame(index: u32) -> (Vec<u8>, Bytes) {
        let header = format!("<{index}|");
        let payload = Bytes::from(vec![b'a' + (index % 26) as u8; 20 + (index % 50) as usize]);
        (header.into_bytes(), payload)
    }

    #[test]
    fn order_holds_across_memory_disk_memory_transitions() {
        let folder = spool_folder("transitions");
        let (mut outbound, stats) = spooling_outbound(&folder, 4096, u64::MAX, 64 << 20);
        let mut expected = Vec::new();
        let mut received = Vec::new();
        let mut episodes = 0;
        let mut was_spooling = false;
        let mut index = 0u32;
        // Bursts the reader cannot keep up with, then quiet spells where it catches up: the
        // queue goes memory → spool → memory several times.
        for round in 0..12 {
            let burst = if round % 3 == 2 { 20 } else { 400 };
            for _ in 0..burst {
                let (header, payload) = frame(index);
                index += 1;
                expected.extend_from_slice(&header);
                expected.extend_from_slice(&payload);
                // Every fourth frame is a whole inline frame (like an ack), the rest share payloads.
                let queued = if index.trailing_zeros() >= 2 {
                    let mut whole = header.clone();
                    whole.extend_from_slice(&payload);
                    outbound.push_inline(|buffer| buffer.extend_from_slice(&whole))
                } else {
                    outbound.push_with_payload(|buffer| buffer.extend_from_slice(&header), payload)
                }
                .unwrap();
                if queued == (Queued::SpoolOpened { budget_full: true }) {
                    episodes += 1;
                    assert!(outbound.spool_path().is_some());
                }
                was_spooling |= outbound.spooled_bytes() > 0;
                assert!(
                    outbound.queued_bytes() <= 4096,
                    "memory stays within budget"
                );
                drain(&mut outbound, &mut received, 17);
            }
            if round % 3 == 2 {
                drain(&mut outbound, &mut received, usize::MAX);
                assert_eq!(outbound.spooled_bytes(), 0);
                assert!(
                    outbound.spool_path().is_none(),
                    "a drained spool leaves no file"
                );
                assert_eq!(files(&folder), 0);
            }
        }
        drain(&mut outbound, &mut received, usize::MAX);
        assert!(was_spooling);
        assert!(episodes >= 3, "{episodes} spool episodes");
        assert_eq!(received.len(), expected.len());
        assert!(received == expected, "bytes came out of order");
        assert_eq!(ShardStats::get(&stats.spools_opened), episodes);
        assert!(ShardStats::get(&stats.messages_spooled) > 0);
        assert_eq!(ShardStats::get(&stats.spool_backlog_bytes), 0);
    }

    #[test]
    fn spooled_frames_reach_a_real_socket_in_order() {
        let folder = spool_folder("socket");
        let (writer, mut reader) = pair();
        let (mut outbound, _) = spooling_outbound(&folder, 8192, u64::MAX, 64 << 20);
        let mut expected = Vec::new();
        for index in 0..3_000 {
            let (header, payload) = frame(index);
            expected.extend_from_slice(&header);
            expected.extend_from_slice(&payload);
            outbound
                .push_with_payload(|buffer| buffer.extend_from_slice(&header), payload)
                .unwrap();
        }
        assert!(outbound.spooled_bytes() > 0);
        let reading = std::thread::spawn(move || {
            let mut received = vec![0; expected.len()];
            reader.read_exact(&mut received).unwrap();
            assert!(received == expected, "bytes came out of order");
        });
        loop {
            match outbound.flush(writer.as_raw_fd()).unwrap() {
                Flushed::All => {
                    if outbound.refill_from_spool().unwrap() == Refill::Nothing {
                        break;
                    }
                }
                Flushed::WouldBlock => std::thread::sleep(std::time::Duration::from_millis(1)),
            }
        }
        reading.join().unwrap();
        assert_eq!(files(&folder), 0);
    }

    #[test]
    fn a_spool_over_its_limit_is_the_disconnect_verdict() {
        let folder = spool_folder("verdict");
        let (mut outbound, _) = spooling_outbound(&folder, 1000, u64::MAX, 5000);
        let payload = Bytes::from(vec![1u8; 96]);
        let mut pushed = 0;
        let overflow = loop {
            match outbound
                .push_with_payload(|buffer| buffer.extend_from_slice(b"head"), payload.clone())
            {
                Ok(_) => pushed += 1,
                Err(overflow) => break overflow,
            }
            assert!(pushed < 1000, "the spool never refused");
        };
        // 10 frames of 100 bytes fit in memory, 50 in the spool.
        assert_eq!(pushed, 60);
        assert_eq!(
            overflow,
            Overflow {
                queued_bytes: 1000,
                frame_bytes: 100,
                budget_bytes: 1000,
                spooled_bytes: 5000,
                disk_limit_bytes: 5000,
                cause: OverflowCause::DiskLimit,
            }
        );
        let text = overflow.to_string();
        for needle in [
            "5000 bytes spooled",
            "limits.message_disk_limit",
            "1000 bytes queued",
            "limits.client_outbound_bytes_max",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from {text:?}");
        }
        // The refused frame left nothing behind: what was queued still drains whole.
        let mut received = Vec::new();
        drain(&mut outbound, &mut received, usize::MAX);
        assert_eq!(received.len(), 60 * 100);
    }

    #[test]
    fn closing_or_dropping_removes_the_spool_file() {
        let folder = spool_folder("cleanup");
        let (mut outbound, stats) = spooling_outbound(&folder, 1000, u64::MAX, 1 << 20);
        for _ in 0..100 {
            outbound
                .push_inline(|buffer| buffer.extend_from_slice(&[5; 100]))
                .unwrap();
        }
        assert_eq!(files(&folder), 1);
        outbound.close_spool();
        assert_eq!(files(&folder), 0);
        assert_eq!(outbound.spooled_bytes(), 0);
        assert_eq!(ShardStats::get(&stats.spool_backlog_bytes), 0);
        // Memory still holds its frames; a closed spool takes no more, so nothing is re-created.
        assert_eq!(outbound.queued_bytes(), 1000);
        let refused = outbound
            .push_inline(|buffer| buffer.extend_from_slice(&[5; 100]))
            .unwrap_err();
        assert_eq!(refused.cause, OverflowCause::SpoolingOff);
        assert_eq!(files(&folder), 0);
        let mut received = Vec::new();
        drain(&mut outbound, &mut received, usize::MAX);
        assert_eq!(received.len(), 1000);

        // Dropping a spooling queue (the connection went away) removes the file too.
        let (mut outbound, stats) = spooling_outbound(&folder, 1000, u64::MAX, 1 << 20);
        for _ in 0..20 {
            outbound
                .push_inline(|buffer| buffer.extend_from_slice(&[6; 100]))
                .unwrap();
        }
        assert_eq!(files(&folder), 1);
        drop(outbound);
        assert_eq!(files(&folder), 0);
        assert_eq!(ShardStats::get(&stats.spool_backlog_bytes), 0);
    }

    #[test]
    fn over_the_instance_limit_only_queues_past_the_floor_spill() {
        let folder = spool_folder("pressure");
        // An instance limit of 0: any reservation puts the instance over it.
        let (mut slow, _) = spooling_outbound(&folder, 1 << 20, 0, 1 << 20);
        let (mut fast, _) = spooling_outbound(&folder, 1 << 20, 0, 1 << 20);
        let mut memory = 0;
        loop {
            match slow.push_inline(|buffer| buffer.extend_from_slice(&[1; 1000])) {
                Ok(Queued::Memory) => memory += 1,
                Ok(queued) => {
                    assert_eq!(queued, Queued::SpoolOpened { budget_full: false });
                    break;
                }
                Err(overflow) => panic!("{overflow}"),
            }
        }
        // The floor is 64 KiB: the slow queue spilled once it held that much, far below its budget.
        assert_eq!(memory, 66);
        assert!(slow.spooled_bytes() > 0);
        // A queue below the floor keeps using memory: a client that keeps up is not slowed down.
        for _ in 0..10 {
            assert_eq!(
                fast.push_inline(|buffer| buffer.extend_from_slice(&[2; 1000]))
                    .unwrap(),
                Queued::Memory
            );
            fast.consume(1000);
        }
    }

    #[test]
    fn the_ledger_counts_every_queued_byte_and_returns_to_zero() {
        let before = ledger::shard_used();
        let folder = spool_folder("ledger");
        let (mut outbound, _) = spooling_outbound(&folder, 2000, u64::MAX, 1 << 20);
        for _ in 0..50 {
            outbound
                .push_with_payload(
                    |buffer| buffer.extend_from_slice(b"hh"),
                    Bytes::from_static(&[3; 98]),
                )
                .unwrap();
        }
        assert_eq!(ledger::shard_used() - before, 2000);
        outbound.consume(500);
        assert_eq!(ledger::shard_used() - before, 1500);
        let mut received = Vec::new();
        drain(&mut outbound, &mut received, 2500);
        assert_eq!(
            ledger::shard_used() - before,
            outbound.queued_bytes() as u64
        );
        drop(outbound);
        assert_eq!(ledger::shard_used(), before);
    }

    #[test]
    fn ledgers_reserve_the_shared_total_in_chunks() {
        use std::sync::atomic::{AtomicU64, Ordering};
        let total = AtomicU64::new(0);
        let (first, second) = (ledger::Ledger::new(), ledger::Ledger::new());
        let chunk = ledger::RESERVATION_CHUNK_BYTES;
        first.charge(&total, 1);
        assert_eq!(total.load(Ordering::Relaxed), chunk);
        first.charge(&total, chunk as usize - 1);
        assert_eq!(
            total.load(Ordering::Relaxed),
            chunk,
            "within the chunk: no shared write"
        );
        second.charge(&total, 3 * chunk as usize);
        assert_eq!(total.load(Ordering::Relaxed), 4 * chunk);
        // The first ledger has not looked since; it learns on its next sighting.
        assert!(!first.over(&total, 2 * chunk));
        first.charge(&total, 1);
        assert!(first.over(&total, 2 * chunk));
        second.release(&total, 3 * chunk as usize);
        assert!(!second.over(&total, 2 * chunk));
        first.release(&total, chunk as usize + 1);
        assert_eq!(first.used() + second.used(), 0);
        // At most two chunks per ledger stay reserved after shrinking.
        assert!(total.load(Ordering::Relaxed) <= 4 * chunk);
        assert!(!first.over(&total, 4 * chunk));
    }
}
