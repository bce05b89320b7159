//! A small async AMPS client over loopback TCP: what the JSON Lines server uses to reach the
//! data plane as an ordinary client.
//!
//! It speaks the binary protocol exactly as any client does (a 4-byte big-endian length, then a
//! compact JSON header immediately followed by the payload), so every answer the JSON Lines
//! server gives (acks, failure reasons, records, deliveries) is the data plane's own. Commands are
//! written with the core's [`FrameWriter`]; frames from the server are cut with the core's
//! [`cut_frame`] and their headers read by [`ServerFrame::parse`], a flat scanner that keeps every
//! key (the core's parser keeps only the keys a server reads, not `status` or `reason`).
//!
//! It runs on the JSON Lines thread, never on a data-plane core, and allocates per frame: it is a
//! control-plane convenience for curl and scripts, not a hot path. It never retries: a failure is
//! reported to the HTTP client that caused it.
//!
//! ```text
//!  0       4                                 4+H                     4+N
//!  +-------+---------------------------------+-----------------------+
//!  | N (BE)| {"c":"ack","cid":"7",...}  (H)  | payload (N - H bytes) |
//!  +-------+---------------------------------+-----------------------+
//! ```

use bytes::{Buf, Bytes, BytesMut};
use std::borrow::Cow;
use std::net::SocketAddr;
use std::ops::Range;
use std::time::Duration;
use tachyon_core::protocol::{cut_frame, FrameWriter, RawValue, FRAME_LENGTH_BYTES};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// Largest frame accepted from the data plane: the protocol's own ceiling (the real clients
/// treat a larger length as stream corruption). A `sow` frame holds at most [`SOW_BATCH_SIZE`]
/// records, each no larger than the server's `[limits] frame_bytes_max`.
pub(crate) const FRAME_BYTES_MAX: usize = 1 << 30;

/// Records per `sow` frame asked of the data plane: small frames keep the memory one query holds
/// in this thread small, and loopback frames are cheap.
pub(crate) const SOW_BATCH_SIZE: u64 = 16;

/// Bytes read from the socket at a time (the buffer grows to hold a larger frame).
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// How long connecting to the data plane's AMPS port may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the data plane may take to acknowledge one command (logon, subscribe, sow, publish).
pub(crate) const ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// The `cid` of the logon command (other commands number from 1).
const LOGON_COMMAND_ID: &[u8] = b"logon";

/// The version this client reports at logon (the server only logs it).
const CLIENT_VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), ":tachyon-jsonl");

/// Talking to the data plane failed.
#[derive(Debug, Error)]
pub(crate) enum AmpsError {
    /// The AMPS port does not accept connections.
    #[error("cannot connect to the data plane's AMPS port {address}: {source} (is the server running and [transport] amps_tcp reachable from this host?)")]
    Connect {
        /// The AMPS address.
        address: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// No answer in time.
    #[error("the data plane did not {what} within {timeout_ms} ms (it may be overloaded or stuck: check the server log and /health on the admin port)")]
    Timeout {
        /// What was awaited, as a verb phrase.
        what: &'static str,
        /// The limit.
        timeout_ms: u64,
    },
    /// The data plane closed the connection (shutdown, slow consumer, protocol error).
    #[error(
        "the data plane closed the connection (the server log names client {client} and says why)"
    )]
    Closed {
        /// This connection's client name.
        client: String,
    },
    /// A socket error.
    #[error("the connection to the data plane failed: {0}")]
    Io(#[from] std::io::Error),
    /// A frame this client cannot read.
    #[error("the data plane sent an unreadable frame: {0}")]
    Protocol(String),
    /// The logon got a failure ack.
    #[error("the data plane refused the logon of {client}: {reason}")]
    LogonRefused {
        /// This connection's client name.
        client: String,
        /// The failure ack's reason.
        reason: String,
    },
}

