//! The State of the World on the data plane: which shard keeps a SOW topic, how publishes,
//! queries, deletes and expirations reach it, and the snapshot files of persistent topics.
//!
//! A SOW topic lives on its owner shard (`Shard::owner_of`: shard 0 under ordered routing), the
//! shard that also routes its messages. The owner stores every publish before routing it, so a
//! query and the live stream always agree. A query, or a `sow_and_subscribe`, runs on the owner
//! in one synchronous step that reads the records and registers the subscription: no publish can
//! fall between the snapshot and the live stream, so none is lost or sent twice.
//!
//! Acks: the publisher's shard checks a SOW publish's key and size itself (the key extractor is
//! one scan of the payload), so `bad sow key` and `sow store failed` acks are written where the
//! publisher is, with no reply path. Queries and deletes travel on the publish lane (after the
//! connection's earlier publishes) and their frames — records, groups, oof messages, the
//! delete's stats acks — are rendered by the owner and come back whole on the delivery lane. The
//! requesting connection waits for them before it reads its next command.
//!
//! Persistence, until the transaction log lands: a `persistent` topic is written as a snapshot
//! (`core::sow::snapshot`) to `<data_dir>/sow/<topic hash>.sow` at clean shutdown and every
//! `sow.snapshot_interval_seconds` when it changed (the snapshot is serialized on the shard, then
//! written and fsynced on a helper thread), and loaded at start-up. A `kill -9` loses the changes
//! made since the last snapshot.

use crate::guaranteed::Admission;
use crate::journal::{Origin, RecordHeaders};
use crate::latency::unix_now_ns;
use crate::mesh::{DeliveryLane, PublishLane, ReplyToken, SowDeleteRequest, SowPublishInfo};
use crate::shard::Shard;
use bytes::Bytes;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tachyon_core::filter::MessageContext;
use tachyon_core::ids::{stable_hash, ConnectionId};
use tachyon_core::message::PublishedMessage;
use tachyon_core::protocol::keys::Key;
use tachyon_core::protocol::reply::{self, Outcome};
use tachyon_core::protocol::sow_reply::{self, SowAckStats, SowRecordOptions};
use tachyon_core::protocol::{AckType, Header};
use tachyon_core::router::{Delivery, SowUpdate};
use tachyon_core::session::{refuse, OwnedAckTarget, Reason, Refusal, SowDeleteBy, SowQuery};
use tachyon_core::sow::delta::{self, DeltaOutcome};
use tachyon_core::sow::{
    snapshot, Bookmark, Durability, KeyExtractor, KeyKind, OofReason, OwnedRecord, PublishMeta,
    RecordView, SowError, SowKeyRef, SowTopic, SowTopicConfig,
};
use tachyon_storage::journal::RecordKind;
use tracing::{debug, error, info, warn};

/// The file a persistent topic's snapshot lives in: `<data_dir>/sow/<16 hex digits>.sow`, named
/// by the topic's stable hash so that any topic name makes a valid file name.
pub fn snapshot_path(data_dir: &Path, topic: &str) -> PathBuf {
    data_dir
        .join("sow")
        .join(format!("{:016x}.sow", stable_hash(topic.as_bytes())))
}

/// Writes `bytes` to `path` so that a crash leaves the old file or the new one, never a torn
/// one: a temporary file is written and fsynced, renamed over `path`, and the folder fsynced.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let folder = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(folder)?;
    let temporary = path.with_extension("sow.tmp");
    {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&temporary, path)?;
    std::fs::File::open(folder)?.sync_all()
}

/// Builds a topic from its snapshot file, or empty when there is none.
pub fn load_topic(data_dir: &Path, config: SowTopicConfig) -> Result<SowTopic, String> {
    let path = snapshot_path(data_dir, &config.topic);
    let topic_name = config.topic.clone();
    match std::fs::read(&path) {
        Ok(bytes) => snapshot::restore(config, &bytes).map_err(|error| {
            format!(
                "SOW topic {topic_name:?}: snapshot {} is unusable: {error} (move it away to start with an empty topic)",
                path.display()
            )
        }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            SowTopic::new(config).map_err(|error| error.to_string())
        }
        Err(error) => Err(format!(
            "SOW topic {topic_name:?}: cannot read snapshot {}: {error}",
            path.display()
        )),
    }
}

