"""Choosing which leaves of one node a pod gets: the set with the lowest common ancestor.

Given the leaves of a node the pod may use (in depth-first order), take the lowest-level cell inside the
node that holds enough of them (a PCIe switch before a socket before the whole node). Among cells of that
level prefer, in order: fewer leaves that would need preempting (then fewer gangs sharing them), fewer
usable leaves (best fit: keeps bigger holes whole), fuller ancestors (packs next to what already runs),
then depth-first order. Inside the chosen cell, free leaves come before busy ones, cheapest (lowest
priority, then fewest gangs sharing the leaf) busy ones first.
"""

from __future__ import annotations

from collections.abc import Sequence

from pai_scheduler.hived.cells import FREE_PRIORITY, Cell


def pick_leaves(available: Sequence[Cell], k: int) -> tuple[Cell, ...]:
    if k <= 0 or len(available) < k:
        raise ValueError(f"cannot pick {k} of {len(available)} leaves")
    node = available[0].node
    assert node is not None
    best: tuple[tuple[int, int, int, tuple[int, ...], int], list[Cell]] | None = None
    for level in range(1, node.level + 1):
        groups: dict[Cell, list[Cell]] = {}
        for leaf in available:
            groups.setdefault(leaf.path[-level], []).append(leaf)
        for anc, leaves in groups.items():
            if len(leaves) < k:
                continue
            chosen = sorted(leaves, key=lambda c: (c.owner_priority, len(c.shares), c.order))[:k]
            busy = sum(1 for c in chosen if c.owner_priority > FREE_PRIORITY)
            fullness = tuple(a.n_free for a in reversed(anc.path[-node.level + level - 1 : -1]))
            sharers = sum(len(c.shares) for c in chosen)  # 0 unless shared leaves must be preempted
            key = (busy, sharers, len(leaves), fullness, anc.order)
            if best is None or key < best[0]:
                best = (key, chosen)
        if best is not None:
            return tuple(sorted(best[1], key=lambda c: c.order))
    raise AssertionError("unreachable: the node itself holds every available leaf")
