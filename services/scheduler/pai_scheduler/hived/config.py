"""The cluster model the HiveD core is built from, and the two formats it is read from.

* HiveD's own config (``physicalCluster.skuTypes`` / ``cellTypes`` / ``physicalCells`` and
  ``virtualClusters``), already parsed from YAML into plain Python values: :func:`parse_hived_config`, or
  :func:`load_hived_config` for the YAML text.
* A plain node inventory CSV (``node,leaf_type,leaf_count,cpu,memory_mb[,rack]``) for clusters without a
  topology file: :func:`parse_inventory_csv`. Each node becomes a node-level cell holding its leaves
  directly (no PCIe/socket levels are known); nodes that share a rack and a node shape are grouped under
  one rack cell, which is their InfiniBand domain (a node without a rack is its own).

InfiniBand domains: a cell type may be marked ``isInfiniBand: true`` (at most one per chain, at or above
node level); a chain with none marked has its top cells as its InfiniBand domains.

Both give one frozen :class:`ClusterConfig`. Structural checks happen here and fail with a
:class:`ConfigError` naming the field; the quota feasibility check (which needs the built cell tree) is in
``quota.py``. Nothing here does I/O.

Vocabulary (HiveD's): a *leaf type* is any cell type not defined in ``cellTypes`` (a GPU model, an FPGA);
a *chain* is the tree of cell types under a top type that ``physicalCells`` instantiates, named after that
top type; levels count from the leaf (level 1) upwards.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import yaml

from pai_common.contract.base import NODE_NAME_PATTERN, valid_node_name
from pai_scheduler.hived.errors import ConfigError

# The leaf type of the CPU chains an inventory builds: one leaf is one CPU core with its share of memory.
CPU_LEAF_TYPE = "CPU"
# GPU memory of a leaf whose SKU does not give ``gpuMemory``: 16 GiB, the smallest of the common data-centre
# GPUs (V100-16GB, T4), so that memory shares never overbook a real device.
DEFAULT_LEAF_MEMORY_MB = 16384
# The most notice (seconds between SIGTERM with the notice file and the kill) a preempted job gets when
# neither its VC nor the cluster config says otherwise: long enough to write a checkpoint, short enough that
# a preemptor never waits more than five minutes for a job that asked for more.
DEFAULT_PREEMPTION_GRACE_S = 300.0


@dataclass(frozen=True)
class SkuType:
    """Per-leaf resources (OpenPAI's ``skuTypes``): a pod needing more CPU or memory takes more leaves."""

    name: str
    gpu: int
    cpu: float
    memory_mb: int
    # Memory of one device in MB (``gpuMemory``, e.g. ``32Gi``): the capacity GPU-memory shares of one
    # leaf add up to. 0 = not given: DEFAULT_LEAF_MEMORY_MB applies (the default is in this module).
    gpu_memory_mb: int = 0
    # ``fpga: 1``: each leaf of this type is one FPGA (a cell like a GPU, never shared, never a GPU).
    fpga: int = 0


@dataclass(frozen=True)
class CellType:
    name: str
    child_type: str
    child_number: int
    is_node_level: bool
    # ``isInfiniBand: true``: cells of this type are InfiniBand domains (a gang asking for InfiniBand is
    # placed under one of them). At most one per chain, at or above node level.
    is_infiniband: bool = False


@dataclass(frozen=True)
class PhysicalCellSpec:
    """One physical cell as written in the config; ``children`` empty means "inferred from the type"."""

    cell_type: str
    address: str | None = None
    pinned_id: str | None = None
    children: tuple[PhysicalCellSpec, ...] = ()


@dataclass(frozen=True)
class VirtualCellSpec:
    """``cellNumber`` cells of the type at the end of ``path`` (``path[0]`` is the chain)."""

    path: tuple[str, ...]
    number: int

    @property
    def chain(self) -> str:
        return self.path[0]

    @property
    def cell_type(self) -> str:
        return self.path[-1]


@dataclass(frozen=True)
class VirtualClusterSpec:
    name: str
    virtual_cells: tuple[VirtualCellSpec, ...] = ()
    pinned_cells: tuple[str, ...] = ()
    # Fair sharing of idle quota (``sharing.py`` of the core): the VC's weight when several VCs borrow, and
    # how many GPUs (leaves, shares as their fraction) it may borrow beyond its quota (0: none).
    weight: float = 1.0
    borrowing_limit: float = 0.0
    # A team of a VC divided among teams (``teams``): the VC it belongs to, and its share of that VC's quota.
    parent: str | None = None
    share: float = 1.0
    # ``preemptionGraceSeconds``: the most notice a preempted job of this VC gets (its own
    # extras.preemption.graceSeconds, or the platform's default, capped by this); None: the cluster's cap.
    preemption_grace_s: float | None = None


@dataclass(frozen=True)
class ChainSpec:
    """The cell types of one chain from the leaf (index 0, level 1) to the top."""

    name: str
    types: tuple[str, ...]
    child_numbers: tuple[int, ...]  # child_numbers[i] = children of a level-(i+1) cell; 0 for the leaf
    node_level: int
    # The level marked ``isInfiniBand`` (0: none marked, the chain's top cells are the InfiniBand domains).
    marked_infiniband_level: int = 0

    @property
    def infiniband_level(self) -> int:
        """The level whose cells are InfiniBand domains: the marked one, else the top level."""
        return self.marked_infiniband_level or self.top_level

    @property
    def leaf_type(self) -> str:
        return self.types[0]

    @property
    def top_level(self) -> int:
        return len(self.types)

    def level_of(self, cell_type: str) -> int:
        return self.types.index(cell_type) + 1

    def leaves_per_cell(self, level: int) -> int:
        return math.prod(self.child_numbers[1:level])

    def leaves_per_node_in(self, level: int) -> int:
        """The most leaves one pod can get on one node inside a cell of ``level``."""
        return self.leaves_per_cell(min(level, self.node_level))


@dataclass(frozen=True)
class ClusterConfig:
    sku_types: tuple[SkuType, ...] = ()
    cell_types: tuple[CellType, ...] = ()
    physical_cells: tuple[PhysicalCellSpec, ...] = ()
    virtual_clusters: tuple[VirtualClusterSpec, ...] = ()
    # Reclaim: how long a borrowing gang may run on after its lender wants its cells back (``sharing``).
    reclaim_grace_s: float = 0.0
    # ``sharing.preemptionGraceSeconds``: the most notice a preempted job gets where its VC names no cap.
    preemption_grace_s: float = DEFAULT_PREEMPTION_GRACE_S
    # Nodes of an inventory that have no accelerator leaves (they get a CPU chain: see CPU_LEAF_TYPE).
    cpu_only_nodes: tuple[str, ...] = ()
    chains: tuple[ChainSpec, ...] = field(default=(), compare=False)

    def chain(self, name: str) -> ChainSpec:
        for c in self.chains:
            if c.name == name:
                return c
        raise KeyError(name)

    def sku(self, leaf_type: str) -> SkuType | None:
        for s in self.sku_types:
            if s.name == leaf_type:
                return s
        return None

    def is_cpu_leaf(self, leaf_type: str) -> bool:
        """A leaf type whose SKU has ``gpu: 0`` (and no ``fpga``) is a unit of CPU and memory (OpenPAI's
        CPU-only SKUs), not an accelerator: only pods that ask for no GPU are placed on it, and it counts as
        no GPU."""
        sku = self.sku(leaf_type)
        return sku is not None and sku.gpu == 0 and sku.fpga == 0

    def is_fpga_leaf(self, leaf_type: str) -> bool:
        """A leaf type whose SKU has ``fpga: 1``: an FPGA, given only to gangs that name its type."""
        sku = self.sku(leaf_type)
        return sku is not None and sku.fpga > 0

    def is_gpu_leaf(self, leaf_type: str) -> bool:
        return not self.is_cpu_leaf(leaf_type) and not self.is_fpga_leaf(leaf_type)

    def leaf_memory_mb(self, leaf_type: str) -> int:
        """GPU memory of one leaf of this type: the SKU's ``gpuMemory``, else DEFAULT_LEAF_MEMORY_MB."""
        sku = self.sku(leaf_type)
        if sku is not None and sku.gpu_memory_mb > 0:
            return sku.gpu_memory_mb
        return DEFAULT_LEAF_MEMORY_MB


# ------------------------------------------------------------------------------------ HiveD format


def load_hived_config(text: str) -> ClusterConfig:
    """Parse HiveD's YAML config text (keys HiveD needs but this core does not, such as
    ``kubeApiServerAddress``, are ignored)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"config is not valid YAML: {e}") from e
    return parse_hived_config(data)


def parse_hived_config(data: Any) -> ClusterConfig:
    if data is None:
        data = {}
    _need_mapping(data, "config")
    pc = data.get("physicalCluster") or {}
    _need_mapping(pc, "physicalCluster")
    skus = _parse_sku_types(pc.get("skuTypes") or {})
    cell_types = _parse_cell_types(pc.get("cellTypes") or {})
    raw_cells = pc.get("physicalCells") or []
    if not isinstance(raw_cells, list):
        raise ConfigError("physicalCluster.physicalCells must be a list")
    physical = tuple(
        _parse_physical_cell(c, f"physicalCluster.physicalCells[{i}]", None) for i, c in enumerate(raw_cells)
    )
    vcs = _parse_virtual_clusters(data.get("virtualClusters") or {})
    grace, notice = _parse_sharing(data.get("sharing") or {})
    return replace(
        build_config(skus, cell_types, physical, vcs), reclaim_grace_s=grace, preemption_grace_s=notice
    )


def build_config(
    skus: Sequence[SkuType],
    cell_types: Sequence[CellType],
    physical: Sequence[PhysicalCellSpec],
    vcs: Sequence[VirtualClusterSpec],
    cpu_only_nodes: Sequence[str] = (),
) -> ClusterConfig:
    """Check the parts against each other and assemble the config (also used by the inventory reader)."""
    types = {t.name: t for t in cell_types}
    chains: dict[str, ChainSpec] = {}
    for i, cell in enumerate(physical):
        where = f"physicalCluster.physicalCells[{i}]"
        if cell.cell_type not in types:
            raise ConfigError(f"{where}.cellType: {cell.cell_type!r} is not defined in cellTypes")
        if cell.cell_type not in chains:
            chains[cell.cell_type] = _chain(types, cell.cell_type)
        chain = chains[cell.cell_type]
        _check_physical(cell, chain, chain.top_level, where)
    pinned = _collect_pinned(physical)
    _check_node_addresses(physical, chains)
    seen_pins: dict[str, str] = {}
    for vc in vcs:
        for j, vcell in enumerate(vc.virtual_cells):
            where = f"virtualClusters.{vc.name}.virtualCells[{j}].cellType"
            if vcell.chain not in chains:
                raise ConfigError(
                    f"{where}: {'.'.join(vcell.path)!r} must start with a cell type used in physicalCells"
                    f" (one of {sorted(chains)})"
                )
            chain = chains[vcell.chain]
            for parent, child in zip(vcell.path, vcell.path[1:], strict=False):
                if parent not in types or types[parent].child_type != child:
                    raise ConfigError(
                        f"{where}: {child!r} is not the child cell type of {parent!r} in chain {vcell.chain}"
                    )
            if vcell.cell_type not in chain.types:
                raise ConfigError(f"{where}: {vcell.cell_type!r} is not in chain {vcell.chain}")
        for j, pid in enumerate(vc.pinned_cells):
            where = f"virtualClusters.{vc.name}.pinnedCells[{j}].pinnedCellId"
            if pid not in pinned:
                raise ConfigError(f"{where}: unknown pinned cell {pid!r}")
            if pid in seen_pins:
                raise ConfigError(f"{where}: pinned cell {pid!r} is already assigned to VC {seen_pins[pid]}")
            seen_pins[pid] = vc.name
    return ClusterConfig(
        sku_types=tuple(skus),
        cell_types=tuple(cell_types),
        physical_cells=tuple(physical),
        virtual_clusters=tuple(vcs),
        cpu_only_nodes=tuple(cpu_only_nodes),
        chains=tuple(chains[name] for name in sorted(chains)),
    )


def _need_mapping(value: Any, where: str) -> None:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a mapping, got {type(value).__name__}")


def _int_field(value: Any, where: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where} must be an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{where} must be >= {minimum}, got {value}")
    return value


_QUANTITY = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGTP]i?)?\s*$")
_UNIT = {
    None: 1,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
}


def memory_to_mb(value: Any, where: str) -> int:
    """A Kubernetes memory quantity (``8192Mi``, ``54Gi``, or bytes) in MiB, rounded down."""
    if isinstance(value, bool):
        raise ConfigError(f"{where} must be a memory quantity such as 8192Mi, got {value!r}")
    m = _QUANTITY.match(str(value))
    if m is None:
        raise ConfigError(f"{where} must be a memory quantity such as 8192Mi, got {value!r}")
    return int(float(m.group(1)) * _UNIT[m.group(2)] // 2**20)


def _parse_sku_types(raw: Any) -> list[SkuType]:
    _need_mapping(raw, "physicalCluster.skuTypes")
    out = []
    for name, spec in raw.items():
        where = f"physicalCluster.skuTypes.{name}"
        _need_mapping(spec, where)
        cpu = spec.get("cpu", 0)
        if isinstance(cpu, bool) or not isinstance(cpu, int | float) or cpu < 0:
            raise ConfigError(f"{where}.cpu must be a number >= 0, got {cpu!r}")
        fpga = _int_field(spec.get("fpga", 0), f"{where}.fpga", 0)
        gpu = _int_field(spec.get("gpu", 0 if fpga else 1), f"{where}.gpu", 0)
        if fpga > 1 or (fpga and gpu):
            raise ConfigError(f"{where}: a leaf is one device: fpga: 1 (an FPGA) or gpu: 1, not both or more")
        out.append(
            SkuType(
                name=str(name),
                gpu=gpu,
                cpu=float(cpu),
                memory_mb=memory_to_mb(spec.get("memory", 0), f"{where}.memory"),
                gpu_memory_mb=memory_to_mb(spec.get("gpuMemory", 0), f"{where}.gpuMemory"),
                fpga=fpga,
            )
        )
    return out


def _parse_cell_types(raw: Any) -> list[CellType]:
    _need_mapping(raw, "physicalCluster.cellTypes")
    out = []
    for name, spec in raw.items():
        where = f"physicalCluster.cellTypes.{name}"
        _need_mapping(spec, where)
        child = spec.get("childCellType")
        if not isinstance(child, str) or not child:
            raise ConfigError(f"{where}.childCellType must be a cell type name, got {child!r}")
        node_level = spec.get("isNodeLevel", False)
        if not isinstance(node_level, bool):
            raise ConfigError(f"{where}.isNodeLevel must be true or false, got {node_level!r}")
        infiniband = spec.get("isInfiniBand", False)
        if not isinstance(infiniband, bool):
            raise ConfigError(f"{where}.isInfiniBand must be true or false, got {infiniband!r}")
        out.append(
            CellType(
                name=str(name),
                child_type=child,
                child_number=_int_field(spec.get("childCellNumber"), f"{where}.childCellNumber", 1),
                is_node_level=node_level,
                is_infiniband=infiniband,
            )
        )
    return out


def _parse_physical_cell(raw: Any, where: str, inherited_type: str | None) -> PhysicalCellSpec:
    _need_mapping(raw, where)
    cell_type = raw.get("cellType", inherited_type)
    if not isinstance(cell_type, str) or (inherited_type is None and not cell_type):
        raise ConfigError(f"{where}.cellType is required for a top-level physical cell")
    address = raw.get("cellAddress")
    pinned = raw.get("pinnedCellId")
    if pinned is not None and (not isinstance(pinned, str) or not pinned):
        raise ConfigError(f"{where}.pinnedCellId must be a non-empty string, got {pinned!r}")
    children_raw = raw.get("cellChildren") or []
    if not isinstance(children_raw, list):
        raise ConfigError(f"{where}.cellChildren must be a list")
    children = tuple(
        _parse_physical_cell(c, f"{where}.cellChildren[{i}]", "") for i, c in enumerate(children_raw)
    )
    return PhysicalCellSpec(
        cell_type=cell_type,
        address=None if address is None else str(address),
        pinned_id=pinned,
        children=children,
    )


def _parse_sharing(raw: Any) -> tuple[float, float]:
    """The top-level ``sharing`` mapping: ``reclaimGraceSeconds`` (default 0) and ``preemptionGraceSeconds``
    (default DEFAULT_PREEMPTION_GRACE_S)."""
    _need_mapping(raw, "sharing")
    unknown = set(raw) - {"reclaimGraceSeconds", "preemptionGraceSeconds"}
    if unknown:
        raise ConfigError(f"sharing: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
    return (
        _number_field(raw.get("reclaimGraceSeconds", 0), "sharing.reclaimGraceSeconds", 0.0),
        _number_field(
            raw.get("preemptionGraceSeconds", DEFAULT_PREEMPTION_GRACE_S),
            "sharing.preemptionGraceSeconds",
            0.0,
        ),
    )


def _number_field(value: Any, where: str, minimum: float, maximum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{where} must be a number, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f">= {minimum:g}" if maximum is None else f"in {minimum:g}..{maximum:g}"
        raise ConfigError(f"{where} must be {bounds}, got {value}")
    return float(value)


def _sharing_fields(spec: Mapping[str, Any], where: str) -> tuple[float, float]:
    """A VC's (or team's) ``weight`` (default 1, > 0) and ``borrowingLimit`` (GPUs, default 0)."""
    weight = _number_field(spec.get("weight", 1), f"{where}.weight", 0.0)
    if weight <= 0:
        raise ConfigError(f"{where}.weight must be > 0, got {weight:g}")
    return weight, _number_field(spec.get("borrowingLimit", 0), f"{where}.borrowingLimit", 0.0)


def _split_teams(vc: VirtualClusterSpec, raw: Any, where: str) -> list[VirtualClusterSpec]:
    """A VC divided among teams: each team gets its share of every virtual cell count of the VC (rounded
    down, the remainders to the largest fractions, ties to the team listed first); the VC keeps what is
    left (and its pinned cells). Teams are VCs of their own, named by their key."""
    _need_mapping(raw, where)
    if not raw:
        raise ConfigError(f"{where} must name at least one team")
    teams: list[tuple[str, float, float, float]] = []
    for team, spec in raw.items():
        w = f"{where}.{team}"
        spec = spec or {}
        _need_mapping(spec, w)
        unknown = set(spec) - {"share", "weight", "borrowingLimit"}
        if unknown:
            raise ConfigError(f"{w}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
        if "share" not in spec:
            raise ConfigError(f"{w}.share is required (the team's fraction of VC {vc.name}'s quota)")
        share = _number_field(spec["share"], f"{w}.share", 0.0, 1.0)
        if share <= 0:
            raise ConfigError(f"{w}.share must be > 0, got {share:g}")
        weight, limit = _sharing_fields({"weight": vc.weight * share, **spec}, w)
        teams.append((str(team), share, weight, limit))
    total = sum(t[1] for t in teams)
    if total > 1 + 1e-9:
        raise ConfigError(f"{where}: the teams' shares add up to {total:g}, more than the whole VC")
    cells: dict[str, list[VirtualCellSpec]] = {t[0]: [] for t in teams}
    kept: list[VirtualCellSpec] = []
    for vcell in vc.virtual_cells:
        exact = [vcell.number * t[1] for t in teams]
        given = [math.floor(x + 1e-9) for x in exact]
        left = round(vcell.number * min(total, 1.0)) - sum(given)
        order = sorted(range(len(teams)), key=lambda i: (-(exact[i] - given[i]), i))
        for i in order[: max(left, 0)]:
            given[i] += 1
        for (team, *_), n in zip(teams, given, strict=True):
            if n:
                cells[team].append(VirtualCellSpec(vcell.path, n))
        if vcell.number - sum(given):
            kept.append(VirtualCellSpec(vcell.path, vcell.number - sum(given)))
    parent = replace(vc, virtual_cells=tuple(kept))
    return [
        parent,
        *(
            VirtualClusterSpec(
                team, tuple(cells[team]), (), weight, limit, vc.name, share, vc.preemption_grace_s
            )
            for team, share, weight, limit in teams
        ),
    ]


def _parse_virtual_clusters(raw: Any) -> list[VirtualClusterSpec]:
    _need_mapping(raw, "virtualClusters")
    out: list[VirtualClusterSpec] = []
    for name, spec in raw.items():
        where = f"virtualClusters.{name}"
        spec = spec or {}
        _need_mapping(spec, where)
        vcells = []
        for j, vc in enumerate(spec.get("virtualCells") or []):
            w = f"{where}.virtualCells[{j}]"
            _need_mapping(vc, w)
            ct = vc.get("cellType")
            if not isinstance(ct, str) or not ct:
                raise ConfigError(f"{w}.cellType must be a dotted cell type path, got {ct!r}")
            vcells.append(
                VirtualCellSpec(tuple(ct.split(".")), _int_field(vc.get("cellNumber"), f"{w}.cellNumber", 1))
            )
        pins = []
        for j, p in enumerate(spec.get("pinnedCells") or []):
            w = f"{where}.pinnedCells[{j}]"
            _need_mapping(p, w)
            pid = p.get("pinnedCellId")
            if not isinstance(pid, str) or not pid:
                raise ConfigError(f"{w}.pinnedCellId must be a non-empty string, got {pid!r}")
            pins.append(pid)
        weight, limit = _sharing_fields(spec, where)
        notice = spec.get("preemptionGraceSeconds")
        vc = VirtualClusterSpec(
            str(name),
            tuple(vcells),
            tuple(pins),
            weight,
            limit,
            preemption_grace_s=None
            if notice is None
            else _number_field(notice, f"{where}.preemptionGraceSeconds", 0.0),
        )
        if spec.get("teams") is not None:
            out.extend(_split_teams(vc, spec["teams"], f"{where}.teams"))
        else:
            out.append(vc)
    names = [vc.name for vc in out]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(
            f"virtualClusters: {', '.join(twice)} named twice (a team is a VC: names are unique)"
        )
    return out


def _chain(types: Mapping[str, CellType], top: str) -> ChainSpec:
    down: list[str] = []
    numbers: list[int] = []
    t = top
    while t in types:
        if t in down:
            raise ConfigError(f"cellTypes: the child cell types of {top!r} form a cycle through {t!r}")
        down.append(t)
        numbers.append(types[t].child_number)
        t = types[t].child_type
    down.append(t)  # the leaf type
    numbers.append(0)
    up = tuple(reversed(down))
    child_numbers = tuple(reversed(numbers))
    node_levels = [i + 1 for i, name in enumerate(up) if name in types and types[name].is_node_level]
    if len(node_levels) != 1:
        raise ConfigError(
            f"chain {top}: must contain exactly one cell type with isNodeLevel: true, found"
            f" {len(node_levels)} ({[up[i - 1] for i in node_levels]})"
        )
    ib_levels = [i + 1 for i, name in enumerate(up) if name in types and types[name].is_infiniband]
    if len(ib_levels) > 1:
        raise ConfigError(
            f"chain {top}: at most one cell type may have isInfiniBand: true, found"
            f" {[up[i - 1] for i in ib_levels]}"
        )
    if ib_levels and ib_levels[0] < node_levels[0]:
        raise ConfigError(
            f"chain {top}: the isInfiniBand cell type {up[ib_levels[0] - 1]} is below the node level"
        )
    return ChainSpec(
        name=top,
        types=up,
        child_numbers=child_numbers,
        node_level=node_levels[0],
        marked_infiniband_level=ib_levels[0] if ib_levels else 0,
    )


def _check_physical(cell: PhysicalCellSpec, chain: ChainSpec, level: int, where: str) -> None:
    expected = chain.types[level - 1]
    if cell.cell_type not in ("", expected):
        raise ConfigError(f"{where}.cellType: expected {expected!r} at level {level} of chain {chain.name}")
    if level == chain.top_level and level < chain.node_level:
        raise ConfigError(f"{where}: top-level cell type {expected!r} is below the node level")
    if level == chain.node_level and not cell.address:
        raise ConfigError(
            f"{where}.cellAddress: node-level cell ({expected}, chain {chain.name}) needs the node name"
        )
    if level == chain.node_level and cell.address and not valid_node_name(cell.address):
        raise ConfigError(
            f"{where}.cellAddress: {cell.address!r} is not a node name (it must match {NODE_NAME_PATTERN}"
            " and have at most 253 characters)"
        )
    if level == 1:
        if cell.children:
            raise ConfigError(f"{where}.cellChildren: a leaf cell ({expected}) has no children")
        if cell.address is not None and not re.fullmatch(r"[0-9]+", cell.address):
            raise ConfigError(
                f"{where}.cellAddress: a leaf address must be a device index, got {cell.address!r}"
            )
        return
    wanted = chain.child_numbers[level - 1]
    if cell.children and len(cell.children) != wanted:
        raise ConfigError(
            f"{where}.cellChildren: {expected} (chain {chain.name}, level {level}) has childCellNumber"
            f" {wanted}, but {len(cell.children)} children are listed"
        )
    for i, child in enumerate(cell.children):
        _check_physical(child, chain, level - 1, f"{where}.cellChildren[{i}]")


def _collect_pinned(physical: Sequence[PhysicalCellSpec]) -> set[str]:
    pinned: set[str] = set()

    def walk(cell: PhysicalCellSpec, inside: str | None) -> None:
        if cell.pinned_id is not None:
            if cell.pinned_id in pinned:
                raise ConfigError(f"physicalCells: pinnedCellId {cell.pinned_id!r} is used twice")
            if inside is not None:
                raise ConfigError(
                    f"physicalCells: pinned cell {cell.pinned_id!r} lies inside pinned cell {inside!r}"
                )
            pinned.add(cell.pinned_id)
            inside = cell.pinned_id
        for c in cell.children:
            walk(c, inside)

    for cell in physical:
        walk(cell, None)
    return pinned


def _check_node_addresses(physical: Sequence[PhysicalCellSpec], chains: Mapping[str, ChainSpec]) -> None:
    """A node name appears once per chain (it may appear in several chains: one node, several leaf types)."""
    for top in chains.values():
        seen: set[str] = set()

        def walk(cell: PhysicalCellSpec, level: int, chain: ChainSpec = top, seen: set[str] = seen) -> None:
            if level == chain.node_level:
                assert cell.address is not None
                if cell.address in seen:
                    raise ConfigError(f"chain {chain.name}: node {cell.address!r} appears twice")
                seen.add(cell.address)
                return
            for c in cell.children:
                walk(c, level - 1)

        for cell in physical:
            if cell.cell_type == top.name:
                walk(cell, top.top_level)


# ---------------------------------------------------------------------------------- node inventory

INVENTORY_COLUMNS = ("node", "leaf_type", "leaf_count", "cpu", "memory_mb")


def parse_inventory_csv(text: str, virtual_clusters: Mapping[str, Any] | None = None) -> ClusterConfig:
    """Read ``node,leaf_type,leaf_count,cpu,memory_mb[,rack]`` (header required).

    Node cell types are named ``<leaf_type>-<leaf_count>-NODE``; nodes of one shape in one rack are grouped
    under a ``<n>-<leaf_type>-<leaf_count>-NODE`` rack cell. Per-leaf CPU and memory (the SKU) are the
    node's totals divided by its leaf count, the smallest over the nodes of that leaf type.

    CPU and memory that no accelerator leaf carries become leaves of type ``CPU`` (SKU ``gpu: 0``, one core
    and ``unit`` MB of memory each): all of a leafless node's (listed in ``cpu_only_nodes`` too), and a GPU
    node's spare (its totals minus its leaves' SKU share). ``unit`` is the least memory per core over the
    leafless nodes (over the GPU nodes' spares when there is no leafless node); a node gets
    ``min(cores, memory // unit)`` CPU leaves, in a ``CPU-<n>-NODE`` cell under the same node name.
    ``virtual_clusters`` is HiveD's ``virtualClusters`` mapping; without it one VC, ``default``, owns every
    top-level cell.
    """
    reader = csv.DictReader(io.StringIO(text))
    header = tuple(h.strip() for h in (reader.fieldnames or ()))
    if header[:5] != INVENTORY_COLUMNS or header[5:] not in ((), ("rack",), ("device",), ("rack", "device")):
        raise ConfigError(
            f"inventory: the header must be {','.join(INVENTORY_COLUMNS)}[,rack][,device], got"
            f" {','.join(header)}"
        )
    devices: dict[str, str] = {}  # leaf type -> gpu or fpga
    rows: list[tuple[str, str, int, float, int, str]] = []
    sku: dict[str, tuple[float, int]] = {}
    seen: set[str] = set()
    for line, row in enumerate(reader, start=2):
        where = f"inventory line {line}"
        name = (row.get("node") or "").strip()
        if not name:
            raise ConfigError(f"{where}: node is empty")
        if not valid_node_name(name):
            raise ConfigError(
                f"{where}: {name!r} is not a node name (it must match {NODE_NAME_PATTERN} and have at most"
                " 253 characters)"
            )
        if name in seen:
            raise ConfigError(f"{where}: node {name!r} appears twice")
        seen.add(name)
        try:
            count = int(row["leaf_count"])
            cpu = float(row["cpu"])
            mem = int(row["memory_mb"])
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{where} (node {name}): leaf_count, cpu and memory_mb must be numbers") from e
        if count < 0 or cpu < 0 or mem < 0:
            raise ConfigError(f"{where} (node {name}): leaf_count, cpu and memory_mb must be >= 0")
        leaf = (row.get("leaf_type") or "").strip()
        rack = (row.get("rack") or "").strip()
        device = (row.get("device") or "").strip().lower() or "gpu"
        if device not in ("gpu", "fpga"):
            raise ConfigError(f"{where} (node {name}): device must be gpu or fpga, got {row.get('device')!r}")
        if count > 0:
            if devices.setdefault(leaf, device) != device:
                raise ConfigError(
                    f"{where} (node {name}): leaf type {leaf!r} is a {device} here but a {devices[leaf]} on"
                    " an earlier line"
                )
        if count == 0 and leaf:
            raise ConfigError(
                f"{where} (node {name}): leaf_count is 0 but leaf_type is {leaf!r}; a CPU-only node has an"
                " empty leaf_type"
            )
        if count == 0 and (cpu < 1 or mem < 1):
            raise ConfigError(
                f"{where} (node {name}): a node without accelerators (leaf_count 0) is a CPU-only node and"
                f" needs at least one core and some memory (cpu {row['cpu']}, memory_mb {row['memory_mb']})"
            )
        if count > 0:
            if not leaf:
                raise ConfigError(f"{where} (node {name}): leaf_type is empty but leaf_count is {count}")
            if leaf == CPU_LEAF_TYPE:
                raise ConfigError(
                    f"{where} (node {name}): leaf_type {CPU_LEAF_TYPE!r} is reserved for the CPU leaves the"
                    " inventory builds from CPU and memory"
                )
            per = (cpu / count, mem // count)
            old = sku.get(leaf)
            sku[leaf] = per if old is None else (min(old[0], per[0]), min(old[1], per[1]))
        rows.append((name, leaf, count, cpu, mem, rack))

    cpu_only = [name for name, _, count, _, _, _ in rows if count == 0]
    lines = {name: line for line, (name, *_) in enumerate(rows, start=2)}
    # CPU and memory no accelerator leaf carries, per node: (whole cores, MB).
    spare: dict[str, tuple[int, int]] = {}
    for name, leaf, count, cpu, mem, _ in rows:
        if count == 0:
            spare[name] = (math.floor(cpu + 1e-9), mem)
        else:
            per_cpu, per_mem = sku[leaf]
            spare[name] = (math.floor(cpu - count * per_cpu + 1e-9), mem - count * per_mem)
    basis = [spare[n] for n in cpu_only] or list(spare.values())
    units = [m // c for c, m in basis if c >= 1 and m // c >= 1]
    unit_mb = min(units, default=0)

    # (node, leaf type, leaves, rack, first leaf index): a node's CPU leaves are numbered after its
    # accelerators, so that (node, index) names one leaf whatever the chain.
    nodes: list[tuple[str, str, int, str, int]] = []
    for name, leaf, count, _, _, rack in rows:
        if count > 0:
            nodes.append((name, leaf, count, rack, 0))
        cores, mem = spare[name]
        n = min(cores, mem // unit_mb) if unit_mb else 0
        if n > 0:
            nodes.append((name, CPU_LEAF_TYPE, n, rack, count))
        elif count == 0:
            # Never drop a node silently: a CPU-only node too small for one CPU leaf is refused.
            raise ConfigError(
                f"inventory line {lines[name]} (node {name}): a CPU-only node needs at least one whole core"
                f" and {unit_mb} MB of memory (one CPU leaf: the least memory per core over the CPU-only"
                f" nodes); it has {cores} core(s) and {mem} MB"
            )

    def node_cell(node_type: str, name: str, first: int, count: int) -> PhysicalCellSpec:
        if first == 0:
            return PhysicalCellSpec(node_type, name)
        leaves = tuple(PhysicalCellSpec("", str(first + i)) for i in range(count))
        return PhysicalCellSpec(node_type, name, None, leaves)

    cell_types: dict[str, CellType] = {}
    groups: dict[tuple[str, str], list[PhysicalCellSpec]] = {}
    standalone: list[PhysicalCellSpec] = []
    for name, leaf, count, rack, first in nodes:
        node_type = f"{leaf}-{count}-NODE"
        cell_types.setdefault(node_type, CellType(node_type, leaf, count, True))
        if rack:
            groups.setdefault((rack, node_type), []).append(node_cell(node_type, name, first, count))
        else:
            standalone.append(node_cell(node_type, name, first, count))
    physical: list[PhysicalCellSpec] = []
    for (rack, node_type), members in sorted(groups.items()):
        rack_type = f"{len(members)}-{node_type}"
        # A rack is the InfiniBand domain of its nodes.
        cell_types.setdefault(rack_type, CellType(rack_type, node_type, len(members), False, True))
        physical.append(PhysicalCellSpec(rack_type, rack, None, tuple(members)))
    physical.extend(standalone)
    skus = [
        SkuType(leaf, 0, c, m, fpga=1) if devices.get(leaf) == "fpga" else SkuType(leaf, 1, c, m)
        for leaf, (c, m) in sorted(sku.items())
    ]
    if any(leaf == CPU_LEAF_TYPE for _, leaf, _, _, _ in nodes):
        skus.append(SkuType(CPU_LEAF_TYPE, 0, 1.0, unit_mb))
    if virtual_clusters is None:
        tops: dict[str, int] = {}
        for cell in physical:
            tops[cell.cell_type] = tops.get(cell.cell_type, 0) + 1
        vcs = (
            [VirtualClusterSpec("default", tuple(VirtualCellSpec((t,), n) for t, n in sorted(tops.items())))]
            if tops
            else []
        )
    else:
        vcs = _parse_virtual_clusters(virtual_clusters)
    return build_config(skus, list(cell_types.values()), physical, vcs, cpu_only)
