//! The `tachyon` binary: the appliance and its operator tools behind one command.
//!
//! This is the edge of the program: arguments are parsed here, errors become `anyhow` messages
//! for the operator, and the libraries do the work.

mod logging;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use tachyon_net::Config;
use tachyon_numa::{CoreId, PlacementRequest, Topology};
use tracing::{info, warn};

/// Tachyon: a low-latency publish/subscribe message appliance that speaks the AMPS protocol.
#[derive(Parser)]
#[command(name = "tachyon", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every component in one process (embedded defaults; no config needed).
    ///
    /// Serves the AMPS protocol on tcp://0.0.0.0:9007/amps/json unless the config or flags say
    /// otherwise; keeps data under ./tachyon-data. Stops cleanly on SIGINT, SIGTERM or SIGHUP.
    Solo(SoloArgs),
    /// Check whether this host is fit to run Tachyon (limits, sysctls, CPU, io_uring, NUMA,
    /// storage). Exit status: 0 all pass, 1 warnings, 2 a fatal problem.
    Preflight(tachyon_tools::preflight::PreflightArgs),
    /// Size memory, SOW storage, transaction log and network for a workload.
    Capacity(tachyon_tools::capacity::CapacityArgs),
    /// Inspect transaction-log files.
    #[command(subcommand)]
    Journal(JournalCommand),
    /// Inspect State of the World files.
    #[command(subcommand)]
    Sow(SowCommand),
}

#[derive(Subcommand)]
enum SowCommand {
    /// Print a persistent SOW topic's records and slab usage from its snapshot file.
    Dump(SowDumpArgs),
}

#[derive(Args)]
struct SowDumpArgs {
    /// The server's data directory.
    data_dir: PathBuf,
    /// The SOW topic to print.
    #[arg(long)]
    topic: String,
    /// Config file declaring the topic, for its slab size (default: 1 MiB slabs, grown to fit
    /// the largest record).
    #[arg(long, env = "TACHYON_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum JournalCommand {
    /// Print every record of a data directory's journal (sequence, kind, topic, sizes).
    Dump {
        /// The data directory, or its `journal/` folder.
        data_dir: PathBuf,
    },
    /// Check every segment header and record CRC; exit status 0 clean, 1 torn tail, 2 corrupt.
    Verify {
        /// The data directory, or its `journal/` folder.
        data_dir: PathBuf,
    },
}

#[derive(Args)]
struct SoloArgs {
    /// TOML config file (relative paths in it resolve against its folder).
    #[arg(long, env = "TACHYON_CONFIG")]
    config: Option<PathBuf>,
    /// Address for the AMPS TCP transport, e.g. 127.0.0.1:9007 (overrides [transport] amps_tcp).
    #[arg(long, value_name = "ADDR")]
    amps_tcp: Option<SocketAddr>,
    /// Data directory (overrides data_dir).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Number of data-plane shards; 0 = one per core of the NIC's NUMA node, less one for the
    /// control plane (overrides [runtime] shards).
    #[arg(long, value_name = "N")]
    shards: Option<usize>,
    /// Explicit shard cores, e.g. 2-5,8 (overrides [runtime] cores).
    #[arg(long, value_name = "LIST")]
    cores: Option<tachyon_numa::CoreList>,
    /// Microseconds each shard spins for work before it sleeps (overrides [runtime]
    /// spin_before_park_us): 0 is kind to shared machines; 50-200 lowers latency on dedicated cores.
    #[arg(long, value_name = "MICROSECONDS")]
    spin_before_park_us: Option<u64>,
    /// Address of the admin API: /health, /amps/instance statistics, Prometheus /metrics
    /// (overrides [admin] address; port 0 picks a free port, logged at start-up).
    #[arg(long, value_name = "ADDR")]
    admin: Option<SocketAddr>,
    /// Address of JSON Lines over HTTP: POST /publish, POST /sow, GET /subscribe (overrides
    /// [jsonl] address; port 0 picks a free port, logged at start-up).
    #[arg(long, value_name = "ADDR")]
    jsonl: Option<SocketAddr>,
    /// Start even if the transaction log is damaged before its tail, dropping everything from
    /// the damage on (the log names file and offset; overrides [journal]
    /// allow_truncate_corruption). Without it such damage stops start-up.
    #[arg(long)]
    allow_truncate_corruption: bool,
    /// Log filter (error, warn, info, debug, trace, or per-module directives).
    #[arg(long, env = "TACHYON_LOG", default_value = "info")]
    log: String,
    /// Also log to this file, rotated by size (overrides [logging] file; size, count and
    /// compression come from [logging]).
    #[arg(long, value_name = "FILE")]
    log_file: Option<PathBuf>,
}

