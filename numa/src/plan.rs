//! The placement plan: which core runs each network shard, which core the control plane gets, and
//! why.
//!
//! `plan` is a pure function of a `Topology` and a `PlacementRequest`, so every rule is tested on
//! synthetic machines. It must never touch the OS (no pinning, no discovery): `pin` and
//! `topology` do that.

use std::fmt;

use serde::Serialize;

use crate::topology::{CoreId, CoreList, NodeId, Topology, TopologySource};

mod error;

use error::node_words;
pub use error::PlacementError;

/// What the operator asked for; `Default` is fully automatic with a control-plane core reserved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PlacementRequest {
    /// How many network shards; `None` = one per allowed core of the network node.
    pub shards: Option<usize>,
    /// Exactly these cores, shard `i` on `cores[i]`; every one must be allowed.
    pub cores: Option<Vec<CoreId>>,
    /// The interface whose NUMA node hosts the network shards; `None` = first physical NIC.
    pub nic: Option<String>,
    /// Keep one allowed core off the shards for the control plane (when more than one is allowed).
    pub reserve_control_core: bool,
}

impl Default for PlacementRequest {
    fn default() -> Self {
        PlacementRequest {
            shards: None,
            cores: None,
            nic: None,
            reserve_control_core: true,
        }
    }
}

/// Where one network shard runs.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ShardPlacement {
    /// Shard number, 0-based and dense.
    pub shard: usize,
    /// The core the shard's thread is pinned to.
    pub core: CoreId,
    /// The node holding that core.
    pub node: NodeId,
}

/// The start-up decision of where every data-plane thread and the control plane run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PlacementPlan {
    /// One entry per network shard, by shard number.
    pub shards: Vec<ShardPlacement>,
    /// The control plane's core; `None` when no core could be kept for it (it then runs unpinned).
    pub control_plane: Option<CoreId>,
    /// The node chosen for the network shards.
    pub network_node: NodeId,
    /// The interface that decided `network_node`, if one did.
    pub nic: Option<String>,
    /// Why the network node was chosen, followed by every warning.
    pub reason: String,
    /// Compromises the operator should know about (spilling, an unknown NIC node, no control core).
    pub warnings: Vec<String>,
    /// Where the topology facts came from.
    pub source: TopologySource,
    /// The cores this process may use.
    pub allowed_cores: CoreList,
    /// How many NUMA nodes the machine has.
    pub node_count: usize,
}

/// Decides where the network shards and the control plane run; see the crate docs for the rules.
pub fn plan(
    topology: &Topology,
    request: &PlacementRequest,
) -> Result<PlacementPlan, PlacementError> {
    let mut warnings = Vec::new();
    let choice = choose_network_node(topology, request, &mut warnings)?;
    let network_node = choice.node;

    let (cores, control_plane) = match (&request.cores, request.shards) {
        (Some(listed), shards) => explicit_cores(
            topology,
            request,
            listed,
            shards,
            network_node,
            &mut warnings,
        )?,
        (None, Some(count)) => {
            counted_shards(topology, request, count, network_node, &mut warnings)?
        }
        (None, None) => automatic(topology, request, network_node, &mut warnings),
    };

    assert!(!cores.is_empty(), "a plan has at least one shard");
    assert!(
        control_plane.is_none_or(|control| !cores.contains(&control)),
        "the control core is no shard's"
    );
    let shards: Vec<ShardPlacement> = cores
        .iter()
        .enumerate()
        .map(|(shard, &core)| ShardPlacement {
            shard,
            core,
            node: topology
                .node_of(core)
                .expect("allowed cores belong to a node"),
        })
        .collect();

    let mut reason = choice.reason;
    for warning in &warnings {
        reason.push_str("; warning: ");
        reason.push_str(warning);
    }
    Ok(PlacementPlan {
        shards,
        control_plane,
        network_node,
        nic: choice.nic,
        reason,
        warnings,
        source: topology.source,
        allowed_cores: CoreList(topology.allowed_cores.clone()),
        node_count: topology.nodes.len(),
    })
}

/// The network node and how it was arrived at.
struct NodeChoice {
    /// The node network shards go to.
    node: NodeId,
    /// The interface that decided it, if any.
    nic: Option<String>,
    /// The sentence for `PlacementPlan::reason`.
    reason: String,
}

