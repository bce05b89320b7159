//! The machine as placement sees it: NUMA nodes, their cores, the cores this process may use, and
//! the node each network interface hangs off.
//!
//! This module owns the topology types, the CPU-list notation (`0-3,8`) and `Topology::discover`,
//! which tries hwloc, then sysfs, then assumes one node, and never fails. It must never decide where
//! a thread runs (that is `plan`) nor pin anything (that is `pin`).

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// An OS CPU number, as `sched_setaffinity` and `/sys/devices/system/cpu/cpuN` count them.
///
/// With SMT each hardware thread is its own `CoreId`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct CoreId(pub usize);

impl fmt::Display for CoreId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An OS NUMA node number, as `/sys/devices/system/node/nodeN` counts them.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct NodeId(pub usize);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Where a `Topology` came from, best first.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TopologySource {
    /// Read with hwloc (hwlocality).
    Hwloc,
    /// hwloc failed; read from `/sys/devices/system/node` and `/sys/class/net`.
    Sysfs,
    /// Both failed; one node 0 holding every allowed core was assumed.
    Fallback,
}

impl fmt::Display for TopologySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TopologySource::Hwloc => "hwloc",
            TopologySource::Sysfs => "sysfs",
            TopologySource::Fallback => "fallback (assumed one node)",
        })
    }
}

/// One NUMA node and the online cores it holds (allowed or not).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NumaNode {
    /// The node's OS number.
    pub id: NodeId,
    /// The node's online cores, ascending; a memory-only node has none.
    pub cores: Vec<CoreId>,
}

/// One network interface and the NUMA node its device is attached to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NicPlacement {
    /// Interface name, e.g. `eth0`.
    pub name: String,
    /// The node the device hangs off; `None` when the firmware does not say.
    pub node: Option<NodeId>,
    /// Whether the interface is backed by a device (false for `lo`, bridges, bonds, veth, ...).
    pub physical: bool,
}

/// The machine's NUMA nodes, the cores this process may use, and where its NICs are.
///
/// Invariant (checked by `Topology::new`): every allowed core belongs to exactly one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Topology {
    /// NUMA nodes, ascending by id; never empty.
    pub nodes: Vec<NumaNode>,
    /// The cores in this process's affinity mask (`sched_getaffinity`), ascending; never empty.
    pub allowed_cores: Vec<CoreId>,
    /// Network interfaces, physical ones first, each group by name.
    pub nics: Vec<NicPlacement>,
    /// Where the node and core facts came from.
    pub source: TopologySource,
    /// What went wrong on the way (hwloc or sysfs failures), for the start-up log and admin API.
    pub warnings: Vec<String>,
}

impl Topology {
    /// Reads this machine's topology: hwloc, else sysfs, else one assumed node. Never fails.
    ///
    /// Each fallback is logged as a warning and recorded in `warnings`. Call it from the main thread
    /// before pinning anything: the allowed cores are the calling thread's affinity mask.
    pub fn discover() -> Topology {
        let mut warnings = Vec::new();
        let allowed = match current_affinity() {
            Ok(cores) => Some(cores),
            Err(error) => {
                warnings.push(format!(
                    "sched_getaffinity failed ({error}); assuming every online core is allowed"
                ));
                None
            }
        };

        let sysfs_nics = crate::sysfs::read_nics(std::path::Path::new("/"));
        let (source, nodes, nics) = match crate::hwloc::read() {
            Ok(found) => (
                TopologySource::Hwloc,
                found.nodes,
                merge_nics(found.nics, sysfs_nics),
            ),
            Err(hwloc_error) => {
                warnings.push(format!(
                    "hwloc topology discovery failed ({hwloc_error}); reading sysfs instead"
                ));
                match crate::sysfs::read_nodes(std::path::Path::new("/")) {
                    Ok(nodes) => (TopologySource::Sysfs, nodes, sysfs_nics),
                    Err(sysfs_error) => {
                        warnings.push(format!(
                            "sysfs NUMA discovery failed ({sysfs_error}); assuming one node 0 \
                             holding every allowed core"
                        ));
                        (TopologySource::Fallback, Vec::new(), sysfs_nics)
                    }
                }
            }
        };

        let topology = Topology::assemble(source, nodes, allowed, nics, warnings);
        for warning in &topology.warnings {
            tracing::warn!("{warning}");
        }
        topology
    }

