//! Results: the environment every result is recorded with, the per-combination summary, the
//! ratios between systems, the printed table, the JSON file and the `.hdr` histogram files.
//!
//! The environment is read through a root path (normally `/`) so tests can feed a fake tree.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use hdrhistogram::serialization::{Serializer, V2Serializer};
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::load::{LoadConfig, LoadResult, Pace, SlowOutcome};
use crate::systems::SystemKind;

/// A run is flagged when it achieved less than this share of the target rate.
pub const RATE_SHORTFALL_TOLERANCE: f64 = 0.05;
/// The server's target: at most this many µs added at p50 over the raw TCP relay.
pub const TACHYON_ADDED_P50_TARGET_US: f64 = 10.0;

/// The machine a result was measured on.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Environment {
    /// `uname -r`.
    pub kernel: Option<String>,
    /// First `model name` of /proc/cpuinfo.
    pub cpu_model: Option<String>,
    /// Processors listed in /proc/cpuinfo.
    pub cpus_online: usize,
    /// Cores this process may run on (affinity mask).
    pub cpus_usable: usize,
    /// NUMA nodes under /sys/devices/system/node.
    pub numa_nodes: usize,
    /// cpu0's cpufreq governor, when the VM exposes one.
    pub cpu_governor: Option<String>,
    /// The kernel's current clock source (`kvm-clock`, `tsc`, ...).
    pub clocksource: Option<String>,
    /// True when /proc/cpuinfo lists the `hypervisor` flag.
    pub virtualized: bool,
    /// Host name.
    pub hostname: Option<String>,
    /// `nats-server --version`, when NATS was measured.
    pub nats_server_version: Option<String>,
    /// `git rev-parse HEAD` of the working directory, when available.
    pub git_commit: Option<String>,
    /// Seconds since the Unix epoch when the run started.
    pub started_unix_s: u64,
}

impl Environment {
    /// Reads the environment from the live system.
    pub fn collect() -> Self {
        let mut environment = Self::collect_from(Path::new("/"));
        environment.cpus_usable = core_affinity::get_core_ids().map_or(0, |cores| cores.len());
        environment.git_commit = command_output("git", &["rev-parse", "HEAD"]);
        environment.started_unix_s = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs());
        environment
    }

    /// Reads the parts that come from /proc and /sys under `root`.
    pub fn collect_from(root: &Path) -> Self {
        let read = |relative: &str| {
            fs::read_to_string(root.join(relative))
                .ok()
                .map(|text| text.trim().to_owned())
                .filter(|text| !text.is_empty())
        };
        let cpuinfo = read("proc/cpuinfo").unwrap_or_default();
        let cpuinfo_values = |key: &str| {
            cpuinfo
                .lines()
                .filter_map(|line| line.split_once(':'))
                .filter(|(name, _)| name.trim() == key)
                .map(|(_, value)| value.trim().to_owned())
                .collect::<Vec<_>>()
        };
        let numa_nodes = fs::read_dir(root.join("sys/devices/system/node")).map_or(0, |entries| {
            entries
                .filter_map(|entry| entry.ok())
                .filter(|entry| {
                    let name = entry.file_name();
                    let name = name.to_string_lossy();
                    name.strip_prefix("node")
                        .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
                })
                .count()
        });
        Self {
            kernel: read("proc/sys/kernel/osrelease"),
            cpu_model: cpuinfo_values("model name").into_iter().next(),
            cpus_online: cpuinfo_values("processor").len(),
            cpus_usable: 0,
            numa_nodes,
            cpu_governor: read("sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
            clocksource: read("sys/devices/system/clocksource/clocksource0/current_clocksource"),
            virtualized: cpuinfo_values("flags")
                .first()
                .is_some_and(|flags| flags.split(' ').any(|flag| flag == "hypervisor")),
            hostname: read("proc/sys/kernel/hostname"),
            nats_server_version: None,
            git_commit: None,
            started_unix_s: 0,
        }
    }

    /// One line for the top of the printed table.
    pub fn summary(&self) -> String {
        let or_unknown =
            |value: &Option<String>| value.clone().unwrap_or_else(|| "unknown".to_owned());
        format!(
            "kernel {} | {} | {} cpus ({} usable) | {} NUMA node(s) | governor {} | clocksource {}{}",
            or_unknown(&self.kernel),
            or_unknown(&self.cpu_model),
            self.cpus_online,
            self.cpus_usable,
            self.numa_nodes,
            or_unknown(&self.cpu_governor),
            or_unknown(&self.clocksource),
            if self.virtualized { " | virtualized" } else { "" },
        )
    }
}

/// Runs a command and returns its trimmed stdout (or stderr, where some tools print versions).
pub fn command_output(program: impl AsRef<std::ffi::OsStr>, arguments: &[&str]) -> Option<String> {
    let output = Command::new(program).args(arguments).output().ok()?;
    if !output.status.success() {
        return None;
    }
    let text = if output.stdout.is_empty() {
        output.stderr
    } else {
        output.stdout
    };
    Some(String::from_utf8_lossy(&text).trim().to_owned()).filter(|text| !text.is_empty())
}

/// Latency percentiles in µs.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p99_9: f64,
    /// 99.99th percentile.
    pub p99_99: f64,
    /// Largest latency recorded.
    pub max: f64,
    /// Arithmetic mean (for reference only; latency is not normally distributed).
    pub mean: f64,
}

