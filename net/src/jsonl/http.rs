//! The JSON Lines routes, and the tasks that pump each request's loopback AMPS connection into
//! its HTTP response.
//!
//! Every request gets its own AMPS connection, logged on as `jsonl-<n>`, and drops it when the
//! request ends. A request that cannot start (bad parameters, a body over its limit, a command
//! the data plane refused) is answered with an HTTP error and `{"error": "..."}`; once a
//! `200 application/x-ndjson` answer has started, its body is produced by a spawned task through
//! a bounded channel, so a slow HTTP client slows its own AMPS connection and nothing else (past
//! the data plane's per-client budget that connection is dropped as a slow consumer, like any
//! other). A stream cut short by the data plane ends without the chunked terminator, so `curl`
//! reports the transfer as incomplete instead of passing it off as whole.

use super::amps_client::{
    self, AmpsConnection, AmpsError, AmpsReader, ServerFrame, SowQuery, ACK_TIMEOUT,
};
use super::lines::{self, Line, PUBLISH_IN_FLIGHT_MAX};
use super::JsonlState;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures_lite::StreamExt;
use serde_json::json;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit};
use tracing::{debug, info, warn};

type SharedState = State<Arc<JsonlState>>;

/// The media type of every streamed answer.
const NDJSON: &str = "application/x-ndjson";

/// Chunks queued between a request's task and its HTTP response.
const STREAM_CHANNEL_DEPTH: usize = 16;

/// A chunk is sent once it holds this much, or as soon as nothing more is buffered.
const CHUNK_BYTES_TARGET: usize = 64 * 1024;

/// How long a finished subscription stream waits to hand its unsubscribe to the data plane.
const UNSUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(1);

/// The endpoints, as listed by `GET /` and by 404 answers.
const ENDPOINTS: [&str; 4] = [
    "POST /publish?topic=T",
    "POST /sow",
    "GET /subscribe?topic=T&filter=F",
    "GET /",
];

