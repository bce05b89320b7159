//! Resource-limit checks: core file size, open files and locked memory of the user running the server.
//!
//! They read this process's soft limits, which is what a server started the same way gets: run the
//! preflight as the service user (or under the same systemd unit settings) for a true answer.

use super::{format_cpu_list, parse_cpu_list, read_trimmed, Context, Finding};
use crate::preflight::check::{Fix, Grade, LimitItem, Value, Want};
use crate::preflight::host::{HostView, Limit, Resource};

/// Open files any server needs: listeners, journal, SOW files, a few hundred clients.
pub const OPEN_FILES_MIN: u64 = 4096;
/// Open files recommended for production fan-out.
pub const OPEN_FILES_RECOMMENDED: u64 = 32768;
/// glommio refuses to start an executor below this much locked memory.
pub const LOCKED_MEMORY_MIN_BYTES: u64 = 512 << 10;
/// Registered I/O buffer of each glommio executor (its `io_memory` default).
pub const LOCKED_MEMORY_IO_BUFFER_PER_SHARD_BYTES: u64 = 10 << 20;
/// Submission and completion rings of each shard's io_uring instances, rounded up.
pub const LOCKED_MEMORY_RINGS_PER_SHARD_BYTES: u64 = 1 << 20;

/// The limit as a typed value: sizes in bytes, descriptors as counts.
pub(super) fn value_of(limit: Limit, bytes: bool) -> Value {
    match limit {
        Limit::Unlimited => Value::Unlimited,
        Limit::Finite(n) if bytes => Value::Bytes(n),
        Limit::Finite(n) => Value::Count(n),
    }
}

/// The hard limit to write so it admits `wanted`, in `limits.conf` units of `unit` bytes; `None`
/// when the current hard limit already does (a fix must never lower a hard limit).
fn raised_hard(hard: Limit, wanted: u64, unit: u64) -> Option<String> {
    if hard.allows(wanted) {
        None
    } else {
        Some(wanted.div_ceil(unit).to_string())
    }
}

fn grade(limit: Limit, minimum: u64, recommended: u64) -> Grade {
    if limit.allows(recommended) {
        Grade::Recommended
    } else if limit.allows(minimum) {
        Grade::Minimum
    } else {
        Grade::Below
    }
}

/// Core dumps of a server holding gigabytes of SOW take minutes and can fill the disk.
pub fn core_file_size(host: &dyn HostView, _context: &Context) -> Finding {
    let want = Want::Equals(Value::Bytes(0));
    let limit = match host.rlimit(Resource::CoreFileSize) {
        Ok(limit) => limit,
        Err(err) => {
            return super::unknown(format!("cannot read RLIMIT_CORE: {err}"), Want::Any, want)
        }
    };
    let grade = if limit.soft == Limit::Finite(0) {
        Grade::Recommended
    } else {
        Grade::Below
    };
    Finding::new(grade, value_of(limit.soft, true), Want::Any, want)
        .detail("a core dump of a server holding a large SOW takes minutes and can fill the disk; the server writes a minidump on crash instead")
                // Only the soft limit: an operator may still raise it to debug a crash.
        .fix(Fix::Limit { item: LimitItem::Core, soft: "0".into(), hard: None })
}

/// File descriptors needed by the configured server: one per client, SOW topic and open journal
/// file, doubled for the sockets and files opened while others close.
pub fn open_files_needed(context: &Context) -> Option<u64> {
    let config = context.config.as_ref()?;
    let consumers = config.max_clients.unwrap_or(0)
        + config.sow_topic_count
        + config.journal_preallocated_segments.unwrap_or(0);
    Some(consumers.saturating_mul(2))
}

