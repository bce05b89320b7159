//! The vocabulary of a preflight check: severity, status, typed values and the fixes a check asks for.
//!
//! This module owns only types and the one rule that turns a check's grade and severity into a
//! status; it never reads the host (that is `checks/`) and never prints (that is `report`).

use std::fmt;

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use crate::capacity::units;

/// How bad it is when a check is below its minimum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The server will not run, or will lose data or latency badly: exit status 2.
    Fatal,
    /// The server runs but slower or less safely: exit status 1.
    Warning,
    /// Facts for the operator; never changes the exit status.
    Info,
}

/// The verdict for one check on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Meets the recommended value.
    Pass,
    /// Informational, or not applicable on this host.
    Info,
    /// Meets the minimum but not the recommendation, or a warning-severity check failed.
    Warn,
    /// A fatal-severity check is below its minimum.
    Fail,
}

impl Status {
    /// Upper-case label used in the table.
    pub fn label(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Info => "INFO",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

/// How the current value compares with the check's minimum and recommendation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grade {
    /// Meets the recommended value.
    Recommended,
    /// Meets the minimum but not the recommended value.
    Minimum,
    /// Below the minimum.
    Below,
    /// The host did not let us find out (an unreadable file, an unexpected format).
    Unknown,
    /// The check does not apply here (no cpufreq in a VM, no cores configured).
    NotApplicable,
}

/// Maps a grade to a status under the check's severity.
pub fn status_of(grade: Grade, severity: Severity) -> Status {
    match (grade, severity) {
        (Grade::Recommended, _) => Status::Pass,
        (Grade::NotApplicable, _) | (_, Severity::Info) => Status::Info,
        (Grade::Minimum, _) => Status::Warn,
        (Grade::Below, Severity::Fatal) => Status::Fail,
        (Grade::Below, Severity::Warning) => Status::Warn,
        // A fatal requirement we could not verify is not a pass: say so, without failing the host.
        (Grade::Unknown, Severity::Fatal) => Status::Warn,
        (Grade::Unknown, Severity::Warning) => Status::Info,
    }
}

/// A value read from the host or required of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// Not present on this host (a missing file, an unset limit).
    Absent,
    /// Could not be found out (an unreadable file, a probe that could not run).
    Unknown,
    /// An rlimit of RLIM_INFINITY.
    Unlimited,
    /// A plain count (file descriptors, map areas, sysctl numbers).
    Count(u64),
    /// A size in bytes, shown in binary units.
    Bytes(u64),
    /// Anything else (governor names, filesystem types, flags).
    Text(String),
}

impl Value {
    /// A text value.
    pub fn text(text: impl Into<String>) -> Value {
        Value::Text(text.into())
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Absent => f.write_str("absent"),
            Value::Unknown => f.write_str("unknown"),
            Value::Unlimited => f.write_str("unlimited"),
            Value::Count(n) => write!(f, "{n}"),
            Value::Bytes(n) => f.write_str(&units::format_bytes_binary(*n)),
            Value::Text(text) => f.write_str(text),
        }
    }
}

/// Machines get raw numbers: counts and byte sizes as JSON numbers, absent as null.
impl Serialize for Value {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Absent | Value::Unknown => serializer.serialize_none(),
            Value::Unlimited => serializer.serialize_str("unlimited"),
            Value::Count(n) | Value::Bytes(n) => serializer.serialize_u64(*n),
            Value::Text(text) => serializer.serialize_str(text),
        }
    }
}

/// A requirement on a value: the minimum or the recommendation of a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Want {
    /// No requirement at this level.
    Any,
    /// The value must be at least this.
    AtLeast(Value),
    /// The value must be at most this.
    AtMost(Value),
    /// The value must be exactly this.
    Equals(Value),
    /// The value must be one of these words.
    OneOf(Vec<&'static str>),
}

impl fmt::Display for Want {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Want::Any => f.write_str("-"),
            Want::AtLeast(value) => write!(f, ">= {value}"),
            Want::AtMost(value) => write!(f, "<= {value}"),
            Want::Equals(value) => write!(f, "{value}"),
            Want::OneOf(words) => f.write_str(&words.join(" | ")),
        }
    }
}

