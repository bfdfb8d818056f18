"""One scheduling attempt of a gang (placement, then lazy preemption or plain preemption, under the hold of a
protected head it must not overtake), and the queue retried whenever capacity may have appeared."""

from __future__ import annotations

from pai_scheduler.hived.borrowing import Borrowing
from pai_scheduler.hived.decisions import Decision, Downgraded
from pai_scheduler.hived.gangs import Gang
from pai_scheduler.hived.reasons import Reasons
from pai_scheduler.hived.requests import GangRequest


class Scheduling(Borrowing, Reasons):
    def _schedule(self, g: Gang) -> list[Decision]:
        """Place the gang (or start its preemption) outside the leaves held for a protected head it must
        not overtake, with lazy preemption of its lazy victims where that lets them stay; [] when it does
        not fit now (``held_by`` says whether only the hold stopped it)."""
        g.held_by = None
        hold = self._hold_against(g)
        if hold is None:
            if self._unplaceable.get(g.shape) == self._version():
                return []  # this shape found no placement and nothing changed since
            out = self._schedule_within(g)
            if not out:
                if len(self._unplaceable) >= 10_000:
                    self._unplaceable.clear()
                self._unplaceable[g.shape] = self._version()
            return out
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

    def _schedule_within(self, g: Gang) -> list[Decision]:
        self._undo = []
        found = self._find(g)
        if found is None:
            self._rollback()
            return []
        lazy = self._lazy_victims(g, found[1])
        downgraded: list[Gang] = []
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
        out.extend(self._borrow_pass())
        return out
