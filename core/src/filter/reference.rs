//! A deliberately simple reference evaluator over a fully parsed document (`serde_json::Value`),
//! used by the differential tests to check the scanner + compiled evaluator.
//!
//! It owns nothing the server runs: it re-walks the syntax tree for every call, allocates freely,
//! and re-states the operator, coercion, NULL and array rules in the most direct form it can,
//! independently of `value.rs`/`eval.rs`/`scan.rs`. It shares with the engine only the parser, the
//! `LIKE` regex builder and the function library (`functions.rs`, which has its own unit tests).
//! It must never be used on the data plane.

use std::cmp::Ordering;
use std::sync::OnceLock;

use regex::Regex;
use serde_json::Value as Json;

use super::compile::build_like_regex;
use super::functions::{self, Calling};
use super::parser::{self, AffixKind, ArithOp, CompareOp, Expr, ExprKind, FieldPath, Segment};
use super::value::Value;
use super::{FilterError, MessageContext};

/// Evaluate `text` against `document`: Ok(true) when the filter is TRUE.
pub fn evaluate(
    text: &str,
    document: &Json,
    ctx: &MessageContext<'_>,
    payload_len: usize,
) -> Result<bool, FilterError> {
    let expr = parser::parse(text)?;
    let reference = Reference {
        document,
        ctx: *ctx,
        payload_len,
    };
    Ok(reference.truth(&expr)? == Some(true))
}

type V = Value<'static>;

fn numeric_spelling() -> &'static Regex {
    static PATTERN: OnceLock<Regex> = OnceLock::new();
    PATTERN.get_or_init(|| {
        Regex::new(r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$").expect("valid")
    })
}

/// A string's number if it is spelt as one.
fn string_number(bytes: &[u8]) -> Option<V> {
    let text = std::str::from_utf8(bytes).ok()?;
    if !numeric_spelling().is_match(text) {
        return None;
    }
    if !text.contains(['.', 'e', 'E']) {
        if let Ok(i) = text.parse::<i64>() {
            return Some(Value::Int(i));
        }
    }
    Some(Value::Float(text.parse::<f64>().ok()?))
}

/// Coerce to Int or Float; None for NULL.
fn number(value: &V) -> Option<V> {
    match value {
        Value::Null => None,
        Value::Bool(b) => Some(Value::Int(if *b { 1 } else { 0 })),
        Value::Int(_) | Value::Float(_) => Some(value.clone()),
        Value::Str(s) => Some(string_number(s).unwrap_or(Value::Float(f64::NAN))),
    }
}

fn as_float(value: &V) -> f64 {
    match value {
        Value::Int(i) => *i as f64,
        Value::Float(f) => *f,
        _ => f64::NAN,
    }
}

fn order_numbers(a: &V, b: &V) -> Option<Ordering> {
    if let (Value::Int(x), Value::Int(y)) = (a, b) {
        return Some(x.cmp(y));
    }
    as_float(a).partial_cmp(&as_float(b))
}

fn order(a: &V, b: &V) -> Option<Ordering> {
    if a.is_null() || b.is_null() {
        return None;
    }
    match (a, b) {
        (Value::Str(x), Value::Str(y)) => Some(x.cmp(y)),
        (Value::Str(x), _) => match string_number(x) {
            Some(n) => order_numbers(&n, &number(b)?),
            None => Some(Ordering::Greater),
        },
        (_, Value::Str(y)) => match string_number(y) {
            Some(n) => order_numbers(&number(a)?, &n),
            None => Some(Ordering::Less),
        },
        _ => order_numbers(&number(a)?, &number(b)?),
    }
}

fn compare(op: CompareOp, a: &V, b: &V) -> Option<bool> {
    let ordering = order(a, b)?;
    Some(match op {
        CompareOp::Equal => ordering.is_eq(),
        CompareOp::NotEqual => ordering.is_ne(),
        CompareOp::Less => ordering.is_lt(),
        CompareOp::LessEqual => ordering.is_le(),
        CompareOp::Greater => ordering.is_gt(),
        CompareOp::GreaterEqual => ordering.is_ge(),
    })
}

fn text(value: &V) -> Option<Vec<u8>> {
    match value {
        Value::Null => None,
        Value::Bool(true) => Some(b"true".to_vec()),
        Value::Bool(false) => Some(b"false".to_vec()),
        Value::Int(i) => Some(i.to_string().into_bytes()),
        Value::Float(f) => Some(f.to_string().into_bytes()),
        Value::Str(s) => Some(s.to_vec()),
    }
}