/// Network node = the requested NIC's node, else the first physical NIC's with a known node, else
/// node 0; then, if that node has no allowed core, the first node that has one.
fn choose_network_node(
    topology: &Topology,
    request: &PlacementRequest,
    warnings: &mut Vec<String>,
) -> Result<NodeChoice, PlacementError> {
    let default_node = if topology.has_node(NodeId(0)) {
        NodeId(0)
    } else {
        topology.nodes[0].id
    };
    let mut choice = match &request.nic {
        Some(name) => match topology.nics.iter().find(|nic| &nic.name == name) {
            Some(nic) => match nic.node.filter(|node| topology.has_node(*node)) {
                Some(node) => NodeChoice {
                    node,
                    nic: Some(name.clone()),
                    reason: format!("NIC {name} is on node {node}"),
                },
                None => {
                    warnings.push(format!(
                        "the NUMA node of NIC {name} is unknown; using node {default_node}"
                    ));
                    NodeChoice {
                        node: default_node,
                        nic: Some(name.clone()),
                        reason: format!("NIC {name} has no known node, so node {default_node}"),
                    }
                }
            },
            // Discovery that could not list interfaces must not fail start-up.
            None if topology.nics.is_empty() => {
                warnings.push(format!(
                    "no interface list to find NIC {name} in; using node {default_node}"
                ));
                NodeChoice {
                    node: default_node,
                    nic: Some(name.clone()),
                    reason: format!("NIC {name} could not be looked up, so node {default_node}"),
                }
            }
            None => {
                return Err(PlacementError::UnknownNic {
                    name: name.clone(),
                    known: topology.nics.iter().map(|nic| nic.name.clone()).collect(),
                })
            }
        },
        None => match topology
            .nics
            .iter()
            .find(|nic| nic.physical && nic.node.is_some_and(|node| topology.has_node(node)))
        {
            Some(nic) => {
                let node = nic.node.expect("filtered on a known node");
                NodeChoice {
                    node,
                    nic: Some(nic.name.clone()),
                    reason: format!(
                        "NIC {} (first physical interface with a known node) is on node {node}",
                        nic.name
                    ),
                }
            }
            None => NodeChoice {
                node: default_node,
                nic: None,
                reason: format!("no physical NIC with a known NUMA node, so node {default_node}"),
            },
        },
    };

    if topology.allowed_cores_of(choice.node).is_empty() {
        let fallback = topology
            .nodes
            .iter()
            .find(|node| !topology.allowed_cores_of(node.id).is_empty())
            .expect("some node holds the allowed cores")
            .id;
        warnings.push(format!(
            "node {} has no allowed core (allowed cores: {}); network shards run on node {fallback} \
             and their NIC traffic crosses the interconnect",
            choice.node,
            CoreList(topology.allowed_cores.clone())
        ));
        choice
            .reason
            .push_str(&format!(", but it has no allowed core, so node {fallback}"));
        choice.node = fallback;
    }
    Ok(choice)
}

/// The control-plane core: the lowest allowed core off the network node (it is not
/// latency-critical, so it should not take a core next to the NIC), else the network node's lowest.
fn pick_control_core(
    topology: &Topology,
    network_node: NodeId,
    taken: &[CoreId],
) -> Option<CoreId> {
    let free = |core: &&CoreId| !taken.contains(core);
    let off_node = topology
        .allowed_cores
        .iter()
        .filter(free)
        .find(|core| topology.node_of(**core) != Some(network_node));
    off_node
        .or_else(|| topology.allowed_cores.iter().find(free))
        .copied()
}

/// Allowed cores in the order shards should take them: the network node first, then the other
/// nodes by id.
fn cores_by_preference(topology: &Topology, network_node: NodeId) -> Vec<CoreId> {
    let mut ordered = topology.allowed_cores_of(network_node);
    for node in topology.nodes.iter().filter(|node| node.id != network_node) {
        ordered.extend(topology.allowed_cores_of(node.id));
    }
    ordered
}

/// Records why no control-plane core was kept, when one was asked for.
fn note_unreserved(topology: &Topology, request: &PlacementRequest, warnings: &mut Vec<String>) {
    if request.reserve_control_core {
        let allowed = topology.allowed_cores.len();
        warnings.push(if allowed == 1 {
            format!(
                "only one allowed core ({}): the control plane shares it with the shard",
                topology.allowed_cores[0]
            )
        } else {
            format!("all {allowed} allowed cores run shards: the control plane runs unpinned and competes with them")
        });
    }
}

/// No count, no list: every allowed core of the network node but the control core.
fn automatic(
    topology: &Topology,
    request: &PlacementRequest,
    network_node: NodeId,
    warnings: &mut Vec<String>,
) -> (Vec<CoreId>, Option<CoreId>) {
    let control = if request.reserve_control_core && topology.allowed_cores.len() > 1 {
        pick_control_core(topology, network_node, &[])
    } else {
        note_unreserved(topology, request, warnings);
        None
    };
    let shards: Vec<CoreId> = topology
        .allowed_cores_of(network_node)
        .into_iter()
        .filter(|core| Some(*core) != control)
        .collect();
    (shards, control)
}

