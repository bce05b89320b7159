//! Filter text → tokens, each with the byte offset where it starts.
//!
//! The lexer owns the spelling rules: XPath-like identifiers (`/a/b`, `/a[0]`, `/55`, `/@attr`,
//! bracketed `[/name with spaces]`), number literals, quoted strings with AMPS escapes, raw strings
//! `r'...'`, words (keywords and function names, case-insensitive) and operator symbols. It never
//! decides what a word means (the parser does) and never panics: every malformed spelling becomes
//! a [`FilterError`] naming the offset.
//!
//! A `/` starts a path when a name character follows it directly; otherwise it is the division
//! operator. That is the AMPS rule "division must be surrounded by spaces" (`/a / /b`), and it is
//! why `/qty*/px` reads as a product of two fields.

use super::parser::{FieldPath, Segment};
use super::{FilterError, MAX_ARRAY_INDEX, MAX_PATH_SEGMENTS};

/// One token of filter text.
#[derive(Debug, Clone, PartialEq)]
pub enum TokenKind {
    /// A field path such as `/a/b[0]`.
    Path(FieldPath),
    /// An integer literal that fits in i64.
    Int(i64),
    /// A float literal (or an integer too large for i64).
    Float(f64),
    /// A quoted string literal, escapes already processed.
    Str(Vec<u8>),
    /// A bare word: keyword or function name, as written.
    Word(String),
    /// `(`
    LeftParen,
    /// `)`
    RightParen,
    /// `,`
    Comma,
    /// `=` or `==`
    Equal,
    /// `!=` or `<>`
    NotEqual,
    /// `<`
    Less,
    /// `<=`
    LessEqual,
    /// `>`
    Greater,
    /// `>=`
    GreaterEqual,
    /// `+`
    Plus,
    /// `-`
    Minus,
    /// `*`
    Star,
    /// `/` followed by a space or another non-name character
    Slash,
    /// `%`
    Percent,
    /// End of the text.
    End,
}

impl TokenKind {
    /// How the token reads in an error message.
    pub fn describe(&self) -> String {
        match self {
            TokenKind::Path(path) => format!("'{path}'"),
            TokenKind::Int(value) => format!("'{value}'"),
            TokenKind::Float(value) => format!("'{value}'"),
            TokenKind::Str(bytes) => format!("string '{}'", String::from_utf8_lossy(bytes)),
            TokenKind::Word(word) => format!("'{word}'"),
            TokenKind::LeftParen => "'('".into(),
            TokenKind::RightParen => "')'".into(),
            TokenKind::Comma => "','".into(),
            TokenKind::Equal => "'='".into(),
            TokenKind::NotEqual => "'!='".into(),
            TokenKind::Less => "'<'".into(),
            TokenKind::LessEqual => "'<='".into(),
            TokenKind::Greater => "'>'".into(),
            TokenKind::GreaterEqual => "'>='".into(),
            TokenKind::Plus => "'+'".into(),
            TokenKind::Minus => "'-'".into(),
            TokenKind::Star => "'*'".into(),
            TokenKind::Slash => "'/'".into(),
            TokenKind::Percent => "'%'".into(),
            TokenKind::End => "end of filter".into(),
        }
    }
}

/// A token and the byte offset of its first character.
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    /// What was read.
    pub kind: TokenKind,
    /// Byte offset in the filter text.
    pub position: usize,
}

/// Pull-style tokenizer over filter text.
pub struct Lexer<'t> {
    text: &'t str,
    bytes: &'t [u8],
    pos: usize,
}

/// May a path segment start with this byte? Digits are allowed for FIX tags (`/55`), `@` for XML
/// attributes; bytes ≥ 0x80 let UTF-8 names through unchanged.
fn is_name_start(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'@' || byte >= 0x80
}

/// May this byte continue a path segment? XML names also allow `-` and `.`, so `/a-b` is one name:
/// subtraction needs spaces, as division does.
fn is_name_char(byte: u8) -> bool {
    is_name_start(byte) || byte == b'-' || byte == b'.'
}

