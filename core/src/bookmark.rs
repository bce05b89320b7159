//! Bookmarks: the wire form of a message's journal position and the `bookmark` field of a
//! subscribe command.
//!
//! A message bookmark is `<publisher id>|<publisher sequence>|` ([`WireBookmark`]). A subscribe may
//! name where replay starts with `0` (the beginning of the journal), `0|1|` (now, no replay), a
//! message bookmark, a UTC timestamp `YYYYmmddTHHMMSS[.fffffffff][Z]`, a comma list of those, or a
//! range `[start:end]` whose brackets say whether each end is included ([`BookmarkSpec`]). This
//! module only turns text into those values and back; it never looks at a journal, so resolving a
//! point to a journal position (and "the oldest of a list") is the server's job.
//!
//! Subscribes are not on the hot path, so parsing allocates freely; only [`WireBookmark::write`],
//! which runs for every delivered message, formats without any allocation of its own.

use std::fmt;

use crate::civil::{days_from_civil, days_in_month};

/// Longest subscribe `bookmark` text accepted, in bytes. A list of one bookmark per publisher is the
/// longest thing a real client sends; this holds about a hundred of the longest message bookmarks
/// and keeps the work a hostile client can cause small.
pub const BOOKMARK_TEXT_BYTES_MAX: usize = 4096;

/// Most points a subscribe bookmark may name, counting the start and end lists of a range together.
pub const BOOKMARK_POINTS_MAX: usize = 256;

/// Digits in `u64::MAX` (18446744073709551615).
const U64_DECIMAL_DIGITS_MAX: usize = 20;

/// Longest text an error quotes from the offending element, so a log line stays readable.
const ERROR_EXCERPT_BYTES_MAX: usize = 64;

/// Nanoseconds in one second.
const NANOSECONDS_PER_SECOND: u64 = 1_000_000_000;

/// Most fraction digits a timestamp may carry: nanoseconds are the finest unit we keep.
const TIMESTAMP_FRACTION_DIGITS_MAX: usize = 9;

/// Length of the fixed part of a timestamp, `YYYYmmddTHHMMSS`.
const TIMESTAMP_FIXED_BYTES: usize = 15;

/// Where the `T` between date and time sits in a timestamp.
const TIMESTAMP_SEPARATOR_AT: usize = 8;

/// A message's position as the client sees it: "<publisher>|<sequence>|".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WireBookmark {
    /// Hash of the publishing client's name; clients with a bookmark store drop a delivery whose
    /// publisher id is 0, so the server only assigns non-zero ids.
    pub publisher: u64,
    /// The publisher's sequence number (its `s` header, or a server counter).
    pub sequence: u64,
}

impl WireBookmark {
    /// The special bookmark `0|1|` that means "now" in a subscribe.
    pub const NOW: WireBookmark = WireBookmark {
        publisher: 0,
        sequence: 1,
    };

    /// Longest wire form in bytes: two 20-digit numbers and two `|`, so callers can reserve space.
    pub const TEXT_BYTES_MAX: usize = 2 * U64_DECIMAL_DIGITS_MAX + 2;

    /// Parses exactly `<u64>|<u64>|` (the trailing `|` may be left out): decimal digits only, no
    /// spaces. Any publisher id is accepted here, 0 included; what 0 means is the subscribe
    /// parser's business.
    pub fn parse(text: &[u8]) -> Option<WireBookmark> {
        parse_wire(text).ok()
    }

    /// Formats `<publisher>|<sequence>|` into `text` and returns the part written, for writers that
    /// take a byte slice. Touches only the stack.
    pub fn format<'text>(
        &self,
        text: &'text mut [u8; WireBookmark::TEXT_BYTES_MAX],
    ) -> &'text [u8] {
        let mut length = write_decimal(text, 0, self.publisher);
        text[length] = b'|';
        length = write_decimal(text, length + 1, self.sequence);
        text[length] = b'|';
        length += 1;
        assert!(length <= WireBookmark::TEXT_BYTES_MAX);
        &text[..length]
    }

    /// Appends `<publisher>|<sequence>|` to `out`. Formats on the stack and copies once, so the
    /// only possible allocation is `out` growing when it lacks capacity.
    pub fn write(&self, out: &mut Vec<u8>) {
        let mut text = [0u8; WireBookmark::TEXT_BYTES_MAX];
        out.extend_from_slice(self.format(&mut text));
    }
}

impl fmt::Display for WireBookmark {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}|{}|", self.publisher, self.sequence)
    }
}

/// Writes `value` in decimal into `buffer` at `at` and returns the index just past the last digit.
fn write_decimal(buffer: &mut [u8], at: usize, value: u64) -> usize {
    // Digits come out least significant first, so build them at the end of a scratch array.
    let mut digits = [0u8; U64_DECIMAL_DIGITS_MAX];
    let mut start = digits.len();
    let mut rest = value;
    loop {
        start -= 1;
        digits[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    let digits = &digits[start..];
    buffer[at..at + digits.len()].copy_from_slice(digits);
    at + digits.len()
}

/// One point a subscription names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BookmarkPoint {
    /// `0`: the beginning of the journal.
    Epoch,
    /// `0|1|`: the current end of the journal (no replay).
    Now,
    /// A message bookmark: that message's position in the journal.
    After(WireBookmark),
    /// `YYYYmmddTHHMMSS[.fffffffff][Z]`, always UTC, as nanoseconds since the Unix epoch.
    Timestamp {
        /// Nanoseconds since 1970-01-01T00:00:00Z.
        unix_ns: u64,
    },
}

/// Where a bookmark range stops.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeEnd {
    /// The end points; like a start list, the server resolves several to one. Never empty.
    pub points: Vec<BookmarkPoint>,
    /// Whether a message exactly at the end point is delivered (`]` yes, `)` no).
    pub inclusive: bool,
}

