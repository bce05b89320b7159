//! Tokens → syntax tree, by recursive descent with AMPS precedence.
//!
//! The parser owns the grammar and the syntax tree ([`Expr`]) and nothing else: it does not know
//! which functions exist (the compiler checks names and arities) and never evaluates. It bounds its
//! own recursion and the depth of every tree it builds by [`MAX_NESTING_DEPTH`], so neither parsing,
//! compiling, evaluating nor dropping a tree can overflow the stack, whatever the text.
//!
//! Precedence, loosest first: `OR`; `AND`; `NOT`; predicates (`= == != <> < <= > >=`, `[NOT] IN`,
//! `[NOT] BETWEEN`, `[NOT] LIKE`, `[NOT] BEGINS WITH`, `[NOT] ENDS WITH`, `IS [NOT] NULL`,
//! `IS [NOT] NAN`; not associative); `+ -`; `* / % MOD`; unary `- +`; primaries (literals, fields,
//! function calls, parentheses).

use std::fmt;

use super::lexer::{Lexer, Token, TokenKind};
use super::{FilterError, MAX_FILTER_BYTES, MAX_LIST_ITEMS, MAX_NESTING_DEPTH};

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Segment {
    /// An object member name (`/name`), unescaped bytes.
    Key(Box<[u8]>),
    /// An array subscript (`[3]`), 0-based.
    Index(u32),
}

/// A field path such as `/order/legs[0]/px`: the address of one value in a message.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FieldPath {
    segments: Box<[Segment]>,
}

impl FieldPath {
    /// A path from its segments; the first segment is always a key.
    pub fn new(segments: Vec<Segment>) -> FieldPath {
        assert!(
            matches!(segments.first(), Some(Segment::Key(_))),
            "a path starts with a name"
        );
        FieldPath {
            segments: segments.into_boxed_slice(),
        }
    }

    /// The path's steps, outermost first.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for segment in self.segments.iter() {
            match segment {
                Segment::Key(name) => write!(f, "/{}", String::from_utf8_lossy(name))?,
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
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
}

/// Arithmetic operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArithOp {
    /// `+`
    Add,
    /// `-`
    Subtract,
    /// `*`
    Multiply,
    /// `/` (integer division when both sides are integers)
    Divide,
    /// `%` or `MOD` (sign of the left operand)
    Remainder,
}

/// Which end `BEGINS WITH` / `ENDS WITH` tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AffixKind {
    /// `BEGINS WITH`
    Prefix,
    /// `ENDS WITH`
    Suffix,
}

/// A node of the syntax tree, with the byte offset it came from and the depth of its subtree.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    /// What the node is.
    pub kind: ExprKind,
    /// Byte offset of the node's first token (operators: of the operator).
    pub position: usize,
    /// Height of this subtree (a leaf is 1); never above [`MAX_NESTING_DEPTH`].
    pub depth: usize,
}

/// The node kinds of the syntax tree.
#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    /// `NULL`
    Null,
    /// `TRUE` / `FALSE` (an extension: AMPS spells them 1 and 0)
    Bool(bool),
    /// Integer literal.
    Int(i64),
    /// Float literal.
    Float(f64),
    /// String literal (bytes after escape processing).
    Str(Box<[u8]>),
    /// A field of the message.
    Field(FieldPath),
    /// Unary minus.
    Negate(Box<Expr>),
    /// `NOT`
    Not(Box<Expr>),
    /// `a AND b AND ...`, flattened.
    And(Vec<Expr>),
    /// `a OR b OR ...`, flattened.
    Or(Vec<Expr>),
    /// `a + b` and friends.
    Arith(ArithOp, Box<Expr>, Box<Expr>),
    /// `a = b` and friends.
    Compare(CompareOp, Box<Expr>, Box<Expr>),
    /// `a [NOT] IN (items)`
    In {
        /// The value looked up.
        operand: Box<Expr>,
        /// The list, at least one item.
        items: Vec<Expr>,
        /// `NOT IN`.
        negated: bool,
    },
    /// `a [NOT] BETWEEN low AND high`
    Between {
        /// The value tested.
        operand: Box<Expr>,
        /// Inclusive lower bound.
        low: Box<Expr>,
        /// Inclusive upper bound.
        high: Box<Expr>,
        /// `NOT BETWEEN`.
        negated: bool,
    },
    /// `a [NOT] LIKE 'pattern'`
    Like {
        /// The value matched.
        operand: Box<Expr>,
        /// The regular expression, escapes already processed.
        pattern: Box<[u8]>,
        /// Byte offset of the pattern literal, for regex errors.
        pattern_position: usize,
        /// `NOT LIKE`.
        negated: bool,
    },
    /// `a [NOT] BEGINS WITH (items)` / `a [NOT] ENDS WITH (items)`
    Affix {
        /// Which end is tested.
        kind: AffixKind,
        /// The value tested.
        operand: Box<Expr>,
        /// The candidate prefixes or suffixes.
        items: Vec<Expr>,
        /// `NOT BEGINS WITH` / `NOT ENDS WITH`.
        negated: bool,
    },
    /// `a IS [NOT] NULL`
    IsNull {
        /// The value tested.
        operand: Box<Expr>,
        /// `IS NOT NULL`.
        negated: bool,
    },
    /// `a IS [NOT] NAN`
    IsNan {
        /// The value tested.
        operand: Box<Expr>,
        /// `IS NOT NAN`.
        negated: bool,
    },
    /// `NAME(args)`; the name is upper-cased, checked by the compiler.
    Call {
        /// Upper-cased function name.
        name: String,
        /// Arguments in order.
        args: Vec<Expr>,
    },
}

