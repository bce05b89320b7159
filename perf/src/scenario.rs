//! The scenarios of `tachyon-bench scenario`: what each one measures, expanded into a list of
//! single measurements (scenario label × system × load), interleaved by system so slow drifts in
//! background load hit every system alike.
//!
//! | name              | what                                                                    |
//! |-------------------|-------------------------------------------------------------------------|
//! | `pubsub`          | open-loop latency, 1 publisher → 1 and 10 subscribers, 128 B/1 KiB/16 KiB |
//! | `filtered`        | 1,000 subscriptions with 5-predicate filters, 2 % match (NATS: subjects) |
//! | `throughput`      | closed loop (bounded window), msgs/s and MB/s in and out                 |
//! | `slow-subscriber` | one of 5 subscribers stops reading; the others' tails, with and without  |
//! | `persisted-ack`   | Tachyon only: publish → persisted ack (journal, fdatasync) at 1k/10k/50k msg/s, against the same publisher on an unjournaled topic (`persisted.rs`) |
//! | `sow-query`       | Tachyon only: key lookup, 2 % filter, full scan, sow_and_subscribe (`sow.rs`) |

use std::time::Duration;

use anyhow::{bail, Result};

use crate::load::{Fanout, LoadConfig, Pace};
use crate::persisted::{JOURNALED_TOPIC, UNJOURNALED_TOPIC};
use crate::relay::Shape;
use crate::report::Combination;
use crate::sow::SowPlan;
use crate::systems::{ServerParams, SystemKind, CLIENT_OUTBOUND_BYTES_MAX_DEFAULT};

/// Every scenario, in the order `all` runs them.
pub const ALL: [ScenarioKind; 6] = [
    ScenarioKind::Pubsub,
    ScenarioKind::Filtered,
    ScenarioKind::Throughput,
    ScenarioKind::SlowSubscriber,
    ScenarioKind::PersistedAck,
    ScenarioKind::SowQuery,
];

/// Open-loop rate of the pub/sub latency scenario (per publisher set, not per subscriber).
pub const PUBSUB_RATE_PER_SECOND: u64 = 5_000;
/// Subscriber counts of the pub/sub latency scenario.
pub const PUBSUB_SUBSCRIBERS: [usize; 2] = [1, 10];
/// Payload sizes of the pub/sub latency scenario.
pub const PUBSUB_SIZES: [usize; 3] = [128, 1024, 16 * 1024];
/// Filtered fan-out: subscriber connections × keys = subscriptions (20 × 50 = 1,000); each message
/// matches one subscription per connection, i.e. 20 of 1,000 = 2 %.
pub const FILTERED_SUBSCRIBERS: usize = 20;
/// Keys (= subscriptions per connection) of the filtered fan-out.
pub const FILTERED_KEYS: u8 = 50;
/// Open-loop rate of the filtered fan-out (each message reaches 20 connections).
pub const FILTERED_RATE_PER_SECOND: u64 = 2_000;
/// Payload size of the filtered fan-out.
pub const FILTERED_SIZE_BYTES: usize = 1024;
/// Messages in flight in the closed-loop throughput scenario.
pub const THROUGHPUT_WINDOW: u64 = 1_000;
/// Sizes and subscriber counts of the throughput scenario.
pub const THROUGHPUT_SIZES: [usize; 2] = [128, 1024];
pub const THROUGHPUT_SUBSCRIBERS: [usize; 2] = [1, 10];
/// Slow-subscriber scenario: subscribers (the last one stalls), rate, size.
pub const SLOW_SUBSCRIBERS: usize = 5;
pub const SLOW_RATE_PER_SECOND: u64 = 5_000;
pub const SLOW_SIZE_BYTES: usize = 1024;
/// Tachyon's `client_outbound_bytes_max` in the slow-subscriber scenario: 16 MiB, so that at
/// ~5 MB/s the stalled subscriber's queue overflows inside a 5 s measurement and its spooling to
/// disk is part of what the healthy subscribers live through.
pub const SLOW_OUTBOUND_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Labels of the two slow-subscriber runs.
pub const SLOW_BASELINE: &str = "slow-sub-baseline";
pub const SLOW_STALLED: &str = "slow-sub-stalled";
/// Open-loop rates of the persisted-ack scenario.
pub const PERSISTED_RATES_PER_SECOND: [u64; 3] = [1_000, 10_000, 50_000];
/// Payload size of the persisted-ack scenario.
pub const PERSISTED_SIZE_BYTES: usize = 1024;
/// Labels of the persisted-ack runs: on the journaled topic, and the same server and publisher
/// on a topic outside the journal (acked right after routing).
pub const PERSISTED_JOURNAL: &str = "persisted-ack-journal";
pub const PERSISTED_NO_JOURNAL: &str = "persisted-ack-no-journal";