/// What a shard checks about a publish to a SOW topic before it leaves for the owner.
#[derive(Debug)]
struct KeyCheck {
    extractor: KeyExtractor,
    message_bytes_max: usize,
}

/// One shard's SOW state.
pub(crate) struct SowState {
    /// Every SOW topic's configuration (any shard may receive a publish for it).
    configs: Vec<SowTopicConfig>,
    /// Every SOW topic's key check.
    checks: RefCell<HashMap<Box<[u8]>, KeyCheck>>,
    /// The topics this shard owns.
    pub(crate) topics: RefCell<HashMap<Box<[u8]>, SowTopic>>,
    /// Owned persistent topics changed since their last snapshot.
    pub(crate) dirty: RefCell<HashSet<Box<[u8]>>>,
    key_scratch: RefCell<Vec<u8>>,
    writer: RefCell<Option<std::thread::JoinHandle<()>>>,
    last_snapshot: Cell<Option<Instant>>,
}

impl SowState {
    pub(crate) fn new(configs: Vec<SowTopicConfig>) -> SowState {
        let checks = configs
            .iter()
            .map(|config| {
                let check = KeyCheck {
                    extractor: KeyExtractor::new(&config.key_fields),
                    message_bytes_max: config.message_bytes_max(),
                };
                (Box::from(config.topic.as_bytes()), check)
            })
            .collect();
        SowState {
            configs,
            checks: RefCell::new(checks),
            topics: RefCell::new(HashMap::new()),
            dirty: RefCell::new(HashSet::new()),
            key_scratch: RefCell::new(Vec::new()),
            writer: RefCell::new(None),
            last_snapshot: Cell::new(None),
        }
    }
}

/// A message like `original` (topic, correlation id, receive time) carrying another payload:
/// a merged delta publish or the changed fields a delta subscriber gets.
fn synthetic_message(original: &PublishedMessage, payload: &[u8]) -> PublishedMessage {
    PublishedMessage::synthetic(
        original.topic(),
        original.correlation_id(),
        payload,
        original.received_unix_ns,
        original.bookmark,
    )
}

/// What the owner keeps of a publish once the store's borrow ends.
struct Applied {
    key: Bytes,
    previous: Option<Vec<u8>>,
    merged: Option<Vec<u8>>,
    key_names: Vec<Vec<u8>>,
}

impl Shard {
    /// Whether `topic` is a configured SOW topic.
    pub(crate) fn is_sow_topic(&self, topic: &[u8]) -> bool {
        self.sow.checks.borrow().contains_key(topic)
    }

    /// Builds the SOW topics this shard owns, persistent ones from their snapshots.
    pub(crate) fn load_sow(&self) -> Result<(), String> {
        let mut topics = self.sow.topics.borrow_mut();
        for config in &self.sow.configs {
            if self.owner_of(config.topic.as_bytes()) != self.id {
                continue;
            }
            let name: Box<[u8]> = config.topic.as_bytes().into();
            let topic = match config.durability {
                Durability::Persistent => load_topic(&self.config.data_dir, config.clone())?,
                Durability::Transient => {
                    SowTopic::new(config.clone()).map_err(|error| error.to_string())?
                }
            };
            info!(shard = %self.id, topic = %config.topic, records = topic.len(), durability = ?config.durability, "SOW topic ready");
            topics.insert(name, topic);
        }
        Ok(())
    }

