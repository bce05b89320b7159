//! One SOW record: its byte layout inside a slab block and the borrowed view the rest of the
//! server reads.
//!
//! ```text
//!  offset size field                          notes
//!  0      4    block capacity (bytes)         owned by the slab: multiple of 8, header included
//!  4      4    payload length
//!  8      8    key hash
//!  16     8    bookmark publisher id           0 = no bookmark
//!  24     8    bookmark sequence
//!  32     8    timestamp (unix ns)
//!  40     8    expiration deadline (unix ns)   0 = never expires
//!  48     2    key length
//!  50     2    correlation id length
//!  52     1    key kind                        0 = key fields (hashed), 1 = explicit `k`
//!  53     1    flags                           bit 0: has a correlation id
//!  54     2    reserved (0)
//!  56     ..   key bytes, correlation id bytes, payload bytes
//! ```
//!
//! All integers are little-endian. Bytes 4.. are also the record body of a snapshot
//! ([`super::snapshot`]). This module never decides where a record goes.

use std::time::Duration;

use super::key::{KeyKind, SowKey, SowKeyRef};

/// Bytes of fixed header in front of every record's key, correlation id and payload.
pub const RECORD_HEADER_BYTES: usize = 56;
/// Longest correlation id stored with a record, in bytes (length is stored in 16 bits).
pub const CORRELATION_ID_BYTES_MAX: usize = u16::MAX as usize;

const PAYLOAD_LENGTH_AT: usize = 4;
const KEY_HASH_AT: usize = 8;
const PUBLISHER_AT: usize = 16;
const SEQUENCE_AT: usize = 24;
const TIMESTAMP_AT: usize = 32;
const EXPIRATION_AT: usize = 40;
const KEY_LENGTH_AT: usize = 48;
const CORRELATION_LENGTH_AT: usize = 50;
const KEY_KIND_AT: usize = 52;
const FLAGS_AT: usize = 53;
const FLAG_HAS_CORRELATION_ID: u8 = 1;

/// A message's bookmark: publisher id (hash of the client name) and that publisher's sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Bookmark {
    /// Hash of the publishing client's name; 0 means the record has no bookmark.
    pub publisher_id: u64,
    /// Publisher sequence (or server counter).
    pub sequence: u64,
}

impl Bookmark {
    /// Whether the record carries a bookmark.
    pub fn is_present(self) -> bool {
        self.publisher_id != 0
    }

    /// Appends the wire form `<publisher>|<sequence>|`.
    pub fn write_text(self, out: &mut Vec<u8>) {
        use std::io::Write;
        write!(out, "{}|{}|", self.publisher_id, self.sequence)
            .expect("writing to a Vec cannot fail");
    }
}

/// What the server knows about a publish besides its key and payload.
#[derive(Debug, Clone, Copy, Default)]
pub struct PublishMeta<'a> {
    /// Bookmark assigned to the message.
    pub bookmark: Bookmark,
    /// Server receive time.
    pub timestamp_unix_ns: u64,
    /// The `x` header as received.
    pub correlation_id: Option<&'a [u8]>,
    /// The `e` header (overrides the topic's default expiration).
    pub expiration: Option<Duration>,
}

/// A stored record, borrowed from its slab (or from a store scratch buffer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    /// The record's key.
    pub key: SowKeyRef<'a>,
    /// The message data.
    pub payload: &'a [u8],
    /// Bookmark of the message that last wrote the record.
    pub bookmark: Bookmark,
    /// When the record was last written.
    pub timestamp_unix_ns: u64,
    /// Correlation id of the last write.
    pub correlation_id: Option<&'a [u8]>,
    /// When the record expires; `None` = never.
    pub expiration_unix_ns: Option<u64>,
}

