"""The cluster's nodes as admins see them, and the gangs a drain must stop (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pai_scheduler.hived.allocator import HivedAllocator
from pai_scheduler.hived.decisions import Allocated, Preempting
from pai_scheduler.hived.gangs import GroupState
from pai_scheduler.node_marks import NodeMarks
from pai_scheduler.node_records import node_records

RUNNING = (GroupState.ALLOCATED, GroupState.BEING_PREEMPTED)


def gangs_on(alloc: HivedAllocator, node: str) -> list[str]:
    """Keys of the gangs that run (or are being preempted) on the node, in key order."""
    out = []
    for key, state in alloc.groups().items():
        if state not in RUNNING:
            continue
        decision = alloc.decision_of(key)
        if isinstance(decision, Allocated | Preempting) and any(p.node == node for p in decision.placements):
            out.append(key)
    return sorted(out)


def node_leaves(alloc: HivedAllocator, node: str) -> dict[str, dict[str, int]]:
    """Leaf type -> {total, used, bad} on the node; a device in several chains counts once."""
    seen: dict[str, dict[int, tuple[bool, bool]]] = {}
    for node_cell in alloc.cluster.nodes.get(node, []):
        leaf_type = alloc.cluster.chains[node_cell.chain].leaf_type
        per_type = seen.setdefault(leaf_type, {})
        for leaf in node_cell.leaves:
            used = leaf.owner is not None or leaf.reserver is not None or bool(leaf.shares)
            before = per_type.get(leaf.leaf_index, (False, False))
            per_type[leaf.leaf_index] = (before[0] or used, before[1] or leaf.bad_leaf)
    return {
        t: {
            "total": len(leaves),
            "used": sum(1 for used, _ in leaves.values() if used),
            "bad": sum(1 for _, bad in leaves.values() if bad),
        }
        for t, leaves in sorted(seen.items())
    }


def _scheduling(alloc: HivedAllocator, marks: NodeMarks, node: str) -> dict[str, Any]:
    """What the allocator holds of a node: its cells, and whether it takes new work (cordon, drain)."""
    leaves = node_leaves(alloc, node)
    accelerators = {t: n for t, n in leaves.items() if not alloc.config.is_cpu_leaf(t)}
    cordon = marks.cordoned.get(node)
    running = gangs_on(alloc, node)
    return {
        "sku_types": {t: n["total"] for t, n in leaves.items()},
        "gpu_cells": {
            "total": sum(n["total"] for n in accelerators.values()),
            "used": sum(n["used"] for n in accelerators.values()),
        },
        "schedulable": cordon is None,
        "cordon": (
            None
            if cordon is None
            else {"by": cordon.by, "at": cordon.at_ms, "reason": cordon.reason, "drain": cordon.drain}
        ),
        # Drain asked and gangs still there: they were asked to stop and have not released their cells yet.
        "draining": bool(cordon and cordon.drain and running),
        "running_gangs": len(running),
    }


def node_list(
    alloc: HivedAllocator, marks: NodeMarks, registrations: Mapping[str, Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Every node (configured or registered), as ``node_records`` has it plus its scheduling state.

    Health is the agent's: a cordoned node is healthy but not schedulable (the allocator's bad nodes are
    both causes together, ``NodeMarks``).
    """
    records = node_records(alloc.cluster.nodes, registrations, marks.down, alloc.bad_leaves())
    return [{**r, **_scheduling(alloc, marks, r["name"])} for r in records]


def node_view(
    alloc: HivedAllocator, marks: NodeMarks, node: str, registration: Mapping[str, Any] | None
) -> dict[str, Any]:
    """One node's record, as in ``node_list``."""
    registrations = {} if registration is None else {node: registration}
    configured = [node] if node in alloc.cluster.nodes else []
    (record,) = node_records(configured, registrations, marks.down, alloc.bad_leaves())
    return {**record, **_scheduling(alloc, marks, node)}
