"""Read-only views of the allocator's state for the service, the simulator and users: decisions and requests
by key, the queue with reasons, holds, downgraded gangs, leaves in use per VC, fragmentation, bad leaves and
doomed quota."""

from __future__ import annotations

from collections.abc import Mapping

from pai_scheduler.hived.cells import MILLI_PER_LEAF, Cell
from pai_scheduler.hived.decisions import Decision, Queued
from pai_scheduler.hived.gangs import GroupState
from pai_scheduler.hived.reasons import Reasons
from pai_scheduler.hived.requests import GangRequest
from pai_scheduler.hived.shares import Fragmentation, fragmentation
from pai_scheduler.hived.state import by_order, leaf_names


class Views(Reasons):
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

    def borrowing(self) -> dict[str, dict[str, dict[str, float]]]:
        """Fair sharing now: VC -> {"borrowed": leaf type -> GPUs its borrowing gangs hold, "lent": leaf
        type -> GPUs of its quota other VCs borrow}. A borrowed leaf inside a cell bound to a VC is lent by
        that VC; one in unbound cells is lent by the VCs with unbound quota in its chain, in proportion to it
        (shares count as their fraction)."""
        out: dict[str, dict[str, dict[str, float]]] = {}

        def add(vc: str, kind: str, leaf_type: str, amount: float) -> None:
            per = out.setdefault(vc, {"borrowed": {}, "lent": {}})[kind]
            per[leaf_type] = round(per.get(leaf_type, 0.0) + amount, 6)

        for g in sorted(self._groups.values(), key=lambda g: g.seq):
            if not g.borrowed or g.chain is None:
                continue
            leaf_type = self.cluster.chains[g.chain].leaf_type
            for role, _, leaves in g.slots:
                share = g.shares.get(role)
                amount = share[0] / MILLI_PER_LEAF if share is not None else 1.0
                for leaf in leaves:
                    add(g.request.vc, "borrowed", leaf_type, amount)
                    bound = next((c for c in reversed(leaf.path) if c.bound_vc is not None), None)
                    if bound is not None:
                        add(bound.bound_vc or "", "lent", leaf_type, amount)
                        continue
                    quota = {
                        vc: self.quota.quota_leaves(vc, g.chain)
                        - sum(len(c.leaves) for c in self.quota.bound_cells(vc, g.chain))
                        for vc in self.quota.vcs
                        if vc != g.request.vc
                    }
                    total = sum(n for n in quota.values() if n > 0)
                    for vc, n in quota.items():
                        if n > 0:
                            add(vc, "lent", leaf_type, amount * n / total)
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
        for cell in sorted(self._doomed, key=by_order):
            assert cell.bound_vc is not None
            out.setdefault(cell.bound_vc, []).append(cell.id)
        return out

    def doomed_quota(self) -> dict[str, list[str]]:
        """VCs whose quota cannot be backed by healthy cells right now, in words: the quota cells bound to
        bad hardware (doomed), then any unbound quota that not even a bad cell could take."""
        out: dict[str, list[str]] = {}
        for cell in sorted(self._doomed, key=by_order):
            vc = cell.bound_vc
            assert vc is not None
            bad = sorted(n.node_name or "" for n in cell.node_cells or (cell.node,) if n and n.n_bad_nodes)
            what = [f"node(s) {', '.join(bad)}"] if bad else []
            if cell.n_bad_leaves:
                what.append(f"leaves {leaf_names(x for x in cell.leaves if x.bad_leaf)}")
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
