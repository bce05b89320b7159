//! The function library: names, arities, and what each function computes.
//!
//! This module owns the table of functions (names are matched case-insensitively) and their
//! NULL rules. Unless a function says otherwise, a NULL argument gives NULL, numbers used as
//! strings print canonically, strings used as numbers convert (non-numeric → NaN), and an empty
//! string result is NULL. Array arguments give their first element, except to the `ARRAY_*`
//! functions, which see all elements. It never evaluates expressions or reads payloads: the
//! evaluator hands it values.
//!
//! | function | result |
//! | --- | --- |
//! | `UPPER(s)`, `LOWER(s)` | ASCII case mapping |
//! | `LENGTH(s)` | length in bytes |
//! | `CONCAT(a, ...)` | concatenation; NULL arguments are skipped; NULL beyond 1 MiB |
//! | `SUBSTR(s, pos[, len])` | bytes from 1-based `pos` (negative: from the end); out of range → NULL |
//! | `INSTR(s, sub)`, `INSTR_I` | 1-based position of `sub` in `s`, 0 when absent (`_I`: ASCII case-insensitive) |
//! | `STREQUAL_I(a, b)` | ASCII case-insensitive equality (boolean) |
//! | `LEFT(s, n)`, `RIGHT(s, n)` | first / last `n` bytes |
//! | `REPLACE(s, find, repl)` | every `find` replaced; NULL `find` leaves `s`, NULL `repl` deletes; NULL beyond 1 MiB |
//! | `TRIM`, `LTRIM`, `RTRIM(s[, chars])` | strip bytes in `chars` (default space, tab, CR, LF) |
//! | `REVERSE(s)` | characters reversed (bytes when `s` is not UTF-8) |
//! | `ABS`, `FLOOR`, `CEILING`, `SIGN` | integers stay integers |
//! | `ROUND(x[, digits])` | half away from zero; integers stay integers |
//! | `SQRT`, `EXP`, `LN`, `LOG2`, `LOG10`, `POWER(x, y)` | floats |
//! | `GREATEST(...)`, `LEAST(...)` | by comparison order, NULLs ignored |
//! | `COALESCE(...)` | first non-NULL argument |
//! | `IF(cond, a, b)` | `a` when `cond` is TRUE, else `b` (only the chosen branch is evaluated) |
//! | `UNIX_TIMESTAMP()` | now, seconds since 1970 as a float |
//! | `STRFTIME(format, seconds)` | UTC time as text (`%Y %m %d %H %M %S %f %03f %j %F %T ...`) |
//! | `STRPTIME(text, format)` | UTC text to seconds since 1970 as a float; NULL when it does not fit |
//! | `ARRAY_COUNT(x)` | elements in an array (scalar: 1, NULL: 0) |
//! | `ARRAY_MAX`, `ARRAY_MIN`, `ARRAY_SUM(x)` | over the non-NULL elements; NULL when none |
//! | `TOPIC_NAME()`, `CORRELATION_ID()`, `BOOKMARK()`, `SOW_KEY()`, `CLIENT_NAME()` | from the message context; NULL when absent |
//! | `MESSAGE_SIZE()` | payload length in bytes |
//! | `NAN_VALUE()`, `TRUE_VALUE()`, `FALSE_VALUE()`, `CHAR_VALUE(n)` | constants; `CHAR_VALUE` is the byte `n` (0–255) |

use std::borrow::Cow;
use std::cmp::Ordering;

use super::parser::ArithOp;
use super::value::{arithmetic, compare, Number, Value};
use super::{MessageContext, MAX_STRING_RESULT_BYTES};

/// Every function the language knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Function {
    Upper,
    Lower,
    Length,
    Concat,
    Substr,
    Instr,
    InstrI,
    StrequalI,
    Left,
    Right,
    Replace,
    Trim,
    Ltrim,
    Rtrim,
    Reverse,
    Abs,
    Round,
    Floor,
    Ceiling,
    Sign,
    Sqrt,
    Power,
    Exp,
    Ln,
    Log2,
    Log10,
    Greatest,
    Least,
    Coalesce,
    If,
    UnixTimestamp,
    Strftime,
    Strptime,
    ArrayCount,
    ArrayMax,
    ArrayMin,
    ArraySum,
    TopicName,
    CorrelationId,
    Bookmark,
    SowKey,
    MessageSize,
    ClientName,
    NanValue,
    TrueValue,
    FalseValue,
    CharValue,
}

