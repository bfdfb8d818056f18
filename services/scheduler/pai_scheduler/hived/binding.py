"""Binding virtual cells to physical ones (HiveD's cell binding; the buddy free lists are ``quota.py``): which
free cell a VC's unbound quota is bound to when its guaranteed work needs one (the buddy choice, splitting a
higher cell only when the chain stays safe), unbinding cells its guaranteed work has left, and HiveD's *doomed
bad cells*: quota bound to bad hardware when the healthy free cells cannot back it."""

from __future__ import annotations

import functools
from collections.abc import Iterable

from pai_scheduler.hived.cells import FREE_PRIORITY, Cell
from pai_scheduler.hived.ledger import Ledger
from pai_scheduler.hived.regions import Regions, closeness
from pai_scheduler.hived.state import by_order


class Binding(Regions, Ledger):
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
        """The buddy choice: a free cell of ``level`` that holds the pod (fewest bad nodes and leaves, then
        fewest opportunistic leaves in use, then closest to the gang's other pods, then order); else one
        carved out of the lowest higher free cell, if the chain stays safe. Bad hardware comes first in the
        order because a cell with one healthy node still holds one pod: bound for a gang of several pods it
        would leave the gang waiting while a wholly healthy cell stood free."""
        anchor = placed[0] if placed else None

        def pref(c: Cell) -> tuple[int, int, int, int, int]:
            return (c.n_bad_nodes, c.n_bad_leaves, c.n_opportunistic, -closeness(c, anchor), c.order)

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
        for cell in sorted(self._doomed, key=by_order, reverse=True):
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
