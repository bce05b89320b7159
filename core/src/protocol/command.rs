//! Command words, ack types and options: the small vocabularies inside a header.

/// The command named by a header's `c` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandKind {
    /// `logon`.
    Logon,
    /// `p` or `publish`.
    Publish,
    /// `delta_publish`.
    DeltaPublish,
    /// `subscribe`.
    Subscribe,
    /// `delta_subscribe`.
    DeltaSubscribe,
    /// `unsubscribe`.
    Unsubscribe,
    /// `sow`.
    Sow,
    /// `sow_and_subscribe`.
    SowAndSubscribe,
    /// `sow_and_delta_subscribe`.
    SowAndDeltaSubscribe,
    /// `sow_delete`.
    SowDelete,
    /// `flush`.
    Flush,
    /// `heartbeat`.
    Heartbeat,
    /// `start_timer` (legacy).
    StartTimer,
    /// `stop_timer` (legacy).
    StopTimer,
}

impl CommandKind {
    /// Reads a command word; `None` for anything the protocol does not define.
    pub fn parse(word: &[u8]) -> Option<CommandKind> {
        Some(match word {
            b"p" | b"publish" => CommandKind::Publish,
            b"logon" => CommandKind::Logon,
            b"subscribe" => CommandKind::Subscribe,
            b"unsubscribe" => CommandKind::Unsubscribe,
            b"heartbeat" => CommandKind::Heartbeat,
            b"flush" => CommandKind::Flush,
            b"delta_publish" => CommandKind::DeltaPublish,
            b"delta_subscribe" => CommandKind::DeltaSubscribe,
            b"sow" => CommandKind::Sow,
            b"sow_and_subscribe" => CommandKind::SowAndSubscribe,
            b"sow_and_delta_subscribe" => CommandKind::SowAndDeltaSubscribe,
            b"sow_delete" => CommandKind::SowDelete,
            b"start_timer" => CommandKind::StartTimer,
            b"stop_timer" => CommandKind::StopTimer,
            _ => return None,
        })
    }

    /// The command word as the protocol spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            CommandKind::Logon => "logon",
            CommandKind::Publish => "publish",
            CommandKind::DeltaPublish => "delta_publish",
            CommandKind::Subscribe => "subscribe",
            CommandKind::DeltaSubscribe => "delta_subscribe",
            CommandKind::Unsubscribe => "unsubscribe",
            CommandKind::Sow => "sow",
            CommandKind::SowAndSubscribe => "sow_and_subscribe",
            CommandKind::SowAndDeltaSubscribe => "sow_and_delta_subscribe",
            CommandKind::SowDelete => "sow_delete",
            CommandKind::Flush => "flush",
            CommandKind::Heartbeat => "heartbeat",
            CommandKind::StartTimer => "start_timer",
            CommandKind::StopTimer => "stop_timer",
        }
    }
}

/// One kind of acknowledgement a client can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum AckType {
    /// The command was read.
    Received = 1,
    /// The command was parsed.
    Parsed = 2,
    /// The command was handled; errors are reported here.
    Processed = 4,
    /// The command's effect is durable.
    Persisted = 8,
    /// A query or replay finished.
    Completed = 16,
    /// Counters for a query or delete.
    Stats = 32,
}

impl AckType {
    /// Every ack type, in the order acks are sent.
    pub const ALL: [AckType; 6] = [
        AckType::Received,
        AckType::Parsed,
        AckType::Processed,
        AckType::Persisted,
        AckType::Completed,
        AckType::Stats,
    ];

    /// The word used in the `a` field.
    pub fn as_str(self) -> &'static str {
        match self {
            AckType::Received => "received",
            AckType::Parsed => "parsed",
            AckType::Processed => "processed",
            AckType::Persisted => "persisted",
            AckType::Completed => "completed",
            AckType::Stats => "stats",
        }
    }
}

/// The set of ack types a command asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AckTypes(u8);

impl AckTypes {
    /// No acks requested.
    pub const NONE: AckTypes = AckTypes(0);

    /// Reads the comma list of the `a` field; unknown words are ignored (newer clients may send
    /// types this server does not produce, and asking for them must not fail the command).
    pub fn parse(list: &[u8]) -> AckTypes {
        let mut set = 0u8;
        for word in list.split(|&byte| byte == b',') {
            if let Some(ack) = AckType::ALL
                .iter()
                .find(|ack| ack.as_str().as_bytes() == word)
            {
                set |= *ack as u8;
            }
        }
        AckTypes(set)
    }

    /// Whether `ack` was requested.
    pub fn contains(self, ack: AckType) -> bool {
        self.0 & ack as u8 != 0
    }

