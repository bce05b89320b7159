//! The appliance's configuration: a TOML file, every field optional, unknown keys refused.
//!
//! Relative paths resolve against the folder of the config file, so a config can be moved with
//! its data. Without a file, [`Config::default`] is what `tachyon solo` runs on.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tachyon_core::sow::{Durability, SowTopicConfig};
use thiserror::Error;

/// A config that cannot be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema (unknown keys are named here).
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, naming the key and line.
        message: String,
    },
    /// A `[[sow.topics]]` entry that cannot be used.
    #[error("config: [[sow.topics]] {message}")]
    Sow {
        /// What is wrong, naming the topic.
        message: String,
    },
    /// A value outside its allowed range.
    #[error("config: {field} = {value} is out of range: {rule}")]
    Range {
        /// Dotted field name.
        field: &'static str,
        /// The value given.
        value: String,
        /// The rule it breaks.
        rule: &'static str,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where journals, SOW files and the metadata store live.
    pub data_dir: PathBuf,
    /// Listening addresses.
    pub transport: TransportConfig,
    /// Threads and placement.
    pub runtime: RuntimeConfig,
    /// Bounds on what clients may send and hold.
    pub limits: LimitsConfig,
    /// State of the World topics.
    pub sow: SowConfig,
    /// The transaction log: which topics are journaled and how.
    pub journal: JournalToml,
    /// The admin and monitoring HTTP API.
    pub admin: AdminConfig,
    /// Where logs go besides stderr.
    pub logging: LoggingConfig,
    /// The stuck-shard watchdog and minidumps.
    pub watchdog: WatchdogConfig,
    /// JSON Lines over HTTP (publish, SOW queries and subscriptions for curl and scripts).
    pub jsonl: JsonlConfig,
}

/// The `[jsonl]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JsonlConfig {
    /// Where the JSON Lines HTTP interface listens (loopback by default: no authentication).
    pub address: SocketAddr,
}

impl Default for JsonlConfig {
    fn default() -> Self {
        JsonlConfig {
            address: SocketAddr::from(([127, 0, 0, 1], 1603)),
        }
    }
}

/// The `[watchdog]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatchdogConfig {
    /// A shard whose loop has not run for this long is logged as stuck (repeating each second).
    pub stuck_after_ms: u64,
    /// A shard stuck this long gets one minidump per episode.
    pub minidump_after_seconds: u64,
    /// Where minidumps are written (also on SIGQUIT, on the admin action and on a panic).
    pub minidump_dir: PathBuf,
    /// Testing only: a publish to topic `tachyon.debug.block-shard` with payload
    /// `{"ms":N}` blocks the receiving shard's thread for N ms.
    pub debug_block_command: bool,
}

impl Default for WatchdogConfig {
    fn default() -> Self {
        WatchdogConfig {
            stuck_after_ms: 2_000,
            minidump_after_seconds: 60,
            minidump_dir: PathBuf::from("/tmp"),
            debug_block_command: false,
        }
    }
}

/// The `[logging]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    /// Also write logs to this file (relative to the config file's folder), rotating by size.
    pub file: Option<PathBuf>,
    /// Rotate when the file would grow past this many bytes.
    pub max_bytes: u64,
    /// Rotated files kept (the oldest beyond this are removed).
    pub keep: usize,
    /// Gzip rotated files in the background.
    pub compress: bool,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            file: None,
            max_bytes: 64 << 20,
            keep: 5,
            compress: true,
        }
    }
}

/// The `[admin]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Where the admin API listens (health, statistics, Prometheus metrics). Loopback by
    /// default: it has no authentication.
    pub address: SocketAddr,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            address: SocketAddr::from(([127, 0, 0, 1], 1610)),
        }
    }
}

