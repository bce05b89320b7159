//! Bookmark subscriptions: replay from the transaction log, then live, with no gap and no
//! duplicate at the seam.
//!
//! A bookmark subscription only ever sees durable messages. Its replay runs on the journal's
//! shard and reads the segment files up to the point the live path has already handed to the
//! bookmark router ([`crate::journal::JournalService::routed_up_to`]). When a pass finds nothing
//! more to read, the subscription joins the bookmark router in the same synchronous step, so
//! every message after that point reaches it live and none before it does twice.
//!
//! Replay is paced by the subscriber: a batch is sent, then the replay waits until the
//! connection's queue is below half its budget, so history never turns a healthy client into a
//! slow consumer.

use crate::journal::{wire_bookmark, BookmarkAckState, RecordHeaders};
use crate::mesh::{ControlLane, DeliveryLane};
use crate::shard::Shard;
use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;
use tachyon_core::bookmark::{BookmarkPoint, BookmarkSpec, WireBookmark};
use tachyon_core::filter::MessageContext;
use tachyon_core::ids::{ConnectionId, SubId};
use tachyon_core::protocol::reply::{self, Outcome};
use tachyon_core::protocol::AckType;
use tachyon_core::router::{DeliveryOptions, Router};
use tachyon_core::session::{refuse, OwnedAckTarget, Reason};
use tachyon_core::topic::TopicSpec;
use tachyon_storage::journal::{JournalReader, RecordKind, ReplayStart, Sequence};
use tracing::{debug, info, warn};

/// Bytes of replayed frames sent to a connection at a time.
const REPLAY_BATCH_BYTES: usize = 256 * 1024;

/// Records read per pass before the replay yields to other work.
const REPLAY_RECORDS_PER_PASS: usize = 4096;

/// How often a paced replay checks whether the subscriber's queue drained.
const REPLAY_DRAIN_POLL: Duration = Duration::from_millis(1);

/// A validated bookmark subscription on its way to the journal's shard.
#[derive(Debug)]
pub(crate) struct BookmarkSubscription {
    pub connection: ConnectionId,
    pub sub_id: SubId,
    pub topic: TopicSpec,
    pub options: DeliveryOptions,
    pub paused: bool,
    pub spec: BookmarkSpec,
    pub ack: OwnedAckTarget,
}

/// Where replay stops.
#[derive(Debug, Clone, Copy)]
enum ReplayEnd {
    /// After this sequence (inclusive).
    Sequence(Sequence),
    /// Before records stamped at or after this time (nanoseconds since the Unix epoch).
    TimestampNs(u64),
}

/// Where replay starts, resolved against the log.
#[derive(Debug, Clone, Copy)]
enum ReplayFrom {
    Log(ReplayStart),
    Now,
}

/// Resolves the start of a bookmark subscription. A list starts at its oldest point; a list that
/// mixes timestamps with message bookmarks starts at the beginning (the client's bookmark store
/// discards what it already saw).
fn resolve_start(spec: &BookmarkSpec, last_sequence: Sequence) -> Result<ReplayFrom, String> {
    let mut oldest_sequence: Option<Sequence> = None;
    let mut oldest_timestamp: Option<u64> = None;
    let mut epoch = false;
    let mut now = false;
    for point in &spec.start {
        match *point {
            BookmarkPoint::Epoch => epoch = true,
            BookmarkPoint::Now => now = true,
            BookmarkPoint::After(bookmark) => {
                if bookmark.sequence > last_sequence {
                    return Err(format!(
                        "bookmark {bookmark} is past the end of the transaction log (last sequence {last_sequence})"
                    ));
                }
                let first = if spec.start_inclusive {
                    bookmark.sequence
                } else {
                    bookmark.sequence + 1
                };
                oldest_sequence = Some(oldest_sequence.map_or(first, |old| old.min(first)));
            }
            BookmarkPoint::Timestamp { unix_ns } => {
                let first = if spec.start_inclusive || spec.end.is_none() {
                    unix_ns
                } else {
                    unix_ns + 1
                };
                oldest_timestamp = Some(oldest_timestamp.map_or(first, |old| old.min(first)));
            }
        }
    }
    Ok(match (epoch, oldest_sequence, oldest_timestamp, now) {
        (true, ..) | (false, Some(_), Some(_), _) => ReplayFrom::Log(ReplayStart::Beginning),
        (false, Some(sequence), None, _) => ReplayFrom::Log(ReplayStart::Sequence(sequence)),
        (false, None, Some(unix_ns), _) => ReplayFrom::Log(ReplayStart::TimestampNs(unix_ns)),
        (false, None, None, _) => ReplayFrom::Now,
    })
}

