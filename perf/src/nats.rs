//! A minimal NATS text-protocol client for the comparison runs: `CONNECT`, `SUB`, `PUB`, `PING`/
//! `PONG`, and parsing of `MSG`. Like the AMPS client it is hand-written so both brokers are
//! driven the same way (one blocking socket per side, one write per message).
//!
//! ```text
//! client → server   CONNECT {"verbose":false,"pedantic":false}\r\n
//!                   SUB bench 1\r\n
//!                   PUB bench <n>\r\n<n payload bytes>\r\n
//! server → client   INFO {...}\r\n   PING\r\n   PONG\r\n   +OK\r\n   -ERR '<reason>'\r\n
//!                   MSG bench 1 [reply-to] <n>\r\n<n payload bytes>\r\n
//! ```

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::ops::Range;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::amps::{connect, is_timeout, Received};

/// Initial read buffer: holds hundreds of 1 KiB messages so one `read` drains a burst.
const READ_BUFFER_BYTES: usize = 256 * 1024;
/// A control line longer than this means we are not talking to a NATS server.
const LINE_LENGTH_MAX_BYTES: usize = 64 * 1024;
/// The `CONNECT` we send: no `+OK` per command (verbose off), no subject checks (pedantic off).
const CONNECT_LINE: &[u8] =
    b"CONNECT {\"verbose\":false,\"pedantic\":false,\"name\":\"tachyon-bench\"}\r\n";

/// What the reader found next on a NATS connection.
#[derive(Debug, PartialEq, Eq)]
enum Event {
    /// A `MSG` whose payload lies at this range of the read buffer.
    Message(Range<usize>),
    /// A `PONG` (the answer to our `PING`).
    Pong,
    /// Nothing arrived within the read timeout.
    Idle,
    /// The server closed the connection.
    Closed,
}

/// A NATS connection: the socket for writing and a buffered reader over a clone of it.
struct Connection {
    stream: TcpStream,
    reader: TcpStream,
    buffer: Vec<u8>,
    start: usize,
    end: usize,
    /// Bytes read from the socket so far.
    bytes_read: u64,
}

impl Connection {
    /// Connects and sends `CONNECT`; the server's `INFO` is read and skipped later.
    fn open(address: SocketAddr, timeout: Duration) -> Result<Self> {
        let mut stream = connect(address, timeout)?;
        stream
            .write_all(CONNECT_LINE)
            .context("sending NATS CONNECT")?;
        let reader = stream.try_clone()?;
        Ok(Self {
            stream,
            reader,
            buffer: vec![0; READ_BUFFER_BYTES],
            start: 0,
            end: 0,
            bytes_read: 0,
        })
    }

    /// Sends `PING` and waits for `PONG`: once it arrives the server has processed everything
    /// this connection sent before (so a preceding `SUB` is live).
    fn ping_pong(&mut self, timeout: Duration) -> Result<()> {
        self.stream
            .write_all(b"PING\r\n")
            .context("sending NATS PING")?;
        let deadline = Instant::now() + timeout;
        loop {
            match self.next_event().context("reading NATS PONG")? {
                Event::Pong => return Ok(()),
                Event::Message(_) => {}
                Event::Idle if Instant::now() < deadline => {}
                Event::Idle => bail!("no NATS PONG within {timeout:?}"),
                Event::Closed => bail!("NATS server closed the connection before PONG"),
            }
        }
    }

    /// Parses the next server operation, answering `PING` and skipping `INFO` and `+OK`.
    fn next_event(&mut self) -> io::Result<Event> {
        loop {
            if let Some(event) = self.parse_buffered()? {
                return Ok(event);
            }
            if self.start == self.end {
                self.start = 0;
                self.end = 0;
            } else if self.end == self.buffer.len() {
                // Keep the partial operation and make room behind it.
                self.buffer.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
                if self.end == self.buffer.len() {
                    self.buffer.resize(self.buffer.len() * 2, 0);
                }
            }
            match self.reader.read(&mut self.buffer[self.end..]) {
                Ok(0) => return Ok(Event::Closed),
                Ok(count) => {
                    self.end += count;
                    self.bytes_read += count as u64;
                }
                Err(error) if is_timeout(&error) => return Ok(Event::Idle),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
    }

    /// Consumes one complete operation from the buffer, `None` when more bytes are needed.
    fn parse_buffered(&mut self) -> io::Result<Option<Event>> {
        loop {
            let pending = &self.buffer[self.start..self.end];
            let Some(line_length) = pending.windows(2).position(|pair| pair == b"\r\n") else {
                if pending.len() > LINE_LENGTH_MAX_BYTES {
                    return Err(invalid("a control line without CRLF: not a NATS server"));
                }
                return Ok(None);
            };
            let line = &pending[..line_length];
            let after_line = self.start + line_length + 2;
            if let Some(arguments) = line.strip_prefix(b"MSG ") {
                let size = message_size(arguments)?;
                // The payload is followed by its own CRLF.
                if self.end < after_line + size + 2 {
                    return Ok(None);
                }
                self.start = after_line + size + 2;
                return Ok(Some(Event::Message(after_line..after_line + size)));
            }
            let operation = line.to_ascii_uppercase();
            self.start = after_line;
            if operation == b"PING" {
                self.stream.write_all(b"PONG\r\n")?;
            } else if operation == b"PONG" {
                return Ok(Some(Event::Pong));
            } else if operation.starts_with(b"-ERR") {
                return Err(io::Error::other(format!(
                    "NATS server error: {}",
                    String::from_utf8_lossy(&operation)
                )));
            }
            // INFO and +OK need no action.
        }
    }
}

/// The payload size is the last field of `MSG <subject> <sid> [reply-to] <size>`.
fn message_size(arguments: &[u8]) -> io::Result<usize> {
    let field = arguments
        .split(|&byte| byte == b' ')
        .rfind(|field| !field.is_empty());
    field
        .and_then(|digits| std::str::from_utf8(digits).ok()?.parse().ok())
        .ok_or_else(|| invalid("MSG line without a payload size"))
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_owned())
}

/// The receiving side: a connection with one live subscription.
pub struct NatsSubscriber {
    connection: Connection,
}

impl NatsSubscriber {
    /// Connects, subscribes to `subject`, and returns once a `PING`/`PONG` proves it is live.
    pub fn subscribe(address: SocketAddr, subject: &str, timeout: Duration) -> Result<Self> {
        Self::subscribe_many(address, &[subject.to_owned()], timeout)
    }

