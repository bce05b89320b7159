//! The persisted-ack probe: how long Tachyon takes to say that a published message is durable.
//!
//! Each of the `--publishers` connections logs on with a client name new to this run (so the
//! server's duplicate table, keyed by client name and sequence, never discards a message) and
//! sends, open loop,
//!
//! ```text
//! {"c":"p","t":"<topic>","a":"persisted","s":<k>}<payload>      k = 1, 2, 3, ... per connection
//! ```
//!
//! The schedule is `load.rs`'s: message `g` of the run is due at `start + ⌊g / burst⌋ · burst /
//! rate`, and publisher `p` of N sends the messages `g ≡ p (mod N)`, so its k-th message is
//! `g = p + (k − 1) · N`. The server answers with conflated acks
//! `{"c":"ack","a":"persisted","s":K,"status":"success"}`, each meaning that every message of
//! that connection with `s ≤ K` is durable (protocol reference §8, §10). A second thread per
//! connection reads them; the latency of message k is the arrival of the first success ack with
//! `s ≥ k` minus k's *scheduled* send time, so it is coordinated-omission correct: a publisher
//! that fell behind or blocked on a full socket charges the delay to every late message.
//!
//! There are no subscribers. Every message must be covered by a success ack before the drain
//! timeout after the last send; a failure ack, an ack naming a sequence never sent, or a message
//! left unacknowledged is an error of the run: kept with its figures, counted, and never dropped.
//! This module speaks only the wire protocol; it never looks at the server's files.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use hdrhistogram::Histogram;

use crate::amps::{self, FrameReader, Received};
use crate::load::{self, LoadConfig, LoadResult, Pace};
use crate::payload::{self, Layout};
use crate::systems::{Endpoint, Protocol};

/// The topic in Tachyon's transaction log (`[journal] topics`).
pub const JOURNALED_TOPIC: &str = "bench.persisted";
/// A topic outside the transaction log on the same server: Tachyon acks it as persisted right
/// after routing, which is the reference that shows what durability adds.
pub const UNJOURNALED_TOPIC: &str = "bench.unjournaled";
/// Failure reasons quoted in an error (the count covers the rest).
const FAILURE_REASONS_QUOTED_MAX: usize = 3;
/// Bytes of a publish header with the longest topic and a 20-digit sequence, rounded up.
const PUBLISH_HEADER_BYTES_MAX: usize = 128;

/// One persisted ack, as far as this probe reads it.
#[derive(Debug, PartialEq, Eq)]
enum Ack<'a> {
    /// `status` success (or absent, which AMPS clients treat as success), covering `s ≤ sequence`.
    Success { sequence: u64 },
    /// `status` failure for `s ≤ sequence` (not yet covered), with the server's reason.
    Failure { sequence: u64, reason: &'a [u8] },
    /// A persisted ack without a readable `s`: it acknowledges nothing.
    WithoutSequence,
    /// Any other frame (another ack type, a delivery): not expected on this connection.
    Other,
}

/// Reads a frame as a persisted ack.
fn parse_ack(frame: &[u8]) -> Ack<'_> {
    let Some((header, _)) = amps::split_header(frame) else {
        return Ack::Other;
    };
    if amps::header_value(header, "c") != Some(b"ack")
        || amps::header_value(header, "a") != Some(b"persisted")
    {
        return Ack::Other;
    }
    let Some(sequence) = amps::header_value(header, "s")
        .and_then(|value| std::str::from_utf8(value).ok())
        .and_then(|text| text.parse::<u64>().ok())
    else {
        return Ack::WithoutSequence;
    };
    match amps::header_value(header, "status") {
        Some(b"failure") => Ack::Failure {
            sequence,
            reason: amps::header_value(header, "reason").unwrap_or(b"(no reason given)"),
        },
        _ => Ack::Success { sequence },
    }
}

/// Writes one length-prefixed publish frame asking for a persisted ack into `frame` (cleared
/// first; its capacity is reused, so nothing is allocated per message).
fn encode_publish(frame: &mut Vec<u8>, topic: &str, sequence: u64, payload: &[u8]) {
    frame.clear();
    frame.extend_from_slice(&[0; 4]);
    write!(
        frame,
        r#"{{"c":"p","t":"{topic}","a":"persisted","s":{sequence}}}"#
    )
    .expect("writing to a Vec cannot fail");
    frame.extend_from_slice(payload);
    let length = u32::try_from(frame.len() - 4).expect("frame fits in u32");
    frame[..4].copy_from_slice(&length.to_be_bytes());
}

