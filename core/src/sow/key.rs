//! SOW keys: which record a message replaces.
//!
//! A topic with key fields hashes the canonical values of those fields (read with the filter
//! module's one-pass scanner); a publish with an explicit `k` header uses that text as the key.
//! The canonical form is kept next to the hash so that two different keys with the same hash stay
//! two records. On the wire a field key is the decimal hash (as AMPS sends it) and an explicit
//! key is its own text. This module never stores records.

use std::fmt;

use crate::filter::parser::{FieldPath, Segment};
use crate::filter::scan::RawValue;
use crate::filter::{FieldTable, ScanScratch};
use crate::ids::stable_hash;

/// Longest canonical key, in bytes (the record header stores its length in 16 bits).
pub const KEY_BYTES_MAX: usize = u16::MAX as usize;
/// Longest array subscript accepted in a key path.
const KEY_INDEX_MAX: u32 = 1_000_000;

/// Where a key came from, which decides its wire spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// Hashed from the topic's key fields; sent as the decimal hash.
    Fields,
    /// Given by the publisher in `k`; sent as that text.
    Explicit,
}

impl KeyKind {
    /// The byte stored in record headers and snapshots.
    pub fn to_byte(self) -> u8 {
        match self {
            KeyKind::Fields => 0,
            KeyKind::Explicit => 1,
        }
    }

    /// Inverse of [`KeyKind::to_byte`].
    pub fn from_byte(byte: u8) -> Option<KeyKind> {
        match byte {
            0 => Some(KeyKind::Fields),
            1 => Some(KeyKind::Explicit),
            _ => None,
        }
    }
}

/// An owned SOW key: hash, origin and canonical bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SowKey {
    /// Stable 64-bit hash of the canonical bytes (per kind).
    pub hash: u64,
    /// Where the key came from.
    pub kind: KeyKind,
    /// Canonical bytes: the explicit text, or the encoded key-field values.
    pub canonical: Box<[u8]>,
}

/// A borrowed SOW key, as stored in a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SowKeyRef<'a> {
    /// Stable 64-bit hash of the canonical bytes.
    pub hash: u64,
    /// Where the key came from.
    pub kind: KeyKind,
    /// Canonical bytes.
    pub canonical: &'a [u8],
}

impl SowKey {
    /// The key of an explicit `k` header.
    pub fn explicit(text: &[u8]) -> SowKey {
        SowKey {
            hash: key_hash(KeyKind::Explicit, text),
            kind: KeyKind::Explicit,
            canonical: text.into(),
        }
    }

    /// Borrowed form.
    pub fn as_ref(&self) -> SowKeyRef<'_> {
        SowKeyRef {
            hash: self.hash,
            kind: self.kind,
            canonical: &self.canonical,
        }
    }
}

impl<'a> SowKeyRef<'a> {
    /// Owned copy.
    pub fn to_owned(self) -> SowKey {
        SowKey {
            hash: self.hash,
            kind: self.kind,
            canonical: self.canonical.into(),
        }
    }

    /// The spelling sent in `k` and accepted back in `sow_keys`.
    pub fn wire(self) -> WireKey<'a> {
        match self.kind {
            KeyKind::Explicit => WireKey::Text(self.canonical),
            KeyKind::Fields => {
                let mut digits = [0u8; 20];
                let mut at = digits.len();
                let mut rest = self.hash;
                loop {
                    at -= 1;
                    digits[at] = b'0' + (rest % 10) as u8;
                    rest /= 10;
                    if rest == 0 {
                        break;
                    }
                }
                digits.copy_within(at.., 0);
                WireKey::Decimal {
                    digits,
                    length: (20 - at) as u8,
                }
            }
        }
    }
}

/// A key's wire spelling, formatted without allocating.
#[derive(Debug, Clone, Copy)]
pub enum WireKey<'a> {
    /// The decimal hash of a field key.
    Decimal {
        /// Digits, left-aligned.
        digits: [u8; 20],
        /// Number of digits used.
        length: u8,
    },
    /// An explicit key's text.
    Text(&'a [u8]),
}