/// A parsed subscribe bookmark.
///
/// | text                  | `start`               | `start_inclusive` | `end`                      |
/// |-----------------------|-----------------------|-------------------|----------------------------|
/// | `0`                   | `[Epoch]`             | false             | `None`                     |
/// | `0\|1\|`              | `[Now]`               | false             | `None`                     |
/// | `12\|3\|`             | `[After(12\|3\|)]`    | false             | `None`                     |
/// | `12\|3\|,20240101T000000` | `[After, Timestamp]` | false          | `None`                     |
/// | `[12\|3\|:0\|1\|)`    | `[After(12\|3\|)]`    | true              | `[Now]`, exclusive         |
/// | `(12\|3\|:]`          | `[After(12\|3\|)]`    | false             | `None` (open end)          |
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BookmarkSpec {
    /// Where replay starts; several points (a comma list) mean "the oldest of them that the journal
    /// holds", resolved by the server. Never empty.
    pub start: Vec<BookmarkPoint>,
    /// Whether a message exactly at the start point is delivered. For a range it is the opening
    /// bracket: `[` yes, `(` no. A plain (non-range) bookmark is always `false`: a client resumes
    /// with the bookmark of the last message it processed, so replay starts *after* that message.
    /// For a plain timestamp that means messages stamped strictly later, which differs from "at or
    /// after" only for a message stamped in that very nanosecond. `Epoch` and `Now` are not message
    /// positions, so the flag changes nothing for them.
    pub start_inclusive: bool,
    /// For a range, where it stops: once the end is reached the subscription completes and gets no
    /// more messages. `None` for a plain bookmark and for a range with an empty end (`[a:]`), which
    /// replays from `a` and then stays live like a plain bookmark.
    pub end: Option<RangeEnd>,
}

impl BookmarkSpec {
    /// Parses a subscribe's `bookmark` field. Surrounding ASCII whitespace of the whole text and of
    /// each list element is ignored.
    pub fn parse(text: &[u8]) -> Result<BookmarkSpec, BookmarkError> {
        if text.len() > BOOKMARK_TEXT_BYTES_MAX {
            return Err(BookmarkError::TooLong {
                length_bytes: text.len(),
                limit_bytes: BOOKMARK_TEXT_BYTES_MAX,
            });
        }
        let leading = leading_whitespace(text);
        let body = text.trim_ascii();
        if body.is_empty() {
            return Err(BookmarkError::Empty);
        }
        // Bookmarks and timestamps never contain a comma, so commas count the list elements
        // exactly; checking up front refuses an oversized list before parsing any of it.
        let commas = body.iter().filter(|&&byte| byte == b',').count();
        let spec = match (body[0], body[body.len() - 1]) {
            (open @ (b'[' | b'('), close) => {
                if close != b']' && close != b')' {
                    return Err(BookmarkError::UnclosedRange {
                        open: char::from(open),
                        position: leading,
                    });
                }
                parse_range(&body[1..body.len() - 1], leading + 1, open, close, commas)?
            }
            (_, close @ (b']' | b')')) => {
                return Err(BookmarkError::UnopenedRange {
                    close: char::from(close),
                    position: leading + body.len() - 1,
                })
            }
            _ => {
                if let Some(colon) = body.iter().position(|&byte| byte == b':') {
                    return Err(BookmarkError::ColonOutsideRange {
                        position: leading + colon,
                    });
                }
                check_point_count(commas + 1)?;
                let mut start = Vec::with_capacity(commas + 1);
                parse_list(body, leading, &mut start)?;
                BookmarkSpec {
                    start,
                    start_inclusive: false,
                    end: None,
                }
            }
        };
        assert!(!spec.start.is_empty());
        assert!(spec.end.as_ref().is_none_or(|end| !end.points.is_empty()));
        assert!(
            spec.start.len() + spec.end.as_ref().map_or(0, |end| end.points.len())
                <= BOOKMARK_POINTS_MAX
        );
        Ok(spec)
    }
}

/// Parses the inside of a range (between the brackets), which starts at byte `offset` of the text.
fn parse_range(
    inner: &[u8],
    offset: usize,
    open: u8,
    close: u8,
    commas: usize,
) -> Result<BookmarkSpec, BookmarkError> {
    let colons = inner.iter().filter(|&&byte| byte == b':').count();
    if colons != 1 {
        return Err(BookmarkError::RangeSeparator {
            count: colons,
            position: offset - 1,
        });
    }
    let colon = inner
        .iter()
        .position(|&byte| byte == b':')
        .expect("counted one colon");
    let (start_text, end_text) = (&inner[..colon], &inner[colon + 1..]);
    if start_text.trim_ascii().is_empty() {
        return Err(BookmarkError::EmptyRangeStart {
            position: offset - 1,
        });
    }
    let end_is_open = end_text.trim_ascii().is_empty();
    check_point_count(commas + if end_is_open { 1 } else { 2 })?;
    let mut start = Vec::new();
    parse_list(start_text, offset, &mut start)?;
    let end = if end_is_open {
        None
    } else {
        let mut points = Vec::new();
        parse_list(end_text, offset + colon + 1, &mut points)?;
        Some(RangeEnd {
            points,
            inclusive: close == b']',
        })
    };
    Ok(BookmarkSpec {
        start,
        start_inclusive: open == b'[',
        end,
    })
}

