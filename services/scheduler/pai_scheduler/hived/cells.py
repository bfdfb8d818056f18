"""The physical cell trees, one per chain, and the state of every leaf.

A :class:`Cell` is a set of leaves at one affinity level (leaf = 1, then e.g. PCIe switch, socket, node,
rack). State lives on the leaves (HiveD records it on the lowest-level cells too):

* ``owner`` — the gang whose pod runs on the leaf, with that gang's ``owner_priority`` (``FREE_PRIORITY``
  when none);
* ``reserver`` — a gang that is preempting whoever runs there and will get the leaf once it is free;
* ``shares`` — fractional pods (GPU virtualisation): gang key -> (milli-GPU, GPU memory MB, priority,
  pods) of every gang holding part of the leaf. A leaf has an owner or shares, never both; its shares
  add up to at most 1000 milli and the leaf's memory. ``owner_priority`` of a shared leaf is the highest
  priority among its sharers (what taking the whole leaf would preempt).

From owner/shares and reserver follow HiveD's cell states: free (neither), used (owner or shares only),
reserving (both), reserved (reserver only). Every cell keeps counters over its leaves (free, used by
opportunistic work, held by guaranteed work) so that the allocator never has to scan leaves to know
whether a subtree has room. A node is healthy or bad, and so is each leaf on its own (a GPU its agent
reports unhealthy); a cell is bad when any node or leaf in it is bad. A bad leaf never counts as free
(``n_free`` and the free-node buckets leave it out), so every count of room is a count of usable room;
what runs on it keeps its owner and counts as before.
"""

from __future__ import annotations

from collections.abc import Iterator
from enum import Enum

from pai_scheduler.hived.config import ChainSpec, ClusterConfig, PhysicalCellSpec
from pai_scheduler.hived.errors import ConfigError

FREE_PRIORITY = -2
OPPORTUNISTIC_PRIORITY = -1
MIN_GUARANTEED_PRIORITY = 0
MAX_GUARANTEED_PRIORITY = 1000
# The priority recorded for a share held by a gang that is still preempting (for its other pods): above
# every real priority, so nobody can preempt it before it is allocated.
UNTOUCHABLE_PRIORITY = MAX_GUARANTEED_PRIORITY + 1
MILLI_PER_LEAF = 1000

Share = tuple[int, int, int, int]  # (milli, memory MB, priority, pods) of one gang on one leaf


class CellState(Enum):
    FREE = "free"
    USED = "used"
    RESERVING = "reserving"
    RESERVED = "reserved"


class Cell:
    """One physical cell. Structure is fixed at construction; counters and leaf state change."""

    __slots__ = (
        "address",
        "bad_leaf",
        "bound_vc",
        "cell_type",
        "chain",
        "children",
        "id",
        "leaf_index",
        "leaves",
        "level",
        "n_bad_leaves",
        "n_bad_nodes",
        "n_bound_below",
        "n_free",
        "n_guaranteed",
        "n_opportunistic",
        "node",
        "node_cells",
        "node_name",
        "order",
        "owner",
        "owner_priority",
        "parent",
        "path",
        "pinned_id",
        "regions",
        "reserver",
        "share_memory",
        "share_milli",
        "shares",
    )

    def __init__(self, cid: str, chain: str, level: int, cell_type: str, address: str, parent: Cell | None):
        self.id = cid
        self.chain = chain
        # The placement regions of this cell, computed once by the allocator (structure never changes).
        self.regions: list[tuple[Cell, Cell | None, tuple[Cell, ...]]] | None = None
        self.level = level
        self.cell_type = cell_type
        self.address = address
        self.parent = parent
        self.children: tuple[Cell, ...] = ()
        self.path: tuple[Cell, ...] = ((*parent.path, self)) if parent is not None else (self,)
        self.order = 0  # position in a depth-first walk of the whole cluster: the final tie-break
        self.pinned_id: str | None = None
        self.node: Cell | None = None  # the node-level cell at or above this one (None above node level)
        self.node_name: str | None = None
        self.leaf_index = -1
        self.leaves: tuple[Cell, ...] = ()
        self.node_cells: tuple[Cell, ...] = ()  # node-level cells at or below this one
        # Binding of the cell to a virtual cluster (quota.py); n_bound_below counts bound cells in the
        # subtree, this one included.
        self.bound_vc: str | None = None
        self.n_bound_below = 0
        # Leaf state (leaves only) and counters over the subtree's leaves.
        self.owner: str | None = None
        self.owner_priority = FREE_PRIORITY
        self.reserver: str | None = None
        self.shares: dict[str, Share] = {}
        self.share_milli = 0
        self.share_memory = 0
        self.n_free = 0
        self.n_opportunistic = 0
        self.n_guaranteed = 0
        self.n_bad_nodes = 0
        # Per-leaf health: the leaf itself is bad (leaves only); how many bad leaves the subtree holds.
        self.bad_leaf = False
        self.n_bad_leaves = 0

    @property
    def is_leaf(self) -> bool:
        return self.level == 1

    @property
    def healthy(self) -> bool:
        return self.n_bad_nodes == 0 and self.n_bad_leaves == 0

    @property
    def state(self) -> CellState:
        """HiveD's state of a leaf."""
        if self.owner is None and not self.shares:
            return CellState.FREE if self.reserver is None else CellState.RESERVED
        return CellState.USED if self.reserver is None else CellState.RESERVING

    def walk(self) -> Iterator[Cell]:
        yield self
        for c in self.children:
            yield from c.walk()

    def __repr__(self) -> str:
        return f"Cell({self.id} {self.cell_type} @{self.address})"