impl RecordView<'_> {
    /// Owned copy (for records that leave the store: deleted, expired).
    pub fn to_owned(&self) -> OwnedRecord {
        OwnedRecord {
            key: self.key.to_owned(),
            payload: self.payload.to_vec(),
            bookmark: self.bookmark,
            timestamp_unix_ns: self.timestamp_unix_ns,
            correlation_id: self.correlation_id.map(<[u8]>::to_vec),
            expiration_unix_ns: self.expiration_unix_ns,
        }
    }

    /// Bytes this record needs in a slab, header included (before alignment).
    pub fn stored_bytes(&self) -> usize {
        stored_bytes(
            self.key.canonical.len(),
            self.correlation_id.map_or(0, <[u8]>::len),
            self.payload.len(),
        )
    }
}

/// A record that has left the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedRecord {
    /// The record's key.
    pub key: SowKey,
    /// The message data.
    pub payload: Vec<u8>,
    /// Bookmark of the last write.
    pub bookmark: Bookmark,
    /// When the record was last written.
    pub timestamp_unix_ns: u64,
    /// Correlation id of the last write.
    pub correlation_id: Option<Vec<u8>>,
    /// When the record expired or would have.
    pub expiration_unix_ns: Option<u64>,
}

impl OwnedRecord {
    /// Borrowed view, for the frame writers and oof decisions.
    pub fn view(&self) -> RecordView<'_> {
        RecordView {
            key: self.key.as_ref(),
            payload: &self.payload,
            bookmark: self.bookmark,
            timestamp_unix_ns: self.timestamp_unix_ns,
            correlation_id: self.correlation_id.as_deref(),
            expiration_unix_ns: self.expiration_unix_ns,
        }
    }
}

/// Bytes a record with these lengths needs, header included (before alignment).
pub fn stored_bytes(key_bytes: usize, correlation_id_bytes: usize, payload_bytes: usize) -> usize {
    RECORD_HEADER_BYTES + key_bytes + correlation_id_bytes + payload_bytes
}

