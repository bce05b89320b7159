//! What the control-plane HTTP threads (admin API, JSON Lines) share: pinning to the control
//! core and a current-thread tokio runtime that owns the already-bound listener.

use tachyon_numa::CoreId;
use tracing::{info, warn};

/// Pins the calling thread to the control core when there is one. The control plane is not
/// latency-critical, so failing to pin is logged, not fatal; an unpinned thread still inherits
/// its creator's affinity, which keeps it off the shard cores when the binary pinned its main
/// thread to the control core.
pub(crate) fn pin(what: &str, core: Option<CoreId>) {
    if let Some(core) = core {
        match tachyon_numa::pin_current_thread(core) {
            Ok(()) => info!(
                core = core.0,
                "{what} thread pinned to the control-plane core"
            ),
            Err(error) => warn!("{what} thread runs unpinned: {error}"),
        }
    }
}

/// A current-thread tokio runtime for one control-plane thread.
pub(crate) fn runtime(thread_name: &str) -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .thread_name(thread_name)
        .build()
        .map_err(|error| format!("cannot create the tokio runtime: {error} (check `ulimit -n`)"))
}

/// Hands a listener bound before the thread started (so bind errors reach the caller) to the
/// runtime; call inside the runtime.
pub(crate) fn adopt(listener: std::net::TcpListener) -> Result<tokio::net::TcpListener, String> {
    tokio::net::TcpListener::from_std(listener)
        .map_err(|error| format!("cannot register the listening socket with the runtime: {error}"))
}

/// The text of a panic payload (a control thread that died reports it to its starter).
pub(crate) fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        format!("panicked: {text}")
    } else if let Some(text) = panic.downcast_ref::<String>() {
        format!("panicked: {text}")
    } else {
        "panicked".into()
    }
}

/// What to do about a bind error of a control-plane listener configured as `[<table>] address`.
pub(crate) fn bind_hint(error: &std::io::Error, table: &str) -> String {
    match error.kind() {
        std::io::ErrorKind::AddrInUse => format!(
            " (another process is listening there: stop it or set [{table}] address to another port)"
        ),
        std::io::ErrorKind::PermissionDenied => {
            " (ports below 1024 need root or CAP_NET_BIND_SERVICE)".into()
        }
        std::io::ErrorKind::AddrNotAvailable => " (that address is not on this host: use 0.0.0.0, 127.0.0.1 or one of this host's addresses)".into(),
        _ => String::new(),
    }
}
