//! The SOW store: per topic, a key index over records held in slabs, and the operations the
//! server performs on it — publish, delta publish, query, delete, expire.
//!
//! Every operation is a method returning what happened (records written, replaced, removed,
//! returned); the server turns that into acks, deliveries, `oof` messages and journal appends. The
//! index maps a key hash to the records with that hash (almost always one); the canonical key bytes
//! stored in each record settle collisions. Expiration deadlines are kept in an ordered map so
//! that [`SowTopic::expire`] looks only at what is due. This module never does I/O.

use std::collections::{BTreeMap, HashMap};

use smallvec::SmallVec;

use super::config::{ConfigError, SowTopicConfig};
use super::delta::{self, DeltaError};
use super::key::{key_hash, KeyError, KeyExtractor, KeyKind, SowKeyRef};
use super::oof::record_matches;
use super::query::{OrderBy, OrderByError};
use super::record::{self, OwnedRecord, PublishMeta, RecordView, CORRELATION_ID_BYTES_MAX};
use super::slab::{RecordRef, SlabPool};
use crate::filter::Filter;

/// Most keys one `sow_keys` list may name.
pub const SOW_KEYS_MAX: usize = 65_536;

/// Why a SOW operation was refused; [`SowError::reason`] is the failure ack's reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SowError {
    /// The topic configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Two configurations name the same topic.
    #[error("SOW topic {topic} is configured twice; remove one of the entries")]
    DuplicateTopic {
        /// The topic.
        topic: String,
    },
    /// The message has no usable key.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The message is larger than the largest storable record.
    #[error("sow store failed: message is {size_bytes} bytes, the largest storable is {limit_bytes} bytes (slab size less the record header, at least 1 MiB); raise slab_size")]
    MessageTooLarge {
        /// The message's size.
        size_bytes: usize,
        /// The topic's limit.
        limit_bytes: usize,
    },
    /// The correlation id is too long to store.
    #[error("sow store failed: correlation id is {length} bytes, the limit is {limit} bytes")]
    CorrelationIdTooLong {
        /// Its length.
        length: usize,
        /// The limit.
        limit: usize,
    },
    /// A delta publish whose update or stored record is not a JSON object.
    #[error("sow store failed: {0}")]
    Delta(#[from] DeltaError),
    /// A bad `orderby`.
    #[error(transparent)]
    OrderBy(#[from] OrderByError),
    /// A `sow_keys` list naming too many keys.
    #[error("bad sow key: {count} keys listed, the limit is {limit}")]
    TooManyKeys {
        /// Keys listed.
        count: usize,
        /// The limit.
        limit: usize,
    },
}

impl SowError {
    /// The `reason` text of the failure ack (one of the strings the clients map, §11).
    pub fn reason(&self) -> &'static str {
        match self {
            SowError::Config(_) | SowError::DuplicateTopic { .. } => "invalid topic",
            SowError::Key(_) | SowError::TooManyKeys { .. } => "bad sow key",
            SowError::MessageTooLarge { .. }
            | SowError::CorrelationIdTooLong { .. }
            | SowError::Delta(_) => "sow store failed",
            SowError::OrderBy(_) => OrderByError::REASON,
        }
    }
}

/// What a publish did.
#[derive(Debug, Clone, Copy)]
pub enum PublishOutcome<'s> {
    /// A new key: the record as stored.
    Inserted {
        /// The stored record.
        current: RecordView<'s>,
    },
    /// An existing key: the record it replaced and the record as stored.
    Updated {
        /// The record before this publish (for oof and delta decisions).
        previous: RecordView<'s>,
        /// The stored record (for a delta publish: the merged payload).
        current: RecordView<'s>,
    },
}

impl<'s> PublishOutcome<'s> {
    /// The record as stored now.
    pub fn current(&self) -> &RecordView<'s> {
        match self {
            PublishOutcome::Inserted { current } | PublishOutcome::Updated { current, .. } => {
                current
            }
        }
    }

    /// The record replaced, if any.
    pub fn previous(&self) -> Option<&RecordView<'s>> {
        match self {
            PublishOutcome::Inserted { .. } => None,
            PublishOutcome::Updated { previous, .. } => Some(previous),
        }
    }
}

