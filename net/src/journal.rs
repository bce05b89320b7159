//! The transaction log in the data plane.
//!
//! Shard 0 owns the journal (every journaled topic is routed there, whatever the topic
//! routing), so one thread assigns every bookmark and the log has one order. This module holds
//! what that shard keeps beside the [`Journal`] itself:
//!
//! * which topics are journaled ([`JournaledTopics`], known to every shard);
//! * guaranteed publishing: the publisher table that makes a re-sent `s` a duplicate, the last
//!   *persisted* sequence per client name for the logon ack, and persisted acks sent once the
//!   write and fdatasync covering a message completed, conflated per connection;
//! * client-name ownership: with a log, a second logon with a name in use replaces the first
//!   connection (same user) or is refused with `name in use` (another user);
//! * the messages appended but not yet durable, kept in order so that bookmark subscriptions
//!   (which only ever see durable messages) get them the moment they become durable.
//!
//! After a write or sync error the journal is poisoned: every waiting publisher gets a failed
//! persisted ack, [`JournalShared::failed`] tells every shard to refuse journaled publishes, and
//! nothing claims durability again until a restart recovers the durable prefix.

use crate::notify::Notify;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tachyon_core::bookmark::WireBookmark;
use tachyon_core::ids::{ConnectionId, SubId};
use tachyon_core::message::PublishedMessage;
use tachyon_core::router::Router;
use tachyon_core::session::OwnedAckTarget;
use tachyon_core::topic::TopicSpec;
use tachyon_storage::journal::{Journal, Publisher, Sequence};

/// Topic names remembered per shard as journaled or not before the cache is cleared.
const TOPIC_CACHE_ENTRIES_MAX: usize = 65_536;

/// State every shard reads without a lock; shard 0 is the only writer.
#[derive(Debug, Default)]
pub struct JournalShared {
    /// The journal hit an I/O error and takes no more writes.
    pub failed: AtomicBool,
    /// The sequence of the last record appended.
    pub last_sequence: AtomicU64,
    /// Every record up to here is durable.
    pub durable_up_to: AtomicU64,
    /// Records written and synced.
    pub records_written: AtomicU64,
    /// Bytes written and synced (padded to whole blocks).
    pub bytes_written: AtomicU64,
    /// Write+sync groups completed (each ends in one fsync-equivalent).
    pub writes: AtomicU64,
    /// How long each write+sync group took, from submit to completion.
    pub write_latency: crate::latency::LatencyHistogram,
}

impl JournalShared {
    /// Whether the journal refuses writes.
    pub fn has_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }
}

/// Which topics are journaled: exact names and patterns from `[journal] topics`.
pub(crate) struct JournaledTopics {
    specs: Vec<TopicSpec>,
    cache: RefCell<HashMap<Box<[u8]>, bool>>,
}

impl JournaledTopics {
    pub(crate) fn new(specs: Vec<TopicSpec>) -> JournaledTopics {
        JournaledTopics {
            specs,
            cache: RefCell::new(HashMap::new()),
        }
    }

    /// Whether any topic is journaled (the journal exists).
    pub(crate) fn enabled(&self) -> bool {
        !self.specs.is_empty()
    }

    /// Whether messages on `topic` are journaled.
    pub(crate) fn contains(&self, topic: &[u8]) -> bool {
        if self.specs.is_empty() {
            return false;
        }
        if let Some(&known) = self.cache.borrow().get(topic) {
            return known;
        }
        let journaled = self.specs.iter().any(|spec| spec.matches(topic));
        let mut cache = self.cache.borrow_mut();
        if cache.len() >= TOPIC_CACHE_ENTRIES_MAX {
            cache.clear();
        }
        cache.insert(topic.into(), journaled);
        journaled
    }

    /// Whether a subscription to `topic` can be served from the journal: an exact topic must be
    /// journaled; a pattern is accepted when anything is (replay filters by topic).
    pub(crate) fn may_serve(&self, topic: &TopicSpec) -> bool {
        match topic {
            TopicSpec::Exact(name) => self.contains(name),
            TopicSpec::Pattern(_) => self.enabled(),
        }
    }
}

