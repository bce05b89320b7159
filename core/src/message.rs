//! A published message as it travels from its publisher to its subscribers.
//!
//! The message is the publisher's frame itself: a reference-counted slice of the connection's
//! receive buffer, plus offsets of the fields routing needs. Handing it to another shard or to
//! many subscribers clones a reference, never the bytes.

use crate::bookmark::WireBookmark;
use bytes::Bytes;
use std::ops::Range;

/// A publish as received, shared by reference between shards and subscribers.
#[derive(Debug, Clone)]
pub struct PublishedMessage {
    /// The whole frame without its length prefix: header then payload.
    frame: Bytes,
    topic: Range<u32>,
    correlation_id: Option<Range<u32>>,
    payload_offset: u32,
    /// When the server read the message, in nanoseconds since the Unix epoch.
    pub received_unix_ns: u64,
    /// Its position in the transaction log (`bm`), once journaled.
    pub bookmark: Option<WireBookmark>,
}

impl PublishedMessage {
    /// Wraps a received frame. `topic` and `correlation_id` must be unescaped ranges inside the
    /// header and `payload_offset` must lie within the frame.
    pub fn new(
        frame: Bytes,
        topic: Range<usize>,
        correlation_id: Option<Range<usize>>,
        payload_offset: usize,
        received_unix_ns: u64,
    ) -> PublishedMessage {
        assert!(topic.end <= payload_offset && payload_offset <= frame.len());
        assert!(frame.len() <= u32::MAX as usize);
        let narrow = |range: Range<usize>| range.start as u32..range.end as u32;
        PublishedMessage {
            topic: narrow(topic),
            correlation_id: correlation_id.map(narrow),
            payload_offset: payload_offset as u32,
            frame,
            received_unix_ns,
            bookmark: None,
        }
    }

    /// A message built by the server rather than received (a merged SOW record, a replayed
    /// journal record): topic, correlation id and payload copied into one new frame.
    pub fn synthetic(
        topic: &[u8],
        correlation_id: Option<&[u8]>,
        payload: &[u8],
        received_unix_ns: u64,
        bookmark: Option<WireBookmark>,
    ) -> PublishedMessage {
        let correlation_bytes = correlation_id.map_or(0, <[u8]>::len);
        let mut frame = Vec::with_capacity(topic.len() + correlation_bytes + payload.len());
        frame.extend_from_slice(topic);
        let correlation = correlation_id.map(|correlation| {
            frame.extend_from_slice(correlation);
            topic.len()..topic.len() + correlation.len()
        });
        let payload_offset = frame.len();
        frame.extend_from_slice(payload);
        let mut message = PublishedMessage::new(
            Bytes::from(frame),
            0..topic.len(),
            correlation,
            payload_offset,
            received_unix_ns,
        );
        message.bookmark = bookmark;
        message
    }

    fn slice(&self, range: &Range<u32>) -> &[u8] {
        &self.frame[range.start as usize..range.end as usize]
    }

    /// The topic name.
    pub fn topic(&self) -> &[u8] {
        self.slice(&self.topic)
    }

    /// The correlation id (`x`) as the publisher sent it, if any.
    pub fn correlation_id(&self) -> Option<&[u8]> {
        self.correlation_id.as_ref().map(|range| self.slice(range))
    }

    /// The payload bytes.
    pub fn payload(&self) -> &[u8] {
        &self.frame[self.payload_offset as usize..]
    }

    /// The payload as a shared reference (no copy), for vectored writes.
    pub fn payload_bytes(&self) -> Bytes {
        self.frame.slice(self.payload_offset as usize..)
    }
}