/// What a query returns.
#[derive(Debug, Clone, Default)]
pub struct QueryResult<'s> {
    /// The records to send, in order, after `top_n`.
    pub records: Vec<RecordView<'s>>,
    /// Records that matched the query before `top_n` (`matches`, `topic_matches` in the stats ack).
    pub matches: usize,
}

/// What a delete did: the counts for the stats ack and the records removed (for `oof`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteOutcome {
    /// Records the delete selected (`matches`).
    pub matches: usize,
    /// Records removed (`records_deleted`).
    pub records_deleted: usize,
    /// The removed records, in base order.
    pub deleted: Vec<OwnedRecord>,
}

/// A topic's memory use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SowStats {
    /// Records stored.
    pub records: usize,
    /// Bytes in allocated record blocks.
    pub bytes_used: usize,
    /// Bytes of slab space not in any block.
    pub bytes_free: usize,
    /// Slabs allocated.
    pub slabs: usize,
    /// Of which dedicated to one record larger than a slab.
    pub dedicated_slabs: usize,
}

/// One SOW topic's records.
#[derive(Debug)]
pub struct SowTopic {
    config: SowTopicConfig,
    message_bytes_max: usize,
    keys: KeyExtractor,
    pool: SlabPool,
    index: HashMap<u64, SmallVec<[RecordRef; 1]>>,
    /// (deadline unix ns, key hash) → records with that deadline and hash.
    expirations: BTreeMap<(u64, u64), u32>,
    records: usize,
    key_scratch: Vec<u8>,
    previous_scratch: Vec<u8>,
    merge_scratch: Vec<u8>,
}

impl SowTopic {
    /// An empty topic with its first slab allocated.
    pub fn new(config: SowTopicConfig) -> Result<SowTopic, SowError> {
        config.validate()?;
        Ok(SowTopic {
            message_bytes_max: config.message_bytes_max(),
            keys: KeyExtractor::new(&config.key_fields),
            pool: SlabPool::new(config.slab_size_bytes),
            index: HashMap::new(),
            expirations: BTreeMap::new(),
            records: 0,
            key_scratch: Vec::new(),
            previous_scratch: Vec::new(),
            merge_scratch: Vec::new(),
            config,
        })
    }

    /// The topic's configuration.
    pub fn config(&self) -> &SowTopicConfig {
        &self.config
    }

    /// The topic's key extractor (key fields, top-level key names for delta messages).
    pub fn key_extractor(&self) -> &KeyExtractor {
        &self.keys
    }

    /// Largest storable payload, in bytes.
    pub fn message_bytes_max(&self) -> usize {
        self.message_bytes_max
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.records
    }

    /// Whether the topic holds no record.
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Memory use.
    pub fn stats(&self) -> SowStats {
        let usage = self.pool.usage();
        SowStats {
            records: self.records,
            bytes_used: usage.bytes_used,
            bytes_free: usage.bytes_free,
            slabs: usage.slabs,
            dedicated_slabs: usage.dedicated_slabs,
        }
    }

