//! The load generator: N publisher threads and M subscriber threads, each on its own connection,
//! recording latency into an HdrHistogram.
//!
//! **Open loop** (the default), coordinated-omission correct: message `g` is *scheduled* at
//! `start + ⌊g / burst⌋ · burst / rate` (with `--burst B`, B messages share each scheduled instant
//! and go out back to back), and the payload carries that scheduled time, not the moment it was
//! actually written. Publishers never wait for subscribers or the server; when one falls behind
//! (descheduled, or blocked on a full socket) it sends at once, and the lag shows up in the
//! latency of every delayed message instead of silently lowering the rate. Latency = receive time
//! − scheduled send time, both offsets from one shared `Instant` (CLOCK_MONOTONIC) in this
//! process. With N publishers, publisher `p` sends the messages `g ≡ p (mod N)`.
//!
//! **Closed loop** (the throughput scenario): publishers send as fast as the server takes
//! messages, with at most `window` messages in flight (sent but not yet received by the slowest
//! healthy subscriber). Its latencies are measured from the actual send and are *not*
//! coordinated-omission correct; only its rates are reported as results.
//!
//! Messages scheduled during the warm-up are sent and checked (loss, order) but not recorded.
//! Every subscriber expects every message (the filtered fan-out places its subscriptions so that
//! exactly one per connection matches each message). A "slow" subscriber (the last one, when
//! asked for) reads during the warm-up and then stops reading; it is left out of the latency,
//! loss and window accounting, and reports at the end whether the server disconnected it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use hdrhistogram::Histogram;

use crate::amps::{AmpsPublisher, AmpsSubscriber, Received, SubscriptionSpec};
use crate::nats::{keyed_subject_name, NatsPublisher, NatsSubscriber};
use crate::payload::{self, Layout};
use crate::systems::{Endpoint, Protocol};

/// The topic (AMPS) or subject (NATS) every run publishes on.
pub const TOPIC: &str = "bench";
/// Highest latency the histogram tracks exactly (60 s); anything above is clamped to it.
pub const LATENCY_NS_MAX: u64 = 60_000_000_000;
/// Significant decimal digits kept by the histogram (0.1 % resolution).
pub const HISTOGRAM_SIGNIFICANT_DIGITS: u8 = 3;
/// The four predicates every filtered subscription shares (all true for every benchmark
/// message); the fifth, on the key, selects one message in `keys`. The key test comes last so
/// every predicate is evaluated for every message.
pub const FILTER_SHARED_PREDICATES: &str =
    "/sym = 'IBM' AND /px > 100 AND /side = 'B' AND /qty >= 100";
/// Time between setting up the threads and the first scheduled send, so every thread is
/// running (and pinned) before the clock starts.
pub(crate) const START_DELAY: Duration = Duration::from_millis(50);
/// Waits longer than this are slept instead of spun (a sleep here costs tens of µs of wake-up
/// latency, so only long gaps, i.e. low rates, use it).
const SLEEP_THRESHOLD: Duration = Duration::from_millis(2);
/// How much earlier than the target a sleep ends, to absorb the wake-up delay.
const SLEEP_MARGIN: Duration = Duration::from_millis(1);
/// How long to connect and complete logon/subscribe.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bits of a sequence number that count messages within one publisher; the bits above say which
/// publisher sent it.
const PUBLISHER_SEQ_BITS: u32 = 40;
const LOCAL_SEQ_MASK: u64 = (1 << PUBLISHER_SEQ_BITS) - 1;

/// How publishers pace themselves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Pace {
    /// Open loop at `rate_per_second` (coordinated-omission correct).
    Open,
    /// Closed loop: as fast as possible with at most `window` messages in flight.
    Closed {
        /// Messages sent but not yet received by the slowest healthy subscriber.
        window: u64,
    },
}

/// What each subscriber subscribes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fanout {
    /// One subscription to the topic per subscriber.
    Topic,
    /// `keys` subscriptions per subscriber, each a 5-predicate content filter (AMPS) or a keyed
    /// subject (NATS, which has no content filters) of which exactly one matches each message.
    Filtered {
        /// Distinct keys; each message carries key `g mod keys` (≤ 100).
        keys: u8,
    },
}