/// One scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScenarioKind {
    /// Pub→sub latency, 1 and 10 subscribers, three sizes.
    Pubsub,
    /// Filtered fan-out.
    Filtered,
    /// Closed-loop throughput.
    Throughput,
    /// One stalled subscriber.
    SlowSubscriber,
    /// Publish → persisted-ack latency with and without the transaction log (Tachyon only).
    PersistedAck,
    /// SOW query latency (Tachyon only).
    SowQuery,
}

impl ScenarioKind {
    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pubsub => "pubsub",
            Self::Filtered => "filtered",
            Self::Throughput => "throughput",
            Self::SlowSubscriber => "slow-subscriber",
            Self::PersistedAck => "persisted-ack",
            Self::SowQuery => "sow-query",
        }
    }
}

/// Parses scenario names (`all` expands to every scenario); keeps the order given, no repeats.
pub fn parse(names: &[String]) -> Result<Vec<ScenarioKind>> {
    let mut chosen = Vec::new();
    for name in names {
        let name = name.trim();
        let kinds: Vec<ScenarioKind> = if name == "all" {
            ALL.to_vec()
        } else {
            match ALL.iter().find(|kind| kind.name() == name) {
                Some(&kind) => vec![kind],
                None => bail!(
                    "unknown scenario {name:?}: expected all, {}",
                    ALL.map(ScenarioKind::name).join(", ")
                ),
            }
        };
        for kind in kinds {
            if !chosen.contains(&kind) {
                chosen.push(kind);
            }
        }
    }
    Ok(chosen)
}

/// Settings shared by every scenario (from the command line).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Systems to measure.
    pub systems: Vec<SystemKind>,
    /// Template for every load: warm-up, duration, drain, cores, publishers, burst.
    pub base: LoadConfig,
    /// Overrides the scenario's own open-loop rate.
    pub rate_per_second: Option<u64>,
    /// Overrides the pub/sub scenario's sizes.
    pub sizes: Option<Vec<usize>>,
    /// Overrides the pub/sub scenario's subscriber counts.
    pub subscribers: Option<Vec<usize>>,
    /// Tachyon's outbound limit in the slow-subscriber scenario.
    pub slow_outbound_bytes_max: usize,
    /// Smaller matrices (one size) for a quick pass.
    pub smoke: bool,
}

/// How a planned measurement drives the server and what its latency ends at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// Publishers → server → subscribers; latency ends at each delivery (`load.rs`).
    Delivery,
    /// Publishers asking for persisted acks on `topic`, no subscribers; latency ends at the ack
    /// that covers the message (`persisted.rs`).
    PersistedAck {
        /// The topic published to.
        topic: &'static str,
    },
}

/// One measurement to run.
#[derive(Clone, Debug)]
pub struct Planned {
    /// What is recorded with the result.
    pub combination: Combination,
    /// The load.
    pub config: LoadConfig,
    /// What the fresh server is started with.
    pub params: ServerParams,
    /// How the load is driven and timed.
    pub probe: Probe,
}

/// A scenario expanded into measurements, plus what to tell the reader about it.
#[derive(Debug, Default)]
pub struct Plan {
    /// Measurements, systems interleaved within each combination.
    pub measurements: Vec<Planned>,
    /// Lines printed with the report (systems left out and why, equivalences, caveats).
    pub notes: Vec<String>,
    /// The sow-query scenario, run against its own Tachyon after the measurements.
    pub sow: Option<SowPlan>,
}

