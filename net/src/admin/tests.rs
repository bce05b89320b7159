//! Tests of the admin API: the Prometheus text parsed back (strictly by hand, and by the
//! `prometheus-parse` crate), the JSON tree, and a real server on 127.0.0.1:0 fetched over HTTP.
//!
//! Tests that start a server hold [`SERVER_LOCK`], so the one that inspects the
//! `tachyon-admin` thread in `/proc` sees only its own.

use super::snapshot::{MetricKind, ProcessSnapshot, Snapshot, SHARD_COUNTERS};
use super::{metrics, start, tree, AdminContext, AdminError, AdminServer, AdminState, THREAD_NAME};
use crate::config::{Config, FaultToml, SowTopicToml};
use crate::journal::JournalShared;
use crate::latency::LATENCY_FINITE_BUCKETS;
use crate::stats::ShardStats;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

static SERVER_LOCK: Mutex<()> = Mutex::new(());

fn server_lock() -> MutexGuard<'static, ()> {
    SERVER_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The fake value of counter `index` on `shard`: distinct everywhere, so a value in the wrong
/// place is caught.
fn fake_value(shard: usize, index: usize) -> u64 {
    1000 * (shard as u64 + 1) + index as u64
}

fn fake_stats(shards: usize) -> Vec<Arc<ShardStats>> {
    (0..shards)
        .map(|shard| {
            let stats = Arc::new(ShardStats::default());
            for (index, counter) in SHARD_COUNTERS.iter().enumerate() {
                ShardStats::add((counter.read)(&stats), fake_value(shard, index));
            }
            stats
        })
        .collect()
}

