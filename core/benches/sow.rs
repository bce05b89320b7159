//! SOW store micro-benchmarks: updating a record of a topic with 100,000 keys (1 KiB records,
//! in place), inserting-and-deleting (slab reuse), and a key lookup.
//!
//! `cargo bench -p tachyon-core --bench sow -- --warm-up-time 1 --measurement-time 3`
//! `cargo test -p tachyon-core --benches` runs each once, so the setup assertions never rot.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tachyon_core::sow::{Bookmark, PublishMeta, SowTopic, SowTopicConfig};

const KEYS: usize = 100_000;
const RECORD_BYTES: usize = 1024;

fn record(id: usize, version: usize) -> Vec<u8> {
    let mut out = format!(r#"{{"id":{id},"qty":{version},"pad":""#).into_bytes();
    out.resize(RECORD_BYTES - 2, b'x');
    out.extend_from_slice(b"\"}");
    out
}

fn meta(sequence: u64) -> PublishMeta<'static> {
    PublishMeta {
        bookmark: Bookmark {
            publisher_id: 1,
            sequence,
        },
        timestamp_unix_ns: sequence,
        correlation_id: None,
        expiration: None,
    }
}

fn loaded() -> SowTopic {
    let mut topic = SowTopic::new(SowTopicConfig::new("orders", &["/id"])).expect("config");
    for id in 0..KEYS {
        topic
            .publish(None, &record(id, 0), &meta(id as u64))
            .expect("insert");
    }
    assert_eq!(topic.len(), KEYS);
    topic
}

fn sow(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("sow");
    group.throughput(Throughput::Elements(1));
    let mut topic = loaded();
    let updates: Vec<Vec<u8>> = (0..1024)
        .map(|index| record(index * 97 % KEYS, index))
        .collect();
    let mut next = 0usize;
    group.bench_function("update_1KiB_of_100k_keys", |bench| {
        bench.iter(|| {
            next = (next + 1) % updates.len();
            let outcome = topic
                .publish(None, &updates[next], &meta(next as u64))
                .expect("update");
            black_box(outcome.current().payload.len())
        })
    });
    let fresh = record(KEYS + 1, 0);
    group.bench_function("insert_then_delete_by_data", |bench| {
        bench.iter(|| {
            topic.publish(None, &fresh, &meta(0)).expect("insert");
            let deleted = topic.delete_by_data(None, &fresh).expect("delete");
            assert_eq!(deleted.records_deleted, 1);
        })
    });
    let key = topic.records().next().expect("a record").key.to_owned();
    group.bench_function("key_lookup", |bench| {
        bench.iter(|| black_box(topic.get(key.as_ref()).is_some()))
    });
    group.finish();
    topic.check_invariants();
}

criterion_group!(benches, sow);
criterion_main!(benches);
