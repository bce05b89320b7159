//! Out-of-focus decisions: what a subscription with the `oof` option is told when a record it
//! saw changes, leaves or expires.
//!
//! A subscriber has "seen" a record when the record matched its filter (no filter: every record
//! matches). An update that makes a seen record stop matching yields `oof` with reason `match`
//! (sent with the new data); a deletion of a seen record yields `deleted` and an expiration
//! `expired` (sent with the old data). This module decides; `protocol::sow_reply` writes.

use super::record::RecordView;
use crate::filter::{Filter, MessageContext};

/// Why a record left a subscription's focus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OofReason {
    /// An update made it stop matching the filter.
    Match,
    /// It was deleted (`sow_delete`).
    Deleted,
    /// It expired.
    Expired,
}

impl OofReason {
    /// The `reason` field's text.
    pub fn as_str(self) -> &'static str {
        match self {
            OofReason::Match => "match",
            OofReason::Deleted => "deleted",
            OofReason::Expired => "expired",
        }
    }
}

/// What one subscription does with one SOW update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateAction {
    /// The new record matches: deliver it.
    Deliver,
    /// It matched before and no longer does: send `oof` with reason `match` (if the subscription
    /// asked for `oof`; otherwise nothing).
    Oof,
    /// It neither matches now nor did before: nothing.
    Ignore,
}

/// Whether `record` matches `filter` (absent filter: yes), with the record's context.
pub fn record_matches(filter: Option<&Filter>, topic: &[u8], record: &RecordView<'_>) -> bool {
    let Some(filter) = filter else { return true };
    let wire_key = record.key.wire();
    let context = MessageContext {
        topic,
        correlation_id: record.correlation_id,
        bookmark: None,
        sow_key: Some(wire_key.as_bytes()),
        client_name: None,
    };
    filter.matches(record.payload, &context)
}

/// Decides what a subscription does when `current` replaces `previous` (`None`: a new record).
pub fn on_update(
    filter: Option<&Filter>,
    topic: &[u8],
    previous: Option<&RecordView<'_>>,
    current: &RecordView<'_>,
) -> UpdateAction {
    if record_matches(filter, topic, current) {
        UpdateAction::Deliver
    } else if previous.is_some_and(|previous| record_matches(filter, topic, previous)) {
        UpdateAction::Oof
    } else {
        UpdateAction::Ignore
    }
}

/// Decides whether a subscription is told that `removed` left the SOW for `reason`
/// ([`OofReason::Deleted`] or [`OofReason::Expired`]): yes when the record matched its filter.
pub fn on_removal(
    filter: Option<&Filter>,
    topic: &[u8],
    removed: &RecordView<'_>,
    reason: OofReason,
) -> Option<OofReason> {
    assert!(
        reason != OofReason::Match,
        "a removal is deleted or expired"
    );
    record_matches(filter, topic, removed).then_some(reason)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sow::key::SowKey;
    use crate::sow::record::Bookmark;

    fn view<'a>(key: &'a SowKey, payload: &'a [u8]) -> RecordView<'a> {
        RecordView {
            key: key.as_ref(),
            payload,
            bookmark: Bookmark::default(),
            timestamp_unix_ns: 0,
            correlation_id: None,
            expiration_unix_ns: None,
        }
    }

    #[test]
    fn updates_deliver_oof_or_ignore() {
        let key = SowKey::explicit(b"k");
        let filter = Filter::compile("/qty > 5").unwrap();
        let big = view(&key, br#"{"qty":9}"#);
        let small = view(&key, br#"{"qty":1}"#);
        let f = Some(&filter);
        assert_eq!(
            on_update(f, b"t", Some(&small), &big),
            UpdateAction::Deliver
        );
        assert_eq!(on_update(f, b"t", Some(&big), &small), UpdateAction::Oof);
        assert_eq!(
            on_update(f, b"t", Some(&small), &small),
            UpdateAction::Ignore
        );
        assert_eq!(on_update(f, b"t", None, &small), UpdateAction::Ignore);
        assert_eq!(
            on_update(None, b"t", Some(&big), &small),
            UpdateAction::Deliver
        );
        assert_eq!(OofReason::Match.as_str(), "match");
    }

    #[test]
    fn removals_are_reported_to_subscribers_that_saw_the_record() {
        let key = SowKey::explicit(b"k");
        let filter = Filter::compile("/qty > 5").unwrap();
        let big = view(&key, br#"{"qty":9}"#);
        let small = view(&key, br#"{"qty":1}"#);
        assert_eq!(
            on_removal(Some(&filter), b"t", &big, OofReason::Deleted),
            Some(OofReason::Deleted)
        );
        assert_eq!(
            on_removal(Some(&filter), b"t", &small, OofReason::Expired),
            None
        );
        assert_eq!(
            on_removal(None, b"t", &small, OofReason::Expired),
            Some(OofReason::Expired)
        );
        let by_key = Filter::compile("SOW_KEY() = 'k'").unwrap();
        assert!(
            record_matches(Some(&by_key), b"t", &small),
            "context functions see the wire key"
        );
    }
}
