//! Topic names and topic patterns.
//!
//! A subscription topic containing a regular-expression metacharacter (`^ $ * + ? ( ) [ ] { } | \`)
//! is a pattern matched as an unanchored regular expression against topic names, as AMPS does;
//! anything else is an exact name. A lone `.` does not make a pattern, so dotted names such as
//! `orders.us` stay exact and take the fast path.

use std::sync::Arc;
use thiserror::Error;

/// Longest topic name or pattern accepted, in bytes.
pub const TOPIC_BYTES_MAX: usize = 1024;

/// A topic the server refuses.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TopicError {
    /// No topic, or an empty one.
    #[error("missing or empty topic")]
    Missing,
    /// Longer than [`TOPIC_BYTES_MAX`].
    #[error("topic of {length_bytes} bytes exceeds the maximum of {TOPIC_BYTES_MAX} bytes")]
    TooLong {
        /// The topic's length.
        length_bytes: usize,
    },
    /// A pattern that does not compile.
    #[error("bad regex topic '{pattern}': {reason}")]
    BadRegex {
        /// The pattern as sent.
        pattern: String,
        /// Why it does not compile.
        reason: String,
    },
}

/// What a subscription's topic selects.
#[derive(Debug, Clone)]
pub enum TopicSpec {
    /// One topic by exact name.
    Exact(Arc<[u8]>),
    /// Every topic whose name the pattern finds a match in.
    Pattern(TopicPattern),
}

/// A compiled topic regular expression.
#[derive(Debug, Clone)]
pub struct TopicPattern {
    text: Arc<str>,
    regex: regex::bytes::Regex,
}

impl TopicPattern {
    /// The pattern as the client sent it.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether `topic` is selected by the pattern.
    pub fn matches(&self, topic: &[u8]) -> bool {
        self.regex.is_match(topic)
    }
}

/// Whether `topic` contains a character that makes it a regular expression.
pub fn is_pattern(topic: &[u8]) -> bool {
    topic.iter().any(|byte| b"^$*+?()[]{}|\\".contains(byte))
}

/// Checks a topic name used for publishing.
pub fn check_name(topic: &[u8]) -> Result<(), TopicError> {
    if topic.is_empty() {
        return Err(TopicError::Missing);
    }
    if topic.len() > TOPIC_BYTES_MAX {
        return Err(TopicError::TooLong {
            length_bytes: topic.len(),
        });
    }
    Ok(())
}

impl TopicSpec {
    /// Reads a subscription topic: an exact name or a pattern, compiled once.
    pub fn parse(topic: &[u8]) -> Result<TopicSpec, TopicError> {
        check_name(topic)?;
        if !is_pattern(topic) {
            return Ok(TopicSpec::Exact(Arc::from(topic)));
        }
        let text = String::from_utf8_lossy(topic).into_owned();
        let regex = regex::bytes::RegexBuilder::new(&text)
            .size_limit(1 << 20)
            .build()
            .map_err(|error| TopicError::BadRegex {
                pattern: text.clone(),
                reason: error
                    .to_string()
                    .lines()
                    .last()
                    .unwrap_or("invalid")
                    .trim()
                    .to_string(),
            })?;
        Ok(TopicSpec::Pattern(TopicPattern {
            text: Arc::from(text),
            regex,
        }))
    }

    /// Reads a subscription topic as a literal name, whatever characters it holds (the
    /// `non_regex_topic` option).
    pub fn literal(topic: &[u8]) -> Result<TopicSpec, TopicError> {
        check_name(topic)?;
        Ok(TopicSpec::Exact(Arc::from(topic)))
    }

    /// Whether `topic` is selected.
    pub fn matches(&self, topic: &[u8]) -> bool {
        match self {
            TopicSpec::Exact(name) => **name == *topic,
            TopicSpec::Pattern(pattern) => pattern.matches(topic),
        }
    }

    /// The topic or pattern as text, for logs and errors.
    pub fn display(&self) -> String {
        match self {
            TopicSpec::Exact(name) => String::from_utf8_lossy(name).into_owned(),
            TopicSpec::Pattern(pattern) => pattern.text().to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_names_are_exact_and_metacharacters_make_patterns() {
        assert!(matches!(
            TopicSpec::parse(b"orders.us").unwrap(),
            TopicSpec::Exact(_)
        ));
        let pattern = TopicSpec::parse(br"^orders\..*").unwrap();
        assert!(pattern.matches(b"orders.us"));
        assert!(pattern.matches(b"orders.eu"));
        assert!(!pattern.matches(b"trades"));
        assert!(!pattern.matches(b"xorders.us"));
    }

    #[test]
    fn bad_patterns_and_bad_names_are_refused() {
        assert!(matches!(
            TopicSpec::parse(b"orders.("),
            Err(TopicError::BadRegex { .. })
        ));
        assert_eq!(TopicSpec::parse(b"").unwrap_err(), TopicError::Missing);
        let long = vec![b'a'; TOPIC_BYTES_MAX + 1];
        assert_eq!(
            check_name(&long),
            Err(TopicError::TooLong {
                length_bytes: TOPIC_BYTES_MAX + 1
            })
        );
    }
}
