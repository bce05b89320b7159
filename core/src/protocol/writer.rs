//! Writing compact headers and whole frames.
//!
//! The C client's scanner hangs or drops the connection on a single space inside a header and
//! silently drops `\uXXXX` escapes, so the writer emits no whitespace, escapes only what the client
//! un-escapes, writes raw UTF-8, and uses the short key spellings only. It appends to a caller's
//! buffer, so a reused buffer makes writing allocation-free.

/// Appends one compact JSON header object to a buffer.
pub struct HeaderWriter<'b> {
    buffer: &'b mut Vec<u8>,
    first: bool,
}

impl<'b> HeaderWriter<'b> {
    /// Starts a header (writes `{`).
    pub fn new(buffer: &'b mut Vec<u8>) -> Self {
        buffer.push(b'{');
        HeaderWriter {
            buffer,
            first: true,
        }
    }

    fn key(&mut self, key: &str) {
        debug_assert!(key
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_'));
        if !self.first {
            self.buffer.push(b',');
        }
        self.first = false;
        self.buffer.push(b'"');
        self.buffer.extend_from_slice(key.as_bytes());
        self.buffer.extend_from_slice(b"\":");
    }

    /// Writes `"key":"value"`, escaping the value for the client's scanner.
    pub fn string(&mut self, key: &str, value: &[u8]) -> &mut Self {
        self.key(key);
        self.buffer.push(b'"');
        escape_into(self.buffer, value);
        self.buffer.push(b'"');
        self
    }

    /// Writes `"key":"value"` where `value` is already escaped (echoing bytes a client sent).
    pub fn raw_string(&mut self, key: &str, value: &[u8]) -> &mut Self {
        self.key(key);
        self.buffer.push(b'"');
        self.buffer.extend_from_slice(value);
        self.buffer.push(b'"');
        self
    }

    /// Writes `"key":"v1,v2,..."` from several values without building the joined string first.
    pub fn string_list<'v>(
        &mut self,
        key: &str,
        values: impl IntoIterator<Item = &'v [u8]>,
    ) -> &mut Self {
        self.key(key);
        self.buffer.push(b'"');
        for (index, value) in values.into_iter().enumerate() {
            if index > 0 {
                self.buffer.push(b',');
            }
            escape_into(self.buffer, value);
        }
        self.buffer.push(b'"');
        self
    }

    /// Writes `"key":<number>` (unquoted, as the JavaScript client's `s` pattern requires).
    pub fn number(&mut self, key: &str, value: u64) -> &mut Self {
        self.key(key);
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        let mut rest = value;
        loop {
            at -= 1;
            digits[at] = b'0' + (rest % 10) as u8;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        self.buffer.extend_from_slice(&digits[at..]);
        self
    }

    /// Closes the header (writes `}`); nothing may be written to it afterwards.
    pub fn finish(&mut self) {
        self.buffer.push(b'}');
    }
}

/// Escapes `"` and `\` and the control characters the client un-escapes; everything else raw.
fn escape_into(buffer: &mut Vec<u8>, value: &[u8]) {
    let mut rest = value;
    while let Some(position) = rest.iter().position(|&byte| needs_escape(byte)) {
        buffer.extend_from_slice(&rest[..position]);
        let escaped: &[u8] = match rest[position] {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            _ => b"\\f",
        };
        buffer.extend_from_slice(escaped);
        rest = &rest[position + 1..];
    }
    buffer.extend_from_slice(rest);
}

fn needs_escape(byte: u8) -> bool {
    matches!(byte, b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c)
}

/// Builds whole frames (length prefix, header, payload) in one contiguous buffer.
pub struct FrameWriter<'b> {
    buffer: &'b mut Vec<u8>,
    start: usize,
}

impl<'b> FrameWriter<'b> {
    /// Starts a frame at the end of `buffer`, reserving the length prefix.
    pub fn new(buffer: &'b mut Vec<u8>) -> Self {
        let start = buffer.len();
        buffer.extend_from_slice(&[0; 4]);
        FrameWriter { buffer, start }
    }

    /// The header writer for this frame; call [`HeaderWriter::finish`] before adding payload.
    pub fn header(&mut self) -> HeaderWriter<'_> {
        HeaderWriter::new(self.buffer)
    }

    /// Appends payload bytes after the header.
    pub fn payload(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// Writes the length prefix for everything appended since [`FrameWriter::new`].
    ///
    /// `extra_bytes` counts bytes that follow in separate buffers (a payload sent with writev).
    pub fn finish(self, extra_bytes: usize) {
        let length = self.buffer.len() - self.start - 4 + extra_bytes;
        let length = u32::try_from(length).expect("frame length fits the 4-byte prefix");
        self.buffer[self.start..self.start + 4].copy_from_slice(&length.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_compact_with_short_keys() {
        let mut buffer = Vec::new();
        let mut header = HeaderWriter::new(&mut buffer);
        header
            .string("c", b"ack")
            .string("cid", b"auto0")
            .number("s", 42);
        header.string_list("sids", [&b"a"[..], &b"b"[..]]);
        header.finish();
        assert_eq!(buffer, br#"{"c":"ack","cid":"auto0","s":42,"sids":"a,b"}"#);
    }

    #[test]
    fn values_are_escaped_for_the_client_and_never_with_unicode_escapes() {
        let mut buffer = Vec::new();
        HeaderWriter::new(&mut buffer)
            .string("reason", "a\"b\\c\nd é\u{1}".as_bytes())
            .finish();
        assert_eq!(buffer, "{\"reason\":\"a\\\"b\\\\c\\nd é\u{1}\"}".as_bytes());
    }

    #[test]
    fn frames_carry_their_length() {
        let mut buffer = vec![9];
        let mut frame = FrameWriter::new(&mut buffer);
        frame.header().string("c", b"p").finish();
        frame.payload(b"xyz");
        frame.finish(5);
        assert_eq!(&buffer[1..5], &(9u32 + 3 + 5).to_be_bytes());
        assert_eq!(&buffer[5..], br#"{"c":"p"}xyz"#);
    }
}
