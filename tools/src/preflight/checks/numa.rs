//! NUMA checks: the topology, the node each physical NIC hangs off, and where the configured cores sit.
//!
//! Network shards run on node 0, so the NIC should be there too; a NIC on another node makes every
//! packet cross the socket interconnect. Only physical interfaces count: `lo` and anything under
//! `/sys/devices/virtual/net` (bridges, veth, ifb, tun) have no node.

use super::{format_cpu_list, parse_cpu_list, read_trimmed, Context, Finding};
use crate::preflight::check::{Grade, Value, Want};
use crate::preflight::host::HostView;

/// NUMA nodes and their cores, in node order; `None` when sysfs has no node directory.
fn nodes(host: &dyn HostView) -> Option<Vec<(u32, Vec<u32>)>> {
    let names = host.list_dir("/sys/devices/system/node").ok()?;
    let mut nodes = Vec::new();
    for name in names {
        let Some(node) = name
            .strip_prefix("node")
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let cores = read_trimmed(host, &format!("/sys/devices/system/node/{name}/cpulist"))
            .ok()
            .and_then(|text| parse_cpu_list(&text))
            .unwrap_or_default();
        nodes.push((node, cores));
    }
    nodes.sort_by_key(|(node, _)| *node);
    if nodes.is_empty() {
        None
    } else {
        Some(nodes)
    }
}

/// Names of physical network interfaces, sorted.
fn physical_interfaces(host: &dyn HostView) -> Vec<String> {
    let virtual_interfaces = host
        .list_dir("/sys/devices/virtual/net")
        .unwrap_or_default();
    host.list_dir("/sys/class/net")
        .unwrap_or_default()
        .into_iter()
        .filter(|name| name != "lo" && !virtual_interfaces.contains(name))
        // A physical interface has a `device` link to its bus device.
        .filter(|name| {
            host.list_dir(&format!("/sys/class/net/{name}/device"))
                .is_ok()
        })
        .collect()
}

/// The node the interface's device reports; `None` for -1 or a missing file.
fn interface_node(host: &dyn HostView, interface: &str) -> Option<u32> {
    // PCI NICs carry numa_node on their device; virtio NICs carry it on the parent PCI device.
    let own = format!("/sys/class/net/{interface}/device/numa_node");
    let parent = format!("/sys/class/net/{interface}/device/../numa_node");
    let text = read_trimmed(host, &own)
        .or_else(|_| read_trimmed(host, &parent))
        .ok()?;
    // -1 means the firmware did not say.
    text.parse::<i64>()
        .ok()
        .and_then(|node| u32::try_from(node).ok())
}

/// Reports the nodes and their cores.
pub fn topology(host: &dyn HostView, _context: &Context) -> Finding {
    match nodes(host) {
        None => Finding::new(Grade::NotApplicable, Value::text("no NUMA information (one node)"), Want::Any, Want::Any)
            .detail("/sys/devices/system/node is missing: a kernel without NUMA support; the whole host is one node"),
        Some(nodes) => {
            let list = nodes.iter().map(|(node, cores)| format!("node{node} {}", format_cpu_list(cores))).collect::<Vec<_>>().join(", ");
            let noun = if nodes.len() == 1 { "node" } else { "nodes" };
            Finding::new(Grade::Recommended, Value::Text(format!("{} {noun}: {list}", nodes.len())), Want::Any, Want::Any)
        }
    }
}

/// The node network shards should run on: the first physical NIC's known node, else node 0.
fn nic_node(host: &dyn HostView) -> u32 {
    physical_interfaces(host)
        .iter()
        .find_map(|interface| interface_node(host, interface))
        .unwrap_or(0)
}