impl Percentiles {
    /// Reads the percentiles from a histogram recorded in ns.
    pub fn from_histogram(histogram: &Histogram<u64>) -> Self {
        let us = |ns: u64| ns as f64 / 1_000.0;
        Self {
            p50: us(histogram.value_at_quantile(0.50)),
            p90: us(histogram.value_at_quantile(0.90)),
            p99: us(histogram.value_at_quantile(0.99)),
            p99_9: us(histogram.value_at_quantile(0.999)),
            p99_99: us(histogram.value_at_quantile(0.9999)),
            max: us(histogram.max()),
            mean: histogram.mean() / 1_000.0,
        }
    }
}

/// The summary of one (scenario × system × rate × size) measurement.
#[derive(Clone, Debug, Serialize)]
pub struct CombinationResult {
    /// Which scenario (and variant) this row belongs to: `latency`, `pubsub-10sub`, ...
    pub scenario: String,
    /// The system measured.
    pub system: SystemKind,
    /// Target publish rate (open loop; 0 for closed loop).
    pub rate_per_second: u64,
    /// Payload size.
    pub payload_size_bytes: usize,
    /// Publisher connections.
    pub publishers: usize,
    /// Subscriber connections (the slow one included).
    pub subscribers: usize,
    /// Messages sent back to back at each scheduled instant.
    pub burst: u64,
    /// Open loop, or closed loop with its window.
    pub pace: Pace,
    /// `None` when the measurement could not run (see `error`).
    pub latency_us: Option<Percentiles>,
    /// (percentile, µs) points of the latency distribution, for the plot.
    pub percentile_curve: Vec<(f64, f64)>,
    /// Latencies recorded (in-order messages after the warm-up, over all healthy subscribers).
    pub recorded: u64,
    /// Send rate achieved over the measurement window.
    pub achieved_rate_per_second: f64,
    /// Deliveries per second to the healthy subscribers over the measurement window.
    pub delivered_per_second: f64,
    /// Wire bytes per second into the server.
    pub bytes_in_per_second: f64,
    /// Wire bytes per second out of the server (to the healthy subscribers).
    pub bytes_out_per_second: f64,
    /// Messages sent, warm-up included.
    pub sent: u64,
    /// Messages sent after the warm-up.
    pub sent_measured: u64,
    /// Payloads received by the healthy subscribers, warm-up included (M × sent when complete).
    pub received: u64,
    /// Deliveries expected but not received before the drain deadline.
    pub lost: u64,
    /// Duplicated or reordered messages.
    pub out_of_order: u64,
    /// Deliveries that were not benchmark payloads.
    pub corrupt: u64,
    /// Largest publisher lag behind its schedule, in µs.
    pub send_lag_us_max: f64,
    /// The slow subscriber's fate, in slow-subscriber runs.
    pub slow_subscriber: Option<SlowOutcome>,
    /// CPU taken by other processes and the hypervisor during the measurement.
    pub noise: Option<crate::noise::Noise>,
    /// The transaction log's I/O path as the server logged it (persisted-ack runs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub journal_backend: Option<String>,
    /// Reasons not to trust this row (rate missed, loss, reordering, pinning, ...).
    pub warnings: Vec<String>,
    /// Why the measurement failed, when it did.
    pub error: Option<String>,
}

/// The shape of one measurement, as recorded with its result.
#[derive(Clone, Debug)]
pub struct Combination {
    /// Scenario label.
    pub scenario: String,
    /// System measured.
    pub system: SystemKind,
    /// Target rate (open loop).
    pub rate_per_second: u64,
    /// Payload size.
    pub payload_size_bytes: usize,
    /// Publisher connections.
    pub publishers: usize,
    /// Subscriber connections.
    pub subscribers: usize,
    /// Burst size.
    pub burst: u64,
    /// Pacing.
    pub pace: Pace,
}

impl Combination {
    /// The shape of a measurement of `system` with `config`.
    pub fn of(scenario: &str, system: SystemKind, config: &LoadConfig) -> Self {
        Self {
            scenario: scenario.to_owned(),
            system,
            rate_per_second: if config.pace == Pace::Open {
                config.rate_per_second
            } else {
                0
            },
            payload_size_bytes: config.payload_size_bytes,
            publishers: config.publishers,
            subscribers: config.subscribers,
            burst: config.burst,
            pace: config.pace,
        }
    }

    /// One-line description for progress and warning messages.
    pub fn describe(&self) -> String {
        let rate = match self.pace {
            Pace::Open => format!("{} msg/s", self.rate_per_second),
            Pace::Closed { window } => format!("closed loop (window {window})"),
        };
        format!(
            "{} {} {rate}, {} B, {} pub → {} sub{}",
            self.scenario,
            self.system,
            self.payload_size_bytes,
            self.publishers,
            self.subscribers,
            if self.burst > 1 {
                format!(", bursts of {}", self.burst)
            } else {
                String::new()
            }
        )
    }
}

/// Latency percentiles from 0 % to 99.999 %, on the log(1/(1−p)) axis: 20 points per decade of
/// nines, up to the resolution the sample count supports, then the maximum.
pub fn percentile_curve(histogram: &Histogram<u64>) -> Vec<(f64, f64)> {
    if histogram.is_empty() {
        return Vec::new();
    }
    let nines_max = (histogram.len() as f64).log10().min(5.0);
    let mut points = Vec::new();
    let steps = (nines_max * 20.0).floor() as u32;
    for step in 0..=steps {
        let nines = f64::from(step) / 20.0;
        let quantile = 1.0 - 10f64.powf(-nines);
        points.push((
            quantile * 100.0,
            histogram.value_at_quantile(quantile) as f64 / 1_000.0,
        ));
    }
    let last_quantile = 1.0 - 10f64.powf(-nines_max);
    points.push((last_quantile * 100.0, histogram.max() as f64 / 1_000.0));
    points
}

