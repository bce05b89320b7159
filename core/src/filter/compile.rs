//! Syntax tree → checked program, once per subscription.
//!
//! The compiler owns the checks the grammar cannot make — function names and arities, `LIKE`
//! patterns (compiled here, once, with a size limit), the number of distinct paths — and the
//! program form the evaluator runs: fields become indexes into the program's path list, which a
//! [`FieldTable`](super::FieldTable) maps to its slots. It never sees a message.

use regex::bytes::{Regex, RegexBuilder};

use super::functions::{self, Calling, Function};
use super::parser::{self, AffixKind, ArithOp, CompareOp, Expr, ExprKind, FieldPath};
use super::value::{self, compare_numbers, parse_numeric_str, Number, Truth, Value};
use super::{FilterError, MAX_PATHS_PER_FILTER, MAX_REGEX_BYTES};

/// A checked, ready-to-evaluate filter program.
#[derive(Debug)]
pub struct Program {
    pub(crate) root: Node,
    paths: Vec<FieldPath>,
}

impl Program {
    /// The distinct field paths the program reads; `Node::Field(i)` reads `paths()[i]`.
    pub fn paths(&self) -> &[FieldPath] {
        &self.paths
    }
}

/// A program node. Mirrors [`ExprKind`] with names resolved and patterns compiled.
#[derive(Debug)]
pub(crate) enum Node {
    Const(Value<'static>),
    Field(usize),
    Context(Function),
    Negate(Box<Node>),
    Not(Box<Node>),
    And(Box<[Node]>),
    Or(Box<[Node]>),
    Arith(ArithOp, Box<Node>, Box<Node>),
    Compare(CompareOp, Box<Node>, Box<Node>),
    /// `operand op constant` (a constant on the left is moved right by mirroring `op`).
    CompareConst {
        operand: Box<Node>,
        op: CompareOp,
        constant: Value<'static>,
    },
    In {
        operand: Box<Node>,
        items: Box<[Node]>,
        negated: bool,
    },
    /// `IN` over a list of non-NULL constants, pre-sorted for lookup.
    InConst {
        operand: Box<Node>,
        set: ConstSet,
        negated: bool,
    },
    Between {
        operand: Box<Node>,
        low: Box<Node>,
        high: Box<Node>,
        negated: bool,
    },
    Like {
        operand: Box<Node>,
        regex: Regex,
        negated: bool,
    },
    Affix {
        kind: AffixKind,
        operand: Box<Node>,
        items: Box<[Node]>,
        negated: bool,
    },
    IsNull {
        operand: Box<Node>,
        negated: bool,
    },
    IsNan {
        operand: Box<Node>,
        negated: bool,
    },
    Call {
        function: Function,
        args: Box<[Node]>,
    },
    Aggregate {
        function: Function,
        operand: Box<Node>,
    },
    If {
        condition: Box<Node>,
        then: Box<Node>,
        otherwise: Box<Node>,
    },
}

/// Compile filter text into a program.
pub fn compile(text: &str) -> Result<Program, FilterError> {
    let expr = parser::parse(text)?;
    let mut compiler = Compiler { paths: Vec::new() };
    let root = compiler.lower(&expr)?;
    Ok(Program {
        root,
        paths: compiler.paths,
    })
}

/// Compile a `LIKE` pattern: an unanchored search, byte-oriented (not Unicode-aware, as AMPS's
/// PCRE use is) unless the pattern only makes sense with Unicode (`\p{..}`, non-ASCII literals).
pub fn build_like_regex(pattern: &[u8], position: usize) -> Result<Regex, FilterError> {
    let refuse = |message: String| FilterError::Regex { position, message };
    let pattern =
        std::str::from_utf8(pattern).map_err(|_| refuse("pattern is not valid UTF-8".into()))?;
    let build = |unicode: bool| {
        RegexBuilder::new(pattern)
            .unicode(unicode)
            .size_limit(MAX_REGEX_BYTES)
            .dfa_size_limit(MAX_REGEX_BYTES)
            .build()
    };
    build(false)
        .or_else(|_| build(true))
        .map_err(|error| refuse(error.to_string()))
}

/// The comparison that means the same with its operands swapped (`1 < /a` is `/a > 1`); exact
/// because the comparison order is antisymmetric.
fn mirror(op: CompareOp) -> CompareOp {
    match op {
        CompareOp::Less => CompareOp::Greater,
        CompareOp::LessEqual => CompareOp::GreaterEqual,
        CompareOp::Greater => CompareOp::Less,
        CompareOp::GreaterEqual => CompareOp::LessEqual,
        CompareOp::Equal | CompareOp::NotEqual => op,
    }
}

/// The items of an `IN (...)` list of non-NULL constants, arranged so membership is a binary
/// search for strings and a short scan for numbers. Gives exactly what `=` against each item,
/// OR-ed, would give.
#[derive(Debug)]
pub(crate) struct ConstSet {
    /// String items' bytes, sorted and deduplicated.
    strings: Box<[Box<[u8]>]>,
    /// Number and boolean items.
    numbers: Box<[Number]>,
    /// Numbers spelt by numeric string items (a number probe compares with them numerically).
    string_numbers: Box<[Number]>,
}

impl ConstSet {
    /// A set when every item is a non-NULL constant.
    fn from_items(items: &[Node]) -> Option<ConstSet> {
        let mut strings = Vec::new();
        let mut numbers = Vec::new();
        let mut string_numbers = Vec::new();
        for item in items {
            match item {
                Node::Const(Value::Str(bytes)) => {
                    string_numbers.extend(parse_numeric_str(bytes));
                    strings.push(bytes.to_vec().into_boxed_slice());
                }
                Node::Const(constant @ (Value::Int(_) | Value::Float(_) | Value::Bool(_))) => {
                    numbers.extend(constant.to_number());
                }
                _ => return None,
            }
        }
        strings.sort();
        strings.dedup();
        Some(ConstSet {
            strings: strings.into(),
            numbers: numbers.into(),
            string_numbers: string_numbers.into(),
        })
    }

