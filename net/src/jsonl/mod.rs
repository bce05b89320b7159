//! JSON Lines over HTTP (port 1603): publish, SOW queries and subscriptions for curl and scripts.
//!
//! | route | answer |
//! | --- | --- |
//! | `POST /publish?topic=T` | body: one JSON message per line → one status line per message line |
//! | `POST /sow` | body `{"topic","filter","top_n","orderby"}` → one record per line |
//! | `GET /subscribe?topic=T&filter=F` | a chunked stream, one message per line, until the client goes away |
//!
//! It runs on one thread of its own, `tachyon-jsonl`, pinned to the control-plane core when the
//! placement plan reserved one, with a small current-thread tokio runtime serving axum. It
//! reaches the data plane as an ordinary AMPS client over loopback TCP to the server's AMPS port
//! (one connection per HTTP request, logged on as `jsonl-<n>`), so filters, errors and failure
//! reasons are exactly the binary protocol's and the data plane needs no code for it. It must
//! never run on a data-plane core, and it holds message contents only while passing them on.
//!
//! `mod.rs` starts and stops the thread; `http` routes requests and runs the streams;
//! `amps_client` is the loopback AMPS client; `lines` holds the bounds and the pure parsing.

mod amps_client;
mod http;
mod lines;
#[cfg(test)]
mod tests;

use lines::Limits;
use std::future::IntoFuture;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::AtomicU64;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;
use tachyon_numa::CoreId;
use thiserror::Error;
use tokio::sync::{watch, Semaphore};
use tracing::{info, warn};

/// The name of the JSON Lines thread, as `top -H`, `/proc/<pid>/task/*/comm` and minidumps show it.
pub const THREAD_NAME: &str = "tachyon-jsonl";

/// How long a stopping server lets open requests finish before it drops their connections.
/// Subscription streams end at once when it stops; this bounds publishes and SOW queries.
const DRAIN_DEADLINE: Duration = Duration::from_secs(2);

/// What the JSON Lines server needs; built by the binary after the data plane started.
pub struct JsonlContext {
    /// Where it listens (port 0 picks a free port; see [`JsonlServer::address`]).
    pub address: SocketAddr,
    /// The data plane's bound AMPS TCP address (an unspecified IP such as 0.0.0.0 is reached
    /// over loopback).
    pub amps_address: SocketAddr,
    /// The control-plane core from the placement plan; `None` runs the thread unpinned.
    pub control_core: Option<CoreId>,
}

