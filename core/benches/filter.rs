//! Filter engine micro-benchmarks: compile time, scan + evaluate of a 5-predicate filter on a
//! ~1 KiB JSON message (matching and not), scan alone versus a full serde_json parse, and one scan
//! shared by many subscriptions. Throughput is reported per message (elements/s = evaluations/s).
//!
//! `cargo bench -p tachyon-core --bench filter -j 1 -- --warm-up-time 1 --measurement-time 3`
//! `cargo test --benches` runs each benchmark once, so the setup assertions below never rot.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use tachyon_core::filter::{FieldTable, Filter, MessageContext, ScanScratch};

const FIVE_PREDICATES: &str =
    "/sym IN ('IBM','MSFT') AND /px > 100 AND /side = 'B' AND /qty >= 100 AND /venue/mic = 'XNYS'";

/// A ~1 KiB order message; the five fields the filter reads are spread from start to end, with
/// strings, nested objects and arrays between them that the scanner has to skip.
fn message(sym: &str, side: &str) -> Vec<u8> {
    format!(
        r#"{{"msg_type":"new_order","order_id":"ORD-2024-000000123456","cl_ord_id":"c-77812-aa91","sym":"{sym}",
"account":{{"id":"ACC-99812","desk":"EQ-DERIV-NY","trader":"jsmith","limits":[1000000,2500000,5000000],"flags":{{"short_ok":true,"algo":"VWAP"}}}},
"tags":["urgent","client:tier1","region:us-east","strategy:pairs"],"notes":"client asked for a \"careful\" fill; keep below 5% ADV",
"px":101.25,"currency":"USD","tif":"DAY","legs":[{{"leg":1,"ratio":1,"sym":"IBM","px":101.25}},{{"leg":2,"ratio":-1,"sym":"HPQ","px":33.10}}],
"side":"{side}","timestamps":{{"created":"20240102T030405.123456Z","routed":"20240102T030405.223456Z","acked":null}},
"routing":{{"broker":"GSCO","venue_pref":["XNYS","ARCX","BATS","EDGX"],"max_show":500,"min_qty":100,"dark":false}},
"qty":200,"filled":0,"leaves":200,"commission":{{"rate":0.0012,"currency":"USD","schedule":"tiered-2024"}},
"compliance":{{"checked":true,"rules":["reg-sho","limit-up-down","fat-finger"],"comment":"all clear"}},
"venue":{{"mic":"XNYS","name":"New York Stock Exchange","segment":"main"}},"seq":987654321}}"#
    )
    .replace('\n', "")
    .into_bytes()
}

fn benches(c: &mut Criterion) {
    let ctx = MessageContext {
        topic: b"orders",
        ..MessageContext::default()
    };
    let matching = message("IBM", "B");
    let not_matching_early = message("ORCL", "B");
    let not_matching_late = message("IBM", "S");
    assert!(
        (900..1300).contains(&matching.len()),
        "message is {} bytes",
        matching.len()
    );
    serde_json::from_slice::<serde_json::Value>(&matching)
        .expect("the bench message is valid JSON");

    let mut group = c.benchmark_group("filter");
    group.throughput(Throughput::Elements(1));

    group.bench_function("compile_5_predicates", |b| {
        b.iter(|| Filter::compile(black_box(FIVE_PREDICATES)))
    });

    let filter = Filter::compile(FIVE_PREDICATES).unwrap();
    let mut table = FieldTable::new();
    let bound = table.register(&filter);
    let mut scratch = ScanScratch::new();
    for (payload, expected) in [
        (&matching, true),
        (&not_matching_early, false),
        (&not_matching_late, false),
    ] {
        let fields = table.scan(payload, &mut scratch).unwrap();
        assert_eq!(bound.eval(&fields, &ctx), expected);
    }

    for (name, payload) in [
        ("scan_eval_5_predicates_match", &matching),
        ("scan_eval_5_predicates_miss_first", &not_matching_early),
        ("scan_eval_5_predicates_miss_third", &not_matching_late),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let fields = table.scan(black_box(payload), &mut scratch).unwrap();
                bound.eval(&fields, &ctx)
            })
        });
    }

    // A symbol-list subscription: 500 symbols, found by binary search in the compiled set.
    let symbols: Vec<String> = (0..499)
        .map(|i| format!("'S{i:03}'"))
        .chain(["'IBM'".to_string()])
        .collect();
    let in_500 =
        Filter::compile(&format!("/sym IN ({}) AND /side = 'B'", symbols.join(", "))).unwrap();
    let mut in_table = FieldTable::new();
    let in_bound = in_table.register(&in_500);
    let fields = in_table.scan(&matching, &mut scratch).unwrap();
    assert!(in_bound.eval(&fields, &ctx));
    group.bench_function("scan_eval_in_500_symbols", |b| {
        b.iter(|| {
            let fields = in_table.scan(black_box(&matching), &mut scratch).unwrap();
            in_bound.eval(&fields, &ctx)
        })
    });

    group.bench_function("eval_only_5_predicates_match", |b| {
        let mut scratch = ScanScratch::new();
        let fields = table.scan(&matching, &mut scratch).unwrap();
        b.iter(|| bound.eval(black_box(&fields), &ctx))
    });

    group.bench_function("scan_only_5_fields", |b| {
        b.iter(|| {
            table
                .scan(black_box(&matching), &mut scratch)
                .map(|f| f.payload_len())
        })
    });

    group.bench_function("serde_json_full_parse", |b| {
        b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(&matching)).unwrap())
    });

    group.bench_function("matches_convenience_5_predicates", |b| {
        b.iter(|| filter.matches(black_box(&matching), &ctx))
    });

    // Fan-out: 100 subscriptions on one topic with different symbol lists and price floors share
    // one scan; throughput here is messages/s with all 100 evaluated.
    let mut shared = FieldTable::new();
    let subscriptions: Vec<_> = (0..100)
        .map(|i| {
            let text = format!(
                "/sym IN ('IBM','S{i}') AND /px > {} AND /side = 'B' AND /qty >= 100 AND /venue/mic = 'XNYS'",
                90 + i % 20
            );
            shared.register(&Filter::compile(&text).unwrap())
        })
        .collect();
    group.bench_function("scan_once_eval_100_subscriptions", |b| {
        b.iter(|| {
            let fields = shared.scan(black_box(&matching), &mut scratch).unwrap();
            subscriptions
                .iter()
                .filter(|s| s.eval(&fields, &ctx))
                .count()
        })
    });
    group.finish();
}

criterion_group!(filter_benches, benches);
criterion_main!(filter_benches);
