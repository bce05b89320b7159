//! The bounded channels between shards, in three lanes that cannot deadlock.
//!
//! A lane whose receiver never sends cannot be part of a wait cycle. The delivery lane's
//! receivers only push into local outbound queues and wake local tasks, so it always drains; the
//! publish and control lanes' receivers send only on the delivery lane. Hence every send
//! eventually completes, however full the channels are.
//!
//! | lane     | from → to                 | carries                                         |
//! |----------|---------------------------|-------------------------------------------------|
//! | publish  | publisher's shard → owner | messages to route, SOW publishes, queries and    |
//! |          |                           | deletes (ordered after the connection's earlier  |
//! |          |                           | publishes), flush barriers                       |
//! | control  | subscriber's shard → all  | subscription changes, closed connections        |
//! | delivery | owner → subscriber's shard| matched messages, rendered SOW frames (query     |
//! |          |                           | results, oof, SOW acks), replies                 |
//!
//! A SOW query or delete is carried out by the topic's owner when it takes the request off the
//! publish lane; its frames go back on the delivery lane, whose receivers only queue them.

use crate::connection::CloseReason;
use crate::journal::{LogonVerdict, Origin};
use bytes::Bytes;
use glommio::channels::channel_mesh::{Full, MeshBuilder, Receivers, Senders};
use std::time::Duration;
use tachyon_core::ids::{ConnectionId, ShardId, SubId};
use tachyon_core::message::PublishedMessage;
use tachyon_core::router::{Delivery, DeliveryOptions};
use tachyon_core::session::{OwnedAckTarget, SowDeleteBy, SowQuery};
use tachyon_core::topic::TopicSpec;

/// A token that pairs a reply with the request that waits for it.
pub(crate) type ReplyToken = u64;

/// Publish lane traffic.
pub(crate) enum PublishLane {
    /// Route this message (the receiving shard owns its topic; journal it first if journaled).
    Publish {
        message: PublishedMessage,
        origin: Origin,
    },
    /// Store this message in the owner's SOW, then route it.
    SowPublish {
        message: PublishedMessage,
        info: SowPublishInfo,
        origin: Origin,
    },
    /// To the journal's shard: apply the client-name rules of a logon; the verdict comes back
    /// with `token`.
    Logon {
        connection: ConnectionId,
        client_name_hash: u64,
        user_id: Option<Box<str>>,
        token: ReplyToken,
    },
    /// To the journal's shard: the connection holding this name has gone.
    Logoff {
        connection: ConnectionId,
        client_name_hash: u64,
    },
    /// To the journal's shard: send a persisted ack for this flush once the log is durable up
    /// to everything appended so far.
    FlushPersisted {
        connection: ConnectionId,
        ack: OwnedAckTarget,
    },
    /// Run a SOW query (registering its subscription in the same step); the frames go back to
    /// `connection` with `token`.
    SowQuery {
        connection: ConnectionId,
        query: Box<SowQuery>,
        ack: OwnedAckTarget,
        token: ReplyToken,
    },
    /// Delete SOW records; the acks go back to `connection` with `token`.
    SowDelete {
        connection: ConnectionId,
        request: Box<SowDeleteRequest>,
        token: ReplyToken,
    },
    /// Reply once everything sent before this has been routed.
    Barrier {
        reply_to: ShardId,
        token: ReplyToken,
    },
}

/// What the owner needs, besides the message, to store a SOW publish.
#[derive(Debug, Clone)]
pub(crate) struct SowPublishInfo {
    /// An explicit `k` header.
    pub key: Option<Box<[u8]>>,
    /// The `e` header.
    pub expiration: Option<Duration>,
    /// `delta_publish`: merge into the stored record.
    pub delta: bool,
}