    /// Connects, subscribes to every subject (sids 1, 2, ...), and returns once a `PING`/`PONG`
    /// proves all are live.
    pub fn subscribe_many(
        address: SocketAddr,
        subjects: &[String],
        timeout: Duration,
    ) -> Result<Self> {
        let mut connection = Connection::open(address, timeout)?;
        let mut operations = String::new();
        for (index, subject) in subjects.iter().enumerate() {
            operations.push_str(&format!("SUB {subject} {}\r\n", index + 1));
        }
        connection
            .stream
            .write_all(operations.as_bytes())
            .context("sending NATS SUB")?;
        connection
            .ping_pong(timeout)
            .context("confirming the NATS subscription")?;
        Ok(Self { connection })
    }

    /// Wire bytes received so far (protocol lines included).
    pub fn bytes_received(&self) -> u64 {
        self.connection.bytes_read
    }

    /// Returns the next message's payload.
    #[inline]
    pub fn next_payload(&mut self) -> io::Result<Received<'_>> {
        loop {
            match self.connection.next_event()? {
                Event::Message(range) => {
                    return Ok(Received::Message(&self.connection.buffer[range]))
                }
                Event::Pong => {}
                Event::Idle => return Ok(Received::Idle),
                Event::Closed => return Ok(Received::Closed),
            }
        }
    }
}

/// The sending side: one pre-built `PUB` operation stamped in place per message.
///
/// It never reads after the handshake: the server pings idle clients only every two minutes and
/// tolerates two missed pongs, far longer than a benchmark run.
pub struct NatsPublisher {
    stream: TcpStream,
    /// `PUB <subject> <n>\r\n<payload>\r\n`.
    operation: Vec<u8>,
    /// Where the payload starts inside `operation`.
    payload_offset: usize,
    payload_size_bytes: usize,
    /// Where the subject's two key digits lie inside `operation`, for keyed subjects.
    subject_key_offset: Option<usize>,
}

impl NatsPublisher {
    /// Connects, confirms the connection with `PING`/`PONG`, and pre-builds the operation for
    /// `layout`; with `keyed_subject` every message goes to
    /// `<subject>.kNN`, NN being the key set by [`Self::set_key`] (subject-based routing, the
    /// closest NATS equivalent of a content filter on the key).
    pub fn connect_with(
        address: SocketAddr,
        subject: &str,
        payload_size_bytes: usize,
        layout: crate::payload::Layout,
        keyed_subject: bool,
        timeout: Duration,
    ) -> Result<Self> {
        let mut connection = Connection::open(address, timeout)?;
        connection
            .ping_pong(timeout)
            .context("confirming the NATS publisher connection")?;
        let (subject, subject_key_offset) = if keyed_subject {
            let keyed = keyed_subject_name(subject, 0);
            let offset = "PUB ".len() + keyed.len() - crate::payload::KEY_DIGITS;
            (keyed, Some(offset))
        } else {
            (subject.to_owned(), None)
        };
        let mut operation = format!("PUB {subject} {payload_size_bytes}\r\n").into_bytes();
        let payload_offset = operation.len();
        operation.extend_from_slice(&crate::payload::template_for(layout, payload_size_bytes));
        operation.extend_from_slice(b"\r\n");
        Ok(Self {
            stream: connection.stream,
            operation,
            payload_offset,
            payload_size_bytes,
            subject_key_offset,
        })
    }

    /// Sets the key for the following messages: in the payload (filtered layout) and, with a
    /// keyed subject, in the subject.
    #[inline]
    pub fn set_key(&mut self, key: u8) {
        crate::payload::stamp_key(&mut self.operation[self.payload_offset..], key);
        if let Some(offset) = self.subject_key_offset {
            self.operation[offset] = b'0' + key / 10;
            self.operation[offset + 1] = b'0' + key % 10;
        }
    }

    /// Wire bytes of one message (the whole `PUB` operation).
    pub fn frame_bytes(&self) -> usize {
        self.operation.len()
    }

    /// Stamps and sends one message (a single `write`).
    #[inline]
    pub fn publish(&mut self, seq: u64, scheduled_ns: u64) -> io::Result<()> {
        let payload =
            &mut self.operation[self.payload_offset..self.payload_offset + self.payload_size_bytes];
        crate::payload::stamp(payload, seq, scheduled_ns);
        self.stream.write_all(&self.operation)
    }
}

/// The subject for key `key` under `base`: `<base>.kNN`.
pub fn keyed_subject_name(base: &str, key: u8) -> String {
    format!("{base}.k{key:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_subjects_have_two_digits() {
        assert_eq!(keyed_subject_name("bench", 7), "bench.k07");
        assert_eq!(keyed_subject_name("bench", 49), "bench.k49");
    }

    #[test]
    fn message_size_is_the_last_field() {
        assert_eq!(message_size(b"bench 1 128").unwrap(), 128);
        assert_eq!(message_size(b"bench 1 _INBOX.x 5").unwrap(), 5);
        assert!(message_size(b"bench 1 x").is_err());
    }
}
