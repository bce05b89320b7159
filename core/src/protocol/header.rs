//! The lenient header parser.
//!
//! Real clients escape only `"` and `\` inside strings, so raw control characters and raw UTF-8
//! appear in values (a filter with a newline, say): a strict JSON parser would refuse them. This
//! parser accepts them, skips unknown keys, accepts quoted and bare scalar values, and refuses
//! nested objects and arrays. Values are borrowed slices of the frame; nothing is allocated.

use super::keys::{self, Key, KEY_COUNT};
use thiserror::Error;

/// A header that cannot be read.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// The frame does not start with `{` (after optional whitespace).
    #[error("header does not start with '{{'")]
    NoOpeningBrace,
    /// The frame ended inside the header.
    #[error("header is not terminated (no closing '}}' before byte {at})")]
    Unterminated {
        /// Offset where input ran out.
        at: usize,
    },
    /// A byte that cannot appear where it was found.
    #[error("unexpected byte 0x{byte:02x} at offset {at} in header")]
    Unexpected {
        /// The offending byte.
        byte: u8,
        /// Its offset in the frame.
        at: usize,
    },
    /// Objects and arrays are not allowed as header values.
    #[error("nested object or array at offset {at} in header")]
    Nested {
        /// Offset of the `{` or `[`.
        at: usize,
    },
}

/// One header value, borrowed from the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawValue<'a> {
    /// The bytes between the quotes (or the bare token), escapes not yet processed.
    pub bytes: &'a [u8],
    /// Whether `bytes` contains a backslash escape that [`RawValue::unescape_into`] resolves.
    pub escaped: bool,
}

impl<'a> RawValue<'a> {
    /// The value when it holds no escapes: the common case, borrowed with no work.
    pub fn plain(&self) -> Option<&'a [u8]> {
        (!self.escaped).then_some(self.bytes)
    }

    /// Appends the value with escapes resolved (`\"`, `\\`, `\/`, `\b`, `\f`, `\n`, `\r`, `\t`,
    /// `\uXXXX`; any other escaped byte stands for itself).
    pub fn unescape_into(&self, out: &mut Vec<u8>) {
        if !self.escaped {
            out.extend_from_slice(self.bytes);
            return;
        }
        let mut bytes = self.bytes.iter().copied();
        while let Some(byte) = bytes.next() {
            if byte != b'\\' {
                out.push(byte);
                continue;
            }
            match bytes.next() {
                Some(b'b') => out.push(0x08),
                Some(b'f') => out.push(0x0c),
                Some(b'n') => out.push(b'\n'),
                Some(b'r') => out.push(b'\r'),
                Some(b't') => out.push(b'\t'),
                Some(b'u') => {
                    let digits: Vec<u8> = bytes.by_ref().take(4).collect();
                    let code = std::str::from_utf8(&digits)
                        .ok()
                        .and_then(|text| u32::from_str_radix(text, 16).ok())
                        .and_then(char::from_u32);
                    if let Some(character) = code {
                        let mut utf8 = [0u8; 4];
                        out.extend_from_slice(character.encode_utf8(&mut utf8).as_bytes());
                    }
                }
                Some(other) => out.push(other),
                None => {}
            }
        }
    }

    /// The value with escapes resolved, allocating only when there are escapes.
    pub fn to_bytes(&self) -> std::borrow::Cow<'a, [u8]> {
        match self.plain() {
            Some(bytes) => std::borrow::Cow::Borrowed(bytes),
            None => {
                let mut out = Vec::with_capacity(self.bytes.len());
                self.unescape_into(&mut out);
                std::borrow::Cow::Owned(out)
            }
        }
    }

    /// The value as an unsigned integer (quoted or bare decimal), if it is one.
    pub fn as_u64(&self) -> Option<u64> {
        parse_u64(self.bytes)
    }
}

/// Parses an unsigned decimal with no sign, spaces or overflow.
pub fn parse_u64(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() || bytes.len() > 20 {
        return None;
    }
    let mut value: u64 = 0;
    for &byte in bytes {
        if !byte.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(byte - b'0'))?;
    }
    Some(value)
}

/// A parsed header: the known keys' values and where the payload starts.
#[derive(Debug, Clone)]
pub struct Header<'a> {
    values: [Option<RawValue<'a>>; KEY_COUNT],
    /// Offset of the first payload byte (one past the header's closing `}`).
    pub payload_offset: usize,
}

