//! Guaranteed publishing on the journal's shard: appending journaled messages, waiting for
//! durability, persisted acks, duplicate detection, and the logon rules that need the log.
//!
//! Every function that touches the [`crate::journal::JournalService`] runs on shard 0; the
//! `Shard` methods without `_at_owner` are called on the connection's shard and forward.
//!
//! Durability is observed by polling the journal while a write is in flight: glommio offers no
//! readiness wait for a foreign descriptor (its reads of the journal's non-blocking eventfd
//! would return EAGAIN at once), and a write+fdatasync takes tens of microseconds, so a
//! [`COMPLETION_POLL_INTERVAL`] sleep between polls costs a few wake-ups per write group and
//! nothing per message. With nothing in flight the task sleeps until the next submit.

use crate::connection::CloseReason;
use crate::journal::{
    wire_bookmark, LogonVerdict, Origin, RecordHeaders, Undurable, Waiter, WaiterReply,
};
use crate::mesh::{DeliveryLane, PublishLane};
use crate::shard::Shard;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tachyon_core::filter::MessageContext;
use tachyon_core::ids::ConnectionId;
use tachyon_core::message::PublishedMessage;
use tachyon_core::protocol::reply::{self, Outcome};
use tachyon_core::session::{refuse, OwnedAckTarget, Reason, Refusal};
use tachyon_storage::journal::{JournalError, Record, RecordKind, Sequence};
use tracing::{debug, error, info, warn};

/// Sleep between polls of the journal while a write+sync is in flight.
const COMPLETION_POLL_INTERVAL: Duration = Duration::from_micros(10);

/// How often live bookmark subscriptions hear how far the log holds what they were sent.
const BOOKMARK_PERSISTED_ACK_INTERVAL: Duration = Duration::from_secs(1);

/// Sleep of a publisher waiting for the disk to catch up (append buffer full).
const BACKPRESSURE_POLL_INTERVAL: Duration = Duration::from_micros(50);

/// What the journal made of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// In the log (not yet durable): go on and route or apply it.
    Appended,
    /// Already in the log: do nothing again; its persisted ack follows the original's.
    Duplicate,
    /// The log refused it; the publisher got a failed persisted ack.
    Refused,
}

impl Shard {
    // ---- on the connection's shard --------------------------------------------------------

    /// Carries out a logon's name rules at the journal's shard and returns the verdict.
    pub(crate) async fn journal_logon(
        &self,
        connection: ConnectionId,
        client_name_hash: u64,
        user_id: Option<&str>,
    ) -> LogonVerdict {
        if self.journal.is_some() {
            return self
                .journal_logon_at_owner(connection, client_name_hash, user_id)
                .await;
        }
        let token = self.new_token(1);
        let lanes = self
            .lanes
            .as_ref()
            .expect("the journal lives on another shard");
        let request = PublishLane::Logon {
            connection,
            client_name_hash,
            user_id: user_id.map(Box::from),
            token,
        };
        if lanes.publish.send_to(0, request).await.is_err() {
            self.reply_arrived(token);
        }
        self.replies(token).await;
        self.logon_verdicts
            .borrow_mut()
            .remove(&token)
            .unwrap_or(LogonVerdict::Accepted {
                last_persisted: 0,
                replaced: None,
            })
    }

    /// Frees the connection's client name at the journal's shard.
    pub(crate) async fn journal_logoff(&self, connection: ConnectionId, client_name_hash: u64) {
        if let Some(service) = self.journal.as_ref() {
            service.logoff(connection, client_name_hash);
            return;
        }
        let lanes = self
            .lanes
            .as_ref()
            .expect("the journal lives on another shard");
        let _ = lanes
            .publish
            .send_to(
                0,
                PublishLane::Logoff {
                    connection,
                    client_name_hash,
                },
            )
            .await;
    }

    /// A `flush` with `a=persisted`: the persisted ack follows once everything this connection
    /// published before it is durable (the caller ran the routing barrier first).
    pub(crate) async fn journal_flush_persisted(
        &self,
        connection: ConnectionId,
        ack: OwnedAckTarget,
    ) {
        if self.journal.is_some() {
            self.flush_persisted_at_owner(connection, ack).await;
            return;
        }
        let lanes = self
            .lanes
            .as_ref()
            .expect("the journal lives on another shard");
        let _ = lanes
            .publish
            .send_to(0, PublishLane::FlushPersisted { connection, ack })
            .await;
    }

