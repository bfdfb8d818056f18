"""HiveD's work-preserving reconfiguration: the work of an old snapshot put back on a new config (running
gangs kept where they are, downgraded when their VC no longer covers them, lost when their cells are gone;
preemptions cancelled; the queue checked again and retried)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self

from pai_scheduler.hived.cells import MILLI_PER_LEAF, Cell
from pai_scheduler.hived.config import ClusterConfig
from pai_scheduler.hived.decisions import Decision, Downgraded, Lost, Rejected
from pai_scheduler.hived.errors import UnsupportedRequestError
from pai_scheduler.hived.gangs import Gang, GroupState
from pai_scheduler.hived.persistence import SNAPSHOT_VERSION, Persistence
from pai_scheduler.hived.requests import request_from_dict
from pai_scheduler.hived.scheduling import Scheduling
from pai_scheduler.hived.state import PROTECT_HEAD_AFTER_S


class Reconfiguration(Scheduling, Persistence):
    @classmethod
    def reconfigure(
        cls,
        old_snapshot: Mapping[str, Any],
        new_config: ClusterConfig,
        protect_head_after_s: float | None = PROTECT_HEAD_AFTER_S,
        *,
        mix_aware: bool = True,
    ) -> tuple[Self, list[Decision]]:
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
        a = cls(new_config, protect_head_after_s, mix_aware=mix_aware)
        a._restore_mix(old_snapshot.get("mix", ()), old_snapshot.get("mix_total"))
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
        running: list[tuple[Gang, list[tuple[str, int, str, list[int]]]]] = []
        waiting: list[Gang] = []
        for gd in sorted(old_snapshot["groups"], key=lambda gd: int(gd["seq"])):
            req = request_from_dict(gd["request"])
            g = Gang(req, int(gd["seq"]), since=None if gd.get("since") is None else float(gd["since"]))
            g.downgraded = bool(gd.get("downgraded", False))
            g.borrowed = bool(gd.get("borrowed", False))
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
        a._recount_borrowed()
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
            a._pending.add(g)
        a._refresh_doomed()
        a._refresh_holds()
        out.extend(a._retry_pending())
        a._refresh_doomed()
        out.extend(a._queued(g) for g in a._queue() if g.request.key in {w.request.key for w in waiting})
        return a, out

    def _readopt(
        self,
        g: Gang,
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

    def _holding_conflict(self, g: Gang) -> str | None:
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

    def _rebind(self, g: Gang) -> str | None:
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