    /// `probe IN (items)` for a non-empty string probe.
    #[inline]
    pub(crate) fn contains_str(&self, probe: &[u8]) -> Truth {
        // Short lists: equality checks lengths first, so most items cost no memcmp call.
        let found = if self.strings.len() <= 8 {
            self.strings.iter().any(|item| **item == *probe)
        } else {
            self.strings
                .binary_search_by(|item| item.as_ref().cmp(probe))
                .is_ok()
        };
        if found {
            return Truth::True;
        }
        // A string meets number items numerically when it is numeric; otherwise it is greater
        // than every number. Literal numbers and parsed strings are never NaN, so no comparison
        // here is unknown.
        let Some(number) = parse_numeric_str(probe) else {
            return Truth::False;
        };
        Truth::from_bool(
            self.numbers
                .iter()
                .any(|&item| compare_numbers(number, item).is_some_and(|o| o.is_eq())),
        )
    }

    /// Three-valued `probe IN (items)`.
    pub(crate) fn contains(&self, probe: &Value<'_>) -> Truth {
        let number = match probe {
            Value::Null => return Truth::Unknown,
            Value::Str(bytes) => return self.contains_str(bytes),
            other => other.to_number().expect("non-NULL values are numbers here"),
        };
        let mut result = Truth::False;
        for &item in self.numbers.iter().chain(self.string_numbers.iter()) {
            match compare_numbers(number, item) {
                Some(order) if order.is_eq() => return Truth::True,
                Some(_) => {}
                None => result = Truth::Unknown,
            }
        }
        result
    }
}

struct Compiler {
    paths: Vec<FieldPath>,
}

impl Compiler {
    fn path_index(&mut self, path: &FieldPath, position: usize) -> Result<usize, FilterError> {
        if let Some(index) = self.paths.iter().position(|known| known == path) {
            return Ok(index);
        }
        if self.paths.len() == MAX_PATHS_PER_FILTER {
            return Err(FilterError::Limit {
                position,
                what: "number of distinct fields in one filter",
                limit: MAX_PATHS_PER_FILTER,
            });
        }
        self.paths.push(path.clone());
        Ok(self.paths.len() - 1)
    }

    fn lower_all(&mut self, exprs: &[Expr]) -> Result<Box<[Node]>, FilterError> {
        exprs.iter().map(|expr| self.lower(expr)).collect()
    }

    fn boxed(&mut self, expr: &Expr) -> Result<Box<Node>, FilterError> {
        Ok(Box::new(self.lower(expr)?))
    }