    /// Checks a publish to a SOW topic where it was received: `None` for other topics, else
    /// what the owner needs to store it. A missing key or an oversized message is refused here,
    /// so its failure ack needs no trip to the owner.
    pub(crate) fn sow_check(
        &self,
        header: &Header<'_>,
        payload: &[u8],
        delta: bool,
    ) -> Result<Option<SowPublishInfo>, Refusal> {
        let mut checks = self.sow.checks.borrow_mut();
        if checks.is_empty() {
            return Ok(None);
        }
        let topic = header.bytes(Key::Topic).unwrap_or_default();
        let Some(check) = checks.get_mut(topic) else {
            return Ok(None);
        };
        let topic_text = || String::from_utf8_lossy(topic).into_owned();
        let key = header
            .get(Key::SowKey)
            .map(|key| Box::<[u8]>::from(&*key.to_bytes()));
        let mut scratch = self.sow.key_scratch.borrow_mut();
        if let Err(error) = check
            .extractor
            .extract_into(key.as_deref(), payload, &mut scratch)
        {
            return Err(refuse(
                Reason::BadSowKey,
                format!("topic {}: {error}", topic_text()),
            ));
        }
        if !delta && payload.len() > check.message_bytes_max {
            let error = SowError::MessageTooLarge {
                size_bytes: payload.len(),
                limit_bytes: check.message_bytes_max,
            };
            return Err(refuse(
                Reason::SowStoreFailed,
                format!("topic {}: {error}", topic_text()),
            ));
        }
        if delta {
            if let Err(error) = delta::members(payload, &mut Vec::new()) {
                return Err(refuse(
                    Reason::SowStoreFailed,
                    format!("topic {}: delta_publish: {error}", topic_text()),
                ));
            }
        }
        let expiration = header
            .get(Key::Expiration)
            .and_then(|value| value.as_u64())
            .map(Duration::from_secs);
        Ok(Some(SowPublishInfo {
            key,
            expiration,
            delta,
        }))
    }

    /// Stores and routes a SOW publish: here when this shard owns the topic (the store's
    /// verdict comes back), else at the owner.
    pub(crate) async fn publish_sow(
        &self,
        message: PublishedMessage,
        info: SowPublishInfo,
        origin: Origin,
    ) -> Result<(), Refusal> {
        let owner = self.owner_of(message.topic());
        if owner == self.id {
            return self
                .route_sow_publish(message, info, &origin)
                .await
                .map_err(|error| refuse(Reason::from_sow_error(&error), error.to_string()));
        }
        let lanes = self.lanes.as_ref().expect("several shards have lanes");
        let lane = PublishLane::SowPublish {
            message,
            info,
            origin,
        };
        if lanes.publish.send_to(owner.index(), lane).await.is_err() {
            warn!(shard = %self.id, owner = %owner, "owner shard has stopped; SOW publish dropped during shutdown");
        }
        Ok(())
    }

    fn mark_dirty(&self, topic: &[u8]) {
        let mut dirty = self.sow.dirty.borrow_mut();
        if !dirty.contains(topic) {
            dirty.insert(topic.into());
        }
    }

