//! A minimal hand-written AMPS client: exactly what the latency probe needs and nothing more.
//!
//! It speaks the wire protocol on its own, as an outside user would (it does not use any Tachyon
//! crate), so the benchmark measures the server through the same door as real clients.
//!
//! Frame layout (both directions; see the protocol reference §1):
//!
//! ```text
//!  0                4                                   4+H                    4+N
//!  | N (u32, big-   | {"c":"p","t":"bench",...}         | payload bytes ...     |
//!  |  endian)       | compact JSON header, H bytes      |                       |
//! ```
//!
//! The payload is everything after the header's closing `}` (found by a scan that skips strings).
//! The raw TCP relay forwards the publisher's frames unchanged, so the same subscriber parses both.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Bytes of the big-endian length prefix in front of every frame.
const LENGTH_PREFIX_BYTES: usize = 4;
/// Frames above this size are treated as stream corruption (the real client's limit is 1 GiB;
/// the benchmark never sends more than a few KiB, so anything near this is a bug).
const FRAME_SIZE_MAX_BYTES: usize = 64 * 1024 * 1024;
/// Initial read buffer: holds hundreds of 1 KiB deliveries so one `read` drains a burst.
const READ_BUFFER_BYTES: usize = 256 * 1024;
/// How long a blocking read waits before reporting [`Received::Idle`], so callers can check
/// their deadlines without a busy loop.
pub const READ_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// What one attempt to read a message produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Received<'a> {
    /// One complete message (a frame for AMPS, a payload for NATS).
    Message(&'a [u8]),
    /// Nothing arrived within [`READ_POLL_INTERVAL`].
    Idle,
    /// The peer closed the connection.
    Closed,
}

/// Where [`FrameReader::next_frame_range`] found the next frame.
#[derive(Debug, PartialEq, Eq)]
pub enum FramePosition {
    /// The frame body lies at this range of [`FrameReader::buffered`] until the next read.
    Frame(std::ops::Range<usize>),
    /// Nothing arrived within [`READ_POLL_INTERVAL`].
    Idle,
    /// The peer closed the connection.
    Closed,
}

/// Splits a length-prefixed byte stream into frames, reusing one buffer (no allocation per frame).
pub struct FrameReader<R> {
    /// The byte source, usually a `TcpStream` with a read timeout.
    inner: R,
    /// Bytes read but not yet consumed live in `buffer[start..end]`.
    buffer: Vec<u8>,
    start: usize,
    end: usize,
    /// Bytes read from `inner` so far (wire bytes, framing included).
    bytes_read: u64,
}

impl<R: Read> FrameReader<R> {
    /// Wraps a byte source.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            buffer: vec![0; READ_BUFFER_BYTES],
            start: 0,
            end: 0,
            bytes_read: 0,
        }
    }

    /// Bytes read from the source so far, framing included.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// Returns the next frame body (without its length prefix), reading more bytes as needed.
    pub fn next_frame(&mut self) -> io::Result<Received<'_>> {
        Ok(match self.next_frame_range()? {
            FramePosition::Frame(range) => Received::Message(&self.buffer[range]),
            FramePosition::Idle => Received::Idle,
            FramePosition::Closed => Received::Closed,
        })
    }

    /// Like [`Self::next_frame`] but returns where the frame lies in [`Self::buffered`], so a
    /// caller can skip frames in a loop without holding a borrow across iterations.
    pub fn next_frame_range(&mut self) -> io::Result<FramePosition> {
        loop {
            let available = self.end - self.start;
            if available >= LENGTH_PREFIX_BYTES {
                let prefix = &self.buffer[self.start..self.start + LENGTH_PREFIX_BYTES];
                let length = u32::from_be_bytes(prefix.try_into().expect("4 bytes")) as usize;
                if length > FRAME_SIZE_MAX_BYTES {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "frame of {length} bytes exceeds the {FRAME_SIZE_MAX_BYTES}-byte limit: \
                             the stream is corrupt or not the AMPS protocol"
                        ),
                    ));
                }
                if available >= LENGTH_PREFIX_BYTES + length {
                    let body_start = self.start + LENGTH_PREFIX_BYTES;
                    self.start = body_start + length;
                    return Ok(FramePosition::Frame(body_start..body_start + length));
                }
                self.make_room(LENGTH_PREFIX_BYTES + length);
            } else {
                self.make_room(LENGTH_PREFIX_BYTES);
            }
            match self.inner.read(&mut self.buffer[self.end..]) {
                Ok(0) => return Ok(FramePosition::Closed),
                Ok(count) => {
                    self.end += count;
                    self.bytes_read += count as u64;
                }
                Err(error) if is_timeout(&error) => return Ok(FramePosition::Idle),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
    }

    /// The read buffer that ranges from [`Self::next_frame_range`] index into.
    pub fn buffered(&self) -> &[u8] {
        &self.buffer
    }

    /// Ensures `buffer[start..]` can hold `needed` bytes, moving unread bytes to the front.
    fn make_room(&mut self, needed: usize) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.buffer.len() - self.start >= needed && self.end < self.buffer.len() {
            return;
        }
        self.buffer.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        if self.buffer.len() < needed {
            self.buffer.resize(needed, 0);
        }
    }
}

