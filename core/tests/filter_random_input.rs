//! "Never panic" on every test run: thousands of random filter texts (token soup and raw bytes)
//! through the compiler, and random payloads through the scanner, with whatever compiles evaluated.
//! The fuzz target `fuzz/fuzz_targets/filter_parse.rs` does the same without a time limit.

use tachyon_core::filter::{FieldTable, Filter, MessageContext, ScanScratch};

/// xorshift64*: deterministic, dependency-free randomness so failures reproduce.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const PIECES: &[&str] = &[
    "/a",
    "/b/c",
    "/d[0]",
    "[/x y]",
    "/",
    " / ",
    "(",
    ")",
    ",",
    "=",
    "==",
    "!=",
    "<>",
    "<",
    "<=",
    ">",
    ">=",
    "+",
    "-",
    "*",
    "%",
    " MOD ",
    " AND ",
    " OR ",
    "NOT ",
    " IN ",
    " BETWEEN ",
    " LIKE ",
    " IS ",
    "NULL",
    "NAN",
    " BEGINS WITH ",
    " ENDS WITH ",
    "1",
    "-2",
    "3.5",
    "1e400",
    "99999999999999999999",
    "'x'",
    "\"y\"",
    "'\\x4",
    "'\\777'",
    "r'",
    "'",
    "UPPER(",
    "SUBSTR(",
    "IF(",
    "COALESCE(",
    "ARRAY_MAX(",
    "TOPIC_NAME()",
    "'(?i)a'",
    "'['",
    "TRUE",
    "é",
    "\u{0}",
    " ",
    "[",
    "]",
    "[/",
    "/a[",
    "9",
    ".",
    "e",
];

const PAYLOADS: &[&[u8]] = &[
    br#"{"a": 1, "b": {"c": "x"}, "d": [1, "two", null], "x y": true}"#,
    br#"{"a": "1e3", "b": {"c": [[]]}, "d": []}"#,
    b"{\"a\":",
    b"[1, 2, 3]",
    b"",
];

fn evaluate_everywhere(filter: &Filter) {
    let ctx = MessageContext {
        topic: b"t",
        ..MessageContext::default()
    };
    let mut table = FieldTable::new();
    let bound = table.register(filter);
    let mut scratch = ScanScratch::new();
    for payload in PAYLOADS {
        let _ = filter.matches(payload, &ctx);
        if let Ok(fields) = table.scan(payload, &mut scratch) {
            let _ = bound.eval(&fields, &ctx);
        }
    }
    table.unregister(&bound);
}

#[test]
fn random_token_soup_never_panics() {
    let mut random = Random(0x9E37_79B9_7F4A_7C15);
    let mut compiled = 0;
    for _ in 0..5000 {
        let mut text = String::new();
        for _ in 0..random.below(12) + 1 {
            text.push_str(PIECES[random.below(PIECES.len())]);
        }
        match Filter::compile(&text) {
            Ok(filter) => {
                compiled += 1;
                evaluate_everywhere(&filter);
            }
            Err(error) => {
                assert!(error.to_string().starts_with("bad filter at "), "{error}");
                assert!(error.position() <= text.len(), "{text:?}: {error}");
            }
        }
    }
    // The soup must reach the evaluator, not only the error paths.
    assert!(compiled > 100, "only {compiled} random texts compiled");
}

#[test]
fn random_bytes_never_panic() {
    let mut random = Random(0xD1B5_4A32_D192_ED03);
    for _ in 0..5000 {
        let length = random.below(64);
        let bytes: Vec<u8> = (0..length).map(|_| (random.next() >> 56) as u8).collect();
        let text = String::from_utf8_lossy(&bytes);
        if let Ok(filter) = Filter::compile(&text) {
            evaluate_everywhere(&filter);
        }
    }
}

#[test]
fn random_payloads_never_panic() {
    let filter =
        Filter::compile("/a = 1 OR /b/c IS NULL OR /d[1] LIKE 'w' OR ARRAY_COUNT(/d) > 1").unwrap();
    let mut table = FieldTable::new();
    let bound = table.register(&filter);
    let mut scratch = ScanScratch::new();
    let alphabet = b"{}[]\":,\\ abcdtrufalsenl0123456789.-eE";
    let mut random = Random(0xA076_1D64_78BD_642F);
    for _ in 0..20_000 {
        let length = random.below(48);
        let mut payload: Vec<u8> = b"{\"".to_vec();
        payload.extend((0..length).map(|_| alphabet[random.below(alphabet.len())]));
        if let Ok(fields) = table.scan(&payload, &mut scratch) {
            let _ = bound.eval(&fields, &MessageContext::default());
        }
        let _ = filter.matches(&payload, &MessageContext::default());
    }
}

#[test]
fn deep_payload_nesting_does_not_overflow() {
    let filter = Filter::compile("/a/a/a/a = 1 OR /z = 1").unwrap();
    let mut deep = Vec::new();
    for _ in 0..200_000 {
        deep.extend_from_slice(b"{\"a\":[");
    }
    assert!(!filter.matches(&deep, &MessageContext::default()));
    let mut balanced = b"{\"q\":".to_vec();
    balanced.extend(std::iter::repeat_n(b'[', 100_000));
    balanced.extend(std::iter::repeat_n(b']', 100_000));
    balanced.extend_from_slice(b",\"z\":1}");
    assert!(filter.matches(&balanced, &MessageContext::default()));
}