/// The `[journal]` table. With no `topics` nothing is journaled and no journal is opened.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JournalToml {
    /// Topics to journal: exact names, or regular expressions (a name with any of `^$*+?()[]{}|\`).
    pub topics: Vec<String>,
    /// Size of each segment file in bytes (a multiple of 4096).
    pub segment_size_bytes: u64,
    /// Zero-filled segments kept ready ahead of need.
    pub spare_segments: usize,
    /// Largest journaled message (topic + `x` + payload + 64 bytes); larger publishes to a
    /// journaled topic get a failure ack.
    pub max_record_bytes: usize,
    /// Bytes appended while a write is in flight before publishers wait for the disk.
    pub max_buffered_bytes: usize,
    /// `auto` (io_uring + O_DIRECT, else buffered with a warning), `io_uring` (or refuse to
    /// start) or `buffered`.
    pub backend: String,
    /// Milliseconds over which persisted acks to one connection are conflated into one;
    /// 0 sends one per connection per durable write group.
    pub persisted_ack_interval_ms: u64,
    /// Remove sealed segments whose newest record is older than this (seconds).
    pub retention_max_age_seconds: Option<u64>,
    /// Remove the oldest sealed segments while the journal is larger than this (bytes).
    pub retention_max_bytes: Option<u64>,
    /// Start even when durable data before the tail is damaged, dropping everything from the
    /// damage on (the log names file and offset). Off: such damage stops start-up.
    pub allow_truncate_corruption: bool,
    /// Testing only: make one write+sync group fail, e.g.
    /// `fault_injection = { operation = "sync", after_groups = 3 }`.
    pub fault_injection: Option<FaultToml>,
}

/// `[journal] fault_injection`: a planned I/O failure, for testing the failure path.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultToml {
    /// `write` or `sync`.
    pub operation: String,
    /// Write groups that succeed first.
    pub after_groups: u64,
}

impl Default for JournalToml {
    fn default() -> Self {
        JournalToml {
            topics: Vec::new(),
            segment_size_bytes: tachyon_storage::journal::SEGMENT_SIZE_BYTES_DEFAULT,
            spare_segments: tachyon_storage::journal::SPARE_SEGMENTS_DEFAULT,
            max_record_bytes: 1 << 20,
            max_buffered_bytes: 4 << 20,
            backend: "auto".into(),
            persisted_ack_interval_ms: 0,
            retention_max_age_seconds: None,
            retention_max_bytes: None,
            allow_truncate_corruption: false,
            fault_injection: None,
        }
    }
}

impl JournalToml {
    /// Whether any topic is journaled.
    pub fn enabled(&self) -> bool {
        !self.topics.is_empty()
    }

    /// The journaled topics, compiled.
    pub fn topic_specs(&self) -> Result<Vec<tachyon_core::topic::TopicSpec>, ConfigError> {
        self.topics
            .iter()
            .map(|topic| {
                tachyon_core::topic::TopicSpec::parse(topic.as_bytes()).map_err(|error| {
                    ConfigError::Range {
                        field: "journal.topics",
                        value: format!("{topic:?}"),
                        rule: leak_rule(error.to_string()),
                    }
                })
            })
            .collect()
    }

    /// How old or large the journal may grow before whole segments are removed.
    pub fn retention(&self) -> Option<tachyon_storage::journal::RetentionPolicy> {
        if self.retention_max_age_seconds.is_none() && self.retention_max_bytes.is_none() {
            return None;
        }
        Some(tachyon_storage::journal::RetentionPolicy {
            max_age: self.retention_max_age_seconds.map(Duration::from_secs),
            max_bytes: self.retention_max_bytes,
        })
    }

    /// The storage library's configuration.
    pub fn journal_config(&self) -> Result<tachyon_storage::journal::JournalConfig, ConfigError> {
        use tachyon_storage::journal::{BackendChoice, FaultOperation, FaultPlan, JournalConfig};
        let backend = match self.backend.as_str() {
            "auto" => BackendChoice::Auto,
            "io_uring" => BackendChoice::Uring,
            "buffered" => BackendChoice::Fallback,
            other => {
                return Err(ConfigError::Range {
                    field: "journal.backend",
                    value: format!("{other:?}"),
                    rule: "one of \"auto\", \"io_uring\", \"buffered\"",
                })
            }
        };
        let fault = match &self.fault_injection {
            None => None,
            Some(fault) => Some(FaultPlan {
                operation: match fault.operation.as_str() {
                    "write" => FaultOperation::Write,
                    "sync" => FaultOperation::Sync,
                    other => {
                        return Err(ConfigError::Range {
                            field: "journal.fault_injection.operation",
                            value: format!("{other:?}"),
                            rule: "\"write\" or \"sync\"",
                        })
                    }
                },
                after_groups: fault.after_groups,
            }),
        };
        Ok(JournalConfig {
            fault,
            segment_size_bytes: self.segment_size_bytes,
            spare_segments: self.spare_segments,
            max_buffered_bytes: self.max_buffered_bytes,
            max_record_bytes: self.max_record_bytes,
            backend,
            allow_truncate_corruption: self.allow_truncate_corruption,
            ..JournalConfig::default()
        })
    }
}

