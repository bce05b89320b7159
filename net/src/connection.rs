//! One client connection: a reader task that parses and carries out commands, a writer task that
//! drains the outbound queue, and the state both share.
//!
//! The reader reads into a receive buffer whose frames are handed out as shared slices, so a
//! published payload is referenced, not copied, all the way to every subscriber's socket. The
//! writer sends with `sendmsg` (vectored, non-blocking) and only falls back to waiting on the
//! socket when its send buffer is full; once memory is sent it reads back what the outbound queue
//! spooled to disk for a client that fell behind. A protocol violation, or a slow client whose
//! spool passed its limit, closes the connection with a log line naming the client and the cause;
//! it never affects another connection.

use crate::board::{bump, set, ClientStats, SubscriptionInfo};
use crate::journal::{LogonVerdict, Origin};
use crate::latency::unix_now_ns;
use crate::notify::Notify;
use crate::outbound::{Flushed, Outbound, Overflow, OverflowCause, Queued, Refill};
use crate::receive::ReceiveBuffer;
use crate::replay::BookmarkSubscription;
use crate::shard::Shard;
use crate::spool::Spool;
use crate::stats::ShardStats;
use bytes::Bytes;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tachyon_core::ids::{stable_hash, ConnectionId};
use tachyon_core::message::PublishedMessage;
use tachyon_core::protocol::keys::Key;
use tachyon_core::protocol::reply::{self, Outcome};
use tachyon_core::protocol::{parse_header, AckType, Header};
use tachyon_core::router::Delivery;
use tachyon_core::session::{
    refuse as refusal, AckTarget, OwnedAckTarget, Reason, Refusal, Request, Session, SessionLimits,
    SowDeleteBy,
};
use tracing::{debug, info, warn};

/// Why a connection was closed by the server.
#[derive(Debug, Clone)]
pub(crate) enum CloseReason {
    Protocol(String),
    /// Neither the memory budget nor the spool would take another frame.
    SlowConsumer(Overflow),
    HeartbeatTimeout {
        silent: Duration,
    },
    LogonTimeout,
    /// Another connection logged on with this client name (same user, transaction log on).
    Replaced,
    /// An operator asked for it over the admin API.
    Administrator,
    Shutdown,
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseReason::Protocol(detail) => write!(formatter, "protocol error: {detail}"),
            CloseReason::SlowConsumer(overflow) => write!(formatter, "slow consumer: {overflow}"),
            CloseReason::HeartbeatTimeout { silent } => {
                write!(
                    formatter,
                    "heartbeat timeout: nothing received for {:.1} s",
                    silent.as_secs_f64()
                )
            }
            CloseReason::LogonTimeout => {
                write!(formatter, "no logon within limits.logon_timeout_seconds")
            }
            CloseReason::Replaced => write!(
                formatter,
                "a newer connection logged on with the same client name"
            ),
            CloseReason::Administrator => write!(
                formatter,
                "an operator asked for it (admin API: POST /amps/administrator/clients/<id>/disconnect)"
            ),
            CloseReason::Shutdown => write!(formatter, "server shutting down"),
        }
    }
}

/// State shared by a connection's reader and writer tasks and by the shard's deliveries.
pub(crate) struct Connection {
    pub id: ConnectionId,
    pub peer: SocketAddr,
    fd: RawFd,
    name: RefCell<String>,
    outbound: RefCell<Outbound>,
    writer_wake: Notify,
    writer_done: Notify,
    /// False once the reader is about to drop the socket: nobody may touch `fd` after that.
    fd_open: Cell<bool>,
    closing: RefCell<Option<CloseReason>>,
    pub connected_at: Instant,
    /// What the admin API shows about this client (posted to the shard's board).
    pub(crate) stats: Arc<ClientStats>,
    logged_on: Cell<bool>,
    /// Hash of the client name (the publisher id in bookmarks); set at logon.
    name_hash: Cell<u64>,
    /// Whether this connection holds its client name at the journal's shard.
    owns_name: Cell<bool>,
    heartbeat_interval: Cell<Option<Duration>>,
    last_received: Cell<Instant>,
    last_sent: Cell<Instant>,
    /// When this client's spooling was last logged as a warning (at most one per
    /// [`SPOOL_WARNING_INTERVAL`], so a client that hovers at its limit does not flood the log).
    spool_warned_at: Cell<Option<Instant>>,
    /// Whether the current spool episode was logged as a warning (then its end is logged too).
    spool_episode_warned: Cell<bool>,
}

/// Least time between two warnings about one client starting to spool.
const SPOOL_WARNING_INTERVAL: Duration = Duration::from_secs(10);