/// True for the errors a socket read timeout produces (`EAGAIN` on Linux).
pub fn is_timeout(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Splits a message into `(header, payload)`: the header runs from the first `{` to the first
/// `}` that is not inside a string. `None` when there is no complete header.
pub fn split_header(message: &[u8]) -> Option<(&[u8], &[u8])> {
    // The client's parser skips bytes before the first `{` (reference §1.1); so do we.
    let open = message.iter().position(|&byte| byte == b'{')?;
    let mut in_string = false;
    let mut escaped = false;
    for (index, &byte) in message.iter().enumerate().skip(open + 1) {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
        } else if byte == b'"' {
            in_string = true;
        } else if byte == b'}' {
            return Some((&message[open..=index], &message[index + 1..]));
        }
    }
    None
}

/// Iterates the `(key, value)` pairs of a flat header; string values come without their quotes
/// and with escapes left as they are (the benchmark only compares plain ASCII values).
pub fn header_fields(header: &[u8]) -> HeaderFields<'_> {
    let inner = header.strip_prefix(b"{").unwrap_or(header);
    HeaderFields {
        rest: inner.strip_suffix(b"}").unwrap_or(inner),
    }
}

/// Looks up one key in a header; `None` when absent.
pub fn header_value<'a>(header: &'a [u8], key: &str) -> Option<&'a [u8]> {
    header_fields(header)
        .find(|(name, _)| *name == key.as_bytes())
        .map(|(_, value)| value)
}

/// Iterator returned by [`header_fields`].
pub struct HeaderFields<'a> {
    /// The unparsed remainder of the header, without the outer braces.
    rest: &'a [u8],
}

impl<'a> Iterator for HeaderFields<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let rest = trim_start(self.rest, b", \t\r\n");
        let (key, after_key) = take_string(rest)?;
        let after_colon = trim_start(after_key, b" \t\r\n").strip_prefix(b":")?;
        let after_colon = trim_start(after_colon, b" \t\r\n");
        let (value, remainder) = if after_colon.first() == Some(&b'"') {
            take_string(after_colon)?
        } else {
            // Bare numbers, true/false/null: up to the next separator.
            let end = after_colon
                .iter()
                .position(|&byte| byte == b',')
                .unwrap_or(after_colon.len());
            (trim_end(&after_colon[..end]), &after_colon[end..])
        };
        self.rest = remainder;
        Some((key, value))
    }
}

/// Reads a quoted string at the start of `input`; returns its contents and what follows.
fn take_string(input: &[u8]) -> Option<(&[u8], &[u8])> {
    let body = input.strip_prefix(b"\"")?;
    let mut escaped = false;
    for (index, &byte) in body.iter().enumerate() {
        match (escaped, byte) {
            (true, _) => escaped = false,
            (false, b'\\') => escaped = true,
            (false, b'"') => return Some((&body[..index], &body[index + 1..])),
            _ => {}
        }
    }
    None
}

fn trim_start<'a>(input: &'a [u8], set: &[u8]) -> &'a [u8] {
    let skip = input.iter().take_while(|byte| set.contains(byte)).count();
    &input[skip..]
}

fn trim_end(input: &[u8]) -> &[u8] {
    let keep = input.len()
        - input
            .iter()
            .rev()
            .take_while(|byte| byte.is_ascii_whitespace())
            .count();
    &input[..keep]
}

/// Returns the payload of a publish delivery (`"c":"p"` or `"c":"publish"`), `None` for any
/// other frame (acks, heartbeats), which the subscriber skips.
#[inline]
pub fn delivery_payload(frame: &[u8]) -> Option<&[u8]> {
    let (header, payload) = split_header(frame)?;
    match header_value(header, "c")? {
        b"p" | b"publish" => Some(payload),
        _ => None,
    }
}