fn fake_context(address: SocketAddr, shards: usize) -> AdminContext {
    let mut config = Config::default();
    config.transport.amps_tcp = "127.0.0.1:19007".parse().unwrap();
    config.journal.topics = vec!["orders".into()];
    let journal = Arc::new(JournalShared::default());
    journal.last_sequence.store(42, Ordering::Relaxed);
    journal.durable_up_to.store(40, Ordering::Relaxed);
    AdminContext {
        address,
        control_core: None,
        stats: fake_stats(shards),
        boards: (0..shards).map(|_| Arc::default()).collect(),
        rotate_log: None,
        journal,
        config: Arc::new(config),
        placement: "placement: 2 network shards on 1 NUMA node\n  shards 0-1: cores 0-1 (node 0)\n"
            .into(),
        started_at: SystemTime::now() - Duration::from_secs(90),
        version: "9.9.9-test",
    }
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

// ---------------------------------------------------------------------------------- tables

/// Field names of a `{:#?}` rendering: every line `name: value`, at any depth.
fn debug_field_names(pretty: &str) -> HashSet<String> {
    pretty
        .lines()
        .filter_map(|line| {
            let (name, _) = line.trim_start().split_once(": ")?;
            let valid = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            valid.then(|| name.to_string())
        })
        .collect()
}

#[test]
fn counter_table_lists_every_shard_stats_field_in_order() {
    let pretty = format!("{:#?}", ShardStats::default());
    let fields: Vec<String> = pretty
        .lines()
        .filter_map(|line| Some(line.trim_start().split_once(": ")?.0.to_string()))
        .collect();
    let table: Vec<String> = SHARD_COUNTERS
        .iter()
        .map(|counter| counter.name.to_string())
        .collect();
    assert_eq!(
        fields, table,
        "admin/snapshot.rs SHARD_COUNTERS must list every ShardStats field, in order"
    );
    // Each entry reads its own field: set one at a time and read the table back.
    for (index, counter) in SHARD_COUNTERS.iter().enumerate() {
        let stats = ShardStats::default();
        ShardStats::add((counter.read)(&stats), 7);
        let pretty = format!("{stats:#?}");
        assert!(
            pretty.contains(&format!("{}: 7,", counter.name)),
            "entry {index} ({}) reads another field:\n{pretty}",
            counter.name
        );
    }
}

/// Every key anywhere in a JSON value.
fn json_keys(value: &Value, keys: &mut HashSet<String>) {
    match value {
        Value::Object(object) => {
            for (key, child) in object {
                keys.insert(key.clone());
                json_keys(child, keys);
            }
        }
        Value::Array(array) => array.iter().for_each(|child| json_keys(child, keys)),
        _ => {}
    }
}

#[test]
fn config_tree_names_every_config_field() {
    let mut config = Config::default();
    config.runtime.nic = Some("eth0".into());
    config.journal.retention_max_bytes = Some(1 << 30);
    config.journal.fault_injection = Some(FaultToml {
        operation: "sync".into(),
        after_groups: 3,
    });
    config.sow.topics.push(SowTopicToml {
        topic: "orders".into(),
        key_fields: vec!["/id".into()],
        slab_size_bytes: 1 << 20,
        durability: "persistent".into(),
        expiration_seconds: Some(60),
    });
    let admin: SocketAddr = "127.0.0.1:1610".parse().unwrap();
    let rendered = tree::config(&config, admin);
    let mut keys = HashSet::new();
    json_keys(&rendered, &mut keys);
    let missing: Vec<String> = debug_field_names(&format!("{config:#?}"))
        .into_iter()
        .filter(|field| !keys.contains(field))
        .collect();
    assert!(
        missing.is_empty(),
        "admin/tree.rs config() does not render {missing:?}: add them there"
    );
    assert_eq!(rendered["runtime"]["topic_routing"], "ordered");
    assert_eq!(rendered["journal"]["fault_injection"]["after_groups"], 3);
    assert_eq!(rendered["sow"]["topics"][0]["key_fields"][0], "/id");
    assert_eq!(rendered["admin"]["address"], "127.0.0.1:1610");
    assert_eq!(rendered["transport"]["amps_tcp"], "0.0.0.0:9007");
}

// ---------------------------------------------------------------------------------- Prometheus

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// What a strict reading of the exposition found.
struct Exposition {
    /// `name{labels}` as written → value.
    samples: HashMap<String, f64>,
    /// Family name → `counter` or `gauge`.
    types: HashMap<String, String>,
}

/// Parses the subset of text format 0.0.4 we emit, refusing anything a scraper could trip on:
/// a sample before its family's HELP and TYPE, a family split in two, a duplicate series, a
/// counter not named `…_total`, a label other than `shard` (or `version` on build_info).
fn parse_strictly(text: &str) -> Exposition {
    assert!(
        text.ends_with('\n'),
        "the exposition must end with a newline"
    );
    let mut helps = HashSet::new();
    let mut types: HashMap<String, String> = HashMap::new();
    let mut samples = HashMap::new();
    let mut finished: HashSet<String> = HashSet::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        assert!(!line.is_empty(), "blank line in the exposition");
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP has a name and text");
            assert!(is_metric_name(name), "bad metric name {name:?}");
            assert!(!help.is_empty(), "{name} has an empty HELP");
            assert!(helps.insert(name.to_string()), "{name} has two HELP lines");
            if let Some(previous) = current.replace(name.to_string()) {
                finished.insert(previous);
            }
            assert!(!finished.contains(name), "family {name} appears twice");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE has a name and a type");
            assert!(helps.contains(name), "{name}: TYPE before HELP");
            assert!(
                kind == "counter" || kind == "gauge" || kind == "histogram",
                "{name}: unexpected type {kind}"
            );
            assert!(
                types.insert(name.to_string(), kind.to_string()).is_none(),
                "{name} has two TYPE lines"
            );
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment {line:?}");
        let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("{line:?}: value is not a number"));
        let name = series.split('{').next().unwrap();
        assert!(is_metric_name(name), "bad metric name in {line:?}");
        // A histogram's samples are its name plus `_bucket`, `_sum` or `_count`.
        let family = current
            .as_deref()
            .filter(|family| types.get(*family).map(String::as_str) == Some("histogram"))
            .filter(|family| {
                ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|suffix| name.strip_suffix(suffix) == Some(family))
            })
            .unwrap_or(name);
        assert_eq!(
            current.as_deref(),
            Some(family),
            "{line:?} is outside its family's block"
        );
        let kind = types
            .get(family)
            .unwrap_or_else(|| panic!("{line:?}: sample before its TYPE"));
        if kind == "counter" {
            assert!(
                name.ends_with("_total"),
                "counter {name} must end in _total"
            );
            assert!(value >= 0.0, "counter {name} is negative");
        }
        if let Some(labels) = series.strip_prefix(name).filter(|rest| !rest.is_empty()) {
            let labels = labels
                .strip_prefix('{')
                .and_then(|labels| labels.strip_suffix('}'))
                .unwrap_or_else(|| panic!("{line:?}: malformed labels"));
            for pair in labels.split(',') {
                let (label, quoted) = pair.split_once('=').expect("label=\"value\"");
                let allowed = if name == "tachyon_build_info" {
                    "version"
                } else if name.ends_with("_bucket") {
                    "le"
                } else {
                    "shard"
                };
                assert_eq!(label, allowed, "{line:?}: unbounded or unknown label");
                assert!(
                    quoted.len() >= 2 && quoted.starts_with('"') && quoted.ends_with('"'),
                    "{line:?}: label value not quoted"
                );
            }
        }
        assert!(
            samples.insert(series.to_string(), value).is_none(),
            "duplicate series {series}"
        );
    }
    for name in &helps {
        assert!(types.contains_key(name), "{name} has HELP but no TYPE");
    }
    Exposition { samples, types }
}

