//! `tachyon-bench`: Tachyon's benchmark suite.
//!
//! `latency` runs an open-loop, coordinated-omission-correct latency probe against every
//! requested system × rate × payload size in one invocation, so the ratios between systems come
//! from the same conditions on a noisy machine. `scenario` runs the named scenarios (pub/sub
//! fan-out, filtered fan-out, throughput, slow subscriber, persisted acks, SOW queries; see
//! `scenario.rs`). Both start and stop each server themselves. See `load.rs` (and `persisted.rs`)
//! for the method and `report.rs` for what is recorded.
//! `journal` measures the transaction log on this machine's disk (see `journal.rs`).

mod amps;
#[cfg(test)]
mod fake_amps;
mod journal;
mod load;
mod nats;
mod noise;
mod payload;
mod persisted;
mod relay;
mod report;
mod scenario;
mod sow;
mod svg;
mod systems;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::load::LoadConfig;
use crate::report::{Combination, CombinationResult, Environment, RunReport};
use crate::scenario::{Planned, Probe};
use crate::systems::{ServerParams, SystemKind, SystemOptions};

#[derive(Parser)]
#[command(name = "tachyon-bench", version, about = "Tachyon benchmark suite")]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Open-loop pub/sub latency: Tachyon against a raw TCP relay (the floor) and NATS.
    Latency(Box<LatencyArgs>),
    /// Named scenarios: pubsub, filtered, throughput, slow-subscriber, persisted-ack, sow-query,
    /// or all.
    Scenario(Box<ScenarioArgs>),
    /// The transaction log on this disk: CRC32C speed, write throughput against fio's
    /// O_DIRECT bandwidth, recovery scan speed.
    Journal(Box<journal::JournalArgs>),
    /// Internal: one raw TCP relay as its own process (started by the benchmark).
    #[command(hide = true)]
    RelayServer {
        /// Address the publishers connect to.
        #[arg(long)]
        publish: std::net::SocketAddr,
        /// Address the subscribers connect to.
        #[arg(long)]
        subscribe: std::net::SocketAddr,
        /// Publisher connections to wait for.
        #[arg(long, default_value_t = 1)]
        publishers: usize,
        /// Subscriber connections to wait for.
        #[arg(long, default_value_t = 1)]
        subscribers: usize,
    },
}

/// Flags shared by `latency` and `scenario`.
#[derive(Args, Debug)]
struct CommonArgs {
    /// Systems to measure, comma-separated: tachyon, relay, nats.
    #[arg(long, value_delimiter = ',', default_value = "tachyon,relay,nats")]
    systems: Vec<String>,
    /// Warm-up per combination, not recorded (e.g. 1s, 300ms) [default: 1s; smoke: shorter].
    #[arg(long, value_parser = parse_duration)]
    warmup: Option<Duration>,
    /// Recorded time per combination [default: 5s; smoke: 1s].
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// How long to wait for missing messages after the last send before counting them lost.
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    drain: Duration,
    /// Short run for CI (explicit flags win).
    #[arg(long)]
    smoke: bool,
    /// Exit non-zero when any combination missed its rate by > 5 %, lost, duplicated or
    /// reordered messages.
    #[arg(long)]
    strict: bool,
    /// The Tachyon server binary (started as `<bin> solo --config <file>`).
    #[arg(long, default_value = "target/release/tachyon")]
    tachyon_bin: PathBuf,
    /// The NATS server binary [default: nats-server on PATH, /usr/sbin or /usr/local/sbin].
    #[arg(long)]
    nats_bin: Option<PathBuf>,
    /// Write the run (environment, settings, results, ratios) as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write one V2-serialized HdrHistogram (ns) per combination into this directory.
    #[arg(long)]
    hdr_dir: Option<PathBuf>,
    /// Write an SVG latency-percentile plot (one panel per combination, one line per system).
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Core the server (or relay thread) is pinned to [default with ≥ 2 cores: the first].
    #[arg(long)]
    server_core: Option<usize>,
    /// Core the publisher threads are pinned to [default with ≥ 2 cores: the last].
    #[arg(long)]
    pub_core: Option<usize>,
    /// Core the subscriber threads are pinned to [default with ≥ 2 cores: the last].
    #[arg(long)]
    sub_core: Option<usize>,
    /// Run the relay as a thread of the benchmark instead of its own process (it then shares the
    /// benchmark's scheduling group, which handicaps it under background load).
    #[arg(long)]
    relay_thread: bool,
    /// Where a Tachyon with a transaction log (persisted-ack scenario) keeps its data: a fresh
    /// subdirectory per run, removed afterwards; must be on the disk under test, not tmpfs.
    #[arg(long, default_value = "target")]
    journal_dir: PathBuf,
    /// Pin nothing (let the scheduler place every thread).
    #[arg(long, conflicts_with_all = ["server_core", "pub_core", "sub_core"])]
    no_pin: bool,
}

