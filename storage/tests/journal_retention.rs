//! Retention on real files: which sealed segments go by age and by size, what always stays (the
//! active segment, spares, anything at or above `protect_from`), and that recovery and replay see
//! a journal that simply starts later.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tachyon_storage::journal::{
    list_segments, verify, BackendChoice, Journal, JournalConfig, JournalError, JournalReader,
    Publisher, Record, RecordKind, RecordView, ReplayStart, RetentionPolicy, SegmentFile, Sequence,
};

const SEGMENT_SIZE_BYTES: u64 = 64 * 1024;
const PAYLOAD_BYTES: usize = 1000;
/// ~1.1 KiB records in 64 KiB segments: about 55 per segment, so 400 fill seven or eight.
const RECORDS: u64 = 400;
const HOUR: Duration = Duration::from_secs(3600);

/// A fresh directory on the real disk (the target dir), never tmpfs.
fn fresh_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("journal-retention-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn config() -> JournalConfig {
    JournalConfig {
        segment_size_bytes: SEGMENT_SIZE_BYTES,
        spare_segments: 2,
        max_buffered_bytes: 64 * 1024,
        max_record_bytes: 8 * 1024,
        backend: BackendChoice::Auto,
        ..JournalConfig::default()
    }
}

fn payload_for(sequence: Sequence) -> Vec<u8> {
    (0..PAYLOAD_BYTES)
        .map(|i| (sequence as usize * 7 + i) as u8)
        .collect()
}

fn append_durable(journal: &mut Journal, count: u64) -> Sequence {
    for _ in 0..count {
        let sequence = journal.last_sequence() + 1;
        let payload = payload_for(sequence);
        let record = Record {
            kind: RecordKind::Publish,
            timestamp_ns: sequence,
            topic: b"orders",
            publisher: Publisher {
                client_name_hash: 1,
                client_sequence: sequence,
            },
            headers: b"",
            payload: &payload,
        };
        match journal.append(&record) {
            Ok(appended) => assert_eq!(appended, sequence),
            Err(JournalError::Backpressure { .. }) => {
                journal.wait_durable(journal.last_sequence()).unwrap();
                assert_eq!(journal.append(&record).unwrap(), sequence);
            }
            Err(error) => panic!("{error}"),
        }
    }
    let last = journal.last_sequence();
    journal.wait_durable(last).unwrap();
    last
}

/// A journal of `RECORDS` durable records over several segments, and its segment files.
fn filled_journal(name: &str) -> (PathBuf, Journal, Vec<SegmentFile>) {
    let dir = fresh_dir(name);
    let mut journal = Journal::open(&dir, config()).unwrap();
    append_durable(&mut journal, RECORDS);
    let segments = list_segments(journal.journal_dir()).unwrap();
    assert!(
        segments.len() >= 5,
        "{RECORDS} records in 64 KiB segments: {} segments",
        segments.len()
    );
    assert_eq!(journal.first_sequence(), Some(1));
    (dir, journal, segments)
}

fn now_unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// Spare files in the directory, once the preallocation thread has filled its pool (so the count
/// cannot change under the test).
fn spare_count(journal: &Journal) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    while journal.spare_segments_ready() < journal.config().spare_segments {
        assert!(Instant::now() < deadline, "spares were not preallocated");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::fs::read_dir(journal.journal_dir())
        .unwrap()
        .filter(|entry| {
            entry
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".spare")
        })
        .count()
}

/// Reopens the journal and checks it holds exactly `first..=last`, byte for byte.
fn assert_recovers(dir: &Path, first: Sequence, last: Sequence) -> Journal {
    let mut expected = first;
    let journal = Journal::open_visiting(dir, config(), &mut |view: &RecordView<'_>| {
        assert_eq!(view.bookmark.sequence, expected);
        assert_eq!(view.record.payload, payload_for(expected).as_slice());
        expected += 1;
    })
    .unwrap();
    assert_eq!(expected, last + 1, "recovered {first}..={last}");
    assert_eq!(journal.first_sequence(), Some(first));
    journal
}

