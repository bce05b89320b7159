//! Journal behaviour on real files: segments, recovery of torn tails, corruption, replay, tools,
//! and which I/O backend this machine gets.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tachyon_storage::journal::{
    dump, encoded_len, list_segments, verify, BackendChoice, BackendKind, Journal, JournalConfig,
    JournalError, JournalReader, Publisher, Record, RecordKind, RecordView, ReplayStart, Sequence,
    RECORD_HEADER_BYTES,
};

/// A fresh directory on the real disk (the target dir), never tmpfs.
fn fresh_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("journal-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn small_config() -> JournalConfig {
    JournalConfig {
        segment_size_bytes: 32 * 1024,
        spare_segments: 2,
        max_buffered_bytes: 64 * 1024,
        max_record_bytes: 8 * 1024,
        ..JournalConfig::default()
    }
}

fn payload_for(sequence: u64) -> Vec<u8> {
    let length = (sequence * 37 % 900) as usize + 1;
    (0..length)
        .map(|i| (sequence as usize * 31 + i) as u8)
        .collect()
}

fn record_for<'a>(sequence: u64, payload: &'a [u8]) -> Record<'a> {
    Record {
        kind: if sequence.is_multiple_of(5) {
            RecordKind::SowDelete
        } else {
            RecordKind::Publish
        },
        timestamp_ns: 1_000 + sequence * 10,
        topic: b"orders/eu",
        publisher: Publisher {
            client_name_hash: sequence % 3 + 1,
            client_sequence: sequence,
        },
        headers: b"cid=1",
        payload,
    }
}

fn append_many(journal: &mut Journal, count: u64) -> Sequence {
    let mut last = 0;
    for _ in 0..count {
        let sequence = journal.last_sequence() + 1;
        let payload = payload_for(sequence);
        last = loop {
            match journal.append(&record_for(sequence, &payload)) {
                Ok(appended) => break appended,
                Err(JournalError::Backpressure { .. }) => {
                    journal.wait_durable(journal.last_sequence()).unwrap();
                }
                Err(error) => panic!("{error}"),
            }
        };
        assert_eq!(last, sequence);
        if sequence.is_multiple_of(7) {
            journal.submit().unwrap();
            journal.poll_completions().unwrap();
        }
    }
    last
}

fn recovered(dir: &Path, config: JournalConfig) -> (Journal, Vec<(Sequence, Vec<u8>)>) {
    let mut seen = Vec::new();
    let journal = Journal::open_visiting(dir, config, &mut |view: &RecordView<'_>| {
        assert_eq!(view.record.topic, b"orders/eu");
        seen.push((view.bookmark.sequence, view.record.payload.to_vec()));
    })
    .unwrap();
    (journal, seen)
}

fn assert_records_are(seen: &[(Sequence, Vec<u8>)], first: Sequence, last: Sequence) {
    assert_eq!(
        seen.len() as u64,
        last + 1 - first,
        "records {first}..={last}"
    );
    for (index, (sequence, payload)) in seen.iter().enumerate() {
        assert_eq!(*sequence, first + index as u64);
        assert_eq!(*payload, payload_for(*sequence), "payload of {sequence}");
    }
}

#[test]
fn records_come_back_in_order_across_segments_and_spares_are_ready() {
    let dir = fresh_dir("segments");
    let mut journal = Journal::open(&dir, small_config()).unwrap();
    assert_eq!(journal.recovery_report().last_sequence, None);
    let last = append_many(&mut journal, 500);
    assert_eq!(journal.wait_durable(last).unwrap().up_to, last);
    assert_eq!(journal.publishers().highest(1), Some(498));
    let deadline = Instant::now() + Duration::from_secs(10);
    while journal.spare_segments_ready() < 2 {
        assert!(Instant::now() < deadline, "spares were not preallocated");
        std::thread::sleep(Duration::from_millis(10));
    }
    let journal_dir = journal.journal_dir().to_path_buf();
    drop(journal);
    let segments = list_segments(&journal_dir).unwrap();
    assert!(
        segments.len() >= 5,
        "500 records of ~500 bytes in 32 KiB segments: {} segments",
        segments.len()
    );
    let spares: Vec<_> = std::fs::read_dir(&journal_dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".spare"))
        .collect();
    assert_eq!(spares.len(), 2);
    for spare in &spares {
        let bytes = std::fs::read(spare.path()).unwrap();
        assert_eq!(bytes.len(), 32 * 1024);
        assert!(bytes.iter().all(|&b| b == 0), "spare is zero-filled");
    }

    let (mut journal, seen) = recovered(&dir, small_config());
    assert_records_are(&seen, 1, 500);
    assert_eq!(
        journal.publishers().highest(1),
        Some(498),
        "dedup table rebuilt"
    );
    assert!(journal.epoch() >= 2);
    let last = append_many(&mut journal, 100);
    journal.wait_durable(last).unwrap();
    drop(journal);
    let (_, seen) = recovered(&dir, small_config());
    assert_records_are(&seen, 1, 600);
    assert!(verify(&dir).unwrap().is_clean());
}

