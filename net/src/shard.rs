//! A shard: one pinned thread that owns its connections, the topics that hash to it, and their
//! subscriptions.
//!
//! Everything here runs on the shard's single thread, so state lives in `Cell`/`RefCell` and no
//! lock is taken. A publish is routed by the shard that owns its topic (shard 0 for every topic
//! under the default ordered routing); each match goes to the shard that owns the subscriber's
//! connection, inline when that is this shard. Cross-shard
//! requests (subscribe, flush barriers) wait for replies matched by token.

use crate::board::{bump, ShardBoard, TopicTable};
use crate::config::{Config, TopicRouting};
use crate::connection::Connection;
use crate::guaranteed::Admission;
use crate::journal::{
    JournalService, JournalShared, JournaledTopics, LogonVerdict, Origin, RecordHeaders,
    ShardJournal,
};
use crate::mesh::{ControlLane, DeliveryLane, LaneReceivers, LaneSenders, PublishLane, ReplyToken};
use crate::stats::ShardStats;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use tachyon_core::filter::MessageContext;
use tachyon_core::ids::{stable_hash, ConnectionId, ShardId, SubId};
use tachyon_core::message::PublishedMessage;
use tachyon_core::router::{Delivery, DeliveryOptions, Router};
use tachyon_core::topic::TopicSpec;
use tachyon_storage::journal::RecordKind;
use tracing::warn;

struct Slot {
    generation: u32,
    connection: Option<Rc<Connection>>,
}

#[derive(Default)]
struct PendingReply {
    remaining: usize,
    waker: Option<Waker>,
}

pub(crate) struct Shard {
    pub id: ShardId,
    pub shard_count: usize,
    pub config: Arc<Config>,
    pub stats: Arc<ShardStats>,
    /// What this shard posts about its clients, topics and routing latency.
    pub(crate) board: Arc<ShardBoard>,
    /// Every shard's board, indexed by shard: how any shard names a client in its logs.
    boards: Arc<[Arc<ShardBoard>]>,
    /// Per-topic counters of the topics this shard routes.
    pub(crate) topic_stats: TopicTable,
    pub shutdown: Arc<AtomicBool>,
    pub(crate) router: RefCell<Router>,
    slots: RefCell<Vec<Slot>>,
    free_slots: RefCell<Vec<u32>>,
    pub(crate) lanes: Option<LaneSenders>,
    pub(crate) sow: crate::sow::SowState,
    pending_replies: RefCell<HashMap<ReplyToken, PendingReply>>,
    next_token: Cell<ReplyToken>,
    route_scratch: RefCell<Vec<Delivery>>,
    /// Which topics are journaled (every shard knows; the journal itself is on shard 0).
    pub(crate) journaled: JournaledTopics,
    /// The transaction log, on shard 0 when any topic is journaled.
    pub(crate) journal: Option<JournalService>,
    /// What every shard may read about the journal.
    pub(crate) journal_shared: Arc<JournalShared>,
    /// Logon verdicts that arrived from the journal's shard, by request token.
    pub(crate) logon_verdicts: RefCell<HashMap<ReplyToken, LogonVerdict>>,
}

