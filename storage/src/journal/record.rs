//! The journal record codec: one record to and from bytes, with its CRC32C.
//!
//! Owns the byte layout of a record and nothing else: it never does I/O, never decides where a
//! record goes in a file, and never allocates (encoding writes into a caller's slice, decoding
//! borrows from the caller's bytes).
//!
//! # Record layout (little-endian)
//!
//! | offset | size | field                | meaning                                                        |
//! | -----: | ---: | -------------------- | -------------------------------------------------------------- |
//! |      0 |    4 | `record_length`      | bytes of the whole record, this header included (≥ 64)         |
//! |      4 |    4 | `crc32c`             | CRC32C (Castagnoli) of bytes `[0, 4)` followed by `[8, length)` |
//! |      8 |    1 | `kind`               | [`RecordKind`] as a stable number                               |
//! |      9 |    1 | `flags`              | 0 in format version 1                                          |
//! |     10 |    2 | `topic_length`       | bytes of the topic                                             |
//! |     12 |    4 | `headers_length`     | bytes of the opaque headers                                    |
//! |     16 |    4 | `payload_length`     | bytes of the payload                                           |
//! |     20 |    4 | `reserved`           | 0 in format version 1                                          |
//! |     24 |    8 | `epoch`              | bookmark epoch: the journal generation that wrote the record   |
//! |     32 |    8 | `sequence`           | bookmark sequence: 1, 2, 3, … with no gap across the journal   |
//! |     40 |    8 | `timestamp_ns`       | publish time, nanoseconds since the Unix epoch                 |
//! |     48 |    8 | `client_name_hash`   | publisher: hash of the client name                             |
//! |     56 |    8 | `client_sequence`    | publisher: the client's own sequence number (`s`)              |
//! |     64 |    t | `topic`              | `topic_length` bytes                                           |
//! |   64+t |    h | `headers`            | `headers_length` bytes (correlation id, SOW key, …)            |
//! | 64+t+h |    p | `payload`            | `payload_length` bytes                                         |
//!
//! A record is valid only if `record_length == 64 + t + h + p`, flags and reserved are zero, the
//! kind is known and the CRC matches. The CRC covers the length field too, so a flipped length bit
//! is caught by the length-sum check or by the CRC. A `record_length` of 0 means "no more records
//! here" (segment files are pre-zeroed).

use thiserror::Error;

/// Bytes of the fixed record header that precedes topic, headers and payload.
pub const RECORD_HEADER_BYTES: usize = 64;
/// Largest topic a record can carry (the length field is 16 bits).
pub const TOPIC_BYTES_MAX: usize = u16::MAX as usize;

const OFFSET_LENGTH: usize = 0;
const OFFSET_CRC: usize = 4;
const OFFSET_KIND: usize = 8;
const OFFSET_FLAGS: usize = 9;
const OFFSET_TOPIC_LENGTH: usize = 10;
const OFFSET_HEADERS_LENGTH: usize = 12;
const OFFSET_PAYLOAD_LENGTH: usize = 16;
const OFFSET_RESERVED: usize = 20;
const OFFSET_EPOCH: usize = 24;
const OFFSET_SEQUENCE: usize = 32;
const OFFSET_TIMESTAMP: usize = 40;
const OFFSET_CLIENT_NAME_HASH: usize = 48;
const OFFSET_CLIENT_SEQUENCE: usize = 56;

/// A journal sequence number: 1 for the first record ever written, then +1 per record.
pub type Sequence = u64;

/// Where a record sits in the history: the journal generation and its sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bookmark {
    /// The journal generation (incremented each time the journal is opened) that wrote it.
    pub epoch: u64,
    /// The record's sequence number.
    pub sequence: Sequence,
}

/// What a record means to the server; the numbers are stable on disk and never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RecordKind {
    /// A published message.
    Publish = 1,
    /// A delta publish (merged into the SOW record).
    DeltaPublish = 2,
    /// A SOW delete (by key or filter, carried in headers/payload).
    SowDelete = 3,
}

impl RecordKind {
    /// The kind for a stored number, if it is one this format knows.
    pub fn from_u8(value: u8) -> Option<RecordKind> {
        match value {
            1 => Some(RecordKind::Publish),
            2 => Some(RecordKind::DeltaPublish),
            3 => Some(RecordKind::SowDelete),
            _ => None,
        }
    }
}

