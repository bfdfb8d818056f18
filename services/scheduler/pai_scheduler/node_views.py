"""The cluster's nodes as admins see them, and the gangs a drain must stop (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pai_scheduler.hived.allocator import HivedAllocator
from pai_scheduler.hived.decisions import Allocated, Preempting
from pai_scheduler.hived.gangs import GroupState
from pai_scheduler.node_marks import NodeMarks

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


def node_view(
    alloc: HivedAllocator, marks: NodeMarks, node: str, registration: Mapping[str, Any] | None
) -> dict[str, Any]:
    leaves = node_leaves(alloc, node)
    accelerators = {t: n for t, n in leaves.items() if not alloc.config.is_cpu_leaf(t)}
    cordon = marks.cordoned.get(node)
    running = gangs_on(alloc, node)
    return {
        "name": node,
        "hostIp": (registration or {}).get("host_ip", ""),
        "registered": registration is not None,
        "simulated": bool((registration or {}).get("simulated", False)),
        "skuTypes": {t: n["total"] for t, n in leaves.items()},
        "gpus": {
            "total": sum(n["total"] for n in accelerators.values()),
            "used": sum(n["used"] for n in accelerators.values()),
            "bad": sorted(alloc.bad_leaves().get(node, set())),
        },
        # Heard from by its agent (heartbeats); independent of a cordon.
        "healthy": node not in marks.down,
        "schedulable": cordon is None,
        "cordon": (
            None
            if cordon is None
            else {"by": cordon.by, "at": cordon.at_ms, "reason": cordon.reason, "drain": cordon.drain}
        ),
        # Drain asked and gangs still there: they were asked to stop and have not released their cells yet.
        "draining": bool(cordon and cordon.drain and running),
        "runningGangs": len(running),
    }
