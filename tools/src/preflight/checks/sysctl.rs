//! Kernel tunables: async I/O contexts, open files, map areas, io_uring, swapping, huge pages.
//!
//! Sysctls are read from `/proc/sys`, transparent huge pages from `/sys/kernel/mm`. Fixes for
//! sysctls are `sysctl.d` lines; huge-page modes are not sysctls, so their fixes are manual commands.

use std::io::ErrorKind;

use super::{grade_at_least, read_number, Context, Finding};
use crate::preflight::check::{Fix, Grade, Value, Want};
use crate::preflight::host::HostView;

/// fs.aio-max-nr floor.
pub const AIO_MAX_NR_MIN: u64 = 65536;
/// fs.aio-max-nr recommendation.
pub const AIO_MAX_NR_RECOMMENDED: u64 = 1048576;
/// Async I/O contexts the server takes before any SOW topic.
pub const AIO_BASE: u64 = 16384;
/// Async I/O contexts each SOW topic adds.
pub const AIO_PER_SOW_TOPIC: u64 = 8192;
/// fs.file-max floor.
pub const FILE_MAX_MIN: u64 = 262144;
/// fs.file-max recommendation.
pub const FILE_MAX_RECOMMENDED: u64 = 6815744;
/// vm.max_map_count floor (the kernel default).
pub const MAX_MAP_COUNT_MIN: u64 = 65530;
/// vm.max_map_count recommendation: slab files and journal segments are mapped.
pub const MAX_MAP_COUNT_RECOMMENDED: u64 = 500000;
/// vm.swappiness above which the kernel readily swaps a busy server out.
pub const SWAPPINESS_MAX: u64 = 10;
/// vm.swappiness recommendation: swap only to avoid the OOM killer.
pub const SWAPPINESS_RECOMMENDED: u64 = 1;

/// A "more is better" sysctl with a floor and a recommendation.
fn numeric(
    host: &dyn HostView,
    key: &'static str,
    minimum: u64,
    recommended: u64,
    why: &str,
) -> Finding {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    let (want_min, want_rec) = (
        Want::AtLeast(Value::Count(minimum)),
        Want::AtLeast(Value::Count(recommended)),
    );
    match read_number(host, &path) {
        Ok(current) => Finding::new(
            grade_at_least(current, minimum, recommended),
            Value::Count(current),
            want_min,
            want_rec,
        )
        .detail(why.to_string())
        .fix(Fix::Sysctl {
            key,
            value: recommended.to_string(),
        }),
        Err(reason) => super::unknown(reason, want_min, want_rec),
    }
}

/// Async I/O contexts the configured server needs: a base plus a share per SOW topic.
pub fn aio_needed(context: &Context) -> Option<u64> {
    let topics = context.config.as_ref()?.sow_topic_count;
    Some(AIO_BASE + AIO_PER_SOW_TOPIC * topics)
}

/// Each shard's storage opens async I/O contexts; running out fails journal writes at start-up.
pub fn aio_max_nr(host: &dyn HostView, context: &Context) -> Finding {
    let needed = aio_needed(context).unwrap_or(0);
    let why = match aio_needed(context) {
        Some(needed) => format!("the config needs 16384 + 8192 per SOW topic = {needed} async I/O contexts"),
        None => "every shard's storage takes async I/O contexts from this host-wide pool; running out fails start-up".into(),
    };
    numeric(
        host,
        "fs.aio-max-nr",
        AIO_MAX_NR_MIN.max(needed),
        AIO_MAX_NR_RECOMMENDED.max(needed),
        &why,
    )
}

/// The system-wide ceiling on open files, above every process's own limit.
pub fn file_max(host: &dyn HostView, _context: &Context) -> Finding {
    numeric(
        host,
        "fs.file-max",
        FILE_MAX_MIN,
        FILE_MAX_RECOMMENDED,
        "system-wide open files cap every process's own limit",
    )
}