impl Connection {
    /// The client's name for logs: its logon name, else its address.
    pub(crate) fn name(&self) -> String {
        self.name.borrow().clone()
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.closing.borrow().is_some()
    }

    /// Starts closing: the writer sends what is queued, then shuts the socket, which ends the reader.
    pub(crate) fn close(&self, reason: CloseReason, stats: &ShardStats) {
        if self.is_closing() {
            return;
        }
        match &reason {
            CloseReason::Shutdown => {
                debug!(client = %self.name(), peer = %self.peer, "closing: {reason}")
            }
            CloseReason::SlowConsumer(overflow) => {
                ShardStats::add(&stats.slow_consumers_disconnected, 1);
                if overflow.cause == OverflowCause::DiskLimit {
                    ShardStats::add(&stats.spool_limit_disconnects, 1);
                }
                warn!(client = %self.name(), peer = %self.peer, "disconnecting: {reason}");
            }
            CloseReason::HeartbeatTimeout { .. } | CloseReason::LogonTimeout => {
                ShardStats::add(&stats.timeouts, 1);
                warn!(client = %self.name(), peer = %self.peer, "disconnecting: {reason}");
            }
            CloseReason::Protocol(_) => {
                ShardStats::add(&stats.protocol_errors, 1);
                warn!(client = %self.name(), peer = %self.peer, "disconnecting: {reason}");
            }
            CloseReason::Replaced => {
                info!(client = %self.name(), peer = %self.peer, "disconnecting: {reason}");
            }
            CloseReason::Administrator => {
                warn!(client = %self.name(), peer = %self.peer, connection = %self.id, "disconnecting: {reason}");
            }
        }
        let graceful = matches!(reason, CloseReason::Shutdown);
        *self.closing.borrow_mut() = Some(reason);
        // What is spooled will not be sent once closing (the writer sends only memory now), so
        // the file goes at once, even if the writer stays blocked on a stalled socket. A caller
        // holding the queue (none today) leaves it to the writer's exit.
        if let Ok(mut outbound) = self.outbound.try_borrow_mut() {
            outbound.close_spool();
        }
        if !graceful && self.fd_open.get() {
            // Stop both directions now: a pending read returns, a blocked write fails, and
            // nothing more is read from a client that broke the protocol.
            // SAFETY: `fd_open` says the reader still owns the open socket.
            unsafe { libc::shutdown(self.fd, libc::SHUT_RDWR) };
        }
        self.writer_wake.notify();
    }

    /// Posts how much waits for this client, in memory and in its spool.
    fn post_queue_depth(&self) {
        if let Ok(outbound) = self.outbound.try_borrow() {
            set(&self.stats.queued_bytes, outbound.queued_bytes() as u64);
            set(&self.stats.spooled_bytes, outbound.spooled_bytes());
        }
    }

    /// Queues a whole control frame (ack, heartbeat) written by `write`.
    fn send_inline(&self, shard: &Shard, write: impl FnOnce(&mut Vec<u8>)) {
        let pushed = self.outbound.borrow_mut().push_inline(write);
        self.after_push(shard, pushed);
    }

    fn after_push(&self, shard: &Shard, pushed: Result<Queued, Overflow>) {
        match pushed {
            Ok(Queued::Memory | Queued::Spooled) => {
                ShardStats::add(&shard.stats.frames_out, 1);
                bump(&self.stats.frames_out, 1);
                self.post_queue_depth();
                self.writer_wake.notify();
            }
            Ok(Queued::SpoolOpened { budget_full }) => {
                ShardStats::add(&shard.stats.frames_out, 1);
                bump(&self.stats.frames_out, 1);
                bump(&self.stats.spools_opened, 1);
                self.post_queue_depth();
                self.log_spool_opened(shard, budget_full);
                self.writer_wake.notify();
            }
            Err(overflow) => self.close(CloseReason::SlowConsumer(overflow), &shard.stats),
        }
    }