impl CombinationResult {
    /// Summarises a finished measurement and flags what makes it suspect.
    pub fn from_load(combination: &Combination, load: &LoadResult) -> Self {
        let mut warnings = load.problems.clone();
        if combination.pace == Pace::Open {
            let rate = combination.rate_per_second;
            let shortfall = 1.0 - load.achieved_rate_per_second / rate as f64;
            if shortfall > RATE_SHORTFALL_TOLERANCE {
                warnings.push(format!(
                    "target rate missed: achieved {:.0} of {rate} msg/s ({:.1} % short)",
                    load.achieved_rate_per_second,
                    shortfall * 100.0
                ));
            }
            // The publisher kept its schedule but the subscribers got the messages more slowly:
            // the server fell behind and queued, and latency measures its backlog.
            let expected = load.achieved_rate_per_second * load.healthy_subscribers as f64;
            if load.delivered_per_second > 0.0
                && load.delivered_per_second < expected * (1.0 - RATE_SHORTFALL_TOLERANCE)
            {
                warnings.push(format!(
                    "server fell behind: delivered {:.0} of the {expected:.0} deliveries/s sent; the backlog grew during the run",
                    load.delivered_per_second
                ));
            }
        }
        if load.lost > 0 {
            warnings.push(format!(
                "{} of {} deliveries lost",
                load.lost,
                load.received + load.lost
            ));
        }
        if load.out_of_order > 0 {
            warnings.push(format!(
                "{} messages duplicated or out of order",
                load.out_of_order
            ));
        }
        if load.corrupt > 0 {
            warnings.push(format!(
                "{} deliveries were not benchmark payloads",
                load.corrupt
            ));
        }
        warnings.extend(load.errors.iter().map(|error| format!("error: {error}")));
        let error = (!load.errors.is_empty()).then(|| load.errors.join("; "));
        Self {
            latency_us: (!load.histogram.is_empty())
                .then(|| Percentiles::from_histogram(&load.histogram)),
            percentile_curve: percentile_curve(&load.histogram),
            recorded: load.histogram.len(),
            achieved_rate_per_second: load.achieved_rate_per_second,
            delivered_per_second: load.delivered_per_second,
            bytes_in_per_second: load.bytes_in_per_second,
            bytes_out_per_second: load.bytes_out_per_second,
            sent: load.sent,
            sent_measured: load.sent_measured,
            received: load.received,
            lost: load.lost,
            out_of_order: load.out_of_order,
            corrupt: load.corrupt,
            send_lag_us_max: load.send_lag_ns_max as f64 / 1_000.0,
            slow_subscriber: load.slow,
            warnings,
            ..Self::failed(combination, String::new())
        }
        .with_error(error)
    }

    fn with_error(mut self, error: Option<String>) -> Self {
        self.error = error;
        self
    }

    /// True when other processes used enough CPU during the measurement to distort it.
    pub fn is_noisy(&self) -> bool {
        self.noise.is_some_and(|noise| {
            noise.background_cpu_percent > crate::noise::BACKGROUND_CPU_NOISY_PERCENT
        })
    }

    /// A row for a measurement that could not run.
    pub fn failed(combination: &Combination, error: String) -> Self {
        Self {
            scenario: combination.scenario.clone(),
            system: combination.system,
            rate_per_second: combination.rate_per_second,
            payload_size_bytes: combination.payload_size_bytes,
            publishers: combination.publishers,
            subscribers: combination.subscribers,
            burst: combination.burst,
            pace: combination.pace,
            latency_us: None,
            percentile_curve: Vec::new(),
            recorded: 0,
            achieved_rate_per_second: 0.0,
            delivered_per_second: 0.0,
            bytes_in_per_second: 0.0,
            bytes_out_per_second: 0.0,
            sent: 0,
            sent_measured: 0,
            received: 0,
            lost: 0,
            out_of_order: 0,
            corrupt: 0,
            send_lag_us_max: 0.0,
            slow_subscriber: None,
            noise: None,
            journal_backend: None,
            warnings: vec![format!("measurement failed: {error}")],
            error: Some(error),
        }
    }

    /// The row's identity for files and messages: `<system>-<rate>-<size>` for the latency
    /// probe, prefixed with the scenario otherwise.
    pub fn file_stem(&self) -> String {
        let base = format!(
            "{}-{}-{}",
            self.system, self.rate_per_second, self.payload_size_bytes
        );
        if self.scenario == LATENCY_SCENARIO {
            base
        } else {
            format!("{}-{base}", self.scenario)
        }
    }

    /// True for rows measured closed loop (their latency is not coordinated-omission correct).
    pub fn is_closed_loop(&self) -> bool {
        matches!(self.pace, Pace::Closed { .. })
    }
}

/// The scenario label of `tachyon-bench latency` rows.
pub const LATENCY_SCENARIO: &str = "latency";

