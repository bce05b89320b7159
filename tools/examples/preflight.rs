//! Runs `tachyon preflight` from this crate alone, until the main binary wires it in:
//! `cargo run -p tachyon-tools --example preflight -- --help`.

use clap::Parser;

/// Is this host fit to run Tachyon?
#[derive(Parser)]
#[command(name = "tachyon preflight")]
struct Cli {
    #[command(flatten)]
    args: tachyon_tools::preflight::PreflightArgs,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let code = tachyon_tools::preflight::run(&cli.args)?;
    std::process::exit(code);
}
