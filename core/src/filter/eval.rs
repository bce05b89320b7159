//! Evaluate a compiled program against the fields of one scanned message.
//!
//! The evaluator owns the array rules (comparison-like operators are true when any element
//! satisfies them; everything else sees the first element) and the three-valued walk of the
//! program. Values borrow from the payload, the program's constants and the message context, so
//! the common operators allocate nothing. It never scans payloads (the scanner did) and never
//! decides coercions (the value module does). Recursion is bounded by the program depth, which the
//! parser capped at [`MAX_NESTING_DEPTH`](super::MAX_NESTING_DEPTH).

use smallvec::SmallVec;

use super::compile::{Node, Program};
use super::functions::{self, Function};
use super::parser::{AffixKind, CompareOp};
use super::scan::{ArrayElements, RawValue, ScannedFields};
use super::value::{compare_numbers, compare_truth, order_truth, parse_json_number, Truth, Value};
use super::{value, MessageContext};

/// Run `program` with its paths mapped to table slots by `slots`; true only when the filter is
/// TRUE (FALSE and NULL do not match).
pub(crate) fn evaluate(
    program: &Program,
    slots: &[u32],
    fields: &ScannedFields<'_>,
    ctx: &MessageContext<'_>,
) -> bool {
    assert_eq!(
        slots.len(),
        program.paths().len(),
        "one slot per program path"
    );
    let evaluator = Evaluator {
        slots,
        fields: *fields,
        ctx: *ctx,
    };
    evaluator.truth(&program.root) == Truth::True
}

/// A comparison operand: one value, or a non-empty array whose elements are tried in turn.
enum Operand<'a> {
    One(Value<'a>),
    Many(&'a [u8]),
}

/// An array as an operand: its elements, or NULL when it is empty.
fn array_operand(raw: &[u8]) -> Operand<'_> {
    if ArrayElements::new(raw).next().is_some() {
        Operand::Many(raw)
    } else {
        Operand::One(Value::Null)
    }
}

/// Three-valued "any element satisfies `test`": TRUE if one does, else NULL if one was unknown.
fn any<'a>(operand: &Operand<'a>, mut test: impl FnMut(&Value<'a>) -> Truth) -> Truth {
    match operand {
        Operand::One(value) => test(value),
        Operand::Many(raw) => {
            let mut result = Truth::False;
            for element in ArrayElements::new(raw) {
                match test(&element.element_value()) {
                    Truth::True => return Truth::True,
                    Truth::Unknown => result = Truth::Unknown,
                    Truth::False => {}
                }
            }
            result
        }
    }
}

/// Three-valued AND of two truths.
fn and(a: Truth, b: Truth) -> Truth {
    match (a, b) {
        (Truth::False, _) | (_, Truth::False) => Truth::False,
        (Truth::True, Truth::True) => Truth::True,
        _ => Truth::Unknown,
    }
}

struct Evaluator<'a> {
    slots: &'a [u32],
    fields: ScannedFields<'a>,
    ctx: MessageContext<'a>,
}

