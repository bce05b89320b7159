//! The admin API's routes. Each endpoint answers one question and is cheap enough to poll:
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /` | the endpoints, as JSON |
//! | `GET /health` | 200 `{"status":"ready","live":true,"reasons":[]}`, or 503 with reasons |
//! | `GET /health/live` | 200 while the process answers at all (a liveness probe) |
//! | `GET /amps/instance[/path…]` | the statistics tree, or the subtree at the path |
//! | `GET /metrics` | Prometheus text format 0.0.4 |
//! | `GET /dashboard` | an HTML page that polls `/amps/instance` and `/health` from the browser |
//! | `POST /amps/administrator/minidump` | writes a minidump, answers with its path |
//! | `POST /amps/administrator/clients/<id>/disconnect` | disconnects a client (id or logon name) |
//! | `POST /amps/administrator/logging/rotate` | rotates the log file |
//!
//! Anything else is a 404 (or 405 for a known path with another method) with a JSON body that
//! says what exists. Only the `POST` actions change anything; they are POST (not AMPS's GET) so
//! a browser's prefetch or a crawler can never disconnect a client.

use super::dashboard;
use super::snapshot::{client_id, ClientLookup, Snapshot};
use super::{metrics, tree, AdminState};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use std::sync::Arc;

type SharedState = State<Arc<AdminState>>;

/// The endpoints, as listed by `GET /` and by 404 answers.
pub(crate) const ENDPOINTS: [&str; 9] = [
    "/health",
    "POST /amps/administrator/minidump",
    "POST /amps/administrator/clients/<id or name>/disconnect",
    "POST /amps/administrator/logging/rotate",
    "/health/live",
    "/amps/instance",
    "/metrics",
    "/dashboard",
    "/",
];

/// Every route of the admin API.
pub(crate) fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/health", get(health))
        .route("/health/live", get(live))
        .route("/metrics", get(prometheus))
        .route("/dashboard", get(dashboard::page))
        .route(
            "/amps/administrator/minidump",
            axum::routing::post(minidump),
        )
        .route(
            "/amps/administrator/clients/{id}/disconnect",
            axum::routing::post(disconnect),
        )
        .route(
            "/amps/administrator/logging/rotate",
            axum::routing::post(rotate_log),
        )
        .route("/amps", get(tree_root))
        .route("/amps/{*path}", get(subtree))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn index() -> Response {
    json_response(
        StatusCode::OK,
        &json!({ "service": "tachyon admin API", "endpoints": ENDPOINTS }),
    )
}

/// Why the instance is not ready, empty when it is.
pub(crate) fn unready_reasons(state: &AdminState) -> Vec<String> {
    let mut reasons = Vec::new();
    if state.is_shutting_down() {
        reasons.push("shutting down: the instance is draining its connections".to_string());
    }
    let journal = &state.context.journal;
    if journal.has_failed() {
        reasons.push(format!(
            "journal failed: an I/O error stopped the transaction log (last sequence {}, durable up to {}); journaled publishes are refused until a restart; the server log names the file and error",
            crate::stats::ShardStats::get(&journal.last_sequence),
            crate::stats::ShardStats::get(&journal.durable_up_to),
        ));
    }
    if state.context.stats.is_empty() {
        reasons.push("no data-plane shard is running".to_string());
    }
    reasons
}

async fn health(State(state): SharedState) -> Response {
    let reasons = unready_reasons(&state);
    let (status, word) = if reasons.is_empty() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not_ready")
    };
    json_response(
        status,
        &json!({ "status": word, "live": true, "reasons": reasons }),
    )
}

/// The admin action that writes a minidump (thread states and backtraces, no message
/// contents) into `[watchdog] minidump_dir` and answers with its path.
async fn minidump(State(state): SharedState, headers: HeaderMap) -> Response {
    if let Some(refused) = refuse_cross_site(&headers) {
        return refused;
    }
    let folder = state.context.config.watchdog.minidump_dir.clone();
    let written = tokio::task::spawn_blocking(move || {
        crate::watchdog::write_minidump(&folder, "admin request", "requested over the admin API")
    })
    .await
    .ok()
    .flatten();
    match written {
        Some(path) => json_response(
            StatusCode::OK,
            &json!({"status": "written", "path": path.display().to_string()}),
        ),
        None => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({"status": "failed", "error": "the minidump could not be written; the server log says why"}),
        ),
    }
}

/// How long the disconnect action waits to see the connection gone before answering 202.
const DISCONNECT_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The admin action that disconnects one client, named by its id (`<shard>.<slot>.<generation>`,
/// as `/amps/instance/clients` lists it) or by its logon name when exactly one client has it.
/// The owning shard closes the connection on its next timer tick and logs why.
async fn disconnect(
    State(state): SharedState,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = refuse_cross_site(&headers) {
        return refused;
    }
    let snapshot = Snapshot::take(&state.context);
    let client = match snapshot.client(&id) {
        Ok(client) => client.clone(),
        Err(lookup) => {
            let (status, error) = match lookup {
                ClientLookup::Missing => (StatusCode::NOT_FOUND, "no open connection has that id or logon name"),
                ClientLookup::Ambiguous => (StatusCode::CONFLICT, "several connections logged on with that name: use the connection id from /amps/instance/clients"),
            };
            let known: Vec<Value> = snapshot
                .clients
                .iter()
                .map(|client| json!({"id": client.id, "name": client.identity.name}))
                .collect();
            return json_response(
                status,
                &json!({"error": error, "client": id, "clients": known}),
            );
        }
    };
    let Some(stats) = state
        .context
        .boards
        .iter()
        .flat_map(|board| board.clients())
        .find(|stats| client_id(stats) == client.id)
    else {
        return json_response(
            StatusCode::OK,
            &json!({"status": "disconnected", "id": client.id, "name": client.identity.name}),
        );
    };
    stats.request_disconnect();
    tracing::info!(client = %client.identity.name, id = %client.id, peer = %client.peer, "admin API: disconnect requested");
    drop(stats);
    let deadline = tokio::time::Instant::now() + DISCONNECT_WAIT;
    loop {
        let open = state
            .context
            .boards
            .iter()
            .flat_map(|board| board.clients())
            .any(|stats| client_id(&stats) == client.id);
        if !open {
            return json_response(
                StatusCode::OK,
                &json!({"status": "disconnected", "id": client.id, "name": client.identity.name}),
            );
        }
        if tokio::time::Instant::now() >= deadline {
            return json_response(
                StatusCode::ACCEPTED,
                &json!({"status": "requested", "id": client.id, "name": client.identity.name,
                        "detail": "the shard is still draining the connection; it closes without reading more"}),
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The admin action that rotates the log file (as SIGUSR1 does).
async fn rotate_log(State(state): SharedState, headers: HeaderMap) -> Response {
    if let Some(refused) = refuse_cross_site(&headers) {
        return refused;
    }
    let Some(rotate) = state.context.rotate_log.clone() else {
        return json_response(
            StatusCode::CONFLICT,
            &json!({"status": "not_rotated", "error": "no log file is configured ([logging] file or --log-file); the console log cannot be rotated"}),
        );
    };
    match tokio::task::spawn_blocking(move || rotate()).await {
        Ok(Ok(detail)) => json_response(
            StatusCode::OK,
            &json!({"status": "rotated", "detail": detail}),
        ),
        Ok(Err(error)) => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({"status": "failed", "error": error}),
        ),
        Err(error) => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({"status": "failed", "error": format!("the rotation task failed: {error}")}),
        ),
    }
}

/// A 403 for an action that a web page (not the operator's curl or script) sent.
///
/// Any page the operator's browser has open can POST to the loopback admin port; browsers mark
/// such requests with `Sec-Fetch-Site` and an `Origin` naming the page, while curl and scripts
/// send neither. An `Origin` is accepted only when it names this admin API itself.
fn refuse_cross_site(headers: &HeaderMap) -> Option<Response> {
    let text = |name| headers.get(name).and_then(|value| value.to_str().ok());
    let foreign_site = matches!(text("sec-fetch-site"), Some("cross-site" | "same-site"));
    let foreign_origin = text("origin").is_some_and(|origin| {
        let host = origin.split_once("://").map_or(origin, |(_, host)| host);
        Some(host) != text("host")
    });
    (foreign_site || foreign_origin).then(|| {
        json_response(
            StatusCode::FORBIDDEN,
            &json!({"error": "administrative actions are refused when a web page from another origin sends them; use curl or a script"}),
        )
    })
}

async fn live() -> Response {
    json_response(StatusCode::OK, &json!({ "live": true }))
}

async fn prometheus(State(state): SharedState) -> Response {
    let snapshot = Snapshot::take(&state.context);
    let body = metrics::render(&snapshot, state.context.version);
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, metrics::CONTENT_TYPE),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

async fn tree_root(State(state): SharedState) -> Response {
    answer_tree(&state, "")
}

async fn subtree(State(state): SharedState, Path(path): Path<String>) -> Response {
    answer_tree(&state, &path)
}

/// The subtree at `path` below `/amps`, or a 404 naming what exists where the path went wrong.
fn answer_tree(state: &AdminState, path: &str) -> Response {
    let snapshot = Snapshot::take(&state.context);
    let root = tree::root(state, &snapshot);
    match tree::lookup(&root, path) {
        Ok(node) => json_response(StatusCode::OK, node),
        Err(missing) => {
            let mut found = String::from("/amps");
            for segment in &missing.found {
                found.push('/');
                found.push_str(segment);
            }
            json_response(
                StatusCode::NOT_FOUND,
                &json!({
                    "error": "not found",
                    "path": format!("/amps/{}", path.trim_start_matches('/')),
                    "found_up_to": found,
                    "children": missing.children,
                }),
            )
        }
    }
}

async fn not_found(uri: Uri) -> Response {
    json_response(
        StatusCode::NOT_FOUND,
        &json!({ "error": "not found", "path": uri.path(), "endpoints": ENDPOINTS }),
    )
}

async fn method_not_allowed(uri: Uri) -> Response {
    // The administrator's actions change the instance and take POST; everything else only reads.
    let allowed = if uri.path().starts_with("/amps/administrator/") {
        "POST"
    } else {
        "GET, HEAD"
    };
    let mut response = json_response(
        StatusCode::METHOD_NOT_ALLOWED,
        &json!({
            "error": "method not allowed",
            "path": uri.path(),
            "allowed": allowed.split(", ").collect::<Vec<_>>(),
        }),
    );
    response
        .headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static(allowed));
    response
}

/// A JSON body, pretty-printed for people reading it with curl.
fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut text = serde_json::to_string_pretty(body).unwrap_or_else(|error| {
        format!("{{\"error\":\"cannot render the answer as JSON: {error}\"}}")
    });
    text.push('\n');
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        text,
    )
        .into_response()
}
