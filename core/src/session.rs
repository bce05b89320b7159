//! One client connection's protocol state: logon, its subscriptions, heartbeat settings.
//!
//! The session validates each command and turns it into a [`Request`] for the network layer to
//! carry out, or a [`Refusal`] whose reason string is the one the real client maps to the right
//! exception. It owns the connection's view of its subscriptions (id → topic and options), so
//! unsubscribe, replace and pause know where each subscription lives. It does no I/O.

use crate::bookmark::BookmarkSpec;
use crate::filter::Filter;
use crate::ids::SubId;
use crate::protocol::keys::Key;
use crate::protocol::{AckTypes, CommandKind, Header, Options};
use crate::router::DeliveryOptions;
use crate::sow::OrderBy;
use crate::topic::{TopicError, TopicSpec};
use std::collections::HashMap;
use std::fmt;

/// Why a command was refused; `as_str` is the exact `reason` text the clients recognise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Anything but logon before logon.
    LogonRequired,
    /// A second logon on one connection.
    DuplicateLogon,
    /// Missing, empty or over-long topic.
    InvalidTopic,
    /// A topic pattern that does not compile.
    BadRegexTopic,
    /// A filter that does not compile.
    BadFilter,
    /// A command word the protocol does not define.
    InvalidCommand,
    /// A command this server does not carry out yet.
    NotSupported,
    /// A subscription id already used on this connection (without `replace`).
    SubIdInUse,
    /// A subscription id that is missing or names no subscription.
    InvalidSubId,
    /// An option that is unknown or contradicts another.
    InvalidOptions,
    /// A header field that is present but malformed.
    InvalidHeader,
    /// The connection holds the maximum number of subscriptions.
    SubscriptionLimit,
    /// A SOW publish or delete without a usable key, or a bad `sow_keys` list.
    BadSowKey,
    /// The SOW store refused the message (too large, not mergeable).
    SowStoreFailed,
    /// An `orderby` that does not parse.
    InvalidOrderBy,
    /// A bookmark that does not parse or names no position in the transaction log.
    InvalidBookmark,
    /// The client name is held by a connection of another user.
    NameInUse,
    /// The transaction log could not take the message (I/O error, too large).
    TxStoreFailure,
    /// Reading the transaction log for a bookmark replay failed.
    ReplayFailed,
}

impl Reason {
    /// The reason text sent in the failure ack.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::LogonRequired => "logon required",
            Reason::DuplicateLogon => "duplicate logon attempt",
            Reason::InvalidTopic => "invalid topic",
            Reason::BadRegexTopic => "bad regex topic",
            Reason::BadFilter => "bad filter",
            Reason::InvalidCommand => "invalid command",
            Reason::NotSupported => "not supported",
            Reason::SubIdInUse => "subid in use",
            Reason::InvalidSubId => "invalid subid",
            Reason::InvalidOptions => "invalid options",
            Reason::InvalidHeader => "invalid header",
            Reason::SubscriptionLimit => "subscription limit exceeded",
            Reason::BadSowKey => "bad sow key",
            Reason::SowStoreFailed => "sow store failed",
            Reason::InvalidOrderBy => "invalid order by",
            Reason::InvalidBookmark => "invalid bookmark",
            Reason::NameInUse => "name in use",
            Reason::TxStoreFailure => "tx store failure",
            Reason::ReplayFailed => "txn replay failed",
        }
    }

    /// The reason for a SOW store error (the text [`crate::sow::SowError::reason`] gives).
    pub fn from_sow_error(error: &crate::sow::SowError) -> Reason {
        match error.reason() {
            "bad sow key" => Reason::BadSowKey,
            "invalid order by" => Reason::InvalidOrderBy,
            "invalid topic" => Reason::InvalidTopic,
            _ => Reason::SowStoreFailed,
        }
    }
}

/// A refused command: the reason for the ack and a detail for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// What the client is told.
    pub reason: Reason,
    /// What the operator reads in the log.
    pub detail: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}: {}", self.reason.as_str(), self.detail)
    }
}

/// Builds a refusal (also used by the network layer for refusals only it can decide).
pub fn refuse(reason: Reason, detail: impl Into<String>) -> Refusal {
    Refusal {
        reason,
        detail: detail.into(),
    }
}

/// The ids an ack must echo and the ack types asked for, borrowed from the command's header.
#[derive(Debug, Clone, Copy)]
pub struct AckTarget<'a> {
    /// The command word, when known.
    pub command: Option<CommandKind>,
    /// `cid` as sent.
    pub command_id: Option<&'a [u8]>,
    /// `sub_id` as sent.
    pub sub_id: Option<&'a [u8]>,
    /// `query_id` as sent.
    pub query_id: Option<&'a [u8]>,
    /// Requested ack types.
    pub acks: AckTypes,
}