    /// Builds a topology from parts, repairing what discovery could not know.
    ///
    /// `allowed = None` means "every core of every node". Allowed cores that no node lists are
    /// added to the first node (with a warning), a missing node list becomes one node 0, and on a
    /// single-node machine every NIC is on that node.
    pub fn assemble(
        source: TopologySource,
        mut nodes: Vec<NumaNode>,
        allowed: Option<Vec<CoreId>>,
        mut nics: Vec<NicPlacement>,
        mut warnings: Vec<String>,
    ) -> Topology {
        nodes.sort_by_key(|node| node.id);
        nodes.dedup_by_key(|node| node.id);
        for node in &mut nodes {
            node.cores.sort();
            node.cores.dedup();
        }

        let mut allowed = match allowed {
            Some(cores) => cores,
            None => nodes.iter().flat_map(|n| n.cores.iter().copied()).collect(),
        };
        allowed.sort();
        allowed.dedup();
        if allowed.is_empty() {
            // Only reachable when both the affinity mask and discovery came back empty. A process
            // always runs on some core; core 0 is the one that always exists.
            warnings.push("no allowed core found; assuming core 0".to_string());
            allowed.push(CoreId(0));
        }

        if nodes.is_empty() {
            nodes.push(NumaNode {
                id: NodeId(0),
                cores: allowed.clone(),
            });
        }
        let orphans: Vec<CoreId> = allowed
            .iter()
            .copied()
            .filter(|core| !nodes.iter().any(|node| node.cores.contains(core)))
            .collect();
        if !orphans.is_empty() {
            warnings.push(format!(
                "allowed cores {} belong to no discovered node; counting them in node {}",
                CoreList(orphans.clone()),
                nodes[0].id
            ));
            nodes[0].cores.extend(orphans);
            nodes[0].cores.sort();
        }

        if nodes.len() == 1 {
            let only = nodes[0].id;
            for nic in &mut nics {
                nic.node = Some(only);
            }
        }
        nics.sort_by(|a, b| (!a.physical, &a.name).cmp(&(!b.physical, &b.name)));

        let topology = Topology {
            nodes,
            allowed_cores: allowed,
            nics,
            source,
            warnings,
        };
        topology.assert_invariants();
        topology
    }

    /// The node that holds `core`, if any.
    pub fn node_of(&self, core: CoreId) -> Option<NodeId> {
        self.nodes
            .iter()
            .find(|node| node.cores.contains(&core))
            .map(|node| node.id)
    }

    /// The allowed cores of `node`, ascending.
    pub fn allowed_cores_of(&self, node: NodeId) -> Vec<CoreId> {
        self.nodes
            .iter()
            .filter(|n| n.id == node)
            .flat_map(|n| n.cores.iter().copied())
            .filter(|core| self.allowed_cores.contains(core))
            .collect()
    }

    /// Whether `node` exists in this topology.
    pub fn has_node(&self, node: NodeId) -> bool {
        self.nodes.iter().any(|n| n.id == node)
    }

    /// Panics unless there is a node, an allowed core, and each allowed core is in one node.
    fn assert_invariants(&self) {
        assert!(!self.nodes.is_empty(), "a topology has at least one node");
        assert!(
            !self.allowed_cores.is_empty(),
            "a topology has an allowed core"
        );
        for core in &self.allowed_cores {
            let holders = self.nodes.iter().filter(|n| n.cores.contains(core)).count();
            assert_eq!(
                holders, 1,
                "allowed core {core} must belong to exactly one node"
            );
        }
    }
}

/// hwloc lists only device-backed interfaces; sysfs adds the virtual ones (bonds, VLANs, `lo`) and
/// fills a node hwloc could not place.
fn merge_nics(from_hwloc: Vec<NicPlacement>, from_sysfs: Vec<NicPlacement>) -> Vec<NicPlacement> {
    let mut merged = from_hwloc;
    for nic in from_sysfs {
        match merged.iter_mut().find(|known| known.name == nic.name) {
            Some(known) => {
                if known.node.is_none() {
                    known.node = nic.node;
                }
            }
            None => merged.push(nic),
        }
    }
    merged
}

/// The calling thread's allowed cores (`sched_getaffinity`), ascending.
///
/// Call it before pinning anything: afterwards it reports the pinned core only.
pub fn current_affinity() -> std::io::Result<Vec<CoreId>> {
    // SAFETY: cpu_set_t is plain bits, for which all-zeroes is the valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 means the calling thread; the size passed is the size of `set`, which the
    // kernel writes at most that many bytes of.
    let result =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if result != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let capacity = 8 * std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: CPU_ISSET reads bit `cpu` of `set`; every `cpu` is below the set's bit capacity.
    Ok((0..capacity)
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .map(CoreId)
        .collect())
}

/// A list of cores written and parsed in the kernel's CPU-list notation (`0-3,8,10-11`).
///
/// `"0-3,8".parse::<CoreList>()` is what a `--cores` flag wants.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct CoreList(pub Vec<CoreId>);

