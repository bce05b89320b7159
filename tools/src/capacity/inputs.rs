//! Where each capacity input comes from: a flag, the workload file, the appliance config, or a default.
//!
//! Precedence is flag > workload file > config > default, and every resolved value remembers its
//! source so the report can show it: a plan is only trustworthy when the reader can see which
//! numbers were given and which were assumed. The workload file uses the flag names as keys; an
//! unknown key is an error, since a misspelt key would silently plan with a default.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::formulas::Workload;
use super::units::{self, UnitError};
use crate::config::{ApplianceConfig, ConfigError};

/// Slab size assumed when none is given.
pub const SLAB_SIZE_DEFAULT_BYTES: u64 = 1 << 20;

/// Where a resolved input came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A command-line flag.
    Flag,
    /// The `--workload` file.
    Workload,
    /// The appliance `--config`.
    Config,
    /// This machine (CPU count).
    Host,
    /// Nothing given: the documented default.
    Default,
}

/// Why the inputs could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The appliance config could not be used.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The workload file could not be read.
    #[error("cannot read workload {path}: {source}")]
    WorkloadRead {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The workload file is not TOML.
    #[error("workload {path} is not valid TOML: {source}")]
    WorkloadParse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        source: toml::de::Error,
    },
    /// A workload key has a value of the wrong shape.
    #[error("workload {path}: `{key}`: {reason}")]
    WorkloadValue {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A workload key is not an input.
    #[error("workload {path}: unknown key `{key}`; known keys: {known}")]
    WorkloadKey {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// Every accepted key.
        known: String,
    },
    /// A headroom below 100% would provision less than the estimate.
    #[error("headroom {percent}% would provision less than the estimate; use 100 or more (200 for critical systems)")]
    HeadroomTooLow {
        /// The percent given.
        percent: u32,
    },
    /// S was given nowhere.
    #[error("the average message size S is required: --message-size SIZE, or `message-size` in the workload file")]
    MessageSizeMissing,
}

/// How a workload-file value is parsed.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Bytes,
    Count,
    Rate,
    Ratio,
    Percent,
}

/// Every input key, its kind, and its symbol in the formulas.
pub const KEYS: [(&str, &str); 15] = [
    ("message-size", "S"),
    ("sow-messages", "M"),
    ("clients", "C"),
    ("client-memory", "TMemLimit"),
    ("journal-size", "J"),
    ("queued-messages", "Q"),
    ("cores", "Cores"),
    ("slab-size", "SlabSize"),
    ("retained-messages", "N"),
    ("publish-rate", "R"),
    ("match-ratio", "Mr"),
    ("subscriptions", "Ns"),
    ("query-records", "Mq"),
    ("query-rate", "Qs"),
    ("headroom", "%"),
];

fn kind_of(key: &str) -> Kind {
    match key {
        "message-size" | "client-memory" | "journal-size" | "slab-size" => Kind::Bytes,
        "publish-rate" | "query-rate" => Kind::Rate,
        "match-ratio" => Kind::Ratio,
        "headroom" => Kind::Percent,
        _ => Kind::Count,
    }
}

/// A parsed workload-file value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    /// A whole number (bytes, counts, percent).
    Whole(u64),
    /// A real number (rates per second, ratios).
    Real(f64),
}

/// The workload file: input key to value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkloadFile {
    values: Vec<(&'static str, Number)>,
}

impl WorkloadFile {
    fn whole(&self, key: &str) -> Option<u64> {
        self.values
            .iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, value)| match value {
                Number::Whole(n) => Some(*n),
                Number::Real(_) => None,
            })
    }

    fn real(&self, key: &str) -> Option<f64> {
        self.values
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, value)| match value {
                Number::Whole(n) => *n as f64,
                Number::Real(x) => *x,
            })
    }
}

/// Reads a workload file.
pub fn load_workload(path: &Path) -> Result<WorkloadFile, InputError> {
    let text = std::fs::read_to_string(path).map_err(|source| InputError::WorkloadRead {
        path: path.to_path_buf(),
        source,
    })?;
    parse_workload(&text, path)
}

