//! Presentation of a capacity plan: a readable table with units, and JSON for machines.
//!
//! Every figure is shown with its formula, its estimate and the provisioned value at the chosen
//! headroom; every input with its source. Bytes appear in decimal units (as disks and links are
//! sold) with the binary figure beside totals (as memory is counted). Nothing is computed here
//! except the headroom multiplication.

use std::fmt::Write as _;

use serde::Serialize;

use super::formulas::{provisioned, Estimates};
use super::inputs::{Resolved, Source};
use super::units::{
    format_bits_per_second, format_bytes_binary, format_bytes_decimal, format_bytes_per_second,
};

/// Provisioned figures: each estimate times the headroom.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Provisioned {
    /// Memory to provision.
    pub memory_bytes: u128,
    /// SOW storage to provision (from the maximum estimate).
    pub sow_storage_bytes: u128,
    /// Transaction-log storage to provision.
    pub transaction_log_bytes: u128,
    /// Network bandwidth to provision.
    pub network_bytes_per_second: f64,
}

/// Applies the headroom to every estimate.
pub fn provision(estimates: &Estimates, headroom_percent: u32) -> Provisioned {
    Provisioned {
        memory_bytes: provisioned(estimates.memory.total_bytes, headroom_percent),
        sow_storage_bytes: provisioned(estimates.sow_storage.max_bytes, headroom_percent),
        transaction_log_bytes: provisioned(estimates.transaction_log_bytes, headroom_percent),
        network_bytes_per_second: estimates.network.total_bytes_per_second
            * headroom_percent as f64
            / 100.0,
    }
}

/// The JSON document.
#[derive(Debug, Serialize)]
struct JsonPlan<'a> {
    inputs: &'a Resolved,
    estimates: &'a Estimates,
    provisioned: Provisioned,
}

/// The plan as JSON.
pub fn render_json(resolved: &Resolved, estimates: &Estimates) -> String {
    let plan = JsonPlan {
        inputs: resolved,
        estimates,
        provisioned: provision(estimates, resolved.headroom_percent),
    };
    // Plain data with string keys: serializing cannot fail.
    serde_json::to_string_pretty(&plan).expect("capacity plan serializes")
}

/// `1024 B (1.02 kB, 1 KiB)`: the exact input and each reading that differs from it.
fn input_bytes(bytes: u64) -> String {
    let mut readings = Vec::new();
    if bytes >= 1000 {
        readings.push(format_bytes_decimal(bytes as u128));
    }
    if bytes >= 1024 {
        readings.push(format_bytes_binary(bytes));
    }
    if readings.is_empty() {
        format!("{bytes} B")
    } else {
        format!("{bytes} B ({})", readings.join(", "))
    }
}

/// A rate per second, with the per-minute reading when slower than one a second.
fn input_rate(per_second: f64) -> String {
    if per_second > 0.0 && per_second < 1.0 {
        format!(
            "{} /s ({} /min)",
            significant(per_second),
            significant(per_second * 60.0)
        )
    } else {
        format!("{} /s", significant(per_second))
    }
}