/// One key/value of a header, as offsets into the frame.
#[derive(Debug, Clone)]
struct Field {
    key: Range<usize>,
    value: Range<usize>,
    escaped: bool,
}

/// A flat JSON header read at some offset of a frame: its fields and where it ends.
#[derive(Debug, Clone)]
struct FlatHeader {
    fields: Vec<Field>,
    end: usize,
}

impl FlatHeader {
    fn value<'a>(&self, frame: &'a [u8], names: &[&str]) -> Option<RawValue<'a>> {
        // The last occurrence wins, as in the core's parser.
        self.fields
            .iter()
            .rev()
            .find(|field| {
                names
                    .iter()
                    .any(|name| &frame[field.key.clone()] == name.as_bytes())
            })
            .map(|field| RawValue {
                bytes: &frame[field.value.clone()],
                escaped: field.escaped,
            })
    }
}

/// One frame from the data plane (without its length prefix), header read.
#[derive(Debug, Clone)]
pub(crate) struct ServerFrame {
    body: Bytes,
    header: FlatHeader,
}

/// A processed, completed or other ack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ack {
    /// The `cid` it answers, if it carries one.
    pub(crate) command_id: Option<String>,
    /// `processed`, `completed`, ...
    pub(crate) ack_type: String,
    /// `Ok` for `status=success` (or no status), else the reason.
    pub(crate) outcome: Result<(), String>,
}

impl ServerFrame {
    /// Reads the header at the start of `body`.
    pub(crate) fn parse(body: Bytes) -> Result<ServerFrame, AmpsError> {
        let header = scan_header(&body, 0).map_err(AmpsError::Protocol)?;
        Ok(ServerFrame { body, header })
    }

    /// The value of the first of `names` present, escapes resolved.
    pub(crate) fn get(&self, names: &[&str]) -> Option<Cow<'_, [u8]>> {
        self.header
            .value(&self.body, names)
            .map(|value| value.to_bytes())
    }

    /// The value of the first of `names` present, as text.
    pub(crate) fn text(&self, names: &[&str]) -> Option<String> {
        self.get(names)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
    }

    /// The command word (`c`).
    pub(crate) fn command(&self) -> Cow<'_, [u8]> {
        self.get(&["c", "cmd"]).unwrap_or_default()
    }

    /// Whether this is a delivery of a published message.
    pub(crate) fn is_delivery(&self) -> bool {
        matches!(&*self.command(), b"p" | b"publish")
    }

    /// The bytes after the header.
    pub(crate) fn payload(&self) -> Bytes {
        self.body.slice(self.header.end..)
    }

    /// The ack this frame is, if it is one.
    pub(crate) fn ack(&self) -> Option<Ack> {
        if &*self.command() != b"ack" {
            return None;
        }
        let outcome = match self.get(&["status"]).as_deref() {
            Some(b"failure") => Err(self
                .text(&["reason"])
                .filter(|reason| !reason.is_empty())
                .unwrap_or_else(|| "failure (the data plane gave no reason)".into())),
            _ => Ok(()),
        };
        Some(Ack {
            command_id: self.text(&["cid", "cmd_id"]),
            ack_type: self.text(&["a", "ack_type"]).unwrap_or_default(),
            outcome,
        })
    }

    /// The records of a `sow` frame: after the outer header, each record is a header carrying
    /// `l` (the data length) followed by exactly `l` bytes of data.
    pub(crate) fn sow_records(&self) -> Result<Vec<Bytes>, AmpsError> {
        let body = &self.body[..];
        let mut records = Vec::new();
        let mut at = self.header.end;
        while at < body.len() {
            let record = scan_header(body, at).map_err(AmpsError::Protocol)?;
            let length = record
                .value(body, &["l", "msg_len"])
                .and_then(|value| value.as_u64())
                .ok_or_else(|| {
                    AmpsError::Protocol(format!("sow record at offset {at} has no length (l)"))
                })?;
            let end = usize::try_from(length)
                .ok()
                .and_then(|length| record.end.checked_add(length))
                .filter(|&end| end <= body.len())
                .ok_or_else(|| {
                    AmpsError::Protocol(format!(
                        "sow record at offset {at} claims {length} bytes but the frame has {} left",
                        body.len() - record.end
                    ))
                })?;
            records.push(self.body.slice(record.end..end));
            at = end;
        }
        Ok(records)
    }
}