/// Who published a message and what they want to hear about its durability.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Origin {
    /// The publishing connection.
    pub connection: ConnectionId,
    /// Hash of the publisher's client name (never 0 once logged on).
    pub client_name_hash: u64,
    /// The publish-store sequence `s`, 0 when the client sent none.
    pub client_sequence: u64,
    /// Whether the command asked for a `persisted` ack.
    pub persisted_ack: bool,
}

impl Origin {
    /// The publisher as the journal records it.
    pub(crate) fn publisher(&self) -> Publisher {
        Publisher {
            client_name_hash: self.client_name_hash,
            client_sequence: self.client_sequence,
        }
    }
}

/// What to send when a sequence becomes durable.
#[derive(Debug)]
pub(crate) enum WaiterReply {
    /// A guaranteed publish: conflated into one `{"a":"persisted","s":N}` per connection.
    Publish { client_sequence: u64 },
    /// A `flush` with `a=persisted`: one ack with its ids.
    Flush { ack: OwnedAckTarget },
}

/// A connection waiting for the journal to be durable up to `sequence`.
#[derive(Debug)]
pub(crate) struct Waiter {
    pub sequence: Sequence,
    pub connection: ConnectionId,
    pub reply: WaiterReply,
}

/// A journaled message waiting to become durable.
pub(crate) struct Undurable {
    pub sequence: Sequence,
    pub message: PublishedMessage,
    pub publisher: Publisher,
    /// Whether bookmark subscriptions get it once durable (messages yes, SOW deletes no).
    pub deliverable: bool,
}

/// Cancel flags of the replays in progress, by connection and subscription.
pub(crate) type ReplayCancels = HashMap<(ConnectionId, SubId), std::rc::Rc<Cell<bool>>>;

/// What a shard gets of the journal when it starts: the service (shard 0 only, when any topic
/// is journaled) and the state every shard reads.
pub(crate) struct ShardJournal {
    pub service: Option<JournalService>,
    pub shared: std::sync::Arc<JournalShared>,
}

/// Who holds a client name.
#[derive(Debug, Clone)]
pub(crate) struct NameHolder {
    pub connection: ConnectionId,
    pub user_id: Option<Box<str>>,
}

/// What a logon gets when the log is on.
#[derive(Debug, Clone)]
pub(crate) enum LogonVerdict {
    /// Logged on; `replaced` was holding the name and must be closed.
    Accepted {
        last_persisted: u64,
        replaced: Option<ConnectionId>,
    },
    /// Another user's connection holds the name.
    NameInUse { holder: ConnectionId },
}

/// Shard 0's transaction-log state.
pub(crate) struct JournalService {
    pub journal: RefCell<Journal>,
    pub shared: std::sync::Arc<JournalShared>,
    /// Last durable publish-store sequence per client-name hash (the logon ack's `bm`).
    persisted: RefCell<HashMap<u64, u64>>,
    pub waiters: RefCell<VecDeque<Waiter>>,
    pub undurable: RefCell<VecDeque<Undurable>>,
    /// Durable messages up to here were handed to the bookmark router (replays read up to it).
    pub routed_up_to: Cell<Sequence>,
    /// Live bookmark subscriptions: they receive messages as they become durable.
    pub bookmark_router: RefCell<Router>,
    names: RefCell<HashMap<u64, NameHolder>>,
    /// Wakes the task that waits for write completions.
    pub submitted: Notify,
    /// Bumped on every durability change (and failure); replays and backpressured publishers
    /// poll it.
    pub durable_generation: Cell<u64>,
    /// Replays in progress, by connection and subscription; set to true to cancel one.
    pub replays: RefCell<ReplayCancels>,
    /// The failure that poisoned the journal, as clients and logs see it.
    pub failure: RefCell<Option<String>>,
    /// Reused buffer for encoding [`RecordHeaders`].
    pub headers_scratch: RefCell<Vec<u8>>,
    /// Persisted acks waiting for the conflation interval: the highest durable client sequence
    /// per connection.
    pub ack_backlog: RefCell<HashMap<ConnectionId, u64>>,
    /// Live bookmark subscriptions that asked for persisted acks: what they were last sent and
    /// last told, so a client's bookmark store learns how far the log holds its messages.
    pub bookmark_acks: RefCell<HashMap<(ConnectionId, SubId), BookmarkAckState>>,
    /// Range subscriptions whose end lies beyond the log when they caught up.
    pub live_ranges: RefCell<HashMap<(ConnectionId, SubId), crate::replay::LiveRange>>,
}

