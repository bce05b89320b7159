//! `plan` against synthetic machines: every rule, every refusal.

use super::*;
use crate::topology::{NicPlacement, NumaNode};

fn cores(ids: impl IntoIterator<Item = usize>) -> Vec<CoreId> {
    ids.into_iter().map(CoreId).collect()
}

fn nic(name: &str, node: Option<usize>, physical: bool) -> NicPlacement {
    NicPlacement {
        name: name.to_string(),
        node: node.map(NodeId),
        physical,
    }
}

/// `node_cores[i]` are node i's cores; `allowed = None` allows them all.
fn machine(
    node_cores: &[Vec<CoreId>],
    allowed: Option<Vec<CoreId>>,
    nics: Vec<NicPlacement>,
) -> Topology {
    let nodes = node_cores
        .iter()
        .enumerate()
        .map(|(id, cores)| NumaNode {
            id: NodeId(id),
            cores: cores.clone(),
        })
        .collect();
    Topology::assemble(TopologySource::Hwloc, nodes, allowed, nics, Vec::new())
}

/// This VM: one node, cores 0-1, eth0 a virtio NIC.
fn laptop() -> Topology {
    machine(
        &[cores(0..2)],
        None,
        vec![nic("eth0", Some(0), true), nic("lo", None, false)],
    )
}

/// A 2-socket server: node 0 cores 0-7, node 1 cores 8-15, the NIC on node 1.
fn two_socket() -> Topology {
    machine(
        &[cores(0..8), cores(8..16)],
        None,
        vec![
            nic("eno1", None, true),
            nic("ens1f0", Some(1), true),
            nic("lo", None, false),
        ],
    )
}

fn auto() -> PlacementRequest {
    PlacementRequest::default()
}

fn shard_cores(plan: &PlacementPlan) -> Vec<CoreId> {
    plan.shards.iter().map(|shard| shard.core).collect()
}

#[test]
fn one_node_two_cores_gives_one_shard_and_a_control_core() {
    let plan = plan(&laptop(), &auto()).unwrap();
    assert_eq!(shard_cores(&plan), cores([1]));
    assert_eq!(plan.shards[0].node, NodeId(0));
    assert_eq!(plan.control_plane, Some(CoreId(0)));
    assert_eq!(plan.network_node, NodeId(0));
    assert_eq!(plan.nic.as_deref(), Some("eth0"));
    assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
    assert_eq!(
        plan.to_string(),
        "placement: 1 network shard on 1 NUMA node (topology from hwloc, allowed cores 0-1)\n  \
         network node 0: NIC eth0 (first physical interface with a known node) is on node 0\n  \
         control plane: core 0\n  shard 0: core 1 (node 0)\n"
    );
}

#[test]
fn one_node_without_reservation_uses_both_cores() {
    let request = PlacementRequest {
        reserve_control_core: false,
        ..auto()
    };
    let plan = plan(&laptop(), &request).unwrap();
    assert_eq!(shard_cores(&plan), cores([0, 1]));
    assert_eq!(plan.control_plane, None);
    assert!(plan.warnings.is_empty());
}

#[test]
fn single_allowed_core_shares_it_with_the_control_plane() {
    let topology = machine(&[cores(0..2)], Some(cores([1])), vec![]);
    let plan = plan(&topology, &auto()).unwrap();
    assert_eq!(shard_cores(&plan), cores([1]));
    assert_eq!(plan.control_plane, None);
    assert!(
        plan.warnings[0].contains("only one allowed core (1)"),
        "{:?}",
        plan.warnings
    );
    assert!(
        plan.reason.contains("warning: only one allowed core"),
        "{}",
        plan.reason
    );
}