impl WireKey<'_> {
    /// The bytes to send.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            WireKey::Decimal { digits, length } => &digits[..usize::from(*length)],
            WireKey::Text(text) => text,
        }
    }
}

impl fmt::Display for WireKey<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&String::from_utf8_lossy(self.as_bytes()))
    }
}

/// The hash of canonical key bytes; explicit and field keys hash in separate domains.
pub fn key_hash(kind: KeyKind, canonical: &[u8]) -> u64 {
    match kind {
        KeyKind::Fields => stable_hash(canonical),
        // A different seed byte so an explicit key never aliases a field key by construction.
        KeyKind::Explicit => stable_hash(canonical) ^ 0x9e37_79b9_7f4a_7c15,
    }
}

/// Why a message has no usable key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// A key field is absent (or JSON `null`) in the payload.
    #[error("bad sow key: the message has no value for key field {field}")]
    MissingField {
        /// The field path as configured.
        field: String,
    },
    /// A key field holds an object, which has no canonical value.
    #[error("bad sow key: key field {field} is an object; key fields must be scalars or arrays")]
    NotScalar {
        /// The field path as configured.
        field: String,
    },
    /// The payload is not JSON as far as the key scan looked.
    #[error("bad sow key: the message is not well-formed JSON at byte {offset}")]
    Malformed {
        /// Byte offset where the scanner gave up.
        offset: usize,
    },
    /// The topic has no key fields and the publish carried no `k` header.
    #[error("bad sow key: the topic has no key fields, so each publish must carry a k header")]
    NoKey,
    /// The key is longer than [`KEY_BYTES_MAX`].
    #[error("bad sow key: the key is {length} bytes, the limit is {limit} bytes")]
    TooLong {
        /// The key's canonical length.
        length: usize,
        /// The limit.
        limit: usize,
    },
}

/// Parses a key path (`/id`, `/order/id`, `/legs[0]/px`) into the filter module's path type.
pub fn parse_key_path(text: &str) -> Option<FieldPath> {
    let rest = text.strip_prefix('/')?;
    let mut segments = Vec::new();
    for part in rest.split('/') {
        let (name, mut indexes) = match part.find('[') {
            Some(at) => (&part[..at], &part[at..]),
            None => (part, ""),
        };
        if name.is_empty()
            || name
                .bytes()
                .any(|byte| byte.is_ascii_whitespace() || byte == b']')
        {
            return None;
        }
        segments.push(Segment::Key(name.as_bytes().into()));
        while !indexes.is_empty() {
            let close = indexes.find(']')?;
            let index: u32 = indexes[1..close].parse().ok()?;
            if index > KEY_INDEX_MAX || !indexes.starts_with('[') {
                return None;
            }
            segments.push(Segment::Index(index));
            indexes = &indexes[close + 1..];
        }
    }
    Some(FieldPath::new(segments))
}

/// Reads a topic's key fields out of payloads; one per topic, reused for every message so that
/// extraction does not allocate once its buffers have grown.
#[derive(Debug)]
pub struct KeyExtractor {
    fields: Vec<String>,
    table: FieldTable,
    slots: Box<[u32]>,
    scratch: ScanScratch,
}

/// Value tags in the canonical encoding, so `1` and `"1"` are different keys.
const TAG_STRING: u8 = b's';
const TAG_NUMBER: u8 = b'n';
const TAG_TRUE: u8 = b't';
const TAG_FALSE: u8 = b'f';
const TAG_ARRAY: u8 = b'a';

