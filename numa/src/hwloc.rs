//! The preferred topology reader: NUMA nodes, their cores and the node of each network device, as
//! hwloc (through hwlocality) sees them.
//!
//! It owns every call into hwlocality, so the rest of the crate never sees an hwloc type. It must
//! never panic on an hwloc error: it returns a message and `Topology::discover` falls back to
//! sysfs. Built without the `hwloc` feature it always returns that message.

use crate::topology::{NicPlacement, NumaNode};

/// What hwloc told us, before `Topology::assemble` adds the affinity mask and repairs gaps.
pub(crate) struct HwlocFindings {
    /// NUMA nodes with their online cores.
    pub nodes: Vec<NumaNode>,
    /// Network devices hwloc lists (device-backed ones only).
    pub nics: Vec<NicPlacement>,
}

/// Reads nodes and network devices with hwloc; the error says what hwloc refused.
#[cfg(feature = "hwloc")]
pub(crate) fn read() -> Result<HwlocFindings, String> {
    use crate::topology::{CoreId, NodeId};
    use hwlocality::object::attributes::ObjectAttributes;
    use hwlocality::object::types::{OSDeviceType, ObjectType};
    use hwlocality::topology::builder::{BuildFlags, TypeFilter};
    use hwlocality::Topology as HwlocTopology;

    // INCLUDE_DISALLOWED keeps cores outside our cgroup in their nodes, so a "core 5 is not
    // allowed" error can tell a core that exists from one that does not. What we may use is
    // decided from sched_getaffinity, not from hwloc.
    let topology = HwlocTopology::builder()
        .with_flags(BuildFlags::INCLUDE_DISALLOWED)
        .map_err(|e| format!("setting hwloc build flags: {e}"))?
        .with_io_type_filter(TypeFilter::KeepImportant)
        .map_err(|e| format!("enabling hwloc I/O discovery: {e}"))?
        .build()
        .map_err(|e| format!("building the hwloc topology: {e}"))?;

    let mut nodes = Vec::new();
    for node in topology.objects_with_type(ObjectType::NUMANode) {
        let id = NodeId(node.os_index().unwrap_or_else(|| node.logical_index()));
        let cores = node
            .cpuset()
            .map(|set| set.iter_set().map(|pu| CoreId(usize::from(pu))).collect())
            .unwrap_or_default();
        nodes.push(NumaNode { id, cores });
    }
    if nodes.is_empty() {
        return Err("hwloc reported no NUMA node".to_string());
    }
    nodes.sort_by_key(|node| node.id);

    let mut nics = Vec::new();
    for device in topology.os_devices() {
        let is_network = matches!(
            device.attributes(),
            Some(ObjectAttributes::OSDevice(attributes))
                if attributes.device_type() == OSDeviceType::Network
        );
        let Some(name) = device.name().and_then(|name| name.to_str().ok()) else {
            continue;
        };
        if !is_network {
            continue;
        }
        // An I/O object has no nodeset; its first non-I/O ancestor (package, group or machine)
        // carries its locality. Attached to the whole machine of a multi-node box means unknown.
        let nodeset = device
            .first_non_io_ancestor()
            .and_then(|ancestor| ancestor.nodeset());
        let node = nodeset.and_then(|set| match set.weight() {
            Some(1) => set.first_set().map(|index| NodeId(usize::from(index))),
            _ => None,
        });
        nics.push(NicPlacement {
            name: name.to_string(),
            node,
            physical: true,
        });
    }
    Ok(HwlocFindings { nodes, nics })
}

/// Without the `hwloc` feature there is nothing to read; discovery goes straight to sysfs.
#[cfg(not(feature = "hwloc"))]
pub(crate) fn read() -> Result<HwlocFindings, String> {
    Err("this build has no hwloc support (feature `hwloc` off)".to_string())
}

#[cfg(all(test, feature = "hwloc"))]
mod tests {
    use super::*;

    #[test]
    fn hwloc_reads_this_machine() {
        let findings = read().expect("hwloc works on the CI machine kind");
        assert!(!findings.nodes.is_empty());
        assert!(findings.nodes.iter().any(|node| !node.cores.is_empty()));
        // hwloc never lists loopback: it is not a device.
        assert!(findings.nics.iter().all(|nic| nic.name != "lo"));
    }
}