#[test]
fn two_sockets_keep_network_shards_on_the_nic_node() {
    let plan = plan(&two_socket(), &auto()).unwrap();
    assert_eq!(plan.network_node, NodeId(1));
    assert_eq!(
        plan.nic.as_deref(),
        Some("ens1f0"),
        "eno1 has no known node and is skipped"
    );
    assert_eq!(
        shard_cores(&plan),
        cores(8..16),
        "all of node 1; the control plane lives elsewhere"
    );
    assert!(plan.shards.iter().all(|shard| shard.node == NodeId(1)));
    assert_eq!(
        plan.control_plane,
        Some(CoreId(0)),
        "control plane off the NIC's node"
    );
    assert!(plan.reason.starts_with("NIC ens1f0"), "{}", plan.reason);
    let text = plan.to_string();
    assert!(text.contains("shards 0-7: cores 8-15 (node 1)"), "{text}");
    assert!(text.contains("on 2 NUMA nodes"), "{text}");
}

#[test]
fn requested_nic_decides_the_node() {
    let request = PlacementRequest {
        nic: Some("eno1".into()),
        ..auto()
    };
    let plan = plan(&two_socket(), &request).unwrap();
    assert_eq!(
        plan.network_node,
        NodeId(0),
        "eno1's node is unknown: node 0"
    );
    assert!(
        plan.warnings[0].contains("NUMA node of NIC eno1 is unknown"),
        "{:?}",
        plan.warnings
    );
    // The control plane takes node 1's first core so node 0 keeps all 8 for shards.
    assert_eq!(plan.control_plane, Some(CoreId(8)));
    assert_eq!(shard_cores(&plan), cores(0..8));
}

#[test]
fn unknown_nic_is_refused_with_the_known_ones() {
    let request = PlacementRequest {
        nic: Some("eth9".into()),
        ..auto()
    };
    let error = plan(&two_socket(), &request).unwrap_err();
    assert_eq!(
        error.to_string(),
        "network interface \"eth9\" not found; this machine has eno1, ens1f0, lo"
    );
}

#[test]
fn requested_nic_without_an_interface_list_degrades_to_node_zero() {
    let topology = machine(&[cores(0..2)], None, vec![]);
    let request = PlacementRequest {
        nic: Some("eth0".into()),
        ..auto()
    };
    let plan = plan(&topology, &request).unwrap();
    assert_eq!(plan.network_node, NodeId(0));
    assert!(
        plan.warnings[0].contains("no interface list"),
        "{:?}",
        plan.warnings
    );
}

#[test]
fn no_nic_means_node_zero() {
    let topology = machine(
        &[cores(0..4), cores(4..8)],
        None,
        vec![nic("lo", None, false)],
    );
    let plan = plan(&topology, &auto()).unwrap();
    assert_eq!(plan.network_node, NodeId(0));
    assert_eq!(
        plan.reason,
        "no physical NIC with a known NUMA node, so node 0"
    );
    assert_eq!(plan.control_plane, Some(CoreId(4)));
    assert_eq!(shard_cores(&plan), cores(0..4));
}

#[test]
fn restricted_mask_is_respected() {
    // taskset -c 2-5,10-11 on the 2-socket server.
    let topology = machine(
        &[cores(0..8), cores(8..16)],
        Some(cores([2, 3, 4, 5, 10, 11])),
        vec![nic("ens1f0", Some(1), true)],
    );
    let plan = plan(&topology, &auto()).unwrap();
    assert_eq!(plan.network_node, NodeId(1));
    assert_eq!(plan.control_plane, Some(CoreId(2)));
    assert_eq!(shard_cores(&plan), cores([10, 11]));
    assert_eq!(plan.allowed_cores.to_string(), "2-5,10-11");
}

#[test]
fn nic_node_without_allowed_cores_moves_shards_with_a_warning() {
    let topology = machine(
        &[cores(0..8), cores(8..16)],
        Some(cores(0..4)),
        vec![nic("ens1f0", Some(1), true)],
    );
    let plan = plan(&topology, &auto()).unwrap();
    assert_eq!(plan.network_node, NodeId(0));
    assert_eq!(plan.control_plane, Some(CoreId(0)));
    assert_eq!(shard_cores(&plan), cores(1..4));
    assert!(
        plan.warnings[0].contains("node 1 has no allowed core"),
        "{:?}",
        plan.warnings
    );
    assert!(
        plan.reason
            .contains("but it has no allowed core, so node 0"),
        "{}",
        plan.reason
    );
}