def _flags(leaf: Cell) -> tuple[int, int, int]:
    busy = leaf.owner is not None or bool(leaf.shares)
    free = not busy and leaf.reserver is None and not leaf.bad_leaf
    oppo = busy and leaf.owner_priority == OPPORTUNISTIC_PRIORITY
    guar = leaf.reserver is not None or (busy and leaf.owner_priority >= 0)
    return int(free), int(oppo), int(guar)


def _share_priority(leaf: Cell) -> int:
    return max((s[2] for s in leaf.shares.values()), default=FREE_PRIORITY)


class PhysicalCluster:
    """Every chain's cell tree, indexes over it, leaf-state updates and node health."""

    def __init__(self, config: ClusterConfig):
        self.config = config
        self.chains: dict[str, ChainSpec] = {c.name: c for c in config.chains}
        self.tops: dict[str, list[Cell]] = {c.name: [] for c in config.chains}
        self.cells: dict[str, Cell] = {}
        self.pinned: dict[str, Cell] = {}
        # node name -> its node-level cells (one per chain the node appears in)
        self.nodes: dict[str, list[Cell]] = {}
        # (chain, node, leaf index) -> leaf
        self.leaf_at: dict[tuple[str, str, int], Cell] = {}
        self.bad_nodes: set[str] = set()
        # (node, leaf index) of every leaf marked bad on its own, whatever its node's health.
        self.bad_leaves: set[tuple[str, int]] = set()
        # Bumped by every change of a leaf's state or health: equal versions mean the same cell state (a
        # rolled-back change bumps it too, which only costs a cache miss); the same per chain.
        self.version = 0
        self.chain_version: dict[str, int] = {c.name: 0 for c in config.chains}
        # Per chain: busy leaves (owner or shares) by the priority taking them would preempt, and leaves
        # reserved by a preemptor, so that a pass allowed to preempt up to some priority can tell at once
        # whether the chain offers it anything beyond free leaves.
        self.busy_by_priority: dict[str, dict[int, int]] = {c.name: {} for c in config.chains}
        self.n_reserved: dict[str, int] = {c.name: 0 for c in config.chains}
        # Leaves holding shares, per chain; GPU memory of one leaf, per chain.
        self.shared: dict[str, set[Cell]] = {c.name: set() for c in config.chains}
        self.shared_milli: dict[str, int] = {c.name: 0 for c in config.chains}  # their shares, summed
        self.leaf_memory_mb: dict[str, int] = {
            c.name: config.leaf_memory_mb(c.leaf_type) for c in config.chains
        }
        # Node-level cells per chain bucketed by their free leaves (``free_nodes[chain][n]``: the nodes with
        # n free leaves), kept exact by every leaf change: the allocator finds the best-fitting node
        # without scanning them all.
        self.free_nodes: dict[str, list[set[Cell]]] = {
            c.name: [set() for _ in range(c.leaves_per_cell(c.node_level) + 1)] for c in config.chains
        }
        for spec in config.physical_cells:
            chain = self.chains[spec.cell_type]
            top = self._build(
                spec, chain, chain.top_level, None, f"{chain.name}[{len(self.tops[chain.name])}]"
            )
            self.tops[chain.name].append(top)
        order = 0
        for name in sorted(self.tops):
            for top in self.tops[name]:
                for cell in top.walk():
                    cell.order = order
                    order += 1
        self._check_leaf_indices()
        for nodes in self.nodes.values():
            for node in nodes:
                self.free_nodes[node.chain][node.n_free].add(node)

    # ------------------------------------------------------------------------------------ building

    def _build(
        self, spec: PhysicalCellSpec, chain: ChainSpec, level: int, parent: Cell | None, cid: str
    ) -> Cell:
        address = (
            spec.address if spec.address is not None else cid.rsplit("/", 1)[-1].split("[")[-1].rstrip("]")
        )
        cell = Cell(cid, chain.name, level, chain.types[level - 1], address, parent)
        self.cells[cid] = cell
        if spec.pinned_id is not None:
            cell.pinned_id = spec.pinned_id
            self.pinned[spec.pinned_id] = cell
        if level == chain.node_level:
            cell.node = cell
            cell.node_name = address
            self.nodes.setdefault(address, []).append(cell)
        elif parent is not None and parent.node is not None:
            cell.node = parent.node
            cell.node_name = parent.node_name
        if level == 1:
            cell.leaves = (cell,)
            cell.n_free = 1
            if cell.node is None:
                raise ConfigError(f"chain {chain.name}: leaf {cid} is not inside a node-level cell")
            return cell
        specs = spec.children or tuple(PhysicalCellSpec("") for _ in range(chain.child_numbers[level - 1]))
        cell.children = tuple(
            self._build(s, chain, level - 1, cell, f"{cid}/{i}") for i, s in enumerate(specs)
        )
        cell.leaves = tuple(leaf for c in cell.children for leaf in c.leaves)
        cell.n_free = len(cell.leaves)
        if level == chain.node_level:
            cell.node_cells = (cell,)
            # Leaf indices default to the position within the node; below-node cells without an address
            # get their index among their siblings (already set from the id).
            for i, leaf in enumerate(cell.leaves):
                leaf.leaf_index = i
            self._apply_leaf_addresses(cell, spec, chain, level)
        elif level > chain.node_level:
            cell.node_cells = tuple(n for c in cell.children for n in c.node_cells)
        return cell

    def _apply_leaf_addresses(self, node: Cell, spec: PhysicalCellSpec, chain: ChainSpec, level: int) -> None:
        def walk(cell: Cell, s: PhysicalCellSpec | None) -> None:
            if cell.level == 1:
                if s is not None and s.address is not None:
                    cell.leaf_index = int(s.address)
                cell.address = str(cell.leaf_index)
                return
            for i, c in enumerate(cell.children):
                walk(c, s.children[i] if s is not None and s.children else None)

        walk(node, spec)

    def _check_leaf_indices(self) -> None:
        per_node: dict[str, set[int]] = {}
        for cell in self.cells.values():
            if cell.level != 1:
                continue
            assert cell.node_name is not None
            used = per_node.setdefault(cell.node_name, set())
            if cell.leaf_index in used:
                raise ConfigError(f"node {cell.node_name}: leaf index {cell.leaf_index} appears twice")
            used.add(cell.leaf_index)
            self.leaf_at[(cell.chain, cell.node_name, cell.leaf_index)] = cell

    # ------------------------------------------------------------------------------------ leaf state

    def set_leaf(self, leaf: Cell, owner: str | None, priority: int, reserver: str | None) -> None:
        """Change one leaf's owner/reserver and keep every ancestor's counters exact."""
        self._untrack(leaf)
        f0, o0, g0 = _flags(leaf)
        leaf.owner = owner
        if owner is not None:
            leaf.owner_priority = priority
        else:
            leaf.owner_priority = _share_priority(leaf) if leaf.shares else FREE_PRIORITY
        leaf.reserver = reserver
        self._count(leaf, f0, o0, g0)
        self._track(leaf)

    def add_share(self, leaf: Cell, key: str, milli: int, memory_mb: int, priority: int) -> None:
        """One more pod of gang ``key`` holds ``milli``/``memory_mb`` of the leaf (no capacity check here:
        the allocator checks room before, the audit after)."""
        if leaf.owner is not None:
            raise ValueError(f"leaf {leaf.id} is used whole by {leaf.owner}")
        self._untrack(leaf)
        f0, o0, g0 = _flags(leaf)
        m, mem, _, pods = leaf.shares.get(key, (0, 0, priority, 0))
        leaf.shares[key] = (m + milli, mem + memory_mb, priority, pods + 1)
        leaf.share_milli += milli
        leaf.share_memory += memory_mb
        self.shared_milli[leaf.chain] += milli
        leaf.owner_priority = _share_priority(leaf)
        self.shared[leaf.chain].add(leaf)
        self._count(leaf, f0, o0, g0)
        self._track(leaf)

    def remove_share(self, leaf: Cell, key: str, milli: int, memory_mb: int) -> None:
        """One pod of gang ``key`` gives back exactly its share."""
        self._untrack(leaf)
        f0, o0, g0 = _flags(leaf)
        m, mem, prio, pods = leaf.shares[key]
        if pods == 1:
            del leaf.shares[key]
        else:
            leaf.shares[key] = (m - milli, mem - memory_mb, prio, pods - 1)
        leaf.share_milli -= milli
        leaf.share_memory -= memory_mb
        self.shared_milli[leaf.chain] -= milli
        if not leaf.shares:
            self.shared[leaf.chain].discard(leaf)
        leaf.owner_priority = _share_priority(leaf) if leaf.owner is None else leaf.owner_priority
        self._count(leaf, f0, o0, g0)
        self._track(leaf)

    def set_share_priority(self, leaf: Cell, key: str, priority: int) -> None:
        self._untrack(leaf)
        f0, o0, g0 = _flags(leaf)
        m, mem, _, pods = leaf.shares[key]
        leaf.shares[key] = (m, mem, priority, pods)
        leaf.owner_priority = _share_priority(leaf)
        self._count(leaf, f0, o0, g0)
        self._track(leaf)

    def _untrack(self, leaf: Cell) -> None:
        """Before a leaf changes: it leaves the per-chain counts (``_track`` puts it back after)."""
        chain = leaf.chain
        self.version += 1
        self.chain_version[chain] += 1
        if leaf.owner is not None or leaf.shares:
            by_priority = self.busy_by_priority[chain]
            n = by_priority[leaf.owner_priority] - 1
            if n:
                by_priority[leaf.owner_priority] = n
            else:
                del by_priority[leaf.owner_priority]
        if leaf.reserver is not None:
            self.n_reserved[chain] -= 1

    def _track(self, leaf: Cell) -> None:
        chain = leaf.chain
        if leaf.owner is not None or leaf.shares:
            by_priority = self.busy_by_priority[chain]
            by_priority[leaf.owner_priority] = by_priority.get(leaf.owner_priority, 0) + 1
        if leaf.reserver is not None:
            self.n_reserved[chain] += 1

    def offers_beyond_free(self, chain: str, ceiling: int) -> bool:
        """Whether a pass that may take leaves busy up to ``ceiling`` (or reserved) can use any leaf of the
        chain that is not free; when not, that pass places exactly as the free-leaves pass does."""
        if self.n_reserved[chain]:
            return True
        return any(FREE_PRIORITY < p <= ceiling for p in self.busy_by_priority[chain])

    def _count(self, leaf: Cell, f0: int, o0: int, g0: int) -> None:
        f1, o1, g1 = _flags(leaf)
        df, do, dg = f1 - f0, o1 - o0, g1 - g0
        if df or do or dg:
            cell: Cell | None = leaf
            while cell is not None:
                cell.n_free += df
                cell.n_opportunistic += do
                cell.n_guaranteed += dg
                cell = cell.parent
            if df:
                node = leaf.node
                assert node is not None
                buckets = self.free_nodes[leaf.chain]
                buckets[node.n_free - df].discard(node)
                buckets[node.n_free].add(node)

    # ---------------------------------------------------------------------------------------- health

    def set_node_health(self, node: str, healthy: bool) -> bool:
        """Mark a node healthy or bad in every chain it belongs to; returns whether anything changed.
        Unknown nodes raise KeyError."""
        self.version += 1
        for cell in self.nodes.get(node, ()):
            self.chain_version[cell.chain] += 1
        if node not in self.nodes:
            raise KeyError(node)
        if healthy == (node not in self.bad_nodes):
            return False
        delta = -1 if healthy else 1
        if healthy:
            self.bad_nodes.discard(node)
        else:
            self.bad_nodes.add(node)
        for node_cell in self.nodes[node]:
            for cell in node_cell.path:
                cell.n_bad_nodes += delta
            for below in node_cell.walk():
                if below is not node_cell:
                    below.n_bad_nodes += delta
        return True

    def leaves_of(self, node: str, index: int) -> list[Cell]:
        """The leaves with this index on the node, one per chain that has it (inventories number CPU leaves
        after the accelerators, so an accelerator index names accelerator leaves only)."""
        return [leaf for cell in self.nodes.get(node, ()) for leaf in cell.leaves if leaf.leaf_index == index]

    def set_leaf_health(self, node: str, index: int, healthy: bool) -> bool:
        """Mark one leaf (a GPU) healthy or bad, counters and buckets kept exact; returns whether anything
        changed. An unknown node or index raises KeyError."""
        self.version += 1
        for cell in self.nodes.get(node, ()):
            self.chain_version[cell.chain] += 1
        leaves = self.leaves_of(node, index)
        if not leaves:
            raise KeyError(f"{node}/{index}")
        if healthy == ((node, index) not in self.bad_leaves):
            return False
        if healthy:
            self.bad_leaves.discard((node, index))
        else:
            self.bad_leaves.add((node, index))
        delta = -1 if healthy else 1
        for leaf in leaves:
            f0, o0, g0 = _flags(leaf)
            leaf.bad_leaf = not healthy
            self._count(leaf, f0, o0, g0)
            for cell in leaf.path:
                cell.n_bad_leaves += delta
        return True
