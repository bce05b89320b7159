//! Tachyon's storage plane: everything that lives in files, and nothing of the protocol.
//!
//! Today it owns the data directory: created on first start, locked so that two server processes
//! can never write the same files. The transaction log and the SOW store build on it.

pub mod data_dir;

pub use data_dir::{DataDir, DataDirError};