/// How one system compares with another in the same scenario, rate and size
/// (numerator / denominator).
#[derive(Clone, Debug, Serialize)]
pub struct Ratio {
    /// Scenario label of both measurements.
    pub scenario: String,
    /// The system being judged.
    pub numerator: SystemKind,
    /// The reference system.
    pub denominator: SystemKind,
    /// Target publish rate of both measurements.
    pub rate_per_second: u64,
    /// Payload size of both measurements.
    pub payload_size_bytes: usize,
    /// p50 ratio (latency; for closed-loop rows, delivered msg/s instead).
    pub p50: f64,
    /// p90 ratio.
    pub p90: f64,
    /// p99 ratio.
    pub p99: f64,
    /// p99.9 ratio.
    pub p99_9: f64,
    /// numerator p50 − denominator p50, in µs.
    pub p50_added_us: f64,
    /// Closed loop only: numerator delivered msg/s ÷ denominator delivered msg/s.
    pub throughput: Option<f64>,
    /// True when either measurement ran with noisy background load (see `noise.rs`).
    pub noisy: bool,
}

/// The pairs compared: Tachyon against the floor and against NATS; NATS against the floor for
/// context (and for runs without Tachyon).
const RATIO_PAIRS: [(SystemKind, SystemKind); 3] = [
    (SystemKind::Tachyon, SystemKind::Relay),
    (SystemKind::Tachyon, SystemKind::Nats),
    (SystemKind::Nats, SystemKind::Relay),
];

/// Computes every available ratio; pairs come from the same run, so noise drift hits both.
pub fn ratios(results: &[CombinationResult]) -> Vec<Ratio> {
    let find = |scenario: &str, system, rate, size| {
        results.iter().find(|result| {
            result.scenario == scenario
                && result.system == system
                && result.rate_per_second == rate
                && result.payload_size_bytes == size
        })
    };
    let mut combinations: Vec<(String, u64, usize)> = Vec::new();
    for result in results {
        let key = (
            result.scenario.clone(),
            result.rate_per_second,
            result.payload_size_bytes,
        );
        if !combinations.contains(&key) {
            combinations.push(key);
        }
    }
    let mut ratios = Vec::new();
    for (scenario, rate, size) in combinations {
        for (numerator, denominator) in RATIO_PAIRS {
            let (Some(top_result), Some(bottom_result)) = (
                find(&scenario, numerator, rate, size),
                find(&scenario, denominator, rate, size),
            ) else {
                continue;
            };
            if let (Some(top), Some(bottom)) = (top_result.latency_us, bottom_result.latency_us) {
                ratios.push(Ratio {
                    scenario: scenario.clone(),
                    numerator,
                    denominator,
                    rate_per_second: rate,
                    payload_size_bytes: size,
                    p50: top.p50 / bottom.p50,
                    p90: top.p90 / bottom.p90,
                    p99: top.p99 / bottom.p99,
                    p99_9: top.p99_9 / bottom.p99_9,
                    p50_added_us: top.p50 - bottom.p50,
                    throughput: (top_result.is_closed_loop()
                        && bottom_result.delivered_per_second > 0.0)
                        .then(|| {
                            top_result.delivered_per_second / bottom_result.delivered_per_second
                        }),
                    noisy: top_result.is_noisy() || bottom_result.is_noisy(),
                });
            }
        }
    }
    ratios
}

/// Renders the latency tables, one per scenario (closed-loop rows go to [`throughput_table`]).
pub fn results_table(results: &[CombinationResult]) -> String {
    let mut table = String::new();
    let _ = writeln!(
        table,
        "latency in µs from each message's scheduled send time (over all healthy subscribers); rate and \
         achieved in msg/s; size in bytes; lost = deliveries missing after the drain; \
         bg% = CPU other processes used meanwhile (% of one core)"
    );
    for scenario in scenarios_in(results) {
        let rows: Vec<&CombinationResult> = results
            .iter()
            .filter(|result| result.scenario == scenario && !result.is_closed_loop())
            .collect();
        if rows.is_empty() {
            continue;
        }
        let _ = writeln!(table, "\n[{scenario}]");
        let _ = writeln!(
            table,
            "{:<8} {:>4} {:>6} {:>5} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>8} {:>9} {:>6} {:>5}",
            "system",
            "subs",
            "rate",
            "size",
            "p50",
            "p90",
            "p99",
            "p99.9",
            "p99.99",
            "max",
            "achieved",
            "sent",
            "received",
            "lost",
            "bg%"
        );
        for result in rows {
            let rate = short_count(result.rate_per_second);
            match result.latency_us {
                Some(latency) => {
                    let _ = writeln!(
                        table,
                        "{:<8} {:>4} {:>6} {:>5} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>9.1} {:>9.0} {:>8} {:>9} {:>6} {:>5}{}",
                        result.system,
                        result.subscribers,
                        rate,
                        result.payload_size_bytes,
                        latency.p50,
                        latency.p90,
                        latency.p99,
                        latency.p99_9,
                        latency.p99_99,
                        latency.max,
                        result.achieved_rate_per_second,
                        result.sent,
                        result.received,
                        result.lost,
                        result.noise.map_or_else(|| "?".to_owned(), |noise| format!("{:.0}", noise.background_cpu_percent)),
                        if result.warnings.is_empty() { "" } else { "  !" },
                    );
                    // Figures with a broken promise behind them (a failed or missing persisted
                    // ack) are shown, and so is the failure.
                    if let Some(error) = &result.error {
                        let _ = writeln!(table, "{:<8} FAILED: {error}", "");
                    }
                }
                None => {
                    let _ = writeln!(
                        table,
                        "{:<8} {:>4} {:>6} {:>5}  FAILED: {}",
                        result.system,
                        result.subscribers,
                        rate,
                        result.payload_size_bytes,
                        result.error.as_deref().unwrap_or("no messages recorded")
                    );
                }
            }
        }
    }
    table
}