impl<'a> Evaluator<'a> {
    fn raw(&self, path: usize) -> RawValue<'a> {
        self.fields.get(self.slots[path])
    }

    fn operand(&self, node: &'a Node) -> Operand<'a> {
        match node {
            Node::Field(path) => match self.raw(*path) {
                RawValue::Array(raw) => array_operand(raw),
                raw => Operand::One(raw.to_value()),
            },
            other => Operand::One(self.value(other)),
        }
    }

    fn value(&self, node: &'a Node) -> Value<'a> {
        match node {
            Node::Const(constant) => constant.reborrow(),
            Node::Field(path) => self.raw(*path).to_value(),
            Node::Context(function) => {
                functions::context(*function, &self.ctx, self.fields.payload_len())
            }
            Node::Negate(operand) => value::negate(&self.value(operand)),
            Node::Arith(op, a, b) => value::arithmetic(*op, &self.value(a), &self.value(b)),
            Node::Call { function, args } => {
                let mut values: SmallVec<[Value<'a>; 4]> =
                    args.iter().map(|arg| self.value(arg)).collect();
                functions::call(*function, &mut values)
            }
            Node::Aggregate { function, operand } => self.aggregate(*function, operand),
            Node::If {
                condition,
                then,
                otherwise,
            } => {
                if self.truth(condition) == Truth::True {
                    self.value(then)
                } else {
                    self.value(otherwise)
                }
            }
            Node::Not(_)
            | Node::And(_)
            | Node::Or(_)
            | Node::Compare(..)
            | Node::CompareConst { .. }
            | Node::In { .. }
            | Node::InConst { .. }
            | Node::Between { .. }
            | Node::Like { .. }
            | Node::Affix { .. }
            | Node::IsNull { .. }
            | Node::IsNan { .. } => self.truth(node).into_value(),
        }
    }

    fn aggregate(&self, function: Function, operand: &'a Node) -> Value<'a> {
        match self.operand(operand) {
            Operand::Many(raw) => functions::aggregate(
                function,
                ArrayElements::new(raw).map(RawValue::element_value),
            ),
            Operand::One(value) => {
                functions::aggregate(function, Some(value).into_iter().filter(|v| !v.is_null()))
            }
        }
    }

    /// The hot entry point: logic, and comparisons of a field with a constant, stay here; the
    /// rarer operators live in their own non-inlined functions so this frame stays small.
    fn truth(&self, node: &'a Node) -> Truth {
        match node {
            Node::Not(operand) => !self.truth(operand),
            Node::And(items) => {
                let mut result = Truth::True;
                for item in items.iter() {
                    match self.truth(item) {
                        Truth::False => return Truth::False,
                        Truth::Unknown => result = Truth::Unknown,
                        Truth::True => {}
                    }
                }
                result
            }
            Node::Or(items) => {
                let mut result = Truth::False;
                for item in items.iter() {
                    match self.truth(item) {
                        Truth::True => return Truth::True,
                        Truth::Unknown => result = Truth::Unknown,
                        Truth::False => {}
                    }
                }
                result
            }
            Node::CompareConst {
                operand,
                op,
                constant,
            } => match &**operand {
                Node::Field(path) => match (self.raw(*path), constant) {
                    // The common cases, without building a `Value`: same results as `compare`.
                    (RawValue::Str(bytes), Value::Str(text)) if !bytes.is_empty() => match op {
                        // Equality needs no ordering: lengths usually differ, so no memcmp call.
                        CompareOp::Equal => Truth::from_bool(bytes == text.as_ref()),
                        CompareOp::NotEqual => Truth::from_bool(bytes != text.as_ref()),
                        _ => order_truth(*op, Some(bytes.cmp(text))),
                    },
                    (RawValue::Number(text), Value::Int(_) | Value::Float(_)) => {
                        let number = parse_json_number(text);
                        order_truth(
                            *op,
                            constant
                                .to_number()
                                .and_then(|c| compare_numbers(number, c)),
                        )
                    }
                    (RawValue::Array(raw), _) => {
                        any(&array_operand(raw), |x| compare_truth(*op, x, constant))
                    }
                    (raw, _) => compare_truth(*op, &raw.to_value(), constant),
                },
                other => any(&self.operand(other), |x| compare_truth(*op, x, constant)),
            },
            Node::InConst {
                operand,
                set,
                negated,
            } => {
                let found = match &**operand {
                    Node::Field(path) => match self.raw(*path) {
                        RawValue::Str(bytes) if !bytes.is_empty() => set.contains_str(bytes),
                        RawValue::Array(raw) => any(&array_operand(raw), |x| set.contains(x)),
                        raw => set.contains(&raw.to_value()),
                    },
                    other => any(&self.operand(other), |x| set.contains(x)),
                };
                found.negate_if(*negated)
            }
            Node::IsNull { operand, negated } => {
                let null = match &**operand {
                    Node::Field(path) => self.raw(*path).is_null(),
                    other => self.value(other).is_null(),
                };
                Truth::from_bool(null != *negated)
            }
            Node::Compare(..)
            | Node::In { .. }
            | Node::Between { .. }
            | Node::Like { .. }
            | Node::Affix { .. }
            | Node::IsNan { .. } => self.rare_predicate(node),
            Node::Const(_)
            | Node::Field(_)
            | Node::Context(_)
            | Node::Negate(_)
            | Node::Arith(..)
            | Node::Call { .. }
            | Node::Aggregate { .. }
            | Node::If { .. } => self.value(node).truth(),
        }
    }

    #[inline(never)]
    fn rare_predicate(&self, node: &'a Node) -> Truth {
        match node {
            Node::Compare(op, a, b) => {
                let (a, b) = (self.operand(a), self.operand(b));
                any(&a, |x| any(&b, |y| compare_truth(*op, x, y)))
            }
            Node::In {
                operand,
                items,
                negated,
            } => {
                let left = self.operand(operand);
                let items: SmallVec<[Operand<'a>; 8]> =
                    items.iter().map(|item| self.operand(item)).collect();
                let found = any(&left, |x| {
                    let mut result = Truth::False;
                    for item in items.iter() {
                        match any(item, |y| compare_truth(CompareOp::Equal, x, y)) {
                            Truth::True => return Truth::True,
                            Truth::Unknown => result = Truth::Unknown,
                            Truth::False => {}
                        }
                    }
                    result
                });
                found.negate_if(*negated)
            }
            Node::Between {
                operand,
                low,
                high,
                negated,
            } => {
                let left = self.operand(operand);
                let (low, high) = (self.value(low), self.value(high));
                let inside = any(&left, |x| {
                    and(
                        compare_truth(CompareOp::GreaterEqual, x, &low),
                        compare_truth(CompareOp::LessEqual, x, &high),
                    )
                });
                inside.negate_if(*negated)
            }
            Node::Like {
                operand,
                regex,
                negated,
            } => {
                let left = self.operand(operand);
                let matched = any(&left, |x| match x.to_text() {
                    Some(text) => Truth::from_bool(regex.is_match(&text)),
                    None => Truth::Unknown,
                });
                matched.negate_if(*negated)
            }
            Node::Affix {
                kind,
                operand,
                items,
                negated,
            } => {
                let left = self.operand(operand);
                let items: SmallVec<[Value<'a>; 4]> =
                    items.iter().map(|item| self.value(item)).collect();
                let matched = any(&left, |x| {
                    let Some(text) = x.to_text() else {
                        return Truth::Unknown;
                    };
                    let mut result = Truth::False;
                    for item in items.iter() {
                        let Some(affix) = item.to_text() else {
                            result = Truth::Unknown;
                            continue;
                        };
                        let hit = match kind {
                            AffixKind::Prefix => text.starts_with(&affix),
                            AffixKind::Suffix => text.ends_with(&affix),
                        };
                        if hit {
                            return Truth::True;
                        }
                    }
                    result
                });
                matched.negate_if(*negated)
            }
            Node::IsNan { operand, negated } => {
                Truth::from_bool(self.value(operand).is_nan() != *negated)
            }
            _ => unreachable!("not a rare predicate: {node:?}"),
        }
    }
}