impl<'a> Header<'a> {
    /// The value of `key`, if the header carried it.
    pub fn get(&self, key: Key) -> Option<RawValue<'a>> {
        self.values[key as usize]
    }

    /// The raw bytes of `key` (escapes unresolved), if present.
    pub fn bytes(&self, key: Key) -> Option<&'a [u8]> {
        self.get(key).map(|value| value.bytes)
    }

    /// Whether `key` is present with a non-empty value.
    pub fn has(&self, key: Key) -> bool {
        self.get(key).is_some_and(|value| !value.bytes.is_empty())
    }
}

/// Parses the header at the start of `message` (a frame without its length prefix).
pub fn parse_header(message: &[u8]) -> Result<Header<'_>, HeaderError> {
    let mut header = Header {
        values: [None; KEY_COUNT],
        payload_offset: 0,
    };
    let mut at = skip_space(message, 0);
    match message.get(at) {
        Some(b'{') => at += 1,
        _ => return Err(HeaderError::NoOpeningBrace),
    }
    at = skip_space(message, at);
    if message.get(at) == Some(&b'}') {
        header.payload_offset = at + 1;
        return Ok(header);
    }
    loop {
        at = skip_space(message, at);
        let (name, after_name) = read_string(message, at)?;
        at = skip_space(message, after_name);
        expect(message, at, b':')?;
        at = skip_space(message, at + 1);
        let (value, after_value) = read_value(message, at)?;
        if let Some(key) = keys::lookup(name.bytes) {
            header.values[key as usize] = Some(value);
        }
        at = skip_space(message, after_value);
        match message.get(at) {
            Some(b',') => at += 1,
            Some(b'}') => {
                header.payload_offset = at + 1;
                return Ok(header);
            }
            Some(&byte) => return Err(HeaderError::Unexpected { byte, at }),
            None => return Err(HeaderError::Unterminated { at }),
        }
    }
}

fn skip_space(message: &[u8], mut at: usize) -> usize {
    while matches!(message.get(at), Some(b' ' | b'\t' | b'\r' | b'\n')) {
        at += 1;
    }
    at
}

fn expect(message: &[u8], at: usize, wanted: u8) -> Result<(), HeaderError> {
    match message.get(at) {
        Some(&byte) if byte == wanted => Ok(()),
        Some(&byte) => Err(HeaderError::Unexpected { byte, at }),
        None => Err(HeaderError::Unterminated { at }),
    }
}

/// Reads a quoted string starting at `at` (which must be `"`); returns it and the offset after it.
fn read_string(message: &[u8], at: usize) -> Result<(RawValue<'_>, usize), HeaderError> {
    expect(message, at, b'"')?;
    let start = at + 1;
    let mut escaped = false;
    let mut cursor = start;
    loop {
        let Some(found) = memchr::memchr2(b'"', b'\\', &message[cursor.min(message.len())..])
        else {
            return Err(HeaderError::Unterminated { at: message.len() });
        };
        let position = cursor + found;
        if message[position] == b'\\' {
            escaped = true;
            cursor = position + 2;
            if cursor > message.len() {
                return Err(HeaderError::Unterminated { at: message.len() });
            }
            continue;
        }
        let value = RawValue {
            bytes: &message[start..position],
            escaped,
        };
        return Ok((value, position + 1));
    }
}