/// Who published a record: the client-name hash and the client's own sequence number.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Publisher {
    /// Hash of the publishing client's name (0 = not a guaranteed publisher).
    pub client_name_hash: u64,
    /// The sequence number the client gave the message (`s`), 0 if none.
    pub client_sequence: u64,
}

/// A record's content, as appended (the journal assigns the bookmark).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// What the record means.
    pub kind: RecordKind,
    /// Publish time in nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
    /// The topic.
    pub topic: &'a [u8],
    /// Who published it.
    pub publisher: Publisher,
    /// Opaque headers the server needs on replay (correlation id, SOW key, …).
    pub headers: &'a [u8],
    /// The message body.
    pub payload: &'a [u8],
}

/// A decoded record borrowed from a read buffer: its bookmark and its content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordView<'a> {
    /// Where it sits in the history.
    pub bookmark: Bookmark,
    /// What it says.
    pub record: Record<'a>,
}

/// Why bytes are not a valid record.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// A zero length field: nothing was written here (pre-zeroed space).
    #[error("no record (zero length field)")]
    End,
    /// Fewer bytes are available than the header or the length field says.
    #[error("truncated record: needs {needed} bytes, {available} available")]
    Truncated {
        /// Bytes the record needs.
        needed: usize,
        /// Bytes that were there.
        available: usize,
    },
    /// The length field is below the header size or above the limit.
    #[error("implausible record length {length} (allowed {min}..={max})")]
    BadLength {
        /// The stored length.
        length: usize,
        /// Smallest valid length.
        min: usize,
        /// Largest valid length here.
        max: usize,
    },
    /// The length field does not equal the header plus the field lengths.
    #[error("record length {length} does not match its fields ({fields} bytes)")]
    LengthMismatch {
        /// The stored length.
        length: usize,
        /// Header plus topic, headers and payload lengths.
        fields: usize,
    },
    /// The stored CRC does not match the bytes.
    #[error("CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BadCrc {
        /// The CRC in the record.
        stored: u32,
        /// The CRC of the bytes.
        computed: u32,
    },
    /// The kind byte is not one this format knows.
    #[error("unknown record kind {0}")]
    UnknownKind(u8),
    /// Flags or reserved bytes are not zero.
    #[error("non-zero reserved bytes (flags {flags}, reserved {reserved})")]
    Reserved {
        /// The flags byte.
        flags: u8,
        /// The reserved word.
        reserved: u32,
    },
}

/// Bytes the encoded record takes (header plus variable parts).
pub fn encoded_len(record: &Record<'_>) -> usize {
    RECORD_HEADER_BYTES + record.topic.len() + record.headers.len() + record.payload.len()
}

/// Encodes `record` with `bookmark` into the start of `out`, which must hold [`encoded_len`] bytes.
pub fn encode(record: &Record<'_>, bookmark: Bookmark, out: &mut [u8]) -> usize {
    let length = encoded_len(record);
    assert!(
        out.len() >= length,
        "encode buffer {} < record {length}",
        out.len()
    );
    assert!(
        record.topic.len() <= TOPIC_BYTES_MAX,
        "topic of {} bytes",
        record.topic.len()
    );
    assert!(length <= u32::MAX as usize);
    let out = &mut out[..length];
    put_u32(out, OFFSET_LENGTH, length as u32);
    out[OFFSET_KIND] = record.kind as u8;
    out[OFFSET_FLAGS] = 0;
    put_u16(out, OFFSET_TOPIC_LENGTH, record.topic.len() as u16);
    put_u32(out, OFFSET_HEADERS_LENGTH, record.headers.len() as u32);
    put_u32(out, OFFSET_PAYLOAD_LENGTH, record.payload.len() as u32);
    put_u32(out, OFFSET_RESERVED, 0);
    put_u64(out, OFFSET_EPOCH, bookmark.epoch);
    put_u64(out, OFFSET_SEQUENCE, bookmark.sequence);
    put_u64(out, OFFSET_TIMESTAMP, record.timestamp_ns);
    put_u64(
        out,
        OFFSET_CLIENT_NAME_HASH,
        record.publisher.client_name_hash,
    );
    put_u64(
        out,
        OFFSET_CLIENT_SEQUENCE,
        record.publisher.client_sequence,
    );
    let topic_end = RECORD_HEADER_BYTES + record.topic.len();
    let headers_end = topic_end + record.headers.len();
    out[RECORD_HEADER_BYTES..topic_end].copy_from_slice(record.topic);
    out[topic_end..headers_end].copy_from_slice(record.headers);
    out[headers_end..].copy_from_slice(record.payload);
    let crc = record_crc(out);
    put_u32(out, OFFSET_CRC, crc);
    length
}

