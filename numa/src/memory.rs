//! Locking the process's memory in RAM (`mlockall`) so the data plane never waits on a page fault
//! to swap.
//!
//! It owns the call and the explanation of its failure; it must never raise limits itself
//! (that is the operator's or `tachyon preflight --fix`'s decision).

use std::fmt;
use std::io;

/// `mlockall` failed; carries RLIMIT_MEMLOCK so the message can say what to raise.
#[derive(Debug, thiserror::Error)]
#[error(
    "mlockall(MCL_CURRENT|MCL_FUTURE) failed ({source}): RLIMIT_MEMLOCK is {} (hard limit {}) and \
     the process needs more, or lacks CAP_IPC_LOCK. Fix: `ulimit -l unlimited` before starting, \
     LimitMEMLOCK=infinity in the systemd unit, `tachyon - memlock unlimited` in \
     /etc/security/limits.conf, `--ulimit memlock=-1` for docker, or grant CAP_IPC_LOCK",
    Limit(*.limit_bytes_soft),
    Limit(*.limit_bytes_hard)
)]
pub struct MemoryLockError {
    /// The error mlockall returned (ENOMEM over the limit, EPERM without the capability).
    pub source: io::Error,
    /// Soft RLIMIT_MEMLOCK in bytes; `None` = unlimited or unreadable.
    pub limit_bytes_soft: Option<u64>,
    /// Hard RLIMIT_MEMLOCK in bytes; `None` = unlimited or unreadable.
    pub limit_bytes_hard: Option<u64>,
}

/// A memlock limit written for people: `8 MiB`, `unlimited`.
struct Limit(Option<u64>);

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MIB: u64 = 1024 * 1024;
        match self.0 {
            None => f.write_str("unlimited"),
            Some(bytes) if bytes >= MIB && bytes % MIB == 0 => write!(f, "{} MiB", bytes / MIB),
            Some(bytes) if bytes % 1024 == 0 => write!(f, "{} KiB", bytes / 1024),
            Some(bytes) => write!(f, "{bytes} bytes"),
        }
    }
}

/// Locks all current and future pages in RAM (`mlockall(MCL_CURRENT|MCL_FUTURE)`).
///
/// With MCL_FUTURE every later allocation counts against RLIMIT_MEMLOCK, so size the limit for the
/// whole process, not just its start-up footprint.
pub fn lock_memory() -> Result<(), MemoryLockError> {
    // SAFETY: mlockall takes flags only and touches no Rust-visible memory.
    let result = unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) };
    if result == 0 {
        tracing::info!("memory locked (mlockall MCL_CURRENT|MCL_FUTURE)");
        return Ok(());
    }
    let source = io::Error::last_os_error();
    let (limit_bytes_soft, limit_bytes_hard) = memlock_limit();
    Err(MemoryLockError {
        source,
        limit_bytes_soft,
        limit_bytes_hard,
    })
}

/// RLIMIT_MEMLOCK as (soft, hard), `None` for unlimited or unreadable.
fn memlock_limit() -> (Option<u64>, Option<u64>) {
    // SAFETY: rlimit is two integers, for which all-zeroes is valid.
    let mut limit: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } != 0 {
        return (None, None);
    }
    let finite = |value: libc::rlim_t| (value != libc::RLIM_INFINITY).then_some(value);
    (finite(limit.rlim_cur), finite(limit.rlim_max))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHILD_MARKER: &str = "TACHYON_NUMA_LOCK_CHILD";

    #[test]
    fn error_names_the_limit_and_the_fix() {
        let error = MemoryLockError {
            source: io::Error::from_raw_os_error(libc::ENOMEM),
            limit_bytes_soft: Some(8 * 1024 * 1024),
            limit_bytes_hard: None,
        };
        let text = error.to_string();
        assert!(
            text.contains("RLIMIT_MEMLOCK is 8 MiB (hard limit unlimited)"),
            "{text}"
        );
        assert!(text.contains("ulimit -l unlimited"), "{text}");
        assert!(text.contains("LimitMEMLOCK=infinity"), "{text}");
        assert_eq!(Limit(Some(512 * 1024)).to_string(), "512 KiB");
        assert_eq!(Limit(Some(1000)).to_string(), "1000 bytes");
    }

    /// mlockall with MCL_FUTURE changes the whole process, so it runs in a child test process.
    #[test]
    fn lock_memory_in_a_child_process() {
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "memory::tests::lock_memory_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_MARKER, "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "child failed: {stdout}");
        let line = stdout
            .lines()
            .find_map(|line| line.find("lock_memory: ").map(|start| &line[start..]))
            .unwrap_or_else(|| panic!("child printed no result: {stdout}"));
        assert!(
            line == "lock_memory: ok" || line.contains("RLIMIT_MEMLOCK"),
            "unexpected child result: {line}"
        );
    }

    #[test]
    #[ignore = "run by lock_memory_in_a_child_process"]
    fn lock_memory_child() {
        assert_eq!(
            std::env::var(CHILD_MARKER).as_deref(),
            Ok("1"),
            "run only as a child"
        );
        match lock_memory() {
            Ok(()) => println!("lock_memory: ok"),
            Err(error) => println!("lock_memory: {error}"),
        }
    }
}
