//! The open-loop load: one publisher thread sending at a fixed rate, one subscriber thread
//! recording latency into an HdrHistogram.
//!
//! Coordinated-omission correct: message `i` is *scheduled* at `start + i / rate`, and the payload
//! carries that scheduled time, not the moment it was actually written. The publisher never waits
//! for the subscriber or the server; when it falls behind (descheduled, or blocked on a full
//! socket) it sends at once, and the lag shows up in the latency of every delayed message instead
//! of silently lowering the rate. Latency = receive time − scheduled send time, both measured as
//! offsets from one shared `Instant` (CLOCK_MONOTONIC) in this process.
//!
//! Messages scheduled during the warm-up are sent and checked (loss, order) but not recorded.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use hdrhistogram::Histogram;

use crate::amps::{AmpsPublisher, AmpsSubscriber, Received};
use crate::nats::{NatsPublisher, NatsSubscriber};
use crate::payload;
use crate::systems::{Endpoint, Protocol};

/// The topic (AMPS) or subject (NATS) every run publishes on.
pub const TOPIC: &str = "bench";
/// Highest latency the histogram tracks exactly (60 s); anything above is clamped to it.
pub const LATENCY_NS_MAX: u64 = 60_000_000_000;
/// Significant decimal digits kept by the histogram (0.1 % resolution).
pub const HISTOGRAM_SIGNIFICANT_DIGITS: u8 = 3;
/// Time between setting up the threads and the first scheduled send, so both threads are
/// running (and pinned) before the clock starts.
const START_DELAY: Duration = Duration::from_millis(50);
/// Waits longer than this are slept instead of spun (a sleep here costs tens of µs of wake-up
/// latency, so only long gaps, i.e. low rates, use it).
const SLEEP_THRESHOLD: Duration = Duration::from_millis(2);
/// How much earlier than the target a sleep ends, to absorb the wake-up delay.
const SLEEP_MARGIN: Duration = Duration::from_millis(1);
/// How long to connect and complete logon/subscribe.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// One measurement's parameters.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// Messages per second the publisher is scheduled to send.
    pub rate_per_second: u64,
    /// Exact payload size.
    pub payload_size_bytes: usize,
    /// Time sent but not recorded, so connections, caches and the server warm up.
    pub warmup: Duration,
    /// Time recorded.
    pub duration: Duration,
    /// How long the subscriber waits for missing messages after the last send.
    pub drain_timeout: Duration,
    /// Core for the publisher thread; `None` = not pinned.
    pub publisher_core: Option<usize>,
    /// Core for the subscriber thread; `None` = not pinned.
    pub subscriber_core: Option<usize>,
}

impl LoadConfig {
    /// Messages scheduled during the warm-up (sequence numbers below this are not recorded).
    pub fn warmup_messages(&self) -> u64 {
        messages_in(self.rate_per_second, self.warmup)
    }

    /// Messages scheduled in total (warm-up plus measurement).
    pub fn total_messages(&self) -> u64 {
        self.warmup_messages() + messages_in(self.rate_per_second, self.duration)
    }

    /// When message `seq` is scheduled, in ns after the start.
    pub fn scheduled_ns(&self, seq: u64) -> u64 {
        (u128::from(seq) * 1_000_000_000 / u128::from(self.rate_per_second)) as u64
    }
}

fn messages_in(rate_per_second: u64, span: Duration) -> u64 {
    (rate_per_second as f64 * span.as_secs_f64()).round() as u64
}

/// What one measurement produced.
#[derive(Debug)]
pub struct LoadResult {
    /// Latencies (ns) of the in-order messages scheduled after the warm-up.
    pub histogram: Histogram<u64>,
    /// Messages written, warm-up included.
    pub sent: u64,
    /// Messages written after the warm-up.
    pub sent_measured: u64,
    /// Benchmark payloads received, warm-up included (duplicates included).
    pub received: u64,
    /// `sent − received` (0 when duplicates outnumber losses; see `out_of_order`).
    pub lost: u64,
    /// Payloads whose sequence number was not above every earlier one (duplicate or reordered).
    pub out_of_order: u64,
    /// Deliveries that did not decode as a benchmark payload.
    pub corrupt: u64,
    /// Send rate actually achieved over the measurement window.
    pub achieved_rate_per_second: f64,
    /// Largest delay between a message's scheduled and actual send time (publisher lag).
    pub send_lag_ns_max: u64,
    /// Problems that make the result suspect (pinning failed, connection lost, ...).
    pub problems: Vec<String>,
}

/// The publishing side of a connection, whichever protocol it speaks.
enum Sink {
    Amps(AmpsPublisher),
    Nats(NatsPublisher),
}