/// Decodes the record at the start of `bytes` (which may continue past it), allowing lengths up to
/// `length_max` bytes.
pub fn decode(bytes: &[u8], length_max: usize) -> Result<RecordView<'_>, DecodeError> {
    if bytes.len() < 4 {
        return Err(DecodeError::Truncated {
            needed: 4,
            available: bytes.len(),
        });
    }
    let length = get_u32(bytes, OFFSET_LENGTH) as usize;
    if length == 0 {
        return Err(DecodeError::End);
    }
    if length < RECORD_HEADER_BYTES || length > length_max {
        return Err(DecodeError::BadLength {
            length,
            min: RECORD_HEADER_BYTES,
            max: length_max,
        });
    }
    if bytes.len() < length {
        return Err(DecodeError::Truncated {
            needed: length,
            available: bytes.len(),
        });
    }
    let bytes = &bytes[..length];
    let topic_length = get_u16(bytes, OFFSET_TOPIC_LENGTH) as usize;
    let headers_length = get_u32(bytes, OFFSET_HEADERS_LENGTH) as usize;
    let payload_length = get_u32(bytes, OFFSET_PAYLOAD_LENGTH) as usize;
    let fields = RECORD_HEADER_BYTES + topic_length + headers_length + payload_length;
    if fields != length {
        return Err(DecodeError::LengthMismatch { length, fields });
    }
    let stored = get_u32(bytes, OFFSET_CRC);
    let computed = record_crc(bytes);
    if stored != computed {
        return Err(DecodeError::BadCrc { stored, computed });
    }
    let flags = bytes[OFFSET_FLAGS];
    let reserved = get_u32(bytes, OFFSET_RESERVED);
    if flags != 0 || reserved != 0 {
        return Err(DecodeError::Reserved { flags, reserved });
    }
    let kind = RecordKind::from_u8(bytes[OFFSET_KIND])
        .ok_or(DecodeError::UnknownKind(bytes[OFFSET_KIND]))?;
    let topic_end = RECORD_HEADER_BYTES + topic_length;
    let headers_end = topic_end + headers_length;
    Ok(RecordView {
        bookmark: Bookmark {
            epoch: get_u64(bytes, OFFSET_EPOCH),
            sequence: get_u64(bytes, OFFSET_SEQUENCE),
        },
        record: Record {
            kind,
            timestamp_ns: get_u64(bytes, OFFSET_TIMESTAMP),
            topic: &bytes[RECORD_HEADER_BYTES..topic_end],
            publisher: Publisher {
                client_name_hash: get_u64(bytes, OFFSET_CLIENT_NAME_HASH),
                client_sequence: get_u64(bytes, OFFSET_CLIENT_SEQUENCE),
            },
            headers: &bytes[topic_end..headers_end],
            payload: &bytes[headers_end..],
        },
    })
}

/// The length field of the record at the start of `bytes`, without validating anything else.
pub(crate) fn peek_length(bytes: &[u8]) -> Option<usize> {
    (bytes.len() >= 4).then(|| get_u32(bytes, OFFSET_LENGTH) as usize)
}

/// Which CRC32C implementation this CPU uses (the `crc32c` crate picks it once at start-up).
pub fn crc32c_implementation() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("sse4.2") {
            return "sse4.2";
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if std::arch::is_aarch64_feature_detected!("crc") {
            return "aarch64-crc";
        }
    }
    "software"
}

fn record_crc(record: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&record[OFFSET_LENGTH..OFFSET_CRC]);
    crc32c::crc32c_append(crc, &record[OFFSET_KIND..])
}