impl fmt::Display for CoreList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        let mut sorted: Vec<usize> = self.0.iter().map(|c| c.0).collect();
        sorted.sort_unstable();
        sorted.dedup();
        let mut first = true;
        let mut index = 0;
        while index < sorted.len() {
            let start = sorted[index];
            let mut end = start;
            while index + 1 < sorted.len() && sorted[index + 1] == end + 1 {
                index += 1;
                end = sorted[index];
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if start == end {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{end}")?;
            }
            index += 1;
        }
        Ok(())
    }
}

/// A CPU list that is not of the form `0-3,8`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("bad CPU list {text:?}: {problem} (expected e.g. \"0-3,8\")")]
pub struct CoreListError {
    /// The text that failed to parse.
    pub text: String,
    /// What is wrong with it.
    pub problem: String,
}

impl FromStr for CoreList {
    type Err = CoreListError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let error = |problem: String| CoreListError {
            text: text.to_string(),
            problem,
        };
        let number = |part: &str| {
            part.trim()
                .parse::<usize>()
                .map_err(|_| error(format!("{:?} is not a CPU number", part.trim())))
        };
        let mut cores = Vec::new();
        for part in text.trim().split(',').filter(|p| !p.trim().is_empty()) {
            match part.split_once('-') {
                Some((start, end)) => {
                    let (start, end) = (number(start)?, number(end)?);
                    if start > end {
                        return Err(error(format!("range {start}-{end} runs backwards")));
                    }
                    cores.extend((start..=end).map(CoreId));
                }
                None => cores.push(CoreId(number(part)?)),
            }
        }
        Ok(CoreList(cores))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cores(ids: &[usize]) -> Vec<CoreId> {
        ids.iter().copied().map(CoreId).collect()
    }

    #[test]
    fn core_list_round_trips_through_kernel_notation() {
        let list: CoreList = "0-3,8,10-11".parse().unwrap();
        assert_eq!(list.0, cores(&[0, 1, 2, 3, 8, 10, 11]));
        assert_eq!(list.to_string(), "0-3,8,10-11");
        assert_eq!("5\n".parse::<CoreList>().unwrap().0, cores(&[5]));
        assert_eq!("".parse::<CoreList>().unwrap().0, cores(&[]));
        assert_eq!(CoreList(cores(&[3, 1, 2])).to_string(), "1-3");
        assert_eq!(CoreList(vec![]).to_string(), "none");
    }

    #[test]
    fn core_list_rejects_garbage() {
        let error = "0-x".parse::<CoreList>().unwrap_err();
        assert!(
            error.to_string().contains("\"x\" is not a CPU number"),
            "{error}"
        );
        let error = "3-1".parse::<CoreList>().unwrap_err();
        assert!(error.to_string().contains("runs backwards"), "{error}");
    }

    #[test]
    fn assemble_repairs_missing_facts() {
        let topology = Topology::assemble(
            TopologySource::Fallback,
            Vec::new(),
            Some(cores(&[1, 0])),
            vec![NicPlacement {
                name: "eth0".into(),
                node: None,
                physical: true,
            }],
            Vec::new(),
        );
        assert_eq!(topology.nodes.len(), 1);
        assert_eq!(topology.nodes[0].cores, cores(&[0, 1]));
        assert_eq!(topology.allowed_cores, cores(&[0, 1]));
        assert_eq!(
            topology.nics[0].node,
            Some(NodeId(0)),
            "single node holds every NIC"
        );
    }

    #[test]
    fn assemble_adopts_orphan_allowed_cores() {
        let topology = Topology::assemble(
            TopologySource::Sysfs,
            vec![NumaNode {
                id: NodeId(0),
                cores: cores(&[0]),
            }],
            Some(cores(&[0, 1])),
            Vec::new(),
            Vec::new(),
        );
        assert_eq!(topology.nodes[0].cores, cores(&[0, 1]));
        assert!(topology.warnings[0].contains("allowed cores 1 belong to no discovered node"));
    }

    #[test]
    fn affinity_of_this_thread_is_not_empty() {
        let allowed = current_affinity().unwrap();
        assert!(!allowed.is_empty());
    }

    #[test]
    fn discover_reads_this_machine() {
        let topology = Topology::discover();
        assert!(!topology.nodes.is_empty(), "at least one node");
        assert!(
            !topology.allowed_cores.is_empty(),
            "at least one allowed core"
        );
        for core in &topology.allowed_cores {
            assert!(
                topology.node_of(*core).is_some(),
                "allowed core {core} is in a node"
            );
        }
        assert!(
            topology
                .nics
                .iter()
                .all(|nic| nic.name != "lo" || !nic.physical),
            "loopback is not physical"
        );
        if cfg!(feature = "hwloc") {
            assert_eq!(
                topology.source,
                TopologySource::Hwloc,
                "{:?}",
                topology.warnings
            );
        }
        // The admin API serves this as JSON.
        let json = serde_json::to_value(&topology).unwrap();
        assert!(json["nodes"][0]["cores"].is_array());
    }
}