    /// Stores `payload` under its key (the `k` header when given, else the key fields).
    pub fn publish(
        &mut self,
        header_key: Option<&[u8]>,
        payload: &[u8],
        meta: &PublishMeta<'_>,
    ) -> Result<PublishOutcome<'_>, SowError> {
        self.check_sizes(payload, meta)?;
        let mut canonical = std::mem::take(&mut self.key_scratch);
        let extracted = self.keys.extract_into(header_key, payload, &mut canonical);
        let written = extracted.map(|(hash, kind)| {
            let key = SowKeyRef {
                hash,
                kind,
                canonical: &canonical,
            };
            let view = self.view_for(key, payload, meta);
            self.write(&view)
        });
        self.key_scratch = canonical;
        let (at, updated) = written?;
        Ok(self.outcome(at, updated))
    }

    /// Merges the update's top-level members into the stored record (a full publish when the key
    /// is new); the outcome's current record carries the merged payload.
    pub fn delta_publish(
        &mut self,
        header_key: Option<&[u8]>,
        update: &[u8],
        meta: &PublishMeta<'_>,
    ) -> Result<PublishOutcome<'_>, SowError> {
        let mut canonical = std::mem::take(&mut self.key_scratch);
        let mut merged = std::mem::take(&mut self.merge_scratch);
        let result = self.delta_write(header_key, update, meta, &mut canonical, &mut merged);
        self.key_scratch = canonical;
        self.merge_scratch = merged;
        let (at, updated) = result?;
        Ok(self.outcome(at, updated))
    }

    fn delta_write(
        &mut self,
        header_key: Option<&[u8]>,
        update: &[u8],
        meta: &PublishMeta<'_>,
        canonical: &mut Vec<u8>,
        merged: &mut Vec<u8>,
    ) -> Result<(RecordRef, bool), SowError> {
        let (hash, kind) = self.keys.extract_into(header_key, update, canonical)?;
        let key = SowKeyRef {
            hash,
            kind,
            canonical,
        };
        let payload = match self.find(key) {
            Some((_, at)) => {
                let stored = self.decode(at).payload;
                delta::merge(stored, update, merged)?;
                &merged[..]
            }
            None => {
                // Validate that the update is an object even when it becomes the whole record.
                delta::members(update, &mut Vec::new())?;
                update
            }
        };
        self.check_sizes(payload, meta)?;
        let view = self.view_for(key, payload, meta);
        Ok(self.write(&view))
    }

    fn check_sizes(&self, payload: &[u8], meta: &PublishMeta<'_>) -> Result<(), SowError> {
        if payload.len() > self.message_bytes_max {
            return Err(SowError::MessageTooLarge {
                size_bytes: payload.len(),
                limit_bytes: self.message_bytes_max,
            });
        }
        let correlation = meta.correlation_id.map_or(0, <[u8]>::len);
        if correlation > CORRELATION_ID_BYTES_MAX {
            return Err(SowError::CorrelationIdTooLong {
                length: correlation,
                limit: CORRELATION_ID_BYTES_MAX,
            });
        }
        Ok(())
    }

    fn view_for<'v>(
        &self,
        key: SowKeyRef<'v>,
        payload: &'v [u8],
        meta: &PublishMeta<'v>,
    ) -> RecordView<'v> {
        let lifetime = meta.expiration.or(self.config.expiration);
        let deadline = lifetime.map(|lifetime| {
            let nanos = u64::try_from(lifetime.as_nanos()).unwrap_or(u64::MAX);
            // 0 means "never" in the record layout, so a deadline is at least 1.
            meta.timestamp_unix_ns.saturating_add(nanos).max(1)
        });
        RecordView {
            key,
            payload,
            bookmark: meta.bookmark,
            timestamp_unix_ns: meta.timestamp_unix_ns,
            correlation_id: meta.correlation_id,
            expiration_unix_ns: deadline,
        }
    }

    fn outcome(&self, at: RecordRef, updated: bool) -> PublishOutcome<'_> {
        let current = self.decode(at);
        if updated {
            let previous =
                record::decode(&self.previous_scratch).expect("previous record was copied whole");
            PublishOutcome::Updated { previous, current }
        } else {
            PublishOutcome::Inserted { current }
        }
    }

    fn decode(&self, at: RecordRef) -> RecordView<'_> {
        record::decode(self.pool.block(at)).expect("blocks hold records the store encoded")
    }

    /// The record with `key`: its position in the hash's list and where it lives.
    fn find(&self, key: SowKeyRef<'_>) -> Option<(usize, RecordRef)> {
        let refs = self.index.get(&key.hash)?;
        refs.iter().enumerate().find_map(|(position, &at)| {
            let stored = self.decode(at).key;
            (stored.kind == key.kind && stored.canonical == key.canonical).then_some((position, at))
        })
    }

    /// Writes a record, replacing the one with the same key (copied to `previous_scratch` first).
    /// Returns where it lives and whether it replaced one.
    fn write(&mut self, view: &RecordView<'_>) -> (RecordRef, bool) {
        let record_bytes = view.stored_bytes();
        let existing = self.find(view.key);
        let updated = existing.is_some();
        let at = match existing {
            Some((position, at)) => {
                let old = self.decode(at);
                let old_bytes = old.stored_bytes();
                self.forget_expiration(old.key.hash, old.expiration_unix_ns);
                self.previous_scratch.clear();
                self.previous_scratch
                    .extend_from_slice(&self.pool.block(at)[..old_bytes]);
                if self.pool.fit_in_place(at, record_bytes) {
                    at
                } else {
                    let refs = self.index.get_mut(&view.key.hash).expect("found above");
                    refs.swap_remove(position);
                    self.pool.release(at);
                    let at = self.allocate(record_bytes);
                    self.index
                        .get_mut(&view.key.hash)
                        .expect("kept while empty")
                        .push(at);
                    at
                }
            }
            None => {
                let at = self.allocate(record_bytes);
                self.index.entry(view.key.hash).or_default().push(at);
                self.records += 1;
                at
            }
        };
        record::encode(self.pool.block_mut(at), view);
        if let Some(deadline) = view.expiration_unix_ns {
            *self
                .expirations
                .entry((deadline, view.key.hash))
                .or_insert(0) += 1;
        }
        (at, updated)
    }

    fn allocate(&mut self, record_bytes: usize) -> RecordRef {
        let index = &mut self.index;
        self.pool.allocate(record_bytes, |old, new, block| {
            let refs = index
                .get_mut(&record::key_hash_of(block))
                .expect("a moved record is indexed");
            let slot = refs
                .iter_mut()
                .find(|at| **at == old)
                .expect("a moved record is indexed at its old place");
            *slot = new;
        })
    }

    fn forget_expiration(&mut self, hash: u64, deadline: Option<u64>) {
        let Some(deadline) = deadline else { return };
        let count = self
            .expirations
            .get_mut(&(deadline, hash))
            .expect("every deadline is indexed");
        *count -= 1;
        if *count == 0 {
            self.expirations.remove(&(deadline, hash));
        }
    }

    /// Removes the record at `at`, returning it.
    fn remove(&mut self, at: RecordRef) -> OwnedRecord {
        let removed = self.decode(at).to_owned();
        self.forget_expiration(removed.key.hash, removed.expiration_unix_ns);
        let refs = self
            .index
            .get_mut(&removed.key.hash)
            .expect("a stored record is indexed");
        let position = refs
            .iter()
            .position(|&candidate| candidate == at)
            .expect("indexed at its place");
        refs.swap_remove(position);
        if refs.is_empty() {
            self.index.remove(&removed.key.hash);
        }
        self.pool.release(at);
        self.records -= 1;
        removed
    }

    /// Every record, in no particular order.
    pub fn records(&self) -> impl Iterator<Item = RecordView<'_>> + '_ {
        self.index.values().flatten().map(|&at| self.decode(at))
    }

    /// The record with this key, if stored.
    pub fn get(&self, key: SowKeyRef<'_>) -> Option<RecordView<'_>> {
        self.find(key).map(|(_, at)| self.decode(at))
    }

    /// Records named by a `sow_keys` list (wire spellings, comma separated; unknown keys skipped,
    /// repeats counted once).
    fn refs_for_wire_keys(&self, list: &[u8]) -> Result<Vec<RecordRef>, SowError> {
        let count = list.split(|&byte| byte == b',').count();
        if count > SOW_KEYS_MAX {
            return Err(SowError::TooManyKeys {
                count,
                limit: SOW_KEYS_MAX,
            });
        }
        let mut found = Vec::new();
        for token in list.split(|&byte| byte == b',').map(<[u8]>::trim_ascii) {
            if token.is_empty() {
                continue;
            }
            let explicit = SowKeyRef {
                hash: key_hash(KeyKind::Explicit, token),
                kind: KeyKind::Explicit,
                canonical: token,
            };
            if let Some((_, at)) = self.find(explicit) {
                found.push(at);
            }
            let decimal = std::str::from_utf8(token)
                .ok()
                .and_then(|text| text.parse::<u64>().ok());
            if let Some(refs) = decimal.and_then(|hash| self.index.get(&hash)) {
                found.extend(
                    refs.iter()
                        .copied()
                        .filter(|&at| self.decode(at).key.kind == KeyKind::Fields),
                );
            }
        }
        found.sort_by_key(|at| (at.slab, at.offset));
        found.dedup();
        Ok(found)
    }

    /// Sorts records into base order: oldest write first (timestamp, then bookmark, then key).
    fn sort_base(records: &mut [RecordView<'_>]) {
        records.sort_by(|a, b| {
            (
                a.timestamp_unix_ns,
                a.bookmark,
                a.key.kind.to_byte(),
                a.key.canonical,
            )
                .cmp(&(
                    b.timestamp_unix_ns,
                    b.bookmark,
                    b.key.kind.to_byte(),
                    b.key.canonical,
                ))
        });
    }

    /// Runs a SOW query. Without `order_by` and `top_n` the order is unspecified; with either,
    /// records come in `order_by` order with ties (and no `order_by`) in base order.
    pub fn query(
        &self,
        filter: Option<&Filter>,
        order_by: Option<&OrderBy>,
        top_n: Option<usize>,
        sow_keys: Option<&[u8]>,
    ) -> Result<QueryResult<'_>, SowError> {
        let topic = self.config.topic.as_bytes();
        let mut records: Vec<RecordView<'_>> = match sow_keys {
            Some(list) => self
                .refs_for_wire_keys(list)?
                .into_iter()
                .map(|at| self.decode(at))
                .collect(),
            None => self.records().collect(),
        };
        records.retain(|record| record_matches(filter, topic, record));
        let matches = records.len();
        if order_by.is_some() || top_n.is_some() {
            Self::sort_base(&mut records);
        }
        if let Some(order_by) = order_by {
            order_by.sort(&mut records, |record| record.payload);
        }
        if let Some(limit) = top_n {
            records.truncate(limit);
        }
        Ok(QueryResult { records, matches })
    }

    fn delete_refs(&mut self, mut refs: Vec<RecordRef>) -> DeleteOutcome {
        let mut views: Vec<(RecordView<'_>, RecordRef)> =
            refs.iter().map(|&at| (self.decode(at), at)).collect();
        views.sort_by(|(a, _), (b, _)| {
            (a.timestamp_unix_ns, a.bookmark, a.key.canonical).cmp(&(
                b.timestamp_unix_ns,
                b.bookmark,
                b.key.canonical,
            ))
        });
        refs = views.into_iter().map(|(_, at)| at).collect();
        let deleted: Vec<OwnedRecord> = refs.into_iter().map(|at| self.remove(at)).collect();
        DeleteOutcome {
            matches: deleted.len(),
            records_deleted: deleted.len(),
            deleted,
        }
    }

    /// `sow_delete` with a filter: removes every matching record.
    pub fn delete_by_filter(&mut self, filter: &Filter) -> DeleteOutcome {
        let topic = self.config.topic.as_bytes();
        let refs: Vec<RecordRef> = self
            .index
            .values()
            .flatten()
            .copied()
            .filter(|&at| record_matches(Some(filter), topic, &self.decode(at)))
            .collect();
        self.delete_refs(refs)
    }

    /// `sow_delete` with `sow_keys`: removes the records named (wire spellings, comma separated).
    pub fn delete_by_keys(&mut self, sow_keys: &[u8]) -> Result<DeleteOutcome, SowError> {
        let refs = self.refs_for_wire_keys(sow_keys)?;
        Ok(self.delete_refs(refs))
    }

    /// `sow_delete` with data: removes the record whose key the payload (or `k` header) gives.
    pub fn delete_by_data(
        &mut self,
        header_key: Option<&[u8]>,
        payload: &[u8],
    ) -> Result<DeleteOutcome, SowError> {
        let mut canonical = std::mem::take(&mut self.key_scratch);
        let found = self
            .keys
            .extract_into(header_key, payload, &mut canonical)
            .map(|(hash, kind)| {
                self.find(SowKeyRef {
                    hash,
                    kind,
                    canonical: &canonical,
                })
            });
        self.key_scratch = canonical;
        Ok(self.delete_refs(found?.map(|(_, at)| at).into_iter().collect()))
    }

    /// Removes every record whose deadline is at or before `now_unix_ns`, oldest deadline first.
    pub fn expire(&mut self, now_unix_ns: u64) -> Vec<OwnedRecord> {
        let mut expired = Vec::new();
        while let Some((&(deadline, hash), _)) = self.expirations.first_key_value() {
            if deadline > now_unix_ns {
                break;
            }
            let refs: Vec<RecordRef> = self.index[&hash]
                .iter()
                .copied()
                .filter(|&at| self.decode(at).expiration_unix_ns == Some(deadline))
                .collect();
            assert!(!refs.is_empty(), "an indexed deadline has its record");
            for at in refs {
                expired.push(self.remove(at));
            }
        }
        expired
    }

    /// The earliest expiration deadline, so the server knows when to call [`SowTopic::expire`].
    pub fn next_expiration_unix_ns(&self) -> Option<u64> {
        self.expirations
            .first_key_value()
            .map(|(&(deadline, _), _)| deadline)
    }

    /// Stores a record as it is (recovery): no key extraction, no size defaults.
    pub fn restore_record(&mut self, view: &RecordView<'_>) -> Result<(), SowError> {
        let meta = PublishMeta {
            correlation_id: view.correlation_id,
            ..PublishMeta::default()
        };
        self.check_sizes(view.payload, &meta)?;
        self.write(view);
        Ok(())
    }

    /// Checks the store's internal invariants (index ↔ slabs ↔ deadlines); for tests.
    pub fn check_invariants(&self) {
        let indexed: usize = self.index.values().map(SmallVec::len).sum();
        assert_eq!(indexed, self.records, "index and record count disagree");
        assert_eq!(
            self.pool.records().count(),
            self.records,
            "slab blocks and record count disagree"
        );
        let mut deadlines = 0u32;
        for record in self.records() {
            assert!(
                self.find(record.key).is_some(),
                "record not reachable by its key"
            );
            if record.expiration_unix_ns.is_some() {
                deadlines += 1;
            }
        }
        assert_eq!(
            self.expirations.values().sum::<u32>(),
            deadlines,
            "deadline index drifted"
        );
    }
}

