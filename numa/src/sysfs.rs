//! The fallback topology reader: NUMA nodes from `/sys/devices/system/node`, NICs from
//! `/sys/class/net`.
//!
//! Every function takes the filesystem root so tests can feed a fake tree. This module only reads;
//! it must never write to sysfs nor decide placement.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::topology::{CoreList, NicPlacement, NodeId, NumaNode};

/// How many `lower_*` hops (bond over VLAN over device, ...) are followed to find a device.
const LOWER_DEPTH_MAX: usize = 4;

/// Reads every `nodeN/cpulist` under `<root>/sys/devices/system/node`, ascending by node id.
///
/// Fails when the folder is missing (kernel without NUMA support) or lists no node.
pub fn read_nodes(root: &Path) -> io::Result<Vec<NumaNode>> {
    let folder = root.join("sys/devices/system/node");
    let mut nodes = Vec::new();
    for entry in fs::read_dir(&folder).map_err(|e| with_path(e, &folder))? {
        let entry = entry.map_err(|e| with_path(e, &folder))?;
        let name = entry.file_name();
        let Some(id) = name
            .to_str()
            .and_then(|n| n.strip_prefix("node"))
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        let cpulist = entry.path().join("cpulist");
        let text = fs::read_to_string(&cpulist).map_err(|e| with_path(e, &cpulist))?;
        let cores = text
            .parse::<CoreList>()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        nodes.push(NumaNode {
            id: NodeId(id),
            cores: cores.0,
        });
    }
    if nodes.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{} lists no nodeN folder", folder.display()),
        ));
    }
    nodes.sort_by_key(|node| node.id);
    Ok(nodes)
}

/// Lists `<root>/sys/class/net/*` with each interface's node; an unreadable folder gives none.
pub fn read_nics(root: &Path) -> Vec<NicPlacement> {
    let folder = root.join("sys/class/net");
    let Ok(entries) = fs::read_dir(&folder) else {
        return Vec::new();
    };
    let mut nics: Vec<NicPlacement> = entries
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| entry.file_name().into_string().ok())
        .map(|name| NicPlacement {
            physical: folder.join(&name).join("device").exists(),
            node: nic_node(root, &name),
            name,
        })
        .collect();
    nics.sort_by(|a, b| a.name.cmp(&b.name));
    nics
}

/// The node interface `name` hangs off, or `None` when sysfs does not say (`numa_node` is -1).
///
/// A device-backed interface is looked up on its device and the device's parents (a virtio NIC's
/// `numa_node` is on its PCI parent); a virtual one (bond, VLAN) on its lower interfaces, when
/// they all agree.
pub fn nic_node(root: &Path, name: &str) -> Option<NodeId> {
    nic_node_within(root, name, LOWER_DEPTH_MAX)
}

/// `nic_node`, following at most `depth_left` more `lower_*` hops.
fn nic_node_within(root: &Path, name: &str, depth_left: usize) -> Option<NodeId> {
    let interface = root.join("sys/class/net").join(name);
    let device = interface.join("device");
    if device.exists() {
        return device_node(root, &device);
    }
    if depth_left == 0 {
        return None;
    }
    let lowers: Vec<String> = fs::read_dir(&interface)
        .ok()?
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter_map(|entry| entry.strip_prefix("lower_").map(str::to_string))
        .collect();
    let mut found: Option<NodeId> = None;
    for lower in lowers {
        let node = nic_node_within(root, &lower, depth_left - 1)?;
        if found.is_some_and(|seen| seen != node) {
            return None;
        }
        found = Some(node);
    }
    found
}

/// Walks from a device up its parents to the first `numa_node` file, staying inside `/sys/devices`.
fn device_node(root: &Path, device: &Path) -> Option<NodeId> {
    let devices_root = fs::canonicalize(root.join("sys/devices")).ok()?;
    let mut current: PathBuf = fs::canonicalize(device).ok()?;
    while current.starts_with(&devices_root) && current != devices_root {
        if let Ok(text) = fs::read_to_string(current.join("numa_node")) {
            // -1 means "no affinity" on this level; a parent may still know.
            if let Ok(node) = text.trim().parse::<usize>() {
                return Some(NodeId(node));
            }
        }
        if !current.pop() {
            break;
        }
    }
    None
}