/// Every client connection, journal segment and SOW file is a descriptor.
pub fn open_files(host: &dyn HostView, context: &Context) -> Finding {
    let needed = open_files_needed(context).unwrap_or(0);
    let minimum = OPEN_FILES_MIN.max(needed);
    let recommended = OPEN_FILES_RECOMMENDED.max(needed);
    let (want_min, want_rec) = (
        Want::AtLeast(Value::Count(minimum)),
        Want::AtLeast(Value::Count(recommended)),
    );
    let limit = match host.rlimit(Resource::OpenFiles) {
        Ok(limit) => limit,
        Err(err) => {
            return super::unknown(
                format!("cannot read RLIMIT_NOFILE: {err}"),
                want_min,
                want_rec,
            )
        }
    };
    let mut detail = String::from("each client, SOW topic and journal file holds a descriptor");
    if needed > 0 {
        detail.push_str(&format!(
            "; the config needs 2 x (clients + SOW topics + preallocated journal files) = {needed}"
        ));
    }
    detail.push_str(&format!("; hard limit is {}", value_of(limit.hard, false)));
    Finding::new(
        grade(limit.soft, minimum, recommended),
        value_of(limit.soft, false),
        want_min,
        want_rec,
    )
    .detail(detail)
    .fix(Fix::Limit {
        item: LimitItem::Nofile,
        soft: recommended.to_string(),
        hard: raised_hard(limit.hard, recommended, 1),
    })
}

/// Shards (one glommio executor each) the server will run: the configured cores, or every online CPU.
fn shard_count(host: &dyn HostView, context: &Context) -> (u64, String) {
    if let Some(cores) = context.cores() {
        return (
            cores.len().max(1) as u64,
            format!("{} configured cores", cores.len()),
        );
    }
    match read_trimmed(host, "/sys/devices/system/cpu/online")
        .ok()
        .and_then(|text| parse_cpu_list(&text))
    {
        Some(cores) if !cores.is_empty() => (
            cores.len() as u64,
            format!("{} online CPUs ({})", cores.len(), format_cpu_list(&cores)),
        ),
        _ => (1, "1 shard (online CPUs unknown)".into()),
    }
}