fn fake_snapshot(shards: usize) -> Snapshot {
    Snapshot::take(&fake_context(loopback(), shards))
}

/// Checks that every shard counter of the fake stats appears with its value and type.
fn assert_counters_present(exposition: &Exposition, shards: usize) {
    for (index, counter) in SHARD_COUNTERS.iter().enumerate() {
        let name = counter.metric_name();
        let kind = match counter.kind {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
        };
        assert_eq!(exposition.types.get(&name).map(String::as_str), Some(kind));
        for shard in 0..shards {
            let series = format!("{name}{{shard=\"{shard}\"}}");
            assert_eq!(
                exposition.samples.get(&series).copied(),
                Some(fake_value(shard, index) as f64),
                "{series}"
            );
        }
    }
}

#[test]
fn metrics_text_parses_and_carries_every_counter_per_shard() {
    let snapshot = fake_snapshot(2);
    let text = metrics::render(&snapshot, "9.9.9-test");
    let exposition = parse_strictly(&text);
    assert_counters_present(&exposition, 2);
    assert_eq!(exposition.types["tachyon_connections_open"], "gauge");
    assert_eq!(exposition.types["tachyon_frames_in_total"], "counter");
    for (series, value) in [
        ("tachyon_shards", 2.0),
        ("tachyon_journal_enabled", 1.0),
        ("tachyon_journal_failed", 0.0),
        ("tachyon_journal_last_sequence", 42.0),
        ("tachyon_journal_durable_sequence", 40.0),
        ("tachyon_build_info{version=\"9.9.9-test\"}", 1.0),
    ] {
        assert_eq!(exposition.samples.get(series), Some(&value), "{series}");
    }
    let uptime = exposition.samples["tachyon_uptime_seconds"];
    assert!((89.0..3600.0).contains(&uptime), "uptime {uptime}");
    let started = exposition.samples["tachyon_start_time_seconds"];
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - started - 90.0).abs() < 60.0, "start time {started}");

    // An independent parser reads the same samples with the same types.
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|line| Ok(line.to_string())))
        .expect("prometheus-parse reads the exposition");
    // It folds each histogram's buckets into one sample; `_sum` and `_count` stay separate.
    let histogram_buckets: usize = exposition
        .samples
        .keys()
        .filter(|series| series.contains("_bucket{"))
        .count();
    let histograms = exposition
        .types
        .values()
        .filter(|kind| *kind == "histogram")
        .count();
    assert_eq!(histograms, 2, "route and journal write latency");
    assert_eq!(
        scrape.samples.len(),
        exposition.samples.len() - histogram_buckets + histograms
    );
    for sample in &scrape.samples {
        let (kind, value) = match &sample.value {
            prometheus_parse::Value::Counter(value) => ("counter", *value),
            prometheus_parse::Value::Gauge(value) => ("gauge", *value),
            prometheus_parse::Value::Histogram(buckets) => {
                assert_eq!(
                    buckets.len(),
                    LATENCY_FINITE_BUCKETS + 1,
                    "{}",
                    sample.metric
                );
                continue;
            }
            prometheus_parse::Value::Untyped(_) => {
                // `_sum` and `_count` of a histogram come back untyped.
                assert!(
                    sample.metric.ends_with("_sum") || sample.metric.ends_with("_count"),
                    "{}: untyped",
                    sample.metric
                );
                continue;
            }
            other => panic!("{}: unexpected {other:?}", sample.metric),
        };
        assert_eq!(exposition.types[&sample.metric], kind, "{}", sample.metric);
        if let Some(shard) = sample.labels.get("shard") {
            let series = format!("{}{{shard=\"{shard}\"}}", sample.metric);
            assert_eq!(exposition.samples[&series], value, "{series}");
        }
    }
    assert!(scrape.docs.contains_key("tachyon_bytes_out_total"));
    assert!(exposition.samples["tachyon_memory_resident_bytes"] > 0.0);
    assert!(exposition.samples["tachyon_threads"] >= 1.0);
}