/// Renders the closed-loop rows: rates in and out; empty when there are none.
pub fn throughput_table(results: &[CombinationResult]) -> String {
    let rows: Vec<&CombinationResult> = results
        .iter()
        .filter(|result| result.is_closed_loop())
        .collect();
    let mut table = String::new();
    if rows.is_empty() {
        return table;
    }
    let window = rows.iter().find_map(|result| match result.pace {
        Pace::Closed { window } => Some(window),
        Pace::Open => None,
    });
    let _ = writeln!(
        table,
        "max throughput: closed loop (each publisher sends as fast as the server takes messages, at most {} \
         in flight); in = publishers → server, out = server → subscribers; MB = 10^6 wire bytes \
         (framing and headers included)",
        window.unwrap_or(0)
    );
    let _ = writeln!(
        table,
        "{:<20} {:<8} {:>4} {:>5} {:>11} {:>8} {:>11} {:>8} {:>8} {:>6} {:>5}",
        "scenario",
        "system",
        "subs",
        "size",
        "in msg/s",
        "in MB/s",
        "out msg/s",
        "out MB/s",
        "p50 µs",
        "lost",
        "bg%"
    );
    for result in rows {
        if let Some(error) = &result.error {
            let _ = writeln!(
                table,
                "{:<20} {:<8} {:>4} {:>5}  FAILED: {error}",
                result.scenario, result.system, result.subscribers, result.payload_size_bytes
            );
            continue;
        }
        let _ = writeln!(
            table,
            "{:<20} {:<8} {:>4} {:>5} {:>11.0} {:>8.1} {:>11.0} {:>8.1} {:>8.1} {:>6} {:>5}{}",
            result.scenario,
            result.system,
            result.subscribers,
            result.payload_size_bytes,
            result.achieved_rate_per_second,
            result.bytes_in_per_second / 1e6,
            result.delivered_per_second,
            result.bytes_out_per_second / 1e6,
            result.latency_us.map_or(0.0, |latency| latency.p50),
            result.lost,
            result.noise.map_or_else(
                || "?".to_owned(),
                |noise| format!("{:.0}", noise.background_cpu_percent)
            ),
            if result.warnings.is_empty() {
                ""
            } else {
                "  !"
            },
        );
    }
    table
}

/// Scenario labels in first-seen order.
fn scenarios_in(results: &[CombinationResult]) -> Vec<String> {
    let mut scenarios: Vec<String> = Vec::new();
    for result in results {
        if !scenarios.contains(&result.scenario) {
            scenarios.push(result.scenario.clone());
        }
    }
    scenarios
}

/// Renders the ratio table, with the Tachyon target verdict on latency Tachyon/relay rows.
pub fn ratios_table(ratios: &[Ratio]) -> String {
    let mut table = String::new();
    if ratios.is_empty() {
        return table;
    }
    let _ = writeln!(
        table,
        "{:<20} {:<13} {:>6} {:>5} {:>7} {:>7} {:>7} {:>7} {:>10} {:>12}",
        "scenario", "ratio", "rate", "size", "p50", "p90", "p99", "p99.9", "p50 +µs", "throughput"
    );
    for ratio in ratios {
        let verdict = if ratio.numerator == SystemKind::Tachyon
            && ratio.denominator == SystemKind::Relay
            && ratio.throughput.is_none()
        {
            if ratio.p50_added_us <= TACHYON_ADDED_P50_TARGET_US {
                format!("  target ≤ {TACHYON_ADDED_P50_TARGET_US} µs: met")
            } else {
                format!("  target ≤ {TACHYON_ADDED_P50_TARGET_US} µs: MISSED")
            }
        } else {
            String::new()
        };
        let _ = writeln!(
            table,
            "{:<20} {:<13} {:>6} {:>5} {:>7.2} {:>7.2} {:>7.2} {:>7.2} {:>10.1} {:>12}{verdict}{}",
            ratio.scenario,
            format!("{}/{}", ratio.numerator, ratio.denominator),
            if ratio.throughput.is_some() {
                "closed".to_owned()
            } else {
                short_count(ratio.rate_per_second)
            },
            ratio.payload_size_bytes,
            ratio.p50,
            ratio.p90,
            ratio.p99,
            ratio.p99_9,
            ratio.p50_added_us,
            ratio
                .throughput
                .map_or_else(|| "-".to_owned(), |value| format!("{value:.2}×")),
            if ratio.noisy {
                "  (noisy: bg > 20 %)"
            } else {
                ""
            },
        );
    }
    table
}

/// The slow-subscriber comparison: each system's healthy subscribers with every subscriber
/// reading (`baseline`) and with one stalled (`stalled`), side by side.
pub fn slow_subscriber_table(
    results: &[CombinationResult],
    baseline: &str,
    stalled: &str,
) -> String {
    let mut table = String::new();
    let pairs: Vec<(&CombinationResult, &CombinationResult)> = results
        .iter()
        .filter(|result| result.scenario == baseline)
        .filter_map(|base| {
            results
                .iter()
                .find(|other| {
                    other.scenario == stalled
                        && other.system == base.system
                        && other.payload_size_bytes == base.payload_size_bytes
                        && other.rate_per_second == base.rate_per_second
                })
                .map(|stall| (base, stall))
        })
        .collect();
    if pairs.is_empty() {
        return table;
    }
    let _ = writeln!(
        table,
        "slow subscriber: healthy subscribers' latency (µs) with every subscriber reading vs one stalled"
    );
    let _ = writeln!(
        table,
        "{:<8} {:>9} {:>9} {:>9} {:>9} {:>10} {:>6} {:>14}",
        "system",
        "base p99",
        "stall p99",
        "base 99.9",
        "stall 99.9",
        "p99.9 ×",
        "lost",
        "slow dropped?"
    );
    for (base, stall) in pairs {
        let (Some(before), Some(after)) = (base.latency_us, stall.latency_us) else {
            let _ = writeln!(table, "{:<8}  (a run failed; see above)", base.system);
            continue;
        };
        let dropped = match stall.slow_subscriber {
            Some(slow) if slow.disconnected => "disconnected".to_owned(),
            Some(slow) => format!("no ({:.1} MB late)", slow.backlog_bytes_read as f64 / 1e6),
            None => "?".to_owned(),
        };
        let _ = writeln!(
            table,
            "{:<8} {:>9.1} {:>9.1} {:>9.1} {:>10.1} {:>10.2} {:>6} {:>14}",
            base.system,
            before.p99,
            after.p99,
            before.p99_9,
            after.p99_9,
            after.p99_9 / before.p99_9,
            stall.lost,
            dropped
        );
    }
    table
}

