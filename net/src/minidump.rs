//! Minidumps: a text report of the process for post-mortem debugging, written when a shard is
//! stuck, on SIGQUIT, on the admin action and when the process panics.
//!
//! A report holds the reason, build and host facts, and every thread with its name, state,
//! kernel wait channel and stack, plus user-space backtraces of every thread when `eu-stack`
//! (elfutils) or `gdb` is installed. It never holds message contents: nothing here reads the
//! data plane's memory.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a debugger may take to collect user-space backtraces.
const BACKTRACE_TIMEOUT: Duration = Duration::from_secs(20);

/// Writes a minidump into `folder` and returns its path.
pub fn write(folder: &Path, reason: &str, extra: Option<&str>) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(folder)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let pid = std::process::id();
    let path = folder.join(format!(
        "tachyon-{pid}-{}-{:09}.minidump.txt",
        now.as_secs(),
        now.subsec_nanos()
    ));
    let mut report = String::with_capacity(64 * 1024);
    let _ = writeln!(report, "# tachyon minidump\nreason: {reason}");
    let _ = writeln!(report, "time_unix_s: {}", now.as_secs());
    let _ = writeln!(report, "pid: {pid}");
    let _ = writeln!(report, "version: {}", env!("CARGO_PKG_VERSION"));
    let _ = writeln!(
        report,
        "host: {}",
        read_trimmed("/proc/sys/kernel/hostname")
    );
    let _ = writeln!(
        report,
        "kernel: {}",
        read_trimmed("/proc/sys/kernel/osrelease")
    );
    let _ = writeln!(
        report,
        "cpus: {}",
        std::thread::available_parallelism().map_or(0, |cores| cores.get())
    );
    if let Some(extra) = extra {
        let _ = writeln!(report, "\n## detail\n{extra}");
    }
    let _ = writeln!(report, "\n## threads (/proc/self/task)");
    report.push_str(&threads());
    let _ = writeln!(report, "\n## user-space backtraces");
    report.push_str(&backtraces(pid));
    let mut file = std::fs::File::create(&path)?;
    file.write_all(report.as_bytes())?;
    file.sync_all()?;
    Ok(path)
}

fn read_trimmed(path: impl AsRef<Path>) -> String {
    std::fs::read_to_string(path)
        .map(|text| text.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

/// Every thread's name, state, wait channel and kernel stack (the stack needs root).
fn threads() -> String {
    let mut out = String::new();
    let Ok(entries) = std::fs::read_dir("/proc/self/task") else {
        return "unavailable\n".into();
    };
    let mut tids: Vec<u32> = entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort_unstable();
    for tid in tids {
        let task = PathBuf::from(format!("/proc/self/task/{tid}"));
        let name = read_trimmed(task.join("comm"));
        // The state is the field after the parenthesised name in `stat`.
        let stat = read_trimmed(task.join("stat"));
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .unwrap_or("?")
            .to_string();
        let wchan = read_trimmed(task.join("wchan"));
        let _ = writeln!(out, "thread {tid} {name:?} state {state} wchan {wchan}");
        if let Ok(stack) = std::fs::read_to_string(task.join("stack")) {
            for line in stack.lines() {
                let _ = writeln!(out, "    {line}");
            }
        }
    }
    out
}

/// User-space backtraces of every thread from `eu-stack` or `gdb`, if one is installed.
/// Where Yama's `ptrace_scope` is 1 (Ubuntu's default) a process may only be traced by its
/// ancestors, so a debugger we start could not attach to us. Naming ourselves as the allowed
/// tracer lets our own descendants (the debugger) attach, before it starts, and one setting
/// serves concurrent dumps. Without Yama the call fails with EINVAL, which changes nothing.
fn allow_descendants_to_trace() {
    // SAFETY: prctl with PR_SET_PTRACER takes a pid and touches no memory of ours.
    unsafe {
        libc::prctl(
            libc::PR_SET_PTRACER,
            libc::getpid() as libc::c_ulong,
            0,
            0,
            0,
        )
    };
}

fn backtraces(pid: u32) -> String {
    let pid = pid.to_string();
    let tools: [(&str, Vec<&str>); 2] = [
        ("eu-stack", vec!["-p", &pid]),
        (
            "gdb",
            vec!["-batch", "-nx", "-p", &pid, "-ex", "thread apply all bt"],
        ),
    ];
    allow_descendants_to_trace();
    for (tool, args) in tools {
        let child = Command::new(tool)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let Ok(mut child) = child else {
            continue;
        };
        let deadline = std::time::Instant::now() + BACKTRACE_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => {
                    let output = child.wait_with_output().ok();
                    let text = output
                        .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
                        .unwrap_or_default();
                    return format!("(from {tool})\n{text}");
                }
                Ok(None) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return format!("({tool} did not finish within {BACKTRACE_TIMEOUT:?})\n");
                }
            }
        }
    }
    "unavailable: install elfutils (eu-stack) or gdb for user-space backtraces\n".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minidump_names_the_reason_and_every_thread() {
        let folder = std::env::temp_dir().join(format!("tachyon-minidump-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&folder);
        // The name is set by the new thread itself as it starts: wait until it runs.
        let (started, running) = std::sync::mpsc::channel();
        let worker = std::thread::Builder::new()
            .name("dump-witness".into())
            .spawn(move || {
                started.send(()).unwrap();
                std::thread::sleep(Duration::from_secs(30))
            })
            .unwrap();
        running.recv().unwrap();
        let path = write(&folder, "unit test", Some("shard 3 stuck")).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("reason: unit test"), "{text}");
        assert!(text.contains("shard 3 stuck"));
        assert!(text.contains("\"dump-witness\""), "{text}");
        assert!(text.contains("## user-space backtraces"));
        drop(worker);
        std::fs::remove_dir_all(&folder).unwrap();
    }
}
