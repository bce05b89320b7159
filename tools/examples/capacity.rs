//! Runs `tachyon capacity` from this crate alone, until the main binary wires it in:
//! `cargo run -p tachyon-tools --example capacity -- --help`.

use clap::Parser;

/// Memory, storage and network sizing for a Tachyon deployment.
#[derive(Parser)]
#[command(name = "tachyon capacity")]
struct Cli {
    #[command(flatten)]
    args: tachyon_tools::capacity::CapacityArgs,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let code = tachyon_tools::capacity::run(&cli.args)?;
    std::process::exit(code);
}
