//! Starting and stopping the data plane: one pinned glommio executor per shard.
//!
//! Start-up binds the AMPS port once without SO_REUSEPORT to detect another process on it (and to
//! resolve port 0), then every shard binds it with SO_REUSEPORT so the kernel spreads new
//! connections across shards. A shard reports ready only after its listener is bound; a shard
//! that cannot start stops the others and the error names the likely cause. Stopping sets one
//! flag; each shard stops accepting, lets its connections send what is queued, and exits.

use crate::board::ShardBoard;
use crate::config::Config;
use crate::journal::{JournalService, JournalShared, ShardJournal};
use crate::mesh::MeshBuilders;
use crate::shard::Shard;
use crate::stats::ShardStats;
use glommio::net::TcpListener;
use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tachyon_core::ids::ShardId;
use tachyon_numa::{pin_current_thread, PlacementPlan};
use tachyon_storage::journal::Journal;
use thiserror::Error;
use tracing::{error, info, warn};

/// How often a shard checks heartbeats, logon deadlines and the stop flag.
const TICK: Duration = Duration::from_millis(100);

/// How often the journal's shard applies the retention limits.
const RETENTION_INTERVAL: Duration = Duration::from_secs(5);

/// How long a stopping shard waits for its connections to drain before it exits anyway.
const DRAIN_DEADLINE: Duration = Duration::from_secs(3);

/// The data plane could not start.
#[derive(Debug, Error)]
pub enum StartError {
    /// The AMPS port cannot be bound.
    #[error("cannot listen on {address}: {source}{hint}")]
    Bind {
        /// The configured address.
        address: SocketAddr,
        /// The OS error.
        source: std::io::Error,
        /// What to do about it.
        hint: &'static str,
    },
    /// A shard's executor could not be created (io_uring setup, memory registration).
    #[error("shard {shard} could not start: {message}. io_uring needs locked memory: check `ulimit -l` (runtime.io_memory_bytes = {io_memory_bytes} per shard must fit) and `sysctl kernel.io_uring_disabled` (must be 0)")]
    Executor {
        /// Which shard.
        shard: usize,
        /// glommio's error.
        message: String,
        /// The configured registered memory per shard.
        io_memory_bytes: usize,
    },
    /// A shard stopped before reporting ready.
    #[error("shard {shard} failed during start-up: {message}")]
    Shard {
        /// Which shard.
        shard: usize,
        /// What it reported.
        message: String,
    },
}

/// A running data plane.
pub struct RunningServer {
    handles: Vec<ExecutorJoinHandle<()>>,
    shutdown: Arc<AtomicBool>,
    /// The bound AMPS TCP address (the real port when the config asked for port 0).
    pub amps_address: SocketAddr,
    /// Each shard's counters.
    pub stats: Vec<Arc<ShardStats>>,
    /// Each shard's clients, topics and routing latency.
    pub boards: Vec<Arc<ShardBoard>>,
    /// What every thread may read about the transaction log.
    pub journal: Arc<JournalShared>,
}

fn bind_hint(error: &std::io::Error) -> &'static str {
    match error.kind() {
        std::io::ErrorKind::AddrInUse => " (another process is listening there: stop it or set [transport] amps_tcp to another port)",
        std::io::ErrorKind::PermissionDenied => " (ports below 1024 need root or CAP_NET_BIND_SERVICE)",
        std::io::ErrorKind::AddrNotAvailable => " (that address is not on this host)",
        _ => "",
    }
}

/// Resolves the address the shards will share, failing if another process holds the port.
fn probe_address(address: SocketAddr) -> Result<SocketAddr, StartError> {
    let probe = std::net::TcpListener::bind(address).map_err(|source| StartError::Bind {
        address,
        hint: bind_hint(&source),
        source,
    })?;
    let resolved = probe.local_addr().map_err(|source| StartError::Bind {
        address,
        hint: "",
        source,
    })?;
    drop(probe);
    Ok(resolved)
}