#[test]
fn io_uring_with_o_direct_is_used_on_the_real_disk() {
    let dir = fresh_dir("backend");
    let config = JournalConfig {
        backend: BackendChoice::Uring,
        ..small_config()
    };
    let mut journal = Journal::open(&dir, config).unwrap();
    assert!(
        matches!(journal.backend_kind(), BackendKind::Uring { .. }),
        "{}",
        journal.backend_kind()
    );
    let last = append_many(&mut journal, 50);
    journal.wait_durable(last).unwrap();
    assert!(journal.completion_fd() >= 0);
}

#[test]
fn the_buffered_fallback_writes_a_journal_the_io_uring_path_recovers() {
    let dir = fresh_dir("fallback");
    let mut journal = Journal::open(
        &dir,
        JournalConfig {
            backend: BackendChoice::Fallback,
            ..small_config()
        },
    )
    .unwrap();
    assert!(
        matches!(journal.backend_kind(), BackendKind::Fallback { ref reason } if reason == "configured")
    );
    let last = append_many(&mut journal, 120);
    journal.wait_durable(last).unwrap();
    drop(journal);
    let (journal, seen) = recovered(
        &dir,
        JournalConfig {
            backend: BackendChoice::Uring,
            ..small_config()
        },
    );
    assert!(matches!(journal.backend_kind(), BackendKind::Uring { .. }));
    assert_records_are(&seen, 1, 120);
}