/// Builds one frame: length prefix, header, payload.
pub fn encode_frame(header: &[u8], payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(header.len() + payload.len()).expect("frame fits in u32");
    let mut frame = Vec::with_capacity(LENGTH_PREFIX_BYTES + length as usize);
    frame.extend_from_slice(&length.to_be_bytes());
    frame.extend_from_slice(header);
    frame.extend_from_slice(payload);
    frame
}

/// Connects with `TCP_NODELAY` (every message is one small write that must leave at once) and a
/// read timeout so reads return periodically to check deadlines.
pub fn connect(address: SocketAddr, timeout: Duration) -> Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&address, timeout)
        .with_context(|| format!("connecting to {address}"))?;
    stream.set_nodelay(true).context("setting TCP_NODELAY")?;
    stream
        .set_read_timeout(Some(READ_POLL_INTERVAL))
        .context("setting the read timeout")?;
    Ok(stream)
}

/// Sends one command and waits for its `processed` ack (matched by `cid`); fails on
/// `status=failure`, on close, or after `timeout`.
pub(crate) fn command_and_wait_ack(
    stream: &mut TcpStream,
    reader: &mut FrameReader<TcpStream>,
    header: &str,
    command_id: &str,
    timeout: Duration,
) -> Result<()> {
    stream
        .write_all(&encode_frame(header.as_bytes(), b""))
        .context("sending a command")?;
    let deadline = Instant::now() + timeout;
    loop {
        match reader.next_frame().context("reading the ack")? {
            Received::Message(frame) => {
                let Some((reply, _)) = split_header(frame) else {
                    continue;
                };
                if header_value(reply, "c") != Some(b"ack")
                    || header_value(reply, "cid") != Some(command_id.as_bytes())
                {
                    continue;
                }
                if header_value(reply, "status") == Some(b"failure") {
                    bail!(
                        "server refused {header}: {}",
                        String::from_utf8_lossy(reply)
                    );
                }
                return Ok(());
            }
            Received::Idle if Instant::now() < deadline => {}
            Received::Idle => bail!("no ack for {header} within {timeout:?}"),
            Received::Closed => bail!("server closed the connection instead of acking {header}"),
        }
    }
}

/// Logs on with `client_name` and waits for the ack.
pub(crate) fn logon(
    stream: &mut TcpStream,
    reader: &mut FrameReader<TcpStream>,
    client_name: &str,
    timeout: Duration,
) -> Result<()> {
    let header = format!(
        r#"{{"c":"logon","cid":"1","client_name":"{client_name}","a":"processed","version":"5.3.5.0:bench"}}"#
    );
    command_and_wait_ack(stream, reader, &header, "1", timeout).context("AMPS logon")
}

/// One subscription a subscriber connection places.
#[derive(Clone, Debug)]
pub struct SubscriptionSpec {
    /// The subscription id (`sub_id`), echoed in each delivery's `sids`.
    pub sub_id: String,
    /// Topic (exact name or regex).
    pub topic: String,
    /// AMPS content filter, sent as the header's `filter` field; must not contain `"` or `\`.
    pub filter: Option<String>,
}

/// The receiving side: a logged-on connection with one or more live subscriptions.
pub struct AmpsSubscriber {
    reader: FrameReader<TcpStream>,
    /// The write half, kept so the connection stays fully open while the reader is idle.
    _stream: Option<TcpStream>,
}