    // ---- on the journal's shard -----------------------------------------------------------

    pub(crate) async fn journal_logon_at_owner(
        &self,
        connection: ConnectionId,
        client_name_hash: u64,
        user_id: Option<&str>,
    ) -> LogonVerdict {
        let service = self.journal_service();
        let verdict = service.logon(connection, client_name_hash, user_id);
        if let LogonVerdict::Accepted {
            replaced: Some(old),
            ..
        } = &verdict
        {
            info!(client = %self.client_name(connection), old = %old, new = %connection, "client name logged on again: closing the older connection");
            self.close_connection(*old, CloseReason::Replaced).await;
        }
        verdict
    }

    /// Closes a connection on whatever shard holds it.
    pub(crate) async fn close_connection(&self, connection: ConnectionId, reason: CloseReason) {
        if connection.shard == self.id {
            if let Some(local) = self.connection(connection) {
                local.close(reason, &self.stats);
            }
            return;
        }
        let lanes = self.lanes.as_ref().expect("remote connections need lanes");
        let _ = lanes
            .delivery
            .send_to(
                connection.shard.index(),
                DeliveryLane::Close { connection, reason },
            )
            .await;
    }

    pub(crate) async fn flush_persisted_at_owner(
        &self,
        connection: ConnectionId,
        ack: OwnedAckTarget,
    ) {
        let service = self.journal_service();
        let failure = service.failure.borrow().clone();
        if let Some(failure) = failure {
            let refusal = refuse(Reason::TxStoreFailure, failure);
            let mut bytes = Vec::new();
            reply::write_persisted_ack_for(
                &mut bytes,
                &ack.as_target(),
                None,
                Outcome::Failure(&refusal),
            );
            self.send_frames(connection, bytes, None).await;
            return;
        }
        let sequence = service.journal.borrow().last_sequence();
        if service.durable_up_to() >= sequence {
            let mut bytes = Vec::new();
            reply::write_persisted_ack_for(
                &mut bytes,
                &ack.as_target(),
                service.durable_bookmark(),
                Outcome::Success,
            );
            self.send_frames(connection, bytes, None).await;
            return;
        }
        service.waiters.borrow_mut().push_back(Waiter {
            sequence,
            connection,
            reply: WaiterReply::Flush { ack },
        });
    }

    /// Appends a journaled message before it is routed or applied: `Appended` (its bookmark is
    /// set), or a duplicate or refusal (the publisher hears about either through its acks).
    pub(crate) async fn journal_append(
        &self,
        message: &mut PublishedMessage,
        origin: &Origin,
        kind: RecordKind,
        extra: RecordHeaders<'_>,
    ) -> Admission {
        let service = self.journal_service();
        let publisher = origin.publisher();
        if publisher.client_sequence != 0
            && service
                .journal
                .borrow()
                .publishers()
                .is_duplicate(publisher)
        {
            // Already in the log (a publish store re-sending after a reconnect): not delivered
            // again, acked once the original is durable.
            debug!(client = %self.client_name(origin.connection), connection = %origin.connection, sequence = publisher.client_sequence, "duplicate publish discarded");
            if origin.persisted_ack {
                let sequence = service.journal.borrow().last_sequence();
                service.waiters.borrow_mut().push_back(Waiter {
                    sequence,
                    connection: origin.connection,
                    reply: WaiterReply::Publish {
                        client_sequence: publisher.client_sequence,
                    },
                });
                if service.durable_up_to() >= sequence {
                    self.on_durable(sequence).await;
                }
            }
            return Admission::Duplicate;
        }
        let mut headers = service.headers_scratch.take();
        RecordHeaders {
            correlation_id: message.correlation_id(),
            ..extra
        }
        .encode(&mut headers);
        let record = Record {
            kind,
            timestamp_ns: message.received_unix_ns,
            topic: message.topic(),
            publisher,
            headers: &headers,
            payload: message.payload(),
        };
        let appended = loop {
            let result = service.journal.borrow_mut().append(&record);
            match result {
                Err(JournalError::Backpressure { .. }) => {
                    // The disk is behind: this publisher (and, through the bounded lanes, the
                    // others) waits for a write to complete.
                    self.submit_journal();
                    glommio::timer::sleep(BACKPRESSURE_POLL_INTERVAL).await;
                }
                other => break other,
            }
        };
        *service.headers_scratch.borrow_mut() = headers;
        let sequence = match appended {
            Ok(sequence) => sequence,
            Err(error) => {
                let refusal = refuse(Reason::TxStoreFailure, error.to_string());
                warn!(client = %self.client_name(origin.connection), connection = %origin.connection, topic = %String::from_utf8_lossy(message.topic()), "journal refused a message: {error}");
                if matches!(error, JournalError::Failed { .. }) {
                    self.on_journal_failure(error.to_string()).await;
                }
                self.refuse_persisted(origin, &refusal).await;
                return Admission::Refused;
            }
        };
        message.bookmark = Some(wire_bookmark(publisher.client_name_hash, sequence));
        service
            .shared
            .last_sequence
            .store(sequence, Ordering::Release);
        service.undurable.borrow_mut().push_back(Undurable {
            sequence,
            message: message.clone(),
            publisher,
            deliverable: kind != RecordKind::SowDelete,
        });
        if origin.persisted_ack {
            service.waiters.borrow_mut().push_back(Waiter {
                sequence,
                connection: origin.connection,
                reply: WaiterReply::Publish {
                    client_sequence: publisher.client_sequence,
                },
            });
        }
        self.submit_journal();
        Admission::Appended
    }

