//! `--fix`: turn failed checks into `sysctl.d` and `limits.d` settings, print them, or write them.
//!
//! Nothing is changed without `--write`, and even then only our own two files are written (merged
//! with what they already hold, so a setting written by an earlier run and now passing is kept).
//! Settings are never applied live: the operator runs `sysctl --system` and restarts the service.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::check::{CheckResult, Fix, LimitItem};

/// Where the sysctl settings go, relative to the filesystem root.
pub const SYSCTL_CONF_PATH: &str = "etc/sysctl.d/60-tachyon.conf";
/// Where the limits go, relative to the filesystem root.
pub const LIMITS_CONF_PATH: &str = "etc/security/limits.d/60-tachyon.conf";

const HEADER: &str = "# Written by `tachyon preflight --fix --write`: settings that bring failed checks to their recommended values.";

/// Why `--write` failed.
#[derive(Debug, thiserror::Error)]
pub enum FixError {
    /// A settings file could not be read, written or renamed into place.
    #[error("cannot write {path}: {source} (writing system settings needs root: sudo tachyon preflight --fix --write)")]
    Write {
        /// The file being written.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Soft and hard value of one limit item, as `limits.conf` words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LimitSetting {
    /// Soft limit.
    pub soft: String,
    /// Hard limit, when it must change.
    pub hard: Option<String>,
}

/// Every setting the failed checks ask for, deduplicated.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FixPlan {
    /// sysctl key to value.
    pub sysctls: BTreeMap<&'static str, String>,
    /// Resource limits.
    pub limits: BTreeMap<LimitItem, LimitSetting>,
    /// Steps neither file can express.
    pub manual: Vec<ManualStep>,
}

/// A fix the operator makes by hand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ManualStep {
    /// The check that asked for it.
    pub check: &'static str,
    /// The command or change.
    pub command: String,
}

/// `limits.conf` order: `unlimited` beats any number; numbers compare numerically.
fn larger_limit(a: &str, b: &str) -> String {
    let rank = |value: &str| {
        if value == "unlimited" {
            u128::MAX
        } else {
            value.parse::<u128>().unwrap_or(0)
        }
    };
    if rank(b) > rank(a) {
        b.to_string()
    } else {
        a.to_string()
    }
}

impl FixPlan {
    /// Collects the fixes of every check that did not pass; when two checks set the same thing, the larger value wins.
    pub fn from_results(results: &[CheckResult]) -> FixPlan {
        let mut plan = FixPlan::default();
        for result in results {
            for fix in &result.fixes {
                match fix {
                    Fix::Sysctl { key, value } => {
                        let merged = match plan.sysctls.get(key) {
                            Some(old) => larger_limit(old, value),
                            None => value.clone(),
                        };
                        plan.sysctls.insert(key, merged);
                    }
                    Fix::Limit { item, soft, hard } => {
                        let setting = plan.limits.entry(*item).or_insert_with(|| LimitSetting {
                            soft: soft.clone(),
                            hard: None,
                        });
                        setting.soft = larger_limit(&setting.soft, soft);
                        setting.hard = match (&setting.hard, hard) {
                            (Some(old), Some(new)) => Some(larger_limit(old, new)),
                            (old, new) => old.clone().or_else(|| new.clone()),
                        };
                    }
                    Fix::Manual { command } => {
                        if !plan.manual.iter().any(|step| step.command == *command) {
                            plan.manual.push(ManualStep {
                                check: result.id,
                                command: command.clone(),
                            });
                        }
                    }
                }
            }
        }
        plan
    }

    /// Whether no check asked for anything.
    pub fn is_empty(&self) -> bool {
        self.sysctls.is_empty() && self.limits.is_empty() && self.manual.is_empty()
    }

    /// The sysctl file: `existing` with our keys replaced or appended.
    pub fn sysctl_conf(&self, existing: &str) -> String {
        let normalize = |key: &str| key.trim().replace('/', ".");
        let mut lines: Vec<String> = Vec::new();
        for line in existing.lines() {
            let key = line.split_once('=').map(|(key, _)| normalize(key));
            // Drop our old values for keys we set now, and our header (re-added below).
            if key.is_some_and(|key| {
                !line.trim_start().starts_with('#') && self.sysctls.contains_key(key.as_str())
            }) || line == HEADER
            {
                continue;
            }
            lines.push(line.to_string());
        }
        while lines.last().is_some_and(|line| line.trim().is_empty()) {
            lines.pop();
        }
        let mut out = String::new();
        let _ = writeln!(out, "{HEADER}");
        for line in lines {
            let _ = writeln!(out, "{line}");
        }
        for (key, value) in &self.sysctls {
            let _ = writeln!(out, "{key} = {value}");
        }
        out
    }