impl<'a> AckTarget<'a> {
    /// Reads the ack-related fields of a header.
    pub fn from_header(header: &Header<'a>) -> AckTarget<'a> {
        AckTarget {
            command: header.bytes(Key::Command).and_then(CommandKind::parse),
            command_id: header.bytes(Key::CommandId),
            sub_id: header.bytes(Key::SubId),
            query_id: header.bytes(Key::QueryId),
            acks: header
                .bytes(Key::AckType)
                .map(AckTypes::parse)
                .unwrap_or_default(),
        }
    }
}

/// What a subscription id stands for on this connection.
#[derive(Debug, Clone)]
pub struct SubscriptionRecord {
    /// The topic or pattern.
    pub topic: TopicSpec,
    /// Delivery options (timestamps, filter).
    pub options: DeliveryOptions,
    /// Whether deliveries are paused.
    pub paused: bool,
    /// A bookmark subscription's starting point (replay from the transaction log).
    pub bookmark: Option<Box<BookmarkSpec>>,
}

/// The ids and ack types of a command, owned, for replies produced on another shard.
#[derive(Debug, Clone, Default)]
pub struct OwnedAckTarget {
    /// The command word.
    pub command: Option<CommandKind>,
    /// `cid` as sent.
    pub command_id: Option<Box<[u8]>>,
    /// `sub_id` as sent.
    pub sub_id: Option<Box<[u8]>>,
    /// `query_id` as sent.
    pub query_id: Option<Box<[u8]>>,
    /// Requested ack types.
    pub acks: AckTypes,
}

impl OwnedAckTarget {
    /// Copies a borrowed target.
    pub fn new(target: &AckTarget<'_>) -> OwnedAckTarget {
        OwnedAckTarget {
            command: target.command,
            command_id: target.command_id.map(Box::from),
            sub_id: target.sub_id.map(Box::from),
            query_id: target.query_id.map(Box::from),
            acks: target.acks,
        }
    }

    /// The borrowed form the reply writers take.
    pub fn as_target(&self) -> AckTarget<'_> {
        AckTarget {
            command: self.command,
            command_id: self.command_id.as_deref(),
            sub_id: self.sub_id.as_deref(),
            query_id: self.query_id.as_deref(),
            acks: self.acks,
        }
    }
}

/// A validated `sow`, `sow_and_subscribe` or `sow_and_delta_subscribe`.
#[derive(Debug, Clone)]
pub struct SowQuery {
    /// The exact topic queried.
    pub topic: Box<[u8]>,
    /// Content filter.
    pub filter: Option<Filter>,
    /// `orderby`.
    pub order_by: Option<OrderBy>,
    /// `top_n` (header or `top_n=` option).
    pub top_n: Option<usize>,
    /// Records per `sow` frame.
    pub batch_size: usize,
    /// `sow_keys`: only these keys (wire spellings, comma separated).
    pub sow_keys: Option<Box<[u8]>>,
    /// Routing key of the query's frames: `query_id`, else `sub_id`, else `cid`.
    pub query_id: Box<[u8]>,
    /// Records carry `ts`.
    pub timestamp: bool,
    /// For the subscribing forms: the subscription registered atomically with the query.
    pub subscription: Option<(SubId, SubscriptionRecord)>,
    /// The registration the subscription replaces (`replace`), if any.
    pub previous: Option<SubscriptionRecord>,
}

/// What a `sow_delete` selects.
#[derive(Debug, Clone)]
pub enum SowDeleteBy {
    /// Every record the filter matches.
    Filter(Filter),
    /// The records named by a `sow_keys` list.
    Keys(Box<[u8]>),
    /// The record whose key the payload (or `k` header) gives.
    Data,
}

/// A validated command for the network layer to carry out.
#[derive(Debug)]
pub enum Request {
    /// Logon accepted: send the processed ack with version and bookmark.
    Logon,
    /// Publish the frame's payload to the topic (the frame's header holds topic and `x`).
    Publish,
    /// `delta_publish`: merge into the SOW record (a plain publish on a non-SOW topic).
    DeltaPublish,
    /// A SOW query, possibly with a subscription.
    SowQuery(Box<SowQuery>),
    /// Delete SOW records of `topic`.
    SowDelete {
        /// The topic.
        topic: Box<[u8]>,
        /// What to delete.
        by: SowDeleteBy,
    },
    /// Add `sub_id`; when `previous` is set, remove that registration first (replace).
    Subscribe {
        /// Subscription id.
        sub_id: SubId,
        /// What to register.
        record: SubscriptionRecord,
        /// The registration being replaced, if any.
        previous: Option<SubscriptionRecord>,
    },
    /// Remove these subscriptions.
    Unsubscribe(Vec<(SubId, SubscriptionRecord)>),
    /// Pause (`true`) or resume these subscriptions.
    Pause(Vec<(SubId, SubscriptionRecord)>, bool),
    /// Ack once every earlier command of this connection has been carried out.
    Flush,
    /// Start heartbeating at this interval.
    HeartbeatStart {
        /// Seconds between heartbeats.
        interval_seconds: u64,
    },
    /// The client's heartbeat; nothing to send back.
    Beat,
}