    /// On the owner: stores the publish, then routes the stored record (full, delta or oof).
    pub(crate) async fn route_sow_publish(
        &self,
        mut message: PublishedMessage,
        info: SowPublishInfo,
        origin: &Origin,
    ) -> Result<(), SowError> {
        if self.journal.is_some() && self.journaled.contains(message.topic()) {
            let kind = if info.delta {
                RecordKind::DeltaPublish
            } else {
                RecordKind::Publish
            };
            let extra = RecordHeaders {
                sow_key: info.key.as_deref(),
                expiration_seconds: info.expiration.map(|expiration| expiration.as_secs()),
                ..RecordHeaders::default()
            };
            if self.journal_append(&mut message, origin, kind, extra).await != Admission::Appended {
                return Ok(());
            }
        }
        let topic_name = message.topic();
        let needs_previous = self.router.borrow().needs_previous(topic_name);
        let applied = {
            let mut topics = self.sow.topics.borrow_mut();
            let topic = topics
                .get_mut(topic_name)
                .expect("the owner holds its SOW topics");
            let key_names = if needs_previous {
                topic
                    .key_extractor()
                    .top_level_names()
                    .map(<[u8]>::to_vec)
                    .collect()
            } else {
                Vec::new()
            };
            let meta = PublishMeta {
                bookmark: Bookmark::default(),
                timestamp_unix_ns: message.received_unix_ns,
                correlation_id: message.correlation_id(),
                expiration: info.expiration,
            };
            let outcome = if info.delta {
                topic.delta_publish(info.key.as_deref(), message.payload(), &meta)?
            } else {
                topic.publish(info.key.as_deref(), message.payload(), &meta)?
            };
            let current = outcome.current();
            Applied {
                key: Bytes::copy_from_slice(current.key.wire().as_bytes()),
                previous: if needs_previous {
                    outcome.previous().map(|previous| previous.payload.to_vec())
                } else {
                    None
                },
                merged: info.delta.then(|| current.payload.to_vec()),
                key_names,
            }
        };
        self.mark_dirty(topic_name);
        let message = match &applied.merged {
            Some(merged) => synthetic_message(&message, merged),
            None => message,
        };
        let topic = message.topic();
        let current = message.payload();
        let mut delta_payload = None;
        let mut unchanged = false;
        if let Some(previous) = &applied.previous {
            let names = || applied.key_names.iter().map(Vec::as_slice);
            let mut out = Vec::new();
            match delta::diff(previous, current, names(), true, &mut out) {
                Ok(DeltaOutcome::Send) => delta_payload = Some(out),
                Ok(DeltaOutcome::Suppress) => {
                    unchanged = true;
                    if delta::diff(previous, current, names(), false, &mut out).is_ok() {
                        delta_payload = Some(out);
                    }
                }
                // Not JSON objects: delta subscribers get the whole record.
                Err(_) => {}
            }
        }
        let mut deliveries = Vec::new();
        let mut oofs = Vec::new();
        {
            let update = SowUpdate {
                previous: applied.previous.as_deref(),
                current,
                unchanged,
            };
            let context = MessageContext {
                topic,
                correlation_id: message.correlation_id(),
                sow_key: Some(&applied.key),
                ..MessageContext::default()
            };
            self.router.borrow_mut().route_sow(
                topic,
                &update,
                &context,
                &mut deliveries,
                &mut oofs,
            );
        }
        let delta_message = delta_payload.map(|payload| synthetic_message(&message, &payload));
        let delivered = deliveries.len();
        for delivery in deliveries {
            let chosen = match &delta_message {
                Some(delta_message) if delivery.delta => delta_message,
                _ => &message,
            };
            self.dispatch(delivery, chosen, Some(&applied.key)).await;
        }
        self.note_routed(&message, delivered);
        if !oofs.is_empty() {
            let view = RecordView {
                // The wire key is all an oof frame needs; an explicit key is written as its text.
                key: SowKeyRef {
                    hash: 0,
                    kind: KeyKind::Explicit,
                    canonical: &applied.key,
                },
                payload: message.payload(),
                bookmark: Bookmark::default(),
                timestamp_unix_ns: message.received_unix_ns,
                correlation_id: message.correlation_id(),
                expiration_unix_ns: None,
            };
            for oof in &oofs {
                self.send_oof(topic, oof, &view, OofReason::Match).await;
            }
        }
        Ok(())
    }

    async fn send_oof(
        &self,
        topic: &[u8],
        delivery: &Delivery,
        record: &RecordView<'_>,
        reason: OofReason,
    ) {
        let mut bytes = Vec::new();
        sow_reply::write_oof(
            &mut bytes,
            topic,
            &delivery.sub_ids,
            record,
            reason,
            SowRecordOptions {
                timestamp: delivery.timestamp,
            },
        );
        self.send_frames(delivery.connection, bytes, None).await;
    }

