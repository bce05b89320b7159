//! Differential test: random filter expressions × random JSON documents. The engine (one shared
//! field table, one scan, compiled evaluation) must agree with the simple reference evaluator over
//! the fully parsed document, and with `Filter::matches`.

use proptest::prelude::*;
use serde_json::{Map, Value as Json};
use tachyon_core::filter::{reference, FieldTable, Filter, MessageContext, ScanScratch};

const KEYS: &[&str] = &["a", "b", "s", "n", "arr", "obj", "k\"q", "x"];

fn scalar() -> impl Strategy<Value = Json> {
    prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        (-6i64..6).prop_map(Json::from),
        prop_oneof![Just(i64::MAX), Just(i64::MIN), Just(100), Just(200)].prop_map(Json::from),
        Just(Json::from(u64::MAX)),
        prop_oneof![
            Just(0.5),
            Just(-1.5),
            Just(2.0),
            Just(2.5),
            Just(1e20),
            Just(-0.0),
            Just(101.25)
        ]
        .prop_map(Json::from),
        prop_oneof![
            Just(""),
            Just("IBM"),
            Just("ibm"),
            Just("5"),
            Just("2.50"),
            Just("abc"),
            Just("a\"b\\c"),
            Just("é"),
            Just("Hello World"),
            Just("  x "),
            Just("1e3"),
            Just("-3"),
            Just("zebra"),
            Just("line\nbreak"),
            Just("[{\"}"),
        ]
        .prop_map(|s| Json::String(s.to_string())),
    ]
}

fn document() -> impl Strategy<Value = Json> {
    let leaf = scalar();
    let value = leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Json::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..5).prop_map(|members| {
                Json::Object(
                    members
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect::<Map<_, _>>(),
                )
            }),
        ]
    });
    prop::collection::vec((prop::sample::select(KEYS), value), 0..8).prop_map(|members| {
        Json::Object(
            members
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        )
    })
}

fn field() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "/a",
        "/b",
        "/s",
        "/n",
        "/arr",
        "/arr[0]",
        "/arr[2]",
        "/obj/a",
        "/obj/arr",
        "/obj/arr[1]",
        "/obj/obj/x",
        "/missing",
        "/x",
        "[/k\"q]",
        "/arr[1]/a",
        "/obj",
    ])
    .prop_map(str::to_string)
}

fn literal() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "0",
        "1",
        "2",
        "5",
        "-3",
        "100",
        "2.5",
        "0.5",
        "1e20",
        "9223372036854775807",
        "'IBM'",
        "'ibm'",
        "'5'",
        "''",
        "'abc'",
        "'2.5'",
        "'zebra'",
        "'é'",
        "NULL",
        "TRUE",
        "FALSE",
        "'Hello World'",
        "'a\\\"b\\\\c'",
    ])
    .prop_map(str::to_string)
}

fn value_expr() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![3 => field(), 2 => literal()];
    leaf.prop_recursive(3, 12, 3, |inner| {
        let pair = (inner.clone(), inner.clone());
        prop_oneof![
            (
                pair.clone(),
                prop::sample::select(vec!["+", "-", "*", "/", "%", "MOD"])
            )
                .prop_map(|((a, b), op)| format!("({a} {op} {b})")),
            inner.clone().prop_map(|a| format!("(- {a})")),
            (
                inner.clone(),
                prop::sample::select(vec![
                    "UPPER",
                    "LOWER",
                    "LENGTH",
                    "ABS",
                    "ROUND",
                    "FLOOR",
                    "CEILING",
                    "SIGN",
                    "TRIM",
                    "REVERSE",
                    "ARRAY_COUNT",
                    "ARRAY_SUM",
                    "ARRAY_MAX",
                    "ARRAY_MIN"
                ])
            )
                .prop_map(|(a, f)| format!("{f}({a})")),
            pair.clone().prop_map(|(a, b)| format!("CONCAT({a}, {b})")),
            pair.clone()
                .prop_map(|(a, b)| format!("COALESCE({a}, {b})")),
            pair.clone()
                .prop_map(|(a, b)| format!("GREATEST({a}, {b})")),
            pair.clone().prop_map(|(a, b)| format!("INSTR({a}, {b})")),
            (inner.clone(), -3i64..4, 0i64..4)
                .prop_map(|(a, p, l)| format!("SUBSTR({a}, {p}, {l})")),
            (inner.clone(), -1i64..4).prop_map(|(a, n)| format!("LEFT({a}, {n})")),
            (field(), pair).prop_map(|(c, (a, b))| format!("IF({c} > 1, {a}, {b})")),
        ]
    })
}

