//! The frames the server sends: acks, deliveries, heartbeats.
//!
//! Each writer appends one whole frame (length prefix included) to a caller's buffer, except the
//! delivery writer, which writes prefix and header only so the payload can follow in its own
//! iovec. Field names are the short spellings the C client's scanner recognises (§2 of the
//! protocol reference); ids are echoed exactly as the command carried them.

use super::writer::{FrameWriter, HeaderWriter};
use super::AckType;
use crate::bookmark::WireBookmark;
use crate::ids::SubId;

use crate::session::{AckTarget, Refusal};

/// The protocol version the server announces at logon. Clients turn it into a number to decide
/// which commands exist (flush needs ≥ 4; persisted publish_flush needs ≥ 5.3.3.0) and the
/// JavaScript client insists on four dotted numbers, so it names the AMPS protocol level served.
pub const PROTOCOL_VERSION: &str = "5.3.4.0";

/// Whether the command succeeded.
#[derive(Debug, Clone, Copy)]
pub enum Outcome<'r> {
    /// `status=success`.
    Success,
    /// `status=failure` with the refusal's reason.
    Failure(&'r Refusal),
}

fn echo_ids(header: &mut HeaderWriter<'_>, target: &AckTarget<'_>) {
    if let Some(command_id) = target.command_id {
        header.raw_string("cid", command_id);
    }
    if let Some(sub_id) = target.sub_id {
        header.raw_string("sub_id", sub_id);
    }
    if let Some(query_id) = target.query_id {
        header.raw_string("query_id", query_id);
    }
}

/// Appends an ack frame of type `ack` for the command `target` describes.
pub fn write_ack(buffer: &mut Vec<u8>, ack: AckType, target: &AckTarget<'_>, outcome: Outcome<'_>) {
    let mut frame = FrameWriter::new(buffer);
    let mut header = frame.header();
    header
        .string("c", b"ack")
        .string("a", ack.as_str().as_bytes());
    echo_ids(&mut header, target);
    write_outcome(&mut header, outcome);
    header.finish();
    frame.finish(0);
}

/// Appends the processed ack of a successful logon: version, client name and the publish-store
/// recovery bookmark `<client name hash>|<last persisted sequence>|`.
pub fn write_logon_ack(
    buffer: &mut Vec<u8>,
    target: &AckTarget<'_>,
    client_name: &str,
    last_persisted_sequence: u64,
) {
    let mut frame = FrameWriter::new(buffer);
    let mut header = frame.header();
    header.string("c", b"ack").string("a", b"processed");
    echo_ids(&mut header, target);
    header
        .string("version", PROTOCOL_VERSION.as_bytes())
        .string("status", b"success");
    header.string("client_name", client_name.as_bytes());
    let mut bookmark = Vec::with_capacity(48);
    bookmark.extend_from_slice(
        crate::ids::stable_hash(client_name.as_bytes())
            .max(1)
            .to_string()
            .as_bytes(),
    );
    bookmark.push(b'|');
    bookmark.extend_from_slice(last_persisted_sequence.to_string().as_bytes());
    bookmark.push(b'|');
    header.string("bm", &bookmark);
    header.finish();
    frame.finish(0);
}

/// Appends the conflated persisted ack of guaranteed publishing: every message of this
/// connection up to client sequence `sequence` is durable (or, on failure, was not stored).
pub fn write_persisted_ack(buffer: &mut Vec<u8>, sequence: u64, outcome: Outcome<'_>) {
    let mut frame = FrameWriter::new(buffer);
    let mut header = frame.header();
    header.string("c", b"ack").string("a", b"persisted");
    header.number("s", sequence);
    write_outcome(&mut header, outcome);
    header.finish();
    frame.finish(0);
}

/// Appends a persisted ack for a command that waits on durability by id (a `flush` with
/// `a=persisted`, a bookmark subscription): the ids, and the journal position `bm` reached.
pub fn write_persisted_ack_for(
    buffer: &mut Vec<u8>,
    target: &AckTarget<'_>,
    bookmark: Option<WireBookmark>,
    outcome: Outcome<'_>,
) {
    let mut frame = FrameWriter::new(buffer);
    let mut header = frame.header();
    header.string("c", b"ack").string("a", b"persisted");
    echo_ids(&mut header, target);
    if let Some(bookmark) = bookmark {
        let mut text = [0u8; WireBookmark::TEXT_BYTES_MAX];
        header.string("bm", bookmark.format(&mut text));
    }
    write_outcome(&mut header, outcome);
    header.finish();
    frame.finish(0);
}

/// Appends a `completed` ack carrying the bookmark where a replay ended.
pub fn write_completed_ack(
    buffer: &mut Vec<u8>,
    target: &AckTarget<'_>,
    bookmark: Option<WireBookmark>,
) {
    let mut frame = FrameWriter::new(buffer);
    let mut header = frame.header();
    header.string("c", b"ack").string("a", b"completed");
    echo_ids(&mut header, target);
    if let Some(bookmark) = bookmark {
        let mut text = [0u8; WireBookmark::TEXT_BYTES_MAX];
        header.string("bm", bookmark.format(&mut text));
    }
    header.string("status", b"success");
    header.finish();
    frame.finish(0);
}

fn write_outcome(header: &mut HeaderWriter<'_>, outcome: Outcome<'_>) {
    match outcome {
        Outcome::Success => {
            header.string("status", b"success");
        }
        Outcome::Failure(refusal) => {
            header
                .string("status", b"failure")
                .string("reason", refusal.reason.as_str().as_bytes());
        }
    }
}

