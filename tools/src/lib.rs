//! Operator tools for Tachyon: the host preflight checker and the capacity planner.
//!
//! Both are plain library functions behind clap argument structs, so the main binary wires them in
//! as `tachyon preflight` and `tachyon capacity`. This crate reads the host and the appliance's
//! config; it never links the engine, and it changes the host only on `preflight --fix --write`.

#![warn(missing_docs)]

pub mod capacity;
pub mod config;
pub mod preflight;