#[test]
fn counted_shards_fill_the_nic_node_first() {
    let request = PlacementRequest {
        shards: Some(4),
        ..auto()
    };
    let plan = plan(&two_socket(), &request).unwrap();
    assert_eq!(shard_cores(&plan), cores(8..12));
    assert_eq!(plan.control_plane, Some(CoreId(0)));
    assert!(plan.warnings.is_empty());
}

#[test]
fn counted_shards_spill_to_other_nodes_with_a_warning() {
    let request = PlacementRequest {
        shards: Some(12),
        ..auto()
    };
    let plan = plan(&two_socket(), &request).unwrap();
    assert_eq!(plan.control_plane, Some(CoreId(0)));
    let expected: Vec<CoreId> = cores((8..16).chain(1..5));
    assert_eq!(shard_cores(&plan), expected);
    assert_eq!(plan.shards[8].node, NodeId(0));
    assert!(
        plan.warnings[0].starts_with("4 of 12 shards spill off node 1 to node 0 (cores 1-4)"),
        "{:?}",
        plan.warnings
    );
    assert!(
        plan.reason.contains("; warning: 4 of 12 shards spill"),
        "{}",
        plan.reason
    );
}

#[test]
fn counted_shards_on_every_core_leave_the_control_plane_unpinned() {
    let request = PlacementRequest {
        shards: Some(2),
        ..auto()
    };
    let plan = plan(&laptop(), &request).unwrap();
    assert_eq!(shard_cores(&plan), cores([0, 1]));
    assert_eq!(plan.control_plane, None);
    assert!(
        plan.warnings[0].contains("control plane runs unpinned"),
        "{:?}",
        plan.warnings
    );
    assert!(plan.to_string().contains("control plane: unpinned"));
}

#[test]
fn too_many_shards_names_requested_and_available() {
    let request = PlacementRequest {
        shards: Some(5),
        ..auto()
    };
    let error = plan(&laptop(), &request).unwrap_err();
    assert_eq!(
        error.to_string(),
        "requested 5 shards but only 2 cores are allowed (0-1) on node 0"
    );
    assert_eq!(
        error,
        PlacementError::TooManyShards {
            requested: 5,
            available: 2,
            allowed: CoreList(cores(0..2)),
            nodes: vec![NodeId(0)],
        }
    );

    let request = PlacementRequest {
        shards: Some(17),
        ..auto()
    };
    let error = plan(&two_socket(), &request).unwrap_err();
    assert_eq!(
        error.to_string(),
        "requested 17 shards but only 16 cores are allowed (0-15) on nodes 0-1"
    );
}

#[test]
fn zero_shards_is_refused() {
    let request = PlacementRequest {
        shards: Some(0),
        ..auto()
    };
    assert_eq!(
        plan(&laptop(), &request).unwrap_err(),
        PlacementError::ZeroShards
    );
}

#[test]
fn explicit_cores_are_used_in_order() {
    let request = PlacementRequest {
        cores: Some(cores([15, 9])),
        ..auto()
    };
    let plan = plan(&two_socket(), &request).unwrap();
    assert_eq!(shard_cores(&plan), cores([15, 9]));
    assert_eq!(plan.shards[1].shard, 1);
    assert_eq!(plan.control_plane, Some(CoreId(0)));
    assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
    let text = plan.to_string();
    assert!(
        text.contains("shard 0: core 15 (node 1)\n  shard 1: core 9 (node 1)"),
        "{text}"
    );
}

#[test]
fn explicit_cores_off_the_nic_node_are_warned_about() {
    let request = PlacementRequest {
        cores: Some(cores([2, 3, 8])),
        ..auto()
    };
    let plan = plan(&two_socket(), &request).unwrap();
    assert_eq!(plan.control_plane, Some(CoreId(0)));
    assert!(
        plan.warnings[0].starts_with("listed cores 2-3 are not on the network node 1"),
        "{:?}",
        plan.warnings
    );
}