impl Sink {
    #[inline]
    fn publish(&mut self, seq: u64, scheduled_ns: u64) -> std::io::Result<()> {
        match self {
            Self::Amps(publisher) => publisher.publish(seq, scheduled_ns),
            Self::Nats(publisher) => publisher.publish(seq, scheduled_ns),
        }
    }
}

/// The subscribing side of a connection, whichever protocol it speaks.
enum Source {
    Amps(AmpsSubscriber),
    Nats(NatsSubscriber),
}

impl Source {
    #[inline]
    fn next_payload(&mut self) -> std::io::Result<Received<'_>> {
        match self {
            Self::Amps(subscriber) => subscriber.next_payload(),
            Self::Nats(subscriber) => subscriber.next_payload(),
        }
    }
}

/// Connects the subscriber and makes sure its subscription is live (so no early message is
/// dropped by the server for lack of a subscriber).
fn connect_subscriber(endpoint: &Endpoint) -> Result<Source> {
    let address: SocketAddr = endpoint.subscribe_address;
    Ok(match endpoint.protocol {
        Protocol::Amps => Source::Amps(AmpsSubscriber::subscribe(
            address,
            TOPIC,
            HANDSHAKE_TIMEOUT,
        )?),
        Protocol::RawFrames => Source::Amps(AmpsSubscriber::raw(address, HANDSHAKE_TIMEOUT)?),
        Protocol::Nats => Source::Nats(NatsSubscriber::subscribe(
            address,
            TOPIC,
            HANDSHAKE_TIMEOUT,
        )?),
    })
}

fn connect_publisher(endpoint: &Endpoint, payload_size_bytes: usize) -> Result<Sink> {
    let address = endpoint.publish_address;
    Ok(match endpoint.protocol {
        Protocol::Amps => Sink::Amps(AmpsPublisher::connect(
            address,
            TOPIC,
            payload_size_bytes,
            true,
            HANDSHAKE_TIMEOUT,
        )?),
        Protocol::RawFrames => Sink::Amps(AmpsPublisher::connect(
            address,
            TOPIC,
            payload_size_bytes,
            false,
            HANDSHAKE_TIMEOUT,
        )?),
        Protocol::Nats => Sink::Nats(NatsPublisher::connect(
            address,
            TOPIC,
            payload_size_bytes,
            HANDSHAKE_TIMEOUT,
        )?),
    })
}

/// State the publisher shares with the subscriber so it knows when everything has been sent.
struct Progress {
    publisher_done: AtomicBool,
    sent: AtomicU64,
}

/// What the publisher thread hands back.
struct PublisherOutcome {
    sent: u64,
    first_measured_send: Option<Instant>,
    last_send: Option<Instant>,
    send_lag_ns_max: u64,
    error: Option<String>,
    pinned: bool,
    /// Kept open until the subscriber has drained, so closing it cannot race the last messages.
    _sink: Sink,
}

/// What the subscriber thread hands back.
struct SubscriberOutcome {
    histogram: Histogram<u64>,
    received: u64,
    out_of_order: u64,
    corrupt: u64,
    error: Option<String>,
    pinned: bool,
}