    #[cold]
    fn log_spool_opened(&self, shard: &Shard, budget_full: bool) {
        let limits = &shard.config.limits;
        let outbound = self.outbound.borrow();
        let path = outbound
            .spool_path()
            .map(|path| path.display().to_string())
            .unwrap_or_default();
        let now = Instant::now();
        let warn_now = self
            .spool_warned_at
            .get()
            .is_none_or(|warned| now.duration_since(warned) >= SPOOL_WARNING_INTERVAL);
        self.spool_episode_warned.set(warn_now);
        if !warn_now {
            debug!(client = %self.name(), peer = %self.peer, queued_bytes = outbound.queued_bytes(), spool = %path, "slow consumer: spooling to disk again");
            return;
        }
        self.spool_warned_at.set(Some(now));
        let why = if budget_full {
            "its memory budget is full"
        } else {
            "all clients together are over limits.message_memory_limit"
        };
        warn!(
            client = %self.name(),
            peer = %self.peer,
            queued_bytes = outbound.queued_bytes(),
            spool = %path,
            "slow consumer: spooling to disk ({why}): {} bytes queued in memory (budget {} bytes, limits.client_outbound_bytes_max; all clients together {} bytes, limits.message_memory_limit); further messages wait in the spool until the client catches up or its spool passes {} bytes (limits.message_disk_limit)",
            outbound.queued_bytes(),
            limits.client_outbound_bytes_max,
            limits.message_memory_limit,
            limits.message_disk_limit
        );
    }

    /// Queues one delivery: header written here, payload shared with the publisher's buffer.
    pub(crate) fn deliver(
        &self,
        shard: &Shard,
        delivery: &Delivery,
        message: &PublishedMessage,
        sow_key: Option<&[u8]>,
    ) {
        if self.is_closing() {
            return;
        }
        let pushed = queue_delivery(&mut self.outbound.borrow_mut(), delivery, message, sow_key);
        if pushed.is_ok() {
            bump(&self.stats.messages_out, 1);
        }
        self.after_push(shard, pushed);
    }

    /// Bytes waiting to be sent to this client, in memory and in its spool.
    pub(crate) fn queued_bytes(&self) -> usize {
        let outbound = self.outbound.borrow();
        outbound.queued_bytes() + outbound.spooled_bytes() as usize
    }

    /// Queues whole frames rendered elsewhere (SOW query results, oof messages, SOW acks).
    pub(crate) fn push_frames(&self, shard: &Shard, bytes: &[u8]) {
        if self.is_closing() || bytes.is_empty() {
            return;
        }
        self.send_inline(shard, |buffer| buffer.extend_from_slice(bytes));
    }

    /// Queues a success ack of type `ack` when the command asked for it.
    fn ack_success(&self, shard: &Shard, target: &AckTarget<'_>, ack: AckType) {
        if target.acks.contains(ack) {
            self.send_inline(shard, |buffer| {
                reply::write_ack(buffer, ack, target, Outcome::Success)
            });
        }
    }

    /// Heartbeat and logon deadlines, checked by the shard's timer.
    pub(crate) fn check_timers(&self, shard: &Shard, now: Instant) {
        if self.is_closing() {
            return;
        }
        if self.stats.disconnect_requested() {
            self.close(CloseReason::Administrator, &shard.stats);
            return;
        }
        if !self.logged_on.get() {
            if now.duration_since(self.connected_at)
                > Duration::from_secs(shard.config.limits.logon_timeout_seconds)
            {
                self.close(CloseReason::LogonTimeout, &shard.stats);
            }
            return;
        }
        let Some(interval) = self.heartbeat_interval.get() else {
            return;
        };
        let silent = now.duration_since(self.last_received.get());
        if silent > interval * 2 {
            self.close(CloseReason::HeartbeatTimeout { silent }, &shard.stats);
            return;
        }
        if now.duration_since(self.last_sent.get()) >= interval {
            self.last_sent.set(now);
            self.send_inline(shard, reply::write_heartbeat);
        }
    }
}

/// Appends one delivery frame to an outbound queue: the header is written, the payload shared.
/// `sow_key` is the record's key on a SOW topic; it is written when a subscription of the
/// delivery wants keys.
pub(crate) fn queue_delivery(
    outbound: &mut Outbound,
    delivery: &Delivery,
    message: &PublishedMessage,
    sow_key: Option<&[u8]>,
) -> Result<Queued, Overflow> {
    let timestamp = delivery.timestamp.then_some(message.received_unix_ns);
    let payload_bytes = message.payload().len();
    outbound.push_with_payload(
        |buffer| {
            reply::write_delivery_header(
                buffer,
                message.topic(),
                &delivery.sub_ids,
                message.bookmark,
                sow_key.filter(|_| delivery.sow_key),
                message.correlation_id(),
                timestamp,
                payload_bytes,
            )
        },
        message.payload_bytes(),
    )
}

/// Wraps a publish frame as a message: topic, correlation id and payload located by offset.
pub(crate) fn published_message(frame: &Bytes, header: &Header<'_>) -> PublishedMessage {
    let base = frame.as_ptr() as usize;
    let range_of = |slice: &[u8]| {
        let start = slice.as_ptr() as usize - base;
        start..start + slice.len()
    };
    let topic = range_of(
        header
            .bytes(Key::Topic)
            .expect("the session checked the topic"),
    );
    let correlation = header.bytes(Key::CorrelationId).map(range_of);
    PublishedMessage::new(
        frame.clone(),
        topic,
        correlation,
        header.payload_offset,
        unix_now_ns(),
    )
}