/// Bounds on what one connection may hold.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    /// Subscriptions one connection may hold.
    pub subscriptions_max: usize,
    /// Largest heartbeat interval a client may ask for, in seconds.
    pub heartbeat_interval_seconds_max: u64,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            subscriptions_max: 65_536,
            heartbeat_interval_seconds_max: 3_600,
        }
    }
}

/// A connection's protocol state.
#[derive(Debug)]
pub struct Session {
    limits: SessionLimits,
    client_name: Option<String>,
    named: bool,
    user_id: Option<String>,
    subscriptions: HashMap<SubId, SubscriptionRecord>,
}

impl Session {
    /// A connection that has not logged on.
    pub fn new(limits: SessionLimits) -> Session {
        Session {
            limits,
            client_name: None,
            named: false,
            user_id: None,
            subscriptions: HashMap::new(),
        }
    }

    /// The name given at logon.
    pub fn client_name(&self) -> Option<&str> {
        self.client_name.as_deref()
    }

    /// The user given at logon.
    pub fn user_id(&self) -> Option<&str> {
        self.user_id.as_deref()
    }

    /// Whether logon succeeded.
    pub fn logged_on(&self) -> bool {
        self.client_name.is_some()
    }

    /// The connection's subscriptions.
    pub fn subscriptions(&self) -> impl Iterator<Item = (&SubId, &SubscriptionRecord)> {
        self.subscriptions.iter()
    }

    /// Forgets a subscription the network layer refused after the session recorded it (a
    /// `sow_and_subscribe` on a topic that is not a SOW topic).
    pub fn forget_subscription(&mut self, sub_id: &SubId) {
        self.subscriptions.remove(sub_id);
    }

    /// Whether the client gave its own name at logon (only named clients own their name).
    pub fn has_client_name(&self) -> bool {
        self.named
    }

    /// Reverts an accepted logon the network layer refused afterwards (the name is in use).
    pub fn undo_logon(&mut self) {
        self.client_name = None;
        self.user_id = None;
        self.named = false;
    }

    /// Validates one command and records its effect on the session.
    pub fn handle(&mut self, header: &Header<'_>) -> Result<Request, Refusal> {
        let Some(word) = header.bytes(Key::Command) else {
            return Err(refuse(
                Reason::InvalidCommand,
                "header has no command ('c')",
            ));
        };
        let Some(command) = CommandKind::parse(word) else {
            return Err(refuse(
                Reason::InvalidCommand,
                format!("unknown command '{}'", String::from_utf8_lossy(word)),
            ));
        };
        if command == CommandKind::Logon {
            return self.logon(header);
        }
        if !self.logged_on() {
            return Err(refuse(
                Reason::LogonRequired,
                format!("{} before logon", command.as_str()),
            ));
        }
        match command {
            // Without a SOW store every topic is a non-SOW topic, where AMPS treats a delta
            // publish as a publish and a delta subscription as a subscription.
            CommandKind::Publish | CommandKind::DeltaPublish => {
                let topic = header
                    .get(Key::Topic)
                    .ok_or_else(|| refuse(Reason::InvalidTopic, "publish without topic"))?;
                crate::topic::check_name(&topic.to_bytes()).map_err(topic_refusal)?;
                if topic.escaped {
                    return Err(refuse(
                        Reason::InvalidTopic,
                        "publish topics may not contain '\"' or '\\'",
                    ));
                }
                if let Some(expiration) = header.get(Key::Expiration) {
                    if expiration.as_u64().is_none() {
                        return Err(refuse(
                            Reason::InvalidHeader,
                            "expiration 'e' must be whole seconds",
                        ));
                    }
                }
                Ok(if command == CommandKind::DeltaPublish {
                    Request::DeltaPublish
                } else {
                    Request::Publish
                })
            }
            CommandKind::Subscribe | CommandKind::DeltaSubscribe => {
                self.subscribe(header, command == CommandKind::DeltaSubscribe)
            }
            CommandKind::Unsubscribe => self.unsubscribe(header),
            CommandKind::Flush => Ok(Request::Flush),
            CommandKind::Heartbeat => {
                let options = Options::parse(header.bytes(Key::Options).unwrap_or_default());
                match options.heartbeat_start_seconds {
                    Some(seconds)
                        if seconds == 0 || seconds > self.limits.heartbeat_interval_seconds_max =>
                    {
                        Err(refuse(
                            Reason::InvalidOptions,
                            format!(
                                "heartbeat interval {seconds} s is outside 1..={} s",
                                self.limits.heartbeat_interval_seconds_max
                            ),
                        ))
                    }
                    Some(interval_seconds) => Ok(Request::HeartbeatStart { interval_seconds }),
                    None => Ok(Request::Beat),
                }
            }
            CommandKind::Sow | CommandKind::SowAndSubscribe | CommandKind::SowAndDeltaSubscribe => {
                self.sow_query(header, command)
            }
            CommandKind::SowDelete => Self::sow_delete(header),
            CommandKind::StartTimer | CommandKind::StopTimer => Err(refuse(
                Reason::NotSupported,
                format!("{} is a legacy command", command.as_str()),
            )),
            CommandKind::Logon => unreachable!("handled above"),
        }
    }