impl Shard {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: ShardId,
        shard_count: usize,
        config: Arc<Config>,
        stats: Arc<ShardStats>,
        boards: Arc<[Arc<ShardBoard>]>,
        shutdown: Arc<AtomicBool>,
        lanes: Option<LaneSenders>,
        journal: ShardJournal,
    ) -> Shard {
        let ShardJournal {
            service: journal,
            shared: journal_shared,
        } = journal;
        let sow_topics = config
            .sow
            .topic_configs()
            .expect("the configuration was validated before the shards started");
        let journaled = JournaledTopics::new(
            config
                .journal
                .topic_specs()
                .expect("the configuration was validated before the shards started"),
        );
        assert!(
            journal.is_none() || id == ShardId(0),
            "the journal lives on shard 0"
        );
        Shard {
            journaled,
            journal,
            journal_shared,
            logon_verdicts: RefCell::new(HashMap::new()),
            sow: crate::sow::SowState::new(sow_topics),
            id,
            shard_count,
            config,
            stats,
            topic_stats: TopicTable::new(boards[id.index()].clone()),
            board: boards[id.index()].clone(),
            boards,
            shutdown,
            router: RefCell::new(Router::new()),
            slots: RefCell::new(Vec::new()),
            free_slots: RefCell::new(Vec::new()),
            lanes,
            pending_replies: RefCell::new(HashMap::new()),
            next_token: Cell::new(1),
            route_scratch: RefCell::new(Vec::with_capacity(64)),
        }
    }

    /// The transaction log's state; only the journal's shard (shard 0, when any topic is
    /// journaled) has one, and only its code paths call this.
    pub(crate) fn journal_service(&self) -> &JournalService {
        self.journal
            .as_ref()
            .expect("called on the journal's shard")
    }

    /// The shard that owns `topic`: where its messages are routed (and later journaled).
    pub(crate) fn owner_of(&self, topic: &[u8]) -> ShardId {
        if self.journaled.contains(topic) {
            // One journal, one order: shard 0 appends every journaled message.
            return ShardId(0);
        }
        match self.config.runtime.topic_routing {
            TopicRouting::Ordered => ShardId(0),
            TopicRouting::Hashed => ShardId((stable_hash(topic) % self.shard_count as u64) as u16),
        }
    }

    /// Shards where a subscription to `topic` must be registered: the owner of an exact topic;
    /// every shard that routes anything for a pattern.
    fn places_of(&self, topic: &TopicSpec) -> Vec<ShardId> {
        match (topic, self.config.runtime.topic_routing) {
            (TopicSpec::Exact(name), _) => vec![self.owner_of(name)],
            (TopicSpec::Pattern(_), TopicRouting::Ordered) => vec![ShardId(0)],
            (TopicSpec::Pattern(_), TopicRouting::Hashed) => {
                (0..self.shard_count as u16).map(ShardId).collect()
            }
        }
    }

    // ---- connection table -------------------------------------------------------------------

    pub(crate) fn reserve_slot(&self) -> ConnectionId {
        let mut slots = self.slots.borrow_mut();
        let slot = match self.free_slots.borrow_mut().pop() {
            Some(slot) => slot,
            None => {
                slots.push(Slot {
                    generation: 0,
                    connection: None,
                });
                (slots.len() - 1) as u32
            }
        };
        let entry = &mut slots[slot as usize];
        entry.generation = entry.generation.wrapping_add(1);
        ConnectionId {
            shard: self.id,
            slot,
            generation: entry.generation,
        }
    }

    pub(crate) fn install(&self, connection: Rc<Connection>) {
        let id = connection.id;
        let mut slots = self.slots.borrow_mut();
        let slot = &mut slots[id.slot as usize];
        assert_eq!(
            slot.generation, id.generation,
            "installing a connection into a reused slot"
        );
        assert!(
            slot.connection.is_none(),
            "slot {} already holds a connection",
            id.slot
        );
        slot.connection = Some(connection);
    }

    pub(crate) fn release(&self, id: ConnectionId) {
        let mut slots = self.slots.borrow_mut();
        let slot = &mut slots[id.slot as usize];
        if slot.generation == id.generation && slot.connection.take().is_some() {
            self.free_slots.borrow_mut().push(id.slot);
        }
    }

    pub(crate) fn connection(&self, id: ConnectionId) -> Option<Rc<Connection>> {
        assert_eq!(
            id.shard, self.id,
            "connection {id} looked up on {}",
            self.id
        );
        let slots = self.slots.borrow();
        let slot = slots.get(id.slot as usize)?;
        (slot.generation == id.generation)
            .then(|| slot.connection.clone())
            .flatten()
    }

    pub(crate) fn connections(&self) -> Vec<Rc<Connection>> {
        self.slots
            .borrow()
            .iter()
            .filter_map(|slot| slot.connection.clone())
            .collect()
    }

    // ---- publishing -------------------------------------------------------------------------

    /// Routes a message published on this shard: here when it owns the topic, else at the owner.
    pub(crate) async fn publish(&self, message: PublishedMessage, origin: Origin) {
        let owner = self.owner_of(message.topic());
        if owner == self.id {
            self.route(message, &origin).await;
            return;
        }
        let lanes = self.lanes.as_ref().expect("several shards have lanes");
        if lanes
            .publish
            .send_to(owner.index(), PublishLane::Publish { message, origin })
            .await
            .is_err()
        {
            warn!(shard = %self.id, owner = %owner, "owner shard has stopped; message dropped during shutdown");
        }
    }

    /// Journals a message whose topic this shard owns (when journaled), then routes it.
    pub(crate) async fn route(&self, mut message: PublishedMessage, origin: &Origin) {
        if self.journal.is_some()
            && self.journaled.contains(message.topic())
            && self
                .journal_append(
                    &mut message,
                    origin,
                    RecordKind::Publish,
                    RecordHeaders::default(),
                )
                .await
                != Admission::Appended
        {
            return;
        }
        self.route_plain(message).await;
    }

    /// Matches a message whose topic this shard owns and hands each match to its connection.
    pub(crate) async fn route_plain(&self, message: PublishedMessage) {
        // The scratch list is reused so routing allocates nothing; a route that overlaps another
        // (possible only while one is waiting on a full channel) takes a fresh list.
        let mut deliveries = self.route_scratch.take();
        {
            let context = MessageContext {
                topic: message.topic(),
                correlation_id: message.correlation_id(),
                ..MessageContext::default()
            };
            self.router.borrow_mut().route(
                message.topic(),
                message.payload(),
                &context,
                &mut deliveries,
            );
        }
        let delivered = deliveries.len();
        for delivery in deliveries.drain(..) {
            self.dispatch(delivery, &message, None).await;
        }
        self.note_routed(&message, delivered);
        let mut scratch = self.route_scratch.borrow_mut();
        if scratch.capacity() < deliveries.capacity() {
            *scratch = deliveries;
        }
    }

    /// A client's logon name (or address before logon) for a log line, wherever it is
    /// connected; `?` once it is gone. Takes the owning board's lock: for logs, never per message.
    pub(crate) fn client_name(&self, connection: ConnectionId) -> String {
        self.boards
            .get(connection.shard.index())
            .and_then(|board| board.client_name(connection))
            .unwrap_or_else(|| "?".into())
    }

    /// A subscription ended here (a bookmark range completed, a replay failed or was refused):
    /// the admin API stops listing it for its client, wherever the client is connected.
    pub(crate) fn subscription_ended(&self, connection: ConnectionId, sub_id: &SubId) {
        if let Some(board) = self.boards.get(connection.shard.index()) {
            board.subscription_ended(connection, &sub_id.to_string());
        }
    }

    /// Counts a routed message for its topic and records how long it took from receipt to its
    /// deliveries being queued or handed to their shards.
    pub(crate) fn note_routed(&self, message: &PublishedMessage, deliveries: usize) {
        self.topic_stats.with(message.topic(), |topic| {
            bump(&topic.messages_in, 1);
            bump(&topic.bytes_in, message.payload().len() as u64);
            bump(&topic.deliveries, deliveries as u64);
        });
        self.board
            .route_latency
            .record_ns(crate::latency::unix_now_ns().saturating_sub(message.received_unix_ns));
    }

    /// Hands one delivery to its connection: inline when local, else over the delivery lane.
    pub(crate) async fn dispatch(
        &self,
        delivery: Delivery,
        message: &PublishedMessage,
        sow_key: Option<&bytes::Bytes>,
    ) {
        if delivery.connection.shard == self.id {
            self.deliver_local(&delivery, message, sow_key.map(|key| &key[..]));
            return;
        }
        let lanes = self.lanes.as_ref().expect("remote deliveries need lanes");
        let shard = delivery.connection.shard.index();
        let lane = DeliveryLane::Deliver {
            delivery,
            message: message.clone(),
            sow_key: sow_key.cloned(),
        };
        if lanes.delivery.send_to(shard, lane).await.is_err() {
            warn!(shard = %self.id, to = shard, "subscriber shard has stopped; delivery dropped during shutdown");
        }
    }

    pub(crate) fn deliver_local(
        &self,
        delivery: &Delivery,
        message: &PublishedMessage,
        sow_key: Option<&[u8]>,
    ) {
        if let Some(connection) = self.connection(delivery.connection) {
            connection.deliver(self, delivery, message, sow_key);
        }
    }

    // ---- subscriptions ----------------------------------------------------------------------

    /// Registers a subscription everywhere it must live and waits until all places have it.
    pub(crate) async fn subscribe(
        &self,
        connection: ConnectionId,
        sub_id: &SubId,
        topic: &TopicSpec,
        options: &DeliveryOptions,
        paused: bool,
    ) {
        let places = self.places_of(topic);
        let token = self.new_token(places.iter().filter(|&&place| place != self.id).count());
        for place in places {
            if place == self.id {
                let mut router = self.router.borrow_mut();
                router.add(connection, sub_id.clone(), topic, options.clone());
                router.set_paused(connection, sub_id, paused);
                continue;
            }
            let lanes = self.lanes.as_ref().expect("remote places need lanes");
            let request = ControlLane::Subscribe {
                connection,
                sub_id: sub_id.clone(),
                topic: topic.clone(),
                options: options.clone(),
                paused,
                token,
            };
            if lanes.control.send_to(place.index(), request).await.is_err() {
                self.reply_arrived(token);
            }
        }
        self.replies(token).await;
    }

    /// Removes a subscription from every place it lives (no reply needed: lanes keep order).
    pub(crate) async fn unsubscribe(
        &self,
        connection: ConnectionId,
        sub_id: &SubId,
        topic: &TopicSpec,
    ) {
        for place in self.places_of(topic) {
            if place == self.id {
                self.remove_subscription_here(connection, sub_id);
                continue;
            }
            let lanes = self.lanes.as_ref().expect("remote places need lanes");
            let request = ControlLane::Unsubscribe {
                connection,
                sub_id: sub_id.clone(),
            };
            let _ = lanes.control.send_to(place.index(), request).await;
        }
    }

    /// Pauses or resumes a subscription everywhere it lives.
    pub(crate) async fn pause(
        &self,
        connection: ConnectionId,
        sub_id: &SubId,
        topic: &TopicSpec,
        paused: bool,
    ) {
        for place in self.places_of(topic) {
            if place == self.id {
                self.pause_subscription_here(connection, sub_id, paused);
                continue;
            }
            let lanes = self.lanes.as_ref().expect("remote places need lanes");
            let request = ControlLane::Pause {
                connection,
                sub_id: sub_id.clone(),
                paused,
            };
            let _ = lanes.control.send_to(place.index(), request).await;
        }
    }

    /// Removes a subscription from this shard's routers and stops its replay, if any.
    pub(crate) fn remove_subscription_here(&self, connection: ConnectionId, sub_id: &SubId) {
        self.router.borrow_mut().remove(connection, sub_id);
        if let Some(service) = self.journal.as_ref() {
            service
                .bookmark_router
                .borrow_mut()
                .remove(connection, sub_id);
            service
                .bookmark_acks
                .borrow_mut()
                .remove(&(connection, sub_id.clone()));
            service
                .live_ranges
                .borrow_mut()
                .remove(&(connection, sub_id.clone()));
            if let Some(cancel) = service
                .replays
                .borrow_mut()
                .remove(&(connection, sub_id.clone()))
            {
                cancel.set(true);
            }
        }
    }

    /// Pauses or resumes a subscription in this shard's routers.
    pub(crate) fn pause_subscription_here(
        &self,
        connection: ConnectionId,
        sub_id: &SubId,
        paused: bool,
    ) {
        self.router
            .borrow_mut()
            .set_paused(connection, sub_id, paused);
        if let Some(service) = self.journal.as_ref() {
            service
                .bookmark_router
                .borrow_mut()
                .set_paused(connection, sub_id, paused);
        }
    }

    /// Completes when every message this shard sent to other shards before the call was routed.
    pub(crate) async fn barrier(&self) {
        let Some(lanes) = self.lanes.as_ref() else {
            return;
        };
        let token = self.new_token(self.shard_count - 1);
        for shard in (0..self.shard_count).filter(|&shard| shard != self.id.index()) {
            if lanes
                .publish
                .send_to(
                    shard,
                    PublishLane::Barrier {
                        reply_to: self.id,
                        token,
                    },
                )
                .await
                .is_err()
            {
                self.reply_arrived(token);
            }
        }
        self.replies(token).await;
    }

    // ---- replies ----------------------------------------------------------------------------

    pub(crate) fn new_token(&self, expected: usize) -> ReplyToken {
        let token = self.next_token.get();
        self.next_token.set(token + 1);
        if expected > 0 {
            self.pending_replies.borrow_mut().insert(
                token,
                PendingReply {
                    remaining: expected,
                    waker: None,
                },
            );
        }
        token
    }

    pub(crate) fn reply_arrived(&self, token: ReplyToken) {
        let mut pending = self.pending_replies.borrow_mut();
        let Some(entry) = pending.get_mut(&token) else {
            warn!(shard = %self.id, token, "reply for no pending request");
            return;
        };
        assert!(entry.remaining > 0);
        entry.remaining -= 1;
        if entry.remaining == 0 {
            if let Some(waker) = entry.waker.take() {
                waker.wake();
            }
        }
    }

    pub(crate) fn replies(&self, token: ReplyToken) -> Replies<'_> {
        Replies { shard: self, token }
    }

    // ---- lane receivers ---------------------------------------------------------------------

    /// Spawns the tasks that serve the other shards' traffic.
    pub(crate) fn serve_lanes(self: &Rc<Self>, receivers: &mut LaneReceivers) {
        for (peer, receiver) in receivers.publish.streams() {
            let shard = self.clone();
            glommio::spawn_local(async move {
                while let Some(item) = receiver.recv().await {
                    match item {
                        PublishLane::Publish { message, origin } => {
                            shard.route(message, &origin).await
                        }
                        PublishLane::Logon {
                            connection,
                            client_name_hash,
                            user_id,
                            token,
                        } => {
                            let verdict = shard
                                .journal_logon_at_owner(
                                    connection,
                                    client_name_hash,
                                    user_id.as_deref(),
                                )
                                .await;
                            let lanes = shard.lanes.as_ref().expect("lanes");
                            let _ = lanes
                                .delivery
                                .send_to(peer, DeliveryLane::LogonVerdict { token, verdict })
                                .await;
                        }
                        PublishLane::Logoff {
                            connection,
                            client_name_hash,
                        } => shard.journal_logoff(connection, client_name_hash).await,
                        PublishLane::FlushPersisted { connection, ack } => {
                            shard.flush_persisted_at_owner(connection, ack).await
                        }
                        PublishLane::SowPublish {
                            message,
                            info,
                            origin,
                        } => {
                            if let Err(error) =
                                shard.route_sow_publish(message, info, &origin).await
                            {
                                // The publisher's shard checked key and size; what is left
                                // (a merge into a stored record that is not a JSON object, a
                                // merged record over the limit) can only be logged.
                                warn!(shard = %shard.id, "SOW publish refused by the owner: {error}");
                            }
                        }
                        PublishLane::SowQuery {
                            connection,
                            query,
                            ack,
                            token,
                        } => {
                            let frames = shard.run_sow_query(connection, &query, &ack);
                            shard.send_frames(connection, frames, Some(token)).await;
                        }
                        PublishLane::SowDelete {
                            connection,
                            request,
                            token,
                        } => {
                            let frames = shard.run_sow_delete(&request).await;
                            shard.send_frames(connection, frames, Some(token)).await;
                        }
                        PublishLane::Barrier { reply_to, token } => {
                            assert_eq!(reply_to.index(), peer);
                            let lanes = shard.lanes.as_ref().expect("lanes");
                            let _ = lanes
                                .delivery
                                .send_to(reply_to.index(), DeliveryLane::Reply { token })
                                .await;
                        }
                    }
                }
            })
            .detach();
        }
        for (peer, receiver) in receivers.control.streams() {
            let shard = self.clone();
            glommio::spawn_local(async move {
                while let Some(item) = receiver.recv().await {
                    match item {
                        ControlLane::Subscribe {
                            connection,
                            sub_id,
                            topic,
                            options,
                            paused,
                            token,
                        } => {
                            {
                                let mut router = shard.router.borrow_mut();
                                router.add(connection, sub_id.clone(), &topic, options);
                                router.set_paused(connection, &sub_id, paused);
                            }
                            let lanes = shard.lanes.as_ref().expect("lanes");
                            let _ = lanes
                                .delivery
                                .send_to(peer, DeliveryLane::Reply { token })
                                .await;
                        }
                        ControlLane::Unsubscribe { connection, sub_id } => {
                            shard.remove_subscription_here(connection, &sub_id);
                        }
                        ControlLane::Pause {
                            connection,
                            sub_id,
                            paused,
                        } => {
                            shard.pause_subscription_here(connection, &sub_id, paused);
                        }
                        ControlLane::BookmarkSubscribe(subscription) => {
                            shard.start_bookmark_subscription(*subscription).await;
                        }
                    }
                }
            })
            .detach();
        }
        for (_peer, receiver) in receivers.delivery.streams() {
            let shard = self.clone();
            glommio::spawn_local(async move {
                while let Some(item) = receiver.recv().await {
                    match item {
                        DeliveryLane::Deliver {
                            delivery,
                            message,
                            sow_key,
                        } => shard.deliver_local(&delivery, &message, sow_key.as_deref()),
                        DeliveryLane::Frames {
                            connection,
                            bytes,
                            token,
                        } => {
                            if let Some(local) = shard.connection(connection) {
                                local.push_frames(&shard, &bytes);
                            }
                            if let Some(token) = token {
                                shard.reply_arrived(token);
                            }
                        }
                        DeliveryLane::Reply { token } => shard.reply_arrived(token),
                        DeliveryLane::PacedFrames {
                            connection,
                            bytes,
                            token,
                            reply_to,
                        } => {
                            if let Some(local) = shard.connection(connection) {
                                local.push_frames(&shard, &bytes);
                            }
                            // The reply waits in its own task so this lane keeps draining.
                            let paced = shard.clone();
                            glommio::spawn_local(async move {
                                paced.wait_for_room(connection).await;
                                let lanes = paced.lanes.as_ref().expect("lanes");
                                let _ = lanes
                                    .delivery
                                    .send_to(reply_to.index(), DeliveryLane::Reply { token })
                                    .await;
                            })
                            .detach();
                        }
                        DeliveryLane::LogonVerdict { token, verdict } => {
                            shard.logon_verdicts.borrow_mut().insert(token, verdict);
                            shard.reply_arrived(token);
                        }
                        DeliveryLane::Close { connection, reason } => {
                            if let Some(local) = shard.connection(connection) {
                                local.close(reason, &shard.stats);
                            }
                        }
                    }
                }
            })
            .detach();
        }
    }
}

/// Future that completes when every reply for a token has arrived.
pub(crate) struct Replies<'s> {
    shard: &'s Shard,
    token: ReplyToken,
}

impl Future for Replies<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<()> {
        let mut pending = self.shard.pending_replies.borrow_mut();
        match pending.get_mut(&self.token) {
            None => Poll::Ready(()),
            Some(entry) if entry.remaining == 0 => {
                pending.remove(&self.token);
                Poll::Ready(())
            }
            Some(entry) => {
                entry.waker = Some(context.waker().clone());
                Poll::Pending
            }
        }
    }
}
