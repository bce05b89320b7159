//! A connection's outbound queue: frames waiting to be sent, within a memory budget.
//!
//! Headers (and whole small control frames such as acks) are written into one reusable byte
//! buffer; payloads stay where the publisher's receive buffer put them and are queued as shared
//! references. A flush hands the kernel one `sendmsg` with an iovec per piece, so payload bytes are
//! never copied between receive and send, and nothing is allocated once the buffers have grown.
//! A client whose queue would exceed its budget is a slow consumer: the push fails and the caller
//! disconnects it, so one stalled client never grows memory without bound.

use bytes::Bytes;
use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;

/// Pieces one `sendmsg` carries at most (well under the kernel's IOV_MAX of 1024).
const IOVECS_PER_SEND_MAX: usize = 128;

/// Where the header buffer is compacted: once this many written bytes sit at its front.
const COMPACT_AFTER_BYTES: usize = 64 * 1024;

enum Segment {
    /// Bytes of the header buffer up to this offset.
    Inline { end: usize },
    /// A payload shared with the publisher's receive buffer.
    Shared(Bytes),
}

/// The queue would exceed the connection's budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OverBudget {
    /// Bytes queued before the push.
    pub queued_bytes: usize,
    /// Bytes the push would add.
    pub frame_bytes: usize,
    /// The budget.
    pub budget_bytes: usize,
}

/// What a flush achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flushed {
    /// Everything queued was sent.
    All,
    /// The socket's send buffer is full; wait until it drains.
    WouldBlock,
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
}

impl Outbound {
    pub(crate) fn new(budget_bytes: usize) -> Outbound {
        Outbound {
            headers: Vec::with_capacity(16 * 1024),
            headers_sent: 0,
            segments: VecDeque::with_capacity(256),
            front_sent: 0,
            queued_bytes: 0,
            budget_bytes,
            iovecs: Vec::with_capacity(IOVECS_PER_SEND_MAX),
        }
    }

    pub(crate) fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    fn check_budget(&self, frame_bytes: usize) -> Result<(), OverBudget> {
        if self.queued_bytes + frame_bytes > self.budget_bytes {
            return Err(OverBudget {
                queued_bytes: self.queued_bytes,
                frame_bytes,
                budget_bytes: self.budget_bytes,
            });
        }
        Ok(())
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
    ) -> Result<(), OverBudget> {
        let start = self.headers.len();
        write(&mut self.headers);
        let frame_bytes = self.headers.len() - start;
        if let Err(over) = self.check_budget(frame_bytes) {
            self.headers.truncate(start);
            return Err(over);
        }
        self.queued_bytes += frame_bytes;
        self.push_inline_end();
        Ok(())
    }

    /// Queues a frame whose prefix and header `write` appends, followed by a shared payload.
    pub(crate) fn push_with_payload(
        &mut self,
        write: impl FnOnce(&mut Vec<u8>),
        payload: Bytes,
    ) -> Result<(), OverBudget> {
        let start = self.headers.len();
        write(&mut self.headers);
        let frame_bytes = self.headers.len() - start + payload.len();
        if let Err(over) = self.check_budget(frame_bytes) {
            self.headers.truncate(start);
            return Err(over);
        }
        self.queued_bytes += frame_bytes;
        self.push_inline_end();
        if !payload.is_empty() {
            self.segments.push_back(Segment::Shared(payload));
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
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
            OverBudget {
                queued_bytes: 8,
                frame_bytes: 3,
                budget_bytes: 10
            }
        );
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
}
