//! AMPS content filters: compile the expression text of a subscription once, then decide for each
//! published JSON message whether it matches.
//!
//! This module owns the whole filter pipeline — text → tokens ([`lexer`]) → syntax tree
//! ([`parser`]) → checked program ([`compile`]) → per-message evaluation ([`eval`]) over the fields
//! found by one structural scan of the payload ([`scan`]). It must never allocate per message in the
//! common cases — comparisons, `IN`, `BETWEEN`, `LIKE`/`BEGINS WITH`/`ENDS WITH` on strings,
//! `IS [NOT] NULL`, arithmetic, `IF`, `COALESCE`, numeric and context functions, arrays (a test
//! counts) — never panic on any filter text or payload, and never do I/O: the server owns
//! sockets, logging and counters. Functions that build strings (`CONCAT`, `UPPER`, ...), string
//! operators applied to numbers (which print them) and escaped strings inside arrays allocate.
//!
//! # How the server uses it
//!
//! ```
//! use tachyon_core::filter::{FieldTable, Filter, MessageContext, ScanScratch};
//!
//! let filter = Filter::compile("/sym IN ('IBM','MSFT') AND /px > 100 AND /side = 'B'").unwrap();
//! let mut table = FieldTable::new(); // one per topic
//! let bound = table.register(&filter); // once per subscription
//! let mut scratch = ScanScratch::new(); // one per shard thread
//! let payload = br#"{"sym":"IBM","px":101.5,"side":"B"}"#;
//! let fields = table.scan(payload, &mut scratch).unwrap(); // once per message
//! assert!(bound.eval(&fields, &MessageContext::default())); // once per subscription
//! ```
//!
//! # Semantics (what AMPS documents, and where we had to choose)
//!
//! * Types: NULL, boolean, integer (i64), float (f64), string (bytes). A missing field, JSON `null`,
//!   the empty string, an empty array and a JSON object used as a scalar are NULL. Booleans behave
//!   as the numbers 1 and 0.
//! * Comparisons (`= == != <> < <= > >=`): NULL on either side gives NULL (unknown), never TRUE.
//!   Two strings compare bytewise; a string meeting a number is converted to a number when it is
//!   numeric (`[+-]?(digits[.digits*]|.digits)([eE][+-]?digits)?`), otherwise the string is the
//!   greater. A NaN operand gives NULL. Integer against integer is exact; otherwise both become f64.
//! * `AND`/`OR`/`NOT` use SQL three-valued logic; a message matches only when the filter is TRUE.
//!   A non-boolean value used as a condition is TRUE when it is a non-zero number (numeric strings
//!   included), FALSE when zero, NULL otherwise.
//! * Arithmetic `+ - * / % MOD`: NULL in, NULL out; strings are converted (non-numeric → NaN);
//!   integer ⊕ integer stays integer (overflow falls back to f64); `%` takes the sign of the left
//!   operand; division or remainder by zero is NULL.
//! * Arrays: comparisons, `IN`, `BETWEEN`, `LIKE`, `BEGINS WITH`, `ENDS WITH` are true when *any*
//!   element (any pair, for two arrays) satisfies them; arithmetic and functions use the first
//!   element; `ARRAY_*` functions use all elements. Nested arrays and objects inside an array are
//!   NULL elements. `/a[2]` addresses one element; a path does not fan out through an array of
//!   objects (`/a/b` with `a` an array is missing; write `/a[0]/b`).
//! * `LIKE` is an unanchored regular-expression search (regex crate, byte-oriented, not
//!   Unicode-aware unless the pattern needs it); case-insensitive with `(?i)`.
//! * Strings are byte strings: `LENGTH`, `SUBSTR`, `INSTR`, `LEFT`, `RIGHT` count bytes and
//!   `UPPER`/`LOWER`/`_I` functions fold ASCII only. Numbers used as strings are printed canonically
//!   (integers in decimal, floats by Rust's shortest round-trip `Display`), not as the payload spelt
//!   them.
//! * Literals: `'...'`/`"..."` with AMPS escapes (`\n`, `\x41`, `\101`, backslash + any
//!   character), raw `r'...'` without; `NULL`; `TRUE`/`FALSE` are accepted as an extension (AMPS
//!   spells them 1 and 0). Integers beyond i64 become f64 (AMPS keeps them as u64).
//! * Duplicate keys in a payload: the first occurrence wins.
//!
//! See [`functions`] for the list of functions and their NULL rules.

