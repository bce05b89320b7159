//! One client connection's protocol state: logon, its subscriptions, heartbeat settings.
//!
//! The session validates each command and turns it into a [`Request`] for the network layer to
//! carry out, or a [`Refusal`] whose reason string is the one the real client maps to the right
//! exception. It owns the connection's view of its subscriptions (id → topic and options), so
//! unsubscribe, replace and pause know where each subscription lives. It does no I/O.

use crate::filter::Filter;
use crate::ids::SubId;
use crate::protocol::keys::Key;
use crate::protocol::{AckTypes, CommandKind, Header, Options};
use crate::router::DeliveryOptions;
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

fn refuse(reason: Reason, detail: impl Into<String>) -> Refusal {
    Refusal { reason, detail: detail.into() }
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
            acks: header.bytes(Key::AckType).map(AckTypes::parse).unwrap_or_default(),
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
}

/// A validated command for the network layer to carry out.
#[derive(Debug)]
pub enum Request {
    /// Logon accepted: send the processed ack with version and bookmark.
    Logon,
    /// Publish the frame's payload to the topic (the frame's header holds topic and `x`).
    Publish,
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
        SessionLimits { subscriptions_max: 65_536, heartbeat_interval_seconds_max: 3_600 }
    }
}

/// A connection's protocol state.
#[derive(Debug)]
pub struct Session {
    limits: SessionLimits,
    client_name: Option<String>,
    user_id: Option<String>,
    subscriptions: HashMap<SubId, SubscriptionRecord>,
}

