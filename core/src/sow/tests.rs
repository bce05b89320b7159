//! Store-level tests: publish, update in place and relocation, deletes, expiration, queries,
//! delta publish, snapshots.

use std::time::Duration;

use super::snapshot::{self, SnapshotError};
use super::*;
use crate::filter::Filter;

const SECOND_NS: u64 = 1_000_000_000;

fn topic(fields: &[&str]) -> SowTopic {
    let mut config = SowTopicConfig::new("orders", fields);
    config.slab_size_bytes = 64 * 1024;
    SowTopic::new(config).unwrap()
}

fn meta(sequence: u64) -> PublishMeta<'static> {
    PublishMeta {
        bookmark: Bookmark {
            publisher_id: 42,
            sequence,
        },
        timestamp_unix_ns: sequence * SECOND_NS,
        correlation_id: None,
        expiration: None,
    }
}

fn payloads(result: &QueryResult<'_>) -> Vec<String> {
    result
        .records
        .iter()
        .map(|r| String::from_utf8(r.payload.to_vec()).unwrap())
        .collect()
}

fn sorted_payloads(topic: &SowTopic) -> Vec<String> {
    let mut all = payloads(&topic.query(None, None, None, None).unwrap());
    all.sort();
    all
}

#[test]
fn publishes_insert_then_update_with_the_previous_record() {
    let mut topic = topic(&["/id"]);
    let outcome = topic
        .publish(None, br#"{"id":1,"qty":5}"#, &meta(1))
        .unwrap();
    assert!(matches!(outcome, PublishOutcome::Inserted { .. }));
    assert_eq!(outcome.current().bookmark.sequence, 1);
    let outcome = topic
        .publish(None, br#"{"id":1,"qty":6}"#, &meta(2))
        .unwrap();
    let previous = outcome.previous().expect("an update");
    assert_eq!(previous.payload, br#"{"id":1,"qty":5}"#);
    assert_eq!(previous.bookmark.sequence, 1);
    assert_eq!(outcome.current().payload, br#"{"id":1,"qty":6}"#);
    assert_eq!(previous.key, outcome.current().key);
    assert_eq!(topic.len(), 1);
    topic.check_invariants();
}

#[test]
fn updates_stay_in_place_when_they_fit_and_relocate_when_not() {
    let mut topic = topic(&["/id"]);
    topic
        .publish(
            None,
            format!(r#"{{"id":1,"pad":"{}"}}"#, "a".repeat(100)).as_bytes(),
            &meta(1),
        )
        .unwrap();
    topic.publish(None, br#"{"id":2}"#, &meta(2)).unwrap();
    let used = topic.stats().bytes_used;
    topic
        .publish(
            None,
            format!(r#"{{"id":1,"pad":"{}"}}"#, "b".repeat(96)).as_bytes(),
            &meta(3),
        )
        .unwrap();
    assert_eq!(
        topic.stats().bytes_used,
        used,
        "a slightly smaller update keeps its block"
    );
    topic
        .publish(
            None,
            format!(r#"{{"id":1,"pad":"{}"}}"#, "c".repeat(1000)).as_bytes(),
            &meta(4),
        )
        .unwrap();
    assert!(topic.stats().bytes_used > used);
    topic.check_invariants();
    let all = sorted_payloads(&topic);
    assert!(all[0].contains(&"c".repeat(1000)) && all[1] == r#"{"id":2}"#);
    topic.publish(None, br#"{"id":1}"#, &meta(5)).unwrap();
    assert!(
        topic.stats().bytes_used < used,
        "a much smaller update gives the tail back"
    );
    topic.check_invariants();
}

#[test]
fn deleted_space_is_reused_and_churn_compacts_instead_of_growing() {
    let mut topic = topic(&["/id"]);
    let pad = "x".repeat(900);
    for round in 0..20u64 {
        for id in 0..50u64 {
            let payload = format!(
                r#"{{"id":{id},"round":{round},"pad":"{}"}}"#,
                &pad[..(id as usize * 17 + round as usize * 31) % 900]
            );
            topic
                .publish(None, payload.as_bytes(), &meta(round * 100 + id + 1))
                .unwrap();
        }
        let outcome = topic.delete_by_filter(&Filter::compile("/id % 3 = 0").unwrap());
        assert_eq!(outcome.records_deleted, 17);
        topic.check_invariants();
    }
    let stats = topic.stats();
    assert_eq!(stats.records, 33);
    assert!(
        stats.slabs <= 2,
        "50 records under 1 KiB fit one or two 64 KiB slabs: {stats:?}"
    );
    assert_eq!(stats.bytes_used + stats.bytes_free, stats.slabs * 64 * 1024);
}

#[test]
fn oversized_messages_are_refused_with_both_sizes_and_mid_sized_ones_get_a_slab() {
    let mut topic = topic(&["/id"]);
    let limit = topic.message_bytes_max();
    assert_eq!(
        limit, MESSAGE_BYTES_MIN_LIMIT,
        "a 64 KiB slab still stores 1 MiB messages"
    );
    let big = format!(r#"{{"id":1,"pad":"{}"}}"#, "z".repeat(200_000));
    topic.publish(None, big.as_bytes(), &meta(1)).unwrap();
    assert_eq!(topic.stats().dedicated_slabs, 1);
    topic.publish(None, br#"{"id":1}"#, &meta(2)).unwrap();
    assert_eq!(
        topic.stats().dedicated_slabs,
        0,
        "the dedicated slab left with its record"
    );
    let huge = vec![b' '; limit + 1];
    let error = topic.publish(None, &huge, &meta(3)).unwrap_err();
    assert_eq!(
        error,
        SowError::MessageTooLarge {
            size_bytes: limit + 1,
            limit_bytes: limit
        }
    );
    assert_eq!(error.reason(), "sow store failed");
    assert!(
        error.to_string().contains(&(limit + 1).to_string())
            && error.to_string().contains(&limit.to_string())
    );
    topic.check_invariants();
}

#[test]
fn missing_keys_are_refused_with_the_field_and_explicit_keys_are_honoured() {
    let mut topic = topic(&["/sym", "/venue"]);
    let error = topic
        .publish(None, br#"{"sym":"IBM"}"#, &meta(1))
        .unwrap_err();
    assert_eq!(error.reason(), "bad sow key");
    assert!(error.to_string().contains("/venue"));
    topic
        .publish(Some(b"mine"), br#"{"sym":"IBM"}"#, &meta(1))
        .unwrap();
    topic
        .publish(Some(b"mine"), br#"{"sym":"MSFT"}"#, &meta(2))
        .unwrap();
    assert_eq!(sorted_payloads(&topic), [r#"{"sym":"MSFT"}"#]);
    let result = topic.query(None, None, None, Some(b"mine")).unwrap();
    assert_eq!(result.records.len(), 1);
}

#[test]
fn expiration_uses_the_header_or_the_topic_default() {
    let mut config = SowTopicConfig::new("orders", &["/id"]);
    config.expiration = Some(Duration::from_secs(10));
    let mut topic = SowTopic::new(config).unwrap();
    topic.publish(None, br#"{"id":1}"#, &meta(1)).unwrap(); // expires at 11 s
    let short = PublishMeta {
        expiration: Some(Duration::from_secs(2)),
        ..meta(2)
    }; // at 4 s
    topic.publish(None, br#"{"id":2}"#, &short).unwrap();
    topic.publish(None, br#"{"id":3}"#, &meta(3)).unwrap(); // at 13 s
    topic.publish(None, br#"{"id":3,"v":2}"#, &meta(5)).unwrap(); // moved to 15 s
    assert_eq!(topic.next_expiration_unix_ns(), Some(4 * SECOND_NS));
    assert!(topic.expire(3 * SECOND_NS).is_empty());
    let expired = topic.expire(11 * SECOND_NS);
    let expired: Vec<&[u8]> = expired.iter().map(|r| &r.payload[..]).collect();
    assert_eq!(expired, [&br#"{"id":2}"#[..], br#"{"id":1}"#]);
    assert!(
        topic.expire(14 * SECOND_NS).is_empty(),
        "the update moved the deadline"
    );
    assert_eq!(topic.expire(15 * SECOND_NS).len(), 1);
    assert!(topic.is_empty() && topic.next_expiration_unix_ns().is_none());
    topic.check_invariants();
}

fn filled() -> SowTopic {
    let mut topic = topic(&["/id"]);
    for (sequence, payload) in [
        r#"{"id":1,"qty":5,"sym":"b"}"#,
        r#"{"id":2,"qty":50,"sym":"a"}"#,
        r#"{"id":3,"qty":7,"sym":"c"}"#,
        r#"{"id":4,"qty":5,"sym":"d"}"#,
        r#"{"id":5,"sym":"e"}"#,
    ]
    .iter()
    .enumerate()
    {
        topic
            .publish(None, payload.as_bytes(), &meta(sequence as u64 + 1))
            .unwrap();
    }
    topic
}

#[test]
fn queries_filter_order_and_cut() {
    let topic = filled();
    let filter = Filter::compile("/qty > 5").unwrap();
    let result = topic.query(Some(&filter), None, None, None).unwrap();
    assert_eq!(result.matches, 2);
    let order = OrderBy::parse("/qty DESC").unwrap();
    let result = topic.query(None, Some(&order), Some(3), None).unwrap();
    assert_eq!(result.matches, 5);
    assert_eq!(
        payloads(&result),
        [
            r#"{"id":5,"sym":"e"}"#,
            r#"{"id":2,"qty":50,"sym":"a"}"#,
            r#"{"id":3,"qty":7,"sym":"c"}"#
        ]
    );
    let order = OrderBy::parse("/qty, /sym DESC").unwrap();
    let ids: Vec<String> = payloads(&topic.query(None, Some(&order), None, None).unwrap())
        .iter()
        .map(|p| p[6..7].to_owned())
        .collect();
    assert_eq!(ids, ["4", "1", "3", "2", "5"]);
    let first_two = topic.query(None, None, Some(2), None).unwrap();
    assert_eq!(
        payloads(&first_two)[1],
        r#"{"id":2,"qty":50,"sym":"a"}"#,
        "top_n alone: oldest writes first"
    );
    assert_eq!(
        topic
            .query(None, None, Some(0), None)
            .unwrap()
            .records
            .len(),
        0
    );
}

#[test]
fn queries_by_sow_keys_use_the_wire_spelling() {
    let topic = filled();
    let keys: Vec<String> = topic.records().map(|r| r.key.wire().to_string()).collect();
    let list = format!("{},nosuchkey, {} ,{}", keys[0], keys[1], keys[0]);
    let result = topic
        .query(None, None, None, Some(list.as_bytes()))
        .unwrap();
    assert_eq!(
        result.records.len(),
        2,
        "unknown keys are skipped, repeats counted once"
    );
    let filter = Filter::compile("/id = 3").unwrap();
    let wanted = topic
        .query(Some(&filter), None, None, None)
        .unwrap()
        .records[0]
        .key
        .wire()
        .to_string();
    let result = topic
        .query(
            Some(&filter),
            None,
            None,
            Some(format!("{wanted},{}", keys[0]).as_bytes()),
        )
        .unwrap();
    assert_eq!(
        payloads(&result),
        [r#"{"id":3,"qty":7,"sym":"c"}"#],
        "filter and keys combine"
    );
}

#[test]
fn deletes_by_filter_keys_and_data_count_what_they_removed() {
    let mut topic = filled();
    let outcome = topic.delete_by_filter(&Filter::compile("/qty = 5").unwrap());
    assert_eq!((outcome.matches, outcome.records_deleted), (2, 2));
    assert_eq!(
        outcome.deleted[0].payload, br#"{"id":1,"qty":5,"sym":"b"}"#,
        "oldest first"
    );
    let key = topic
        .query(Some(&Filter::compile("/id = 2").unwrap()), None, None, None)
        .unwrap()
        .records[0]
        .key
        .wire()
        .to_string();
    let outcome = topic
        .delete_by_keys(format!("{key},nosuchkey").as_bytes())
        .unwrap();
    assert_eq!(outcome.records_deleted, 1);
    assert_eq!(
        topic.delete_by_keys(b"nosuchkey").unwrap(),
        DeleteOutcome::default()
    );
    let outcome = topic
        .delete_by_data(None, br#"{"id":3,"anything":true}"#)
        .unwrap();
    assert_eq!(outcome.deleted[0].payload, br#"{"id":3,"qty":7,"sym":"c"}"#);
    assert_eq!(
        topic
            .delete_by_data(None, br#"{"id":3}"#)
            .unwrap()
            .records_deleted,
        0
    );
    assert!(topic.delete_by_data(None, br#"{"no":"key"}"#).is_err());
    assert_eq!(sorted_payloads(&topic), [r#"{"id":5,"sym":"e"}"#]);
    topic.check_invariants();
}

#[test]
fn delta_publish_merges_into_the_stored_record() {
    let mut topic = topic(&["/id"]);
    let outcome = topic
        .delta_publish(None, br#"{"id":1,"qty":5}"#, &meta(1))
        .unwrap();
    assert!(outcome.previous().is_none(), "no record: a full publish");
    let outcome = topic
        .delta_publish(None, br#"{"qty":6,"id":1,"px":1.5}"#, &meta(2))
        .unwrap();
    assert_eq!(outcome.previous().unwrap().payload, br#"{"id":1,"qty":5}"#);
    assert_eq!(outcome.current().payload, br#"{"id":1,"qty":6,"px":1.5}"#);
    let (previous, current) = (
        outcome.previous().unwrap().payload.to_vec(),
        outcome.current().payload.to_vec(),
    );
    let names: Vec<&[u8]> = topic.key_extractor().top_level_names().collect();
    let mut delta = Vec::new();
    assert_eq!(
        delta::diff(&previous, &current, names.iter().copied(), true, &mut delta),
        Ok(DeltaOutcome::Send)
    );
    assert_eq!(delta, br#"{"id":1,"qty":6,"px":1.5}"#);
    assert!(matches!(
        topic.delta_publish(None, b"[1]", &meta(3)),
        Err(SowError::Key(_))
    ));
    let error = topic
        .delta_publish(Some(b"k"), b"not json", &meta(3))
        .unwrap_err();
    assert_eq!(error.reason(), "sow store failed");
    topic.check_invariants();
}

#[test]
fn colliding_hashes_stay_separate_records() {
    let mut topic = topic(&["/id"]);
    let keys = [
        SowKey {
            hash: 7,
            kind: KeyKind::Fields,
            canonical: b"a".to_vec().into(),
        },
        SowKey {
            hash: 7,
            kind: KeyKind::Fields,
            canonical: b"b".to_vec().into(),
        },
    ];
    for (index, key) in keys.iter().enumerate() {
        let view = RecordView {
            key: key.as_ref(),
            payload: if index == 0 {
                b"{\"n\":0}"
            } else {
                b"{\"n\":1}"
            },
            bookmark: Bookmark::default(),
            timestamp_unix_ns: index as u64,
            correlation_id: None,
            expiration_unix_ns: None,
        };
        topic.restore_record(&view).unwrap();
    }
    assert_eq!(topic.len(), 2);
    assert_eq!(topic.get(keys[1].as_ref()).unwrap().payload, b"{\"n\":1}");
    assert_eq!(
        topic
            .query(None, None, None, Some(b"7"))
            .unwrap()
            .records
            .len(),
        2,
        "the wire key names both"
    );
    topic.check_invariants();
}

#[test]
fn snapshots_round_trip_and_reject_corruption() {
    let mut source = filled();
    let with_extras = PublishMeta {
        correlation_id: Some(b"Y29y"),
        expiration: Some(Duration::from_secs(100)),
        ..meta(9)
    };
    source
        .publish(Some(b"explicit"), br#"{"x":1}"#, &with_extras)
        .unwrap();
    let mut bytes = Vec::new();
    snapshot::snapshot(&source, &mut bytes);
    let restored = snapshot::restore(source.config().clone(), &bytes).unwrap();
    let order = OrderBy::parse("/id").unwrap();
    let a = source
        .query(None, Some(&order), None, None)
        .unwrap()
        .records;
    let b = restored
        .query(None, Some(&order), None, None)
        .unwrap()
        .records;
    assert_eq!(a, b);
    assert_eq!(restored.next_expiration_unix_ns(), Some(109 * SECOND_NS));
    restored.check_invariants();

    let contents = snapshot::read(&bytes).unwrap();
    assert_eq!(
        (contents.topic.as_str(), contents.records.len()),
        ("orders", 6)
    );
    let mut corrupt = bytes.clone();
    let last = corrupt.len() - 2;
    corrupt[last] ^= 1;
    assert!(matches!(
        snapshot::read(&corrupt),
        Err(SnapshotError::Checksum { record: 5, .. })
    ));
    assert!(matches!(
        snapshot::read(&bytes[..bytes.len() - 1]),
        Err(SnapshotError::Truncated {
            record: 5,
            count: 6,
            ..
        })
    ));
    assert_eq!(
        snapshot::read(b"nonsense").unwrap_err(),
        SnapshotError::BadMagic
    );
    let mut future = bytes.clone();
    future[8] = 2;
    assert!(snapshot::read(&future)
        .unwrap_err()
        .to_string()
        .contains("tachyon upgrade"));
    let other = SowTopicConfig::new("other", &["/id"]);
    assert!(matches!(
        snapshot::restore(other, &bytes),
        Err(SnapshotError::TopicMismatch { .. })
    ));
    let mut empty = Vec::new();
    snapshot::snapshot(&topic(&["/id"]), &mut empty);
    assert_eq!(
        empty.len(),
        snapshot::SNAPSHOT_HEADER_BYTES + "orders".len()
    );
}

#[test]
fn dumps_print_one_line_per_record() {
    let mut topic = topic(&["/id"]);
    topic.publish(None, br#"{"id":1}"#, &meta(1)).unwrap();
    topic
        .publish(Some(b"k2"), &[b'y'; 300], &PublishMeta::default())
        .unwrap();
    let mut text = String::new();
    snapshot::dump_topic(&topic, &mut text);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("# topic orders: 2 records, 1 slabs of 65536 bytes"),
        "{}",
        lines[0]
    );
    assert!(lines[1].starts_with("key=k2 bm=- size=300 payload=yyy") && lines[1].ends_with("y..."));
    let key = topic
        .query(None, None, None, None)
        .unwrap()
        .records
        .iter()
        .find(|r| r.payload == br#"{"id":1}"#)
        .unwrap()
        .key
        .wire()
        .to_string();
    assert_eq!(
        lines[2],
        format!(r#"key={key} bm=42|1| size=8 payload={{"id":1}}"#)
    );
}

#[test]
fn the_store_holds_configured_topics() {
    let configs = [
        SowTopicConfig::new("a", &["/id"]),
        SowTopicConfig::new("b", &[]),
    ];
    let mut store = SowStore::new(configs.clone()).unwrap();
    assert!(store.topic(b"a").is_some() && store.topic(b"c").is_none());
    store
        .topic_mut(b"b")
        .unwrap()
        .publish(Some(b"k"), b"{}", &PublishMeta::default())
        .unwrap();
    assert_eq!(store.topics().map(SowTopic::len).sum::<usize>(), 1);
    assert!(matches!(
        SowStore::new(configs.iter().cloned().chain([configs[0].clone()])),
        Err(SowError::DuplicateTopic { .. })
    ));
    assert!(matches!(
        SowStore::new([SowTopicConfig::new("", &[])]),
        Err(SowError::Config(_))
    ));
}
