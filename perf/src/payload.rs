//! The benchmark payload: a JSON object of an exact size that carries the message's sequence
//! number and its *scheduled* send time.
//!
//! Layout (byte offsets; digits are fixed-width, zero-padded, quoted so the payload stays valid
//! JSON for any server that looks inside it):
//!
//! ```text
//!  0        8                    28       36                   56        65          size-2  size
//!  |{"seq":"|<20 digits: seq>    |","ts":"|<20 digits: ts ns>  |","pad":"|xxxx...xxxx|"}     |
//! ```
//!
//! Fixed offsets let the publisher stamp a pre-built buffer in place (no allocation per message)
//! and the subscriber read both numbers without a JSON parser. This module never does I/O.
//!
//! The filtered fan-out scenario uses a second layout with the fields its content filters read
//! between the time stamp and the pad (the two-digit key `k` is stamped per message):
//!
//! ```text
//!  0        8       28       36      56      63  65                                                 118 size-2
//!  |{"seq":"|<seq>  |","ts":"|<ts>   |","k":"|NN |","sym":"IBM","px":101.5,"side":"B","qty":200,"pad":"|x…x|"}|
//! ```
//!
//! Both layouts share everything up to the `","` after the time stamp, which is all `decode` reads.

/// Bytes before the sequence digits.
const SEQ_PREFIX: &[u8] = b"{\"seq\":\"";
/// Bytes between the sequence digits and the timestamp digits.
const TS_PREFIX: &[u8] = b"\",\"ts\":\"";
/// Bytes between the timestamp digits and the padding.
const PAD_PREFIX: &[u8] = b"\",\"pad\":\"";
/// Bytes closing the padding string and the object.
const SUFFIX: &[u8] = b"\"}";
/// Width of each number field: enough for `u64::MAX` (20 digits).
const DIGITS: usize = 20;

/// Offset of the sequence digits.
const SEQ_OFFSET: usize = SEQ_PREFIX.len();
/// Offset of the scheduled-send-time digits.
const TS_OFFSET: usize = SEQ_OFFSET + DIGITS + TS_PREFIX.len();
/// Offset of the padding characters.
const PAD_OFFSET: usize = TS_OFFSET + DIGITS + PAD_PREFIX.len();

/// Smallest payload that fits the layout (an empty pad): 67 bytes.
pub const PAYLOAD_SIZE_MIN_BYTES: usize = PAD_OFFSET + SUFFIX.len();

/// Filtered layout: bytes between the time stamp digits and the key digits.
const KEY_PREFIX: &[u8] = b"\",\"k\":\"";
/// Filtered layout: digits of the key (`00`..`99`, a string so leading zeros stay valid JSON).
pub const KEY_DIGITS: usize = 2;
/// Filtered layout: the fields every filter's four shared predicates read, then the pad.
const FILTER_FIELDS: &[u8] =
    b"\",\"sym\":\"IBM\",\"px\":101.5,\"side\":\"B\",\"qty\":200,\"pad\":\"";
/// Offset of the key digits in the filtered layout.
const KEY_OFFSET: usize = TS_OFFSET + DIGITS + KEY_PREFIX.len();
/// Smallest payload that fits the filtered layout: 120 bytes.
pub const FILTERED_PAYLOAD_SIZE_MIN_BYTES: usize =
    KEY_OFFSET + KEY_DIGITS + FILTER_FIELDS.len() + SUFFIX.len();
/// Bytes common to both layouts right after the time stamp digits.
const AFTER_TS: &[u8] = b"\",\"";

/// Which payload layout a run uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// `seq`, `ts`, `pad`.
    Plain,
    /// `seq`, `ts`, the key `k` and the fields the filtered scenario's filters read, `pad`.
    Filtered,
}

impl Layout {
    /// Smallest payload size of this layout.
    pub fn size_min_bytes(self) -> usize {
        match self {
            Self::Plain => PAYLOAD_SIZE_MIN_BYTES,
            Self::Filtered => FILTERED_PAYLOAD_SIZE_MIN_BYTES,
        }
    }
}

/// Builds a payload of `layout` of exactly `size_bytes`, seq, ts and key zeroed.
pub fn template_for(layout: Layout, size_bytes: usize) -> Vec<u8> {
    match layout {
        Layout::Plain => template(size_bytes),
        Layout::Filtered => {
            assert!(
                size_bytes >= FILTERED_PAYLOAD_SIZE_MIN_BYTES,
                "filtered payload size {size_bytes} is below the minimum {FILTERED_PAYLOAD_SIZE_MIN_BYTES}"
            );
            let mut payload = Vec::with_capacity(size_bytes);
            payload.extend_from_slice(SEQ_PREFIX);
            payload.extend_from_slice(&[b'0'; DIGITS]);
            payload.extend_from_slice(TS_PREFIX);
            payload.extend_from_slice(&[b'0'; DIGITS]);
            payload.extend_from_slice(KEY_PREFIX);
            payload.extend_from_slice(&[b'0'; KEY_DIGITS]);
            payload.extend_from_slice(FILTER_FIELDS);
            payload.resize(size_bytes - SUFFIX.len(), b'x');
            payload.extend_from_slice(SUFFIX);
            assert_eq!(payload.len(), size_bytes);
            payload
        }
    }
}