pub mod compile;
mod datetime;
pub mod eval;
pub mod functions;
pub mod lexer;
pub mod parser;
#[doc(hidden)]
pub mod reference;
pub mod scan;
pub mod value;

use std::cell::RefCell;
use std::sync::Arc;

pub use compile::Program;
pub use scan::{BoundFilter, FieldTable, Malformed, ScanScratch, ScannedFields};
pub use value::Value;

/// Longest filter text accepted, in bytes; longer text is refused before lexing.
pub const MAX_FILTER_BYTES: usize = 64 * 1024;
/// Deepest nesting of parentheses, function calls, unary operators and operator trees; this bounds
/// every recursion in parser, compiler, evaluator and drop, so hostile text cannot overflow a stack.
pub const MAX_NESTING_DEPTH: usize = 64;
/// Most segments in one field path (`/a/b[0]/c` has four); bounds the scanner's recursion.
pub const MAX_PATH_SEGMENTS: usize = 32;
/// Most distinct field paths one filter may read.
pub const MAX_PATHS_PER_FILTER: usize = 256;
/// Most items in one `IN`/`BEGINS WITH`/`ENDS WITH` list or function argument list.
pub const MAX_LIST_ITEMS: usize = 4096;
/// Largest array subscript accepted in a path (`/a[999999]`).
pub const MAX_ARRAY_INDEX: u32 = 1_000_000;
/// Memory budget for one compiled `LIKE` pattern, in bytes (regex crate size limit).
pub const MAX_REGEX_BYTES: usize = 1 << 20;
/// Longest string a function may build (`REPLACE`, `CONCAT`); a longer result is NULL. Without it
/// nested `REPLACE` calls in one subscriber's filter could grow a string exponentially.
pub const MAX_STRING_RESULT_BYTES: usize = 1 << 20;

/// Why a filter text was refused. Every variant carries the byte offset (0-based) where the
/// problem was found; `Display` reads `bad filter at <offset>: <what was expected>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// The text is longer than [`MAX_FILTER_BYTES`].
    #[error("bad filter at 0: filter is {length} bytes, the limit is {limit} bytes")]
    TooLong {
        /// Length of the refused text in bytes.
        length: usize,
        /// The limit it exceeded.
        limit: usize,
    },
    /// The text is not in the grammar: something else was expected at `position`.
    #[error("bad filter at {position}: expected {expected}, found {found}")]
    Syntax {
        /// Byte offset of the offending token.
        position: usize,
        /// What the parser was looking for.
        expected: String,
        /// The offending token, quoted, or `end of filter`.
        found: String,
    },
    /// A literal (string, number, path) is malformed.
    #[error("bad filter at {position}: {message}")]
    Literal {
        /// Byte offset of the literal.
        position: usize,
        /// What is wrong with it.
        message: String,
    },
    /// The expression nests deeper than [`MAX_NESTING_DEPTH`] or exceeds another named limit.
    #[error("bad filter at {position}: {what} exceeds the limit of {limit}")]
    Limit {
        /// Byte offset where the limit was crossed.
        position: usize,
        /// Which limit, in words.
        what: &'static str,
        /// The limit's value.
        limit: usize,
    },
    /// A function name that does not exist.
    #[error("bad filter at {position}: unknown function {name}()")]
    UnknownFunction {
        /// Byte offset of the function name.
        position: usize,
        /// The name as written.
        name: String,
    },
    /// A function called with the wrong number of arguments.
    #[error("bad filter at {position}: {name}() takes {expected} arguments, found {found}")]
    Arity {
        /// Byte offset of the function name.
        position: usize,
        /// The function's canonical name.
        name: &'static str,
        /// Accepted argument counts, in words (`1`, `2 or 3`, `at least 1`).
        expected: String,
        /// Arguments given.
        found: usize,
    },
    /// A `LIKE` pattern that the regex engine refused.
    #[error("bad filter at {position}: bad LIKE pattern: {message}")]
    Regex {
        /// Byte offset of the pattern literal.
        position: usize,
        /// The regex engine's complaint.
        message: String,
    },
}