    /// Tells the `oof` subscribers that saw `record` that it left the SOW.
    async fn send_removal_oofs(&self, topic: &[u8], record: &OwnedRecord, reason: OofReason) {
        let mut deliveries = Vec::new();
        {
            let wire = record.key.as_ref().wire();
            let context = MessageContext {
                topic,
                correlation_id: record.correlation_id.as_deref(),
                sow_key: Some(wire.as_bytes()),
                ..MessageContext::default()
            };
            self.router.borrow_mut().route_removal(
                topic,
                &record.payload,
                &context,
                &mut deliveries,
            );
        }
        let view = record.view();
        for delivery in &deliveries {
            self.send_oof(topic, delivery, &view, reason).await;
        }
    }

    /// Queues whole frames for a connection: inline when local, else over the delivery lane;
    /// `token` (remote requests) is answered once they are queued.
    pub(crate) async fn send_frames(
        &self,
        connection: ConnectionId,
        bytes: Vec<u8>,
        token: Option<ReplyToken>,
    ) {
        if connection.shard == self.id {
            if let Some(local) = self.connection(connection) {
                local.push_frames(self, &bytes);
            }
            if let Some(token) = token {
                self.reply_arrived(token);
            }
            return;
        }
        let lanes = self.lanes.as_ref().expect("remote connections need lanes");
        let lane = DeliveryLane::Frames {
            connection,
            bytes,
            token,
        };
        if lanes
            .delivery
            .send_to(connection.shard.index(), lane)
            .await
            .is_err()
        {
            warn!(shard = %self.id, "connection's shard has stopped; SOW frames dropped during shutdown");
        }
    }

    /// Runs a query at the topic's owner and waits until its frames are queued.
    pub(crate) async fn sow_query(
        &self,
        connection: ConnectionId,
        query: Box<SowQuery>,
        ack: OwnedAckTarget,
    ) {
        let owner = self.owner_of(&query.topic);
        if owner == self.id {
            let frames = self.run_sow_query(connection, &query, &ack);
            self.send_frames(connection, frames, None).await;
            return;
        }
        let token = self.new_token(1);
        let lanes = self.lanes.as_ref().expect("several shards have lanes");
        let lane = PublishLane::SowQuery {
            connection,
            query,
            ack,
            token,
        };
        if lanes.publish.send_to(owner.index(), lane).await.is_err() {
            self.reply_arrived(token);
        }
        self.replies(token).await;
    }

    /// Deletes at the topic's owner and waits until the acks are queued.
    pub(crate) async fn sow_delete(&self, connection: ConnectionId, request: SowDeleteRequest) {
        let owner = self.owner_of(&request.topic);
        if owner == self.id {
            let frames = self.run_sow_delete(&request).await;
            self.send_frames(connection, frames, None).await;
            return;
        }
        let token = self.new_token(1);
        let lanes = self.lanes.as_ref().expect("several shards have lanes");
        let lane = PublishLane::SowDelete {
            connection,
            request: Box::new(request),
            token,
        };
        if lanes.publish.send_to(owner.index(), lane).await.is_err() {
            self.reply_arrived(token);
        }
        self.replies(token).await;
    }

