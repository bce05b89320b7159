//! The publisher dedup table: for each guaranteed publisher (client-name hash), the highest
//! client sequence the journal holds.
//!
//! Owns only that map. It is rebuilt by recovery and updated by `Journal::append`; it never
//! decides what a duplicate means to the protocol (the network layer does) and never does I/O.

use super::record::Publisher;
use std::collections::HashMap;

/// Client-name hash → highest client sequence journaled.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PublisherTable {
    highest: HashMap<u64, u64>,
}

impl PublisherTable {
    /// An empty table with room for `publishers` clients before it grows.
    pub fn with_capacity(publishers: usize) -> PublisherTable {
        PublisherTable {
            highest: HashMap::with_capacity(publishers),
        }
    }

    /// Records that `publisher` sent its `client_sequence` (a zero hash or sequence is ignored).
    pub fn observe(&mut self, publisher: Publisher) {
        if publisher.client_name_hash == 0 || publisher.client_sequence == 0 {
            return;
        }
        let highest = self.highest.entry(publisher.client_name_hash).or_insert(0);
        *highest = (*highest).max(publisher.client_sequence);
    }

    /// The highest client sequence journaled for `client_name_hash`.
    pub fn highest(&self, client_name_hash: u64) -> Option<u64> {
        self.highest.get(&client_name_hash).copied()
    }

    /// Whether `publisher`'s sequence is at or below what is already journaled for it.
    pub fn is_duplicate(&self, publisher: Publisher) -> bool {
        self.highest(publisher.client_name_hash)
            .is_some_and(|highest| publisher.client_sequence <= highest)
    }

    /// Publishers known.
    pub fn len(&self) -> usize {
        self.highest.len()
    }

    /// Whether no publisher is known.
    pub fn is_empty(&self) -> bool {
        self.highest.is_empty()
    }

    /// Every (client-name hash, highest client sequence), in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.highest
            .iter()
            .map(|(hash, sequence)| (*hash, *sequence))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_highest_sequence_per_publisher() {
        let mut table = PublisherTable::with_capacity(4);
        let publisher = |client_sequence| Publisher {
            client_name_hash: 7,
            client_sequence,
        };
        table.observe(publisher(5));
        table.observe(publisher(3));
        table.observe(Publisher {
            client_name_hash: 0,
            client_sequence: 9,
        });
        assert_eq!(table.highest(7), Some(5));
        assert!(table.is_duplicate(publisher(5)) && table.is_duplicate(publisher(1)));
        assert!(!table.is_duplicate(publisher(6)));
        assert_eq!(table.len(), 1);
    }
}
