//! Runtime values and the AMPS coercion rules: NULL, numbers from strings, comparison order,
//! three-valued truth and arithmetic.
//!
//! This module owns every rule about how two values relate (see the semantics list in the
//! [module docs](super)). It never looks at a payload or a syntax tree; strings borrowed from the
//! payload stay borrowed (`Cow::Borrowed`), and only functions that build new strings allocate.

use std::borrow::Cow;
use std::cmp::Ordering;

use super::parser::{ArithOp, CompareOp};

/// A scalar value during evaluation. Invariant: `Str` is never empty (the empty string is NULL).
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    /// Unknown / absent.
    Null,
    /// JSON `true`/`false`, predicate results; numerically 1 and 0.
    Bool(bool),
    /// A 64-bit signed integer.
    Int(i64),
    /// A 64-bit float (possibly NaN).
    Float(f64),
    /// A non-empty byte string.
    Str(Cow<'a, [u8]>),
}

/// A number after coercion.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    /// Integer.
    Int(i64),
    /// Float (possibly NaN).
    Float(f64),
}

impl Number {
    /// The number as f64 (integers above 2^53 round).
    pub fn as_f64(self) -> f64 {
        match self {
            Number::Int(i) => i as f64,
            Number::Float(f) => f,
        }
    }

    /// Back to a value.
    pub fn into_value(self) -> Value<'static> {
        match self {
            Number::Int(i) => Value::Int(i),
            Number::Float(f) => Value::Float(f),
        }
    }
}

/// SQL three-valued truth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Truth {
    /// Definitely false.
    False,
    /// Definitely true.
    True,
    /// NULL: unknown.
    Unknown,
}

impl Truth {
    /// `true` → True, `false` → False.
    pub fn from_bool(value: bool) -> Truth {
        if value {
            Truth::True
        } else {
            Truth::False
        }
    }

    /// Negate when `negated` (for the `NOT IN` style forms).
    pub fn negate_if(self, negated: bool) -> Truth {
        if negated {
            !self
        } else {
            self
        }
    }

    /// As a value: TRUE/FALSE are booleans, unknown is NULL.
    pub fn into_value(self) -> Value<'static> {
        match self {
            Truth::True => Value::Bool(true),
            Truth::False => Value::Bool(false),
            Truth::Unknown => Value::Null,
        }
    }
}

impl std::ops::Not for Truth {
    type Output = Truth;

    /// Three-valued NOT: unknown stays unknown.
    fn not(self) -> Truth {
        match self {
            Truth::True => Truth::False,
            Truth::False => Truth::True,
            Truth::Unknown => Truth::Unknown,
        }
    }
}

impl<'a> Value<'a> {
    /// A string value from bytes; the empty string becomes NULL.
    pub fn from_bytes(bytes: Cow<'a, [u8]>) -> Value<'a> {
        if bytes.is_empty() {
            Value::Null
        } else {
            Value::Str(bytes)
        }
    }

    /// Borrowed string value (empty → NULL).
    pub fn borrowed(bytes: &'a [u8]) -> Value<'a> {
        Value::from_bytes(Cow::Borrowed(bytes))
    }

    /// Owned string value (empty → NULL).
    pub fn owned(bytes: Vec<u8>) -> Value<'static> {
        Value::from_bytes(Cow::Owned(bytes))
    }

    /// Is this NULL?
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// A cheap copy that borrows this value's string instead of cloning it.
    pub fn reborrow(&self) -> Value<'_> {
        match self {
            Value::Null => Value::Null,
            Value::Bool(b) => Value::Bool(*b),
            Value::Int(i) => Value::Int(*i),
            Value::Float(f) => Value::Float(*f),
            Value::Str(s) => Value::Str(Cow::Borrowed(s)),
        }
    }

    /// Coerce to a number: booleans are 1/0, strings parse or become NaN, NULL stays None.
    pub fn to_number(&self) -> Option<Number> {
        match self {
            Value::Null => None,
            Value::Bool(b) => Some(Number::Int(i64::from(*b))),
            Value::Int(i) => Some(Number::Int(*i)),
            Value::Float(f) => Some(Number::Float(*f)),
            Value::Str(s) => Some(parse_numeric_str(s).unwrap_or(Number::Float(f64::NAN))),
        }
    }