    /// On the owner, in one step: runs the query, renders its frames (group_begin, sow batches,
    /// group_end, completed and stats acks) and registers the subscription of a
    /// `sow_and_subscribe`. Nothing can be published between the two.
    pub(crate) fn run_sow_query(
        &self,
        connection: ConnectionId,
        query: &SowQuery,
        ack: &OwnedAckTarget,
    ) -> Vec<u8> {
        let target = ack.as_target();
        let mut out = Vec::new();
        {
            let topics = self.sow.topics.borrow();
            let topic = topics
                .get(&query.topic[..])
                .expect("queries go to the topic's owner");
            sow_reply::write_group_begin(&mut out, &query.query_id);
            let result = topic.query(
                query.filter.as_ref(),
                query.order_by.as_ref(),
                query.top_n,
                query.sow_keys.as_deref(),
            );
            let (returned, matches) = match result {
                Ok(result) => {
                    if !result.records.is_empty() {
                        sow_reply::write_sow_batches(
                            &mut out,
                            &query.topic,
                            &query.query_id,
                            &result.records,
                            query.batch_size,
                            SowRecordOptions {
                                timestamp: query.timestamp,
                            },
                        );
                    }
                    (result.records.len(), result.matches)
                }
                Err(error) => {
                    warn!(shard = %self.id, topic = %String::from_utf8_lossy(&query.topic), "SOW query returns nothing: {error}");
                    (0, 0)
                }
            };
            sow_reply::write_group_end(&mut out, &query.query_id);
            if target.acks.contains(AckType::Completed) {
                reply::write_ack(&mut out, AckType::Completed, &target, Outcome::Success);
            }
            if target.acks.contains(AckType::Stats) {
                sow_reply::write_stats_ack(
                    &mut out,
                    AckType::Stats,
                    &target,
                    &SowAckStats::query(returned, matches),
                );
            }
        }
        if let Some((sub_id, record)) = &query.subscription {
            let mut router = self.router.borrow_mut();
            router.add(
                connection,
                sub_id.clone(),
                &record.topic,
                record.options.clone(),
            );
        }
        out
    }

    /// On the owner: deletes, tells `oof` subscribers, and renders the deleter's acks (processed
    /// when asked, and always the stats ack the Python client waits for).
    pub(crate) async fn run_sow_delete(&self, request: &SowDeleteRequest) -> Vec<u8> {
        let target = request.ack.as_target();
        if self.journal.is_some() && self.journaled.contains(&request.topic) {
            let mut out = Vec::new();
            match self.journal_sow_delete(request).await {
                Admission::Appended => {}
                Admission::Duplicate => {
                    // Carried out when it was first received.
                    let stats = SowAckStats::delete(0, 0);
                    if target.acks.contains(AckType::Processed) {
                        sow_reply::write_stats_ack(&mut out, AckType::Processed, &target, &stats);
                    }
                    sow_reply::write_stats_ack(&mut out, AckType::Stats, &target, &stats);
                    return out;
                }
                Admission::Refused => {
                    let refused = refuse(
                        Reason::TxStoreFailure,
                        "the transaction log did not take the delete",
                    );
                    for ack in [AckType::Processed, AckType::Stats] {
                        reply::write_ack(&mut out, ack, &target, Outcome::Failure(&refused));
                    }
                    return out;
                }
            }
        }
        let outcome = {
            let mut topics = self.sow.topics.borrow_mut();
            let topic = topics
                .get_mut(&request.topic[..])
                .expect("deletes go to the topic's owner");
            match &request.by {
                SowDeleteBy::Filter(filter) => Ok(topic.delete_by_filter(filter)),
                SowDeleteBy::Keys(keys) => topic.delete_by_keys(keys),
                SowDeleteBy::Data => topic.delete_by_data(request.key.as_deref(), &request.data),
            }
        };
        let mut out = Vec::new();
        match outcome {
            Ok(outcome) => {
                let stats = SowAckStats::delete(outcome.records_deleted, outcome.matches);
                if target.acks.contains(AckType::Processed) {
                    sow_reply::write_stats_ack(&mut out, AckType::Processed, &target, &stats);
                }
                sow_reply::write_stats_ack(&mut out, AckType::Stats, &target, &stats);
                if outcome.records_deleted > 0 {
                    self.mark_dirty(&request.topic);
                }
                debug!(shard = %self.id, topic = %String::from_utf8_lossy(&request.topic), deleted = outcome.records_deleted, "sow_delete");
                for record in &outcome.deleted {
                    self.send_removal_oofs(&request.topic, record, OofReason::Deleted)
                        .await;
                }
            }
            Err(error) => {
                let refused = refuse(Reason::from_sow_error(&error), error.to_string());
                warn!(shard = %self.id, "sow_delete refused: {refused}");
                for ack in [AckType::Processed, AckType::Stats] {
                    reply::write_ack(&mut out, ack, &target, Outcome::Failure(&refused));
                }
            }
        }
        out
    }