impl AmpsSubscriber {
    /// Logs on as `client_name` and places every subscription in `specs`, one after the other;
    /// returns once all are acked (i.e. live).
    pub fn subscribe_many(
        address: SocketAddr,
        client_name: &str,
        specs: &[SubscriptionSpec],
        timeout: Duration,
    ) -> Result<Self> {
        let mut stream = connect(address, timeout)?;
        let mut reader = FrameReader::new(stream.try_clone()?);
        logon(&mut stream, &mut reader, client_name, timeout)?;
        for (index, spec) in specs.iter().enumerate() {
            let command_id = (index + 2).to_string();
            let filter = spec
                .filter
                .as_ref()
                .map(|filter| {
                    if filter.contains(['"', '\\']) {
                        bail!("filter {filter:?} would need JSON escapes, which this client does not write");
                    }
                    Ok(format!(r#","filter":"{filter}""#))
                })
                .transpose()?
                .unwrap_or_default();
            let header = format!(
                r#"{{"c":"subscribe","t":"{}","cid":"{command_id}","sub_id":"{}","a":"processed"{filter}}}"#,
                spec.topic, spec.sub_id
            );
            command_and_wait_ack(&mut stream, &mut reader, &header, &command_id, timeout)
                .with_context(|| format!("AMPS subscribe {}", spec.sub_id))?;
        }
        Ok(Self {
            reader,
            _stream: Some(stream),
        })
    }

    /// Wire bytes received so far (framing and headers included).
    pub fn bytes_received(&self) -> u64 {
        self.reader.bytes_read()
    }

    /// A subscriber that only reads frames (for the raw relay, which has no logon or subscribe).
    pub fn raw(address: SocketAddr, timeout: Duration) -> Result<Self> {
        Ok(Self {
            reader: FrameReader::new(connect(address, timeout)?),
            _stream: None,
        })
    }

    /// Returns the next delivery's payload, skipping non-delivery frames.
    #[inline]
    pub fn next_payload(&mut self) -> io::Result<Received<'_>> {
        loop {
            let range = match self.reader.next_frame_range()? {
                FramePosition::Frame(range) => range,
                FramePosition::Idle => return Ok(Received::Idle),
                FramePosition::Closed => return Ok(Received::Closed),
            };
            // Work with offsets so no borrow of the buffer outlives this iteration (a skipped
            // frame must not keep the reader borrowed when the loop reads again).
            let frame = &self.reader.buffered()[range.clone()];
            if let Some(payload) = delivery_payload(frame) {
                // The payload is always a suffix of the frame.
                let payload_start = range.end - payload.len();
                return Ok(Received::Message(
                    &self.reader.buffered()[payload_start..range.end],
                ));
            }
        }
    }
}

/// The sending side: a connection with one pre-built publish frame that is stamped in place.
pub struct AmpsPublisher {
    stream: TcpStream,
    /// `[length][{"c":"p","t":topic}][payload]`, re-stamped for every message.
    frame: Vec<u8>,
    /// Where the payload starts inside `frame`.
    payload_offset: usize,
}

impl AmpsPublisher {
    /// Connects, logs on when `logon` is set (not for the raw relay), and pre-builds the frame.
    #[cfg(test)]
    pub fn connect(
        address: SocketAddr,
        topic: &str,
        payload_size_bytes: usize,
        logon_first: bool,
        timeout: Duration,
    ) -> Result<Self> {
        let logon_as = logon_first.then_some("bench-pub");
        let layout = crate::payload::Layout::Plain;
        Self::connect_with(
            address,
            topic,
            payload_size_bytes,
            layout,
            logon_as,
            timeout,
        )
    }