/// Resolves where a range stops; `None` for an open range or a plain bookmark.
fn resolve_end(spec: &BookmarkSpec, durable: Sequence) -> Option<ReplayEnd> {
    let end = spec.end.as_ref()?;
    let mut result: Option<ReplayEnd> = None;
    for point in &end.points {
        let this = match *point {
            BookmarkPoint::Epoch => ReplayEnd::Sequence(0),
            BookmarkPoint::Now => ReplayEnd::Sequence(durable),
            BookmarkPoint::After(bookmark) => ReplayEnd::Sequence(if end.inclusive {
                bookmark.sequence
            } else {
                bookmark.sequence.saturating_sub(1)
            }),
            BookmarkPoint::Timestamp { unix_ns } => {
                ReplayEnd::TimestampNs(if end.inclusive { unix_ns + 1 } else { unix_ns })
            }
        };
        // Several end points: the latest one ends the range.
        result = Some(match (result, this) {
            (None, this) => this,
            (Some(ReplayEnd::Sequence(a)), ReplayEnd::Sequence(b)) => ReplayEnd::Sequence(a.max(b)),
            (Some(ReplayEnd::TimestampNs(a)), ReplayEnd::TimestampNs(b)) => {
                ReplayEnd::TimestampNs(a.max(b))
            }
            (Some(previous), _) => previous,
        });
    }
    result
}

/// A range subscription that went live because its end lies beyond the log: it completes when
/// a durable message reaches the end.
#[derive(Debug)]
pub(crate) struct LiveRange {
    end: ReplayEnd,
    ack: OwnedAckTarget,
    /// The bookmark of the last message it was sent (for the completed ack).
    last_sent: Option<WireBookmark>,
}

impl LiveRange {
    /// Whether a durable message at `sequence`, stamped `timestamp_ns`, falls past the end.
    pub(crate) fn excludes(&self, sequence: Sequence, timestamp_ns: u64) -> bool {
        self.end.passed(sequence, timestamp_ns)
    }

    /// Whether the message just sent at `sequence` was the last one the range wants.
    pub(crate) fn ends_at(&self, sequence: Sequence) -> bool {
        matches!(self.end, ReplayEnd::Sequence(last) if sequence >= last)
    }

    /// Records a message sent to the range.
    pub(crate) fn sent(&mut self, bookmark: Option<WireBookmark>) {
        self.last_sent = bookmark.or(self.last_sent);
    }
}

impl ReplayEnd {
    /// Whether the end lies beyond what the log holds (`up_to`) and now.
    fn is_ahead(self, up_to: Sequence) -> bool {
        match self {
            ReplayEnd::Sequence(last) => last > up_to,
            ReplayEnd::TimestampNs(before) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|elapsed| elapsed.as_nanos() as u64)
                    .unwrap_or(0);
                before > now
            }
        }
    }

    fn passed(self, sequence: Sequence, timestamp_ns: u64) -> bool {
        match self {
            ReplayEnd::Sequence(last) => sequence > last,
            ReplayEnd::TimestampNs(before) => timestamp_ns >= before,
        }
    }
}

impl Shard {
    /// On the connection's shard: hands a bookmark subscription to the journal's shard, which
    /// sends its acks and messages.
    pub(crate) async fn bookmark_subscribe(self: &Rc<Self>, subscription: BookmarkSubscription) {
        if self.journal.is_some() {
            self.start_bookmark_subscription(subscription).await;
            return;
        }
        let lanes = self
            .lanes
            .as_ref()
            .expect("the journal lives on another shard");
        let _ = lanes
            .control
            .send_to(0, ControlLane::BookmarkSubscribe(Box::new(subscription)))
            .await;
    }