/// Appends a server heartbeat frame.
pub fn write_heartbeat(buffer: &mut Vec<u8>) {
    let mut frame = FrameWriter::new(buffer);
    let mut header = frame.header();
    header.string("c", b"heartbeat");
    header.finish();
    frame.finish(0);
}

/// Appends the prefix and header of a delivery; the caller sends `payload_bytes` right after.
///
/// `topic` and `correlation_id` are written as the publisher sent them (they carried no escapes);
/// `sow_key` is the record's key `k` on a SOW topic.
#[allow(clippy::too_many_arguments)]
pub fn write_delivery_header(
    buffer: &mut Vec<u8>,
    topic: &[u8],
    sub_ids: &[SubId],
    bookmark: Option<WireBookmark>,
    sow_key: Option<&[u8]>,
    correlation_id: Option<&[u8]>,
    timestamp_unix_ns: Option<u64>,
    payload_bytes: usize,
) {
    let mut frame = FrameWriter::new(buffer);
    let mut header = frame.header();
    header.string("c", b"p").raw_string("t", topic);
    header.string_list("sids", sub_ids.iter().map(SubId::as_bytes));
    if let Some(bookmark) = bookmark {
        let mut text = [0u8; WireBookmark::TEXT_BYTES_MAX];
        header.string("bm", bookmark.format(&mut text));
    }
    if let Some(key) = sow_key {
        header.string("k", key);
    }
    if let Some(correlation_id) = correlation_id {
        header.raw_string("x", correlation_id);
    }
    if let Some(unix_ns) = timestamp_unix_ns {
        header.string("ts", &format_timestamp(unix_ns));
    }
    header.finish();
    frame.finish(payload_bytes);
}

/// Formats a time as AMPS does: `YYYYmmddTHHMMSS.ffffffZ` (UTC, microseconds).
pub fn format_timestamp(unix_ns: u64) -> [u8; 23] {
    let seconds = unix_ns / 1_000_000_000;
    let micros = (unix_ns % 1_000_000_000) / 1_000;
    let (year, month, day) = crate::civil::civil_from_days((seconds / 86_400) as i64);
    let second_of_day = seconds % 86_400;
    let mut out = [0u8; 23];
    let mut put = |at: usize, value: u64, width: usize| {
        let mut rest = value;
        for index in (at..at + width).rev() {
            out[index] = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
    };
    put(0, year as u64, 4);
    put(4, u64::from(month), 2);
    put(6, u64::from(day), 2);
    put(9, second_of_day / 3600, 2);
    put(11, second_of_day / 60 % 60, 2);
    put(13, second_of_day % 60, 2);
    put(16, micros, 6);
    out[8] = b'T';
    out[15] = b'.';
    out[22] = b'Z';
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{parse_header, AckTypes, CommandKind};
    use crate::session::Reason;

    fn target() -> AckTarget<'static> {
        AckTarget {
            command: Some(CommandKind::Subscribe),
            command_id: Some(b"auto2"),
            sub_id: Some(b"subA"),
            query_id: None,
            acks: AckTypes::NONE,
        }
    }

    #[test]
    fn acks_echo_ids_and_carry_reasons() {
        let mut buffer = Vec::new();
        write_ack(&mut buffer, AckType::Processed, &target(), Outcome::Success);
        assert_eq!(
            &buffer[4..],
            br#"{"c":"ack","a":"processed","cid":"auto2","sub_id":"subA","status":"success"}"#
        );
        buffer.clear();
        let refusal = Refusal {
            reason: Reason::BadFilter,
            detail: "x".into(),
        };
        write_ack(
            &mut buffer,
            AckType::Processed,
            &target(),
            Outcome::Failure(&refusal),
        );
        assert!(buffer.ends_with(br#""status":"failure","reason":"bad filter"}"#));
        assert_eq!(
            u32::from_be_bytes(buffer[..4].try_into().unwrap()) as usize,
            buffer.len() - 4
        );
    }

    #[test]
    fn logon_ack_has_version_and_bookmark() {
        let mut buffer = Vec::new();
        write_logon_ack(&mut buffer, &target(), "pub-1", 0);
        let header = parse_header(&buffer[4..]).unwrap();
        use crate::protocol::keys::Key;
        assert_eq!(
            header.bytes(Key::Version),
            Some(PROTOCOL_VERSION.as_bytes())
        );
        let bookmark = std::str::from_utf8(header.bytes(Key::Bookmark).unwrap()).unwrap();
        assert_eq!(
            bookmark,
            format!("{}|0|", crate::ids::stable_hash(b"pub-1"))
        );
    }

    #[test]
    fn delivery_header_lists_every_subscription() {
        let mut buffer = Vec::new();
        let ids = [SubId::new(b"a"), SubId::new(b"b")];
        write_delivery_header(
            &mut buffer,
            b"orders",
            &ids,
            None,
            None,
            Some(b"Y29y"),
            None,
            7,
        );
        assert_eq!(
            &buffer[4..],
            br#"{"c":"p","t":"orders","sids":"a,b","x":"Y29y"}"#
        );
        assert_eq!(
            u32::from_be_bytes(buffer[..4].try_into().unwrap()) as usize,
            buffer.len() - 4 + 7
        );
    }

    #[test]
    fn timestamps_are_amps_formatted_utc() {
        assert_eq!(&format_timestamp(0), b"19700101T000000.000000Z");
        // 2026-11-21T22:21:50.394905Z
        assert_eq!(
            &format_timestamp(1_795_299_710_394_905_000),
            b"20261121T222150.394905Z"
        );
        assert_eq!(
            &format_timestamp(951_782_400_000_000_000),
            b"20000229T000000.000000Z"
        );
    }
}