/// A live bookmark subscription's persisted-ack progress.
#[derive(Debug)]
pub(crate) struct BookmarkAckState {
    pub ack: OwnedAckTarget,
    /// The bookmark of the last message delivered to it.
    pub delivered: Option<WireBookmark>,
    /// The bookmark its last persisted ack carried.
    pub acked: Option<WireBookmark>,
}

impl JournalService {
    pub(crate) fn new(
        journal: Journal,
        persisted: HashMap<u64, u64>,
        shared: std::sync::Arc<JournalShared>,
    ) -> JournalService {
        shared
            .last_sequence
            .store(journal.last_sequence(), Ordering::Release);
        shared
            .durable_up_to
            .store(journal.durable_up_to(), Ordering::Release);
        let routed_up_to = Cell::new(journal.durable_up_to());
        JournalService {
            routed_up_to,
            journal: RefCell::new(journal),
            shared,
            persisted: RefCell::new(persisted),
            waiters: RefCell::new(VecDeque::with_capacity(4096)),
            undurable: RefCell::new(VecDeque::with_capacity(4096)),
            bookmark_router: RefCell::new(Router::new()),
            names: RefCell::new(HashMap::new()),
            submitted: Notify::default(),
            durable_generation: Cell::new(0),
            replays: RefCell::new(HashMap::new()),
            failure: RefCell::new(None),
            headers_scratch: RefCell::new(Vec::with_capacity(256)),
            ack_backlog: RefCell::new(HashMap::new()),
            bookmark_acks: RefCell::new(HashMap::new()),
            live_ranges: RefCell::new(HashMap::new()),
        }
    }

    /// The durable point.
    pub(crate) fn durable_up_to(&self) -> Sequence {
        self.journal.borrow().durable_up_to()
    }

    /// The last durable publish-store sequence of a client name.
    pub(crate) fn last_persisted(&self, client_name_hash: u64) -> u64 {
        self.persisted
            .borrow()
            .get(&client_name_hash)
            .copied()
            .unwrap_or(0)
    }

    /// Records that `publisher`'s message is durable.
    pub(crate) fn note_persisted(&self, publisher: Publisher) {
        if publisher.client_sequence == 0 {
            return;
        }
        let mut persisted = self.persisted.borrow_mut();
        let entry = persisted.entry(publisher.client_name_hash).or_insert(0);
        *entry = (*entry).max(publisher.client_sequence);
    }

    /// Applies the AMPS rules for a logon with a name: a free name is taken; the same user
    /// replaces the holder; another user is refused.
    pub(crate) fn logon(
        &self,
        connection: ConnectionId,
        client_name_hash: u64,
        user_id: Option<&str>,
    ) -> LogonVerdict {
        let mut names = self.names.borrow_mut();
        let replaced = match names.get(&client_name_hash) {
            Some(holder) if holder.connection == connection => None,
            Some(holder) if holder.user_id.as_deref() != user_id => {
                return LogonVerdict::NameInUse {
                    holder: holder.connection,
                }
            }
            Some(holder) => Some(holder.connection),
            None => None,
        };
        names.insert(
            client_name_hash,
            NameHolder {
                connection,
                user_id: user_id.map(Box::from),
            },
        );
        LogonVerdict::Accepted {
            last_persisted: self.last_persisted(client_name_hash),
            replaced,
        }
    }

    /// Frees a name when its holder disconnects (a replaced connection frees nothing).
    pub(crate) fn logoff(&self, connection: ConnectionId, client_name_hash: u64) {
        let mut names = self.names.borrow_mut();
        if names
            .get(&client_name_hash)
            .is_some_and(|holder| holder.connection == connection)
        {
            names.remove(&client_name_hash);
        }
    }