/// Each physical NIC should sit on node 0, where the network shards run.
pub fn nic(host: &dyn HostView, _context: &Context) -> Finding {
    let want = Want::Equals(Value::text("node 0"));
    let interfaces = physical_interfaces(host);
    if interfaces.is_empty() {
        return Finding::new(
            Grade::NotApplicable,
            Value::text("no physical interface"),
            want.clone(),
            want,
        )
        .detail("only loopback and virtual interfaces: nothing to place");
    }
    let placed: Vec<(String, Option<u32>)> = interfaces
        .iter()
        .map(|interface| (interface.clone(), interface_node(host, interface)))
        .collect();
    let current = placed
        .iter()
        .map(|(interface, node)| match node {
            Some(node) => format!("{interface}: node {node}"),
            None => format!("{interface}: unknown"),
        })
        .collect::<Vec<_>>()
        .join(", ");
    let node_count = nodes(host).map_or(1, |nodes| nodes.len());
    if node_count <= 1 {
        // On one node every core is local to every NIC.
        return Finding::new(
            Grade::Recommended,
            Value::Text(format!("{current} (single node)")),
            want.clone(),
            want,
        );
    }
    let remote: Vec<&str> = placed
        .iter()
        .filter(|(_, node)| node.is_some_and(|node| node != 0))
        .map(|(interface, _)| interface.as_str())
        .collect();
    let unknown: Vec<&str> = placed
        .iter()
        .filter(|(_, node)| node.is_none())
        .map(|(interface, _)| interface.as_str())
        .collect();
    let finding = Finding::new(Grade::Recommended, Value::Text(current), want.clone(), want);
    if !remote.is_empty() {
        Finding { grade: Grade::Below, ..finding }.detail(format!(
            "{} not on node 0, where the network shards run: every packet crosses the interconnect; move the NIC (or its cable) to a node-0 slot, or pin network shards to its node",
            remote.join(", ")
        ))
    } else if !unknown.is_empty() {
        Finding {
            grade: Grade::Unknown,
            ..finding
        }
        .detail(format!(
            "the firmware reports no NUMA node for {}: verify the slot's socket by hand",
            unknown.join(", ")
        ))
    } else {
        finding
    }
}

/// Configured cores must exist; on a multi-node host they should sit on the NIC's node.
pub fn cores(host: &dyn HostView, context: &Context) -> Finding {
    let want_min = Want::Equals(Value::text("online cores"));
    let Some(configured) = context.cores() else {
        return Finding::new(
            Grade::NotApplicable,
            Value::text("not configured"),
            want_min,
            Want::Any,
        )
        .detail("no [runtime] cores in the config: placement chooses cores at start-up");
    };
    let nodes = nodes(host);
    let online: Vec<u32> = match &nodes {
        Some(nodes) => nodes
            .iter()
            .flat_map(|(_, cores)| cores.iter().copied())
            .collect(),
        None => match read_trimmed(host, "/sys/devices/system/cpu/online")
            .ok()
            .and_then(|text| parse_cpu_list(&text))
        {
            Some(cores) => cores,
            None => {
                return super::unknown(
                    "cannot read the online CPUs from sysfs".into(),
                    want_min,
                    Want::Any,
                )
            }
        },
    };
    let current = Value::Text(format_cpu_list(configured));
    let missing: Vec<u32> = configured
        .iter()
        .copied()
        .filter(|core| !online.contains(core))
        .collect();
    if !missing.is_empty() {
        return Finding::new(Grade::Below, current, want_min, Want::Any).detail(format!(
            "{} requested, available {}: fix [runtime] cores in the config",
            cores_phrase(&missing),
            format_cpu_list(&online)
        ));
    }
    let Some(nodes) = nodes.filter(|nodes| nodes.len() > 1) else {
        return Finding::new(
            Grade::Recommended,
            current,
            want_min,
            Want::text_on_node(0, &online),
        );
    };
    let node = nic_node(host);
    let local = nodes
        .iter()
        .find(|(n, _)| *n == node)
        .map(|(_, cores)| cores.clone())
        .unwrap_or_default();
    let want_rec = Want::text_on_node(node, &local);
    let remote: Vec<u32> = configured
        .iter()
        .copied()
        .filter(|core| !local.contains(core))
        .collect();
    if remote.is_empty() {
        Finding::new(Grade::Recommended, current, want_min, want_rec)
    } else {
        Finding::new(Grade::Minimum, current, want_min, want_rec).detail(format!(
            "{} not on node {node}, the NIC's node ({}): their traffic crosses the interconnect",
            cores_phrase(&remote),
            format_cpu_list(&local)
        ))
    }
}

/// "core 4" or "cores 4-5,7", for messages.
fn cores_phrase(cores: &[u32]) -> String {
    let noun = if cores.len() == 1 { "core" } else { "cores" };
    format!("{noun} {}", format_cpu_list(cores))
}