    /// Journals a `sow_delete` before it is carried out; false if the journal refused it (a
    /// duplicate `s` is not carried out twice either).
    async fn journal_sow_delete(&self, request: &SowDeleteRequest) -> Admission {
        let (by, selector): (u8, &[u8]) = match &request.by {
            SowDeleteBy::Filter(_) => (b'f', request.filter_text.as_deref().unwrap_or_default()),
            SowDeleteBy::Keys(keys) => (b'k', keys),
            SowDeleteBy::Data => (b'd', &request.data),
        };
        let mut message =
            PublishedMessage::synthetic(&request.topic, None, selector, unix_now_ns(), None);
        let extra = RecordHeaders {
            sow_key: request.key.as_deref(),
            delete_by: Some(by),
            ..RecordHeaders::default()
        };
        self.journal_append(&mut message, &request.origin, RecordKind::SowDelete, extra)
            .await
    }

    /// Removes the owned topics' expired records and sends `oof` with reason `expired`.
    pub(crate) async fn expire_sow(&self) {
        let now = unix_now_ns();
        let expired: Vec<(Box<[u8]>, Vec<OwnedRecord>)> = {
            let mut topics = self.sow.topics.borrow_mut();
            topics
                .iter_mut()
                .filter(|(_, topic)| {
                    topic
                        .next_expiration_unix_ns()
                        .is_some_and(|deadline| deadline <= now)
                })
                .map(|(name, topic)| (name.clone(), topic.expire(now)))
                .collect()
        };
        for (topic, records) in expired {
            self.mark_dirty(&topic);
            debug!(shard = %self.id, topic = %String::from_utf8_lossy(&topic), expired = records.len(), "SOW records expired");
            for record in &records {
                self.send_removal_oofs(&topic, record, OofReason::Expired)
                    .await;
            }
        }
    }

    /// Posts each owned SOW topic's size to its topic statistics (on the shard's timer: a few
    /// loads per topic, nothing per message).
    pub(crate) fn post_sow_stats(&self) {
        for (name, topic) in self.sow.topics.borrow().iter() {
            let stats = topic.stats();
            self.topic_stats.with(name, |posted| {
                posted.sow.store(true, std::sync::atomic::Ordering::Relaxed);
                crate::board::set(&posted.sow_records, stats.records as u64);
                crate::board::set(&posted.sow_bytes_used, stats.bytes_used as u64);
                crate::board::set(&posted.sow_bytes_free, stats.bytes_free as u64);
                crate::board::set(&posted.sow_slabs, stats.slabs as u64);
            });
        }
    }