/// Runs one measurement against a started system.
pub fn run(endpoint: &Endpoint, config: &LoadConfig) -> Result<LoadResult> {
    assert!(config.rate_per_second > 0, "rate must be positive");
    if config.payload_size_bytes < payload::PAYLOAD_SIZE_MIN_BYTES {
        anyhow::bail!(
            "payload size {} is below the minimum {} (the stamp needs that much)",
            config.payload_size_bytes,
            payload::PAYLOAD_SIZE_MIN_BYTES
        );
    }
    // Subscriber first: its subscription must be live before the first publish.
    let source = connect_subscriber(endpoint).context("connecting the subscriber")?;
    let sink = connect_publisher(endpoint, config.payload_size_bytes)
        .context("connecting the publisher")?;
    let progress = Arc::new(Progress {
        publisher_done: AtomicBool::new(false),
        sent: AtomicU64::new(0),
    });
    let start = Instant::now() + START_DELAY;

    let subscriber = thread::Builder::new().name("bench-sub".into()).spawn({
        let progress = Arc::clone(&progress);
        let config = config.clone();
        move || subscribe_loop(source, &config, start, &progress)
    })?;
    let publisher = thread::Builder::new().name("bench-pub".into()).spawn({
        let progress = Arc::clone(&progress);
        let config = config.clone();
        move || publish_loop(sink, &config, start, &progress)
    })?;
    let published = publisher
        .join()
        .map_err(|_| anyhow!("the publisher thread panicked"))?;
    let subscribed = subscriber
        .join()
        .map_err(|_| anyhow!("the subscriber thread panicked"))?;
    drop(published._sink);

    let warmup_messages = config.warmup_messages();
    let sent_measured = published.sent.saturating_sub(warmup_messages);
    let achieved_rate_per_second = match (published.first_measured_send, published.last_send) {
        (Some(first), Some(last)) if sent_measured > 1 && last > first => {
            (sent_measured - 1) as f64 / (last - first).as_secs_f64()
        }
        _ => config.rate_per_second as f64,
    };
    let mut problems = Vec::new();
    if let Some(error) = published.error {
        problems.push(format!("publisher stopped early: {error}"));
    }
    if let Some(error) = subscribed.error {
        problems.push(format!("subscriber stopped early: {error}"));
    }
    if !published.pinned {
        problems.push(format!(
            "could not pin the publisher to core {:?}",
            config.publisher_core
        ));
    }
    if !subscribed.pinned {
        problems.push(format!(
            "could not pin the subscriber to core {:?}",
            config.subscriber_core
        ));
    }
    Ok(LoadResult {
        histogram: subscribed.histogram,
        sent: published.sent,
        sent_measured,
        received: subscribed.received,
        lost: published.sent.saturating_sub(subscribed.received),
        out_of_order: subscribed.out_of_order,
        corrupt: subscribed.corrupt,
        achieved_rate_per_second,
        send_lag_ns_max: published.send_lag_ns_max,
        problems,
    })
}

/// Pins the calling thread when a core is given; true when no pinning was asked for or it worked.
fn pin_current_thread(core: Option<usize>) -> bool {
    core.is_none_or(|id| core_affinity::set_for_current(core_affinity::CoreId { id }))
}

/// Sends every scheduled message at (or, when late, right after) its scheduled time.
fn publish_loop(
    mut sink: Sink,
    config: &LoadConfig,
    start: Instant,
    progress: &Progress,
) -> PublisherOutcome {
    let pinned = pin_current_thread(config.publisher_core);
    let warmup_messages = config.warmup_messages();
    let total_messages = config.total_messages();
    let mut outcome_sent = 0;
    let mut first_measured_send = None;
    let mut last_send = None;
    let mut send_lag_ns_max = 0;
    let mut error = None;
    for seq in 0..total_messages {
        let scheduled_ns = config.scheduled_ns(seq);
        let scheduled = start + Duration::from_nanos(scheduled_ns);
        let now = wait_until(scheduled);
        if let Err(failure) = sink.publish(seq, scheduled_ns) {
            error = Some(failure.to_string());
            break;
        }
        outcome_sent = seq + 1;
        if seq >= warmup_messages {
            send_lag_ns_max = send_lag_ns_max.max((now - scheduled).as_nanos() as u64);
            first_measured_send.get_or_insert(now);
        }
        last_send = Some(now);
    }
    progress.sent.store(outcome_sent, Ordering::Release);
    progress.publisher_done.store(true, Ordering::Release);
    PublisherOutcome {
        sent: outcome_sent,
        first_measured_send,
        last_send,
        send_lag_ns_max,
        error,
        pinned,
        _sink: sink,
    }
}

/// Waits until `target` and returns the time it actually got there.
///
/// Short waits spin with `yield_now`: on this rig the publisher shares its core with the
/// subscriber, and yielding lets a just-woken subscriber run at once instead of waiting for the
/// publisher's time slice to end. Long waits (low rates) sleep most of the gap.
#[inline]
fn wait_until(target: Instant) -> Instant {
    loop {
        let now = Instant::now();
        if now >= target {
            return now;
        }
        let remaining = target - now;
        if remaining > SLEEP_THRESHOLD {
            thread::sleep(remaining - SLEEP_MARGIN);
        } else {
            thread::yield_now();
        }
    }
}

