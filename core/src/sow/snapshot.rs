//! A compact, versioned binary snapshot of one SOW topic, and the text `tachyon sow dump` prints.
//!
//! The storage crate writes the bytes [`snapshot`] produces and hands them back to [`restore`] at
//! recovery; this module never touches a file.
//!
//! ```text
//!  file header                                   record (repeated `record count` times)
//!  offset size field                             offset size field
//!  0      8    magic "TCHYSOW\0"                 0      4    body length B
//!  8      2    format version (1)                4      8    checksum: FNV-1a 64 of the body
//!  10     2    reserved (0)                      12     B    body: the record layout of
//!  12     4    topic length T                                `sow::record` with bytes 0..4
//!  16     8    record count N                                (the slab's capacity word) zero
//!  24     T    topic name (UTF-8)
//! ```
//!
//! All integers are little-endian. Records are written oldest write first, so restoring them in
//! order reproduces the query base order. The checksum catches torn or corrupted records; durable
//! integrity (CRC32C, fsync ordering) belongs to the storage crate.

use std::fmt::Write as _;

use super::config::SowTopicConfig;
use super::record::{self, RecordView};
use super::store::{SowError, SowTopic};
use crate::ids::stable_hash;

/// First bytes of every snapshot.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"TCHYSOW\0";
/// Format version written; restore accepts only this one (`tachyon upgrade` migrates older).
pub const SNAPSHOT_VERSION: u16 = 1;
/// Bytes of the fixed file header (before the topic name).
pub const SNAPSHOT_HEADER_BYTES: usize = 24;
/// Bytes in front of each record body.
pub const SNAPSHOT_RECORD_PREFIX_BYTES: usize = 12;
/// Longest payload shown by the dump before it is cut with `...`.
pub const DUMP_PAYLOAD_BYTES_MAX: usize = 200;

/// Why snapshot bytes could not be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// The bytes do not start with [`SNAPSHOT_MAGIC`].
    #[error("not a SOW snapshot: the first 8 bytes are not TCHYSOW\\0")]
    BadMagic,
    /// A format version this build does not read.
    #[error("SOW snapshot format version {found} is not supported (this build reads {supported}); run tachyon upgrade")]
    UnsupportedVersion {
        /// Version in the file.
        found: u16,
        /// Version this build reads.
        supported: u16,
    },
    /// The bytes end inside a header or record.
    #[error("SOW snapshot is truncated at byte {offset} (record {record} of {count})")]
    Truncated {
        /// Where the missing bytes should be.
        offset: usize,
        /// Record being read (0-based).
        record: u64,
        /// Records the header announced.
        count: u64,
    },
    /// A record's checksum does not match its body.
    #[error("SOW snapshot record {record} at byte {offset} is corrupt: checksum {found:#018x}, expected {expected:#018x}")]
    Checksum {
        /// Record index (0-based).
        record: u64,
        /// Offset of the record prefix.
        offset: usize,
        /// Checksum stored.
        found: u64,
        /// Checksum of the body read.
        expected: u64,
    },
    /// A record body whose lengths do not add up.
    #[error("SOW snapshot record {record} at byte {offset} is malformed")]
    BadRecord {
        /// Record index (0-based).
        record: u64,
        /// Offset of the record prefix.
        offset: usize,
    },
    /// Bytes after the last record.
    #[error("SOW snapshot has {extra} unexpected bytes after its last record")]
    TrailingBytes {
        /// How many.
        extra: usize,
    },
    /// The snapshot belongs to another topic.
    #[error("SOW snapshot is for topic {found:?}, not {expected:?}")]
    TopicMismatch {
        /// The topic being restored.
        expected: String,
        /// The topic in the file.
        found: String,
    },
    /// The store refused a record (for example a slab size lowered below a stored message).
    #[error("SOW snapshot record refused by the store: {0}")]
    Store(#[from] SowError),
}

/// Appends a snapshot of `topic` to `out`.
pub fn snapshot(topic: &SowTopic, out: &mut Vec<u8>) {
    let mut records: Vec<RecordView<'_>> = topic.records().collect();
    sort_oldest_first(&mut records);
    let name = topic.config().topic.as_bytes();
    out.extend_from_slice(&SNAPSHOT_MAGIC);
    out.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(
        &u32::try_from(name.len())
            .expect("topic names are short")
            .to_le_bytes(),
    );
    out.extend_from_slice(&(records.len() as u64).to_le_bytes());
    out.extend_from_slice(name);
    for view in &records {
        let length = view.stored_bytes();
        let prefix = out.len();
        out.resize(prefix + SNAPSHOT_RECORD_PREFIX_BYTES + length, 0);
        let body = &mut out[prefix + SNAPSHOT_RECORD_PREFIX_BYTES..];
        record::encode(body, view);
        let checksum = stable_hash(body);
        out[prefix..prefix + 4].copy_from_slice(&(length as u32).to_le_bytes());
        out[prefix + 4..prefix + 12].copy_from_slice(&checksum.to_le_bytes());
    }
}