/// How the evaluator must call a function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Calling {
    /// Arguments evaluated to scalars (arrays give their first element), then [`call`].
    Scalar,
    /// One argument seen as all of its elements, then [`aggregate`].
    Array,
    /// No arguments; reads the message context via [`context`].
    Context,
    /// `IF`: lazy, handled by the evaluator.
    Conditional,
}

/// A function's name, arity and calling convention.
#[derive(Debug)]
pub struct FunctionInfo {
    /// Canonical (upper-case) name.
    pub name: &'static str,
    /// Which function.
    pub function: Function,
    /// Fewest arguments.
    pub min_args: usize,
    /// Most arguments (`usize::MAX`: variadic).
    pub max_args: usize,
    /// How the evaluator calls it.
    pub calling: Calling,
}

impl FunctionInfo {
    /// The accepted argument counts, in words, for error messages.
    pub fn arity_text(&self) -> String {
        match (self.min_args, self.max_args) {
            (min, usize::MAX) => format!("at least {min}"),
            (min, max) if min == max => format!("{min}"),
            (min, max) => format!("{min} to {max}"),
        }
    }
}

const V: usize = usize::MAX;

macro_rules! functions {
    ($($name:literal => $function:ident, $min:expr, $max:expr, $calling:ident;)*) => {
        /// The function table, in documentation order.
        pub static FUNCTIONS: &[FunctionInfo] = &[
            $(FunctionInfo {
                name: $name,
                function: Function::$function,
                min_args: $min,
                max_args: $max,
                calling: Calling::$calling,
            },)*
        ];
    };
}

functions! {
    "UPPER" => Upper, 1, 1, Scalar;
    "LOWER" => Lower, 1, 1, Scalar;
    "LENGTH" => Length, 1, 1, Scalar;
    "CONCAT" => Concat, 1, V, Scalar;
    "SUBSTR" => Substr, 2, 3, Scalar;
    "INSTR" => Instr, 2, 2, Scalar;
    "INSTR_I" => InstrI, 2, 2, Scalar;
    "STREQUAL_I" => StrequalI, 2, 2, Scalar;
    "LEFT" => Left, 2, 2, Scalar;
    "RIGHT" => Right, 2, 2, Scalar;
    "REPLACE" => Replace, 3, 3, Scalar;
    "TRIM" => Trim, 1, 2, Scalar;
    "LTRIM" => Ltrim, 1, 2, Scalar;
    "RTRIM" => Rtrim, 1, 2, Scalar;
    "REVERSE" => Reverse, 1, 1, Scalar;
    "ABS" => Abs, 1, 1, Scalar;
    "ROUND" => Round, 1, 2, Scalar;
    "FLOOR" => Floor, 1, 1, Scalar;
    "CEILING" => Ceiling, 1, 1, Scalar;
    "SIGN" => Sign, 1, 1, Scalar;
    "SQRT" => Sqrt, 1, 1, Scalar;
    "POWER" => Power, 2, 2, Scalar;
    "EXP" => Exp, 1, 1, Scalar;
    "LN" => Ln, 1, 1, Scalar;
    "LOG2" => Log2, 1, 1, Scalar;
    "LOG10" => Log10, 1, 1, Scalar;
    "GREATEST" => Greatest, 1, V, Scalar;
    "LEAST" => Least, 1, V, Scalar;
    "COALESCE" => Coalesce, 1, V, Scalar;
    "IF" => If, 3, 3, Conditional;
    "UNIX_TIMESTAMP" => UnixTimestamp, 0, 0, Scalar;
    "STRFTIME" => Strftime, 2, 2, Scalar;
    "STRPTIME" => Strptime, 2, 2, Scalar;
    "ARRAY_COUNT" => ArrayCount, 1, 1, Array;
    "ARRAY_MAX" => ArrayMax, 1, 1, Array;
    "ARRAY_MIN" => ArrayMin, 1, 1, Array;
    "ARRAY_SUM" => ArraySum, 1, 1, Array;
    "TOPIC_NAME" => TopicName, 0, 0, Context;
    "CORRELATION_ID" => CorrelationId, 0, 0, Context;
    "BOOKMARK" => Bookmark, 0, 0, Context;
    "SOW_KEY" => SowKey, 0, 0, Context;
    "MESSAGE_SIZE" => MessageSize, 0, 0, Context;
    "CLIENT_NAME" => ClientName, 0, 0, Context;
    "NAN_VALUE" => NanValue, 0, 0, Scalar;
    "TRUE_VALUE" => TrueValue, 0, 0, Scalar;
    "FALSE_VALUE" => FalseValue, 0, 0, Scalar;
    "CHAR_VALUE" => CharValue, 1, 1, Scalar;
}