fn check_point_count(count: usize) -> Result<(), BookmarkError> {
    if count > BOOKMARK_POINTS_MAX {
        return Err(BookmarkError::TooManyPoints {
            count,
            limit: BOOKMARK_POINTS_MAX,
        });
    }
    Ok(())
}

fn leading_whitespace(text: &[u8]) -> usize {
    text.len() - text.trim_ascii_start().len()
}

/// Parses a comma list that starts at byte `offset` of the text, appending its points.
fn parse_list(
    text: &[u8],
    offset: usize,
    points: &mut Vec<BookmarkPoint>,
) -> Result<(), BookmarkError> {
    let mut piece_at = offset;
    for piece in text.split(|&byte| byte == b',') {
        let element = piece.trim_ascii();
        if element.is_empty() {
            return Err(BookmarkError::EmptyElement { position: piece_at });
        }
        points.push(parse_point(element, piece_at + leading_whitespace(piece))?);
        piece_at += piece.len() + 1;
    }
    Ok(())
}

/// Parses one trimmed list element that starts at byte `position` of the text.
fn parse_point(element: &[u8], position: usize) -> Result<BookmarkPoint, BookmarkError> {
    if element == b"0" {
        return Ok(BookmarkPoint::Epoch);
    }
    if element.contains(&b'|') {
        return match parse_wire(element) {
            Ok(WireBookmark::NOW) => Ok(BookmarkPoint::Now),
            Ok(bookmark) if bookmark.publisher == 0 => Err(BookmarkError::PublisherZero {
                element: excerpt(element),
                position,
            }),
            Ok(bookmark) => Ok(BookmarkPoint::After(bookmark)),
            Err(WireDefect::Expected { at, expected }) => {
                Err(BookmarkError::MalformedMessageBookmark {
                    element: excerpt(element),
                    position: position + at,
                    expected,
                })
            }
            Err(WireDefect::TooLarge { field }) => Err(BookmarkError::NumberTooLarge {
                element: excerpt(element),
                position,
                field,
            }),
        };
    }
    // Anything that starts like a date is taken for a timestamp, so a mistyped one gets an error
    // that says which part is wrong instead of "not a bookmark".
    let looks_like_timestamp = element.len() >= TIMESTAMP_SEPARATOR_AT
        && element[..TIMESTAMP_SEPARATOR_AT]
            .iter()
            .all(u8::is_ascii_digit);
    if looks_like_timestamp {
        return parse_timestamp(element, position)
            .map(|unix_ns| BookmarkPoint::Timestamp { unix_ns });
    }
    Err(BookmarkError::Unrecognized {
        element: excerpt(element),
        position,
    })
}

