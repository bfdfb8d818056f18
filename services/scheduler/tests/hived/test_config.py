"""Reading HiveD configs and node inventories into the model, and refusing bad ones precisely."""

from __future__ import annotations

from pathlib import Path

import pytest

from pai_common.reference import reference_files
from pai_scheduler.hived import ConfigError, HivedAllocator, load_hived_config, parse_inventory_csv

# This project's test clusters (the same hardware as HiveD's example configs of the same names).
CLUSTERS = Path(__file__).resolve().parent / "clusters"
OWN_CONFIGS = sorted(CLUSTERS.glob("*.yaml"))
# HiveD's own example configs, beside the repository in a development checkout: loaded in addition.
REFERENCE_CONFIGS = reference_files("hived/configs", "*.yaml", "every HiveD example config loads")


@pytest.mark.parametrize("path", OWN_CONFIGS + REFERENCE_CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_config_loads(path: Path) -> None:
    config = load_hived_config(path.read_text())
    a = HivedAllocator(config)  # builds the cell trees and runs the feasibility check
    assert a.snapshot()["groups"] == []


def test_the_test_clusters_are_present() -> None:
    # Guards the parametrised test above against passing vacuously when the folder moves.
    assert [p.name for p in OWN_CONFIGS] == [
        "design.yaml",
        "hived-config-1.yaml",
        "hived-config-2.yaml",
        "hived-config-3.yaml",
    ]


@pytest.mark.reference("hived/configs")
def test_hived_example_configs_are_all_there() -> None:
    assert len(REFERENCE_CONFIGS) >= 12


def test_design_config_shape() -> None:
    config = load_hived_config((CLUSTERS / "design.yaml").read_text())
    chain = config.chain("4-DGX2-V100-NODE")
    assert chain.leaf_type == "DGX2-V100"
    assert chain.node_level == 5 and chain.top_level == 7
    assert chain.leaves_per_cell(7) == 64
    a = HivedAllocator(config)
    # One node name in two chains (two leaf types on one machine), with explicit leaf indices 8 and 9.
    assert sorted(c.chain for c in a.cluster.nodes["1.0.0.2"]) == ["3-DGX1-P100-NODE", "CT1-NODE"]
    assert a.cluster.leaf_at[("CT1-NODE", "1.0.0.2", 8)].pinned_id == "VC1-YQW-CT1"
    # Permuted indices on 1.0.0.0: the first switch of socket address 1 holds GPUs 1 and 3.
    node = next(c for c in a.cluster.nodes["1.0.0.0"])
    assert [leaf.leaf_index for leaf in node.leaves] == [1, 3, 4, 7, 0, 2, 6, 5]
    assert a.quota.quota["VC1"][("4-DGX2-V100-NODE", 6)] == 1
    assert a.quota.pinned_owner == {"VC1-YQW-CT1": "VC1", "VC1-YQW-DGX2": "VC1", "VC1-YQW-IB-DGX2": "VC1"}
    sku = load_hived_config((CLUSTERS / "hived-config-2.yaml").read_text()).sku("K80")
    assert sku is not None and (sku.cpu, sku.memory_mb) == (4.0, 8192)


BASE = """
physicalCluster:
  cellTypes:
    G-2: {childCellType: G, childCellNumber: 2}
    G-NODE: {childCellType: G-2, childCellNumber: 2, isNodeLevel: true}
    G-RACK: {childCellType: G-NODE, childCellNumber: 2}
  physicalCells:
  - cellType: G-RACK
    cellChildren: [{cellAddress: n0}, {cellAddress: n1}]
virtualClusters:
  a: {virtualCells: [{cellType: G-RACK.G-NODE, cellNumber: 1}]}
"""


def bad(old: str, new: str) -> str:
    assert old in BASE
    return BASE.replace(old, new)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (bad("G-2: {childCellType: G,", "G-2: {childCellType: G-RACK,"), "form a cycle"),
        (
            bad("childCellNumber: 2, isNodeLevel: true", "childCellNumber: 0, isNodeLevel: true"),
            "cellTypes.G-NODE.childCellNumber must be >= 1",
        ),
        (
            bad("{cellAddress: n0}, {cellAddress: n1}", "{cellAddress: n0}, {}"),
            "physicalCells[0].cellChildren[1].cellAddress: node-level cell",
        ),
        (
            bad("{cellAddress: n0}, {cellAddress: n1}", "{cellAddress: n0}"),
            "G-RACK (chain G-RACK, level 4) has childCellNumber 2, but 1 children are listed",
        ),
        (
            bad("{cellAddress: n0}, {cellAddress: n1}", "{cellAddress: n0}, {cellAddress: n0}"),
            "chain G-RACK: node 'n0' appears twice",
        ),
        (
            bad("cellType: G-RACK.G-NODE,", "cellType: G-RACK.G-2,"),
            "'G-2' is not the child cell type of 'G-RACK' in chain G-RACK",
        ),
        (
            bad("cellType: G-RACK.G-NODE,", "cellType: G-NODE,"),
            "must start with a cell type used in physicalCells",
        ),
        (
            bad("cellNumber: 1}", "cellNumber: 3}"),
            "insufficient physical cells at chain G-RACK level 3 (G-NODE): 3 needed, 2 available",
        ),
        (bad("isNodeLevel: true}", "isNodeLevel: false}"), "exactly one cell type with isNodeLevel"),
        (
            bad("cellNumber: 1}]}", "cellNumber: 1}], pinnedCells: [{pinnedCellId: nope}]}"),
            "virtualClusters.a.pinnedCells[0].pinnedCellId: unknown pinned cell 'nope'",
        ),
        (
            bad(
                "{cellAddress: n0}, {cellAddress: n1}", "{cellAddress: n0, cellType: G-2}, {cellAddress: n1}"
            ),
            "cellChildren[0].cellType: expected 'G-NODE' at level 3 of chain G-RACK",
        ),
        ("physicalCluster: [1]", "physicalCluster must be a mapping"),
    ],
)
def test_bad_configs_are_refused_with_the_field_named(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        HivedAllocator(load_hived_config(text))
    assert message in str(e.value)


def test_infeasible_assignment_names_chain_and_level_like_hived() -> None:
    # HiveD's testInvalidInitialAssignment: 2 CT1-NODE + 2 CT1-NODE.CT1 on three 2-leaf nodes, one leaf
    # pinned: the leaf level runs out.
    text = (CLUSTERS / "design.yaml").read_text()
    text = text.replace(
        "    - cellType: CT1-NODE\n      cellNumber: 1\n",
        "    - cellType: CT1-NODE\n      cellNumber: 2\n    - cellType: CT1-NODE.CT1\n      cellNumber: 2\n",
    )
    with pytest.raises(ConfigError, match=r"chain CT1-NODE level 1 \(CT1\): 2 needed, 1 available"):
        HivedAllocator(load_hived_config(text))


def test_pinned_cell_assigned_twice_is_refused() -> None:
    text = BASE.replace("cellAddress: n1}", "cellAddress: n1, pinnedCellId: P}").replace(
        "cellNumber: 1}]}",
        "cellNumber: 1}], pinnedCells: [{pinnedCellId: P}]}\n  b: {pinnedCells: [{pinnedCellId: P}]}",
    )
    with pytest.raises(ConfigError, match="pinned cell 'P' is already assigned to VC a"):
        load_hived_config(text)


INVENTORY = """node,leaf_type,leaf_count,cpu,memory_mb,rack
a1,A100,8,64,512000,r1
a2,A100,8,96,512000,r1
h1,H100,4,32,256000,
c1,,0,16,64000,
"""


def test_inventory_csv_builds_racks_nodes_and_skus() -> None:
    config = parse_inventory_csv(INVENTORY)
    assert [c.name for c in config.chains] == ["2-A100-8-NODE", "CPU-16-NODE", "H100-4-NODE"]
    assert config.cpu_only_nodes == ("c1",)
    # c1's 16 cores with 64000 MB: one CPU leaf per core, 4000 MB each; a2's spare 32 cores have no spare
    # memory, so they make no CPU leaf.
    cpu = config.sku("CPU")
    assert cpu is not None and (cpu.gpu, cpu.cpu, cpu.memory_mb) == (0, 1.0, 4000)
    assert config.is_cpu_leaf("CPU") and not config.is_cpu_leaf("A100")
    sku = config.sku("A100")
    assert sku is not None and sku.cpu == 8.0 and sku.memory_mb == 64000
    a = HivedAllocator(config)
    assert a.quota.quota["default"] == {
        ("2-A100-8-NODE", 3): 1,
        ("CPU-16-NODE", 2): 1,
        ("H100-4-NODE", 2): 1,
    }
    rack = a.cluster.tops["2-A100-8-NODE"][0]
    assert rack.address == "r1" and [n.node_name for n in rack.node_cells] == ["a1", "a2"]


def test_inventory_with_explicit_vcs_and_errors() -> None:
    config = parse_inventory_csv(
        INVENTORY, {"x": {"virtualCells": [{"cellType": "2-A100-8-NODE.A100-8-NODE", "cellNumber": 2}]}}
    )
    assert [vc.name for vc in config.virtual_clusters] == ["x"]
    with pytest.raises(ConfigError, match="the header must be"):
        parse_inventory_csv("host,gpu\n")
    with pytest.raises(ConfigError, match="line 3: node 'a1' appears twice"):
        parse_inventory_csv("node,leaf_type,leaf_count,cpu,memory_mb\na1,A,1,1,1\na1,A,1,1,1\n")
    with pytest.raises(
        ConfigError, match=r"line 2 \(node a1\): leaf_count, cpu and memory_mb must be numbers"
    ):
        parse_inventory_csv("node,leaf_type,leaf_count,cpu,memory_mb\na1,A,x,1,1\n")
    with pytest.raises(ConfigError, match=r"line 2: 'a\.\.b' is not a node name"):
        parse_inventory_csv("node,leaf_type,leaf_count,cpu,memory_mb\na..b,A,1,1,1\n")


def test_kubernetes_node_names_with_dots_are_node_names() -> None:
    """EKS names its nodes ip-10-0-0-1.ec2.internal (DNS-1123 subdomains)."""
    text = "node,leaf_type,leaf_count,cpu,memory_mb\nip-10-0-0-1.ec2.internal,A100,8,96,512000\n"
    config = parse_inventory_csv(text)
    a = HivedAllocator(config)
    assert [n.node_name for n in a.cluster.tops["A100-8-NODE"][0].node_cells] == ["ip-10-0-0-1.ec2.internal"]
