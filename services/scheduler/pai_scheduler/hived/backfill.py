"""Backfill protection: once the guaranteed head of a VC's queue has waited ``protect_head_after_s``, the
leaves of its best placement are held for it, and later gangs of its VC may not take them (nor spend the quota
that covers them: ``Placement._find``)."""

from __future__ import annotations

from pai_scheduler.hived.cells import MAX_GUARANTEED_PRIORITY, Cell
from pai_scheduler.hived.gangs import Gang, GroupState
from pai_scheduler.hived.placement import Placement


class Backfill(Placement):
    def _refresh_holds(self) -> None:
        """Recompute which heads are protected and what is held for them (deterministic in the state and
        the clock). The head of a VC is the first gang of its queue; it is protected once it is guaranteed
        and has waited ``protect_head_after_s``; what it holds is the placement it would get if every
        leaf of its VC's running work (any priority) were free: the cells it will start on soonest."""
        if self._now is None or self.protect_head_after_s is None:
            if self._holds:
                self._holds = {}
            return
        heads = self._pending.heads(self._groups)
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

    def _best_placement_leaves(self, head: Gang) -> frozenset[Cell]:
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

    def _hold_against(self, g: Gang) -> tuple[str, frozenset[Cell]] | None:
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