    /// The limits file for `user`: `existing` with our (user, type, item) lines replaced or appended.
    pub fn limits_conf(&self, user: &str, existing: &str) -> String {
        let mut new_lines: Vec<(String, String)> = Vec::new();
        for (item, setting) in &self.limits {
            new_lines.push((format!("soft {}", item.name()), setting.soft.clone()));
            if let Some(hard) = &setting.hard {
                new_lines.push((format!("hard {}", item.name()), hard.clone()));
            }
        }
        let mut out = String::new();
        let _ = writeln!(out, "{HEADER}");
        for line in existing.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let replaced = matches!(fields[..], [domain, kind, item, _] if domain == user && new_lines.iter().any(|(key, _)| *key == format!("{kind} {item}")));
            if replaced || line == HEADER || line.starts_with("# <domain>") {
                continue;
            }
            let _ = writeln!(out, "{line}");
        }
        let _ = writeln!(out, "# <domain> <type> <item> <value>; sizes in KiB. Takes effect at the user's next login.");
        for (key, value) in new_lines {
            let _ = writeln!(out, "{user} {key} {value}");
        }
        out
    }

    /// The same limits for a systemd unit, which ignores limits.d.
    pub fn systemd_lines(&self) -> Vec<String> {
        let unit = |item: LimitItem, value: &str| match (item, value) {
            (_, "unlimited") => "infinity".to_string(),
            (LimitItem::Nofile, value) => value.to_string(),
            (_, value) => format!("{value}K"),
        };
        self.limits
            .iter()
            .map(|(item, setting)| match &setting.hard {
                Some(hard) => format!(
                    "{}={}:{}",
                    item.systemd_directive(),
                    unit(*item, &setting.soft),
                    unit(*item, hard)
                ),
                None => format!(
                    "{}={}",
                    item.systemd_directive(),
                    unit(*item, &setting.soft)
                ),
            })
            .collect()
    }

    /// What `--fix` prints: both files, the systemd equivalent and the manual steps.
    pub fn render(&self, user: &str) -> String {
        if self.is_empty() {
            return "Nothing to fix: every check with a fix passes.\n".into();
        }
        let mut out = String::new();
        if !self.sysctls.is_empty() {
            let _ = writeln!(out, "# /{SYSCTL_CONF_PATH}  (apply: sysctl --system)");
            out.push_str(&self.sysctl_conf(""));
            out.push('\n');
        }
        if !self.limits.is_empty() {
            let _ = writeln!(out, "# /{LIMITS_CONF_PATH}  (user {user})");
            out.push_str(&self.limits_conf(user, ""));
            out.push('\n');
            let _ = writeln!(out, "# systemd services ignore limits.d; put these in the unit's [Service] section instead:");
            for line in self.systemd_lines() {
                let _ = writeln!(out, "{line}");
            }
            out.push('\n');
        }
        if !self.manual.is_empty() {
            let _ = writeln!(out, "# Manual steps (not sysctl or limits settings):");
            for step in &self.manual {
                let _ = writeln!(out, "# {}: {}", step.check, step.command);
            }
            out.push('\n');
        }
        if !self.sysctls.is_empty() || !self.limits.is_empty() {
            let _ = writeln!(
                out,
                "Nothing was changed. To write the files: sudo tachyon preflight --fix --write"
            );
        }
        out
    }

    /// Writes (merging) the two files under `root` and returns the paths written.
    pub fn write(&self, root: &Path, user: &str) -> Result<Vec<PathBuf>, FixError> {
        let mut written = Vec::new();
        if !self.sysctls.is_empty() {
            let path = root.join(SYSCTL_CONF_PATH);
            let existing = read_existing(&path)?;
            write_atomically(&path, &self.sysctl_conf(&existing))?;
            written.push(path);
        }
        if !self.limits.is_empty() {
            let path = root.join(LIMITS_CONF_PATH);
            let existing = read_existing(&path)?;
            write_atomically(&path, &self.limits_conf(user, &existing))?;
            written.push(path);
        }
        Ok(written)
    }
}