/// Up to four significant digits, without trailing zeros.
fn significant(value: f64) -> String {
    if value == 0.0 {
        return "0".into();
    }
    let decimals = (3 - value.abs().log10().floor() as i32).max(0) as usize;
    let text = format!("{value:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

fn source_label(source: Source) -> &'static str {
    match source {
        Source::Flag => "flag",
        Source::Workload => "workload file",
        Source::Config => "config",
        Source::Host => "this host's CPUs",
        Source::Default => "default",
    }
}

/// `53.27 GB (49.61 GiB)`.
fn both(bytes: u128) -> String {
    match u64::try_from(bytes) {
        Ok(small) => format!(
            "{} ({})",
            format_bytes_decimal(bytes),
            format_bytes_binary(small)
        ),
        Err(_) => format_bytes_decimal(bytes),
    }
}

/// The readable plan.
pub fn render_table(resolved: &Resolved, estimates: &Estimates) -> String {
    let w = &resolved.workload;
    let headroom = resolved.headroom_percent;
    let provisioned = provision(estimates, headroom);
    let mut out = String::new();
    let _ = writeln!(out, "Tachyon capacity plan: provisioning {headroom}% of each estimate (--headroom; 200 for critical systems)");
    out.push('\n');

    let _ = writeln!(out, "Inputs");
    for input in &resolved.inputs {
        let value = match input.key {
            "message-size" => input_bytes(w.message_size_bytes),
            "sow-messages" => w.sow_messages.to_string(),
            "clients" => w.clients.to_string(),
            "client-memory" => input_bytes(w.client_memory_bytes),
            "journal-size" => input_bytes(w.journal_size_bytes),
            "queued-messages" => w.queued_messages.to_string(),
            "cores" => w.cores.to_string(),
            "slab-size" => input_bytes(w.slab_size_bytes),
            "retained-messages" => w.retained_messages.to_string(),
            "publish-rate" => input_rate(w.publish_rate_per_second),
            "match-ratio" => format!(
                "{} ({}%)",
                significant(w.match_ratio),
                significant(w.match_ratio * 100.0)
            ),
            "subscriptions" => w.subscriptions.to_string(),
            "query-records" => w.query_records.to_string(),
            "query-rate" => input_rate(w.query_rate_per_second),
            "headroom" => format!("{headroom}%"),
            other => other.to_string(),
        };
        let _ = writeln!(
            out,
            "  {:<10} --{:<19} {:<38} {}",
            input.symbol,
            input.key,
            value,
            source_label(input.source)
        );
    }
    out.push('\n');

    let row = |out: &mut String, formula: &str, what: &str, estimate: String, provision: String| {
        let line = format!("  {formula:<24} {what:<28} {estimate:<26} {provision}");
        let _ = writeln!(out, "{}", line.trim_end());
    };
    let m = &estimates.memory;
    let section = |out: &mut String, title: &str| {
        // Aligned with `row`: 2 + 24 + 1 + 28 + 1 columns before the estimate.
        let _ = writeln!(out, "{title:<56}{:<27}provision ({headroom}%)", "estimate");
    };
    section(&mut out, "Memory");
    row(
        &mut out,
        "1 GiB",
        "server itself",
        format_bytes_decimal(m.base_bytes),
        String::new(),
    );
    row(
        &mut out,
        "2·S·M",
        "SOW messages and indexes",
        format_bytes_decimal(m.sow_bytes),
        String::new(),
    );
    row(
        &mut out,
        "C·4096",
        "client state",
        format_bytes_decimal(m.clients_bytes),
        String::new(),
    );
    row(
        &mut out,
        "TMemLimit",
        "client message buffers",
        format_bytes_decimal(m.client_messages_bytes),
        String::new(),
    );
    row(
        &mut out,
        "2·J",
        "journal in memory",
        format_bytes_decimal(m.journal_bytes),
        String::new(),
    );
    row(
        &mut out,
        "196·Q",
        "queue metadata",
        format_bytes_decimal(m.queued_bytes),
        String::new(),
    );
    row(
        &mut out,
        "total",
        "",
        both(m.total_bytes),
        both(provisioned.memory_bytes),
    );
    out.push('\n');

    let s = &estimates.sow_storage;
    section(&mut out, "Storage");
    row(
        &mut out,
        "S·M + Cores·SlabSize",
        "SOW, packed slabs (min)",
        both(s.min_bytes),
        String::new(),
    );
    row(
        &mut out,
        "(S + SlabSize)·M",
        "SOW, a slab each (max)",
        both(s.max_bytes),
        both(provisioned.sow_storage_bytes),
    );
    row(
        &mut out,
        "(S + 512)·N",
        "transaction log",
        both(estimates.transaction_log_bytes),
        both(provisioned.transaction_log_bytes),
    );
    row(
        &mut out,
        "SlabSize − 64, ≥ 1 MiB",
        "largest SOW message",
        format_bytes_binary(s.message_max_bytes),
        String::new(),
    );
    out.push('\n');

    let n = &estimates.network;
    let rate = |bytes_per_second: f64| {
        format!(
            "{} = {}",
            format_bytes_per_second(bytes_per_second),
            format_bits_per_second(bytes_per_second)
        )
    };
    section(&mut out, "Network");
    row(
        &mut out,
        "R·S",
        "publishes in",
        rate(n.publish_bytes_per_second),
        String::new(),
    );
    row(
        &mut out,
        "R·S·Mr·Ns",
        "deliveries out",
        rate(n.delivery_bytes_per_second),
        String::new(),
    );
    row(
        &mut out,
        "Mq·S·Qs",
        "SOW query results out",
        rate(n.query_bytes_per_second),
        String::new(),
    );
    row(
        &mut out,
        "total",
        "",
        rate(n.total_bytes_per_second),
        rate(provisioned.network_bytes_per_second),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn significant_digits() {
        assert_eq!(significant(5000.0), "5000");
        assert_eq!(significant(5.0 / 60.0), "0.08333");
        assert_eq!(significant(0.02), "0.02");
        assert_eq!(significant(2.0), "2");
        assert_eq!(significant(0.0), "0");
    }

    #[test]
    fn input_readings() {
        assert_eq!(input_bytes(600), "600 B");
        assert_eq!(input_bytes(1000), "1000 B (1 kB)");
        assert_eq!(input_bytes(1024), "1024 B (1.02 kB, 1 KiB)");
        assert_eq!(input_rate(5.0 / 60.0), "0.08333 /s (5 /min)");
        assert_eq!(both(53_270_561_024), "53.27 GB (49.61 GiB)");
    }
}
