//! Is io_uring really usable by this process? Probe `io_uring_setup` and explain a refusal.
//!
//! The kernel says only EPERM, ENOSYS or ENOMEM; the cause behind it (the 6.6+ sysctl, a seccomp
//! filter from the container runtime, RLIMIT_MEMLOCK, an old kernel) is read from `/proc` so the
//! operator gets the likely cause and the command that fixes it.

use super::{read_trimmed, Context, Finding};
use crate::preflight::check::{Fix, Grade, LimitItem, Value, Want};
use crate::preflight::host::{HostView, Resource};

/// `kernel.io_uring_disabled`, when the kernel has it.
fn disabled_sysctl(host: &dyn HostView) -> Option<u64> {
    read_trimmed(host, "/proc/sys/kernel/io_uring_disabled")
        .ok()?
        .parse()
        .ok()
}

/// The `Seccomp:` mode of this process (0 none, 1 strict, 2 filter).
fn seccomp_mode(host: &dyn HostView) -> Option<u64> {
    let status = host.read_file("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Seccomp:"))
        .and_then(|mode| mode.trim().parse().ok())
}

const SECCOMP_FIX: &str = "allow io_uring_setup, io_uring_enter and io_uring_register in the container's seccomp profile (docker/podman: --security-opt seccomp=PROFILE.json; Kubernetes: securityContext.seccompProfile)";