/// Why text is not a message bookmark, with offsets relative to the text.
enum WireDefect {
    Expected { at: usize, expected: &'static str },
    TooLarge { field: &'static str },
}

fn parse_wire(text: &[u8]) -> Result<WireBookmark, WireDefect> {
    let (publisher, at) = parse_decimal(
        text,
        0,
        "decimal digits of the publisher id",
        "publisher id",
    )?;
    if text.get(at) != Some(&b'|') {
        return Err(WireDefect::Expected {
            at,
            expected: "`|` after the publisher id",
        });
    }
    let (sequence, at) = parse_decimal(text, at + 1, "decimal digits of the sequence", "sequence")?;
    let end = match text.get(at) {
        None => at,
        Some(b'|') => at + 1,
        Some(_) => {
            return Err(WireDefect::Expected {
                at,
                expected: "`|` after the sequence",
            })
        }
    };
    if end != text.len() {
        return Err(WireDefect::Expected {
            at: end,
            expected: "nothing after the final `|`",
        });
    }
    Ok(WireBookmark {
        publisher,
        sequence,
    })
}

/// Reads decimal digits from `at`; returns the value and the index after the last digit.
fn parse_decimal(
    text: &[u8],
    at: usize,
    expected: &'static str,
    field: &'static str,
) -> Result<(u64, usize), WireDefect> {
    let digits = text[at..]
        .iter()
        .take_while(|byte| byte.is_ascii_digit())
        .count();
    if digits == 0 {
        return Err(WireDefect::Expected { at, expected });
    }
    let mut value: u64 = 0;
    for &digit in &text[at..at + digits] {
        value = value
            .checked_mul(10)
            .and_then(|value| value.checked_add(u64::from(digit - b'0')))
            .ok_or(WireDefect::TooLarge { field })?;
    }
    Ok((value, at + digits))
}

/// Parses `YYYYmmddTHHMMSS[.fffffffff][Z]` (UTC) into Unix nanoseconds.
fn parse_timestamp(element: &[u8], position: usize) -> Result<u64, BookmarkError> {
    let malformed = |at: usize, expected: &'static str| BookmarkError::MalformedTimestamp {
        element: excerpt(element),
        position: position + at,
        expected,
    };
    for at in 0..TIMESTAMP_FIXED_BYTES {
        let byte = element.get(at).copied();
        if at == TIMESTAMP_SEPARATOR_AT {
            if byte != Some(b'T') {
                return Err(malformed(at, "`T` between the date and the time"));
            }
        } else if !byte.is_some_and(|byte| byte.is_ascii_digit()) {
            let expected = if at < TIMESTAMP_SEPARATOR_AT {
                "a digit of the date YYYYmmdd"
            } else {
                "a digit of the time HHMMSS"
            };
            return Err(malformed(at, expected));
        }
    }
    // Every byte of the fixed part is now a checked digit, so these cannot fail.
    let number = |from: usize, to: usize| {
        element[from..to]
            .iter()
            .fold(0u32, |value, &digit| value * 10 + u32::from(digit - b'0'))
    };
    let year = number(0, 4);
    let month = number(4, 6);
    let day = number(6, 8);
    let hour = number(9, 11);
    let minute = number(11, 13);
    let second = number(13, 15);

    let mut at = TIMESTAMP_FIXED_BYTES;
    let mut fraction_ns: u64 = 0;
    if element.get(at) == Some(&b'.') {
        at += 1;
        let digits = element[at..]
            .iter()
            .take_while(|byte| byte.is_ascii_digit())
            .count();
        if digits == 0 {
            return Err(malformed(at, "fraction digits after `.`"));
        }
        if digits > TIMESTAMP_FRACTION_DIGITS_MAX {
            return Err(malformed(
                at + TIMESTAMP_FRACTION_DIGITS_MAX,
                "at most 9 fraction digits (nanoseconds)",
            ));
        }
        for &digit in &element[at..at + digits] {
            fraction_ns = fraction_ns * 10 + u64::from(digit - b'0');
        }
        fraction_ns *= 10u64.pow((TIMESTAMP_FRACTION_DIGITS_MAX - digits) as u32);
        at += digits;
    }
    if element.get(at) == Some(&b'Z') {
        at += 1;
    }
    if at != element.len() {
        return Err(malformed(at, "`.`, `Z` or the end of the timestamp"));
    }
    assert!(fraction_ns < NANOSECONDS_PER_SECOND);

    let out_of_range =
        |field: &'static str, value: u32, min: u32, max: u32| BookmarkError::TimestampField {
            element: excerpt(element),
            position,
            field,
            value,
            min,
            max,
        };
    if !(1..=12).contains(&month) {
        return Err(out_of_range("month", month, 1, 12));
    }
    let days_max = days_in_month(i64::from(year), month);
    if !(1..=days_max).contains(&day) {
        return Err(out_of_range("day", day, 1, days_max));
    }
    if hour >= 24 {
        return Err(out_of_range("hour", hour, 0, 23));
    }
    if minute >= 60 {
        return Err(out_of_range("minute", minute, 0, 59));
    }
    // AMPS timestamps carry no leap seconds, so 60 is refused like any other impossible second.
    if second >= 60 {
        return Err(out_of_range("second", second, 0, 59));
    }
    let days = days_from_civil(i64::from(year), month, day).expect("date validated above");
    let unix_ns = u64::try_from(days)
        .ok()
        .map(|days| days * 86_400 + u64::from(hour * 3600 + minute * 60 + second))
        .and_then(|seconds| seconds.checked_mul(NANOSECONDS_PER_SECOND))
        .and_then(|nanoseconds| nanoseconds.checked_add(fraction_ns));
    unix_ns.ok_or_else(|| BookmarkError::TimestampOutOfRange {
        element: excerpt(element),
        position,
    })
}

/// The offending text for an error message: escaped so control bytes and invalid UTF-8 cannot mangle
/// a log line, and cut short so a long element does not flood it.
fn excerpt(element: &[u8]) -> String {
    let shown = &element[..element.len().min(ERROR_EXCERPT_BYTES_MAX)];
    let mut text = shown.escape_ascii().to_string();
    if shown.len() < element.len() {
        text.push_str("...");
    }
    text
}