fn is_word_char(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_'
}

impl<'t> Lexer<'t> {
    /// A lexer positioned at the start of `text`.
    pub fn new(text: &'t str) -> Lexer<'t> {
        Lexer {
            text,
            bytes: text.as_bytes(),
            pos: 0,
        }
    }

    fn peek_at(&self, offset: usize) -> Option<u8> {
        self.bytes.get(self.pos + offset).copied()
    }

    fn literal_error(position: usize, message: impl Into<String>) -> FilterError {
        FilterError::Literal {
            position,
            message: message.into(),
        }
    }

    /// Read the next token; `TokenKind::End` at the end (and forever after).
    pub fn next_token(&mut self) -> Result<Token, FilterError> {
        while let Some(byte) = self.peek_at(0) {
            if byte.is_ascii_whitespace() {
                self.pos += 1;
            } else {
                break;
            }
        }
        let start = self.pos;
        let Some(byte) = self.peek_at(0) else {
            return Ok(Token {
                kind: TokenKind::End,
                position: start,
            });
        };
        let next = self.peek_at(1);
        let (kind, length) = match byte {
            b'(' => (TokenKind::LeftParen, 1),
            b')' => (TokenKind::RightParen, 1),
            b',' => (TokenKind::Comma, 1),
            b'+' => (TokenKind::Plus, 1),
            b'-' => (TokenKind::Minus, 1),
            b'*' => (TokenKind::Star, 1),
            b'%' => (TokenKind::Percent, 1),
            b'=' if next == Some(b'=') => (TokenKind::Equal, 2),
            b'=' => (TokenKind::Equal, 1),
            b'!' if next == Some(b'=') => (TokenKind::NotEqual, 2),
            b'<' if next == Some(b'>') => (TokenKind::NotEqual, 2),
            b'<' if next == Some(b'=') => (TokenKind::LessEqual, 2),
            b'<' => (TokenKind::Less, 1),
            b'>' if next == Some(b'=') => (TokenKind::GreaterEqual, 2),
            b'>' => (TokenKind::Greater, 1),
            b'/' if next.is_some_and(is_name_start) => {
                let path = self.read_path()?;
                return Ok(Token {
                    kind: TokenKind::Path(path),
                    position: start,
                });
            }
            b'/' => (TokenKind::Slash, 1),
            b'[' => {
                let path = self.read_bracketed_path()?;
                return Ok(Token {
                    kind: TokenKind::Path(path),
                    position: start,
                });
            }
            b'\'' | b'"' => {
                let bytes = self.read_string(false)?;
                return Ok(Token {
                    kind: TokenKind::Str(bytes),
                    position: start,
                });
            }
            b'r' | b'R' if matches!(next, Some(b'\'' | b'"')) => {
                self.pos += 1;
                let bytes = self.read_string(true)?;
                return Ok(Token {
                    kind: TokenKind::Str(bytes),
                    position: start,
                });
            }
            b'0'..=b'9' => return self.read_number(),
            b'.' if next.is_some_and(|b| b.is_ascii_digit()) => return self.read_number(),
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                let mut end = self.pos;
                while end < self.bytes.len() && is_word_char(self.bytes[end]) {
                    end += 1;
                }
                let word = self.text[start..end].to_string();
                self.pos = end;
                return Ok(Token {
                    kind: TokenKind::Word(word),
                    position: start,
                });
            }
            _ => {
                let found = self.text[start..].chars().next().unwrap_or('?');
                return Err(FilterError::Syntax {
                    position: start,
                    expected: "a field, literal, operator or parenthesis".into(),
                    found: format!("'{found}'"),
                });
            }
        };
        self.pos += length;
        Ok(Token {
            kind,
            position: start,
        })
    }

