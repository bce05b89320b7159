//! `tachyon preflight`: is this host fit to run Tachyon?
//!
//! Runs a fixed table of typed checks (rlimits, sysctls, CPU, io_uring, NUMA, storage) against the
//! host through [`host::HostView`], prints a table or JSON, and exits 0 (all pass), 1 (warnings) or
//! 2 (a fatal failure). `--fix` prints the settings that bring every failed check to its
//! recommended value; only `--fix --write` changes anything, and then only two files under `/etc`.

pub mod check;
pub mod checks;
pub mod fix;
pub mod host;
pub mod report;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use checks::Context;
use fix::FixPlan;
use host::{HostView, RealHost};
use report::{FixOutput, HostFacts, Report};

/// When to colour the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorMode {
    /// Colour when stdout is a terminal and NO_COLOR is unset.
    Auto,
    /// Always colour.
    Always,
    /// Never colour.
    Never,
}

/// Options of `tachyon preflight`.
#[derive(Debug, Clone, clap::Args)]
pub struct PreflightArgs {
    /// Appliance config (TOML). Its data_dir, [runtime] cores, [[sow.topics]], [limits] max_clients
    /// and [journal] size_bytes / preallocated_segments raise the requirements to what it needs.
    #[arg(long, env = "TACHYON_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Data directory to check, overriding the config's data_dir [default: ./tachyon-data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Print the report as JSON (for CI and scripts) instead of a table.
    #[arg(long)]
    pub json: bool,

    /// Print the sysctl.d and limits.d settings that bring every failed check to its recommended
    /// value. Changes nothing unless --write is given too.
    #[arg(long)]
    pub fix: bool,

    /// With --fix: write the settings to /etc/sysctl.d/60-tachyon.conf and
    /// /etc/security/limits.d/60-tachyon.conf (merged with what they hold; needs root).
    #[arg(long, requires = "fix")]
    pub write: bool,

    /// User the limits.d lines apply to [default: $SUDO_USER, else $USER, else *].
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,

    /// When to colour the table.
    #[arg(long, value_enum, default_value_t = ColorMode::Auto, value_name = "WHEN")]
    pub color: ColorMode,
}