fn main() {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Solo(args) => solo(args),
        Command::Preflight(args) => tachyon_tools::preflight::run(&args),
        Command::Capacity(args) => tachyon_tools::capacity::run(&args),
        Command::Journal(command) => journal(command),
        Command::Sow(SowCommand::Dump(args)) => sow_dump(&args),
    };
    match outcome {
        Ok(code) => std::process::exit(code),
        Err(error) => {
            eprintln!("tachyon: error: {error:#}");
            std::process::exit(1);
        }
    }
}

fn journal(command: JournalCommand) -> Result<i32> {
    use tachyon_storage::journal;
    let report = match &command {
        JournalCommand::Dump { data_dir } => {
            journal::dump(data_dir, &mut std::io::stdout().lock())?
        }
        JournalCommand::Verify { data_dir } => journal::verify(data_dir)?,
    };
    eprintln!("{report}");
    Ok(if report.is_clean() {
        0
    } else if report.is_corrupt() {
        2
    } else {
        1
    })
}

fn sow_dump(args: &SowDumpArgs) -> Result<i32> {
    use tachyon_core::sow::{snapshot, SowTopicConfig, RECORD_HEADER_BYTES};
    let path = tachyon_net::sow::snapshot_path(&args.data_dir, &args.topic);
    let bytes = std::fs::read(&path).with_context(|| {
        format!(
            "cannot read the snapshot of SOW topic {:?} at {} (is the topic persistent, and has the server stopped cleanly or snapshotted since it was written?)",
            args.topic,
            path.display()
        )
    })?;
    let configured = match &args.config {
        Some(file) => Config::load(file)?
            .sow
            .topic_configs()?
            .into_iter()
            .find(|config| config.topic == args.topic),
        None => None,
    };
    let config = match configured {
        Some(config) => config,
        None => {
            let contents = snapshot::read(&bytes)
                .with_context(|| format!("snapshot {} is unreadable", path.display()))?;
            let largest = contents
                .records
                .iter()
                .map(|record| record.payload.len())
                .max()
                .unwrap_or(0);
            let mut config = SowTopicConfig::new(&args.topic, &[]);
            config.slab_size_bytes = config
                .slab_size_bytes
                .max((largest + RECORD_HEADER_BYTES).next_power_of_two());
            config
        }
    };
    let topic = snapshot::restore(config, &bytes)
        .with_context(|| format!("snapshot {} is unusable", path.display()))?;
    let mut out = String::new();
    out.push_str(&format!("# file {}\n", path.display()));
    snapshot::dump_topic(&topic, &mut out);
    print!("{out}");
    Ok(0)
}

/// A panic anywhere writes a minidump (with the panicking thread's backtrace) before the
/// default hook reports it.
fn install_panic_minidump(folder: PathBuf) {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let detail = format!(
            "panic on thread {:?}: {info}\n\nbacktrace of the panicking thread:\n{}",
            std::thread::current().name().unwrap_or("?"),
            std::backtrace::Backtrace::force_capture()
        );
        tachyon_net::watchdog::write_minidump(&folder, "panic", &detail);
        default(info);
    }));
}