    /// Snapshots the owned persistent topics that changed. Periodic snapshots are serialized
    /// here and written on a helper thread (skipped while the previous one is still writing);
    /// the final one, at shutdown, is written before this returns.
    pub(crate) fn snapshot_sow(&self, final_snapshot: bool) {
        let interval = self.config.sow.snapshot_interval_seconds;
        if !final_snapshot {
            let due = self
                .sow
                .last_snapshot
                .get()
                .is_none_or(|last| last.elapsed() >= Duration::from_secs(interval));
            if interval == 0 || !due {
                return;
            }
        }
        if let Some(handle) = self.sow.writer.borrow_mut().take() {
            if !final_snapshot && !handle.is_finished() {
                *self.sow.writer.borrow_mut() = Some(handle);
                return;
            }
            let _ = handle.join();
        }
        self.sow.last_snapshot.set(Some(Instant::now()));
        // Everything durable now is in the snapshot; what is appended but not durable may be
        // too, and is replayed again after a crash (harmless, see sow_recovery).
        let journal_point = self.journal.as_ref().map(|service| service.durable_up_to());
        let dirty: Vec<Box<[u8]>> = self.sow.dirty.borrow_mut().drain().collect();
        let mut jobs = Vec::new();
        {
            let topics = self.sow.topics.borrow();
            for name in dirty {
                let Some(topic) = topics.get(&name) else {
                    continue;
                };
                if topic.config().durability != Durability::Persistent {
                    continue;
                }
                let mut bytes = Vec::new();
                snapshot::snapshot(topic, &mut bytes);
                let path = snapshot_path(&self.config.data_dir, &topic.config().topic);
                jobs.push((topic.config().topic.clone(), topic.len(), path, bytes));
            }
        }
        if jobs.is_empty() {
            return;
        }
        let write = move || {
            for (topic, records, path, bytes) in jobs {
                let written = write_atomically(&path, &bytes).and_then(|()| match journal_point {
                    // Written after the snapshot: a crash in between leaves the older, lower
                    // point, which only replays more.
                    Some(point) => write_atomically(
                        &crate::sow_recovery::journal_point_path(&path),
                        point.to_string().as_bytes(),
                    ),
                    None => Ok(()),
                });
                match written {
                    Ok(()) => {
                        debug!(%topic, records, path = %path.display(), "SOW snapshot written")
                    }
                    Err(failure) => {
                        error!(%topic, path = %path.display(), "cannot write SOW snapshot: {failure}; the topic's changes since the last snapshot are not on disk")
                    }
                }
            }
        };
        if final_snapshot {
            write();
            info!(shard = %self.id, "SOW snapshots written");
        } else {
            match std::thread::Builder::new()
                .name("tachyon-sow-snapshot".into())
                .spawn(write)
            {
                Ok(handle) => *self.sow.writer.borrow_mut() = Some(handle),
                Err(failure) => error!("cannot start the SOW snapshot writer: {failure}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_files_are_written_whole_and_named_by_topic_hash() {
        let folder = std::env::temp_dir().join(format!("tachyon-sow-{}", std::process::id()));
        let path = snapshot_path(&folder, "orders");
        assert!(path.starts_with(folder.join("sow")));
        assert_eq!(path.extension().unwrap(), "sow");
        let mut topic = SowTopic::new(SowTopicConfig::new("orders", &["/id"])).unwrap();
        topic
            .publish(None, br#"{"id":1,"qty":5}"#, &PublishMeta::default())
            .unwrap();
        let mut bytes = Vec::new();
        snapshot::snapshot(&topic, &mut bytes);
        write_atomically(&path, &bytes).unwrap();
        assert!(!path.with_extension("sow.tmp").exists());
        let loaded = load_topic(&folder, SowTopicConfig::new("orders", &["/id"])).unwrap();
        assert_eq!(loaded.len(), 1);
        let empty = load_topic(&folder, SowTopicConfig::new("quotes", &["/id"])).unwrap();
        assert!(empty.is_empty());
        std::fs::write(&path, b"garbage").unwrap();
        let message = load_topic(&folder, SowTopicConfig::new("orders", &["/id"])).unwrap_err();
        assert!(
            message.contains("orders") && message.contains("move it away"),
            "{message}"
        );
        std::fs::remove_dir_all(&folder).unwrap();
    }

    #[test]
    fn synthetic_messages_keep_topic_and_correlation() {
        let text: &[u8] = br#"{"c":"p","t":"orders","x":"cid"}{"a":1}"#;
        let find = |needle: &[u8]| {
            let at = text
                .windows(needle.len())
                .position(|w| w == needle)
                .unwrap();
            at..at + needle.len()
        };
        let original = PublishedMessage::new(
            Bytes::from_static(text),
            find(b"orders"),
            Some(find(b"cid")),
            find(br#"{"a":1}"#).start,
            7,
        );
        let copy = synthetic_message(&original, br#"{"b":2}"#);
        assert_eq!(copy.topic(), b"orders");
        assert_eq!(copy.correlation_id(), Some(&b"cid"[..]));
        assert_eq!(copy.payload(), br#"{"b":2}"#);
        assert_eq!(copy.received_unix_ns, 7);
    }
}