    /// Starts a write of what is buffered if none is in flight and wakes the completion task.
    fn submit_journal(&self) {
        let service = self.journal_service();
        // A failure is reported by the completion task's next poll.
        if let Ok(true) = service.journal.borrow_mut().submit() {
            service.submitted.notify();
        }
    }

    /// A failed persisted ack for one publish (and nothing when it asked for none: the log says).
    async fn refuse_persisted(&self, origin: &Origin, refusal: &Refusal) {
        if !origin.persisted_ack {
            return;
        }
        let mut bytes = Vec::new();
        reply::write_persisted_ack(
            &mut bytes,
            origin.client_sequence,
            Outcome::Failure(refusal),
        );
        self.send_frames(origin.connection, bytes, None).await;
    }

    /// The task that turns completed writes into persisted acks and durable deliveries.
    pub(crate) fn spawn_journal_completions(self: &Rc<Self>) {
        self.spawn_persisted_ack_conflation();
        self.spawn_bookmark_persisted_acks();
        let shard = self.clone();
        glommio::spawn_local(async move {
            let service = shard.journal_service();
            loop {
                if service.failure.borrow().is_some() {
                    return;
                }
                if !service.journal.borrow().write_in_flight() {
                    service.submitted.notified().await;
                    continue;
                }
                let polled = service.journal.borrow_mut().poll_completions();
                match polled {
                    Ok(Some(durable)) => {
                        if let Some(group) = durable.group {
                            let shared = &service.shared;
                            crate::board::bump(&shared.records_written, group.records);
                            crate::board::bump(&shared.bytes_written, group.bytes);
                            crate::board::bump(&shared.writes, 1);
                            shared.write_latency.record(group.took);
                        }
                        shard.on_durable(durable.up_to).await
                    }
                    Ok(None) => glommio::timer::sleep(COMPLETION_POLL_INTERVAL).await,
                    Err(error) => {
                        shard.on_journal_failure(error.to_string()).await;
                        return;
                    }
                }
            }
        })
        .detach();
    }

    /// Everything up to `up_to` is durable: ack publishers, remember their sequences, and hand
    /// the messages to live bookmark subscriptions.
    pub(crate) async fn on_durable(&self, up_to: Sequence) {
        let service = self.journal_service();
        service.shared.durable_up_to.store(up_to, Ordering::Release);
        service
            .durable_generation
            .set(service.durable_generation.get() + 1);
        let mut conflated: HashMap<ConnectionId, u64> = HashMap::new();
        let mut flushes = Vec::new();
        {
            let mut waiters = service.waiters.borrow_mut();
            while waiters
                .front()
                .is_some_and(|waiter| waiter.sequence <= up_to)
            {
                let waiter = waiters.pop_front().expect("checked");
                match waiter.reply {
                    WaiterReply::Publish { client_sequence } => {
                        let entry = conflated.entry(waiter.connection).or_insert(0);
                        *entry = (*entry).max(client_sequence);
                    }
                    WaiterReply::Flush { ack } => flushes.push((waiter.connection, ack)),
                }
            }
        }
        let mut durable = Vec::new();
        {
            let mut undurable = service.undurable.borrow_mut();
            while undurable
                .front()
                .is_some_and(|entry| entry.sequence <= up_to)
            {
                let entry = undurable.pop_front().expect("checked");
                service.note_persisted(entry.publisher);
                durable.push((entry.sequence, entry.message, entry.deliverable));
            }
        }
        if self.config.journal.persisted_ack_interval_ms == 0 {
            self.send_persisted_acks(conflated).await;
        } else {
            let mut backlog = service.ack_backlog.borrow_mut();
            for (connection, client_sequence) in conflated {
                let entry = backlog.entry(connection).or_insert(0);
                *entry = (*entry).max(client_sequence);
            }
        }
        for (connection, ack) in flushes {
            let mut bytes = Vec::with_capacity(96);
            reply::write_persisted_ack_for(
                &mut bytes,
                &ack.as_target(),
                service.durable_bookmark(),
                Outcome::Success,
            );
            self.send_frames(connection, bytes, None).await;
        }
        for (sequence, message, deliverable) in durable {
            if deliverable {
                self.route_durable(sequence, &message).await;
            } else {
                service.routed_up_to.set(sequence);
            }
        }
    }

