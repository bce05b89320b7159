//! Tachyon's core: everything that decides what happens to a message, and nothing that touches a
//! socket or a file.
//!
//! `protocol` cuts and parses AMPS frames and writes compact headers, `session` turns one
//! connection's commands into validated requests, `router` matches published messages against
//! subscriptions, and `filter` compiles and evaluates AMPS content filters. The network crate
//! drives these state machines; tests drive them deterministically without any I/O.

pub mod bookmark;
pub mod civil;
pub mod filter;
pub mod ids;
pub mod message;
pub mod protocol;
pub mod router;
pub mod session;
pub mod sow;
pub mod topic;
