"""Fair sharing of idle quota between VCs (as Kueue's cohorts with borrowing limits and weights, and
Volcano's proportion plugin, do for their queues).

A VC with a ``borrowingLimit`` (GPUs) may *borrow*: a guaranteed gang of it that finds no placement in its
own cells (no pass of ``Placement._find``, preemption of its own lower-priority work included) is placed
on idle leaves outside them, exactly where an opportunistic gang could go (free leaves of any VC's cells
or unbound quota, never pinned cells, never preempting anyone), as long as the GPUs its VC borrows stay
within the limit (a team's borrowing also counts against its parent VC's limit, when the parent has one).
A borrowed gang runs at opportunistic priority: it binds no quota and counts as opportunistic work in its
cells, so the lender's guaranteed gangs *reclaim* them by the ordinary preemption passes, which take
opportunistic leaves whole gang by whole gang, the most recently started first (youngest first). The
``Preempting`` decision then carries the cluster's ``reclaimGraceSeconds`` (``grace_s``): how long the
caller lets the borrowers run on before it stops them, so the lender's wait on return is bounded by it.

Because borrowed work never binds a cell, the quota book is untouched and every VC can still bind all of
its unbound quota at any moment: the sharing-anomaly guarantee holds with borrowing.

Fairness by weight: whenever capacity may have appeared (a release, a node back, a submission that found
no room in its own cells), the waiting gangs that may borrow are tried in the order of their VC's borrowed
GPUs divided by its weight (the least served first; then priority, then age), and the order is computed
again after each gang that borrows: weighted progressive filling of the idle capacity.
"""

from __future__ import annotations

from dataclasses import replace

from pai_scheduler.hived.backfill import Backfill
from pai_scheduler.hived.cells import FREE_PRIORITY, MILLI_PER_LEAF, OPPORTUNISTIC_PRIORITY
from pai_scheduler.hived.decisions import Decision
from pai_scheduler.hived.gangs import Gang, GroupState
from pai_scheduler.hived.preemption import Preemption
from pai_scheduler.hived.requests import GangRequest


class Borrowing(Preemption, Backfill):
    def _within_limit(self, vc: str, milli: int) -> bool:
        """Whether ``vc`` may borrow ``milli`` more (its own limit, and its parent's for a team)."""
        spec = self._vc_specs.get(vc)
        if spec is None or spec.borrowing_limit <= 0:
            return False
        if self._borrowed_milli.get(vc, 0) + milli > spec.borrowing_limit * MILLI_PER_LEAF + 1e-6:
            return False
        parent = self._vc_specs.get(spec.parent) if spec.parent else None
        if parent is not None and parent.borrowing_limit > 0:
            family = sum(
                n
                for v, n in self._borrowed_milli.items()
                if v == parent.name or self._parent_of(v) == parent.name
            )
            if family + milli > parent.borrowing_limit * MILLI_PER_LEAF + 1e-6:
                return False
        return True

    def _parent_of(self, vc: str) -> str | None:
        spec = self._vc_specs.get(vc)
        return None if spec is None else spec.parent

    def _may_borrow(self, g: Gang) -> bool:
        req = g.request
        return (
            g.state is GroupState.PENDING
            and req.guaranteed
            and req.pinned_cell is None
            and self._hold_against(g) is None
            and self._within_limit(req.vc, req.demand_milli)
        )

    def _borrow_pass(self) -> list[Decision]:
        """Let waiting gangs borrow idle capacity, the least-served VC (borrowed GPUs / weight) first."""
        if not self._borrowers:
            return []
        out: list[Decision] = []
        failed: set[GangRequest] = set()
        while True:
            candidates = [g for g in self._queue() if g.shape not in failed and self._may_borrow(g)]
            if not candidates:
                return out
            candidates.sort(
                key=lambda g: (
                    self._borrowed_milli.get(g.request.vc, 0) / self._vc_specs[g.request.vc].weight,
                    -g.request.priority,
                    g.seq,
                )
            )
            for g in candidates:
                got = self._schedule_borrowed(g)
                if got:
                    out.extend(got)
                    self._refresh_holds()
                    break  # the VC's share changed: recompute the order
                failed.add(g.shape)
            else:
                return out

    def _schedule_borrowed(self, g: Gang) -> list[Decision]:
        """Place the gang on idle leaves as opportunistic work would go (free leaves only); [] if none."""
        # A stand-in with opportunistic priority walks the opportunistic placement (same key: the leaves it
        # reserves on the way are the gang's).
        shadow = Gang(replace(g.request, priority=OPPORTUNISTIC_PRIORITY), g.seq)
        self._undo = []
        found = None
        for chain in self._preferred(shadow, self._chains_for(shadow.request)):
            slots = self._place_in_chain(shadow, chain, FREE_PRIORITY)
            if slots is not None:
                found = (chain, slots)
                break
        if found is None:
            self._rollback()
            return []
        self._undo = None
        g.borrowed = True
        self._borrowed_milli[g.request.vc] = (
            self._borrowed_milli.get(g.request.vc, 0) + g.request.demand_milli
        )
        return [self._commit(g, *found)]

    def _returned(self, g: Gang) -> None:
        """A borrowed gang left (released, or preempted by a lender): its VC borrows that much less."""
        if g.borrowed:
            vc = g.request.vc
            left = self._borrowed_milli.get(vc, 0) - g.request.demand_milli
            if left > 0:
                self._borrowed_milli[vc] = left
            else:
                self._borrowed_milli.pop(vc, None)

    def grace_cap(self, key: str) -> float:
        """The most notice the gang ``key`` gets when it is preempted: its VC's ``preemptionGraceSeconds``
        (else the cluster's ``sharing.preemptionGraceSeconds``); a borrower that is reclaimed at most the
        cluster's ``reclaimGraceSeconds`` too, when that is set, which bounds the lender's wait."""
        g = self._groups.get(key)
        spec = self._vc_specs.get(g.request.vc) if g is not None else None
        cap = self.config.preemption_grace_s
        if spec is not None and spec.preemption_grace_s is not None:
            cap = spec.preemption_grace_s
        if g is not None and g.borrowed and self.config.reclaim_grace_s > 0:
            cap = min(cap, self.config.reclaim_grace_s)
        return cap

    def _reclaim_grace(self, victims: list[str] | tuple[str, ...]) -> float:
        """How long the caller may let the victims run on: the reclaim grace when a borrower is among them."""
        if any(self._groups[v].borrowed for v in victims):
            return self.config.reclaim_grace_s
        return 0.0