    /// Coerce to a string: numbers print canonically, booleans as `true`/`false`, NULL is None.
    pub fn to_text(&self) -> Option<Cow<'_, [u8]>> {
        match self {
            Value::Null => None,
            Value::Str(s) => Some(Cow::Borrowed(s)),
            Value::Bool(b) => Some(Cow::Borrowed(if *b { b"true" } else { b"false" })),
            Value::Int(i) => Some(Cow::Owned(i.to_string().into_bytes())),
            Value::Float(f) => Some(Cow::Owned(format_float(*f).into_bytes())),
        }
    }

    /// Use as a condition: booleans as they are, non-zero numbers (numeric strings included) TRUE,
    /// zero FALSE, NULL/NaN/non-numeric strings unknown.
    pub fn truth(&self) -> Truth {
        match self {
            Value::Null => Truth::Unknown,
            Value::Bool(b) => Truth::from_bool(*b),
            Value::Int(i) => Truth::from_bool(*i != 0),
            Value::Float(f) if f.is_nan() => Truth::Unknown,
            Value::Float(f) => Truth::from_bool(*f != 0.0),
            Value::Str(s) => match parse_numeric_str(s) {
                Some(Number::Int(i)) => Truth::from_bool(i != 0),
                Some(Number::Float(f)) => Truth::from_bool(f != 0.0),
                None => Truth::Unknown,
            },
        }
    }

    /// Is this a NaN float?
    pub fn is_nan(&self) -> bool {
        matches!(self, Value::Float(f) if f.is_nan())
    }
}

/// How floats print when used as strings: Rust's shortest round-trip form (`1.5`, `100`, `NaN`).
pub fn format_float(value: f64) -> String {
    format!("{value}")
}

/// Order two values by the AMPS rules; None when either is NULL or NaN is involved.
pub fn compare(a: &Value<'_>, b: &Value<'_>) -> Option<Ordering> {
    match (a, b) {
        (Value::Null, _) | (_, Value::Null) => None,
        (Value::Str(x), Value::Str(y)) => Some(x.as_ref().cmp(y.as_ref())),
        (Value::Str(s), other) => match parse_numeric_str(s) {
            Some(n) => compare_numbers(n, other.to_number()?),
            // A string that is not a number is greater than any number.
            None => Some(Ordering::Greater),
        },
        (other, Value::Str(s)) => match parse_numeric_str(s) {
            Some(n) => compare_numbers(other.to_number()?, n),
            None => Some(Ordering::Less),
        },
        _ => compare_numbers(a.to_number()?, b.to_number()?),
    }
}

/// Integers compare exactly; anything else as f64 (NaN → None).
pub fn compare_numbers(a: Number, b: Number) -> Option<Ordering> {
    match (a, b) {
        (Number::Int(x), Number::Int(y)) => Some(x.cmp(&y)),
        _ => a.as_f64().partial_cmp(&b.as_f64()),
    }
}

/// Apply a comparison operator under three-valued logic.
#[inline]
pub fn compare_truth(op: CompareOp, a: &Value<'_>, b: &Value<'_>) -> Truth {
    order_truth(op, compare(a, b))
}

/// What a comparison operator says about an ordering (None: NULL or NaN involved → unknown).
#[inline]
pub fn order_truth(op: CompareOp, order: Option<Ordering>) -> Truth {
    let Some(order) = order else {
        return Truth::Unknown;
    };
    Truth::from_bool(match op {
        CompareOp::Equal => order == Ordering::Equal,
        CompareOp::NotEqual => order != Ordering::Equal,
        CompareOp::Less => order == Ordering::Less,
        CompareOp::LessEqual => order != Ordering::Greater,
        CompareOp::Greater => order == Ordering::Greater,
        CompareOp::GreaterEqual => order != Ordering::Less,
    })
}

/// Arithmetic under the AMPS rules (NULL propagates; int ⊕ int stays int unless it overflows;
/// division and remainder by zero are NULL; `%` follows the sign of the left operand).
pub fn arithmetic(op: ArithOp, a: &Value<'_>, b: &Value<'_>) -> Value<'static> {
    let (Some(x), Some(y)) = (a.to_number(), b.to_number()) else {
        return Value::Null;
    };
    if let (Number::Int(x), Number::Int(y)) = (x, y) {
        let exact = match op {
            ArithOp::Add => x.checked_add(y),
            ArithOp::Subtract => x.checked_sub(y),
            ArithOp::Multiply => x.checked_mul(y),
            ArithOp::Divide if y == 0 => return Value::Null,
            ArithOp::Divide => x.checked_div(y),
            ArithOp::Remainder if y == 0 => return Value::Null,
            // i64::MIN % -1 overflows in hardware but is mathematically 0.
            ArithOp::Remainder => Some(x.checked_rem(y).unwrap_or(0)),
        };
        if let Some(result) = exact {
            return Value::Int(result);
        }
    }
    let (x, y) = (x.as_f64(), y.as_f64());
    match op {
        ArithOp::Add => Value::Float(x + y),
        ArithOp::Subtract => Value::Float(x - y),
        ArithOp::Multiply => Value::Float(x * y),
        ArithOp::Divide | ArithOp::Remainder if y == 0.0 => Value::Null,
        ArithOp::Divide => Value::Float(x / y),
        ArithOp::Remainder => Value::Float(x % y),
    }
}

