//! A noise meter: how much CPU *other* processes used while a measurement ran, and how much the
//! hypervisor stole. On a shared 2-core VM a compiler running next to the benchmark moves tail
//! latencies by milliseconds; recording this with every result says which rows to distrust.
//!
//! Background CPU = machine busy time (/proc/stat) − this process's CPU time − the server
//! child's CPU time, all in clock ticks, expressed as percent of one core over the wall time.
//! It only reads /proc; it never changes anything.

use std::fs;
use std::time::Instant;

/// Background CPU above this (percent of one core) marks a measurement as noisy.
pub const BACKGROUND_CPU_NOISY_PERCENT: f64 = 20.0;

/// CPU counters at one instant.
#[derive(Clone, Copy, Debug)]
pub struct CpuSample {
    at: Instant,
    machine_busy_ticks: u64,
    machine_steal_ticks: u64,
    own_ticks: u64,
    server_ticks: u64,
}

/// What other processes and the hypervisor took during a measurement.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Noise {
    /// CPU used by processes other than the benchmark and its server, in percent of one core.
    pub background_cpu_percent: f64,
    /// Time the hypervisor ran something else on our vCPUs, in percent of one core.
    pub steal_percent: f64,
}

impl CpuSample {
    /// Samples the machine, this process, and the server process `server_pid` (if any).
    pub fn take(server_pid: Option<u32>) -> Option<Self> {
        let (machine_busy_ticks, machine_steal_ticks) =
            parse_machine(&fs::read_to_string("/proc/stat").ok()?)?;
        let own_ticks = parse_process(&fs::read_to_string("/proc/self/stat").ok()?)?;
        let server_ticks = match server_pid {
            Some(pid) => parse_process(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?,
            None => 0,
        };
        Some(Self {
            at: Instant::now(),
            machine_busy_ticks,
            machine_steal_ticks,
            own_ticks,
            server_ticks,
        })
    }

    /// The noise between `self` (before) and `after`.
    pub fn noise_until(&self, after: &Self) -> Noise {
        // SAFETY: sysconf has no memory-safety preconditions; it only reads a constant.
        let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let elapsed_ticks = (after.at - self.at).as_secs_f64() * ticks_per_second;
        if elapsed_ticks <= 0.0 {
            return Noise::default();
        }
        let busy = after
            .machine_busy_ticks
            .saturating_sub(self.machine_busy_ticks);
        let ours = after.own_ticks.saturating_sub(self.own_ticks)
            + after.server_ticks.saturating_sub(self.server_ticks);
        let steal = after
            .machine_steal_ticks
            .saturating_sub(self.machine_steal_ticks);
        Noise {
            background_cpu_percent: busy.saturating_sub(ours) as f64 / elapsed_ticks * 100.0,
            steal_percent: steal as f64 / elapsed_ticks * 100.0,
        }
    }
}

/// `(busy, steal)` ticks from the `cpu` line of /proc/stat (busy excludes idle, iowait, steal).
fn parse_machine(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|line| line.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|field| field.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice: already in user/nice]
    let field = |index: usize| fields.get(index).copied().unwrap_or(0);
    let busy = field(0) + field(1) + field(2) + field(5) + field(6);
    Some((busy, field(7)))
}

/// utime + stime ticks of a process (all its threads) from /proc/<pid>/stat.
fn parse_process(stat: &str) -> Option<u64> {
    // The command name may contain spaces; fields are counted after its closing parenthesis.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // After the name: state(3) ppid(4) ... utime is field 14, stime 15 (1-based overall).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_machine_and_process_counters() {
        let stat = "cpu  100 5 50 1000 7 3 2 11 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        assert_eq!(parse_machine(stat), Some((160, 11)));
        let process =
            "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 500 0 0 0 42 8 0 0 20 0 3 0 100";
        assert_eq!(parse_process(process), Some(50));
    }

    #[test]
    fn live_sample_works_here() {
        let before = CpuSample::take(None).expect("/proc is readable");
        let after = CpuSample::take(Some(std::process::id())).expect("/proc is readable");
        let noise = before.noise_until(&after);
        assert!(noise.background_cpu_percent >= 0.0 && noise.steal_percent >= 0.0);
    }
}