impl Want {
    /// "node N (cores)" as a recommendation.
    fn text_on_node(node: u32, cores: &[u32]) -> Want {
        Want::Equals(Value::Text(format!(
            "node {node} ({})",
            format_cpu_list(cores)
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use crate::preflight::check::{Status, Value};

    #[test]
    fn topology_lists_nodes_or_says_none() {
        let host = healthy_host();
        let result = run("numa.topology", &host, &plain_context());
        assert_eq!(result.status, Status::Pass);
        assert_eq!(result.current, Value::text("2 nodes: node0 0-1, node1 2-3"));
        host.remove("/sys/devices/system/node");
        assert_eq!(
            run("numa.topology", &host, &plain_context()).status,
            Status::Info
        );
    }

    #[test]
    fn nic_on_node_zero_passes_elsewhere_warns() {
        let host = healthy_host();
        let result = run("numa.nic", &host, &plain_context());
        assert_eq!(result.status, Status::Pass);
        assert_eq!(result.current, Value::text("eth0: node 0"));

        host.write("/sys/class/net/eth1/device/numa_node", "1\n");
        let result = run("numa.nic", &host, &plain_context());
        assert_eq!(result.status, Status::Warn);
        assert!(result.detail.unwrap().starts_with("eth1 not on node 0"));
    }

    #[test]
    fn nic_node_unknown_is_info_and_single_node_passes() {
        let host = healthy_host();
        host.write("/sys/class/net/eth0/device/numa_node", "-1\n");
        assert_eq!(
            run("numa.nic", &host, &plain_context()).status,
            Status::Info
        );

        host.remove("/sys/devices/system/node/node1");
        let result = run("numa.nic", &host, &plain_context());
        assert_eq!(result.status, Status::Pass);
        assert_eq!(result.current, Value::text("eth0: unknown (single node)"));
    }

    #[test]
    fn virtual_interfaces_are_skipped_and_virtio_reads_the_parent() {
        let host = healthy_host();
        host.remove("/sys/class/net/eth0");
        // A bridge with a device-less entry, an ifb listed as virtual, and a virtio NIC whose
        // node is on the parent PCI device, reached through the `device` symlink.
        host.mkdir("/sys/class/net/br0");
        host.write("/sys/devices/virtual/net/ifb0/device/x", "");
        host.symlink("/sys/devices/virtual/net/ifb0", "/sys/class/net/ifb0");
        host.write("/sys/devices/pci0000:00/0000:00:03.0/numa_node", "1\n");
        host.mkdir("/sys/devices/pci0000:00/0000:00:03.0/virtio2");
        host.symlink(
            "/sys/devices/pci0000:00/0000:00:03.0/virtio2",
            "/sys/class/net/ens3/device",
        );
        let result = run("numa.nic", &host, &plain_context());
        assert_eq!(result.current, Value::text("ens3: node 1"));
        assert_eq!(result.status, Status::Warn);

        host.remove("/sys/class/net/ens3");
        assert_eq!(
            run("numa.nic", &host, &plain_context()).status,
            Status::Info
        );
    }

    #[test]
    fn configured_cores_pass_warn_fail() {
        let host = healthy_host();
        assert_eq!(
            run("numa.cores", &host, &plain_context()).status,
            Status::Info
        );
        assert_eq!(
            run(
                "numa.cores",
                &host,
                &config_context("[runtime]\ncores = [0, 1]\n")
            )
            .status,
            Status::Pass
        );

        let result = run(
            "numa.cores",
            &host,
            &config_context("[runtime]\ncores = [1, 2]\n"),
        );
        assert_eq!(result.status, Status::Warn);
        assert!(result.detail.unwrap().starts_with("core 2 not on node 0"));

        let result = run(
            "numa.cores",
            &host,
            &config_context("[runtime]\ncores = [0, 7, 8]\n"),
        );
        assert_eq!(result.status, Status::Fail);
        assert_eq!(
            result.detail.unwrap(),
            "cores 7-8 requested, available 0-3: fix [runtime] cores in the config"
        );
    }

    #[test]
    fn configured_cores_follow_the_nic_to_its_node() {
        let host = healthy_host();
        host.write("/sys/class/net/eth0/device/numa_node", "1\n");
        assert_eq!(
            run(
                "numa.cores",
                &host,
                &config_context("[runtime]\ncores = [2, 3]\n")
            )
            .status,
            Status::Pass
        );
        assert_eq!(
            run(
                "numa.cores",
                &host,
                &config_context("[runtime]\ncores = [0, 1]\n")
            )
            .status,
            Status::Warn
        );
    }
}