#[test]
fn process_status_is_read_in_bytes() {
    let status = "Name:\ttest\nVmSize:\t    3908 kB\nVmLck:\t       4 kB\nVmHWM:\t    2088 kB\nVmRSS:\t    2000 kB\nThreads:\t7\nbad line\n";
    assert_eq!(
        ProcessSnapshot::parse(status),
        ProcessSnapshot {
            resident_bytes: 2000 * 1024,
            resident_peak_bytes: 2088 * 1024,
            virtual_bytes: 3908 * 1024,
            locked_bytes: 4 * 1024,
            threads: 7,
        }
    );
    assert_eq!(ProcessSnapshot::parse(""), ProcessSnapshot::default());
}

#[test]
fn metrics_with_no_shards_still_declare_every_family() {
    let text = metrics::render(&fake_snapshot(0), "v");
    let exposition = parse_strictly(&text);
    for counter in &SHARD_COUNTERS {
        assert!(exposition.types.contains_key(&counter.metric_name()));
    }
    assert_eq!(exposition.samples["tachyon_shards"], 0.0);
}

#[test]
fn label_values_are_escaped() {
    assert_eq!(metrics::escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    let text = metrics::render(&fake_snapshot(1), "1.0\"x");
    assert!(text.contains("tachyon_build_info{version=\"1.0\\\"x\"} 1\n"));
}

// ---------------------------------------------------------------------------------- JSON tree

#[test]
fn dates_are_rfc3339_utc() {
    let at = |seconds: u64, millis: u64| {
        tree::rfc3339(UNIX_EPOCH + Duration::from_millis(seconds * 1000 + millis))
    };
    assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
    assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.005Z");
    assert_eq!(at(1_700_000_000, 123), "2023-11-14T22:13:20.123Z");
    assert_eq!(at(4_107_542_399, 999), "2100-02-28T23:59:59.999Z");
}

#[test]
fn lookup_walks_keys_and_indexes_and_names_what_exists_when_lost() {
    let root = serde_json::json!({"instance": {"processors": [{"id": 0}, {"id": 1}], "journal": {"failed": false}}});
    assert_eq!(tree::lookup(&root, "").unwrap(), &root);
    assert_eq!(
        tree::lookup(&root, "instance/processors/1/id").unwrap(),
        &serde_json::json!(1)
    );
    assert_eq!(
        tree::lookup(&root, "/instance//journal/").unwrap(),
        &serde_json::json!({"failed": false})
    );
    let lost = tree::lookup(&root, "instance/nope/deeper").unwrap_err();
    assert_eq!(lost.found, vec!["instance".to_string()]);
    assert_eq!(lost.children, vec!["journal", "processors"]);
    let lost = tree::lookup(&root, "instance/processors/7").unwrap_err();
    assert_eq!(lost.children, vec!["0..=1"]);
    let lost = tree::lookup(&root, "instance/journal/failed/x").unwrap_err();
    assert!(lost.children.is_empty());
}

// ---------------------------------------------------------------------------------- over HTTP

/// An HTTP/1.1 answer.
struct Reply {
    status: u16,
    headers: HashMap<String, String>,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        assert_eq!(self.headers["content-type"], "application/json");
        serde_json::from_str(&self.body).unwrap_or_else(|error| {
            panic!("not JSON ({error}):\n{}", self.body);
        })
    }
}