/// A validated `sow_delete`.
#[derive(Debug)]
pub(crate) struct SowDeleteRequest {
    pub topic: Box<[u8]>,
    pub by: SowDeleteBy,
    /// An explicit `k` header (delete by data).
    pub key: Option<Box<[u8]>>,
    /// The command's payload (delete by data).
    pub data: Bytes,
    /// The filter text (delete by filter), kept for the journal.
    pub filter_text: Option<Box<[u8]>>,
    pub ack: OwnedAckTarget,
    /// Who asked, for the journal and its persisted ack.
    pub origin: Origin,
}

/// Control lane traffic.
pub(crate) enum ControlLane {
    /// Register (or replace) a subscription, then reply.
    Subscribe {
        connection: ConnectionId,
        sub_id: SubId,
        topic: TopicSpec,
        options: DeliveryOptions,
        paused: bool,
        token: ReplyToken,
    },
    /// Remove a subscription.
    Unsubscribe {
        connection: ConnectionId,
        sub_id: SubId,
    },
    /// Pause or resume a subscription.
    Pause {
        connection: ConnectionId,
        sub_id: SubId,
        paused: bool,
    },
    /// To the journal's shard: start a bookmark subscription (replay, then live); its acks and
    /// messages go back on the delivery lane.
    BookmarkSubscribe(Box<crate::replay::BookmarkSubscription>),
}

/// Delivery lane traffic.
pub(crate) enum DeliveryLane {
    /// Send `message` to one local connection.
    Deliver {
        delivery: Delivery,
        message: PublishedMessage,
        /// The SOW record's wire key, for `k` (SOW topics only).
        sow_key: Option<Bytes>,
    },
    /// Queue these whole frames for one local connection, then (with a token) reply.
    Frames {
        connection: ConnectionId,
        bytes: Vec<u8>,
        token: Option<ReplyToken>,
    },
    /// A request with this token was carried out.
    Reply { token: ReplyToken },
    /// Replayed frames for one local connection: queue them, and once its queue is below half
    /// its budget send `Reply { token }` to `reply_to` (the replay's pacing).
    PacedFrames {
        connection: ConnectionId,
        bytes: Vec<u8>,
        token: ReplyToken,
        reply_to: ShardId,
    },
    /// The journal shard's verdict on a logon.
    LogonVerdict {
        token: ReplyToken,
        verdict: LogonVerdict,
    },
    /// Close a local connection (its client name was taken over).
    Close {
        connection: ConnectionId,
        reason: CloseReason,
    },
}

/// The three lanes' builders, cloned into every shard before it starts.
#[derive(Clone)]
pub(crate) struct MeshBuilders {
    pub publish: MeshBuilder<PublishLane, Full>,
    pub control: MeshBuilder<ControlLane, Full>,
    pub delivery: MeshBuilder<DeliveryLane, Full>,
}

impl MeshBuilders {
    pub(crate) fn new(shards: usize, depth: usize) -> MeshBuilders {
        MeshBuilders {
            publish: MeshBuilder::full(shards, depth),
            control: MeshBuilder::full(shards, depth),
            delivery: MeshBuilder::full(shards, depth),
        }
    }
}

/// One shard's sending ends of the three lanes.
pub(crate) struct LaneSenders {
    pub publish: Senders<PublishLane>,
    pub control: Senders<ControlLane>,
    pub delivery: Senders<DeliveryLane>,
}

/// One shard's receiving ends of the three lanes.
pub(crate) struct LaneReceivers {
    pub publish: Receivers<PublishLane>,
    pub control: Receivers<ControlLane>,
    pub delivery: Receivers<DeliveryLane>,
}

impl MeshBuilders {
    /// Joins all three lanes; completes when every shard has joined.
    pub(crate) async fn join(self) -> (LaneSenders, LaneReceivers) {
        let publish = self.publish.join().await.expect("joining the publish lane");
        let control = self.control.join().await.expect("joining the control lane");
        let delivery = self
            .delivery
            .join()
            .await
            .expect("joining the delivery lane");
        (
            LaneSenders {
                publish: publish.0,
                control: control.0,
                delivery: delivery.0,
            },
            LaneReceivers {
                publish: publish.1,
                control: control.1,
                delivery: delivery.1,
            },
        )
    }
}