/// The persisted-ack comparison: at each rate, latency to the persisted ack on the journaled
/// topic (`journal`) and on the unjournaled one (`no_journal`, acked after routing), and what
/// durability adds. Empty when there are no such rows.
pub fn persisted_table(results: &[CombinationResult], journal: &str, no_journal: &str) -> String {
    let mut table = String::new();
    let rows: Vec<&CombinationResult> = results
        .iter()
        .filter(|result| result.scenario == journal)
        .collect();
    if rows.is_empty() {
        return table;
    }
    let backends: Vec<&str> = {
        let mut backends: Vec<&str> = Vec::new();
        for backend in rows.iter().filter_map(|row| row.journal_backend.as_deref()) {
            if !backends.contains(&backend) {
                backends.push(backend);
            }
        }
        backends
    };
    let _ = writeln!(
        table,
        "persisted ack: µs from each message's scheduled send to the persisted ack covering it; journal = \
         written and fdatasync'd (backend: {}), no journal = acked after routing; acked = messages \
         covered by a success ack",
        if backends.is_empty() {
            "not reported".to_owned()
        } else {
            backends.join(", ")
        }
    );
    let _ = writeln!(
        table,
        "{:>6} {:<22} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>8} {:>6}",
        "rate", "variant", "p50", "p90", "p99", "p99.9", "max", "achieved", "acked", "lost"
    );
    let line =
        |table: &mut String, label: &str, result: &CombinationResult| match result.latency_us {
            Some(latency) => {
                let _ =
                    writeln!(
                table,
                "{:>6} {:<22} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>9.1} {:>9.0} {:>8} {:>6}{}",
                short_count(result.rate_per_second),
                label,
                latency.p50,
                latency.p90,
                latency.p99,
                latency.p99_9,
                latency.max,
                result.achieved_rate_per_second,
                result.received,
                result.lost,
                if result.warnings.is_empty() { "" } else { "  !" },
            );
            }
            None => {
                let _ = writeln!(
                    table,
                    "{:>6} {:<22}  FAILED: {}",
                    short_count(result.rate_per_second),
                    label,
                    result.error.as_deref().unwrap_or("no messages recorded")
                );
            }
        };
    for row in rows {
        let system = row.system;
        line(&mut table, &format!("{system} (journal)"), row);
        let reference = results.iter().find(|other| {
            other.scenario == no_journal
                && other.system == row.system
                && other.rate_per_second == row.rate_per_second
                && other.payload_size_bytes == row.payload_size_bytes
        });
        let Some(reference) = reference else {
            continue;
        };
        line(&mut table, &format!("{system} (no journal)"), reference);
        if let (Some(with), Some(without)) = (row.latency_us, reference.latency_us) {
            let _ = writeln!(
                table,
                "{:>6} {:<22} {:>+8.1} {:>+8.1} {:>+8.1} {:>+8.1} {:>+9.1}",
                "",
                "durability adds",
                with.p50 - without.p50,
                with.p90 - without.p90,
                with.p99 - without.p99,
                with.p99_9 - without.p99_9,
                with.max - without.max,
            );
        }
    }
    table
}

/// `10000` → `10k`, for narrow columns.
fn short_count(count: u64) -> String {
    if count >= 1_000 && (count / 1_000) * 1_000 == count {
        format!("{}k", count / 1_000)
    } else {
        count.to_string()
    }
}

/// Everything one invocation measured, as written to `--json`.
#[derive(Debug, Serialize)]
pub struct RunReport {
    /// Which tool and subcommand wrote this.
    pub tool: &'static str,
    /// The tool's crate version.
    pub tool_version: &'static str,
    /// The invocation, to reproduce the run.
    pub command_line: Vec<String>,
    /// The machine.
    pub environment: Environment,
    /// Rates, sizes, durations, placement and binaries used.
    pub settings: serde_json::Value,
    /// One entry per scenario × system × rate × size.
    pub results: Vec<CombinationResult>,
    /// Comparisons between systems at equal rate and size.
    pub ratios: Vec<Ratio>,
    /// The sow-query scenario (Tachyon only), when it ran.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sow_query: Vec<crate::sow::SowResult>,
    /// Why the sow-query scenario failed, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sow_query_error: Option<String>,
}

/// Writes the report as pretty JSON.
pub fn write_json(report: &RunReport, path: &Path) -> Result<()> {
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    serde_json::to_writer_pretty(BufWriter::new(file), report)
        .with_context(|| format!("writing {}", path.display()))
}