/// Kernels before 6.6 refuse O_DIRECT on tmpfs (EINVAL): Auto must then fall back and say why.
#[test]
fn tmpfs_works_with_whichever_backend_it_allows() {
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() {
        eprintln!("no /dev/shm here; skipping");
        return;
    }
    let dir = shm.join(format!("tachyon-journal-fallback-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut journal = Journal::open(&dir, small_config()).unwrap();
    match journal.backend_kind() {
        BackendKind::Fallback { reason } => assert!(reason.contains("O_DIRECT"), "{reason}"),
        other => eprintln!("this /dev/shm accepts O_DIRECT ({other}); nothing to fall back from"),
    }
    let last = append_many(&mut journal, 100);
    journal.wait_durable(last).unwrap();
    drop(journal);
    let (_, seen) = recovered(&dir, small_config());
    assert_records_are(&seen, 1, 100);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Writes `count` durable records and returns each record's (sequence, file, offset, length).
fn durable_journal(dir: &Path, count: u64) -> Vec<(Sequence, PathBuf, u64, u64)> {
    let mut journal = Journal::open(dir, small_config()).unwrap();
    let last = append_many(&mut journal, count);
    journal.wait_durable(last).unwrap();
    drop(journal);
    let mut positions = Vec::new();
    tachyon_storage::journal::scan_journal(&dir.join("journal"), &mut |view, path, offset| {
        let length = tachyon_storage::journal::encoded_len(&view.record) as u64;
        positions.push((view.bookmark.sequence, path.to_path_buf(), offset, length));
    })
    .unwrap();
    assert_eq!(positions.len() as u64, count);
    positions
}

#[test]
fn a_torn_tail_loses_nothing_before_the_damage_and_appending_continues() {
    let template = fresh_dir("torn-template");
    let positions = durable_journal(&template, 150);
    let last_segment = positions.last().unwrap().1.clone();
    let first_in_last = positions.iter().position(|p| p.1 == last_segment).unwrap();
    let data_start = positions[first_in_last].2;
    let data_end = positions.last().map(|p| p.2 + p.3).unwrap();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    for case in 0..24 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        // Damage somewhere in the last segment's data, or just past it.
        let offset = data_start + rng % (data_end + 2048 - data_start);
        let truncate = case % 3 == 0;
        let dir = fresh_dir(&format!("torn-{case}"));
        copy_dir(&template.join("journal"), &dir.join("journal"));
        let segment = dir.join("journal").join(last_segment.file_name().unwrap());
        if truncate {
            std::fs::OpenOptions::new()
                .write(true)
                .open(&segment)
                .unwrap()
                .set_len(offset)
                .unwrap();
        } else {
            let mut bytes = std::fs::read(&segment).unwrap();
            bytes[offset as usize] ^= 1 << (rng % 8);
            std::fs::write(&segment, bytes).unwrap();
        }
        // Records wholly before the damage survive; the damaged one and all after it are gone.
        let survivors = positions
            .iter()
            .take_while(|p| p.1 != last_segment || p.2 + p.3 <= offset)
            .count() as u64;
        let (mut journal, seen) = recovered(&dir, small_config());
        assert_records_are(&seen, 1, survivors);
        let report = journal.recovery_report().clone();
        assert_eq!(
            report.last_sequence,
            Some(survivors),
            "case {case} offset {offset} truncate {truncate}"
        );
        if survivors < 150 && !truncate {
            assert!(
                report.dropped_bytes > 0 && report.reason.is_some(),
                "{report:?}"
            );
        }
        let last = append_many(&mut journal, 40);
        journal.wait_durable(last).unwrap();
        drop(journal);
        let (_, seen) = recovered(&dir, small_config());
        assert_records_are(&seen, 1, survivors + 40);
        assert!(verify(&dir).unwrap().is_clean());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn damage_before_the_last_segment_stops_start_up_unless_allowed() {
    let dir = fresh_dir("corrupt");
    let positions = durable_journal(&dir, 200);
    let (_, path, offset, _) = positions[10].clone();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[offset as usize + 40] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    match Journal::open(&dir, small_config()) {
        Err(JournalError::Corruption {
            path: at,
            offset: at_offset,
            reason,
        }) => {
            assert_eq!((at, at_offset), (path.clone(), offset));
            assert!(reason.contains("CRC"), "{reason}");
        }
        Ok(_) => panic!("opened a corrupt journal"),
        Err(error) => panic!("{error}"),
    }
    let report = verify(&dir).unwrap();
    assert!(report.is_corrupt(), "{report}");
    let config = JournalConfig {
        allow_truncate_corruption: true,
        ..small_config()
    };
    let (mut journal, seen) = recovered(&dir, config.clone());
    assert_records_are(&seen, 1, 10);
    assert!(journal.recovery_report().dropped_segments > 0);
    let last = append_many(&mut journal, 30);
    journal.wait_durable(last).unwrap();
    drop(journal);
    let (_, seen) = recovered(&dir, config);
    assert_records_are(&seen, 1, 40);
}

#[test]
fn replay_reads_from_a_sequence_or_a_timestamp_and_follows_the_live_journal() {
    let dir = fresh_dir("replay");
    let mut journal = Journal::open(&dir, small_config()).unwrap();
    let last = append_many(&mut journal, 300);
    journal.wait_durable(last).unwrap();

    let mut reader = JournalReader::open(&dir, ReplayStart::Sequence(123)).unwrap();
    reader.set_limit(journal.durable_up_to());
    let mut expected = 123;
    while let Some(view) = reader.next_record().unwrap() {
        assert_eq!(view.bookmark.sequence, expected);
        assert_eq!(view.record.payload, payload_for(expected).as_slice());
        expected += 1;
    }
    assert_eq!(expected, 301);

    // Hand-over to live: more records appear, in the same and in new segments.
    let last = append_many(&mut journal, 150);
    assert!(
        reader.next_record().unwrap().is_none(),
        "nothing past the limit"
    );
    journal.wait_durable(last).unwrap();
    reader.set_limit(journal.durable_up_to());
    while let Some(view) = reader.next_record().unwrap() {
        assert_eq!(view.bookmark.sequence, expected);
        expected += 1;
    }
    assert_eq!(expected, 451);

    let mut by_time =
        JournalReader::open(&dir, ReplayStart::TimestampNs(1_000 + 200 * 10)).unwrap();
    assert_eq!(
        by_time.next_record().unwrap().unwrap().bookmark.sequence,
        200
    );
    let mut from_start = JournalReader::open(&dir, ReplayStart::Beginning).unwrap();
    assert_eq!(
        from_start.next_record().unwrap().unwrap().bookmark.sequence,
        1
    );
}

#[test]
fn dump_and_verify_describe_the_journal() {
    let dir = fresh_dir("tools");
    durable_journal(&dir, 60);
    let mut out = Vec::new();
    let report = dump(&dir, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(report.records, 60);
    assert!(report.is_clean(), "{report}");
    assert!(text.contains("seq=60 "), "{text}");
    assert!(text.contains("kind=SowDelete"));
    assert!(text.contains("verdict: clean"));
    assert_eq!(
        text.lines().filter(|line| line.contains(" seq=")).count(),
        60
    );
}

#[test]
fn oversized_records_and_backpressure_are_refused_with_the_numbers() {
    let dir = fresh_dir("limits");
    let mut journal = Journal::open(&dir, small_config()).unwrap();
    let big = vec![0u8; 9 * 1024];
    match journal.append(&record_for(1, &big)) {
        Err(JournalError::RecordTooLarge {
            record_bytes,
            limit_bytes,
        }) => assert_eq!((record_bytes > limit_bytes, limit_bytes), (true, 8 * 1024)),
        other => panic!("{other:?}"),
    }
    let payload = vec![1u8; 4000];
    let mut refused = false;
    for _ in 0..20 {
        match journal.append(&record_for(1, &payload)) {
            Ok(_) => {}
            Err(JournalError::Backpressure { limit_bytes, .. }) => {
                assert_eq!(limit_bytes, 64 * 1024);
                refused = true;
                break;
            }
            Err(error) => panic!("{error}"),
        }
    }
    assert!(refused, "64 KiB of buffer took 80 KB without backpressure");
    journal.wait_durable(journal.last_sequence()).unwrap();
    assert_eq!(journal.buffered_bytes(), 0);
    journal.append(&record_for(1, &payload)).unwrap();
}

/// Records that each fill most of a segment: a full append buffer then holds one run per record,
/// each starting a segment, and every one of them must be written and recovered.
#[test]
fn a_full_buffer_of_records_that_each_start_a_segment_is_written_and_recovered() {
    let dir = fresh_dir("segment-per-record");
    let config = JournalConfig {
        segment_size_bytes: 16 * 1024,
        spare_segments: 2,
        max_buffered_bytes: 64 * 1024,
        max_record_bytes: 12 * 1024,
        ..JournalConfig::default()
    };
    let mut journal = Journal::open(&dir, config.clone()).unwrap();
    // 8 KiB records: two never fit in one segment's 12 KiB of data, so each starts a segment.
    let payloads: Vec<Vec<u8>> = (1..=8u64)
        .map(|sequence| {
            let length = 8 * 1024 - RECORD_HEADER_BYTES - b"orders/eu".len() - b"cid=1".len();
            vec![sequence as u8; length]
        })
        .collect();
    for (index, payload) in payloads.iter().enumerate() {
        let record = record_for(index as u64 + 1, payload);
        assert_eq!(encoded_len(&record), 8 * 1024);
        assert_eq!(journal.append(&record).unwrap(), index as u64 + 1);
    }
    assert_eq!(journal.buffered_bytes(), 64 * 1024);
    journal.wait_durable(8).unwrap();
    drop(journal);
    let (_journal, seen) = recovered(&dir, config);
    let expected: Vec<(Sequence, Vec<u8>)> = payloads
        .into_iter()
        .enumerate()
        .map(|(index, payload)| (index as u64 + 1, payload))
        .collect();
    assert_eq!(seen, expected);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}