/// Config errors carry static rules; a compiler message is made static once, at start-up.
fn leak_rule(text: String) -> &'static str {
    Box::leak(text.into_boxed_str())
}

/// The `[sow]` table: SOW topics and how they are kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SowConfig {
    /// Seconds between snapshots of changed persistent topics (0: only at clean shutdown).
    pub snapshot_interval_seconds: u64,
    /// The SOW topics (`[[sow.topics]]`).
    pub topics: Vec<SowTopicToml>,
}

impl Default for SowConfig {
    fn default() -> Self {
        SowConfig {
            snapshot_interval_seconds: 10,
            topics: Vec::new(),
        }
    }
}

/// One `[[sow.topics]]` entry as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SowTopicToml {
    /// Exact topic name.
    pub topic: String,
    /// Key field paths, e.g. `["/id"]`; empty: every publish must carry a `k` header.
    #[serde(default)]
    pub key_fields: Vec<String>,
    /// Slab size in bytes (default 1 MiB).
    #[serde(default = "slab_size_bytes_default")]
    pub slab_size_bytes: usize,
    /// `transient` (default) or `persistent`.
    #[serde(default = "durability_default")]
    pub durability: String,
    /// Default record lifetime in seconds when a publish carries no `e` header.
    #[serde(default)]
    pub expiration_seconds: Option<u64>,
}

fn slab_size_bytes_default() -> usize {
    tachyon_core::sow::SLAB_SIZE_BYTES_DEFAULT
}

fn durability_default() -> String {
    "transient".into()
}

impl SowTopicToml {
    /// The store's configuration, validated; errors name the topic.
    pub fn to_topic_config(&self) -> Result<SowTopicConfig, ConfigError> {
        let durability = Durability::parse(&self.durability).ok_or_else(|| ConfigError::Sow {
            message: format!(
                "topic {:?}: durability {:?} is neither \"transient\" nor \"persistent\"",
                self.topic, self.durability
            ),
        })?;
        let config = SowTopicConfig {
            topic: self.topic.clone(),
            key_fields: self.key_fields.clone(),
            slab_size_bytes: self.slab_size_bytes,
            durability,
            expiration: self.expiration_seconds.map(Duration::from_secs),
        };
        config.validate().map_err(|error| ConfigError::Sow {
            message: format!("topic {:?}: {error}", self.topic),
        })?;
        Ok(config)
    }
}

impl SowConfig {
    /// Every SOW topic's store configuration, validated, duplicates refused.
    pub fn topic_configs(&self) -> Result<Vec<SowTopicConfig>, ConfigError> {
        let mut configs: Vec<SowTopicConfig> = Vec::with_capacity(self.topics.len());
        for entry in &self.topics {
            let config = entry.to_topic_config()?;
            if configs
                .iter()
                .any(|existing| existing.topic == config.topic)
            {
                return Err(ConfigError::Sow {
                    message: format!(
                        "topic {:?} is declared twice; remove one entry",
                        config.topic
                    ),
                });
            }
            configs.push(config);
        }
        Ok(configs)
    }
}

/// Listening addresses of the client transports.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransportConfig {
    /// AMPS protocol over TCP (`tcp://host:port/amps/json`).
    pub amps_tcp: SocketAddr,
}