    /// Sends one success persisted ack per connection, naming its highest durable sequence.
    async fn send_persisted_acks(&self, conflated: HashMap<ConnectionId, u64>) {
        for (connection, client_sequence) in conflated {
            let mut bytes = Vec::with_capacity(64);
            reply::write_persisted_ack(&mut bytes, client_sequence, Outcome::Success);
            self.send_frames(connection, bytes, None).await;
        }
    }

    /// Tells live bookmark subscriptions that asked for persisted acks how far the log holds
    /// what they were sent, once per [`BOOKMARK_PERSISTED_ACK_INTERVAL`] when it moved.
    fn spawn_bookmark_persisted_acks(self: &Rc<Self>) {
        let shard = self.clone();
        glommio::spawn_local(async move {
            let service = shard.journal_service();
            loop {
                glommio::timer::sleep(BOOKMARK_PERSISTED_ACK_INTERVAL).await;
                let mut due = Vec::new();
                for ((connection, _), state) in service.bookmark_acks.borrow_mut().iter_mut() {
                    if state.delivered != state.acked {
                        state.acked = state.delivered;
                        let mut bytes = Vec::with_capacity(128);
                        reply::write_persisted_ack_for(
                            &mut bytes,
                            &state.ack.as_target(),
                            state.delivered,
                            Outcome::Success,
                        );
                        due.push((*connection, bytes));
                    }
                }
                for (connection, bytes) in due {
                    shard.send_frames(connection, bytes, None).await;
                }
            }
        })
        .detach();
    }

    /// With `persisted_ack_interval_ms` set: sends the backlog of persisted acks each interval.
    fn spawn_persisted_ack_conflation(self: &Rc<Self>) {
        let interval = Duration::from_millis(self.config.journal.persisted_ack_interval_ms);
        if interval.is_zero() {
            return;
        }
        let shard = self.clone();
        glommio::spawn_local(async move {
            let service = shard.journal_service();
            loop {
                glommio::timer::sleep(interval).await;
                let backlog = std::mem::take(&mut *service.ack_backlog.borrow_mut());
                if !backlog.is_empty() {
                    shard.send_persisted_acks(backlog).await;
                }
            }
        })
        .detach();
    }

    /// Delivers a message that just became durable to the live bookmark subscriptions.
    async fn route_durable(&self, sequence: Sequence, message: &PublishedMessage) {
        let service = self.journal_service();
        let mut deliveries = Vec::new();
        {
            let context = MessageContext {
                topic: message.topic(),
                correlation_id: message.correlation_id(),
                ..MessageContext::default()
            };
            service.bookmark_router.borrow_mut().route(
                message.topic(),
                message.payload(),
                &context,
                &mut deliveries,
            );
        }
        // Matched before any await: a replay that reads up to here and then joins the router
        // gets the rest live and none of these twice.
        service.routed_up_to.set(sequence);
        {
            let mut acks = service.bookmark_acks.borrow_mut();
            if !acks.is_empty() {
                for delivery in &deliveries {
                    for sub_id in &delivery.sub_ids {
                        if let Some(state) = acks.get_mut(&(delivery.connection, sub_id.clone())) {
                            state.delivered = message.bookmark;
                        }
                    }
                }
            }
        }
        let mut completed = Vec::new();
        {
            let mut ranges = service.live_ranges.borrow_mut();
            if !ranges.is_empty() {
                let timestamp_ns = message.received_unix_ns;
                for delivery in &mut deliveries {
                    let connection = delivery.connection;
                    delivery.sub_ids.retain(|sub_id| {
                        let Some(range) = ranges.get_mut(&(connection, sub_id.clone())) else {
                            return true;
                        };
                        if range.excludes(sequence, timestamp_ns) {
                            tracing::debug!(sequence, ?range, "live range passed its end");
                            completed.push((connection, sub_id.clone()));
                            return false;
                        }
                        range.sent(message.bookmark);
                        if range.ends_at(sequence) {
                            tracing::debug!(sequence, ?range, "live range reached its end");
                            completed.push((connection, sub_id.clone()));
                        }
                        true
                    });
                }
                deliveries.retain(|delivery| !delivery.sub_ids.is_empty());
            }
        }
        for delivery in deliveries {
            self.dispatch(delivery, message, None).await;
        }
        for (connection, sub_id) in completed {
            self.complete_live_range(connection, &sub_id).await;
        }
    }

