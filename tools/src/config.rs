//! The few appliance-config keys the tools read, parsed leniently.
//!
//! The appliance's real config schema lives with the server; the tools only need a handful of
//! sizing numbers, so this module reads the TOML into a `toml::Table`, picks out the keys below and
//! ignores everything else. A key that is present with the wrong type is an error (silently
//! ignoring it would size the checks from a default the operator did not ask for). This module
//! never writes the config.
//!
//! Keys read (all optional): `data_dir`, `[runtime] cores`, `[sow] topics` (counted),
//! `[limits] max_clients`, `[journal] size_bytes`, `[journal] preallocated_segments`.

use std::path::{Path, PathBuf};

/// Data directory used when the config names none, resolved against the config's folder.
pub const DATA_DIR_DEFAULT: &str = "tachyon-data";

/// The sizing facts the tools take from an appliance config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplianceConfig {
    /// The file these values came from.
    pub path: PathBuf,
    /// Data directory, already resolved against the config file's folder.
    pub data_dir: PathBuf,
    /// Cores the server is pinned to (`[runtime] cores`), when configured.
    pub cores: Option<Vec<u32>>,
    /// Number of `[[sow.topics]]` tables.
    pub sow_topic_count: u64,
    /// `[limits] max_clients`, when configured.
    pub max_clients: Option<u64>,
    /// `[journal] size_bytes`: the journal's total size on disk, when configured.
    pub journal_size_bytes: Option<u64>,
    /// `[journal] preallocated_segments`: journal files kept open ahead of need, when configured.
    pub journal_preallocated_segments: Option<u64>,
}

/// Why a config file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The config path as given.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("config {path} is not valid TOML: {source}")]
    Parse {
        /// The config path as given.
        path: PathBuf,
        /// The parser's message, with line and column.
        source: toml::de::Error,
    },
    /// A known key has the wrong type or an impossible value.
    #[error("config {path}: `{key}` must be {expected}, found {found}")]
    Type {
        /// The config path as given.
        path: PathBuf,
        /// Dotted key, e.g. `limits.max_clients`.
        key: String,
        /// What the key must hold.
        expected: &'static str,
        /// What it holds instead.
        found: String,
    },
}

/// Reads and parses the config at `path`.
pub fn load(path: &Path) -> Result<ApplianceConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path)
}

/// Parses config `text` as if read from `path` (relative paths resolve against its folder).
pub fn parse(text: &str, path: &Path) -> Result<ApplianceConfig, ConfigError> {
    let table: toml::Table = toml::from_str(text).map_err(|source| ConfigError::Parse {
        path: path.to_path_buf(),
        source,
    })?;
    let reader = Reader {
        path,
        table: &table,
    };

    let base_dir = path.parent().unwrap_or_else(|| Path::new(""));
    let data_dir_text = reader.string("data_dir")?.unwrap_or(DATA_DIR_DEFAULT);
    let data_dir_config = PathBuf::from(data_dir_text);
    // Architecture rule: relative paths in the config resolve against the config's folder.
    let data_dir = if data_dir_config.is_absolute() {
        data_dir_config
    } else {
        base_dir.join(data_dir_config)
    };

    let cores = match reader.get("runtime.cores") {
        None => None,
        Some(value) => {
            let items = value.as_array().ok_or_else(|| {
                reader.type_error("runtime.cores", "an array of core numbers", value)
            })?;
            let mut cores = Vec::with_capacity(items.len());
            for item in items {
                let core = item
                    .as_integer()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| {
                        reader.type_error("runtime.cores", "an array of core numbers", item)
                    })?;
                cores.push(core);
            }
            Some(cores)
        }
    };

    let sow_topic_count = match reader.get("sow.topics") {
        None => 0,
        Some(value) => {
            let items = value.as_array().ok_or_else(|| {
                reader.type_error("sow.topics", "an array of tables ([[sow.topics]])", value)
            })?;
            if let Some(bad) = items.iter().find(|item| !item.is_table()) {
                return Err(reader.type_error(
                    "sow.topics",
                    "an array of tables ([[sow.topics]])",
                    bad,
                ));
            }
            items.len() as u64
        }
    };

    Ok(ApplianceConfig {
        path: path.to_path_buf(),
        data_dir,
        cores,
        sow_topic_count,
        max_clients: reader.count("limits.max_clients")?,
        journal_size_bytes: reader.count("journal.size_bytes")?,
        journal_preallocated_segments: reader.count("journal.preallocated_segments")?,
    })
}