    fn logon(&mut self, header: &Header<'_>) -> Result<Request, Refusal> {
        if self.logged_on() {
            return Err(refuse(
                Reason::DuplicateLogon,
                "second logon on one connection",
            ));
        }
        let name = match header.get(Key::ClientName) {
            Some(name) if !name.bytes.is_empty() => {
                String::from_utf8_lossy(&name.to_bytes()).into_owned()
            }
            // Clients without a name are allowed; give them one so logs can name them.
            _ => format!(
                "anonymous-{:x}",
                header
                    .bytes(Key::CommandId)
                    .map(crate::ids::stable_hash)
                    .unwrap_or(0)
            ),
        };
        self.named = header
            .get(Key::ClientName)
            .is_some_and(|name| !name.bytes.is_empty());
        self.client_name = Some(name);
        self.user_id = header
            .get(Key::UserId)
            .map(|user| String::from_utf8_lossy(&user.to_bytes()).into_owned());
        Ok(Request::Logon)
    }

    fn subscribe(&mut self, header: &Header<'_>, delta: bool) -> Result<Request, Refusal> {
        let options = Options::parse(header.bytes(Key::Options).unwrap_or_default());
        if options.unknown {
            return Err(refuse(
                Reason::InvalidOptions,
                format!(
                    "unknown option in '{}'",
                    String::from_utf8_lossy(header.bytes(Key::Options).unwrap_or_default())
                ),
            ));
        }
        let bookmark = match header.get(Key::Bookmark) {
            Some(text) => Some(Box::new(
                BookmarkSpec::parse(&text.to_bytes())
                    .map_err(|error| refuse(Reason::InvalidBookmark, error.to_string()))?,
            )),
            None => None,
        };
        let sub_id = match header.get(Key::SubId).or(header.get(Key::CommandId)) {
            Some(id) if !id.bytes.is_empty() => SubId::new(&id.to_bytes()),
            _ => {
                return Err(refuse(
                    Reason::InvalidSubId,
                    "subscribe without sub_id or cid",
                ))
            }
        };
        let existing = self.subscriptions.get(&sub_id).cloned();
        if !header.has(Key::Topic) && (options.pause || options.resume) {
            return self.pause_listed(header, options.pause);
        }
        let topic = subscription_topic(header, &options)?;
        let reuse_allowed = options.replace || options.pause || options.resume;
        self.check_room_for(&sub_id, existing.is_some(), reuse_allowed)?;
        let filter = compile_filter(header)?;
        let paused = options.pause
            || (existing.as_ref().is_some_and(|record| record.paused) && !options.resume);
        let record = SubscriptionRecord {
            topic,
            options: delivery_options(&options, filter, delta),
            paused,
            bookmark,
        };
        self.subscriptions.insert(sub_id.clone(), record.clone());
        Ok(Request::Subscribe {
            sub_id,
            record,
            previous: existing,
        })
    }