    /// The journal failed: it takes no more writes; every waiting publisher hears it.
    pub(crate) async fn on_journal_failure(&self, cause: String) {
        let service = self.journal_service();
        if service.failure.borrow().is_some() {
            return;
        }
        error!("transaction log failed, refusing journaled publishes until restart: {cause}");
        *service.failure.borrow_mut() = Some(cause.clone());
        service.shared.failed.store(true, Ordering::Release);
        service
            .durable_generation
            .set(service.durable_generation.get() + 1);
        let refusal = refuse(Reason::TxStoreFailure, cause);
        let waiters: Vec<Waiter> = service.waiters.borrow_mut().drain(..).collect();
        // Acks already earned before the failure still go out as successes.
        let earned = std::mem::take(&mut *service.ack_backlog.borrow_mut());
        self.send_persisted_acks(earned).await;
        service.undurable.borrow_mut().clear();
        let mut conflated: HashMap<ConnectionId, u64> = HashMap::new();
        for waiter in waiters {
            match waiter.reply {
                WaiterReply::Publish { client_sequence } => {
                    let entry = conflated.entry(waiter.connection).or_insert(0);
                    *entry = (*entry).max(client_sequence);
                }
                WaiterReply::Flush { ack } => {
                    let mut bytes = Vec::new();
                    reply::write_persisted_ack_for(
                        &mut bytes,
                        &ack.as_target(),
                        None,
                        Outcome::Failure(&refusal),
                    );
                    self.send_frames(waiter.connection, bytes, None).await;
                }
            }
        }
        for (connection, client_sequence) in conflated {
            let mut bytes = Vec::new();
            reply::write_persisted_ack(&mut bytes, client_sequence, Outcome::Failure(&refusal));
            self.send_frames(connection, bytes, None).await;
        }
    }

    /// Removes segments past the retention limits, never one a replay may still read or one
    /// holding anything not yet durable.
    pub(crate) fn apply_journal_retention(&self) {
        let Some(service) = self.journal.as_ref() else {
            return;
        };
        let Some(policy) = self.config.journal.retention() else {
            return;
        };
        if service.failure.borrow().is_some() || !service.replays.borrow().is_empty() {
            return;
        }
        let protect_from = service.durable_up_to() + 1;
        let now_unix_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos() as u64)
            .unwrap_or(0);
        let applied =
            service
                .journal
                .borrow_mut()
                .apply_retention(&policy, protect_from, now_unix_ns);
        match applied {
            Ok(report) if report.removed_segments > 0 => {
                info!(removed_segments = report.removed_segments, removed_bytes = report.removed_bytes, first_sequence_kept = ?report.first_sequence_kept, "journal retention applied");
            }
            Ok(_) => {}
            Err(error) => warn!("journal retention failed: {error}"),
        }
    }

    /// At shutdown: waits until everything appended is durable, so a clean stop loses nothing.
    pub(crate) async fn drain_journal(&self) {
        let Some(service) = self.journal.as_ref() else {
            return;
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if service.failure.borrow().is_some() {
                return;
            }
            let (last, durable) = {
                let journal = service.journal.borrow();
                (journal.last_sequence(), journal.durable_up_to())
            };
            if durable >= last {
                info!(durable_up_to = durable, "transaction log drained");
                return;
            }
            if std::time::Instant::now() > deadline {
                warn!(
                    last,
                    durable, "transaction log still writing at the shutdown deadline"
                );
                return;
            }
            self.submit_journal();
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
    }
}