/// Prefixes an I/O error with the path it is about.
fn with_path(error: io::Error, path: &Path) -> io::Error {
    io::Error::new(error.kind(), format!("{}: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::CoreId;
    use std::os::unix::fs::symlink;

    /// A scratch folder under the system temp dir, removed on drop.
    struct FakeRoot(PathBuf);

    impl FakeRoot {
        fn new(label: &str) -> FakeRoot {
            let path = std::env::temp_dir().join(format!(
                "tachyon-numa-{label}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = fs::remove_dir_all(&path);
            fs::create_dir_all(&path).unwrap();
            FakeRoot(path)
        }

        fn write(&self, relative: &str, text: &str) {
            let path = self.0.join(relative);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }

        fn link(&self, relative: &str, target: &str) {
            let path = self.0.join(relative);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            symlink(self.0.join(target), path).unwrap();
        }
    }

    impl Drop for FakeRoot {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// Two nodes; `eth0` a virtio NIC whose node is on its PCI parent (node 1), `eth1` a NIC with
    /// no node, `bond0` over `eth0`, `lo` virtual.
    fn two_node_machine() -> FakeRoot {
        let root = FakeRoot::new("sysfs");
        root.write("sys/devices/system/node/node0/cpulist", "0-7\n");
        root.write("sys/devices/system/node/node1/cpulist", "8-15\n");
        root.write("sys/devices/system/node/online", "0-1\n");
        root.write("sys/devices/pci0000:80/0000:80:03.0/numa_node", "1\n");
        root.write(
            "sys/devices/pci0000:80/0000:80:03.0/virtio2/vendor",
            "0x1af4\n",
        );
        root.link(
            "sys/class/net/eth0/device",
            "sys/devices/pci0000:80/0000:80:03.0/virtio2",
        );
        root.write("sys/devices/pci0000:00/0000:00:04.0/numa_node", "-1\n");
        root.link(
            "sys/class/net/eth1/device",
            "sys/devices/pci0000:00/0000:00:04.0",
        );
        root.write("sys/class/net/lo/mtu", "65536\n");
        root.write("sys/class/net/bond0/mtu", "1500\n");
        root.link("sys/class/net/bond0/lower_eth0", "sys/class/net/eth0");
        root
    }

    #[test]
    fn nodes_are_read_from_cpulists() {
        let root = two_node_machine();
        let nodes = read_nodes(&root.0).unwrap();
        assert_eq!(nodes.len(), 2);
        assert_eq!(nodes[1].id, NodeId(1));
        assert_eq!(nodes[1].cores, (8..16).map(CoreId).collect::<Vec<_>>());
    }

    #[test]
    fn missing_node_folder_is_an_error() {
        let root = FakeRoot::new("empty");
        let error = read_nodes(&root.0).unwrap_err();
        assert!(
            error.to_string().contains("sys/devices/system/node"),
            "{error}"
        );
    }

    #[test]
    fn nic_nodes_follow_parents_and_lower_interfaces() {
        let root = two_node_machine();
        let nics = read_nics(&root.0);
        let find = |name: &str| nics.iter().find(|n| n.name == name).unwrap().clone();
        assert_eq!(
            find("eth0").node,
            Some(NodeId(1)),
            "numa_node of the PCI parent"
        );
        assert!(find("eth0").physical);
        assert_eq!(find("eth1").node, None, "-1 means unknown");
        assert_eq!(
            find("bond0").node,
            Some(NodeId(1)),
            "bond follows its lower device"
        );
        assert!(!find("bond0").physical);
        assert_eq!(find("lo").node, None);
        assert!(!find("lo").physical);
    }

    #[test]
    fn this_machine_has_sysfs_nodes() {
        let nodes = read_nodes(Path::new("/")).unwrap();
        assert!(nodes.iter().any(|node| !node.cores.is_empty()));
    }
}
