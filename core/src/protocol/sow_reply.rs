//! The SOW frames the server sends: query groups, batched `sow` record frames, `oof` messages
//! and the stats acks of queries and deletes.
//!
//! A `sow` frame is the one multi-message frame of the protocol (§7 of the protocol reference):
//!
//! ```text
//!  N (BE) {"c":"sow","t":..,"query_id":..,"bs":2}{"k":..,"l":L1,"bm":..}<L1 bytes>{"k":..,"l":L2,"bm":..}<L2 bytes>
//! ```
//!
//! The C client does not reset per-record fields between the records of one frame, so a `bm` or
//! `x` present on one record would leak into the next that lacks it. The writer therefore puts
//! records into one frame only when they carry the same optional fields, and writes every field
//! of every record. `l` is always written. Keys are written escaped; topic, query id and
//! correlation id are echoed as received (like the other reply writers). Nothing here does I/O.

use super::reply::format_timestamp;
use super::writer::{FrameWriter, HeaderWriter};
use super::AckType;
use crate::ids::SubId;
use crate::session::AckTarget;
use crate::sow::{OofReason, RecordView};

/// Records per `sow` frame when a `sow` query names no batch size (the Python client's default).
pub const SOW_BATCH_SIZE_DEFAULT: usize = 10;
/// Records per `sow` frame for `sow_and_subscribe` without a batch size.
pub const SOW_AND_SUBSCRIBE_BATCH_SIZE_DEFAULT: usize = 1;
/// Most records per frame whatever the client asks (bounds one frame's size).
pub const SOW_BATCH_SIZE_MAX: usize = 10_000;

/// The batch size to use: the requested one (0 counts as absent) clamped to
/// [`SOW_BATCH_SIZE_MAX`], else the command's default.
pub fn batch_size(requested: Option<u64>, and_subscribe: bool) -> usize {
    match requested {
        Some(size) if size > 0 => usize::try_from(size)
            .unwrap_or(usize::MAX)
            .min(SOW_BATCH_SIZE_MAX),
        _ if and_subscribe => SOW_AND_SUBSCRIBE_BATCH_SIZE_DEFAULT,
        _ => SOW_BATCH_SIZE_DEFAULT,
    }
}

/// How records are written.
#[derive(Debug, Clone, Copy, Default)]
pub struct SowRecordOptions {
    /// Add `ts` (the subscription or query asked for `timestamp`).
    pub timestamp: bool,
}

fn write_group(buffer: &mut Vec<u8>, command: &[u8], query_id: &[u8]) {
    let mut frame = FrameWriter::new(buffer);
    let mut header = frame.header();
    header.string("c", command).raw_string("query_id", query_id);
    header.finish();
    frame.finish(0);
}

/// Appends `{"c":"group_begin","query_id":..}`, sent before a query's records.
pub fn write_group_begin(buffer: &mut Vec<u8>, query_id: &[u8]) {
    write_group(buffer, b"group_begin", query_id);
}

/// Appends `{"c":"group_end","query_id":..}`, sent after a query's last record.
pub fn write_group_end(buffer: &mut Vec<u8>, query_id: &[u8]) {
    write_group(buffer, b"group_end", query_id);
}

/// Which optional per-record fields a record carries; records in one frame must agree.
fn optional_fields(record: &RecordView<'_>) -> (bool, bool) {
    (
        record.bookmark.is_present(),
        record.correlation_id.is_some(),
    )
}