    /// On the journal's shard: acks the subscription, then replays or goes live.
    pub(crate) async fn start_bookmark_subscription(
        self: &Rc<Self>,
        subscription: BookmarkSubscription,
    ) {
        let service = self.journal_service();
        let target = subscription.ack.as_target();
        let last_sequence = service.journal.borrow().last_sequence();
        let routed = service.routed_up_to.get();
        let start = match resolve_start(&subscription.spec, last_sequence) {
            Ok(start) => start,
            Err(detail) => {
                warn!(client = %self.client_name(subscription.connection), connection = %subscription.connection, sub_id = %subscription.sub_id, "bookmark subscription refused: {detail}");
                let refusal = refuse(Reason::InvalidBookmark, detail);
                let mut bytes = Vec::new();
                for ack in [AckType::Processed, AckType::Completed] {
                    if ack == AckType::Processed || target.acks.contains(ack) {
                        reply::write_ack(&mut bytes, ack, &target, Outcome::Failure(&refusal));
                    }
                }
                self.send_frames(subscription.connection, bytes, None).await;
                self.subscription_ended(subscription.connection, &subscription.sub_id);
                return;
            }
        };
        let end = resolve_end(&subscription.spec, routed);
        let mut bytes = Vec::new();
        if target.acks.contains(AckType::Processed) {
            reply::write_ack(&mut bytes, AckType::Processed, &target, Outcome::Success);
        }
        self.send_frames(subscription.connection, bytes, None).await;
        match start {
            ReplayFrom::Now => {
                debug!(client = %self.client_name(subscription.connection), connection = %subscription.connection, sub_id = %subscription.sub_id, "bookmark subscription from now");
                self.go_live(&subscription, None, true).await;
            }
            ReplayFrom::Log(from) => {
                let cancel = Rc::new(Cell::new(false));
                service.replays.borrow_mut().insert(
                    (subscription.connection, subscription.sub_id.clone()),
                    cancel.clone(),
                );
                let shard = self.clone();
                glommio::spawn_local(async move {
                    shard.replay(subscription, from, end, cancel).await;
                })
                .detach();
            }
        }
    }

    /// Joins the bookmark router and sends the completed (and persisted) acks the
    /// subscription asked for, naming the last message it was sent.
    /// `last_sent: None` with `announce == false` is a range going live: its completed ack
    /// waits until the range ends.
    async fn go_live(
        &self,
        subscription: &BookmarkSubscription,
        last_sent: Option<WireBookmark>,
        announce: bool,
    ) {
        let service = self.journal_service();
        if subscription.ack.acks.contains(AckType::Persisted) {
            service.bookmark_acks.borrow_mut().insert(
                (subscription.connection, subscription.sub_id.clone()),
                BookmarkAckState {
                    ack: subscription.ack.clone(),
                    delivered: last_sent,
                    acked: last_sent,
                },
            );
        }
        {
            let mut router = service.bookmark_router.borrow_mut();
            router.add(
                subscription.connection,
                subscription.sub_id.clone(),
                &subscription.topic,
                subscription.options.clone(),
            );
            router.set_paused(
                subscription.connection,
                &subscription.sub_id,
                subscription.paused,
            );
        }
        if announce {
            self.finish_replay_acks(subscription, last_sent).await;
        }
    }

    async fn finish_replay_acks(
        &self,
        subscription: &BookmarkSubscription,
        last_sent: Option<WireBookmark>,
    ) {
        let target = subscription.ack.as_target();
        let mut bytes = Vec::new();
        if target.acks.contains(AckType::Completed) {
            reply::write_completed_ack(&mut bytes, &target, last_sent);
        }
        if target.acks.contains(AckType::Persisted) && last_sent.is_some() {
            reply::write_persisted_ack_for(&mut bytes, &target, last_sent, Outcome::Success);
        }
        if !bytes.is_empty() {
            self.send_frames(subscription.connection, bytes, None).await;
        }
    }

