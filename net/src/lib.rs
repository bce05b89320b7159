//! Tachyon's data plane: the shards that own connections and topics, and the wiring between them.
//!
//! `runtime` starts one pinned glommio executor per data-plane core and stops them cleanly.
//! Each `shard` accepts connections on the shared port (SO_REUSEPORT), runs a `connection` task
//! pair per client, owns the topics that hash to it and routes their messages. Shards share
//! nothing: they talk over the bounded channels of the `mesh`. `outbound` is a connection's
//! bounded send queue, written with vectored sends so payloads are never copied.

pub mod admin;
pub mod board;
pub mod config;
mod connection;
mod control_thread;
pub mod crash;
mod guaranteed;
pub mod journal;
pub mod jsonl;
pub mod latency;
mod mesh;
pub mod minidump;
mod notify;
mod outbound;
#[cfg(test)]
mod pipeline_tests;
mod receive;
mod replay;
pub mod runtime;
mod shard;
pub mod sow;
mod sow_recovery;
mod spool;
pub mod stats;
pub mod watchdog;

pub use config::{Config, ConfigError, TopicRouting};
pub use runtime::{RunningServer, StartError};
