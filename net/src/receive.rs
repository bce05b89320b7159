//! A connection's receive buffer: bytes in, complete frames out as shared slices.
//!
//! Frames are split off the buffer with `BytesMut::split_to` and frozen, so a published payload
//! is referenced (not copied) by every subscriber's outbound queue. When the buffer is used up
//! while some of its frames are still queued for sending, reading continues in another buffer of
//! a small per-connection pool whose frames have all been sent; buffers are reclaimed, never
//! freed and reallocated, so steady-state receiving allocates nothing.

use bytes::{Buf, Bytes, BytesMut};
use tachyon_core::protocol::{cut_frame, FrameError, FRAME_LENGTH_BYTES};

/// A receive buffer whose complete frames are split off as shared, immutable slices.
///
/// The whole capacity is kept initialised (zeroed when the buffer grows), so reads go straight
/// into it without unsafe code; `filled` marks how much of it holds received bytes.
pub(crate) struct ReceiveBuffer {
    bytes: BytesMut,
    filled: usize,
    chunk_bytes: usize,
    /// Used-up buffers whose frames may still be queued; reclaimed once those are sent.
    pool: Vec<BytesMut>,
}

/// Used-up buffers a connection keeps for reuse. Beyond this (a subscriber that holds many
/// frames unsent) the oldest is released and a new one allocated.
const POOLED_BUFFERS_MAX: usize = 4;

impl ReceiveBuffer {
    /// A buffer that grows `chunk_bytes` at a time.
    pub(crate) fn new(chunk_bytes: usize) -> ReceiveBuffer {
        let mut receive = ReceiveBuffer {
            bytes: BytesMut::new(),
            filled: 0,
            chunk_bytes,
            pool: Vec::with_capacity(POOLED_BUFFERS_MAX + 1),
        };
        receive.grow(chunk_bytes);
        receive
    }

    /// Makes room for at least `more` bytes after the filled part, reusing an allocation whose
    /// frames have all been dropped when there is one.
    fn grow(&mut self, more: usize) {
        let more = more.max(self.chunk_bytes);
        self.bytes.truncate(self.filled);
        if !self.bytes.try_reclaim(more) {
            let needed = self.filled + more;
            let reusable = (0..self.pool.len()).find(|&index| self.pool[index].try_reclaim(needed));
            let mut next = match reusable {
                Some(index) => self.pool.swap_remove(index),
                None => BytesMut::with_capacity(needed),
            };
            next.extend_from_slice(&self.bytes[..self.filled]);
            let mut used_up = std::mem::replace(&mut self.bytes, next);
            used_up.clear();
            self.pool.push(used_up);
            if self.pool.len() > POOLED_BUFFERS_MAX {
                self.pool.remove(0);
            }
        }
        let capacity = self.bytes.capacity();
        self.bytes.resize(capacity, 0);
    }

    /// Records that `count` bytes were read into [`ReceiveBuffer::spare`].
    pub(crate) fn filled(&mut self, count: usize) {
        assert!(
            self.filled + count <= self.bytes.len(),
            "read past the spare room"
        );
        self.filled += count;
    }

    /// Room to read into; never empty.
    pub(crate) fn spare(&mut self) -> &mut [u8] {
        if self.filled == self.bytes.len() {
            self.grow(self.chunk_bytes);
        }
        &mut self.bytes[self.filled..]
    }

    /// The next complete frame without its length prefix, if one has arrived.
    pub(crate) fn next_frame(
        &mut self,
        frame_bytes_max: usize,
    ) -> Result<Option<Bytes>, FrameError> {
        match cut_frame(&self.bytes[..self.filled], frame_bytes_max)? {
            Some(length) => {
                let mut frame = self.bytes.split_to(FRAME_LENGTH_BYTES + length);
                self.filled -= FRAME_LENGTH_BYTES + length;
                frame.advance(FRAME_LENGTH_BYTES);
                Ok(Some(frame.freeze()))
            }
            None => {
                // A frame larger than the room left: make room for all of it now.
                if let Some(prefix) = self.bytes[..self.filled].first_chunk::<FRAME_LENGTH_BYTES>()
                {
                    let needed = FRAME_LENGTH_BYTES + u32::from_be_bytes(*prefix) as usize;
                    if needed > self.bytes.len() {
                        self.grow(needed - self.filled);
                    }
                }
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(message: &[u8]) -> Vec<u8> {
        let mut out = (message.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(message);
        out
    }

    fn feed(receive: &mut ReceiveBuffer, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let spare = receive.spare();
            let count = spare.len().min(bytes.len());
            spare[..count].copy_from_slice(&bytes[..count]);
            receive.filled(count);
            bytes = &bytes[count..];
        }
    }

    #[test]
    fn frames_come_out_whole_across_buffer_boundaries() {
        let mut receive = ReceiveBuffer::new(4096);
        let mut held = Vec::new();
        for index in 0..2000u32 {
            let message = format!("{{\"c\":\"p\"}}{}", "x".repeat((index % 300) as usize));
            feed(&mut receive, &framed(message.as_bytes()));
            let frame = receive.next_frame(1 << 20).unwrap().expect("a whole frame");
            assert_eq!(&frame[..], message.as_bytes());
            // Keep some frames alive so that buffers cannot always be reclaimed.
            if index % 7 == 0 {
                held.push(frame);
            }
            if held.len() > 50 {
                held.clear();
            }
        }
    }

    #[test]
    fn a_frame_larger_than_the_chunk_gets_room() {
        let mut receive = ReceiveBuffer::new(4096);
        let big = vec![b'y'; 50_000];
        let bytes = framed(&big);
        feed(&mut receive, &bytes[..10]);
        assert!(receive.next_frame(1 << 20).unwrap().is_none());
        feed(&mut receive, &bytes[10..]);
        assert_eq!(receive.next_frame(1 << 20).unwrap().unwrap().len(), 50_000);
    }

    #[test]
    fn oversized_frames_are_refused() {
        let mut receive = ReceiveBuffer::new(4096);
        feed(&mut receive, &(1u32 << 30).to_be_bytes());
        assert!(receive.next_frame(1 << 20).is_err());
    }
}