fn sort_oldest_first(records: &mut [RecordView<'_>]) {
    records.sort_by(|a, b| {
        (a.timestamp_unix_ns, a.bookmark, a.key.canonical).cmp(&(
            b.timestamp_unix_ns,
            b.bookmark,
            b.key.canonical,
        ))
    });
}

/// A snapshot read back: topic name and records, borrowed from the bytes.
#[derive(Debug, Clone)]
pub struct SnapshotContents<'a> {
    /// The topic the snapshot was taken of.
    pub topic: String,
    /// Its records, oldest write first.
    pub records: Vec<RecordView<'a>>,
}

/// Reads and checks snapshot bytes without building a store (for `sow dump` and restore).
pub fn read(bytes: &[u8]) -> Result<SnapshotContents<'_>, SnapshotError> {
    if bytes.len() < 8 || bytes[..8] != SNAPSHOT_MAGIC {
        return Err(SnapshotError::BadMagic);
    }
    let truncated = |offset: usize, record: u64, count: u64| SnapshotError::Truncated {
        offset,
        record,
        count,
    };
    if bytes.len() < SNAPSHOT_HEADER_BYTES {
        return Err(truncated(bytes.len(), 0, 0));
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if version != SNAPSHOT_VERSION {
        return Err(SnapshotError::UnsupportedVersion {
            found: version,
            supported: SNAPSHOT_VERSION,
        });
    }
    let topic_length = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes")) as usize;
    let count = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"));
    let mut at = SNAPSHOT_HEADER_BYTES;
    let topic = bytes
        .get(at..at + topic_length)
        .ok_or_else(|| truncated(bytes.len(), 0, count))?;
    at += topic_length;
    let mut records = Vec::new();
    for index in 0..count {
        let prefix = bytes
            .get(at..at + SNAPSHOT_RECORD_PREFIX_BYTES)
            .ok_or_else(|| truncated(at, index, count))?;
        let length = u32::from_le_bytes(prefix[..4].try_into().expect("4 bytes")) as usize;
        let stored = u64::from_le_bytes(prefix[4..].try_into().expect("8 bytes"));
        let start = at + SNAPSHOT_RECORD_PREFIX_BYTES;
        let body = bytes
            .get(start..start + length)
            .ok_or_else(|| truncated(start, index, count))?;
        let expected = stable_hash(body);
        if stored != expected {
            return Err(SnapshotError::Checksum {
                record: index,
                offset: at,
                found: stored,
                expected,
            });
        }
        let view = record::decode(body).map_err(|_| SnapshotError::BadRecord {
            record: index,
            offset: at,
        })?;
        if view.stored_bytes() != length {
            return Err(SnapshotError::BadRecord {
                record: index,
                offset: at,
            });
        }
        records.push(view);
        at = start + length;
    }
    if at != bytes.len() {
        return Err(SnapshotError::TrailingBytes {
            extra: bytes.len() - at,
        });
    }
    Ok(SnapshotContents {
        topic: String::from_utf8_lossy(topic).into_owned(),
        records,
    })
}

/// Builds a topic from its configuration and a snapshot of it.
pub fn restore(config: SowTopicConfig, bytes: &[u8]) -> Result<SowTopic, SnapshotError> {
    let contents = read(bytes)?;
    if contents.topic != config.topic {
        return Err(SnapshotError::TopicMismatch {
            expected: config.topic,
            found: contents.topic,
        });
    }
    let mut topic = SowTopic::new(config)?;
    for view in &contents.records {
        topic.restore_record(view)?;
    }
    Ok(topic)
}

/// Appends one text line per record: `key=<k> bm=<publisher|sequence|> size=<bytes> payload=<data>`
/// (payload lossily decoded, cut at [`DUMP_PAYLOAD_BYTES_MAX`]).
pub fn dump_records(records: &[RecordView<'_>], out: &mut String) {
    for view in records {
        let mut bookmark = Vec::new();
        if view.bookmark.is_present() {
            view.bookmark.write_text(&mut bookmark);
        } else {
            bookmark.push(b'-');
        }
        let shown = &view.payload[..view.payload.len().min(DUMP_PAYLOAD_BYTES_MAX)];
        let ellipsis = if shown.len() < view.payload.len() {
            "..."
        } else {
            ""
        };
        writeln!(
            out,
            "key={} bm={} size={} payload={}{ellipsis}",
            view.key.wire(),
            String::from_utf8_lossy(&bookmark),
            view.payload.len(),
            String::from_utf8_lossy(shown),
        )
        .expect("writing to a String cannot fail");
    }
}

/// Appends a summary line (records, slab usage) and the records of a live topic.
pub fn dump_topic(topic: &SowTopic, out: &mut String) {
    let stats = topic.stats();
    writeln!(
        out,
        "# topic {}: {} records, {} slabs of {} bytes ({} dedicated), {} bytes used, {} bytes free",
        topic.config().topic,
        stats.records,
        stats.slabs,
        topic.config().slab_size_bytes,
        stats.dedicated_slabs,
        stats.bytes_used,
        stats.bytes_free
    )
    .expect("writing to a String cannot fail");
    let mut records: Vec<RecordView<'_>> = topic.records().collect();
    sort_oldest_first(&mut records);
    dump_records(&records, out);
}
