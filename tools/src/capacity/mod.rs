//! `tachyon capacity`: memory, storage and network sizing from the workload.
//!
//! Inputs come from flags (with units), a `--workload` TOML file with the same names, and the
//! appliance `--config`; [`inputs`] resolves them, [`formulas`] computes, [`report`] prints. The
//! planner reads files only; it never looks at or changes the host beyond counting its CPUs as the
//! default core count.

pub mod formulas;
pub mod inputs;
pub mod report;
pub mod units;

use std::path::PathBuf;

use inputs::{Flags, InputError, WorkloadFile};

/// Percent of each estimate to provision unless told otherwise: twice the estimate, as
/// recommended for critical systems.
pub const HEADROOM_DEFAULT_PERCENT: u32 = 200;

/// Options of `tachyon capacity`. Sizes accept decimal (KB = 1000 B) and binary (KiB = 1024 B)
/// units; counts accept k, M, G (powers of 1000).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CapacityArgs {
    /// S: average message size, e.g. 600, 1KB, 1KiB (required here or in the workload file).
    #[arg(long, value_name = "SIZE", value_parser = units::parse_bytes)]
    pub message_size: Option<u64>,

    /// M: messages held in all SOW topics together, e.g. 20000000 or 20M.
    #[arg(long, value_name = "COUNT", value_parser = units::parse_count)]
    pub sow_messages: Option<u64>,

    /// C: connected clients [default: the config's [limits] max_clients, else 0].
    #[arg(long, value_name = "COUNT", value_parser = units::parse_count)]
    pub clients: Option<u64>,

    /// TMemLimit: total message memory limit across all clients, e.g. 10GB.
    #[arg(long, value_name = "SIZE", value_parser = units::parse_bytes)]
    pub client_memory: Option<u64>,

    /// J: journal size, e.g. 1GB [default: the config's [journal] size_bytes, else 0].
    #[arg(long, value_name = "SIZE", value_parser = units::parse_bytes)]
    pub journal_size: Option<u64>,

    /// Q: messages held in all queues together, e.g. 1M.
    #[arg(long, value_name = "COUNT", value_parser = units::parse_count)]
    pub queued_messages: Option<u64>,

    /// Cores with a preallocated SOW slab [default: the config's [runtime] cores, else this host's CPUs].
    #[arg(long, value_name = "COUNT", value_parser = units::parse_count)]
    pub cores: Option<u64>,

    /// SlabSize: SOW slab size, e.g. 1MiB [default: 1MiB].
    #[arg(long, value_name = "SIZE", value_parser = units::parse_bytes)]
    pub slab_size: Option<u64>,

    /// N: messages retained in the transaction log, e.g. 500M.
    #[arg(long, value_name = "COUNT", value_parser = units::parse_count)]
    pub retained_messages: Option<u64>,

    /// R: messages published per second, e.g. 5000, 5k/s or 300k/min.
    #[arg(long, value_name = "RATE", value_parser = units::parse_rate)]
    pub publish_rate: Option<f64>,

    /// Mr: fraction of subscriptions an average message matches, e.g. 0.02 or 2%.
    #[arg(long, value_name = "RATIO", value_parser = units::parse_ratio)]
    pub match_ratio: Option<f64>,

    /// Ns: subscriptions across all clients.
    #[arg(long, value_name = "COUNT", value_parser = units::parse_count)]
    pub subscriptions: Option<u64>,

    /// Mq: records returned by an average SOW query.
    #[arg(long, value_name = "COUNT", value_parser = units::parse_count)]
    pub query_records: Option<u64>,

    /// Qs: SOW queries per second, e.g. 0.5, 5/min or 1/12s.
    #[arg(long, value_name = "RATE", value_parser = units::parse_rate)]
    pub query_rate: Option<f64>,

    /// Provision this percent of each estimate: 200 (twice the estimate) for critical systems, at least 100 [default: 200].
    #[arg(long, value_name = "PERCENT", value_parser = units::parse_percent)]
    pub headroom: Option<u32>,

    /// Workload file (TOML) whose keys are these flag names without dashes in front,
    /// e.g. `sow-messages = "20M"`; flags override it.
    #[arg(long, value_name = "FILE")]
    pub workload: Option<PathBuf>,

    /// Appliance config (TOML): clients, journal size and cores come from it unless given.
    #[arg(long, env = "TACHYON_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Print the plan as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Computes the plan and prints it; returns exit status 0 (bad inputs are errors).