/// Reads the flat JSON object starting at `start` (after optional whitespace): string keys,
/// string or bare scalar values, no nesting. Lenient like the core's parser: raw control bytes
/// and raw UTF-8 inside strings are accepted.
fn scan_header(frame: &[u8], start: usize) -> Result<FlatHeader, String> {
    let skip = |mut at: usize| {
        while matches!(frame.get(at), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            at += 1;
        }
        at
    };
    let mut at = skip(start);
    if frame.get(at) != Some(&b'{') {
        return Err(format!("no header object at offset {at}"));
    }
    let mut fields = Vec::new();
    at = skip(at + 1);
    if frame.get(at) == Some(&b'}') {
        return Ok(FlatHeader {
            fields,
            end: at + 1,
        });
    }
    loop {
        at = skip(at);
        let (key, _, after_key) = scan_string(frame, at)?;
        at = skip(after_key);
        if frame.get(at) != Some(&b':') {
            return Err(format!("expected ':' at offset {at}"));
        }
        at = skip(at + 1);
        let (value, escaped, after_value) = match frame.get(at) {
            Some(b'"') => scan_string(frame, at)?,
            Some(b'{' | b'[') => return Err(format!("nested value at offset {at}")),
            Some(_) => {
                let end = frame[at..]
                    .iter()
                    .position(|&byte| matches!(byte, b',' | b'}' | b' ' | b'\t' | b'\r' | b'\n'))
                    .map_or(frame.len(), |length| at + length);
                (at..end, false, end)
            }
            None => return Err(format!("header ends at offset {at}")),
        };
        fields.push(Field {
            key,
            value,
            escaped,
        });
        at = skip(after_value);
        match frame.get(at) {
            Some(b',') => at += 1,
            Some(b'}') => {
                return Ok(FlatHeader {
                    fields,
                    end: at + 1,
                })
            }
            Some(byte) => return Err(format!("unexpected byte 0x{byte:02x} at offset {at}")),
            None => return Err(format!("header ends at offset {at}")),
        }
    }
}

/// The string starting with `"` at `at`: its content range, whether it holds escapes, and the
/// offset after its closing quote.
fn scan_string(frame: &[u8], at: usize) -> Result<(Range<usize>, bool, usize), String> {
    if frame.get(at) != Some(&b'"') {
        return Err(format!("expected '\"' at offset {at}"));
    }
    let mut escaped = false;
    let mut cursor = at + 1;
    while let Some(&byte) = frame.get(cursor) {
        match byte {
            b'\\' => {
                escaped = true;
                cursor += 2;
            }
            b'"' => return Ok((at + 1..cursor, escaped, cursor + 1)),
            _ => cursor += 1,
        }
    }
    Err(format!("string from offset {at} is not terminated"))
}

// ------------------------------------------------------------------------------- commands

/// Appends a logon frame.
pub(crate) fn write_logon(buffer: &mut Vec<u8>, client_name: &str) {
    let mut frame = FrameWriter::new(buffer);
    let mut header = frame.header();
    header
        .string("c", b"logon")
        .string("cid", LOGON_COMMAND_ID)
        .string("client_name", client_name.as_bytes())
        .string("mt", b"json")
        .string("a", b"processed")
        .string("version", CLIENT_VERSION.as_bytes());
    header.finish();
    frame.finish(0);
}