/// Expands the chosen scenarios.
pub fn plan(kinds: &[ScenarioKind], settings: &Settings) -> Plan {
    let mut plan = Plan::default();
    for &kind in kinds {
        match kind {
            ScenarioKind::Pubsub => plan_pubsub(&mut plan, settings),
            ScenarioKind::Filtered => plan_filtered(&mut plan, settings),
            ScenarioKind::Throughput => plan_throughput(&mut plan, settings),
            ScenarioKind::SlowSubscriber => plan_slow(&mut plan, settings),
            ScenarioKind::SowQuery => plan_sow(&mut plan, settings),
            ScenarioKind::PersistedAck => plan_persisted(&mut plan, settings),
        }
    }
    plan
}

fn push(
    plan: &mut Plan,
    label: &str,
    systems: &[SystemKind],
    config: LoadConfig,
    outbound_bytes_max: usize,
) {
    for &system in systems {
        let params = ServerParams {
            shape: Shape {
                publishers: config.publishers,
                subscribers: config.subscribers,
            },
            client_outbound_bytes_max: outbound_bytes_max,
            sow_topic: None,
            journal_topic: None,
        };
        plan.measurements.push(Planned {
            combination: Combination::of(label, system, &config),
            config: config.clone(),
            params,
            probe: Probe::Delivery,
        });
    }
}

fn plan_pubsub(plan: &mut Plan, settings: &Settings) {
    let sizes = settings.sizes.clone().unwrap_or_else(|| {
        if settings.smoke {
            vec![128]
        } else {
            PUBSUB_SIZES.to_vec()
        }
    });
    let subscriber_counts = settings
        .subscribers
        .clone()
        .unwrap_or_else(|| PUBSUB_SUBSCRIBERS.to_vec());
    let rate = settings.rate_per_second.unwrap_or(PUBSUB_RATE_PER_SECOND);
    for &subscribers in &subscriber_counts {
        for &size in &sizes {
            let config = LoadConfig {
                rate_per_second: rate,
                payload_size_bytes: size,
                subscribers,
                ..settings.base.clone()
            };
            let label = format!("pubsub-{subscribers}sub");
            push(
                plan,
                &label,
                &settings.systems,
                config,
                CLIENT_OUTBOUND_BYTES_MAX_DEFAULT,
            );
        }
    }
}

fn plan_filtered(plan: &mut Plan, settings: &Settings) {
    let systems: Vec<SystemKind> = settings
        .systems
        .iter()
        .copied()
        .filter(|&system| system != SystemKind::Relay)
        .collect();
    if settings.systems.contains(&SystemKind::Relay) {
        plan.notes.push(
            "filtered: relay skipped: it forwards bytes without reading them, so it cannot filter"
                .to_owned(),
        );
    }
    let subscriptions = FILTERED_SUBSCRIBERS * usize::from(FILTERED_KEYS);
    plan.notes.push(format!(
        "filtered: {subscriptions} subscriptions ({FILTERED_SUBSCRIBERS} connections × {FILTERED_KEYS}); \
         Tachyon gets AMPS content filters of five predicates (`{} AND /k = 'NN'`), exactly one \
         per connection matches each message (2 %)",
        crate::load::FILTER_SHARED_PREDICATES
    ));
    if settings.systems.contains(&SystemKind::Nats) {
        plan.notes.push(format!(
            "filtered: NATS has no content filters; it gets the closest equivalent, subject-based \
             routing: each message is published to `bench.kNN` and each connection subscribes to \
             the {FILTERED_KEYS} subjects bench.k00..bench.k{:02} (a hash lookup, not five predicates)",
            FILTERED_KEYS - 1
        ));
    }
    if systems.is_empty() {
        return;
    }
    let config = LoadConfig {
        rate_per_second: settings.rate_per_second.unwrap_or(FILTERED_RATE_PER_SECOND),
        payload_size_bytes: FILTERED_SIZE_BYTES,
        subscribers: FILTERED_SUBSCRIBERS,
        fanout: Fanout::Filtered {
            keys: FILTERED_KEYS,
        },
        ..settings.base.clone()
    };
    let label = format!("filtered-{subscriptions}subs");
    push(
        plan,
        &label,
        &systems,
        config,
        CLIENT_OUTBOUND_BYTES_MAX_DEFAULT,
    );
}