/// Takes an accepted socket, registers the connection and runs its two tasks to completion.
pub(crate) fn spawn(shard: Rc<Shard>, stream: TcpStream) {
    let peer = stream
        .peer_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    if let Err(error) = stream.set_nodelay(true) {
        warn!(%peer, "cannot set TCP_NODELAY: {error}");
    }
    let fd = stream.as_raw_fd();
    // The writer waits on a duplicate of the socket so that reader and writer never need the
    // same `TcpStream` at the same time.
    // SAFETY: `fd` is an open socket owned by `stream`; dup returns a new descriptor or -1.
    let write_fd = unsafe { libc::dup(fd) };
    if write_fd < 0 {
        warn!(%peer, "refusing connection: dup failed: {}", std::io::Error::last_os_error());
        return;
    }
    // SAFETY: `write_fd` is a fresh descriptor owned by nothing else; the stream takes it over.
    let write_stream = unsafe { TcpStream::from_raw_fd(write_fd) };
    let id = shard.reserve_slot();
    let now = Instant::now();
    let stats = Arc::new(ClientStats::new(id, peer, unix_now_ns() / 1_000_000));
    let limits = &shard.config.limits;
    let spool = (limits.message_disk_limit > 0).then(|| {
        Spool::new(
            limits.spool_directory(&shard.config.data_dir),
            id,
            limits.message_disk_limit,
            shard.stats.clone(),
        )
    });
    let connection = Rc::new(Connection {
        id,
        peer,
        fd,
        name: RefCell::new(peer.to_string()),
        outbound: RefCell::new(Outbound::with_spool(
            limits.client_outbound_bytes_max,
            limits.message_memory_limit,
            spool,
        )),
        writer_wake: Notify::default(),
        writer_done: Notify::default(),
        fd_open: Cell::new(true),
        closing: RefCell::new(None),
        connected_at: now,
        stats: stats.clone(),
        logged_on: Cell::new(false),
        name_hash: Cell::new(0),
        owns_name: Cell::new(false),
        heartbeat_interval: Cell::new(None),
        last_received: Cell::new(now),
        last_sent: Cell::new(now),
        spool_warned_at: Cell::new(None),
        spool_episode_warned: Cell::new(false),
    });
    shard.install(connection.clone());
    shard.board.add_client(stats);
    ShardStats::add(&shard.stats.connections_accepted, 1);
    ShardStats::add(&shard.stats.connections_open, 1);
    debug!(%peer, connection = %id, "accepted");
    glommio::spawn_local(write_loop(shard.clone(), connection.clone(), write_stream)).detach();
    glommio::spawn_local(read_loop(shard, connection, stream)).detach();
}