    /// Connects, logs on as `logon_as` (`None`: no logon, for the raw relay), and pre-builds the
    /// frame for `layout`.
    pub fn connect_with(
        address: SocketAddr,
        topic: &str,
        payload_size_bytes: usize,
        layout: crate::payload::Layout,
        logon_as: Option<&str>,
        timeout: Duration,
    ) -> Result<Self> {
        let mut stream = connect(address, timeout)?;
        if let Some(client_name) = logon_as {
            let mut reader = FrameReader::new(stream.try_clone()?);
            logon(&mut stream, &mut reader, client_name, timeout)?;
        }
        let header = format!(r#"{{"c":"p","t":"{topic}"}}"#);
        let frame = encode_frame(
            header.as_bytes(),
            &crate::payload::template_for(layout, payload_size_bytes),
        );
        Ok(Self {
            stream,
            payload_offset: LENGTH_PREFIX_BYTES + header.len(),
            frame,
        })
    }

    /// Stamps and sends one message (a single `write` of one frame).
    #[inline]
    pub fn publish(&mut self, seq: u64, scheduled_ns: u64) -> io::Result<()> {
        crate::payload::stamp(&mut self.frame[self.payload_offset..], seq, scheduled_ns);
        self.stream.write_all(&self.frame)
    }

    /// Sets the filtered layout's key for the following messages.
    #[inline]
    pub fn set_key(&mut self, key: u8) {
        crate::payload::stamp_key(&mut self.frame[self.payload_offset..], key);
    }

    /// Wire bytes of one message (length prefix, header and payload).
    pub fn frame_bytes(&self) -> usize {
        self.frame.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out its bytes in fixed small chunks, then reports a timeout, so frames
    /// straddle reads the way they do on a socket.
    struct Chunked {
        data: Vec<u8>,
        position: usize,
        chunk: usize,
    }

    impl Read for Chunked {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            if self.position == self.data.len() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let count = self
                .chunk
                .min(out.len())
                .min(self.data.len() - self.position);
            out[..count].copy_from_slice(&self.data[self.position..self.position + count]);
            self.position += count;
            Ok(count)
        }
    }

    #[test]
    fn split_header_finds_payload_after_closing_brace() {
        let (header, payload) =
            split_header(br#"{"c":"p","t":"bench","sids":"s1"}{"id":1}"#).unwrap();
        assert_eq!(header, br#"{"c":"p","t":"bench","sids":"s1"}"#);
        assert_eq!(payload, br#"{"id":1}"#);
    }

    #[test]
    fn split_header_ignores_braces_and_escaped_quotes_in_strings() {
        let frame = br#"{"c":"p","t":"we}ird","x":"a\"}b","sids":"s1"}PAYLOAD"#;
        let (header, payload) = split_header(frame).unwrap();
        assert_eq!(payload, b"PAYLOAD");
        assert_eq!(header_value(header, "t"), Some(&b"we}ird"[..]));
        assert_eq!(header_value(header, "x"), Some(&br#"a\"}b"#[..]));
        assert_eq!(header_value(header, "sids"), Some(&b"s1"[..]));
    }

    #[test]
    fn split_header_skips_leading_bytes_and_rejects_unterminated() {
        assert_eq!(split_header(b"\n{\"c\":\"p\"}x").unwrap().1, b"x");
        assert_eq!(split_header(br#"{"c":"p","t":"abc"#), None);
        assert_eq!(split_header(b"no header"), None);
    }

    #[test]
    fn header_fields_reads_strings_and_bare_values() {
        let header = br#"{"c":"ack","cid":"1","s":42,"ok":true,"status":"success"}"#;
        let fields: Vec<_> = header_fields(header).collect();
        assert_eq!(
            fields,
            vec![
                (&b"c"[..], &b"ack"[..]),
                (&b"cid"[..], &b"1"[..]),
                (&b"s"[..], &b"42"[..]),
                (&b"ok"[..], &b"true"[..]),
                (&b"status"[..], &b"success"[..]),
            ]
        );
        assert_eq!(header_value(header, "missing"), None);
    }

    #[test]
    fn delivery_payload_accepts_publish_and_skips_others() {
        assert_eq!(
            delivery_payload(br#"{"c":"p","t":"bench","sids":"s1"}data"#),
            Some(&b"data"[..])
        );
        assert_eq!(
            delivery_payload(br#"{"c":"publish","t":"bench"}"#),
            Some(&b""[..])
        );
        assert_eq!(
            delivery_payload(br#"{"c":"ack","cid":"2","a":"processed"}"#),
            None
        );
        assert_eq!(delivery_payload(br#"{"c":"heartbeat"}"#), None);
    }

    #[test]
    fn frame_reader_reassembles_frames_across_reads() {
        let mut stream = Vec::new();
        let messages: Vec<Vec<u8>> = (0..50)
            .map(|index| {
                format!(r#"{{"c":"p","t":"bench","sids":"s1"}}payload-{index}"#).into_bytes()
            })
            .collect();
        for message in &messages {
            stream.extend_from_slice(&encode_frame(message, b""));
        }
        for chunk in [1, 3, 7, 4096] {
            let mut reader = FrameReader::new(Chunked {
                data: stream.clone(),
                position: 0,
                chunk,
            });
            for message in &messages {
                assert_eq!(
                    reader.next_frame().unwrap(),
                    Received::Message(&message[..])
                );
            }
            assert_eq!(reader.next_frame().unwrap(), Received::Idle);
        }
    }

    #[test]
    fn frame_reader_grows_for_large_frames_and_reports_close() {
        let big = vec![b'z'; READ_BUFFER_BYTES * 2];
        let mut data = encode_frame(b"{}", &big);
        data.extend_from_slice(&encode_frame(b"{}", b"tail"));
        let mut reader = FrameReader::new(io::Cursor::new(data));
        match reader.next_frame().unwrap() {
            Received::Message(frame) => assert_eq!(frame.len(), 2 + big.len()),
            other => panic!("expected a frame, got {other:?}"),
        }
        assert_eq!(
            reader.next_frame().unwrap(),
            Received::Message(&b"{}tail"[..])
        );
        assert_eq!(reader.next_frame().unwrap(), Received::Closed);
    }

    #[test]
    fn frame_reader_rejects_absurd_lengths() {
        let mut reader = FrameReader::new(io::Cursor::new(vec![0xff, 0xff, 0xff, 0xff, b'{']));
        assert!(reader.next_frame().is_err());
    }
}