/// One request on a fresh connection, with `Connection: close` so the body ends at EOF.
fn request(address: SocketAddr, method: &str, path: &str) -> Reply {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read the answer");
    let text = String::from_utf8(raw).expect("UTF-8 answer");
    let (head, body) = text.split_once("\r\n\r\n").expect("a header block");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    let headers: HashMap<String, String> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    let body = if headers.get("transfer-encoding").map(String::as_str) == Some("chunked") {
        dechunk(body)
    } else {
        body.to_string()
    };
    Reply {
        status,
        headers,
        body,
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").expect("chunk size line");
        let size = usize::from_str_radix(size.trim(), 16).expect("hex chunk size");
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
}

fn get(address: SocketAddr, path: &str) -> Reply {
    request(address, "GET", path)
}

#[test]
fn serves_every_endpoint_over_http() {
    let _lock = server_lock();
    let context = fake_context(loopback(), 2);
    let journal = context.journal.clone();
    let stats = context.stats.clone();
    let server = start(context).expect("the admin API starts");
    let address = server.address();
    assert_ne!(address.port(), 0, "port 0 resolves to the real port");

    // Health: ready.
    let health = get(address, "/health");
    assert_eq!(health.status, 200, "{}", health.body);
    assert_eq!(
        health.json(),
        serde_json::json!({"status": "ready", "live": true, "reasons": []})
    );
    assert_eq!(health.headers["cache-control"], "no-store");
    assert_eq!(get(address, "/health/live").status, 200);

    // The whole tree.
    let instance = get(address, "/amps/instance");
    assert_eq!(instance.status, 200);
    let instance = instance.json();
    assert_eq!(instance["version"], "9.9.9-test");
    let uptime = instance["uptime_seconds"].as_u64().unwrap();
    assert!((89..3600).contains(&uptime), "uptime {uptime}");
    assert!(instance["started_at"].as_str().unwrap().ends_with('Z'));
    assert!(instance["placement"]
        .as_str()
        .unwrap()
        .contains("shards 0-1"));
    assert_eq!(instance["admin"]["address"], address.to_string());
    assert_eq!(instance["transports"][0]["address"], "127.0.0.1:19007");
    assert_eq!(instance["config"]["journal"]["topics"][0], "orders");
    assert_eq!(instance["config"]["admin"]["address"], address.to_string());
    assert!(instance["memory"]["resident_bytes"].as_u64().unwrap() > 0);
    assert!(instance["memory"]["threads"].as_u64().unwrap() >= 2);
    let processors = instance["processors"].as_array().unwrap();
    assert_eq!(processors.len(), 2);
    for (shard, processor) in processors.iter().enumerate() {
        assert_eq!(processor["id"], shard);
        for (index, counter) in SHARD_COUNTERS.iter().enumerate() {
            assert_eq!(
                processor[counter.name],
                fake_value(shard, index),
                "{}",
                counter.name
            );
        }
    }
    for (index, counter) in SHARD_COUNTERS.iter().enumerate() {
        assert_eq!(
            instance["totals"][counter.name],
            fake_value(0, index) + fake_value(1, index)
        );
    }

    // Subtrees are slices of the same tree; live values are read per request.
    ShardStats::add(&stats[1].frames_in, 5);
    let processor = get(address, "/amps/instance/processors/1").json();
    assert_eq!(
        processor["frames_in"],
        fake_value(1, 2) + 5,
        "frames_in is entry 2"
    );
    let journal_tree = get(address, "/amps/instance/journal").json();
    assert_eq!(
        (
            &journal_tree["enabled"],
            &journal_tree["failed"],
            &journal_tree["last_sequence"],
            &journal_tree["durable_up_to"],
            &journal_tree["writes"],
        ),
        (
            &serde_json::json!(true),
            &serde_json::json!(false),
            &serde_json::json!(42),
            &serde_json::json!(40),
            &serde_json::json!(0),
        )
    );
    assert_eq!(
        get(address, "/amps/instance/config/limits/frame_bytes_max").json(),
        serde_json::json!(16 * 1024 * 1024)
    );
    assert_eq!(
        get(address, "/amps").json()["instance"]["version"],
        "9.9.9-test"
    );

    // Unknown paths: 404 with what exists.
    let missing = get(address, "/amps/instance/nonsense");
    assert_eq!(missing.status, 404);
    let missing = missing.json();
    assert_eq!(missing["error"], "not found");
    assert_eq!(missing["found_up_to"], "/amps/instance");
    assert!(missing["children"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!("processors")));
    let missing = get(address, "/no/such/endpoint");
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["path"], "/no/such/endpoint");
    let wrong_method = request(address, "POST", "/health");
    assert_eq!(wrong_method.status, 405);
    assert_eq!(wrong_method.headers["allow"], "GET, HEAD");
    assert_eq!(wrong_method.json()["error"], "method not allowed");
    assert_eq!(get(address, "/").json()["endpoints"][0], "/health");

    // Prometheus over HTTP.
    let metrics = get(address, "/metrics");
    assert_eq!(metrics.status, 200);
    assert_eq!(metrics.headers["content-type"], metrics::CONTENT_TYPE);
    let exposition = parse_strictly(&metrics.body);
    assert_eq!(
        exposition.samples["tachyon_frames_in_total{shard=\"1\"}"],
        (fake_value(1, 2) + 5) as f64
    );
    assert_eq!(exposition.samples["tachyon_shards"], 2.0);

    // Not ready: the journal failed, then the instance began to stop.
    journal.failed.store(true, Ordering::Release);
    let health = get(address, "/health");
    assert_eq!(health.status, 503);
    let health = health.json();
    assert_eq!(health["status"], "not_ready");
    assert_eq!(health["live"], true);
    let reasons = health["reasons"].as_array().unwrap();
    assert_eq!(reasons.len(), 1);
    assert!(reasons[0].as_str().unwrap().starts_with("journal failed"));
    assert_eq!(get(address, "/amps/instance/journal/failed").json(), true);
    assert!(get(address, "/metrics")
        .body
        .contains("\ntachyon_journal_failed 1\n"));
    server.set_shutting_down();
    let health = get(address, "/health").json();
    assert_eq!(health["reasons"].as_array().unwrap().len(), 2);
    assert!(health["reasons"][0]
        .as_str()
        .unwrap()
        .starts_with("shutting down"));

    server.stop();
    assert!(
        TcpStream::connect_timeout(&address, Duration::from_secs(1)).is_err(),
        "the port is closed after stop"
    );
}