/// Appends one `sow` frame holding exactly `records` (all with the same optional fields).
pub fn write_sow_frame(
    buffer: &mut Vec<u8>,
    topic: &[u8],
    query_id: &[u8],
    records: &[RecordView<'_>],
    options: SowRecordOptions,
) {
    assert!(
        !records.is_empty(),
        "a sow frame carries at least one record"
    );
    let fields = optional_fields(&records[0]);
    assert!(
        records
            .iter()
            .all(|record| optional_fields(record) == fields),
        "records of one sow frame must carry the same optional fields (the client inherits them)"
    );
    let mut frame = FrameWriter::new(buffer);
    let mut header = frame.header();
    header
        .string("c", b"sow")
        .raw_string("t", topic)
        .raw_string("query_id", query_id);
    header.number("bs", records.len() as u64);
    header.finish();
    let mut bookmark = Vec::with_capacity(48);
    for record in records {
        let mut header = frame.header();
        header.string("k", record.key.wire().as_bytes());
        header.number("l", record.payload.len() as u64);
        if record.bookmark.is_present() {
            bookmark.clear();
            record.bookmark.write_text(&mut bookmark);
            header.string("bm", &bookmark);
        }
        if let Some(correlation_id) = record.correlation_id {
            header.raw_string("x", correlation_id);
        }
        if options.timestamp {
            header.string("ts", &format_timestamp(record.timestamp_unix_ns));
        }
        header.finish();
        frame.payload(record.payload);
    }
    frame.finish(0);
}

/// Appends the `sow` frames of a query result: at most `batch_size` records per frame, a new
/// frame whenever the optional fields change. Returns the number of frames written.
pub fn write_sow_batches(
    buffer: &mut Vec<u8>,
    topic: &[u8],
    query_id: &[u8],
    records: &[RecordView<'_>],
    batch_size: usize,
    options: SowRecordOptions,
) -> usize {
    assert!(batch_size > 0, "batch size is at least 1");
    let mut frames = 0;
    let mut rest = records;
    while let Some(first) = rest.first() {
        let fields = optional_fields(first);
        let length = rest
            .iter()
            .take(batch_size)
            .position(|record| optional_fields(record) != fields)
            .unwrap_or(rest.len().min(batch_size));
        write_sow_frame(buffer, topic, query_id, &rest[..length], options);
        frames += 1;
        rest = &rest[length..];
    }
    frames
}

/// Appends an `oof` frame with the record's data: `{"c":"oof","t":..,"sids":..,"bm":..,"k":..,
/// "reason":..}<data>` (`match`: the new data; `deleted`/`expired`: the data removed).
pub fn write_oof(
    buffer: &mut Vec<u8>,
    topic: &[u8],
    sub_ids: &[SubId],
    record: &RecordView<'_>,
    reason: OofReason,
    options: SowRecordOptions,
) {
    let mut frame = FrameWriter::new(buffer);
    let mut header = frame.header();
    header.string("c", b"oof").raw_string("t", topic);
    header.string_list("sids", sub_ids.iter().map(SubId::as_bytes));
    if record.bookmark.is_present() {
        let mut bookmark = Vec::with_capacity(48);
        record.bookmark.write_text(&mut bookmark);
        header.string("bm", &bookmark);
    }
    header.string("k", record.key.wire().as_bytes());
    if let Some(correlation_id) = record.correlation_id {
        header.raw_string("x", correlation_id);
    }
    if options.timestamp {
        header.string("ts", &format_timestamp(record.timestamp_unix_ns));
    }
    header.string("reason", reason.as_str().as_bytes());
    header.finish();
    frame.payload(record.payload);
    frame.finish(0);
}

/// The counters of a SOW stats ack; absent ones are not written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SowAckStats {
    /// Records sent (`records_returned`).
    pub records_returned: Option<u64>,
    /// Records that matched (`matches`).
    pub matches: Option<u64>,
    /// Records that matched in the topic (`topic_matches`).
    pub topic_matches: Option<u64>,
    /// Records removed (`records_deleted`).
    pub records_deleted: Option<u64>,
    /// Records created (`records_inserted`).
    pub records_inserted: Option<u64>,
    /// Records replaced (`records_updated`).
    pub records_updated: Option<u64>,
}

impl SowAckStats {
    /// The counters of a query: returned, matches, topic matches.
    pub fn query(records_returned: usize, matches: usize) -> SowAckStats {
        SowAckStats {
            records_returned: Some(records_returned as u64),
            matches: Some(matches as u64),
            topic_matches: Some(matches as u64),
            ..SowAckStats::default()
        }
    }

    /// The counters of a delete: deleted, matches.
    pub fn delete(records_deleted: usize, matches: usize) -> SowAckStats {
        SowAckStats {
            records_deleted: Some(records_deleted as u64),
            matches: Some(matches as u64),
            ..SowAckStats::default()
        }
    }

    fn write(&self, header: &mut HeaderWriter<'_>) {
        let fields = [
            ("records_returned", self.records_returned),
            ("records_deleted", self.records_deleted),
            ("matches", self.matches),
            ("topic_matches", self.topic_matches),
            ("records_inserted", self.records_inserted),
            ("records_updated", self.records_updated),
        ];
        for (name, value) in fields {
            if let Some(value) = value {
                header.number(name, value);
            }
        }
    }
}

/// Appends a successful ack of type `ack` (`processed` or `stats` for a `sow_delete`, `stats` or
/// `completed` for a query) carrying the SOW counters.
pub fn write_stats_ack(
    buffer: &mut Vec<u8>,
    ack: AckType,
    target: &AckTarget<'_>,
    stats: &SowAckStats,
) {
    let mut frame = FrameWriter::new(buffer);
    let mut header = frame.header();
    header
        .string("c", b"ack")
        .string("a", ack.as_str().as_bytes());
    if let Some(command_id) = target.command_id {
        header.raw_string("cid", command_id);
    }
    if let Some(sub_id) = target.sub_id {
        header.raw_string("sub_id", sub_id);
    }
    if let Some(query_id) = target.query_id {
        header.raw_string("query_id", query_id);
    }
    header.string("status", b"success");
    stats.write(&mut header);
    header.finish();
    frame.finish(0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::keys::Key;
    use crate::protocol::{parse_header, AckTypes};
    use crate::sow::{Bookmark, SowKey};

    /// One parsed `sow` frame: outer `bs` and, per record, (k, bm, x, data).
    type Parsed = (u64, Vec<(String, Option<String>, Option<String>, String)>);

    fn parse_sow_frames(mut bytes: &[u8]) -> Vec<Parsed> {
        let mut frames = Vec::new();
        while !bytes.is_empty() {
            let length = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
            let frame = &bytes[4..4 + length];
            bytes = &bytes[4 + length..];
            let outer = parse_header(frame).unwrap();
            assert_eq!(outer.bytes(Key::Command), Some(&b"sow"[..]));
            assert_eq!(outer.bytes(Key::QueryId), Some(&b"q1"[..]));
            let batch = outer.get(Key::BatchSize).unwrap().as_u64().unwrap();
            let mut rest = &frame[outer.payload_offset..];
            let mut records = Vec::new();
            let text = |value: Option<&[u8]>| value.map(|v| String::from_utf8(v.to_vec()).unwrap());
            while !rest.is_empty() {
                let header = parse_header(rest).unwrap();
                let data_length =
                    header.get(Key::MessageLength).unwrap().as_u64().unwrap() as usize;
                let data = &rest[header.payload_offset..header.payload_offset + data_length];
                records.push((
                    text(header.bytes(Key::SowKey)).unwrap(),
                    text(header.bytes(Key::Bookmark)),
                    text(header.bytes(Key::CorrelationId)),
                    String::from_utf8(data.to_vec()).unwrap(),
                ));
                rest = &rest[header.payload_offset + data_length..];
            }
            assert_eq!(
                batch as usize,
                records.len(),
                "bs counts the records of its frame"
            );
            frames.push((batch, records));
        }
        frames
    }

    fn record<'a>(
        key: &'a SowKey,
        payload: &'a [u8],
        sequence: u64,
        correlation: Option<&'a [u8]>,
    ) -> RecordView<'a> {
        RecordView {
            key: key.as_ref(),
            payload,
            bookmark: Bookmark {
                publisher_id: if sequence == 0 { 0 } else { 77 },
                sequence,
            },
            timestamp_unix_ns: 1_795_299_710_394_905_000,
            correlation_id: correlation,
            expiration_unix_ns: None,
        }
    }

    #[test]
    fn batch_sizes_default_per_command_and_are_capped() {
        assert_eq!(batch_size(None, false), SOW_BATCH_SIZE_DEFAULT);
        assert_eq!(batch_size(None, true), SOW_AND_SUBSCRIBE_BATCH_SIZE_DEFAULT);
        assert_eq!(batch_size(Some(0), false), SOW_BATCH_SIZE_DEFAULT);
        assert_eq!(batch_size(Some(3), true), 3);
        assert_eq!(batch_size(Some(u64::MAX), false), SOW_BATCH_SIZE_MAX);
    }

    #[test]
    fn groups_carry_the_query_id() {
        let mut buffer = Vec::new();
        write_group_begin(&mut buffer, b"q1");
        assert_eq!(&buffer[4..], br#"{"c":"group_begin","query_id":"q1"}"#);
        buffer.clear();
        write_group_end(&mut buffer, b"q1");
        assert_eq!(&buffer[4..], br#"{"c":"group_end","query_id":"q1"}"#);
        assert_eq!(
            u32::from_be_bytes(buffer[..4].try_into().unwrap()) as usize,
            buffer.len() - 4
        );
    }

    #[test]
    fn sow_frames_batch_records_with_their_lengths() {
        let keys: Vec<SowKey> = (0..5)
            .map(|i| SowKey::explicit(format!("key{i}").as_bytes()))
            .collect();
        let payloads: Vec<String> = (0..5)
            .map(|i| format!(r#"{{"id":{i},"pad":"{}"}}"#, "x".repeat(i * 7)))
            .collect();
        let records: Vec<RecordView<'_>> = (0..5)
            .map(|i| record(&keys[i], payloads[i].as_bytes(), i as u64 + 1, None))
            .collect();
        let mut buffer = Vec::new();
        let frames = write_sow_batches(
            &mut buffer,
            b"orders",
            b"q1",
            &records,
            2,
            SowRecordOptions::default(),
        );
        assert_eq!(frames, 3);
        let parsed = parse_sow_frames(&buffer);
        assert_eq!(parsed.iter().map(|f| f.0).collect::<Vec<_>>(), [2, 2, 1]);
        let flat: Vec<_> = parsed.into_iter().flat_map(|f| f.1).collect();
        for (i, (key, bookmark, correlation, data)) in flat.iter().enumerate() {
            assert_eq!(key, &format!("key{i}"));
            assert_eq!(bookmark.as_deref(), Some(format!("77|{}|", i + 1).as_str()));
            assert_eq!(correlation, &None);
            assert_eq!(data, &payloads[i]);
        }
        let start = &buffer[4..];
        assert!(start
            .starts_with(br#"{"c":"sow","t":"orders","query_id":"q1","bs":2}{"k":"key0","l":"#));
    }

    #[test]
    fn records_with_different_optional_fields_go_to_separate_frames() {
        let keys: Vec<SowKey> = (0..4)
            .map(|i| SowKey::explicit(format!("k{i}").as_bytes()))
            .collect();
        let records = [
            record(&keys[0], b"{}", 1, Some(b"Y29y")),
            record(&keys[1], b"{\"a\":1}", 0, None),
            record(&keys[2], b"{}", 0, None),
            record(&keys[3], b"", 4, None),
        ];
        let mut buffer = Vec::new();
        let options = SowRecordOptions { timestamp: true };
        assert_eq!(
            write_sow_batches(&mut buffer, b"orders", b"q1", &records, 10, options),
            3
        );
        let parsed = parse_sow_frames(&buffer);
        assert_eq!(parsed.iter().map(|f| f.0).collect::<Vec<_>>(), [1, 2, 1]);
        assert_eq!(parsed[0].1[0].2.as_deref(), Some("Y29y"));
        assert_eq!(parsed[1].1[1], ("k2".into(), None, None, "{}".into()));
        assert_eq!(parsed[2].1[0].3, "", "an empty record has l=0");
        assert!(buffer
            .windows(30)
            .any(|w| w == br#""ts":"20261121T222150.394905Z""#));
    }

    #[test]
    fn field_keys_are_sent_as_decimal_hashes() {
        let key = SowKey {
            hash: 2_689_666_918_646_513,
            kind: crate::sow::KeyKind::Fields,
            canonical: Box::new([]),
        };
        let mut buffer = Vec::new();
        write_sow_frame(
            &mut buffer,
            b"t",
            b"q1",
            &[record(&key, b"{}", 0, None)],
            SowRecordOptions::default(),
        );
        assert_eq!(parse_sow_frames(&buffer)[0].1[0].0, "2689666918646513");
    }

    #[test]
    fn oof_frames_name_the_reason_and_carry_data() {
        let key = SowKey::explicit(b"k1");
        let ids = [SubId::new(b"s1"), SubId::new(b"s2")];
        let mut buffer = Vec::new();
        let view = record(&key, br#"{"qty":1}"#, 3, None);
        write_oof(
            &mut buffer,
            b"orders",
            &ids,
            &view,
            OofReason::Match,
            SowRecordOptions::default(),
        );
        assert_eq!(
            &buffer[4..],
            br#"{"c":"oof","t":"orders","sids":"s1,s2","bm":"77|3|","k":"k1","reason":"match"}{"qty":1}"#
        );
        let header = parse_header(&buffer[4..]).unwrap();
        assert_eq!(header.bytes(Key::SubIds), Some(&b"s1,s2"[..]));
        assert_eq!(
            u32::from_be_bytes(buffer[..4].try_into().unwrap()) as usize,
            buffer.len() - 4
        );
    }

    #[test]
    fn sow_deliveries_carry_the_key() {
        let mut buffer = Vec::new();
        let ids = [SubId::new(b"s1")];
        super::super::reply::write_delivery_header(
            &mut buffer,
            b"orders",
            &ids,
            None,
            Some(b"42"),
            None,
            None,
            2,
        );
        buffer.extend_from_slice(b"{}");
        assert_eq!(
            &buffer[4..],
            br#"{"c":"p","t":"orders","sids":"s1","k":"42"}{}"#
        );
        assert_eq!(
            u32::from_be_bytes(buffer[..4].try_into().unwrap()) as usize,
            buffer.len() - 4
        );
    }

    #[test]
    fn stats_acks_carry_counters() {
        let target = AckTarget {
            command: None,
            command_id: Some(b"7"),
            sub_id: Some(b"7"),
            query_id: Some(b"7"),
            acks: AckTypes::NONE,
        };
        let mut buffer = Vec::new();
        write_stats_ack(
            &mut buffer,
            AckType::Stats,
            &target,
            &SowAckStats::delete(1, 1),
        );
        assert_eq!(
            &buffer[4..],
            br#"{"c":"ack","a":"stats","cid":"7","sub_id":"7","query_id":"7","status":"success","records_deleted":1,"matches":1}"#
        );
        buffer.clear();
        write_stats_ack(
            &mut buffer,
            AckType::Stats,
            &target,
            &SowAckStats::query(5, 6),
        );
        assert!(buffer.ends_with(
            br#""status":"success","records_returned":5,"matches":6,"topic_matches":6}"#
        ));
    }
}
