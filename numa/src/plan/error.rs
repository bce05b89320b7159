//! The errors `plan` returns: each names what was requested and what this machine has.

use crate::topology::{CoreId, CoreList, NodeId};

/// A placement request this machine cannot satisfy; each variant carries the numbers.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// More shards requested than this process has allowed cores.
    #[error(
        "requested {requested} shards but only {available} {} allowed ({allowed}) on {}",
        if *.available == 1 { "core is" } else { "cores are" },
        node_words(.nodes)
    )]
    TooManyShards {
        /// Shards asked for.
        requested: usize,
        /// Allowed cores on the whole machine.
        available: usize,
        /// Those cores.
        allowed: CoreList,
        /// Nodes that hold them.
        nodes: Vec<NodeId>,
    },
    /// Zero shards requested.
    #[error("requested 0 shards; at least 1 is needed")]
    ZeroShards,
    /// An explicit core list with nothing in it.
    #[error("the explicit core list is empty; list at least one of the allowed cores ({allowed})")]
    EmptyCoreList {
        /// The cores that could have been listed.
        allowed: CoreList,
    },
    /// An explicit core exists but is outside this process's affinity mask.
    #[error(
        "core {core} is not allowed for this process: allowed cores are {allowed} \
         (sched_getaffinity; widen it with taskset or the cgroup's cpuset.cpus)"
    )]
    CoreNotAllowed {
        /// The refused core.
        core: CoreId,
        /// The cores that are allowed.
        allowed: CoreList,
    },
    /// An explicit core that this machine does not have.
    #[error("core {core} does not exist here: this machine has cores {existing}, of which {allowed} are allowed")]
    CoreMissing {
        /// The missing core.
        core: CoreId,
        /// Every core the machine has.
        existing: CoreList,
        /// The cores that are allowed.
        allowed: CoreList,
    },
    /// An explicit core listed twice.
    #[error("core {core} is listed twice; each shard needs a core of its own")]
    DuplicateCore {
        /// The repeated core.
        core: CoreId,
    },
    /// Both a shard count and a core list, disagreeing.
    #[error("requested {shards} shards but listed {cores} cores; list one core per shard or give only one of the two")]
    ShardCountMismatch {
        /// Shards asked for.
        shards: usize,
        /// Cores listed.
        cores: usize,
    },
    /// The requested NIC is not an interface of this machine.
    #[error("network interface {name:?} not found; this machine has {}", known_words(.known))]
    UnknownNic {
        /// The name asked for.
        name: String,
        /// The interfaces that exist.
        known: Vec<String>,
    },
}

/// `node 0` or `nodes 0-1`, for messages.
pub(super) fn node_words(nodes: &[NodeId]) -> String {
    let list = CoreList(nodes.iter().map(|node| CoreId(node.0)).collect());
    if nodes.len() == 1 {
        format!("node {list}")
    } else {
        format!("nodes {list}")
    }
}

/// The interface names for an unknown-NIC message.
fn known_words(known: &[String]) -> String {
    if known.is_empty() {
        "no interface listed".to_string()
    } else {
        known.join(", ")
    }
}
