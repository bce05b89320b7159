//! `tachyon-bench`: Tachyon's benchmark suite.
//!
//! `latency` runs an open-loop, coordinated-omission-correct latency probe (one publisher, one
//! subscriber) against every requested system × rate × payload size in one invocation, so the
//! ratios between systems come from the same conditions on a noisy machine. It starts and stops
//! each server itself. See `load.rs` for the method and `report.rs` for what is recorded.

mod amps;
#[cfg(test)]
mod fake_amps;
mod load;
mod nats;
mod noise;
mod payload;
mod relay;
mod report;
mod systems;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::load::LoadConfig;
use crate::report::{CombinationResult, Environment, RunReport};
use crate::systems::{SystemKind, SystemOptions};

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
    /// Internal: one raw TCP relay as its own process (started by `latency`).
    #[command(hide = true)]
    RelayServer {
        /// Address the publisher connects to.
        #[arg(long)]
        publish: std::net::SocketAddr,
        /// Address the subscriber connects to.
        #[arg(long)]
        subscribe: std::net::SocketAddr,
    },
}

#[derive(Args, Debug)]
struct LatencyArgs {
    /// Systems to measure, comma-separated: tachyon, relay, nats.
    #[arg(long, value_delimiter = ',', default_value = "tachyon,relay,nats")]
    systems: Vec<String>,
    /// Publish rates in messages per second, comma-separated [default: 10000,50000; smoke: 10000].
    #[arg(long, value_delimiter = ',')]
    rates: Option<Vec<u64>>,
    /// Payload sizes in bytes (≥ 67), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "128,1024")]
    sizes: Vec<usize>,
    /// Warm-up per combination, not recorded (e.g. 1s, 300ms) [default: 1s; smoke: 300ms].
    #[arg(long, value_parser = parse_duration)]
    warmup: Option<Duration>,
    /// Recorded time per combination [default: 5s; smoke: 1s].
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// How long to wait for missing messages after the last send before counting them lost.
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    drain: Duration,
    /// Short run for CI: warm-up 300 ms, 1 s per combination, 10k msg/s only (explicit flags win).
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
    /// Core the server (or relay thread) is pinned to [default with ≥ 2 cores: the first].
    #[arg(long)]
    server_core: Option<usize>,
    /// Core the publisher thread is pinned to [default with ≥ 2 cores: the last].
    #[arg(long)]
    pub_core: Option<usize>,
    /// Core the subscriber thread is pinned to [default with ≥ 2 cores: the last].
    #[arg(long)]
    sub_core: Option<usize>,
    /// Run the relay as a thread of the benchmark instead of its own process (it then shares the
    /// benchmark's scheduling group, which handicaps it under background load).
    #[arg(long)]
    relay_thread: bool,
    /// Pin nothing (let the scheduler place every thread).
    #[arg(long, conflicts_with_all = ["server_core", "pub_core", "sub_core"])]
    no_pin: bool,
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
/// the two benchmark threads share the last one (so the load generator never competes with the
/// server for a core; the subscriber and publisher competing with each other is part of the
/// measured cost on a 2-core machine and is the same for every system). With one core, nothing
/// is pinned.
fn placement(arguments: &LatencyArgs) -> Result<Placement> {
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
        Commands::RelayServer { publish, subscribe } => {
            relay::serve_once(publish, subscribe).map(|_| ExitCode::SUCCESS)
        }
    };
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("tachyon-bench: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs every combination, prints the tables, writes the files, and decides the exit code.
fn latency(arguments: LatencyArgs) -> Result<ExitCode> {
    let systems: Vec<SystemKind> = arguments
        .systems
        .iter()
        .map(|name| SystemKind::parse(name))
        .collect::<Result<_>>()?;
    let rates = arguments.rates.clone().unwrap_or_else(|| {
        if arguments.smoke {
            vec![10_000]
        } else {
            vec![10_000, 50_000]
        }
    });
    let default_warmup = if arguments.smoke {
        Duration::from_millis(300)
    } else {
        Duration::from_secs(1)
    };
    let default_duration = if arguments.smoke {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(5)
    };
    let warmup = arguments.warmup.unwrap_or(default_warmup);
    let duration = arguments.duration.unwrap_or(default_duration);
    if rates.contains(&0) {
        bail!("--rates must be positive");
    }
    if let Some(&size) = arguments
        .sizes
        .iter()
        .find(|&&size| size < payload::PAYLOAD_SIZE_MIN_BYTES)
    {
        bail!("--sizes {size} is below the minimum of {} bytes (the sequence and time stamp need that much)", payload::PAYLOAD_SIZE_MIN_BYTES);
    }
    let placement = placement(&arguments)?;
    let options = preflight(&systems, &arguments, placement)?;

    let mut environment = Environment::collect();
    if systems.contains(&SystemKind::Nats) {
        environment.nats_server_version =
            report::command_output(&options.nats_binary, &["--version"]);
    }
    println!("{}", environment.summary());
    let core =
        |core: Option<usize>| core.map_or_else(|| "unpinned".to_owned(), |id| format!("core {id}"));
    println!(
        "placement: server {}, publisher {}, subscriber {}; warm-up {warmup:?}, duration {duration:?} per combination",
        core(placement.server_core),
        core(placement.publisher_core),
        core(placement.subscriber_core)
    );

    let mut results = Vec::new();
    // Interleave systems inside each (rate, size) so slow drifts in background load hit every
    // system alike and the ratios stay fair.
    for &rate in &rates {
        for &size in &arguments.sizes {
            for &system in &systems {
                eprintln!("running {system} at {rate} msg/s, {size} B ...");
                let config = LoadConfig {
                    rate_per_second: rate,
                    payload_size_bytes: size,
                    warmup,
                    duration,
                    drain_timeout: arguments.drain,
                    publisher_core: placement.publisher_core,
                    subscriber_core: placement.subscriber_core,
                };
                let result = match measure(system, &options, &config) {
                    Ok((load, noise)) => {
                        let mut result = CombinationResult::from_load(system, rate, size, &load);
                        result.noise = noise;
                        if let Some(directory) = &arguments.hdr_dir {
                            report::write_histogram(directory, &result, &load.histogram)?;
                        }
                        result
                    }
                    Err(error) => {
                        CombinationResult::failed(system, rate, size, format!("{error:#}"))
                    }
                };
                for warning in &result.warnings {
                    eprintln!("WARNING: {system} {rate} msg/s {size} B: {warning}");
                }
                results.push(result);
            }
        }
    }

    let ratios = report::ratios(&results);
    println!();
    print!("{}", report::results_table(&results));
    println!();
    print!("{}", report::ratios_table(&ratios));

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
                    "!!!   {} {} msg/s {} B: {warning}",
                    result.system, result.rate_per_second, result.payload_size_bytes
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
    if let Some(path) = &arguments.json {
        let settings = serde_json::json!({
            "systems": systems,
            "rates_per_second": rates,
            "payload_sizes_bytes": arguments.sizes,
            "warmup_s": warmup.as_secs_f64(),
            "duration_s": duration.as_secs_f64(),
            "drain_s": arguments.drain.as_secs_f64(),
            "smoke": arguments.smoke,
            "placement": placement,
            "tachyon_binary": options.tachyon_binary,
            "nats_binary": options.nats_binary,
            "relay": if options.relay_binary.is_some() { "process" } else { "thread" },
            "latency_unit": "µs; measured from each message's scheduled send time (coordinated-omission correct)",
        });
        let report = RunReport {
            tool: "tachyon-bench latency",
            tool_version: env!("CARGO_PKG_VERSION"),
            command_line: std::env::args().collect(),
            environment,
            settings,
            results: results.clone(),
            ratios,
        };
        report::write_json(&report, path)?;
        eprintln!("wrote {}", path.display());
    }
    let failed = results.iter().any(|result| result.error.is_some());
    Ok(if failed || (arguments.strict && !warned.is_empty()) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Checks the binaries before anything runs, so a missing server fails in the first second.
fn preflight(
    systems: &[SystemKind],
    arguments: &LatencyArgs,
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
    })
}

/// Starts a fresh instance of `system`, measures one combination, and stops it.
/// Also returns how much CPU other processes took meanwhile (`None` when /proc is unreadable).
fn measure(
    system: SystemKind,
    options: &SystemOptions,
    config: &LoadConfig,
) -> Result<(load::LoadResult, Option<noise::Noise>)> {
    let running = systems::start(system, options).with_context(|| format!("starting {system}"))?;
    let server_pid = running.server_pid();
    let before = noise::CpuSample::take(server_pid);
    let result = load::run(&running.endpoint, config);
    let after = noise::CpuSample::take(server_pid);
    let stopped = running.stop();
    let result = result?;
    stopped.with_context(|| format!("stopping {system}"))?;
    let noise = before
        .zip(after)
        .map(|(before, after)| before.noise_until(&after));
    Ok((result, noise))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(arguments.systems, ["tachyon", "relay", "nats"]);
        assert_eq!(arguments.rates, Some(vec![10_000, 50_000]));
        assert_eq!(arguments.sizes, [128, 1024]);
        assert_eq!(arguments.duration, Some(Duration::from_secs(5)));
        assert_eq!(arguments.pub_core, Some(1));
        assert!(arguments.smoke);
    }
}