/// Every route.
pub(crate) fn router(state: Arc<JsonlState>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/publish", post(publish))
        .route("/sow", post(sow))
        .route("/subscribe", get(subscribe))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

// ---------------------------------------------------------------------------------- errors

/// A request that could not start: an HTTP status and `{"error": message}`.
#[derive(Debug)]
pub(crate) struct Failure {
    status: StatusCode,
    message: String,
}

impl Failure {
    fn bad_request(message: impl Into<String>) -> Failure {
        Failure {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
}

impl From<AmpsError> for Failure {
    fn from(error: AmpsError) -> Failure {
        let status = match error {
            AmpsError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        Failure {
            status,
            message: error.to_string(),
        }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        json_response(self.status, &json!({ "error": self.message }))
    }
}

fn json_response(status: StatusCode, value: &serde_json::Value) -> Response {
    let mut body = serde_json::to_vec(value).expect("a JSON value serializes");
    body.push(b'\n');
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

async fn index() -> Response {
    json_response(
        StatusCode::OK,
        &json!({ "service": "tachyon JSON Lines", "endpoints": ENDPOINTS }),
    )
}

async fn not_found(uri: Uri) -> Response {
    json_response(
        StatusCode::NOT_FOUND,
        &json!({ "error": format!("no endpoint at {}", uri.path()), "endpoints": ENDPOINTS }),
    )
}

async fn method_not_allowed(uri: Uri) -> Response {
    json_response(
        StatusCode::METHOD_NOT_ALLOWED,
        &json!({ "error": format!("{} does not take this method", uri.path()), "endpoints": ENDPOINTS }),
    )
}

// ----------------------------------------------------------------------- request helpers

impl JsonlState {
    /// Connects to the data plane and logs on under a fresh `jsonl-<n>` name.
    async fn connect(&self) -> Result<AmpsConnection, Failure> {
        let number = self.clients.fetch_add(1, Ordering::Relaxed) + 1;
        Ok(AmpsConnection::connect(self.amps_address, format!("jsonl-{number}")).await?)
    }
}

/// The whole body, refused with 413 as soon as it grows past `limit` bytes.
async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    route: &str,
) -> Result<Bytes, Failure> {
    let too_large = |length: String| {
        Failure {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        message: format!(
            "{route} body is {length} bytes, over the limit of {limit} bytes; split it into several requests"
        ),
    }
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if let Some(declared) = declared.filter(|&declared| declared > limit as u64) {
        return Err(too_large(declared.to_string()));
    }
    let mut stream = body.into_data_stream();
    let mut bytes = Vec::with_capacity(declared.map_or(0, |declared| declared as usize));
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|error| Failure::bad_request(format!("reading the body failed: {error}")))?;
        if bytes.len() + chunk.len() > limit {
            return Err(too_large(format!("more than {limit}")));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(bytes))
}

/// The `topic` parameter, which must be present and non-empty.
fn required_topic(parameters: &[(&'static str, String)]) -> Result<String, Failure> {
    match lines::parameter(parameters, "topic") {
        Some(topic) if !topic.is_empty() => Ok(topic.to_string()),
        _ => Err(Failure::bad_request(
            "the topic query parameter is required, e.g. ?topic=orders",
        )),
    }
}

// -------------------------------------------------------------------------------- streams

/// The producing end of a streamed `application/x-ndjson` answer.
struct NdjsonSender {
    chunks: mpsc::Sender<Bytes>,
    abort: oneshot::Sender<String>,
}

/// The HTTP client went away (its end of the stream was dropped).
struct ClientGone;

impl NdjsonSender {
    /// Sends a chunk, waiting while the HTTP client is behind.
    async fn send(&self, chunk: Vec<u8>) -> Result<(), ClientGone> {
        self.chunks
            .send(Bytes::from(chunk))
            .await
            .map_err(|_| ClientGone)
    }

    /// Ends the stream as failed: the response stops without its terminating chunk.
    fn abort(self, reason: String) {
        let _ = self.abort.send(reason);
    }
}

/// A `200 application/x-ndjson` response whose body is what the returned sender sends. The body
/// ends cleanly when the sender is dropped, or as an error after [`NdjsonSender::abort`].
fn ndjson_stream() -> (NdjsonSender, Response) {
    let (chunks, receiver) = mpsc::channel::<Bytes>(STREAM_CHANNEL_DEPTH);
    let (abort, aborted) = oneshot::channel::<String>();
    let stream = futures_lite::stream::unfold(
        (receiver, Some(aborted)),
        |(mut receiver, aborted)| async move {
            match receiver.recv().await {
                Some(chunk) => Some((Ok(chunk), (receiver, aborted))),
                None => {
                    let reason = match aborted {
                        Some(aborted) => aborted.await.ok()?,
                        None => return None,
                    };
                    Some((Err(std::io::Error::other(reason)), (receiver, None)))
                }
            }
        },
    );
    let response = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, NDJSON)
        .header(header::CACHE_CONTROL, "no-store")
        .body(Body::from_stream(stream))
        .expect("static headers are valid");
    (NdjsonSender { chunks, abort }, response)
}

/// Why a pumped stream ended.
enum End {
    /// The query finished.
    Done,
    /// The HTTP client went away.
    ClientGone,
    /// The JSON Lines server is stopping.
    Stopping,
    /// The data plane failed or refused; the reason.
    Failed(String),
}

/// What a frame means for the stream.
enum Step {
    /// Keep going.
    More,
    /// The answer is complete.
    Done,
    /// The answer cannot be completed, for this reason.
    Failed(String),
}

/// Passes the frames of `reader` through `on_frame` (which appends lines to the chunk being
/// built) into `output`, until `on_frame` says done or failed, the HTTP client goes away, the
/// server stops, or the data plane fails. `idle_timeout` bounds the wait for each frame.
async fn pump(
    reader: &mut AmpsReader,
    output: &NdjsonSender,
    stopping: &mut watch::Receiver<bool>,
    idle_timeout: Option<(Duration, &'static str)>,
    mut on_frame: impl FnMut(ServerFrame, &mut Vec<u8>) -> Step,
) -> End {
    let mut chunk = Vec::new();
    let mut finished = false;
    loop {
        // Take what is already buffered, up to one chunk, without waiting.
        while !finished && chunk.len() < CHUNK_BYTES_TARGET {
            match reader.try_frame() {
                Ok(Some(frame)) => match on_frame(frame, &mut chunk) {
                    Step::More => {}
                    Step::Done => finished = true,
                    Step::Failed(reason) => return End::Failed(reason),
                },
                Ok(None) => break,
                Err(error) => return End::Failed(error.to_string()),
            }
        }
        if !chunk.is_empty() {
            let sent = tokio::select! {
                sent = output.send(std::mem::take(&mut chunk)) => sent,
                _ = stopping.wait_for(|stopping| *stopping) => return End::Stopping,
            };
            if sent.is_err() {
                return End::ClientGone;
            }
            continue;
        }
        if finished {
            return End::Done;
        }
        let next = async {
            match idle_timeout {
                Some((timeout, what)) => reader.frame_within(timeout, what).await,
                None => reader.frame().await,
            }
        };
        tokio::select! {
            _ = output.chunks.closed() => return End::ClientGone,
            _ = stopping.wait_for(|stopping| *stopping) => return End::Stopping,
            frame = next => match frame {
                Ok(frame) => match on_frame(frame, &mut chunk) {
                    Step::More => {}
                    Step::Done => finished = true,
                    Step::Failed(reason) => return End::Failed(reason),
                },
                Err(error) => return End::Failed(error.to_string()),
            },
        }
    }
}

// -------------------------------------------------------------------------------- publish

/// `POST /publish?topic=T`: one JSON message per line; one status line per message line.
async fn publish(
    State(state): SharedState,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Failure> {
    let parameters =
        lines::query_parameters(query.as_deref(), &["topic"]).map_err(Failure::bad_request)?;
    let topic = required_topic(&parameters)?;
    let body = read_body(
        &headers,
        body,
        state.limits.publish_body_bytes_max,
        "POST /publish",
    )
    .await?;
    let connection = state.connect().await?;
    debug!(client = %connection.client, %peer, %topic, body_bytes = body.len(), "JSON Lines publish");
    let (output, response) = ndjson_stream();
    tokio::spawn(publish_lines(
        connection,
        topic,
        body,
        state.limits.line_bytes_max,
        output,
    ));
    Ok(response)
}

/// A line handed from the writing half to the reading half of a publish.
enum Sent {
    /// Sent with this command id; its ack decides the status.
    Published { line: usize, command_id: u64 },
    /// Not sent, for this reason.
    Refused { line: usize, reason: String },
}

/// Publishes every line, acks read concurrently: the writer stays at most
/// [`PUBLISH_IN_FLIGHT_MAX`] lines ahead of the acks, and the status lines go out in input order.
async fn publish_lines(
    connection: AmpsConnection,
    topic: String,
    body: Bytes,
    line_bytes_max: usize,
    output: NdjsonSender,
) {
    let AmpsConnection {
        mut reader,
        mut writer,
        client,
    } = connection;
    let (sent, to_acknowledge) = mpsc::channel::<Sent>(PUBLISH_IN_FLIGHT_MAX);

    let write = async {
        let mut frames = Vec::with_capacity(CHUNK_BYTES_TARGET);
        let mut broken: Option<String> = None;
        let mut command_id = 0u64;
        for (line, parsed) in lines::numbered_lines(&body, line_bytes_max) {
            let entry = match (parsed, &broken) {
                (Line::Refused(reason), _) => Sent::Refused { line, reason },
                (Line::Message(_), Some(reason)) => Sent::Refused {
                    line,
                    reason: format!("not sent: {reason}"),
                },
                (Line::Message(payload), None) => {
                    command_id += 1;
                    amps_client::write_publish(&mut frames, &topic, command_id, payload);
                    Sent::Published { line, command_id }
                }
            };
            // Before waiting on the reader, everything it may wait for must be on the wire.
            let entry = match sent.try_send(entry) {
                Ok(()) => None,
                Err(mpsc::error::TrySendError::Full(entry)) => Some(entry),
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            };
            if entry.is_some() || frames.len() >= CHUNK_BYTES_TARGET {
                if let Err(reason) = flush_frames(&mut writer, &mut frames).await {
                    broken.get_or_insert(reason);
                }
            }
            if let Some(entry) = entry {
                if sent.send(entry).await.is_err() {
                    return;
                }
            }
        }
        if let Err(reason) = flush_frames(&mut writer, &mut frames).await {
            broken.get_or_insert(reason);
        }
        // Dropping `sent` tells the reader that no more lines come. The write half itself stays
        // open until the reader is done too, so the data plane reads to the end and acks all.
        drop(sent);
    };

    let read = async {
        // Owned here, so a reader that stops early (the HTTP client went away) closes the
        // channel and the writer stops too instead of waiting on it forever.
        let mut to_acknowledge = to_acknowledge;
        let mut statuses = Vec::new();
        let mut early: HashMap<u64, Result<(), String>> = HashMap::new();
        let mut broken: Option<String> = None;
        let (mut succeeded, mut failed) = (0u64, 0u64);
        loop {
            let entry = match to_acknowledge.try_recv() {
                Ok(entry) => entry,
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {
                    if !statuses.is_empty()
                        && output.send(std::mem::take(&mut statuses)).await.is_err()
                    {
                        return (succeeded, failed, false);
                    }
                    match to_acknowledge.recv().await {
                        Some(entry) => entry,
                        None => break,
                    }
                }
            };
            let (line, outcome) = match entry {
                Sent::Refused { line, reason } => (line, Err(reason)),
                Sent::Published { line, command_id } => {
                    let outcome = match (&broken, early.remove(&command_id)) {
                        (_, Some(outcome)) => outcome,
                        (Some(reason), None) => Err(format!("not acknowledged: {reason}")),
                        (None, None) => {
                            match ack_of_publish(
                                &mut reader,
                                command_id,
                                &mut early,
                                &output,
                                &mut statuses,
                            )
                            .await
                            {
                                Ok(outcome) => outcome,
                                Err(AckWait::ClientGone) => return (succeeded, failed, false),
                                Err(AckWait::Broken(reason)) => {
                                    let outcome = Err(format!("not acknowledged: {reason}"));
                                    broken = Some(reason);
                                    outcome
                                }
                            }
                        }
                    };
                    (line, outcome)
                }
            };
            match &outcome {
                Ok(()) => succeeded += 1,
                Err(_) => failed += 1,
            }
            lines::write_status(
                &mut statuses,
                line,
                outcome.as_ref().map(|_| ()).map_err(String::as_str),
            );
            if statuses.len() >= CHUNK_BYTES_TARGET
                && output.send(std::mem::take(&mut statuses)).await.is_err()
            {
                return (succeeded, failed, false);
            }
        }
        let complete = statuses.is_empty() || output.send(statuses).await.is_ok();
        (succeeded, failed, complete)
    };

    let ((), (succeeded, failed, complete)) = tokio::join!(write, read);
    if complete {
        info!(%client, %topic, succeeded, failed, "JSON Lines publish finished");
    } else {
        info!(%client, %topic, succeeded, failed, "JSON Lines publish: the HTTP client went away before its status lines were read");
    }
}

/// Writes the buffered frames, within [`ACK_TIMEOUT`] (a data plane that takes nothing for that
/// long gets no more lines from this request).
async fn flush_frames(
    writer: &mut amps_client::AmpsWriter,
    frames: &mut Vec<u8>,
) -> Result<(), String> {
    if frames.is_empty() {
        return Ok(());
    }
    let result = match tokio::time::timeout(ACK_TIMEOUT, writer.send(frames)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!(
            "the data plane took no data for {} ms",
            ACK_TIMEOUT.as_millis()
        )),
    };
    frames.clear();
    result
}

/// Waiting for a publish ack did not give one.
enum AckWait {
    ClientGone,
    Broken(String),
}

/// Reads frames until the processed ack of `command_id`, keeping other publish acks that
/// arrive first in `early`. Pending status lines are sent before the reader waits on the socket.
async fn ack_of_publish(
    reader: &mut AmpsReader,
    command_id: u64,
    early: &mut HashMap<u64, Result<(), String>>,
    output: &NdjsonSender,
    statuses: &mut Vec<u8>,
) -> Result<Result<(), String>, AckWait> {
    loop {
        let frame = match reader.try_frame() {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                if !statuses.is_empty() && output.send(std::mem::take(statuses)).await.is_err() {
                    return Err(AckWait::ClientGone);
                }
                reader
                    .frame_within(ACK_TIMEOUT, "acknowledge a publish")
                    .await
                    .map_err(|error| AckWait::Broken(error.to_string()))?
            }
            Err(error) => return Err(AckWait::Broken(error.to_string())),
        };
        let Some(ack) = frame.ack().filter(|ack| ack.ack_type == "processed") else {
            continue;
        };
        match ack
            .command_id
            .as_deref()
            .and_then(|id| id.parse::<u64>().ok())
        {
            Some(id) if id == command_id => return Ok(ack.outcome),
            Some(id) => {
                early.insert(id, ack.outcome);
            }
            None => debug!("processed ack without a numeric cid ignored"),
        }
    }
}

// ------------------------------------------------------------------------------ subscribe

/// The command id of the one subscribe or sow a connection sends (also its sub_id/query_id).
const COMMAND_ID: u64 = 1;

/// `GET /subscribe?topic=T&filter=F`: a chunked stream of matching messages, one per line.
async fn subscribe(
    State(state): SharedState,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(query): RawQuery,
) -> Result<Response, Failure> {
    let parameters = lines::query_parameters(query.as_deref(), &["topic", "filter"])
        .map_err(Failure::bad_request)?;
    let topic = required_topic(&parameters)?;
    let filter = lines::parameter(&parameters, "filter")
        .filter(|filter| !filter.is_empty())
        .map(str::to_string);
    let permit = state
        .subscriptions
        .clone()
        .try_acquire_owned()
        .map_err(|_| Failure {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: format!(
                "the limit of {} open subscription streams is reached; close one, or subscribe over the AMPS port",
                state.limits.subscriptions_max
            ),
        })?;
    let mut connection = state.connect().await?;
    let mut frames = Vec::with_capacity(256);
    amps_client::write_subscribe(&mut frames, COMMAND_ID, &topic, filter.as_deref());
    connection.writer.send(&frames).await?;
    let mut early = Vec::new();
    let ack = connection
        .reader
        .ack_of(
            &COMMAND_ID.to_string(),
            "processed",
            ACK_TIMEOUT,
            "acknowledge the subscribe",
            |frame| {
                if frame.is_delivery() {
                    early.push(frame.payload());
                }
            },
        )
        .await?;
    if let Err(reason) = ack.outcome {
        info!(client = %connection.client, %peer, %topic, filter = filter.as_deref().unwrap_or(""), %reason, "JSON Lines subscribe refused");
        return Err(Failure::bad_request(reason));
    }
    info!(client = %connection.client, %peer, %topic, filter = filter.as_deref().unwrap_or(""), "JSON Lines subscription stream opened");
    let (output, response) = ndjson_stream();
    tokio::spawn(stream_subscription(
        connection,
        early,
        output,
        state.stopping.clone(),
        permit,
        peer,
    ));
    Ok(response)
}

/// Streams the deliveries of a subscription until the client goes away, the server stops or
/// the data plane drops the connection; then unsubscribes and disconnects.
async fn stream_subscription(
    mut connection: AmpsConnection,
    early: Vec<Bytes>,
    output: NdjsonSender,
    mut stopping: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
    peer: SocketAddr,
) {
    let mut messages = early.len() as u64;
    let mut first = Vec::new();
    for payload in &early {
        lines::write_record(&mut first, payload);
    }
    let end = if !first.is_empty() && output.send(first).await.is_err() {
        End::ClientGone
    } else {
        pump(
            &mut connection.reader,
            &output,
            &mut stopping,
            None,
            |frame, chunk| {
                if frame.is_delivery() {
                    messages += 1;
                    lines::write_record(chunk, &frame.payload());
                }
                Step::More
            },
        )
        .await
    };
    let client = connection.client.clone();
    match end {
        End::Failed(reason) => {
            warn!(%client, %peer, messages, "JSON Lines subscription stream cut: {reason}");
            output.abort(reason);
            return;
        }
        End::ClientGone => {
            info!(%client, %peer, messages, "JSON Lines subscription stream closed: the HTTP client went away")
        }
        End::Stopping => {
            info!(%client, %peer, messages, "JSON Lines subscription stream ended: the server is stopping")
        }
        End::Done => unreachable!("a subscription has no end of its own"),
    }
    drop(output);
    let mut frames = Vec::with_capacity(64);
    amps_client::write_unsubscribe(&mut frames, COMMAND_ID + 1, COMMAND_ID);
    let _ = tokio::time::timeout(UNSUBSCRIBE_TIMEOUT, connection.writer.send(&frames)).await;
}

// ------------------------------------------------------------------------------------ sow

/// `POST /sow` with `{"topic","filter","top_n","orderby"}`: the matching records, one per line.
async fn sow(
    State(state): SharedState,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Failure> {
    let body = read_body(
        &headers,
        body,
        state.limits.sow_request_bytes_max,
        "POST /sow",
    )
    .await?;
    let query = lines::sow_query(&body).map_err(Failure::bad_request)?;
    let mut connection = state.connect().await?;
    let mut frames = Vec::with_capacity(256);
    amps_client::write_sow(&mut frames, COMMAND_ID, &query);
    connection.writer.send(&frames).await?;
    let mut early = Vec::new();
    let ack = connection
        .reader
        .ack_of(
            &COMMAND_ID.to_string(),
            "processed",
            ACK_TIMEOUT,
            "acknowledge the sow query",
            |frame| early.push(frame),
        )
        .await?;
    if let Err(reason) = ack.outcome {
        info!(client = %connection.client, %peer, topic = %query.topic, %reason, "JSON Lines sow refused");
        return Err(Failure::bad_request(reason));
    }
    info!(client = %connection.client, %peer, topic = %query.topic, "JSON Lines sow query");
    let (output, response) = ndjson_stream();
    tokio::spawn(stream_sow(
        connection,
        query,
        early,
        output,
        state.stopping.clone(),
    ));
    Ok(response)
}

/// What one frame of a SOW answer adds.
fn sow_step(frame: ServerFrame, chunk: &mut Vec<u8>, records: &mut u64) -> Step {
    if &*frame.command() == b"sow" {
        return match frame.sow_records() {
            Ok(found) => {
                for record in found {
                    *records += 1;
                    lines::write_record(chunk, &record);
                }
                Step::More
            }
            Err(error) => Step::Failed(error.to_string()),
        };
    }
    match frame.ack() {
        Some(ack)
            if ack.ack_type == "completed"
                && ack.command_id.as_deref().and_then(|id| id.parse().ok()) == Some(COMMAND_ID) =>
        {
            match ack.outcome {
                Ok(()) => Step::Done,
                Err(reason) => Step::Failed(format!("the query failed: {reason}")),
            }
        }
        _ => Step::More,
    }
}

/// Streams a SOW answer until its completed ack.
async fn stream_sow(
    mut connection: AmpsConnection,
    query: SowQuery,
    early: Vec<ServerFrame>,
    output: NdjsonSender,
    mut stopping: watch::Receiver<bool>,
) {
    let mut records = 0u64;
    let mut first = Vec::new();
    let mut end = None;
    for frame in early {
        match sow_step(frame, &mut first, &mut records) {
            Step::More => {}
            Step::Done => end = Some(End::Done),
            Step::Failed(reason) => end = Some(End::Failed(reason)),
        }
    }
    if !first.is_empty() && output.send(first).await.is_err() {
        end = Some(End::ClientGone);
    }
    let end = match end {
        Some(end) => end,
        None => {
            pump(
                &mut connection.reader,
                &output,
                &mut stopping,
                Some((ACK_TIMEOUT, "send the next part of the SOW answer")),
                |frame, chunk| sow_step(frame, chunk, &mut records),
            )
            .await
        }
    };
    let client = &connection.client;
    let topic = &query.topic;
    match end {
        End::Done => debug!(%client, %topic, records, "JSON Lines sow answered"),
        End::ClientGone => {
            info!(%client, %topic, records, "JSON Lines sow: the HTTP client went away")
        }
        End::Stopping => {
            let reason = "the server is stopping".to_string();
            info!(%client, %topic, records, "JSON Lines sow cut: {reason}");
            output.abort(reason);
        }
        End::Failed(reason) => {
            warn!(%client, %topic, records, "JSON Lines sow cut: {reason}");
            output.abort(reason);
        }
    }
}
