//! Subscription routing: which connections, under which subscription ids, receive a message.
//!
//! Each shard has one router. It holds the exact-topic subscriptions for the topics the shard
//! owns and every pattern subscription (a pattern may select topics owned by any shard). Exact
//! topics are a hash lookup; pattern matches are cached per topic in a bounded cache that is
//! cleared whenever a pattern subscription comes or goes. The content filters of one exact
//! topic's subscriptions share that topic's field table, so a message is scanned once for the
//! union of the fields they read, however many filters there are. Matches are grouped per connection so
//! that a connection with several matching subscriptions gets one frame listing them all in
//! `sids`. Routing a message allocates nothing once the scratch buffers have grown.

use crate::filter::{BoundFilter, FieldTable, Filter, MessageContext, ScanScratch};
use crate::ids::{ConnectionId, SubId};
use crate::topic::{TopicPattern, TopicSpec};
use smallvec::SmallVec;
use std::collections::HashMap;
use std::sync::Arc;

/// Topics whose pattern matches are cached before the cache is emptied and refilled.
pub const PATTERN_CACHE_TOPICS_MAX: usize = 16_384;

/// How a subscription wants its messages.
#[derive(Debug, Clone, Default)]
pub struct DeliveryOptions {
    /// Add the server's receive timestamp (`ts`) to each delivery.
    pub timestamp: bool,
    /// Content filter; only messages it matches are delivered.
    pub filter: Option<Filter>,
    /// `oof`: on a SOW topic, say when a record this subscription saw stops matching, is deleted
    /// or expires.
    pub oof: bool,
    /// A delta subscription: on a SOW topic, updates carry only the changed and key fields.
    pub delta: bool,
    /// `no_empties`: a delta update that changed nothing is not sent.
    pub no_empties: bool,
    /// `no_sowkey`: deliveries from SOW topics omit `k`.
    pub no_sowkey: bool,
}

#[derive(Debug)]
struct Entry {
    connection: ConnectionId,
    sub_id: SubId,
    paused: bool,
    timestamp: bool,
    oof: bool,
    delta: bool,
    no_empties: bool,
    no_sowkey: bool,
}

impl Entry {
    fn new(connection: ConnectionId, sub_id: SubId, options: &DeliveryOptions) -> Entry {
        Entry {
            connection,
            sub_id,
            paused: false,
            timestamp: options.timestamp,
            oof: options.oof,
            delta: options.delta,
            no_empties: options.no_empties,
            no_sowkey: options.no_sowkey,
        }
    }
}

/// A subscription to one exact topic; its filter is bound to the topic's field table.
#[derive(Debug)]
struct ExactEntry {
    entry: Entry,
    filter: Option<BoundFilter>,
    /// The filter itself, for SOW routing, which evaluates old and new records one by one.
    source: Option<Filter>,
}

/// The subscriptions of one exact topic and the field table their filters share.
#[derive(Debug, Default)]
struct TopicSubscriptions {
    entries: Vec<ExactEntry>,
    table: FieldTable,
    filtered: usize,
}

/// A pattern subscription; its filter scans on its own (patterns span topics and tables).
#[derive(Debug)]
struct PatternEntry {
    pattern: TopicPattern,
    entry: Entry,
    filter: Option<Filter>,
}

#[derive(Debug, Clone)]
enum Place {
    Exact(Arc<[u8]>),
    Pattern,
}

/// One frame to send: a message for one connection, naming every subscription it matched.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The receiving connection.
    pub connection: ConnectionId,
    /// The connection's subscriptions the message matched, in subscription order.
    pub sub_ids: SmallVec<[SubId; 4]>,
    /// Whether any of them asked for the `ts` field.
    pub timestamp: bool,
    /// SOW topics: the frame carries the changed fields only (delta subscriptions).
    pub delta: bool,
    /// SOW topics: the frame carries the record's key `k` (some subscription did not ask for
    /// `no_sowkey`).
    pub sow_key: bool,
}

/// What a SOW update looks like to the router: the record before and after.
#[derive(Debug, Clone, Copy)]
pub struct SowUpdate<'a> {
    /// The record it replaced, if the key existed.
    pub previous: Option<&'a [u8]>,
    /// The record as stored now.
    pub current: &'a [u8],
    /// Whether the update changed no top-level field (delta subscriptions with `no_empties`
    /// get nothing then).
    pub unchanged: bool,
}

