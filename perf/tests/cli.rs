//! Black-box test of the `tachyon-bench` binary: a tiny `latency` run against the relay, started
//! as its own process the way real measurements start it. Asserts correctness (every message
//! arrived, in order, and the JSON says so), never timing.

use std::process::Command;

#[test]
fn latency_against_the_relay_process_writes_a_complete_report() {
    let directory = std::env::temp_dir().join(format!("tachyon-bench-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    std::fs::create_dir_all(&directory).unwrap();
    let json = directory.join("out.json");
    let hdr_dir = directory.join("hdr");
    let output = Command::new(env!("CARGO_BIN_EXE_tachyon-bench"))
        .args([
            "latency",
            "--systems",
            "relay",
            "--rates",
            "5000",
            "--sizes",
            "128,1024",
        ])
        .args(["--warmup", "0", "--duration", "200ms", "--no-pin"])
        .arg("--json")
        .arg(&json)
        .arg("--hdr-dir")
        .arg(&hdr_dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("relay"), "{stdout}");

    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["settings"]["relay"], "process");
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    for result in results {
        assert_eq!(result["error"], serde_json::Value::Null, "{result}");
        assert_eq!(result["sent"], 1_000, "{result}");
        assert_eq!(result["received"], 1_000, "{result}");
        assert_eq!(result["lost"], 0, "{result}");
        assert_eq!(result["out_of_order"], 0, "{result}");
        assert_eq!(result["recorded"], 1_000, "{result}");
    }
    assert!(report["environment"]["cpus_online"].as_u64().unwrap() >= 1);
    assert!(hdr_dir.join("relay-5000-128.hdr").is_file());
    assert!(hdr_dir.join("relay-5000-1024.hdr").is_file());
    std::fs::remove_dir_all(&directory).unwrap();
}

#[test]
fn missing_tachyon_binary_fails_fast_with_the_fix() {
    let output = Command::new(env!("CARGO_BIN_EXE_tachyon-bench"))
        .args([
            "latency",
            "--systems",
            "tachyon",
            "--smoke",
            "--tachyon-bin",
            "/nonexistent/tachyon",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cargo build --release"), "{stderr}");
}

#[test]
fn persisted_ack_without_tachyon_says_why_and_succeeds() {
    let output = Command::new(env!("CARGO_BIN_EXE_tachyon-bench"))
        .args(["scenario", "persisted-ack", "--systems", "relay,nats"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(
        stdout.contains("persisted-ack: relay skipped: it keeps nothing"),
        "{stdout}"
    );
    assert!(stdout.contains("persisted-ack: nats skipped"), "{stdout}");
}

/// Against the release server, journal on this disk; skipped when the server is not built.
#[test]
fn persisted_ack_against_the_release_server_acks_every_message() {
    let binary = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/tachyon");
    if !binary.is_file() {
        eprintln!("skipped: {} is not built", binary.display());
        return;
    }
    let journal_dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("persisted-ack-{}", std::process::id()));
    let json = journal_dir.join("out.json");
    std::fs::create_dir_all(&journal_dir).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_tachyon-bench"))
        .args(["scenario", "persisted-ack", "--systems", "tachyon"])
        .args([
            "--rate",
            "2000",
            "--warmup",
            "0",
            "--duration",
            "200ms",
            "--no-pin",
        ])
        .arg("--tachyon-bin")
        .arg(&binary)
        .arg("--journal-dir")
        .arg(&journal_dir)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("durability adds"), "{stdout}");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let results = report["results"].as_array().unwrap();
    let scenarios: Vec<&str> = results
        .iter()
        .map(|result| result["scenario"].as_str().unwrap())
        .collect();
    assert_eq!(
        scenarios,
        ["persisted-ack-journal", "persisted-ack-no-journal"]
    );
    for result in results {
        assert_eq!(result["error"], serde_json::Value::Null, "{result}");
        assert_eq!(result["sent"], 400, "{result}");
        assert_eq!(result["received"], 400, "{result}");
        assert_eq!(result["lost"], 0, "{result}");
        assert_eq!(result["recorded"], 400, "{result}");
    }
    assert!(results[0]["journal_backend"].is_string(), "{}", results[0]);
    // The server's data directories are gone; only the report is left.
    let left: Vec<_> = std::fs::read_dir(&journal_dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(left, [std::ffi::OsString::from("out.json")]);
    std::fs::remove_dir_all(&journal_dir).unwrap();
}

#[test]
fn sow_query_skips_systems_without_a_sow() {
    let output = Command::new(env!("CARGO_BIN_EXE_tachyon-bench"))
        .args(["scenario", "sow-query", "--systems", "relay,nats"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(
        stdout.contains("sow-query: relay and nats skipped: no State of the World"),
        "{stdout}"
    );
}

/// Against the release server; skipped when it is not built.
#[test]
fn sow_query_smoke_writes_its_rows_to_the_json() {
    let binary = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/tachyon");
    if !binary.is_file() {
        eprintln!("skipped: {} is not built", binary.display());
        return;
    }
    let json = std::env::temp_dir().join(format!("tachyon-bench-sow-{}.json", std::process::id()));
    let output = Command::new(env!("CARGO_BIN_EXE_tachyon-bench"))
        .args([
            "scenario",
            "sow-query",
            "--smoke",
            "--systems",
            "tachyon",
            "--no-pin",
        ])
        .arg("--tachyon-bin")
        .arg(&binary)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("full-scan"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(&json);
    let cases: Vec<&str> = report["sow_query"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["case"].as_str().unwrap())
        .collect();
    assert_eq!(
        cases,
        [
            "key-lookup",
            "filter-2pct",
            "full-scan",
            "sow-and-subscribe"
        ]
    );
}

#[test]
fn pubsub_scenario_against_the_relay_process_writes_json_and_plot() {
    let directory =
        std::env::temp_dir().join(format!("tachyon-bench-scenario-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    std::fs::create_dir_all(&directory).unwrap();
    let json = directory.join("out.json");
    let plot = directory.join("plot.svg");
    let output = Command::new(env!("CARGO_BIN_EXE_tachyon-bench"))
        .args(["scenario", "pubsub,filtered", "--systems", "relay"])
        .args(["--rate", "2000", "--sizes", "128", "--subscribers", "1,3"])
        .args(["--warmup", "0", "--duration", "200ms", "--no-pin"])
        .arg("--json")
        .arg(&json)
        .arg("--plot")
        .arg(&plot)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("[pubsub-3sub]"), "{stdout}");
    assert!(stdout.contains("relay skipped"), "{stdout}");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    let three = &results[1];
    assert_eq!(three["scenario"], "pubsub-3sub");
    assert_eq!(three["sent"], 400, "{three}");
    assert_eq!(three["received"], 1_200, "{three}");
    assert_eq!(three["lost"], 0, "{three}");
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert_eq!(svg.matches("<polyline").count(), 2);
    std::fs::remove_dir_all(&directory).unwrap();
}