#[test]
fn age_removes_every_expired_sealed_segment_but_never_the_active_one() {
    let (dir, mut journal, segments) = filled_journal("age");
    let policy = RetentionPolicy {
        max_age: Some(HOUR),
        max_bytes: None,
    };
    let everything = journal.durable_up_to() + 1;

    let fresh = journal
        .apply_retention(&policy, everything, now_unix_ns())
        .unwrap();
    assert_eq!(fresh.removed_segments, 0, "nothing is an hour old yet");
    assert_eq!(fresh.first_sequence_kept, Some(1));

    let spares = spare_count(&journal);
    let later = now_unix_ns() + 2 * HOUR.as_nanos() as u64;
    let report = journal.apply_retention(&policy, everything, later).unwrap();
    let active = segments.last().unwrap();
    assert_eq!(report.removed_segments, segments.len() - 1);
    assert_eq!(
        report.removed_bytes,
        (segments.len() as u64 - 1) * SEGMENT_SIZE_BYTES
    );
    assert_eq!(report.first_sequence_kept, Some(active.first_sequence));
    assert_eq!(journal.first_sequence(), Some(active.first_sequence));
    assert_eq!(
        list_segments(journal.journal_dir()).unwrap(),
        std::slice::from_ref(active)
    );
    assert_eq!(spare_count(&journal), spares, "spares are never removed");

    let again = journal.apply_retention(&policy, everything, later).unwrap();
    assert_eq!(again.removed_segments, 0, "the active segment stays");

    // Writing goes on, into new segments too, and the shortened journal recovers.
    let last = append_durable(&mut journal, 100);
    drop(journal);
    let journal = assert_recovers(&dir, active.first_sequence, last);
    drop(journal);
    assert!(verify(&dir).unwrap().is_clean());
}

#[test]
fn size_removes_the_oldest_segments_until_the_journal_fits() {
    let (dir, mut journal, segments) = filled_journal("size");
    let kept = 3;
    let policy = RetentionPolicy {
        max_age: Some(HOUR),
        max_bytes: Some(kept as u64 * SEGMENT_SIZE_BYTES),
    };
    let spares = spare_count(&journal);
    let report = journal
        .apply_retention(&policy, journal.durable_up_to() + 1, now_unix_ns())
        .unwrap();
    assert_eq!(report.removed_segments, segments.len() - kept);
    assert_eq!(
        report.removed_bytes,
        (segments.len() - kept) as u64 * SEGMENT_SIZE_BYTES
    );
    let left = list_segments(journal.journal_dir()).unwrap();
    assert_eq!(left, segments[segments.len() - kept..]);
    assert_eq!(report.first_sequence_kept, Some(left[0].first_sequence));
    assert_eq!(
        spare_count(&journal),
        spares,
        "spares do not count and stay"
    );

    // Even a limit of zero bytes keeps the active segment.
    let zero = RetentionPolicy {
        max_age: None,
        max_bytes: Some(0),
    };
    let report = journal
        .apply_retention(&zero, journal.durable_up_to() + 1, now_unix_ns())
        .unwrap();
    assert_eq!(report.removed_segments, kept - 1);
    assert_eq!(
        list_segments(journal.journal_dir()).unwrap(),
        [segments.last().unwrap().clone()]
    );
    let last = journal.last_sequence();
    drop(journal);
    assert_recovers(&dir, segments.last().unwrap().first_sequence, last);
}

#[test]
fn protect_from_keeps_the_segment_holding_it_and_everything_after() {
    let (_dir, mut journal, segments) = filled_journal("protect");
    let policy = RetentionPolicy {
        max_age: Some(Duration::ZERO),
        max_bytes: Some(0),
    };
    let later = now_unix_ns() + HOUR.as_nanos() as u64;

    let report = journal.apply_retention(&policy, 1, later).unwrap();
    assert_eq!(report.removed_segments, 0, "record 1 is still needed");

    // A sequence inside the third segment: the first two go, the third stays.
    let protect_from = segments[2].first_sequence + 3;
    let report = journal
        .apply_retention(&policy, protect_from, later)
        .unwrap();
    assert_eq!(report.removed_segments, 2);
    assert_eq!(report.first_sequence_kept, Some(segments[2].first_sequence));
    assert_eq!(list_segments(journal.journal_dir()).unwrap(), segments[2..]);

    // Exactly the first record of the fourth segment: the third holds only older records.
    let protect_from = segments[3].first_sequence;
    let report = journal
        .apply_retention(&policy, protect_from, later)
        .unwrap();
    assert_eq!(report.removed_segments, 1);
    assert_eq!(journal.first_sequence(), Some(segments[3].first_sequence));
}