fn read_existing(path: &Path) -> Result<String, FixError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(source) => Err(FixError::Write {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Write to a temp file and rename, so a crash never leaves a half-written settings file for boot.
fn write_atomically(path: &Path, contents: &str) -> Result<(), FixError> {
    let error = |source| FixError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(error)?;
    }
    let temp = path.with_extension("conf.tmp");
    std::fs::write(&temp, contents).map_err(error)?;
    std::fs::rename(&temp, path).map_err(error)
}

/// The user the limits apply to: `--user`, else whoever ran sudo, else the current user, else everyone.
pub fn default_user() -> String {
    ["SUDO_USER", "USER"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|value| !value.is_empty()))
        .unwrap_or_else(|| "*".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preflight::check::{Severity, Status, Value, Want};

    fn failed(id: &'static str, fixes: Vec<Fix>) -> CheckResult {
        CheckResult {
            id,
            description: "test",
            severity: Severity::Fatal,
            status: Status::Fail,
            current: Value::Absent,
            minimum: Want::Any,
            recommended: Want::Any,
            detail: None,
            fixes,
        }
    }

    fn sample_plan() -> FixPlan {
        FixPlan::from_results(&[
            failed(
                "sysctl.fs.aio-max-nr",
                vec![Fix::Sysctl {
                    key: "fs.aio-max-nr",
                    value: "1048576".into(),
                }],
            ),
            failed(
                "sysctl.kernel.io_uring_disabled",
                vec![Fix::Sysctl {
                    key: "kernel.io_uring_disabled",
                    value: "0".into(),
                }],
            ),
            failed(
                "io_uring.setup",
                vec![Fix::Sysctl {
                    key: "kernel.io_uring_disabled",
                    value: "0".into(),
                }],
            ),
            failed(
                "rlimit.nofile",
                vec![Fix::Limit {
                    item: LimitItem::Nofile,
                    soft: "32768".into(),
                    hard: None,
                }],
            ),
            failed(
                "rlimit.memlock",
                vec![Fix::Limit {
                    item: LimitItem::Memlock,
                    soft: "22528".into(),
                    hard: Some("22528".into()),
                }],
            ),
            failed(
                "io_uring.setup",
                vec![Fix::Limit {
                    item: LimitItem::Memlock,
                    soft: "unlimited".into(),
                    hard: Some("unlimited".into()),
                }],
            ),
            failed(
                "cpu.governor",
                vec![Fix::Manual {
                    command: "cpupower frequency-set -g performance".into(),
                }],
            ),
        ])
    }

    #[test]
    fn plan_deduplicates_and_keeps_the_larger_value() {
        let plan = sample_plan();
        assert_eq!(plan.sysctls.len(), 2);
        assert_eq!(
            plan.limits[&LimitItem::Memlock],
            LimitSetting {
                soft: "unlimited".into(),
                hard: Some("unlimited".into())
            }
        );
        assert_eq!(
            plan.limits[&LimitItem::Nofile],
            LimitSetting {
                soft: "32768".into(),
                hard: None
            }
        );
        assert_eq!(plan.manual.len(), 1);
    }

    #[test]
    fn rendered_files_hold_exactly_the_settings() {
        let plan = sample_plan();
        let sysctl = plan.sysctl_conf("");
        assert_eq!(
            sysctl,
            format!("{HEADER}\nfs.aio-max-nr = 1048576\nkernel.io_uring_disabled = 0\n")
        );
        let limits = plan.limits_conf("tachyon", "");
        assert!(limits.ends_with("tachyon soft nofile 32768\ntachyon soft memlock unlimited\ntachyon hard memlock unlimited\n"), "{limits}");
        assert_eq!(
            plan.systemd_lines(),
            vec!["LimitNOFILE=32768", "LimitMEMLOCK=infinity:infinity"]
        );
        let printed = plan.render("tachyon");
        assert!(printed.contains("Nothing was changed"));
        assert!(printed.contains("# cpu.governor: cpupower frequency-set -g performance"));
    }

    #[test]
    fn merging_keeps_other_settings_and_replaces_ours() {
        let plan = sample_plan();
        let existing = format!("{HEADER}\nvm.max_map_count = 500000\nfs/aio-max-nr = 65536\n# fs.aio-max-nr = 1 (comment kept)\n");
        let merged = plan.sysctl_conf(&existing);
        assert_eq!(
            merged,
            format!("{HEADER}\nvm.max_map_count = 500000\n# fs.aio-max-nr = 1 (comment kept)\nfs.aio-max-nr = 1048576\nkernel.io_uring_disabled = 0\n")
        );
        let limits = plan.limits_conf(
            "tachyon",
            "tachyon soft core 0\ntachyon soft nofile 4096\nother soft nofile 4096\n",
        );
        assert!(limits.contains("tachyon soft core 0\n"));
        assert!(limits.contains("other soft nofile 4096\n"));
        assert!(!limits.contains("tachyon soft nofile 4096"));
        assert_eq!(limits.matches(HEADER).count(), 1);
    }

    #[test]
    fn write_creates_both_files_and_is_idempotent() {
        let root = std::env::temp_dir().join(format!("tachyon-fix-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let plan = sample_plan();
        let written = plan.write(&root, "tachyon").unwrap();
        assert_eq!(
            written,
            vec![root.join(SYSCTL_CONF_PATH), root.join(LIMITS_CONF_PATH)]
        );
        let first = std::fs::read_to_string(root.join(LIMITS_CONF_PATH)).unwrap();
        plan.write(&root, "tachyon").unwrap();
        assert_eq!(
            std::fs::read_to_string(root.join(LIMITS_CONF_PATH)).unwrap(),
            first
        );
        assert_eq!(
            std::fs::read_to_string(root.join(SYSCTL_CONF_PATH)).unwrap(),
            plan.sysctl_conf("")
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn empty_plan_writes_nothing() {
        let plan = FixPlan::default();
        assert!(plan.render("u").starts_with("Nothing to fix"));
        let root = std::env::temp_dir().join(format!("tachyon-fix-empty-{}", std::process::id()));
        assert_eq!(plan.write(&root, "u").unwrap(), Vec::<PathBuf>::new());
        assert!(!root.exists());
    }
}
