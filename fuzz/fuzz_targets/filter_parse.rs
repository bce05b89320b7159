//! Fuzz the filter compiler: arbitrary UTF-8 text must compile or fail with a positioned error,
//! never panic or overflow the stack; whatever compiles is evaluated against fixed payloads
//! (through `Filter::matches` and through a shared field table) and must agree with itself.

#![no_main]

use tachyon_core::filter::{FieldTable, Filter, MessageContext, ScanScratch};

const PAYLOADS: &[&[u8]] = &[
    br#"{"sym":"IBM","px":101.5,"qty":200,"side":"B","data":[1,2,"zebra"],"o":{"a":[{"b":"x\"y"}]}}"#,
    br#"{"a":null,"b":"","c":[],"d":{"e":1e300},"f":-0.0,"g":"\u00e9"}"#,
    b"{\"a\":[1,",
    b"[]",
];

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let filter = match Filter::compile(text) {
        Ok(filter) => filter,
        Err(error) => {
            assert!(error.position() <= text.len());
            return;
        }
    };
    let ctx = MessageContext {
        topic: b"orders",
        correlation_id: Some(b"c"),
        ..MessageContext::default()
    };
    let mut table = FieldTable::new();
    let bound = table.register(&filter);
    let mut scratch = ScanScratch::new();
    for payload in PAYLOADS {
        let convenient = filter.matches(payload, &ctx);
        let shared = match table.scan(payload, &mut scratch) {
            Ok(fields) => bound.eval(&fields, &ctx),
            Err(_) => false,
        };
        // UNIX_TIMESTAMP() may tick between the two evaluations; everything else is deterministic.
        if !text.to_ascii_uppercase().contains("UNIX_TIMESTAMP") {
            assert_eq!(convenient, shared, "two evaluation paths disagree");
        }
    }
    table.unregister(&bound);
});