    /// The bookmark of the last durable record, as clients see positions.
    pub(crate) fn durable_bookmark(&self) -> Option<WireBookmark> {
        let durable = self.durable_up_to();
        (durable > 0).then_some(WireBookmark {
            publisher: JOURNAL_BOOKMARK_PUBLISHER_FALLBACK,
            sequence: durable,
        })
    }
}

/// The publisher id of a bookmark that names a journal position rather than a message (a
/// completed or persisted ack): any non-zero id works, since the server reads only the sequence.
pub(crate) const JOURNAL_BOOKMARK_PUBLISHER_FALLBACK: u64 = 1;

/// The wire bookmark of a journaled message: the publisher's name hash (never 0, which client
/// bookmark stores drop) and the journal sequence, which grows across the instance and so per
/// publisher too. The server resolves a bookmark by its sequence alone.
pub(crate) fn wire_bookmark(client_name_hash: u64, sequence: Sequence) -> WireBookmark {
    WireBookmark {
        publisher: client_name_hash.max(1),
        sequence,
    }
}

/// What the server keeps of a journaled command besides topic and payload, so that replay and
/// SOW rebuild can redo it: stored in the record's opaque headers as tag, 2-byte little-endian
/// length, bytes; unknown tags are skipped so later versions can add fields.
///
/// | tag | field                                                          |
/// | --: | -------------------------------------------------------------- |
/// |   1 | correlation id `x`, verbatim                                   |
/// |   2 | SOW key `k` given in the header                                |
/// |   3 | expiration `e` in seconds, 8 bytes little-endian               |
/// |   4 | what a `sow_delete` selects: `f` filter, `k` sow_keys, `d` data |
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordHeaders<'a> {
    pub correlation_id: Option<&'a [u8]>,
    pub sow_key: Option<&'a [u8]>,
    pub expiration_seconds: Option<u64>,
    pub delete_by: Option<u8>,
}

const TAG_CORRELATION_ID: u8 = 1;
const TAG_SOW_KEY: u8 = 2;
const TAG_EXPIRATION: u8 = 3;
const TAG_DELETE_BY: u8 = 4;

/// Largest header field (the length is 16 bits).
pub(crate) const RECORD_HEADER_FIELD_BYTES_MAX: usize = u16::MAX as usize;