fn plan_throughput(plan: &mut Plan, settings: &Settings) {
    plan.notes.push(format!(
        "throughput: closed loop, not a rate ramp: publishers send as fast as the server takes \
         messages with at most {THROUGHPUT_WINDOW} messages in flight to the slowest subscriber; \
         its latencies are from the actual send (not coordinated-omission corrected) and are not plotted"
    ));
    let sizes = if settings.smoke {
        vec![128]
    } else {
        THROUGHPUT_SIZES.to_vec()
    };
    for subscribers in THROUGHPUT_SUBSCRIBERS {
        for &size in &sizes {
            let config = LoadConfig {
                payload_size_bytes: size,
                subscribers,
                pace: Pace::Closed {
                    window: THROUGHPUT_WINDOW,
                },
                burst: 1,
                ..settings.base.clone()
            };
            let label = format!("throughput-{subscribers}sub");
            push(
                plan,
                &label,
                &settings.systems,
                config,
                CLIENT_OUTBOUND_BYTES_MAX_DEFAULT,
            );
        }
    }
}

fn plan_slow(plan: &mut Plan, settings: &Settings) {
    let systems: Vec<SystemKind> = settings
        .systems
        .iter()
        .copied()
        .filter(|&system| system != SystemKind::Relay)
        .collect();
    if settings.systems.contains(&SystemKind::Relay) {
        plan.notes.push(
            "slow-subscriber: relay skipped: it has no per-subscriber queue, so one stalled reader \
             stalls every subscriber by construction"
                .to_owned(),
        );
    }
    plan.notes.push(format!(
        "slow-subscriber: {SLOW_SUBSCRIBERS} subscribers; in the stalled run the last stops reading after \
         the warm-up; latency is over the other {} in both runs. Tachyon runs with [limits] \
         client_outbound_bytes_max = {} (server default {}), past which it spools the stalled \
         subscriber to disk (disconnecting it at message_disk_limit); NATS keeps its defaults (max_pending 64 MiB, write_deadline 10 s)",
        SLOW_SUBSCRIBERS - 1,
        settings.slow_outbound_bytes_max,
        CLIENT_OUTBOUND_BYTES_MAX_DEFAULT
    ));
    if systems.is_empty() {
        return;
    }
    let base = LoadConfig {
        rate_per_second: settings.rate_per_second.unwrap_or(SLOW_RATE_PER_SECOND),
        payload_size_bytes: SLOW_SIZE_BYTES,
        subscribers: SLOW_SUBSCRIBERS,
        ..settings.base.clone()
    };
    for (label, stalled) in [(SLOW_BASELINE, false), (SLOW_STALLED, true)] {
        let config = LoadConfig {
            slow_subscriber: stalled,
            ..base.clone()
        };
        push(
            plan,
            label,
            &systems,
            config,
            settings.slow_outbound_bytes_max,
        );
    }
}

/// Per-case warm-up and duration of the sow-query scenario in smoke mode (4 cases: ~2 s with
/// loading the records).
pub const SOW_SMOKE_WARMUP: Duration = Duration::from_millis(50);
pub const SOW_SMOKE_DURATION: Duration = Duration::from_millis(300);