impl ExprKind {
    fn children(&self) -> Vec<&Expr> {
        match self {
            ExprKind::Null
            | ExprKind::Bool(_)
            | ExprKind::Int(_)
            | ExprKind::Float(_)
            | ExprKind::Str(_)
            | ExprKind::Field(_) => Vec::new(),
            ExprKind::Negate(a) | ExprKind::Not(a) => vec![a],
            ExprKind::IsNull { operand, .. }
            | ExprKind::IsNan { operand, .. }
            | ExprKind::Like { operand, .. } => vec![operand],
            ExprKind::And(items) | ExprKind::Or(items) | ExprKind::Call { args: items, .. } => {
                items.iter().collect()
            }
            ExprKind::Arith(_, a, b) | ExprKind::Compare(_, a, b) => vec![a, b],
            ExprKind::In { operand, items, .. } | ExprKind::Affix { operand, items, .. } => {
                std::iter::once(&**operand).chain(items.iter()).collect()
            }
            ExprKind::Between {
                operand, low, high, ..
            } => vec![operand, low, high],
        }
    }
}

/// Parse a whole filter text into a syntax tree.
pub fn parse(text: &str) -> Result<Expr, FilterError> {
    if text.len() > MAX_FILTER_BYTES {
        return Err(FilterError::TooLong {
            length: text.len(),
            limit: MAX_FILTER_BYTES,
        });
    }
    let mut parser = Parser::new(text)?;
    let expr = parser.expression()?;
    if parser.current.kind != TokenKind::End {
        return Err(parser.expected("AND, OR or end of filter"));
    }
    Ok(expr)
}

struct Parser<'t> {
    lexer: Lexer<'t>,
    current: Token,
    /// Open recursive calls; bounded by MAX_NESTING_DEPTH (parentheses, calls, unary chains).
    recursion: usize,
}

