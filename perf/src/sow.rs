//! The `sow-query` scenario (Tachyon only: the relay and NATS have no State of the World).
//!
//! Loads [`RECORDS`] records of [`RECORD_BYTES`] bytes into the SOW topic [`SOW_TOPIC`] (key
//! `/id`, `qty = id % 1000`), waits until a full query returns all of them, then measures
//! **closed-loop** query latency (send one query, wait for its `completed` ack, record, repeat)
//! for a key lookup, a 2 % filter and a full scan, and the time from sending `sow_and_subscribe`
//! to its `group_end` (then unsubscribes). Wire protocol: reference §5.4 and §5.5.

use std::io::{BufWriter, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;

use crate::amps::{self, FrameReader, Received};

/// The SOW topic the suite configures for Tachyon.
pub const SOW_TOPIC: &str = "bench-sow";
/// Its key field.
pub const SOW_KEY_FIELD: &str = "/id";
/// Records loaded before measuring.
pub const RECORDS: u64 = 10_000;
/// Size of each record's JSON.
pub const RECORD_BYTES: usize = 1024;
/// `qty` = id % this, so `/qty < FILTER_QTY_BELOW` matches 20 of 1,000 = 2 %.
pub const QTY_MODULUS: u64 = 1_000;
/// See [`QTY_MODULUS`].
pub const FILTER_QTY_BELOW: u64 = 20;
/// Records per `sow` frame asked of the server.
pub const BATCH_SIZE: usize = 100;
/// How long one query may take before the run fails.
const QUERY_TIMEOUT: Duration = Duration::from_secs(30);

/// What the measurements run for.
#[derive(Clone, Debug)]
pub struct SowPlan {
    /// Queries sent and not recorded before each case.
    pub warmup: Duration,
    /// Measured time per case.
    pub duration: Duration,
    /// Core the query thread is pinned to (`None`: unpinned).
    pub client_core: Option<usize>,
}

/// One measured case.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SowResult {
    /// `key-lookup`, `filter-2pct`, `full-scan`, `sow-and-subscribe`.
    pub case: String,
    /// The filter sent (`id` varies for the key lookup).
    pub filter: String,
    /// What the latency runs to: `completed` ack, or `group_end` for sow_and_subscribe.
    pub until: &'static str,
    /// Measured queries.
    pub queries: u64,
    /// Records each query returned (all queries must agree).
    pub records_per_query: u64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
    pub queries_per_second: f64,
    pub records_per_second: f64,
}

