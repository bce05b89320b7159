//! The table of preflight checks and the context they run in.
//!
//! Each submodule owns one family of checks (limits, sysctl, cpu, io_uring, numa, storage) as
//! plain functions from a [`HostView`] and a [`Context`] to a [`Finding`]. This module lists them
//! in the one stable order the report uses, attaches id, description and severity, and turns
//! findings into [`CheckResult`]s. Checks only read the host (plus the harmless probes of
//! `HostView`); they never change it.

mod cpu;
mod io_uring;
mod limits;
mod numa;
mod storage;
mod sysctl;

use std::path::PathBuf;

use super::check::{status_of, CheckResult, Fix, Grade, Severity, Status, Value, Want};
use super::host::HostView;
use crate::config::ApplianceConfig;

/// Journal size assumed when no config names one (`[journal] size_bytes`).
pub const JOURNAL_SIZE_DEFAULT_BYTES: u64 = 1 << 30;

/// What the checks know about the server that will run here.
#[derive(Debug, Clone)]
pub struct Context {
    /// Absolute data directory the server will use.
    pub data_dir: PathBuf,
    /// The appliance config, when `--config` was given.
    pub config: Option<ApplianceConfig>,
}

impl Context {
    /// Journal size to find room for.
    pub fn journal_size_bytes(&self) -> u64 {
        self.config
            .as_ref()
            .and_then(|c| c.journal_size_bytes)
            .unwrap_or(JOURNAL_SIZE_DEFAULT_BYTES)
    }

    /// Configured cores, if any.
    pub fn cores(&self) -> Option<&[u32]> {
        self.config.as_ref().and_then(|c| c.cores.as_deref())
    }
}

/// What one check found, before id, description and severity are attached.
#[derive(Debug, Clone)]
pub struct Finding {
    /// How the current value compares.
    pub grade: Grade,
    /// Value found on this host.
    pub current: Value,
    /// Least acceptable value.
    pub minimum: Want,
    /// Recommended value.
    pub recommended: Want,
    /// Why it matters and what to do (shown when the check did not pass).
    pub detail: Option<String>,
    /// Settings that bring the check to its recommended value.
    pub fixes: Vec<Fix>,
}

impl Finding {
    /// A finding with no detail and no fix.
    pub fn new(grade: Grade, current: Value, minimum: Want, recommended: Want) -> Finding {
        Finding {
            grade,
            current,
            minimum,
            recommended,
            detail: None,
            fixes: Vec::new(),
        }
    }

    /// Adds the explanation shown under a check that did not pass.
    pub fn detail(mut self, detail: impl Into<String>) -> Finding {
        self.detail = Some(detail.into());
        self
    }

    /// Adds a fix.
    pub fn fix(mut self, fix: Fix) -> Finding {
        self.fixes.push(fix);
        self
    }
}

/// One row of the check table.
pub struct Check {
    /// Stable identifier.
    pub id: &'static str,
    /// What the check verifies.
    pub description: &'static str,
    /// How bad a failure is.
    pub severity: Severity,
    /// The check itself.
    pub run: fn(&dyn HostView, &Context) -> Finding,
}

/// Every check, in the order they run and print. Append new checks; never reorder or rename ids.
pub fn all() -> Vec<Check> {
    use Severity::{Fatal, Info, Warning};
    let check = |id, description, severity, run| Check {
        id,
        description,
        severity,
        run,
    };
    vec![
        check(
            "rlimit.core",
            "core file size limit (the server writes minidumps instead)",
            Warning,
            limits::core_file_size,
        ),
        check(
            "rlimit.nofile",
            "open files limit of this user",
            Fatal,
            limits::open_files,
        ),
        check(
            "rlimit.memlock",
            "locked memory limit (io_uring rings and registered buffers)",
            Fatal,
            limits::locked_memory,
        ),
        check(
            "sysctl.fs.aio-max-nr",
            "system-wide async I/O contexts",
            Fatal,
            sysctl::aio_max_nr,
        ),
        check(
            "sysctl.fs.file-max",
            "system-wide open files",
            Fatal,
            sysctl::file_max,
        ),
        check(
            "sysctl.vm.max_map_count",
            "memory map areas per process",
            Fatal,
            sysctl::max_map_count,
        ),
        check(
            "sysctl.kernel.io_uring_disabled",
            "io_uring allowed by the kernel",
            Fatal,
            sysctl::io_uring_disabled,
        ),
        check(
            "sysctl.vm.swappiness",
            "swapping of the server's memory",
            Warning,
            sysctl::swappiness,
        ),
        check(
            "mm.transparent_hugepage",
            "transparent huge pages mode",
            Warning,
            sysctl::transparent_hugepage,
        ),
        check(
            "mm.transparent_hugepage.defrag",
            "transparent huge page defragmentation",
            Warning,
            sysctl::transparent_hugepage_defrag,
        ),
        check(
            "cpu.sse4_2",
            "SSE4.2 (hardware CRC32C for journal records)",
            Warning,
            cpu::sse4_2,
        ),
        check(
            "cpu.avx2",
            "AVX2 (SIMD scan of JSON payloads)",
            Warning,
            cpu::avx2,
        ),
        check(
            "cpu.governor",
            "CPU frequency governor",
            Warning,
            cpu::governor,
        ),
        check(
            "cpu.clocksource",
            "kernel clock source (timestamps on every message)",
            Warning,
            cpu::clocksource,
        ),
        check(
            "io_uring.setup",
            "io_uring usable by this process",
            Fatal,
            io_uring::setup,
        ),
        check(
            "numa.topology",
            "NUMA nodes and their cores",
            Info,
            numa::topology,
        ),
        check(
            "numa.nic",
            "NUMA node of each network interface",
            Warning,
            numa::nic,
        ),
        check(
            "numa.cores",
            "configured cores exist and sit on the NIC's node",
            Fatal,
            numa::cores,
        ),
        check(
            "storage.data_dir",
            "data directory exists (or can be created) and is writable",
            Fatal,
            storage::data_dir,
        ),
        check(
            "storage.o_direct",
            "data directory accepts O_DIRECT writes",
            Fatal,
            storage::o_direct,
        ),
        check(
            "storage.free_space",
            "free space for the journal",
            Fatal,
            storage::free_space,
        ),
        check(
            "storage.filesystem",
            "filesystem type of the data directory",
            Warning,
            storage::filesystem,
        ),
    ]
}