/// Sets up a 4-entry ring and closes it; on refusal, names the cause and the fix.
pub fn setup(host: &dyn HostView, _context: &Context) -> Finding {
    let want = Want::Equals(Value::text("usable"));
    let err = match host.probe_io_uring() {
        Ok(()) => {
            return Finding::new(
                Grade::Recommended,
                Value::text("usable"),
                want.clone(),
                want,
            )
        }
        Err(err) => err,
    };
    let errno = err.raw_os_error().unwrap_or(0);
    let failed =
        |what: String| Finding::new(Grade::Below, Value::Text(what), want.clone(), want.clone());
    let seccomp = seccomp_mode(host).unwrap_or(0);
    match errno {
        libc::EPERM => match disabled_sysctl(host) {
            Some(2) => failed("EPERM: disabled by sysctl".into())
                .detail("kernel.io_uring_disabled=2 turns io_uring off for every process; fix: sysctl -w kernel.io_uring_disabled=0")
                .fix(Fix::Sysctl { key: "kernel.io_uring_disabled", value: "0".into() }),
            Some(1) => failed("EPERM: restricted by sysctl".into())
                .detail("kernel.io_uring_disabled=1 allows only root and members of kernel.io_uring_group; fix: sysctl -w kernel.io_uring_disabled=0 (or add the service user to that group)")
                .fix(Fix::Sysctl { key: "kernel.io_uring_disabled", value: "0".into() }),
            _ if seccomp != 0 => failed("EPERM: blocked by seccomp".into())
                .detail(format!("io_uring is enabled in the kernel but this process runs under a seccomp filter (Seccomp: {seccomp} in /proc/self/status), usually the container runtime's default profile; fix: {SECCOMP_FIX}"))
                .fix(Fix::Manual { command: SECCOMP_FIX.into() }),
            _ => failed("EPERM".into()).detail(
                "io_uring is enabled and no seccomp filter applies: a security module (SELinux, AppArmor) probably denies it; check the audit log (ausearch -m avc or journalctl -k)",
            ),
        },
        libc::ENOSYS if seccomp != 0 => failed("ENOSYS: blocked by seccomp".into())
            .detail(format!("this process runs under a seccomp filter (Seccomp: {seccomp}) that hides io_uring; fix: {SECCOMP_FIX}"))
            .fix(Fix::Manual { command: SECCOMP_FIX.into() }),
        libc::ENOSYS => {
            let release = read_trimmed(host, "/proc/sys/kernel/osrelease").unwrap_or_else(|_| "unknown".into());
            failed("ENOSYS: not in this kernel".into())
                .detail(format!("kernel {release} has no io_uring (needs Linux 5.10+ built with CONFIG_IO_URING); fix: upgrade the kernel"))
        }
        libc::ENOMEM => {
            let memlock = host.rlimit(Resource::LockedMemory).map(|limit| super::limits::value_of(limit.soft, true).to_string()).unwrap_or_else(|_| "unknown".into());
            failed("ENOMEM: locked memory exhausted".into())
                .detail(format!("the ring could not be locked in memory: RLIMIT_MEMLOCK is {memlock}; fix: raise memlock (see rlimit.memlock; `ulimit -l unlimited` for a shell, LimitMEMLOCK= for a systemd unit)"))
                .fix(Fix::Limit { item: LimitItem::Memlock, soft: "unlimited".into(), hard: Some("unlimited".into()) })
        }
        libc::EMFILE | libc::ENFILE => failed(format!("{err}")).detail("out of file descriptors; see rlimit.nofile and sysctl.fs.file-max"),
        _ => failed(format!("{err}")).detail(format!("io_uring_setup failed with an unexpected error: {err}")),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use crate::preflight::check::{Fix, Status};

    fn refused(
        errno: i32,
        disabled: Option<&str>,
        seccomp: &str,
    ) -> crate::preflight::check::CheckResult {
        let mut host = healthy_host();
        host.io_uring_errno = Some(errno);
        match disabled {
            Some(value) => host.write("/proc/sys/kernel/io_uring_disabled", value),
            None => host.remove("/proc/sys/kernel/io_uring_disabled"),
        };
        host.write(
            "/proc/self/status",
            &format!("Name:\tx\nSeccomp:\t{seccomp}\n"),
        );
        run("io_uring.setup", &host, &plain_context())
    }

    #[test]
    fn usable_passes() {
        assert_eq!(
            run("io_uring.setup", &healthy_host(), &plain_context()).status,
            Status::Pass
        );
    }

    #[test]
    fn eperm_from_the_sysctl() {
        let result = refused(libc::EPERM, Some("2"), "0");
        assert_eq!(result.status, Status::Fail);
        assert!(result
            .detail
            .as_deref()
            .unwrap()
            .contains("kernel.io_uring_disabled=2"));
        assert_eq!(
            result.fixes,
            vec![Fix::Sysctl {
                key: "kernel.io_uring_disabled",
                value: "0".into()
            }]
        );
        assert!(refused(libc::EPERM, Some("1"), "0")
            .detail
            .unwrap()
            .contains("io_uring_group"));
    }

    #[test]
    fn eperm_from_seccomp() {
        let result = refused(libc::EPERM, Some("0"), "2");
        assert_eq!(result.status, Status::Fail);
        assert!(result.detail.as_deref().unwrap().contains("seccomp"));
        assert!(matches!(&result.fixes[..], [Fix::Manual { .. }]));
    }

    #[test]
    fn eperm_without_sysctl_or_seccomp_points_at_security_modules() {
        let result = refused(libc::EPERM, None, "0");
        assert_eq!(result.status, Status::Fail);
        assert!(result.detail.unwrap().contains("SELinux"));
    }

    #[test]
    fn enomem_is_memlock() {
        let result = refused(libc::ENOMEM, Some("0"), "0");
        assert_eq!(result.status, Status::Fail);
        assert!(result.detail.as_deref().unwrap().contains("RLIMIT_MEMLOCK"));
        assert!(matches!(&result.fixes[..], [Fix::Limit { .. }]));
    }

    #[test]
    fn enosys_is_an_old_kernel_or_seccomp() {
        assert!(refused(libc::ENOSYS, None, "0")
            .detail
            .unwrap()
            .contains("upgrade the kernel"));
        assert!(refused(libc::ENOSYS, None, "2")
            .detail
            .unwrap()
            .contains("seccomp"));
    }
}