#[test]
fn a_taken_address_is_refused_before_start_returns() {
    let _lock = server_lock();
    let holder = std::net::TcpListener::bind(loopback()).unwrap();
    let taken = holder.local_addr().unwrap();
    let error = match start(fake_context(taken, 1)) {
        Err(error) => error,
        Ok(_) => panic!("a second listener on {taken} must be refused"),
    };
    assert!(matches!(error, AdminError::Bind { address, .. } if address == taken));
    let message = error.to_string();
    assert!(message.contains(&taken.to_string()), "{message}");
    assert!(message.contains("another process"), "{message}");
    assert!(message.contains("[admin] address"), "{message}");
}

/// The ids of this process's threads named `name`.
fn threads_named(name: &str) -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|entry| {
            let task = entry.ok()?.path();
            let comm = std::fs::read_to_string(task.join("comm")).ok()?;
            (comm.trim_end() == name).then(|| task.file_name()?.to_str().map(String::from))?
        })
        .collect()
}

#[test]
fn runs_on_one_named_thread_pinned_to_the_control_core_and_joins_it_on_stop() {
    let _lock = server_lock();
    let allowed = tachyon_numa::current_affinity().unwrap();
    let core = *allowed.last().unwrap();
    let mut context = fake_context(loopback(), 1);
    context.control_core = Some(core);
    let server = start(context).unwrap();
    assert_eq!(get(server.address(), "/health").status, 200);
    let threads = threads_named(THREAD_NAME);
    assert_eq!(threads.len(), 1, "exactly one admin thread: {threads:?}");
    let status = std::fs::read_to_string(format!("/proc/self/task/{}/status", threads[0])).unwrap();
    let cpus = status
        .lines()
        .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim();
    assert_eq!(cpus, core.0.to_string(), "the admin thread is pinned");
    server.stop();
    assert!(
        threads_named(THREAD_NAME).is_empty(),
        "stop joins the thread"
    );
}

#[test]
fn stop_does_not_wait_forever_for_a_stalled_client() {
    let _lock = server_lock();
    let server: AdminServer = start(fake_context(loopback(), 1)).unwrap();
    // A client that sent half a request and went quiet, and an idle keep-alive connection.
    let mut stalled = TcpStream::connect(server.address()).unwrap();
    stalled.write_all(b"GET /health HTTP/1.1\r\n").unwrap();
    let mut idle = TcpStream::connect(server.address()).unwrap();
    idle.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    let began = Instant::now();
    server.stop();
    let took = began.elapsed();
    assert!(
        took < super::DRAIN_DEADLINE + Duration::from_secs(3),
        "stop took {took:?}"
    );
}