fn plan_sow(plan: &mut Plan, settings: &Settings) {
    let others: Vec<String> = settings
        .systems
        .iter()
        .filter(|&&system| system != SystemKind::Tachyon)
        .map(ToString::to_string)
        .collect();
    if !others.is_empty() {
        plan.notes.push(format!(
            "sow-query: {} skipped: no State of the World (SOW) to query; Tachyon only",
            others.join(" and ")
        ));
    }
    if !settings.systems.contains(&SystemKind::Tachyon) {
        return;
    }
    plan.notes.push(format!(
        "sow-query: {} records × {} B on SOW topic {} (key {}, qty = id % {}); closed loop, one \
         query at a time, latency from sending to the completed ack (sow_and_subscribe: to \
         group_end, then unsubscribe); not plotted",
        crate::sow::RECORDS,
        crate::sow::RECORD_BYTES,
        crate::sow::SOW_TOPIC,
        crate::sow::SOW_KEY_FIELD,
        crate::sow::QTY_MODULUS
    ));
    let (warmup, duration) = if settings.smoke {
        (SOW_SMOKE_WARMUP, SOW_SMOKE_DURATION)
    } else {
        (settings.base.warmup, settings.base.duration)
    };
    plan.sow = Some(SowPlan {
        warmup,
        duration,
        client_core: settings.base.subscriber_core,
    });
}

fn plan_persisted(plan: &mut Plan, settings: &Settings) {
    if settings.systems.contains(&SystemKind::Relay) {
        plan.notes.push(
            "persisted-ack: relay skipped: it keeps nothing, so there is no durability floor to \
             compare with; the reference is Tachyon itself on a topic outside the journal"
                .to_owned(),
        );
    }
    if settings.systems.contains(&SystemKind::Nats) {
        plan.notes.push(
            "persisted-ack: nats skipped: nats-server 2.9's JetStream acknowledges a publish once \
             it is in its file store's page cache, without an fsync per message (it syncs on a \
             timer; the sync_interval option, with `always`, arrived in 2.10), so its ack does not \
             mean durable and its latency is not comparable"
                .to_owned(),
        );
    }
    if !settings.systems.contains(&SystemKind::Tachyon) {
        return;
    }
    let rates = settings
        .rate_per_second
        .map_or_else(|| PERSISTED_RATES_PER_SECOND.to_vec(), |rate| vec![rate]);
    plan.notes.push(format!(
        "persisted-ack: Tachyon with [journal] topics = [\"{JOURNALED_TOPIC}\"] (other journal \
         options at their defaults; data_dir in a fresh directory under --journal-dir, on disk); \
         each publisher logs on with a new client name and sends {PERSISTED_SIZE_BYTES} B \
         publishes with a=persisted and s = 1, 2, 3, ..., open loop, no subscribers; latency = \
         arrival of the first persisted ack whose s covers the message (acks are conflated) − its \
         scheduled send time; received = messages acknowledged; a failure ack or a message never \
         acknowledged fails the run. {PERSISTED_NO_JOURNAL}: the same server and publisher on \
         {UNJOURNALED_TOPIC}, outside the journal, which Tachyon acks right after routing: the \
         difference is what durability (write + fdatasync) adds"
    ));
    for rate in rates {
        let config = LoadConfig {
            rate_per_second: rate,
            payload_size_bytes: PERSISTED_SIZE_BYTES,
            subscribers: 0,
            pace: Pace::Open,
            fanout: Fanout::Topic,
            slow_subscriber: false,
            ..settings.base.clone()
        };
        // Both runs start the same server config: only the topic differs.
        let params = ServerParams {
            shape: Shape {
                publishers: config.publishers,
                subscribers: 0,
            },
            journal_topic: Some(JOURNALED_TOPIC),
            ..ServerParams::default()
        };
        for (label, topic) in [
            (PERSISTED_JOURNAL, JOURNALED_TOPIC),
            (PERSISTED_NO_JOURNAL, UNJOURNALED_TOPIC),
        ] {
            plan.measurements.push(Planned {
                combination: Combination::of(label, SystemKind::Tachyon, &config),
                config: config.clone(),
                params,
                probe: Probe::PersistedAck { topic },
            });
        }
    }
}

/// How a result appears in the latency plot: its panel (by scenario label) and its line name.
/// The two persisted-ack runs share a panel, one line each, since they differ only in the topic.
pub fn plot_line(scenario: &str, system: SystemKind) -> (&str, String) {
    match scenario {
        PERSISTED_JOURNAL => ("persisted-ack", format!("{system} (journal)")),
        PERSISTED_NO_JOURNAL => ("persisted-ack", format!("{system} (no journal)")),
        _ => (scenario, system.to_string()),
    }
}

