//! `orderby` and `top_n`: how SOW query results are sorted and cut.
//!
//! `orderby` is a comma list of `/path [ASC|DESC] [TEXT]` (AMPS's form; keywords in any case).
//! Without the `TEXT` hint AMPS sorts "mixed-type": numbers — JSON numbers, booleans as 1/0, and
//! strings that read as numbers — compare numerically and come before other strings, which compare
//! bytewise; a missing or `null` field sorts after everything (so first under `DESC`, which
//! reverses the whole order). `TEXT` compares every value by its text. Ties keep the store's base
//! order (oldest write first), so sorting is stable and deterministic. This module never reads
//! records from the store; it sorts what it is given.

use std::cmp::Ordering;

use crate::filter::parser::FieldPath;
use crate::filter::scan::RawValue;
use crate::filter::value::{compare_numbers, parse_json_number, parse_numeric_str, Number};
use crate::filter::{FieldTable, ScanScratch};

/// Most terms in one `orderby`.
pub const ORDER_TERMS_MAX: usize = 16;

/// One `orderby` term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderTerm {
    /// The field to sort by.
    pub path: FieldPath,
    /// `DESC`.
    pub descending: bool,
    /// `TEXT`: compare as text even when values look numeric.
    pub text: bool,
}

/// A parsed `orderby` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderBy {
    terms: Vec<OrderTerm>,
}

/// Why an `orderby` was refused; the failure ack's reason is `invalid order by`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid order by: {problem} in {text:?}")]
pub struct OrderByError {
    /// The header as received.
    pub text: String,
    /// What is wrong, in words.
    pub problem: String,
}

impl OrderByError {
    /// The reason text of the failure ack.
    pub const REASON: &'static str = "invalid order by";
}

impl OrderBy {
    /// Parses an `orderby` header.
    pub fn parse(text: &str) -> Result<OrderBy, OrderByError> {
        let fail = |problem: String| OrderByError {
            text: text.to_owned(),
            problem,
        };
        let mut terms = Vec::new();
        for part in text.split(',') {
            let mut words = part.split_whitespace();
            let Some(path_text) = words.next() else {
                return Err(fail("an empty term".into()));
            };
            let path = super::key::parse_key_path(path_text)
                .ok_or_else(|| fail(format!("{path_text:?} is not a field path like /qty")))?;
            let mut term = OrderTerm {
                path,
                descending: false,
                text: false,
            };
            let (mut direction_seen, mut text_seen) = (false, false);
            for word in words {
                match word.to_ascii_uppercase().as_str() {
                    "ASC" | "DESC" if !direction_seen => {
                        direction_seen = true;
                        term.descending = word.eq_ignore_ascii_case("DESC");
                    }
                    "TEXT" if !text_seen => {
                        text_seen = true;
                        term.text = true;
                    }
                    _ => return Err(fail(format!("unexpected {word:?} after {path_text}"))),
                }
            }
            terms.push(term);
        }
        if terms.len() > ORDER_TERMS_MAX {
            return Err(fail(format!(
                "{} terms, the limit is {ORDER_TERMS_MAX}",
                terms.len()
            )));
        }
        Ok(OrderBy { terms })
    }

    /// The terms, most significant first.
    pub fn terms(&self) -> &[OrderTerm] {
        &self.terms
    }

    /// Sorts `items` (whose payloads `payload_of` gives) by this order; ties keep their relative
    /// order, so callers pass items already in base order.
    pub fn sort<T>(&self, items: &mut Vec<T>, payload_of: impl Fn(&T) -> &[u8]) {
        let mut table = FieldTable::new();
        let paths: Vec<FieldPath> = self.terms.iter().map(|term| term.path.clone()).collect();
        let slots = table.register_paths(&paths);
        let mut scratch = ScanScratch::new();
        let mut keyed: Vec<(Vec<SortValue>, T)> = items
            .drain(..)
            .map(|item| {
                let values = match table.scan(payload_of(&item), &mut scratch) {
                    Ok(fields) => slots
                        .iter()
                        .zip(&self.terms)
                        .map(|(&slot, term)| SortValue::from_raw(fields.get(slot), term.text))
                        .collect(),
                    Err(_) => vec![SortValue::Null; slots.len()],
                };
                (values, item)
            })
            .collect();
        keyed.sort_by(|(a, _), (b, _)| {
            for ((left, right), term) in a.iter().zip(b).zip(&self.terms) {
                let order = left.compare(right);
                let order = if term.descending {
                    order.reverse()
                } else {
                    order
                };
                if order != Ordering::Equal {
                    return order;
                }
            }
            Ordering::Equal
        });
        items.extend(keyed.into_iter().map(|(_, item)| item));
    }
}