/// One measurement's parameters.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// Messages per second all publishers together are scheduled to send (open loop).
    pub rate_per_second: u64,
    /// Exact payload size.
    pub payload_size_bytes: usize,
    /// Time sent but not recorded, so connections, caches and the server warm up.
    pub warmup: Duration,
    /// Time recorded.
    pub duration: Duration,
    /// How long subscribers wait for missing messages after the last send.
    pub drain_timeout: Duration,
    /// Core for the publisher threads; `None` = not pinned.
    pub publisher_core: Option<usize>,
    /// Core for the subscriber threads; `None` = not pinned.
    pub subscriber_core: Option<usize>,
    /// Publisher connections (each its own thread).
    pub publishers: usize,
    /// Subscriber connections (each its own thread), the slow one included.
    pub subscribers: usize,
    /// Messages sent back to back at each scheduled instant (1 = evenly spaced).
    pub burst: u64,
    /// Open or closed loop.
    pub pace: Pace,
    /// Plain topic subscriptions or filtered fan-out.
    pub fanout: Fanout,
    /// The last subscriber stops reading after the warm-up.
    pub slow_subscriber: bool,
}

impl Default for LoadConfig {
    fn default() -> Self {
        Self {
            rate_per_second: 10_000,
            payload_size_bytes: 128,
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(2),
            publisher_core: None,
            subscriber_core: None,
            publishers: 1,
            subscribers: 1,
            burst: 1,
            pace: Pace::Open,
            fanout: Fanout::Topic,
            slow_subscriber: false,
        }
    }
}

impl LoadConfig {
    /// Messages scheduled during the warm-up (open loop).
    pub fn warmup_messages(&self) -> u64 {
        messages_in(self.rate_per_second, self.warmup)
    }

    /// Messages scheduled in total (warm-up plus measurement; open loop).
    pub fn total_messages(&self) -> u64 {
        self.warmup_messages() + messages_in(self.rate_per_second, self.duration)
    }

    /// When message `g` is scheduled, in ns after the start (open loop).
    pub fn scheduled_ns(&self, g: u64) -> u64 {
        let burst = self.burst.max(1);
        let instant = g / burst * burst;
        (u128::from(instant) * 1_000_000_000 / u128::from(self.rate_per_second)) as u64
    }

    /// End of the warm-up, in ns after the start: messages scheduled earlier are not recorded.
    pub(crate) fn warmup_ns(&self) -> u64 {
        self.warmup.as_nanos() as u64
    }

    fn layout(&self) -> Layout {
        match self.fanout {
            Fanout::Topic => Layout::Plain,
            Fanout::Filtered { .. } => Layout::Filtered,
        }
    }

    /// Subscribers whose latency and losses count (all but the slow one).
    pub fn healthy_subscribers(&self) -> usize {
        self.subscribers - usize::from(self.slow_subscriber)
    }
}

fn messages_in(rate_per_second: u64, span: Duration) -> u64 {
    (rate_per_second as f64 * span.as_secs_f64()).round() as u64
}

/// What the slow subscriber saw.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct SlowOutcome {
    /// The server closed its connection (slow-consumer disconnect) before the end of the run.
    pub disconnected: bool,
    /// Wire bytes still delivered to it after it resumed reading at the end of the run.
    pub backlog_bytes_read: u64,
}

/// What one measurement produced.
#[derive(Debug)]
pub struct LoadResult {
    /// Latencies (ns) of the in-order messages scheduled after the warm-up, over all healthy
    /// subscribers.
    pub histogram: Histogram<u64>,
    /// Messages written by all publishers, warm-up included.
    pub sent: u64,
    /// Messages written after the warm-up.
    pub sent_measured: u64,
    /// Benchmark payloads received by the healthy subscribers, warm-up and duplicates included
    /// (with M subscribers, M × sent when nothing is lost).
    pub received: u64,
    /// `sent × healthy subscribers − received` (0 when duplicates outnumber losses).
    pub lost: u64,
    /// Payloads whose sequence number was not above every earlier one from the same publisher.
    pub out_of_order: u64,
    /// Deliveries that did not decode as a benchmark payload.
    pub corrupt: u64,
    /// Send rate actually achieved over the measurement window (all publishers).
    pub achieved_rate_per_second: f64,
    /// Deliveries per second over the measurement window (all healthy subscribers).
    pub delivered_per_second: f64,
    /// Wire bytes per second into the server (publishers' frames, framing included).
    pub bytes_in_per_second: f64,
    /// Wire bytes per second out of the server to the healthy subscribers.
    pub bytes_out_per_second: f64,
    /// Largest delay between a message's scheduled and actual send time (publisher lag).
    pub send_lag_ns_max: u64,
    /// The slow subscriber's fate, when there was one.
    pub slow: Option<SlowOutcome>,
    /// Subscribers whose deliveries were counted (all but the slow one).
    pub healthy_subscribers: usize,
    /// Problems that make the result suspect (pinning failed, connection lost, ...).
    pub problems: Vec<String>,
    /// Broken promises of the server (a failed or missing persisted ack): the figures are kept
    /// but the measurement counts as failed.
    pub errors: Vec<String>,
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