/// Appends a publish asking for a processed ack under `command_id`.
pub(crate) fn write_publish(buffer: &mut Vec<u8>, topic: &str, command_id: u64, payload: &[u8]) {
    let mut frame = FrameWriter::new(buffer);
    let mut header = frame.header();
    header
        .string("c", b"p")
        .string("t", topic.as_bytes())
        .string("cid", command_id.to_string().as_bytes())
        .string("a", b"processed");
    header.finish();
    frame.payload(payload);
    frame.finish(0);
}

/// Appends a subscribe whose `sub_id` is its `cid`.
pub(crate) fn write_subscribe(
    buffer: &mut Vec<u8>,
    command_id: u64,
    topic: &str,
    filter: Option<&str>,
) {
    let mut frame = FrameWriter::new(buffer);
    let mut header = frame.header();
    header
        .string("c", b"subscribe")
        .string("cid", command_id.to_string().as_bytes())
        .string("t", topic.as_bytes())
        .string("sub_id", command_id.to_string().as_bytes())
        .string("a", b"processed");
    if let Some(filter) = filter {
        header.string("filter", filter.as_bytes());
    }
    header.finish();
    frame.finish(0);
}

/// Appends an unsubscribe of the subscription `sub_id`.
pub(crate) fn write_unsubscribe(buffer: &mut Vec<u8>, command_id: u64, sub_id: u64) {
    let mut frame = FrameWriter::new(buffer);
    let mut header = frame.header();
    header
        .string("c", b"unsubscribe")
        .string("cid", command_id.to_string().as_bytes())
        .string("sub_id", sub_id.to_string().as_bytes());
    header.finish();
    frame.finish(0);
}

/// What a SOW query asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SowQuery {
    /// The SOW topic.
    pub(crate) topic: String,
    /// A content filter.
    pub(crate) filter: Option<String>,
    /// At most this many records.
    pub(crate) top_n: Option<u64>,
    /// `/field [ASC|DESC], ...`.
    pub(crate) orderby: Option<String>,
}

/// Appends a `sow` query asking for processed and completed acks; its `query_id` is its `cid`.
pub(crate) fn write_sow(buffer: &mut Vec<u8>, command_id: u64, query: &SowQuery) {
    let mut frame = FrameWriter::new(buffer);
    let mut header = frame.header();
    header
        .string("c", b"sow")
        .string("cid", command_id.to_string().as_bytes())
        .string("t", query.topic.as_bytes())
        .string("query_id", command_id.to_string().as_bytes())
        .string("a", b"processed,completed")
        .number("bs", SOW_BATCH_SIZE);
    if let Some(filter) = &query.filter {
        header.string("filter", filter.as_bytes());
    }
    if let Some(top_n) = query.top_n {
        header.number("top_n", top_n);
    }
    if let Some(orderby) = &query.orderby {
        header.string("orderby", orderby.as_bytes());
    }
    header.finish();
    frame.finish(0);
}

// ------------------------------------------------------------------------------ connection

/// The reading half of a connection: cuts frames out of a buffer.
pub(crate) struct AmpsReader {
    half: OwnedReadHalf,
    buffer: BytesMut,
    client: String,
}

impl AmpsReader {
    /// The next frame if it is already buffered; no I/O.
    pub(crate) fn try_frame(&mut self) -> Result<Option<ServerFrame>, AmpsError> {
        match cut_frame(&self.buffer, FRAME_BYTES_MAX) {
            Ok(Some(length)) => {
                self.buffer.advance(FRAME_LENGTH_BYTES);
                let body = self.buffer.split_to(length).freeze();
                ServerFrame::parse(body).map(Some)
            }
            Ok(None) => Ok(None),
            Err(error) => Err(AmpsError::Protocol(error.to_string())),
        }
    }

