//! Prints this machine's topology and the automatic placement plan, as the server would log them.
//!
//! `cargo run -p tachyon-numa --example placement [-- --json]`

use tachyon_numa::{plan, PlacementRequest, Topology};

fn main() {
    let topology = Topology::discover();
    let placement = match plan(&topology, &PlacementRequest::default()) {
        Ok(placement) => placement,
        Err(error) => {
            eprintln!("placement failed: {error}");
            std::process::exit(1);
        }
    };
    if std::env::args().any(|arg| arg == "--json") {
        let both = serde_json::json!({ "topology": topology, "plan": placement });
        println!(
            "{}",
            serde_json::to_string_pretty(&both).expect("plain data serializes")
        );
    } else {
        for warning in &topology.warnings {
            println!("warning: {warning}");
        }
        print!("{placement}");
    }
}