    /// Streams matching durable records to the subscriber, then goes live (or, for a range,
    /// completes).
    async fn replay(
        self: Rc<Self>,
        subscription: BookmarkSubscription,
        from: ReplayStart,
        end: Option<ReplayEnd>,
        cancel: Rc<Cell<bool>>,
    ) {
        let service = self.journal_service();
        let started = std::time::Instant::now();
        let dir = service.journal.borrow().journal_dir().to_path_buf();
        let mut reader = match JournalReader::open(&dir, from) {
            Ok(reader) => reader,
            Err(error) => {
                warn!(client = %self.client_name(subscription.connection), connection = %subscription.connection, "replay cannot open the transaction log: {error}");
                self.fail_replay(&subscription, error.to_string()).await;
                return;
            }
        };
        let mut matcher = Router::new();
        matcher.add(
            subscription.connection,
            subscription.sub_id.clone(),
            &subscription.topic,
            subscription.options.clone(),
        );
        let mut deliveries = Vec::new();
        let mut last_sent: Option<WireBookmark> = None;
        let mut replayed = 0u64;
        loop {
            if cancel.get() {
                return;
            }
            reader.set_limit(service.routed_up_to.get());
            let mut batch = Vec::new();
            let mut read = 0usize;
            let mut finished = false;
            loop {
                let view = match reader.next_record() {
                    Ok(Some(view)) => view,
                    Ok(None) => break,
                    Err(error) => {
                        warn!(client = %self.client_name(subscription.connection), connection = %subscription.connection, "replay failed: {error}");
                        self.fail_replay(&subscription, error.to_string()).await;
                        return;
                    }
                };
                read += 1;
                let record = view.record;
                if end.is_some_and(|end| end.passed(view.bookmark.sequence, record.timestamp_ns)) {
                    finished = true;
                    break;
                }
                if record.kind != RecordKind::SowDelete && subscription.topic.matches(record.topic)
                {
                    deliveries.clear();
                    let correlation_id = RecordHeaders::decode(record.headers)
                        .and_then(|headers| headers.correlation_id);
                    let context = MessageContext {
                        topic: record.topic,
                        correlation_id,
                        ..MessageContext::default()
                    };
                    matcher.route(record.topic, record.payload, &context, &mut deliveries);
                    if let Some(delivery) = deliveries.first() {
                        let bookmark = wire_bookmark(
                            record.publisher.client_name_hash,
                            view.bookmark.sequence,
                        );
                        reply::write_delivery_header(
                            &mut batch,
                            record.topic,
                            &delivery.sub_ids,
                            Some(bookmark),
                            None,
                            correlation_id,
                            delivery.timestamp.then_some(record.timestamp_ns),
                            record.payload.len(),
                        );
                        batch.extend_from_slice(record.payload);
                        last_sent = Some(bookmark);
                        replayed += 1;
                    }
                }
                if batch.len() >= REPLAY_BATCH_BYTES || read >= REPLAY_RECORDS_PER_PASS {
                    break;
                }
            }
            if !batch.is_empty() && !self.send_paced(subscription.connection, batch).await {
                service
                    .replays
                    .borrow_mut()
                    .remove(&(subscription.connection, subscription.sub_id.clone()));
                return;
            }
            if cancel.get() {
                return;
            }
            let caught_up = read == 0;
            if caught_up && !finished {
                if let Some(end) = end.filter(|end| end.is_ahead(service.routed_up_to.get())) {
                    // The range ends after what the log holds now: go live until it does.
                    service
                        .replays
                        .borrow_mut()
                        .remove(&(subscription.connection, subscription.sub_id.clone()));
                    service.live_ranges.borrow_mut().insert(
                        (subscription.connection, subscription.sub_id.clone()),
                        LiveRange {
                            end,
                            ack: subscription.ack.clone(),
                            last_sent,
                        },
                    );
                    self.go_live(&subscription, None, false).await;
                    return;
                }
            }
            if finished || (caught_up && end.is_some()) {
                // A range ends at its end point, or at the end of the durable log.
                info!(client = %self.client_name(subscription.connection), connection = %subscription.connection, sub_id = %subscription.sub_id, replayed, elapsed_ms = started.elapsed().as_millis() as u64, "bookmark range replayed");
                service
                    .replays
                    .borrow_mut()
                    .remove(&(subscription.connection, subscription.sub_id.clone()));
                self.finish_replay_acks(&subscription, last_sent).await;
                self.subscription_ended(subscription.connection, &subscription.sub_id);
                return;
            }
            if caught_up {
                // Nothing was awaited since the limit was read: join the live path now.
                service
                    .replays
                    .borrow_mut()
                    .remove(&(subscription.connection, subscription.sub_id.clone()));
                info!(client = %self.client_name(subscription.connection), connection = %subscription.connection, sub_id = %subscription.sub_id, replayed, elapsed_ms = started.elapsed().as_millis() as u64, "bookmark replay caught up; live");
                self.go_live(&subscription, last_sent, true).await;
                return;
            }
            glommio::yield_if_needed().await;
        }
    }

    /// Completes a live range: it leaves the bookmark router and gets its completed ack.
    pub(crate) async fn complete_live_range(&self, connection: ConnectionId, sub_id: &SubId) {
        let service = self.journal_service();
        let Some(range) = service
            .live_ranges
            .borrow_mut()
            .remove(&(connection, sub_id.clone()))
        else {
            return;
        };
        service
            .bookmark_router
            .borrow_mut()
            .remove(connection, sub_id);
        service
            .bookmark_acks
            .borrow_mut()
            .remove(&(connection, sub_id.clone()));
        info!(client = %self.client_name(connection), connection = %connection, sub_id = %sub_id, "bookmark range reached its end live");
        self.subscription_ended(connection, sub_id);
        let target = range.ack.as_target();
        if target.acks.contains(AckType::Completed) {
            let mut bytes = Vec::new();
            reply::write_completed_ack(&mut bytes, &target, range.last_sent);
            self.send_frames(connection, bytes, None).await;
        }
    }