/// Why the preflight could not produce a report.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    /// The config file could not be used.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The fix files could not be written.
    #[error(transparent)]
    Fix(#[from] fix::FixError),
    /// The working directory is unknown, so a relative data dir cannot be resolved.
    #[error("cannot resolve data directory {path}: {source}")]
    DataDir {
        /// The relative path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Writing the report to stdout failed.
    #[error("cannot write the report: {0}")]
    Output(#[source] std::io::Error),
}

/// Runs the preflight on this host, prints the report, and returns the exit status (0, 1 or 2).
pub fn run(args: &PreflightArgs) -> anyhow::Result<i32> {
    let stdout = std::io::stdout();
    let colour = match args.color {
        ColorMode::Always => true,
        ColorMode::Never => false,
        ColorMode::Auto => stdout.is_terminal() && std::env::var_os("NO_COLOR").is_none(),
    };
    let mut out = stdout.lock();
    Ok(run_with(&RealHost, args, colour, Path::new("/"), &mut out)?)
}

/// The whole command against any host, writing to `out`; fix files go under `fix_root`.
pub fn run_with(
    host: &dyn HostView,
    args: &PreflightArgs,
    colour: bool,
    fix_root: &Path,
    out: &mut dyn Write,
) -> Result<i32, PreflightError> {
    let context = build_context(args)?;
    let checks = checks::run_all(host, &context);
    let summary = report::summarize(&checks);
    let mut report = Report {
        host: HostFacts {
            hostname: read_fact(host, "/proc/sys/kernel/hostname"),
            kernel: read_fact(host, "/proc/sys/kernel/osrelease"),
        },
        config: context.config.as_ref().map(|config| config.path.clone()),
        data_dir: context.data_dir.clone(),
        exit_code: report::exit_code(summary),
        checks,
        summary,
        fix: None,
    };

    let user = args.user.clone().unwrap_or_else(fix::default_user);
    let mut fix_text = None;
    if args.fix {
        let plan = FixPlan::from_results(&report.checks);
        let written = if args.write {
            plan.write(fix_root, &user)?
        } else {
            Vec::new()
        };
        fix_text = Some(if args.write {
            written_text(&plan, &written)
        } else {
            plan.render(&user)
        });
        report.fix = Some(FixOutput { plan, written });
    }

    let text = if args.json {
        report::render_json(&report) + "\n"
    } else {
        let mut text = report::render_table(&report, colour);
        if let Some(fix_text) = fix_text {
            text.push('\n');
            text.push_str(&fix_text);
        }
        text
    };
    out.write_all(text.as_bytes())
        .map_err(PreflightError::Output)?;
    Ok(report.exit_code)
}

/// What `--fix --write` tells the operator.
fn written_text(plan: &FixPlan, written: &[PathBuf]) -> String {
    let mut text = String::new();
    if written.is_empty() {
        text.push_str("Nothing to write: no failed check has a sysctl or limits fix.\n");
    }
    for path in written {
        text.push_str(&format!("Wrote {}\n", path.display()));
    }
    if !plan.sysctls.is_empty() {
        text.push_str("Apply the sysctls now with: sysctl --system\n");
    }
    if !plan.limits.is_empty() {
        text.push_str("Limits apply at the service user's next login; systemd units need Limit*= lines (see --fix without --write).\n");
    }
    for step in &plan.manual {
        text.push_str(&format!(
            "Manual step for {}: {}\n",
            step.check, step.command
        ));
    }
    text
}

fn read_fact(host: &dyn HostView, path: &str) -> String {
    host.read_file(path)
        .map(|text| text.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Resolves the config and data directory the checks run against.
fn build_context(args: &PreflightArgs) -> Result<Context, PreflightError> {
    let config = args
        .config
        .as_deref()
        .map(crate::config::load)
        .transpose()?;
    let data_dir = match (&args.data_dir, &config) {
        (Some(dir), _) => dir.clone(),
        (None, Some(config)) => config.data_dir.clone(),
        (None, None) => PathBuf::from(crate::config::DATA_DIR_DEFAULT),
    };
    // Absolute, so the report and mount lookup name the real place; no symlinks resolved here
    // because the directory may not exist yet.
    let data_dir = std::path::absolute(&data_dir).map_err(|source| PreflightError::DataDir {
        path: data_dir.clone(),
        source,
    })?;
    Ok(Context { data_dir, config })
}

#[cfg(test)]
mod tests {
    use super::checks::testing::{healthy_host, DATA_DIR};
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: PreflightArgs,
    }

    fn args(extra: &[&str]) -> PreflightArgs {
        let mut argv = vec!["preflight", "--data-dir", DATA_DIR];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).unwrap().args
    }

    fn run_fake(host: &dyn HostView, args: &PreflightArgs, fix_root: &Path) -> (i32, String) {
        let mut out = Vec::new();
        let code = run_with(host, args, false, fix_root, &mut out).unwrap();
        (code, String::from_utf8(out).unwrap())
    }

    #[test]
    fn healthy_host_exits_zero() {
        let (code, text) = run_fake(&healthy_host(), &args(&[]), Path::new("/nonexistent"));
        assert_eq!(code, 0, "{text}");
        assert!(text.contains("Exit status 0 (all checks pass)"));
    }

    #[test]
    fn warnings_exit_one_and_fatal_exits_two() {
        let host = healthy_host();
        host.write("/proc/sys/vm/max_map_count", "65530");
        assert_eq!(run_fake(&host, &args(&[]), Path::new("/nonexistent")).0, 1);
        host.write("/proc/sys/vm/max_map_count", "100");
        assert_eq!(run_fake(&host, &args(&[]), Path::new("/nonexistent")).0, 2);
    }

    #[test]
    fn json_report_parses() {
        let host = healthy_host();
        host.write("/proc/sys/fs/file-max", "300000");
        let (code, text) = run_fake(&host, &args(&["--json"]), Path::new("/nonexistent"));
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["exit_code"], code);
        assert_eq!(
            json["checks"].as_array().unwrap().len(),
            checks::all().len()
        );
        let file_max = json["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|check| check["id"] == "sysctl.fs.file-max")
            .unwrap();
        assert_eq!(file_max["status"], "warn");
        assert_eq!(file_max["current"], 300000);
    }

    #[test]
    fn fix_prints_and_write_writes_only_under_the_root() {
        let host = healthy_host();
        host.write("/proc/sys/fs/aio-max-nr", "65536");
        let fix_root = host.root.join("fixroot");
        let (_, text) = run_fake(&host, &args(&["--fix", "--user", "svc"]), &fix_root);
        assert!(text.contains("fs.aio-max-nr = 1048576"), "{text}");
        assert!(!fix_root.exists(), "--fix alone must not write");

        let (_, text) = run_fake(
            &host,
            &args(&["--fix", "--write", "--user", "svc"]),
            &fix_root,
        );
        assert!(text.contains("Wrote"), "{text}");
        let written = std::fs::read_to_string(fix_root.join(fix::SYSCTL_CONF_PATH)).unwrap();
        assert!(written.ends_with("fs.aio-max-nr = 1048576\n"));
    }

    #[test]
    fn write_requires_fix() {
        assert!(Cli::try_parse_from(["preflight", "--write"]).is_err());
    }

    #[test]
    fn config_sets_the_data_dir_and_bad_config_is_an_error() {
        let host = healthy_host();
        let config = host.root.join("tachyon.toml");
        std::fs::write(&config, "[limits]\nmax_clients = 100000\n").unwrap();
        let parsed = args(&["--config", config.to_str().unwrap(), "--json"]);
        let (code, text) = run_fake(&host, &parsed, Path::new("/nonexistent"));
        // 2 x 100000 clients needs 200000 descriptors; the fake host allows 65536.
        assert_eq!(code, 2);
        assert!(text.contains("\"at_least\": 200000"));

        std::fs::write(&config, "[limits]\nmax_clients = \"lots\"\n").unwrap();
        let parsed = args(&["--config", config.to_str().unwrap()]);
        let mut out = Vec::new();
        assert!(matches!(
            run_with(&host, &parsed, false, Path::new("/x"), &mut out),
            Err(PreflightError::Config(_))
        ));
    }
}