impl KeyExtractor {
    /// An extractor for `fields` (validated paths; see [`parse_key_path`]).
    ///
    /// # Panics
    /// When a field is not a valid path: configurations are validated before topics are built.
    pub fn new(fields: &[String]) -> KeyExtractor {
        let paths: Vec<FieldPath> = fields
            .iter()
            .map(|field| {
                parse_key_path(field).expect("key fields are validated with the configuration")
            })
            .collect();
        let mut table = FieldTable::new();
        let slots = table.register_paths(&paths);
        KeyExtractor {
            fields: fields.to_vec(),
            table,
            slots,
            scratch: ScanScratch::new(),
        }
    }

    /// The configured key fields.
    pub fn fields(&self) -> &[String] {
        &self.fields
    }

    /// Top-level member names the key fields live under (for delta messages, which must carry
    /// the key).
    pub fn top_level_names(&self) -> impl Iterator<Item = &[u8]> {
        self.fields.iter().map(|field| {
            let rest = &field.as_bytes()[1..];
            let end = rest
                .iter()
                .position(|&byte| byte == b'/' || byte == b'[')
                .unwrap_or(rest.len());
            &rest[..end]
        })
    }

    /// Computes the key of a message: the `k` header when given, else the key fields. The
    /// canonical bytes are left in `canonical` (cleared first); returns hash and kind.
    pub fn extract_into(
        &mut self,
        header_key: Option<&[u8]>,
        payload: &[u8],
        canonical: &mut Vec<u8>,
    ) -> Result<(u64, KeyKind), KeyError> {
        canonical.clear();
        let kind = if let Some(text) = header_key {
            canonical.extend_from_slice(text);
            KeyKind::Explicit
        } else {
            if self.fields.is_empty() {
                return Err(KeyError::NoKey);
            }
            let fields = self
                .table
                .scan(payload, &mut self.scratch)
                .map_err(|malformed| KeyError::Malformed {
                    offset: malformed.offset,
                })?;
            for (index, &slot) in self.slots.iter().enumerate() {
                let (tag, bytes): (u8, &[u8]) = match fields.get(slot) {
                    RawValue::Missing | RawValue::Null => {
                        return Err(KeyError::MissingField {
                            field: self.fields[index].clone(),
                        })
                    }
                    RawValue::Object => {
                        return Err(KeyError::NotScalar {
                            field: self.fields[index].clone(),
                        })
                    }
                    RawValue::Bool(true) => (TAG_TRUE, b""),
                    RawValue::Bool(false) => (TAG_FALSE, b""),
                    RawValue::Number(text) => (TAG_NUMBER, text),
                    RawValue::Str(text) | RawValue::EscapedStr(text) => (TAG_STRING, text),
                    RawValue::Array(raw) => (TAG_ARRAY, raw),
                };
                // Tag, 32-bit length, bytes: unambiguous whatever the values contain.
                canonical.push(tag);
                canonical.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
                canonical.extend_from_slice(bytes);
            }
            KeyKind::Fields
        };
        if canonical.len() > KEY_BYTES_MAX {
            return Err(KeyError::TooLong {
                length: canonical.len(),
                limit: KEY_BYTES_MAX,
            });
        }
        Ok((key_hash(kind, canonical), kind))
    }