/// Journal segments, SOW slabs and thread stacks each take map areas.
pub fn max_map_count(host: &dyn HostView, _context: &Context) -> Finding {
    numeric(
        host,
        "vm.max_map_count",
        MAX_MAP_COUNT_MIN,
        MAX_MAP_COUNT_RECOMMENDED,
        "SOW slab files, journal segments and stacks each take map areas",
    )
}

/// Linux 6.6+ can switch io_uring off (1: privileged users and io_uring_group only, 2: everyone).
pub fn io_uring_disabled(host: &dyn HostView, _context: &Context) -> Finding {
    let want = Want::Equals(Value::Count(0));
    let path = "/proc/sys/kernel/io_uring_disabled";
    match host.read_file(path) {
        Err(err) if err.kind() == ErrorKind::NotFound => {
            // Kernels before 6.6 have no switch: io_uring is always on (io_uring.setup probes it).
            Finding::new(
                Grade::Recommended,
                Value::text("absent (kernel < 6.6: always on)"),
                want.clone(),
                want,
            )
        }
        Err(err) => super::unknown(format!("cannot read {path}: {err}"), want.clone(), want),
        Ok(text) => match text.trim().parse::<u64>() {
            Ok(0) => Finding::new(Grade::Recommended, Value::Count(0), want.clone(), want),
            Ok(current) => {
                let meaning = if current == 1 {
                    "only root and members of kernel.io_uring_group may use io_uring"
                } else {
                    "io_uring is disabled for every process"
                };
                Finding::new(Grade::Below, Value::Count(current), want.clone(), want)
                    .detail(format!("{meaning}; the storage plane needs it: sysctl -w kernel.io_uring_disabled=0"))
                    .fix(Fix::Sysctl { key: "kernel.io_uring_disabled", value: "0".into() })
            }
            Err(_) => super::unknown(
                format!("{path} holds {:?}, not a number", text.trim()),
                want.clone(),
                want,
            ),
        },
    }
}

/// Whether `/proc/swaps` lists any active swap device or file.
fn swap_active(host: &dyn HostView) -> Option<bool> {
    let text = host.read_file("/proc/swaps").ok()?;
    // The first line is the column header.
    Some(text.lines().skip(1).any(|line| !line.trim().is_empty()))
}

/// A swapped-out page of a pinned shard is a millisecond stall.
pub fn swappiness(host: &dyn HostView, _context: &Context) -> Finding {
    let (want_min, want_rec) = (
        Want::AtMost(Value::Count(SWAPPINESS_MAX)),
        Want::AtMost(Value::Count(SWAPPINESS_RECOMMENDED)),
    );
    let current = match read_number(host, "/proc/sys/vm/swappiness") {
        Ok(current) => current,
        Err(reason) => return super::unknown(reason, want_min, want_rec),
    };
    if swap_active(host) == Some(false) {
        return Finding::new(
            Grade::Recommended,
            Value::Text(format!("{current} (no swap active)")),
            want_min,
            want_rec,
        );
    }
    let grade = if current <= SWAPPINESS_RECOMMENDED {
        Grade::Recommended
    } else if current <= SWAPPINESS_MAX {
        Grade::Minimum
    } else {
        Grade::Below
    };
    Finding::new(grade, Value::Count(current), want_min, want_rec)
        .detail("the kernel may swap out a shard's memory; a fault on a swapped page stalls every client on that shard")
        .fix(Fix::Sysctl { key: "vm.swappiness", value: SWAPPINESS_RECOMMENDED.to_string() })
}

/// The selected word of a sysfs mode file: `always [madvise] never` gives `madvise`.
fn selected_mode(text: &str) -> Option<&str> {
    let start = text.find('[')?;
    let end = text[start..].find(']')? + start;
    Some(&text[start + 1..end])
}