#[derive(Args, Debug)]
struct LatencyArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Publish rates in messages per second, comma-separated [default: 10000,50000; smoke: 10000].
    #[arg(long, value_delimiter = ',')]
    rates: Option<Vec<u64>>,
    /// Payload sizes in bytes (≥ 67), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "128,1024")]
    sizes: Vec<usize>,
    /// Publisher connections (threads); the rate is shared among them.
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// Subscriber connections (threads); each receives every message.
    #[arg(long, default_value_t = 1)]
    subscribers: usize,
    /// Messages sent back to back at each scheduled instant (the average rate is unchanged).
    #[arg(long, default_value_t = 1)]
    burst: u64,
}

#[derive(Args, Debug)]
struct ScenarioArgs {
    /// Scenarios to run, comma- or space-separated: pubsub, filtered, throughput,
    /// slow-subscriber, persisted-ack, sow-query, or all.
    #[arg(value_delimiter = ',', default_value = "all")]
    names: Vec<String>,
    #[command(flatten)]
    common: CommonArgs,
    /// Override every open-loop scenario's rate (msg/s) [pubsub 5000, filtered 2000, slow 5000,
    /// persisted-ack 1000,10000,50000].
    #[arg(long)]
    rate: Option<u64>,
    /// Override the pubsub scenario's sizes [default: 128,1024,16384; smoke: 128].
    #[arg(long, value_delimiter = ',')]
    sizes: Option<Vec<usize>>,
    /// Override the pubsub scenario's subscriber counts [default: 1,10].
    #[arg(long, value_delimiter = ',')]
    subscribers: Option<Vec<usize>>,
    /// Publisher connections (threads) in every scenario.
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// Messages sent back to back at each scheduled instant (open-loop scenarios).
    #[arg(long, default_value_t = 1)]
    burst: u64,
    /// Tachyon's [limits] client_outbound_bytes_max in the slow-subscriber scenario (bytes).
    #[arg(long, default_value_t = scenario::SLOW_OUTBOUND_BYTES_MAX)]
    outbound_max: usize,
}

/// Parses `1s`, `300ms`, `1.5s`, `500us`, `2m`; a bare number is seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 1s or 300ms"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1e3,
        "us" | "µs" => value / 1e6,
        "ns" => value / 1e9,
        "m" | "min" => value * 60.0,
        other => {
            return Err(format!(
                "unknown duration unit {other:?} (use ns, us, ms, s or m)"
            ))
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|error| error.to_string())
}

/// Where each thread runs.
#[derive(Clone, Copy, Debug, serde::Serialize)]
struct Placement {
    server_core: Option<usize>,
    publisher_core: Option<usize>,
    subscriber_core: Option<usize>,
}

/// The default placement: with two or more cores, the server gets the first core to itself and
/// the benchmark threads share the last one (so the load generator never competes with the
/// server for a core; the subscribers and publishers competing with each other is part of the
/// measured cost on a 2-core machine and is the same for every system). With one core, nothing
/// is pinned.
fn placement(arguments: &CommonArgs) -> Result<Placement> {
    let cores: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|core| core.id)
        .collect();
    if arguments.no_pin {
        return Ok(Placement {
            server_core: None,
            publisher_core: None,
            subscriber_core: None,
        });
    }
    let (first, last) = match (cores.first(), cores.last()) {
        (Some(&first), Some(&last)) if cores.len() >= 2 => (Some(first), Some(last)),
        _ => (None, None),
    };
    let chosen = Placement {
        server_core: arguments.server_core.or(first),
        publisher_core: arguments.pub_core.or(last),
        subscriber_core: arguments.sub_core.or(last),
    };
    for (flag, core) in [
        ("--server-core", chosen.server_core),
        ("--pub-core", chosen.publisher_core),
        ("--sub-core", chosen.subscriber_core),
    ] {
        if let Some(core) = core {
            if !cores.contains(&core) {
                bail!("{flag} {core} is not available: this process may run on cores {cores:?}");
            }
        }
    }
    Ok(chosen)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Commands::Latency(arguments) => latency(*arguments),
        Commands::Scenario(arguments) => run_scenarios(*arguments),
        Commands::Journal(arguments) => journal::run(&arguments).map(|()| ExitCode::SUCCESS),
        Commands::RelayServer {
            publish,
            subscribe,
            publishers,
            subscribers,
        } => relay::serve_once(
            publish,
            subscribe,
            relay::Shape {
                publishers,
                subscribers,
            },
        )
        .map(|_| ExitCode::SUCCESS),
    };
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("tachyon-bench: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn parse_systems(names: &[String]) -> Result<Vec<SystemKind>> {
    names.iter().map(|name| SystemKind::parse(name)).collect()
}