/// Writes one histogram with the V2 serializer (uncompressed, binary) and returns its path.
pub fn write_histogram(
    directory: &Path,
    result: &CombinationResult,
    histogram: &Histogram<u64>,
) -> Result<PathBuf> {
    fs::create_dir_all(directory).with_context(|| format!("creating {}", directory.display()))?;
    let path = directory.join(format!("{}.hdr", result.file_stem()));
    let mut writer = BufWriter::new(
        File::create(&path).with_context(|| format!("creating {}", path.display()))?,
    );
    V2Serializer::new()
        .serialize(histogram, &mut writer)
        .map_err(|error| anyhow::anyhow!("serializing {}: {error:?}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::serialization::Deserializer;

    #[test]
    fn environment_reads_a_fake_tree() {
        let root = std::env::temp_dir().join(format!("tachyon-bench-env-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let write = |relative: &str, text: &str| {
            let path = root.join(relative);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        };
        write("proc/sys/kernel/osrelease", "6.18.0-test\n");
        write(
            "proc/cpuinfo",
            "processor\t: 0\nmodel name\t: Fake EPYC\nflags\t\t: fpu hypervisor sse\n\nprocessor\t: 1\nmodel name\t: Fake EPYC\n",
        );
        write("sys/devices/system/node/node0/cpulist", "0-1");
        write("sys/devices/system/node/possible", "0");
        write(
            "sys/devices/system/clocksource/clocksource0/current_clocksource",
            "kvm-clock\n",
        );
        let environment = Environment::collect_from(&root);
        fs::remove_dir_all(&root).unwrap();
        assert_eq!(environment.kernel.as_deref(), Some("6.18.0-test"));
        assert_eq!(environment.cpu_model.as_deref(), Some("Fake EPYC"));
        assert_eq!(environment.cpus_online, 2);
        assert_eq!(environment.numa_nodes, 1);
        assert_eq!(environment.clocksource.as_deref(), Some("kvm-clock"));
        assert_eq!(environment.cpu_governor, None);
        assert!(environment.virtualized);
    }

    fn load_result(achieved: f64, lost: u64, out_of_order: u64) -> LoadResult {
        let mut histogram = Histogram::<u64>::new(3).unwrap();
        for value in 1..=1_000u64 {
            histogram.record(value * 1_000).unwrap();
        }
        LoadResult {
            histogram,
            sent: 1_000,
            sent_measured: 1_000,
            received: 1_000 - lost,
            lost,
            out_of_order,
            corrupt: 0,
            achieved_rate_per_second: achieved,
            delivered_per_second: achieved,
            bytes_in_per_second: achieved * 200.0,
            bytes_out_per_second: achieved * 220.0,
            send_lag_ns_max: 0,
            slow: None,
            healthy_subscribers: 1,
            problems: Vec::new(),
            errors: Vec::new(),
        }
    }

    fn combination(scenario: &str, system: SystemKind, size: usize) -> Combination {
        let config = LoadConfig {
            payload_size_bytes: size,
            ..LoadConfig::default()
        };
        Combination::of(scenario, system, &config)
    }

    #[test]
    fn warnings_flag_rate_shortfall_loss_and_reordering() {
        let relay = combination(LATENCY_SCENARIO, SystemKind::Relay, 128);
        let clean = CombinationResult::from_load(&relay, &load_result(9_900.0, 0, 0));
        assert!(clean.warnings.is_empty(), "{:?}", clean.warnings);
        let latency = clean.latency_us.unwrap();
        assert!((latency.p50 - 500.0).abs() < 1.0, "{latency:?}");
        assert_eq!(clean.error, None);
        assert!(!clean.percentile_curve.is_empty());
        let bad = CombinationResult::from_load(&relay, &load_result(9_000.0, 3, 2));
        assert_eq!(bad.warnings.len(), 3, "{:?}", bad.warnings);
        let mut behind = load_result(10_000.0, 0, 0);
        behind.delivered_per_second = 6_000.0;
        let behind = CombinationResult::from_load(&relay, &behind);
        assert_eq!(behind.warnings.len(), 1, "{:?}", behind.warnings);
        assert!(behind.warnings[0].contains("fell behind"));
    }

    #[test]
    fn ratios_pair_systems_at_equal_rate_and_size() {
        let mut results = Vec::new();
        for (system, scale) in [
            (SystemKind::Tachyon, 2.0),
            (SystemKind::Relay, 1.0),
            (SystemKind::Nats, 4.0),
        ] {
            let mut result = CombinationResult::from_load(
                &combination("pubsub-1sub", system, 128),
                &load_result(10_000.0, 0, 0),
            );
            let latency = result.latency_us.as_mut().unwrap();
            latency.p50 = 10.0 * scale;
            latency.p90 = 20.0 * scale;
            results.push(result);
        }
        let ratios = ratios(&results);
        assert_eq!(ratios.len(), 3);
        assert_eq!(
            (ratios[0].p50, ratios[0].p90, ratios[0].p50_added_us),
            (2.0, 2.0, 10.0)
        );
        assert_eq!(ratios[1].p50, 0.5);
        assert!(ratios_table(&ratios).contains("met"));
        assert!(results_table(&results).contains("tachyon"));
        assert!(results_table(&results).contains("[pubsub-1sub]"));
        // A different scenario never pairs with these.
        let mut other = results[1].clone();
        other.scenario = "pubsub-10sub".to_owned();
        results.push(other);
        assert_eq!(super::ratios(&results).len(), 3);
    }

    #[test]
    fn percentile_curve_runs_from_zero_to_the_max() {
        let load = load_result(10_000.0, 0, 0);
        let curve = percentile_curve(&load.histogram);
        assert_eq!(curve.first().unwrap().0, 0.0);
        // 1,000 samples resolve three nines.
        assert!((curve.last().unwrap().0 - 99.9).abs() < 1e-9, "{curve:?}");
        assert!((curve.last().unwrap().1 - 1_000.0).abs() < 1.0, "{curve:?}");
        assert!(curve.windows(2).all(|pair| pair[0].1 <= pair[1].1));
    }

    #[test]
    fn closed_loop_rows_go_to_the_throughput_table_with_ratios() {
        let mut results = Vec::new();
        for (system, rate) in [
            (SystemKind::Tachyon, 50_000.0),
            (SystemKind::Relay, 100_000.0),
        ] {
            let config = LoadConfig {
                pace: Pace::Closed { window: 1_000 },
                ..LoadConfig::default()
            };
            let combination = Combination::of("throughput-1sub", system, &config);
            results.push(CombinationResult::from_load(
                &combination,
                &load_result(rate, 0, 0),
            ));
        }
        // No rate warning for a closed loop.
        assert!(results[0].warnings.is_empty(), "{:?}", results[0].warnings);
        let table = throughput_table(&results);
        assert!(table.contains("closed loop"), "{table}");
        assert!(table.contains("50000"), "{table}");
        assert!(!results_table(&results).contains("[throughput-1sub]"));
        let ratios = super::ratios(&results);
        assert_eq!(ratios[0].throughput, Some(0.5));
        assert!(ratios_table(&ratios).contains("0.50×"));
    }

    #[test]
    fn slow_subscriber_table_pairs_baseline_and_stalled_runs() {
        let mut base = CombinationResult::from_load(
            &combination("slow-sub-baseline", SystemKind::Tachyon, 1024),
            &load_result(10_000.0, 0, 0),
        );
        base.latency_us.as_mut().unwrap().p99_9 = 100.0;
        let mut stalled = base.clone();
        stalled.scenario = "slow-sub-stalled".to_owned();
        stalled.latency_us.as_mut().unwrap().p99_9 = 150.0;
        stalled.slow_subscriber = Some(SlowOutcome {
            disconnected: true,
            backlog_bytes_read: 0,
        });
        let table =
            slow_subscriber_table(&[base, stalled], "slow-sub-baseline", "slow-sub-stalled");
        assert!(table.contains("1.50"), "{table}");
        assert!(table.contains("disconnected"), "{table}");
    }

    #[test]
    fn errors_keep_the_figures_but_fail_the_row() {
        let mut load = load_result(1_000.0, 2, 0);
        load.errors
            .push("2 of 1000 messages were never acknowledged as persisted".to_owned());
        let result = CombinationResult::from_load(
            &combination("persisted-ack-journal", SystemKind::Tachyon, 1024),
            &load,
        );
        assert!(result.latency_us.is_some());
        let error = result.error.as_deref().unwrap();
        assert!(error.contains("never acknowledged"), "{error}");
        assert!(result
            .warnings
            .iter()
            .any(|warning| warning.starts_with("error: 2 of 1000")));
        let table = results_table(std::slice::from_ref(&result));
        assert!(table.contains("FAILED: 2 of 1000"), "{table}");
    }

    #[test]
    fn persisted_table_shows_what_durability_adds() {
        let mut results = Vec::new();
        for (scenario, p50, backend) in [
            ("persisted-ack-journal", 300.0, Some("io_uring+O_DIRECT")),
            ("persisted-ack-no-journal", 20.0, Some("io_uring+O_DIRECT")),
            ("pubsub-1sub", 15.0, None),
        ] {
            let mut result = CombinationResult::from_load(
                &combination(scenario, SystemKind::Tachyon, 1024),
                &load_result(10_000.0, 0, 0),
            );
            result.latency_us.as_mut().unwrap().p50 = p50;
            result.journal_backend = backend.map(str::to_owned);
            results.push(result);
        }
        let table = persisted_table(
            &results,
            "persisted-ack-journal",
            "persisted-ack-no-journal",
        );
        assert!(table.contains("tachyon (journal)"), "{table}");
        assert!(table.contains("tachyon (no journal)"), "{table}");
        assert!(table.contains("durability adds"), "{table}");
        assert!(table.contains("+280.0"), "{table}");
        assert!(table.contains("backend: io_uring+O_DIRECT"), "{table}");
        assert!(persisted_table(&results[2..], "persisted-ack-journal", "x").is_empty());
    }

    #[test]
    fn histogram_file_round_trips() {
        let directory =
            std::env::temp_dir().join(format!("tachyon-bench-hdr-{}", std::process::id()));
        let load = load_result(10_000.0, 0, 0);
        let result = CombinationResult::from_load(
            &combination(LATENCY_SCENARIO, SystemKind::Nats, 1024),
            &load,
        );
        let path = write_histogram(&directory, &result, &load.histogram).unwrap();
        assert!(path.ends_with("nats-10000-1024.hdr"));
        let scenario_result = CombinationResult::from_load(
            &combination("pubsub-10sub", SystemKind::Nats, 1024),
            &load,
        );
        assert_eq!(scenario_result.file_stem(), "pubsub-10sub-nats-10000-1024");
        let mut reader = File::open(&path).unwrap();
        let read_back: Histogram<u64> = Deserializer::new().deserialize(&mut reader).unwrap();
        fs::remove_dir_all(&directory).unwrap();
        assert_eq!(read_back, load.histogram);
    }
}
