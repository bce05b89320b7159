//! Measures the SOW store the way operators size it: update rate of a topic with many keys,
//! filtered full-scan and key-lookup query rates, and memory per record against the sizing
//! formulas `Min = MsgSize·MsgCount + Cores·SlabSize` and `Max = (MsgSize + SlabSize)·MsgCount`.
//!
//!     cargo run --release -p tachyon-core --example sow_rates -- [keys] [payload bytes]
//!
//! Defaults: 1,000,000 keys of 1 KiB. Figures are printed, never asserted.

use std::time::Instant;
use tachyon_core::filter::Filter;
use tachyon_core::sow::{Bookmark, PublishMeta, SowKey, SowTopic, SowTopicConfig};

fn payload(id: usize, version: usize, size: usize, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(
        format!(
            r#"{{"id":{id},"qty":{},"sym":"S{}","pad":""#,
            (id * 7 + version) % 1000,
            id % 500
        )
        .as_bytes(),
    );
    while out.len() + 2 < size {
        out.push(b'x');
    }
    out.extend_from_slice(b"\"}");
}

fn rate(count: usize, started: Instant) -> String {
    let seconds = started.elapsed().as_secs_f64();
    format!(
        "{:>12.0} /s  ({count} in {seconds:.2} s)",
        count as f64 / seconds
    )
}

fn main() {
    let mut args = std::env::args().skip(1);
    let keys: usize = args
        .next()
        .map(|text| text.parse().expect("keys"))
        .unwrap_or(1_000_000);
    let size: usize = args
        .next()
        .map(|text| text.parse().expect("payload bytes"))
        .unwrap_or(1024);
    let config = SowTopicConfig::new("orders", &["/id"]);
    let slab_bytes = config.slab_size_bytes;
    let mut topic = SowTopic::new(config).expect("valid config");
    let mut buffer = Vec::with_capacity(size);
    let meta = |sequence: u64| PublishMeta {
        bookmark: Bookmark {
            publisher_id: 1,
            sequence,
        },
        timestamp_unix_ns: sequence,
        correlation_id: None,
        expiration: None,
    };

    let started = Instant::now();
    for id in 0..keys {
        payload(id, 0, size, &mut buffer);
        topic
            .publish(None, &buffer, &meta(id as u64))
            .expect("insert");
    }
    println!("insert      {}", rate(keys, started));

    let started = Instant::now();
    for id in 0..keys {
        payload(id, 1, size, &mut buffer);
        topic
            .publish(None, &buffer, &meta((keys + id) as u64))
            .expect("update");
    }
    println!("update      {}", rate(keys, started));

    let filter = Filter::compile("/qty > 500 AND /sym = 'S7'").expect("filter");
    let scans = 3;
    let started = Instant::now();
    let mut matched = 0;
    for _ in 0..scans {
        matched = topic
            .query(Some(&filter), None, None, None)
            .expect("query")
            .records
            .len();
    }
    println!(
        "full scan   {}  records scanned per second, {matched} matches per scan",
        rate(scans * keys, started)
    );

    let sample: Vec<SowKey> = topic
        .records()
        .step_by((keys / 10_000).max(1))
        .map(|record| record.key.to_owned())
        .collect();
    let lookups = 1_000_000;
    let started = Instant::now();
    let mut found = 0;
    for index in 0..lookups {
        found += usize::from(topic.get(sample[index % sample.len()].as_ref()).is_some());
    }
    assert_eq!(found, lookups);
    println!("key lookup  {}", rate(lookups, started));

    let stats = topic.stats();
    let cores = std::thread::available_parallelism()
        .map(|count| count.get())
        .unwrap_or(1);
    let minimum = size * keys + cores * slab_bytes;
    let maximum = (size + slab_bytes) * keys;
    let held = stats.bytes_used + stats.bytes_free;
    println!(
        "memory      {} records, {} slabs, {} B in blocks ({:.0} B per record, payload {size} B), {} B free",
        stats.records,
        stats.slabs,
        stats.bytes_used,
        stats.bytes_used as f64 / stats.records as f64,
        stats.bytes_free
    );
    println!("sizing      slabs hold {held} B; formula min {minimum} B, max {maximum} B: within bounds = {}", held >= size * keys && held <= maximum);
}