/// Runs every check against `host`, in table order.
pub fn run_all(host: &dyn HostView, context: &Context) -> Vec<CheckResult> {
    all()
        .iter()
        .map(|check| run_one(check, host, context))
        .collect()
}

/// Runs one check and grades it.
pub fn run_one(check: &Check, host: &dyn HostView, context: &Context) -> CheckResult {
    let finding = (check.run)(host, context);
    let status = status_of(finding.grade, check.severity);
    CheckResult {
        id: check.id,
        description: check.description,
        severity: check.severity,
        status,
        current: finding.current,
        minimum: finding.minimum,
        recommended: finding.recommended,
        // Explanations and fixes are for what needs attention.
        detail: if status == Status::Pass {
            None
        } else {
            finding.detail
        },
        fixes: if matches!(finding.grade, Grade::Minimum | Grade::Below) {
            finding.fixes
        } else {
            Vec::new()
        },
    }
}

/// Reads a file and trims it, as a short error text on failure.
fn read_trimmed(host: &dyn HostView, path: &str) -> Result<String, String> {
    host.read_file(path)
        .map(|text| text.trim().to_string())
        .map_err(|err| format!("cannot read {path}: {err}"))
}

/// Reads a sysctl-style number file.
fn read_number(host: &dyn HostView, path: &str) -> Result<u64, String> {
    let text = read_trimmed(host, path)?;
    text.parse::<u64>()
        .map_err(|_| format!("{path} holds {text:?}, not a number"))
}

/// Grades a value where bigger is better.
fn grade_at_least(current: u64, minimum: u64, recommended: u64) -> Grade {
    if current >= recommended {
        Grade::Recommended
    } else if current >= minimum {
        Grade::Minimum
    } else {
        Grade::Below
    }
}

/// A finding for a host file we could not read or parse.
fn unknown(reason: String, minimum: Want, recommended: Want) -> Finding {
    Finding::new(Grade::Unknown, Value::Unknown, minimum, recommended).detail(reason)
}

/// Parses a kernel cpu list (`0-3,8,10-11`) into core numbers; `None` when malformed.
pub fn parse_cpu_list(text: &str) -> Option<Vec<u32>> {
    let mut cores = Vec::new();
    for part in text.trim().split(',').filter(|part| !part.is_empty()) {
        match part.split_once('-') {
            Some((first, last)) => {
                let (first, last) = (first.parse::<u32>().ok()?, last.parse::<u32>().ok()?);
                if first > last {
                    return None;
                }
                cores.extend(first..=last);
            }
            None => cores.push(part.parse().ok()?),
        }
    }
    Some(cores)
}

/// Formats core numbers back into the kernel's compact list form.
pub fn format_cpu_list(cores: &[u32]) -> String {
    let mut sorted = cores.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut parts = Vec::new();
    let mut index = 0;
    while index < sorted.len() {
        let first = sorted[index];
        let mut last = first;
        while index + 1 < sorted.len() && sorted[index + 1] == last + 1 {
            index += 1;
            last = sorted[index];
        }
        parts.push(if first == last {
            first.to_string()
        } else {
            format!("{first}-{last}")
        });
        index += 1;
    }
    parts.join(",")
}

#[cfg(test)]
pub(crate) mod testing {
    //! A fake host whose every check passes, for tests to break one thing at a time.

    use super::*;
    use crate::preflight::host::{FakeHost, FsSpace, Limit, Resource};

    /// Data directory inside the fake tree.
    pub const DATA_DIR: &str = "/var/lib/tachyon";