#[test]
fn an_empty_or_single_segment_journal_has_nothing_to_remove() {
    let dir = fresh_dir("empty");
    let mut journal = Journal::open(&dir, config()).unwrap();
    let policy = RetentionPolicy {
        max_age: Some(Duration::ZERO),
        max_bytes: Some(0),
    };
    let later = now_unix_ns() + HOUR.as_nanos() as u64;
    let report = journal.apply_retention(&policy, u64::MAX, later).unwrap();
    assert_eq!(report.removed_segments, 0);
    assert_eq!(report.first_sequence_kept, None);
    assert_eq!(journal.first_sequence(), None);

    append_durable(&mut journal, 10);
    assert_eq!(journal.first_sequence(), Some(1));
    let report = journal.apply_retention(&policy, u64::MAX, later).unwrap();
    assert_eq!(
        report.removed_segments, 0,
        "the only segment is the active one"
    );
    assert_eq!(report.first_sequence_kept, Some(1));
}

#[test]
fn replay_starts_at_the_first_kept_record_and_a_reader_left_behind_is_told() {
    let (dir, mut journal, segments) = filled_journal("replay");
    let durable = journal.durable_up_to();
    // A reader positioned in the first segment before retention runs.
    let mut behind = JournalReader::open(&dir, ReplayStart::Beginning).unwrap();
    behind.set_limit(durable);
    assert_eq!(behind.next_record().unwrap().unwrap().bookmark.sequence, 1);

    let policy = RetentionPolicy {
        max_age: None,
        max_bytes: Some(3 * SEGMENT_SIZE_BYTES),
    };
    let report = journal
        .apply_retention(&policy, durable + 1, now_unix_ns())
        .unwrap();
    assert!(report.removed_segments >= 2);
    let first_kept = report.first_sequence_kept.unwrap();
    assert_eq!(first_kept, segments[report.removed_segments].first_sequence);

    let read_all = |start: ReplayStart| {
        let mut reader = JournalReader::open(&dir, start).unwrap();
        reader.set_limit(durable);
        let mut sequences = Vec::new();
        while let Some(view) = reader.next_record().unwrap() {
            assert_eq!(
                view.record.payload,
                payload_for(view.bookmark.sequence).as_slice()
            );
            sequences.push(view.bookmark.sequence);
        }
        sequences
    };
    let kept: Vec<Sequence> = (first_kept..=durable).collect();
    assert_eq!(read_all(ReplayStart::Beginning), kept);
    assert_eq!(read_all(ReplayStart::Sequence(1)), kept);
    assert_eq!(read_all(ReplayStart::Sequence(first_kept - 1)), kept);
    assert_eq!(read_all(ReplayStart::Sequence(first_kept)), kept);
    assert_eq!(
        read_all(ReplayStart::Sequence(first_kept + 70)),
        (first_kept + 70..=durable).collect::<Vec<_>>()
    );

    // The early reader finishes the segment it holds open, then finds the next one gone.
    let outcome = loop {
        match behind.next_record() {
            Ok(Some(_)) => {}
            other => break other.map(|view| view.map(|view| view.bookmark.sequence)),
        }
    };
    match outcome {
        Err(JournalError::RemovedByRetention {
            wanted,
            first_kept: at,
        }) => {
            assert_eq!(wanted, segments[1].first_sequence);
            assert_eq!(at, first_kept);
        }
        other => panic!("expected RemovedByRetention, got {other:?}"),
    }
}