/// Starts one shard per entry of the placement plan.
pub fn start(config: Config, plan: &PlacementPlan) -> Result<RunningServer, StartError> {
    let config = Arc::new(config);
    let address = probe_address(config.transport.amps_tcp)?;
    let shard_count = plan.shards.len();
    assert!(shard_count >= 1, "a placement plan always has a shard");
    let shutdown = Arc::new(AtomicBool::new(false));
    let meshes =
        (shard_count > 1).then(|| MeshBuilders::new(shard_count, config.limits.mesh_channel_depth));
    let (ready_sender, ready_receiver) = mpsc::channel::<(usize, Result<(), String>)>();
    let journal_shared = Arc::new(JournalShared::default());
    let mut handles = Vec::with_capacity(shard_count);
    let mut stats = Vec::with_capacity(shard_count);
    // Every shard's board exists before any shard starts, so each shard can name any client.
    let boards: Arc<[Arc<ShardBoard>]> = (0..shard_count)
        .map(|_| Arc::new(ShardBoard::default()))
        .collect();

    // Executors are created in shard order; glommio numbers mesh peers by executor creation order,
    // so mesh peer i is shard i (asserted when the mesh is joined).
    for placement in &plan.shards {
        let index = placement.shard;
        let core = placement.core;
        let shard_stats = Arc::new(ShardStats::default());
        stats.push(shard_stats.clone());
        let shard_boards = boards.clone();
        let meshes = meshes.clone();
        let ready = ready_sender.clone();
        let builder = LocalExecutorBuilder::new(Placement::Unbound)
            .name(&format!("tachyon-shard-{index}"))
            .spin_before_park(Duration::from_micros(config.runtime.spin_before_park_us))
            .io_memory(config.runtime.io_memory_bytes);
        let shard_config = config.clone();
        let shard_shutdown = shutdown.clone();
        let shard_journal = journal_shared.clone();
        let spawned = builder.spawn(move || async move {
            if let Err(error) = pin_current_thread(core) {
                warn!(shard = index, "running unpinned: {error}");
            }
            let id = ShardId(index as u16);
            run_shard(
                id,
                shard_count,
                shard_config,
                shard_stats,
                shard_boards,
                shard_shutdown,
                meshes,
                address,
                ready,
                shard_journal,
            )
            .await;
        });
        match spawned {
            Ok(handle) => handles.push(handle),
            Err(error) => {
                shutdown.store(true, Ordering::Release);
                for handle in handles {
                    let _ = handle.join();
                }
                return Err(StartError::Executor {
                    shard: index,
                    message: error.to_string(),
                    io_memory_bytes: config.runtime.io_memory_bytes,
                });
            }
        }
    }
    drop(ready_sender);
    let server = RunningServer {
        handles,
        shutdown,
        amps_address: address,
        stats,
        boards: boards.to_vec(),
        journal: journal_shared,
    };
    for _ in 0..shard_count {
        match ready_receiver.recv() {
            Ok((_, Ok(()))) => {}
            Ok((shard, Err(message))) => {
                server.stop();
                return Err(StartError::Shard { shard, message });
            }
            Err(_) => {
                server.stop();
                return Err(StartError::Shard {
                    shard: 0,
                    message: "a shard exited before reporting".into(),
                });
            }
        }
    }
    info!(address = %address, shards = shard_count, "AMPS TCP transport listening on tcp://{address}/amps/json");
    Ok(server)
}

impl RunningServer {
    /// Stops every shard: stop accepting, send what is queued, close, join the threads.
    pub fn stop(self) {
        self.shutdown.store(true, Ordering::Release);
        for handle in self.handles {
            if let Err(error) = handle.join() {
                error!("shard thread ended with an error: {error}");
            }
        }
        let total = |counter: fn(&ShardStats) -> &std::sync::atomic::AtomicU64| {
            self.stats
                .iter()
                .map(|stats| ShardStats::get(counter(stats)))
                .sum::<u64>()
        };
        info!(
            connections = total(|stats| &stats.connections_accepted),
            frames_in = total(|stats| &stats.frames_in),
            published = total(|stats| &stats.messages_published),
            frames_out = total(|stats| &stats.frames_out),
            refused = total(|stats| &stats.commands_refused),
            protocol_errors = total(|stats| &stats.protocol_errors),
            slow_consumers = total(|stats| &stats.slow_consumers_disconnected),
            "data plane stopped"
        );
    }