fn solo(args: SoloArgs) -> Result<i32> {
    // The config names the log file, so it is read first; its errors go to stderr either way.
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(file) = &args.log_file {
        config.logging.file = Some(file.clone());
    }
    let log_file = logging::init(&args.log, &config.logging)?;
    let minidump_dir = config.watchdog.minidump_dir.clone();
    install_panic_minidump(minidump_dir.clone());
    if let Err(error) = tachyon_net::crash::install(minidump_dir.clone()) {
        warn!("fatal signals (SIGSEGV, SIGABRT, ...) will not write minidumps: {error}");
    }
    if let Some(address) = args.amps_tcp {
        config.transport.amps_tcp = address;
    }
    if let Some(data_dir) = args.data_dir {
        config.data_dir = data_dir;
    }
    if let Some(shards) = args.shards {
        config.runtime.shards = shards;
    }
    if let Some(spin) = args.spin_before_park_us {
        config.runtime.spin_before_park_us = spin;
    }
    if args.allow_truncate_corruption {
        config.journal.allow_truncate_corruption = true;
    }
    if let Some(admin) = args.admin {
        config.admin.address = admin;
    }
    if let Some(jsonl) = args.jsonl {
        config.jsonl.address = jsonl;
    }
    if let Some(cores) = args.cores {
        config.runtime.cores = cores.0.iter().map(|core| core.0).collect();
    }
    config.validate()?;
    info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %args.config.as_ref().map(|path| path.display().to_string()).unwrap_or_else(|| "embedded defaults".into()),
        "tachyon solo starting"
    );

    let data_dir = tachyon_storage::DataDir::open(&config.data_dir)?;
    info!(path = %data_dir.path().display(), "data directory locked");

    let topology = Topology::discover();
    let request = PlacementRequest {
        shards: (config.runtime.shards > 0).then_some(config.runtime.shards),
        cores: (!config.runtime.cores.is_empty())
            .then(|| config.runtime.cores.iter().copied().map(CoreId).collect()),
        nic: config.runtime.nic.clone(),
        reserve_control_core: true,
    };
    let plan =
        tachyon_numa::plan(&topology, &request).context("cannot place the data-plane shards")?;
    plan.log();
    if let Some(core) = plan.control_plane {
        if let Err(error) = tachyon_numa::pin_current_thread(core) {
            warn!("control plane runs unpinned: {error}");
        }
    }
    if config.runtime.lock_memory {
        tachyon_numa::lock_memory().context("runtime.lock_memory is set")?;
        info!("all memory locked (mlockall)");
    }

    let signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
        signal_hook::consts::SIGUSR1,
        signal_hook::consts::SIGQUIT,
    ])
    .context("installing signal handlers")?;
    let started_at = std::time::SystemTime::now();
    let mut admin_config = config.clone();
    let watchdog_config = config.watchdog.clone();
    let admin_address = config.admin.address;
    let jsonl_address = config.jsonl.address;
    let server = tachyon_net::runtime::start(config, &plan)?;
    admin_config.transport.amps_tcp = server.amps_address;
    let jsonl = match tachyon_net::jsonl::start(tachyon_net::jsonl::JsonlContext {
        address: jsonl_address,
        amps_address: server.amps_address,
        control_core: plan.control_plane,
    }) {
        Ok(jsonl) => jsonl,
        Err(error) => {
            server.stop();
            return Err(error).context("cannot start the JSON Lines server");
        }
    };
    info!(address = %jsonl.address(), "JSON Lines on http://{}", jsonl.address());
    admin_config.jsonl.address = jsonl.address();
    let admin = match tachyon_net::admin::start(tachyon_net::admin::AdminContext {
        address: admin_address,
        control_core: plan.control_plane,
        stats: server.stats.clone(),
        boards: server.boards.clone(),
        rotate_log: log_file.clone().map(|file| {
            let rotate: tachyon_net::admin::RotateLog = std::sync::Arc::new(move || {
                file.rotate()
                    .map(|()| {
                        info!("log file rotated (admin API)");
                        "log file rotated: the old file was renamed with a timestamp and a new one started".to_string()
                    })
                    .map_err(|error| {
                        warn!("log rotation failed: {error}");
                        format!("log rotation failed: {error}")
                    })
            });
            rotate
        }),
        journal: server.journal.clone(),
        config: std::sync::Arc::new(admin_config),
        placement: plan.to_string(),
        started_at,
        version: env!("CARGO_PKG_VERSION"),
    }) {
        Ok(admin) => admin,
        Err(error) => {
            jsonl.stop();
            server.stop();
            return Err(error).context("cannot start the admin API");
        }
    };
    let watchdog = tachyon_net::watchdog::Watchdog::start(server.stats.clone(), watchdog_config)
        .context("cannot start the watchdog thread")?;
    info!(address = %admin.address(), "admin API on http://{}/health, /amps/instance, /metrics", admin.address());
    let mut signals = signals;
    for signal in signals.forever() {
        if signal == signal_hook::consts::SIGQUIT {
            tachyon_net::watchdog::write_minidump(
                &minidump_dir,
                "SIGQUIT",
                "requested with SIGQUIT",
            );
            continue;
        }
        if signal == signal_hook::consts::SIGUSR1 {
            // Log rotation on demand (logrotate's postrotate, or an operator).
            match &log_file {
                Some(file) => match file.rotate() {
                    Ok(()) => info!("log file rotated (SIGUSR1)"),
                    Err(error) => warn!("log rotation failed: {error}"),
                },
                None => info!("SIGUSR1: no log file configured, nothing to rotate"),
            }
            continue;
        }
        info!(signal, "stop requested: draining connections");
        break;
    }
    admin.set_shutting_down();
    watchdog.stop();
    jsonl.stop();
    server.stop();
    admin.stop();
    drop(data_dir);
    info!("tachyon solo stopped cleanly");
    Ok(0)
}