/// How many of the run's messages publisher `index` of `publishers` sends.
fn messages_of(total: u64, publishers: u64, index: u64) -> u64 {
    if index >= total {
        0
    } else {
        (total - index).div_ceil(publishers)
    }
}

/// What one publisher's two threads share.
struct Progress {
    /// Sequence of the last message written (= messages written; sequences start at 1).
    sent: AtomicU64,
    /// The publisher has written everything it will write.
    done: AtomicBool,
}

/// What a publisher thread hands back.
struct PublisherOutcome {
    sent: u64,
    sent_measured: u64,
    bytes_written: u64,
    first_measured_send: Option<Instant>,
    last_send: Option<Instant>,
    send_lag_ns_max: u64,
    error: Option<String>,
    pinned: bool,
    /// Kept open until the ack reader is done, so closing it cannot race the last acks.
    _stream: TcpStream,
}

/// What an ack-reader thread hands back.
struct AckOutcome {
    histogram: Histogram<u64>,
    /// Highest sequence covered by any ack (success or failure).
    covered: u64,
    /// Messages covered by success acks.
    acknowledged: u64,
    /// Messages covered by failure acks, and the first reasons given.
    failed: u64,
    failure_reasons: Vec<String>,
    /// Acks whose sequence was not above every earlier one (nothing new acknowledged).
    stale_acks: u64,
    /// Acks naming a sequence this publisher never sends.
    beyond_sent_acks: u64,
    /// Persisted acks without `s`, and frames that were not persisted acks.
    unreadable_frames: u64,
    bytes_received: u64,
    first_measured_ack: Option<Instant>,
    last_ack: Option<Instant>,
    error: Option<String>,
    pinned: bool,
}

/// Runs one persisted-ack measurement on `topic` against a started Tachyon.
pub fn run(endpoint: &Endpoint, config: &LoadConfig, topic: &str) -> Result<LoadResult> {
    if endpoint.protocol != Protocol::Amps {
        bail!("persisted acks need an AMPS server (Tachyon); the relay and NATS have none");
    }
    if config.pace != Pace::Open || config.rate_per_second == 0 {
        bail!("the persisted-ack probe runs open loop at a positive rate");
    }
    if config.publishers == 0 {
        bail!("at least one publisher is needed");
    }
    if config.payload_size_bytes < payload::PAYLOAD_SIZE_MIN_BYTES {
        bail!(
            "payload size {} is below the minimum {} (the stamp needs that much)",
            config.payload_size_bytes,
            payload::PAYLOAD_SIZE_MIN_BYTES
        );
    }
    // A client name no earlier run used: the server drops a (name, sequence) it has seen.
    let run_id = unique_suffix();
    let mut connections = Vec::with_capacity(config.publishers);
    for index in 0..config.publishers {
        let name = format!("bench-persist-{}-{run_id}-{index}", std::process::id());
        let mut stream = amps::connect(endpoint.publish_address, load::HANDSHAKE_TIMEOUT)
            .with_context(|| format!("connecting publisher {index}"))?;
        let mut reader = FrameReader::new(stream.try_clone()?);
        amps::logon(&mut stream, &mut reader, &name, load::HANDSHAKE_TIMEOUT)
            .with_context(|| format!("logging on publisher {index}"))?;
        connections.push((stream, reader));
    }
    let start = Instant::now() + load::START_DELAY;
    let mut threads = Vec::with_capacity(config.publishers);
    for (index, (stream, reader)) in connections.into_iter().enumerate() {
        let progress = Arc::new(Progress {
            sent: AtomicU64::new(0),
            done: AtomicBool::new(false),
        });
        let ack_thread = thread::Builder::new()
            .name(format!("bench-acks-{index}"))
            .spawn({
                let config = config.clone();
                let progress = Arc::clone(&progress);
                move || ack_loop(reader, &config, start, index, &progress)
            })?;
        let publish_thread = thread::Builder::new()
            .name(format!("bench-pub-{index}"))
            .spawn({
                let config = config.clone();
                let topic = topic.to_owned();
                move || publish_loop(stream, &topic, &config, start, index, &progress)
            })?;
        threads.push((publish_thread, ack_thread));
    }
    let mut outcomes = Vec::with_capacity(threads.len());
    for (publish_thread, ack_thread) in threads {
        let published = publish_thread
            .join()
            .map_err(|_| anyhow!("a publisher thread panicked"))?;
        let acked = ack_thread
            .join()
            .map_err(|_| anyhow!("an ack reader thread panicked"))?;
        outcomes.push((published, acked));
    }
    Ok(summarise(config, &outcomes))
}