impl Serialize for Want {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(1))?;
        match self {
            Want::Any => map.serialize_entry("any", &true)?,
            Want::AtLeast(value) => map.serialize_entry("at_least", value)?,
            Want::AtMost(value) => map.serialize_entry("at_most", value)?,
            Want::Equals(value) => map.serialize_entry("equals", value)?,
            Want::OneOf(words) => map.serialize_entry("one_of", words)?,
        }
        map.end()
    }
}

/// A per-user resource limit as `limits.conf` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitItem {
    /// `core`: core file size, KiB.
    Core,
    /// `nofile`: open files.
    Nofile,
    /// `memlock`: locked memory, KiB.
    Memlock,
}

impl LimitItem {
    /// The item name in `limits.conf`.
    pub fn name(self) -> &'static str {
        match self {
            LimitItem::Core => "core",
            LimitItem::Nofile => "nofile",
            LimitItem::Memlock => "memlock",
        }
    }

    /// The matching systemd unit directive, for services that ignore `limits.d`.
    pub fn systemd_directive(self) -> &'static str {
        match self {
            LimitItem::Core => "LimitCORE",
            LimitItem::Nofile => "LimitNOFILE",
            LimitItem::Memlock => "LimitMEMLOCK",
        }
    }
}

/// A setting that brings a failed check to its recommended value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Fix {
    /// A line for `/etc/sysctl.d/60-tachyon.conf`.
    Sysctl {
        /// Dotted sysctl key, e.g. `fs.aio-max-nr`.
        key: &'static str,
        /// Value to set.
        value: String,
    },
    /// Lines for `/etc/security/limits.d/60-tachyon.conf`.
    Limit {
        /// The limit.
        item: LimitItem,
        /// Soft limit in `limits.conf` units (KiB for sizes) or `unlimited`.
        soft: String,
        /// Hard limit, when it must change too (never lowered below what the host has).
        hard: Option<String>,
    },
    /// Something neither file can express (kernel command line, sysfs, container runtime).
    Manual {
        /// The command or change to make, as an operator would type it.
        command: String,
    },
}

/// The full result of one check, ready for the report.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    /// Stable identifier, e.g. `sysctl.fs.aio-max-nr`.
    pub id: &'static str,
    /// What the check verifies, one line.
    pub description: &'static str,
    /// How bad a failure is.
    pub severity: Severity,
    /// The verdict.
    pub status: Status,
    /// Value found on this host.
    pub current: Value,
    /// Least acceptable value.
    pub minimum: Want,
    /// Recommended value.
    pub recommended: Want,
    /// Why it matters and what to do, when the check did not pass.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Settings that bring the check to its recommended value.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fixes: Vec<Fix>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grades_map_to_statuses_by_severity() {
        use Grade::*;
        use Severity::*;
        assert_eq!(status_of(Recommended, Fatal), Status::Pass);
        assert_eq!(status_of(Minimum, Fatal), Status::Warn);
        assert_eq!(status_of(Below, Fatal), Status::Fail);
        assert_eq!(status_of(Below, Warning), Status::Warn);
        assert_eq!(status_of(Below, Info), Status::Info);
        assert_eq!(status_of(Unknown, Fatal), Status::Warn);
        assert_eq!(status_of(Unknown, Warning), Status::Info);
        assert_eq!(status_of(NotApplicable, Fatal), Status::Info);
    }

    #[test]
    fn values_serialize_as_raw_numbers() {
        let json = serde_json::to_string(&(
            Value::Count(5),
            Value::Bytes(1024),
            Value::Absent,
            Value::Unlimited,
        ))
        .unwrap();
        assert_eq!(json, r#"[5,1024,null,"unlimited"]"#);
        let want = serde_json::to_string(&Want::AtLeast(Value::Count(4096))).unwrap();
        assert_eq!(want, r#"{"at_least":4096}"#);
    }

    #[test]
    fn wants_display_for_the_table() {
        assert_eq!(
            Want::AtLeast(Value::Bytes(512 * 1024)).to_string(),
            ">= 512 KiB"
        );
        assert_eq!(
            Want::OneOf(vec!["madvise", "never"]).to_string(),
            "madvise | never"
        );
        assert_eq!(Want::Any.to_string(), "-");
    }
}
