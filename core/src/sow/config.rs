//! SOW topic configuration: what the lead's TOML maps to, checked once at start-up.
//!
//! This module only describes and validates; it never reads files.

use std::time::Duration;

use super::record::RECORD_HEADER_BYTES;
use super::{MESSAGE_BYTES_MIN_LIMIT, SLAB_SIZE_BYTES_DEFAULT};

/// Smallest slab accepted: a slab must hold a few hundred small records to be worth having.
pub const SLAB_SIZE_BYTES_MIN: usize = 64 * 1024;
/// Largest slab accepted: record offsets inside a slab are 32-bit.
pub const SLAB_SIZE_BYTES_MAX: usize = 1 << 31;
/// Most key fields one topic may declare.
pub const KEY_FIELDS_MAX: usize = 16;

/// Whether a topic's records survive a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Memory only: lost on restart.
    #[default]
    Transient,
    /// Snapshotted and rebuilt from storage on restart.
    Persistent,
}

impl Durability {
    /// Parses the configuration spelling (`transient` | `persistent`).
    pub fn parse(text: &str) -> Option<Durability> {
        match text {
            "transient" => Some(Durability::Transient),
            "persistent" => Some(Durability::Persistent),
            _ => None,
        }
    }
}

/// One SOW topic as declared in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SowTopicConfig {
    /// Exact topic name.
    pub topic: String,
    /// Key field paths, e.g. `["/id"]` or `["/sym", "/venue"]`; empty means the publisher must send
    /// an explicit `k` header with every message.
    pub key_fields: Vec<String>,
    /// Size of each slab the topic's records are stored in, in bytes.
    pub slab_size_bytes: usize,
    /// Whether records survive a restart.
    pub durability: Durability,
    /// Default lifetime of a record when the publish carries no `e` header; `None` = forever.
    pub expiration: Option<Duration>,
}

/// Why a SOW topic configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The topic name is empty.
    #[error("SOW topic name is empty; give each [[sow]] entry a topic")]
    EmptyTopic,
    /// The slab size is outside the accepted range.
    #[error("SOW topic {topic}: slab_size {slab_size_bytes} bytes is outside {min}..={max} bytes")]
    SlabSize {
        /// The topic.
        topic: String,
        /// The configured size.
        slab_size_bytes: usize,
        /// Smallest accepted.
        min: usize,
        /// Largest accepted.
        max: usize,
    },
    /// A key field path is malformed.
    #[error("SOW topic {topic}: key field {field:?} is not a path like /id or /order/id")]
    BadKeyField {
        /// The topic.
        topic: String,
        /// The field as written.
        field: String,
    },
    /// The same key field is listed twice.
    #[error("SOW topic {topic}: key field {field} is listed twice")]
    DuplicateKeyField {
        /// The topic.
        topic: String,
        /// The repeated field.
        field: String,
    },
    /// Too many key fields.
    #[error("SOW topic {topic}: {count} key fields, the limit is {limit}")]
    TooManyKeyFields {
        /// The topic.
        topic: String,
        /// Fields given.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// An expiration of zero would delete every record as it is written.
    #[error(
        "SOW topic {topic}: expiration must be longer than zero (omit it to keep records forever)"
    )]
    ZeroExpiration {
        /// The topic.
        topic: String,
    },
}

impl SowTopicConfig {
    /// A transient topic with the default slab size, no expiration and the given key fields.
    pub fn new(topic: &str, key_fields: &[&str]) -> SowTopicConfig {
        SowTopicConfig {
            topic: topic.to_owned(),
            key_fields: key_fields.iter().map(|field| (*field).to_owned()).collect(),
            slab_size_bytes: SLAB_SIZE_BYTES_DEFAULT,
            durability: Durability::Transient,
            expiration: None,
        }
    }

    /// Checks every field; the store refuses a configuration that does not pass.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.topic.is_empty() {
            return Err(ConfigError::EmptyTopic);
        }
        if !(SLAB_SIZE_BYTES_MIN..=SLAB_SIZE_BYTES_MAX).contains(&self.slab_size_bytes) {
            return Err(ConfigError::SlabSize {
                topic: self.topic.clone(),
                slab_size_bytes: self.slab_size_bytes,
                min: SLAB_SIZE_BYTES_MIN,
                max: SLAB_SIZE_BYTES_MAX,
            });
        }
        if self.key_fields.len() > KEY_FIELDS_MAX {
            return Err(ConfigError::TooManyKeyFields {
                topic: self.topic.clone(),
                count: self.key_fields.len(),
                limit: KEY_FIELDS_MAX,
            });
        }
        for (index, field) in self.key_fields.iter().enumerate() {
            if super::key::parse_key_path(field).is_none() {
                return Err(ConfigError::BadKeyField {
                    topic: self.topic.clone(),
                    field: field.clone(),
                });
            }
            if self.key_fields[..index].contains(field) {
                return Err(ConfigError::DuplicateKeyField {
                    topic: self.topic.clone(),
                    field: field.clone(),
                });
            }
        }
        if self.expiration == Some(Duration::ZERO) {
            return Err(ConfigError::ZeroExpiration {
                topic: self.topic.clone(),
            });
        }
        Ok(())
    }

    /// The largest payload a record may carry: the slab size less the record header, but never
    /// less than 1 MiB (larger records get a slab of their own).
    pub fn message_bytes_max(&self) -> usize {
        self.slab_size_bytes
            .saturating_sub(RECORD_HEADER_BYTES)
            .max(MESSAGE_BYTES_MIN_LIMIT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_problem() {
        assert!(SowTopicConfig::new("orders", &["/id"]).validate().is_ok());
        assert!(SowTopicConfig::new("orders", &[]).validate().is_ok());
        assert_eq!(
            SowTopicConfig::new("", &["/id"]).validate(),
            Err(ConfigError::EmptyTopic)
        );
        let bad = SowTopicConfig::new("o", &["id"]).validate().unwrap_err();
        assert!(bad.to_string().contains("\"id\""), "{bad}");
        assert!(matches!(
            SowTopicConfig::new("o", &["/a", "/a"]).validate(),
            Err(ConfigError::DuplicateKeyField { .. })
        ));
        let mut small = SowTopicConfig::new("o", &["/id"]);
        small.slab_size_bytes = 10;
        assert!(small
            .validate()
            .unwrap_err()
            .to_string()
            .contains("slab_size 10 bytes"));
        let mut zero = SowTopicConfig::new("o", &["/id"]);
        zero.expiration = Some(Duration::ZERO);
        assert!(zero.validate().is_err());
        assert_eq!(
            Durability::parse("persistent"),
            Some(Durability::Persistent)
        );
        assert_eq!(Durability::parse("durable"), None);
    }

    #[test]
    fn message_limit_is_never_below_one_mebibyte() {
        let mut config = SowTopicConfig::new("o", &["/id"]);
        assert_eq!(config.message_bytes_max(), MESSAGE_BYTES_MIN_LIMIT);
        config.slab_size_bytes = 4 << 20;
        assert_eq!(config.message_bytes_max(), (4 << 20) - RECORD_HEADER_BYTES);
        config.slab_size_bytes = 64 * 1024;
        assert_eq!(config.message_bytes_max(), MESSAGE_BYTES_MIN_LIMIT);
    }
}