/// The JSON for one record: `{"id":N,"qty":N%1000,"pad":"xxx…"}`, exactly [`RECORD_BYTES`].
pub fn record(id: u64) -> Vec<u8> {
    let head = format!(r#"{{"id":{id},"qty":{},"pad":""#, id % QTY_MODULUS);
    let mut body = head.into_bytes();
    let pad = RECORD_BYTES.saturating_sub(body.len() + 2);
    body.resize(body.len() + pad, b'x');
    body.extend_from_slice(b"\"}");
    body
}

/// Splits one `sow` frame body (outer header, then per record a header whose `l` is the data
/// length, then the data) into `(record header, data)` pairs.
pub fn parse_sow_frame(frame: &[u8]) -> Result<Vec<(&[u8], &[u8])>> {
    let Some((outer, mut rest)) = amps::split_header(frame) else {
        bail!("sow frame without a header");
    };
    if amps::header_value(outer, "c") != Some(b"sow") {
        bail!("not a sow frame: {}", String::from_utf8_lossy(outer));
    }
    let mut records = Vec::new();
    while !rest.is_empty() {
        let Some((header, after)) = amps::split_header(rest) else {
            bail!("sow frame: record header missing or cut short");
        };
        let length: usize = amps::header_value(header, "l")
            .and_then(|value| std::str::from_utf8(value).ok())
            .and_then(|value| value.parse().ok())
            .with_context(|| {
                format!(
                    "sow record header without a length `l`: {}",
                    String::from_utf8_lossy(header)
                )
            })?;
        if after.len() < length {
            bail!(
                "sow record claims {length} bytes, {} left in the frame",
                after.len()
            );
        }
        records.push((header, &after[..length]));
        rest = &after[length..];
    }
    Ok(records)
}

/// A logged-on connection that loads and queries the SOW.
pub struct SowClient {
    stream: TcpStream,
    reader: FrameReader<TcpStream>,
    next_id: u64,
}

impl SowClient {
    /// Connects and logs on.
    pub fn connect(address: SocketAddr, timeout: Duration) -> Result<Self> {
        let mut stream = amps::connect(address, timeout)?;
        let mut reader = FrameReader::new(stream.try_clone()?);
        amps::logon(&mut stream, &mut reader, "bench-sow", timeout)?;
        Ok(Self {
            stream,
            reader,
            next_id: 0,
        })
    }

    /// Publishes records `0..count` (no acks asked; the query afterwards confirms them).
    pub fn load(&mut self, count: u64) -> Result<()> {
        let header = format!(r#"{{"c":"p","t":"{SOW_TOPIC}"}}"#);
        let mut writer = BufWriter::with_capacity(256 * 1024, &self.stream);
        for id in 0..count {
            writer
                .write_all(&amps::encode_frame(header.as_bytes(), &record(id)))
                .context("publishing SOW records")?;
        }
        writer.flush().context("publishing SOW records")?;
        Ok(())
    }

    /// Runs one `sow` query and returns the records it delivered once its `completed` ack
    /// arrived (after `group_end`).
    pub fn query(&mut self, filter: Option<&str>) -> Result<u64> {
        self.next_id += 1;
        let id = format!("q{}", self.next_id);
        let filter = filter
            .map(|filter| format!(r#","filter":"{filter}""#))
            .unwrap_or_default();
        let header = format!(
            r#"{{"c":"sow","t":"{SOW_TOPIC}","cid":"{id}","query_id":"{id}","a":"processed,completed","batch_size":{BATCH_SIZE}{filter}}}"#
        );
        self.send(&header)?;
        self.read_until(&id, Until::Completed)
    }

    /// Sends `sow_and_subscribe`, returns the records of its snapshot once `group_end` arrived
    /// and the elapsed time to it, then unsubscribes (not part of the time).
    pub fn sow_and_subscribe(&mut self, filter: &str) -> Result<(u64, Duration)> {
        self.next_id += 1;
        let id = format!("s{}", self.next_id);
        let header = format!(
            r#"{{"c":"sow_and_subscribe","t":"{SOW_TOPIC}","cid":"{id}","sub_id":"{id}","query_id":"{id}","a":"processed","batch_size":{BATCH_SIZE},"filter":"{filter}"}}"#
        );
        let started = Instant::now();
        self.send(&header)?;
        let records = self.read_until(&id, Until::GroupEnd)?;
        let elapsed = started.elapsed();
        let unsubscribe_id = format!("u{}", self.next_id);
        let unsubscribe = format!(
            r#"{{"c":"unsubscribe","cid":"{unsubscribe_id}","sub_id":"{id}","a":"processed"}}"#
        );
        amps::command_and_wait_ack(
            &mut self.stream,
            &mut self.reader,
            &unsubscribe,
            &unsubscribe_id,
            QUERY_TIMEOUT,
        )?;
        Ok((records, elapsed))
    }

    fn send(&mut self, header: &str) -> Result<()> {
        self.stream
            .write_all(&amps::encode_frame(header.as_bytes(), b""))
            .context("sending a SOW command")
    }

    /// Reads frames of query `id`, counting records, until `until`; fails on a failure ack.
    fn read_until(&mut self, id: &str, until: Until) -> Result<u64> {
        let deadline = Instant::now() + QUERY_TIMEOUT;
        let mut records = 0u64;
        let mut group_ended = false;
        loop {
            let frame = match self.reader.next_frame().context("reading a SOW reply")? {
                Received::Message(frame) => frame,
                Received::Idle if Instant::now() < deadline => continue,
                Received::Idle => bail!("query {id}: no end within {QUERY_TIMEOUT:?}"),
                Received::Closed => bail!("query {id}: the server closed the connection"),
            };
            let Some((header, _)) = amps::split_header(frame) else {
                continue;
            };
            let id = id.as_bytes();
            match amps::header_value(header, "c") {
                Some(b"sow") if amps::header_value(header, "query_id") == Some(id) => {
                    records += parse_sow_frame(frame)?.len() as u64;
                }
                Some(b"group_end") if amps::header_value(header, "query_id") == Some(id) => {
                    group_ended = true;
                    if until == Until::GroupEnd {
                        return Ok(records);
                    }
                }
                Some(b"ack") if amps::header_value(header, "cid") == Some(id) => {
                    if amps::header_value(header, "status") == Some(b"failure") {
                        bail!(
                            "server refused the query: {}",
                            String::from_utf8_lossy(header)
                        );
                    }
                    if amps::header_value(header, "a") == Some(b"completed") {
                        if !group_ended {
                            bail!("completed ack before group_end");
                        }
                        return Ok(records);
                    }
                }
                _ => {}
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Until {
    Completed,
    GroupEnd,
}

/// Loads the records into the server at `address`, then measures every case.
pub fn run(address: SocketAddr, plan: &SowPlan) -> Result<Vec<SowResult>> {
    let plan = plan.clone();
    std::thread::Builder::new()
        .name("bench-sow".into())
        .spawn(move || {
            if let Some(id) = plan.client_core {
                core_affinity::set_for_current(core_affinity::CoreId { id });
            }
            run_here(address, &plan)
        })?
        .join()
        .map_err(|_| anyhow::anyhow!("the SOW query thread panicked"))?
}

fn run_here(address: SocketAddr, plan: &SowPlan) -> Result<Vec<SowResult>> {
    let mut client = SowClient::connect(address, Duration::from_secs(5))?;
    client.load(RECORDS)?;
    let deadline = Instant::now() + QUERY_TIMEOUT;
    loop {
        let found = client.query(None)?;
        if found == RECORDS {
            break;
        }
        if Instant::now() >= deadline {
            bail!("the SOW holds {found} of {RECORDS} records after {QUERY_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let filtered = format!("/qty < {FILTER_QTY_BELOW}");
    let filtered_expected = RECORDS / QTY_MODULUS * FILTER_QTY_BELOW;
    let mut results = Vec::new();
    let mut key = 0u64;
    results.push(measure(
        plan,
        "key-lookup",
        &format!("{SOW_KEY_FIELD} = <0..{}>", RECORDS - 1),
        "completed",
        1,
        || {
            key = (key + 7_919) % RECORDS;
            let started = Instant::now();
            let found = client.query(Some(&format!("{SOW_KEY_FIELD} = {key}")))?;
            Ok((found, started.elapsed()))
        },
    )?);
    results.push(measure(
        plan,
        "filter-2pct",
        &filtered,
        "completed",
        filtered_expected,
        || {
            let started = Instant::now();
            let found = client.query(Some(&filtered))?;
            Ok((found, started.elapsed()))
        },
    )?);
    results.push(measure(
        plan,
        "full-scan",
        "(none)",
        "completed",
        RECORDS,
        || {
            let started = Instant::now();
            let found = client.query(None)?;
            Ok((found, started.elapsed()))
        },
    )?);
    results.push(measure(
        plan,
        "sow-and-subscribe",
        &filtered,
        "group_end",
        filtered_expected,
        || client.sow_and_subscribe(&filtered),
    )?);
    Ok(results)
}

/// Warms up, then runs `once` back to back for the plan's duration (at least once).
fn measure(
    plan: &SowPlan,
    case: &str,
    filter: &str,
    until: &'static str,
    expected: u64,
    mut once: impl FnMut() -> Result<(u64, Duration)>,
) -> Result<SowResult> {
    let check = |found: u64| -> Result<()> {
        if found != expected {
            bail!("{case}: a query returned {found} records, expected {expected}");
        }
        Ok(())
    };
    let warmup_end = Instant::now() + plan.warmup;
    while Instant::now() < warmup_end {
        check(once()?.0)?;
    }
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    let started = Instant::now();
    let mut queries = 0u64;
    while queries == 0 || started.elapsed() < plan.duration {
        let (found, elapsed) = once()?;
        check(found)?;
        histogram.saturating_record(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
        queries += 1;
    }
    let seconds = started.elapsed().as_secs_f64();
    let us = |ns: u64| ns as f64 / 1_000.0;
    Ok(SowResult {
        case: case.to_owned(),
        filter: filter.to_owned(),
        until,
        queries,
        records_per_query: expected,
        p50_us: us(histogram.value_at_quantile(0.50)),
        p90_us: us(histogram.value_at_quantile(0.90)),
        p99_us: us(histogram.value_at_quantile(0.99)),
        max_us: us(histogram.max()),
        mean_us: histogram.mean() / 1_000.0,
        queries_per_second: queries as f64 / seconds,
        records_per_second: (queries * expected) as f64 / seconds,
    })
}

/// The table printed after the run.
pub fn table(results: &[SowResult]) -> String {
    let mut out = String::from(
        "sow-query (tachyon, 10,000 × 1 KiB records, closed loop, one query at a time; µs):\n",
    );
    out.push_str(&format!(
        "{:<18} {:<16} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9} {:>10} {:>12}\n",
        "case",
        "filter",
        "records",
        "queries",
        "p50",
        "p90",
        "p99",
        "max",
        "queries/s",
        "records/s"
    ));
    for result in results {
        out.push_str(&format!(
            "{:<18} {:<16} {:>8} {:>8} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>10.0} {:>12.0}\n",
            result.case,
            result.filter,
            result.records_per_query,
            result.queries,
            result.p50_us,
            result.p90_us,
            result.p99_us,
            result.max_us,
            result.queries_per_second,
            result.records_per_second
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_json_of_the_exact_size() {
        for id in [0, 1_234, RECORDS - 1] {
            let data = record(id);
            assert_eq!(data.len(), RECORD_BYTES);
            let value: serde_json::Value = serde_json::from_slice(&data).unwrap();
            assert_eq!(value["id"], id);
            assert_eq!(value["qty"], id % QTY_MODULUS);
        }
    }

    #[test]
    fn sow_frame_parser_splits_records_by_length() {
        // Data holding `}` and `{` must not confuse it: only `l` decides where a record ends.
        let first = br#"{"id":2,"qty":4,"s":"}{"}"#;
        let second = br#"{"id":3,"qty":6}"#;
        let mut frame = br#"{"c":"sow","t":"orders","query_id":"q1","bs":2}"#.to_vec();
        frame.extend_from_slice(
            format!(r#"{{"k":"268966","l":{},"bm":"1|2|"}}"#, first.len()).as_bytes(),
        );
        frame.extend_from_slice(first);
        frame.extend_from_slice(format!(r#"{{"k":"422026","l":{}}}"#, second.len()).as_bytes());
        frame.extend_from_slice(second);
        let records = parse_sow_frame(&frame).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].1, first);
        assert_eq!(amps::header_value(records[0].0, "k"), Some(&b"268966"[..]));
        assert_eq!(records[1].1, second);
        assert_eq!(amps::header_value(records[1].0, "k"), Some(&b"422026"[..]));
    }

    #[test]
    fn sow_frame_parser_rejects_bad_frames() {
        assert!(parse_sow_frame(br#"{"c":"sow","bs":0}"#)
            .unwrap()
            .is_empty());
        assert!(parse_sow_frame(br#"{"c":"p"}{"l":1}x"#).is_err());
        assert!(parse_sow_frame(br#"{"c":"sow"}{"k":"1"}x"#).is_err());
        assert!(parse_sow_frame(br#"{"c":"sow"}{"l":5}xy"#).is_err());
    }

    /// End to end against the release server; skipped when it is not built.
    #[test]
    fn measures_every_case_against_the_real_server() {
        let binary =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/tachyon");
        if !binary.is_file() {
            eprintln!("skipped: {} is not built", binary.display());
            return;
        }
        let options = crate::systems::SystemOptions {
            tachyon_binary: binary,
            nats_binary: "nats-server".into(),
            relay_binary: None,
            server_core: None,
            journal_dir: "unused".into(),
        };
        let params = crate::systems::ServerParams {
            sow_topic: Some(SOW_TOPIC),
            ..crate::systems::ServerParams::default()
        };
        let running =
            crate::systems::start_with(crate::systems::SystemKind::Tachyon, &options, &params)
                .unwrap();
        let plan = SowPlan {
            warmup: Duration::ZERO,
            duration: Duration::from_millis(50),
            client_core: None,
        };
        let results = run(running.endpoint.publish_address, &plan).unwrap();
        running.stop().unwrap();
        let cases: Vec<(&str, u64)> = results
            .iter()
            .map(|result| (result.case.as_str(), result.records_per_query))
            .collect();
        assert_eq!(
            cases,
            [
                ("key-lookup", 1),
                ("filter-2pct", 200),
                ("full-scan", RECORDS),
                ("sow-and-subscribe", 200)
            ]
        );
        assert!(results.iter().all(|result| result.queries >= 1));
        assert!(table(&results).contains("full-scan"));
    }
}