/// Counters a router keeps for statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouterStats {
    /// Messages routed.
    pub messages_routed: u64,
    /// Pattern-cache lookups that found the topic.
    pub pattern_cache_hits: u64,
    /// Pattern-cache lookups that had to match every pattern.
    pub pattern_cache_misses: u64,
    /// Messages a subscription's filter rejected.
    pub filter_rejections: u64,
    /// Messages whose payload was not well-formed JSON where a filter needed to read it.
    pub malformed_payloads: u64,
}

/// The subscription index of one shard.
#[derive(Debug, Default)]
pub struct Router {
    exact: HashMap<Arc<[u8]>, TopicSubscriptions>,
    patterns: Vec<PatternEntry>,
    pattern_cache: HashMap<Box<[u8]>, Vec<u32>>,
    places: HashMap<(ConnectionId, SubId), Place>,
    stats: RouterStats,
    scratch: ScanScratch,
}

impl Router {
    /// An empty router.
    pub fn new() -> Router {
        Router::default()
    }

    /// Adds a subscription, or replaces the one with the same connection and id.
    pub fn add(
        &mut self,
        connection: ConnectionId,
        sub_id: SubId,
        topic: &TopicSpec,
        options: DeliveryOptions,
    ) {
        self.remove(connection, &sub_id);
        let entry = Entry::new(connection, sub_id.clone(), &options);
        match topic {
            TopicSpec::Exact(name) => {
                let topic = self.exact.entry(name.clone()).or_default();
                let filter = options
                    .filter
                    .as_ref()
                    .map(|filter| topic.table.register(filter));
                topic.filtered += usize::from(filter.is_some());
                // Keep a connection's subscriptions adjacent so matches group without searching.
                let position = topic
                    .entries
                    .partition_point(|existing| existing.entry.connection <= connection);
                topic.entries.insert(
                    position,
                    ExactEntry {
                        entry,
                        filter,
                        source: options.filter,
                    },
                );
                self.places
                    .insert((connection, sub_id), Place::Exact(name.clone()));
            }
            TopicSpec::Pattern(pattern) => {
                self.patterns.push(PatternEntry {
                    pattern: pattern.clone(),
                    entry,
                    filter: options.filter.clone(),
                });
                self.pattern_cache.clear();
                self.places.insert((connection, sub_id), Place::Pattern);
            }
        }
    }

    /// Removes a subscription; returns whether it existed here.
    pub fn remove(&mut self, connection: ConnectionId, sub_id: &SubId) -> bool {
        let Some(place) = self.places.remove(&(connection, sub_id.clone())) else {
            return false;
        };
        let is_it = |entry: &Entry| entry.connection == connection && entry.sub_id == *sub_id;
        match place {
            Place::Exact(name) => {
                if let Some(topic) = self.exact.get_mut(&name) {
                    if let Some(position) =
                        topic.entries.iter().position(|exact| is_it(&exact.entry))
                    {
                        let removed = topic.entries.remove(position);
                        if let Some(bound) = &removed.filter {
                            topic.table.unregister(bound);
                            topic.filtered -= 1;
                        }
                    }
                    if topic.entries.is_empty() {
                        self.exact.remove(&name);
                    }
                }
            }
            Place::Pattern => {
                self.patterns.retain(|pattern| !is_it(&pattern.entry));
                self.pattern_cache.clear();
            }
        }
        true
    }

    /// Removes every subscription of a connection (it closed); returns how many.
    pub fn remove_connection(&mut self, connection: ConnectionId) -> usize {
        let ids: Vec<SubId> = self
            .places
            .keys()
            .filter(|(owner, _)| *owner == connection)
            .map(|(_, sub_id)| sub_id.clone())
            .collect();
        for sub_id in &ids {
            self.remove(connection, sub_id);
        }
        ids.len()
    }

