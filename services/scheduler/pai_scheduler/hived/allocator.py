"""The HiveD allocator: gangs placed on cells, within VC quotas, with priorities and preemption.

Pure and deterministic: no I/O, no clock of its own (time is the optional ``now`` of the commands), no
randomness; every choice ends in an explicit tie-break on
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
* Bad nodes and bad leaves (GPUs reported unhealthy) receive no new pods; gangs already on them keep
  running. A cell holding a bad leaf counts as bad for quota (doomed bad cells), like one on a bad node.
* **InfiniBand** gangs are placed under one InfiniBand domain (a cell of the chain's ``infiniband_level``),
  tried in order of preference; everything else is as above within that domain.
* **Backfill protection**: once the guaranteed head of a VC's queue has waited ``protect_head_after_s``
  (by the ``now`` the commands are given), the leaves of its best placement are held for it: later gangs
  of the same VC may not take them (``_holds``; see README.md).
* **Shares** (GPU virtualisation): a pod asking for ``gpu_milli``/``gpu_memory_mb`` gets part of one leaf.
  It joins a leaf that already holds shares of the same kind (guaranteed shares of the same VC inside its
  cells, or opportunistic shares) with room left, best fit first (the least room left over); only when
  none has room does it open a free leaf, chosen like a one-leaf pod (best fit within the node). A leaf
  holding shares counts for quota like a used whole leaf (it keeps its VC cell bound), is never given to a
  whole-leaf pod, and is taken by a preemptor only as a whole (every sharer is a victim); a share pod that
  must preempt reserves its leaf whole and alone. Release gives back exactly the share.
* **Lazy preemption** (HiveD's): when the winning placement of a guaranteed gang would preempt gangs of its
  VC that asked for ``lazy_preemption`` (whole-leaf, not pinned), those gangs are downgraded to
  opportunistic (they keep running where they are; cells no longer holding guaranteed work are unbound)
  and the gang is placed again. If the new placement leaves every downgraded gang where it is, the
  downgrades stand (``Downgraded`` decisions) and the new placement is used; otherwise they are reverted
  and the gangs are preempted as usual.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

from pai_scheduler.hived.cells import (
    FREE_PRIORITY,
    MAX_GUARANTEED_PRIORITY,
    MILLI_PER_LEAF,
    OPPORTUNISTIC_PRIORITY,
    UNTOUCHABLE_PRIORITY,
    Cell,
    PhysicalCluster,
)
from pai_scheduler.hived.config import ClusterConfig
from pai_scheduler.hived.decisions import (
    Allocated,
    Decision,
    Downgraded,
    Lost,
    PodPlacement,
    Preempting,
    Queued,
    Rejected,
    Released,
)
from pai_scheduler.hived.errors import UnsupportedRequestError
from pai_scheduler.hived.packing import pick_leaves
from pai_scheduler.hived.quota import QuotaBook
from pai_scheduler.hived.requests import GangRequest, Member, request_from_dict, request_to_dict
from pai_scheduler.hived.shares import Fragmentation, fragmentation

SNAPSHOT_VERSION = 1
# Backfill protection: how long the head of a VC's queue waits before the leaves it needs are held for it.
# A starvation guard, not an every-day rule: holding drains the head's cells, and with run times unknown the
# drain waits for the longest job on them. Shorter thresholds cost 4-178% average completion time on the
# example workloads, 24 h costs nothing there and still bounds a starved gang's wait (hived/README.md).
PROTECT_HEAD_AFTER_S = 24 * 3600.0

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
    downgraded: bool = False  # lazily preempted: runs on as opportunistic work
    since: float | None = None  # clock time it was submitted (None: no clock given yet)
    held_by: str | None = None  # the protected head its last placement attempt was held back for
    started: int = -1  # order in which gangs were allocated (-1: not yet, or before it was recorded)
    # role -> (milli, GPU memory MB) for the roles whose pods take a share of one leaf
    shares: dict[str, tuple[int, int]] = field(init=False)

    # the request without its key: gangs of one shape fit or fail alike (_retry_pending)
    shape: GangRequest = field(init=False)

    def __post_init__(self) -> None:
        self.shares = {m.role: (m.gpu_milli, m.gpu_memory_mb) for m in self.request.members if m.is_share}
        self.shape = replace(self.request, key="")

    @property
    def priority(self) -> int:
        """The priority its leaves run at: -1 once downgraded."""
        return OPPORTUNISTIC_PRIORITY if self.downgraded else self.request.priority

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


# Region lists at least this long are searched through the free-node buckets (short ones are scanned).
_INDEXED_REGIONS = 16


def _order(cell: Cell) -> int:
    return cell.order


def _leaf_names(leaves: Iterable[Cell]) -> str:
    """Leaves as users name them: node and device index (``node-a #3``)."""
    return ", ".join(f"{x.node_name} #{x.leaf_index}" for x in sorted(leaves, key=_order))


def _cpu_only(req: GangRequest) -> bool:
    """Every pod of the gang asks for no accelerator (no leaves, no share): CPU work."""
    return all(m.leaves == 0 and not m.is_share for m in req.members)


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
    def __init__(self, config: ClusterConfig, protect_head_after_s: float | None = PROTECT_HEAD_AFTER_S):
        """``protect_head_after_s``: how long (clock seconds, see ``now`` on the commands) the head of a VC's
        queue may wait before backfill protection reserves what it needs; None disables it."""
        self.config = config
        self.protect_head_after_s = protect_head_after_s
        self._now: float | None = None  # the latest clock time a command was given
        # Backfill protection: VC -> (its protected head gang, the leaves reserved for it).
        self._holds: dict[str, tuple[str, frozenset[Cell]]] = {}
        # While one gang is placed: leaves it must not take (another gang's hold) and their nodes.
        self._blocked: frozenset[Cell] = frozenset()
        self._blocked_nodes: frozenset[Cell] = frozenset()
        # While a gang is placed behind a protected head: that head and its held leaves, so that a placement
        # that would leave the head unplaceable on them (by spending the VC's quota elsewhere) is refused.
        self._guarding: tuple[_Group, frozenset[Cell]] | None = None
        # The leaves of a hold's chain outside the hold (held leaves -> complement), built once per hold.
        self._outside_hold: tuple[frozenset[Cell], frozenset[Cell]] | None = None
        self.cluster = PhysicalCluster(config)
        self.quota = QuotaBook(self.cluster)
        # InfiniBand domains per chain (cells of its InfiniBand level, depth-first), and the one an
        # InfiniBand gang is being placed under (None: anywhere).
        self._ib_cells: dict[str, list[Cell]] = {
            chain: sorted(
                (
                    c
                    for c in self.cluster.cells.values()
                    if c.chain == chain and c.level == spec.infiniband_level
                ),
                key=lambda c: c.order,
            )
            for chain, spec in self.cluster.chains.items()
        }
        self._within: Cell | None = None
        # Doomed bad cells (HiveD's): quota cells bound to bad hardware because the VC's unbound quota
        # could not all be bound to healthy free cells (see _refresh_doomed).
        self._doomed: set[Cell] = set()
        self._groups: dict[str, _Group] = {}
        # Keys of gangs that may be waiting: added at submit/restore and when a preemption is cancelled,
        # pruned when read (the queue is read on every release).
        self._maybe_pending: set[str] = set()
        self._pods_cache: dict[tuple[tuple[Member, ...], str], tuple[tuple[str, int, int], ...]] = {}
        self._chains_cache: dict[int, tuple[GangRequest, list[str]]] = {}
        # Why a request can never fit depends only on its shape and the (fixed) config and quota.
        self._never_fits_cache: dict[tuple[Any, ...], str | None] = {}
        # id(region list) -> (that list, its node-counted regions by node, the others): for lists scanned
        # by _best_free_region through the free-node buckets.
        self._region_index: dict[int, tuple[Sequence[Region], dict[Cell, Region], list[Region]]] = {}
        self._bound_regions_cache: dict[tuple[str, str], tuple[int, list[Region]]] = {}
        self._next_seq = 0
        self._next_start = 0
        self._undo: list[Callable[[], None]] | None = None
        # While one gang is placed: the gang, and the lower preemptors whose reservations it takes over
        # (transactional: each entry has its undo).
        self._placing: _Group | None = None
        self._overridden: list[str] = []
        # Set when a placement sent lower preemptors back to the queue (they are retried at once).
        self._requeued = False
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

    def submit(self, req: GangRequest, now: float | None = None) -> Decision:
        """Place a gang now, start preempting for it, queue it, or reject it.

        Idempotent per key: a key the allocator already holds returns its current decision. Raises
        UnsupportedRequestError for features not implemented yet (none at present). Gangs lazily
        preempted (``Downgraded``) on the way are not in the answer: use ``submit_all`` to get them too."""
        return self.submit_all(req, now)[-1]

    def submit_all(self, req: GangRequest, now: float | None = None) -> list[Decision]:
        """``submit``, with every decision it caused: ``Downgraded`` for each gang lazily preempted for
        this one, then the gang's own decision (always last).

        ``now`` (any monotonic clock, in seconds) drives backfill protection; without it (and before any
        command was given one) nothing depends on time."""
        self._tick(now)
        existing = self._groups.get(req.key)
        if existing is not None:
            return [self._current(existing)]
        reason = self._invalid_reason(req) or self._never_fits_reason(req)
        if reason is not None:
            return [Rejected(req.key, reason)]
        self._refresh_holds()
        g = _Group(req, self._next_seq, since=self._now)
        self._next_seq += 1
        self._groups[req.key] = g
        self._maybe_pending.add(req.key)
        self._requeued = False
        decisions = self._schedule(g)
        if decisions and self._requeued:
            # It took over lower preemptors' reservations: they (and whatever their withdrawn
            # reservations let in) are retried at once, before this gang's own decision.
            self._refresh_holds()
            decisions[-1:-1] = self._retry_pending()
        self._refresh_doomed()
        if decisions:
            self._refresh_holds()
            return decisions
        return [self._queued(g)]

    def release(self, key: str, now: float | None = None) -> list[Decision]:
        """The gang's attempt ended (or was withdrawn while queued): give back exactly what it held.

        Returns ``Released`` first, then ``Allocated`` for preemptors whose last victim this was, then the
        decisions of queued gangs that now fit. An unknown key returns ``[]`` (redelivery is harmless)."""
        self._tick(now)
        g = self._groups.pop(key, None)
        if g is None:
            return []
        out: list[Decision] = [Released(key)]
        if g.state is GroupState.PENDING:
            if self._holds.get(g.request.vc, ("",))[0] == key:  # a protected head withdrew
                self._refresh_holds()
                out.extend(self._retry_pending())
            return out
        leaves = list(g.leaves())
        if g.state is GroupState.PREEMPTING:
            for role, _, slot_leaves in g.slots:
                share = g.shares.get(role)
                for leaf in slot_leaves:
                    if share is not None and leaf.reserver != key:
                        self.cluster.remove_share(leaf, key, *share)
                    else:
                        self.cluster.set_leaf(leaf, leaf.owner, leaf.owner_priority, None)
            for v in sorted(g.victims):
                victim = self._groups[v]
                victim.preemptors.discard(key)
                if not victim.preemptors:
                    victim.state = GroupState.ALLOCATED
        else:
            for role, _, slot_leaves in g.slots:
                share = g.shares.get(role)
                for leaf in slot_leaves:
                    if share is not None:
                        self.cluster.remove_share(leaf, key, *share)
                    else:
                        self.cluster.set_leaf(leaf, None, FREE_PRIORITY, leaf.reserver)
            for p in sorted(g.preemptors):
                preemptor = self._groups[p]
                preemptor.victims.discard(key)
                if not preemptor.victims:
                    out.append(self._finish_preemption(preemptor))
        self._unbind_idle(leaves)
        self._refresh_doomed()
        self._refresh_holds()
        out.extend(self._retry_pending())
        self._refresh_doomed()
        return out

    def set_node_health(self, node: str, healthy: bool, now: float | None = None) -> list[Decision]:
        """Mark a node healthy or bad. Bad nodes get no new pods; what runs there is not touched. A node
        turning healthy retries the queue. Unknown nodes are ignored."""
        self._tick(now)
        if node not in self.cluster.nodes:
            return []
        changed = self.cluster.set_node_health(node, healthy)
        if not changed:
            return []
        self._refresh_doomed()
        self._refresh_holds()
        out = self._retry_pending() if healthy else []
        self._refresh_doomed()
        return out

    def set_leaf_health(
        self, node: str, index: int, healthy: bool, now: float | None = None
    ) -> list[Decision]:
        """Mark one leaf (the GPU with this index on the node, in every chain that has it) healthy or bad,
        whatever its node's health. A bad leaf gets no new pods (nor shares, nor preemptors); what runs on
        it is not touched, but a preemption still waiting for it is cancelled (its gang is ``Queued`` again
        and retried at once); its cells count as bad for quota (doomed bad cells). A leaf turning healthy
        retries the queue. Unknown nodes or indices are ignored."""
        return self.set_bad_leaves(
            node,
            (self.bad_leaves().get(node, set()) | {index}) - ({index} if healthy else set()),
            now,
        )

    def set_bad_leaves(self, node: str, indices: Iterable[int], now: float | None = None) -> list[Decision]:
        """Exactly these leaf indices of the node are bad from now on, its other leaves healthy (what a
        node agent reports: its unhealthy GPUs). Indices the node does not have are ignored (see
        ``unknown_leaves``); an unknown node changes nothing. Returns ``Queued`` for each preemption
        cancelled because a leaf it reserves (or shares) went bad, then the decisions of the queue retried
        (when leaves recovered or a preemption was cancelled)."""
        self._tick(now)
        if node not in self.cluster.nodes:
            return []
        wanted = {i for i in indices if self.cluster.leaves_of(node, i)}
        current = self.bad_leaves().get(node, set())
        recovered = sorted(current - wanted)
        broken: list[Cell] = []
        for i in sorted(wanted - current):
            self.cluster.set_leaf_health(node, i, False)
            broken.extend(self.cluster.leaves_of(node, i))
        for i in recovered:
            self.cluster.set_leaf_health(node, i, True)
        if wanted == current:
            return []
        # A preemption that has not finished would start its gang on the bad leaf: it is cancelled (its
        # victims run on unless another preemptor claims them) and the gang waits for a placement again.
        self._overridden = sorted(
            {k for x in broken for k in (x.reserver, *x.shares) if k is not None and self._preempting(k)}
        )
        out: list[Decision] = [self._queued(p) for p in self._cancel_overridden()]
        self._refresh_doomed()
        self._refresh_holds()
        if recovered or out:
            out.extend(self._retry_pending())
        self._refresh_doomed()
        return out

    def _preempting(self, key: str) -> bool:
        g = self._groups.get(key)
        return g is not None and g.state is GroupState.PREEMPTING

    def unknown_leaves(self, node: str, indices: Iterable[int]) -> list[int]:
        """The indices among ``indices`` that name no leaf of the node (all of them for an unknown node)."""
        return sorted({i for i in indices if not self.cluster.leaves_of(node, i)})

    def tick(self, now: float) -> list[Decision]:
        """Only time passes: heads of VC queues that have now waited long enough become protected (their
        leaves are held from backfill). Nothing is placed, so this returns ``[]``; it exists so that a
        caller can refresh reasons (``pending()``) without another command."""
        self._tick(now)
        self._refresh_holds()
        return []

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

    def waiting_since(self, key: str) -> float | None:
        """The clock time (the ``now`` of its submit) since which a gang has been known; None without one."""
        g = self._groups.get(key)
        return None if g is None else g.since

    def groups(self) -> Mapping[str, GroupState]:
        return {k: g.state for k, g in self._groups.items()}

    def holds(self) -> dict[str, tuple[str, list[str]]]:
        """Backfill protection in force: VC -> (its protected head gang, the leaf ids held for it)."""
        return {
            vc: (head, [x.id for x in sorted(leaves, key=lambda x: x.order)])
            for vc, (head, leaves) in sorted(self._holds.items())
        }

    def downgraded(self) -> list[str]:
        """Keys of the gangs lazily preempted (running on as opportunistic work), oldest first."""
        return [k for k, g in sorted(self._groups.items(), key=lambda kv: kv[1].seq) if g.downgraded]

    def used_leaves(self) -> dict[str, dict[str, int]]:
        """Leaves held (allocated or reserved for a preemption) per VC and leaf type; opportunistic work
        counts under its own VC too. A leaf holding shares counts once per VC with a share on it."""
        out: dict[str, dict[str, int]] = {}
        shared: dict[tuple[str, str], set[Cell]] = {}
        for g in self._groups.values():
            if g.state is GroupState.PENDING or g.chain is None:
                continue
            leaf_type = self.cluster.chains[g.chain].leaf_type
            per_vc = out.setdefault(g.request.vc, {})
            whole = 0
            for role, _, leaves in g.slots:
                if role in g.shares:
                    shared.setdefault((g.request.vc, leaf_type), set()).update(leaves)
                else:
                    whole += len(leaves)
            per_vc[leaf_type] = per_vc.get(leaf_type, 0) + whole
        for (vc, leaf_type), cells in shared.items():
            out[vc][leaf_type] += len(cells)
        return out

    def fragmentation(
        self, milli: int = MILLI_PER_LEAF, memory_mb: int = 0, leaf_type: str | None = None
    ) -> Fragmentation:
        """How many healthy leaves hold free room that a typical next pod (by default a whole GPU; or a
        share of ``milli``/``memory_mb``) cannot use; see ``shares.fragmentation``."""
        return fragmentation(self.cluster, milli, memory_mb, leaf_type)

    def bad_leaves(self) -> dict[str, set[int]]:
        """Leaves marked bad on their own: node -> their indices."""
        out: dict[str, set[int]] = {}
        for node, index in self.cluster.bad_leaves:
            out.setdefault(node, set()).add(index)
        return out

    def doomed_cells(self) -> dict[str, list[str]]:
        """Doomed bad cells: VC -> ids of its quota cells bound to bad hardware (depth-first order)."""
        out: dict[str, list[str]] = {}
        for cell in sorted(self._doomed, key=_order):
            assert cell.bound_vc is not None
            out.setdefault(cell.bound_vc, []).append(cell.id)
        return out

    def doomed_quota(self) -> dict[str, list[str]]:
        """VCs whose quota cannot be backed by healthy cells right now, in words: the quota cells bound to
        bad hardware (doomed), then any unbound quota that not even a bad cell could take."""
        out: dict[str, list[str]] = {}
        for cell in sorted(self._doomed, key=_order):
            vc = cell.bound_vc
            assert vc is not None
            bad = sorted(n.node_name or "" for n in cell.node_cells or (cell.node,) if n and n.n_bad_nodes)
            what = [f"node(s) {', '.join(bad)}"] if bad else []
            if cell.n_bad_leaves:
                what.append(f"leaves {_leaf_names(x for x in cell.leaves if x.bad_leaf)}")
            out.setdefault(vc, []).append(
                f"VC {vc}: its {cell.cell_type} cell (chain {cell.chain}, level {cell.level}) is bound to bad"
                f" hardware (doomed: {'; '.join(what)})"
            )
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
            **({"next_start": self._next_start} if self._next_start else {}),
            "bad_nodes": sorted(self.cluster.bad_nodes),
            **(
                {"bad_leaves": [list(x) for x in sorted(self.cluster.bad_leaves)]}
                if self.cluster.bad_leaves
                else {}
            ),
            "bindings": [{"cell": c.id, "vc": c.bound_vc} for c in bindings],
            **({"doomed": sorted(c.id for c in self._doomed)} if self._doomed else {}),
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
                            **self._share_fields(g, role, leaves),
                        }
                        for role, index, leaves in g.slots
                    ],
                    "victims": sorted(g.victims),
                    **({"downgraded": True} if g.downgraded else {}),
                    **({"since": g.since} if g.since is not None else {}),
                    **({"held_by": g.held_by} if g.held_by is not None else {}),
                    **({"started": g.started} if g.started >= 0 else {}),
                }
                for g in sorted(self._groups.values(), key=lambda g: g.seq)
            ],
            **({"now": self._now} if self._now is not None else {}),
            **(
                {
                    "holds": [
                        {
                            "vc": vc,
                            "head": head,
                            "leaves": [
                                [x.chain, x.node_name, x.leaf_index]
                                for x in sorted(leaves, key=lambda x: x.order)
                            ],
                        }
                        for vc, (head, leaves) in sorted(self._holds.items())
                    ]
                }
                if self._holds
                else {}
            ),
        }

    @staticmethod
    def _share_fields(g: _Group, role: str, leaves: tuple[Cell, ...]) -> dict[str, Any]:
        share = g.shares.get(role)
        if share is None:
            return {}
        return {"milli": share[0], "memory_mb": share[1], "reserved": leaves[0].reserver == g.request.key}

    @classmethod
    def restore(
        cls,
        config: ClusterConfig,
        snap: Mapping[str, Any],
        protect_head_after_s: float | None = PROTECT_HEAD_AFTER_S,
    ) -> HivedAllocator:
        """Rebuild the allocator that produced ``snap`` on ``config``; ValueError if it is inconsistent."""
        if snap.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"unsupported HiveD snapshot version {snap.get('version')!r}")
        a = cls(config, protect_head_after_s)
        a._next_seq = int(snap["next_seq"])
        a._next_start = int(snap.get("next_start", 0))
        a._now = None if snap.get("now") is None else float(snap["now"])
        for node in snap["bad_nodes"]:
            a.cluster.set_node_health(str(node), False)
        for node, index in snap.get("bad_leaves", ()):
            try:
                a.cluster.set_leaf_health(str(node), int(index), False)
            except KeyError as e:
                raise ValueError(f"snapshot marks leaf {node}/{index} bad, which this config lacks") from e
        reserved_shares: dict[str, set[int]] = {}  # gang -> its share slots that reserve their leaf
        try:
            for b in snap["bindings"]:
                a.quota.bind(a.cluster.cells[str(b["cell"])], str(b["vc"]))
            for gd in snap["groups"]:
                req = request_from_dict(gd["request"])
                if req.key in a._groups:
                    raise ValueError(f"gang {req.key} appears twice")
                g = _Group(req, int(gd["seq"]), GroupState(gd["state"]), gd["chain"])
                g.downgraded = bool(gd.get("downgraded", False))
                g.since = None if gd.get("since") is None else float(gd["since"])
                g.held_by = None if gd.get("held_by") is None else str(gd["held_by"])
                g.started = int(gd.get("started", -1))
                reserved_shares[req.key] = set()
                for p in gd["placement"]:
                    leaves = tuple(
                        a.cluster.leaf_at[(str(gd["chain"]), str(p["node"]), int(i))] for i in p["leaves"]
                    )
                    share = g.shares.get(str(p["role"]))
                    if share is not None:
                        if len(leaves) != 1 or [p.get("milli"), p.get("memory_mb")] != list(share):
                            raise ValueError(f"gang {req.key}: share placement disagrees with its request")
                        if p.get("reserved"):
                            reserved_shares[req.key].add(len(g.slots))
                    g.slots.append((str(p["role"]), int(p["index"]), leaves))
                g.victims = {str(v) for v in gd["victims"]}
                a._groups[req.key] = g
                a._maybe_pending.add(req.key)
                if g.state in (GroupState.ALLOCATED, GroupState.BEING_PREEMPTED):
                    a._restore_holdings(g, g.priority, set())
            for g in a._groups.values():
                if g.state is not GroupState.PREEMPTING:
                    continue
                reserved = {i for i, (role, _, _) in enumerate(g.slots) if role not in g.shares}
                a._restore_holdings(g, UNTOUCHABLE_PRIORITY, reserved | reserved_shares[g.request.key])
                for v in g.victims:
                    a._groups[v].preemptors.add(g.request.key)
            for h in snap.get("holds", ()):
                head = a._groups[str(h["head"])]
                if head.state is not GroupState.PENDING or head.request.vc != str(h["vc"]):
                    raise ValueError(f"hold for {h['head']} in VC {h['vc']} does not match a queued head")
                a._holds[str(h["vc"])] = (
                    head.request.key,
                    frozenset(a.cluster.leaf_at[(str(c), str(n), int(i))] for c, n, i in h["leaves"]),
                )
        except KeyError as e:
            raise ValueError(f"snapshot refers to something this config lacks: {e}") from e
        for cid in snap.get("doomed", ()):
            cell = a.cluster.cells.get(str(cid))
            if cell is None or cell.bound_vc is None or cell.healthy:
                raise ValueError(f"doomed cell {cid} is unknown, not bound or not bad")
            a._doomed.add(cell)
        for vc in a.quota.vcs:
            for cells in a.quota.bound[vc].values():
                for cell in cells:
                    if cell.n_guaranteed == 0 and cell not in a._doomed:
                        raise ValueError(f"cell {cell.id} is bound to VC {vc} but holds none of its work")
        return a

    # ===================================================================== reconfiguration

    @classmethod
    def reconfigure(
        cls,
        old_snapshot: Mapping[str, Any],
        new_config: ClusterConfig,
        protect_head_after_s: float | None = PROTECT_HEAD_AFTER_S,
    ) -> tuple[HivedAllocator, list[Decision]]:
        """Apply a new cluster/VC config to the work of ``old_snapshot`` (HiveD's work-preserving
        reconfiguration). Returns the new allocator and what changed, in this order:

        * running gangs (allocated or being preempted), guaranteed ones first (priority, then age): a gang
          whose leaves all still exist (same node name and leaf index, one chain, an acceptable leaf type,
          the pod sizes its request needs under the new SKU, no other gang on them) stays exactly where it
          is. A guaranteed gang keeps its guarantee if its leaves can be covered by cells of its VC's new
          quota (already bound ones, or unbound quota bound now, lowest level first, keeping every chain
          safe), or lie in its pinned cell if that still belongs to its VC; otherwise it runs on as
          opportunistic work: ``Downgraded(key, "", reason)``. Otherwise: ``Lost(key, reason)`` (the
          service must stop it); leaves inside a pinned cell can hold only that cell's own guaranteed work;
          a share that would sit beside shares of the other kind is lost too;
        * preemptions in progress are cancelled: their gangs go back to the queue (their victims are
          running gangs like any other), and
        * every queued gang is checked again (``Rejected`` if it can no longer fit, e.g. its VC is gone or
          smaller than the gang) and the queue is retried: ``Allocated`` / ``Preempting`` for those that
          start, then ``Queued`` with the current reason for each one still waiting.

        The new config must itself be valid (``ConfigError`` otherwise). Bad nodes that still exist stay
        bad; the clock and submission order carry over."""
        if old_snapshot.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"unsupported HiveD snapshot version {old_snapshot.get('version')!r}")
        a = cls(new_config, protect_head_after_s)
        a._next_seq = int(old_snapshot["next_seq"])
        a._next_start = int(old_snapshot.get("next_start", 0))
        a._now = None if old_snapshot.get("now") is None else float(old_snapshot["now"])
        for node in old_snapshot["bad_nodes"]:
            if str(node) in a.cluster.nodes:
                a.cluster.set_node_health(str(node), False)
        for node, index in old_snapshot.get("bad_leaves", ()):
            if a.cluster.leaves_of(str(node), int(index)):
                a.cluster.set_leaf_health(str(node), int(index), False)
        by_node: dict[tuple[str, int], Cell] = {
            (node, index): leaf for (_, node, index), leaf in a.cluster.leaf_at.items()
        }
        running: list[tuple[_Group, list[tuple[str, int, str, list[int]]]]] = []
        waiting: list[_Group] = []
        for gd in sorted(old_snapshot["groups"], key=lambda gd: int(gd["seq"])):
            req = request_from_dict(gd["request"])
            g = _Group(req, int(gd["seq"]), since=None if gd.get("since") is None else float(gd["since"]))
            g.downgraded = bool(gd.get("downgraded", False))
            g.started = int(gd.get("started", -1))
            if GroupState(gd["state"]) in (GroupState.ALLOCATED, GroupState.BEING_PREEMPTED):
                placement = [
                    (str(p["role"]), int(p["index"]), str(p["node"]), [int(i) for i in p["leaves"]])
                    for p in gd["placement"]
                ]
                running.append((g, placement))
            else:
                waiting.append(g)
        out: list[Decision] = []
        running.sort(key=lambda t: (t[0].priority < 0, -t[0].priority, t[0].seq))
        for g, placement in running:
            decision = a._readopt(g, placement, by_node)
            if decision is not None:
                out.append(decision)
        for g in waiting:
            req = g.request
            try:
                reason = a._invalid_reason(req) or a._never_fits_reason(req)
            except UnsupportedRequestError as e:
                reason = str(e)
            if reason is not None:
                out.append(Rejected(req.key, f"after the reconfiguration: {reason}"))
                continue
            a._groups[req.key] = g
            a._maybe_pending.add(req.key)
        a._refresh_doomed()
        a._refresh_holds()
        out.extend(a._retry_pending())
        a._refresh_doomed()
        out.extend(a._queued(g) for g in a._queue() if g.request.key in {w.request.key for w in waiting})
        return a, out

    def _readopt(
        self,
        g: _Group,
        placement: list[tuple[str, int, str, list[int]]],
        by_node: dict[tuple[str, int], Cell],
    ) -> Decision | None:
        """Put one running gang of an old snapshot back on its leaves under the new config (see
        ``reconfigure``); the decision that reports a change, or None when it stays as it was."""
        req = g.request
        key = req.key
        missing = [f"{node}:{i}" for _, _, node, idx in placement for i in idx if (node, i) not in by_node]
        if missing:
            nodes = sorted({m.split(":", 1)[0] for m in missing} - set(self.cluster.nodes))
            gone = (
                f"node(s) {', '.join(nodes)} no longer exist"
                if nodes
                else "those leaf indices no longer exist"
            )
            return Lost(key, f"reconfiguration: leaves {', '.join(missing)} are gone ({gone})")
        slots = [
            (role, index, tuple(by_node[(node, i)] for i in idx)) for role, index, node, idx in placement
        ]
        chains = sorted({x.chain for _, _, leaves in slots for x in leaves})
        if len(chains) != 1:
            return Lost(key, f"reconfiguration: its leaves now lie in several chains ({', '.join(chains)})")
        chain = chains[0]
        leaf_type = self.cluster.chains[chain].leaf_type
        if req.leaf_types and leaf_type not in req.leaf_types:
            return Lost(
                key, f"reconfiguration: its leaves are now {leaf_type}, not {'|'.join(req.leaf_types)}"
            )
        try:
            wanted = sorted(self._pods(req, chain))
        except UnsupportedRequestError as e:
            return Lost(key, f"reconfiguration: {e}")
        if wanted != sorted((role, i, len(leaves)) for role, i, leaves in slots):
            return Lost(
                key, f"reconfiguration: under the new {leaf_type} SKU its pods need other leaf counts"
            )
        g.chain, g.slots = chain, slots
        problem = self._holding_conflict(g)
        if problem is not None:
            return Lost(key, f"reconfiguration: {problem}")
        decision: Decision | None = None
        if g.priority >= 0:
            reason = self._rebind(g)
            if reason is not None:
                g.downgraded = True
                decision = Downgraded(key, "", f"reconfiguration: {reason}")
        if g.priority < 0:
            pinned = next((c.pinned_id for x in g.leaves() for c in x.path if c.pinned_id is not None), None)
            if pinned is not None:
                return Lost(key, f"reconfiguration: its leaves are now in pinned cell {pinned}")
            problem = self._holding_conflict(g)  # the kind of its shares changed
            if problem is not None:
                return Lost(key, f"reconfiguration: {problem}")
        g.state = GroupState.ALLOCATED
        self._restore_holdings(g, g.priority, set())
        self._groups[key] = g
        return decision

    def _holding_conflict(self, g: _Group) -> str | None:
        """Why the gang's leaves cannot take it (another gang holds them, or its shares would overbook or
        mix kinds); None when they can."""
        assert g.chain is not None
        memory = self.cluster.leaf_memory_mb[g.chain]
        milli_on: dict[Cell, tuple[int, int]] = {}
        whole: set[Cell] = set()
        for role, _, leaves in g.slots:
            share = g.shares.get(role)
            for leaf in leaves:
                if share is None:
                    if leaf.owner is not None or leaf.shares or leaf in whole or leaf in milli_on:
                        return f"leaf {leaf.node_name}:{leaf.leaf_index} is also held by another gang"
                    whole.add(leaf)
                    continue
                if leaf.owner is not None or leaf in whole:
                    return f"leaf {leaf.node_name}:{leaf.leaf_index} is used whole by another gang"
                m, mem = milli_on.get(leaf, (leaf.share_milli, leaf.share_memory))
                m, mem = m + share[0], mem + share[1]
                if m > MILLI_PER_LEAF or mem > memory:
                    return f"the shares on leaf {leaf.node_name}:{leaf.leaf_index} would exceed the device"
                if any((s[2] >= 0) != (g.priority >= 0) for s in leaf.shares.values()):
                    return (
                        f"its share on leaf {leaf.node_name}:{leaf.leaf_index} would sit beside shares of the"
                        " other kind (guaranteed/opportunistic)"
                    )
                milli_on[leaf] = (m, mem)
        return None

    def _rebind(self, g: _Group) -> str | None:
        """Cover a guaranteed gang's leaves with its VC's cells (bound already, or bound now from unbound
        quota, lowest level first, only where the chain stays safe); None on success, else why not (and
        nothing bound)."""
        req = g.request
        vc = req.vc
        if vc not in self.quota.quota:
            return f"VC {vc} no longer exists"
        leaves = list(g.leaves())
        if req.pinned_cell is not None:
            cell = self.cluster.pinned.get(req.pinned_cell)
            if cell is None or self.quota.pinned_owner.get(req.pinned_cell) != vc:
                return f"pinned cell {req.pinned_cell} no longer belongs to VC {vc}"
            if any(cell not in x.path for x in leaves):
                return f"its leaves are no longer inside pinned cell {req.pinned_cell}"
            return None
        assert g.chain is not None
        spec = self.cluster.chains[g.chain]
        levels = sorted(lv for (c, lv) in self.quota.quota[vc] if c == g.chain)
        made: list[Cell] = []

        def fail(reason: str) -> str:
            for cell in reversed(made):
                self.quota.unbind(cell)
            return reason

        for leaf in leaves:
            bound = next((c for c in reversed(leaf.path) if c.bound_vc is not None), None)
            if bound is not None:
                if bound.bound_vc == vc and bound.pinned_id is None:
                    continue
                return fail(
                    f"leaf {leaf.node_name}:{leaf.leaf_index} is now in a cell of VC {bound.bound_vc}"
                )
            for level in levels:
                if self.quota.unbound(vc, (g.chain, level)) <= 0:
                    continue
                cell = leaf.path[spec.top_level - level]
                if cell.n_bound_below:
                    continue
                self.quota.bind(cell, vc)
                if self.quota.unsafe_level(g.chain) is None:
                    made.append(cell)
                    break
                self.quota.unbind(cell)
            else:
                used = sum(c.n_guaranteed for c in self.quota.bound_cells(vc, g.chain))
                return fail(
                    f"VC {vc}'s new quota in chain {g.chain} ({self.quota.quota_leaves(vc, g.chain)} leaves,"
                    f" {used} held by other guaranteed work) cannot cover leaf"
                    f" {leaf.node_name}:{leaf.leaf_index}"
                )
        return None

    def _restore_holdings(self, g: _Group, share_priority: int, reserved: set[int]) -> None:
        """Put a restored gang's leaves back: the slots in ``reserved`` reserve their leaves, share slots
        hold their share, whole-leaf slots own their leaves."""
        key = g.request.key
        assert g.chain is not None
        memory = self.cluster.leaf_memory_mb[g.chain]
        for i, (role, _, leaves) in enumerate(g.slots):
            share = g.shares.get(role)
            for leaf in leaves:
                if i in reserved:
                    if leaf.reserver is not None:
                        raise ValueError(f"leaf {leaf.id} is reserved by {leaf.reserver} and {key}")
                    self.cluster.set_leaf(leaf, leaf.owner, leaf.owner_priority, key)
                elif share is not None:
                    if leaf.owner is not None:
                        raise ValueError(f"leaf {leaf.id} is used by {leaf.owner} and shared by {key}")
                    if leaf.share_milli + share[0] > MILLI_PER_LEAF or leaf.share_memory + share[1] > memory:
                        raise ValueError(f"leaf {leaf.id}: its shares exceed the device")
                    self.cluster.add_share(leaf, key, share[0], share[1], share_priority)
                else:
                    if leaf.owner is not None or leaf.shares:
                        who = leaf.owner or ", ".join(sorted(leaf.shares))
                        raise ValueError(f"leaf {leaf.id} is used by {who} and {key}")
                    self.cluster.set_leaf(leaf, key, g.priority, None)

    # ========================================================================== scheduling

    def _schedule(self, g: _Group) -> list[Decision]:
        """Place the gang (or start its preemption) outside the leaves held for a protected head it must
        not overtake, with lazy preemption of its lazy victims where that lets them stay; [] when it does
        not fit now (``held_by`` says whether only the hold stopped it)."""
        g.held_by = None
        hold = self._hold_against(g)
        if hold is None:
            return self._schedule_within(g)
        self._set_blocked(hold[1])
        self._guarding = (self._groups[hold[0]], hold[1])
        try:
            out = self._schedule_within(g)
        finally:
            self._set_blocked(frozenset())
            self._guarding = None
        if not out:
            self._undo = []
            if self._find(g) is not None:
                g.held_by = hold[0]
            self._rollback()
        return out

    def _schedule_within(self, g: _Group) -> list[Decision]:
        self._undo = []
        found = self._find(g)
        if found is None:
            self._rollback()
            return []
        lazy = self._lazy_victims(g, found[1])
        downgraded: list[_Group] = []
        if lazy:
            self._rollback()
            self._undo = []
            for v in lazy:
                self._tx_downgrade(v)
            again = self._find(g)
            keys = {v.request.key for v in lazy}
            if again is not None and not (self._victims(g.request.key, again[1]) & keys):
                found, downgraded = again, lazy
            else:  # a downgraded gang would be preempted anyway: revert and preempt as usual
                self._rollback()
                self._undo = []
                found = self._find(g)
                assert found is not None, "placement is deterministic"
        self._undo = None
        out: list[Decision] = [Downgraded(v.request.key, g.request.key) for v in downgraded]
        cancelled = self._cancel_overridden()
        own = self._commit(g, *found)
        out.extend(self._queued(p) for p in cancelled)
        out.append(own)
        return out

    def _cancel_overridden(self) -> list[_Group]:
        """The lower-priority preemptors whose reservations the placement just made took over (HiveD's
        Reserving/Reserved overwrite): each withdraws what it still reserves, its victims that nobody else
        preempts run on, and it goes back to waiting."""
        keys = sorted(set(self._overridden), key=lambda k: self._groups[k].seq)
        self._overridden = []
        cancelled = []
        for key in keys:
            p = self._groups[key]
            leaves = list(p.leaves())
            for role, _, slot_leaves in p.slots:
                share = p.shares.get(role)
                for leaf in slot_leaves:
                    if leaf.reserver == key:
                        self.cluster.set_leaf(leaf, leaf.owner, leaf.owner_priority, None)
                    elif share is not None and key in leaf.shares:
                        self.cluster.remove_share(leaf, key, *share)
            for v in sorted(p.victims):
                victim = self._groups[v]
                victim.preemptors.discard(key)
                if not victim.preemptors:
                    victim.state = GroupState.ALLOCATED
            p.state, p.chain, p.slots, p.victims = GroupState.PENDING, None, [], set()
            self._maybe_pending.add(key)
            self._unbind_idle(leaves)
            cancelled.append(p)
        if cancelled:
            self._requeued = True
        return cancelled

    def _find(self, g: _Group) -> tuple[str, list[PodSlot]] | None:
        """The first placement of the whole gang over passes of increasing cost, applied inside the open
        transaction (reservations and shares); None (and nothing applied) when none fits."""
        assert self._undo is not None
        req = g.request
        ceilings = [FREE_PRIORITY]
        if req.guaranteed:
            ceilings += sorted({OPPORTUNISTIC_PRIORITY, req.priority - 1})
        chains = self._chains_for(req)
        # Behind a protected head, keeping off its held leaves is not enough: a gang that binds more of the
        # VC's quota elsewhere can leave too little quota to cover them, and the head would then wait for
        # that gang too. Such a placement is refused (unless the head could not start there anyway).
        guard = self._guarding if self._guarding is not None and self._head_fits(*self._guarding) else None
        for ceiling in ceilings:
            for chain in chains:
                mark = len(self._undo)
                slots = self._place_in_chain(g, chain, ceiling)
                if slots is not None:
                    if guard is None or self._head_fits(*guard):
                        return chain, slots
                    self._rollback_to(mark)
        return None

    def _head_fits(self, head: _Group, held: frozenset[Cell]) -> bool:
        """Whether the protected head could be placed on exactly its held leaves if the work running on them
        ended (inside the open transaction; nothing is left applied)."""
        assert self._undo is not None
        chain = next(iter(held)).chain
        if self._outside_hold is None or self._outside_hold[0] is not held:
            others = frozenset(
                x for x in self.cluster.cells.values() if x.chain == chain and x.level == 1 and x not in held
            )
            self._outside_hold = (held, others)
        saved = (self._blocked, self._blocked_nodes, self._placing, self._guarding)
        self._set_blocked(self._outside_hold[1])
        self._guarding = None
        mark = len(self._undo)
        try:
            return self._place_in_chain(head, chain, MAX_GUARANTEED_PRIORITY) is not None
        finally:
            self._rollback_to(mark)
            self._blocked, self._blocked_nodes, self._placing, self._guarding = saved

    def _place_in_chain(self, g: _Group, chain: str, ceiling: int) -> list[PodSlot] | None:
        """``_place_gang`` in one chain; an InfiniBand gang under one InfiniBand domain, tried in order of
        preference (for guaranteed gangs the domains holding most of the VC's bound cells, then the fullest
        that can hold the gang, then order). Nothing is left applied when it returns None."""
        assert self._undo is not None
        mark = len(self._undo)
        if not g.request.infiniband:
            slots = self._place_gang(g, chain, ceiling)
            if slots is None:
                self._rollback_to(mark)
            return slots
        total = sum(k for _, _, k in self._pods(g.request, chain))
        for domain in self._ib_domains(g, chain, total, ceiling):
            self._within = domain
            try:
                slots = self._place_gang(g, chain, ceiling)
            finally:
                self._within = None
            if slots is not None:
                return slots
            self._rollback_to(mark)
        return None

    def _ib_domains(self, g: _Group, chain: str, total: int, ceiling: int) -> list[Cell]:
        domains = [
            c
            for c in self._ib_cells[chain]
            if (c.n_free if ceiling == FREE_PRIORITY else len(c.leaves)) >= total
            and c.n_bad_nodes < len(c.node_cells)
        ]
        if not g.request.guaranteed or g.request.pinned_cell is not None:
            return sorted(domains, key=lambda c: (c.n_free, c.order))
        level = self.cluster.chains[chain].infiniband_level
        vc_leaves: dict[Cell, int] = {}
        for cell in self.quota.bound_cells(g.request.vc, chain):
            if cell.level <= level:
                domain = cell.path[-(level - cell.level) - 1]
                vc_leaves[domain] = vc_leaves.get(domain, 0) + len(cell.leaves)
            else:
                for d in cell.walk():
                    if d.level == level:
                        vc_leaves[d] = vc_leaves.get(d, 0) + len(d.leaves)
        return sorted(domains, key=lambda c: (-vc_leaves.get(c, 0), c.n_free, c.order))

    def _place_gang(self, g: _Group, chain: str, ceiling: int) -> list[PodSlot] | None:
        self._placing = g
        slots: list[PodSlot] = []
        placed: list[Cell] = []
        for role, index, k in self._pods(g.request, chain):
            share = g.shares.get(role)
            if share is not None:
                leaves = self._place_share(g, chain, share, ceiling, placed)
                if leaves is None:
                    return None
            else:
                leaves = self._place_pod(g, chain, k, ceiling, placed)
                if leaves is None:
                    return None
                for leaf in leaves:
                    self._tx_reserve(leaf, g.request.key)
            slots.append((role, index, leaves))
            node = leaves[0].node
            assert node is not None
            placed.append(node)
        return slots

    def _place_share(
        self, g: _Group, chain: str, share: tuple[int, int], ceiling: int, placed: list[Cell]
    ) -> tuple[Cell, ...] | None:
        """A share pod: join a shared leaf with room (best fit), else take a free leaf, else (preemption
        passes) reserve a busy leaf whole. Held shares of a guaranteed gang are untouchable until the gang
        is allocated (it may still be preempting for other pods)."""
        req = g.request
        hold_priority = UNTOUCHABLE_PRIORITY if req.guaranteed else req.priority
        leaf = self._join_share(g, chain, share, placed)
        if leaf is None:
            got = self._place_pod(g, chain, 1, ceiling, placed)
            if got is None:
                return None
            leaf = got[0]
            if leaf.owner is not None or leaf.shares or leaf.reserver is not None:
                self._tx_reserve(leaf, req.key)
                return (leaf,)
        self._tx_add_share(leaf, req.key, share, hold_priority)
        return (leaf,)

    def _join_share(self, g: _Group, chain: str, share: tuple[int, int], placed: list[Cell]) -> Cell | None:
        """The shared leaf this share fits best (least room left over), among leaves holding shares of the
        same kind: guaranteed shares inside the gang's VC cells (its pinned cell, if it names one), or
        opportunistic shares."""
        req = g.request
        milli, memory = share
        capacity = self.cluster.leaf_memory_mb[chain]
        pinned = self.cluster.pinned[req.pinned_cell] if req.pinned_cell is not None else None
        anchor = placed[0] if placed else None
        best: tuple[tuple[int, ...], Cell] | None = None
        for leaf in self.cluster.shared[chain]:
            if leaf.reserver is not None or not leaf.healthy or leaf in self._blocked:
                continue
            if self._within is not None and self._within not in leaf.path:
                continue
            room_milli = MILLI_PER_LEAF - leaf.share_milli - milli
            room_memory = capacity - leaf.share_memory - memory
            if room_milli < 0 or room_memory < 0:
                continue
            if req.guaranteed:
                if leaf.owner_priority < 0:
                    continue
                bound = next((c for c in reversed(leaf.path) if c.bound_vc is not None), None)
                if bound is None or bound.bound_vc != req.vc:
                    continue
                if (pinned is not None and pinned not in leaf.path) or (
                    pinned is None and bound.pinned_id is not None
                ):
                    continue
            elif leaf.owner_priority != OPPORTUNISTIC_PRIORITY:
                continue
            node = leaf.node
            key = (
                room_milli * capacity + room_memory * MILLI_PER_LEAF,
                node not in placed,
                -_closeness(node, anchor),
                leaf.order,
            )
            if best is None or key < best[0]:
                best = (key, leaf)
        return None if best is None else best[1]

    def _place_pod(
        self, g: _Group, chain: str, k: int, ceiling: int, placed: list[Cell]
    ) -> tuple[Cell, ...] | None:
        req = g.request
        if not req.guaranteed:
            best: tuple[tuple[int, ...], Region] | None = None
            within = self._within
            for top, group in self._open_by_top[chain]:
                if top.n_free < k or (within is not None and within.path[0] is not top):
                    continue
                found = self._best_region(group, k, ceiling, placed, opportunistic=True)
                if found is not None and (best is None or found[0] < best[0]):
                    best = found
            return None if best is None else pick_leaves(self._usable(best[1][2], ceiling), k, self._rank)
        if req.pinned_cell is not None:
            return self._best_in(self._regions_of(self.cluster.pinned[req.pinned_cell]), k, ceiling, placed)
        got = self._best_in(self._bound_regions(req.vc, chain), k, ceiling, placed)
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

    def _bound_regions(self, vc: str, chain: str) -> list[Region]:
        """The regions of the cells ``vc`` has bound in ``chain``, cached until the bindings change."""
        key = (vc, chain)
        cached = self._bound_regions_cache.get(key)
        if cached is not None and cached[0] == self.quota.binding_version:
            return cached[1]
        regions = [r for cell in self.quota.bound_cells(vc, chain) for r in self._regions_of(cell)]
        self._bound_regions_cache[key] = (self.quota.binding_version, regions)
        return regions

    @staticmethod
    def _regions_of(cell: Cell) -> list[Region]:
        # A cell's place in the tree never changes, so its regions are computed once.
        if cell.regions is not None:
            return cell.regions
        regions: list[Region]
        if cell.node is None or cell.node is cell:
            regions = [(n, n, n.leaves) for n in cell.node_cells]
        else:
            regions = [(cell.node, cell, cell.leaves)]
        cell.regions = regions
        return regions

    def _usable(self, leaves: Iterable[Cell], ceiling: int) -> list[Cell]:
        # A free leaf has owner_priority FREE_PRIORITY, the lowest ceiling.
        blocked = self._blocked
        if ceiling >= 0:  # a guaranteed gang's preemption pass may take over lower preemptors' reservations
            return [
                x
                for x in leaves
                if x.owner_priority <= ceiling
                and not x.bad_leaf
                and (x.reserver is None or self._reserver_priority(x.reserver) <= ceiling)
                and not (blocked and x in blocked)
            ]
        if blocked:
            return [
                x
                for x in leaves
                if x.reserver is None and x.owner_priority <= ceiling and not x.bad_leaf and x not in blocked
            ]
        return [x for x in leaves if x.reserver is None and x.owner_priority <= ceiling and not x.bad_leaf]

    def _reserver_priority(self, key: str) -> int:
        """What taking over a reservation of ``key`` costs: its priority when it is a preemptor (holding no
        shares) below the gang being placed, else UNTOUCHABLE (never taken over)."""
        p = self._groups.get(key)
        placing = self._placing
        if (
            p is None
            or placing is None
            or p is placing
            or p.state is not GroupState.PREEMPTING
            or p.shares
            or p.request.priority >= placing.request.priority
        ):
            return UNTOUCHABLE_PRIORITY
        return p.request.priority

    def _rank(self, x: Cell) -> tuple[int, int]:
        """(the priority taking the leaf would preempt, minus the start order of the gang it would stop):
        cheapest first, then the most recently started (it has lost the least work)."""
        cost = x.owner_priority
        if x.reserver is not None:
            cost = max(cost, self._reserver_priority(x.reserver))
        if x.owner is not None:
            return cost, -self._groups[x.owner].started
        if x.shares:
            return cost, -max(self._groups[k].started for k in x.shares)
        return cost, 0

    def _best_in(
        self, regions: Sequence[Region], k: int, ceiling: int, placed: list[Cell]
    ) -> tuple[Cell, ...] | None:
        best = self._best_region(regions, k, ceiling, placed)
        if best is None:
            return None
        return pick_leaves(self._usable(best[1][2], ceiling), k, self._rank)

    def _best_region(
        self,
        regions: Sequence[Region],
        k: int,
        ceiling: int,
        placed: list[Cell],
        opportunistic: bool = False,
    ) -> tuple[tuple[int, ...], Region] | None:
        if ceiling == FREE_PRIORITY and not placed and not opportunistic:
            return self._best_free_region(regions, k)
        anchor = placed[0] if placed else None
        best: tuple[tuple[int, ...], Region] | None = None
        blocked_nodes = self._blocked_nodes
        within = self._within
        for region in regions:
            node, counter, leaves = region
            if node.n_bad_nodes or (within is not None and within not in node.path):
                continue
            if (
                ceiling == FREE_PRIORITY
                and counter is not None
                and not (blocked_nodes and node in blocked_nodes)
            ):
                n = counter.n_free
                if n < k:
                    continue
                key: tuple[int, ...] = (FREE_PRIORITY, 0, node not in placed, -_closeness(node, anchor), n)
                if opportunistic:
                    # Opportunistic pods keep away from guaranteed work (they would be its first victims).
                    key = (node.n_guaranteed > 0, *key)
            else:
                if (
                    ceiling == OPPORTUNISTIC_PRIORITY
                    and counter is not None
                    and counter.n_free + counter.n_opportunistic < k
                ):
                    continue  # its usable leaves are among the free and the opportunistic ones
                usable = self._usable(leaves, ceiling)
                if len(usable) < k:
                    continue
                cheapest = sorted(map(self._rank, usable))[:k]
                busy = sum(1 for p, _ in cheapest if p > FREE_PRIORITY)
                # Among otherwise equal regions, the one whose victims started most recently (the oldest of
                # them latest): they have lost the least work.
                recent = max((r for p, r in cheapest if p > FREE_PRIORITY), default=0)
                key = (
                    cheapest[-1][0],
                    busy,
                    node not in placed,
                    -_closeness(node, anchor),
                    len(usable),
                    recent,
                )
            key = (*key, node.order, leaves[0].order)  # two quota cells of one node: by position
            if best is None or key < best[0]:
                best = (key, region)
        return best

    def _best_free_region(self, regions: Sequence[Region], k: int) -> tuple[tuple[int, ...], Region] | None:
        """``_best_region`` for the commonest case, a gang's first pod on free leaves only: every key then
        starts (FREE_PRIORITY, 0, True, 0), so only its tail (free leaves, node order, leaf order) is
        compared. The hot path of a busy cluster; it must choose exactly what the general loop would."""
        if len(regions) >= _INDEXED_REGIONS and not self._blocked_nodes and self._within is None:
            return self._best_free_indexed(regions, k)
        return self._best_free_scan(regions, k)

    def _best_free_scan(self, regions: Sequence[Region], k: int) -> tuple[tuple[int, ...], Region] | None:
        blocked_nodes = self._blocked_nodes
        within = self._within
        best_tail: tuple[int, int, int] | None = None
        best_region: Region | None = None
        for region in regions:
            node, counter, leaves = region
            if node.n_bad_nodes or (within is not None and within not in node.path):
                continue
            if counter is not None and not (blocked_nodes and node in blocked_nodes):
                n = counter.n_free
            else:
                n = len(self._usable(leaves, FREE_PRIORITY))
            if n < k:
                continue
            tail = (n, node.order, leaves[0].order)
            if best_tail is None or tail < best_tail:
                best_tail, best_region = tail, region
        if best_tail is None or best_region is None:
            return None
        return (FREE_PRIORITY, 0, True, 0, *best_tail), best_region

    def _best_free_indexed(self, regions: Sequence[Region], k: int) -> tuple[tuple[int, ...], Region] | None:
        """``_best_free_region`` through the chain's free-node buckets: the fullest nodes that still hold
        ``k`` free leaves come first, so only one bucket is looked at (plus the few regions not counted
        by a whole node). Chooses exactly what the loop would (a property test compares them)."""
        entry = self._region_index.get(id(regions))
        if entry is None or entry[0] is not regions:
            by_node: dict[Cell, Region] = {}
            others: list[Region] = []
            for region in regions:
                if region[1] is region[0]:
                    by_node[region[0]] = region
                else:
                    others.append(region)
            if len(self._region_index) >= 256:
                self._region_index.clear()
            entry = (regions, by_node, others)
            self._region_index[id(regions)] = entry
        _, by_node, others = entry
        best_tail: tuple[int, int, int] | None = None
        best_region: Region | None = None
        for region in others:
            node, counter, leaves = region
            if node.n_bad_nodes:
                continue
            n = counter.n_free if counter is not None else len(self._usable(leaves, FREE_PRIORITY))
            if n < k:
                continue
            tail = (n, node.order, leaves[0].order)
            if best_tail is None or tail < best_tail:
                best_tail, best_region = tail, region
        buckets = self.cluster.free_nodes[regions[0][0].chain]
        for n in range(k, len(buckets)):
            if best_tail is not None and best_tail[0] < n:
                break
            found = [x for x in buckets[n] if x in by_node and not x.n_bad_nodes]
            if found:
                node = min(found, key=_order)
                region = by_node[node]
                tail = (n, node.order, region[2][0].order)
                if best_tail is None or tail < best_tail:
                    best_tail, best_region = tail, region
                break
        if best_tail is None or best_region is None:
            return None
        return (FREE_PRIORITY, 0, True, 0, *best_tail), best_region

    def _fits_unbound(self, cell: Cell, k: int, ceiling: int) -> bool:
        within = self._within
        for node, counter, leaves in self._regions_of(cell):
            if node.n_bad_nodes or (within is not None and within not in node.path):
                continue
            if ceiling == FREE_PRIORITY and counter is not None and node not in self._blocked_nodes:
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

    def _victims(self, key: str, slots: list[PodSlot]) -> set[str]:
        """Gangs using the leaves this placement reserves (whole-leaf owners and every sharer)."""
        out: set[str] = set()
        for _, _, leaves in slots:
            for x in leaves:
                if x.reserver == key:
                    if x.owner is not None:
                        out.add(x.owner)
                    out.update(x.shares)
        return out

    def _commit(self, g: _Group, chain: str, slots: list[PodSlot]) -> Decision:
        req = g.request
        g.chain = chain
        g.slots = slots
        victims = sorted(
            self._victims(req.key, slots), key=lambda v: (self._groups[v].priority, self._groups[v].seq)
        )
        if not victims:
            self._settle(g)
            return Allocated(req.key, self._placements(g))
        g.state = GroupState.PREEMPTING
        g.victims = set(victims)
        for v in victims:
            victim = self._groups[v]
            victim.state = GroupState.BEING_PREEMPTED
            victim.preemptors.add(req.key)
        return Preempting(req.key, tuple(victims), self._placements(g))

    def _finish_preemption(self, g: _Group) -> Decision:
        self._settle(g)
        return Allocated(g.request.key, self._placements(g))

    def _settle(self, g: _Group) -> None:
        """The gang is allocated: it owns its whole leaves, its shares take its priority, and leaves it
        reserved for share pods become shares."""
        key, prio = g.request.key, g.priority
        g.started = self._next_start
        self._next_start += 1
        for role, _, leaves in g.slots:
            share = g.shares.get(role)
            for leaf in leaves:
                if share is None:
                    self.cluster.set_leaf(leaf, key, prio, None)
                elif leaf.reserver == key:
                    self.cluster.set_leaf(leaf, None, FREE_PRIORITY, None)
                    self.cluster.add_share(leaf, key, share[0], share[1], prio)
                elif leaf.shares[key][2] != prio:
                    self.cluster.set_share_priority(leaf, key, prio)
        g.state = GroupState.ALLOCATED

    # ====================================================================== lazy preemption

    def _lazy_victims(self, g: _Group, slots: list[PodSlot]) -> list[_Group]:
        """The victims of this placement that may be downgraded instead of preempted: gangs of the VC
        that asked for lazy preemption, still guaranteed and allocated, holding whole leaves outside
        pinned cells (a pinned binding is static, and shares keep one kind per leaf)."""
        if not g.request.guaranteed:
            return []
        out = []
        for key in sorted(self._victims(g.request.key, slots), key=lambda k: self._groups[k].seq):
            v = self._groups[key]
            r = v.request
            if (
                r.lazy_preemption
                and not v.downgraded
                and r.guaranteed
                and r.pinned_cell is None
                and not v.shares
                and v.state is GroupState.ALLOCATED
            ):
                out.append(v)
        return out

    def _tx_downgrade(self, v: _Group) -> None:
        assert self._undo is not None
        leaves = list(v.leaves())
        for leaf in leaves:
            self._tx_set_leaf(leaf, leaf.owner, OPPORTUNISTIC_PRIORITY, leaf.reserver)
        v.downgraded = True

        def undo() -> None:
            v.downgraded = False

        self._undo.append(undo)
        self._unbind_idle(leaves, transactional=True)

    def _refresh_doomed(self) -> None:
        """HiveD's doomed bad cells. Whenever a VC's unbound quota at some level outnumbers the healthy free
        cells that could take it (checked per VC, other VCs' needs not subtracted), the missing quota
        cells are bound to bad free cells instead, from the top level down: bad free cells of the level
        first, then a bad cell carved out of a higher free one if the chain stays safe. They
        hold no work, are never unbound as idle, and make the VC's placement avoid the bad hardware while
        the accounting stays exact (the bad cells are spoken for; the unbound rest is all bindable to
        healthy cells). Recomputed from scratch after every command: doomed cells are unbound first (one
        that meanwhile holds the VC's guaranteed work stays bound as an ordinary binding), then bound
        again where a shortfall remains. A no-op while every node and leaf is healthy."""
        if not self._doomed and not self.cluster.bad_nodes and not self.cluster.bad_leaves:
            return
        for cell in sorted(self._doomed, key=_order, reverse=True):
            if cell.n_guaranteed == 0:
                self.quota.unbind(cell)
        self._doomed = set()
        if not self.cluster.bad_nodes and not self.cluster.bad_leaves:
            return
        # One VC's doomed binding can take the bad cell whose healthy part another VC counted on: repeat
        # until no VC binds more (each binding uses up one unbound quota cell, so this ends).
        changed = True
        while changed:
            changed = False
            for vc in self.quota.vcs:
                while True:
                    bound: Cell | None = None
                    for chain, level, _, _ in self.quota.healthy_shortfall(vc):
                        bound = self._doomed_candidate(vc, chain, level)
                        if bound is not None:
                            break
                    if bound is None:
                        break
                    self._doomed.add(bound)
                    changed = True

    def _doomed_candidate(self, vc: str, chain: str, level: int) -> Cell | None:
        """Bind a bad free cell of ``level`` to ``vc`` (the most bad nodes first, then the most bad leaves,
        then order), or one inside a higher bad free cell when the chain stays safe; the cell bound, or
        None."""

        def pref(c: Cell) -> tuple[int, int, int]:
            return (-c.n_bad_nodes, -c.n_bad_leaves, c.order)

        bad = sorted((c for c in self.quota.free[(chain, level)] if not c.healthy), key=pref)
        if bad:
            self.quota.bind(bad[0], vc)
            return bad[0]
        top = self.cluster.chains[chain].top_level
        for upper in range(level + 1, top + 1):
            for big in sorted((c for c in self.quota.free[(chain, upper)] if not c.healthy), key=pref):
                inner = sorted(
                    (c for c in self.quota.free_descendants(level, [big]) if not c.healthy), key=pref
                )
                if not inner:
                    continue
                self.quota.bind(inner[0], vc)
                if self.quota.unsafe_level(chain) is None:
                    return inner[0]
                self.quota.unbind(inner[0])
                return None
        return None

    def _unbind_idle(self, leaves: Iterable[Cell], transactional: bool = False) -> None:
        seen: set[Cell] = set()
        for leaf in leaves:
            for cell in reversed(leaf.path):
                if cell.bound_vc is not None:
                    if (
                        cell not in seen
                        and cell.pinned_id is None
                        and cell.n_guaranteed == 0
                        and cell not in self._doomed
                    ):
                        vc = cell.bound_vc
                        self.quota.unbind(cell)
                        if transactional:
                            assert self._undo is not None
                            self._undo.append(functools.partial(self.quota.bind, cell, vc))
                    seen.add(cell)
                    break

    def _queue(self) -> list[_Group]:
        waiting: list[_Group] = []
        gone: list[str] = []
        for key in self._maybe_pending:
            g = self._groups.get(key)
            if g is None or g.state is not GroupState.PENDING:
                gone.append(key)
            else:
                waiting.append(g)
        self._maybe_pending.difference_update(gone)
        return sorted(waiting, key=lambda g: (-g.request.priority, g.seq))

    def _retry_pending(self) -> list[Decision]:
        out: list[Decision] = []
        # A placement that takes over lower preemptors' reservations sends them back to the queue; the
        # pass is repeated for them. Each such step needs a strictly higher priority, so this ends.
        self._requeued = True
        while self._requeued:
            self._requeued = False
            # A gang that could not be placed leaves the state as it was, so a later gang asking for
            # exactly the same (VC, priority, pods, types, options) cannot be placed either until
            # something changes: it is not tried again within the pass. A busy queue is mostly such
            # look-alikes.
            failed: set[GangRequest] = set()
            for g in self._queue():
                shape = g.shape
                if shape in failed:
                    continue
                got = self._schedule(g)
                if got:
                    out.extend(got)
                    self._refresh_holds()
                    failed.clear()  # the state changed: what failed before may fit now (holds can move)
                else:
                    failed.add(shape)
        return out

    # =================================================================== backfill protection

    def _tick(self, now: float | None) -> None:
        if now is not None:
            self._now = now if self._now is None else max(self._now, float(now))

    def _refresh_holds(self) -> None:
        """Recompute which heads are protected and what is held for them (deterministic in the state and
        the clock). The head of a VC is the first gang of its queue; it is protected once it is guaranteed
        and has waited ``protect_head_after_s``; what it holds is the placement it would get if every
        leaf of its VC's running work (any priority) were free: the cells it will start on soonest."""
        if self._now is None or self.protect_head_after_s is None:
            if self._holds:
                self._holds = {}
            return
        heads: dict[str, _Group] = {}
        for g in self._queue():
            heads.setdefault(g.request.vc, g)
        holds: dict[str, tuple[str, frozenset[Cell]]] = {}
        for vc in sorted(heads):
            head = heads[vc]
            if (
                not head.request.guaranteed
                or head.since is None
                or self._now - head.since < self.protect_head_after_s
            ):
                continue
            # A hold stays where it was first put while its head waits and its leaves stay healthy:
            # moving it to cells that became cheaper would throw away what has drained so far.
            kept = self._holds.get(vc)
            if (
                kept is not None
                and kept[0] == head.request.key
                and not any(x.bad_leaf or (x.node is not None and x.node.n_bad_nodes) for x in kept[1])
                # another VC bound cells under it (the head cannot start there while that VC's work runs)
                and not any(c.bound_vc not in (None, vc) for x in kept[1] for c in x.path)
            ):
                holds[vc] = kept
                continue
            leaves = self._best_placement_leaves(head)
            if leaves:
                holds[vc] = (head.request.key, leaves)
        self._holds = holds

    def _best_placement_leaves(self, head: _Group) -> frozenset[Cell]:
        """The leaves of the placement the gang would get if it could take every leaf below
        UNTOUCHABLE (other gangs' reservations excepted); empty when there is none."""
        self._undo = []
        try:
            for chain in self._chains_for(head.request):
                slots = self._place_in_chain(head, chain, MAX_GUARANTEED_PRIORITY)
                if slots is not None:
                    return frozenset(x for _, _, leaves in slots for x in leaves)
            return frozenset()
        finally:
            self._rollback()

    def _hold_against(self, g: _Group) -> tuple[str, frozenset[Cell]] | None:
        """The hold ``g`` must respect: its VC's protected head's, when ``g`` comes after that head in the
        VC's queue (priority not above the head's). Other VCs' gangs never respect it."""
        hold = self._holds.get(g.request.vc)
        if hold is None:
            return None
        head = self._groups.get(hold[0])
        if head is None or head is g or head.state is not GroupState.PENDING:
            return None
        if (-g.request.priority, g.seq) < (-head.request.priority, head.seq):
            return None
        return hold

    def _set_blocked(self, leaves: frozenset[Cell]) -> None:
        self._blocked = leaves
        self._blocked_nodes = frozenset(x.node for x in leaves if x.node is not None)

    # ======================================================================== transactions

    def _tx_set_leaf(self, leaf: Cell, owner: str | None, priority: int, reserver: str | None) -> None:
        assert self._undo is not None
        old = (leaf.owner, leaf.owner_priority, leaf.reserver)
        self.cluster.set_leaf(leaf, owner, priority, reserver)
        self._undo.append(lambda: self.cluster.set_leaf(leaf, *old))

    def _tx_reserve(self, leaf: Cell, key: str) -> None:
        """Reserve the leaf for ``key``, taking the reservation over from a lower preemptor if it has one."""
        assert self._undo is not None
        previous = leaf.reserver
        self._tx_set_leaf(leaf, leaf.owner, leaf.owner_priority, key)
        if previous is not None and previous != key:
            self._overridden.append(previous)
            self._undo.append(lambda: self._overridden.remove(previous))

    def _tx_add_share(self, leaf: Cell, key: str, share: tuple[int, int], priority: int) -> None:
        assert self._undo is not None
        self.cluster.add_share(leaf, key, share[0], share[1], priority)
        self._undo.append(lambda: self.cluster.remove_share(leaf, key, share[0], share[1]))

    def _tx_bind(self, cell: Cell, vc: str) -> None:
        assert self._undo is not None
        self.quota.bind(cell, vc)
        self._undo.append(lambda: self.quota.unbind(cell))

    def _rollback_to(self, mark: int) -> None:
        assert self._undo is not None
        while len(self._undo) > mark:
            self._undo.pop()()

    def _rollback(self) -> None:
        self._rollback_to(0)
        self._undo = None

    # ======================================================================= request checks

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
            for name, value in (
                ("leaves", m.leaves),
                ("gpu_milli", m.gpu_milli),
                ("gpu_memory_mb", m.gpu_memory_mb),
            ):
                if isinstance(value, bool) or not isinstance(value, int):
                    extra = " or a fraction below 1" if name == "leaves" else ""
                    return f"role {m.role}: {name} must be a whole number{extra}, got {value!r}"
            if m.leaves < 0:
                return f"role {m.role}: leaves must be >= 0, got {m.leaves}"
            if not 0 <= m.gpu_milli < MILLI_PER_LEAF:
                return (
                    f"role {m.role}: gpu_milli must be 1..{MILLI_PER_LEAF - 1} (a share of one GPU), got"
                    f" {m.gpu_milli}; ask for whole leaves instead"
                )
            if m.gpu_memory_mb < 0:
                return f"role {m.role}: gpu_memory_mb must be >= 0, got {m.gpu_memory_mb}"
            if m.is_share and m.leaves:
                return f"role {m.role}: ask for whole leaves ({m.leaves}) or a share of one leaf, not both"
        known = {c.leaf_type for c in self.cluster.chains.values()}
        for t in req.leaf_types:
            if t not in known:
                return f"unknown leaf type {t!r} (this cluster has {', '.join(sorted(known))})"
        if not _cpu_only(req):
            cpu_types = [t for t in req.leaf_types if self.config.is_cpu_leaf(t)]
            if cpu_types and len(cpu_types) == len(req.leaf_types):
                return (
                    f"{'|'.join(cpu_types)} leaves are CPU and memory only, but the gang asks for GPUs"
                    " (or a GPU share)"
                )
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
            if self.config.is_cpu_leaf(leaf_type) and not _cpu_only(req):
                return (
                    f"pinned cell {req.pinned_cell} holds {leaf_type} leaves (no GPU), but the gang asks for"
                    " GPUs"
                )
        return None

    def _chains_for(self, req: GangRequest) -> list[str]:
        """The chains a gang may go to, in the order they are tried. A gang with an accelerator (or share)
        member never goes to CPU chains; a CPU-only gang (every pod asks for no GPU) goes to the CPU chains
        it may use and, only when there are none, to accelerator chains (each pod then holds the leaves
        its CPU and memory need through the SKU, at least one, as OpenPAI does)."""
        # Pure in the request and the (fixed) config and quota; asked on every placement attempt.
        cached = self._chains_cache.get(id(req))
        if cached is not None and cached[0] is req:
            return cached[1]
        chains = self._compute_chains_for(req)
        if len(self._chains_cache) >= 10_000:
            self._chains_cache.clear()
        self._chains_cache[id(req)] = (req, chains)
        return chains

    def _compute_chains_for(self, req: GangRequest) -> list[str]:
        if req.pinned_cell is not None:
            return [self.cluster.pinned[req.pinned_cell].chain]
        names = sorted(self.cluster.chains)
        if req.leaf_types:
            chains = [c for t in req.leaf_types for c in names if self.cluster.chains[c].leaf_type == t]
        else:
            chains = names
        if req.guaranteed:
            chains = [c for c in chains if c in set(self.quota.chains_of(req.vc))]
        cpu = [c for c in chains if self._cpu_chain(c)]
        if _cpu_only(req) and cpu:
            return cpu
        return [c for c in chains if not self._cpu_chain(c)]

    def _cpu_chain(self, chain: str) -> bool:
        return self.config.is_cpu_leaf(self.cluster.chains[chain].leaf_type)

    def _pods(self, req: GangRequest, chain: str) -> list[tuple[str, int, int]]:
        """(role, index, leaves) for every pod on this chain's leaf type, largest first."""
        # Pure in the request and the (fixed) config; asked again on every retry of a waiting gang.
        cached = self._pods_cache.get((req.members, chain))
        if cached is not None:
            return list(cached)
        pods = self._compute_pods(req, chain)
        if len(self._pods_cache) >= 10_000:
            self._pods_cache.clear()
        self._pods_cache[(req.members, chain)] = tuple(pods)
        return pods

    def _compute_pods(self, req: GangRequest, chain: str) -> list[tuple[str, int, int]]:
        sku = self.config.sku(self.cluster.chains[chain].leaf_type)
        out: list[tuple[int, str, int, int]] = []
        # A pod asking for no GPU still holds at least one leaf: a CPU unit on a CPU chain, else one leaf
        # whose accelerator it does not see (its CPU and memory come with the leaf, as in OpenPAI).
        for order, m in enumerate(req.members):
            if m.is_share:  # one leaf, after the whole-leaf pods of the same size
                out.extend((len(req.members) + order, m.role, i, 1) for i in range(m.pods))
                continue
            k = int(m.leaves)
            if sku is not None:
                if sku.cpu > 0 and m.cpu > 0:
                    k = max(k, math.ceil(m.cpu / sku.cpu))
                if sku.memory_mb > 0 and m.memory_mb > 0:
                    k = max(k, math.ceil(m.memory_mb / sku.memory_mb))
            k = max(k, 1)
            out.extend((order, m.role, i, k) for i in range(m.pods))
        out.sort(key=lambda p: (-p[3], p[0], p[2]))
        return [(role, i, k) for _, role, i, k in out]

    def _never_fits_reason(self, req: GangRequest) -> str | None:
        shape = (req.vc, req.guaranteed, req.members, req.leaf_types, req.pinned_cell, req.infiniband)
        if shape in self._never_fits_cache:
            return self._never_fits_cache[shape]
        reason = self._compute_never_fits_reason(req)
        if len(self._never_fits_cache) >= 10_000:
            self._never_fits_cache.clear()
        self._never_fits_cache[shape] = reason
        return reason

    def _compute_never_fits_reason(self, req: GangRequest) -> str | None:
        chains = self._chains_for(req)
        if not chains:
            types = "|".join(req.leaf_types) or "any leaf type"
            if req.guaranteed:
                return f"VC {req.vc} has no guaranteed quota of {types}"
            return f"the cluster has no {types} leaves"
        reasons = []
        for chain in chains:
            spec = self.cluster.chains[chain]
            memory = self.cluster.leaf_memory_mb[chain]
            too_big = [m for m in req.members if m.gpu_memory_mb > memory]
            if too_big:
                reasons.append(
                    f"a pod of role {too_big[0].role} needs {too_big[0].gpu_memory_mb} MB of GPU memory but a"
                    f" {spec.leaf_type} leaf has {memory} MB"
                )
                continue
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
            if req.infiniband:
                ib = self._ib_never_fits(req, chain, sizes, total)
                if ib is not None:
                    reasons.append(ib)
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

    def _ib_never_fits(self, req: GangRequest, chain: str, sizes: list[int], total: int) -> str | None:
        """Why an InfiniBand gang can never fit under one InfiniBand domain of the chain (None if it can):
        the gang's pods, each on one node, must fit one domain's nodes (and, for guaranteed gangs, the VC's
        quota in the chain or its pinned cell)."""
        spec = self.cluster.chains[chain]
        level = spec.infiniband_level
        domain = self._ib_cells[chain][0]
        ib_type = spec.types[level - 1]
        bins = [len(n.leaves) for n in domain.node_cells]
        cap = min(len(domain.leaves), total)
        if sum(sizes) > cap or not _first_fit_decreasing(sizes, bins):
            return (
                f"InfiniBand: the gang needs {sum(sizes)} {spec.leaf_type} leaves"
                f" ({'+'.join(map(str, sizes))},"
                f" each pod on one node) under one InfiniBand cell ({ib_type}, level {level}) but in chain"
                f" {chain} one holds at most {cap} for it (per-node capacities {'+'.join(map(str, bins))})"
            )
        return None

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
            milli, memory = g.shares.get(role, (0, 0))
            out.append(
                PodPlacement(role, index, node, leaf_type, tuple(x.leaf_index for x in leaves), milli, memory)
            )
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
        held = ""
        head = self._groups.get(g.held_by) if g.held_by is not None else None
        if head is not None and head.state is GroupState.PENDING:
            held = (
                f"; held back so that {head.request.key} can start (backfill protection: it has waited"
                f" over {self.protect_head_after_s:g} s at the head of VC {req.vc}'s queue, and gangs"
                " behind it may not take the leaves it needs)"
            )
        return Queued(
            req.key, f"{self._why(req)}{held} (position {position} in VC {req.vc}'s queue)", position
        )

    def _vc_cells_text(self, vc: str, chain: str) -> str:
        """What the VC's cells in the chain offer now: free leaves of its bound cells on healthy nodes (and
        the most on one node), then its unbound quota per level with how many free healthy cells of that
        level could take it (a cell of a higher free one counts: it can be split)."""
        spec = self.cluster.chains[chain]
        free_per_node: dict[Cell, int] = {}
        for cell in self.quota.bound_cells(vc, chain):
            if cell.pinned_id is not None:
                continue
            for node, counter, leaves in self._regions_of(cell):
                if node.n_bad_nodes:
                    continue
                n = counter.n_free if counter is not None else sum(1 for x in leaves if x.n_free)
                free_per_node[node] = free_per_node.get(node, 0) + n
        free = sum(free_per_node.values())
        text = (
            f"its bound cells have {free} free leaves (at most {max(free_per_node.values(), default=0)}"
            " on one node)"
        )
        unbound = []
        for (c, level), _ in sorted(self.quota.quota[vc].items(), key=lambda kv: -kv[0][1]):
            n = self.quota.unbound(vc, (c, level))
            if c != chain or n <= 0:
                continue
            healthy = sum(
                len(self.quota.free_descendants(level, [f]))
                for upper in range(level, spec.top_level + 1)
                for f in self.quota.free[(chain, upper)]
                if f.healthy
            )
            unbound.append(
                f"{n} {spec.types[level - 1]} (level {level}, {spec.leaves_per_cell(level)} leaves each;"
                f" {healthy} free healthy such cells)"
            )
        doomed = sum(1 for c in self._doomed if c.bound_vc == vc and c.chain == chain)
        if doomed:
            text += f", {doomed} of them doomed (bound to bad hardware)"
        return f"{text}, unbound quota: {', '.join(unbound) if unbound else 'none'}"

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
            bad = sum(
                1 for n in self.cluster.bad_nodes if any(c.chain == chain for c in self.cluster.nodes[n])
            )
            bad_text = f"; {bad} bad node(s)" if bad else ""
            bad_leaves = [
                x
                for node, i in sorted(self.cluster.bad_leaves)
                for x in self.cluster.leaves_of(node, i)
                if x.chain == chain
            ]
            if bad_leaves:
                bad_text += f"; bad {spec.leaf_type} leaves (no new work): {_leaf_names(bad_leaves)}"
            if req.infiniband:
                ib_type = spec.types[spec.infiniband_level - 1]
                domains = [c for c in self._ib_cells[chain] if c.n_bad_nodes < len(c.node_cells)]
                most = max((c.n_free for c in domains), default=0)
                bad_text += (
                    f"; InfiniBand: all {sum(sizes)} leaves must lie under one {ib_type} cell, and the"
                    f" emptiest healthy one has {most} free"
                )
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
                    f" {self._vc_cells_text(req.vc, chain)}; {need}{bad_text}"
                )
            else:
                per_node = [
                    r[1].n_free if r[1] is not None else sum(x.n_free for x in r[2])
                    for r in self._open_regions[chain]
                    if not r[0].n_bad_nodes
                ]
                parts.append(
                    f"{sum(per_node)} idle {spec.leaf_type} leaves on healthy nodes{where}"
                    f" (at most {max(per_node, default=0)} on one node); {need}{bad_text}"
                )
        if req.guaranteed:
            return f"VC {req.vc}: " + "; ".join(parts)
        return "opportunistic (idle cells of any VC): " + "; ".join(parts)