async fn write_loop(shard: Rc<Shard>, connection: Rc<Connection>, mut stream: TcpStream) {
    let mut waiting_copy: Vec<u8> = Vec::new();
    loop {
        connection.writer_wake.notified().await;
        loop {
            let flushed = {
                let mut outbound = connection.outbound.borrow_mut();
                let before = outbound.queued_bytes();
                let flushed = outbound.flush(connection.fd);
                let sent = (before - outbound.queued_bytes()) as u64;
                ShardStats::add(&shard.stats.bytes_out, sent);
                bump(&connection.stats.bytes_out, sent);
                set(
                    &connection.stats.queued_bytes,
                    outbound.queued_bytes() as u64,
                );
                set(&connection.stats.spooled_bytes, outbound.spooled_bytes());
                flushed
            };
            match flushed {
                Ok(Flushed::All) => {
                    // Memory is sent: next in line is whatever waits in the spool.
                    if !connection.is_closing() {
                        let refilled = connection.outbound.borrow_mut().refill_from_spool();
                        match refilled {
                            Ok(Refill::Nothing) => {}
                            Ok(Refill::More) => {
                                // A long spool drains in steps so the shard's other tasks run.
                                glommio::yield_if_needed().await;
                                continue;
                            }
                            Ok(Refill::Drained) => {
                                if connection.spool_episode_warned.replace(false) {
                                    info!(client = %connection.name(), peer = %connection.peer, "slow consumer caught up: spool drained and removed");
                                } else {
                                    debug!(client = %connection.name(), peer = %connection.peer, "slow consumer caught up: spool drained and removed");
                                }
                                continue;
                            }
                            Err(overflow) => {
                                connection.close(CloseReason::SlowConsumer(overflow), &shard.stats);
                                break;
                            }
                        }
                    }
                    connection.last_sent.set(Instant::now());
                    break;
                }
                Ok(Flushed::WouldBlock) => {
                    // The socket is full: wait for it with a normal write of the first bytes.
                    // They are copied out so the queue stays free for deliveries meanwhile.
                    waiting_copy.clear();
                    {
                        let outbound = connection.outbound.borrow();
                        let front = outbound.front();
                        waiting_copy.extend_from_slice(&front[..front.len().min(64 * 1024)]);
                    }
                    match stream.write(&waiting_copy).await {
                        Ok(written) => {
                            ShardStats::add(&shard.stats.bytes_out, written as u64);
                            bump(&connection.stats.bytes_out, written as u64);
                            connection.outbound.borrow_mut().consume(written)
                        }
                        Err(error) => {
                            debug!(client = %connection.name(), "write failed: {error}");
                            connection.close(
                                CloseReason::Protocol(format!("write failed: {error}")),
                                &shard.stats,
                            );
                            break;
                        }
                    }
                }
                Err(error) => {
                    debug!(client = %connection.name(), "send failed: {error}");
                    // A reset by the peer is an ordinary disconnect, not a protocol error.
                    *connection.closing.borrow_mut() =
                        Some(CloseReason::Protocol(format!("send failed: {error}")));
                    break;
                }
            }
        }
        if connection.is_closing() {
            break;
        }
    }
    // What is still spooled will never be sent: the file goes now, not when the last
    // reference to the connection does.
    connection.outbound.borrow_mut().close_spool();
    // SAFETY: the reader keeps `connection.fd` open until `writer_done` fires below.
    unsafe { libc::shutdown(connection.fd, libc::SHUT_RDWR) };
    connection.writer_done.notify();
}

async fn read_loop(shard: Rc<Shard>, connection: Rc<Connection>, mut stream: TcpStream) {
    let limits = SessionLimits {
        subscriptions_max: shard.config.limits.subscriptions_per_client_max,
        ..SessionLimits::default()
    };
    let mut session = Session::new(limits);
    let mut receive = ReceiveBuffer::new(shard.config.limits.receive_buffer_bytes);
    let frame_bytes_max = shard.config.limits.frame_bytes_max;
    'reading: while !connection.is_closing() {
        let read = stream.read(receive.spare()).await;
        let count = match read {
            Ok(0) => break,
            Ok(count) => count,
            Err(error) => {
                debug!(client = %connection.name(), "read failed: {error}");
                break;
            }
        };
        receive.filled(count);
        connection.last_received.set(Instant::now());
        ShardStats::add(&shard.stats.bytes_in, count as u64);
        bump(&connection.stats.bytes_in, count as u64);
        loop {
            let frame = match receive.next_frame(frame_bytes_max) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(error) => {
                    connection.close(CloseReason::Protocol(error.to_string()), &shard.stats);
                    break 'reading;
                }
            };
            ShardStats::add(&shard.stats.frames_in, 1);
            bump(&connection.stats.frames_in, 1);
            if let Err(detail) = handle_frame(&shard, &connection, &mut session, frame).await {
                connection.close(CloseReason::Protocol(detail), &shard.stats);
                break 'reading;
            }
        }
    }
    finish(&shard, &connection, &mut session).await;
}

/// Cleans up after the reader stops: subscriptions go, the writer drains and shuts the socket.
async fn finish(shard: &Rc<Shard>, connection: &Rc<Connection>, session: &mut Session) {
    // While the server stops, other shards may already be gone: their routers go with them.
    if !shard.shutdown.load(std::sync::atomic::Ordering::Acquire) {
        let subscriptions: Vec<_> = session
            .subscriptions()
            .map(|(id, record)| (id.clone(), record.topic.clone()))
            .collect();
        for (sub_id, topic) in subscriptions {
            shard.unsubscribe(connection.id, &sub_id, &topic).await;
        }
        if connection.owns_name.get() {
            shard
                .journal_logoff(connection.id, connection.name_hash.get())
                .await;
        }
    }
    if !connection.is_closing() {
        *connection.closing.borrow_mut() = Some(CloseReason::Shutdown);
        connection.writer_wake.notify();
    }
    connection.writer_done.notified().await;
    connection.fd_open.set(false);
    shard.release(connection.id);
    shard.board.remove_client(connection.id);
    ShardStats::sub(&shard.stats.connections_open, 1);
    info!(client = %connection.name(), peer = %connection.peer, "disconnected");
}

