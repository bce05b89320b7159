//! Starting and stopping the systems under test: the Tachyon binary, the in-process raw TCP
//! relay, and `nats-server`. Each combination gets a fresh instance so no state (journal, slow
//! consumer counters, memory) carries from one measurement into the next.
//!
//! Servers run pinned to the "server core" (set in the child between fork and exec, so every
//! thread the server starts inherits it); the benchmark's own threads run on other cores.
//!
//! A Tachyon with a transaction log keeps its data under [`SystemOptions::journal_dir`] (a fresh
//! subdirectory per run, removed afterwards), never in the temp dir, which may be tmpfs: there an
//! fdatasync costs nothing and persisted-ack figures would describe memory, not a disk.

use std::ffi::CString;
use std::fmt;
use std::fs::{self, File};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::relay::Relay;

/// How long a server may take to accept connections before the run fails.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a server may take to exit after SIGTERM before it is killed.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a journaled Tachyon may take to zero-fill its spare segments after it listens.
const SPARE_SEGMENTS_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// `statfs` magic numbers of file systems that live in memory (linux/magic.h).
const TMPFS_MAGIC: u64 = 0x0102_1994;
const RAMFS_MAGIC: u64 = 0x8584_58f6;

/// A system the benchmark can measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SystemKind {
    /// The Tachyon server binary (`solo` mode), AMPS protocol.
    Tachyon,
    /// The in-process raw TCP relay: the floor.
    Relay,
    /// `nats-server`, NATS text protocol.
    Nats,
}

impl SystemKind {
    /// Parses one name of the `--systems` list.
    pub fn parse(name: &str) -> Result<Self> {
        match name.trim() {
            "tachyon" => Ok(Self::Tachyon),
            "relay" => Ok(Self::Relay),
            "nats" => Ok(Self::Nats),
            other => bail!("unknown system {other:?}: expected tachyon, relay or nats"),
        }
    }
}