/// Receives until every sent message arrived, or the drain timeout passed after the last send.
fn subscribe_loop(
    mut source: Source,
    config: &LoadConfig,
    start: Instant,
    progress: &Progress,
) -> SubscriberOutcome {
    let pinned = pin_current_thread(config.subscriber_core);
    let warmup_messages = config.warmup_messages();
    let mut histogram =
        Histogram::<u64>::new_with_bounds(1, LATENCY_NS_MAX, HISTOGRAM_SIGNIFICANT_DIGITS)
            .expect("valid histogram bounds");
    let mut received = 0u64;
    let mut out_of_order = 0u64;
    let mut corrupt = 0u64;
    let mut next_seq = 0u64;
    let mut drain_deadline: Option<Instant> = None;
    let mut error = None;
    loop {
        match source.next_payload() {
            Ok(Received::Message(bytes)) => {
                // Read the clock first: everything after this is the benchmark's own work.
                let received_ns = Instant::now().saturating_duration_since(start).as_nanos() as u64;
                match payload::decode(bytes) {
                    Some((seq, scheduled_ns)) => {
                        received += 1;
                        if seq < next_seq {
                            out_of_order += 1;
                        } else {
                            next_seq = seq + 1;
                            if seq >= warmup_messages {
                                histogram.saturating_record(
                                    received_ns.saturating_sub(scheduled_ns).max(1),
                                );
                            }
                        }
                    }
                    None => corrupt += 1,
                }
                if progress.publisher_done.load(Ordering::Acquire)
                    && received + corrupt >= progress.sent.load(Ordering::Acquire)
                {
                    break;
                }
            }
            Ok(Received::Idle) => {
                if progress.publisher_done.load(Ordering::Acquire) {
                    if received + corrupt >= progress.sent.load(Ordering::Acquire) {
                        break;
                    }
                    let deadline = *drain_deadline
                        .get_or_insert_with(|| Instant::now() + config.drain_timeout);
                    if Instant::now() >= deadline {
                        break;
                    }
                }
            }
            Ok(Received::Closed) => {
                error = Some("the server closed the subscriber connection".to_owned());
                break;
            }
            Err(failure) => {
                error = Some(failure.to_string());
                break;
            }
        }
    }
    SubscriberOutcome {
        histogram,
        received,
        out_of_order,
        corrupt,
        error,
        pinned,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::systems::{self, SystemKind, SystemOptions};

    fn small_config() -> LoadConfig {
        // 1,000 messages at 5k/s: long enough to exercise the loop, short enough for CI.
        LoadConfig {
            rate_per_second: 5_000,
            payload_size_bytes: 128,
            warmup: Duration::from_millis(40),
            duration: Duration::from_millis(160),
            drain_timeout: Duration::from_secs(2),
            publisher_core: None,
            subscriber_core: None,
        }
    }

    /// Correctness only (counts and order), never timing: the machine is shared and noisy.
    fn assert_complete(result: &LoadResult, config: &LoadConfig) {
        assert!(result.problems.is_empty(), "{:?}", result.problems);
        assert_eq!(result.sent, 1_000);
        assert_eq!(result.received, result.sent);
        assert_eq!(result.lost, 0);
        assert_eq!(result.out_of_order, 0);
        assert_eq!(result.corrupt, 0);
        assert_eq!(result.sent_measured, 1_000 - config.warmup_messages());
        assert_eq!(result.histogram.len(), result.sent_measured);
    }

    #[test]
    fn schedule_is_evenly_spaced() {
        let config = small_config();
        assert_eq!(config.warmup_messages(), 200);
        assert_eq!(config.total_messages(), 1_000);
        assert_eq!(config.scheduled_ns(0), 0);
        assert_eq!(config.scheduled_ns(1), 200_000);
        assert_eq!(config.scheduled_ns(5_000), 1_000_000_000);
    }

    #[test]
    fn end_to_end_through_the_relay() {
        let options = SystemOptions {
            tachyon_binary: "unused".into(),
            nats_binary: "unused".into(),
            relay_binary: None,
            server_core: None,
        };
        let system = systems::start(SystemKind::Relay, &options).unwrap();
        let config = small_config();
        let result = run(&system.endpoint, &config).unwrap();
        system.stop().unwrap();
        assert_complete(&result, &config);
    }

    #[test]
    fn end_to_end_through_a_fake_amps_broker() {
        // Exercises logon, subscribe acks and `sids` deliveries the way Tachyon will answer them.
        let broker = crate::fake_amps::FakeAmps::start();
        let endpoint = Endpoint {
            protocol: Protocol::Amps,
            publish_address: broker.address,
            subscribe_address: broker.address,
        };
        let config = small_config();
        let result = run(&endpoint, &config).unwrap();
        assert_complete(&result, &config);
    }

    #[test]
    fn end_to_end_through_nats_when_installed() {
        let Some(nats_binary) = systems::find_binary("nats-server") else {
            println!("skipped: nats-server is not installed (apt-get install nats-server)");
            return;
        };
        let options = SystemOptions {
            tachyon_binary: "unused".into(),
            nats_binary,
            relay_binary: None,
            server_core: None,
        };
        let system = systems::start(SystemKind::Nats, &options).unwrap();
        let config = small_config();
        let result = run(&system.endpoint, &config).unwrap();
        system.stop().unwrap();
        assert_complete(&result, &config);
    }
}
