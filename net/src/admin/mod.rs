//! The admin HTTP API (port 1610): health, the `/amps/instance` statistics tree and Prometheus
//! `/metrics`.
//!
//! It runs on one thread of its own, `tachyon-admin`, pinned to the control-plane core when the
//! placement plan reserved one, with a small current-thread tokio runtime serving axum. It only
//! reads what the shards publish (their [`ShardStats`] atomics and the journal's
//! [`JournalShared`]) with relaxed loads, so polling it never takes a lock a shard could wait on.
//! It must never run on a data-plane core, never block a shard, and never hold message contents.
//!
//! `mod.rs` starts and stops the thread; `http` routes requests; `snapshot` reads the counters
//! (and the process's memory from `/proc/self/status`) once per request; `tree` renders the JSON tree; `metrics` renders the Prometheus text.

mod dashboard;
mod http;
mod metrics;
mod snapshot;
#[cfg(test)]
mod tests;
mod tree;

use crate::board::ShardBoard;
use crate::config::Config;
use crate::journal::JournalShared;
use crate::stats::ShardStats;
use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};
use tachyon_numa::CoreId;
use thiserror::Error;
use tokio::sync::oneshot;
use tracing::{info, warn};

/// The name of the admin thread, as `top -H`, `/proc/<pid>/task/*/comm` and minidumps show it.
pub const THREAD_NAME: &str = "tachyon-admin";

/// How long a stopping admin server lets open requests finish before it drops their connections.
const DRAIN_DEADLINE: Duration = Duration::from_secs(2);

/// Everything the admin API reports on; built once by the binary after the data plane started.
pub struct AdminContext {
    /// Where the admin API listens (port 0 picks a free port; see [`AdminServer::address`]).
    pub address: SocketAddr,
    /// The control-plane core from the placement plan; `None` runs the thread unpinned.
    pub control_core: Option<CoreId>,
    /// Each shard's counters, indexed by shard number.
    pub stats: Vec<Arc<ShardStats>>,
    /// Each shard's clients, topics and routing latency, indexed by shard number.
    pub boards: Vec<Arc<ShardBoard>>,
    /// Rotates the log file (the admin action); `None` when the binary logs to no file.
    pub rotate_log: Option<RotateLog>,
    /// The journal's state shared with the shards.
    pub journal: Arc<JournalShared>,
    /// The effective configuration (after command-line overrides).
    pub config: Arc<Config>,
    /// The placement plan, rendered as text (its `Display`).
    pub placement: String,
    /// When the instance started.
    pub started_at: SystemTime,
    /// The build's version, e.g. `env!("CARGO_PKG_VERSION")`.
    pub version: &'static str,
}

/// The binary's log rotation, for the admin action: `Ok` with what happened, or why it failed.
pub type RotateLog = Arc<dyn Fn() -> Result<String, String> + Send + Sync>;