    /// Recursion here is bounded by the tree depth, which the parser capped.
    fn lower(&mut self, expr: &Expr) -> Result<Node, FilterError> {
        Ok(match &expr.kind {
            ExprKind::Null => Node::Const(Value::Null),
            ExprKind::Bool(b) => Node::Const(Value::Bool(*b)),
            ExprKind::Int(i) => Node::Const(Value::Int(*i)),
            ExprKind::Float(f) => Node::Const(Value::Float(*f)),
            ExprKind::Str(bytes) => Node::Const(Value::owned(bytes.to_vec())),
            ExprKind::Field(path) => Node::Field(self.path_index(path, expr.position)?),
            ExprKind::Negate(operand) => match self.lower(operand)? {
                // Fold `-5`: negative literals are constants (so `IN (-1, -2)` stays a constant set).
                Node::Const(constant @ (Value::Int(_) | Value::Float(_))) => {
                    Node::Const(value::negate(&constant))
                }
                other => Node::Negate(Box::new(other)),
            },
            ExprKind::Not(operand) => Node::Not(self.boxed(operand)?),
            ExprKind::And(items) => Node::And(self.lower_all(items)?),
            ExprKind::Or(items) => Node::Or(self.lower_all(items)?),
            ExprKind::Arith(op, a, b) => Node::Arith(*op, self.boxed(a)?, self.boxed(b)?),
            ExprKind::Compare(op, a, b) => match (self.lower(a)?, self.lower(b)?) {
                (operand, Node::Const(constant)) => Node::CompareConst {
                    operand: Box::new(operand),
                    op: *op,
                    constant,
                },
                (Node::Const(constant), operand) => Node::CompareConst {
                    operand: Box::new(operand),
                    op: mirror(*op),
                    constant,
                },
                (a, b) => Node::Compare(*op, Box::new(a), Box::new(b)),
            },
            ExprKind::In {
                operand,
                items,
                negated,
            } => {
                let operand = self.boxed(operand)?;
                let items = self.lower_all(items)?;
                match ConstSet::from_items(&items) {
                    Some(set) => Node::InConst {
                        operand,
                        set,
                        negated: *negated,
                    },
                    None => Node::In {
                        operand,
                        items,
                        negated: *negated,
                    },
                }
            }
            ExprKind::Between {
                operand,
                low,
                high,
                negated,
            } => Node::Between {
                operand: self.boxed(operand)?,
                low: self.boxed(low)?,
                high: self.boxed(high)?,
                negated: *negated,
            },
            ExprKind::Like {
                operand,
                pattern,
                pattern_position,
                negated,
            } => Node::Like {
                operand: self.boxed(operand)?,
                regex: build_like_regex(pattern, *pattern_position)?,
                negated: *negated,
            },
            ExprKind::Affix {
                kind,
                operand,
                items,
                negated,
            } => Node::Affix {
                kind: *kind,
                operand: self.boxed(operand)?,
                items: self.lower_all(items)?,
                negated: *negated,
            },
            ExprKind::IsNull { operand, negated } => Node::IsNull {
                operand: self.boxed(operand)?,
                negated: *negated,
            },
            ExprKind::IsNan { operand, negated } => Node::IsNan {
                operand: self.boxed(operand)?,
                negated: *negated,
            },
            ExprKind::Call { name, args } => self.call(name, args, expr.position)?,
        })
    }

    fn call(&mut self, name: &str, args: &[Expr], position: usize) -> Result<Node, FilterError> {
        let Some(info) = functions::lookup(name) else {
            return Err(FilterError::UnknownFunction {
                position,
                name: name.to_string(),
            });
        };
        if args.len() < info.min_args || args.len() > info.max_args {
            return Err(FilterError::Arity {
                position,
                name: info.name,
                expected: info.arity_text(),
                found: args.len(),
            });
        }
        Ok(match info.calling {
            Calling::Scalar => Node::Call {
                function: info.function,
                args: self.lower_all(args)?,
            },
            Calling::Array => Node::Aggregate {
                function: info.function,
                operand: self.boxed(&args[0])?,
            },
            Calling::Context => Node::Context(info.function),
            Calling::Conditional => Node::If {
                condition: self.boxed(&args[0])?,
                then: self.boxed(&args[1])?,
                otherwise: self.boxed(&args[2])?,
            },
        })
    }
}