    fn sow_query(&mut self, header: &Header<'_>, command: CommandKind) -> Result<Request, Refusal> {
        let options_text = header.bytes(Key::Options).unwrap_or_default();
        let options = Options::parse(options_text);
        if options.unknown {
            return Err(refuse(
                Reason::InvalidOptions,
                format!(
                    "unknown option in '{}'",
                    String::from_utf8_lossy(options_text)
                ),
            ));
        }
        if header.has(Key::Bookmark) && command != CommandKind::Sow {
            let bookmark = header.bytes(Key::Bookmark).unwrap_or_default();
            // The Python client sends bookmark "0" with a full sow_and_subscribe Command; only a
            // real bookmark needs the transaction log.
            if bookmark != b"0" && !bookmark.is_empty() {
                return Err(refuse(Reason::NotSupported, "historical SOW queries need the transaction log, which this server does not have yet"));
            }
        }
        let topic = subscription_topic(header, &options)?;
        let TopicSpec::Exact(name) = &topic else {
            return Err(refuse(
                Reason::NotSupported,
                format!(
                    "{} on a regex topic is not supported yet; query each SOW topic by name",
                    command.as_str()
                ),
            ));
        };
        let filter = compile_filter(header)?;
        let order_by = match header.get(Key::OrderBy) {
            Some(text) if !text.bytes.is_empty() => {
                let text = text.to_bytes();
                let text = std::str::from_utf8(&text)
                    .map_err(|_| refuse(Reason::InvalidOrderBy, "orderby is not UTF-8"))?;
                Some(
                    OrderBy::parse(text)
                        .map_err(|error| refuse(Reason::InvalidOrderBy, error.to_string()))?,
                )
            }
            _ => None,
        };
        let top_n =
            match header.get(Key::TopN) {
                Some(value) => Some(value.as_u64().ok_or_else(|| {
                    refuse(Reason::InvalidHeader, "top_n must be a whole number")
                })?),
                None => option_number(options_text, b"top_n="),
            }
            .map(|limit| usize::try_from(limit).unwrap_or(usize::MAX));
        let requested_batch = match header.get(Key::BatchSize) {
            Some(value) => Some(value.as_u64().ok_or_else(|| {
                refuse(Reason::InvalidHeader, "batch_size must be a whole number")
            })?),
            None => None,
        };
        let subscribing = command != CommandKind::Sow;
        let batch_size = crate::protocol::sow_reply::batch_size(requested_batch, subscribing);
        let sow_keys = header
            .get(Key::SowKeys)
            .map(|keys| Box::from(&*keys.to_bytes()));
        let id_of = |key| {
            header
                .get(key)
                .filter(|id| !id.bytes.is_empty())
                .map(|id| id.to_bytes().into_owned())
        };
        let mut query_id: Option<Vec<u8>> = id_of(Key::QueryId);
        let mut subscription = None;
        let mut previous = None;
        if subscribing {
            let sub_id = match id_of(Key::SubId).or(id_of(Key::CommandId)) {
                Some(id) => SubId::new(&id),
                None => {
                    return Err(refuse(
                        Reason::InvalidSubId,
                        format!("{} without sub_id or cid", command.as_str()),
                    ))
                }
            };
            let existing = self.subscriptions.get(&sub_id).cloned();
            self.check_room_for(&sub_id, existing.is_some(), options.replace)?;
            let delta = command == CommandKind::SowAndDeltaSubscribe;
            let record = SubscriptionRecord {
                topic: topic.clone(),
                options: delivery_options(&options, filter.clone(), delta),
                paused: false,
                bookmark: None,
            };
            self.subscriptions.insert(sub_id.clone(), record.clone());
            query_id = query_id.or_else(|| Some(sub_id.as_bytes().to_vec()));
            subscription = Some((sub_id, record));
            previous = existing;
        }
        let query_id = query_id.or_else(|| id_of(Key::CommandId)).ok_or_else(|| {
            refuse(
                Reason::InvalidHeader,
                format!(
                    "{} without query_id or cid: its records could not be routed",
                    command.as_str()
                ),
            )
        })?;
        Ok(Request::SowQuery(Box::new(SowQuery {
            topic: Box::from(&name[..]),
            filter,
            order_by,
            top_n,
            batch_size,
            sow_keys,
            query_id: query_id.into(),
            timestamp: options.timestamp,
            subscription,
            previous,
        })))
    }

    fn sow_delete(header: &Header<'_>) -> Result<Request, Refusal> {
        let topic = header
            .get(Key::Topic)
            .map(|topic| topic.to_bytes())
            .unwrap_or_default();
        crate::topic::check_name(&topic).map_err(topic_refusal)?;
        if header.has(Key::Bookmark) {
            return Err(refuse(
                Reason::NotSupported,
                "sow_delete by bookmark acknowledges queue messages; queues are not built yet",
            ));
        }
        let filter = compile_filter(header)?;
        let keys = header
            .get(Key::SowKeys)
            .map(|keys| keys.to_bytes().into_owned());
        let by = match (filter, keys) {
            (Some(filter), None) => SowDeleteBy::Filter(filter),
            (None, Some(keys)) => SowDeleteBy::Keys(keys.into()),
            // Whether there is data to take the key from is for the caller, which holds the frame.
            (None, None) => SowDeleteBy::Data,
            (Some(_), Some(_)) => {
                return Err(refuse(
                    Reason::InvalidOptions,
                    "sow_delete takes one of filter, sow_keys or data, not several",
                ))
            }
        };
        Ok(Request::SowDelete {
            topic: Box::from(&*topic),
            by,
        })
    }