fn predicate() -> impl Strategy<Value = String> {
    let compare_op = prop::sample::select(vec!["=", "==", "!=", "<>", "<", "<=", ">", ">="]);
    let not = prop::sample::select(vec!["", "NOT "]);
    let atom = prop_oneof![
        4 => (value_expr(), compare_op, value_expr()).prop_map(|(a, op, b)| format!("{a} {op} {b}")),
        2 => (value_expr(), not.clone(), prop::collection::vec(value_expr(), 1..4))
            .prop_map(|(a, n, items)| format!("{a} {n}IN ({})", items.join(", "))),
        2 => (value_expr(), not.clone(), prop::collection::vec(literal(), 1..5))
            .prop_map(|(a, n, items)| format!("{a} {n}IN ({})", items.join(", "))),
        1 => (value_expr(), not.clone(), value_expr(), value_expr())
            .prop_map(|(a, n, lo, hi)| format!("{a} {n}BETWEEN {lo} AND {hi}")),
        1 => (value_expr(), not.clone(), prop::sample::select(vec!["'^I'", "'(?i)ibm'", "'z'", "'^[0-9]+$'",
                "'\\\\.'", "r'^-'", "'é'", "'^$'"]))
            .prop_map(|(a, n, p)| format!("{a} {n}LIKE {p}")),
        1 => (value_expr(), prop::sample::select(vec!["IS NULL", "IS NOT NULL", "IS NAN", "IS NOT NAN"]))
            .prop_map(|(a, p)| format!("{a} {p}")),
        1 => (value_expr(), not.clone(), prop::sample::select(vec!["BEGINS", "ENDS"]),
              prop::collection::vec(literal(), 1..3))
            .prop_map(|(a, n, w, items)| format!("{a} {n}{w} WITH ({})", items.join(", "))),
        1 => value_expr(),
    ];
    atom.prop_recursive(3, 16, 3, |inner| {
        prop_oneof![
            inner.clone().prop_map(|a| format!("NOT ({a})")),
            prop::collection::vec(inner.clone(), 2..4)
                .prop_map(|items| format!("({})", items.join(" AND "))),
            prop::collection::vec(inner, 2..4)
                .prop_map(|items| format!("({})", items.join(" OR "))),
        ]
    })
}

/// Serialize compactly or with whitespace, optionally spelling `é` as a `\u` escape.
fn serialize(document: &Json, pretty: bool, unicode_escapes: bool) -> String {
    let text = if pretty {
        serde_json::to_string_pretty(document)
    } else {
        serde_json::to_string(document)
    };
    let text = text.expect("serializable");
    if unicode_escapes {
        text.replace('é', "\\u00e9")
    } else {
        text
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn engine_agrees_with_reference(
        document in document(),
        filters in prop::collection::vec(predicate(), 1..4),
        pretty in any::<bool>(),
        unicode_escapes in any::<bool>(),
    ) {
        let payload = serialize(&document, pretty, unicode_escapes);
        let ctx = MessageContext { topic: b"t", ..MessageContext::default() };
        let compiled: Vec<Filter> = filters
            .iter()
            .map(|text| Filter::compile(text).unwrap_or_else(|e| panic!("{text}: {e}")))
            .collect();
        let mut table = FieldTable::new();
        let bound: Vec<_> = compiled.iter().map(|f| table.register(f)).collect();
        let mut scratch = ScanScratch::new();
        let fields = table.scan(payload.as_bytes(), &mut scratch).expect("serde_json output is valid");
        for (i, text) in filters.iter().enumerate() {
            let expected = reference::evaluate(text, &document, &ctx, payload.len()).unwrap();
            prop_assert_eq!(bound[i].eval(&fields, &ctx), expected, "shared table: {} on {}", text, payload);
            let convenient = compiled[i].matches(payload.as_bytes(), &ctx);
            prop_assert_eq!(convenient, expected, "matches: {} on {}", text, payload);
        }
    }
}

/// The generators must produce both outcomes often, or the agreement above proves little.
#[test]
fn generated_filters_match_sometimes_and_not_always() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (mut matched, mut total) = (0, 0);
    for _ in 0..500 {
        let document = document().new_tree(&mut runner).unwrap().current();
        let filter = predicate().new_tree(&mut runner).unwrap().current();
        let payload = serde_json::to_string(&document).unwrap();
        let compiled = Filter::compile(&filter).unwrap();
        total += 1;
        if compiled.matches(payload.as_bytes(), &MessageContext::default()) {
            matched += 1;
        }
    }
    assert!(
        matched * 10 > total,
        "only {matched} of {total} generated cases matched"
    );
    assert!(
        matched * 10 < total * 9,
        "{matched} of {total} generated cases matched"
    );
}