/// Reads a string or a bare scalar (number, `true`, `false`, `null`).
fn read_value(message: &[u8], at: usize) -> Result<(RawValue<'_>, usize), HeaderError> {
    match message.get(at) {
        Some(b'"') => read_string(message, at),
        Some(b'{' | b'[') => Err(HeaderError::Nested { at }),
        Some(_) => {
            let length = message[at..]
                .iter()
                .position(|byte| matches!(byte, b',' | b'}' | b' ' | b'\t' | b'\r' | b'\n'))
                .ok_or(HeaderError::Unterminated { at: message.len() })?;
            if length == 0 {
                return Err(HeaderError::Unexpected {
                    byte: message[at],
                    at,
                });
            }
            let bytes = &message[at..at + length];
            if bytes.iter().any(|&byte| byte == b'"' || byte == b':') {
                return Err(HeaderError::Unexpected { byte: bytes[0], at });
            }
            Ok((
                RawValue {
                    bytes,
                    escaped: false,
                },
                at + length,
            ))
        }
        None => Err(HeaderError::Unterminated { at }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_logon_parses() {
        let frame = br#"{"c":"logon","cid":"auto0","client_name":"probe-client","user_id":"user1","mt":"json","a":"processed","version":"5.3.5.14.c6e65cc.784022:python","pw":"secret"}"#;
        let header = parse_header(frame).unwrap();
        assert_eq!(header.bytes(Key::Command), Some(&b"logon"[..]));
        assert_eq!(header.bytes(Key::CommandId), Some(&b"auto0"[..]));
        assert_eq!(header.bytes(Key::ClientName), Some(&b"probe-client"[..]));
        assert_eq!(header.bytes(Key::Password), Some(&b"secret"[..]));
        assert_eq!(header.payload_offset, frame.len());
    }

    #[test]
    fn payload_follows_the_closing_brace() {
        let frame = br#"{"c":"p","t":"orders","s":1795299844070000001}{"id":1,"qty":5}"#;
        let header = parse_header(frame).unwrap();
        assert_eq!(&frame[header.payload_offset..], br#"{"id":1,"qty":5}"#);
        assert_eq!(
            header.get(Key::Sequence).unwrap().as_u64(),
            Some(1795299844070000001)
        );
    }

    #[test]
    fn raw_control_characters_and_utf8_are_accepted() {
        let frame = "{\"c\":\"subscribe\",\"filter\":\"/a = 'x\ty'\n AND /b = 'é'\"}".as_bytes();
        let header = parse_header(frame).unwrap();
        assert_eq!(
            header.bytes(Key::Filter).unwrap(),
            "/a = 'x\ty'\n AND /b = 'é'".as_bytes()
        );
    }

    #[test]
    fn escapes_are_kept_raw_and_resolved_on_demand() {
        let frame = br#"{"t":"a\"b\\c"}"#;
        let header = parse_header(frame).unwrap();
        let value = header.get(Key::Topic).unwrap();
        assert!(value.escaped);
        assert_eq!(&value.to_bytes()[..], br#"a"b\c"#);
    }

    #[test]
    fn long_keys_and_unknown_keys() {
        let frame = br#"{"cmd":"sow","cmd_id":"1","batch_size":10,"bogus":"x","bs":"7"}"#;
        let header = parse_header(frame).unwrap();
        assert_eq!(header.bytes(Key::Command), Some(&b"sow"[..]));
        // The later spelling wins, as with any repeated key.
        assert_eq!(header.get(Key::BatchSize).unwrap().as_u64(), Some(7));
    }

    #[test]
    fn nested_values_and_truncation_are_errors() {
        assert_eq!(
            parse_header(br#"{"c":{"x":1}}"#).unwrap_err(),
            HeaderError::Nested { at: 5 }
        );
        assert!(matches!(
            parse_header(br#"{"c":"p""#),
            Err(HeaderError::Unterminated { .. })
        ));
        assert!(matches!(
            parse_header(br#"{"c""#),
            Err(HeaderError::Unterminated { .. })
        ));
        assert_eq!(
            parse_header(b"garbage").unwrap_err(),
            HeaderError::NoOpeningBrace
        );
        assert!(parse_header(br#"{"c":"p" "t":"x"}"#).is_err());
    }

    #[test]
    fn empty_header_is_valid_syntax() {
        let header = parse_header(b"{}data").unwrap();
        assert_eq!(header.payload_offset, 2);
        assert_eq!(header.get(Key::Command), None);
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_any_input(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let _ = parse_header(&bytes);
        }

        #[test]
        fn round_trips_written_headers(topic in "[ -~\\t\\n]{0,40}", cid in "[a-z0-9]{1,8}") {
            let mut buffer = Vec::new();
            let mut writer = crate::protocol::HeaderWriter::new(&mut buffer);
            writer.string("c", b"p");
            writer.string("t", topic.as_bytes());
            writer.string("cid", cid.as_bytes());
            writer.finish();
            let header = parse_header(&buffer).unwrap();
            proptest::prop_assert_eq!(&header.get(Key::Topic).unwrap().to_bytes()[..], topic.as_bytes());
            proptest::prop_assert_eq!(header.bytes(Key::CommandId).unwrap(), cid.as_bytes());
        }
    }
}