    /// Pauses or resumes a subscription; returns whether it exists here.
    pub fn set_paused(&mut self, connection: ConnectionId, sub_id: &SubId, paused: bool) -> bool {
        let Some(place) = self.places.get(&(connection, sub_id.clone())) else {
            return false;
        };
        let entries: Box<dyn Iterator<Item = &mut Entry>> = match place {
            Place::Exact(name) => match self.exact.get_mut(name) {
                Some(topic) => Box::new(topic.entries.iter_mut().map(|exact| &mut exact.entry)),
                None => return false,
            },
            Place::Pattern => Box::new(self.patterns.iter_mut().map(|pattern| &mut pattern.entry)),
        };
        for entry in entries {
            if entry.connection == connection && entry.sub_id == *sub_id {
                entry.paused = paused;
            }
        }
        true
    }

    /// Number of subscriptions held.
    pub fn len(&self) -> usize {
        self.places.len()
    }

    /// Whether no subscription is held.
    pub fn is_empty(&self) -> bool {
        self.places.is_empty()
    }

    /// Counters since start-up.
    pub fn stats(&self) -> RouterStats {
        self.stats
    }

    /// Finds every delivery for a message on `topic`, replacing the contents of `out`.
    pub fn route(
        &mut self,
        topic: &[u8],
        payload: &[u8],
        context: &MessageContext<'_>,
        out: &mut Vec<Delivery>,
    ) {
        out.clear();
        self.stats.messages_routed += 1;
        if let Some(subscriptions) = self.exact.get(topic) {
            // One scan serves every filter of the topic; skipped when none has a filter.
            let scanned = if subscriptions.filtered > 0 {
                let scanned = subscriptions.table.scan(payload, &mut self.scratch);
                if scanned.is_err() {
                    self.stats.malformed_payloads += 1;
                }
                Some(scanned)
            } else {
                None
            };
            for exact in &subscriptions.entries {
                let matched = match (&exact.filter, &scanned) {
                    (None, _) => true,
                    (Some(bound), Some(Ok(fields))) => bound.eval(fields, context),
                    (Some(_), _) => false,
                };
                Self::offer(&exact.entry, matched, out, &mut self.stats, false, false);
            }
        }
        if self.patterns.is_empty() {
            return;
        }
        if !self.pattern_cache.contains_key(topic) {
            self.stats.pattern_cache_misses += 1;
            if self.pattern_cache.len() >= PATTERN_CACHE_TOPICS_MAX {
                self.pattern_cache.clear();
            }
            let matching = (0..self.patterns.len() as u32)
                .filter(|&index| self.patterns[index as usize].pattern.matches(topic))
                .collect();
            self.pattern_cache.insert(Box::from(topic), matching);
        } else {
            self.stats.pattern_cache_hits += 1;
        }
        for &index in &self.pattern_cache[topic] {
            let pattern = &self.patterns[index as usize];
            let matched = pattern
                .filter
                .as_ref()
                .is_none_or(|filter| filter.matches(payload, context));
            Self::offer(&pattern.entry, matched, out, &mut self.stats, true, false);
        }
    }

    /// Whether SOW routing on `topic` needs the record's previous value (some subscription wants
    /// `oof` or deltas), so the caller copies it only then.
    pub fn needs_previous(&self, topic: &[u8]) -> bool {
        let wants = |entry: &Entry| entry.oof || entry.delta;
        self.exact.get(topic).is_some_and(|subscriptions| {
            subscriptions
                .entries
                .iter()
                .any(|exact| wants(&exact.entry))
        }) || self
            .patterns
            .iter()
            .any(|pattern| wants(&pattern.entry) && pattern.pattern.matches(topic))
    }

    /// Routes an update of a SOW record: `out` gets the deliveries (full or delta frames, one per
    /// connection and kind), `oof` the subscriptions that saw the old record and no longer
    /// match the new one (when they asked for `oof`). Both are replaced.
    pub fn route_sow(
        &mut self,
        topic: &[u8],
        update: &SowUpdate<'_>,
        context: &MessageContext<'_>,
        out: &mut Vec<Delivery>,
        oof: &mut Vec<Delivery>,
    ) {
        out.clear();
        oof.clear();
        self.stats.messages_routed += 1;
        for (entry, filter) in Self::subscriptions_of(&self.exact, &self.patterns, topic) {
            if entry.paused {
                continue;
            }
            let matches =
                |payload: &[u8]| filter.is_none_or(|filter| filter.matches(payload, context));
            if matches(update.current) {
                let skip = entry.delta
                    && entry.no_empties
                    && update.previous.is_some()
                    && update.unchanged;
                if !skip {
                    Self::offer(
                        entry,
                        true,
                        out,
                        &mut self.stats,
                        true,
                        entry.delta && update.previous.is_some(),
                    );
                }
            } else {
                self.stats.filter_rejections += 1;
                if entry.oof && update.previous.is_some_and(matches) {
                    Self::offer(entry, true, oof, &mut self.stats, true, false);
                }
            }
        }
    }

