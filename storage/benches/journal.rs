//! Micro-benchmarks of the journal's CPU work: record encode/decode and CRC32C.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use tachyon_storage::journal::{
    decode, encode, encoded_len, Bookmark, Publisher, Record, RecordKind,
};

fn record(payload: &[u8]) -> Record<'_> {
    Record {
        kind: RecordKind::Publish,
        timestamp_ns: 1_700_000_000_000_000_000,
        topic: b"orders/eu/equities",
        publisher: Publisher {
            client_name_hash: 0x1234_5678_9abc_def0,
            client_sequence: 42,
        },
        headers: b"cid=abc123;k=ORD-1",
        payload,
    }
}

fn codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("record");
    for payload_bytes in [128usize, 1024, 16 * 1024] {
        let payload = vec![0x5au8; payload_bytes];
        let record = record(&payload);
        let mut out = vec![0u8; encoded_len(&record)];
        group.throughput(Throughput::Bytes(out.len() as u64));
        group.bench_with_input(
            BenchmarkId::new("encode", payload_bytes),
            &record,
            |b, record| {
                b.iter(|| {
                    encode(
                        black_box(record),
                        Bookmark {
                            epoch: 1,
                            sequence: 7,
                        },
                        &mut out,
                    )
                })
            },
        );
        encode(
            &record,
            Bookmark {
                epoch: 1,
                sequence: 7,
            },
            &mut out,
        );
        group.bench_with_input(
            BenchmarkId::new("decode", payload_bytes),
            &out,
            |b, bytes| b.iter(|| decode(black_box(bytes), 1 << 20).unwrap().bookmark),
        );
    }
    group.finish();
}

fn crc(c: &mut Criterion) {
    let mut group = c.benchmark_group("crc32c");
    for bytes in [4096usize, 65536] {
        let data: Vec<u8> = (0..bytes).map(|i| i as u8).collect();
        group.throughput(Throughput::Bytes(bytes as u64));
        group.bench_with_input(BenchmarkId::from_parameter(bytes), &data, |b, data| {
            b.iter(|| crc32c::crc32c(black_box(data)))
        });
    }
    group.finish();
}

criterion_group!(benches, codec, crc);
criterion_main!(benches);
