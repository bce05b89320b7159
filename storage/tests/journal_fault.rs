//! Fault injection through `JournalConfig::fault` on the real backend: the planned group fails
//! at the planned step, the journal poisons itself with that step, never reports the failed group
//! durable, and a reopen without the fault recovers exactly what was reported durable.

use std::path::{Path, PathBuf};
use tachyon_storage::journal::{
    BackendChoice, Durable, FaultOperation, FaultPlan, IoOperation, Journal, JournalConfig,
    JournalError, Publisher, Record, RecordKind, RecordView, Sequence,
};

const RECORDS_PER_GROUP: u64 = 5;
/// How long one write+sync may take before the test calls the completion lost.
const COMPLETION_TIMEOUT_MS: i32 = 10_000;

/// A fresh directory on the real disk (the target dir), never tmpfs.
fn fresh_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("journal-fault-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn config(fault: Option<FaultPlan>) -> JournalConfig {
    JournalConfig {
        segment_size_bytes: 64 * 1024,
        spare_segments: 1,
        max_buffered_bytes: 64 * 1024,
        max_record_bytes: 8 * 1024,
        backend: BackendChoice::Auto,
        fault,
        ..JournalConfig::default()
    }
}

fn payload_for(sequence: Sequence) -> Vec<u8> {
    vec![sequence as u8; 300 + sequence as usize * 13 % 200]
}

fn append(journal: &mut Journal, sequence: Sequence) -> Result<Sequence, JournalError> {
    let payload = payload_for(sequence);
    journal.append(&Record {
        kind: RecordKind::Publish,
        timestamp_ns: sequence,
        topic: b"fault",
        publisher: Publisher {
            client_name_hash: 9,
            client_sequence: sequence,
        },
        headers: b"",
        payload: &payload,
    })
}

/// Waits on the completion fd as a shard's event loop would, then polls, until the in-flight
/// group finishes; the invented failure must wake the fd like a real completion.
fn await_completion(journal: &mut Journal) -> Result<Durable, JournalError> {
    loop {
        if let Some(durable) = journal.poll_completions()? {
            return Ok(durable);
        }
        let mut descriptor = libc::pollfd {
            fd: journal.completion_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one live pollfd, count 1.
        let ready = unsafe { libc::poll(&mut descriptor, 1, COMPLETION_TIMEOUT_MS) };
        assert!(ready > 0, "no completion within {COMPLETION_TIMEOUT_MS} ms");
    }
}

/// Appends and submits groups until one fails; returns the durable points seen and the failure.
fn run_until_failure(journal: &mut Journal) -> (Vec<Sequence>, JournalError) {
    let mut durable_points = Vec::new();
    loop {
        for _ in 0..RECORDS_PER_GROUP {
            let sequence = journal.last_sequence() + 1;
            assert_eq!(append(journal, sequence).unwrap(), sequence);
        }
        assert!(journal.submit().unwrap(), "a group starts");
        // Records that cross into a new segment go out as a second group, started by the poll.
        while durable_points.last() != Some(&journal.last_sequence()) {
            match await_completion(journal) {
                Ok(durable) => durable_points.push(durable.up_to),
                Err(error) => return (durable_points, error),
            }
        }
        assert!(
            durable_points.len() < 100,
            "the planned fault never happened"
        );
    }
}

fn assert_refuses_everything(journal: &mut Journal, operation: IoOperation, durable: Sequence) {
    let is_failed = |result: Result<(), JournalError>| match result {
        Err(JournalError::Failed { cause }) => {
            assert_eq!(cause.operation, operation);
            assert_eq!(cause.durable_up_to, durable);
        }
        other => panic!("expected Failed, got {other:?}"),
    };
    let next = journal.last_sequence() + 1;
    is_failed(append(journal, next).map(|_| ()));
    is_failed(journal.submit().map(|_| ()));
    is_failed(journal.poll_completions().map(|_| ()));
    is_failed(journal.wait_durable(journal.last_sequence()).map(|_| ()));
    assert_eq!(journal.durable_up_to(), durable);
    assert_eq!(journal.failure().unwrap().operation, operation);
}

/// Reopens without the fault; checks it recovers exactly `1..=last` and can append again.
fn assert_recovers_exactly(dir: &Path, last: Sequence) {
    let mut seen = Vec::new();
    let mut journal = Journal::open_visiting(dir, config(None), &mut |view: &RecordView<'_>| {
        assert_eq!(view.record.payload, payload_for(view.bookmark.sequence));
        seen.push(view.bookmark.sequence);
    })
    .unwrap();
    assert_eq!(seen, (1..=last).collect::<Vec<_>>());
    assert_eq!(
        journal.recovery_report().last_sequence,
        (last > 0).then_some(last)
    );
    assert_eq!(append(&mut journal, last + 1).unwrap(), last + 1);
    journal.wait_durable(last + 1).unwrap();
}

#[test]
fn a_sync_fault_after_three_groups_poisons_with_sync_and_loses_only_the_failed_group() {
    let dir = fresh_dir("sync");
    let plan = FaultPlan {
        operation: FaultOperation::Sync,
        after_groups: 3,
    };
    let mut journal = Journal::open(&dir, config(Some(plan))).unwrap();
    let (durable_points, error) = run_until_failure(&mut journal);
    let durable = 3 * RECORDS_PER_GROUP;
    assert_eq!(
        durable_points,
        [RECORDS_PER_GROUP, 2 * RECORDS_PER_GROUP, durable]
    );
    match error {
        JournalError::Failed { cause } => {
            assert_eq!(cause.operation, IoOperation::Sync);
            assert_eq!(cause.durable_up_to, durable);
            assert!(cause.error.contains("injected"), "{}", cause.error);
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    assert_eq!(journal.last_sequence(), durable + RECORDS_PER_GROUP);
    assert_refuses_everything(&mut journal, IoOperation::Sync, durable);
    drop(journal);
    assert_recovers_exactly(&dir, durable);
}

#[test]
fn a_write_fault_on_the_first_group_poisons_with_write_and_nothing_is_durable() {
    let dir = fresh_dir("write");
    let plan = FaultPlan {
        operation: FaultOperation::Write,
        after_groups: 0,
    };
    let mut journal = Journal::open(&dir, config(Some(plan))).unwrap();
    let (durable_points, error) = run_until_failure(&mut journal);
    assert!(durable_points.is_empty());
    assert!(
        matches!(&error, JournalError::Failed { cause } if cause.operation == IoOperation::Write),
        "{error}"
    );
    assert_eq!(journal.first_sequence(), None);
    assert_refuses_everything(&mut journal, IoOperation::Write, 0);
    drop(journal);
    assert_recovers_exactly(&dir, 0);
}

#[test]
fn a_fault_across_segment_rollover_keeps_every_earlier_segment() {
    // Groups of ~2 KiB in 64 KiB segments: the 40th group is past the first rollover.
    let dir = fresh_dir("rollover");
    let plan = FaultPlan {
        operation: FaultOperation::Sync,
        after_groups: 40,
    };
    let mut journal = Journal::open(&dir, config(Some(plan))).unwrap();
    let (durable_points, _) = run_until_failure(&mut journal);
    assert_eq!(durable_points.len(), 40);
    let durable = *durable_points.last().unwrap();
    assert!(
        journal.first_sequence() == Some(1) && journal.last_sequence() > durable,
        "the failed group's records were appended, not durable"
    );
    assert_refuses_everything(&mut journal, IoOperation::Sync, durable);
    drop(journal);
    assert_recovers_exactly(&dir, durable);
}