/// Looks dotted keys up in the parsed table and turns type mismatches into `ConfigError::Type`.
struct Reader<'a> {
    path: &'a Path,
    table: &'a toml::Table,
}

impl Reader<'_> {
    fn get(&self, dotted: &str) -> Option<&toml::Value> {
        let mut parts = dotted.split('.');
        let mut value = self.table.get(parts.next()?)?;
        for part in parts {
            value = value.as_table()?.get(part)?;
        }
        Some(value)
    }

    fn string(&self, dotted: &str) -> Result<Option<&str>, ConfigError> {
        match self.get(dotted) {
            None => Ok(None),
            Some(value) => value
                .as_str()
                .map(Some)
                .ok_or_else(|| self.type_error(dotted, "a string", value)),
        }
    }

    fn count(&self, dotted: &str) -> Result<Option<u64>, ConfigError> {
        match self.get(dotted) {
            None => Ok(None),
            Some(value) => value
                .as_integer()
                .and_then(|n| u64::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| self.type_error(dotted, "a non-negative integer", value)),
        }
    }

    fn type_error(&self, dotted: &str, expected: &'static str, found: &toml::Value) -> ConfigError {
        ConfigError::Type {
            path: self.path.to_path_buf(),
            key: dotted.to_string(),
            expected,
            found: found.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_known_key_and_ignores_others() {
        let text = r#"
            data_dir = "data"
            unknown_top = true
            [runtime]
            cores = [0, 2, 4]
            threads = "ignored"
            [[sow.topics]]
            name = "orders"
            [[sow.topics]]
            name = "quotes"
            [limits]
            max_clients = 500
            [journal]
            size_bytes = 1073741824
            preallocated_segments = 4
        "#;
        let config = parse(text, Path::new("/etc/tachyon/tachyon.toml")).unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/etc/tachyon/data"));
        assert_eq!(config.cores, Some(vec![0, 2, 4]));
        assert_eq!(config.sow_topic_count, 2);
        assert_eq!(config.max_clients, Some(500));
        assert_eq!(config.journal_size_bytes, Some(1 << 30));
        assert_eq!(config.journal_preallocated_segments, Some(4));
    }

    #[test]
    fn empty_config_uses_defaults_next_to_the_file() {
        let config = parse("", Path::new("/srv/t/tachyon.toml")).unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/srv/t/tachyon-data"));
        assert_eq!(config.cores, None);
        assert_eq!(config.sow_topic_count, 0);
        assert_eq!(config.max_clients, None);
    }

    #[test]
    fn absolute_data_dir_is_kept() {
        let config = parse("data_dir = \"/var/lib/tachyon\"", Path::new("/etc/t.toml")).unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/tachyon"));
    }

    #[test]
    fn wrong_types_are_errors_that_name_the_key() {
        for (text, key) in [
            ("[limits]\nmax_clients = \"many\"", "limits.max_clients"),
            ("[limits]\nmax_clients = -1", "limits.max_clients"),
            ("[runtime]\ncores = [0, \"one\"]", "runtime.cores"),
            ("[runtime]\ncores = 3", "runtime.cores"),
            ("[sow]\ntopics = [1, 2]", "sow.topics"),
            ("data_dir = 5", "data_dir"),
        ] {
            match parse(text, Path::new("t.toml")) {
                Err(ConfigError::Type { key: found, .. }) => assert_eq!(found, key, "{text}"),
                other => panic!("{text}: expected a type error, got {other:?}"),
            }
        }
    }

    #[test]
    fn invalid_toml_is_a_parse_error() {
        assert!(matches!(
            parse("[limits\n", Path::new("t.toml")),
            Err(ConfigError::Parse { .. })
        ));
    }
}