/// Carries out one frame. An `Err` is a protocol violation that closes the connection.
async fn handle_frame(
    shard: &Rc<Shard>,
    connection: &Rc<Connection>,
    session: &mut Session,
    frame: Bytes,
) -> Result<(), String> {
    let header = parse_header(&frame).map_err(|error| format!("unreadable header: {error}"))?;
    let target = AckTarget::from_header(&header);
    for early in [AckType::Received, AckType::Parsed] {
        if target.acks.contains(early) {
            connection.send_inline(shard, |buffer| {
                reply::write_ack(buffer, early, &target, Outcome::Success)
            });
        }
    }
    let request = match session.handle(&header) {
        Ok(request) => request,
        Err(refusal) => {
            refuse(shard, connection, &target, &refusal);
            return Ok(());
        }
    };
    match request {
        Request::Logon => {
            let name = session.client_name().unwrap_or_default().to_string();
            let name_hash = stable_hash(name.as_bytes()).max(1);
            let mut last_persisted = 0;
            if shard.journaled.enabled() && session.has_client_name() {
                let user_id = session.user_id().map(str::to_owned);
                match shard
                    .journal_logon(connection.id, name_hash, user_id.as_deref())
                    .await
                {
                    LogonVerdict::Accepted {
                        last_persisted: persisted,
                        ..
                    } => {
                        last_persisted = persisted;
                        connection.owns_name.set(true);
                    }
                    LogonVerdict::NameInUse { holder } => {
                        session.undo_logon();
                        let refused = refusal(
                            Reason::NameInUse,
                            format!("client name {name:?} is held by connection {holder} of another user"),
                        );
                        refuse(shard, connection, &target, &refused);
                        return Ok(());
                    }
                }
            }
            info!(client = %name, peer = %connection.peer, user = session.user_id().unwrap_or(""), last_persisted, "logged on");
            *connection.name.borrow_mut() = name.clone();
            connection
                .stats
                .logged_on(&name, session.user_id().unwrap_or(""));
            connection.name_hash.set(name_hash);
            connection.logged_on.set(true);
            connection.send_inline(shard, |buffer| {
                reply::write_logon_ack(buffer, &target, &name, last_persisted)
            });
            return Ok(());
        }
        Request::Publish | Request::DeltaPublish => {
            ShardStats::add(&shard.stats.messages_published, 1);
            bump(&connection.stats.messages_in, 1);
            let delta = matches!(request, Request::DeltaPublish);
            let message = published_message(&frame, &header);
            let origin = Origin {
                connection: connection.id,
                client_name_hash: connection.name_hash.get(),
                client_sequence: header
                    .get(Key::Sequence)
                    .and_then(|value| value.as_u64())
                    .unwrap_or(0),
                persisted_ack: target.acks.contains(AckType::Persisted),
            };
            if shard.config.watchdog.debug_block_command
                && message.topic() == DEBUG_BLOCK_TOPIC.as_bytes()
            {
                block_for_debugging(shard, connection, message.payload());
                return Ok(());
            }
            let journaled = shard.journaled.contains(message.topic());
            if journaled && shard.journal_shared.has_failed() {
                let refused = refusal(
                    Reason::TxStoreFailure,
                    "the transaction log failed and takes no more messages until restart",
                );
                refuse(shard, connection, &target, &refused);
                if origin.persisted_ack {
                    connection.send_inline(shard, |buffer| {
                        reply::write_persisted_ack(
                            buffer,
                            origin.client_sequence,
                            Outcome::Failure(&refused),
                        )
                    });
                }
                return Ok(());
            }
            match shard.sow_check(&header, message.payload(), delta) {
                Ok(None) => shard.publish(message, origin).await,
                Ok(Some(info)) => {
                    if let Err(refused) = shard.publish_sow(message, info, origin).await {
                        refuse(shard, connection, &target, &refused);
                        return Ok(());
                    }
                }
                Err(refused) => {
                    refuse(shard, connection, &target, &refused);
                    return Ok(());
                }
            }
            if origin.persisted_ack && !journaled {
                // Not journaled: nothing more durable will happen to it, so it is as persisted
                // as it gets once routed (a publish store would otherwise never drain).
                connection.send_inline(shard, |buffer| {
                    reply::write_persisted_ack(buffer, origin.client_sequence, Outcome::Success)
                });
            }
        }
        Request::SowQuery(query) => {
            if !shard.is_sow_topic(&query.topic) {
                if let Some((sub_id, _)) = &query.subscription {
                    session.forget_subscription(sub_id);
                    // The session no longer knows the subscription this one was to replace:
                    // it goes from the router too, or nothing would ever remove it.
                    if let Some(previous) = &query.previous {
                        shard
                            .unsubscribe(connection.id, sub_id, &previous.topic)
                            .await;
                    }
                    connection.stats.unsubscribed(&sub_id.to_string());
                }
                let refused = refusal(
                    Reason::NotSupported,
                    format!(
                        "topic {} is not a SOW topic; declare it in [[sow.topics]] to query it",
                        String::from_utf8_lossy(&query.topic)
                    ),
                );
                refuse(shard, connection, &target, &refused);
                return Ok(());
            }
            // processed precedes group_begin (§5.4): it is queued before the query is sent.
            connection.ack_success(shard, &target, AckType::Processed);
            if let Some((sub_id, record)) = &query.subscription {
                connection
                    .stats
                    .subscribed(subscription_info(&header, sub_id, record));
            }
            if let (Some((sub_id, _)), Some(previous)) = (&query.subscription, &query.previous) {
                shard
                    .unsubscribe(connection.id, sub_id, &previous.topic)
                    .await;
            }
            shard
                .sow_query(connection.id, query, OwnedAckTarget::new(&target))
                .await;
            return Ok(());
        }
        Request::SowDelete { topic, by } => {
            let key = header
                .get(Key::SowKey)
                .map(|key| Box::from(&*key.to_bytes()));
            let data = frame.slice(header.payload_offset..);
            let refused = if !shard.is_sow_topic(&topic) {
                Some(refusal(
                    Reason::NotSupported,
                    format!(
                        "topic {} is not a SOW topic; declare it in [[sow.topics]]",
                        String::from_utf8_lossy(&topic)
                    ),
                ))
            } else if matches!(by, SowDeleteBy::Data) && data.is_empty() && key.is_none() {
                Some(refusal(
                    Reason::InvalidHeader,
                    "sow_delete needs a filter, sow_keys, a k header or data",
                ))
            } else {
                None
            };
            if let Some(refused) = refused {
                refuse(shard, connection, &target, &refused);
                return Ok(());
            }
            let journaled = shard.journaled.contains(&topic);
            let origin = Origin {
                connection: connection.id,
                client_name_hash: connection.name_hash.get(),
                client_sequence: header
                    .get(Key::Sequence)
                    .and_then(|value| value.as_u64())
                    .unwrap_or(0),
                persisted_ack: target.acks.contains(AckType::Persisted),
            };
            let request = crate::mesh::SowDeleteRequest {
                topic,
                by,
                key,
                data,
                filter_text: header
                    .get(Key::Filter)
                    .map(|filter| Box::from(&*filter.to_bytes())),
                ack: OwnedAckTarget::new(&target),
                origin,
            };
            shard.sow_delete(connection.id, request).await;
            if origin.persisted_ack && !journaled {
                // Not journaled: carried out is as persisted as it gets (a publish store would
                // otherwise never drain). Journaled deletes are acked once durable.
                connection.send_inline(shard, |buffer| {
                    reply::write_persisted_ack(buffer, origin.client_sequence, Outcome::Success)
                });
            }
            return Ok(());
        }
        Request::Subscribe {
            sub_id,
            record,
            previous,
        } if record.bookmark.is_some() => {
            if !shard.journaled.may_serve(&record.topic) {
                session.forget_subscription(&sub_id);
                // As for a refused sow_and_subscribe: a replaced subscription goes too.
                if let Some(previous) = &previous {
                    shard
                        .unsubscribe(connection.id, &sub_id, &previous.topic)
                        .await;
                }
                connection.stats.unsubscribed(&sub_id.to_string());
                let refused = refusal(
                    Reason::NotSupported,
                    format!(
                        "topic {} is not in the transaction log; add it to [journal] topics to subscribe with a bookmark",
                        record.topic.display()
                    ),
                );
                refuse(shard, connection, &target, &refused);
                return Ok(());
            }
            if let Some(previous) = previous {
                shard
                    .unsubscribe(connection.id, &sub_id, &previous.topic)
                    .await;
            }
            info!(client = %connection.name(), sub_id = %sub_id, topic = %record.topic.display(), bookmark = %String::from_utf8_lossy(header.bytes(Key::Bookmark).unwrap_or_default()), "bookmark subscription");
            connection
                .stats
                .subscribed(subscription_info(&header, &sub_id, &record));
            let subscription = BookmarkSubscription {
                connection: connection.id,
                sub_id,
                topic: record.topic,
                options: record.options,
                paused: record.paused,
                spec: *record.bookmark.expect("matched above"),
                ack: OwnedAckTarget::new(&target),
            };
            // Its acks come from the journal's shard, ordered with the replayed messages.
            shard.bookmark_subscribe(subscription).await;
            return Ok(());
        }
        Request::Subscribe {
            sub_id,
            record,
            previous,
        } => {
            if let Some(previous) = previous {
                shard
                    .unsubscribe(connection.id, &sub_id, &previous.topic)
                    .await;
            }
            shard
                .subscribe(
                    connection.id,
                    &sub_id,
                    &record.topic,
                    &record.options,
                    record.paused,
                )
                .await;
            connection
                .stats
                .subscribed(subscription_info(&header, &sub_id, &record));
            debug!(client = %connection.name(), sub_id = %sub_id, topic = %record.topic.display(), "subscribed");
        }
        Request::Unsubscribe(removed) => {
            for (sub_id, record) in removed {
                connection.stats.unsubscribed(&sub_id.to_string());
                shard
                    .unsubscribe(connection.id, &sub_id, &record.topic)
                    .await;
            }
        }
        Request::Pause(targets, paused) => {
            for (sub_id, record) in targets {
                connection.stats.paused(&sub_id.to_string(), paused);
                shard
                    .pause(connection.id, &sub_id, &record.topic, paused)
                    .await;
            }
        }
        Request::Flush => {
            shard.barrier().await;
            if target.acks.contains(AckType::Persisted) {
                if shard.journaled.enabled() {
                    shard
                        .journal_flush_persisted(connection.id, OwnedAckTarget::new(&target))
                        .await;
                } else {
                    connection.send_inline(shard, |buffer| {
                        reply::write_persisted_ack_for(buffer, &target, None, Outcome::Success)
                    });
                }
            }
        }
        Request::HeartbeatStart { interval_seconds } => {
            connection
                .heartbeat_interval
                .set(Some(Duration::from_secs(interval_seconds)));
        }
        Request::Beat => {}
    }
    for ack in [AckType::Processed, AckType::Completed, AckType::Stats] {
        if target.acks.contains(ack) {
            connection.send_inline(shard, |buffer| {
                reply::write_ack(buffer, ack, &target, Outcome::Success)
            });
        }
    }
    Ok(())
}

