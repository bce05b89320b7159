//! Model-based test of the SOW store: random publish / delta publish / delete / query / expire
//! sequences run against the store and against a plain ordered map must agree on every answer —
//! query results and order, delete counts, expired records, record counts — while the slabs churn
//! (payload sizes vary from a few bytes to several KiB in 64 KiB slabs).

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;
use tachyon_core::filter::Filter;
use tachyon_core::sow::{Bookmark, KeyExtractor, OrderBy, PublishMeta, SowTopic, SowTopicConfig};

const SECOND_NS: u64 = 1_000_000_000;
const IDS: u8 = 48;

#[derive(Debug, Clone)]
enum Op {
    Publish {
        id: u8,
        v: i8,
        pad: u16,
        expires_s: Option<u8>,
    },
    Delta {
        id: u8,
        v: Option<i8>,
        w: i8,
        pad: Option<u16>,
    },
    DeleteFilter {
        above: i8,
    },
    DeleteData {
        id: u8,
    },
    DeleteKeys {
        ids: Vec<u8>,
    },
    Query {
        above: Option<i8>,
        order: Option<bool>,
        top_n: Option<u8>,
        keys: Option<Vec<u8>>,
    },
    Advance {
        seconds: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let id = 0..IDS;
    prop_oneof![
        6 => (id.clone(), -5i8..5, 0u16..6000, prop::option::weighted(0.2, 1u8..5))
            .prop_map(|(id, v, pad, expires_s)| Op::Publish { id, v, pad, expires_s }),
        3 => (id.clone(), prop::option::of(-5i8..5), any::<i8>(), prop::option::of(0u16..6000))
            .prop_map(|(id, v, w, pad)| Op::Delta { id, v, w, pad }),
        1 => (-6i8..6).prop_map(|above| Op::DeleteFilter { above }),
        2 => id.clone().prop_map(|id| Op::DeleteData { id }),
        1 => prop::collection::vec(id.clone(), 0..4).prop_map(|ids| Op::DeleteKeys { ids }),
        3 => (
            prop::option::of(-6i8..6),
            prop::option::of(any::<bool>()),
            prop::option::of(0u8..8),
            prop::option::weighted(0.2, prop::collection::vec(id, 0..5))
        )
            .prop_map(|(above, order, top_n, keys)| Op::Query { above, order, top_n, keys }),
        1 => (1u8..4).prop_map(|seconds| Op::Advance { seconds }),
    ]
}

/// What the model keeps per key: members in order, last write time, deadline.
#[derive(Debug, Clone)]
struct Entry {
    members: Vec<(String, String)>,
    written_ns: u64,
    deadline_ns: Option<u64>,
}

impl Entry {
    fn payload(&self) -> String {
        let body: Vec<String> = self
            .members
            .iter()
            .map(|(name, value)| format!("\"{name}\":{value}"))
            .collect();
        format!("{{{}}}", body.join(","))
    }

