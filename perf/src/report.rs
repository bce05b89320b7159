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

use crate::load::LoadResult;
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

/// The summary of one (system × rate × size) measurement.
#[derive(Clone, Debug, Serialize)]
pub struct CombinationResult {
    /// The system measured.
    pub system: SystemKind,
    /// Target publish rate.
    pub rate_per_second: u64,
    /// Payload size.
    pub payload_size_bytes: usize,
    /// `None` when the measurement could not run (see `error`).
    pub latency_us: Option<Percentiles>,
    /// Latencies recorded (in-order messages after the warm-up).
    pub recorded: u64,
    /// Send rate achieved over the measurement window.
    pub achieved_rate_per_second: f64,
    /// Messages sent, warm-up included.
    pub sent: u64,
    /// Messages sent after the warm-up.
    pub sent_measured: u64,
    /// Payloads received, warm-up included.
    pub received: u64,
    /// Messages sent but never received before the drain deadline.
    pub lost: u64,
    /// Duplicated or reordered messages.
    pub out_of_order: u64,
    /// Deliveries that were not benchmark payloads.
    pub corrupt: u64,
    /// Largest publisher lag behind its schedule, in µs.
    pub send_lag_us_max: f64,
    /// CPU taken by other processes and the hypervisor during the measurement.
    pub noise: Option<crate::noise::Noise>,
    /// Reasons not to trust this row (rate missed, loss, reordering, pinning, ...).
    pub warnings: Vec<String>,
    /// Why the measurement failed, when it did.
    pub error: Option<String>,
}