impl<'a> RecordHeaders<'a> {
    /// Appends the encoded fields to `out` (cleared first).
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.clear();
        let mut field = |tag: u8, bytes: &[u8]| {
            assert!(bytes.len() <= RECORD_HEADER_FIELD_BYTES_MAX);
            out.push(tag);
            out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
            out.extend_from_slice(bytes);
        };
        if let Some(correlation_id) = self.correlation_id {
            field(TAG_CORRELATION_ID, correlation_id);
        }
        if let Some(key) = self.sow_key {
            field(TAG_SOW_KEY, key);
        }
        if let Some(seconds) = self.expiration_seconds {
            field(TAG_EXPIRATION, &seconds.to_le_bytes());
        }
        if let Some(by) = self.delete_by {
            field(TAG_DELETE_BY, &[by]);
        }
    }

    /// Reads encoded fields; `None` when the bytes are not a valid encoding.
    pub(crate) fn decode(mut bytes: &'a [u8]) -> Option<RecordHeaders<'a>> {
        let mut headers = RecordHeaders::default();
        while !bytes.is_empty() {
            if bytes.len() < 3 {
                return None;
            }
            let tag = bytes[0];
            let length = u16::from_le_bytes([bytes[1], bytes[2]]) as usize;
            let value = bytes.get(3..3 + length)?;
            match tag {
                TAG_CORRELATION_ID => headers.correlation_id = Some(value),
                TAG_SOW_KEY => headers.sow_key = Some(value),
                TAG_EXPIRATION => {
                    headers.expiration_seconds = Some(u64::from_le_bytes(value.try_into().ok()?))
                }
                TAG_DELETE_BY => headers.delete_by = Some(*value.first()?),
                _ => {}
            }
            bytes = &bytes[3 + length..];
        }
        Some(headers)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tachyon_core::ids::ShardId;

    /// A connection on shard 0 (shared with other modules' tests).
    pub(crate) fn connection(slot: u32) -> ConnectionId {
        ConnectionId {
            shard: ShardId(0),
            slot,
            generation: 1,
        }
    }

    #[test]
    fn journaled_topics_match_names_and_patterns() {
        let topics = JournaledTopics::new(vec![
            TopicSpec::parse(b"orders").unwrap(),
            TopicSpec::parse(b"^trades\\..*").unwrap(),
        ]);
        assert!(topics.contains(b"orders"));
        assert!(topics.contains(b"trades.eu"));
        assert!(!topics.contains(b"quotes"));
        assert!(!topics.contains(b"orders2"));
        assert!(topics.may_serve(&TopicSpec::parse(b"orders").unwrap()));
        assert!(!topics.may_serve(&TopicSpec::parse(b"quotes").unwrap()));
        assert!(!JournaledTopics::new(Vec::new()).contains(b"orders"));
    }

    #[test]
    fn record_headers_round_trip_and_reject_truncation() {
        let headers = RecordHeaders {
            correlation_id: Some(b"corr"),
            sow_key: Some(b"k-1"),
            expiration_seconds: Some(30),
            delete_by: Some(b'f'),
        };
        let mut bytes = Vec::new();
        headers.encode(&mut bytes);
        assert_eq!(RecordHeaders::decode(&bytes), Some(headers));
        assert_eq!(RecordHeaders::decode(&[]), Some(RecordHeaders::default()));
        for cut in 1..bytes.len() {
            assert_ne!(
                RecordHeaders::decode(&bytes[..cut]),
                Some(headers),
                "cut {cut}"
            );
        }
        let unknown = [9u8, 1, 0, b'z', 1, 1, 0, b'x'];
        assert_eq!(
            RecordHeaders::decode(&unknown).unwrap().correlation_id,
            Some(&b"x"[..])
        );
    }

    #[test]
    fn bookmarks_never_name_publisher_zero() {
        assert_eq!(wire_bookmark(0, 3).publisher, 1);
        assert_eq!(
            wire_bookmark(9, 3),
            WireBookmark {
                publisher: 9,
                sequence: 3
            }
        );
    }

    #[test]
    fn names_follow_the_amps_logon_rules() {
        let dir =
            std::env::temp_dir().join(format!("tachyon-journal-names-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let journal = Journal::open(
            &dir,
            tachyon_storage::journal::JournalConfig {
                segment_size_bytes: 1 << 20,
                spare_segments: 1,
                ..Default::default()
            },
        )
        .unwrap();
        let mut persisted = HashMap::new();
        persisted.insert(99, 12);
        let service = JournalService::new(journal, persisted, Default::default());
        let first = connection(1);
        let second = connection(2);
        let third = connection(3);
        assert!(matches!(
            service.logon(first, 99, Some("alice")),
            LogonVerdict::Accepted {
                last_persisted: 12,
                replaced: None
            }
        ));
        assert!(matches!(
            service.logon(second, 99, Some("alice")),
            LogonVerdict::Accepted { replaced: Some(old), .. } if old == first
        ));
        assert!(matches!(
            service.logon(third, 99, Some("bob")),
            LogonVerdict::NameInUse { holder } if holder == second
        ));
        service.logoff(first, 99);
        assert!(
            matches!(
                service.logon(third, 99, Some("bob")),
                LogonVerdict::NameInUse { .. }
            ),
            "the replaced connection's logoff must not free the name"
        );
        service.logoff(second, 99);
        assert!(matches!(
            service.logon(third, 99, Some("bob")),
            LogonVerdict::Accepted { replaced: None, .. }
        ));
        service.note_persisted(Publisher {
            client_name_hash: 99,
            client_sequence: 30,
        });
        service.note_persisted(Publisher {
            client_name_hash: 99,
            client_sequence: 20,
        });
        assert_eq!(service.last_persisted(99), 30);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