/// Publishes one message on `topic` under a throwaway client name and waits for its persisted
/// ack, so that a journaled server has started its first segment (and begun refilling the spare
/// it took) before anything is timed.
pub fn prime(address: SocketAddr, topic: &str, timeout: Duration) -> Result<()> {
    let mut stream = amps::connect(address, timeout)?;
    let mut reader = FrameReader::new(stream.try_clone()?);
    let name = format!(
        "bench-persist-primer-{}-{}",
        std::process::id(),
        unique_suffix()
    );
    amps::logon(&mut stream, &mut reader, &name, timeout)?;
    let mut frame = Vec::new();
    let payload = payload::template_for(Layout::Plain, payload::PAYLOAD_SIZE_MIN_BYTES);
    encode_publish(&mut frame, topic, 1, &payload);
    stream
        .write_all(&frame)
        .context("sending the priming publish")?;
    let deadline = Instant::now() + timeout;
    loop {
        match reader.next_frame().context("reading the priming ack")? {
            Received::Message(frame) => match parse_ack(frame) {
                Ack::Success { .. } => return Ok(()),
                Ack::Failure { reason, .. } => bail!(
                    "the server refused the priming publish on {topic}: {}",
                    String::from_utf8_lossy(reason)
                ),
                Ack::WithoutSequence | Ack::Other => {}
            },
            Received::Idle if Instant::now() < deadline => {}
            Received::Idle => bail!("no persisted ack for the priming publish within {timeout:?}"),
            Received::Closed => bail!("the server closed the connection instead of acking"),
        }
    }
}

/// A number no earlier run of this process or of an earlier process used, for client names.
fn unique_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos())
}

/// Publisher `index`: sends its share of the messages open loop, each asking for a persisted ack.
fn publish_loop(
    stream: TcpStream,
    topic: &str,
    config: &LoadConfig,
    start: Instant,
    index: usize,
    progress: &Progress,
) -> PublisherOutcome {
    let pinned = load::pin_current_thread(config.publisher_core);
    let warmup_ns = config.warmup_ns();
    let publishers = config.publishers as u64;
    let total = config.total_messages();
    let mut payload = payload::template_for(Layout::Plain, config.payload_size_bytes);
    let mut frame = Vec::with_capacity(PUBLISH_HEADER_BYTES_MAX + topic.len() + payload.len());
    let mut outcome = PublisherOutcome {
        sent: 0,
        sent_measured: 0,
        bytes_written: 0,
        first_measured_send: None,
        last_send: None,
        send_lag_ns_max: 0,
        error: None,
        pinned,
        _stream: stream,
    };
    let stream = &mut outcome._stream;
    let mut g = index as u64;
    while g < total {
        let scheduled_ns = config.scheduled_ns(g);
        let scheduled = start + Duration::from_nanos(scheduled_ns);
        let now = load::wait_until(scheduled);
        let sequence = outcome.sent + 1;
        payload::stamp(&mut payload, sequence, scheduled_ns);
        encode_publish(&mut frame, topic, sequence, &payload);
        if let Err(failure) = stream.write_all(&frame) {
            outcome.error = Some(failure.to_string());
            break;
        }
        progress.sent.store(sequence, Ordering::Release);
        outcome.sent = sequence;
        outcome.bytes_written += frame.len() as u64;
        if scheduled_ns >= warmup_ns {
            outcome.sent_measured += 1;
            outcome.send_lag_ns_max = outcome
                .send_lag_ns_max
                .max((now - scheduled).as_nanos() as u64);
            outcome.first_measured_send.get_or_insert(now);
        }
        outcome.last_send = Some(now);
        g += publishers;
    }
    progress.done.store(true, Ordering::Release);
    outcome
}