    /// A two-node host configured the way the checks recommend.
    pub fn healthy_host() -> FakeHost {
        let mut host = FakeHost::empty();
        host.set_rlimit(Resource::CoreFileSize, Limit::Finite(0), Limit::Finite(0))
            .set_rlimit(
                Resource::OpenFiles,
                Limit::Finite(65536),
                Limit::Finite(65536),
            )
            .set_rlimit(Resource::LockedMemory, Limit::Unlimited, Limit::Unlimited);
        host.space = Some(FsSpace {
            available_bytes: 100 << 30,
            total_bytes: 200 << 30,
        });
        host.write("/proc/sys/fs/aio-max-nr", "1048576\n")
            .write("/proc/sys/fs/file-max", "9223372036854775807\n")
            .write("/proc/sys/vm/max_map_count", "500000\n")
            .write("/proc/sys/kernel/io_uring_disabled", "0\n")
            .write("/proc/sys/kernel/osrelease", "6.8.0-test\n")
            .write("/proc/sys/vm/swappiness", "1\n")
            .write("/proc/swaps", "Filename\tType\tSize\tUsed\tPriority\n/swapfile file 1048572 0 -2\n")
            .write("/sys/kernel/mm/transparent_hugepage/enabled", "always [madvise] never\n")
            .write("/sys/kernel/mm/transparent_hugepage/defrag", "always defer defer+madvise [madvise] never\n")
            .write("/proc/cpuinfo", "processor\t: 0\nflags\t\t: fpu sse4_1 sse4_2 avx avx2\n\nprocessor\t: 1\nflags\t\t: fpu sse4_1 sse4_2 avx avx2\n")
            .write("/sys/devices/system/cpu/online", "0-3\n")
            .write("/sys/devices/system/clocksource/clocksource0/current_clocksource", "tsc\n")
            .write("/sys/devices/system/clocksource/clocksource0/available_clocksource", "tsc hpet acpi_pm\n")
            .write("/proc/self/status", "Name:\tpreflight\nSeccomp:\t0\nSeccomp_filters:\t0\n")
            .write("/sys/devices/system/node/node0/cpulist", "0-1\n")
            .write("/sys/devices/system/node/node1/cpulist", "2-3\n")
            .write("/sys/devices/system/node/online", "0-1\n")
            .write("/sys/class/net/eth0/device/numa_node", "0\n")
            .mkdir("/sys/class/net/lo")
            .mkdir("/sys/devices/virtual/net/lo")
            .write("/proc/mounts", "proc /proc proc rw 0 0\n/dev/sda1 / ext4 rw 0 0\n/dev/nvme0n1 /var/lib xfs rw,noatime 0 0\n")
            .mkdir(DATA_DIR);
        for cpu in 0..4 {
            host.write(
                &format!("/sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor"),
                "performance\n",
            );
        }
        host
    }

    /// A context with no config and the fake data directory.
    pub fn plain_context() -> Context {
        Context {
            data_dir: PathBuf::from(DATA_DIR),
            config: None,
        }
    }

    /// A context with a config (parsed from `toml`) whose data dir is the fake one.
    pub fn config_context(toml: &str) -> Context {
        let text = format!("data_dir = \"{DATA_DIR}\"\n{toml}");
        let config =
            crate::config::parse(&text, std::path::Path::new("/etc/tachyon/tachyon.toml")).unwrap();
        Context {
            data_dir: config.data_dir.clone(),
            config: Some(config),
        }
    }

    /// Runs the check with `id` against `host`.
    pub fn run(id: &str, host: &FakeHost, context: &Context) -> CheckResult {
        let checks = all();
        let check = checks
            .iter()
            .find(|check| check.id == id)
            .unwrap_or_else(|| panic!("no check {id}"));
        run_one(check, host, context)
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    #[test]
    fn ids_are_unique_and_dotted() {
        let checks = all();
        let mut ids: Vec<_> = checks.iter().map(|check| check.id).collect();
        assert!(ids.iter().all(|id| id.contains('.')));
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), checks.len());
    }

    #[test]
    fn a_healthy_host_passes_everything_it_can() {
        let host = healthy_host();
        let results = run_all(&host, &config_context("[runtime]\ncores = [0, 1]\n"));
        for result in &results {
            assert_eq!(result.status, Status::Pass, "{}: {:?}", result.id, result);
            assert!(
                result.fixes.is_empty(),
                "{} offers a fix while passing",
                result.id
            );
        }
    }

    #[test]
    fn checks_run_in_table_order() {
        let host = healthy_host();
        let ids: Vec<_> = run_all(&host, &plain_context())
            .iter()
            .map(|result| result.id)
            .collect();
        let table: Vec<_> = all().iter().map(|check| check.id).collect();
        assert_eq!(ids, table);
    }

    #[test]
    fn cpu_lists_round_trip() {
        assert_eq!(
            parse_cpu_list("0-3,8,10-11\n"),
            Some(vec![0, 1, 2, 3, 8, 10, 11])
        );
        assert_eq!(parse_cpu_list(""), Some(vec![]));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("a"), None);
        assert_eq!(format_cpu_list(&[11, 0, 1, 2, 3, 8, 10]), "0-3,8,10-11");
    }
}
