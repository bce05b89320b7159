//! Tachyon's storage plane: everything that lives in files, and nothing of the protocol.
//!
//! It owns the data directory (created on first start, locked so that two server processes can
//! never write the same files) and the transaction log ([`journal`]); the SOW store builds on them.

pub mod data_dir;
pub mod journal;

pub use data_dir::{DataDir, DataDirError};
