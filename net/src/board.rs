//! What each shard posts for the admin API about its clients, their subscriptions, the topics it
//! routes and how long routing takes: the per-client and per-topic half of the statistics tree
//! (the per-shard half is [`crate::stats::ShardStats`]).
//!
//! Counters are relaxed atomics written by the one shard that owns the client or topic, with a
//! load and a store (no locked instruction), and read by the admin thread. The lists of clients and topics
//! sit behind a mutex that is taken only when the set changes (a connection opens or closes, a
//! client logs on or subscribes, a topic is routed for the first time) and by the admin API per
//! request: never per message. Everything is bounded: one entry per open connection, at most
//! `limits.subscriptions_per_client_max` subscriptions each, and at most [`TOPICS_TRACKED_MAX`]
//! topics per shard, after which further topics are counted together under [`OTHER_TOPICS`].
//!
//! An operator's request to disconnect a client is posted here too ([`ClientStats::request_disconnect`]);
//! the owning shard's timer sees it within a tick and closes the connection itself, so the admin
//! thread never touches a socket.

use crate::latency::LatencyHistogram;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tachyon_core::ids::ConnectionId;

/// Topics one shard tracks by name; more are added up under [`OTHER_TOPICS`] so a client that
/// publishes to millions of distinct topics cannot grow the server's memory or the metrics.
pub const TOPICS_TRACKED_MAX: usize = 10_000;

/// Longest topic name tracked by name; longer names are counted under [`OTHER_TOPICS`], so the
/// memory the names take is bounded too, not only their number.
pub const TOPIC_NAME_BYTES_TRACKED_MAX: usize = 256;

/// The name under which topics past [`TOPICS_TRACKED_MAX`] are counted.
pub const OTHER_TOPICS: &str = "(other topics)";

/// Adds to a counter that only its owner writes.
pub(crate) fn bump(counter: &AtomicU64, amount: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(amount),
        Ordering::Relaxed,
    );
}

/// Sets a gauge that only its owner writes.
pub(crate) fn set(gauge: &AtomicU64, value: u64) {
    gauge.store(value, Ordering::Relaxed);
}

/// Reads a counter or gauge.
pub fn get(value: &AtomicU64) -> u64 {
    value.load(Ordering::Relaxed)
}

/// Locks a board list; a panic elsewhere while it was held leaves a usable list (entries are
/// only pushed and removed whole), so poisoning is ignored.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Who a client is, as far as the server knows: set at connect and at logon.
#[derive(Clone, Debug, Default)]
pub struct ClientIdentity {
    /// The logon name; empty until logon.
    pub name: String,
    /// The logon user id; empty when none was given.
    pub user: String,
    /// Whether the client logged on.
    pub logged_on: bool,
}

/// One subscription as the admin API lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscriptionInfo {
    /// The client's `sub_id`.
    pub sub_id: String,
    /// The topic or topic pattern.
    pub topic: String,
    /// The content filter as sent, if any.
    pub filter: Option<String>,
    /// The bookmark it started from, for a bookmark (replay) subscription.
    pub bookmark: Option<String>,
    /// Whether deliveries are paused.
    pub paused: bool,
}

/// One connection's statistics.
#[derive(Debug)]
pub struct ClientStats {
    /// The connection's id (shard, slot, generation), unique while it is open.
    pub connection: ConnectionId,
    /// The client's address.
    pub peer: SocketAddr,
    /// When it connected, in ms since the Unix epoch.
    pub connected_at_unix_ms: u64,
    identity: Mutex<ClientIdentity>,
    /// By `sub_id`: adding and removing stay cheap for a client with thousands.
    subscriptions: Mutex<BTreeMap<String, SubscriptionInfo>>,
    /// Bytes read from the client.
    pub bytes_in: AtomicU64,
    /// Frames (commands) read from the client.
    pub frames_in: AtomicU64,
    /// Messages the client published.
    pub messages_in: AtomicU64,
    /// Bytes written to the client.
    pub bytes_out: AtomicU64,
    /// Frames queued to the client (deliveries, acks, heartbeats).
    pub frames_out: AtomicU64,
    /// Messages delivered to the client's subscriptions.
    pub messages_out: AtomicU64,
    /// Bytes queued in memory for the client (a gauge).
    pub queued_bytes: AtomicU64,
    /// Bytes in the client's spool file not yet sent (a gauge).
    pub spooled_bytes: AtomicU64,
    /// Times this client started spooling to disk.
    pub spools_opened: AtomicU64,
    disconnect_requested: AtomicBool,
}