    /// Refuses a subscription id already in use (unless the options allow reusing it) and a new
    /// subscription beyond the connection's limit.
    fn check_room_for(
        &self,
        sub_id: &SubId,
        exists: bool,
        reuse_allowed: bool,
    ) -> Result<(), Refusal> {
        if exists && !reuse_allowed {
            return Err(refuse(
                Reason::SubIdInUse,
                format!("subscription '{sub_id}' exists; use the replace option"),
            ));
        }
        if !exists && self.subscriptions.len() >= self.limits.subscriptions_max {
            return Err(refuse(
                Reason::SubscriptionLimit,
                format!(
                    "connection holds {} subscriptions, the maximum",
                    self.limits.subscriptions_max
                ),
            ));
        }
        Ok(())
    }

    fn listed_ids<'h>(header: &Header<'h>) -> Vec<SubId> {
        let list = header
            .get(Key::SubId)
            .or(header.get(Key::SubIds))
            .map(|ids| ids.to_bytes().into_owned())
            .unwrap_or_default();
        list.split(|&byte| byte == b',')
            .map(|id| id.trim_ascii())
            .filter(|id| !id.is_empty())
            .map(SubId::new)
            .collect()
    }

    fn pause_listed(&mut self, header: &Header<'_>, pause: bool) -> Result<Request, Refusal> {
        let mut targets = Vec::new();
        for sub_id in Self::listed_ids(header) {
            let Some(record) = self.subscriptions.get_mut(&sub_id) else {
                return Err(refuse(
                    Reason::InvalidSubId,
                    format!("no subscription '{sub_id}' to pause or resume"),
                ));
            };
            record.paused = pause;
            targets.push((sub_id, record.clone()));
        }
        if targets.is_empty() {
            return Err(refuse(
                Reason::InvalidSubId,
                "pause or resume without sub_id",
            ));
        }
        Ok(Request::Pause(targets, pause))
    }

    fn unsubscribe(&mut self, header: &Header<'_>) -> Result<Request, Refusal> {
        let ids = Self::listed_ids(header);
        if ids.iter().any(|id| id.as_bytes() == b"all") {
            return Ok(Request::Unsubscribe(self.subscriptions.drain().collect()));
        }
        // Unknown ids are harmless: the Python client unsubscribes twice when a stream closes.
        let removed = ids
            .into_iter()
            .filter_map(|id| self.subscriptions.remove(&id).map(|record| (id, record)))
            .collect();
        Ok(Request::Unsubscribe(removed))
    }
}

fn compile_filter(header: &Header<'_>) -> Result<Option<Filter>, Refusal> {
    match header.get(Key::Filter) {
        Some(text) if !text.bytes.is_empty() => {
            let text = text.to_bytes();
            let text = std::str::from_utf8(&text)
                .map_err(|_| refuse(Reason::BadFilter, "filter is not UTF-8"))?;
            Ok(Some(Filter::compile(text).map_err(|error| {
                refuse(Reason::BadFilter, error.to_string())
            })?))
        }
        _ => Ok(None),
    }
}

fn delivery_options(options: &Options, filter: Option<Filter>, delta: bool) -> DeliveryOptions {
    DeliveryOptions {
        timestamp: options.timestamp,
        filter,
        oof: options.oof,
        delta,
        no_empties: options.no_empties,
        no_sowkey: options.no_sowkey,
    }
}

/// The number in a `name=<n>` option (`top_n=5`), if present.
fn option_number(options: &[u8], prefix: &[u8]) -> Option<u64> {
    options
        .split(|&byte| byte == b',')
        .map(<[u8]>::trim_ascii)
        .find_map(|word| word.strip_prefix(prefix))
        .and_then(crate::protocol::header::parse_u64)
}

/// The topic of a subscribe or query: a pattern or exact name, or literal with `non_regex_topic`.
fn subscription_topic(header: &Header<'_>, options: &Options) -> Result<TopicSpec, Refusal> {
    let topic_bytes = header
        .get(Key::Topic)
        .map(|topic| topic.to_bytes())
        .unwrap_or_default();
    if options.non_regex_topic {
        TopicSpec::literal(&topic_bytes)
    } else {
        TopicSpec::parse(&topic_bytes)
    }
    .map_err(topic_refusal)
}