/// Data-plane threads and where they run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Data-plane shards; 0 picks one per core of the NIC's NUMA node, keeping one core for the
    /// control plane when there is more than one.
    pub shards: usize,
    /// Explicit cores for the shards (overrides `shards`).
    pub cores: Vec<usize>,
    /// Network interface whose NUMA node hosts the shards (default: the first physical NIC).
    pub nic: Option<String>,
    /// Microseconds a shard spins looking for work before it sleeps. 0 sleeps at once (kind to
    /// shared machines); 50–200 lowers latency on dedicated cores.
    pub spin_before_park_us: u64,
    /// Bytes of io_uring-registered memory per shard (counts against RLIMIT_MEMLOCK).
    pub io_memory_bytes: usize,
    /// Lock all memory with mlockall at start-up (needs RLIMIT_MEMLOCK or CAP_IPC_LOCK).
    pub lock_memory: bool,
    /// Which shard routes a topic's messages.
    pub topic_routing: TopicRouting,
}

/// Which shard routes (and, later, journals) a topic's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TopicRouting {
    /// Shard 0 routes every topic: one total order across the instance, as AMPS guarantees, so a
    /// subscriber sees one publisher's messages in publish order across topics. Connections
    /// (parsing, acks, socket I/O) still spread over all shards.
    Ordered,
    /// Topics are spread over shards by hash: routing scales with cores, but order is kept only
    /// per topic, not across topics.
    Hashed,
}

/// Bounds on clients.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest frame a client may send, in bytes.
    pub frame_bytes_max: usize,
    /// Bytes queued in memory for one client; further messages for it are spooled to disk
    /// (see `message_disk_limit`).
    pub client_outbound_bytes_max: usize,
    /// Subscriptions one connection may hold.
    pub subscriptions_per_client_max: usize,
    /// Size of each connection's receive buffer, in bytes.
    pub receive_buffer_bytes: usize,
    /// Messages each cross-shard channel holds before senders wait.
    pub mesh_channel_depth: usize,
    /// Seconds a new connection has to log on before it is closed.
    pub logon_timeout_seconds: u64,
    /// Bytes queued in memory for all clients of the instance together. Past it, a client that
    /// already has 64 KiB queued (a quarter of its budget if smaller) spools further messages to
    /// disk even below its own budget; clients that keep up stay in memory.
    pub message_memory_limit: u64,
    /// Folder of the spool files; relative to `data_dir` (default `<data_dir>/spool`).
    pub message_disk_path: PathBuf,
    /// Bytes one client may have spooled on disk and not yet received; past it the client is
    /// disconnected as a slow consumer. 0 turns spooling off: a client over its memory budget is
    /// disconnected at once.
    pub message_disk_limit: u64,
}

impl LimitsConfig {
    /// Where spool files go: `message_disk_path`, relative to `data_dir` unless absolute.
    pub fn spool_directory(&self, data_dir: &Path) -> PathBuf {
        data_dir.join(&self.message_disk_path)
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("tachyon-data"),
            transport: TransportConfig::default(),
            runtime: RuntimeConfig::default(),
            limits: LimitsConfig::default(),
            sow: SowConfig::default(),
            journal: JournalToml::default(),
            admin: AdminConfig::default(),
            logging: LoggingConfig::default(),
            watchdog: WatchdogConfig::default(),
            jsonl: JsonlConfig::default(),
        }
    }
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            amps_tcp: SocketAddr::from(([0, 0, 0, 0], 9007)),
        }
    }
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            shards: 0,
            cores: Vec::new(),
            nic: None,
            spin_before_park_us: 0,
            io_memory_bytes: 512 * 1024,
            lock_memory: false,
            topic_routing: TopicRouting::Ordered,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            frame_bytes_max: 16 * 1024 * 1024,
            client_outbound_bytes_max: 64 * 1024 * 1024,
            subscriptions_per_client_max: 65_536,
            receive_buffer_bytes: 64 * 1024,
            mesh_channel_depth: 4_096,
            logon_timeout_seconds: 30,
            message_memory_limit: 1 << 30,
            message_disk_path: PathBuf::from("spool"),
            message_disk_limit: 1 << 30,
        }
    }
}

