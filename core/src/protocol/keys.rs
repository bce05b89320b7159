//! Header keys in every spelling a client may send.
//!
//! The clients send some keys short (`c`, `t`, `a`) and others long (`batch_size`, `sub_id`,
//! `bookmark`); the JavaScript client differs from the Python one. The server accepts both forms
//! of every key and always writes the short form the C client's scanner recognises.

/// A header field the server understands; all other keys are skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Key {
    /// `c` / `cmd`: the command word.
    Command,
    /// `cid` / `cmd_id`: the client's command id, echoed in acks.
    CommandId,
    /// `a` / `ack_type`: requested ack types.
    AckType,
    /// `t` / `topic`.
    Topic,
    /// `f` / `filter`: content filter expression.
    Filter,
    /// `o` / `opts`: comma-separated options.
    Options,
    /// `sub_id`: subscription id.
    SubId,
    /// `sids` / `sub_ids`: subscription ids (unsubscribe lists).
    SubIds,
    /// `query_id`.
    QueryId,
    /// `bm` / `bookmark`.
    Bookmark,
    /// `s` / `seq`: publish-store sequence.
    Sequence,
    /// `k` / `sow_key`.
    SowKey,
    /// `sow_keys`.
    SowKeys,
    /// `bs` / `batch_size`.
    BatchSize,
    /// `top_n`.
    TopN,
    /// `orderby`.
    OrderBy,
    /// `x` / `correlation_id`.
    CorrelationId,
    /// `e` / `expiration`.
    Expiration,
    /// `mt`: message type.
    MessageType,
    /// `client_name`.
    ClientName,
    /// `user_id`.
    UserId,
    /// `pw` / `password`.
    Password,
    /// `version`: client version at logon.
    Version,
    /// `l` / `msg_len`.
    MessageLength,
}

/// Number of distinct [`Key`]s; sizes the parsed header's value table.
pub const KEY_COUNT: usize = Key::MessageLength as usize + 1;

/// Maps a key as sent on the wire to the field it names.
pub fn lookup(name: &[u8]) -> Option<Key> {
    Some(match name {
        b"c" | b"cmd" => Key::Command,
        b"cid" | b"cmd_id" => Key::CommandId,
        b"a" | b"ack_type" => Key::AckType,
        b"t" | b"topic" => Key::Topic,
        b"f" | b"filter" => Key::Filter,
        b"o" | b"opts" | b"options" => Key::Options,
        b"sub_id" | b"sid" => Key::SubId,
        b"sids" | b"sub_ids" => Key::SubIds,
        b"query_id" | b"qid" => Key::QueryId,
        b"bm" | b"bookmark" => Key::Bookmark,
        b"s" | b"seq" => Key::Sequence,
        b"k" | b"sow_key" => Key::SowKey,
        b"sow_keys" => Key::SowKeys,
        b"bs" | b"batch_size" => Key::BatchSize,
        b"top_n" => Key::TopN,
        b"orderby" => Key::OrderBy,
        b"x" | b"correlation_id" => Key::CorrelationId,
        b"e" | b"expiration" => Key::Expiration,
        b"mt" | b"message_type" => Key::MessageType,
        b"client_name" => Key::ClientName,
        b"user_id" => Key::UserId,
        b"pw" | b"password" => Key::Password,
        b"version" => Key::Version,
        b"l" | b"msg_len" => Key::MessageLength,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_long_spellings_name_the_same_key() {
        let pairs: [(&[u8], &[u8]); 10] = [
            (b"c", b"cmd"),
            (b"cid", b"cmd_id"),
            (b"a", b"ack_type"),
            (b"t", b"topic"),
            (b"f", b"filter"),
            (b"o", b"opts"),
            (b"bm", b"bookmark"),
            (b"s", b"seq"),
            (b"bs", b"batch_size"),
            (b"x", b"correlation_id"),
        ];
        for (short, long) in pairs {
            assert!(lookup(short).is_some());
            assert_eq!(lookup(short), lookup(long));
        }
        assert_eq!(lookup(b"no_such_key"), None);
    }
}