/// Why a subscribe's `bookmark` was refused; the text reads after "invalid bookmark: ". Positions
/// are byte offsets into the bookmark text as sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BookmarkError {
    /// Nothing but whitespace.
    #[error(
        "the bookmark is empty; send 0 to replay the whole journal, 0|1| for live messages only, \
         a message bookmark <publisher>|<sequence>|, a timestamp YYYYmmddTHHMMSS[.fff][Z], \
         a comma list of those or a range [start:end]"
    )]
    Empty,
    /// Longer than [`BOOKMARK_TEXT_BYTES_MAX`].
    #[error("the bookmark is {length_bytes} bytes, the limit is {limit_bytes} bytes")]
    TooLong {
        /// Length of the text as sent.
        length_bytes: usize,
        /// The limit, [`BOOKMARK_TEXT_BYTES_MAX`].
        limit_bytes: usize,
    },
    /// More list elements than [`BOOKMARK_POINTS_MAX`].
    #[error("the bookmark names {count} points, the limit is {limit}")]
    TooManyPoints {
        /// Points named, start and end lists together.
        count: usize,
        /// The limit, [`BOOKMARK_POINTS_MAX`].
        limit: usize,
    },
    /// Two commas in a row, or a comma at either end of a list.
    #[error("empty list element at byte {position}; remove the extra comma")]
    EmptyElement {
        /// Where the empty element starts.
        position: usize,
    },
    /// An element that is none of the known forms.
    #[error(
        "`{element}` at byte {position} is not 0, 0|1|, a message bookmark \
         <publisher>|<sequence>| or a timestamp YYYYmmddTHHMMSS[.fff][Z]"
    )]
    Unrecognized {
        /// The element, escaped and shortened.
        element: String,
        /// Where the element starts.
        position: usize,
    },
    /// An element with a `|` that is not `<digits>|<digits>|`.
    #[error("in message bookmark `{element}`, expected {expected} at byte {position}")]
    MalformedMessageBookmark {
        /// The element, escaped and shortened.
        element: String,
        /// Where the defect is.
        position: usize,
        /// What should have been there.
        expected: &'static str,
    },
    /// A publisher id or sequence above `u64::MAX`.
    #[error(
        "the {field} of message bookmark `{element}` at byte {position} does not fit in 64 bits"
    )]
    NumberTooLarge {
        /// The element, escaped and shortened.
        element: String,
        /// Where the element starts.
        position: usize,
        /// `publisher id` or `sequence`.
        field: &'static str,
    },
    /// Publisher id 0, which no message has; only `0|1|` (now) is special.
    #[error(
        "message bookmark `{element}` at byte {position} has publisher id 0, which no message has; \
         use 0|1| for now or 0 for the beginning of the journal"
    )]
    PublisherZero {
        /// The element, escaped and shortened.
        element: String,
        /// Where the element starts.
        position: usize,
    },
    /// Something that starts like a timestamp but is not shaped like one.
    #[error(
        "in timestamp `{element}`, expected {expected} at byte {position}; \
         the form is YYYYmmddTHHMMSS[.fffffffff][Z] in UTC"
    )]
    MalformedTimestamp {
        /// The element, escaped and shortened.
        element: String,
        /// Where the defect is.
        position: usize,
        /// What should have been there.
        expected: &'static str,
    },
    /// A timestamp with an impossible month, day, hour, minute or second.
    #[error(
        "timestamp `{element}` at byte {position} has {field} {value}, expected {min} to {max}"
    )]
    TimestampField {
        /// The element, escaped and shortened.
        element: String,
        /// Where the element starts.
        position: usize,
        /// Which field is wrong.
        field: &'static str,
        /// Its value.
        value: u32,
        /// Smallest valid value.
        min: u32,
        /// Largest valid value (for a day, of that month in that year).
        max: u32,
    },
    /// A valid date that Unix nanoseconds in 64 bits cannot hold.
    #[error(
        "timestamp `{element}` at byte {position} is outside 19700101T000000Z to \
         25540721T233433.709551615Z, the times the journal can hold"
    )]
    TimestampOutOfRange {
        /// The element, escaped and shortened.
        element: String,
        /// Where the element starts.
        position: usize,
    },
    /// A range that opens with a bracket but does not end with one.
    #[error("range opened with `{open}` at byte {position} does not end with `]` or `)`")]
    UnclosedRange {
        /// `[` or `(`.
        open: char,
        /// Where the opening bracket is.
        position: usize,
    },
    /// Text that ends with a closing bracket but does not start with an opening one.
    #[error("`{close}` at byte {position} closes a range that does not start with `[` or `(`")]
    UnopenedRange {
        /// `]` or `)`.
        close: char,
        /// Where the closing bracket is.
        position: usize,
    },
    /// A range without exactly one `:` between its start and end.
    #[error(
        "the range at byte {position} has {count} `:`; write exactly one between start and end, \
         as in [start:end]"
    )]
    RangeSeparator {
        /// How many `:` the range holds.
        count: usize,
        /// Where the opening bracket is.
        position: usize,
    },
    /// A `:` in a bookmark that is not a bracketed range.
    #[error(
        "`:` at byte {position} outside a range; write a range with brackets, as in [start:end]"
    )]
    ColonOutsideRange {
        /// Where the colon is.
        position: usize,
    },
    /// A range with nothing before the `:`.
    #[error(
        "the range at byte {position} has no start; use 0 to start at the beginning of the journal"
    )]
    EmptyRangeStart {
        /// Where the opening bracket is.
        position: usize,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn after(publisher: u64, sequence: u64) -> BookmarkPoint {
        BookmarkPoint::After(WireBookmark {
            publisher,
            sequence,
        })
    }

    fn parse(text: &str) -> BookmarkSpec {
        BookmarkSpec::parse(text.as_bytes())
            .unwrap_or_else(|error| panic!("{text:?} should parse: {error}"))
    }

    fn error(text: &str) -> BookmarkError {
        match BookmarkSpec::parse(text.as_bytes()) {
            Ok(spec) => panic!("{text:?} should fail, parsed as {spec:?}"),
            Err(error) => error,
        }
    }

    fn plain(start: Vec<BookmarkPoint>) -> BookmarkSpec {
        BookmarkSpec {
            start,
            start_inclusive: false,
            end: None,
        }
    }

    #[test]
    fn wire_bookmark_round_trips() {
        for (publisher, sequence) in [
            (1, 0),
            (7_061_976_792_344_756_804, 3),
            (u64::MAX, u64::MAX),
            (0, 1),
        ] {
            let bookmark = WireBookmark {
                publisher,
                sequence,
            };
            let mut out = Vec::new();
            bookmark.write(&mut out);
            assert_eq!(out, format!("{publisher}|{sequence}|").as_bytes());
            assert_eq!(bookmark.to_string().as_bytes(), &out[..]);
            assert_eq!(WireBookmark::parse(&out), Some(bookmark));
        }
        let mut longest = Vec::new();
        WireBookmark {
            publisher: u64::MAX,
            sequence: u64::MAX,
        }
        .write(&mut longest);
        assert_eq!(longest.len(), WireBookmark::TEXT_BYTES_MAX);
        let mut text = [0u8; WireBookmark::TEXT_BYTES_MAX];
        assert_eq!(
            WireBookmark {
                publisher: 7,
                sequence: 0
            }
            .format(&mut text),
            b"7|0|"
        );
    }

    #[test]
    fn wire_bookmark_write_appends_without_reallocating() {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(b"bm=");
        let buffer = out.as_ptr();
        WireBookmark {
            publisher: 16_561_197_184_232_653_812,
            sequence: 2,
        }
        .write(&mut out);
        assert_eq!(out, b"bm=16561197184232653812|2|");
        assert_eq!(out.as_ptr(), buffer);
        assert_eq!(out.capacity(), 64);
    }

    #[test]
    fn wire_bookmark_parse_is_strict() {
        assert_eq!(
            WireBookmark::parse(b"12|3"),
            Some(WireBookmark {
                publisher: 12,
                sequence: 3
            })
        );
        for bad in [
            &b""[..],
            b"|",
            b"12|",
            b"|3|",
            b"12||",
            b"12|3||",
            b"12|3|x",
            b" 12|3|",
            b"12 |3|",
            b"12|3| ",
            b"+12|3|",
            b"12|-3|",
            b"18446744073709551616|1|",
            b"1|18446744073709551616|",
            b"12,3",
        ] {
            assert_eq!(
                WireBookmark::parse(bad),
                None,
                "{:?}",
                bad.escape_ascii().to_string()
            );
        }
        assert_eq!(
            WireBookmark::parse(b"18446744073709551615|0018446744073709551615|"),
            Some(WireBookmark {
                publisher: u64::MAX,
                sequence: u64::MAX
            })
        );
    }

    #[test]
    fn special_values() {
        assert_eq!(parse("0"), plain(vec![BookmarkPoint::Epoch]));
        assert_eq!(parse("0|1|"), plain(vec![BookmarkPoint::Now]));
        assert_eq!(parse("0|1"), plain(vec![BookmarkPoint::Now]));
        assert_eq!(parse("  0|1|\t\r\n"), plain(vec![BookmarkPoint::Now]));
        assert_eq!(
            parse("12278825794468905590|1|"),
            plain(vec![after(12_278_825_794_468_905_590, 1)])
        );
    }

    #[test]
    fn lists_keep_order_and_trim_elements() {
        assert_eq!(
            parse(" 77|4| , 20240229T235959.5Z,0|1|,0 ,88|0"),
            plain(vec![
                after(77, 4),
                BookmarkPoint::Timestamp {
                    unix_ns: 1_709_251_199_500_000_000
                },
                BookmarkPoint::Now,
                BookmarkPoint::Epoch,
                after(88, 0),
            ])
        );
    }

    #[test]
    fn every_range_bracket_combination() {
        for (text, start_inclusive, end_inclusive) in [
            ("[1|2|:3|4|]", true, true),
            ("(1|2|:3|4|]", false, true),
            ("[1|2|:3|4|)", true, false),
            ("(1|2|:3|4|)", false, false),
        ] {
            assert_eq!(
                parse(text),
                BookmarkSpec {
                    start: vec![after(1, 2)],
                    start_inclusive,
                    end: Some(RangeEnd {
                        points: vec![after(3, 4)],
                        inclusive: end_inclusive,
                    }),
                },
                "{text}"
            );
        }
    }

    #[test]
    fn ranges_take_lists_timestamps_and_whitespace() {
        assert_eq!(
            parse(" [ 0 , 5|6| : 20240101T000000 , 0|1| ) "),
            BookmarkSpec {
                start: vec![BookmarkPoint::Epoch, after(5, 6)],
                start_inclusive: true,
                end: Some(RangeEnd {
                    points: vec![
                        BookmarkPoint::Timestamp {
                            unix_ns: 1_704_067_200_000_000_000
                        },
                        BookmarkPoint::Now,
                    ],
                    inclusive: false,
                }),
            }
        );
    }

    #[test]
    fn range_with_empty_end_has_no_end() {
        for (text, start_inclusive) in [("[1|2|:]", true), ("(1|2|: )", false)] {
            assert_eq!(
                parse(text),
                BookmarkSpec {
                    start: vec![after(1, 2)],
                    start_inclusive,
                    end: None,
                },
                "{text}"
            );
        }
    }

    #[test]
    fn timestamps_with_and_without_fraction_and_zone() {
        let cases: [(&str, u64); 9] = [
            ("19700101T000000", 0),
            ("19700101T000000Z", 0),
            ("20240229T235959.5Z", 1_709_251_199_500_000_000),
            ("20240229T235959.5", 1_709_251_199_500_000_000),
            ("20240229T235959Z", 1_709_251_199_000_000_000),
            ("20261121T222150.394905Z", 1_795_299_710_394_905_000),
            ("20000301T000000.000000001", 951_868_800_000_000_001),
            ("20000301T000000.123456789Z", 951_868_800_123_456_789),
            ("25540721T233433.709551615Z", u64::MAX),
        ];
        for (text, unix_ns) in cases {
            assert_eq!(
                parse(text),
                plain(vec![BookmarkPoint::Timestamp { unix_ns }]),
                "{text}"
            );
        }
    }

    #[test]
    fn leap_days_follow_the_gregorian_rules() {
        assert!(BookmarkSpec::parse(b"20000229T000000").is_ok());
        assert!(BookmarkSpec::parse(b"20240229T000000").is_ok());
        for text in ["19000229T000000", "20230229T000000", "21000229T000000"] {
            assert!(
                matches!(
                    error(text),
                    BookmarkError::TimestampField {
                        field: "day",
                        value: 29,
                        max: 28,
                        ..
                    }
                ),
                "{text}"
            );
        }
    }

    #[test]
    fn limits_are_enforced() {
        let long = "0,".repeat(BOOKMARK_TEXT_BYTES_MAX / 2) + "0";
        assert_eq!(
            error(&long),
            BookmarkError::TooLong {
                length_bytes: BOOKMARK_TEXT_BYTES_MAX + 1,
                limit_bytes: BOOKMARK_TEXT_BYTES_MAX
            }
        );
        let most = vec!["0"; BOOKMARK_POINTS_MAX].join(",");
        assert_eq!(parse(&most).start.len(), BOOKMARK_POINTS_MAX);
        let too_many = vec!["0"; BOOKMARK_POINTS_MAX + 1].join(",");
        assert_eq!(
            error(&too_many),
            BookmarkError::TooManyPoints {
                count: BOOKMARK_POINTS_MAX + 1,
                limit: BOOKMARK_POINTS_MAX
            }
        );
        // A range counts its start and end lists together.
        let half = vec!["0"; BOOKMARK_POINTS_MAX / 2].join(",");
        assert!(BookmarkSpec::parse(format!("[{half}:{half}]").as_bytes()).is_ok());
        assert_eq!(
            error(&format!("[{half}:{half},0|1|]")),
            BookmarkError::TooManyPoints {
                count: BOOKMARK_POINTS_MAX + 1,
                limit: BOOKMARK_POINTS_MAX
            }
        );
    }

    #[test]
    fn structural_errors() {
        assert_eq!(error(""), BookmarkError::Empty);
        assert_eq!(error(" \t "), BookmarkError::Empty);
        assert_eq!(
            error("1|2|,,3|4|"),
            BookmarkError::EmptyElement { position: 5 }
        );
        assert_eq!(error("1|2|, "), BookmarkError::EmptyElement { position: 5 });
        assert_eq!(error(",0"), BookmarkError::EmptyElement { position: 0 });
        assert_eq!(
            error(" [1|2|:3|4|"),
            BookmarkError::UnclosedRange {
                open: '[',
                position: 1
            }
        );
        assert_eq!(
            error("1|2|:3|4|)"),
            BookmarkError::UnopenedRange {
                close: ')',
                position: 9
            }
        );
        assert_eq!(
            error("[1|2|]"),
            BookmarkError::RangeSeparator {
                count: 0,
                position: 0
            }
        );
        assert_eq!(
            error("(1|2|:3|4|:5|6|)"),
            BookmarkError::RangeSeparator {
                count: 2,
                position: 0
            }
        );
        assert_eq!(
            error("1|2|:3|4|"),
            BookmarkError::ColonOutsideRange { position: 4 }
        );
        assert_eq!(
            error("[ :3|4|]"),
            BookmarkError::EmptyRangeStart { position: 0 }
        );
        assert_eq!(error("[:]"), BookmarkError::EmptyRangeStart { position: 0 });
        assert_eq!(
            error("[1|2|:3|4|,]"),
            BookmarkError::EmptyElement { position: 11 }
        );
    }

    #[test]
    fn element_errors() {
        for text in ["recent", "abc", "00", "12345", "[[0:0]]"] {
            assert!(
                matches!(error(text), BookmarkError::Unrecognized { .. }),
                "{text}"
            );
        }
        assert_eq!(
            error("1|2|, 12|x|"),
            BookmarkError::MalformedMessageBookmark {
                element: "12|x|".into(),
                position: 9,
                expected: "decimal digits of the sequence"
            }
        );
        assert!(matches!(
            error("12 |3|"),
            BookmarkError::MalformedMessageBookmark {
                position: 2,
                expected: "`|` after the publisher id",
                ..
            }
        ));
        assert!(matches!(
            error("[[1|2|:3|4|]]"),
            BookmarkError::MalformedMessageBookmark { position: 1, .. }
        ));
        assert!(matches!(
            error("|3|"),
            BookmarkError::MalformedMessageBookmark { position: 0, .. }
        ));
        assert!(matches!(
            error("1|3|4"),
            BookmarkError::MalformedMessageBookmark {
                position: 4,
                expected: "nothing after the final `|`",
                ..
            }
        ));
        assert!(matches!(
            error("1|3x"),
            BookmarkError::MalformedMessageBookmark {
                position: 3,
                expected: "`|` after the sequence",
                ..
            }
        ));
        assert_eq!(
            error("18446744073709551616|1|"),
            BookmarkError::NumberTooLarge {
                element: "18446744073709551616|1|".into(),
                position: 0,
                field: "publisher id"
            }
        );
        assert!(matches!(
            error("1|99999999999999999999|"),
            BookmarkError::NumberTooLarge {
                field: "sequence",
                ..
            }
        ));
        for text in ["0|0|", "0|5|", "0|2"] {
            assert!(
                matches!(
                    error(text),
                    BookmarkError::PublisherZero { position: 0, .. }
                ),
                "{text}"
            );
        }
    }

    #[test]
    fn timestamp_errors() {
        let malformed = |text: &str| match error(text) {
            BookmarkError::MalformedTimestamp { position, .. } => position,
            other => panic!("{text}: {other:?}"),
        };
        assert_eq!(malformed("20240229"), 8);
        assert_eq!(malformed("20240229 120000"), 8);
        assert_eq!(malformed("20240229T1200"), 13);
        assert_eq!(malformed("20240229T12000x"), 14);
        assert_eq!(malformed("20240229T120000."), 16);
        assert_eq!(malformed("20240229T120000.1234567890"), 25);
        assert_eq!(malformed("20240229T120000+0100"), 15);
        assert_eq!(malformed("20240229T120000ZZ"), 16);
        assert_eq!(malformed("20240229T120000.5z"), 17);
        assert_eq!(malformed("0,20240229T1200"), 15);

        let field = |text: &str| match error(text) {
            BookmarkError::TimestampField {
                field, value, max, ..
            } => (field, value, max),
            other => panic!("{text}: {other:?}"),
        };
        assert_eq!(field("20241301T000000"), ("month", 13, 12));
        assert_eq!(field("20240001T000000"), ("month", 0, 12));
        assert_eq!(field("20240431T000000"), ("day", 31, 30));
        assert_eq!(field("20240100T000000"), ("day", 0, 31));
        assert_eq!(field("20240101T240000"), ("hour", 24, 23));
        assert_eq!(field("20240101T006000"), ("minute", 60, 59));
        assert_eq!(field("20240101T000060"), ("second", 60, 59));

        for text in [
            "19691231T235959.999999999Z",
            "00000101T000000",
            "25540721T233433.709551616Z",
            "99991231T235959",
        ] {
            assert!(
                matches!(
                    error(text),
                    BookmarkError::TimestampOutOfRange { position: 0, .. }
                ),
                "{text}"
            );
        }
    }

    #[test]
    fn errors_read_well_and_stay_short() {
        let message = format!("invalid bookmark: {}", error("1|2|,0|7|"));
        assert_eq!(
            message,
            "invalid bookmark: message bookmark `0|7|` at byte 5 has publisher id 0, which no \
             message has; use 0|1| for now or 0 for the beginning of the journal"
        );
        let message = error("20240431T000000").to_string();
        assert_eq!(
            message,
            "timestamp `20240431T000000` at byte 0 has day 31, expected 1 to 30"
        );
        let long = format!("x{}\u{1}", "y".repeat(200));
        let BookmarkError::Unrecognized { element, .. } = error(&long) else {
            panic!("expected Unrecognized");
        };
        assert_eq!(
            element,
            format!("x{}...", "y".repeat(ERROR_EXCERPT_BYTES_MAX - 1))
        );
        let BookmarkError::Unrecognized { element, .. } = error("a\u{1}\u{ff}") else {
            panic!("expected Unrecognized");
        };
        assert_eq!(element, "a\\x01\\xc3\\xbf");
    }

    /// Formats a time the way the tests expect the parser to read it back, with all nine digits.
    fn timestamp_text(unix_ns: u64) -> String {
        let seconds = unix_ns / NANOSECONDS_PER_SECOND;
        let (year, month, day) = crate::civil::civil_from_days((seconds / 86_400) as i64);
        let second_of_day = seconds % 86_400;
        format!(
            "{year:04}{month:02}{day:02}T{:02}{:02}{:02}.{:09}Z",
            second_of_day / 3600,
            second_of_day / 60 % 60,
            second_of_day % 60,
            unix_ns % NANOSECONDS_PER_SECOND
        )
    }

    proptest! {
        #[test]
        fn wire_bookmark_write_then_parse_round_trips(publisher in any::<u64>(), sequence in any::<u64>(), prefix in proptest::collection::vec(any::<u8>(), 0..8)) {
            let bookmark = WireBookmark { publisher, sequence };
            let mut out = prefix.clone();
            bookmark.write(&mut out);
            prop_assert_eq!(&out[..prefix.len()], &prefix[..]);
            prop_assert_eq!(WireBookmark::parse(&out[prefix.len()..]), Some(bookmark));
            let displayed = bookmark.to_string();
            prop_assert_eq!(displayed.as_bytes(), &out[prefix.len()..]);
        }

        #[test]
        fn message_bookmarks_parse_as_points(publisher in 1..=u64::MAX, sequence in any::<u64>()) {
            let bookmark = WireBookmark { publisher, sequence };
            let spec = BookmarkSpec::parse(bookmark.to_string().as_bytes()).unwrap();
            prop_assert_eq!(spec, plain(vec![BookmarkPoint::After(bookmark)]));
        }

        #[test]
        fn timestamps_round_trip(unix_ns in any::<u64>()) {
            let text = timestamp_text(unix_ns);
            let spec = BookmarkSpec::parse(text.as_bytes()).unwrap();
            prop_assert_eq!(spec, plain(vec![BookmarkPoint::Timestamp { unix_ns }]));
        }

        #[test]
        fn parsers_never_panic_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = WireBookmark::parse(&bytes);
            let _ = BookmarkSpec::parse(&bytes);
        }

        #[test]
        fn parsers_never_panic_on_bookmark_like_text(text in "[0-9|,:\\[\\]() TZ.x]{0,64}") {
            let _ = WireBookmark::parse(text.as_bytes());
            if let Ok(spec) = BookmarkSpec::parse(text.as_bytes()) {
                prop_assert!(!spec.start.is_empty());
            }
        }
    }
}