    /// Computes the key of a message as an owned [`SowKey`] (allocates; for tests and tools).
    pub fn extract(
        &mut self,
        header_key: Option<&[u8]>,
        payload: &[u8],
    ) -> Result<SowKey, KeyError> {
        let mut canonical = Vec::new();
        let (hash, kind) = self.extract_into(header_key, payload, &mut canonical)?;
        Ok(SowKey {
            hash,
            kind,
            canonical: canonical.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn extractor(fields: &[&str]) -> KeyExtractor {
        KeyExtractor::new(&fields.iter().map(|f| f.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn single_field_keys_depend_only_on_the_key_value() {
        let mut keys = extractor(&["/id"]);
        let a = keys.extract(None, br#"{"id":1,"qty":5}"#).unwrap();
        let b = keys.extract(None, br#"{"qty":7, "id" : 1}"#).unwrap();
        let c = keys.extract(None, br#"{"id":2}"#).unwrap();
        let text = keys.extract(None, br#"{"id":"1"}"#).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, text, "a number and a string are different keys");
        assert_eq!(a.kind, KeyKind::Fields);
        assert_eq!(a.as_ref().wire().as_bytes(), a.hash.to_string().as_bytes());
    }

    #[test]
    fn composite_and_nested_keys() {
        let mut keys = extractor(&["/sym", "/venue/code"]);
        let a = keys
            .extract(None, br#"{"sym":"IBM","venue":{"code":"X","n":1}}"#)
            .unwrap();
        let b = keys
            .extract(None, br#"{"venue":{"n":2,"code":"X"},"sym":"IBM"}"#)
            .unwrap();
        let c = keys
            .extract(None, br#"{"sym":"IBMX","venue":{"code":""}}"#)
            .unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c, "field boundaries are part of the key");
        let names: Vec<&[u8]> = keys.top_level_names().collect();
        assert_eq!(names, [&b"sym"[..], &b"venue"[..]]);
        let mut indexed = extractor(&["/legs[1]"]);
        let x = indexed.extract(None, br#"{"legs":[1,2]}"#).unwrap();
        let y = indexed.extract(None, br#"{"legs":[9,2]}"#).unwrap();
        assert_eq!(x, y);
    }

    #[test]
    fn missing_or_unusable_fields_are_named() {
        let mut keys = extractor(&["/sym", "/venue"]);
        let error = keys.extract(None, br#"{"sym":"IBM"}"#).unwrap_err();
        assert_eq!(
            error,
            KeyError::MissingField {
                field: "/venue".into()
            }
        );
        assert!(error.to_string().contains("/venue"));
        assert!(matches!(
            keys.extract(None, br#"{"sym":null,"venue":1}"#),
            Err(KeyError::MissingField { .. })
        ));
        assert!(matches!(
            keys.extract(None, br#"{"sym":{},"venue":1}"#),
            Err(KeyError::NotScalar { .. })
        ));
        assert!(matches!(
            keys.extract(None, br#"{"sym":"#),
            Err(KeyError::Malformed { .. })
        ));
        assert_eq!(extractor(&[]).extract(None, b"{}"), Err(KeyError::NoKey));
    }

    #[test]
    fn explicit_keys_win_and_are_sent_as_given() {
        let mut keys = extractor(&["/id"]);
        let key = keys
            .extract(Some(b"mykey-4"), br#"{"no":"id here"}"#)
            .unwrap();
        assert_eq!(key, SowKey::explicit(b"mykey-4"));
        assert_eq!(key.as_ref().wire().as_bytes(), b"mykey-4");
        assert_eq!(
            extractor(&[]).extract(Some(b"k"), b"").unwrap().kind,
            KeyKind::Explicit
        );
        let long = vec![b'k'; KEY_BYTES_MAX + 1];
        assert!(matches!(
            keys.extract(Some(&long), b"{}"),
            Err(KeyError::TooLong { .. })
        ));
    }

    #[test]
    fn key_paths_parse() {
        assert_eq!(parse_key_path("/a/b").unwrap().to_string(), "/a/b");
        assert_eq!(parse_key_path("/a[2]/b").unwrap().to_string(), "/a[2]/b");
        for bad in ["a", "/", "//a", "/a b", "/a[x]", "/a[1"] {
            assert!(parse_key_path(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn wire_keys_are_decimal_without_allocation() {
        let key = SowKeyRef {
            hash: 0,
            kind: KeyKind::Fields,
            canonical: b"",
        };
        assert_eq!(key.wire().as_bytes(), b"0");
        let key = SowKeyRef {
            hash: u64::MAX,
            kind: KeyKind::Fields,
            canonical: b"",
        };
        assert_eq!(key.wire().to_string(), u64::MAX.to_string());
    }
}