fn put_u16(out: &mut [u8], offset: usize, value: u16) {
    out[offset..offset + 2].copy_from_slice(&value.to_le_bytes());
}
fn put_u32(out: &mut [u8], offset: usize, value: u32) {
    out[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
}
fn put_u64(out: &mut [u8], offset: usize, value: u64) {
    out[offset..offset + 8].copy_from_slice(&value.to_le_bytes());
}
pub(crate) fn get_u16(bytes: &[u8], offset: usize) -> u16 {
    u16::from_le_bytes(bytes[offset..offset + 2].try_into().expect("2 bytes"))
}
pub(crate) fn get_u32(bytes: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes(bytes[offset..offset + 4].try_into().expect("4 bytes"))
}
pub(crate) fn get_u64(bytes: &[u8], offset: usize) -> u64 {
    u64::from_le_bytes(bytes[offset..offset + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample<'a>(topic: &'a [u8], headers: &'a [u8], payload: &'a [u8]) -> Record<'a> {
        Record {
            kind: RecordKind::Publish,
            timestamp_ns: 1_700_000_000_123_456_789,
            topic,
            publisher: Publisher {
                client_name_hash: 0xdead_beef_cafe_f00d,
                client_sequence: 42,
            },
            headers,
            payload,
        }
    }

    #[test]
    fn crc32c_matches_the_known_answer_vectors() {
        // RFC 3720 appendix B.4 and the classic "123456789" check value.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(crc32c::crc32c(&[0u8; 32]), 0x8a91_36aa);
        assert_eq!(crc32c::crc32c(&[0xffu8; 32]), 0x62a8_ab43);
    }

    #[test]
    fn a_zero_length_field_is_the_end_and_short_input_is_truncated() {
        assert_eq!(decode(&[0u8; 128], 1 << 20), Err(DecodeError::End));
        let mut out = [0u8; 256];
        let length = encode(
            &sample(b"t", b"", b"abc"),
            Bookmark {
                epoch: 1,
                sequence: 1,
            },
            &mut out,
        );
        assert!(matches!(
            decode(&out[..length - 1], 1 << 20),
            Err(DecodeError::Truncated { .. })
        ));
        assert!(matches!(
            decode(&out, length - 1),
            Err(DecodeError::BadLength { .. })
        ));
    }

    proptest! {
        #[test]
        fn encode_then_decode_gives_the_record_back(
            topic in proptest::collection::vec(any::<u8>(), 0..64),
            headers in proptest::collection::vec(any::<u8>(), 0..64),
            payload in proptest::collection::vec(any::<u8>(), 0..512),
            epoch in any::<u64>(), sequence in any::<u64>(), kind in 1u8..=3,
        ) {
            let mut record = sample(&topic, &headers, &payload);
            record.kind = RecordKind::from_u8(kind).unwrap();
            let bookmark = Bookmark { epoch, sequence };
            let mut out = vec![0u8; encoded_len(&record) + 16];
            let length = encode(&record, bookmark, &mut out);
            prop_assert_eq!(length, encoded_len(&record));
            let view = decode(&out, 1 << 20).unwrap();
            prop_assert_eq!(view, RecordView { bookmark, record });
        }

        #[test]
        fn every_single_bit_flip_is_detected(
            payload in proptest::collection::vec(any::<u8>(), 0..200),
            bit_seed in any::<usize>(),
        ) {
            let record = sample(b"orders", b"cid=7", &payload);
            let mut out = vec![0u8; encoded_len(&record)];
            encode(&record, Bookmark { epoch: 3, sequence: 99 }, &mut out);
            let bit = bit_seed % (out.len() * 8);
            out[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(decode(&out, 1 << 20).is_err(), "flip of bit {} went undetected", bit);
        }
    }

    #[test]
    fn every_single_bit_flip_is_detected_exhaustively_on_one_record() {
        let record = sample(b"orders", b"cid=7", b"{\"price\":101.5}");
        let mut clean = vec![0u8; encoded_len(&record)];
        encode(
            &record,
            Bookmark {
                epoch: 1,
                sequence: 7,
            },
            &mut clean,
        );
        for bit in 0..clean.len() * 8 {
            let mut flipped = clean.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(decode(&flipped, 1 << 20).is_err(), "bit {bit}");
        }
    }
}
