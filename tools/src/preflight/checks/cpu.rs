//! CPU checks: instruction-set features, the frequency governor and the kernel clock source.
//!
//! Features come from the `flags` line of `/proc/cpuinfo`, governors from cpufreq in sysfs
//! (absent in most VMs, which is fine), the clock source from sysfs.

use std::collections::BTreeMap;

use super::{format_cpu_list, read_trimmed, Context, Finding};
use crate::preflight::check::{Fix, Grade, Value, Want};
use crate::preflight::host::HostView;

/// The x86 feature flags of the first CPU, or `None` when `/proc/cpuinfo` has no `flags` line.
fn cpu_flags(host: &dyn HostView) -> Result<Option<Vec<String>>, String> {
    let text = read_trimmed(host, "/proc/cpuinfo")?;
    let flags = text
        .lines()
        .find(|line| {
            line.split(':')
                .next()
                .is_some_and(|key| key.trim() == "flags")
        })
        .and_then(|line| line.split_once(':'))
        .map(|(_, flags)| flags.split_whitespace().map(str::to_string).collect());
    Ok(flags)
}

/// Checks one x86 feature flag; `effect` says what the server loses without it.
fn feature(host: &dyn HostView, flag: &'static str, effect: &str) -> Finding {
    let want = Want::Equals(Value::text("present"));
    match cpu_flags(host) {
        Err(reason) => super::unknown(reason, want.clone(), want),
        Ok(None) => Finding::new(
            Grade::NotApplicable,
            Value::text("no x86 flags"),
            want.clone(),
            want,
        )
        .detail(format!(
            "/proc/cpuinfo lists no x86 flags (another architecture?): {effect}"
        )),
        Ok(Some(flags)) if flags.iter().any(|f| f == flag) => Finding::new(
            Grade::Recommended,
            Value::text("present"),
            want.clone(),
            want,
        ),
        Ok(Some(_)) => Finding::new(Grade::Below, Value::text("missing"), want.clone(), want)
            .detail(effect.to_string()),
    }
}

/// The journal's CRC32C uses the SSE4.2 `crc32` instruction.
pub fn sse4_2(host: &dyn HostView, _context: &Context) -> Finding {
    feature(
        host,
        "sse4_2",
        "CRC32C of every journal record falls back to software, several times slower",
    )
}

/// The filter field scan uses AVX2 when present.
pub fn avx2(host: &dyn HostView, _context: &Context) -> Finding {
    feature(
        host,
        "avx2",
        "the JSON field scan for filters falls back to narrower SIMD",
    )
}

/// All CPUs should run the `performance` governor: frequency ramps add tens of microseconds.
pub fn governor(host: &dyn HostView, _context: &Context) -> Finding {
    let want = Want::Equals(Value::text("performance"));
    let mut by_governor: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for name in host.list_dir("/sys/devices/system/cpu").unwrap_or_default() {
        let Some(cpu) = name.strip_prefix("cpu").and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok(governor) = read_trimmed(
            host,
            &format!("/sys/devices/system/cpu/{name}/cpufreq/scaling_governor"),
        ) {
            by_governor.entry(governor).or_default().push(cpu);
        }
    }
    if by_governor.is_empty() {
        return Finding::new(Grade::NotApplicable, Value::Absent, want.clone(), want)
            .detail("no cpufreq in sysfs: a VM or a CPU at fixed frequency, nothing to tune here");
    }
    let current = by_governor
        .iter()
        .map(|(governor, cpus)| format!("{governor} (cpu {})", format_cpu_list(cpus)))
        .collect::<Vec<_>>()
        .join(", ");
    let grade = if by_governor.keys().all(|governor| governor == "performance") {
        Grade::Recommended
    } else {
        Grade::Below
    };
    Finding::new(grade, Value::Text(current), want.clone(), want)
        .detail("power-saving governors ramp the frequency up only after load arrives: tens of microseconds on each burst")
        .fix(Fix::Manual { command: "cpupower frequency-set -g performance   # persist: the cpupower service or tuned's latency-performance profile".into() })
}

