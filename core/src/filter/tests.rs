//! Unit tests for the filter engine: every operator, function, precedence rule and NULL rule,
//! checked on the engine (scan + compiled evaluation) and on the reference evaluator alike.

use super::lexer::{tokenize, TokenKind};
use super::parser::{parse, ExprKind, FieldPath, Segment};
use super::scan::RawValue;
use super::*;

const DOC: &str = r#"{
  "sym": "IBM", "px": 101.5, "qty": 200, "side": "B", "flag": true, "off": false,
  "nil": null, "empty": "", "numstr": "47", "fstr": "2.50", "neg": -7, "zero": 0,
  "word": "Hello World", "pad": "  padded  ", "big": 9223372036854775807,
  "data": [1, 2, 3, "zebra", 5], "other": [14, 34, 23, 5], "none": [], "nested": [[1], {"a": 1}],
  "order": {"id": "o-1", "legs": [{"px": 10}, {"px": 20}], "inner": {"deep": 3}},
  "esc": "a\"b\\c\u00e9\n", "Not Xpath Name": 5, "k\"ey": 9, "@attr": "x", "55": "FIX",
  "tz": "20240102T030405", "dash-name": 8
}"#;

fn context() -> MessageContext<'static> {
    MessageContext {
        topic: b"orders",
        correlation_id: Some(b"corr-1"),
        bookmark: None,
        sow_key: Some(b"k1"),
        client_name: Some(b"pub-1"),
    }
}

/// Assert that `filter` evaluates to `expected` on `doc`, on the engine and on the reference.
fn check_on(doc: &str, filter: &str, expected: bool) {
    let compiled = Filter::compile(filter).unwrap_or_else(|e| panic!("{filter}: {e}"));
    let ctx = context();
    assert_eq!(
        compiled.matches(doc.as_bytes(), &ctx),
        expected,
        "engine: {filter}"
    );
    let json: serde_json::Value = serde_json::from_str(doc).unwrap();
    let reference = reference::evaluate(filter, &json, &ctx, doc.len()).unwrap();
    assert_eq!(reference, expected, "reference: {filter}");
}

fn check(cases: &[(&str, bool)]) {
    for (filter, expected) in cases {
        check_on(DOC, filter, *expected);
    }
}

fn error_of(filter: &str) -> FilterError {
    match Filter::compile(filter) {
        Ok(_) => panic!("{filter:?} compiled"),
        Err(error) => error,
    }
}

#[test]
fn lexer_reads_paths_numbers_strings_and_operators() {
    let kinds: Vec<TokenKind> = tokenize("/a/b[2] >= 1.5e1 AND [/x y] <> r'C\\+' / /q*/r")
        .unwrap()
        .into_iter()
        .map(|t| t.kind)
        .collect();
    let key = |s: &str| Segment::Key(s.as_bytes().into());
    assert_eq!(
        kinds[0],
        TokenKind::Path(FieldPath::new(vec![key("a"), key("b"), Segment::Index(2)]))
    );
    assert_eq!(kinds[1], TokenKind::GreaterEqual);
    assert_eq!(kinds[2], TokenKind::Float(15.0));
    assert_eq!(kinds[3], TokenKind::Word("AND".into()));
    assert_eq!(kinds[4], TokenKind::Path(FieldPath::new(vec![key("x y")])));
    assert_eq!(kinds[5], TokenKind::NotEqual);
    assert_eq!(kinds[6], TokenKind::Str(b"C\\+".to_vec()));
    assert_eq!(kinds[7], TokenKind::Slash);
    assert_eq!(kinds[8], TokenKind::Path(FieldPath::new(vec![key("q")])));
    assert_eq!(kinds[9], TokenKind::Star);
    assert_eq!(kinds[10], TokenKind::Path(FieldPath::new(vec![key("r")])));
    assert_eq!(kinds[11], TokenKind::End);
}