fn arithmetic(op: ArithOp, a: &V, b: &V) -> V {
    let (Some(x), Some(y)) = (number(a), number(b)) else {
        return Value::Null;
    };
    if let (Value::Int(x), Value::Int(y)) = (&x, &y) {
        let (x, y) = (*x, *y);
        let exact = match op {
            ArithOp::Add => x.checked_add(y),
            ArithOp::Subtract => x.checked_sub(y),
            ArithOp::Multiply => x.checked_mul(y),
            ArithOp::Divide | ArithOp::Remainder if y == 0 => return Value::Null,
            ArithOp::Divide => x.checked_div(y),
            ArithOp::Remainder => Some(if y == -1 { 0 } else { x % y }),
        };
        if let Some(result) = exact {
            return Value::Int(result);
        }
    }
    let (x, y) = (as_float(&x), as_float(&y));
    match op {
        ArithOp::Add => Value::Float(x + y),
        ArithOp::Subtract => Value::Float(x - y),
        ArithOp::Multiply => Value::Float(x * y),
        ArithOp::Divide | ArithOp::Remainder if y == 0.0 => Value::Null,
        ArithOp::Divide => Value::Float(x / y),
        ArithOp::Remainder => Value::Float(x % y),
    }
}

fn truth_of(value: &V) -> Option<bool> {
    match number(value)? {
        Value::Int(i) => Some(i != 0),
        Value::Float(f) if f.is_nan() => None,
        Value::Float(f) => Some(f != 0.0),
        _ => None,
    }
}

/// OR over a list of three-valued results.
fn any(results: impl IntoIterator<Item = Option<bool>>) -> Option<bool> {
    let mut unknown = false;
    for result in results {
        match result {
            Some(true) => return Some(true),
            None => unknown = true,
            Some(false) => {}
        }
    }
    if unknown {
        None
    } else {
        Some(false)
    }
}

fn negate_if(result: Option<bool>, negated: bool) -> Option<bool> {
    if negated {
        result.map(|b| !b)
    } else {
        result
    }
}

/// A JSON value as a scalar (arrays: first element; objects and "" are NULL).
fn scalar(json: &Json) -> V {
    match json {
        Json::Null | Json::Object(_) => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Value::owned(s.as_bytes().to_vec()),
        Json::Array(items) => items.first().map_or(Value::Null, element),
    }
}

/// A JSON array element as a scalar (nested arrays and objects are NULL).
fn element(json: &Json) -> V {
    match json {
        Json::Array(_) | Json::Object(_) => Value::Null,
        other => scalar(other),
    }
}

struct Reference<'d> {
    document: &'d Json,
    ctx: MessageContext<'d>,
    payload_len: usize,
}

