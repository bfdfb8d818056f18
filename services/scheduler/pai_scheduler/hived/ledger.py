"""The transaction ledger: every change a placement attempt makes (leaf owners and reservations, shares, quota
bindings, downgrades, reservations taken over) is applied at once and its undo recorded, so that a failed or
abandoned attempt is rolled back exactly (``_rollback_to`` a mark, ``_rollback`` the whole attempt). Outside
an attempt (``_undo is None``) nothing is recorded."""

from __future__ import annotations

from pai_scheduler.hived.cells import Cell
from pai_scheduler.hived.state import AllocatorState


class Ledger(AllocatorState):
    def _tx_set_leaf(self, leaf: Cell, owner: str | None, priority: int, reserver: str | None) -> None:
        assert self._undo is not None
        old = (leaf.owner, leaf.owner_priority, leaf.reserver)
        self.cluster.set_leaf(leaf, owner, priority, reserver)
        self._undo.append(lambda: self.cluster.set_leaf(leaf, *old))

    def _tx_reserve(self, leaf: Cell, key: str) -> None:
        """Reserve the leaf for ``key``, taking the reservation over from a lower preemptor if it has one."""
        assert self._undo is not None
        previous = leaf.reserver
        self._tx_set_leaf(leaf, leaf.owner, leaf.owner_priority, key)
        if previous is not None and previous != key:
            self._overridden.append(previous)
            self._undo.append(lambda: self._overridden.remove(previous))

    def _tx_add_share(self, leaf: Cell, key: str, share: tuple[int, int], priority: int) -> None:
        assert self._undo is not None
        self.cluster.add_share(leaf, key, share[0], share[1], priority)
        self._undo.append(lambda: self.cluster.remove_share(leaf, key, share[0], share[1]))

    def _tx_bind(self, cell: Cell, vc: str) -> None:
        assert self._undo is not None
        self.quota.bind(cell, vc)
        self._undo.append(lambda: self.quota.unbind(cell))

    def _rollback_to(self, mark: int) -> None:
        assert self._undo is not None
        while len(self._undo) > mark:
            self._undo.pop()()

    def _rollback(self) -> None:
        self._rollback_to(0)
        self._undo = None