/// The `latency` probe: every system × rate × size, one scenario label.
fn latency(arguments: LatencyArgs) -> Result<ExitCode> {
    let common = &arguments.common;
    let systems = parse_systems(&common.systems)?;
    let rates = arguments.rates.clone().unwrap_or_else(|| {
        if common.smoke {
            vec![10_000]
        } else {
            vec![10_000, 50_000]
        }
    });
    let (default_warmup, default_duration) = if common.smoke {
        (Duration::from_millis(300), Duration::from_secs(1))
    } else {
        (Duration::from_secs(1), Duration::from_secs(5))
    };
    let warmup = common.warmup.unwrap_or(default_warmup);
    let duration = common.duration.unwrap_or(default_duration);
    if rates.contains(&0) {
        bail!("--rates must be positive");
    }
    if arguments.publishers == 0 || arguments.subscribers == 0 || arguments.burst == 0 {
        bail!("--publishers, --subscribers and --burst must be at least 1");
    }
    if let Some(&size) = arguments
        .sizes
        .iter()
        .find(|&&size| size < payload::PAYLOAD_SIZE_MIN_BYTES)
    {
        bail!("--sizes {size} is below the minimum of {} bytes (the sequence and time stamp need that much)", payload::PAYLOAD_SIZE_MIN_BYTES);
    }
    let placement = placement(common)?;
    let base = LoadConfig {
        warmup,
        duration,
        drain_timeout: common.drain,
        publisher_core: placement.publisher_core,
        subscriber_core: placement.subscriber_core,
        publishers: arguments.publishers,
        subscribers: arguments.subscribers,
        burst: arguments.burst,
        ..LoadConfig::default()
    };
    // Interleave systems inside each (rate, size) so slow drifts in background load hit every
    // system alike and the ratios stay fair.
    let mut measurements = Vec::new();
    for &rate in &rates {
        for &size in &arguments.sizes {
            for &system in &systems {
                let config = LoadConfig {
                    rate_per_second: rate,
                    payload_size_bytes: size,
                    ..base.clone()
                };
                measurements.push(Planned {
                    combination: Combination::of(report::LATENCY_SCENARIO, system, &config),
                    params: ServerParams {
                        shape: relay::Shape {
                            publishers: config.publishers,
                            subscribers: config.subscribers,
                        },
                        ..ServerParams::default()
                    },
                    config,
                    probe: Probe::Delivery,
                });
            }
        }
    }
    let settings = serde_json::json!({
        "systems": systems,
        "rates_per_second": rates,
        "payload_sizes_bytes": arguments.sizes,
        "publishers": arguments.publishers,
        "subscribers": arguments.subscribers,
        "burst": arguments.burst,
        "warmup_s": warmup.as_secs_f64(),
        "duration_s": duration.as_secs_f64(),
        "drain_s": common.drain.as_secs_f64(),
        "smoke": common.smoke,
    });
    run_all(
        "tachyon-bench latency",
        common,
        placement,
        &measurements,
        Vec::new(),
        None,
        settings,
    )
}

