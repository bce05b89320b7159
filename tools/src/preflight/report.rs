//! Presentation of preflight results: the readable table, the JSON document and the exit status.
//!
//! The table is coloured only when asked to (the caller decides from `IsTerminal`); colour is plain
//! ANSI SGR codes so nothing else is needed. This module never runs checks or touches the host.

use std::fmt::Write as _;
use std::path::PathBuf;

use serde::Serialize;

use super::check::{CheckResult, Status};
use super::fix::FixPlan;

/// Exit status: every check passed.
pub const EXIT_PASS: i32 = 0;
/// Exit status: warnings, no fatal failure.
pub const EXIT_WARN: i32 = 1;
/// Exit status: at least one fatal check failed.
pub const EXIT_FAIL: i32 = 2;

/// Facts that identify the host the report is about.
#[derive(Debug, Clone, Serialize)]
pub struct HostFacts {
    /// `kernel.hostname`.
    pub hostname: String,
    /// `kernel.osrelease`.
    pub kernel: String,
}

/// Counts of checks by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Checks that passed.
    pub pass: usize,
    /// Checks that warned.
    pub warn: usize,
    /// Fatal checks that failed.
    pub fail: usize,
    /// Informational checks.
    pub info: usize,
}

/// Everything one preflight run found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The host.
    pub host: HostFacts,
    /// The config the checks used, if any.
    pub config: Option<PathBuf>,
    /// The data directory checked.
    pub data_dir: PathBuf,
    /// Every check, in table order.
    pub checks: Vec<CheckResult>,
    /// Counts by status.
    pub summary: Summary,
    /// 0 all pass, 1 warnings only, 2 any fatal failure.
    pub exit_code: i32,
    /// The `--fix` plan, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<FixOutput>,
}

/// The fix part of the JSON report.
#[derive(Debug, Clone, Serialize)]
pub struct FixOutput {
    /// The settings.
    pub plan: FixPlan,
    /// Files written (only with `--write`).
    pub written: Vec<PathBuf>,
}

/// Counts results by status.
pub fn summarize(checks: &[CheckResult]) -> Summary {
    let mut summary = Summary::default();
    for check in checks {
        match check.status {
            Status::Pass => summary.pass += 1,
            Status::Warn => summary.warn += 1,
            Status::Fail => summary.fail += 1,
            Status::Info => summary.info += 1,
        }
    }
    summary
}

/// Exit status by the worst result.
pub fn exit_code(summary: Summary) -> i32 {
    if summary.fail > 0 {
        EXIT_FAIL
    } else if summary.warn > 0 {
        EXIT_WARN
    } else {
        EXIT_PASS
    }
}

const RESET: &str = "\x1b[0m";
const DIM: &str = "\x1b[2m";
const BOLD: &str = "\x1b[1m";

fn status_colour(status: Status) -> &'static str {
    match status {
        Status::Pass => "\x1b[32m",
        Status::Info => "\x1b[36m",
        Status::Warn => "\x1b[33m",
        Status::Fail => "\x1b[1;31m",
    }
}

/// Columns wider than this let a long value push its own row rather than widen every row.
const COLUMN_WIDTH_MAX: usize = 36;