fn topic_refusal(error: TopicError) -> Refusal {
    match error {
        TopicError::BadRegex { .. } => refuse(Reason::BadRegexTopic, error.to_string()),
        _ => refuse(Reason::InvalidTopic, error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::parse_header;

    fn handle(session: &mut Session, frame: &str) -> Result<Request, Refusal> {
        session.handle(&parse_header(frame.as_bytes()).unwrap())
    }

    fn logged_on() -> Session {
        let mut session = Session::new(SessionLimits::default());
        assert!(matches!(
            handle(
                &mut session,
                r#"{"c":"logon","cid":"1","client_name":"c1"}"#
            ),
            Ok(Request::Logon)
        ));
        session
    }

    fn reason(result: Result<Request, Refusal>) -> Reason {
        result.expect_err("should be refused").reason
    }

    #[test]
    fn commands_before_logon_are_refused() {
        let mut session = Session::new(SessionLimits::default());
        assert_eq!(
            reason(handle(
                &mut session,
                r#"{"c":"subscribe","t":"x","sub_id":"a"}"#
            )),
            Reason::LogonRequired
        );
        assert_eq!(
            reason(handle(&mut session, r#"{"c":"p","t":"x"}"#)),
            Reason::LogonRequired
        );
    }

    #[test]
    fn logon_names_the_client_once() {
        let mut session = logged_on();
        assert_eq!(session.client_name(), Some("c1"));
        assert_eq!(
            reason(handle(&mut session, r#"{"c":"logon","cid":"2"}"#)),
            Reason::DuplicateLogon
        );
    }

    #[test]
    fn bad_input_gets_the_reason_the_client_maps() {
        let mut session = logged_on();
        assert_eq!(
            reason(handle(&mut session, r#"{"c":"bogus"}"#)),
            Reason::InvalidCommand
        );
        assert_eq!(
            reason(handle(&mut session, r#"{"c":"subscribe","sub_id":"a"}"#)),
            Reason::InvalidTopic
        );
        assert_eq!(
            reason(handle(
                &mut session,
                r#"{"c":"subscribe","t":"a.(","sub_id":"a"}"#
            )),
            Reason::BadRegexTopic
        );
        assert_eq!(
            reason(handle(&mut session, r#"{"c":"p"}"#)),
            Reason::InvalidTopic
        );
        assert_eq!(
            reason(handle(&mut session, r#"{"c":"sow","t":"x"}"#)),
            Reason::InvalidHeader
        );
        assert_eq!(
            reason(handle(&mut session, r#"{"c":"sow","t":"^x","cid":"1"}"#)),
            Reason::NotSupported
        );
        assert_eq!(
            reason(handle(
                &mut session,
                r#"{"c":"sow","t":"x","cid":"1","orderby":"qty"}"#
            )),
            Reason::InvalidOrderBy
        );
        assert_eq!(
            reason(handle(
                &mut session,
                r#"{"c":"sow_delete","t":"x","filter":"/a=1","sow_keys":"1"}"#
            )),
            Reason::InvalidOptions
        );
        assert!(matches!(
            handle(&mut session, r#"{"c":"delta_publish","t":"x"}"#),
            Ok(Request::DeltaPublish)
        ));
        assert_eq!(
            reason(handle(
                &mut session,
                r#"{"c":"subscribe","t":"x","sub_id":"b","bookmark":"12|x|"}"#
            )),
            Reason::InvalidBookmark
        );
        assert!(matches!(
            handle(&mut session, r#"{"c":"subscribe","t":"x","sub_id":"b","bookmark":"0"}"#),
            Ok(Request::Subscribe { record, .. }) if record.bookmark.is_some()
        ));
        assert_eq!(
            reason(handle(
                &mut session,
                r#"{"c":"subscribe","t":"x","sub_id":"b","o":"warp"}"#
            )),
            Reason::InvalidOptions
        );
        assert_eq!(
            reason(handle(&mut session, r#"{"c":"heartbeat","o":"start,0"}"#)),
            Reason::InvalidOptions
        );
    }

    #[test]
    fn subscribe_replace_pause_unsubscribe() {
        let mut session = logged_on();
        assert!(matches!(
            handle(
                &mut session,
                r#"{"c":"subscribe","t":"orders","cid":"auto1","sub_id":"s"}"#
            ),
            Ok(Request::Subscribe { previous: None, .. })
        ));
        assert_eq!(
            reason(handle(
                &mut session,
                r#"{"c":"subscribe","t":"trades","sub_id":"s"}"#
            )),
            Reason::SubIdInUse
        );
        match handle(
            &mut session,
            r#"{"c":"subscribe","t":"trades","sub_id":"s","o":"replace"}"#,
        ) {
            Ok(Request::Subscribe {
                previous: Some(previous),
                record,
                ..
            }) => {
                assert_eq!(previous.topic.display(), "orders");
                assert_eq!(record.topic.display(), "trades");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(
            matches!(handle(&mut session, r#"{"c":"subscribe","sub_id":"s","o":"pause"}"#), Ok(Request::Pause(ids, true)) if ids.len() == 1)
        );
        assert_eq!(
            reason(handle(
                &mut session,
                r#"{"c":"subscribe","sub_id":"zz","o":"resume"}"#
            )),
            Reason::InvalidSubId
        );
        assert!(
            matches!(handle(&mut session, r#"{"c":"unsubscribe","sub_id":"nope"}"#), Ok(Request::Unsubscribe(ids)) if ids.is_empty())
        );
        assert!(
            matches!(handle(&mut session, r#"{"c":"unsubscribe","sub_id":"all"}"#), Ok(Request::Unsubscribe(ids)) if ids.len() == 1)
        );
        assert_eq!(session.subscriptions().count(), 0);
    }

    #[test]
    fn non_regex_topic_makes_patterns_literal() {
        let mut session = logged_on();
        match handle(
            &mut session,
            r#"{"c":"subscribe","t":"odd.(","sub_id":"a","o":"non_regex_topic"}"#,
        ) {
            Ok(Request::Subscribe { record, .. }) => {
                assert!(matches!(record.topic, TopicSpec::Exact(_)));
                assert!(record.topic.matches(b"odd.("));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn subscription_limit_is_enforced() {
        let mut session = Session::new(SessionLimits {
            subscriptions_max: 1,
            ..SessionLimits::default()
        });
        handle(&mut session, r#"{"c":"logon","cid":"1"}"#).unwrap();
        handle(&mut session, r#"{"c":"subscribe","t":"a","sub_id":"1"}"#).unwrap();
        assert_eq!(
            reason(handle(
                &mut session,
                r#"{"c":"subscribe","t":"a","sub_id":"2"}"#
            )),
            Reason::SubscriptionLimit
        );
    }

    #[test]
    fn sow_queries_are_parsed_and_subscribing_forms_register() {
        let mut session = logged_on();
        match handle(
            &mut session,
            r#"{"c":"sow","t":"orders","cid":"q","filter":"/qty > 2","batch_size":3,"top_n":2,"orderby":"/qty DESC"}"#,
        ) {
            Ok(Request::SowQuery(query)) => {
                assert_eq!(&*query.query_id, b"q");
                assert_eq!((query.batch_size, query.top_n), (3, Some(2)));
                assert!(query.filter.is_some() && query.order_by.is_some());
                assert!(query.subscription.is_none());
            }
            other => panic!("unexpected {other:?}"),
        }
        match handle(
            &mut session,
            r#"{"c":"sow_and_delta_subscribe","t":"orders","cid":"c1","sub_id":"s1","o":"oof,no_empties,top_n=4"}"#,
        ) {
            Ok(Request::SowQuery(query)) => {
                assert_eq!(&*query.query_id, b"s1", "query_id defaults to sub_id");
                assert_eq!(query.top_n, Some(4));
                assert_eq!(query.batch_size, 1);
                let (sub_id, record) = query.subscription.unwrap();
                assert_eq!(sub_id.as_bytes(), b"s1");
                assert!(record.options.oof && record.options.delta && record.options.no_empties);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(session.subscriptions().count(), 1);
        assert_eq!(
            reason(handle(
                &mut session,
                r#"{"c":"sow_and_subscribe","t":"orders","sub_id":"s1"}"#
            )),
            Reason::SubIdInUse
        );
        session.forget_subscription(&SubId::new(b"s1"));
        assert_eq!(session.subscriptions().count(), 0);
        assert!(matches!(
            handle(
                &mut session,
                r#"{"c":"sow_delete","t":"orders","sow_keys":"1,2"}"#
            ),
            Ok(Request::SowDelete {
                by: SowDeleteBy::Keys(_),
                ..
            })
        ));
        assert!(matches!(
            handle(&mut session, r#"{"c":"sow_delete","t":"orders"}{"id":1}"#),
            Ok(Request::SowDelete {
                by: SowDeleteBy::Data,
                ..
            })
        ));
        assert_eq!(
            reason(handle(&mut session, r#"{"c":"p","t":"orders","e":"soon"}"#)),
            Reason::InvalidHeader
        );
    }

    #[test]
    fn heartbeat_start_and_beat() {
        let mut session = logged_on();
        assert!(matches!(
            handle(&mut session, r#"{"c":"heartbeat","o":"start,5"}"#),
            Ok(Request::HeartbeatStart {
                interval_seconds: 5
            })
        ));
        assert!(matches!(
            handle(&mut session, r#"{"c":"heartbeat","o":"beat"}"#),
            Ok(Request::Beat)
        ));
    }
}
