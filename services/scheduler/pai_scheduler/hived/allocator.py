"""The HiveD allocator: gangs placed on cells, within VC quotas, with priorities and preemption.

Pure and deterministic: no I/O, no clock, no randomness; every choice ends in an explicit tie-break on
the cells' depth-first order, never on set or dict iteration order.

How a gang is placed (all pods or none; pods largest first, each pod's leaves on one node):

* **Guaranteed** (priority 0..1000) gangs run only inside their VC's cells: cells already bound to the VC
  (or the pinned cell the request names), then newly bound quota cells (``quota.py``: the smallest quota
  level that holds the pod, chosen by the buddy allocator, checked for safety when it splits).
* **Opportunistic** (priority -1) gangs run on idle leaves anywhere except pinned cells, and never preempt.
* Placement is tried in passes of increasing cost and the first pass that places the whole gang wins:
  free leaves only; then also leaves of opportunistic gangs; then also leaves of the VC's own
  lower-priority guaranteed gangs. Leaves of another VC's guaranteed work are never inside this VC's cells,
  so they are never taken. Within a pass, pods are packed: nodes already used by the gang first, then
  nodes closest to them in the tree, then the fullest node that fits (best fit); inside the node the leaves
  with the lowest common ancestor (``packing.py``).
* If the winning placement takes busy leaves, the gang is ``Preempting``: it reserves all its leaves, and
  the owners of the busy ones (whole gangs) are its victims. As the caller releases each victim, the
  reservation stays; when the last is gone the gang is allocated and an ``Allocated`` decision comes out of
  that ``release``. Reserved leaves are never handed to anyone else.
* A gang that fits nowhere now is ``Queued`` with a reason; one that could never fit the cluster (or its
  VC's whole quota) is ``Rejected``. The queue is retried, highest priority then oldest first, whenever
  capacity appears (a release, a node turning healthy); a gang that does not fit does not block others.
* Bad nodes receive no new pods; gangs already on them keep running.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from pai_scheduler.hived.cells import (
    FREE_PRIORITY,
    MAX_GUARANTEED_PRIORITY,
    OPPORTUNISTIC_PRIORITY,
    Cell,
    PhysicalCluster,
)
from pai_scheduler.hived.config import ClusterConfig
from pai_scheduler.hived.decisions import (
    Allocated,
    Decision,
    PodPlacement,
    Preempting,
    Queued,
    Rejected,
    Released,
)
from pai_scheduler.hived.errors import UnsupportedRequestError
from pai_scheduler.hived.packing import pick_leaves
from pai_scheduler.hived.quota import QuotaBook
from pai_scheduler.hived.requests import GangRequest, request_from_dict, request_to_dict

SNAPSHOT_VERSION = 1

# A region is where one pod may go: (node, cell whose n_free counts exactly the usable leaves or None,
# the usable leaves of that node).
Region = tuple[Cell, Cell | None, tuple[Cell, ...]]
PodSlot = tuple[str, int, tuple[Cell, ...]]


class GroupState(Enum):
    PENDING = "Pending"
    PREEMPTING = "Preempting"
    ALLOCATED = "Allocated"
    BEING_PREEMPTED = "BeingPreempted"


@dataclass
class _Group:
    request: GangRequest
    seq: int
    state: GroupState = GroupState.PENDING
    chain: str | None = None
    slots: list[PodSlot] = field(default_factory=list)
    victims: set[str] = field(default_factory=set)  # outstanding victims of a Preempting gang
    preemptors: set[str] = field(default_factory=set)  # gangs preempting a BeingPreempted one

    def leaves(self) -> Iterable[Cell]:
        for _, _, leaves in self.slots:
            yield from leaves


def _closeness(a: Cell | None, b: Cell | None) -> int:
    """How many ancestors two cells share (0 across chains or when either is missing)."""
    if a is None or b is None:
        return 0
    n = 0
    for x, y in zip(a.path, b.path, strict=False):
        if x is not y:
            break
        n += 1
    return n


def _first_fit_decreasing(sizes: Sequence[int], bins: Sequence[int]) -> bool:
    room = sorted(bins, reverse=True)
    for k in sorted(sizes, reverse=True):
        for i, r in enumerate(room):
            if r >= k:
                room[i] = r - k
                break
        else:
            return False
    return True


class HivedAllocator:
    def __init__(self, config: ClusterConfig):
        self.config = config
        self.cluster = PhysicalCluster(config)
        self.quota = QuotaBook(self.cluster)
        self._groups: dict[str, _Group] = {}
        self._next_seq = 0
        self._undo: list[Callable[[], None]] | None = None
        # Where opportunistic pods may go (everything but pinned cells), grouped by top cell so that full
        # tops are skipped at once.
        self._open_regions: dict[str, list[Region]] = {}
        self._open_by_top: dict[str, list[tuple[Cell, list[Region]]]] = {}
        for chain, tops in self.cluster.tops.items():
            regions: list[Region] = []
            self._open_by_top[chain] = []
            for top in tops:
                start = len(regions)
                for node in top.node_cells:
                    if any(c.pinned_id is not None for c in node.path):
                        continue
                    pinned_inside = {
                        leaf for c in node.walk() if c.pinned_id is not None for leaf in c.leaves
                    }
                    if pinned_inside:
                        regions.append((node, None, tuple(x for x in node.leaves if x not in pinned_inside)))
                    else:
                        regions.append((node, node, node.leaves))
                self._open_by_top[chain].append((top, regions[start:]))
            self._open_regions[chain] = regions

    # ============================================================================ commands

    def submit(self, req: GangRequest) -> Decision:
        """Place a gang now, start preempting for it, queue it, or reject it.

        Idempotent per key: a key the allocator already holds returns its current decision. Raises
        UnsupportedRequestError for features not implemented yet (fractional leaves, lazy preemption,
        InfiniBand placement, pods needing no leaf)."""
        existing = self._groups.get(req.key)
        if existing is not None:
            return self._current(existing)
        self._check_supported(req)
        reason = self._invalid_reason(req) or self._never_fits_reason(req)
        if reason is not None:
            return Rejected(req.key, reason)
        g = _Group(req, self._next_seq)
        self._next_seq += 1
        self._groups[req.key] = g
        decision = self._schedule(g)
        if decision is None:
            return self._queued(g)
        return decision

    def release(self, key: str) -> list[Decision]:
        """The gang's attempt ended (or was withdrawn while queued): give back exactly what it held.

        Returns ``Released`` first, then ``Allocated`` for preemptors whose last victim this was, then the
        decisions of queued gangs that now fit. An unknown key returns ``[]`` (redelivery is harmless)."""
        g = self._groups.pop(key, None)
        if g is None:
            return []
        out: list[Decision] = [Released(key)]
        if g.state is GroupState.PENDING:
            return out
        leaves = list(g.leaves())
        if g.state is GroupState.PREEMPTING:
            for leaf in leaves:
                self.cluster.set_leaf(leaf, leaf.owner, leaf.owner_priority, None)
            for v in sorted(g.victims):
                victim = self._groups[v]
                victim.preemptors.discard(key)
                if not victim.preemptors:
                    victim.state = GroupState.ALLOCATED
        else:
            for leaf in leaves:
                self.cluster.set_leaf(leaf, None, FREE_PRIORITY, leaf.reserver)
            for p in sorted(g.preemptors):
                preemptor = self._groups[p]
                preemptor.victims.discard(key)
                if not preemptor.victims:
                    out.append(self._finish_preemption(preemptor))
        self._unbind_idle(leaves)
        out.extend(self._retry_pending())
        return out

    def set_node_health(self, node: str, healthy: bool) -> list[Decision]:
        """Mark a node healthy or bad. Bad nodes get no new pods; what runs there is not touched. A node
        turning healthy retries the queue. Unknown nodes are ignored."""
        if node not in self.cluster.nodes:
            return []
        changed = self.cluster.set_node_health(node, healthy)
        return self._retry_pending() if changed and healthy else []

    # =============================================================================== views

    def decision_of(self, key: str) -> Decision | None:
        g = self._groups.get(key)
        return None if g is None else self._current(g)

    def request_of(self, key: str) -> GangRequest | None:
        g = self._groups.get(key)
        return None if g is None else g.request

    def pending(self) -> list[Queued]:
        """Every queued gang with its current reason and position, in the order they are retried."""
        return [self._queued(g) for g in self._queue()]

    def groups(self) -> Mapping[str, GroupState]:
        return {k: g.state for k, g in self._groups.items()}

    def used_leaves(self) -> dict[str, dict[str, int]]:
        """Leaves held (allocated or reserved for a preemption) per VC and leaf type; opportunistic work
        counts under its own VC too."""
        out: dict[str, dict[str, int]] = {}
        for g in self._groups.values():
            if g.state is GroupState.PENDING or g.chain is None:
                continue
            leaf_type = self.cluster.chains[g.chain].leaf_type
            per_vc = out.setdefault(g.request.vc, {})
            per_vc[leaf_type] = per_vc.get(leaf_type, 0) + sum(1 for _ in g.leaves())
        return out

    def doomed_quota(self) -> dict[str, list[str]]:
        """VCs whose unbound quota cannot be backed by healthy free cells right now, in words."""
        out: dict[str, list[str]] = {}
        for vc in self.quota.vcs:
            for chain, level, need, usable in self.quota.healthy_shortfall(vc):
                ctype = self.cluster.chains[chain].types[level - 1]
                out.setdefault(vc, []).append(
                    f"VC {vc}: only {usable} of {need} free {ctype} cells (chain {chain}, level {level})"
                    " can be bound to healthy hardware"
                )
        return out

    # ============================================================================ snapshot

    def snapshot(self) -> dict[str, Any]:
        """The whole dynamic state as JSON values; the config is not included (restore takes it)."""
        bindings = sorted(
            (cell for vc in self.quota.vcs for cells in self.quota.bound[vc].values() for cell in cells),
            key=lambda c: c.order,
        )
        return {
            "version": SNAPSHOT_VERSION,
            "next_seq": self._next_seq,
            "bad_nodes": sorted(self.cluster.bad_nodes),
            "bindings": [{"cell": c.id, "vc": c.bound_vc} for c in bindings],
            "groups": [
                {
                    "request": request_to_dict(g.request),
                    "seq": g.seq,
                    "state": g.state.value,
                    "chain": g.chain,
                    "placement": [
                        {
                            "role": role,
                            "index": index,
                            "node": leaves[0].node_name,
                            "leaves": [leaf.leaf_index for leaf in leaves],
                        }
                        for role, index, leaves in g.slots
                    ],
                    "victims": sorted(g.victims),
                }
                for g in sorted(self._groups.values(), key=lambda g: g.seq)
            ],
        }

    @classmethod
    def restore(cls, config: ClusterConfig, snap: Mapping[str, Any]) -> HivedAllocator:
        """Rebuild the allocator that produced ``snap`` on ``config``; ValueError if it is inconsistent."""
        if snap.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"unsupported HiveD snapshot version {snap.get('version')!r}")
        a = cls(config)
        a._next_seq = int(snap["next_seq"])
        for node in snap["bad_nodes"]:
            a.cluster.set_node_health(str(node), False)
        try:
            for b in snap["bindings"]:
                a.quota.bind(a.cluster.cells[str(b["cell"])], str(b["vc"]))
            for gd in snap["groups"]:
                req = request_from_dict(gd["request"])
                if req.key in a._groups:
                    raise ValueError(f"gang {req.key} appears twice")
                g = _Group(req, int(gd["seq"]), GroupState(gd["state"]), gd["chain"])
                for p in gd["placement"]:
                    leaves = tuple(
                        a.cluster.leaf_at[(str(gd["chain"]), str(p["node"]), int(i))] for i in p["leaves"]
                    )
                    g.slots.append((str(p["role"]), int(p["index"]), leaves))
                g.victims = {str(v) for v in gd["victims"]}
                a._groups[req.key] = g
                if g.state in (GroupState.ALLOCATED, GroupState.BEING_PREEMPTED):
                    for leaf in g.leaves():
                        if leaf.owner is not None:
                            raise ValueError(f"leaf {leaf.id} is used by {leaf.owner} and {req.key}")
                        a.cluster.set_leaf(leaf, req.key, req.priority, None)
            for g in a._groups.values():
                if g.state is not GroupState.PREEMPTING:
                    continue
                for leaf in g.leaves():
                    if leaf.reserver is not None:
                        raise ValueError(f"leaf {leaf.id} is reserved by {leaf.reserver} and {g.request.key}")
                    a.cluster.set_leaf(leaf, leaf.owner, leaf.owner_priority, g.request.key)
                for v in g.victims:
                    a._groups[v].preemptors.add(g.request.key)
        except KeyError as e:
            raise ValueError(f"snapshot refers to something this config lacks: {e}") from e
        for vc in a.quota.vcs:
            for cells in a.quota.bound[vc].values():
                for cell in cells:
                    if cell.n_guaranteed == 0:
                        raise ValueError(f"cell {cell.id} is bound to VC {vc} but holds none of its work")
        return a

    # ========================================================================== scheduling

    def _schedule(self, g: _Group) -> Decision | None:
        req = g.request
        chains = self._chains_for(req)
        ceilings = [FREE_PRIORITY]
        if req.guaranteed:
            ceilings += sorted({OPPORTUNISTIC_PRIORITY, req.priority - 1})
        for ceiling in ceilings:
            for chain in chains:
                self._undo = []
                slots = self._place_gang(g, chain, ceiling)
                if slots is not None:
                    self._undo = None
                    return self._commit(g, chain, slots)
                self._rollback()
        return None

    def _place_gang(self, g: _Group, chain: str, ceiling: int) -> list[PodSlot] | None:
        slots: list[PodSlot] = []
        placed: list[Cell] = []
        for role, index, k in self._pods(g.request, chain):
            leaves = self._place_pod(g, chain, k, ceiling, placed)
            if leaves is None:
                return None
            for leaf in leaves:
                self._tx_set_leaf(leaf, leaf.owner, leaf.owner_priority, g.request.key)
            slots.append((role, index, leaves))
            node = leaves[0].node
            assert node is not None
            placed.append(node)
        return slots

    def _place_pod(
        self, g: _Group, chain: str, k: int, ceiling: int, placed: list[Cell]
    ) -> tuple[Cell, ...] | None:
        req = g.request
        if not req.guaranteed:
            best: tuple[tuple[int, ...], Region] | None = None
            for top, group in self._open_by_top[chain]:
                if top.n_free < k:
                    continue
                found = self._best_region(group, k, ceiling, placed, opportunistic=True)
                if found is not None and (best is None or found[0] < best[0]):
                    best = found
            return None if best is None else pick_leaves(self._usable(best[1][2], ceiling), k)
        if req.pinned_cell is not None:
            return self._best_in(self._regions_of(self.cluster.pinned[req.pinned_cell]), k, ceiling, placed)
        regions = [r for cell in self.quota.bound_cells(req.vc, chain) for r in self._regions_of(cell)]
        got = self._best_in(regions, k, ceiling, placed)
        if got is not None:
            return got
        spec = self.cluster.chains[chain]
        levels = sorted(
            lv
            for (c, lv) in self.quota.quota[req.vc]
            if c == chain and self.quota.unbound(req.vc, (c, lv)) > 0 and spec.leaves_per_node_in(lv) >= k
        )
        for level in levels:
            cell = self._cell_to_bind(req.vc, chain, level, k, ceiling, placed)
            if cell is None:
                continue
            self._tx_bind(cell, req.vc)
            got = self._best_in(self._regions_of(cell), k, ceiling, placed)
            assert got is not None, "a cell chosen to bind must hold the pod"
            return got
        return None

    @staticmethod
    def _regions_of(cell: Cell) -> list[Region]:
        if cell.node is None or cell.node is cell:
            return [(n, n, n.leaves) for n in cell.node_cells]
        return [(cell.node, cell, cell.leaves)]

    @staticmethod
    def _usable(leaves: Iterable[Cell], ceiling: int) -> list[Cell]:
        # A free leaf has owner_priority FREE_PRIORITY, the lowest ceiling.
        return [x for x in leaves if x.reserver is None and x.owner_priority <= ceiling]

    def _best_in(
        self, regions: Sequence[Region], k: int, ceiling: int, placed: list[Cell]
    ) -> tuple[Cell, ...] | None:
        best = self._best_region(regions, k, ceiling, placed)
        if best is None:
            return None
        return pick_leaves(self._usable(best[1][2], ceiling), k)

    def _best_region(
        self,
        regions: Sequence[Region],
        k: int,
        ceiling: int,
        placed: list[Cell],
        opportunistic: bool = False,
    ) -> tuple[tuple[int, ...], Region] | None:
        anchor = placed[0] if placed else None
        best: tuple[tuple[int, ...], Region] | None = None
        for region in regions:
            node, counter, leaves = region
            if node.n_bad_nodes:
                continue
            if ceiling == FREE_PRIORITY and counter is not None:
                n = counter.n_free
                if n < k:
                    continue
                key: tuple[int, ...] = (FREE_PRIORITY, 0, node not in placed, -_closeness(node, anchor), n)
                if opportunistic:
                    # Opportunistic pods keep away from guaranteed work (they would be its first victims).
                    key = (node.n_guaranteed > 0, *key)
            else:
                usable = self._usable(leaves, ceiling)
                if len(usable) < k:
                    continue
                cheapest = sorted(x.owner_priority for x in usable)[:k]
                busy = sum(1 for p in cheapest if p > FREE_PRIORITY)
                key = (cheapest[-1], busy, node not in placed, -_closeness(node, anchor), len(usable))
            key = (*key, node.order)
            if best is None or key < best[0]:
                best = (key, region)
        return best

    def _fits_unbound(self, cell: Cell, k: int, ceiling: int) -> bool:
        for node, counter, leaves in self._regions_of(cell):
            if node.n_bad_nodes:
                continue
            if ceiling == FREE_PRIORITY and counter is not None:
                if counter.n_free >= k:
                    return True
            elif len(self._usable(leaves, ceiling)) >= k:
                return True
        return False

    def _cell_to_bind(
        self, vc: str, chain: str, level: int, k: int, ceiling: int, placed: list[Cell]
    ) -> Cell | None:
        """The buddy choice: a free cell of ``level`` that holds the pod (fewest opportunistic leaves in
        use, then closest to the gang's other pods, then order); else one carved out of the lowest higher
        free cell, if the chain stays safe."""
        anchor = placed[0] if placed else None

        def pref(c: Cell) -> tuple[int, int, int]:
            return (c.n_opportunistic, -_closeness(c, anchor), c.order)

        fitting = [c for c in self.quota.free[(chain, level)] if self._fits_unbound(c, k, ceiling)]
        if fitting:
            return min(fitting, key=pref)
        top = self.cluster.chains[chain].top_level
        for upper in range(level + 1, top + 1):
            for big in sorted(self.quota.free[(chain, upper)], key=pref):
                inner = [
                    c for c in self.quota.free_descendants(level, [big]) if self._fits_unbound(c, k, ceiling)
                ]
                if not inner:
                    continue
                cell = min(inner, key=pref)
                self.quota.bind(cell, vc)
                unsafe = self.quota.unsafe_level(chain)
                self.quota.unbind(cell)
                if unsafe is None:
                    return cell
                break  # any cell split at this level leaves the same counts: try a higher level
        return None

    def _commit(self, g: _Group, chain: str, slots: list[PodSlot]) -> Decision:
        req = g.request
        g.chain = chain
        g.slots = slots
        victims = sorted(
            {x.owner for _, _, leaves in slots for x in leaves if x.owner is not None},
            key=lambda v: (self._groups[v].request.priority, self._groups[v].seq),
        )
        if not victims:
            for leaf in g.leaves():
                self.cluster.set_leaf(leaf, req.key, req.priority, None)
            g.state = GroupState.ALLOCATED
            return Allocated(req.key, self._placements(g))
        g.state = GroupState.PREEMPTING
        g.victims = set(victims)
        for v in victims:
            victim = self._groups[v]
            victim.state = GroupState.BEING_PREEMPTED
            victim.preemptors.add(req.key)
        return Preempting(req.key, tuple(victims), self._placements(g))

    def _finish_preemption(self, g: _Group) -> Decision:
        for leaf in g.leaves():
            self.cluster.set_leaf(leaf, g.request.key, g.request.priority, None)
        g.state = GroupState.ALLOCATED
        return Allocated(g.request.key, self._placements(g))

    def _unbind_idle(self, leaves: Iterable[Cell]) -> None:
        seen: set[Cell] = set()
        for leaf in leaves:
            for cell in reversed(leaf.path):
                if cell.bound_vc is not None:
                    if cell not in seen and cell.pinned_id is None and cell.n_guaranteed == 0:
                        self.quota.unbind(cell)
                    seen.add(cell)
                    break

    def _queue(self) -> list[_Group]:
        return sorted(
            (g for g in self._groups.values() if g.state is GroupState.PENDING),
            key=lambda g: (-g.request.priority, g.seq),
        )

    def _retry_pending(self) -> list[Decision]:
        out: list[Decision] = []
        for g in self._queue():
            d = self._schedule(g)
            if d is not None:
                out.append(d)
        return out

    # ======================================================================== transactions

    def _tx_set_leaf(self, leaf: Cell, owner: str | None, priority: int, reserver: str | None) -> None:
        assert self._undo is not None
        old = (leaf.owner, leaf.owner_priority, leaf.reserver)
        self.cluster.set_leaf(leaf, owner, priority, reserver)
        self._undo.append(lambda: self.cluster.set_leaf(leaf, *old))

    def _tx_bind(self, cell: Cell, vc: str) -> None:
        assert self._undo is not None
        self.quota.bind(cell, vc)
        self._undo.append(lambda: self.quota.unbind(cell))

    def _rollback(self) -> None:
        assert self._undo is not None
        for undo in reversed(self._undo):
            undo()
        self._undo = None

    # ======================================================================= request checks

    @staticmethod
    def _check_supported(req: GangRequest) -> None:
        if req.lazy_preemption:
            raise UnsupportedRequestError(f"gang {req.key}: lazy preemption is not implemented yet")
        if req.infiniband:
            raise UnsupportedRequestError(
                f"gang {req.key}: InfiniBand placement (all tasks under one IB cell) is not implemented yet"
            )
        for m in req.members:
            leaves: object = m.leaves
            if isinstance(leaves, float) and not leaves.is_integer():
                raise UnsupportedRequestError(
                    f"gang {req.key}, role {m.role}: fractional leaves ({leaves}) are not supported yet"
                )
            if isinstance(leaves, bool) or not isinstance(leaves, int | float):
                raise UnsupportedRequestError(f"gang {req.key}, role {m.role}: leaves must be a whole number")

    def _invalid_reason(self, req: GangRequest) -> str | None:
        if isinstance(req.priority, bool) or not isinstance(req.priority, int):
            return f"priority must be an integer, got {req.priority!r}"
        if not OPPORTUNISTIC_PRIORITY <= req.priority <= MAX_GUARANTEED_PRIORITY:
            return (
                f"priority {req.priority} is outside -1 (opportunistic) .. {MAX_GUARANTEED_PRIORITY}"
                " (guaranteed)"
            )
        if req.vc not in self.quota.quota:
            return f"unknown virtual cluster {req.vc!r} (known: {', '.join(sorted(self.quota.quota))})"
        if not req.members:
            return "the gang has no members"
        roles = [m.role for m in req.members]
        if len(set(roles)) != len(roles):
            return "a task role appears twice in the gang"
        for m in req.members:
            if m.pods < 1:
                return f"role {m.role}: pods must be >= 1, got {m.pods}"
            if m.leaves < 0:
                return f"role {m.role}: leaves must be >= 0, got {m.leaves}"
        known = {c.leaf_type for c in self.cluster.chains.values()}
        for t in req.leaf_types:
            if t not in known:
                return f"unknown leaf type {t!r} (this cluster has {', '.join(sorted(known))})"
        if req.pinned_cell is not None:
            if not req.guaranteed:
                return "opportunistic gangs cannot use pinned cells"
            if req.pinned_cell not in self.cluster.pinned:
                return f"unknown pinned cell {req.pinned_cell!r}"
            owner = self.quota.pinned_owner.get(req.pinned_cell)
            if owner != req.vc:
                return f"pinned cell {req.pinned_cell} belongs to VC {owner}, not {req.vc}"
            leaf_type = self.cluster.chains[self.cluster.pinned[req.pinned_cell].chain].leaf_type
            if req.leaf_types and leaf_type not in req.leaf_types:
                return (
                    f"pinned cell {req.pinned_cell} holds {leaf_type} leaves, not {'|'.join(req.leaf_types)}"
                )
        return None

    def _chains_for(self, req: GangRequest) -> list[str]:
        if req.pinned_cell is not None:
            return [self.cluster.pinned[req.pinned_cell].chain]
        names = sorted(self.cluster.chains)
        if req.leaf_types:
            chains = [c for t in req.leaf_types for c in names if self.cluster.chains[c].leaf_type == t]
        else:
            chains = names
        if req.guaranteed:
            chains = [c for c in chains if c in set(self.quota.chains_of(req.vc))]
        return chains

    def _pods(self, req: GangRequest, chain: str) -> list[tuple[str, int, int]]:
        """(role, index, leaves) for every pod on this chain's leaf type, largest first."""
        sku = self.config.sku(self.cluster.chains[chain].leaf_type)
        out: list[tuple[int, str, int, int]] = []
        for order, m in enumerate(req.members):
            k = int(m.leaves)
            if sku is not None:
                if sku.cpu > 0 and m.cpu > 0:
                    k = max(k, math.ceil(m.cpu / sku.cpu))
                if sku.memory_mb > 0 and m.memory_mb > 0:
                    k = max(k, math.ceil(m.memory_mb / sku.memory_mb))
            if k < 1:
                raise UnsupportedRequestError(
                    f"gang {req.key}, role {m.role}: pods that need no leaf (CPU-only) are not scheduled"
                    " by the HiveD core yet"
                )
            out.extend((order, m.role, i, k) for i in range(m.pods))
        out.sort(key=lambda p: (-p[3], p[0], p[2]))
        return [(role, i, k) for _, role, i, k in out]

    def _never_fits_reason(self, req: GangRequest) -> str | None:
        chains = self._chains_for(req)
        if not chains:
            types = "|".join(req.leaf_types) or "any leaf type"
            if req.guaranteed:
                return f"VC {req.vc} has no guaranteed quota of {types}"
            return f"the cluster has no {types} leaves"
        reasons = []
        for chain in chains:
            spec = self.cluster.chains[chain]
            sizes = [k for _, _, k in self._pods(req, chain)]
            if req.pinned_cell is not None:
                cell = self.cluster.pinned[req.pinned_cell]
                per_node = (
                    len(cell.leaves)
                    if cell.level <= spec.node_level
                    else spec.leaves_per_cell(spec.node_level)
                )
                total = len(cell.leaves)
                whose = f"pinned cell {req.pinned_cell}"
            elif req.guaranteed:
                levels = [lv for (c, lv) in self.quota.quota[req.vc] if c == chain]
                per_node = max(spec.leaves_per_node_in(lv) for lv in levels)
                total = self.quota.quota_leaves(req.vc, chain)
                whose = f"VC {req.vc}'s quota"
            else:
                per_node = spec.leaves_per_cell(spec.node_level)
                total = sum(len(r[2]) for r in self._open_regions[chain])
                whose = "the cluster"
            if req.guaranteed and req.pinned_cell is None and max(sizes) <= per_node and sum(sizes) <= total:
                bins = self._empty_quota_bins(req.vc, chain)
                if not _first_fit_decreasing(sizes, bins):
                    reasons.append(
                        f"the gang's pods ({'+'.join(str(k) for k in sizes)} {spec.leaf_type} leaves, each on"
                        f" one node) do not fit {whose} in chain {chain} even when it is all free"
                        f" (per-node capacities {'+'.join(str(b) for b in bins)})"
                    )
                    continue
            if max(sizes) > per_node:
                reasons.append(
                    f"a pod needs {max(sizes)} {spec.leaf_type} leaves on one node but {whose} in chain"
                    f" {chain} offers at most {per_node}"
                )
            elif sum(sizes) > total:
                reasons.append(
                    f"the gang needs {sum(sizes)} {spec.leaf_type} leaves but {whose} in chain {chain} has"
                    f" {total}"
                )
            else:
                return None
        return "; ".join(reasons)

    def _empty_quota_bins(self, vc: str, chain: str) -> list[int]:
        """The per-node leaf capacities of a VC's whole quota in a chain, as if it were all free."""
        spec = self.cluster.chains[chain]
        bins: list[int] = []
        for (c, level), n in sorted(self.quota.quota[vc].items()):
            if c != chain:
                continue
            if level >= spec.node_level:
                nodes = spec.leaves_per_cell(level) // spec.leaves_per_cell(spec.node_level)
                bins.extend([spec.leaves_per_cell(spec.node_level)] * (n * nodes))
            else:
                bins.extend([spec.leaves_per_cell(level)] * n)
        return bins

    # ============================================================================== reports

    def _placements(self, g: _Group) -> tuple[PodPlacement, ...]:
        assert g.chain is not None
        leaf_type = self.cluster.chains[g.chain].leaf_type
        out = []
        for role, index, leaves in g.slots:
            node = leaves[0].node_name
            assert node is not None
            out.append(PodPlacement(role, index, node, leaf_type, tuple(x.leaf_index for x in leaves)))
        return tuple(out)

    def _current(self, g: _Group) -> Decision:
        if g.state is GroupState.PENDING:
            return self._queued(g)
        if g.state is GroupState.PREEMPTING:
            return Preempting(g.request.key, tuple(sorted(g.victims)), self._placements(g))
        return Allocated(g.request.key, self._placements(g))

    def _queued(self, g: _Group) -> Queued:
        req = g.request
        same_vc = [x for x in self._queue() if x.request.vc == req.vc]
        position = next(i for i, x in enumerate(same_vc, start=1) if x is g)
        return Queued(req.key, f"{self._why(req)} (position {position} in VC {req.vc}'s queue)", position)

    def _why(self, req: GangRequest) -> str:
        chains = self._chains_for(req)
        parts = []
        for chain in chains:
            spec = self.cluster.chains[chain]
            sizes = [k for _, _, k in self._pods(req, chain)]
            shapes = "/".join(str(s) for s in sorted(set(sizes), reverse=True))
            need = (
                f"needs {sizes[0]} on one node"
                if len(sizes) == 1
                else f"needs {len(sizes)} pods of {shapes} (each pod on one node)"
            )
            where = f" in chain {chain}" if len(chains) > 1 else ""
            nodes = {n.node_name for top in self.cluster.tops[chain] for n in top.node_cells}
            bad = len(nodes & self.cluster.bad_nodes)
            bad_text = f"; {bad} bad node(s)" if bad else ""
            if req.pinned_cell is not None:
                cell = self.cluster.pinned[req.pinned_cell]
                parts.append(
                    f"pinned cell {req.pinned_cell}: {cell.n_guaranteed} of {len(cell.leaves)}"
                    f" {spec.leaf_type} leaves in use; {need}{bad_text}"
                )
            elif req.guaranteed:
                bound = self.quota.bound_cells(req.vc, chain)
                used = sum(c.n_guaranteed for c in bound)
                reserved = sum(1 for c in bound for x in c.leaves if x.reserver is not None)
                total = self.quota.quota_leaves(req.vc, chain)
                held = f" ({reserved} reserved by preemptions in progress)" if reserved else ""
                parts.append(
                    f"{used} of {total} guaranteed {spec.leaf_type} leaves in use{where}{held};"
                    f" {need}{bad_text}"
                )
            else:
                idle = sum(
                    sum(1 for x in r[2] if x.owner is None and x.reserver is None)
                    for r in self._open_regions[chain]
                    if not r[0].n_bad_nodes
                )
                parts.append(f"{idle} idle {spec.leaf_type} leaves on healthy nodes{where}; {need}{bad_text}")
        if req.guaranteed:
            return f"VC {req.vc}: " + "; ".join(parts)
        return "opportunistic (idle cells of any VC): " + "; ".join(parts)