    async fn fail_replay(&self, subscription: &BookmarkSubscription, detail: String) {
        let service = self.journal_service();
        service
            .replays
            .borrow_mut()
            .remove(&(subscription.connection, subscription.sub_id.clone()));
        let refusal = refuse(Reason::ReplayFailed, detail);
        let mut bytes = Vec::new();
        reply::write_ack(
            &mut bytes,
            AckType::Completed,
            &subscription.ack.as_target(),
            Outcome::Failure(&refusal),
        );
        self.send_frames(subscription.connection, bytes, None).await;
        self.subscription_ended(subscription.connection, &subscription.sub_id);
    }

    /// Sends frames, then waits until the connection's queue is below half its budget. False
    /// when the connection is gone.
    async fn send_paced(&self, connection: ConnectionId, bytes: Vec<u8>) -> bool {
        if connection.shard == self.id {
            let Some(local) = self.connection(connection) else {
                return false;
            };
            local.push_frames(self, &bytes);
            return self.wait_for_room(connection).await;
        }
        let token = self.new_token(1);
        let lanes = self.lanes.as_ref().expect("remote connections need lanes");
        let lane = DeliveryLane::PacedFrames {
            connection,
            bytes,
            token,
            reply_to: self.id,
        };
        if lanes
            .delivery
            .send_to(connection.shard.index(), lane)
            .await
            .is_err()
        {
            return false;
        }
        self.replies(token).await;
        true
    }

    /// Waits until a local connection's queue is below half its budget; false if it closed.
    pub(crate) async fn wait_for_room(&self, connection: ConnectionId) -> bool {
        let half = self.config.limits.client_outbound_bytes_max / 2;
        loop {
            match self.connection(connection) {
                None => return false,
                Some(local) if local.is_closing() => return false,
                Some(local) if local.queued_bytes() > half => {
                    glommio::timer::sleep(REPLAY_DRAIN_POLL).await
                }
                Some(_) => return true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> BookmarkSpec {
        BookmarkSpec::parse(text.as_bytes()).unwrap()
    }

    #[test]
    fn starts_resolve_against_the_log() {
        let start = |text| resolve_start(&spec(text), 100);
        assert!(matches!(
            start("0"),
            Ok(ReplayFrom::Log(ReplayStart::Beginning))
        ));
        assert!(matches!(start("0|1|"), Ok(ReplayFrom::Now)));
        assert!(matches!(
            start("77|40|"),
            Ok(ReplayFrom::Log(ReplayStart::Sequence(41)))
        ));
        assert!(matches!(
            start("77|40|,78|12|"),
            Ok(ReplayFrom::Log(ReplayStart::Sequence(13)))
        ));
        assert!(matches!(
            start("[77|40|:77|50|]"),
            Ok(ReplayFrom::Log(ReplayStart::Sequence(40)))
        ));
        assert!(matches!(
            start("20240229T235959Z"),
            Ok(ReplayFrom::Log(ReplayStart::TimestampNs(
                1_709_251_199_000_000_000
            )))
        ));
        assert!(matches!(
            start("77|40|,20240229T235959Z"),
            Ok(ReplayFrom::Log(ReplayStart::Beginning))
        ));
        let past = start("77|101|").unwrap_err();
        assert!(past.contains("past the end"), "{past}");
    }

    #[test]
    fn range_ends_include_or_exclude_their_point() {
        let end = |text| resolve_end(&spec(text), 90);
        assert!(matches!(end("[1|5|:1|9|]"), Some(ReplayEnd::Sequence(9))));
        assert!(matches!(end("[1|5|:1|9|)"), Some(ReplayEnd::Sequence(8))));
        assert!(matches!(end("[1|5|:0|1|]"), Some(ReplayEnd::Sequence(90))));
        assert!(end("1|5|").is_none());
        let stop = end("[0:20240229T235959Z)").unwrap();
        assert!(!stop.passed(1, 1_709_251_198_999_999_999));
        assert!(stop.passed(1, 1_709_251_199_000_000_000));
        assert!(ReplayEnd::Sequence(9).passed(10, 0));
        assert!(!ReplayEnd::Sequence(9).passed(9, 0));
    }
}