    /// Adds `ack` to the set.
    pub fn with(self, ack: AckType) -> AckTypes {
        AckTypes(self.0 | ack as u8)
    }

    /// The requested types in sending order.
    pub fn iter(self) -> impl Iterator<Item = AckType> {
        AckType::ALL
            .into_iter()
            .filter(move |ack| self.contains(*ack))
    }
}

/// Options from the `o` field that change how a command behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Options {
    /// `replace`: swap an existing subscription's topic/filter in place.
    pub replace: bool,
    /// `pause`: stop deliveries to the named subscription(s).
    pub pause: bool,
    /// `resume`: restart deliveries to paused subscription(s).
    pub resume: bool,
    /// `timestamp`: deliveries carry `ts`.
    pub timestamp: bool,
    /// `oof`: out-of-focus notifications (SOW).
    pub oof: bool,
    /// `no_empties`: suppress empty delta messages.
    pub no_empties: bool,
    /// `send_keys`: deliveries carry SOW keys.
    pub send_keys: bool,
    /// `live`: deliver before persistence.
    pub live: bool,
    /// `no_sowkey`: omit SOW keys from deliveries.
    pub no_sowkey: bool,
    /// `start,<seconds>` on heartbeat: the client's heartbeat interval.
    pub heartbeat_start_seconds: Option<u64>,
    /// `beat` on heartbeat.
    pub beat: bool,
    /// `non_regex_topic`: the topic is a literal name even if it contains regex characters.
    pub non_regex_topic: bool,
    /// An option this server does not know, kept so the caller can name it in a failure ack.
    pub unknown: bool,
}

impl Options {
    /// Reads the comma list of the `o` field. `start,<n>` is the heartbeat form.
    pub fn parse(list: &[u8]) -> Options {
        let mut options = Options::default();
        let mut words = list.split(|&byte| byte == b',').peekable();
        while let Some(word) = words.next() {
            let word = word.trim_ascii();
            match word {
                b"" => {}
                b"replace" => options.replace = true,
                b"pause" => options.pause = true,
                b"resume" => options.resume = true,
                b"timestamp" => options.timestamp = true,
                b"oof" => options.oof = true,
                b"no_empties" => options.no_empties = true,
                b"send_keys" => options.send_keys = true,
                b"live" => options.live = true,
                b"no_sowkey" => options.no_sowkey = true,
                b"beat" => options.beat = true,
                b"non_regex_topic" => options.non_regex_topic = true,
                b"start" => {
                    let seconds = words
                        .peek()
                        .and_then(|next| super::header::parse_u64(next.trim_ascii()));
                    if seconds.is_some() {
                        words.next();
                    }
                    options.heartbeat_start_seconds = Some(seconds.unwrap_or(0));
                }
                // Query and backlog tuning options are accepted and ignored until the SOW and
                // queues exist; they never change which messages a subscription receives.
                _ if word.contains(&b'=') => {}
                b"send_oof" | b"cancel" | b"expire" | b"fully_durable" => {}
                _ => options.unknown = true,
            }
        }
        options
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_words_in_both_publish_spellings() {
        assert_eq!(CommandKind::parse(b"p"), Some(CommandKind::Publish));
        assert_eq!(CommandKind::parse(b"publish"), Some(CommandKind::Publish));
        assert_eq!(
            CommandKind::parse(b"sow_and_delta_subscribe"),
            Some(CommandKind::SowAndDeltaSubscribe)
        );
        assert_eq!(CommandKind::parse(b"bogus"), None);
        for kind in [
            CommandKind::Logon,
            CommandKind::SowDelete,
            CommandKind::Heartbeat,
        ] {
            assert_eq!(CommandKind::parse(kind.as_str().as_bytes()), Some(kind));
        }
    }

    #[test]
    fn ack_lists() {
        let acks = AckTypes::parse(b"processed,completed,stats,nonsense");
        assert!(acks.contains(AckType::Processed));
        assert!(acks.contains(AckType::Completed));
        assert!(!acks.contains(AckType::Received));
        assert_eq!(
            acks.iter().collect::<Vec<_>>(),
            [AckType::Processed, AckType::Completed, AckType::Stats]
        );
        assert_eq!(AckTypes::parse(b""), AckTypes::NONE);
    }

    #[test]
    fn option_lists() {
        let options = Options::parse(b"oof,no_empties,top_n=5");
        assert!(options.oof && options.no_empties && !options.unknown);
        assert_eq!(Options::parse(b"start,1").heartbeat_start_seconds, Some(1));
        assert!(Options::parse(b"beat").beat);
        assert!(Options::parse(b"frobnicate").unknown);
    }
}