impl fmt::Display for SystemKind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad` (not `write_str`) so table columns can set a width.
        formatter.pad(match self {
            Self::Tachyon => "tachyon",
            Self::Relay => "relay",
            Self::Nats => "nats",
        })
    }
}

/// How the load generator talks to a system.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// AMPS with logon and subscribe.
    Amps,
    /// AMPS publish frames sent straight through the relay (no logon, no subscribe).
    RawFrames,
    /// NATS text protocol.
    Nats,
}

/// Where the load generator connects.
#[derive(Clone, Copy, Debug)]
pub struct Endpoint {
    /// The protocol to speak.
    pub protocol: Protocol,
    /// Address for the publisher connection.
    pub publish_address: SocketAddr,
    /// Address for the subscriber connection (the same as `publish_address` for brokers).
    pub subscribe_address: SocketAddr,
}

/// Paths and placement used to start systems.
#[derive(Clone, Debug)]
pub struct SystemOptions {
    /// The Tachyon binary.
    pub tachyon_binary: PathBuf,
    /// The `nats-server` binary.
    pub nats_binary: PathBuf,
    /// This benchmark's own binary, to run the relay as a process (`relay-server`); `None` runs
    /// it as a thread of this process.
    pub relay_binary: Option<PathBuf>,
    /// The core servers (and the relay) are pinned to; `None` = no pinning.
    pub server_core: Option<usize>,
    /// Where a Tachyon with a transaction log keeps its data: a fresh subdirectory per run,
    /// removed afterwards. Must be on the disk under test (see [`check_real_disk`]).
    pub journal_dir: PathBuf,
}

/// What one measurement needs from a fresh server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerParams {
    /// Publisher and subscriber connections (the relay waits for exactly these).
    pub shape: crate::relay::Shape,
    /// Tachyon's `[limits] client_outbound_bytes_max` (bytes queued for one client before it is
    /// disconnected as a slow consumer), written into the config the benchmark generates.
    pub client_outbound_bytes_max: usize,
    /// A SOW topic (key `/id`) added to Tachyon's config, for the sow-query scenario.
    pub sow_topic: Option<&'static str>,
    /// A topic in Tachyon's transaction log (`[journal] topics`), for the persisted-ack
    /// scenario; the server's data then lives under [`SystemOptions::journal_dir`].
    pub journal_topic: Option<&'static str>,
}

/// Tachyon's default `[limits] client_outbound_bytes_max`: 64 MiB.
pub const CLIENT_OUTBOUND_BYTES_MAX_DEFAULT: usize = 64 * 1024 * 1024;

impl Default for ServerParams {
    fn default() -> Self {
        Self {
            shape: crate::relay::Shape::default(),
            client_outbound_bytes_max: CLIENT_OUTBOUND_BYTES_MAX_DEFAULT,
            sow_topic: None,
            journal_topic: None,
        }
    }
}

/// The Tachyon config file the benchmark writes for one run.
pub fn tachyon_config(data_dir: &Path, address: SocketAddr, params: &ServerParams) -> String {
    // The admin and JSON Lines ports are picked by the kernel, so a benchmark never collides
    // with another instance (or a server still stopping) on their fixed defaults.
    let mut config = format!(
        "data_dir = \"{}\"\n\n[transport]\namps_tcp = \"{address}\"\n\n[limits]\nclient_outbound_bytes_max = {}\n\n[admin]\naddress = \"127.0.0.1:0\"\n\n[jsonl]\naddress = \"127.0.0.1:0\"\n",
        data_dir.display(),
        params.client_outbound_bytes_max
    );
    if let Some(topic) = params.sow_topic {
        config.push_str(&format!(
            "\n[[sow.topics]]\ntopic = \"{topic}\"\nkey_fields = [\"{}\"]\n",
            crate::sow::SOW_KEY_FIELD
        ));
    }
    if let Some(topic) = params.journal_topic {
        // Every other journal option keeps the server's default, so the figures describe what
        // an operator gets by naming a topic.
        config.push_str(&format!("\n[journal]\ntopics = [\"{topic}\"]\n"));
    }
    config
}

/// The file system type (`statfs` magic number) of `path`.
fn statfs_kind(path: &Path) -> std::io::Result<u64> {
    let path = CString::new(path.as_os_str().as_bytes())
        .map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidInput, error))?;
    // SAFETY: statfs(2) reads the NUL-terminated path and writes one `struct statfs` into the
    // zeroed, properly sized and aligned value it is given; both outlive the call.
    let (status, stats) = unsafe {
        let mut stats: libc::statfs = std::mem::zeroed();
        let status = libc::statfs(path.as_ptr(), &mut stats);
        (status, stats)
    };
    if status != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // f_type's width differs between architectures; the magic numbers are 32 bits.
    Ok((stats.f_type as u64) & 0xffff_ffff)
}

/// Refuses a directory on a file system that lives in memory (tmpfs, ramfs), where fdatasync
/// returns at once; creates the directory when missing.
pub fn check_real_disk(directory: &Path) -> Result<()> {
    fs::create_dir_all(directory)
        .with_context(|| format!("creating the journal directory {}", directory.display()))?;
    let kind = statfs_kind(directory).with_context(|| format!("statfs {}", directory.display()))?;
    if kind == TMPFS_MAGIC || kind == RAMFS_MAGIC {
        bail!(
            "{} is on {} (memory): an fdatasync there returns at once, so persisted-ack latency \
             would not include a disk; pass --journal-dir on the disk under test",
            directory.display(),
            if kind == TMPFS_MAGIC {
                "tmpfs"
            } else {
                "ramfs"
            }
        );
    }
    Ok(())
}

/// A started system; [`RunningSystem::stop`] (or drop) shuts it down.
pub struct RunningSystem {
    /// Where to connect.
    pub endpoint: Endpoint,
    /// The transaction log's I/O path as a journaled Tachyon logged it at start-up
    /// (`io_uring+O_DIRECT ...` or `buffered pwrite+fdatasync (why)`).
    pub journal_backend: Option<String>,
    guard: Guard,
}

enum Guard {
    Process(ServerProcess),
    Relay(Relay),
}

impl RunningSystem {
    /// The server's process id, for CPU accounting (`None` for the in-process relay).
    pub fn server_pid(&self) -> Option<u32> {
        match &self.guard {
            Guard::Process(process) => process.child.as_ref().map(Child::id),
            Guard::Relay(_) => None,
        }
    }

    /// Stops the system, reporting an unclean exit.
    pub fn stop(self) -> Result<()> {
        match self.guard {
            Guard::Process(mut process) => process.stop(),
            Guard::Relay(relay) => relay.stop().map(|_| ()),
        }
    }
}

/// Starts `kind` for one publisher and one subscriber and waits until it accepts connections.
#[cfg(test)]
pub fn start(kind: SystemKind, options: &SystemOptions) -> Result<RunningSystem> {
    start_with(kind, options, &ServerParams::default())
}

/// Starts `kind` for the connections and limits in `params`; waits until it accepts connections.
pub fn start_with(
    kind: SystemKind,
    options: &SystemOptions,
    params: &ServerParams,
) -> Result<RunningSystem> {
    match kind {
        SystemKind::Relay if options.relay_binary.is_some() => {
            let scratch = ScratchDir::create("relay")?;
            let publish_address = free_loopback_address()?;
            let subscribe_address = free_loopback_address()?;
            let mut command = Command::new(options.relay_binary.as_ref().expect("checked above"));
            command
                .arg("relay-server")
                .arg("--publish")
                .arg(publish_address.to_string())
                .arg("--subscribe")
                .arg(subscribe_address.to_string())
                .arg("--publishers")
                .arg(params.shape.publishers.to_string())
                .arg("--subscribers")
                .arg(params.shape.subscribers.to_string());
            let mut process = ServerProcess::spawn("relay", command, scratch, options.server_core)?;
            // Not a connect probe: the relay would take the probe for its one publisher or
            // subscriber. It says when it listens instead.
            process.wait_for_stdout_line(crate::relay::READY_LINE, STARTUP_TIMEOUT)?;
            let endpoint = Endpoint {
                protocol: Protocol::RawFrames,
                publish_address,
                subscribe_address,
            };
            Ok(RunningSystem {
                endpoint,
                journal_backend: None,
                guard: Guard::Process(process),
            })
        }
        SystemKind::Relay => {
            let relay = Relay::start_with(
                options.server_core.map(|id| core_affinity::CoreId { id }),
                params.shape,
            )?;
            let endpoint = Endpoint {
                protocol: Protocol::RawFrames,
                publish_address: relay.publish_address,
                subscribe_address: relay.subscribe_address,
            };
            Ok(RunningSystem {
                endpoint,
                journal_backend: None,
                guard: Guard::Relay(relay),
            })
        }
        SystemKind::Tachyon => {
            let scratch = match params.journal_topic {
                Some(_) => ScratchDir::create_in(&options.journal_dir, "tachyon")?,
                None => ScratchDir::create("tachyon")?,
            };
            let address = free_loopback_address()?;
            let config_path = scratch.path.join("tachyon.toml");
            let data_dir = scratch.path.join("data");
            let config = tachyon_config(&data_dir, address, params);
            fs::write(&config_path, config)
                .with_context(|| format!("writing {}", config_path.display()))?;
            let mut command = Command::new(&options.tachyon_binary);
            command.arg("solo").arg("--config").arg(&config_path);
            let process = ServerProcess::spawn("tachyon", command, scratch, options.server_core)?;
            let mut running = started(process, address, Protocol::Amps)?;
            if let Some(topic) = params.journal_topic {
                let Guard::Process(process) = &mut running.guard else {
                    unreachable!("Tachyon runs as a process")
                };
                // The journal zero-fills its spare segments in the background, at start-up and
                // again when its first message takes one as the first segment; measuring during
                // either would time a burst of writes that only happens once. So: one message
                // first, then wait until the spares are all ready again.
                crate::persisted::prime(address, topic, STARTUP_TIMEOUT)
                    .context("priming the journal with one persisted publish")?;
                process.wait_for_spare_segments(&data_dir, SPARE_SEGMENTS_READY_TIMEOUT)?;
                running.journal_backend = journal_backend_logged(&process.stderr());
            }
            Ok(running)
        }
        SystemKind::Nats => {
            let scratch = ScratchDir::create("nats")?;
            let address = free_loopback_address()?;
            let mut command = Command::new(&options.nats_binary);
            command.args(["-a", "127.0.0.1", "-p", &address.port().to_string()]);
            let process =
                ServerProcess::spawn("nats-server", command, scratch, options.server_core)?;
            started(process, address, Protocol::Nats)
        }
    }
}

/// Waits for a spawned server's port, then wraps it as a running system.
fn started(
    mut process: ServerProcess,
    address: SocketAddr,
    protocol: Protocol,
) -> Result<RunningSystem> {
    process.wait_until_accepting(address, STARTUP_TIMEOUT)?;
    let endpoint = Endpoint {
        protocol,
        publish_address: address,
        subscribe_address: address,
    };
    Ok(RunningSystem {
        endpoint,
        journal_backend: None,
        guard: Guard::Process(process),
    })
}

/// The backend named in Tachyon's `journal: open ... backend=<kind> crc32c=...` log line.
fn journal_backend_logged(stderr: &str) -> Option<String> {
    let line = stderr.lines().find(|line| line.contains("journal: open"))?;
    let backend = line.split_once("backend=")?.1;
    let backend = backend
        .split_once(" crc32c=")
        .map_or(backend, |(kind, _)| kind);
    Some(backend.trim().to_owned())
}

/// Asks the kernel for a free loopback port. Another process could take it before the server
/// binds it; on this single-user rig that race is accepted (the server then fails loudly).
pub fn free_loopback_address() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free loopback port")?;
    Ok(listener.local_addr()?)
}

/// Finds `name` on `PATH`, then in `/usr/sbin` and `/usr/local/sbin` (where Debian puts
/// `nats-server`, which is not on a non-root user's `PATH`).
pub fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|directory| directory.join(name))
        .find(|candidate| candidate.is_file())
}

/// A per-run scratch directory (under the system temp dir unless told otherwise), removed on
/// drop.
struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    fn create(label: &str) -> Result<Self> {
        Self::create_in(&std::env::temp_dir(), label)
    }

    /// A scratch directory inside `parent` (created when missing). The path is made absolute:
    /// Tachyon resolves a relative `data_dir` against its config file's folder.
    fn create_in(parent: &Path, label: &str) -> Result<Self> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let unique = COUNTER.fetch_add(1, Ordering::Relaxed);
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        let parent =
            fs::canonicalize(parent).with_context(|| format!("resolving {}", parent.display()))?;
        let path = parent.join(format!(
            "tachyon-bench-{}-{label}-{unique}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path })
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// A child server process whose output goes to files in its scratch dir (a pipe nobody reads
/// could fill up and stall a chatty server mid-run).
struct ServerProcess {
    name: &'static str,
    child: Option<Child>,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
    // Declared last so it is removed after the child is gone.
    _scratch: ScratchDir,
}

impl ServerProcess {
    fn spawn(
        name: &'static str,
        mut command: Command,
        scratch: ScratchDir,
        core: Option<usize>,
    ) -> Result<Self> {
        let stdout_path = scratch.path.join("stdout.log");
        let stderr_path = scratch.path.join("stderr.log");
        command
            .stdin(Stdio::null())
            .stdout(File::create(&stdout_path)?)
            .stderr(File::create(&stderr_path)?);
        prepare_child(&mut command, core);
        let program = command.get_program().to_owned();
        let child = command.spawn().with_context(|| {
            format!(
                "starting {name} ({}): is it built/installed? (see --tachyon-bin / --nats-bin)",
                Path::new(&program).display()
            )
        })?;
        Ok(Self {
            name,
            child: Some(child),
            stdout_path,
            stderr_path,
            _scratch: scratch,
        })
    }

    /// Polls until `address` accepts a TCP connection; fails with the server's stderr when the
    /// process exits first or `timeout` passes.
    fn wait_until_accepting(&mut self, address: SocketAddr, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.child.as_mut().expect("child present until stopped");
            if let Some(status) = child.try_wait()? {
                bail!("{} exited ({status}) before accepting connections on {address}; its stderr:\n{}", self.name, self.stderr());
            }
            if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let stderr = self.stderr();
                let _ = self.stop();
                bail!("{} did not accept connections on {address} within {timeout:?}; its stderr:\n{stderr}", self.name);
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Polls the server's stdout until it contains `line`; fails like `wait_until_accepting`.
    fn wait_for_stdout_line(&mut self, line: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let stdout = fs::read_to_string(&self.stdout_path).unwrap_or_default();
            if stdout.lines().any(|printed| printed == line) {
                return Ok(());
            }
            let child = self.child.as_mut().expect("child present until stopped");
            if let Some(status) = child.try_wait()? {
                bail!(
                    "{} exited ({status}) before it was ready; its stderr:\n{}",
                    self.name,
                    self.stderr()
                );
            }
            if Instant::now() >= deadline {
                let stderr = self.stderr();
                let _ = self.stop();
                bail!(
                    "{} was not ready within {timeout:?}; its stderr:\n{stderr}",
                    self.name
                );
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Polls `<data_dir>/journal` until the server's spare segments (`spare-*.spare`, the
    /// storage crate's documented file names) are all zero-filled; fails like
    /// `wait_until_accepting`.
    fn wait_for_spare_segments(&mut self, data_dir: &Path, timeout: Duration) -> Result<()> {
        use tachyon_storage::journal::{JOURNAL_DIR_NAME, SPARE_SEGMENTS_DEFAULT};
        let directory = data_dir.join(JOURNAL_DIR_NAME);
        let deadline = Instant::now() + timeout;
        loop {
            let ready = fs::read_dir(&directory).map_or(0, |entries| {
                entries
                    .filter_map(|entry| entry.ok())
                    .filter(|entry| {
                        let name = entry.file_name();
                        let name = name.to_string_lossy();
                        name.starts_with("spare-") && name.ends_with(".spare")
                    })
                    .count()
            });
            if ready >= SPARE_SEGMENTS_DEFAULT {
                return Ok(());
            }
            let child = self.child.as_mut().expect("child present until stopped");
            if let Some(status) = child.try_wait()? {
                bail!(
                    "{} exited ({status}) while preparing its journal; its stderr:\n{}",
                    self.name,
                    self.stderr()
                );
            }
            if Instant::now() >= deadline {
                let stderr = self.stderr();
                let _ = self.stop();
                bail!(
                    "{}'s journal had {ready} of {SPARE_SEGMENTS_DEFAULT} spare segments ready in {} \
                     after {timeout:?}: the disk is too slow or full; its stderr:\n{stderr}",
                    self.name,
                    directory.display()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_path)
            .unwrap_or_else(|error| format!("(unreadable: {error})"))
    }

    /// SIGTERM, wait up to [`SHUTDOWN_TIMEOUT`], then SIGKILL.
    fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        let pid = libc::pid_t::try_from(child.id()).map_err(|_| anyhow!("pid out of range"))?;
        // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped), so it cannot name
        // another process; it has no memory-safety preconditions.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + SHUTDOWN_TIMEOUT;
        while Instant::now() < deadline {
            if child.try_wait()?.is_some() {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(10));
        }
        child.kill()?;
        child.wait()?;
        bail!(
            "{} ignored SIGTERM for {SHUTDOWN_TIMEOUT:?} and was killed",
            self.name
        )
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Prepares the child between fork and exec:
///
/// - its own session (`setsid`): on kernels with `sched_autogroup_enabled` every session is a
///   scheduling group, and a server left in the benchmark's group would share that group's weight
///   with the spinning publisher, so any background load (a compiler in another session) delays
///   its wake-ups by whole time slices; in its own group every server competes on equal terms;
/// - SIGTERM when the benchmark dies (`PR_SET_PDEATHSIG`), since leaving the session also means
///   Ctrl-C no longer reaches it;
/// - pinned to `core`, so every thread it starts later inherits the mask (setting it after spawn
///   would miss threads started at once, as Go does).
fn prepare_child(command: &mut Command, core: Option<usize>) {
    // SAFETY: the closure runs in the forked child before exec and only makes the syscalls
    // setsid(2), prctl(2) and sched_setaffinity(2), all async-signal-safe, on a stack-allocated
    // cpu_set_t; it does not allocate or take locks. CPU_SET is guarded against cores outside
    // the set's range.
    unsafe {
        command.pre_exec(move || {
            libc::setsid();
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            if let Some(core) = core.filter(|&core| core < libc::CPU_SETSIZE as usize) {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(core, &mut set);
                // Failure (a missing core) leaves the server unpinned, which the preflight
                // check has already ruled out; not worth aborting the exec for.
                libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_names_parse() {
        assert_eq!(SystemKind::parse("tachyon").unwrap(), SystemKind::Tachyon);
        assert_eq!(SystemKind::parse(" relay").unwrap(), SystemKind::Relay);
        assert_eq!(SystemKind::parse("nats").unwrap(), SystemKind::Nats);
        assert!(SystemKind::parse("kafka").is_err());
    }

    #[test]
    fn tachyon_config_carries_the_outbound_limit() {
        let params = ServerParams {
            client_outbound_bytes_max: 16 * 1024 * 1024,
            ..ServerParams::default()
        };
        let text = tachyon_config(
            Path::new("/tmp/x"),
            "127.0.0.1:9007".parse().unwrap(),
            &params,
        );
        assert!(
            text.contains("[limits]\nclient_outbound_bytes_max = 16777216\n"),
            "{text}"
        );
        assert!(text.contains("amps_tcp = \"127.0.0.1:9007\""), "{text}");
        assert!(!text.contains("sow"), "{text}");
    }

    #[test]
    fn tachyon_config_carries_the_sow_topic() {
        let params = ServerParams {
            sow_topic: Some("bench-sow"),
            ..ServerParams::default()
        };
        let text = tachyon_config(
            Path::new("/tmp/x"),
            "127.0.0.1:9007".parse().unwrap(),
            &params,
        );
        assert!(
            text.ends_with("\n[[sow.topics]]\ntopic = \"bench-sow\"\nkey_fields = [\"/id\"]\n"),
            "{text}"
        );
    }

    #[test]
    fn tachyon_config_carries_the_journal_topic() {
        let params = ServerParams {
            journal_topic: Some("bench.persisted"),
            ..ServerParams::default()
        };
        let text = tachyon_config(
            Path::new("/data"),
            "127.0.0.1:9007".parse().unwrap(),
            &params,
        );
        assert!(
            text.ends_with("\n[journal]\ntopics = [\"bench.persisted\"]\n"),
            "{text}"
        );
        assert!(text.starts_with("data_dir = \"/data\"\n"), "{text}");
    }

    #[test]
    fn journal_backend_is_read_from_the_start_up_log() {
        let stderr = "2026-11-22T02:43:06Z  INFO journal: recovered records=0\n\
            2026-11-22T02:43:06Z  INFO journal: open dir=./data/journal backend=io_uring+O_DIRECT \
            (registered buffer: true) crc32c=\"sse4.2\" last_sequence=0\n";
        assert_eq!(
            journal_backend_logged(stderr).as_deref(),
            Some("io_uring+O_DIRECT (registered buffer: true)")
        );
        assert_eq!(journal_backend_logged("INFO listening\n"), None);
    }

    #[test]
    fn memory_file_systems_are_refused_for_the_journal() {
        let disk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
        check_real_disk(&disk).unwrap();
        // /dev/shm is tmpfs on Linux; skip the refusal check where it is not.
        let shm = Path::new("/dev/shm");
        if shm.is_dir() && statfs_kind(shm).ok() == Some(TMPFS_MAGIC) {
            let error = check_real_disk(shm).unwrap_err();
            assert!(format!("{error:#}").contains("tmpfs"), "{error:#}");
            assert!(format!("{error:#}").contains("--journal-dir"), "{error:#}");
        }
    }

    #[test]
    fn scratch_dirs_elsewhere_are_absolute_and_removed() {
        let scratch = ScratchDir::create_in(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
            "test",
        )
        .unwrap();
        let path = scratch.path.clone();
        assert!(path.is_absolute() && path.is_dir(), "{}", path.display());
        drop(scratch);
        assert!(!path.exists());
    }

    #[test]
    fn missing_binary_fails_with_a_hint() {
        let options = SystemOptions {
            tachyon_binary: PathBuf::from("/nonexistent/tachyon"),
            nats_binary: PathBuf::from("/nonexistent/nats-server"),
            relay_binary: None,
            server_core: None,
            journal_dir: "unused".into(),
        };
        let error = start(SystemKind::Tachyon, &options)
            .err()
            .expect("must fail");
        assert!(format!("{error:#}").contains("--tachyon-bin"), "{error:#}");
    }

    #[test]
    fn server_that_exits_early_reports_its_stderr() {
        let scratch = ScratchDir::create("test").unwrap();
        let mut command = Command::new("sh");
        command.args(["-c", "echo boom-from-server >&2; exit 3"]);
        let mut process = ServerProcess::spawn("fake", command, scratch, None).unwrap();
        let address = free_loopback_address().unwrap();
        let error = process
            .wait_until_accepting(address, Duration::from_secs(5))
            .unwrap_err();
        assert!(
            format!("{error:#}").contains("boom-from-server"),
            "{error:#}"
        );
    }
}