    /// `/name(/name | [index])*`, positioned at the first `/`.
    fn read_path(&mut self) -> Result<FieldPath, FilterError> {
        let start = self.pos;
        let mut segments = Vec::new();
        while self.peek_at(0) == Some(b'/') && self.peek_at(1).is_some_and(is_name_start) {
            self.pos += 1;
            let name_start = self.pos;
            while self.peek_at(0).is_some_and(is_name_char) {
                self.pos += 1;
            }
            segments.push(Segment::Key(self.bytes[name_start..self.pos].into()));
            self.read_indexes(&mut segments)?;
            Self::check_segments(start, segments.len())?;
        }
        Ok(FieldPath::new(segments))
    }

    /// `[/name with spaces/other]`, positioned at `[`; indexes may follow the closing bracket.
    fn read_bracketed_path(&mut self) -> Result<FieldPath, FilterError> {
        let start = self.pos;
        let Some(close) = self.bytes[start..].iter().position(|&b| b == b']') else {
            return Err(Self::literal_error(
                start,
                "unterminated bracketed field name",
            ));
        };
        let inner = &self.bytes[start + 1..start + close];
        if inner.first() != Some(&b'/') {
            return Err(Self::literal_error(
                start,
                "a bracketed field name must start with '/'",
            ));
        }
        let mut segments = Vec::new();
        for name in inner[1..].split(|&b| b == b'/') {
            if name.is_empty() {
                return Err(Self::literal_error(
                    start,
                    "empty segment in bracketed field name",
                ));
            }
            segments.push(Segment::Key(name.into()));
            Self::check_segments(start, segments.len())?;
        }
        self.pos = start + close + 1;
        self.read_indexes(&mut segments)?;
        Self::check_segments(start, segments.len())?;
        Ok(FieldPath::new(segments))
    }

    fn check_segments(position: usize, count: usize) -> Result<(), FilterError> {
        if count > MAX_PATH_SEGMENTS {
            return Err(FilterError::Limit {
                position,
                what: "number of segments in a field path",
                limit: MAX_PATH_SEGMENTS,
            });
        }
        Ok(())
    }

    /// Zero or more `[digits]` subscripts.
    fn read_indexes(&mut self, segments: &mut Vec<Segment>) -> Result<(), FilterError> {
        while self.peek_at(0) == Some(b'[') {
            let open = self.pos;
            let mut end = open + 1;
            let mut index: u64 = 0;
            while let Some(digit @ b'0'..=b'9') = self.bytes.get(end).copied() {
                index = index
                    .saturating_mul(10)
                    .saturating_add(u64::from(digit - b'0'));
                end += 1;
            }
            if end == open + 1 || self.bytes.get(end) != Some(&b']') {
                return Err(Self::literal_error(
                    open,
                    "array subscript must be [digits]",
                ));
            }
            if index > u64::from(MAX_ARRAY_INDEX) {
                return Err(FilterError::Limit {
                    position: open,
                    what: "array subscript",
                    limit: MAX_ARRAY_INDEX as usize,
                });
            }
            // Checked against MAX_ARRAY_INDEX just above, so the narrowing cannot truncate.
            segments.push(Segment::Index(index as u32));
            self.pos = end + 1;
        }
        Ok(())
    }