/// Find a function by name, ignoring ASCII case.
pub fn lookup(name: &str) -> Option<&'static FunctionInfo> {
    FUNCTIONS
        .iter()
        .find(|info| info.name.eq_ignore_ascii_case(name))
}

fn take<'a>(args: &mut [Value<'a>], index: usize) -> Value<'a> {
    args.get_mut(index)
        .map_or(Value::Null, |slot| std::mem::replace(slot, Value::Null))
}

/// A value as a string that keeps borrowing the payload when it already was a string.
fn into_text(value: Value<'_>) -> Option<Cow<'_, [u8]>> {
    match value {
        Value::Str(bytes) => Some(bytes),
        other => other.to_text().map(|text| Cow::Owned(text.into_owned())),
    }
}

/// A sub-range of a string, still borrowed when the string was.
fn slice(text: Cow<'_, [u8]>, range: std::ops::Range<usize>) -> Value<'_> {
    match text {
        Cow::Borrowed(bytes) => Value::borrowed(&bytes[range]),
        Cow::Owned(bytes) => Value::owned(bytes[range].to_vec()),
    }
}

/// A value as an integer argument (floats truncate toward zero; NaN and NULL are None).
fn integer(value: &Value<'_>) -> Option<i64> {
    match value.to_number()? {
        Number::Int(i) => Some(i),
        Number::Float(f) if f.is_nan() => None,
        // `as` saturates at the i64 range, which is what an out-of-range position needs.
        Number::Float(f) => Some(f as i64),
    }
}

fn float_of(value: &Value<'_>) -> Option<f64> {
    value.to_number().map(Number::as_f64)
}

fn find(haystack: &[u8], needle: &[u8], ignore_case: bool) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    if ignore_case {
        return haystack
            .windows(needle.len())
            .position(|window| window.eq_ignore_ascii_case(needle));
    }
    memchr::memmem::find(haystack, needle)
}

const DEFAULT_TRIM: &[u8] = b" \t\r\n";

/// Call a [`Calling::Scalar`] function; `args` may be consumed.
pub fn call<'a>(function: Function, args: &mut [Value<'a>]) -> Value<'a> {
    match function {
        Function::Upper | Function::Lower => {
            let Some(text) = into_text(take(args, 0)) else {
                return Value::Null;
            };
            let mut bytes = text.into_owned();
            if function == Function::Upper {
                bytes.make_ascii_uppercase();
            } else {
                bytes.make_ascii_lowercase();
            }
            Value::owned(bytes)
        }
        Function::Length => match args[0].to_text() {
            Some(text) => Value::Int(text.len() as i64),
            None => Value::Null,
        },
        Function::Concat => {
            let mut out = Vec::new();
            for value in args.iter() {
                if let Some(text) = value.to_text() {
                    if out.len() + text.len() > MAX_STRING_RESULT_BYTES {
                        return Value::Null;
                    }
                    out.extend_from_slice(&text);
                }
            }
            Value::owned(out)
        }
        Function::Substr => substr(args),
        Function::Instr | Function::InstrI => {
            let (Some(haystack), Some(needle)) = (args[0].to_text(), args[1].to_text()) else {
                return Value::Null;
            };
            let found = find(&haystack, &needle, function == Function::InstrI);
            Value::Int(found.map_or(0, |index| index as i64 + 1))
        }
        Function::StrequalI => match (args[0].to_text(), args[1].to_text()) {
            (Some(a), Some(b)) => Value::Bool(a.eq_ignore_ascii_case(&b)),
            _ => Value::Null,
        },
        Function::Left | Function::Right => {
            let Some(count) = integer(&args[1]) else {
                return Value::Null;
            };
            let Some(text) = into_text(take(args, 0)) else {
                return Value::Null;
            };
            let length = text.len();
            let count = usize::try_from(count.max(0))
                .unwrap_or(usize::MAX)
                .min(length);
            let range = if function == Function::Left {
                0..count
            } else {
                length - count..length
            };
            slice(text, range)
        }
        Function::Replace => {
            let Some(text) = into_text(take(args, 0)) else {
                return Value::Null;
            };
            let Some(needle) = args[1].to_text() else {
                return Value::from_bytes(text);
            };
            let replacement = args[2].to_text().unwrap_or(Cow::Borrowed(b""));
            replace_all(&text, &needle, &replacement).map_or(Value::Null, Value::owned)
        }
        Function::Trim | Function::Ltrim | Function::Rtrim => {
            let set = match args.get(1) {
                None => Cow::Borrowed(DEFAULT_TRIM),
                Some(value) => match value.to_text() {
                    Some(set) => Cow::Owned(set.into_owned()),
                    None => return Value::Null,
                },
            };
            let Some(text) = into_text(take(args, 0)) else {
                return Value::Null;
            };
            let mut start = 0;
            let mut end = text.len();
            if function != Function::Rtrim {
                while start < end && set.contains(&text[start]) {
                    start += 1;
                }
            }
            if function != Function::Ltrim {
                while end > start && set.contains(&text[end - 1]) {
                    end -= 1;
                }
            }
            slice(text, start..end)
        }
        Function::Reverse => {
            let Some(text) = args[0].to_text() else {
                return Value::Null;
            };
            let reversed = match std::str::from_utf8(&text) {
                Ok(s) => s.chars().rev().collect::<String>().into_bytes(),
                Err(_) => text.iter().rev().copied().collect(),
            };
            Value::owned(reversed)
        }
        Function::Abs => match args[0].to_number() {
            None => Value::Null,
            Some(Number::Int(i)) => i
                .checked_abs()
                .map_or(Value::Float((i as f64).abs()), Value::Int),
            Some(Number::Float(f)) => Value::Float(f.abs()),
        },
        Function::Round => round(args),
        Function::Floor | Function::Ceiling => match args[0].to_number() {
            None => Value::Null,
            Some(Number::Int(i)) => Value::Int(i),
            Some(Number::Float(f)) if function == Function::Floor => Value::Float(f.floor()),
            Some(Number::Float(f)) => Value::Float(f.ceil()),
        },
        Function::Sign => match args[0].to_number() {
            None => Value::Null,
            Some(Number::Int(i)) => Value::Int(i.signum()),
            Some(Number::Float(f)) if f.is_nan() => Value::Float(f),
            Some(Number::Float(f)) => Value::Int(if f > 0.0 {
                1
            } else if f < 0.0 {
                -1
            } else {
                0
            }),
        },
        Function::Sqrt => unary_float(&args[0], f64::sqrt),
        Function::Exp => unary_float(&args[0], f64::exp),
        Function::Ln => unary_float(&args[0], f64::ln),
        Function::Log2 => unary_float(&args[0], f64::log2),
        Function::Log10 => unary_float(&args[0], f64::log10),
        Function::Power => match (float_of(&args[0]), float_of(&args[1])) {
            (Some(x), Some(y)) => Value::Float(x.powf(y)),
            _ => Value::Null,
        },
        Function::Greatest | Function::Least => {
            let wanted = if function == Function::Greatest {
                Ordering::Greater
            } else {
                Ordering::Less
            };
            let mut best: Option<usize> = None;
            for index in 0..args.len() {
                if args[index].is_null() {
                    continue;
                }
                match best {
                    Some(current) if compare(&args[index], &args[current]) != Some(wanted) => {}
                    _ => best = Some(index),
                }
            }
            best.map_or(Value::Null, |index| take(args, index))
        }
        Function::Coalesce => match args.iter().position(|value| !value.is_null()) {
            Some(index) => take(args, index),
            None => Value::Null,
        },
        Function::UnixTimestamp => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
            now.map_or(Value::Null, |elapsed| Value::Float(elapsed.as_secs_f64()))
        }
        Function::Strftime => {
            let (Some(format), Some(seconds)) = (args[0].to_text(), args[1].to_number()) else {
                return Value::Null;
            };
            super::datetime::format(&format, seconds.as_f64()).map_or(Value::Null, Value::owned)
        }
        Function::Strptime => {
            let (Some(text), Some(format)) = (args[0].to_text(), args[1].to_text()) else {
                return Value::Null;
            };
            super::datetime::parse(&text, &format).map_or(Value::Null, Value::Float)
        }
        Function::NanValue => Value::Float(f64::NAN),
        Function::TrueValue => Value::Bool(true),
        Function::FalseValue => Value::Bool(false),
        Function::CharValue => match integer(&args[0]).and_then(|n| u8::try_from(n).ok()) {
            Some(byte) => Value::owned(vec![byte]),
            None => Value::Null,
        },
        Function::If
        | Function::ArrayCount
        | Function::ArrayMax
        | Function::ArrayMin
        | Function::ArraySum
        | Function::TopicName
        | Function::CorrelationId
        | Function::Bookmark
        | Function::SowKey
        | Function::MessageSize
        | Function::ClientName => unreachable!("{function:?} is not a scalar function"),
    }
}