/// The `scenario` subcommand.
fn run_scenarios(arguments: ScenarioArgs) -> Result<ExitCode> {
    let common = &arguments.common;
    let kinds = scenario::parse(&arguments.names)?;
    let systems = parse_systems(&common.systems)?;
    if arguments.rate == Some(0) || arguments.publishers == 0 || arguments.burst == 0 {
        bail!("--rate, --publishers and --burst must be at least 1");
    }
    if let Some(&size) = arguments
        .sizes
        .iter()
        .flatten()
        .find(|&&size| size < payload::PAYLOAD_SIZE_MIN_BYTES)
    {
        bail!(
            "--sizes {size} is below the minimum of {} bytes",
            payload::PAYLOAD_SIZE_MIN_BYTES
        );
    }
    let (default_warmup, default_duration) = scenario::default_durations(common.smoke);
    let warmup = common.warmup.unwrap_or(default_warmup);
    let duration = common.duration.unwrap_or(default_duration);
    let placement = placement(common)?;
    let settings = scenario::Settings {
        systems: systems.clone(),
        base: LoadConfig {
            warmup,
            duration,
            drain_timeout: common.drain,
            publisher_core: placement.publisher_core,
            subscriber_core: placement.subscriber_core,
            publishers: arguments.publishers,
            burst: arguments.burst,
            ..LoadConfig::default()
        },
        rate_per_second: arguments.rate,
        sizes: arguments.sizes.clone(),
        subscribers: arguments.subscribers.clone(),
        slow_outbound_bytes_max: arguments.outbound_max,
        smoke: common.smoke,
    };
    let plan = scenario::plan(&kinds, &settings);
    if plan.measurements.is_empty() && plan.sow.is_none() {
        for note in &plan.notes {
            println!("{note}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let json_settings = serde_json::json!({
        "scenarios": kinds.iter().map(|kind| kind.name()).collect::<Vec<_>>(),
        "systems": systems,
        "rate_override_per_second": arguments.rate,
        "publishers": arguments.publishers,
        "burst": arguments.burst,
        "warmup_s": warmup.as_secs_f64(),
        "duration_s": duration.as_secs_f64(),
        "drain_s": common.drain.as_secs_f64(),
        "slow_subscriber_client_outbound_bytes_max": arguments.outbound_max,
        "journal_dir": common.journal_dir,
        "smoke": common.smoke,
    });
    run_all(
        "tachyon-bench scenario",
        common,
        placement,
        &plan.measurements,
        plan.notes,
        plan.sow.as_ref(),
        json_settings,
    )
}

/// Runs every planned measurement, prints the tables, writes the files, decides the exit code.
fn run_all(
    tool: &'static str,
    common: &CommonArgs,
    placement: Placement,
    measurements: &[Planned],
    notes: Vec<String>,
    sow_plan: Option<&sow::SowPlan>,
    mut settings: serde_json::Value,
) -> Result<ExitCode> {
    let mut systems: Vec<SystemKind> = Vec::new();
    for planned in measurements {
        if !systems.contains(&planned.combination.system) {
            systems.push(planned.combination.system);
        }
    }
    if sow_plan.is_some() && !systems.contains(&SystemKind::Tachyon) {
        systems.push(SystemKind::Tachyon);
    }
    let options = preflight(&systems, common, placement)?;
    if measurements
        .iter()
        .any(|planned| planned.params.journal_topic.is_some())
    {
        systems::check_real_disk(&common.journal_dir)?;
    }
    let mut environment = Environment::collect();
    if systems.contains(&SystemKind::Nats) {
        environment.nats_server_version =
            report::command_output(&options.nats_binary, &["--version"]);
    }
    println!("{}", environment.summary());
    let core =
        |core: Option<usize>| core.map_or_else(|| "unpinned".to_owned(), |id| format!("core {id}"));
    if let Some(first) = measurements.first() {
        println!(
            "placement: server {}, publishers {}, subscribers {}; warm-up {:?}, duration {:?} per combination",
            core(placement.server_core),
            core(placement.publisher_core),
            core(placement.subscriber_core),
            first.config.warmup,
            first.config.duration
        );
    }
    for note in &notes {
        println!("note: {note}");
    }

    let mut results = Vec::new();
    for (index, planned) in measurements.iter().enumerate() {
        let described = planned.combination.describe();
        eprintln!(
            "[{}/{}] running {described} ...",
            index + 1,
            measurements.len()
        );
        let result = match measure(planned, &options) {
            Ok(Measured {
                load,
                noise,
                journal_backend,
            }) => {
                let mut result = CombinationResult::from_load(&planned.combination, &load);
                result.noise = noise;
                result.journal_backend = journal_backend;
                if let Some(directory) = &common.hdr_dir {
                    report::write_histogram(directory, &result, &load.histogram)?;
                }
                result
            }
            Err(error) => CombinationResult::failed(&planned.combination, format!("{error:#}")),
        };
        for warning in &result.warnings {
            eprintln!("WARNING: {described}: {warning}");
        }
        results.push(result);
    }
    let mut sow_error = None;
    let sow_results = match sow_plan {
        Some(sow_plan) => {
            eprintln!("running sow-query (tachyon) ...");
            match measure_sow(sow_plan, &options) {
                Ok(results) => results,
                Err(error) => {
                    let error = format!("{error:#}");
                    eprintln!("ERROR: sow-query: {error}");
                    sow_error = Some(error);
                    Vec::new()
                }
            }
        }
        None => Vec::new(),
    };

    let ratios = report::ratios(&results);
    if !results.is_empty() {
        println!();
        print!("{}", report::results_table(&results));
    }
    let throughput = report::throughput_table(&results);
    if !throughput.is_empty() {
        println!();
        print!("{throughput}");
    }
    let slow =
        report::slow_subscriber_table(&results, scenario::SLOW_BASELINE, scenario::SLOW_STALLED);
    if !slow.is_empty() {
        println!();
        print!("{slow}");
    }
    let persisted = report::persisted_table(
        &results,
        scenario::PERSISTED_JOURNAL,
        scenario::PERSISTED_NO_JOURNAL,
    );
    if !persisted.is_empty() {
        println!();
        print!("{persisted}");
    }
    if !sow_results.is_empty() {
        println!();
        print!("{}", sow::table(&sow_results));
    }
    if let Some(error) = &sow_error {
        println!();
        println!("sow-query FAILED: {error}");
    }
    if !ratios.is_empty() {
        println!();
        println!("ratios (Tachyon to the floor and to NATS; > 1 = Tachyon slower, or for throughput faster):");
        print!("{}", report::ratios_table(&ratios));
    }
    if !notes.is_empty() {
        println!();
        for note in &notes {
            println!("note: {note}");
        }
    }

    let warned: Vec<&CombinationResult> = results
        .iter()
        .filter(|result| !result.warnings.is_empty())
        .collect();
    if !warned.is_empty() {
        eprintln!();
        eprintln!(
            "!!! WARNING: {} of {} measurements are suspect (marked ! above):",
            warned.len(),
            results.len()
        );
        for result in &warned {
            for warning in &result.warnings {
                eprintln!(
                    "!!!   {} {} {} msg/s {} B: {warning}",
                    result.scenario,
                    result.system,
                    result.rate_per_second,
                    result.payload_size_bytes
                );
            }
        }
    }
    let noisy = results.iter().filter(|result| result.is_noisy()).count();
    if noisy > 0 {
        eprintln!(
            "!!! NOTE: {noisy} of {} measurements ran while other processes used more than {} % of a core \
             (bg% column): their tails are not trustworthy; rerun on a quiet machine.",
            results.len(),
            noise::BACKGROUND_CPU_NOISY_PERCENT
        );
    }
    if let Some(path) = &common.plot {
        write_plot(path, &environment, &results)?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = &common.json {
        if let Some(object) = settings.as_object_mut() {
            object.insert("placement".into(), serde_json::json!(placement));
            object.insert(
                "tachyon_binary".into(),
                serde_json::json!(options.tachyon_binary),
            );
            object.insert("nats_binary".into(), serde_json::json!(options.nats_binary));
            object.insert(
                "relay".into(),
                serde_json::json!(if options.relay_binary.is_some() {
                    "process"
                } else {
                    "thread"
                }),
            );
            object.insert("notes".into(), serde_json::json!(notes));
            object.insert(
                "latency_unit".into(),
                serde_json::json!("µs; open loop: from each message's scheduled send time (coordinated-omission correct); closed loop: from the actual send"),
            );
        }
        let report = RunReport {
            tool,
            tool_version: env!("CARGO_PKG_VERSION"),
            command_line: std::env::args().collect(),
            environment,
            settings,
            results: results.clone(),
            ratios,
            sow_query: sow_results.clone(),
            sow_query_error: sow_error.clone(),
        };
        report::write_json(&report, path)?;
        eprintln!("wrote {}", path.display());
    }
    let failed = results.iter().any(|result| result.error.is_some()) || sow_error.is_some();
    Ok(if failed || (common.strict && !warned.is_empty()) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// One panel per open-loop (scenario, rate, size), one line per system (the persisted-ack runs
/// with and without the journal share a panel; see [`scenario::plot_line`]).
fn plot_panels(results: &[CombinationResult]) -> Vec<svg::Panel> {
    let mut panels: Vec<(String, u64, usize, svg::Panel)> = Vec::new();
    for result in results {
        if result.is_closed_loop() || result.percentile_curve.is_empty() {
            continue;
        }
        let (panel_scenario, line_name) = scenario::plot_line(&result.scenario, result.system);
        let key = (
            panel_scenario.to_owned(),
            result.rate_per_second,
            result.payload_size_bytes,
        );
        let position = panels
            .iter()
            .position(|(scenario, rate, size, _)| (scenario.clone(), *rate, *size) == key);
        let index = match position {
            Some(index) => index,
            None => {
                let title = format!(
                    "{} · {} msg/s · {} B{}",
                    panel_scenario,
                    result.rate_per_second,
                    result.payload_size_bytes,
                    if result.burst > 1 {
                        format!(" · bursts of {}", result.burst)
                    } else {
                        String::new()
                    }
                );
                panels.push((
                    key.0,
                    key.1,
                    key.2,
                    svg::Panel {
                        title,
                        lines: Vec::new(),
                    },
                ));
                panels.len() - 1
            }
        };
        panels[index].3.lines.push(svg::Line {
            name: line_name,
            points: result.percentile_curve.clone(),
        });
    }
    panels.into_iter().map(|(_, _, _, panel)| panel).collect()
}

fn write_plot(path: &Path, environment: &Environment, results: &[CombinationResult]) -> Result<()> {
    let subtitle = format!(
        "open loop, latency from each message's scheduled send time (coordinated-omission correct) | {}",
        environment.summary()
    );
    let svg = svg::render(
        "tachyon-bench: latency by percentile",
        &subtitle,
        &plot_panels(results),
    );
    if let Some(parent) = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(path, svg).with_context(|| format!("writing {}", path.display()))
}

/// Checks the binaries before anything runs, so a missing server fails in the first second.
fn preflight(
    systems: &[SystemKind],
    arguments: &CommonArgs,
    placement: Placement,
) -> Result<SystemOptions> {
    if systems.contains(&SystemKind::Tachyon) && !arguments.tachyon_bin.is_file() {
        bail!(
            "the Tachyon binary {} does not exist: build it with `cargo build --release` or pass --tachyon-bin \
             (or leave tachyon out of --systems)",
            arguments.tachyon_bin.display()
        );
    }
    let nats_binary = match &arguments.nats_bin {
        Some(path) => path.clone(),
        None => systems::find_binary("nats-server").unwrap_or_else(|| PathBuf::from("nats-server")),
    };
    if systems.contains(&SystemKind::Nats) && !nats_binary.is_file() {
        bail!(
            "nats-server not found ({}): install it with `apt-get install nats-server`, pass --nats-bin, \
             or leave nats out of --systems",
            nats_binary.display()
        );
    }
    let relay_binary = if arguments.relay_thread {
        None
    } else {
        Some(std::env::current_exe().context("finding this binary to start the relay process")?)
    };
    Ok(SystemOptions {
        tachyon_binary: arguments.tachyon_bin.clone(),
        nats_binary,
        relay_binary,
        server_core: placement.server_core,
        journal_dir: arguments.journal_dir.clone(),
    })
}

/// Starts a Tachyon with the SOW topic, runs the sow-query scenario, and stops it.
fn measure_sow(plan: &sow::SowPlan, options: &SystemOptions) -> Result<Vec<sow::SowResult>> {
    let params = ServerParams {
        sow_topic: Some(sow::SOW_TOPIC),
        ..ServerParams::default()
    };
    let running =
        systems::start_with(SystemKind::Tachyon, options, &params).context("starting tachyon")?;
    let results = sow::run(running.endpoint.publish_address, plan);
    let stopped = running.stop();
    let results = results?;
    stopped.context("stopping tachyon")?;
    Ok(results)
}

/// What one measurement produced besides the load's own figures.
struct Measured {
    load: load::LoadResult,
    /// CPU other processes took meanwhile (`None` when /proc is unreadable).
    noise: Option<noise::Noise>,
    /// The transaction log's I/O path, for a server started with one.
    journal_backend: Option<String>,
}

/// Starts a fresh instance of the planned system, measures, and stops it.
fn measure(planned: &Planned, options: &SystemOptions) -> Result<Measured> {
    let system = planned.combination.system;
    let running = systems::start_with(system, options, &planned.params)
        .with_context(|| format!("starting {system}"))?;
    let server_pid = running.server_pid();
    let journal_backend = running.journal_backend.clone();
    let before = noise::CpuSample::take(server_pid);
    let result = match planned.probe {
        Probe::Delivery => load::run(&running.endpoint, &planned.config),
        Probe::PersistedAck { topic } => persisted::run(&running.endpoint, &planned.config, topic),
    };
    let after = noise::CpuSample::take(server_pid);
    let stopped = running.stop();
    let result = result?;
    stopped.with_context(|| format!("stopping {system}"))?;
    let noise = before
        .zip(after)
        .map(|(before, after)| before.noise_until(&after));
    Ok(Measured {
        load: result,
        noise,
        journal_backend,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::Pace;

    #[test]
    fn durations_parse_in_common_units() {
        assert_eq!(parse_duration("1s").unwrap(), Duration::from_secs(1));
        assert_eq!(parse_duration("300ms").unwrap(), Duration::from_millis(300));
        assert_eq!(
            parse_duration("1.5s").unwrap(),
            Duration::from_millis(1_500)
        );
        assert_eq!(parse_duration("500us").unwrap(), Duration::from_micros(500));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("fast").is_err());
    }

    #[test]
    fn command_line_parses_the_documented_usage() {
        let cli = Cli::try_parse_from([
            "tachyon-bench",
            "latency",
            "--systems",
            "tachyon,relay,nats",
            "--rates",
            "10000,50000",
            "--sizes",
            "128,1024",
            "--warmup",
            "1s",
            "--duration",
            "5s",
            "--json",
            "out.json",
            "--smoke",
            "--pub-core",
            "1",
        ])
        .unwrap();
        let Commands::Latency(arguments) = cli.command else {
            panic!("parsed as latency")
        };
        assert_eq!(arguments.common.systems, ["tachyon", "relay", "nats"]);
        assert_eq!(arguments.rates, Some(vec![10_000, 50_000]));
        assert_eq!(arguments.sizes, [128, 1024]);
        assert_eq!(arguments.common.duration, Some(Duration::from_secs(5)));
        assert_eq!(arguments.common.pub_core, Some(1));
        assert!(arguments.common.smoke);
        assert_eq!(arguments.subscribers, 1);
        assert_eq!(arguments.burst, 1);
    }

    #[test]
    fn scenario_command_line_parses() {
        let cli = Cli::try_parse_from([
            "tachyon-bench",
            "scenario",
            "pubsub,filtered",
            "--systems",
            "tachyon,nats",
            "--plot",
            "out.svg",
            "--subscribers",
            "1,4",
            "--burst",
            "8",
        ])
        .unwrap();
        let Commands::Scenario(arguments) = cli.command else {
            panic!("parsed as scenario")
        };
        assert_eq!(arguments.names, ["pubsub", "filtered"]);
        assert_eq!(arguments.subscribers, Some(vec![1, 4]));
        assert_eq!(arguments.burst, 8);
        assert_eq!(arguments.common.plot, Some(PathBuf::from("out.svg")));
        let cli = Cli::try_parse_from(["tachyon-bench", "scenario"]).unwrap();
        let Commands::Scenario(arguments) = cli.command else {
            panic!("parsed as scenario")
        };
        assert_eq!(arguments.names, ["all"]);
    }

    #[test]
    fn plot_panels_group_systems_and_leave_out_closed_loop_rows() {
        let curve = vec![(0.0, 10.0), (90.0, 20.0), (99.0, 40.0)];
        let mut results = Vec::new();
        for (scenario, system, pace) in [
            ("pubsub-1sub", SystemKind::Tachyon, Pace::Open),
            ("pubsub-1sub", SystemKind::Relay, Pace::Open),
            ("pubsub-10sub", SystemKind::Tachyon, Pace::Open),
            (
                "throughput-1sub",
                SystemKind::Tachyon,
                Pace::Closed { window: 10 },
            ),
        ] {
            let config = LoadConfig {
                pace,
                ..LoadConfig::default()
            };
            let mut result = CombinationResult::failed(
                &Combination::of(scenario, system, &config),
                String::new(),
            );
            result.percentile_curve = curve.clone();
            results.push(result);
        }
        let panels = plot_panels(&results);
        assert_eq!(panels.len(), 2);
        assert_eq!(panels[0].lines.len(), 2);
        assert_eq!(panels[1].lines.len(), 1);
        assert!(panels[0].title.starts_with("pubsub-1sub"));
    }
}