/// Writes the two-digit key into a payload of the filtered layout, in place.
#[inline]
pub fn stamp_key(payload: &mut [u8], key: u8) {
    debug_assert!(key < 100, "the key has two digits");
    write_digits(
        &mut payload[KEY_OFFSET..KEY_OFFSET + KEY_DIGITS],
        u64::from(key),
    );
}

/// Builds a payload of exactly `size_bytes` with seq and ts zeroed, ready for [`stamp`].
pub fn template(size_bytes: usize) -> Vec<u8> {
    assert!(
        size_bytes >= PAYLOAD_SIZE_MIN_BYTES,
        "payload size {size_bytes} is below the minimum {PAYLOAD_SIZE_MIN_BYTES}"
    );
    let mut payload = Vec::with_capacity(size_bytes);
    payload.extend_from_slice(SEQ_PREFIX);
    payload.extend_from_slice(&[b'0'; DIGITS]);
    payload.extend_from_slice(TS_PREFIX);
    payload.extend_from_slice(&[b'0'; DIGITS]);
    payload.extend_from_slice(PAD_PREFIX);
    payload.resize(size_bytes - SUFFIX.len(), b'x');
    payload.extend_from_slice(SUFFIX);
    assert_eq!(payload.len(), size_bytes);
    payload
}

/// Writes `seq` and `scheduled_ns` into a payload built by [`template`], in place.
#[inline]
pub fn stamp(payload: &mut [u8], seq: u64, scheduled_ns: u64) {
    write_digits(&mut payload[SEQ_OFFSET..SEQ_OFFSET + DIGITS], seq);
    write_digits(&mut payload[TS_OFFSET..TS_OFFSET + DIGITS], scheduled_ns);
}

/// Reads `(seq, scheduled_ns)` back, or `None` when the bytes are not a benchmark payload.
#[inline]
pub fn decode(payload: &[u8]) -> Option<(u64, u64)> {
    if payload.len() < PAYLOAD_SIZE_MIN_BYTES
        || !payload.starts_with(SEQ_PREFIX)
        || &payload[SEQ_OFFSET + DIGITS..TS_OFFSET] != TS_PREFIX
        || &payload[TS_OFFSET + DIGITS..TS_OFFSET + DIGITS + AFTER_TS.len()] != AFTER_TS
        || !payload.ends_with(SUFFIX)
    {
        return None;
    }
    let seq = read_digits(&payload[SEQ_OFFSET..SEQ_OFFSET + DIGITS])?;
    let scheduled_ns = read_digits(&payload[TS_OFFSET..TS_OFFSET + DIGITS])?;
    Some((seq, scheduled_ns))
}

/// Writes `value` as exactly `out.len()` zero-padded decimal digits.
#[inline]
fn write_digits(out: &mut [u8], mut value: u64) {
    for digit in out.iter_mut().rev() {
        *digit = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// Parses zero-padded decimal digits; `None` on a non-digit or overflow.
#[inline]
fn read_digits(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |value, &digit| {
        if !digit.is_ascii_digit() {
            return None;
        }
        value.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_has_exact_size_and_is_valid_json() {
        for size in [PAYLOAD_SIZE_MIN_BYTES, 128, 1024] {
            let mut payload = template(size);
            stamp(&mut payload, 42, 1_234_567_890);
            assert_eq!(payload.len(), size);
            let value: serde_json::Value = serde_json::from_slice(&payload).expect("valid JSON");
            assert_eq!(value["seq"], "00000000000000000042");
            assert_eq!(value["ts"], "00000000001234567890");
        }
    }

    #[test]
    fn stamp_decode_round_trip() {
        let mut payload = template(128);
        for (seq, ts) in [
            (0, 0),
            (1, 999),
            (u64::MAX, u64::MAX),
            (123_456, 5_000_000_000),
        ] {
            stamp(&mut payload, seq, ts);
            assert_eq!(decode(&payload), Some((seq, ts)));
        }
    }

    #[test]
    fn filtered_layout_is_valid_json_and_decodes() {
        assert_eq!(FILTERED_PAYLOAD_SIZE_MIN_BYTES, 120);
        for size in [FILTERED_PAYLOAD_SIZE_MIN_BYTES, 128, 1024] {
            let mut payload = template_for(Layout::Filtered, size);
            stamp(&mut payload, 7, 99);
            stamp_key(&mut payload, 42);
            assert_eq!(payload.len(), size);
            let value: serde_json::Value = serde_json::from_slice(&payload).expect("valid JSON");
            assert_eq!(value["k"], "42");
            assert_eq!(value["sym"], "IBM");
            assert_eq!(value["qty"], 200);
            assert_eq!(decode(&payload), Some((7, 99)));
        }
    }

    #[test]
    fn decode_rejects_foreign_bytes() {
        assert_eq!(decode(b""), None);
        assert_eq!(decode(&[b'x'; 128]), None);
        let mut payload = template(128);
        payload[SEQ_OFFSET + 3] = b'a';
        assert_eq!(decode(&payload), None);
        let mut truncated = template(128);
        truncated.pop();
        assert_eq!(decode(&truncated), None);
    }
}