/// Reads publisher `index`'s persisted acks until every message it sent is covered, or the drain
/// timeout has passed after its last send.
fn ack_loop(
    mut reader: FrameReader<TcpStream>,
    config: &LoadConfig,
    start: Instant,
    index: usize,
    progress: &Progress,
) -> AckOutcome {
    let pinned = load::pin_current_thread(config.subscriber_core);
    let warmup_ns = config.warmup_ns();
    let publishers = config.publishers as u64;
    let total = messages_of(config.total_messages(), publishers, index as u64);
    let mut outcome = AckOutcome {
        histogram: Histogram::<u64>::new_with_bounds(
            1,
            load::LATENCY_NS_MAX,
            load::HISTOGRAM_SIGNIFICANT_DIGITS,
        )
        .expect("valid histogram bounds"),
        covered: 0,
        acknowledged: 0,
        failed: 0,
        failure_reasons: Vec::new(),
        stale_acks: 0,
        beyond_sent_acks: 0,
        unreadable_frames: 0,
        bytes_received: 0,
        first_measured_ack: None,
        last_ack: None,
        error: None,
        pinned,
    };
    let mut drain_deadline: Option<Instant> = None;
    loop {
        match reader.next_frame() {
            Ok(Received::Message(frame)) => {
                // Read the clock first: everything after this is the benchmark's own work.
                let now = Instant::now();
                let received_ns = now.saturating_duration_since(start).as_nanos() as u64;
                match parse_ack(frame) {
                    Ack::Success { sequence } | Ack::Failure { sequence, .. }
                        if sequence > total =>
                    {
                        outcome.beyond_sent_acks += 1;
                    }
                    Ack::Success { sequence } | Ack::Failure { sequence, .. }
                        if sequence <= outcome.covered =>
                    {
                        outcome.stale_acks += 1;
                    }
                    Ack::Success { sequence } => {
                        for k in outcome.covered + 1..=sequence {
                            let scheduled_ns =
                                config.scheduled_ns(index as u64 + (k - 1) * publishers);
                            if scheduled_ns >= warmup_ns {
                                outcome.histogram.saturating_record(
                                    received_ns.saturating_sub(scheduled_ns).max(1),
                                );
                                outcome.first_measured_ack.get_or_insert(now);
                                outcome.last_ack = Some(now);
                            }
                        }
                        outcome.acknowledged += sequence - outcome.covered;
                        outcome.covered = sequence;
                    }
                    Ack::Failure { sequence, reason } => {
                        outcome.failed += sequence - outcome.covered;
                        outcome.covered = sequence;
                        if outcome.failure_reasons.len() < FAILURE_REASONS_QUOTED_MAX {
                            outcome.failure_reasons.push(format!(
                                "s ≤ {sequence}: {}",
                                String::from_utf8_lossy(reason)
                            ));
                        }
                    }
                    Ack::WithoutSequence | Ack::Other => outcome.unreadable_frames += 1,
                }
            }
            Ok(Received::Idle) => {}
            Ok(Received::Closed) => {
                outcome.error = Some("the server closed the connection".to_owned());
                break;
            }
            Err(failure) => {
                outcome.error = Some(failure.to_string());
                break;
            }
        }
        if outcome.covered >= total {
            break;
        }
        if progress.done.load(Ordering::Acquire) {
            if outcome.covered >= progress.sent.load(Ordering::Acquire) {
                break;
            }
            let deadline =
                *drain_deadline.get_or_insert_with(|| Instant::now() + config.drain_timeout);
            if Instant::now() >= deadline {
                break;
            }
        }
    }
    outcome.bytes_received = reader.bytes_read();
    outcome
}