fn unary_float(value: &Value<'_>, operation: fn(f64) -> f64) -> Value<'static> {
    float_of(value).map_or(Value::Null, |x| Value::Float(operation(x)))
}

fn substr<'a>(args: &mut [Value<'a>]) -> Value<'a> {
    let Some(position) = integer(&args[1]) else {
        return Value::Null;
    };
    let length = match args.get(2) {
        None => None,
        Some(value) => match integer(value) {
            Some(length) if length > 0 => Some(length),
            _ => return Value::Null,
        },
    };
    let Some(text) = into_text(take(args, 0)) else {
        return Value::Null;
    };
    let total = text.len() as i64;
    let start = match position {
        p if p > 0 => p - 1,
        p if p < 0 => total + p,
        _ => return Value::Null,
    };
    if start < 0 || start >= total {
        return Value::Null;
    }
    let end = length.map_or(total, |length| start.saturating_add(length).min(total));
    // start and end lie within 0..=total, which came from a usize.
    slice(text, start as usize..end as usize)
}

fn round<'a>(args: &mut [Value<'a>]) -> Value<'a> {
    let digits = match args.get(1) {
        None => 0,
        Some(value) => match integer(value) {
            Some(digits) => digits.clamp(-30, 30),
            None => return Value::Null,
        },
    };
    match args[0].to_number() {
        None => Value::Null,
        Some(Number::Int(i)) if digits >= 0 => Value::Int(i),
        Some(Number::Int(i)) => {
            // Round to tens, hundreds, ...: half away from zero, in integers.
            let Some(unit) = 10i64.checked_pow((-digits) as u32) else {
                return Value::Int(0);
            };
            let (value, unit) = (i128::from(i), i128::from(unit));
            let truncated = (value / unit) * unit;
            let remainder = value - truncated;
            let rounded = if remainder.abs() * 2 >= unit {
                truncated + remainder.signum() * unit
            } else {
                truncated
            };
            i64::try_from(rounded).map_or(Value::Float(rounded as f64), Value::Int)
        }
        Some(Number::Float(f)) => {
            let scale = 10f64.powi(digits as i32);
            Value::Float((f * scale).round() / scale)
        }
    }
}