impl ClientStats {
    /// A new connection's entry; the name is its address until it logs on.
    pub fn new(connection: ConnectionId, peer: SocketAddr, connected_at_unix_ms: u64) -> Self {
        ClientStats {
            connection,
            peer,
            connected_at_unix_ms,
            identity: Mutex::new(ClientIdentity::default()),
            subscriptions: Mutex::new(BTreeMap::new()),
            bytes_in: AtomicU64::new(0),
            frames_in: AtomicU64::new(0),
            messages_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            frames_out: AtomicU64::new(0),
            messages_out: AtomicU64::new(0),
            queued_bytes: AtomicU64::new(0),
            spooled_bytes: AtomicU64::new(0),
            spools_opened: AtomicU64::new(0),
            disconnect_requested: AtomicBool::new(false),
        }
    }

    /// Records the logon.
    pub fn logged_on(&self, name: &str, user: &str) {
        let mut identity = lock(&self.identity);
        identity.name = name.to_string();
        identity.user = user.to_string();
        identity.logged_on = true;
    }

    /// Who the client is.
    pub fn identity(&self) -> ClientIdentity {
        lock(&self.identity).clone()
    }

    /// Adds a subscription, replacing one with the same id.
    pub fn subscribed(&self, info: SubscriptionInfo) {
        lock(&self.subscriptions).insert(info.sub_id.clone(), info);
    }

    /// Removes a subscription.
    pub fn unsubscribed(&self, sub_id: &str) {
        lock(&self.subscriptions).remove(sub_id);
    }

    /// Marks a subscription paused or resumed.
    pub fn paused(&self, sub_id: &str, paused: bool) {
        if let Some(existing) = lock(&self.subscriptions).get_mut(sub_id) {
            existing.paused = paused;
        }
    }

    /// The client's subscriptions, by `sub_id`.
    pub fn subscriptions(&self) -> Vec<SubscriptionInfo> {
        lock(&self.subscriptions).values().cloned().collect()
    }

    /// Asks the owning shard to disconnect this client (the admin action).
    pub fn request_disconnect(&self) {
        self.disconnect_requested.store(true, Ordering::Release);
    }

    /// Whether an operator asked for this client to be disconnected.
    pub fn disconnect_requested(&self) -> bool {
        self.disconnect_requested.load(Ordering::Acquire)
    }
}

/// One topic's statistics, kept by the shard that routes it.
#[derive(Debug, Default)]
pub struct TopicStats {
    /// The topic's name ([`OTHER_TOPICS`] for the overflow entry).
    pub name: String,
    /// Messages published to the topic (routed by this shard).
    pub messages_in: AtomicU64,
    /// Payload bytes published to the topic.
    pub bytes_in: AtomicU64,
    /// Deliveries of the topic's messages to subscriptions.
    pub deliveries: AtomicU64,
    /// Whether the topic is a SOW topic owned by this shard.
    pub sow: AtomicBool,
    /// SOW records stored (a gauge, refreshed on the shard's timer).
    pub sow_records: AtomicU64,
    /// Bytes in allocated SOW record blocks (a gauge).
    pub sow_bytes_used: AtomicU64,
    /// Bytes of SOW slab space not in any block (a gauge).
    pub sow_bytes_free: AtomicU64,
    /// SOW slabs allocated (a gauge).
    pub sow_slabs: AtomicU64,
}

impl TopicStats {
    fn named(name: String) -> TopicStats {
        TopicStats {
            name,
            ..TopicStats::default()
        }
    }
}

/// What one shard posts: its clients, its topics and its routing latency.
#[derive(Debug, Default)]
pub struct ShardBoard {
    clients: Mutex<Vec<Arc<ClientStats>>>,
    topics: Mutex<Vec<Arc<TopicStats>>>,
    /// From a message's receipt (its frame parsed) to its deliveries queued on every local
    /// subscriber or handed to the subscribers' shards, for messages this shard routed.
    pub route_latency: LatencyHistogram,
}

impl ShardBoard {
    /// Lists a new connection.
    pub fn add_client(&self, client: Arc<ClientStats>) {
        lock(&self.clients).push(client);
    }

    /// Removes a closed connection.
    pub fn remove_client(&self, connection: ConnectionId) {
        lock(&self.clients).retain(|client| client.connection != connection);
    }

    /// The logon name of an open connection, or its address before logon.
    pub fn client_name(&self, connection: ConnectionId) -> Option<String> {
        let clients = lock(&self.clients);
        let client = clients
            .iter()
            .find(|client| client.connection == connection)?;
        let identity = lock(&client.identity);
        Some(if identity.logged_on {
            identity.name.clone()
        } else {
            client.peer.to_string()
        })
    }

    /// Stops listing one subscription of an open connection.
    pub fn subscription_ended(&self, connection: ConnectionId, sub_id: &str) {
        let clients = lock(&self.clients);
        if let Some(client) = clients
            .iter()
            .find(|client| client.connection == connection)
        {
            client.unsubscribed(sub_id);
        }
    }

    /// The open connections.
    pub fn clients(&self) -> Vec<Arc<ClientStats>> {
        lock(&self.clients).clone()
    }