    /// The next frame, reading as needed. Cancel-safe: a frame is never half taken.
    pub(crate) async fn frame(&mut self) -> Result<ServerFrame, AmpsError> {
        loop {
            if let Some(frame) = self.try_frame()? {
                return Ok(frame);
            }
            self.buffer.reserve(READ_CHUNK_BYTES);
            if self.half.read_buf(&mut self.buffer).await? == 0 {
                return Err(AmpsError::Closed {
                    client: self.client.clone(),
                });
            }
        }
    }

    /// The next frame within `timeout`; `what` names what was awaited in the error.
    pub(crate) async fn frame_within(
        &mut self,
        timeout: Duration,
        what: &'static str,
    ) -> Result<ServerFrame, AmpsError> {
        tokio::time::timeout(timeout, self.frame())
            .await
            .map_err(|_| AmpsError::Timeout {
                what,
                timeout_ms: timeout.as_millis() as u64,
            })?
    }

    /// Reads until the `ack_type` ack of `command_id`, within `timeout` in all. Other frames
    /// (deliveries that raced the ack) go to `other`.
    pub(crate) async fn ack_of(
        &mut self,
        command_id: &str,
        ack_type: &str,
        timeout: Duration,
        what: &'static str,
        mut other: impl FnMut(ServerFrame),
    ) -> Result<Ack, AmpsError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let frame = self.frame_within(remaining, what).await?;
            match frame.ack() {
                Some(ack)
                    if ack.command_id.as_deref() == Some(command_id)
                        && ack.ack_type == ack_type =>
                {
                    return Ok(ack)
                }
                _ => other(frame),
            }
        }
    }
}

/// The writing half of a connection.
pub(crate) struct AmpsWriter {
    half: OwnedWriteHalf,
}

impl AmpsWriter {
    /// Writes whole frames.
    pub(crate) async fn send(&mut self, frames: &[u8]) -> Result<(), AmpsError> {
        self.half.write_all(frames).await?;
        Ok(())
    }
}

/// A logged-on connection to the data plane.
pub(crate) struct AmpsConnection {
    /// Reads frames.
    pub(crate) reader: AmpsReader,
    /// Writes frames.
    pub(crate) writer: AmpsWriter,
    /// The client name it logged on with (`jsonl-<n>`), as the server log names it.
    pub(crate) client: String,
}