/// Unary minus (NULL stays NULL; strings convert; `-i64::MIN` becomes a float).
pub fn negate(value: &Value<'_>) -> Value<'static> {
    match value.to_number() {
        None => Value::Null,
        Some(Number::Int(i)) => i
            .checked_neg()
            .map_or(Value::Float(-(i as f64)), Value::Int),
        Some(Number::Float(f)) => Value::Float(-f),
    }
}

/// Powers of ten exactly representable in f64, for the fast float path.
const EXACT_POWERS_OF_TEN: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// Parse a string as a number if it is spelt `[+-]?(digits[.digits*]|.digits)([eE][+-]?digits)?`.
/// Integer spellings that fit i64 are integers; everything else numeric is f64.
pub fn parse_numeric_str(text: &[u8]) -> Option<Number> {
    let mut i = 0;
    if matches!(text.first(), Some(b'+' | b'-')) {
        i = 1;
    }
    let integer_start = i;
    while text.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    let integer_digits = i - integer_start;
    let mut fraction_digits = 0;
    let mut is_float = false;
    if text.get(i) == Some(&b'.') {
        is_float = true;
        i += 1;
        let fraction_start = i;
        while text.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        fraction_digits = i - fraction_start;
    }
    if integer_digits == 0 && fraction_digits == 0 {
        return None;
    }
    if matches!(text.get(i), Some(b'e' | b'E')) {
        is_float = true;
        i += 1;
        if matches!(text.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let exponent_start = i;
        while text.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == exponent_start {
            return None;
        }
    }
    if i != text.len() {
        return None;
    }
    Some(parse_validated_number(text, is_float))
}

/// Parse a JSON number's text (grammar already checked by the scanner).
#[inline]
pub fn parse_json_number(text: &[u8]) -> Number {
    let is_float = text.iter().any(|b| matches!(b, b'.' | b'e' | b'E'));
    parse_validated_number(text, is_float)
}

/// Parse text already known to be a valid number (JSON grammar or [`parse_numeric_str`]'s).
pub fn parse_validated_number(text: &[u8], is_float: bool) -> Number {
    if !is_float {
        if let Some(value) = parse_small_int(text) {
            return Number::Int(value);
        }
    } else if let Some(value) = parse_simple_float(text) {
        return Number::Float(value);
    }
    // Slow path: long integers (maybe beyond i64) and floats the fast path cannot do exactly.
    let spelling = std::str::from_utf8(text).unwrap_or("NaN");
    if !is_float {
        if let Ok(value) = spelling.parse::<i64>() {
            return Number::Int(value);
        }
    }
    Number::Float(spelling.parse::<f64>().unwrap_or(f64::NAN))
}

/// Up to 18 digits with an optional sign: cannot overflow i64.
fn parse_small_int(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text.first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if digits.is_empty() || digits.len() > 18 {
        return None;
    }
    let mut value: i64 = 0;
    for &digit in digits {
        if !digit.is_ascii_digit() {
            return None;
        }
        value = value * 10 + i64::from(digit - b'0');
    }
    Some(if negative { -value } else { value })
}

/// Clinger's fast path: `[+-]?digits[.digits]` with at most 15 significant digits and no
/// exponent is exactly `mantissa / 10^k`, correctly rounded, because both fit f64 exactly.
fn parse_simple_float(text: &[u8]) -> Option<f64> {
    let (negative, body) = match text.first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let mut mantissa: u64 = 0;
    let mut digits = 0;
    let mut fraction_digits = 0;
    let mut seen_point = false;
    for &byte in body {
        match byte {
            b'0'..=b'9' => {
                mantissa = mantissa * 10 + u64::from(byte - b'0');
                digits += 1;
                if seen_point {
                    fraction_digits += 1;
                }
                if digits > 15 {
                    return None;
                }
            }
            b'.' if !seen_point => seen_point = true,
            _ => return None,
        }
    }
    if digits == 0 {
        return None;
    }
    let value = mantissa as f64 / EXACT_POWERS_OF_TEN[fraction_digits];
    Some(if negative { -value } else { value })
}