impl Session {
    /// A connection that has not logged on.
    pub fn new(limits: SessionLimits) -> Session {
        Session { limits, client_name: None, user_id: None, subscriptions: HashMap::new() }
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

    /// Validates one command and records its effect on the session.
    pub fn handle(&mut self, header: &Header<'_>) -> Result<Request, Refusal> {
        let Some(word) = header.bytes(Key::Command) else {
            return Err(refuse(Reason::InvalidCommand, "header has no command ('c')"));
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
            return Err(refuse(Reason::LogonRequired, format!("{} before logon", command.as_str())));
        }
        match command {
            // Without a SOW store every topic is a non-SOW topic, where AMPS treats a delta
            // publish as a publish and a delta subscription as a subscription.
            CommandKind::Publish | CommandKind::DeltaPublish => {
                let topic = header.get(Key::Topic).ok_or_else(|| refuse(Reason::InvalidTopic, "publish without topic"))?;
                crate::topic::check_name(&topic.to_bytes()).map_err(topic_refusal)?;
                if topic.escaped {
                    return Err(refuse(Reason::InvalidTopic, "publish topics may not contain '\"' or '\\'"));
                }
                Ok(Request::Publish)
            }
            CommandKind::Subscribe | CommandKind::DeltaSubscribe => self.subscribe(header),
            CommandKind::Unsubscribe => self.unsubscribe(header),
            CommandKind::Flush => Ok(Request::Flush),
            CommandKind::Heartbeat => {
                let options = Options::parse(header.bytes(Key::Options).unwrap_or_default());
                match options.heartbeat_start_seconds {
                    Some(seconds) if seconds == 0 || seconds > self.limits.heartbeat_interval_seconds_max => Err(refuse(
                        Reason::InvalidOptions,
                        format!(
                            "heartbeat interval {seconds} s is outside 1..={} s",
                            self.limits.heartbeat_interval_seconds_max
                        ),
                    )),
                    Some(interval_seconds) => Ok(Request::HeartbeatStart { interval_seconds }),
                    None => Ok(Request::Beat),
                }
            }
            CommandKind::Sow
            | CommandKind::SowAndSubscribe
            | CommandKind::SowAndDeltaSubscribe
            | CommandKind::SowDelete => Err(refuse(
                Reason::NotSupported,
                format!("{} needs the State of the World store, which this server does not have yet", command.as_str()),
            )),
            CommandKind::StartTimer | CommandKind::StopTimer => {
                Err(refuse(Reason::NotSupported, format!("{} is a legacy command", command.as_str())))
            }
            CommandKind::Logon => unreachable!("handled above"),
        }
    }

    fn logon(&mut self, header: &Header<'_>) -> Result<Request, Refusal> {
        if self.logged_on() {
            return Err(refuse(Reason::DuplicateLogon, "second logon on one connection"));
        }
        let name = match header.get(Key::ClientName) {
            Some(name) if !name.bytes.is_empty() => String::from_utf8_lossy(&name.to_bytes()).into_owned(),
            // Clients without a name are allowed; give them one so logs can name them.
            _ => format!("anonymous-{:x}", header.bytes(Key::CommandId).map(crate::ids::stable_hash).unwrap_or(0)),
        };
        self.client_name = Some(name);
        self.user_id = header.get(Key::UserId).map(|user| String::from_utf8_lossy(&user.to_bytes()).into_owned());
        Ok(Request::Logon)
    }

    fn subscribe(&mut self, header: &Header<'_>) -> Result<Request, Refusal> {
        let options = Options::parse(header.bytes(Key::Options).unwrap_or_default());
        if options.unknown {
            return Err(refuse(
                Reason::InvalidOptions,
                format!("unknown option in '{}'", String::from_utf8_lossy(header.bytes(Key::Options).unwrap_or_default())),
            ));
        }
        if header.has(Key::Bookmark) {
            return Err(refuse(Reason::NotSupported, "bookmark subscriptions need the transaction log, which this server does not have yet"));
        }
        let sub_id = match header.get(Key::SubId).or(header.get(Key::CommandId)) {
            Some(id) if !id.bytes.is_empty() => SubId::new(&id.to_bytes()),
            _ => return Err(refuse(Reason::InvalidSubId, "subscribe without sub_id or cid")),
        };
        let existing = self.subscriptions.get(&sub_id).cloned();
        if !header.has(Key::Topic) && (options.pause || options.resume) {
            return self.pause_listed(header, options.pause);
        }
        let topic_bytes = header.get(Key::Topic).map(|topic| topic.to_bytes()).unwrap_or_default();
        let topic = if options.non_regex_topic {
            TopicSpec::literal(&topic_bytes)
        } else {
            TopicSpec::parse(&topic_bytes)
        }
        .map_err(topic_refusal)?;
        if existing.is_some() && !options.replace && !options.pause && !options.resume {
            return Err(refuse(Reason::SubIdInUse, format!("subscription '{sub_id}' exists; use the replace option")));
        }
        if existing.is_none() && self.subscriptions.len() >= self.limits.subscriptions_max {
            return Err(refuse(
                Reason::SubscriptionLimit,
                format!("connection holds {} subscriptions, the maximum", self.limits.subscriptions_max),
            ));
        }
        let filter = match header.get(Key::Filter) {
            Some(text) if !text.bytes.is_empty() => {
                let text = text.to_bytes();
                let text = std::str::from_utf8(&text).map_err(|_| refuse(Reason::BadFilter, "filter is not UTF-8"))?;
                Some(Filter::compile(text).map_err(|error| refuse(Reason::BadFilter, error.to_string()))?)
            }
            _ => None,
        };
        let paused = options.pause || (existing.as_ref().is_some_and(|record| record.paused) && !options.resume);
        let record = SubscriptionRecord {
            topic,
            options: DeliveryOptions { timestamp: options.timestamp, filter },
            paused,
        };
        self.subscriptions.insert(sub_id.clone(), record.clone());
        Ok(Request::Subscribe { sub_id, record, previous: existing })
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
                return Err(refuse(Reason::InvalidSubId, format!("no subscription '{sub_id}' to pause or resume")));
            };
            record.paused = pause;
            targets.push((sub_id, record.clone()));
        }
        if targets.is_empty() {
            return Err(refuse(Reason::InvalidSubId, "pause or resume without sub_id"));
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
        assert!(matches!(handle(&mut session, r#"{"c":"logon","cid":"1","client_name":"c1"}"#), Ok(Request::Logon)));
        session
    }

    fn reason(result: Result<Request, Refusal>) -> Reason {
        result.expect_err("should be refused").reason
    }

    #[test]
    fn commands_before_logon_are_refused() {
        let mut session = Session::new(SessionLimits::default());
        assert_eq!(reason(handle(&mut session, r#"{"c":"subscribe","t":"x","sub_id":"a"}"#)), Reason::LogonRequired);
        assert_eq!(reason(handle(&mut session, r#"{"c":"p","t":"x"}"#)), Reason::LogonRequired);
    }

    #[test]
    fn logon_names_the_client_once() {
        let mut session = logged_on();
        assert_eq!(session.client_name(), Some("c1"));
        assert_eq!(reason(handle(&mut session, r#"{"c":"logon","cid":"2"}"#)), Reason::DuplicateLogon);
    }

    #[test]
    fn bad_input_gets_the_reason_the_client_maps() {
        let mut session = logged_on();
        assert_eq!(reason(handle(&mut session, r#"{"c":"bogus"}"#)), Reason::InvalidCommand);
        assert_eq!(reason(handle(&mut session, r#"{"c":"subscribe","sub_id":"a"}"#)), Reason::InvalidTopic);
        assert_eq!(reason(handle(&mut session, r#"{"c":"subscribe","t":"a.(","sub_id":"a"}"#)), Reason::BadRegexTopic);
        assert_eq!(reason(handle(&mut session, r#"{"c":"p"}"#)), Reason::InvalidTopic);
        assert_eq!(reason(handle(&mut session, r#"{"c":"sow","t":"x"}"#)), Reason::NotSupported);
        assert_eq!(reason(handle(&mut session, r#"{"c":"sow_delete","t":"x"}"#)), Reason::NotSupported);
        assert!(matches!(handle(&mut session, r#"{"c":"delta_publish","t":"x"}"#), Ok(Request::Publish)));
        assert_eq!(reason(handle(&mut session, r#"{"c":"subscribe","t":"x","sub_id":"b","bookmark":"0"}"#)), Reason::NotSupported);
        assert_eq!(reason(handle(&mut session, r#"{"c":"subscribe","t":"x","sub_id":"b","o":"warp"}"#)), Reason::InvalidOptions);
        assert_eq!(reason(handle(&mut session, r#"{"c":"heartbeat","o":"start,0"}"#)), Reason::InvalidOptions);
    }

    #[test]
    fn subscribe_replace_pause_unsubscribe() {
        let mut session = logged_on();
        assert!(matches!(
            handle(&mut session, r#"{"c":"subscribe","t":"orders","cid":"auto1","sub_id":"s"}"#),
            Ok(Request::Subscribe { previous: None, .. })
        ));
        assert_eq!(reason(handle(&mut session, r#"{"c":"subscribe","t":"trades","sub_id":"s"}"#)), Reason::SubIdInUse);
        match handle(&mut session, r#"{"c":"subscribe","t":"trades","sub_id":"s","o":"replace"}"#) {
            Ok(Request::Subscribe { previous: Some(previous), record, .. }) => {
                assert_eq!(previous.topic.display(), "orders");
                assert_eq!(record.topic.display(), "trades");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(handle(&mut session, r#"{"c":"subscribe","sub_id":"s","o":"pause"}"#), Ok(Request::Pause(ids, true)) if ids.len() == 1));
        assert_eq!(reason(handle(&mut session, r#"{"c":"subscribe","sub_id":"zz","o":"resume"}"#)), Reason::InvalidSubId);
        assert!(matches!(handle(&mut session, r#"{"c":"unsubscribe","sub_id":"nope"}"#), Ok(Request::Unsubscribe(ids)) if ids.is_empty()));
        assert!(matches!(handle(&mut session, r#"{"c":"unsubscribe","sub_id":"all"}"#), Ok(Request::Unsubscribe(ids)) if ids.len() == 1));
        assert_eq!(session.subscriptions().count(), 0);
    }

    #[test]
    fn non_regex_topic_makes_patterns_literal() {
        let mut session = logged_on();
        match handle(&mut session, r#"{"c":"subscribe","t":"odd.(","sub_id":"a","o":"non_regex_topic"}"#) {
            Ok(Request::Subscribe { record, .. }) => {
                assert!(matches!(record.topic, TopicSpec::Exact(_)));
                assert!(record.topic.matches(b"odd.("));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn subscription_limit_is_enforced() {
        let mut session = Session::new(SessionLimits { subscriptions_max: 1, ..SessionLimits::default() });
        handle(&mut session, r#"{"c":"logon","cid":"1"}"#).unwrap();
        handle(&mut session, r#"{"c":"subscribe","t":"a","sub_id":"1"}"#).unwrap();
        assert_eq!(reason(handle(&mut session, r#"{"c":"subscribe","t":"a","sub_id":"2"}"#)), Reason::SubscriptionLimit);
    }

    #[test]
    fn heartbeat_start_and_beat() {
        let mut session = logged_on();
        assert!(matches!(handle(&mut session, r#"{"c":"heartbeat","o":"start,5"}"#), Ok(Request::HeartbeatStart { interval_seconds: 5 })));
        assert!(matches!(handle(&mut session, r#"{"c":"heartbeat","o":"beat"}"#), Ok(Request::Beat)));
    }
}