#[test]
fn lexer_processes_escapes() {
    let cases: &[(&str, &[u8])] = &[
        (r"'a\tb'", b"a\tb"),
        (r"'\a\b\f\n\r\v'", b"\x07\x08\x0c\n\r\x0b"),
        (r"'\x41\x7a'", b"Az"),
        (r"'\101\0'", b"A\0"),
        (r"'it\'s'", b"it's"),
        (r#""say \"hi\"""#, b"say \"hi\""),
        (r"'\q\\'", b"q\\"),
        ("'caf\\\u{e9}'", "caf\u{e9}".as_bytes()),
        (r"r'\d+'", b"\\d+"),
    ];
    for (text, expected) in cases {
        let tokens = tokenize(text).unwrap();
        assert_eq!(tokens[0].kind, TokenKind::Str(expected.to_vec()), "{text}");
    }
}

#[test]
fn lexer_big_integers_become_floats() {
    assert_eq!(
        tokenize("9223372036854775807").unwrap()[0].kind,
        TokenKind::Int(i64::MAX)
    );
    assert_eq!(
        tokenize("9223372036854775808").unwrap()[0].kind,
        TokenKind::Float(9223372036854775808.0)
    );
    assert_eq!(tokenize(".5").unwrap()[0].kind, TokenKind::Float(0.5));
}

#[test]
fn errors_name_position_and_expectation() {
    let cases: &[(&str, &str)] = &[
        (
            "/a IN (1, 2",
            "bad filter at 11: expected ',' or ')' after IN list, found end of filter",
        ),
        (
            "/a IN (1 2)",
            "bad filter at 9: expected ',' or ')' after IN list, found '2'",
        ),
        (
            "/a = ",
            "bad filter at 5: expected a field, literal, function call or '(', found end of filter",
        ),
        ("/a = 'x", "bad filter at 5: unterminated string"),
        (
            "/a LIKE /b",
            "bad filter at 8: expected a string literal after LIKE, found '/b'",
        ),
        ("/a LIKE '('", "bad filter at 8: bad LIKE pattern"),
        ("FOO(/a) = 1", "bad filter at 0: unknown function FOO()"),
        (
            "upper(/a, /b) = 1",
            "bad filter at 0: UPPER() takes 1 arguments, found 2",
        ),
        (
            "SUBSTR(/a) = 1",
            "bad filter at 0: SUBSTR() takes 2 to 3 arguments, found 1",
        ),
        (
            "/a BETWEEN 1 OR 2",
            "bad filter at 13: expected AND between the BETWEEN bounds, found 'OR'",
        ),
        (
            "/a IS 5",
            "bad filter at 6: expected NULL or NAN after IS, found '5'",
        ),
        (
            "/a NOT 5",
            "bad filter at 7: expected IN, BETWEEN, LIKE, BEGINS WITH or ENDS WITH after NOT",
        ),
        (
            "/a = 1 /b = 2",
            "bad filter at 7: expected AND, OR or end of filter, found '/b'",
        ),
        (
            "/qty = 200 = 1",
            "bad filter at 11: expected AND, OR or end of filter, found '='",
        ),
        ("(/a = 1", "bad filter at 7: expected ')' to close '('"),
        (
            "/a = 1 & /b",
            "bad filter at 7: expected a field, literal, operator or parenthesis, found '&'",
        ),
        (
            "/a[x] = 1",
            "bad filter at 2: array subscript must be [digits]",
        ),
        (
            "/a = 12abc",
            "bad filter at 7: expected an operator after the number",
        ),
        ("/a = '\\x4'", "bad filter at 6: \\x needs two hex digits"),
        ("/a = '\\777'", "bad filter at 6: octal escape above \\377"),
        (
            "/a BEGINS /b",
            "bad filter at 10: expected WITH after BEGINS/ENDS",
        ),
        (
            "AND = 1",
            "bad filter at 0: expected a field, literal or function call, found 'AND'",
        ),
        (
            "sym = 1",
            "bad filter at 4: expected '(' after function name SYM",
        ),
        (
            "",
            "bad filter at 0: expected a field, literal, function call or '(', found end of filter",
        ),
    ];
    for (filter, message) in cases {
        let error = error_of(filter).to_string();
        assert!(
            error.starts_with(message),
            "{filter:?}: got {error:?}, want {message:?}"
        );
    }
    assert_eq!(error_of("/a IN (1, 2").position(), 11);
}

#[test]
fn limits_are_enforced_with_clear_errors() {
    let long = format!("/a = '{}'", "x".repeat(MAX_FILTER_BYTES));
    assert!(matches!(error_of(&long), FilterError::TooLong { .. }));

    let nested_parens = format!("{}/a = 1{}", "(".repeat(100), ")".repeat(100));
    assert!(error_of(&nested_parens)
        .to_string()
        .contains("expression nesting depth exceeds the limit of 64"));
    let nots = format!("{}/a = 1", "NOT ".repeat(100));
    assert!(matches!(error_of(&nots), FilterError::Limit { .. }));
    let minus = format!("{}1 = 1", "-".repeat(100));
    assert!(matches!(error_of(&minus), FilterError::Limit { .. }));
    let sum = format!("/a = {}", vec!["1"; 100].join(" + "));
    assert!(matches!(error_of(&sum), FilterError::Limit { .. }));
    let calls = format!("{}/a{} = 1", "ABS(".repeat(100), ")".repeat(100));
    assert!(matches!(error_of(&calls), FilterError::Limit { .. }));
    // Hostile depth far beyond the limit must be refused, not overflow the stack.
    let deep = "(".repeat(60_000);
    assert!(matches!(error_of(&deep), FilterError::Limit { .. }));

    // Just inside the limits compiles.
    let ok_parens = format!("{}/a = 1{}", "(".repeat(60), ")".repeat(60));
    Filter::compile(&ok_parens).unwrap();
    let long_and = vec!["/a = 1"; 1000].join(" AND ");
    Filter::compile(&long_and).unwrap();

    let deep_path = format!("{} = 1", "/a".repeat(MAX_PATH_SEGMENTS + 1));
    assert!(error_of(&deep_path)
        .to_string()
        .contains("segments in a field path"));
    let many_paths = (0..=MAX_PATHS_PER_FILTER)
        .map(|i| format!("/f{i} = 1"))
        .collect::<Vec<_>>()
        .join(" OR ");
    assert!(error_of(&many_paths)
        .to_string()
        .contains("distinct fields"));
    assert!(error_of("/a[1000001] = 1")
        .to_string()
        .contains("array subscript"));
}

#[test]
fn precedence() {
    check(&[
        ("1 + 2 * 3 = 7", true),
        ("(1 + 2) * 3 = 9", true),
        ("10 - 4 - 3 = 3", true),
        ("2 * 3 % 4 = 2", true),
        ("-2 * 3 = -6", true),
        ("- /neg = 7", true),
        // NOT binds looser than comparison, tighter than AND; AND tighter than OR.
        ("NOT /qty = 1", true),
        ("NOT /qty = 200 OR /side = 'B'", true),
        ("/side = 'S' AND /qty = 1 OR /sym = 'IBM'", true),
        ("/side = 'S' AND (/qty = 1 OR /sym = 'IBM')", false),
        ("NOT (/side = 'B' AND /qty = 200)", false),
        ("NOT NOT /side = 'B'", true),
        ("/qty + 1 BETWEEN 200 + 1 AND 300 AND /side = 'B'", true),
    ]);
}

#[test]
fn precedence_of_not_over_or_is_structural() {
    let expr = parse("NOT /a = 1 OR /b = 2").unwrap();
    let ExprKind::Or(items) = expr.kind else {
        panic!("OR at the top")
    };
    assert!(matches!(items[0].kind, ExprKind::Not(_)));
}

#[test]
fn comparisons_and_coercion() {
    check(&[
        ("/qty = 200", true),
        ("/qty == 200", true),
        ("/qty = 200.0", true),
        ("/qty != 200", false),
        ("/qty <> 201", true),
        ("/px > 101", true),
        ("/px >= 101.5", true),
        ("/px < 101.5", false),
        ("/px <= 101.5", true),
        ("/sym = 'IBM'", true),
        ("/sym = \"IBM\"", true),
        ("/sym = 'ibm'", false),
        ("/sym < 'IBN'", true),
        ("/numstr = 47", true),
        ("/numstr > 5", true),
        ("/numstr > '5'", false),
        ("/fstr = 2.5", true),
        ("/fstr = '2.5'", false),
        ("10 < '2'", false),
        ("'2.000' <> '2.0'", true),
        ("2 = 2.0", true),
        ("10 < 'Crank It Up'", true),
        ("'Crank' > 1000000", true),
        ("/flag = 1", true),
        ("/flag = TRUE", true),
        ("/off = 0", true),
        ("/flag > /off", true),
        ("/big = 9223372036854775807", true),
        ("/big > 9223372036854775806", true),
        ("' 5' = 5", false),
        ("'+5' = 5", true),
        ("'5.' = 5", true),
        ("'1e2' = 100", true),
    ]);
}

#[test]
fn null_rules() {
    check(&[
        ("/missing = 1", false),
        ("/missing != 1", false),
        ("NOT /missing = 1", false),
        ("NOT /missing != 1", false),
        ("/nil = NULL", false),
        ("/nil != NULL", false),
        ("/sym = NULL", false),
        ("/sym != NULL", false),
        ("/missing IS NULL", true),
        ("/nil IS NULL", true),
        ("/empty IS NULL", true),
        ("/none IS NULL", true),
        ("/order IS NOT NULL", true),
        ("/data IS NOT NULL", true),
        ("/sym IS NULL", false),
        ("/sym IS NOT NULL", true),
        ("'' IS NULL", true),
        ("'' = ''", false),
        ("10 < ''", false),
        ("10 > ''", false),
        ("/empty = ''", false),
        // Three-valued AND / OR.
        ("/sym = 'IBM' AND /missing = 1", false),
        ("NOT (/sym = 'IBM' AND /missing = 1)", false),
        ("NOT (/sym = 'XXX' AND /missing = 1)", true),
        ("/sym = 'IBM' OR /missing = 1", true),
        ("/sym = 'XXX' OR /missing = 1", false),
        ("NOT (/sym = 'XXX' OR /missing = 1)", false),
        ("(/missing + 1) IS NULL", true),
        ("/missing IN (1, 2)", false),
        ("/missing NOT IN (1, 2)", false),
        ("/qty IN (1, NULL)", false),
        ("/qty NOT IN (1, NULL)", false),
        ("/qty NOT IN (1, 2)", true),
        ("/missing BETWEEN 1 AND 2", false),
        ("/missing NOT BETWEEN 1 AND 2", false),
        ("/missing LIKE 'x'", false),
        ("/missing NOT LIKE 'x'", false),
        ("/order = 1", false),
        ("/order != 1", false),
    ]);
}

#[test]
fn arithmetic() {
    check(&[
        ("1 / 5 = 0", true),
        ("7 / 2 = 3", true),
        ("-7 / 2 = -3", true),
        ("7.0 / 2 = 3.5", true),
        ("-5 % 3 = -2", true),
        ("5 MOD 3 = 2", true),
        ("5 mod -3 = 2", true),
        ("5.5 % 2 = 1.5", true),
        ("/qty * /px = 20300", true),
        ("/qty*/px = 20300", true),
        ("/qty / 4 = 50", true),
        ("/numstr + 3 = 50", true),
        ("(/sym + 1) IS NAN", true),
        ("(1 / 0) IS NULL", true),
        ("(1 % 0) IS NULL", true),
        ("(1.5 / 0) IS NULL", true),
        ("(/missing * 2) IS NULL", true),
        ("9223372036854775807 + 1 > 9223372036854775807", false),
        ("9223372036854775807 + 1 = 9223372036854775808.0", true),
        ("/flag + 1 = 2", true),
        ("- /numstr = -47", true),
        ("+ /qty = 200", true),
        ("-9223372036854775807 - 1 = -9223372036854775807 - 1", true),
    ]);
}

#[test]
fn in_between_like_affixes() {
    check(&[
        ("/sym IN ('IBM', 'MSFT')", true),
        ("/sym in ('MSFT', 'ORCL')", false),
        ("/sym NOT IN ('MSFT', 'ORCL')", true),
        ("/qty IN (100, 200)", true),
        ("/qty IN ('200')", true),
        ("/qty IN (/qty * 1, 5)", true),
        ("3 IN (/data)", true),
        ("42 IN (/data)", false),
        ("/data IN (5, 6)", true),
        ("/qty BETWEEN 100 AND 200", true),
        ("/qty BETWEEN 201 AND 300", false),
        ("/qty NOT BETWEEN 201 AND 300", true),
        ("/px BETWEEN 101 AND 102", true),
        ("(/px * /qty) BETWEEN 0 AND 100000", true),
        ("/sym LIKE 'B'", true),
        ("/sym LIKE '^B'", false),
        ("/sym LIKE 'ibm'", false),
        ("/sym LIKE '(?i)ibm'", true),
        ("/sym NOT LIKE '^I'", false),
        // Plain strings process escapes (`\s` is `s`); raw strings and `\\` keep the backslash.
        ("/word LIKE '^Hello\\s+W'", false),
        ("/word LIKE '^Hello\\\\s+W'", true),
        ("/word LIKE r'^Hello\\s'", true),
        ("/word LIKE r'^Hello\\sX'", false),
        ("/qty LIKE '^20'", true),
        ("/px LIKE '^101\\.5$'", true),
        ("/data LIKE 'z'", true),
        ("/other LIKE 'z'", false),
        ("/esc LIKE '\u{e9}'", true),
        ("/word BEGINS WITH ('Hell')", true),
        ("/word BEGINS WITH ('x', 'Hello')", true),
        ("/word NOT BEGINS WITH ('Hell')", false),
        ("/word ENDS WITH ('World')", true),
        ("/word ENDS WITH ('world')", false),
        ("/word NOT ENDS WITH ('x', 'y')", true),
        ("/qty ENDS WITH ('00')", true),
        ("/data BEGINS WITH ('ze')", true),
        ("/word BEGINS WITH (NULL)", false),
        ("/word NOT BEGINS WITH (NULL)", false),
        ("/word BEGINS WITH (NULL, 'H')", true),
    ]);
}

#[test]
fn arrays() {
    check(&[
        ("/data = 1", true),
        ("/data = 'zebra'", true),
        ("/data != 'zebra'", true),
        ("/data = 42", false),
        ("/other > 30", true),
        ("/other > 50", false),
        ("/data[0] = 1", true),
        ("/data[3] = \"zebra\"", true),
        ("/data[1] != 1", true),
        ("/other[1] LIKE '4'", true),
        ("/data[9] IS NULL", true),
        ("/data = /other", true),
        ("/data[0] = /other", false),
        ("/data + 1 = 2", true),
        ("UPPER(/data) = '1'", true),
        ("/none = 1", false),
        ("/none != 1", false),
        ("/nested = 1", false),
        ("/nested[0][0] = 1", true),
        ("/nested[1]/a = 1", true),
        ("/order/legs[1]/px = 20", true),
        ("/order/legs/px = 10", false),
        ("/order/inner/deep = 3", true),
        ("/order/id = 'o-1'", true),
        ("ARRAY_COUNT(/data) = 5", true),
        ("ARRAY_COUNT(/none) = 0", true),
        ("ARRAY_COUNT(/sym) = 1", true),
        ("ARRAY_COUNT(/missing) = 0", true),
        ("ARRAY_COUNT(/nested) = 2", true),
        ("ARRAY_MAX(/other) = 34", true),
        ("ARRAY_MIN(/other) = 5", true),
        ("ARRAY_MAX(/data) = 'zebra'", true),
        ("ARRAY_SUM(/other) = 76", true),
        ("ARRAY_SUM(/none) IS NULL", true),
        ("ARRAY_MAX(/qty) = 200", true),
    ]);
}

#[test]
fn identifiers() {
    check(&[
        ("[/Not Xpath Name] = 5", true),
        ("/@attr = 'x'", true),
        ("/55 = 'FIX'", true),
        ("/dash-name = 8", true),
        ("/dash - 1 IS NULL", true),
        ("/esc = 'a\"b\\\\c\u{e9}\\n'", true),
        ("/tz > '20240101T000000'", true),
        ("LENGTH(/esc) = 8", true),
    ]);
    // A member name that needed unescaping in the payload is still found.
    check_on(r#"{"k\"ey": 9, "a\u0062": 2}"#, "/ab = 2", true);
}

#[test]
fn string_functions() {
    check(&[
        ("UPPER(/sym) = 'IBM'", true),
        ("upper(/word) = 'HELLO WORLD'", true),
        ("LOWER(/word) = 'hello world'", true),
        ("LENGTH(/word) = 11", true),
        ("LENGTH(/qty) = 3", true),
        ("LENGTH(/missing) IS NULL", true),
        ("CONCAT(/sym, '-', /qty) = 'IBM-200'", true),
        ("CONCAT(/sym, /missing) = 'IBM'", true),
        ("CONCAT(/missing, /empty) IS NULL", true),
        ("CONCAT(/px, '') = '101.5'", true),
        ("CONCAT(/flag) = 'true'", true),
        ("SUBSTR(/word, 1, 5) = 'Hello'", true),
        ("SUBSTR(/word, 7) = 'World'", true),
        ("SUBSTR(/word, -5) = 'World'", true),
        ("SUBSTR(/word, -5, 2) = 'Wo'", true),
        ("SUBSTR(/word, 11, 100) = 'd'", true),
        ("SUBSTR(/word, 12) IS NULL", true),
        ("SUBSTR(/word, 0) IS NULL", true),
        ("SUBSTR(/word, -12) IS NULL", true),
        ("SUBSTR(/word, 1, 0) IS NULL", true),
        ("SUBSTR(/word, 2.9, 1) = 'e'", true),
        ("INSTR(/word, 'World') = 7", true),
        ("INSTR(/word, 'world') = 0", true),
        ("INSTR_I(/word, 'WORLD') = 7", true),
        ("INSTR(/missing, 'x') IS NULL", true),
        ("STREQUAL_I(/sym, 'ibm') == 1", true),
        ("STREQUAL_I(/sym, 'ibx')", false),
        ("STREQUAL_I(/sym, /missing) IS NULL", true),
        ("LEFT(/word, 5) = 'Hello'", true),
        ("LEFT(/word, 100) = 'Hello World'", true),
        ("LEFT(/word, 0) IS NULL", true),
        ("RIGHT(/word, 5) = 'World'", true),
        ("RIGHT(/word, -1) IS NULL", true),
        ("REPLACE(/word, 'o', '0') = 'Hell0 W0rld'", true),
        ("REPLACE(/word, 'o', NULL) = 'Hell Wrld'", true),
        ("REPLACE(/word, NULL, 'x') = 'Hello World'", true),
        ("REPLACE(/sym, 'IBM', '') IS NULL", true),
        ("TRIM(/pad) = 'padded'", true),
        ("LTRIM(/pad) = 'padded  '", true),
        ("RTRIM(/pad) = '  padded'", true),
        ("TRIM(/word, 'Hd') = 'ello Worl'", true),
        ("TRIM('   ') IS NULL", true),
        ("REVERSE(/sym) = 'MBI'", true),
        ("REVERSE('caf\u{e9}') = '\u{e9}fac'", true),
        ("REVERSE(/qty) = '002'", true),
        ("CHAR_VALUE(65) = 'A'", true),
        ("CHAR_VALUE(256) IS NULL", true),
    ]);
}

#[test]
fn numeric_functions() {
    check(&[
        ("ABS(/neg) = 7", true),
        ("ABS(-2.5) = 2.5", true),
        ("ABS(/missing) IS NULL", true),
        ("ROUND(2.5) = 3", true),
        ("ROUND(-2.5) = -3", true),
        ("ROUND(2.449, 1) = 2.4", true),
        ("ROUND(1250, -2) = 1300", true),
        ("ROUND(-1250, -2) = -1300", true),
        ("ROUND(1249, -2) = 1200", true),
        ("ROUND(/qty) = 200", true),
        ("FLOOR(/px) = 101", true),
        ("FLOOR(-1.5) = -2", true),
        ("CEILING(/px) = 102", true),
        ("CEILING(/qty) = 200", true),
        ("SIGN(/neg) = -1", true),
        ("SIGN(/zero) = 0", true),
        ("SIGN(0.5) = 1", true),
        ("SQRT(16) = 4", true),
        ("SQRT(-1) IS NAN", true),
        ("SQRT(-1) IS NOT NAN", false),
        ("POWER(2, 10) = 1024", true),
        ("EXP(0) = 1", true),
        ("LN(1) = 0", true),
        ("LOG2(8) = 3", true),
        ("LOG10(1000) = 3", true),
        ("GREATEST(1, /qty, 3) = 200", true),
        ("GREATEST(/missing, 2) = 2", true),
        ("GREATEST(/missing) IS NULL", true),
        ("LEAST(5, /neg, 3) = -7", true),
        ("LEAST('a', 5) = 5", true),
        ("COALESCE(/missing, /nil, /empty, /sym) = 'IBM'", true),
        ("COALESCE(/missing) IS NULL", true),
        ("IF(/side = 'B', /qty, -/qty) = 200", true),
        ("IF(/side = 'S', /qty, -/qty) = -200", true),
        ("IF(/missing = 1, 1, 2) = 2", true),
        ("IF(/flag, 'y', 'n') = 'y'", true),
        ("UNIX_TIMESTAMP() > 1700000000", true),
        ("NAN_VALUE() IS NAN", true),
        ("NAN_VALUE() = NAN_VALUE()", false),
        ("NAN_VALUE() != 1", false),
        ("TRUE_VALUE() = 1", true),
        ("FALSE_VALUE() = 0", true),
        ("/qty IS NAN", false),
    ]);
}

#[test]
fn context_functions() {
    check(&[
        ("TOPIC_NAME() = 'orders'", true),
        ("CORRELATION_ID() = 'corr-1'", true),
        ("BOOKMARK() IS NULL", true),
        ("SOW_KEY() = 'k1'", true),
        ("CLIENT_NAME() LIKE '^pub'", true),
        (&format!("MESSAGE_SIZE() = {}", DOC.len()), true),
    ]);
}

#[test]
fn conditions_from_plain_values() {
    check(&[
        ("/flag", true),
        ("/off", false),
        ("NOT /off", true),
        ("/qty", true),
        ("/zero", false),
        ("/numstr", true),
        ("/sym", false),
        ("NOT /sym", false),
        ("/missing", false),
        ("NOT /missing", false),
        ("(/qty > 1) = 1", true),
    ]);
}

#[test]
fn malformed_payloads_do_not_match_and_are_reported() {
    let filter = Filter::compile("/a = 1 OR /a IS NULL").unwrap();
    let mut table = FieldTable::new();
    let bound = table.register(&filter);
    let mut scratch = ScanScratch::new();
    let ctx = MessageContext::default();
    let bad: &[&[u8]] = &[
        b"",
        b"   ",
        b"{",
        b"{\"a\"",
        b"{\"a\":}",
        b"{\"b\":1",
        b"{\"a\" 1}",
        b"{\"b\":\"unterminated}",
        b"{\"b\":[1,2}",
        b"{\"b\":tru}",
        b"{\"b\":01}",
        b"{\"b\":1.}",
        b"{\"b\":-}",
        b"{\"b\":1e}",
        b"{\"b\":1}x",
        b"{\"b\":1,}",
        b"{\"a\":\"\\u12\"}",
        b"{\"a\":\"\\ud800\"}",
        b"{\"a\":\"\\q\"}",
        b"{b:1}",
        b"\xff",
    ];
    for payload in bad {
        assert!(
            table.scan(payload, &mut scratch).is_err(),
            "{:?}",
            String::from_utf8_lossy(payload)
        );
        assert!(
            !filter.matches(payload, &ctx),
            "{:?}",
            String::from_utf8_lossy(payload)
        );
    }
    let fields = table.scan(b" {\"a\" : 1 } ", &mut scratch).unwrap();
    assert!(bound.eval(&fields, &ctx));
    // A valid non-object document has no fields.
    let fields = table.scan(b"[1, 2]", &mut scratch).unwrap();
    assert!(bound.eval(&fields, &ctx));
    // The scan stops at the last wanted field: what follows is not read (documented).
    assert!(table.scan(b"{\"a\":1, garbage", &mut scratch).is_ok());
}

#[test]
fn scan_stops_early_and_skips_unwanted_values() {
    let filter = Filter::compile("/b/c = 2").unwrap();
    let mut table = FieldTable::new();
    let bound = table.register(&filter);
    let mut scratch = ScanScratch::new();
    let payload =
        br#"{"a": {"x": "}{][", "y": [1, {"z": "\"]"}]}, "b": {"q": [[]], "c": 2}, "rest": oops"#;
    let fields = table.scan(payload, &mut scratch).unwrap();
    assert!(bound.eval(&fields, &MessageContext::default()));
}

#[test]
fn escaped_values_unescape_into_the_scratch() {
    let filter = Filter::compile("/a = 'x\"y' AND /b = 'é' AND /c[1] = 'q\\\\n'").unwrap();
    let payload = br#"{"a": "x\"y", "b": "\u00e9", "c": ["p", "q\\n"]}"#;
    assert!(filter.matches(payload, &MessageContext::default()));
    let mut table = FieldTable::new();
    let bound = table.register(&filter);
    let mut scratch = ScanScratch::new();
    let fields = table.scan(payload, &mut scratch).unwrap();
    assert_eq!(fields.get(bound.slots()[0]), RawValue::Str(b"x\"y"));
    assert_eq!(fields.get(bound.slots()[1]), RawValue::Str("é".as_bytes()));
}

#[test]
fn duplicate_keys_first_wins() {
    check_on_engine_only(br#"{"a": 1, "a": 2}"#, "/a = 1", true);
    check_on_engine_only(br#"{"a": 1, "a": 2}"#, "/a = 2", false);
}

fn check_on_engine_only(payload: &[u8], filter: &str, expected: bool) {
    let compiled = Filter::compile(filter).unwrap();
    assert_eq!(
        compiled.matches(payload, &MessageContext::default()),
        expected,
        "{filter}"
    );
}

#[test]
fn shared_table_slots_are_stable_and_reference_counted() {
    let mut table = FieldTable::new();
    let f1 = Filter::compile("/a = 1 AND /b = 2").unwrap();
    let f2 = Filter::compile("/b = 2 AND /c/d = 3").unwrap();
    let f3 = Filter::compile("/e = 4").unwrap();
    let b1 = table.register(&f1);
    let b2 = table.register(&f2);
    assert_eq!(table.path_count(), 3);
    assert_eq!(b1.slots()[1], b2.slots()[0], "shared path, shared slot");
    let c_slot = b2.slots()[1];
    table.unregister(&b1);
    assert_eq!(table.path_count(), 2, "/a left, /b still read by f2");
    let b3 = table.register(&f3);
    assert_eq!(
        b3.slots()[0],
        b1.slots()[0],
        "the freed slot of /a is reused"
    );
    assert_eq!(b2.slots()[1], c_slot, "other slots never move");

    let mut scratch = ScanScratch::new();
    let ctx = MessageContext::default();
    let fields = table
        .scan(br#"{"a": 1, "b": 2, "c": {"d": 3}, "e": 4}"#, &mut scratch)
        .unwrap();
    assert!(b2.eval(&fields, &ctx));
    assert!(b3.eval(&fields, &ctx));
    table.unregister(&b2);
    table.unregister(&b3);
    assert_eq!(table.path_count(), 0);
    let fields = table.scan(b"not even json", &mut scratch).unwrap();
    assert_eq!(fields.get(0), RawValue::Missing);
    assert!(std::ptr::eq(b2.filter().text(), f2.text()));
}

#[test]
#[should_panic(expected = "another table")]
fn bound_filters_refuse_another_tables_scan() {
    let filter = Filter::compile("/a = 1").unwrap();
    let mut first = FieldTable::new();
    let second = FieldTable::new();
    let bound = first.register(&filter);
    let mut scratch = ScanScratch::new();
    let fields = second.scan(b"{}", &mut scratch).unwrap();
    bound.eval(&fields, &MessageContext::default());
}

#[test]
fn filters_are_send_sync_and_cheap_to_clone() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Filter>();
    assert_send_sync::<BoundFilter>();
    assert_send_sync::<FieldTable>();
    let filter = Filter::compile("/a = 1").unwrap();
    let clone = filter.clone();
    assert!(std::ptr::eq(filter.text(), clone.text()));
    assert_eq!(format!("{filter:?}"), "Filter { text: \"/a = 1\" }");
}

#[test]
fn numeric_string_grammar() {
    use super::value::{parse_numeric_str, Number};
    let cases: &[(&str, Option<Number>)] = &[
        ("47", Some(Number::Int(47))),
        ("-47", Some(Number::Int(-47))),
        ("+4", Some(Number::Int(4))),
        ("007", Some(Number::Int(7))),
        ("2.50", Some(Number::Float(2.5))),
        (".5", Some(Number::Float(0.5))),
        ("5.", Some(Number::Float(5.0))),
        ("1e3", Some(Number::Float(1000.0))),
        ("1E-3", Some(Number::Float(0.001))),
        (
            "123456789012345678901",
            Some(Number::Float(123456789012345678901.0)),
        ),
        (
            "0.1234567890123456789",
            Some(Number::Float(0.123_456_789_012_345_68)),
        ),
        ("", None),
        (".", None),
        ("+", None),
        ("1e", None),
        ("1.2.3", None),
        (" 1", None),
        ("1 ", None),
        ("inf", None),
        ("NaN", None),
        ("0x10", None),
    ];
    for (text, expected) in cases {
        assert_eq!(parse_numeric_str(text.as_bytes()), *expected, "{text:?}");
    }
}

#[test]
fn container_skip_agrees_with_a_byte_by_byte_walk() {
    use super::scan::container_rest_end;
    /// The obvious walk: strings (with escapes) hide brackets; count our bracket kind.
    fn naive(bytes: &[u8], open: u8, close: u8) -> Option<usize> {
        let (mut depth, mut i) = (1usize, 0usize);
        while i < bytes.len() {
            match bytes[i] {
                b'"' => {
                    i += 1;
                    loop {
                        match bytes.get(i)? {
                            b'\\' => i += 2,
                            b'"' => break,
                            _ => i += 1,
                        }
                    }
                }
                b if b == open => depth += 1,
                b if b == close => {
                    depth -= 1;
                    if depth == 0 {
                        return Some(i + 1);
                    }
                }
                _ => {}
            }
            i += 1;
        }
        None
    }
    // Includes the bytes one bit away from the structural ones (`#` `z` `|` `Z`), which fool the
    // classic borrowing zero-byte trick.
    let alphabet = b"{}[]\"\\ab ,:#z|Z";
    let mut state = 0x1234_5678_9abc_def1u64;
    for _ in 0..50_000 {
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let length = (next() % 40) as usize;
        let soup: Vec<u8> = (0..length)
            .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
            .collect();
        for (open, close) in [(b'{', b'}'), (b'[', b']')] {
            assert_eq!(
                container_rest_end(&soup, 0, open, close, 1),
                naive(&soup, open, close),
                "{:?}",
                String::from_utf8_lossy(&soup)
            );
        }
    }
}

#[test]
fn portable_block_masks_are_exact() {
    use super::scan::swar::Block;
    let mut state = 0x0bad_5eed_1234_4321u64;
    for _ in 0..20_000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let bytes = state.to_le_bytes();
        let block = Block::load(&bytes, 0);
        for target in [
            b'"',
            b'\\',
            b'{',
            b'}',
            b'[',
            b']',
            bytes[3],
            bytes[0] ^ 1,
            0,
            0xff,
        ] {
            let expected = (0..8)
                .filter(|&i| bytes[i] == target)
                .fold(0u32, |mask, i| mask | 1 << i);
            assert_eq!(block.mask(target), expected, "{bytes:?} {target}");
        }
    }
}

#[test]
fn large_in_lists_use_a_set_with_the_same_answers() {
    let symbols: Vec<String> = (0..1000).map(|i| format!("'S{i}'")).collect();
    let text = format!("/sym IN ({}, 'IBM', 7, -3, '42')", symbols.join(", "));
    let cases: &[(&str, bool)] = &[
        (r#"{"sym":"S999"}"#, true),
        (r#"{"sym":"S0"}"#, true),
        (r#"{"sym":"S1000"}"#, false),
        (r#"{"sym":"IBM"}"#, true),
        (r#"{"sym":7}"#, true),
        (r#"{"sym":"7.0"}"#, true),
        (r#"{"sym":-3}"#, true),
        (r#"{"sym":42}"#, true),
        (r#"{"sym":"42.0"}"#, false),
        (r#"{"sym":true}"#, false),
        (r#"{"sym":["x","S5"]}"#, true),
        (r#"{"sym":[]}"#, false),
        (r#"{"sym":""}"#, false),
    ];
    for (doc, expected) in cases {
        check_on(doc, &text, *expected);
    }
    let too_many = format!("/a IN ({})", vec!["1"; MAX_LIST_ITEMS + 1].join(", "));
    assert!(error_of(&too_many)
        .to_string()
        .contains("number of list items"));
}

#[test]
fn string_building_is_bounded() {
    // Each REPLACE multiplies the length by 8: 2 * 8^10 bytes would be two gigabytes.
    let grow = |levels: usize| {
        let mut text = "'aa'".to_string();
        for _ in 0..levels {
            text = format!("REPLACE({text}, 'a', 'aaaaaaaa')");
        }
        text
    };
    check_on(DOC, &format!("{} IS NULL", grow(10)), true);
    check_on(DOC, &format!("LENGTH({}) = 128", grow(2)), true);
    // 2 * 8^6 = 512 KiB: two of them fit the 1 MiB limit exactly, one more byte does not.
    let half = grow(6);
    check_on(
        DOC,
        &format!("LENGTH(CONCAT({half}, {half})) = {MAX_STRING_RESULT_BYTES}"),
        true,
    );
    check_on(DOC, &format!("CONCAT({half}, {half}, 'b') IS NULL"), true);
}