impl<'t> Parser<'t> {
    fn new(text: &'t str) -> Result<Parser<'t>, FilterError> {
        let mut lexer = Lexer::new(text);
        let current = lexer.next_token()?;
        Ok(Parser {
            lexer,
            current,
            recursion: 0,
        })
    }

    fn advance(&mut self) -> Result<Token, FilterError> {
        let next = self.lexer.next_token()?;
        Ok(std::mem::replace(&mut self.current, next))
    }

    fn expected(&self, what: &str) -> FilterError {
        FilterError::Syntax {
            position: self.current.position,
            expected: what.to_string(),
            found: self.current.kind.describe(),
        }
    }

    fn is_word(&self, keyword: &str) -> bool {
        matches!(&self.current.kind, TokenKind::Word(w) if w.eq_ignore_ascii_case(keyword))
    }

    /// Consume `keyword` if it is next.
    fn eat_word(&mut self, keyword: &str) -> Result<bool, FilterError> {
        if self.is_word(keyword) {
            self.advance()?;
            return Ok(true);
        }
        Ok(false)
    }

    fn expect_word(&mut self, keyword: &str, context: &str) -> Result<(), FilterError> {
        if !self.eat_word(keyword)? {
            return Err(self.expected(&format!("{keyword} {context}")));
        }
        Ok(())
    }

    fn expect(&mut self, kind: TokenKind, what: &str) -> Result<(), FilterError> {
        if self.current.kind != kind {
            return Err(self.expected(what));
        }
        self.advance()?;
        Ok(())
    }

    /// Build a node, enforcing the depth limit on the tree.
    fn node(kind: ExprKind, position: usize) -> Result<Expr, FilterError> {
        let depth = 1 + kind
            .children()
            .iter()
            .map(|child| child.depth)
            .max()
            .unwrap_or(0);
        if depth > MAX_NESTING_DEPTH {
            return Err(FilterError::Limit {
                position,
                what: "expression nesting depth",
                limit: MAX_NESTING_DEPTH,
            });
        }
        Ok(Expr {
            kind,
            position,
            depth,
        })
    }

    fn enter(&mut self) -> Result<(), FilterError> {
        self.recursion += 1;
        if self.recursion > MAX_NESTING_DEPTH {
            return Err(FilterError::Limit {
                position: self.current.position,
                what: "expression nesting depth",
                limit: MAX_NESTING_DEPTH,
            });
        }
        Ok(())
    }

    fn leave(&mut self) {
        assert!(self.recursion > 0, "leave() without enter()");
        self.recursion -= 1;
    }

    fn expression(&mut self) -> Result<Expr, FilterError> {
        self.enter()?;
        let result = self.or_chain();
        self.leave();
        result
    }

    fn or_chain(&mut self) -> Result<Expr, FilterError> {
        let first = self.and_chain()?;
        if !self.is_word("OR") {
            return Ok(first);
        }
        let position = first.position;
        let mut items = vec![first];
        while self.eat_word("OR")? {
            items.push(self.and_chain()?);
            Self::check_list(position, items.len())?;
        }
        Self::node(ExprKind::Or(items), position)
    }

    fn and_chain(&mut self) -> Result<Expr, FilterError> {
        let first = self.negation()?;
        if !self.is_word("AND") {
            return Ok(first);
        }
        let position = first.position;
        let mut items = vec![first];
        while self.eat_word("AND")? {
            items.push(self.negation()?);
            Self::check_list(position, items.len())?;
        }
        Self::node(ExprKind::And(items), position)
    }

    fn negation(&mut self) -> Result<Expr, FilterError> {
        if self.is_word("NOT") {
            let position = self.advance()?.position;
            self.enter()?;
            let operand = self.negation();
            self.leave();
            return Self::node(ExprKind::Not(Box::new(operand?)), position);
        }
        self.predicate()
    }

    fn predicate(&mut self) -> Result<Expr, FilterError> {
        let left = self.additive()?;
        let position = self.current.position;
        let compare = match self.current.kind {
            TokenKind::Equal => Some(CompareOp::Equal),
            TokenKind::NotEqual => Some(CompareOp::NotEqual),
            TokenKind::Less => Some(CompareOp::Less),
            TokenKind::LessEqual => Some(CompareOp::LessEqual),
            TokenKind::Greater => Some(CompareOp::Greater),
            TokenKind::GreaterEqual => Some(CompareOp::GreaterEqual),
            _ => None,
        };
        if let Some(op) = compare {
            self.advance()?;
            let right = self.additive()?;
            return Self::node(
                ExprKind::Compare(op, Box::new(left), Box::new(right)),
                position,
            );
        }
        if self.eat_word("IS")? {
            let negated = self.eat_word("NOT")?;
            let kind = if self.eat_word("NULL")? {
                ExprKind::IsNull {
                    operand: Box::new(left),
                    negated,
                }
            } else if self.eat_word("NAN")? {
                ExprKind::IsNan {
                    operand: Box::new(left),
                    negated,
                }
            } else {
                return Err(self.expected("NULL or NAN after IS"));
            };
            return Self::node(kind, position);
        }
        let negated = self.eat_word("NOT")?;
        let operand = Box::new(left);
        let kind = if self.eat_word("IN")? {
            let items = self.list("IN")?;
            ExprKind::In {
                operand,
                items,
                negated,
            }
        } else if self.eat_word("BETWEEN")? {
            let low = Box::new(self.additive()?);
            self.expect_word("AND", "between the BETWEEN bounds")?;
            let high = Box::new(self.additive()?);
            ExprKind::Between {
                operand,
                low,
                high,
                negated,
            }
        } else if self.eat_word("LIKE")? {
            let pattern_position = self.current.position;
            let TokenKind::Str(pattern) = &self.current.kind else {
                return Err(self.expected("a string literal after LIKE"));
            };
            let pattern = pattern.clone().into_boxed_slice();
            self.advance()?;
            ExprKind::Like {
                operand,
                pattern,
                pattern_position,
                negated,
            }
        } else if self.is_word("BEGINS") || self.is_word("ENDS") {
            let kind = if self.is_word("BEGINS") {
                AffixKind::Prefix
            } else {
                AffixKind::Suffix
            };
            self.advance()?;
            self.expect_word("WITH", "after BEGINS/ENDS")?;
            let items = self.list(if kind == AffixKind::Prefix {
                "BEGINS WITH"
            } else {
                "ENDS WITH"
            })?;
            ExprKind::Affix {
                kind,
                operand,
                items,
                negated,
            }
        } else if negated {
            return Err(self.expected("IN, BETWEEN, LIKE, BEGINS WITH or ENDS WITH after NOT"));
        } else {
            return Ok(*operand);
        };
        Self::node(kind, position)
    }

    /// `( expr, expr, ... )` after IN / BEGINS WITH / ENDS WITH; at least one item.
    fn list(&mut self, after: &str) -> Result<Vec<Expr>, FilterError> {
        let position = self.current.position;
        self.expect(TokenKind::LeftParen, &format!("'(' after {after}"))?;
        let mut items = Vec::new();
        loop {
            items.push(self.expression()?);
            Self::check_list(position, items.len())?;
            if self.current.kind == TokenKind::Comma {
                self.advance()?;
                continue;
            }
            self.expect(
                TokenKind::RightParen,
                &format!("',' or ')' after {after} list"),
            )?;
            return Ok(items);
        }
    }

    fn check_list(position: usize, count: usize) -> Result<(), FilterError> {
        if count > MAX_LIST_ITEMS {
            return Err(FilterError::Limit {
                position,
                what: "number of list items",
                limit: MAX_LIST_ITEMS,
            });
        }
        Ok(())
    }

    fn additive(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.multiplicative()?;
        loop {
            let op = match self.current.kind {
                TokenKind::Plus => ArithOp::Add,
                TokenKind::Minus => ArithOp::Subtract,
                _ => return Ok(left),
            };
            let position = self.advance()?.position;
            let right = self.multiplicative()?;
            left = Self::node(
                ExprKind::Arith(op, Box::new(left), Box::new(right)),
                position,
            )?;
        }
    }

    fn multiplicative(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.unary()?;
        loop {
            let op = match &self.current.kind {
                TokenKind::Star => ArithOp::Multiply,
                TokenKind::Slash => ArithOp::Divide,
                TokenKind::Percent => ArithOp::Remainder,
                TokenKind::Word(w) if w.eq_ignore_ascii_case("MOD") => ArithOp::Remainder,
                _ => return Ok(left),
            };
            let position = self.advance()?.position;
            let right = self.unary()?;
            left = Self::node(
                ExprKind::Arith(op, Box::new(left), Box::new(right)),
                position,
            )?;
        }
    }

    fn unary(&mut self) -> Result<Expr, FilterError> {
        let negate = match self.current.kind {
            TokenKind::Minus => true,
            TokenKind::Plus => false,
            _ => return self.primary(),
        };
        let position = self.advance()?.position;
        self.enter()?;
        let operand = self.unary();
        self.leave();
        let operand = operand?;
        if !negate {
            return Ok(operand);
        }
        Self::node(ExprKind::Negate(Box::new(operand)), position)
    }

    fn primary(&mut self) -> Result<Expr, FilterError> {
        let position = self.current.position;
        let kind = match &self.current.kind {
            TokenKind::Int(value) => ExprKind::Int(*value),
            TokenKind::Float(value) => ExprKind::Float(*value),
            TokenKind::Str(bytes) => ExprKind::Str(bytes.clone().into_boxed_slice()),
            TokenKind::Path(path) => ExprKind::Field(path.clone()),
            TokenKind::LeftParen => {
                self.advance()?;
                let inner = self.expression()?;
                self.expect(TokenKind::RightParen, "')' to close '('")?;
                return Ok(inner);
            }
            TokenKind::Word(word) => {
                let upper = word.to_ascii_uppercase();
                match upper.as_str() {
                    "NULL" => ExprKind::Null,
                    "TRUE" => ExprKind::Bool(true),
                    "FALSE" => ExprKind::Bool(false),
                    "AND" | "OR" | "NOT" | "IN" | "BETWEEN" | "LIKE" | "IS" | "NAN" | "BEGINS"
                    | "ENDS" | "WITH" | "MOD" => {
                        return Err(self.expected("a field, literal or function call"));
                    }
                    _ => {
                        self.advance()?;
                        if self.current.kind != TokenKind::LeftParen {
                            return Err(self.expected(&format!("'(' after function name {upper}")));
                        }
                        let args = self.arguments(&upper)?;
                        return Self::node(ExprKind::Call { name: upper, args }, position);
                    }
                }
            }
            _ => return Err(self.expected("a field, literal, function call or '('")),
        };
        self.advance()?;
        Self::node(kind, position)
    }

    /// `( [expr {, expr}] )` of a function call, positioned at `(`.
    fn arguments(&mut self, name: &str) -> Result<Vec<Expr>, FilterError> {
        let position = self.current.position;
        self.advance()?;
        let mut args = Vec::new();
        if self.current.kind == TokenKind::RightParen {
            self.advance()?;
            return Ok(args);
        }
        loop {
            args.push(self.expression()?);
            Self::check_list(position, args.len())?;
            if self.current.kind == TokenKind::Comma {
                self.advance()?;
                continue;
            }
            self.expect(
                TokenKind::RightParen,
                &format!("',' or ')' after {name}() argument"),
            )?;
            return Ok(args);
        }
    }
}
