//! Append→durable latency over ~2000 group commits on the real disk, as the shard would drive it
//! (append, submit, await the completion fd, poll). Ignored by default; run with
//! `cargo test --release -p tachyon-storage --test journal_latency -- --ignored --nocapture`.

use std::path::Path;
use std::time::Instant;
use tachyon_storage::journal::{
    BackendChoice, Journal, JournalConfig, Publisher, Record, RecordKind,
};

const WARMUP_GROUPS: usize = 200;
const MEASURED_GROUPS: usize = 2000;
const PAYLOAD_BYTES: usize = 1024;

fn measure(choice: BackendChoice) -> Vec<u64> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("journal-latency-{choice:?}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = JournalConfig {
        segment_size_bytes: 16 << 20,
        backend: choice,
        ..JournalConfig::default()
    };
    let mut journal = Journal::open(&dir, config).unwrap();
    eprintln!("backend: {}", journal.backend_kind());
    // Let the spare segments finish zero-filling first: that disk traffic is not the hot path's.
    while journal.spare_segments_ready() < journal.config().spare_segments {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let payload = vec![0x42u8; PAYLOAD_BYTES];
    let mut latencies_ns = Vec::with_capacity(MEASURED_GROUPS);
    for group in 0..WARMUP_GROUPS + MEASURED_GROUPS {
        let record = Record {
            kind: RecordKind::Publish,
            timestamp_ns: group as u64,
            topic: b"latency",
            publisher: Publisher {
                client_name_hash: 1,
                client_sequence: group as u64 + 1,
            },
            headers: b"",
            payload: &payload,
        };
        let started = Instant::now();
        let sequence = journal.append(&record).unwrap();
        journal.submit().unwrap();
        loop {
            let mut poll_fd = libc::pollfd {
                fd: journal.completion_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one live pollfd, count 1.
            unsafe { libc::poll(&mut poll_fd, 1, 1000) };
            if journal
                .poll_completions()
                .unwrap()
                .is_some_and(|durable| durable.up_to >= sequence)
            {
                break;
            }
        }
        if group >= WARMUP_GROUPS {
            latencies_ns.push(started.elapsed().as_nanos() as u64);
        }
    }
    drop(journal);
    std::fs::remove_dir_all(&dir).unwrap();
    latencies_ns.sort_unstable();
    latencies_ns
}

fn report(name: &str, sorted_ns: &[u64]) {
    let at = |q: f64| sorted_ns[((sorted_ns.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
    eprintln!(
        "{name}: {} groups of one {PAYLOAD_BYTES}-byte record: p50 {:.0} us, p90 {:.0} us, p99 {:.0} us, p99.9 {:.0} us, max {:.0} us",
        sorted_ns.len(),
        at(0.5),
        at(0.9),
        at(0.99),
        at(0.999),
        at(1.0)
    );
}

#[test]
#[ignore = "measurement on the real disk; run explicitly"]
fn append_to_durable_latency() {
    report(
        "io_uring+O_DIRECT (write+fdatasync linked)",
        &measure(BackendChoice::Uring),
    );
    report(
        "buffered pwrite+fdatasync",
        &measure(BackendChoice::Fallback),
    );
}
