//! The stuck-thread watchdog: every data-plane shard stamps [`ShardStats::last_active_unix_ms`]
//! on each tick of its loop; a control-plane thread checks the stamps, logs a shard that has
//! made no progress for `stuck_after_ms` (repeating every [`STUCK_LOG_INTERVAL`] while it stays
//! stuck), and writes one minidump per episode once it has been stuck for
//! `minidump_after_seconds`.

use crate::config::WatchdogConfig;
use crate::stats::ShardStats;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tracing::{error, info};

/// How often the watchdog looks at the shards.
const CHECK_INTERVAL: Duration = Duration::from_millis(250);

/// How often a shard that stays stuck is logged again.
const STUCK_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// The running watchdog thread.
pub struct Watchdog {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

#[derive(Default, Clone, Copy)]
struct Episode {
    /// When the current stuck episode was first logged (unix ms), 0 when not stuck.
    since_ms: u64,
    last_logged_ms: u64,
    dumped: bool,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}

/// What the watchdog decided about one shard in one check.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Healthy,
    Recovered {
        stuck_ms: u64,
    },
    Stuck {
        silent_ms: u64,
        log: bool,
        dump: bool,
    },
}

fn judge(
    episode: &mut Episode,
    last_active_ms: u64,
    now_ms: u64,
    config: &WatchdogConfig,
) -> Verdict {
    if last_active_ms == 0 {
        return Verdict::Healthy; // not started yet
    }
    let silent_ms = now_ms.saturating_sub(last_active_ms);
    if silent_ms < config.stuck_after_ms {
        if episode.since_ms != 0 {
            let stuck_ms = now_ms - episode.since_ms;
            *episode = Episode::default();
            return Verdict::Recovered { stuck_ms };
        }
        return Verdict::Healthy;
    }
    if episode.since_ms == 0 {
        episode.since_ms = last_active_ms;
    }
    let log =
        now_ms.saturating_sub(episode.last_logged_ms) >= STUCK_LOG_INTERVAL.as_millis() as u64;
    if log {
        episode.last_logged_ms = now_ms;
    }
    let dump = !episode.dumped && silent_ms >= config.minidump_after_seconds * 1000;
    if dump {
        episode.dumped = true;
    }
    Verdict::Stuck {
        silent_ms,
        log,
        dump,
    }
}

impl Watchdog {
    /// Starts watching `shards` (index = shard id).
    pub fn start(
        shards: Vec<Arc<ShardStats>>,
        config: WatchdogConfig,
    ) -> std::io::Result<Watchdog> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let handle = std::thread::Builder::new()
            .name("tachyon-watchdog".into())
            .spawn(move || {
                let mut episodes = vec![Episode::default(); shards.len()];
                while !stopping.load(Ordering::Acquire) {
                    std::thread::sleep(CHECK_INTERVAL);
                    let now = now_ms();
                    for (shard, (stats, episode)) in shards.iter().zip(&mut episodes).enumerate() {
                        let last = stats.last_active_unix_ms.load(Ordering::Relaxed);
                        match judge(episode, last, now, &config) {
                            Verdict::Healthy => {}
                            Verdict::Recovered { stuck_ms } => {
                                info!(shard, stuck_ms, "shard making progress again");
                            }
                            Verdict::Stuck { silent_ms, log, dump } => {
                                if log {
                                    error!(shard, silent_ms, "shard stuck: no progress for {:.1} s (a task is blocking its thread; minidump after {} s)", silent_ms as f64 / 1000.0, config.minidump_after_seconds);
                                }
                                if dump {
                                    let detail = format!("shard {shard} made no progress for {silent_ms} ms");
                                    write_minidump(&config.minidump_dir, "stuck shard", &detail);
                                }
                            }
                        }
                    }
                }
            })?;
        Ok(Watchdog {
            stop,
            handle: Some(handle),
        })
    }

    /// Stops the thread.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

/// Writes a minidump and logs where (or why not).
pub fn write_minidump(folder: &std::path::Path, reason: &str, detail: &str) -> Option<PathBuf> {
    match crate::minidump::write(folder, reason, Some(detail)) {
        Ok(path) => {
            error!(path = %path.display(), reason, "minidump written");
            Some(path)
        }
        Err(failure) => {
            error!(folder = %folder.display(), reason, "cannot write a minidump: {failure}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> WatchdogConfig {
        WatchdogConfig {
            stuck_after_ms: 1000,
            minidump_after_seconds: 5,
            ..WatchdogConfig::default()
        }
    }

    #[test]
    fn a_silent_shard_is_logged_every_second_and_dumped_once_then_recovers() {
        let config = config();
        let mut episode = Episode::default();
        assert_eq!(judge(&mut episode, 0, 50_000, &config), Verdict::Healthy);
        assert_eq!(
            judge(&mut episode, 10_000, 10_500, &config),
            Verdict::Healthy
        );
        assert_eq!(
            judge(&mut episode, 10_000, 11_200, &config),
            Verdict::Stuck {
                silent_ms: 1_200,
                log: true,
                dump: false
            }
        );
        assert_eq!(
            judge(&mut episode, 10_000, 11_700, &config),
            Verdict::Stuck {
                silent_ms: 1_700,
                log: false,
                dump: false
            }
        );
        assert_eq!(
            judge(&mut episode, 10_000, 15_100, &config),
            Verdict::Stuck {
                silent_ms: 5_100,
                log: true,
                dump: true
            }
        );
        assert_eq!(
            judge(&mut episode, 10_000, 16_200, &config),
            Verdict::Stuck {
                silent_ms: 6_200,
                log: true,
                dump: false
            },
            "one minidump per episode"
        );
        assert_eq!(
            judge(&mut episode, 16_300, 16_400, &config),
            Verdict::Recovered { stuck_ms: 6_400 }
        );
        assert_eq!(
            judge(&mut episode, 16_300, 16_500, &config),
            Verdict::Healthy
        );
    }
}