fn read_u16(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(bytes[at..at + 2].try_into().expect("2 bytes"))
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// Writes a record at the start of `block` (whose first 4 bytes, the capacity, are left alone).
/// Returns the bytes written.
pub fn encode(block: &mut [u8], record: &RecordView<'_>) -> usize {
    let key = record.key.canonical;
    let correlation_id = record.correlation_id.unwrap_or(b"");
    assert!(
        key.len() <= u16::MAX as usize,
        "key length checked before encoding"
    );
    assert!(
        correlation_id.len() <= CORRELATION_ID_BYTES_MAX,
        "correlation id checked before encoding"
    );
    let total = record.stored_bytes();
    assert!(
        block.len() >= total,
        "block of {} bytes for a record of {total}",
        block.len()
    );
    block[PAYLOAD_LENGTH_AT..PAYLOAD_LENGTH_AT + 4].copy_from_slice(
        &u32::try_from(record.payload.len())
            .expect("payload below 4 GiB")
            .to_le_bytes(),
    );
    block[KEY_HASH_AT..KEY_HASH_AT + 8].copy_from_slice(&record.key.hash.to_le_bytes());
    block[PUBLISHER_AT..PUBLISHER_AT + 8]
        .copy_from_slice(&record.bookmark.publisher_id.to_le_bytes());
    block[SEQUENCE_AT..SEQUENCE_AT + 8].copy_from_slice(&record.bookmark.sequence.to_le_bytes());
    block[TIMESTAMP_AT..TIMESTAMP_AT + 8].copy_from_slice(&record.timestamp_unix_ns.to_le_bytes());
    let expiration = record.expiration_unix_ns.unwrap_or(0);
    block[EXPIRATION_AT..EXPIRATION_AT + 8].copy_from_slice(&expiration.to_le_bytes());
    block[KEY_LENGTH_AT..KEY_LENGTH_AT + 2].copy_from_slice(&(key.len() as u16).to_le_bytes());
    block[CORRELATION_LENGTH_AT..CORRELATION_LENGTH_AT + 2]
        .copy_from_slice(&(correlation_id.len() as u16).to_le_bytes());
    block[KEY_KIND_AT] = record.key.kind.to_byte();
    block[FLAGS_AT] = if record.correlation_id.is_some() {
        FLAG_HAS_CORRELATION_ID
    } else {
        0
    };
    block[FLAGS_AT + 1] = 0;
    block[FLAGS_AT + 2] = 0;
    let mut at = RECORD_HEADER_BYTES;
    for part in [key, correlation_id, record.payload] {
        block[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
    total
}

/// Why record bytes could not be decoded (only possible for bytes from outside the store).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer bytes than the header or the lengths it declares.
    Truncated,
    /// A key kind byte that no version wrote.
    BadKeyKind,
}

/// Reads the record at the start of `block`; checks every length against the block.
pub fn decode(block: &[u8]) -> Result<RecordView<'_>, DecodeError> {
    if block.len() < RECORD_HEADER_BYTES {
        return Err(DecodeError::Truncated);
    }
    let payload_length = read_u32(block, PAYLOAD_LENGTH_AT) as usize;
    let key_length = usize::from(read_u16(block, KEY_LENGTH_AT));
    let correlation_length = usize::from(read_u16(block, CORRELATION_LENGTH_AT));
    let total = stored_bytes(key_length, correlation_length, payload_length);
    if block.len() < total {
        return Err(DecodeError::Truncated);
    }
    let kind = KeyKind::from_byte(block[KEY_KIND_AT]).ok_or(DecodeError::BadKeyKind)?;
    let key_end = RECORD_HEADER_BYTES + key_length;
    let correlation_end = key_end + correlation_length;
    let expiration = read_u64(block, EXPIRATION_AT);
    Ok(RecordView {
        key: SowKeyRef {
            hash: read_u64(block, KEY_HASH_AT),
            kind,
            canonical: &block[RECORD_HEADER_BYTES..key_end],
        },
        payload: &block[correlation_end..total],
        bookmark: Bookmark {
            publisher_id: read_u64(block, PUBLISHER_AT),
            sequence: read_u64(block, SEQUENCE_AT),
        },
        timestamp_unix_ns: read_u64(block, TIMESTAMP_AT),
        correlation_id: (block[FLAGS_AT] & FLAG_HAS_CORRELATION_ID != 0)
            .then(|| &block[key_end..correlation_end]),
        expiration_unix_ns: (expiration != 0).then_some(expiration),
    })
}

/// The key hash of the record at the start of `block`, without decoding the rest.
pub fn key_hash_of(block: &[u8]) -> u64 {
    read_u64(block, KEY_HASH_AT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_the_layout() {
        let key = SowKey::explicit(b"k1");
        let view = RecordView {
            key: key.as_ref(),
            payload: br#"{"a":1}"#,
            bookmark: Bookmark {
                publisher_id: 7,
                sequence: 9,
            },
            timestamp_unix_ns: 11,
            correlation_id: Some(b""),
            expiration_unix_ns: Some(13),
        };
        let mut block = vec![0xAA; view.stored_bytes() + 3];
        assert_eq!(encode(&mut block, &view), view.stored_bytes());
        assert_eq!(&block[..4], &[0xAA; 4], "capacity word untouched");
        assert_eq!(decode(&block).unwrap(), view);
        assert_eq!(key_hash_of(&block), key.hash);
        let none = RecordView {
            correlation_id: None,
            expiration_unix_ns: None,
            ..view
        };
        encode(&mut block, &none);
        assert_eq!(decode(&block).unwrap(), none);
        assert_eq!(decode(&block[..10]), Err(DecodeError::Truncated));
        assert_eq!(
            decode(&block[..RECORD_HEADER_BYTES + 2]),
            Err(DecodeError::Truncated)
        );
    }

    #[test]
    fn bookmarks_print_as_amps_does() {
        let mut out = Vec::new();
        Bookmark {
            publisher_id: 16_561_197_184_232_653_812,
            sequence: 2,
        }
        .write_text(&mut out);
        assert_eq!(out, b"16561197184232653812|2|");
        assert!(!Bookmark::default().is_present());
    }
}