    #[inline]
    fn set_key(&mut self, key: u8) {
        match self {
            Self::Amps(publisher) => publisher.set_key(key),
            Self::Nats(publisher) => publisher.set_key(key),
        }
    }

    fn frame_bytes(&self) -> usize {
        match self {
            Self::Amps(publisher) => publisher.frame_bytes(),
            Self::Nats(publisher) => publisher.frame_bytes(),
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

    fn bytes_received(&self) -> u64 {
        match self {
            Self::Amps(subscriber) => subscriber.bytes_received(),
            Self::Nats(subscriber) => subscriber.bytes_received(),
        }
    }
}

/// The filter of subscription `key` in the filtered fan-out (five predicates).
pub fn filter_text(key: u8) -> String {
    format!("{FILTER_SHARED_PREDICATES} AND /k = '{key:02}'")
}

/// Connects subscriber `index` and makes sure its subscriptions are live (so no early message is
/// dropped by the server for lack of a subscriber).
fn connect_subscriber(endpoint: &Endpoint, config: &LoadConfig, index: usize) -> Result<Source> {
    let address: SocketAddr = endpoint.subscribe_address;
    Ok(match (endpoint.protocol, config.fanout) {
        (Protocol::Amps, Fanout::Topic) => {
            let spec = SubscriptionSpec {
                sub_id: "s1".to_owned(),
                topic: TOPIC.to_owned(),
                filter: None,
            };
            let name = format!("bench-sub-{index}");
            Source::Amps(AmpsSubscriber::subscribe_many(
                address,
                &name,
                &[spec],
                HANDSHAKE_TIMEOUT,
            )?)
        }
        (Protocol::Amps, Fanout::Filtered { keys }) => {
            let specs: Vec<SubscriptionSpec> = (0..keys)
                .map(|key| SubscriptionSpec {
                    sub_id: format!("s{index}k{key:02}"),
                    topic: TOPIC.to_owned(),
                    filter: Some(filter_text(key)),
                })
                .collect();
            let name = format!("bench-sub-{index}");
            Source::Amps(AmpsSubscriber::subscribe_many(
                address,
                &name,
                &specs,
                HANDSHAKE_TIMEOUT,
            )?)
        }
        (Protocol::RawFrames, Fanout::Topic) => {
            Source::Amps(AmpsSubscriber::raw(address, HANDSHAKE_TIMEOUT)?)
        }
        (Protocol::RawFrames, Fanout::Filtered { .. }) => {
            bail!("the raw relay cannot filter: it forwards bytes without reading them")
        }
        (Protocol::Nats, Fanout::Topic) => Source::Nats(NatsSubscriber::subscribe(
            address,
            TOPIC,
            HANDSHAKE_TIMEOUT,
        )?),
        (Protocol::Nats, Fanout::Filtered { keys }) => {
            let subjects: Vec<String> = (0..keys)
                .map(|key| keyed_subject_name(TOPIC, key))
                .collect();
            Source::Nats(NatsSubscriber::subscribe_many(
                address,
                &subjects,
                HANDSHAKE_TIMEOUT,
            )?)
        }
    })
}

fn connect_publisher(endpoint: &Endpoint, config: &LoadConfig, index: usize) -> Result<Sink> {
    let address = endpoint.publish_address;
    let size = config.payload_size_bytes;
    let layout = config.layout();
    let name = format!("bench-pub-{index}");
    Ok(match endpoint.protocol {
        Protocol::Amps => Sink::Amps(AmpsPublisher::connect_with(
            address,
            TOPIC,
            size,
            layout,
            Some(&name),
            HANDSHAKE_TIMEOUT,
        )?),
        Protocol::RawFrames => Sink::Amps(AmpsPublisher::connect_with(
            address,
            TOPIC,
            size,
            layout,
            None,
            HANDSHAKE_TIMEOUT,
        )?),
        Protocol::Nats => Sink::Nats(NatsPublisher::connect_with(
            address,
            TOPIC,
            size,
            layout,
            matches!(config.fanout, Fanout::Filtered { .. }),
            HANDSHAKE_TIMEOUT,
        )?),
    })
}

/// State shared by all threads of one measurement.
struct Shared {
    /// Publishers that have finished.
    publishers_done: AtomicU64,
    /// Messages sent by all publishers so far (final once all are done).
    sent: AtomicU64,
    /// Benchmark payloads each healthy subscriber has received (closed-loop window).
    received: Vec<AtomicU64>,
}

impl Shared {
    fn all_published(&self, publishers: usize) -> bool {
        self.publishers_done.load(Ordering::Acquire) >= publishers as u64
    }

    fn slowest_received(&self) -> u64 {
        self.received
            .iter()
            .map(|count| count.load(Ordering::Acquire))
            .min()
            .unwrap_or(u64::MAX)
    }
}

/// What a publisher thread hands back.
struct PublisherOutcome {
    sent: u64,
    sent_measured: u64,
    first_measured_send: Option<Instant>,
    last_send: Option<Instant>,
    send_lag_ns_max: u64,
    frame_bytes: usize,
    error: Option<String>,
    pinned: bool,
    /// Kept open until the subscribers have drained, so closing it cannot race the last messages.
    _sink: Sink,
}

/// What a subscriber thread hands back.
struct SubscriberOutcome {
    histogram: Histogram<u64>,
    received: u64,
    out_of_order: u64,
    corrupt: u64,
    bytes_received: u64,
    first_measured_receive: Option<Instant>,
    last_receive: Option<Instant>,
    error: Option<String>,
    pinned: bool,
}

/// Runs one measurement against a started system.
pub fn run(endpoint: &Endpoint, config: &LoadConfig) -> Result<LoadResult> {
    assert!(config.rate_per_second > 0, "rate must be positive");
    if config.publishers == 0 || config.subscribers == 0 {
        bail!("at least one publisher and one subscriber are needed");
    }
    if config.slow_subscriber && config.subscribers < 2 {
        bail!("a slow-subscriber run needs at least two subscribers (one healthy)");
    }
    if let Fanout::Filtered { keys } = config.fanout {
        if keys == 0 || keys > 100 {
            bail!("filtered fan-out needs 1 to 100 keys, not {keys}");
        }
    }
    let size_min = config.layout().size_min_bytes();
    if config.payload_size_bytes < size_min {
        bail!(
            "payload size {} is below the minimum {size_min} (the stamp needs that much)",
            config.payload_size_bytes
        );
    }
    // Subscribers first: their subscriptions must be live before the first publish.
    let mut sources = Vec::with_capacity(config.subscribers);
    for index in 0..config.subscribers {
        sources.push(
            connect_subscriber(endpoint, config, index)
                .with_context(|| format!("connecting subscriber {index}"))?,
        );
    }
    let mut sinks = Vec::with_capacity(config.publishers);
    for index in 0..config.publishers {
        sinks.push(
            connect_publisher(endpoint, config, index)
                .with_context(|| format!("connecting publisher {index}"))?,
        );
    }
    let shared = Arc::new(Shared {
        publishers_done: AtomicU64::new(0),
        sent: AtomicU64::new(0),
        received: (0..config.healthy_subscribers())
            .map(|_| AtomicU64::new(0))
            .collect(),
    });
    let start = Instant::now() + START_DELAY;
    let healthy = config.healthy_subscribers();

    let mut subscriber_threads = Vec::new();
    let mut slow_thread = None;
    for (index, source) in sources.into_iter().enumerate() {
        let shared = Arc::clone(&shared);
        let config = config.clone();
        let builder = thread::Builder::new().name(format!("bench-sub-{index}"));
        if index < healthy {
            subscriber_threads.push(
                builder.spawn(move || subscribe_loop(source, &config, start, &shared, index))?,
            );
        } else {
            slow_thread = Some(builder.spawn(move || slow_loop(source, &config, start, &shared))?);
        }
    }
    let mut publisher_threads = Vec::new();
    for (index, sink) in sinks.into_iter().enumerate() {
        let shared = Arc::clone(&shared);
        let config = config.clone();
        publisher_threads.push(
            thread::Builder::new()
                .name(format!("bench-pub-{index}"))
                .spawn(move || publish_loop(sink, &config, start, &shared, index))?,
        );
    }
    let mut published = Vec::new();
    for thread in publisher_threads {
        published.push(
            thread
                .join()
                .map_err(|_| anyhow!("a publisher thread panicked"))?,
        );
    }
    let mut subscribed = Vec::new();
    for thread in subscriber_threads {
        subscribed.push(
            thread
                .join()
                .map_err(|_| anyhow!("a subscriber thread panicked"))?,
        );
    }
    let slow = match slow_thread {
        Some(thread) => Some(
            thread
                .join()
                .map_err(|_| anyhow!("the slow subscriber thread panicked"))?,
        ),
        None => None,
    };
    Ok(summarise(config, published, subscribed, slow))
}

/// Folds the threads' outcomes into one result.
fn summarise(
    config: &LoadConfig,
    published: Vec<PublisherOutcome>,
    subscribed: Vec<SubscriberOutcome>,
    slow: Option<SlowOutcome>,
) -> LoadResult {
    let mut problems = Vec::new();
    let sent: u64 = published.iter().map(|outcome| outcome.sent).sum();
    let sent_measured: u64 = published.iter().map(|outcome| outcome.sent_measured).sum();
    let first_send = published
        .iter()
        .filter_map(|outcome| outcome.first_measured_send)
        .min();
    let last_send = published
        .iter()
        .filter_map(|outcome| outcome.last_send)
        .max();
    let achieved_rate_per_second = match (first_send, last_send) {
        (Some(first), Some(last)) if sent_measured > 1 && last > first => {
            (sent_measured - 1) as f64 / (last - first).as_secs_f64()
        }
        _ if config.pace == Pace::Open => config.rate_per_second as f64,
        _ => 0.0,
    };
    let frame_bytes = published.first().map_or(0, |outcome| outcome.frame_bytes);
    for (index, outcome) in published.iter().enumerate() {
        if let Some(error) = &outcome.error {
            problems.push(format!("publisher {index} stopped early: {error}"));
        }
        if !outcome.pinned {
            problems.push(format!(
                "could not pin publisher {index} to core {:?}",
                config.publisher_core
            ));
        }
    }
    let mut histogram =
        Histogram::<u64>::new_with_bounds(1, LATENCY_NS_MAX, HISTOGRAM_SIGNIFICANT_DIGITS)
            .expect("valid histogram bounds");
    let (mut received, mut out_of_order, mut corrupt, mut bytes_received) = (0, 0, 0, 0);
    for (index, outcome) in subscribed.iter().enumerate() {
        histogram
            .add(&outcome.histogram)
            .expect("histograms with equal bounds add");
        received += outcome.received;
        out_of_order += outcome.out_of_order;
        corrupt += outcome.corrupt;
        bytes_received += outcome.bytes_received;
        if let Some(error) = &outcome.error {
            problems.push(format!("subscriber {index} stopped early: {error}"));
        }
        if !outcome.pinned {
            problems.push(format!(
                "could not pin subscriber {index} to core {:?}",
                config.subscriber_core
            ));
        }
    }
    let first_receive = subscribed
        .iter()
        .filter_map(|outcome| outcome.first_measured_receive)
        .min();
    let last_receive = subscribed
        .iter()
        .filter_map(|outcome| outcome.last_receive)
        .max();
    let delivered_per_second = match (first_receive, last_receive) {
        (Some(first), Some(last)) if histogram.len() > 1 && last > first => {
            (histogram.len() - 1) as f64 / (last - first).as_secs_f64()
        }
        _ => 0.0,
    };
    let bytes_per_delivery = if received > 0 {
        bytes_received as f64 / received as f64
    } else {
        0.0
    };
    let expected = sent * subscribed.len() as u64;
    LoadResult {
        histogram,
        sent,
        sent_measured,
        received,
        lost: expected.saturating_sub(received),
        out_of_order,
        corrupt,
        achieved_rate_per_second,
        delivered_per_second,
        bytes_in_per_second: achieved_rate_per_second * frame_bytes as f64,
        bytes_out_per_second: delivered_per_second * bytes_per_delivery,
        send_lag_ns_max: published
            .iter()
            .map(|outcome| outcome.send_lag_ns_max)
            .max()
            .unwrap_or(0),
        slow,
        healthy_subscribers: subscribed.len(),
        problems,
        errors: Vec::new(),
    }
}

/// Pins the calling thread when a core is given; true when no pinning was asked for or it worked.
pub(crate) fn pin_current_thread(core: Option<usize>) -> bool {
    core.is_none_or(|id| core_affinity::set_for_current(core_affinity::CoreId { id }))
}

/// Publisher `index`: sends its share of the messages, open or closed loop.
fn publish_loop(
    sink: Sink,
    config: &LoadConfig,
    start: Instant,
    shared: &Shared,
    index: usize,
) -> PublisherOutcome {
    let pinned = pin_current_thread(config.publisher_core);
    let warmup_ns = config.warmup_ns();
    let keys = match config.fanout {
        Fanout::Topic => None,
        Fanout::Filtered { keys } => Some(u64::from(keys)),
    };
    let publishers = config.publishers as u64;
    let mut outcome = PublisherOutcome {
        sent: 0,
        sent_measured: 0,
        first_measured_send: None,
        last_send: None,
        send_lag_ns_max: 0,
        frame_bytes: sink.frame_bytes(),
        error: None,
        pinned,
        _sink: sink,
    };
    let sink = &mut outcome._sink;
    let end = start + config.warmup + config.duration;
    let total = config.total_messages();
    let mut local_seq = 0u64;
    // `g` numbers every message of the run; this publisher sends g ≡ index (mod publishers).
    let mut g = index as u64;
    loop {
        let (now, scheduled_ns, lag_ns) = match config.pace {
            Pace::Open => {
                if g >= total {
                    break;
                }
                let scheduled_ns = config.scheduled_ns(g);
                let scheduled = start + Duration::from_nanos(scheduled_ns);
                let now = wait_until(scheduled);
                (now, scheduled_ns, (now - scheduled).as_nanos() as u64)
            }
            Pace::Closed { window } => {
                let now = wait_for_window(shared, window, start, end);
                if now >= end {
                    break;
                }
                let now = now.max(start);
                (now, (now - start).as_nanos() as u64, 0)
            }
        };
        if let Some(keys) = keys {
            sink.set_key((g % keys) as u8);
        }
        let seq = ((index as u64) << PUBLISHER_SEQ_BITS) | local_seq;
        if let Err(failure) = sink.publish(seq, scheduled_ns) {
            outcome.error = Some(failure.to_string());
            break;
        }
        shared.sent.fetch_add(1, Ordering::AcqRel);
        local_seq += 1;
        outcome.sent += 1;
        if scheduled_ns >= warmup_ns {
            outcome.sent_measured += 1;
            outcome.send_lag_ns_max = outcome.send_lag_ns_max.max(lag_ns);
            outcome.first_measured_send.get_or_insert(now);
        }
        outcome.last_send = Some(now);
        g += publishers;
    }
    shared.publishers_done.fetch_add(1, Ordering::AcqRel);
    outcome
}

/// Closed loop: waits (yielding) until fewer than `window` messages are in flight, or `end`.
#[inline]
fn wait_for_window(shared: &Shared, window: u64, start: Instant, end: Instant) -> Instant {
    loop {
        let now = Instant::now();
        if now >= end {
            return now;
        }
        let in_flight = shared
            .sent
            .load(Ordering::Acquire)
            .saturating_sub(shared.slowest_received());
        if now >= start && in_flight < window {
            return now;
        }
        thread::yield_now();
    }
}

/// Waits until `target` and returns the time it actually got there.
///
/// Short waits spin with `yield_now`: on this rig the publisher shares its core with the
/// subscribers, and yielding lets a just-woken subscriber run at once instead of waiting for the
/// publisher's time slice to end. Long waits (low rates) sleep most of the gap.
#[inline]
pub(crate) fn wait_until(target: Instant) -> Instant {
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

/// A healthy subscriber: receives until every sent message arrived, or the drain timeout passed
/// after the last send.
fn subscribe_loop(
    mut source: Source,
    config: &LoadConfig,
    start: Instant,
    shared: &Shared,
    index: usize,
) -> SubscriberOutcome {
    let pinned = pin_current_thread(config.subscriber_core);
    let warmup_ns = config.warmup_ns();
    let mut histogram =
        Histogram::<u64>::new_with_bounds(1, LATENCY_NS_MAX, HISTOGRAM_SIGNIFICANT_DIGITS)
            .expect("valid histogram bounds");
    let mut received = 0u64;
    let mut out_of_order = 0u64;
    let mut corrupt = 0u64;
    let mut next_seq = vec![0u64; config.publishers];
    let mut first_measured_receive = None;
    let mut last_receive = None;
    let mut drain_deadline: Option<Instant> = None;
    let mut error = None;
    let finished = |received: u64, corrupt: u64| {
        shared.all_published(config.publishers)
            && received + corrupt >= shared.sent.load(Ordering::Acquire)
    };
    loop {
        match source.next_payload() {
            Ok(Received::Message(bytes)) => {
                // Read the clock first: everything after this is the benchmark's own work.
                let now = Instant::now();
                let received_ns = now.saturating_duration_since(start).as_nanos() as u64;
                match payload::decode(bytes) {
                    Some((seq, scheduled_ns)) => {
                        received += 1;
                        shared.received[index].store(received, Ordering::Release);
                        let publisher = (seq >> PUBLISHER_SEQ_BITS) as usize;
                        let local = seq & LOCAL_SEQ_MASK;
                        match next_seq.get_mut(publisher) {
                            Some(next) if local >= *next => {
                                *next = local + 1;
                                if scheduled_ns >= warmup_ns {
                                    histogram.saturating_record(
                                        received_ns.saturating_sub(scheduled_ns).max(1),
                                    );
                                    first_measured_receive.get_or_insert(now);
                                    last_receive = Some(now);
                                }
                            }
                            Some(_) => out_of_order += 1,
                            None => corrupt += 1,
                        }
                    }
                    None => corrupt += 1,
                }
                if finished(received, corrupt) {
                    break;
                }
            }
            Ok(Received::Idle) => {
                if shared.all_published(config.publishers) {
                    if finished(received, corrupt) {
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
    // A closed-loop publisher must not wait on a subscriber that has given up.
    shared.received[index].store(u64::MAX, Ordering::Release);
    SubscriberOutcome {
        histogram,
        received,
        out_of_order,
        corrupt,
        bytes_received: source.bytes_received(),
        first_measured_receive,
        last_receive,
        error,
        pinned,
    }
}

/// The slow subscriber: reads during the warm-up, stops reading at the first measured message,
/// and once everything is sent (plus the drain timeout) reads what is left to learn whether the
/// server disconnected it.
fn slow_loop(
    mut source: Source,
    config: &LoadConfig,
    _start: Instant,
    shared: &Shared,
) -> SlowOutcome {
    pin_current_thread(config.subscriber_core);
    let warmup_ns = config.warmup_ns();
    // Phase 1: keep up during the warm-up.
    loop {
        match source.next_payload() {
            Ok(Received::Message(bytes)) => {
                if payload::decode(bytes).is_some_and(|(_, scheduled_ns)| scheduled_ns >= warmup_ns)
                {
                    break;
                }
            }
            Ok(Received::Idle) => {
                if shared.all_published(config.publishers) {
                    break;
                }
            }
            Ok(Received::Closed) | Err(_) => {
                return SlowOutcome {
                    disconnected: true,
                    backlog_bytes_read: 0,
                }
            }
        }
    }
    // Phase 2: stall until the healthy subscribers are done.
    while !shared.all_published(config.publishers) {
        thread::sleep(Duration::from_millis(10));
    }
    thread::sleep(config.drain_timeout.min(Duration::from_millis(500)));
    // Phase 3: read the backlog; a close (or reset) means the server dropped us.
    let bytes_before = source.bytes_received();
    let deadline = Instant::now() + config.drain_timeout.max(Duration::from_secs(1));
    let disconnected = loop {
        match source.next_payload() {
            Ok(Received::Message(_)) if Instant::now() < deadline => {}
            Ok(Received::Message(_)) | Ok(Received::Idle) => break false,
            Ok(Received::Closed) | Err(_) => break true,
        }
    };
    SlowOutcome {
        disconnected,
        backlog_bytes_read: source.bytes_received() - bytes_before,
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
            ..LoadConfig::default()
        }
    }

    fn relay_options() -> SystemOptions {
        SystemOptions {
            tachyon_binary: "unused".into(),
            nats_binary: "unused".into(),
            relay_binary: None,
            server_core: None,
            journal_dir: "unused".into(),
        }
    }

    fn fake_endpoint(broker: &crate::fake_amps::FakeAmps) -> Endpoint {
        Endpoint {
            protocol: Protocol::Amps,
            publish_address: broker.address,
            subscribe_address: broker.address,
        }
    }

    /// Counts only: every healthy subscriber got every message once, in order.
    fn assert_fanout_complete(result: &LoadResult, config: &LoadConfig) {
        assert!(result.problems.is_empty(), "{:?}", result.problems);
        let healthy = config.healthy_subscribers() as u64;
        assert_eq!(result.received, result.sent * healthy);
        assert_eq!(result.lost, 0);
        assert_eq!(result.out_of_order, 0);
        assert_eq!(result.corrupt, 0);
        assert_eq!(result.histogram.len(), result.sent_measured * healthy);
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
    fn bursts_share_their_scheduled_instant() {
        let config = LoadConfig {
            burst: 10,
            ..small_config()
        };
        assert_eq!(config.scheduled_ns(0), 0);
        assert_eq!(config.scheduled_ns(9), 0);
        assert_eq!(config.scheduled_ns(10), 2_000_000);
        assert_eq!(config.scheduled_ns(25), 4_000_000);
        // The average rate is unchanged.
        assert_eq!(config.total_messages(), 1_000);
    }

    #[test]
    fn filters_have_five_predicates_and_one_key() {
        let text = filter_text(7);
        assert_eq!(text.matches(" AND ").count(), 4, "{text}");
        assert!(text.ends_with("/k = '07'"), "{text}");
    }

    #[test]
    fn two_publishers_three_subscribers_with_bursts_through_the_relay() {
        let config = LoadConfig {
            publishers: 2,
            subscribers: 3,
            burst: 5,
            ..small_config()
        };
        let params = systems::ServerParams {
            shape: crate::relay::Shape {
                publishers: 2,
                subscribers: 3,
            },
            ..systems::ServerParams::default()
        };
        let system = systems::start_with(SystemKind::Relay, &relay_options(), &params).unwrap();
        let result = run(&system.endpoint, &config).unwrap();
        system.stop().unwrap();
        assert_eq!(result.sent, 1_000);
        assert_fanout_complete(&result, &config);
        assert!(result.bytes_out_per_second > 0.0);
    }

    #[test]
    fn closed_loop_through_the_relay_counts_rates() {
        let config = LoadConfig {
            pace: Pace::Closed { window: 64 },
            warmup: Duration::from_millis(50),
            duration: Duration::from_millis(150),
            ..small_config()
        };
        let system = systems::start(SystemKind::Relay, &relay_options()).unwrap();
        let result = run(&system.endpoint, &config).unwrap();
        system.stop().unwrap();
        assert!(result.sent > 0);
        assert_fanout_complete(&result, &config);
        assert!(result.achieved_rate_per_second > 0.0);
        assert!(result.delivered_per_second > 0.0);
        assert!(result.bytes_in_per_second > 0.0);
    }

    #[test]
    fn filtered_fanout_through_a_fake_amps_broker() {
        // The fake evaluates only the key predicate; what is checked is the plumbing: 50 filtered
        // subscriptions per connection, exactly one of which matches each message.
        let broker = crate::fake_amps::FakeAmps::start();
        let config = LoadConfig {
            subscribers: 3,
            payload_size_bytes: 256,
            fanout: Fanout::Filtered { keys: 50 },
            ..small_config()
        };
        let result = run(&fake_endpoint(&broker), &config).unwrap();
        assert_fanout_complete(&result, &config);
    }

    #[test]
    fn relay_refuses_filtered_fanout() {
        let system = systems::start(SystemKind::Relay, &relay_options()).unwrap();
        let config = LoadConfig {
            fanout: Fanout::Filtered { keys: 50 },
            ..small_config()
        };
        let error = run(&system.endpoint, &config).expect_err("must fail");
        assert!(format!("{error:#}").contains("cannot filter"), "{error:#}");
    }

    #[test]
    fn slow_subscriber_is_left_out_of_the_accounting() {
        // Small enough that the stalled reader's socket buffers absorb everything: the fake
        // broker never blocks and the slow subscriber stays connected.
        let broker = crate::fake_amps::FakeAmps::start();
        let config = LoadConfig {
            subscribers: 3,
            slow_subscriber: true,
            drain_timeout: Duration::from_millis(300),
            ..small_config()
        };
        let result = run(&fake_endpoint(&broker), &config).unwrap();
        assert_fanout_complete(&result, &config);
        let slow = result.slow.expect("slow outcome");
        assert!(!slow.disconnected);
        assert!(slow.backlog_bytes_read > 0);
    }

    #[test]
    fn end_to_end_through_the_relay() {
        let system = systems::start(SystemKind::Relay, &relay_options()).unwrap();
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
            journal_dir: "unused".into(),
        };
        let system = systems::start(SystemKind::Nats, &options).unwrap();
        let config = small_config();
        let result = run(&system.endpoint, &config).unwrap();
        system.stop().unwrap();
        assert_complete(&result, &config);

        // Keyed subjects standing in for content filters: 2 subscribers × 50 subjects.
        let system = systems::start(SystemKind::Nats, &options).unwrap();
        let config = LoadConfig {
            subscribers: 2,
            fanout: Fanout::Filtered { keys: 50 },
            ..small_config()
        };
        let result = run(&system.endpoint, &config).unwrap();
        system.stop().unwrap();
        assert_fanout_complete(&result, &config);
    }
}