impl Reference<'_> {
    fn lookup(&self, path: &FieldPath) -> Option<&Json> {
        let mut json = self.document;
        for segment in path.segments() {
            json = match segment {
                Segment::Key(name) => json.as_object()?.get(std::str::from_utf8(name).ok()?)?,
                Segment::Index(index) => json.as_array()?.get(*index as usize)?,
            };
        }
        Some(json)
    }

    /// The values a comparison-like operator tries: a non-empty array field's elements, else one.
    fn candidates(&self, expr: &Expr) -> Result<Vec<V>, FilterError> {
        if let ExprKind::Field(path) = &expr.kind {
            if let Some(Json::Array(items)) = self.lookup(path) {
                if !items.is_empty() {
                    return Ok(items.iter().map(element).collect());
                }
            }
        }
        Ok(vec![self.value(expr)?])
    }

    fn value(&self, expr: &Expr) -> Result<V, FilterError> {
        Ok(match &expr.kind {
            ExprKind::Null => Value::Null,
            ExprKind::Bool(b) => Value::Bool(*b),
            ExprKind::Int(i) => Value::Int(*i),
            ExprKind::Float(f) => Value::Float(*f),
            ExprKind::Str(s) => Value::owned(s.to_vec()),
            ExprKind::Field(path) => self.lookup(path).map_or(Value::Null, scalar),
            ExprKind::Negate(operand) => match number(&self.value(operand)?) {
                Some(Value::Int(i)) => i
                    .checked_neg()
                    .map_or(Value::Float(-(i as f64)), Value::Int),
                Some(Value::Float(f)) => Value::Float(-f),
                _ => Value::Null,
            },
            ExprKind::Arith(op, a, b) => arithmetic(*op, &self.value(a)?, &self.value(b)?),
            ExprKind::Call { name, args } => self.call(name, args, expr.position)?,
            _ => match self.truth(expr)? {
                Some(b) => Value::Bool(b),
                None => Value::Null,
            },
        })
    }

    fn call(&self, name: &str, args: &[Expr], position: usize) -> Result<V, FilterError> {
        let info = functions::lookup(name).ok_or_else(|| FilterError::UnknownFunction {
            position,
            name: name.to_string(),
        })?;
        Ok(match info.calling {
            Calling::Conditional => {
                if self.truth(&args[0])? == Some(true) {
                    self.value(&args[1])?
                } else {
                    self.value(&args[2])?
                }
            }
            Calling::Context => {
                functions::context(info.function, &self.ctx, self.payload_len).into_owned()
            }
            Calling::Array => {
                let elements: Vec<V> = match &args[0].kind {
                    ExprKind::Field(path) => match self.lookup(path) {
                        Some(Json::Array(items)) => items.iter().map(element).collect(),
                        other => other
                            .map(scalar)
                            .into_iter()
                            .filter(|v| !v.is_null())
                            .collect(),
                    },
                    _ => Some(self.value(&args[0])?)
                        .into_iter()
                        .filter(|v| !v.is_null())
                        .collect(),
                };
                functions::aggregate(info.function, elements.into_iter())
            }
            Calling::Scalar => {
                let mut values = args
                    .iter()
                    .map(|arg| self.value(arg))
                    .collect::<Result<Vec<_>, _>>()?;
                functions::call(info.function, &mut values)
            }
        })
    }

    fn truth(&self, expr: &Expr) -> Result<Option<bool>, FilterError> {
        Ok(match &expr.kind {
            ExprKind::Not(operand) => self.truth(operand)?.map(|b| !b),
            ExprKind::And(items) => {
                let mut results = Vec::new();
                for item in items {
                    results.push(self.truth(item)?);
                }
                if results.contains(&Some(false)) {
                    Some(false)
                } else if results.contains(&None) {
                    None
                } else {
                    Some(true)
                }
            }
            ExprKind::Or(items) => {
                let mut results = Vec::new();
                for item in items {
                    results.push(self.truth(item)?);
                }
                any(results)
            }
            ExprKind::Compare(op, a, b) => {
                let (left, right) = (self.candidates(a)?, self.candidates(b)?);
                any(left
                    .iter()
                    .flat_map(|x| right.iter().map(move |y| compare(*op, x, y))))
            }
            ExprKind::In {
                operand,
                items,
                negated,
            } => {
                let left = self.candidates(operand)?;
                let mut right = Vec::new();
                for item in items {
                    right.extend(self.candidates(item)?);
                }
                let found = any(left
                    .iter()
                    .flat_map(|x| right.iter().map(move |y| compare(CompareOp::Equal, x, y))));
                negate_if(found, *negated)
            }
            ExprKind::Between {
                operand,
                low,
                high,
                negated,
            } => {
                let (low, high) = (self.value(low)?, self.value(high)?);
                let left = self.candidates(operand)?;
                let inside = any(left.iter().map(|x| {
                    match (
                        compare(CompareOp::GreaterEqual, x, &low),
                        compare(CompareOp::LessEqual, x, &high),
                    ) {
                        (Some(false), _) | (_, Some(false)) => Some(false),
                        (Some(true), Some(true)) => Some(true),
                        _ => None,
                    }
                }));
                negate_if(inside, *negated)
            }
            ExprKind::Like {
                operand,
                pattern,
                pattern_position,
                negated,
            } => {
                let regex = build_like_regex(pattern, *pattern_position)?;
                let left = self.candidates(operand)?;
                let matched = any(left.iter().map(|x| text(x).map(|t| regex.is_match(&t))));
                negate_if(matched, *negated)
            }
            ExprKind::Affix {
                kind,
                operand,
                items,
                negated,
            } => {
                let left = self.candidates(operand)?;
                let mut affixes = Vec::new();
                for item in items {
                    affixes.push(text(&self.value(item)?));
                }
                let matched = any(left.iter().map(|x| {
                    let t = text(x)?;
                    any(affixes.iter().map(|affix| {
                        let affix = affix.as_ref()?;
                        Some(match kind {
                            AffixKind::Prefix => t.starts_with(affix),
                            AffixKind::Suffix => t.ends_with(affix),
                        })
                    }))
                }));
                negate_if(matched, *negated)
            }
            ExprKind::IsNull { operand, negated } => {
                let null = match &operand.kind {
                    ExprKind::Field(path) => match self.lookup(path) {
                        None | Some(Json::Null) => true,
                        Some(Json::String(s)) => s.is_empty(),
                        Some(Json::Array(items)) => items.is_empty(),
                        Some(_) => false,
                    },
                    _ => self.value(operand)?.is_null(),
                };
                Some(null != *negated)
            }
            ExprKind::IsNan { operand, negated } => {
                let nan = matches!(self.value(operand)?, Value::Float(f) if f.is_nan());
                Some(nan != *negated)
            }
            _ => truth_of(&self.value(expr)?),
        })
    }
}

/// Owned copy of a value (context values borrow the message context).
trait IntoOwned {
    fn into_owned(self) -> V;
}

impl IntoOwned for Value<'_> {
    fn into_owned(self) -> V {
        match self {
            Value::Null => Value::Null,
            Value::Bool(b) => Value::Bool(b),
            Value::Int(i) => Value::Int(i),
            Value::Float(f) => Value::Float(f),
            Value::Str(s) => Value::owned(s.into_owned()),
        }
    }
}