/// `tsc` makes clock_gettime a few nanoseconds in the vDSO; others may trap to the hypervisor.
pub fn clocksource(host: &dyn HostView, _context: &Context) -> Finding {
    let want = Want::Equals(Value::text("tsc"));
    let dir = "/sys/devices/system/clocksource/clocksource0";
    let current = match read_trimmed(host, &format!("{dir}/current_clocksource")) {
        Ok(current) => current,
        Err(reason) => return super::unknown(reason, want.clone(), want),
    };
    if current == "tsc" {
        return Finding::new(Grade::Recommended, Value::text(current), want.clone(), want);
    }
    let available = read_trimmed(host, &format!("{dir}/available_clocksource")).unwrap_or_default();
    let finding = Finding::new(
        Grade::Below,
        Value::Text(current.clone()),
        want.clone(),
        want,
    );
    if available.split_whitespace().any(|source| source == "tsc") {
        finding
            .detail(format!("`{current}` makes every timestamp slower than the vDSO's TSC read"))
            .fix(Fix::Manual { command: format!("echo tsc > {dir}/current_clocksource   # persist: clocksource=tsc on the kernel command line") })
    } else {
        finding.detail(format!("`{current}` makes every timestamp slower; the kernel does not offer tsc here (unstable TSC, or the hypervisor hides it; available: {available})"))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use crate::preflight::check::{Fix, Status, Value};

    #[test]
    fn features_present_missing_and_foreign() {
        let host = healthy_host();
        assert_eq!(
            run("cpu.sse4_2", &host, &plain_context()).status,
            Status::Pass
        );
        assert_eq!(
            run("cpu.avx2", &host, &plain_context()).status,
            Status::Pass
        );

        host.write(
            "/proc/cpuinfo",
            "processor\t: 0\nflags\t\t: fpu sse4_1 sse4_2 avx\n",
        );
        assert_eq!(
            run("cpu.sse4_2", &host, &plain_context()).status,
            Status::Pass
        );
        let avx2 = run("cpu.avx2", &host, &plain_context());
        assert_eq!(avx2.status, Status::Warn);
        assert_eq!(avx2.current, Value::text("missing"));

        // A substring must not count: `sse4_2x` is not `sse4_2`.
        host.write("/proc/cpuinfo", "flags\t: fpu sse4_2x\n");
        assert_eq!(
            run("cpu.sse4_2", &host, &plain_context()).status,
            Status::Warn
        );

        host.write(
            "/proc/cpuinfo",
            "processor\t: 0\nFeatures\t: fp asimd crc32\n",
        );
        assert_eq!(
            run("cpu.sse4_2", &host, &plain_context()).status,
            Status::Info
        );
    }

    #[test]
    fn governor_pass_warn_and_absent() {
        let host = healthy_host();
        assert_eq!(
            run("cpu.governor", &host, &plain_context()).status,
            Status::Pass
        );

        host.write(
            "/sys/devices/system/cpu/cpu2/cpufreq/scaling_governor",
            "powersave\n",
        );
        host.write(
            "/sys/devices/system/cpu/cpu3/cpufreq/scaling_governor",
            "powersave\n",
        );
        let result = run("cpu.governor", &host, &plain_context());
        assert_eq!(result.status, Status::Warn);
        assert_eq!(
            result.current,
            Value::text("performance (cpu 0-1), powersave (cpu 2-3)")
        );
        assert!(matches!(&result.fixes[..], [Fix::Manual { .. }]));

        for cpu in 0..4 {
            host.remove(&format!("/sys/devices/system/cpu/cpu{cpu}/cpufreq"));
        }
        assert_eq!(
            run("cpu.governor", &host, &plain_context()).status,
            Status::Info
        );
    }

    #[test]
    fn clocksource_pass_warn_unknown() {
        let host = healthy_host();
        assert_eq!(
            run("cpu.clocksource", &host, &plain_context()).status,
            Status::Pass
        );

        host.write(
            "/sys/devices/system/clocksource/clocksource0/current_clocksource",
            "hpet\n",
        );
        let result = run("cpu.clocksource", &host, &plain_context());
        assert_eq!(result.status, Status::Warn);
        assert_eq!(result.fixes.len(), 1);

        // Without tsc on offer there is nothing to switch to.
        host.write(
            "/sys/devices/system/clocksource/clocksource0/available_clocksource",
            "kvm-clock hpet\n",
        );
        let result = run("cpu.clocksource", &host, &plain_context());
        assert_eq!(result.status, Status::Warn);
        assert!(result.fixes.is_empty());

        host.remove("/sys/devices/system/clocksource");
        assert_eq!(
            run("cpu.clocksource", &host, &plain_context()).status,
            Status::Info
        );
    }
}