impl CombinationResult {
    /// Summarises a finished measurement and flags what makes it suspect.
    pub fn from_load(
        system: SystemKind,
        rate_per_second: u64,
        payload_size_bytes: usize,
        load: &LoadResult,
    ) -> Self {
        let mut warnings = load.problems.clone();
        let shortfall = 1.0 - load.achieved_rate_per_second / rate_per_second as f64;
        if shortfall > RATE_SHORTFALL_TOLERANCE {
            warnings.push(format!(
                "target rate missed: achieved {:.0} of {rate_per_second} msg/s ({:.1} % short)",
                load.achieved_rate_per_second,
                shortfall * 100.0
            ));
        }
        if load.lost > 0 {
            warnings.push(format!("{} of {} messages lost", load.lost, load.sent));
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
        Self {
            system,
            rate_per_second,
            payload_size_bytes,
            latency_us: (!load.histogram.is_empty())
                .then(|| Percentiles::from_histogram(&load.histogram)),
            recorded: load.histogram.len(),
            achieved_rate_per_second: load.achieved_rate_per_second,
            sent: load.sent,
            sent_measured: load.sent_measured,
            received: load.received,
            lost: load.lost,
            out_of_order: load.out_of_order,
            corrupt: load.corrupt,
            send_lag_us_max: load.send_lag_ns_max as f64 / 1_000.0,
            noise: None,
            warnings,
            error: None,
        }
    }

    /// True when other processes used enough CPU during the measurement to distort it.
    pub fn is_noisy(&self) -> bool {
        self.noise.is_some_and(|noise| {
            noise.background_cpu_percent > crate::noise::BACKGROUND_CPU_NOISY_PERCENT
        })
    }

    /// A row for a measurement that could not run.
    pub fn failed(
        system: SystemKind,
        rate_per_second: u64,
        payload_size_bytes: usize,
        error: String,
    ) -> Self {
        Self {
            system,
            rate_per_second,
            payload_size_bytes,
            latency_us: None,
            recorded: 0,
            achieved_rate_per_second: 0.0,
            sent: 0,
            sent_measured: 0,
            received: 0,
            lost: 0,
            out_of_order: 0,
            corrupt: 0,
            send_lag_us_max: 0.0,
            noise: None,
            warnings: vec![format!("measurement failed: {error}")],
            error: Some(error),
        }
    }
}

/// How one system compares with another at the same rate and size (numerator / denominator).
#[derive(Clone, Debug, Serialize)]
pub struct Ratio {
    /// The system being judged.
    pub numerator: SystemKind,
    /// The reference system.
    pub denominator: SystemKind,
    /// Target publish rate of both measurements.
    pub rate_per_second: u64,
    /// Payload size of both measurements.
    pub payload_size_bytes: usize,
    /// p50 ratio.
    pub p50: f64,
    /// p90 ratio.
    pub p90: f64,
    /// numerator p50 − denominator p50, in µs.
    pub p50_added_us: f64,
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
    let find = |system, rate, size| {
        results.iter().find(|result| {
            result.system == system
                && result.rate_per_second == rate
                && result.payload_size_bytes == size
        })
    };
    let mut combinations: Vec<(u64, usize)> = results
        .iter()
        .map(|result| (result.rate_per_second, result.payload_size_bytes))
        .collect();
    combinations.dedup();
    let mut ratios = Vec::new();
    for (rate, size) in combinations {
        for (numerator, denominator) in RATIO_PAIRS {
            let (Some(top_result), Some(bottom_result)) =
                (find(numerator, rate, size), find(denominator, rate, size))
            else {
                continue;
            };
            if let (Some(top), Some(bottom)) = (top_result.latency_us, bottom_result.latency_us) {
                ratios.push(Ratio {
                    numerator,
                    denominator,
                    rate_per_second: rate,
                    payload_size_bytes: size,
                    p50: top.p50 / bottom.p50,
                    p90: top.p90 / bottom.p90,
                    p50_added_us: top.p50 - bottom.p50,
                    noisy: top_result.is_noisy() || bottom_result.is_noisy(),
                });
            }
        }
    }
    ratios
}

/// Renders the results table.
pub fn results_table(results: &[CombinationResult]) -> String {
    let mut table = String::new();
    let _ = writeln!(
        table,
        "latency in µs from each message's scheduled send time; rate and achieved in msg/s; size in bytes; \
         bg% = CPU other processes used meanwhile (% of one core)"
    );
    let _ = writeln!(
        table,
        "{:<8} {:>6} {:>5} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>8} {:>8} {:>6} {:>5}",
        "system",
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
    for result in results {
        let rate = short_count(result.rate_per_second);
        match result.latency_us {
            Some(latency) => {
                let _ = writeln!(
                    table,
                    "{:<8} {:>6} {:>5} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>9.1} {:>9.0} {:>8} {:>8} {:>6} {:>5}{}",
                    result.system,
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
            }
            None => {
                let _ = writeln!(
                    table,
                    "{:<8} {:>6} {:>5}  FAILED: {}",
                    result.system,
                    rate,
                    result.payload_size_bytes,
                    result.error.as_deref().unwrap_or("no messages recorded")
                );
            }
        }
    }
    table
}

/// Renders the ratio table, with the Tachyon target verdict on Tachyon/relay rows.
pub fn ratios_table(ratios: &[Ratio]) -> String {
    let mut table = String::new();
    if ratios.is_empty() {
        return table;
    }
    let _ = writeln!(
        table,
        "{:<16} {:>6} {:>5} {:>8} {:>8} {:>14}",
        "ratio", "rate", "size", "p50", "p90", "p50 added µs"
    );
    for ratio in ratios {
        let verdict =
            if ratio.numerator == SystemKind::Tachyon && ratio.denominator == SystemKind::Relay {
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
            "{:<16} {:>6} {:>5} {:>8.2} {:>8.2} {:>14.1}{verdict}{}",
            format!("{}/{}", ratio.numerator, ratio.denominator),
            short_count(ratio.rate_per_second),
            ratio.payload_size_bytes,
            ratio.p50,
            ratio.p90,
            ratio.p50_added_us,
            if ratio.noisy {
                "  (noisy: bg > 20 %)"
            } else {
                ""
            },
        );
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
    /// One entry per system × rate × size.
    pub results: Vec<CombinationResult>,
    /// Comparisons between systems at equal rate and size.
    pub ratios: Vec<Ratio>,
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
    let path = directory.join(format!(
        "{}-{}-{}.hdr",
        result.system, result.rate_per_second, result.payload_size_bytes
    ));
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
            send_lag_ns_max: 0,
            problems: Vec::new(),
        }
    }

    #[test]
    fn warnings_flag_rate_shortfall_loss_and_reordering() {
        let clean = CombinationResult::from_load(
            SystemKind::Relay,
            10_000,
            128,
            &load_result(9_900.0, 0, 0),
        );
        assert!(clean.warnings.is_empty(), "{:?}", clean.warnings);
        let latency = clean.latency_us.unwrap();
        assert!((latency.p50 - 500.0).abs() < 1.0, "{latency:?}");
        let bad = CombinationResult::from_load(
            SystemKind::Relay,
            10_000,
            128,
            &load_result(9_000.0, 3, 2),
        );
        assert_eq!(bad.warnings.len(), 3, "{:?}", bad.warnings);
    }

    #[test]
    fn ratios_pair_systems_at_equal_rate_and_size() {
        let mut results = Vec::new();
        for (system, scale) in [
            (SystemKind::Tachyon, 2.0),
            (SystemKind::Relay, 1.0),
            (SystemKind::Nats, 4.0),
        ] {
            let mut result =
                CombinationResult::from_load(system, 10_000, 128, &load_result(10_000.0, 0, 0));
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
    }

    #[test]
    fn histogram_file_round_trips() {
        let directory =
            std::env::temp_dir().join(format!("tachyon-bench-hdr-{}", std::process::id()));
        let load = load_result(10_000.0, 0, 0);
        let result = CombinationResult::from_load(SystemKind::Nats, 10_000, 1024, &load);
        let path = write_histogram(&directory, &result, &load.histogram).unwrap();
        assert!(path.ends_with("nats-10000-1024.hdr"));
        let mut reader = File::open(&path).unwrap();
        let read_back: Histogram<u64> = Deserializer::new().deserialize(&mut reader).unwrap();
        fs::remove_dir_all(&directory).unwrap();
        assert_eq!(read_back, load.histogram);
    }
}