    fn v(&self) -> Option<i64> {
        self.members
            .iter()
            .find(|(name, _)| name == "v")
            .map(|(_, value)| value.parse().unwrap())
    }
}

fn members(id: u8, v: Option<i8>, w: Option<i8>, pad: Option<u16>) -> Vec<(String, String)> {
    let mut out = vec![("id".to_owned(), id.to_string())];
    if let Some(v) = v {
        out.push(("v".into(), v.to_string()));
    }
    if let Some(w) = w {
        out.push(("w".into(), w.to_string()));
    }
    if let Some(pad) = pad {
        out.push(("pad".into(), format!("\"{}\"", "p".repeat(pad as usize))));
    }
    out
}

fn wire_keys(extractor: &mut KeyExtractor, ids: &[u8]) -> String {
    let keys: Vec<String> = ids
        .iter()
        .map(|id| {
            extractor
                .extract(None, format!("{{\"id\":{id}}}").as_bytes())
                .unwrap()
                .as_ref()
                .wire()
                .to_string()
        })
        .collect();
    keys.join(",")
}

fn run(ops: &[Op]) {
    let mut config = SowTopicConfig::new("model", &["/id"]);
    config.slab_size_bytes = 64 * 1024;
    let mut topic = SowTopic::new(config).unwrap();
    let mut extractor = KeyExtractor::new(&["/id".to_owned()]);
    let mut model: BTreeMap<u8, Entry> = BTreeMap::new();
    let mut now_ns = SECOND_NS;
    let mut peak_used_bytes = 0usize;
    for (index, op) in ops.iter().enumerate() {
        now_ns += 1_000_000;
        let sequence = index as u64 + 1;
        let mut meta = PublishMeta {
            bookmark: Bookmark {
                publisher_id: 9,
                sequence,
            },
            timestamp_unix_ns: now_ns,
            correlation_id: None,
            expiration: None,
        };
        match op {
            Op::Publish {
                id,
                v,
                pad,
                expires_s,
            } => {
                meta.expiration = expires_s.map(|s| Duration::from_secs(u64::from(s)));
                let entry = Entry {
                    members: members(*id, Some(*v), None, Some(*pad)),
                    written_ns: now_ns,
                    deadline_ns: expires_s.map(|s| now_ns + u64::from(s) * SECOND_NS),
                };
                let outcome = topic
                    .publish(None, entry.payload().as_bytes(), &meta)
                    .unwrap();
                let previous = model.insert(*id, entry);
                assert_eq!(
                    outcome.previous().map(|p| p.payload.to_vec()),
                    previous.map(|p| p.payload().into_bytes())
                );
            }
            Op::Delta { id, v, w, pad } => {
                let update = Entry {
                    members: members(*id, *v, Some(*w), *pad),
                    written_ns: now_ns,
                    deadline_ns: None,
                };
                let merged = match model.get(id) {
                    Some(stored) => {
                        let mut merged = stored.members.clone();
                        for (name, value) in &update.members {
                            match merged.iter_mut().find(|(existing, _)| existing == name) {
                                Some(slot) => slot.1 = value.clone(),
                                None => merged.push((name.clone(), value.clone())),
                            }
                        }
                        Entry {
                            members: merged,
                            ..update.clone()
                        }
                    }
                    None => update.clone(),
                };
                let outcome = topic
                    .delta_publish(None, update.payload().as_bytes(), &meta)
                    .unwrap();
                assert_eq!(outcome.current().payload, merged.payload().as_bytes());
                model.insert(*id, merged);
            }
            Op::DeleteFilter { above } => {
                let filter = Filter::compile(&format!("/v > {above}")).unwrap();
                let outcome = topic.delete_by_filter(&filter);
                let before = model.len();
                model.retain(|_, entry| entry.v().is_none_or(|v| v <= i64::from(*above)));
                assert_eq!(outcome.records_deleted, before - model.len());
                assert_eq!(outcome.matches, outcome.records_deleted);
            }
            Op::DeleteData { id } => {
                let outcome = topic
                    .delete_by_data(None, format!("{{\"id\":{id},\"x\":1}}").as_bytes())
                    .unwrap();
                let removed = model.remove(id);
                assert_eq!(
                    outcome.deleted.first().map(|r| r.payload.clone()),
                    removed.map(|e| e.payload().into_bytes())
                );
            }
            Op::DeleteKeys { ids } => {
                let outcome = topic
                    .delete_by_keys(wire_keys(&mut extractor, ids).as_bytes())
                    .unwrap();
                let mut unique = ids.clone();
                unique.sort();
                unique.dedup();
                let removed = unique
                    .iter()
                    .filter(|id| model.remove(id).is_some())
                    .count();
                assert_eq!(outcome.records_deleted, removed);
            }
            Op::Query {
                above,
                order,
                top_n,
                keys,
            } => {
                let filter = above.map(|above| Filter::compile(&format!("/v > {above}")).unwrap());
                let order_by = order.map(|descending| {
                    OrderBy::parse(if descending { "/v DESC" } else { "/v" }).unwrap()
                });
                let key_list = keys.as_ref().map(|ids| wire_keys(&mut extractor, ids));
                let result = topic
                    .query(
                        filter.as_ref(),
                        order_by.as_ref(),
                        top_n.map(usize::from),
                        key_list.as_deref().map(str::as_bytes),
                    )
                    .unwrap();
                let mut expected: Vec<&Entry> = model
                    .iter()
                    .filter(|(id, _)| keys.as_ref().is_none_or(|ids| ids.contains(id)))
                    .filter(|(_, entry)| {
                        above.is_none_or(|above| entry.v().is_some_and(|v| v > i64::from(above)))
                    })
                    .map(|(_, entry)| entry)
                    .collect();
                assert_eq!(result.matches, expected.len());
                let mut got: Vec<String> = result
                    .records
                    .iter()
                    .map(|r| String::from_utf8(r.payload.to_vec()).unwrap())
                    .collect();
                if order.is_none() && top_n.is_none() {
                    let mut want: Vec<String> = expected.iter().map(|e| e.payload()).collect();
                    want.sort();
                    got.sort();
                    assert_eq!(got, want);
                } else {
                    expected.sort_by_key(|entry| entry.written_ns);
                    if let Some(descending) = order {
                        // Mixed-type order: numbers ascending, missing last; DESC reverses all.
                        expected.sort_by(|a, b| {
                            let ascending = match (a.v(), b.v()) {
                                (Some(x), Some(y)) => x.cmp(&y),
                                (Some(_), None) => std::cmp::Ordering::Less,
                                (None, Some(_)) => std::cmp::Ordering::Greater,
                                (None, None) => std::cmp::Ordering::Equal,
                            };
                            if *descending {
                                ascending.reverse()
                            } else {
                                ascending
                            }
                        });
                    }
                    expected.truncate(top_n.map_or(usize::MAX, usize::from));
                    let want: Vec<String> = expected.iter().map(|e| e.payload()).collect();
                    assert_eq!(got, want);
                }
            }
            Op::Advance { seconds } => {
                now_ns += u64::from(*seconds) * SECOND_NS;
                let mut expired: Vec<Vec<u8>> = topic
                    .expire(now_ns)
                    .into_iter()
                    .map(|r| r.payload)
                    .collect();
                let mut want: Vec<Vec<u8>> = Vec::new();
                model.retain(|_, entry| {
                    let gone = entry.deadline_ns.is_some_and(|deadline| deadline <= now_ns);
                    if gone {
                        want.push(entry.payload().into_bytes());
                    }
                    !gone
                });
                expired.sort();
                want.sort();
                assert_eq!(expired, want);
            }
        }
        let stats = topic.stats();
        assert_eq!(stats.records, model.len());
        assert_eq!(stats.dedicated_slabs, 0, "no payload here outgrows a slab");
        assert_eq!(
            stats.bytes_used + stats.bytes_free,
            stats.slabs * 64 * 1024,
            "{stats:?}"
        );
        let stored: usize = topic.records().map(|r| r.stored_bytes()).sum();
        assert!(stats.bytes_used >= stored);
        topic.check_invariants();
        // A slab is added only when every slab has less free space than the record needs (about
        // 6 KiB here), compaction included, so slabs never outnumber the peak of live data.
        peak_used_bytes = peak_used_bytes.max(stats.bytes_used);
        assert!(
            stats.slabs <= 1 + peak_used_bytes / (57 * 1024),
            "{stats:?}, peak {peak_used_bytes}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_store_agrees_with_a_map_model(ops in prop::collection::vec(op(), 1..160)) {
        run(&ops);
    }
}

/// Heavy churn with large payloads: slabs are reused and compacted, never grown without bound.
#[test]
fn churn_reuses_slab_space() {
    let mut ops = Vec::new();
    for round in 0..40u16 {
        for id in 0..IDS {
            ops.push(Op::Publish {
                id,
                v: (id % 7) as i8,
                pad: (round * 97 + u16::from(id) * 131) % 2500,
                expires_s: None,
            });
        }
        ops.push(Op::DeleteFilter { above: 2 });
    }
    run(&ops);
}
