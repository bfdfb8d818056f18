"""Choosing which leaves of one node a pod gets: the set with the lowest common ancestor.

Given the leaves of a node the pod may use (in depth-first order), take the lowest-level cell inside the
node that holds enough of them (a PCIe switch before a socket before the whole node). Among cells of that
level prefer, in order: fewer leaves that would need preempting (then fewer gangs sharing them), fewer
usable leaves (best fit: keeps bigger holes whole), fuller ancestors (packs next to what already runs),
then depth-first order. Inside the chosen cell, free leaves come before busy ones, cheapest (lowest
priority, then the most recently started gang, then fewest gangs sharing the leaf) busy ones first.

``rank`` gives a leaf's (cost, recency) as the allocator sees it: the cost is the priority that taking the
leaf would preempt (its owner's, or a lower preemptor's whose reservation would be overridden), the
recency minus its holder's start order (so the most recently started gang sorts first among equally cheap
ones: it has lost the least work). By default (owner priority, 0).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pai_scheduler.hived.cells import FREE_PRIORITY, Cell

Rank = Callable[[Cell], tuple[int, int]]


def _owner_rank(c: Cell) -> tuple[int, int]:
    return (c.owner_priority, 0)


def pick_leaves(available: Sequence[Cell], k: int, rank: Rank = _owner_rank) -> tuple[Cell, ...]:
    if k <= 0 or len(available) < k:
        raise ValueError(f"cannot pick {k} of {len(available)} leaves")
    node = available[0].node
    assert node is not None
    ranks = {c: rank(c) for c in available}
    best: tuple[tuple[int, int, int, tuple[int, ...], int], list[Cell]] | None = None
    for level in range(1, node.level + 1):
        groups: dict[Cell, list[Cell]] = {}
        for leaf in available:
            groups.setdefault(leaf.path[-level], []).append(leaf)
        for anc, leaves in groups.items():
            if len(leaves) < k:
                continue
            chosen = sorted(leaves, key=lambda c: (*ranks[c], len(c.shares), c.order))[:k]
            busy = sum(1 for c in chosen if ranks[c][0] > FREE_PRIORITY)
            fullness = tuple(a.n_free for a in reversed(anc.path[-node.level + level - 1 : -1]))
            sharers = sum(len(c.shares) for c in chosen)  # 0 unless shared leaves must be preempted
            key = (busy, sharers, len(leaves), fullness, anc.order)
            if best is None or key < best[0]:
                best = (key, chosen)
        if best is not None:
            return tuple(sorted(best[1], key=lambda c: c.order))
    raise AssertionError("unreachable: the node itself holds every available leaf")
