//! Placement: where Tachyon's threads run.
//!
//! This crate owns the start-up decision of which core runs each network shard and which core the
//! control plane gets, and carrying it out: it reads the topology ([`Topology::discover`]: hwloc,
//! else sysfs, else one assumed node; never fails), builds a [`PlacementPlan`] ([`plan`]), pins
//! threads ([`pin_current_thread`]) and locks memory ([`lock_memory`]). It knows nothing of
//! sockets, topics or files, and never starts a thread of its own beyond [`spawn_pinned`].
//!
//! The rules of [`plan`]:
//! - Only cores in the process's affinity mask (`sched_getaffinity`) are used.
//! - Network node = the node of the requested NIC, else of the first physical NIC with a known
//!   node, else node 0; if that node has no allowed core, the first node that has one.
//! - Automatic shards: every allowed core of the network node, except the control-plane core.
//! - The control-plane core (when reserved and more than one core is allowed): the lowest allowed
//!   core off the network node, else the network node's lowest. On a 1-node 2-core machine that is
//!   1 shard on core 1 and the control plane on core 0.
//! - A shard count fills the network node first and spills to the other nodes with a warning; more
//!   shards than allowed cores is an error naming requested vs available.
//! - An explicit core list is used as given; every core must be allowed.

mod hwloc;
mod memory;
mod pin;
mod plan;
pub mod sysfs;
mod topology;

pub use memory::{lock_memory, MemoryLockError};
pub use pin::{pin_current_thread, spawn_pinned, PinError};
pub use plan::{plan, PlacementError, PlacementPlan, PlacementRequest, ShardPlacement};
pub use topology::{
    current_affinity, CoreId, CoreList, CoreListError, NicPlacement, NodeId, NumaNode, Topology,
    TopologySource,
};