/// Reads a transparent-huge-page mode and grades it against the modes that never stall a fault.
fn thp_mode(
    host: &dyn HostView,
    file: &str,
    good: Vec<&'static str>,
    why: &str,
    fix_command: &str,
) -> Finding {
    let path = format!("/sys/kernel/mm/transparent_hugepage/{file}");
    let want = Want::OneOf(good.clone());
    match host.read_file(&path) {
        Err(err) if err.kind() == ErrorKind::NotFound => Finding::new(
            Grade::Recommended,
            Value::text("absent (kernel without THP)"),
            Want::Any,
            want,
        ),
        Err(err) => super::unknown(format!("cannot read {path}: {err}"), Want::Any, want),
        Ok(text) => match selected_mode(&text) {
            None => super::unknown(
                format!("{path} holds {:?}, no [selected] mode", text.trim()),
                Want::Any,
                want,
            ),
            Some(mode) => {
                let grade = if good.contains(&mode) {
                    Grade::Recommended
                } else {
                    Grade::Below
                };
                Finding::new(grade, Value::text(mode), Want::Any, want)
                    .detail(why.to_string())
                    .fix(Fix::Manual {
                        command: fix_command.to_string(),
                    })
            }
        },
    }
}

/// `always` lets khugepaged collapse pages under a running shard, a latency spike.
pub fn transparent_hugepage(host: &dyn HostView, _context: &Context) -> Finding {
    thp_mode(
        host,
        "enabled",
        vec!["madvise", "never"],
        "THP `always` makes khugepaged compact memory under running shards: latency spikes of milliseconds",
        "echo madvise > /sys/kernel/mm/transparent_hugepage/enabled   # persist: transparent_hugepage=madvise on the kernel command line",
    )
}