/// The readable table, with ANSI colour when `colour` is set.
pub fn render_table(report: &Report, colour: bool) -> String {
    let paint = |code: &str, text: &str| {
        if colour {
            format!("{code}{text}{RESET}")
        } else {
            text.to_string()
        }
    };
    let rows: Vec<[String; 4]> = report
        .checks
        .iter()
        .map(|check| {
            [
                check.id.to_string(),
                check.current.to_string(),
                check.minimum.to_string(),
                check.recommended.to_string(),
            ]
        })
        .collect();
    let headers = ["CHECK", "CURRENT", "MINIMUM", "RECOMMENDED"];
    let widths: Vec<usize> = (0..4)
        .map(|column| {
            rows.iter()
                .map(|row| row[column].chars().count())
                .chain([headers[column].len()])
                .max()
                .unwrap_or(0)
                .min(COLUMN_WIDTH_MAX)
        })
        .collect();
    let pad = |text: &str, width: usize| {
        let length = text.chars().count();
        if length >= width {
            format!("{text} ")
        } else {
            format!("{text}{} ", " ".repeat(width - length))
        }
    };

    let mut out = String::new();
    let config = match &report.config {
        Some(path) => format!("config {}", path.display()),
        None => "no config".into(),
    };
    let _ = writeln!(
        out,
        "{}",
        paint(
            BOLD,
            &format!(
                "Tachyon preflight: host {}, Linux {}, data dir {}, {config}",
                report.host.hostname,
                report.host.kernel,
                report.data_dir.display()
            )
        )
    );
    out.push('\n');
    let mut header = String::from("STATUS ");
    for (column, title) in headers.iter().enumerate() {
        header.push_str(&pad(title, widths[column]));
    }
    let _ = writeln!(out, "{}", paint(BOLD, header.trim_end()));
    for (check, row) in report.checks.iter().zip(&rows) {
        let mut line = paint(
            status_colour(check.status),
            &format!("{:<6}", check.status.label()),
        );
        line.push(' ');
        for (column, cell) in row.iter().enumerate() {
            line.push_str(&pad(cell, widths[column]));
        }
        let _ = writeln!(out, "{}", line.trim_end());
        if check.status != Status::Pass {
            let detail = match &check.detail {
                Some(detail) => format!("{}: {detail}", check.description),
                None => check.description.to_string(),
            };
            let _ = writeln!(out, "       {}", paint(DIM, &detail));
        }
    }
    out.push('\n');
    let summary = report.summary;
    let verdict = match report.exit_code {
        EXIT_PASS => "all checks pass",
        EXIT_WARN => "warnings only",
        _ => "fatal problems",
    };
    let _ = writeln!(
        out,
        "{} checks: {} pass, {} warn, {} fail, {} info. Exit status {} ({verdict}).",
        report.checks.len(),
        summary.pass,
        summary.warn,
        summary.fail,
        summary.info,
        report.exit_code
    );
    if report.exit_code != EXIT_PASS && report.fix.is_none() {
        let _ = writeln!(
            out,
            "Run `tachyon preflight --fix` to print the settings that fix them."
        );
    }
    out
}

/// The JSON document for machines.
pub fn render_json(report: &Report) -> String {
    // A report is plain data (strings, numbers, maps with string keys): serializing cannot fail.
    serde_json::to_string_pretty(report).expect("preflight report serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preflight::check::{Severity, Value, Want};

    fn result(id: &'static str, status: Status) -> CheckResult {
        CheckResult {
            id,
            description: "what it checks",
            severity: Severity::Fatal,
            status,
            current: Value::Count(1),
            minimum: Want::AtLeast(Value::Count(2)),
            recommended: Want::AtLeast(Value::Count(3)),
            detail: Some("why".into()),
            fixes: vec![],
        }
    }

    fn report(statuses: &[Status]) -> Report {
        let checks: Vec<_> = statuses
            .iter()
            .map(|status| result("a.check", *status))
            .collect();
        let summary = summarize(&checks);
        Report {
            host: HostFacts {
                hostname: "h".into(),
                kernel: "6.8".into(),
            },
            config: None,
            data_dir: "/d".into(),
            exit_code: exit_code(summary),
            checks,
            summary,
            fix: None,
        }
    }

    #[test]
    fn exit_status_by_worst_result() {
        assert_eq!(report(&[Status::Pass, Status::Info]).exit_code, EXIT_PASS);
        assert_eq!(
            report(&[Status::Pass, Status::Warn, Status::Info]).exit_code,
            EXIT_WARN
        );
        assert_eq!(report(&[Status::Warn, Status::Fail]).exit_code, EXIT_FAIL);
    }

    #[test]
    fn table_has_colour_only_when_asked() {
        let report = report(&[Status::Pass, Status::Fail]);
        let plain = render_table(&report, false);
        assert!(!plain.contains('\x1b'));
        assert!(
            plain.contains("FAIL   a.check 1       >= 2    >= 3\n"),
            "{plain}"
        );
        assert!(plain.contains("       what it checks: why"));
        assert!(plain
            .contains("2 checks: 1 pass, 0 warn, 1 fail, 0 info. Exit status 2 (fatal problems)."));
        let coloured = render_table(&report, true);
        assert!(coloured.contains("\x1b[1;31mFAIL  \x1b[0m"));
    }

    #[test]
    fn json_is_parseable_and_typed() {
        let json: serde_json::Value =
            serde_json::from_str(&render_json(&report(&[Status::Warn]))).unwrap();
        assert_eq!(json["exit_code"], 1);
        assert_eq!(json["checks"][0]["status"], "warn");
        assert_eq!(json["checks"][0]["severity"], "fatal");
        assert_eq!(json["checks"][0]["current"], 1);
        assert_eq!(json["checks"][0]["minimum"]["at_least"], 2);
    }
}