/// Folds every publisher's two outcomes into one result; broken promises go to `errors`.
fn summarise(config: &LoadConfig, outcomes: &[(PublisherOutcome, AckOutcome)]) -> LoadResult {
    let mut problems = Vec::new();
    let mut errors = Vec::new();
    let mut histogram = Histogram::<u64>::new_with_bounds(
        1,
        load::LATENCY_NS_MAX,
        load::HISTOGRAM_SIGNIFICANT_DIGITS,
    )
    .expect("valid histogram bounds");
    let (mut sent, mut sent_measured, mut bytes_written) = (0u64, 0u64, 0u64);
    let (mut acknowledged, mut missing) = (0u64, 0u64);
    let (mut stale, mut unreadable, mut bytes_received) = (0u64, 0u64, 0u64);
    for (index, (published, acked)) in outcomes.iter().enumerate() {
        histogram
            .add(&acked.histogram)
            .expect("histograms with equal bounds add");
        sent += published.sent;
        sent_measured += published.sent_measured;
        bytes_written += published.bytes_written;
        acknowledged += acked.acknowledged;
        missing += published.sent.saturating_sub(acked.covered);
        stale += acked.stale_acks;
        unreadable += acked.unreadable_frames;
        bytes_received += acked.bytes_received;
        if let Some(error) = &published.error {
            errors.push(format!("publisher {index} stopped early: {error}"));
        }
        if let Some(error) = &acked.error {
            errors.push(format!("publisher {index}'s acks stopped early: {error}"));
        }
        if acked.failed > 0 {
            errors.push(format!(
                "publisher {index}: {} messages got a failure persisted ack ({})",
                acked.failed,
                acked.failure_reasons.join("; ")
            ));
        }
        if acked.beyond_sent_acks > 0 {
            errors.push(format!(
                "publisher {index}: {} persisted acks named a sequence it never sends",
                acked.beyond_sent_acks
            ));
        }
        for (what, pinned, core) in [
            ("publisher", published.pinned, config.publisher_core),
            ("ack reader", acked.pinned, config.subscriber_core),
        ] {
            if !pinned {
                problems.push(format!("could not pin {what} {index} to core {core:?}"));
            }
        }
    }
    if missing > 0 {
        errors.push(format!(
            "{missing} of {sent} messages were never acknowledged as persisted within {:?} after \
             the last send",
            config.drain_timeout
        ));
    }
    if stale > 0 {
        problems.push(format!(
            "{stale} persisted acks repeated or went below an earlier sequence"
        ));
    }
    if unreadable > 0 {
        problems.push(format!(
            "{unreadable} frames were not persisted acks with a sequence"
        ));
    }
    let span = |first: Option<Instant>, last: Option<Instant>| match (first, last) {
        (Some(first), Some(last)) if last > first => Some((last - first).as_secs_f64()),
        _ => None,
    };
    let first_send = outcomes
        .iter()
        .filter_map(|(p, _)| p.first_measured_send)
        .min();
    let last_send = outcomes.iter().filter_map(|(p, _)| p.last_send).max();
    let achieved_rate_per_second = match span(first_send, last_send) {
        Some(seconds) if sent_measured > 1 => (sent_measured - 1) as f64 / seconds,
        _ => config.rate_per_second as f64,
    };
    let first_ack = outcomes
        .iter()
        .filter_map(|(_, a)| a.first_measured_ack)
        .min();
    let last_ack = outcomes.iter().filter_map(|(_, a)| a.last_ack).max();
    let delivered_per_second = match span(first_ack, last_ack) {
        Some(seconds) if histogram.len() > 1 => (histogram.len() - 1) as f64 / seconds,
        _ => 0.0,
    };
    let per_message = |bytes: u64, messages: u64| {
        if messages > 0 {
            bytes as f64 / messages as f64
        } else {
            0.0
        }
    };
    LoadResult {
        histogram,
        sent,
        sent_measured,
        received: acknowledged,
        lost: missing,
        out_of_order: stale,
        corrupt: unreadable,
        achieved_rate_per_second,
        delivered_per_second,
        bytes_in_per_second: achieved_rate_per_second * per_message(bytes_written, sent),
        bytes_out_per_second: delivered_per_second * per_message(bytes_received, acknowledged),
        send_lag_ns_max: outcomes
            .iter()
            .map(|(published, _)| published.send_lag_ns_max)
            .max()
            .unwrap_or(0),
        slow: None,
        // The ack streams together are one "receiver" for the fell-behind check.
        healthy_subscribers: 1,
        problems,
        errors,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_amps::{FakeAmps, FakeOptions};

    fn small_config() -> LoadConfig {
        // 1,000 messages at 5k/s, 200 of them warm-up.
        LoadConfig {
            rate_per_second: 5_000,
            payload_size_bytes: 1024,
            warmup: Duration::from_millis(40),
            duration: Duration::from_millis(160),
            drain_timeout: Duration::from_millis(500),
            subscribers: 0,
            ..LoadConfig::default()
        }
    }

    fn endpoint(broker: &FakeAmps) -> Endpoint {
        Endpoint {
            protocol: Protocol::Amps,
            publish_address: broker.address,
            subscribe_address: broker.address,
        }
    }

    #[test]
    fn acks_are_parsed_as_the_reference_writes_them() {
        assert_eq!(
            parse_ack(br#"{"c":"ack","a":"persisted","s":42,"status":"success"}"#),
            Ack::Success { sequence: 42 }
        );
        assert_eq!(
            parse_ack(br#"{"c":"ack","a":"persisted","status":"success","s":"7"}"#),
            Ack::Success { sequence: 7 }
        );
        assert_eq!(
            parse_ack(
                br#"{"c":"ack","a":"persisted","s":3,"status":"failure","reason":"tx store failure"}"#
            ),
            Ack::Failure {
                sequence: 3,
                reason: b"tx store failure"
            }
        );
        assert_eq!(
            parse_ack(br#"{"c":"ack","a":"persisted","status":"success"}"#),
            Ack::WithoutSequence
        );
        assert_eq!(
            parse_ack(br#"{"c":"ack","a":"processed","cid":"1"}"#),
            Ack::Other
        );
    }

    #[test]
    fn publish_frames_carry_the_sequence_and_the_payload() {
        // Sized the way the publisher sizes it: the largest sequence must fit without growing.
        let mut frame = Vec::with_capacity(PUBLISH_HEADER_BYTES_MAX + JOURNALED_TOPIC.len() + 2);
        let capacity = frame.capacity();
        encode_publish(&mut frame, JOURNALED_TOPIC, u64::MAX, b"{}");
        assert_eq!(frame.capacity(), capacity);
        encode_publish(&mut frame, JOURNALED_TOPIC, 12_345, b"{}");
        let length = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(length, frame.len() - 4);
        let (header, payload) = amps::split_header(&frame[4..]).unwrap();
        assert_eq!(
            header,
            br#"{"c":"p","t":"bench.persisted","a":"persisted","s":12345}"#
        );
        assert_eq!(payload, b"{}");
    }

    #[test]
    fn messages_are_shared_among_publishers_like_the_load_generator() {
        assert_eq!(messages_of(1_000, 1, 0), 1_000);
        assert_eq!(
            (0..3)
                .map(|index| messages_of(10, 3, index))
                .collect::<Vec<_>>(),
            [4, 3, 3]
        );
        assert_eq!(messages_of(2, 3, 2), 0);
    }

    #[test]
    fn every_message_acked_one_by_one_is_recorded() {
        let broker = FakeAmps::start();
        let config = small_config();
        let result = run(&endpoint(&broker), &config, JOURNALED_TOPIC).unwrap();
        assert!(result.errors.is_empty(), "{:?}", result.errors);
        assert!(result.problems.is_empty(), "{:?}", result.problems);
        assert_eq!(result.sent, 1_000);
        assert_eq!(result.received, 1_000);
        assert_eq!(result.lost, 0);
        assert_eq!(result.histogram.len(), result.sent_measured);
        assert_eq!(result.sent_measured, 800);
    }

    #[test]
    fn conflated_acks_cover_every_message_up_to_their_sequence() {
        // The fake acks every 10th message of each connection: 1,000 per connection are all
        // covered, each recorded once with the arrival of the ack that covered it.
        let broker = FakeAmps::start_with(FakeOptions {
            persisted_ack_every: 10,
        });
        let config = LoadConfig {
            publishers: 2,
            ..small_config()
        };
        let result = run(&endpoint(&broker), &config, JOURNALED_TOPIC).unwrap();
        assert!(result.errors.is_empty(), "{:?}", result.errors);
        assert_eq!(result.sent, 1_000);
        assert_eq!(result.received, 1_000);
        assert_eq!(result.histogram.len(), 800);
    }

    #[test]
    fn a_missing_ack_at_the_end_is_an_error() {
        // Every 7th: 1,000 = 7 · 142 + 6, so the last six messages are never acknowledged.
        let broker = FakeAmps::start_with(FakeOptions {
            persisted_ack_every: 7,
        });
        let result = run(&endpoint(&broker), &small_config(), JOURNALED_TOPIC).unwrap();
        assert_eq!(result.received, 994);
        assert_eq!(result.lost, 6);
        let errors = result.errors.join("\n");
        assert!(
            errors.contains("6 of 1000 messages were never acknowledged"),
            "{errors}"
        );
    }

    #[test]
    fn a_failure_ack_is_an_error_with_the_reason() {
        let broker = FakeAmps::start();
        let result = run(&endpoint(&broker), &small_config(), "bench.refused").unwrap();
        assert_eq!(result.received, 0);
        assert_eq!(result.lost, 0);
        assert!(result.histogram.is_empty());
        let errors = result.errors.join("\n");
        assert!(
            errors.contains("1000 messages got a failure persisted ack"),
            "{errors}"
        );
        assert!(errors.contains("refused by the fake"), "{errors}");
    }

    #[test]
    fn the_relay_is_refused() {
        let endpoint = Endpoint {
            protocol: Protocol::RawFrames,
            publish_address: "127.0.0.1:9".parse().unwrap(),
            subscribe_address: "127.0.0.1:9".parse().unwrap(),
        };
        let error = run(&endpoint, &small_config(), JOURNALED_TOPIC).unwrap_err();
        assert!(
            format!("{error:#}").contains("persisted acks need"),
            "{error:#}"
        );
    }
}
