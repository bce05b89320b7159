//! "No heap allocation per message in the common cases": once a topic's field table and the
//! shard's scratch are warm, scanning a message and evaluating the common operators allocates
//! nothing. Counted by a global allocator wrapper, per thread so parallel tests do not interfere.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use tachyon_core::filter::{FieldTable, Filter, MessageContext, ScanScratch};

struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded unchanged to the system allocator; counting touches only a
// const-initialised thread-local Cell, which never allocates.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|count| count.set(count.get() + 1));
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|count| count.set(count.get() + 1));
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

const PAYLOAD: &[u8] = br#"{"sym":"IBM","px":101.5,"qty":200,"side":"B","note":"say \"hi\"",
 "account":{"id":"A1","limits":[1,2,3]},"venue":{"mic":"XNYS"},"tags":["urgent","t1"],"fx":"2.5"}"#;

/// Filters built only from the operators the module docs promise not to allocate.
const COMMON: &[&str] = &[
    "/sym IN ('IBM','MSFT') AND /px > 100 AND /side = 'B' AND /qty >= 100 AND /venue/mic = 'XNYS'",
    "/sym = 'MSFT' OR /qty BETWEEN 100 AND 300",
    "NOT (/px < 100) AND /account/id IS NOT NULL AND /missing IS NULL",
    "/px * /qty > 20000 AND /qty % 7 = 4 AND -/px < 0",
    "/sym LIKE '^I' AND /sym NOT LIKE '(?i)msft'",
    "/tags = 'urgent' AND /account/limits > 2 AND 3 IN (/account/limits)",
    "/note = 'say \"hi\"' AND /fx = 2.5 AND /sym BEGINS WITH ('IB') AND /sym ENDS WITH ('M')",
    "COALESCE(/missing, /qty) = 200 AND IF(/side = 'B', /px, 0) > 1 AND ABS(/qty) = 200",
    "TOPIC_NAME() = 'orders' AND MESSAGE_SIZE() > 10 AND ARRAY_COUNT(/tags) = 2",
];

#[test]
fn steady_state_scan_and_eval_do_not_allocate() {
    let ctx = MessageContext {
        topic: b"orders",
        ..MessageContext::default()
    };
    let filters: Vec<Filter> = COMMON
        .iter()
        .map(|text| Filter::compile(text).unwrap())
        .collect();
    let mut table = FieldTable::new();
    let bound: Vec<_> = filters
        .iter()
        .map(|filter| table.register(filter))
        .collect();
    let mut scratch = ScanScratch::new();
    // Warm-up: the scratch grows to the table's size and the unescape buffer to its need.
    let fields = table.scan(PAYLOAD, &mut scratch).unwrap();
    for (text, filter) in COMMON.iter().zip(&bound) {
        assert!(
            filter.eval(&fields, &ctx),
            "the test payload should match {text}"
        );
    }

    let before = allocations();
    for _ in 0..100 {
        let fields = table.scan(PAYLOAD, &mut scratch).unwrap();
        for filter in &bound {
            assert!(filter.eval(&fields, &ctx));
        }
    }
    assert_eq!(
        allocations() - before,
        0,
        "allocations in 100 steady-state messages"
    );
}

#[test]
fn the_counter_sees_allocations() {
    // Guards the test above against a counter that never counts.
    let filter = Filter::compile("CONCAT(/sym, 'x') = 'IBMx'").unwrap();
    let mut table = FieldTable::new();
    let bound = table.register(&filter);
    let mut scratch = ScanScratch::new();
    let fields = table.scan(PAYLOAD, &mut scratch).unwrap();
    let before = allocations();
    assert!(bound.eval(&fields, &MessageContext::default()));
    assert!(allocations() > before, "CONCAT builds a new string");
}