impl Config {
    /// Reads a config file and resolves its relative paths against the file's folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config: Config = toml::from_str(&text).map_err(|error| ConfigError::Parse {
            path: path.to_path_buf(),
            message: error.to_string(),
        })?;
        // Relative paths in the file are relative to the file, so a config moves with its data.
        let folder = path
            .parent()
            .filter(|folder| !folder.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if config.data_dir.is_relative() {
            config.data_dir = folder.join(&config.data_dir);
        }
        if config.watchdog.minidump_dir.is_relative() {
            config.watchdog.minidump_dir = folder.join(&config.watchdog.minidump_dir);
        }
        if let Some(file) = config.logging.file.as_mut() {
            if file.is_relative() {
                *file = folder.join(&*file);
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks every bound; called by [`Config::load`] and by the binary after command-line overrides.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let limits = &self.limits;
        let range = |field, value: usize, rule| ConfigError::Range {
            field,
            value: value.to_string(),
            rule,
        };
        if !(1024..=1 << 30).contains(&limits.frame_bytes_max) {
            return Err(range(
                "limits.frame_bytes_max",
                limits.frame_bytes_max,
                "1 KiB ..= 1 GiB",
            ));
        }
        if limits.receive_buffer_bytes < 4096 {
            return Err(range(
                "limits.receive_buffer_bytes",
                limits.receive_buffer_bytes,
                ">= 4096",
            ));
        }
        if limits.client_outbound_bytes_max < 64 * 1024 {
            return Err(range(
                "limits.client_outbound_bytes_max",
                limits.client_outbound_bytes_max,
                ">= 64 KiB",
            ));
        }
        if limits.message_memory_limit < 1 << 20 {
            return Err(ConfigError::Range {
                field: "limits.message_memory_limit",
                value: limits.message_memory_limit.to_string(),
                rule: ">= 1 MiB (bytes queued in memory for all clients together; default 1 GiB)",
            });
        }
        if limits.message_disk_limit != 0 && limits.message_disk_limit < 64 * 1024 {
            return Err(ConfigError::Range {
                field: "limits.message_disk_limit",
                value: limits.message_disk_limit.to_string(),
                rule: "0 (no spooling: disconnect at the memory budget) or >= 64 KiB (bytes spooled per client)",
            });
        }
        if limits.message_disk_limit != 0 && limits.message_disk_path.as_os_str().is_empty() {
            return Err(ConfigError::Range {
                field: "limits.message_disk_path",
                value: "\"\"".into(),
                rule: "a folder for spool files (relative to data_dir), or set limits.message_disk_limit = 0 to turn spooling off",
            });
        }
        if limits.subscriptions_per_client_max == 0 {
            return Err(range("limits.subscriptions_per_client_max", 0, ">= 1"));
        }
        if limits.mesh_channel_depth < 16 {
            return Err(range(
                "limits.mesh_channel_depth",
                limits.mesh_channel_depth,
                ">= 16",
            ));
        }
        if self.runtime.io_memory_bytes < 64 * 1024 {
            return Err(range(
                "runtime.io_memory_bytes",
                self.runtime.io_memory_bytes,
                ">= 64 KiB",
            ));
        }
        if self.watchdog.stuck_after_ms < 200 {
            return Err(range(
                "watchdog.stuck_after_ms",
                self.watchdog.stuck_after_ms as usize,
                ">= 200 (shards stamp progress every 100 ms)",
            ));
        }
        if self.logging.max_bytes < 4096 {
            return Err(range(
                "logging.max_bytes",
                self.logging.max_bytes as usize,
                ">= 4096",
            ));
        }
        if self.runtime.shards > 1024 {
            return Err(range(
                "runtime.shards",
                self.runtime.shards,
                "0 (auto) ..= 1024",
            ));
        }
        self.sow.topic_configs()?;
        self.journal.topic_specs()?;
        // The sizes are checked by the journal itself when it opens, with its own messages.
        self.journal.journal_config()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> (PathBuf, PathBuf) {
        let folder = std::env::temp_dir().join(format!(
            "tachyon-config-{}-{}",
            std::process::id(),
            text.len()
        ));
        std::fs::create_dir_all(&folder).unwrap();
        let path = folder.join("tachyon.toml");
        std::fs::write(&path, text).unwrap();
        (folder, path)
    }

    #[test]
    fn relative_data_dir_resolves_against_the_config_folder() {
        let (folder, path) =
            write("data_dir = \"data\"\n[transport]\namps_tcp = \"127.0.0.1:19007\"\n");
        let config = Config::load(&path).unwrap();
        assert_eq!(config.data_dir, folder.join("data"));
        assert_eq!(config.transport.amps_tcp.port(), 19007);
        assert_eq!(
            config.limits.frame_bytes_max,
            LimitsConfig::default().frame_bytes_max
        );
    }

    #[test]
    fn unknown_keys_are_named() {
        let (_, path) = write("[runtime]\nshardz = 2\n");
        let message = Config::load(&path).unwrap_err().to_string();
        assert!(message.contains("shardz"), "{message}");
    }

    #[test]
    fn sow_topics_are_read_and_validated_naming_the_topic() {
        let (_, path) = write(
            "[sow]\nsnapshot_interval_seconds = 3\n[[sow.topics]]\ntopic = \"orders\"\nkey_fields = [\"/id\"]\ndurability = \"persistent\"\nexpiration_seconds = 60\n[[sow.topics]]\ntopic = \"quotes\"\nkey_fields = [\"/sym\", \"/venue\"]\n",
        );
        let config = Config::load(&path).unwrap();
        let topics = config.sow.topic_configs().unwrap();
        assert_eq!(config.sow.snapshot_interval_seconds, 3);
        assert_eq!(topics.len(), 2);
        assert_eq!(topics[0].durability, Durability::Persistent);
        assert_eq!(topics[0].expiration, Some(Duration::from_secs(60)));
        assert_eq!(
            topics[1].slab_size_bytes,
            tachyon_core::sow::SLAB_SIZE_BYTES_DEFAULT
        );
        for (text, needle) in [
            (
                "[[sow.topics]]\ntopic = \"bad\"\nkey_fields = [\"id\"]\n",
                "\"bad\"",
            ),
            (
                "[[sow.topics]]\ntopic = \"d\"\ndurability = \"durable\"\n",
                "durable",
            ),
            (
                "[[sow.topics]]\ntopic = \"x\"\nkeyfields = [\"/id\"]\n",
                "keyfields",
            ),
            (
                "[[sow.topics]]\ntopic = \"t\"\n[[sow.topics]]\ntopic = \"t\"\n",
                "twice",
            ),
        ] {
            let (_, path) = write(text);
            let message = Config::load(&path).unwrap_err().to_string();
            assert!(message.contains(needle), "{message}");
        }
    }

    #[test]
    fn out_of_range_values_are_refused() {
        let (_, path) = write("[limits]\nframe_bytes_max = 10\n");
        let message = Config::load(&path).unwrap_err().to_string();
        assert!(message.contains("limits.frame_bytes_max"), "{message}");
    }

    #[test]
    fn spool_limits_are_read_and_validated() {
        let defaults = LimitsConfig::default();
        assert_eq!(defaults.message_memory_limit, 1 << 30);
        assert_eq!(defaults.message_disk_limit, 1 << 30);
        assert_eq!(
            defaults.spool_directory(Path::new("/data")),
            PathBuf::from("/data/spool")
        );
        let (_, path) = write(
            "[limits]\nmessage_memory_limit = 8388608\nmessage_disk_path = \"/var/spool/tachyon\"\nmessage_disk_limit = 1048576\n",
        );
        let config = Config::load(&path).unwrap();
        assert_eq!(config.limits.message_memory_limit, 8 << 20);
        assert_eq!(config.limits.message_disk_limit, 1 << 20);
        assert_eq!(
            config.limits.spool_directory(&config.data_dir),
            PathBuf::from("/var/spool/tachyon")
        );
        let (_, path) = write("[limits]\nmessage_disk_limit = 0\nmessage_disk_path = \"\"\n");
        assert_eq!(Config::load(&path).unwrap().limits.message_disk_limit, 0);
        for (text, needle) in [
            (
                "[limits]\nmessage_memory_limit = 1000\n",
                "limits.message_memory_limit = 1000",
            ),
            (
                "[limits]\nmessage_disk_limit = 100\n",
                "limits.message_disk_limit = 100",
            ),
            (
                "[limits]\nmessage_disk_path = \"\"\n",
                "limits.message_disk_path",
            ),
            ("[limits]\nmessage_disk_limit = -1\n", "message_disk_limit"),
        ] {
            let (_, path) = write(text);
            let message = Config::load(&path).unwrap_err().to_string();
            assert!(message.contains(needle), "{message}");
        }
    }
}