impl FilterError {
    /// Byte offset in the filter text where the problem was found.
    pub fn position(&self) -> usize {
        match self {
            FilterError::TooLong { .. } => 0,
            FilterError::Syntax { position, .. }
            | FilterError::Literal { position, .. }
            | FilterError::Limit { position, .. }
            | FilterError::UnknownFunction { position, .. }
            | FilterError::Arity { position, .. }
            | FilterError::Regex { position, .. } => *position,
        }
    }
}

/// Facts about a message that are not in its payload, for the context functions
/// (`TOPIC_NAME()`, `CORRELATION_ID()`, `BOOKMARK()`, `SOW_KEY()`, `CLIENT_NAME()`).
#[derive(Debug, Clone, Copy, Default)]
pub struct MessageContext<'a> {
    /// Topic the message was published to.
    pub topic: &'a [u8],
    /// The publisher's correlation id header, when it sent one.
    pub correlation_id: Option<&'a [u8]>,
    /// The bookmark assigned to the message, when there is one.
    pub bookmark: Option<&'a [u8]>,
    /// The SOW key of the record, for SOW topics.
    pub sow_key: Option<&'a [u8]>,
    /// Name of the publishing client.
    pub client_name: Option<&'a [u8]>,
}

/// A compiled filter: immutable, `Send + Sync`, cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct Filter {
    inner: Arc<FilterInner>,
}

struct FilterInner {
    text: Box<str>,
    program: Program,
    /// A private table holding exactly this filter's paths, for [`Filter::matches`].
    own_table: FieldTable,
    /// Slot of each of the program's paths in `own_table`.
    own_slots: Box<[u32]>,
}

impl std::fmt::Debug for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Filter")
            .field("text", &self.text())
            .finish()
    }
}

thread_local! {
    /// Scratch for [`Filter::matches`], reused so the convenience path does not allocate per call.
    static MATCH_SCRATCH: RefCell<ScanScratch> = RefCell::new(ScanScratch::new());
}

impl Filter {
    /// Compile filter text; errors say where and what was expected.
    pub fn compile(text: &str) -> Result<Filter, FilterError> {
        let program = compile::compile(text)?;
        Ok(Filter::from_program(text, program))
    }

    fn from_program(text: &str, program: Program) -> Filter {
        // The private table is built before the Arc exists, so it binds raw paths rather than a
        // `Filter` (a `BoundFilter` inside the filter would be a reference cycle).
        let mut own_table = FieldTable::new();
        let own_slots = own_table.register_paths(program.paths());
        let inner = Arc::new(FilterInner {
            text: text.into(),
            program,
            own_table,
            own_slots,
        });
        Filter { inner }
    }

    /// The text this filter was compiled from.
    pub fn text(&self) -> &str {
        &self.inner.text
    }

    /// The checked program (paths it reads, expression tree).
    pub fn program(&self) -> &Program {
        &self.inner.program
    }

    /// Scan `payload` and evaluate in one go, with a thread-local scratch; for tests and SOW
    /// queries. A malformed payload does not match.
    pub fn matches(&self, payload: &[u8], ctx: &MessageContext<'_>) -> bool {
        let inner = &*self.inner;
        let run = |scratch: &mut ScanScratch| match inner.own_table.scan(payload, scratch) {
            Ok(fields) => eval::evaluate(&inner.program, &inner.own_slots, &fields, ctx),
            Err(_) => false,
        };
        MATCH_SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut scratch) => run(&mut scratch),
            // Only reachable if evaluation re-entered `matches` on this thread; stay correct.
            Err(_) => run(&mut ScanScratch::new()),
        })
    }
}

#[cfg(test)]
mod tests;