/// `always` defrag compacts memory synchronously inside a page fault.
pub fn transparent_hugepage_defrag(host: &dyn HostView, _context: &Context) -> Finding {
    thp_mode(
        host,
        "defrag",
        vec!["defer", "defer+madvise", "madvise", "never"],
        "THP defrag `always` compacts memory synchronously inside page faults on the hot path",
        "echo defer+madvise > /sys/kernel/mm/transparent_hugepage/defrag   # persist: a boot-time unit or tmpfiles.d entry",
    )
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use crate::preflight::check::{Fix, Status, Value};

    #[test]
    fn numeric_sysctls_pass_warn_fail() {
        let host = healthy_host();
        let cases = [
            (
                "sysctl.fs.aio-max-nr",
                "/proc/sys/fs/aio-max-nr",
                ["1048576", "65536", "1024"],
            ),
            (
                "sysctl.fs.file-max",
                "/proc/sys/fs/file-max",
                ["6815744", "262144", "100000"],
            ),
            (
                "sysctl.vm.max_map_count",
                "/proc/sys/vm/max_map_count",
                ["500000", "65530", "1000"],
            ),
        ];
        for (id, path, [pass, warn, fail]) in cases {
            for (value, expected) in [
                (pass, Status::Pass),
                (warn, Status::Warn),
                (fail, Status::Fail),
            ] {
                host.write(path, &format!("{value}\n"));
                let result = run(id, &host, &plain_context());
                assert_eq!(result.status, expected, "{id} = {value}");
                assert_eq!(result.current, Value::Count(value.parse().unwrap()));
            }
        }
    }

    #[test]
    fn numeric_sysctl_fix_sets_the_recommendation() {
        let host = healthy_host();
        host.write("/proc/sys/vm/max_map_count", "65530\n");
        let result = run("sysctl.vm.max_map_count", &host, &plain_context());
        assert_eq!(
            result.fixes,
            vec![Fix::Sysctl {
                key: "vm.max_map_count",
                value: "500000".into()
            }]
        );
    }

    #[test]
    fn unreadable_or_garbled_sysctl_warns_without_failing() {
        let host = healthy_host();
        host.write("/proc/sys/fs/file-max", "lots\n");
        assert_eq!(
            run("sysctl.fs.file-max", &host, &plain_context()).status,
            Status::Warn
        );
        host.remove("/proc/sys/fs/file-max");
        let result = run("sysctl.fs.file-max", &host, &plain_context());
        assert_eq!(result.status, Status::Warn);
        assert!(result
            .detail
            .unwrap()
            .contains("cannot read /proc/sys/fs/file-max"));
    }

    #[test]
    fn aio_requirement_grows_with_sow_topics() {
        let host = healthy_host();
        let topics = "[[sow.topics]]\n".repeat(200);
        // 16384 + 8192 x 200 = 1654784, above both standard thresholds.
        let context = config_context(&topics);
        let result = run("sysctl.fs.aio-max-nr", &host, &context);
        assert_eq!(result.status, Status::Fail);
        assert_eq!(result.minimum.to_string(), ">= 1654784");
        host.write("/proc/sys/fs/aio-max-nr", "1654784\n");
        assert_eq!(
            run("sysctl.fs.aio-max-nr", &host, &context).status,
            Status::Pass
        );
    }

    #[test]
    fn io_uring_switch_pass_and_fail() {
        let host = healthy_host();
        assert_eq!(
            run("sysctl.kernel.io_uring_disabled", &host, &plain_context()).status,
            Status::Pass
        );
        for value in ["1", "2"] {
            host.write("/proc/sys/kernel/io_uring_disabled", value);
            let result = run("sysctl.kernel.io_uring_disabled", &host, &plain_context());
            assert_eq!(result.status, Status::Fail, "{value}");
            assert_eq!(
                result.fixes,
                vec![Fix::Sysctl {
                    key: "kernel.io_uring_disabled",
                    value: "0".into()
                }]
            );
        }
        // Before Linux 6.6 the switch does not exist and io_uring is always on.
        host.remove("/proc/sys/kernel/io_uring_disabled");
        assert_eq!(
            run("sysctl.kernel.io_uring_disabled", &host, &plain_context()).status,
            Status::Pass
        );
    }

    #[test]
    fn swappiness_pass_warn_and_no_swap() {
        let host = healthy_host();
        for (value, expected) in [
            ("1", Status::Pass),
            ("10", Status::Warn),
            ("60", Status::Warn),
        ] {
            host.write("/proc/sys/vm/swappiness", value);
            assert_eq!(
                run("sysctl.vm.swappiness", &host, &plain_context()).status,
                expected,
                "{value}"
            );
        }
        // With no swap active the setting cannot hurt.
        host.write("/proc/swaps", "Filename\tType\tSize\tUsed\tPriority\n");
        let result = run("sysctl.vm.swappiness", &host, &plain_context());
        assert_eq!(result.status, Status::Pass);
        assert_eq!(result.current, Value::text("60 (no swap active)"));
    }

    #[test]
    fn transparent_hugepage_modes() {
        let host = healthy_host();
        let path = "/sys/kernel/mm/transparent_hugepage/enabled";
        for (text, expected) in [
            ("always [madvise] never", Status::Pass),
            ("always madvise [never]", Status::Pass),
            ("[always] madvise never", Status::Warn),
        ] {
            host.write(path, text);
            assert_eq!(
                run("mm.transparent_hugepage", &host, &plain_context()).status,
                expected,
                "{text}"
            );
        }
        host.write(path, "garbage");
        assert_eq!(
            run("mm.transparent_hugepage", &host, &plain_context()).status,
            Status::Info
        );
        host.remove(path);
        assert_eq!(
            run("mm.transparent_hugepage", &host, &plain_context()).status,
            Status::Pass
        );
    }

    #[test]
    fn transparent_hugepage_defrag_modes() {
        let host = healthy_host();
        let path = "/sys/kernel/mm/transparent_hugepage/defrag";
        host.write(path, "[always] defer defer+madvise madvise never");
        let result = run("mm.transparent_hugepage.defrag", &host, &plain_context());
        assert_eq!(result.status, Status::Warn);
        assert!(matches!(&result.fixes[..], [Fix::Manual { .. }]));
        host.write(path, "always defer [defer+madvise] madvise never");
        assert_eq!(
            run("mm.transparent_hugepage.defrag", &host, &plain_context()).status,
            Status::Pass
        );
    }
}