    /// The `oof` subscriptions that saw `payload`, a record just deleted or expired from `topic`.
    pub fn route_removal(
        &mut self,
        topic: &[u8],
        payload: &[u8],
        context: &MessageContext<'_>,
        out: &mut Vec<Delivery>,
    ) {
        out.clear();
        for (entry, filter) in Self::subscriptions_of(&self.exact, &self.patterns, topic) {
            if entry.paused || !entry.oof {
                continue;
            }
            if filter.is_none_or(|filter| filter.matches(payload, context)) {
                Self::offer(entry, true, out, &mut self.stats, true, false);
            }
        }
    }

    /// Every subscription selecting `topic` (exact ones, then patterns) with its unbound filter:
    /// the SOW paths evaluate filters per record, outside the topic's shared scan. Takes the two
    /// indexes rather than `&self` so callers can update `self.stats` meanwhile.
    fn subscriptions_of<'r>(
        exact: &'r HashMap<Arc<[u8]>, TopicSubscriptions>,
        patterns: &'r [PatternEntry],
        topic: &'r [u8],
    ) -> impl Iterator<Item = (&'r Entry, Option<&'r Filter>)> + 'r {
        let exact = exact.get(topic).into_iter().flat_map(|subscriptions| {
            subscriptions
                .entries
                .iter()
                .map(|exact| (&exact.entry, exact.source.as_ref()))
        });
        let patterns = patterns
            .iter()
            .filter(move |pattern| pattern.pattern.matches(topic))
            .map(|pattern| (&pattern.entry, pattern.filter.as_ref()));
        exact.chain(patterns)
    }

    fn offer(
        entry: &Entry,
        matched: bool,
        out: &mut Vec<Delivery>,
        stats: &mut RouterStats,
        search_all: bool,
        delta: bool,
    ) {
        if entry.paused {
            return;
        }
        if !matched {
            stats.filter_rejections += 1;
            return;
        }
        // Exact entries arrive grouped by connection, so only the last delivery can be theirs;
        // pattern entries may join any connection's delivery.
        let same = |delivery: &&mut Delivery| {
            delivery.connection == entry.connection && delivery.delta == delta
        };
        let existing = if search_all {
            out.iter_mut().find(same)
        } else {
            out.last_mut().filter(same)
        };
        match existing {
            Some(delivery) => {
                if !delivery.sub_ids.contains(&entry.sub_id) {
                    delivery.sub_ids.push(entry.sub_id.clone());
                }
                delivery.timestamp |= entry.timestamp;
                delivery.sow_key |= !entry.no_sowkey;
            }
            None => {
                let mut sub_ids = SmallVec::new();
                sub_ids.push(entry.sub_id.clone());
                out.push(Delivery {
                    connection: entry.connection,
                    sub_ids,
                    timestamp: entry.timestamp,
                    delta,
                    sow_key: !entry.no_sowkey,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ShardId;

    fn connection(slot: u32) -> ConnectionId {
        ConnectionId {
            shard: ShardId(0),
            slot,
            generation: 0,
        }
    }

    fn exact(name: &str) -> TopicSpec {
        TopicSpec::parse(name.as_bytes()).unwrap()
    }

    fn route(router: &mut Router, topic: &str) -> Vec<(u32, Vec<String>)> {
        route_payload(router, topic, "{}")
    }

    #[test]
    fn one_delivery_per_connection_listing_all_its_matches() {
        let mut router = Router::new();
        router.add(
            connection(1),
            SubId::new(b"a"),
            &exact("orders"),
            DeliveryOptions::default(),
        );
        router.add(
            connection(2),
            SubId::new(b"c"),
            &exact("orders"),
            DeliveryOptions::default(),
        );
        router.add(
            connection(1),
            SubId::new(b"b"),
            &exact("orders"),
            DeliveryOptions::default(),
        );
        router.add(
            connection(1),
            SubId::new(b"p"),
            &exact("^ord"),
            DeliveryOptions::default(),
        );
        assert_eq!(
            route(&mut router, "orders"),
            [
                (1, vec!["a".into(), "b".into(), "p".into()]),
                (2, vec!["c".into()])
            ]
        );
        assert_eq!(route(&mut router, "trades"), []);
    }

    #[test]
    fn remove_pause_and_replace() {
        let mut router = Router::new();
        router.add(
            connection(1),
            SubId::new(b"a"),
            &exact("orders"),
            DeliveryOptions::default(),
        );
        assert!(router.set_paused(connection(1), &SubId::new(b"a"), true));
        assert_eq!(route(&mut router, "orders"), []);
        router.set_paused(connection(1), &SubId::new(b"a"), false);
        assert_eq!(route(&mut router, "orders").len(), 1);
        // Replacing moves the subscription to another topic.
        router.add(
            connection(1),
            SubId::new(b"a"),
            &exact("trades"),
            DeliveryOptions::default(),
        );
        assert_eq!(route(&mut router, "orders"), []);
        assert_eq!(route(&mut router, "trades").len(), 1);
        assert!(router.remove(connection(1), &SubId::new(b"a")));
        assert!(!router.remove(connection(1), &SubId::new(b"a")));
        assert!(router.is_empty());
    }

    fn filtered(text: &str) -> DeliveryOptions {
        DeliveryOptions {
            filter: Some(Filter::compile(text).unwrap()),
            ..DeliveryOptions::default()
        }
    }

    fn route_payload(router: &mut Router, topic: &str, payload: &str) -> Vec<(u32, Vec<String>)> {
        let mut out = Vec::new();
        router.route(
            topic.as_bytes(),
            payload.as_bytes(),
            &MessageContext::default(),
            &mut out,
        );
        out.iter()
            .map(|delivery| {
                (
                    delivery.connection.slot,
                    delivery.sub_ids.iter().map(|id| id.to_string()).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn filters_share_one_scan_and_select_per_subscription() {
        let mut router = Router::new();
        router.add(
            connection(1),
            SubId::new(b"big"),
            &exact("orders"),
            filtered("/qty > 100"),
        );
        router.add(
            connection(1),
            SubId::new(b"ibm"),
            &exact("orders"),
            filtered("/sym = 'IBM'"),
        );
        router.add(
            connection(2),
            SubId::new(b"all"),
            &exact("orders"),
            DeliveryOptions::default(),
        );
        router.add(
            connection(3),
            SubId::new(b"pat"),
            &exact("^ord"),
            filtered("/sym IN ('MSFT')"),
        );
        assert_eq!(
            route_payload(&mut router, "orders", r#"{"sym":"IBM","qty":500}"#),
            [
                (1, vec!["big".into(), "ibm".into()]),
                (2, vec!["all".into()])
            ]
        );
        assert_eq!(
            route_payload(&mut router, "orders", r#"{"sym":"MSFT","qty":5}"#),
            [(2, vec!["all".into()]), (3, vec!["pat".into()])]
        );
        // A payload the filters cannot read matches no filter, is counted, and still reaches
        // the unfiltered subscription.
        assert_eq!(
            route_payload(&mut router, "orders", "{not json"),
            [(2, vec!["all".into()])]
        );
        assert_eq!(router.stats().malformed_payloads, 1);
        // Removing a filtered subscription releases its paths; the others keep working.
        assert!(router.remove(connection(1), &SubId::new(b"big")));
        assert_eq!(
            route_payload(&mut router, "orders", r#"{"sym":"IBM","qty":500}"#),
            [(1, vec!["ibm".into()]), (2, vec!["all".into()])]
        );
    }

    fn sow_options(
        filter: Option<&str>,
        oof: bool,
        delta: bool,
        no_empties: bool,
    ) -> DeliveryOptions {
        DeliveryOptions {
            filter: filter.map(|text| Filter::compile(text).unwrap()),
            oof,
            delta,
            no_empties,
            ..DeliveryOptions::default()
        }
    }

    /// (slot, sub ids, delta) per delivery, then (slot, sub ids) per oof.
    type Routed = (Vec<(u32, Vec<String>, bool)>, Vec<(u32, Vec<String>)>);

    fn route_update(
        router: &mut Router,
        previous: Option<&str>,
        current: &str,
        unchanged: bool,
    ) -> Routed {
        let update = SowUpdate {
            previous: previous.map(str::as_bytes),
            current: current.as_bytes(),
            unchanged,
        };
        let (mut out, mut oof) = (Vec::new(), Vec::new());
        router.route_sow(
            b"orders",
            &update,
            &MessageContext::default(),
            &mut out,
            &mut oof,
        );
        let ids = |delivery: &Delivery| {
            delivery
                .sub_ids
                .iter()
                .map(|id| id.to_string())
                .collect::<Vec<_>>()
        };
        (
            out.iter()
                .map(|d| (d.connection.slot, ids(d), d.delta))
                .collect(),
            oof.iter().map(|d| (d.connection.slot, ids(d))).collect(),
        )
    }

    #[test]
    fn sow_updates_deliver_full_delta_or_oof() {
        let mut router = Router::new();
        let topic = exact("orders");
        router.add(
            connection(1),
            SubId::new(b"big"),
            &topic,
            sow_options(Some("/qty > 5"), true, false, false),
        );
        router.add(
            connection(1),
            SubId::new(b"d"),
            &topic,
            sow_options(None, false, true, true),
        );
        router.add(
            connection(2),
            SubId::new(b"quiet"),
            &topic,
            sow_options(Some("/qty > 5"), false, false, false),
        );
        assert!(router.needs_previous(b"orders"));
        assert!(!router.needs_previous(b"trades"));
        // A new record: everyone who matches gets it whole, in one frame per connection (the delta
        // subscriber too: there is nothing to diff against).
        let (out, oof) = route_update(&mut router, None, r#"{"qty":9}"#, false);
        assert_eq!(
            out,
            [
                (1, vec!["big".into(), "d".into()], false),
                (2, vec!["quiet".into()], false)
            ]
        );
        assert!(oof.is_empty());
        // It leaves the filter: oof for the subscription that asked, delta for the unfiltered one.
        let (out, oof) = route_update(&mut router, Some(r#"{"qty":9}"#), r#"{"qty":1}"#, false);
        assert_eq!(out, [(1, vec!["d".into()], true)]);
        assert_eq!(oof, [(1, vec!["big".into()])]);
        // An update that changed nothing is not sent to a no_empties delta subscriber.
        let (out, _) = route_update(&mut router, Some(r#"{"qty":1}"#), r#"{"qty":1}"#, true);
        assert!(out.is_empty());
        let mut removed = Vec::new();
        router.route_removal(
            b"orders",
            br#"{"qty":9}"#,
            &MessageContext::default(),
            &mut removed,
        );
        assert_eq!(
            removed.len(),
            1,
            "only oof subscriptions that saw the record"
        );
        router.route_removal(
            b"orders",
            br#"{"qty":1}"#,
            &MessageContext::default(),
            &mut removed,
        );
        assert!(removed.is_empty());
    }

    #[test]
    fn pattern_cache_is_invalidated_when_patterns_change() {
        let mut router = Router::new();
        router.add(
            connection(1),
            SubId::new(b"p"),
            &exact(r"^orders\."),
            DeliveryOptions::default(),
        );
        assert_eq!(route(&mut router, "orders.us").len(), 1);
        assert_eq!(route(&mut router, "orders.us").len(), 1);
        assert_eq!(router.stats().pattern_cache_hits, 1);
        router.add(
            connection(2),
            SubId::new(b"q"),
            &exact(r"\.us$"),
            DeliveryOptions::default(),
        );
        assert_eq!(route(&mut router, "orders.us").len(), 2);
        assert_eq!(router.remove_connection(connection(1)), 1);
        assert_eq!(route(&mut router, "orders.us"), [(2, vec!["q".into()])]);
    }
}