impl AmpsConnection {
    /// Connects to `address` and logs on as `client`.
    pub(crate) async fn connect(
        address: SocketAddr,
        client: String,
    ) -> Result<AmpsConnection, AmpsError> {
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address)).await
        {
            Ok(Ok(stream)) => stream,
            Ok(Err(source)) => return Err(AmpsError::Connect { address, source }),
            Err(_) => {
                return Err(AmpsError::Timeout {
                    what: "accept the connection",
                    timeout_ms: CONNECT_TIMEOUT.as_millis() as u64,
                })
            }
        };
        stream.set_nodelay(true)?;
        let (read, write) = stream.into_split();
        let mut connection = AmpsConnection {
            reader: AmpsReader {
                half: read,
                buffer: BytesMut::with_capacity(READ_CHUNK_BYTES),
                client: client.clone(),
            },
            writer: AmpsWriter { half: write },
            client,
        };
        let mut frame = Vec::with_capacity(256);
        write_logon(&mut frame, &connection.client);
        connection.writer.send(&frame).await?;
        let command_id = std::str::from_utf8(LOGON_COMMAND_ID).expect("ASCII");
        let ack = connection
            .reader
            .ack_of(
                command_id,
                "processed",
                ACK_TIMEOUT,
                "acknowledge the logon",
                |_| {},
            )
            .await?;
        if let Err(reason) = ack.outcome {
            return Err(AmpsError::LogonRefused {
                client: connection.client,
                reason,
            });
        }
        Ok(connection)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_body(frames: &[u8]) -> Bytes {
        let length = u32::from_be_bytes(frames[..4].try_into().unwrap()) as usize;
        assert_eq!(length + 4, frames.len(), "one whole frame");
        Bytes::copy_from_slice(&frames[4..])
    }

    #[test]
    fn commands_are_compact_frames_with_escaped_values() {
        let mut buffer = Vec::new();
        write_subscribe(&mut buffer, 3, "orders", Some("/name = \"a\\b\"\n"));
        assert_eq!(
            &frame_body(&buffer)[..],
            br#"{"c":"subscribe","cid":"3","t":"orders","sub_id":"3","a":"processed","filter":"/name = \"a\\b\"\n"}"#
        );
        buffer.clear();
        write_publish(&mut buffer, "t", 7, br#"{"x":1}"#);
        assert_eq!(
            &frame_body(&buffer)[..],
            br#"{"c":"p","t":"t","cid":"7","a":"processed"}{"x":1}"#
        );
        buffer.clear();
        write_sow(
            &mut buffer,
            1,
            &SowQuery {
                topic: "orders".into(),
                filter: Some("/x > 1".into()),
                top_n: Some(5),
                orderby: Some("/x DESC".into()),
            },
        );
        assert_eq!(
            &frame_body(&buffer)[..],
            br#"{"c":"sow","cid":"1","t":"orders","query_id":"1","a":"processed,completed","bs":16,"filter":"/x > 1","top_n":5,"orderby":"/x DESC"}"#
        );
    }

    #[test]
    fn acks_carry_status_and_reason() {
        let frame = ServerFrame::parse(Bytes::from_static(
            br#"{"c":"ack","a":"processed","cid":"12","status":"failure","reason":"bad filter"}"#,
        ))
        .unwrap();
        assert_eq!(
            frame.ack(),
            Some(Ack {
                command_id: Some("12".into()),
                ack_type: "processed".into(),
                outcome: Err("bad filter".into()),
            })
        );
        let frame = ServerFrame::parse(Bytes::from_static(
            br#"{"c":"ack","a":"completed","cid":7,"status":"success"}"#,
        ))
        .unwrap();
        assert_eq!(frame.ack().unwrap().outcome, Ok(()));
        assert_eq!(frame.ack().unwrap().command_id.as_deref(), Some("7"));
        let delivery = ServerFrame::parse(Bytes::from_static(
            b"{\"c\":\"p\",\"t\":\"a\\\"b\",\"sids\":\"1\"}{\"v\":\"}\"}",
        ))
        .unwrap();
        assert!(delivery.is_delivery());
        assert_eq!(delivery.ack(), None);
        assert_eq!(delivery.text(&["t"]).as_deref(), Some("a\"b"));
        assert_eq!(&delivery.payload()[..], b"{\"v\":\"}\"}");
    }

    #[test]
    fn sow_frames_split_into_records_by_length() {
        let frame = ServerFrame::parse(Bytes::from_static(
            br#"{"c":"sow","t":"o","query_id":"1","bs":2}{"k":"9","l":9}{"id":1}x{"k":"8","l":0,"x":"c"}"#,
        ))
        .unwrap();
        let records = frame.sow_records().unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(&records[0][..], b"{\"id\":1}x");
        assert_eq!(&records[1][..], b"");
        let short = ServerFrame::parse(Bytes::from_static(
            br#"{"c":"sow","bs":1}{"k":"9","l":80}{"id":1}"#,
        ))
        .unwrap();
        assert!(short.sow_records().unwrap_err().to_string().contains("80"));
        let missing = ServerFrame::parse(Bytes::from_static(br#"{"c":"sow"}{"k":"9"}{}"#)).unwrap();
        assert!(missing.sow_records().is_err());
    }

    #[test]
    fn unreadable_headers_are_refused() {
        for bad in [
            &b"no brace"[..],
            b"{\"c\":\"ack\"",
            b"{\"c\":{\"nested\":1}}",
            b"{\"c\" \"ack\"}",
            b"{\"c\":\"ack}",
        ] {
            assert!(
                ServerFrame::parse(Bytes::copy_from_slice(bad)).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
