"""What a placement does to the gangs already on its leaves: it is allocated at once, or it preempts (its
victims are the whole gangs on the leaves it reserved) and is allocated by the release of its last victim;
lazy preemption downgrades lazy victims to opportunistic instead; preemptors whose reservations a
higher-priority placement took over are cancelled and wait again."""

from __future__ import annotations

from pai_scheduler.hived.cells import FREE_PRIORITY, OPPORTUNISTIC_PRIORITY
from pai_scheduler.hived.decisions import Allocated, Decision, Preempting
from pai_scheduler.hived.gangs import Gang, GroupState, PodSlot
from pai_scheduler.hived.placement import Placement


class Preemption(Placement):
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

    def _commit(self, g: Gang, chain: str, slots: list[PodSlot]) -> Decision:
        req = g.request
        self._pending.discard(g)
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
        return Preempting(req.key, tuple(victims), self._placements(g), self._reclaim_grace(victims))

    def _finish_preemption(self, g: Gang) -> Decision:
        self._settle(g)
        return Allocated(g.request.key, self._placements(g))

    def _settle(self, g: Gang) -> None:
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

    def _lazy_victims(self, g: Gang, slots: list[PodSlot]) -> list[Gang]:
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
                and not v.borrowed
                and r.guaranteed
                and r.pinned_cell is None
                and not v.shares
                and v.state is GroupState.ALLOCATED
            ):
                out.append(v)
        return out

    def _tx_downgrade(self, v: Gang) -> None:
        assert self._undo is not None
        leaves = list(v.leaves())
        for leaf in leaves:
            self._tx_set_leaf(leaf, leaf.owner, OPPORTUNISTIC_PRIORITY, leaf.reserver)
        v.downgraded = True

        def undo() -> None:
            v.downgraded = False

        self._undo.append(undo)
        self._unbind_idle(leaves, transactional=True)

    def _cancel_overridden(self) -> list[Gang]:
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
            self._pending.add(p)
            self._unbind_idle(leaves)
            cancelled.append(p)
        if cancelled:
            self._requeued = True
        return cancelled