pub fn run(args: &CapacityArgs) -> anyhow::Result<i32> {
    let text = plan(args)?;
    print!("{text}");
    Ok(0)
}

/// The plan as the command prints it (table or JSON).
pub fn plan(args: &CapacityArgs) -> Result<String, InputError> {
    let file = match &args.workload {
        Some(path) => inputs::load_workload(path)?,
        None => WorkloadFile::default(),
    };
    let config = args
        .config
        .as_deref()
        .map(crate::config::load)
        .transpose()?;
    let host_cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    let flags = Flags {
        message_size: args.message_size,
        sow_messages: args.sow_messages,
        clients: args.clients,
        client_memory: args.client_memory,
        journal_size: args.journal_size,
        queued_messages: args.queued_messages,
        cores: args.cores,
        slab_size: args.slab_size,
        retained_messages: args.retained_messages,
        publish_rate: args.publish_rate,
        match_ratio: args.match_ratio,
        subscriptions: args.subscriptions,
        query_records: args.query_records,
        query_rate: args.query_rate,
        headroom: args.headroom,
    };
    let resolved = inputs::resolve(&flags, &file, config.as_ref(), host_cores)?;
    let estimates = formulas::estimate(&resolved.workload);
    Ok(if args.json {
        report::render_json(&resolved, &estimates) + "\n"
    } else {
        report::render_table(&resolved, &estimates)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: CapacityArgs,
    }

    fn parse(argv: &[&str]) -> CapacityArgs {
        Cli::try_parse_from(std::iter::once("capacity").chain(argv.iter().copied()))
            .unwrap()
            .args
    }

    #[test]
    fn memory_example_end_to_end_through_the_flags() {
        let args = parse(&[
            "--message-size",
            "1KB",
            "--sow-messages",
            "20M",
            "--clients",
            "200",
            "--client-memory",
            "10GB",
            "--journal-size",
            "1GB",
            "--queued-messages",
            "1M",
            "--cores",
            "4",
        ]);
        let text = plan(&args).unwrap();
        assert!(text.contains("53.27 GB (49.61 GiB)"), "{text}");
        // 200% headroom: 2 x 53_270_561_024 = 106_541_122_048 B.
        assert!(text.contains("106.54 GB (99.22 GiB)"), "{text}");
    }

    #[test]
    fn network_example_end_to_end_through_a_workload_file() {
        let dir =
            std::env::temp_dir().join(format!("tachyon-capacity-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let workload = dir.join("workload.toml");
        std::fs::write(&workload, "message-size = 600\npublish-rate = 5000\nmatch-ratio = \"2%\"\nsubscriptions = 100\nquery-records = 1000\nquery-rate = \"5/min\"\n").unwrap();
        let args = parse(&["--workload", workload.to_str().unwrap(), "--json"]);
        let json: serde_json::Value = serde_json::from_str(&plan(&args).unwrap()).unwrap();
        let total = json["estimates"]["network"]["total_bytes_per_second"]
            .as_f64()
            .unwrap();
        assert!((total - 9_050_000.0).abs() < 1e-6, "{total}");
        assert!(
            (json["provisioned"]["network_bytes_per_second"]
                .as_f64()
                .unwrap()
                - 18_100_000.0)
                .abs()
                < 1e-6
        );
        assert_eq!(json["inputs"]["workload"]["message_size_bytes"], 600);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn flags_reject_bad_units() {
        assert!(Cli::try_parse_from(["capacity", "--message-size", "1XB"]).is_err());
        assert!(Cli::try_parse_from(["capacity", "--match-ratio", "200%"]).is_err());
    }

    #[test]
    fn missing_message_size_is_an_error() {
        assert!(matches!(
            plan(&parse(&["--sow-messages", "5"])),
            Err(InputError::MessageSizeMissing)
        ));
    }
}