    /// Digits with optional fraction and exponent; `.5` too. Integers beyond i64 become floats.
    fn read_number(&mut self) -> Result<Token, FilterError> {
        let start = self.pos;
        let mut end = start;
        let digits = |end: &mut usize, bytes: &[u8]| {
            let from = *end;
            while bytes.get(*end).is_some_and(|b| b.is_ascii_digit()) {
                *end += 1;
            }
            *end - from
        };
        digits(&mut end, self.bytes);
        let mut is_float = false;
        if self.bytes.get(end) == Some(&b'.') {
            is_float = true;
            end += 1;
            digits(&mut end, self.bytes);
        }
        if matches!(self.bytes.get(end), Some(b'e' | b'E')) {
            let mut exponent_end = end + 1;
            if matches!(self.bytes.get(exponent_end), Some(b'+' | b'-')) {
                exponent_end += 1;
            }
            if digits(&mut exponent_end, self.bytes) == 0 {
                return Err(Self::literal_error(start, "exponent needs digits"));
            }
            is_float = true;
            end = exponent_end;
        }
        if self
            .bytes
            .get(end)
            .is_some_and(|&b| is_word_char(b) || b == b'.')
        {
            return Err(FilterError::Syntax {
                position: end,
                expected: "an operator after the number".into(),
                found: format!("'{}'", self.text[end..].chars().next().unwrap_or('?')),
            });
        }
        let spelling = &self.text[start..end];
        self.pos = end;
        let kind = if is_float {
            TokenKind::Float(
                spelling
                    .parse()
                    .map_err(|_| Self::literal_error(start, "bad number"))?,
            )
        } else if let Ok(value) = spelling.parse::<i64>() {
            TokenKind::Int(value)
        } else {
            // Too large for i64 (all digits, so it always parses as f64).
            TokenKind::Float(
                spelling
                    .parse()
                    .map_err(|_| Self::literal_error(start, "bad number"))?,
            )
        };
        Ok(Token {
            kind,
            position: start,
        })
    }

    /// A quoted string at `self.pos`; `raw` disables escape processing (`r'C++'`).
    fn read_string(&mut self, raw: bool) -> Result<Vec<u8>, FilterError> {
        let quote_position = self.pos;
        let quote = self.bytes[quote_position];
        let mut out = Vec::new();
        let mut i = quote_position + 1;
        loop {
            let Some(&byte) = self.bytes.get(i) else {
                return Err(Self::literal_error(quote_position, "unterminated string"));
            };
            if byte == quote {
                self.pos = i + 1;
                return Ok(out);
            }
            if byte != b'\\' || raw {
                out.push(byte);
                i += 1;
                continue;
            }
            let Some(&escaped) = self.bytes.get(i + 1) else {
                return Err(Self::literal_error(quote_position, "unterminated string"));
            };
            i += 2;
            match escaped {
                b'a' => out.push(0x07),
                b'b' => out.push(0x08),
                b't' => out.push(b'\t'),
                b'n' => out.push(b'\n'),
                b'v' => out.push(0x0b),
                b'f' => out.push(0x0c),
                b'r' => out.push(b'\r'),
                b'x' => {
                    let hex = self
                        .bytes
                        .get(i..i + 2)
                        .and_then(|h| std::str::from_utf8(h).ok());
                    let Some(value) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) else {
                        return Err(Self::literal_error(i - 2, "\\x needs two hex digits"));
                    };
                    out.push(value);
                    i += 2;
                }
                b'0'..=b'7' => {
                    let mut value = u32::from(escaped - b'0');
                    let mut taken = 1;
                    while taken < 3 {
                        match self.bytes.get(i) {
                            Some(&digit @ b'0'..=b'7') => {
                                value = value * 8 + u32::from(digit - b'0');
                                i += 1;
                                taken += 1;
                            }
                            _ => break,
                        }
                    }
                    let Ok(byte) = u8::try_from(value) else {
                        return Err(Self::literal_error(
                            i - taken - 1,
                            "octal escape above \\377",
                        ));
                    };
                    out.push(byte);
                }
                // Backslash + any other character is that character; copy all of its UTF-8 bytes.
                _ => {
                    out.push(escaped);
                    while self.bytes.get(i).is_some_and(|b| (0x80..0xc0).contains(b)) {
                        out.push(self.bytes[i]);
                        i += 1;
                    }
                }
            }
        }
    }
}

/// Tokenize all of `text` (for tests and tools); stops at the first error.
pub fn tokenize(text: &str) -> Result<Vec<Token>, FilterError> {
    let mut lexer = Lexer::new(text);
    let mut tokens = Vec::new();
    loop {
        let token = lexer.next_token()?;
        let end = token.kind == TokenKind::End;
        tokens.push(token);
        if end {
            return Ok(tokens);
        }
    }
}
