"""Where one pod may go, and the best such place: the *regions* of a cell (a node, or the part of a node
inside a cell), the leaves of a region a pass may use (free, or busy below the pass's priority ceiling, never
bad or held for a protected head), what taking a busy leaf costs (the priority it preempts, then the most
recently started gang first), and the best-fitting region: nodes the gang already uses, then the closest to
them, then best fit (fewest usable leaves), with a bucketed search for the commonest case (a gang's first pod
on free leaves)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pai_scheduler.hived.cells import FREE_PRIORITY, OPPORTUNISTIC_PRIORITY, UNTOUCHABLE_PRIORITY, Cell
from pai_scheduler.hived.gangs import GroupState
from pai_scheduler.hived.packing import pick_leaves
from pai_scheduler.hived.state import AllocatorState, Region, by_order

# Region lists at least this long are searched through the free-node buckets (short ones are scanned).
_INDEXED_REGIONS = 16


def closeness(a: Cell | None, b: Cell | None) -> int:
    """How many ancestors two cells share (0 across chains or when either is missing)."""
    if a is None or b is None:
        return 0
    n = 0
    for x, y in zip(a.path, b.path, strict=False):
        if x is not y:
            break
        n += 1
    return n


class Regions(AllocatorState):
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
                key: tuple[int, ...] = (FREE_PRIORITY, 0, node not in placed, -closeness(node, anchor), n)
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
                    -closeness(node, anchor),
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
                node = min(found, key=by_order)
                region = by_node[node]
                tail = (n, node.order, region[2][0].order)
                if best_tail is None or tail < best_tail:
                    best_tail, best_region = tail, region
                break
        if best_tail is None or best_region is None:
            return None
        return (FREE_PRIORITY, 0, True, 0, *best_tail), best_region