/// io_uring rings and glommio's registered buffers are locked memory.
pub fn locked_memory(host: &dyn HostView, context: &Context) -> Finding {
    let (shards, shard_source) = shard_count(host, context);
    let recommended =
        shards * (LOCKED_MEMORY_IO_BUFFER_PER_SHARD_BYTES + LOCKED_MEMORY_RINGS_PER_SHARD_BYTES);
    let (want_min, want_rec) = (
        Want::AtLeast(Value::Bytes(LOCKED_MEMORY_MIN_BYTES)),
        Want::AtLeast(Value::Bytes(recommended)),
    );
    let limit = match host.rlimit(Resource::LockedMemory) {
        Ok(limit) => limit,
        Err(err) => {
            return super::unknown(
                format!("cannot read RLIMIT_MEMLOCK: {err}"),
                want_min,
                want_rec,
            )
        }
    };
    let recommended_kib = recommended.div_ceil(1024);
    Finding::new(grade(limit.soft, LOCKED_MEMORY_MIN_BYTES, recommended), value_of(limit.soft, true), want_min, want_rec)
        .detail(format!(
            "glommio needs 512 KiB to start; each shard registers a 10 MiB I/O buffer plus ~1 MiB of rings: {shard_source}; without enough, I/O falls back to slower unregistered buffers"
        ))
        .fix(Fix::Limit { item: LimitItem::Memlock, soft: recommended_kib.to_string(), hard: raised_hard(limit.hard, recommended, 1024) })
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use crate::preflight::check::{Fix, LimitItem, Status, Value};
    use crate::preflight::host::{Limit, Resource};

    #[test]
    fn core_file_size_pass_and_warn() {
        let mut host = healthy_host();
        let result = run("rlimit.core", &host, &plain_context());
        assert_eq!(result.status, Status::Pass);

        host.set_rlimit(Resource::CoreFileSize, Limit::Unlimited, Limit::Unlimited);
        let result = run("rlimit.core", &host, &plain_context());
        assert_eq!(result.status, Status::Warn);
        assert_eq!(result.current, Value::Unlimited);
        assert_eq!(
            result.fixes,
            vec![Fix::Limit {
                item: LimitItem::Core,
                soft: "0".into(),
                hard: None
            }]
        );
    }

    #[test]
    fn open_files_pass_warn_fail() {
        let mut host = healthy_host();
        for (soft, expected) in [
            (Limit::Finite(32768), Status::Pass),
            (Limit::Finite(20000), Status::Warn),
            (Limit::Finite(1024), Status::Fail),
        ] {
            host.set_rlimit(Resource::OpenFiles, soft, Limit::Finite(1 << 20));
            let result = run("rlimit.nofile", &host, &plain_context());
            assert_eq!(result.status, expected, "{soft:?}");
        }
    }

    #[test]
    fn open_files_requirement_grows_with_the_config() {
        let mut host = healthy_host();
        host.set_rlimit(
            Resource::OpenFiles,
            Limit::Finite(32768),
            Limit::Finite(32768),
        );
        // 2 x (20000 clients + 3 topics + 8 journal files) = 40022 > 32768.
        let context = config_context("[limits]\nmax_clients = 20000\n[journal]\npreallocated_segments = 8\n[[sow.topics]]\n[[sow.topics]]\n[[sow.topics]]\n");
        let result = run("rlimit.nofile", &host, &context);
        assert_eq!(result.status, Status::Fail);
        assert_eq!(result.minimum.to_string(), ">= 40022");
        // The hard limit is raised too, since 32768 would not admit the new soft limit.
        assert_eq!(
            result.fixes,
            vec![Fix::Limit {
                item: LimitItem::Nofile,
                soft: "40022".into(),
                hard: Some("40022".into())
            }]
        );

        // A small config keeps the standard floor.
        let result = run(
            "rlimit.nofile",
            &host,
            &config_context("[limits]\nmax_clients = 100\n"),
        );
        assert_eq!(result.status, Status::Pass);
        assert_eq!(result.minimum.to_string(), ">= 4096");
    }

    #[test]
    fn unreadable_limit_is_not_a_pass() {
        let mut host = healthy_host();
        host.rlimits.remove(&Resource::OpenFiles);
        assert_eq!(
            run("rlimit.nofile", &host, &plain_context()).status,
            Status::Warn
        );
    }

    #[test]
    fn locked_memory_pass_warn_fail() {
        let mut host = healthy_host();
        // Four online CPUs in the fake tree: 4 x 11 MiB = 44 MiB recommended.
        for (soft, expected) in [
            (Limit::Unlimited, Status::Pass),
            (Limit::Finite(44 << 20), Status::Pass),
            (Limit::Finite(8 << 20), Status::Warn),
            (Limit::Finite(64 << 10), Status::Fail),
        ] {
            host.set_rlimit(Resource::LockedMemory, soft, soft);
            assert_eq!(
                run("rlimit.memlock", &host, &plain_context()).status,
                expected,
                "{soft:?}"
            );
        }
        let result = run("rlimit.memlock", &host, &plain_context());
        let kib = (44 * 1024).to_string();
        assert_eq!(
            result.fixes,
            vec![Fix::Limit {
                item: LimitItem::Memlock,
                soft: kib.clone(),
                hard: Some(kib)
            }]
        );

        // A hard limit that already admits the recommendation is left alone.
        host.set_rlimit(
            Resource::LockedMemory,
            Limit::Finite(8 << 20),
            Limit::Unlimited,
        );
        let result = run("rlimit.memlock", &host, &plain_context());
        assert!(matches!(&result.fixes[..], [Fix::Limit { hard: None, .. }]));
    }

    #[test]
    fn locked_memory_follows_configured_cores() {
        let mut host = healthy_host();
        host.set_rlimit(
            Resource::LockedMemory,
            Limit::Finite(22 << 20),
            Limit::Finite(22 << 20),
        );
        assert_eq!(
            run("rlimit.memlock", &host, &plain_context()).status,
            Status::Warn
        );
        assert_eq!(
            run(
                "rlimit.memlock",
                &host,
                &config_context("[runtime]\ncores = [2, 3]\n")
            )
            .status,
            Status::Pass
        );
    }
}