/// Every SOW topic of one shard.
#[derive(Debug, Default)]
pub struct SowStore {
    topics: HashMap<Box<[u8]>, SowTopic>,
}

impl SowStore {
    /// A store with the configured topics.
    pub fn new(configs: impl IntoIterator<Item = SowTopicConfig>) -> Result<SowStore, SowError> {
        let mut store = SowStore::default();
        for config in configs {
            store.add_topic(config)?;
        }
        Ok(store)
    }

    /// Adds a topic.
    pub fn add_topic(&mut self, config: SowTopicConfig) -> Result<(), SowError> {
        let name: Box<[u8]> = config.topic.as_bytes().into();
        if self.topics.contains_key(&name) {
            return Err(SowError::DuplicateTopic {
                topic: config.topic,
            });
        }
        self.topics.insert(name, SowTopic::new(config)?);
        Ok(())
    }

    /// The topic, if it is a SOW topic.
    pub fn topic(&self, topic: &[u8]) -> Option<&SowTopic> {
        self.topics.get(topic)
    }

    /// The topic, writable, if it is a SOW topic.
    pub fn topic_mut(&mut self, topic: &[u8]) -> Option<&mut SowTopic> {
        self.topics.get_mut(topic)
    }

    /// Every topic (for regex queries and stats).
    pub fn topics(&self) -> impl Iterator<Item = &SowTopic> {
        self.topics.values()
    }
}
