"""The cluster as the simulator's baseline policies see it: nodes with leaves, and VC quotas in leaves.

Read through the HiveD config module (``pai_scheduler.hived.config``), so that the simulator accepts exactly
the files the scheduler accepts: HiveD's YAML, or a node inventory CSV. The full :class:`ClusterConfig`
is kept for policies that understand topology.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pai_scheduler.hived.config import (
    ChainSpec,
    ClusterConfig,
    PhysicalCellSpec,
    load_hived_config,
    parse_inventory_csv,
)


@dataclass(frozen=True)
class SimNode:
    name: str
    leaf_type: str
    leaves: int


@dataclass(frozen=True)
class SimCluster:
    config: ClusterConfig
    nodes: tuple[SimNode, ...]  # GPU (accelerator) nodes
    # VC -> leaf type -> leaves of guaranteed quota (virtual cells and pinned cells).
    quotas: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    # Nodes with CPU leaves only (they serve jobs that ask for no GPU); none of their leaves is a GPU.
    cpu_only_nodes: tuple[str, ...] = ()
    # Node -> (cores, memory MB) its leaves carry through their SKUs (GPU and CPU leaves together);
    # a node whose SKUs say nothing has no entry (the baselines then do not limit its CPU and memory).
    resources: Mapping[str, tuple[float, int]] = field(default_factory=dict)

    @property
    def node_count(self) -> int:
        """Every node of the file, CPU-only ones included."""
        return len({n.name for n in self.nodes} | set(self.cpu_only_nodes))

    @property
    def capacity(self) -> int:
        """Leaves (GPUs, FPGAs) in the cluster: the denominator of every allocation ratio."""
        return sum(n.leaves for n in self.nodes)

    @property
    def leaf_types(self) -> tuple[str, ...]:
        return tuple(sorted({n.leaf_type for n in self.nodes}))


def _walk_nodes(cell: PhysicalCellSpec, chain: ChainSpec, level: int, out: list[SimNode]) -> None:
    if level == chain.node_level:
        # config.py checked that node-level cells carry their node name.
        assert cell.address is not None
        out.append(SimNode(cell.address, chain.leaf_type, chain.leaves_per_cell(level)))
        return
    # Above node level config.py requires the children to be listed (each node needs its name).
    for child in cell.children:
        _walk_nodes(child, chain, level - 1, out)


def _pinned_leaves(cells: tuple[PhysicalCellSpec, ...], config: ClusterConfig) -> dict[str, tuple[str, int]]:
    """pinnedCellId -> (leaf type, leaves)."""
    found: dict[str, tuple[str, int]] = {}

    def walk(cell: PhysicalCellSpec, chain: ChainSpec, level: int) -> None:
        if cell.pinned_id is not None:
            found[cell.pinned_id] = (chain.leaf_type, chain.leaves_per_cell(level))
        for child in cell.children:
            walk(child, chain, level - 1)

    for top in cells:
        chain = config.chain(top.cell_type)
        walk(top, chain, chain.top_level)
    return found


def from_config(config: ClusterConfig) -> SimCluster:
    nodes: list[SimNode] = []
    cpu_nodes: list[SimNode] = []
    for top in config.physical_cells:
        chain = config.chain(top.cell_type)
        # CPU leaves are no GPUs: not in the capacity, and only CPU-only jobs use them.
        if config.is_fpga_leaf(chain.leaf_type):
            continue  # FPGAs are no GPUs: the simulator measures GPUs
        _walk_nodes(top, chain, chain.top_level, cpu_nodes if config.is_cpu_leaf(chain.leaf_type) else nodes)
    gpu_names = {n.name for n in nodes}
    cpu_only = tuple(sorted({n.name for n in cpu_nodes} - gpu_names))
    resources: dict[str, tuple[float, int]] = {}
    for n in (*nodes, *cpu_nodes):
        sku = config.sku(n.leaf_type)
        if sku is None or (sku.cpu <= 0 and sku.memory_mb <= 0):
            continue
        cpu, mem = resources.get(n.name, (0.0, 0))
        resources[n.name] = (cpu + sku.cpu * n.leaves, mem + sku.memory_mb * n.leaves)
    pinned = _pinned_leaves(config.physical_cells, config)
    quotas: dict[str, dict[str, int]] = {}
    for vc in config.virtual_clusters:
        q = quotas.setdefault(vc.name, {})
        for vcell in vc.virtual_cells:
            chain = config.chain(vcell.chain)
            if config.is_cpu_leaf(chain.leaf_type):
                continue
            leaves = vcell.number * chain.leaves_per_cell(chain.level_of(vcell.cell_type))
            q[chain.leaf_type] = q.get(chain.leaf_type, 0) + leaves
        for pid in vc.pinned_cells:
            leaf, leaves = pinned[pid]
            q[leaf] = q.get(leaf, 0) + leaves
    return SimCluster(config, tuple(nodes), quotas, cpu_only, resources)


def load_cluster(path: str | Path) -> SimCluster:
    """A ``.csv`` file is a node inventory (every node in one VC, ``default``); else HiveD's YAML."""
    p = Path(path)
    text = p.read_text(encoding="utf-8")
    if p.suffix.lower() == ".csv":
        return from_config(parse_inventory_csv(text))
    return from_config(load_hived_config(text))
