//! Pinning data-plane threads to the cores the plan chose (core_affinity, i.e. `sched_setaffinity`).
//!
//! This module only moves the calling thread (or a thread it spawns); it must never choose cores
//! (that is `plan`) nor change another thread's affinity.

use std::fs;
use std::io;
use std::thread::JoinHandle;

use crate::topology::{CoreId, CoreList};

/// The highest core number a `cpu_set_t` (and so core_affinity) can name, plus one.
const CPU_SET_CAPACITY: usize = libc::CPU_SETSIZE as usize;

/// Why a thread could not be pinned; each variant names the core.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    /// The core is not online on this machine.
    #[error("cannot pin to core {core}: this machine's online cores are {online}")]
    NoSuchCore {
        /// The core asked for.
        core: CoreId,
        /// The online cores (`/sys/devices/system/cpu/online`).
        online: CoreList,
    },
    /// The kernel refused the affinity change.
    #[error(
        "cannot pin to core {core}: sched_setaffinity refused ({source}); the core is probably \
         outside this process's cpuset (cgroup cpuset.cpus, docker --cpuset-cpus, taskset)"
    )]
    Refused {
        /// The core asked for.
        core: CoreId,
        /// The error the kernel returned.
        source: io::Error,
    },
}

/// Pins the calling thread to `core`; the error says which core and why.
pub fn pin_current_thread(core: CoreId) -> Result<(), PinError> {
    let online = online_cores();
    let exists = match &online {
        Some(online) => online.0.contains(&core),
        None => core.0 < CPU_SET_CAPACITY,
    };
    if !exists || core.0 >= CPU_SET_CAPACITY {
        return Err(PinError::NoSuchCore {
            core,
            online: online.unwrap_or_default(),
        });
    }
    if core_affinity::set_for_current(core_affinity::CoreId { id: core.0 }) {
        tracing::debug!(core = core.0, "pinned thread");
        return Ok(());
    }
    Err(PinError::Refused {
        core,
        source: io::Error::last_os_error(),
    })
}

/// Spawns a named thread that pins itself to `core` before running `work`.
///
/// The join handle yields the pinning error instead of running `work` on the wrong core.
pub fn spawn_pinned<F, T>(
    name: String,
    core: CoreId,
    work: F,
) -> io::Result<JoinHandle<Result<T, PinError>>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    std::thread::Builder::new().name(name).spawn(move || {
        pin_current_thread(core)?;
        Ok(work())
    })
}

/// The machine's online cores, or `None` when sysfs cannot say.
fn online_cores() -> Option<CoreList> {
    fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::current_affinity;

    #[test]
    fn pinned_thread_reads_back_its_core() {
        let allowed = current_affinity().unwrap();
        let target = *allowed.last().unwrap();
        let handle = spawn_pinned("pin-test".into(), target, current_affinity).unwrap();
        let seen = handle.join().unwrap().unwrap().unwrap();
        assert_eq!(seen, vec![target]);
    }

    #[test]
    fn pinning_the_current_thread_twice_moves_it() {
        let allowed = current_affinity().unwrap();
        let (first, last) = (allowed[0], *allowed.last().unwrap());
        let handle = std::thread::spawn(move || {
            pin_current_thread(first).unwrap();
            let after_first = current_affinity().unwrap();
            pin_current_thread(last).unwrap();
            (after_first, current_affinity().unwrap())
        });
        let (after_first, after_last) = handle.join().unwrap();
        assert_eq!(after_first, vec![first]);
        assert_eq!(after_last, vec![last]);
    }

    #[test]
    fn pinning_to_a_missing_core_names_it() {
        let handle = std::thread::spawn(|| pin_current_thread(CoreId(4000)));
        let error = handle.join().unwrap().unwrap_err();
        assert!(matches!(
            error,
            PinError::NoSuchCore {
                core: CoreId(4000),
                ..
            }
        ));
        let text = error.to_string();
        assert!(
            text.starts_with("cannot pin to core 4000: this machine's online cores are "),
            "{text}"
        );
    }

    #[test]
    fn spawn_pinned_reports_the_error_instead_of_running() {
        let handle = spawn_pinned("pin-missing".into(), CoreId(4000), || "ran").unwrap();
        assert!(handle.join().unwrap().is_err());
    }
}