#[test]
fn dropping_the_server_stops_it() {
    let _lock = server_lock();
    let server = start(fake_context(loopback(), 1)).unwrap();
    let address = server.address();
    drop(server);
    assert!(TcpStream::connect_timeout(&address, Duration::from_secs(1)).is_err());
    assert!(threads_named(THREAD_NAME).is_empty());
}

// ---------------------------------------------------------------------------------- boards

#[test]
fn clients_topics_and_latency_from_the_boards_reach_the_tree_and_metrics() {
    use crate::board::{bump, ClientStats, SubscriptionInfo, TopicTable};
    use tachyon_core::ids::{ConnectionId, ShardId};
    let context = fake_context(loopback(), 2);
    let board = context.boards[1].clone();
    let client = Arc::new(ClientStats::new(
        ConnectionId {
            shard: ShardId(1),
            slot: 4,
            generation: 2,
        },
        "127.0.0.1:4000".parse().unwrap(),
        1_700_000_000_000,
    ));
    client.logged_on("trader-1", "ops");
    client.subscribed(SubscriptionInfo {
        sub_id: "7".into(),
        topic: "orders".into(),
        filter: Some("/px > 100".into()),
        bookmark: None,
        paused: false,
    });
    bump(&client.messages_out, 12);
    bump(&client.bytes_in, 345);
    board.add_client(client.clone());
    let topics = TopicTable::new(board.clone());
    topics.with(b"orders", |topic| {
        bump(&topic.messages_in, 30);
        bump(&topic.deliveries, 12);
    });
    for micros in [3, 5, 900, 40] {
        board.route_latency.record(Duration::from_micros(micros));
    }
    context
        .journal
        .write_latency
        .record(Duration::from_micros(250));

    let snapshot = Snapshot::take(&context);
    let state = AdminState {
        context,
        address: loopback(),
        shutting_down: Arc::new(std::sync::atomic::AtomicBool::new(false)),
    };
    let root = tree::root(&state, &snapshot);
    let entry = tree::lookup(&root, "instance/clients/1.4.2").expect("the client is listed by id");
    assert_eq!(entry["name"], "trader-1");
    assert_eq!(entry["user"], "ops");
    assert_eq!(entry["messages_out"], 12);
    assert_eq!(entry["bytes_in"], 345);
    assert_eq!(entry["subscriptions"][0]["filter"], "/px > 100");
    assert_eq!(entry["connected_at"], "2023-11-14T22:13:20.000Z");
    let orders = tree::lookup(&root, "instance/topics/orders").unwrap();
    assert_eq!(orders["messages_in"], 30);
    assert_eq!(orders["subscriptions"], 1);
    let route = tree::lookup(&root, "instance/latency/route").unwrap();
    assert_eq!(route["count"], 4);
    assert_eq!(route["p50_us_at_most"], 8);
    assert_eq!(route["p99_us_at_most"], 1024);
    assert_eq!(snapshot.client("trader-1").unwrap().id, "1.4.2");
    assert!(snapshot.client("nobody").is_err());

    let exposition = parse_strictly(&metrics::render(&snapshot, "9.9.9-test"));
    assert_eq!(
        exposition.types["tachyon_route_latency_seconds"],
        "histogram"
    );
    assert_eq!(
        exposition.samples["tachyon_route_latency_seconds_bucket{le=\"0.000008\"}"],
        2.0
    );
    assert_eq!(
        exposition.samples["tachyon_route_latency_seconds_bucket{le=\"+Inf\"}"],
        4.0
    );
    assert_eq!(
        exposition.samples["tachyon_route_latency_seconds_count"],
        4.0
    );
    assert_eq!(
        exposition.samples["tachyon_journal_write_latency_seconds_count"],
        1.0
    );
    assert_eq!(exposition.samples["tachyon_clients"], 1.0);
    assert_eq!(exposition.samples["tachyon_subscriptions"], 1.0);
    assert_eq!(exposition.samples["tachyon_topics"], 1.0);
}