/// `count` shards: the network node's allowed cores first, then the other nodes' by id.
fn counted_shards(
    topology: &Topology,
    request: &PlacementRequest,
    count: usize,
    network_node: NodeId,
    warnings: &mut Vec<String>,
) -> Result<(Vec<CoreId>, Option<CoreId>), PlacementError> {
    let allowed = &topology.allowed_cores;
    if count == 0 {
        return Err(PlacementError::ZeroShards);
    }
    if count > allowed.len() {
        let mut nodes: Vec<NodeId> = allowed
            .iter()
            .filter_map(|core| topology.node_of(*core))
            .collect();
        nodes.sort();
        nodes.dedup();
        return Err(PlacementError::TooManyShards {
            requested: count,
            available: allowed.len(),
            allowed: CoreList(allowed.clone()),
            nodes,
        });
    }
    let control = if request.reserve_control_core && allowed.len() > count {
        pick_control_core(topology, network_node, &[])
    } else {
        note_unreserved(topology, request, warnings);
        None
    };
    let cores: Vec<CoreId> = cores_by_preference(topology, network_node)
        .into_iter()
        .filter(|core| Some(*core) != control)
        .take(count)
        .collect();
    assert_eq!(
        cores.len(),
        count,
        "enough allowed cores were checked above"
    );

    let spilled: Vec<CoreId> = cores
        .iter()
        .copied()
        .filter(|core| topology.node_of(*core) != Some(network_node))
        .collect();
    if !spilled.is_empty() {
        let mut nodes: Vec<NodeId> = spilled
            .iter()
            .filter_map(|core| topology.node_of(*core))
            .collect();
        nodes.sort();
        nodes.dedup();
        warnings.push(format!(
            "{} of {count} shards spill off node {network_node} to {} (cores {}): node {network_node} has only {} allowed {}, and traffic to the NIC from the others crosses the interconnect",
            spilled.len(),
            node_words(&nodes),
            CoreList(spilled.clone()),
            topology.allowed_cores_of(network_node).len(),
            if topology.allowed_cores_of(network_node).len() == 1 { "core" } else { "cores" },
        ));
    }
    Ok((cores, control))
}

/// An explicit core list, checked against the allowed mask and used in the order given.
fn explicit_cores(
    topology: &Topology,
    request: &PlacementRequest,
    listed: &[CoreId],
    shards: Option<usize>,
    network_node: NodeId,
    warnings: &mut Vec<String>,
) -> Result<(Vec<CoreId>, Option<CoreId>), PlacementError> {
    let allowed = CoreList(topology.allowed_cores.clone());
    if listed.is_empty() {
        return Err(PlacementError::EmptyCoreList { allowed });
    }
    for (index, core) in listed.iter().enumerate() {
        if listed[..index].contains(core) {
            return Err(PlacementError::DuplicateCore { core: *core });
        }
        if !topology.allowed_cores.contains(core) {
            return Err(match topology.node_of(*core) {
                Some(_) => PlacementError::CoreNotAllowed {
                    core: *core,
                    allowed,
                },
                None => PlacementError::CoreMissing {
                    core: *core,
                    existing: CoreList(
                        topology
                            .nodes
                            .iter()
                            .flat_map(|node| node.cores.iter().copied())
                            .collect(),
                    ),
                    allowed,
                },
            });
        }
    }
    if let Some(count) = shards {
        if count != listed.len() {
            return Err(PlacementError::ShardCountMismatch {
                shards: count,
                cores: listed.len(),
            });
        }
    }

    let control = if request.reserve_control_core {
        let control = pick_control_core(topology, network_node, listed);
        if control.is_none() {
            note_unreserved(topology, request, warnings);
        }
        control
    } else {
        None
    };
    let off_node: Vec<CoreId> = listed
        .iter()
        .copied()
        .filter(|core| topology.node_of(*core) != Some(network_node))
        .collect();
    if !off_node.is_empty() {
        warnings.push(format!(
            "listed cores {} are not on the network node {network_node}: their traffic to the NIC crosses the interconnect",
            CoreList(off_node)
        ));
    }
    Ok((listed.to_vec(), control))
}

impl PlacementPlan {
    /// Writes the plan to the log: one `info` line per line of the summary, one `warn` per warning.
    pub fn log(&self) {
        for line in self.to_string().lines() {
            tracing::info!("{line}");
        }
        for warning in &self.warnings {
            tracing::warn!("placement: {warning}");
        }
    }
}

impl fmt::Display for PlacementPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.shards.len();
        writeln!(
            f,
            "placement: {count} network shard{} on {} NUMA node{} (topology from {}, allowed cores {})",
            if count == 1 { "" } else { "s" },
            self.node_count,
            if self.node_count == 1 { "" } else { "s" },
            self.source,
            self.allowed_cores,
        )?;
        writeln!(
            f,
            "  network node {}: {}",
            self.network_node,
            self.reason.split("; warning: ").next().unwrap_or("")
        )?;
        match self.control_plane {
            Some(core) => writeln!(f, "  control plane: core {core}")?,
            None => writeln!(f, "  control plane: unpinned")?,
        }
        // Runs of consecutive shards on consecutive cores of one node print as one line.
        let mut index = 0;
        while index < count {
            let first = self.shards[index];
            let mut last = first;
            while index + 1 < count {
                let next = self.shards[index + 1];
                if next.node != first.node || next.core.0 != last.core.0 + 1 {
                    break;
                }
                last = next;
                index += 1;
            }
            if first.shard == last.shard {
                writeln!(
                    f,
                    "  shard {}: core {} (node {})",
                    first.shard, first.core, first.node
                )?;
            } else {
                writeln!(
                    f,
                    "  shards {}-{}: cores {}-{} (node {})",
                    first.shard, last.shard, first.core, last.core, first.node
                )?;
            }
            index += 1;
        }
        for warning in &self.warnings {
            writeln!(f, "  warning: {warning}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
