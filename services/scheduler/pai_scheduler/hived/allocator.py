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
* **Chains in the order the recent request mix prefers** (``mix.py``): a gang that several chains could hold
  tries first the leaf type whose free capacity is least needed by the requests that name types, then the
  tightest fit; the passes and guarantees are the same, only the order of candidates changes.
* **Borrowing** (``borrowing.py``): a guaranteed gang its own cells cannot hold may borrow idle leaves of
  other VCs within its VC's limit, least-served VC (by weight) first, at opportunistic priority; lenders
  reclaim them by preemption, with the cluster's grace on the ``Preempting`` decision.

The methods come from one concept module each (``state``, ``ledger``, ``admission``, ``regions``,
``binding``, ``mix``, ``placement``, ``preemption``, ``backfill``, ``borrowing``, ``reasons``, ``scheduling``,
``persistence``, ``reconfiguration``, ``views``); this module holds the commands.
"""

from __future__ import annotations

from collections.abc import Iterable

from pai_scheduler.hived.cells import FREE_PRIORITY, Cell
from pai_scheduler.hived.decisions import Decision, Rejected, Released
from pai_scheduler.hived.gangs import Gang, GroupState
from pai_scheduler.hived.persistence import SNAPSHOT_VERSION
from pai_scheduler.hived.reconfiguration import Reconfiguration
from pai_scheduler.hived.requests import GangRequest
from pai_scheduler.hived.state import PROTECT_HEAD_AFTER_S
from pai_scheduler.hived.views import Views

__all__ = ["PROTECT_HEAD_AFTER_S", "SNAPSHOT_VERSION", "GroupState", "HivedAllocator"]


class HivedAllocator(Views, Reconfiguration):
    """The HiveD allocator (see the module docstring); its methods come from one concept module each."""

    def submit(self, req: GangRequest, now: float | None = None) -> Decision:
        """Place a gang now, start preempting for it, queue it, or reject it.

        Idempotent per key: a key the allocator already holds returns its current decision. Raises
        UnsupportedRequestError for features not implemented yet (none at present). Gangs lazily
        preempted (``Downgraded``) on the way are not in the answer: use ``submit_all`` to get them too."""
        return self.submit_all(req, now)[-1]

    def rejection(self, req: GangRequest) -> str | None:
        """Why ``submit`` would reject the request (it is invalid, or can never fit), or None; changes
        nothing. Lets a caller that submits several gangs for one job refuse them all or none."""
        return self._invalid_reason(req) or self._never_fits_reason(req)

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
        self._record(req)
        g = Gang(req, self._next_seq, since=self._now)
        self._next_seq += 1
        self._groups[req.key] = g
        self._pending.add(g)
        self._requeued = False
        decisions = self._schedule(g)
        if decisions and self._requeued:
            # It took over lower preemptors' reservations: they (and whatever their withdrawn
            # reservations let in) are retried at once, before this gang's own decision.
            self._refresh_holds()
            decisions[-1:-1] = self._retry_pending()
        if not decisions and req.vc in self._borrowers:
            # No room in its own cells: it may borrow idle cells, in the fair order of every VC's borrowers.
            borrowed = self._borrow_pass()
            decisions = [d for d in borrowed if d.key != req.key] + [d for d in borrowed if d.key == req.key]
            if decisions and decisions[-1].key != req.key:
                decisions.append(self._queued(g))
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
            self._pending.discard(g)
            if self._holds.get(g.request.vc, ("",))[0] == key:  # a protected head withdrew
                self._refresh_holds()
                out.extend(self._retry_pending())
            return out
        leaves = list(g.leaves())
        self._returned(g)
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