/// Parses workload text; keys are the flag names (`sow-messages`, or `sow_messages`).
pub fn parse_workload(text: &str, path: &Path) -> Result<WorkloadFile, InputError> {
    let table: toml::Table = toml::from_str(text).map_err(|source| InputError::WorkloadParse {
        path: path.to_path_buf(),
        source,
    })?;
    let mut file = WorkloadFile::default();
    for (raw_key, value) in &table {
        let normalized = raw_key.replace('_', "-");
        let Some((key, _)) = KEYS.iter().find(|(key, _)| *key == normalized) else {
            return Err(InputError::WorkloadKey {
                path: path.to_path_buf(),
                key: raw_key.clone(),
                known: KEYS
                    .iter()
                    .map(|(key, _)| *key)
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        let bad = |reason: String| InputError::WorkloadValue {
            path: path.to_path_buf(),
            key: raw_key.clone(),
            reason,
        };
        let number = parse_value(kind_of(key), value).map_err(|err| bad(err.to_string()))?;
        file.values.push((key, number));
    }
    Ok(file)
}

/// Numbers are taken as base units (bytes, per second); strings go through the unit parsers.
fn parse_value(kind: Kind, value: &toml::Value) -> Result<Number, UnitError> {
    let text = match value {
        toml::Value::String(text) => text.clone(),
        toml::Value::Integer(n) => n.to_string(),
        toml::Value::Float(x) => x.to_string(),
        other => {
            return Err(UnitError {
                text: other.to_string(),
                expected: "a number or a string with a unit",
            })
        }
    };
    Ok(match kind {
        Kind::Bytes => Number::Whole(units::parse_bytes(&text)?),
        Kind::Count => Number::Whole(units::parse_count(&text)?),
        Kind::Percent => Number::Whole(units::parse_percent(&text)?.into()),
        Kind::Rate => Number::Real(units::parse_rate(&text)?),
        Kind::Ratio => Number::Real(units::parse_ratio(&text)?),
    })
}

/// One resolved input, for the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Input {
    /// Flag name.
    pub key: &'static str,
    /// Symbol in the formulas.
    pub symbol: &'static str,
    /// Where the value came from.
    pub source: Source,
}

/// The workload the formulas run on, with the source of every value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Resolved {
    /// Values in base units.
    pub workload: Workload,
    /// Percent of each estimate to provision.
    pub headroom_percent: u32,
    /// Source of each input, in `KEYS` order.
    pub inputs: Vec<Input>,
}

/// The flag values, as clap parsed them (`None` = not given).
#[derive(Debug, Clone, Default)]
pub struct Flags {
    /// `--message-size`.
    pub message_size: Option<u64>,
    /// `--sow-messages`.
    pub sow_messages: Option<u64>,
    /// `--clients`.
    pub clients: Option<u64>,
    /// `--client-memory`.
    pub client_memory: Option<u64>,
    /// `--journal-size`.
    pub journal_size: Option<u64>,
    /// `--queued-messages`.
    pub queued_messages: Option<u64>,
    /// `--cores`.
    pub cores: Option<u64>,
    /// `--slab-size`.
    pub slab_size: Option<u64>,
    /// `--retained-messages`.
    pub retained_messages: Option<u64>,
    /// `--publish-rate`.
    pub publish_rate: Option<f64>,
    /// `--match-ratio`.
    pub match_ratio: Option<f64>,
    /// `--subscriptions`.
    pub subscriptions: Option<u64>,
    /// `--query-records`.
    pub query_records: Option<u64>,
    /// `--query-rate`.
    pub query_rate: Option<f64>,
    /// `--headroom`.
    pub headroom: Option<u32>,
}

/// Resolves every input by precedence: flag, workload file, config, host, default.
pub fn resolve(
    flags: &Flags,
    file: &WorkloadFile,
    config: Option<&ApplianceConfig>,
    host_cores: u64,
) -> Result<Resolved, InputError> {
    if flags.message_size.is_none() && file.whole("message-size").is_none() {
        return Err(InputError::MessageSizeMissing);
    }
    let mut inputs = Vec::new();
    let from_config = |value: Option<u64>| value.map(|n| (n, Source::Config));
    let config_cores = config
        .and_then(|c| c.cores.as_ref())
        .map(|cores| (cores.len() as u64, Source::Config));

    let workload = Workload {
        message_size_bytes: pick(
            "message-size",
            flags.message_size,
            file.whole("message-size"),
            None,
            0,
            &mut inputs,
        ),
        sow_messages: pick(
            "sow-messages",
            flags.sow_messages,
            file.whole("sow-messages"),
            None,
            0,
            &mut inputs,
        ),
        clients: pick(
            "clients",
            flags.clients,
            file.whole("clients"),
            from_config(config.and_then(|c| c.max_clients)),
            0,
            &mut inputs,
        ),
        client_memory_bytes: pick(
            "client-memory",
            flags.client_memory,
            file.whole("client-memory"),
            None,
            0,
            &mut inputs,
        ),
        journal_size_bytes: pick(
            "journal-size",
            flags.journal_size,
            file.whole("journal-size"),
            from_config(config.and_then(|c| c.journal_size_bytes)),
            0,
            &mut inputs,
        ),
        queued_messages: pick(
            "queued-messages",
            flags.queued_messages,
            file.whole("queued-messages"),
            None,
            0,
            &mut inputs,
        ),
        cores: pick(
            "cores",
            flags.cores,
            file.whole("cores"),
            config_cores.or(Some((host_cores, Source::Host))),
            0,
            &mut inputs,
        ),
        slab_size_bytes: pick(
            "slab-size",
            flags.slab_size,
            file.whole("slab-size"),
            None,
            SLAB_SIZE_DEFAULT_BYTES,
            &mut inputs,
        ),
        retained_messages: pick(
            "retained-messages",
            flags.retained_messages,
            file.whole("retained-messages"),
            None,
            0,
            &mut inputs,
        ),
        publish_rate_per_second: pick(
            "publish-rate",
            flags.publish_rate,
            file.real("publish-rate"),
            None,
            0.0,
            &mut inputs,
        ),
        match_ratio: pick(
            "match-ratio",
            flags.match_ratio,
            file.real("match-ratio"),
            None,
            0.0,
            &mut inputs,
        ),
        subscriptions: pick(
            "subscriptions",
            flags.subscriptions,
            file.whole("subscriptions"),
            None,
            0,
            &mut inputs,
        ),
        query_records: pick(
            "query-records",
            flags.query_records,
            file.whole("query-records"),
            None,
            0,
            &mut inputs,
        ),
        query_rate_per_second: pick(
            "query-rate",
            flags.query_rate,
            file.real("query-rate"),
            None,
            0.0,
            &mut inputs,
        ),
    };
    let file_headroom = file
        .whole("headroom")
        .map(|percent| u32::try_from(percent).unwrap_or(u32::MAX));
    let headroom_percent = pick(
        "headroom",
        flags.headroom,
        file_headroom,
        None,
        super::HEADROOM_DEFAULT_PERCENT,
        &mut inputs,
    );
    if headroom_percent < 100 {
        return Err(InputError::HeadroomTooLow {
            percent: headroom_percent,
        });
    }
    Ok(Resolved {
        workload,
        headroom_percent,
        inputs,
    })
}

/// One input by precedence: flag, then workload file, then a fallback with its source, then the default.
fn pick<T>(
    key: &'static str,
    flag: Option<T>,
    file: Option<T>,
    fallback: Option<(T, Source)>,
    default: T,
    inputs: &mut Vec<Input>,
) -> T {
    let (value, source) = match (flag, file, fallback) {
        (Some(value), _, _) => (value, Source::Flag),
        (None, Some(value), _) => (value, Source::Workload),
        (None, None, Some((value, source))) => (value, source),
        (None, None, None) => (default, Source::Default),
    };
    let symbol = KEYS
        .iter()
        .find(|(k, _)| *k == key)
        .map_or("?", |(_, symbol)| *symbol);
    inputs.push(Input {
        key,
        symbol,
        source,
    });
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_file_accepts_units_and_both_key_styles() {
        let text = r#"
            message-size = "1KiB"
            sow_messages = "20M"
            client-memory = "10GB"
            journal-size = 1000000000
            publish-rate = "5k/s"
            match-ratio = "2%"
            query-rate = "5/min"
            headroom = 300
        "#;
        let file = parse_workload(text, Path::new("w.toml")).unwrap();
        assert_eq!(file.whole("message-size"), Some(1024));
        assert_eq!(file.whole("sow-messages"), Some(20_000_000));
        assert_eq!(file.whole("client-memory"), Some(10_000_000_000));
        assert_eq!(file.whole("journal-size"), Some(1_000_000_000));
        assert_eq!(file.real("publish-rate"), Some(5000.0));
        assert_eq!(file.real("match-ratio"), Some(0.02));
        assert_eq!(file.real("query-rate"), Some(5.0 / 60.0));
        assert_eq!(file.whole("headroom"), Some(300));
    }

    #[test]
    fn workload_file_rejects_unknown_keys_and_bad_values() {
        assert!(matches!(
            parse_workload("sow-message = 5", Path::new("w")),
            Err(InputError::WorkloadKey { .. })
        ));
        assert!(matches!(
            parse_workload("message-size = \"big\"", Path::new("w")),
            Err(InputError::WorkloadValue { .. })
        ));
        assert!(matches!(
            parse_workload("match-ratio = 2.0", Path::new("w")),
            Err(InputError::WorkloadValue { .. })
        ));
        assert!(matches!(
            parse_workload("clients = [1]", Path::new("w")),
            Err(InputError::WorkloadValue { .. })
        ));
    }

    #[test]
    fn precedence_is_flag_then_file_then_config_then_default() {
        let file = parse_workload("message-size = 600\nclients = 50\n", Path::new("w")).unwrap();
        let config = crate::config::parse("[limits]\nmax_clients = 70\n[journal]\nsize_bytes = 4096\n[runtime]\ncores = [0, 1, 2]\n", Path::new("/c.toml")).unwrap();
        let flags = Flags {
            clients: Some(10),
            ..Flags::default()
        };
        let resolved = resolve(&flags, &file, Some(&config), 8).unwrap();
        let source = |key: &str| {
            resolved
                .inputs
                .iter()
                .find(|input| input.key == key)
                .unwrap()
                .source
        };
        assert_eq!(resolved.workload.clients, 10);
        assert_eq!(source("clients"), Source::Flag);
        assert_eq!(resolved.workload.message_size_bytes, 600);
        assert_eq!(source("message-size"), Source::Workload);
        assert_eq!(resolved.workload.journal_size_bytes, 4096);
        assert_eq!(source("journal-size"), Source::Config);
        assert_eq!(resolved.workload.cores, 3);
        assert_eq!(resolved.workload.slab_size_bytes, SLAB_SIZE_DEFAULT_BYTES);
        assert_eq!(source("slab-size"), Source::Default);
        assert_eq!(resolved.headroom_percent, 200);
        let keys: Vec<_> = resolved.inputs.iter().map(|input| input.key).collect();
        assert_eq!(keys, KEYS.iter().map(|(key, _)| *key).collect::<Vec<_>>());

        let without_config = resolve(
            &Flags {
                message_size: Some(1),
                ..Flags::default()
            },
            &WorkloadFile::default(),
            None,
            8,
        )
        .unwrap();
        assert_eq!(without_config.workload.cores, 8);
        assert_eq!(
            without_config
                .inputs
                .iter()
                .find(|input| input.key == "cores")
                .unwrap()
                .source,
            Source::Host
        );
    }

    #[test]
    fn message_size_is_required_and_headroom_at_least_100() {
        assert!(matches!(
            resolve(&Flags::default(), &WorkloadFile::default(), None, 1),
            Err(InputError::MessageSizeMissing)
        ));
        let flags = Flags {
            message_size: Some(1),
            headroom: Some(50),
            ..Flags::default()
        };
        assert!(matches!(
            resolve(&flags, &WorkloadFile::default(), None, 1),
            Err(InputError::HeadroomTooLow { percent: 50 })
        ));
    }
}