    /// Whether a stop was requested.
    pub fn stopping(&self) -> bool {
        self.shutdown.load(Ordering::Acquire)
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_shard(
    id: ShardId,
    shard_count: usize,
    config: Arc<Config>,
    stats: Arc<ShardStats>,
    boards: Arc<[Arc<ShardBoard>]>,
    shutdown: Arc<AtomicBool>,
    meshes: Option<MeshBuilders>,
    address: SocketAddr,
    ready: mpsc::Sender<(usize, Result<(), String>)>,
    journal_shared: Arc<JournalShared>,
) {
    let listener = match bind_shard_listener(address) {
        Ok(listener) => listener,
        Err(error) => {
            let _ = ready.send((
                id.index(),
                Err(format!("binding {address} with SO_REUSEPORT: {error}")),
            ));
            return;
        }
    };
    let (lanes, mut receivers) = match meshes {
        Some(meshes) => {
            let (senders, receivers) = meshes.join().await;
            assert_eq!(
                senders.publish.peer_id(),
                id.index(),
                "mesh peer ids follow shard order"
            );
            (Some(senders), Some(receivers))
        }
        None => (None, None),
    };
    let journal = if id == ShardId(0) && config.journal.enabled() {
        match open_journal(&config, journal_shared.clone()) {
            Ok(service) => Some(service),
            Err(message) => {
                let _ = ready.send((id.index(), Err(message)));
                return;
            }
        }
    } else {
        None
    };
    let shard = Rc::new(Shard::new(
        id,
        shard_count,
        config,
        stats,
        boards,
        shutdown.clone(),
        lanes,
        ShardJournal {
            service: journal,
            shared: journal_shared,
        },
    ));
    if shard.journal.is_some() {
        shard.spawn_journal_completions();
    }
    if let Err(message) = shard
        .load_sow()
        .and_then(|()| shard.rebuild_sow_from_journal())
    {
        let _ = ready.send((id.index(), Err(message)));
        return;
    }
    if let Some(receivers) = receivers.as_mut() {
        shard.serve_lanes(receivers);
    }
    let acceptor = {
        let shard = shard.clone();
        glommio::spawn_local(async move {
            loop {
                match listener.accept().await {
                    Ok(stream) => crate::connection::spawn(shard.clone(), stream),
                    Err(error) => {
                        warn!(shard = %shard.id, "accept failed: {error}");
                        glommio::timer::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        })
    };
    let _ = ready.send((id.index(), Ok(())));
    let mut next_retention = Instant::now() + RETENTION_INTERVAL;
    while !shutdown.load(Ordering::Acquire) {
        shard.stats.last_active_unix_ms.store(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|elapsed| elapsed.as_millis() as u64)
                .unwrap_or(1),
            Ordering::Relaxed,
        );
        glommio::timer::sleep(TICK).await;
        let now = Instant::now();
        for connection in shard.connections() {
            connection.check_timers(&shard, now);
        }
        shard.expire_sow().await;
        shard.snapshot_sow(false);
        shard.post_sow_stats();
        if Instant::now() >= next_retention {
            next_retention = Instant::now() + RETENTION_INTERVAL;
            shard.apply_journal_retention();
        }
    }
    acceptor.cancel().await;
    let connections = shard.connections();
    info!(shard = %id, connections = connections.len(), "stopping: draining connections");
    for connection in &connections {
        connection.close(crate::connection::CloseReason::Shutdown, &shard.stats);
    }
    let deadline = Instant::now() + DRAIN_DEADLINE;
    while !shard.connections().is_empty() && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    let left = shard.connections().len();
    if left > 0 {
        warn!(shard = %id, left, "connections still open at the drain deadline; closing them");
    }
    shard.drain_journal().await;
    shard.snapshot_sow(true);
    drop(receivers);
}

/// Connections waiting to be accepted per shard.
const LISTEN_BACKLOG: i32 = 1024;

/// A shard's listener: SO_REUSEPORT so every shard accepts on the port, and SO_REUSEADDR so the
/// connections it accepts leave TIME_WAIT entries that do not block a restart on the same port
/// (Linux refuses the bind while a TIME_WAIT socket without SO_REUSEADDR holds the address).
fn bind_shard_listener(address: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    use std::os::fd::{FromRawFd, IntoRawFd};
    let socket = Socket::new(
        Domain::for_address(address),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.set_cloexec(true)?;
    socket.bind(&address.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    // SAFETY: a fresh listening socket whose ownership moves to the glommio listener.
    Ok(unsafe { TcpListener::from_raw_fd(socket.into_raw_fd()) })
}

/// Records recovered between progress lines while a long journal is scanned.
const RECOVERY_PROGRESS_RECORDS: u64 = 1_000_000;

/// Opens the transaction log on shard 0, recovering it: every record's CRC is checked, a torn
/// tail is cut, and the last persisted sequence of every guaranteed publisher is rebuilt.
fn open_journal(config: &Config, shared: Arc<JournalShared>) -> Result<JournalService, String> {
    let journal_config = config
        .journal
        .journal_config()
        .map_err(|error| error.to_string())?;
    let started = Instant::now();
    let mut persisted: HashMap<u64, u64> = HashMap::new();
    let mut records = 0u64;
    let mut bytes = 0u64;
    let journal = Journal::open_visiting(&config.data_dir, journal_config, &mut |view| {
        records += 1;
        bytes += (view.record.topic.len() + view.record.headers.len() + view.record.payload.len())
            as u64;
        let publisher = view.record.publisher;
        if publisher.client_sequence != 0 {
            let entry = persisted.entry(publisher.client_name_hash).or_insert(0);
            *entry = (*entry).max(publisher.client_sequence);
        }
        if records.is_multiple_of(RECOVERY_PROGRESS_RECORDS) {
            info!(
                records,
                megabytes = bytes >> 20,
                elapsed_s = started.elapsed().as_secs(),
                "journal recovery in progress"
            );
        }
    })
    .map_err(|error| format!("transaction log: {error}"))?;
    let report = journal.recovery_report();
    info!(
        records,
        publishers = persisted.len(),
        last_sequence = journal.last_sequence(),
        epoch = journal.epoch(),
        backend = %journal.backend_kind(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "transaction log recovered: {report:?}"
    );
    Ok(JournalService::new(journal, persisted, shared))
}