/// The admin API could not start.
#[derive(Debug, Error)]
pub enum AdminError {
    /// The admin address cannot be bound.
    #[error("admin API cannot listen on {address}: {source}{hint}")]
    Bind {
        /// The configured address.
        address: SocketAddr,
        /// The OS error.
        source: std::io::Error,
        /// What to do about it.
        hint: String,
    },
    /// The admin thread or its tokio runtime could not be created.
    #[error("admin API on {address} could not start its thread: {source} (the process may be out of threads or file descriptors: check `ulimit -u` and `ulimit -n`)")]
    Thread {
        /// The bound address.
        address: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The admin thread stopped before it was ready to serve.
    #[error("admin API on {address} stopped during start-up: {message}")]
    Startup {
        /// The bound address.
        address: SocketAddr,
        /// What it reported.
        message: String,
    },
}

/// A running admin API; [`AdminServer::stop`] (or dropping it) shuts it down and joins its thread.
pub struct AdminServer {
    address: SocketAddr,
    shutting_down: Arc<AtomicBool>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// What the request handlers share: the context plus the admin server's own state.
pub(crate) struct AdminState {
    /// What the binary handed over.
    pub(crate) context: AdminContext,
    /// The address actually bound (the real port when the context asked for port 0).
    pub(crate) address: SocketAddr,
    /// Set when the instance is stopping; `/health` then answers 503.
    pub(crate) shutting_down: Arc<AtomicBool>,
}

impl AdminState {
    /// Whether the instance said it is stopping.
    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }
}

/// Binds the admin address, then serves the admin API on the `tachyon-admin` thread.
///
/// Returns once the thread is ready to serve; a bind failure is returned before any thread starts.
pub fn start(context: AdminContext) -> Result<AdminServer, AdminError> {
    let requested = context.address;
    let listener = std::net::TcpListener::bind(requested).map_err(|source| AdminError::Bind {
        address: requested,
        hint: crate::control_thread::bind_hint(&source, "admin"),
        source,
    })?;
    let address = listener
        .local_addr()
        .and_then(|address| listener.set_nonblocking(true).map(|()| address))
        .map_err(|source| AdminError::Bind {
            address: requested,
            hint: String::new(),
            source,
        })?;
    let shutting_down = Arc::new(AtomicBool::new(false));
    let state = Arc::new(AdminState {
        context,
        address,
        shutting_down: shutting_down.clone(),
    });
    let (stop_sender, stop_receiver) = oneshot::channel::<()>();
    let (ready_sender, ready_receiver) = mpsc::channel::<Result<(), String>>();
    let thread = std::thread::Builder::new()
        .name(THREAD_NAME.into())
        .spawn(move || serve(state, listener, stop_receiver, ready_sender))
        .map_err(|source| AdminError::Thread { address, source })?;
    match ready_receiver.recv() {
        Ok(Ok(())) => {}
        Ok(Err(message)) => {
            let _ = thread.join();
            return Err(AdminError::Startup { address, message });
        }
        Err(mpsc::RecvError) => {
            let message = match thread.join() {
                Err(panic) => crate::control_thread::panic_message(&panic),
                Ok(()) => "the thread exited without a word".into(),
            };
            return Err(AdminError::Startup { address, message });
        }
    }
    info!(%address, "admin API listening (/health, /amps/instance, /metrics)");
    Ok(AdminServer {
        address,
        shutting_down,
        stop: Some(stop_sender),
        thread: Some(thread),
    })
}

impl AdminServer {
    /// The address the admin API listens on (the real port when the context asked for port 0).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Marks the instance as stopping: from now on `/health` answers 503 with reason
    /// `shutting down`, so load balancers stop sending work while the shards drain.
    pub fn set_shutting_down(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }

    /// Stops serving: open requests get two seconds to finish, then the thread is joined.
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        // Dropping the sender is the stop signal; sending first makes the intent explicit.
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            if let Err(panic) = thread.join() {
                warn!(
                    "admin thread panicked while stopping: {}",
                    crate::control_thread::panic_message(&panic)
                );
            }
        }
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// The body of the admin thread: pin, build the runtime, report ready, serve until told to stop.
fn serve(
    state: Arc<AdminState>,
    listener: std::net::TcpListener,
    stop: oneshot::Receiver<()>,
    ready: mpsc::Sender<Result<(), String>>,
) {
    crate::control_thread::pin("admin", state.context.control_core);
    let runtime = match crate::control_thread::runtime(THREAD_NAME) {
        Ok(runtime) => runtime,
        Err(message) => {
            let _ = ready.send(Err(message));
            return;
        }
    };
    runtime.block_on(async move {
        let listener = match crate::control_thread::adopt(listener) {
            Ok(listener) => listener,
            Err(message) => {
                let _ = ready.send(Err(message));
                return;
            }
        };
        let address = state.address;
        let router = http::router(state);
        let (drain_sender, drain_receiver) = oneshot::channel::<()>();
        let server = tokio::spawn(
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = drain_receiver.await;
                })
                .into_future(),
        );
        let _ = ready.send(Ok(()));
        // A dropped sender (the AdminServer went away) also means stop.
        let _ = stop.await;
        let _ = drain_sender.send(());
        match tokio::time::timeout(DRAIN_DEADLINE, server).await {
            Ok(Ok(Ok(()))) => info!(%address, "admin API stopped"),
            Ok(Ok(Err(error))) => warn!(%address, "admin API stopped with an error: {error}"),
            Ok(Err(error)) => warn!(%address, "admin API task failed: {error}"),
            Err(_) => warn!(
                %address,
                deadline_ms = DRAIN_DEADLINE.as_millis() as u64,
                "admin API requests still open at the stop deadline; closing their connections"
            ),
        }
    });
}