    /// The topics this shard routed.
    pub fn topics(&self) -> Vec<Arc<TopicStats>> {
        lock(&self.topics).clone()
    }
}

/// The routing shard's own index from topic name to its [`TopicStats`]: looked up per message
/// without any lock, it posts each new entry to the shard's board.
pub(crate) struct TopicTable {
    board: Arc<ShardBoard>,
    by_name: RefCell<HashMap<Box<[u8]>, Arc<TopicStats>>>,
    other: RefCell<Option<Arc<TopicStats>>>,
}

impl TopicTable {
    pub(crate) fn new(board: Arc<ShardBoard>) -> TopicTable {
        TopicTable {
            board,
            by_name: RefCell::new(HashMap::new()),
            other: RefCell::new(None),
        }
    }

    /// Runs `update` on the topic's entry, creating it (or using the overflow entry) first.
    pub(crate) fn with<R>(&self, topic: &[u8], update: impl FnOnce(&TopicStats) -> R) -> R {
        if let Some(stats) = self.by_name.borrow().get(topic) {
            return update(stats);
        }
        self.with_new(topic, update)
    }

    #[cold]
    fn with_new<R>(&self, topic: &[u8], update: impl FnOnce(&TopicStats) -> R) -> R {
        let mut by_name = self.by_name.borrow_mut();
        let stats =
            if by_name.len() < TOPICS_TRACKED_MAX && topic.len() <= TOPIC_NAME_BYTES_TRACKED_MAX {
                let stats = Arc::new(TopicStats::named(
                    String::from_utf8_lossy(topic).into_owned(),
                ));
                by_name.insert(topic.into(), stats.clone());
                lock(&self.board.topics).push(stats.clone());
                stats
            } else {
                self.other
                    .borrow_mut()
                    .get_or_insert_with(|| {
                        let stats = Arc::new(TopicStats::named(OTHER_TOPICS.into()));
                        lock(&self.board.topics).push(stats.clone());
                        stats
                    })
                    .clone()
            };
        drop(by_name);
        update(&stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::tests::connection;

    #[test]
    fn clients_come_and_go_with_their_subscriptions() {
        let board = ShardBoard::default();
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let client = Arc::new(ClientStats::new(connection(0), peer, 1));
        board.add_client(client.clone());
        board.add_client(Arc::new(ClientStats::new(connection(1), peer, 2)));
        client.logged_on("alice", "ops");
        let info = |sub_id: &str, topic: &str| SubscriptionInfo {
            sub_id: sub_id.into(),
            topic: topic.into(),
            filter: None,
            bookmark: None,
            paused: false,
        };
        client.subscribed(info("1", "a"));
        client.subscribed(info("2", "b"));
        client.subscribed(info("1", "c"));
        client.paused("2", true);
        let subscriptions = client.subscriptions();
        assert_eq!(subscriptions.len(), 2);
        assert!(subscriptions
            .iter()
            .any(|s| s.sub_id == "1" && s.topic == "c"));
        assert!(subscriptions.iter().any(|s| s.sub_id == "2" && s.paused));
        client.unsubscribed("2");
        assert_eq!(client.subscriptions().len(), 1);
        assert_eq!(client.identity().name, "alice");
        assert!(!client.disconnect_requested());
        client.request_disconnect();
        assert!(client.disconnect_requested());
        assert_eq!(board.client_name(connection(0)).as_deref(), Some("alice"));
        assert_eq!(
            board.client_name(connection(1)).as_deref(),
            Some("127.0.0.1:5000")
        );
        assert_eq!(board.clients().len(), 2);
        board.remove_client(connection(0));
        let left = board.clients();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].connection, connection(1));
        assert_eq!(board.client_name(connection(0)), None);
    }

    #[test]
    fn topics_past_the_bound_are_counted_together() {
        let board = Arc::new(ShardBoard::default());
        let table = TopicTable::new(board.clone());
        for index in 0..TOPICS_TRACKED_MAX + 5 {
            table.with(format!("t{index}").as_bytes(), |stats| {
                bump(&stats.messages_in, 1)
            });
        }
        table.with(b"t0", |stats| bump(&stats.messages_in, 1));
        table.with(&[b'x'; TOPIC_NAME_BYTES_TRACKED_MAX + 1], |stats| {
            bump(&stats.messages_in, 1)
        });
        let topics = board.topics();
        assert_eq!(topics.len(), TOPICS_TRACKED_MAX + 1);
        let first = topics.iter().find(|topic| topic.name == "t0").unwrap();
        assert_eq!(get(&first.messages_in), 2);
        let other = topics
            .iter()
            .find(|topic| topic.name == OTHER_TOPICS)
            .unwrap();
        assert_eq!(get(&other.messages_in), 6, "5 past the count, 1 too long");
    }
}