/// The JSON Lines server could not start.
#[derive(Debug, Error)]
pub enum JsonlError {
    /// The address cannot be bound.
    #[error("JSON Lines server cannot listen on {address}: {source}{hint}")]
    Bind {
        /// The configured address.
        address: SocketAddr,
        /// The OS error.
        source: std::io::Error,
        /// What to do about it.
        hint: String,
    },
    /// The thread or its tokio runtime could not be created.
    #[error("JSON Lines server on {address} could not start its thread: {source} (the process may be out of threads or file descriptors: check `ulimit -u` and `ulimit -n`)")]
    Thread {
        /// The bound address.
        address: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The thread stopped before it was ready to serve.
    #[error("JSON Lines server on {address} stopped during start-up: {message}")]
    Startup {
        /// The bound address.
        address: SocketAddr,
        /// What it reported.
        message: String,
    },
}

/// A running JSON Lines server; [`JsonlServer::stop`] (or dropping it) ends its streams, shuts
/// it down and joins its thread.
pub struct JsonlServer {
    address: SocketAddr,
    stopping: Option<watch::Sender<bool>>,
    thread: Option<JoinHandle<()>>,
}

/// What the request handlers share.
pub(crate) struct JsonlState {
    /// Where the data plane's AMPS port is reached.
    pub(crate) amps_address: SocketAddr,
    /// Bounds on requests.
    pub(crate) limits: Limits,
    /// One permit per open subscription stream.
    pub(crate) subscriptions: Arc<Semaphore>,
    /// Becomes `true` when the server stops: streams end.
    pub(crate) stopping: watch::Receiver<bool>,
    /// The number of the last `jsonl-<n>` client name handed out.
    pub(crate) clients: AtomicU64,
}

/// Binds the address, then serves JSON Lines on the `tachyon-jsonl` thread.
///
/// Returns once the thread is ready to serve; a bind failure is returned before any thread starts.
pub fn start(context: JsonlContext) -> Result<JsonlServer, JsonlError> {
    start_with_limits(context, Limits::DEFAULT)
}

/// [`start`] with other bounds (tests use small ones).
pub(crate) fn start_with_limits(
    context: JsonlContext,
    limits: Limits,
) -> Result<JsonlServer, JsonlError> {
    let requested = context.address;
    let listener = std::net::TcpListener::bind(requested).map_err(|source| JsonlError::Bind {
        address: requested,
        hint: crate::control_thread::bind_hint(&source, "jsonl"),
        source,
    })?;
    let address = listener
        .local_addr()
        .and_then(|address| listener.set_nonblocking(true).map(|()| address))
        .map_err(|source| JsonlError::Bind {
            address: requested,
            hint: String::new(),
            source,
        })?;
    let (stop_sender, stopping) = watch::channel(false);
    let state = Arc::new(JsonlState {
        amps_address: reachable(context.amps_address),
        limits,
        subscriptions: Arc::new(Semaphore::new(limits.subscriptions_max)),
        stopping,
        clients: AtomicU64::new(0),
    });
    let control_core = context.control_core;
    let (ready_sender, ready_receiver) = mpsc::channel::<Result<(), String>>();
    let thread = std::thread::Builder::new()
        .name(THREAD_NAME.into())
        .spawn(move || serve(state, address, control_core, listener, ready_sender))
        .map_err(|source| JsonlError::Thread { address, source })?;
    match ready_receiver.recv() {
        Ok(Ok(())) => {}
        Ok(Err(message)) => {
            let _ = thread.join();
            return Err(JsonlError::Startup { address, message });
        }
        Err(mpsc::RecvError) => {
            let message = match thread.join() {
                Err(panic) => crate::control_thread::panic_message(&panic),
                Ok(()) => "the thread exited without a word".into(),
            };
            return Err(JsonlError::Startup { address, message });
        }
    }
    info!(%address, amps = %context.amps_address, "JSON Lines server listening (POST /publish, POST /sow, GET /subscribe)");
    Ok(JsonlServer {
        address,
        stopping: Some(stop_sender),
        thread: Some(thread),
    })
}

impl JsonlServer {
    /// The address it listens on (the real port when the context asked for port 0).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Stops serving: subscription streams end at once, other requests get two seconds to
    /// finish, then the thread is joined.
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        if let Some(stopping) = self.stopping.take() {
            // Dropping the sender would also stop everything; sending says it on purpose.
            let _ = stopping.send(true);
        }
        if let Some(thread) = self.thread.take() {
            if let Err(panic) = thread.join() {
                warn!(
                    "JSON Lines thread panicked while stopping: {}",
                    crate::control_thread::panic_message(&panic)
                );
            }
        }
    }
}

impl Drop for JsonlServer {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// The address to connect to for `bound`: a wildcard bind is reached over loopback.
fn reachable(bound: SocketAddr) -> SocketAddr {
    let ip = match bound.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, bound.port())
}

/// The body of the thread: pin, build the runtime, report ready, serve until told to stop.
fn serve(
    state: Arc<JsonlState>,
    address: SocketAddr,
    control_core: Option<CoreId>,
    listener: std::net::TcpListener,
    ready: mpsc::Sender<Result<(), String>>,
) {
    crate::control_thread::pin("JSON Lines", control_core);
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
        let mut stopping = state.stopping.clone();
        let mut draining = state.stopping.clone();
        let router = http::router(state);
        let server = tokio::spawn(
            axum::serve(
                listener,
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move {
                // An error means the JsonlServer was dropped: stop as well.
                let _ = draining.wait_for(|stopping| *stopping).await;
            })
            .into_future(),
        );
        let _ = ready.send(Ok(()));
        let _ = stopping.wait_for(|stopping| *stopping).await;
        match tokio::time::timeout(DRAIN_DEADLINE, server).await {
            Ok(Ok(Ok(()))) => info!(%address, "JSON Lines server stopped"),
            Ok(Ok(Err(error))) => {
                warn!(%address, "JSON Lines server stopped with an error: {error}")
            }
            Ok(Err(error)) => warn!(%address, "JSON Lines server task failed: {error}"),
            Err(_) => warn!(
                %address,
                deadline_ms = DRAIN_DEADLINE.as_millis() as u64,
                "JSON Lines requests still open at the stop deadline; closing their connections"
            ),
        }
    });
}
