"""Placement of a whole gang inside the open transaction: passes of increasing cost (free leaves; then also
opportunistic ones; then also the VC's lower-priority gangs) over the chains the gang may use, an InfiniBand
gang under one domain at a time, each pod on one node (whole leaves through ``regions`` and ``binding``, a
share by joining a shared leaf of its kind or opening one), and behind a protected head a placement that would
leave the head unplaceable on its held leaves refused."""

from __future__ import annotations

from pai_scheduler.hived.binding import Binding
from pai_scheduler.hived.cells import (
    FREE_PRIORITY,
    MAX_GUARANTEED_PRIORITY,
    MILLI_PER_LEAF,
    OPPORTUNISTIC_PRIORITY,
    UNTOUCHABLE_PRIORITY,
    Cell,
)
from pai_scheduler.hived.gangs import Gang, PodSlot
from pai_scheduler.hived.mix import RequestMix
from pai_scheduler.hived.packing import pick_leaves
from pai_scheduler.hived.regions import closeness
from pai_scheduler.hived.state import Region


class Placement(Binding, RequestMix):
    def _find(self, g: Gang) -> tuple[str, list[PodSlot]] | None:
        """The first placement of the whole gang over passes of increasing cost, applied inside the open
        transaction (reservations and shares); None (and nothing applied) when none fits."""
        assert self._undo is not None
        req = g.request
        ceilings = [FREE_PRIORITY]
        if req.guaranteed:
            ceilings += sorted({OPPORTUNISTIC_PRIORITY, req.priority - 1})
        chains = self._preferred(g, self._chains_for(req))
        # Behind a protected head, keeping off its held leaves is not enough: a gang that binds more of the
        # VC's quota elsewhere can leave too little quota to cover them, and the head would then wait for
        # that gang too. Such a placement is refused (unless the head could not start there anyway).
        guard = self._guarding if self._guarding is not None and self._head_fits(*self._guarding) else None
        for ceiling in ceilings:
            for chain in chains:
                if ceiling == FREE_PRIORITY:
                    # The first pod is the largest; if it takes whole leaves and no node has that many free,
                    # nothing is placed.
                    role, _, k = self._pods(req, chain)[0]
                    if role not in g.shares and not self._some_node_has_free(chain, k):
                        continue
                elif not self.cluster.offers_beyond_free(chain, ceiling):
                    continue  # it would place exactly as the free-leaves pass, which found nothing here
                mark = len(self._undo)
                slots = self._place_in_chain(g, chain, ceiling)
                if slots is not None:
                    if guard is None or self._head_fits(*guard):
                        return chain, slots
                    self._rollback_to(mark)
        return None

    def _quota_levels(self, vc: str, chain: str) -> list[tuple[int, int]]:
        """The levels of the VC's quota in the chain, lowest first, with the most leaves a pod can get on one
        node in a cell of each (fixed by the config)."""
        key = (vc, chain)
        cached = self._quota_levels_cache.get(key)
        if cached is None:
            spec = self.cluster.chains[chain]
            levels = sorted(lv for (c, lv) in self.quota.quota[vc] if c == chain)
            cached = self._quota_levels_cache[key] = [(lv, spec.leaves_per_node_in(lv)) for lv in levels]
        return cached

    def _some_node_has_free(self, chain: str, k: int) -> bool:
        buckets = self.cluster.free_nodes[chain]
        return any(buckets[n] for n in range(k, len(buckets)))

    def _head_fits(self, head: Gang, held: frozenset[Cell]) -> bool:
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

    def _place_in_chain(self, g: Gang, chain: str, ceiling: int) -> list[PodSlot] | None:
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

    def _ib_domains(self, g: Gang, chain: str, total: int, ceiling: int) -> list[Cell]:
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

    def _place_gang(self, g: Gang, chain: str, ceiling: int) -> list[PodSlot] | None:
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
        self, g: Gang, chain: str, share: tuple[int, int], ceiling: int, placed: list[Cell]
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

    def _join_share(self, g: Gang, chain: str, share: tuple[int, int], placed: list[Cell]) -> Cell | None:
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
                -closeness(node, anchor),
                leaf.order,
            )
            if best is None or key < best[0]:
                best = (key, leaf)
        return None if best is None else best[1]

    def _place_pod(
        self, g: Gang, chain: str, k: int, ceiling: int, placed: list[Cell]
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
        levels = [
            lv
            for lv, per_node in self._quota_levels(req.vc, chain)
            if per_node >= k and self.quota.unbound(req.vc, (chain, lv)) > 0
        ]
        for level in levels:
            cell = self._cell_to_bind(req.vc, chain, level, k, ceiling, placed)
            if cell is None:
                continue
            self._tx_bind(cell, req.vc)
            got = self._best_in(self._regions_of(cell), k, ceiling, placed)
            assert got is not None, "a cell chosen to bind must hold the pod"
            return got
        return None