#[test]
fn explicit_cores_taking_every_core_leave_no_control_core() {
    let request = PlacementRequest {
        cores: Some(cores([0, 1])),
        ..auto()
    };
    let plan = plan(&laptop(), &request).unwrap();
    assert_eq!(plan.control_plane, None);
    assert!(plan.warnings[0].contains("runs unpinned"));
}

#[test]
fn explicit_missing_core_names_the_core_and_the_allowed_list() {
    let request = PlacementRequest {
        cores: Some(cores([5])),
        ..auto()
    };
    let error = plan(&laptop(), &request).unwrap_err();
    assert_eq!(
        error.to_string(),
        "core 5 does not exist here: this machine has cores 0-1, of which 0-1 are allowed"
    );
}

#[test]
fn explicit_disallowed_core_names_the_core_and_the_allowed_list() {
    let topology = machine(&[cores(0..8), cores(8..16)], Some(cores(0..4)), vec![]);
    let request = PlacementRequest {
        cores: Some(cores([2, 9])),
        ..auto()
    };
    let error = plan(&topology, &request).unwrap_err();
    assert_eq!(
        error,
        PlacementError::CoreNotAllowed {
            core: CoreId(9),
            allowed: CoreList(cores(0..4)),
        }
    );
    assert!(error
        .to_string()
        .starts_with("core 9 is not allowed for this process: allowed cores are 0-3"));
}

#[test]
fn explicit_core_list_errors() {
    let with = |listed: Vec<CoreId>, shards: Option<usize>| PlacementRequest {
        cores: Some(listed),
        shards,
        ..auto()
    };
    assert_eq!(
        plan(&laptop(), &with(vec![], None))
            .unwrap_err()
            .to_string(),
        "the explicit core list is empty; list at least one of the allowed cores (0-1)"
    );
    assert_eq!(
        plan(&laptop(), &with(cores([1, 1]), None)).unwrap_err(),
        PlacementError::DuplicateCore { core: CoreId(1) }
    );
    assert_eq!(
        plan(&laptop(), &with(cores([1]), Some(2))).unwrap_err(),
        PlacementError::ShardCountMismatch {
            shards: 2,
            cores: 1
        }
    );
    assert!(plan(&laptop(), &with(cores([1]), Some(1))).is_ok());
}

#[test]
fn plan_serializes_for_the_admin_api() {
    let plan = plan(&laptop(), &auto()).unwrap();
    let json = serde_json::to_value(&plan).unwrap();
    assert_eq!(
        json["shards"][0],
        serde_json::json!({"shard": 0, "core": 1, "node": 0})
    );
    assert_eq!(json["control_plane"], 0);
    assert_eq!(json["network_node"], 0);
    assert_eq!(json["source"], "hwloc");
    assert_eq!(json["allowed_cores"], serde_json::json!([0, 1]));
}

#[test]
fn plan_for_this_machine_is_sane() {
    let topology = Topology::discover();
    let plan = plan(&topology, &auto()).unwrap();
    assert!(!plan.shards.is_empty());
    for shard in &plan.shards {
        assert!(topology.allowed_cores.contains(&shard.core));
    }
    println!("{plan}");
}

#[test]
fn interleaved_core_numbering_is_grouped_by_node() {
    // Some BIOSes number cores round-robin across sockets: node 0 = even, node 1 = odd.
    let topology = machine(
        &[cores([0, 2, 4, 6]), cores([1, 3, 5, 7])],
        None,
        vec![nic("ens1f0", Some(1), true)],
    );
    let automatic = plan(&topology, &auto()).unwrap();
    assert_eq!(shard_cores(&automatic), cores([1, 3, 5, 7]));
    assert_eq!(automatic.control_plane, Some(CoreId(0)));
    let text = automatic.to_string();
    assert!(text.contains("  shard 1: core 3 (node 1)\n"), "{text}");

    let request = PlacementRequest {
        shards: Some(9),
        ..auto()
    };
    let error = plan(&topology, &request).unwrap_err();
    assert_eq!(
        error.to_string(),
        "requested 9 shards but only 8 cores are allowed (0-7) on nodes 0-1"
    );
}