/// A subscription as the admin API lists it: ids and topic, and the filter and bookmark as sent.
fn subscription_info(
    header: &Header<'_>,
    sub_id: &tachyon_core::ids::SubId,
    record: &tachyon_core::session::SubscriptionRecord,
) -> SubscriptionInfo {
    let text = |key| {
        header
            .bytes(key)
            .filter(|bytes| !bytes.is_empty())
            .map(|bytes| String::from_utf8_lossy(bytes).into_owned())
    };
    SubscriptionInfo {
        sub_id: sub_id.to_string(),
        topic: record.topic.display(),
        filter: text(Key::Filter),
        bookmark: record.bookmark.as_ref().and(text(Key::Bookmark)),
        paused: record.paused,
    }
}

/// The topic of the testing-only command that blocks a shard (`[watchdog] debug_block_command`).
const DEBUG_BLOCK_TOPIC: &str = "tachyon.debug.block-shard";

/// Longest block the debug command may ask for.
const DEBUG_BLOCK_MS_MAX: u64 = 600_000;

/// Blocks this shard's thread as the watchdog test asks: nothing else on the shard runs.
fn block_for_debugging(shard: &Shard, connection: &Connection, payload: &[u8]) {
    let ms = std::str::from_utf8(payload)
        .ok()
        .and_then(|text| {
            let digits: String = text
                .split("\"ms\"")
                .nth(1)?
                .chars()
                .skip_while(|c| !c.is_ascii_digit())
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse::<u64>().ok()
        })
        .unwrap_or(0)
        .min(DEBUG_BLOCK_MS_MAX);
    warn!(client = %connection.name(), shard = %shard.id, ms, "debug command: blocking this shard's thread");
    std::thread::sleep(Duration::from_millis(ms));
}

/// Answers a refused command with a failure ack (always a processed one: a refusal is never
/// silent) plus one for each other ack type it asked for, so no client call is left waiting for an
/// ack that will never come; and logs it.
fn refuse(shard: &Shard, connection: &Connection, target: &AckTarget<'_>, refusal: &Refusal) {
    ShardStats::add(&shard.stats.commands_refused, 1);
    let command = target
        .command
        .map(|command| command.as_str())
        .unwrap_or("?");
    warn!(client = %connection.name(), command, "refused: {refusal}");
    let acks = target.acks.with(AckType::Processed);
    for ack in [AckType::Processed, AckType::Completed, AckType::Stats] {
        if acks.contains(ack) {
            connection.send_inline(shard, |buffer| {
                reply::write_ack(buffer, ack, target, Outcome::Failure(refusal))
            });
        }
    }
}