/// Every `needle` replaced; None when the result would exceed [`MAX_STRING_RESULT_BYTES`].
fn replace_all(text: &[u8], needle: &[u8], replacement: &[u8]) -> Option<Vec<u8>> {
    if needle.is_empty() {
        return Some(text.to_vec());
    }
    let mut out = Vec::with_capacity(text.len());
    let mut rest = text;
    while let Some(index) = memchr::memmem::find(rest, needle) {
        if out.len() + index + replacement.len() > MAX_STRING_RESULT_BYTES {
            return None;
        }
        out.extend_from_slice(&rest[..index]);
        out.extend_from_slice(replacement);
        rest = &rest[index + needle.len()..];
    }
    if out.len() + rest.len() > MAX_STRING_RESULT_BYTES {
        return None;
    }
    out.extend_from_slice(rest);
    Some(out)
}

/// Call a [`Calling::Array`] function over the elements of its argument (a scalar argument is a
/// one-element array, NULL an empty one).
pub fn aggregate<'a>(function: Function, elements: impl Iterator<Item = Value<'a>>) -> Value<'a> {
    match function {
        Function::ArrayCount => Value::Int(elements.count() as i64),
        Function::ArrayMax | Function::ArrayMin => {
            let wanted = if function == Function::ArrayMax {
                Ordering::Greater
            } else {
                Ordering::Less
            };
            let mut best = Value::Null;
            for element in elements.filter(|e| !e.is_null()) {
                if best.is_null() || compare(&element, &best) == Some(wanted) {
                    best = element;
                }
            }
            best
        }
        Function::ArraySum => {
            let mut sum = Value::Null;
            for element in elements.filter(|e| !e.is_null()) {
                sum = if sum.is_null() {
                    element.to_number().map_or(Value::Null, Number::into_value)
                } else {
                    arithmetic(ArithOp::Add, &sum, &element)
                };
            }
            sum
        }
        _ => unreachable!("{function:?} is not an array function"),
    }
}

/// Call a [`Calling::Context`] function.
pub fn context<'a>(function: Function, ctx: &MessageContext<'a>, payload_len: usize) -> Value<'a> {
    let optional = |bytes: Option<&'a [u8]>| bytes.map_or(Value::Null, Value::borrowed);
    match function {
        Function::TopicName => Value::borrowed(ctx.topic),
        Function::CorrelationId => optional(ctx.correlation_id),
        Function::Bookmark => optional(ctx.bookmark),
        Function::SowKey => optional(ctx.sow_key),
        Function::ClientName => optional(ctx.client_name),
        Function::MessageSize => Value::Int(payload_len as i64),
        _ => unreachable!("{function:?} is not a context function"),
    }
}