/// A field's value reduced to what ordering needs.
#[derive(Debug, Clone, PartialEq)]
enum SortValue {
    Number(Number),
    Text(Vec<u8>),
    Null,
}

impl SortValue {
    fn from_raw(raw: RawValue<'_>, as_text: bool) -> SortValue {
        let text = |bytes: &[u8]| SortValue::Text(bytes.to_vec());
        match raw {
            RawValue::Missing | RawValue::Null | RawValue::Object => SortValue::Null,
            RawValue::Bool(value) if as_text => text(if value { b"true" } else { b"false" }),
            RawValue::Bool(value) => SortValue::Number(Number::Int(i64::from(value))),
            RawValue::Number(digits) if as_text => text(digits),
            RawValue::Number(digits) => SortValue::Number(parse_json_number(digits)),
            RawValue::Str(bytes) | RawValue::EscapedStr(bytes) => match parse_numeric_str(bytes) {
                Some(number) if !as_text => SortValue::Number(number),
                _ => text(bytes),
            },
            RawValue::Array(raw) => text(raw),
        }
    }

    fn compare(&self, other: &SortValue) -> Ordering {
        match (self, other) {
            (SortValue::Number(a), SortValue::Number(b)) => compare_numbers(*a, *b)
                .unwrap_or_else(|| a.as_f64().is_nan().cmp(&b.as_f64().is_nan())),
            (SortValue::Text(a), SortValue::Text(b)) => a.cmp(b),
            (SortValue::Null, SortValue::Null) => Ordering::Equal,
            (SortValue::Number(_), _) | (SortValue::Text(_), SortValue::Null) => Ordering::Less,
            (_, SortValue::Number(_)) | (SortValue::Null, SortValue::Text(_)) => Ordering::Greater,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(order: &str, payloads: &[&str]) -> Vec<String> {
        let order = OrderBy::parse(order).unwrap();
        let mut items: Vec<&str> = payloads.to_vec();
        order.sort(&mut items, |item| item.as_bytes());
        items.into_iter().map(str::to_owned).collect()
    }

    #[test]
    fn orderby_parses_directions_and_hints() {
        let order = OrderBy::parse("/qty DESC, /sym,/a/b asc TEXT").unwrap();
        let summary: Vec<(String, bool, bool)> = order
            .terms()
            .iter()
            .map(|t| (t.path.to_string(), t.descending, t.text))
            .collect();
        assert_eq!(
            summary,
            [
                ("/qty".into(), true, false),
                ("/sym".into(), false, false),
                ("/a/b".into(), false, true)
            ]
        );
        for bad in [
            "",
            "qty",
            "/qty DOWN",
            "/qty ASC DESC",
            "/a,,/b",
            "/a TEXT TEXT",
        ] {
            let error = OrderBy::parse(bad).unwrap_err();
            assert!(
                error.to_string().starts_with(OrderByError::REASON),
                "{error}"
            );
        }
    }

    #[test]
    fn mixed_type_ordering_puts_numbers_first_and_nulls_last() {
        let rows = [
            r#"{"v":"b"}"#,
            r#"{"v":10}"#,
            r#"{"x":1}"#,
            r#"{"v":"9"}"#,
            r#"{"v":2.5}"#,
            r#"{"v":"a"}"#,
        ];
        assert_eq!(
            sorted("/v", &rows),
            [
                r#"{"v":2.5}"#,
                r#"{"v":"9"}"#,
                r#"{"v":10}"#,
                r#"{"v":"a"}"#,
                r#"{"v":"b"}"#,
                r#"{"x":1}"#
            ]
        );
        assert_eq!(sorted("/v DESC", &rows)[0], r#"{"x":1}"#);
        assert_eq!(sorted("/v DESC", &rows)[5], r#"{"v":2.5}"#);
        let text = sorted("/v TEXT", &[r#"{"v":10}"#, r#"{"v":9}"#]);
        assert_eq!(
            text,
            [r#"{"v":10}"#, r#"{"v":9}"#],
            "TEXT compares digits as text"
        );
    }

    #[test]
    fn ties_keep_their_order_and_later_terms_break_them() {
        let rows = [
            r#"{"a":1,"b":1,"n":0}"#,
            r#"{"a":0,"b":2,"n":1}"#,
            r#"{"a":1,"b":2,"n":2}"#,
            r#"{"a":1,"b":1,"n":3}"#,
        ];
        assert_eq!(
            sorted("/a DESC", &rows),
            [rows[0], rows[2], rows[3], rows[1]].map(str::to_owned),
            "stable within equal /a"
        );
        assert_eq!(
            sorted("/a DESC, /b DESC", &rows),
            [rows[2], rows[0], rows[3], rows[1]].map(str::to_owned)
        );
    }
}