/// Default warm-up and duration for scenario runs.
pub fn default_durations(smoke: bool) -> (Duration, Duration) {
    if smoke {
        (Duration::from_millis(200), Duration::from_secs(1))
    } else {
        (Duration::from_secs(1), Duration::from_secs(5))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(systems: &[SystemKind]) -> Settings {
        Settings {
            systems: systems.to_vec(),
            base: LoadConfig::default(),
            rate_per_second: None,
            sizes: None,
            subscribers: None,
            slow_outbound_bytes_max: SLOW_OUTBOUND_BYTES_MAX,
            smoke: false,
        }
    }

    #[test]
    fn names_parse_and_all_expands_in_order() {
        let all = parse(&["all".to_owned()]).unwrap();
        assert_eq!(all, ALL);
        let some = parse(&[
            "throughput".to_owned(),
            "pubsub".to_owned(),
            "pubsub".to_owned(),
        ])
        .unwrap();
        assert_eq!(some, [ScenarioKind::Throughput, ScenarioKind::Pubsub]);
        assert!(parse(&["latencyy".to_owned()]).is_err());
    }

    #[test]
    fn persisted_ack_pairs_journal_and_no_journal_runs_at_each_rate() {
        let plan = plan(
            &[ScenarioKind::PersistedAck],
            &settings(&[SystemKind::Tachyon]),
        );
        assert!(plan.sow.is_none());
        let runs: Vec<(&str, u64, Probe)> = plan
            .measurements
            .iter()
            .map(|planned| {
                (
                    planned.combination.scenario.as_str(),
                    planned.config.rate_per_second,
                    planned.probe,
                )
            })
            .collect();
        let journal = Probe::PersistedAck {
            topic: JOURNALED_TOPIC,
        };
        let no_journal = Probe::PersistedAck {
            topic: UNJOURNALED_TOPIC,
        };
        assert_eq!(
            runs,
            [
                (PERSISTED_JOURNAL, 1_000, journal),
                (PERSISTED_NO_JOURNAL, 1_000, no_journal),
                (PERSISTED_JOURNAL, 10_000, journal),
                (PERSISTED_NO_JOURNAL, 10_000, no_journal),
                (PERSISTED_JOURNAL, 50_000, journal),
                (PERSISTED_NO_JOURNAL, 50_000, no_journal),
            ]
        );
        for planned in &plan.measurements {
            // The same server config for both: only the topic differs.
            assert_eq!(planned.params.journal_topic, Some(JOURNALED_TOPIC));
            assert_eq!(planned.config.payload_size_bytes, 1024);
            assert_eq!(planned.config.subscribers, 0);
            assert_eq!(planned.config.pace, Pace::Open);
        }
        assert_eq!(plan.notes.len(), 1);
        assert!(plan.notes[0].contains("fdatasync"), "{}", plan.notes[0]);
    }

    #[test]
    fn persisted_ack_says_why_relay_and_nats_are_left_out() {
        let systems = [SystemKind::Tachyon, SystemKind::Relay, SystemKind::Nats];
        let mut one_rate = settings(&systems);
        one_rate.rate_per_second = Some(2_000);
        let plan = plan(&[ScenarioKind::PersistedAck], &one_rate);
        assert_eq!(plan.measurements.len(), 2);
        assert!(plan
            .measurements
            .iter()
            .all(|planned| planned.combination.system == SystemKind::Tachyon
                && planned.config.rate_per_second == 2_000));
        let notes = plan.notes.join("\n");
        assert!(notes.contains("relay skipped"), "{notes}");
        assert!(notes.contains("nats skipped"), "{notes}");
        assert!(notes.contains("fsync"), "{notes}");
        let without = super::plan(
            &[ScenarioKind::PersistedAck],
            &settings(&[SystemKind::Nats]),
        );
        assert!(without.measurements.is_empty());
        assert_eq!(without.notes.len(), 1);
    }

    #[test]
    fn persisted_ack_runs_share_one_plot_panel() {
        assert_eq!(
            plot_line(PERSISTED_JOURNAL, SystemKind::Tachyon),
            ("persisted-ack", "tachyon (journal)".to_owned())
        );
        assert_eq!(
            plot_line(PERSISTED_NO_JOURNAL, SystemKind::Tachyon).0,
            "persisted-ack"
        );
        assert_eq!(
            plot_line("pubsub-1sub", SystemKind::Nats),
            ("pubsub-1sub", "nats".to_owned())
        );
    }

    #[test]
    fn sow_query_runs_tachyon_only_and_says_so() {
        let systems = [SystemKind::Tachyon, SystemKind::Relay, SystemKind::Nats];
        let mut smoke = settings(&systems);
        smoke.smoke = true;
        let plan = plan(&[ScenarioKind::SowQuery], &smoke);
        assert!(plan.measurements.is_empty());
        let sow = plan.sow.expect("planned");
        assert_eq!(sow.duration, SOW_SMOKE_DURATION);
        let notes = plan.notes.join("\n");
        assert!(notes.contains("relay and nats skipped"), "{notes}");
        let without = super::plan(&[ScenarioKind::SowQuery], &settings(&[SystemKind::Nats]));
        assert!(without.sow.is_none());
        assert!(without.notes[0].contains("Tachyon only"));
    }

    #[test]
    fn pubsub_covers_subscribers_sizes_and_systems_interleaved() {
        let systems = [SystemKind::Tachyon, SystemKind::Relay, SystemKind::Nats];
        let plan = plan(&[ScenarioKind::Pubsub], &settings(&systems));
        assert_eq!(plan.measurements.len(), 2 * 3 * 3);
        let first: Vec<SystemKind> = plan.measurements[..3]
            .iter()
            .map(|planned| planned.combination.system)
            .collect();
        assert_eq!(first, systems);
        let ten = &plan.measurements[9];
        assert_eq!(ten.combination.scenario, "pubsub-10sub");
        assert_eq!(ten.config.subscribers, 10);
        assert_eq!(ten.params.shape.subscribers, 10);
    }

    #[test]
    fn filtered_skips_the_relay_and_explains_nats() {
        let systems = [SystemKind::Tachyon, SystemKind::Relay, SystemKind::Nats];
        let plan = plan(&[ScenarioKind::Filtered], &settings(&systems));
        assert_eq!(plan.measurements.len(), 2);
        assert!(plan
            .measurements
            .iter()
            .all(|planned| planned.combination.system != SystemKind::Relay));
        let planned = &plan.measurements[0];
        assert_eq!(
            planned.config.subscribers * usize::from(FILTERED_KEYS),
            1_000
        );
        let notes = plan.notes.join("\n");
        assert!(notes.contains("relay skipped"), "{notes}");
        assert!(notes.contains("subject-based routing"), "{notes}");
    }

    #[test]
    fn slow_subscriber_pairs_a_baseline_with_a_stalled_run() {
        let systems = [SystemKind::Tachyon, SystemKind::Relay, SystemKind::Nats];
        let plan = plan(&[ScenarioKind::SlowSubscriber], &settings(&systems));
        let labels: Vec<(&str, bool)> = plan
            .measurements
            .iter()
            .map(|planned| {
                (
                    planned.combination.scenario.as_str(),
                    planned.config.slow_subscriber,
                )
            })
            .collect();
        assert_eq!(
            labels,
            [
                (SLOW_BASELINE, false),
                (SLOW_BASELINE, false),
                (SLOW_STALLED, true),
                (SLOW_STALLED, true)
            ]
        );
        assert_eq!(
            plan.measurements[2].params.client_outbound_bytes_max,
            SLOW_OUTBOUND_BYTES_MAX
        );
    }

    #[test]
    fn throughput_is_closed_loop() {
        let plan = plan(&[ScenarioKind::Throughput], &settings(&[SystemKind::Relay]));
        assert_eq!(plan.measurements.len(), 4);
        assert!(plan
            .measurements
            .iter()
            .all(|planned| matches!(planned.config.pace, Pace::Closed { .. })));
        assert!(plan.notes[0].contains("closed loop"));
    }
}
