"""OpenPAI's views of virtual clusters and SKU types, computed from the allocator (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pai_scheduler.hived.allocator import HivedAllocator


def _resources(alloc: HivedAllocator, leaves_by_type: Mapping[str, float]) -> dict[str, Any]:
    cpu = 0.0
    memory = 0.0
    for leaf_type, n in leaves_by_type.items():
        sku = alloc.config.sku(leaf_type)
        if sku is not None:
            cpu += sku.cpu * n
            memory += sku.memory_mb * n
    # CPU leaves (SKU gpu 0) carry CPU and memory but no GPU; FPGAs are counted apart. Borrowed shares
    # count as their fraction.
    gpus = sum(n for leaf_type, n in leaves_by_type.items() if alloc.config.is_gpu_leaf(leaf_type))
    fpgas = sum(n for leaf_type, n in leaves_by_type.items() if alloc.config.is_fpga_leaf(leaf_type))
    gpu: int | float = int(gpus) if float(gpus).is_integer() else round(gpus, 3)
    out: dict[str, Any] = {
        "cpu": int(cpu),
        "vCores": int(cpu),
        "memory": int(memory),
        "gpu": gpu,
        "GPUs": gpu,
    }
    if any(alloc.config.is_fpga_leaf(s.name) for s in alloc.config.sku_types):
        out["fpga"] = int(fpgas)
    return out


def _sharing(alloc: HivedAllocator, vc: str) -> dict[str, Any]:
    """Fair sharing of idle quota: the VC's weight and borrowing limit (GPUs), its parent VC when it is a
    team of one, and its teams when it is divided among some."""
    spec = next(v for v in alloc.config.virtual_clusters if v.name == vc)
    teams = [v.name for v in alloc.config.virtual_clusters if v.parent == vc]
    return {
        "weight": spec.weight,
        "borrowingLimit": spec.borrowing_limit,
        # The most notice a preempted job of the VC gets (preemptionGraceSeconds, else the cluster's).
        "preemptionGraceSeconds": spec.preemption_grace_s
        if spec.preemption_grace_s is not None
        else alloc.config.preemption_grace_s,
        **({"parent": spec.parent, "share": spec.share} if spec.parent else {}),
        **({"teams": teams} if teams else {}),
    }


def _cluster_leaves(alloc: HivedAllocator) -> dict[str, int]:
    out: dict[str, int] = {}
    for chain, tops in alloc.cluster.tops.items():
        leaf_type = alloc.cluster.chains[chain].leaf_type
        out[leaf_type] = out.get(leaf_type, 0) + sum(len(t.leaves) for t in tops)
    return out


def guaranteed_leaves(alloc: HivedAllocator, vc: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for chain in alloc.quota.chains_of(vc):
        leaf_type = alloc.cluster.chains[chain].leaf_type
        out[leaf_type] = out.get(leaf_type, 0) + alloc.quota.quota_leaves(vc, chain)
    for cell in alloc.quota.pinned_of.get(vc, []):
        leaf_type = alloc.cluster.chains[cell.chain].leaf_type
        out[leaf_type] = out.get(leaf_type, 0) + len(cell.leaves)
    return out


def available_leaves(alloc: HivedAllocator, vc: str) -> dict[str, int]:
    """The VC's guaranteed leaves it could start work on now: leaves of its bound cells (pinned ones
    included) that neither hold its guaranteed work nor are bad (on a bad node, or a GPU reported
    unhealthy), plus its unbound quota except what only bad hardware could back (doomed cells are bound,
    so they count through the first term)."""
    out: dict[str, int] = {}
    bound = {c for cells in alloc.quota.bound[vc].values() for c in cells}
    bound.update(alloc.quota.pinned_of.get(vc, []))
    for cell in bound:
        leaf_type = alloc.cluster.chains[cell.chain].leaf_type
        usable = sum(
            1
            for x in cell.leaves
            if x.healthy and x.reserver is None and not (x.owner_priority >= 0 and (x.owner or x.shares))
        )
        out[leaf_type] = out.get(leaf_type, 0) + usable
    for (chain, level), _ in alloc.quota.quota[vc].items():
        spec = alloc.cluster.chains[chain]
        n = alloc.quota.unbound(vc, (chain, level)) * spec.leaves_per_cell(level)
        out[spec.leaf_type] = out.get(spec.leaf_type, 0) + n
    for chain, level, need, usable in alloc.quota.healthy_shortfall(vc):
        spec = alloc.cluster.chains[chain]
        out[spec.leaf_type] -= (need - usable) * spec.leaves_per_cell(level)
    return {t: max(n, 0) for t, n in out.items()}


def _counted(alloc: HivedAllocator, leaves_by_type: dict[str, int], gpu_cluster: bool) -> int:
    """Leaves that count for capacity percentages: accelerators on a cluster that has any, else CPU leaves."""
    return sum(n for t, n in leaves_by_type.items() if alloc.config.is_cpu_leaf(t) != gpu_cluster)


def virtual_clusters(alloc: HivedAllocator) -> dict[str, dict[str, Any]]:
    total = _cluster_leaves(alloc)
    gpu_cluster = any(not alloc.config.is_cpu_leaf(t) for t in total)
    total_n = _counted(alloc, total, gpu_cluster) or 1
    used = alloc.used_leaves()
    borrowing = alloc.borrowing()
    out: dict[str, dict[str, Any]] = {}
    for vc in alloc.quota.vcs:
        guaranteed = guaranteed_leaves(alloc, vc)
        vc_used = used.get(vc, {})
        out[vc] = {
            "capacity": round(100 * _counted(alloc, guaranteed, gpu_cluster) / total_n, 2),
            "usedCapacity": round(100 * _counted(alloc, vc_used, gpu_cluster) / total_n, 2),
            # Opportunistic jobs may use any idle cell, so every VC can reach the whole cluster.
            "maxCapacity": 100,
            "dedicated": False,
            "resourcesUsed": _resources(alloc, vc_used),
            "resourcesGuaranteed": _resources(alloc, guaranteed),
            # Everything configured, bad hardware included (OpenPAI's meaning of the field).
            "resourcesTotal": _resources(alloc, total),
            # What the VC could still start guaranteed work on: bad GPUs and nodes are not available.
            "resourcesAvailable": _resources(alloc, available_leaves(alloc, vc)),
            # Fair sharing (not in OpenPAI): what its gangs borrow from other VCs' idle quota, what other
            # VCs borrow of its own, and its sharing settings.
            "resourcesBorrowed": _resources(alloc, borrowing.get(vc, {}).get("borrowed", {})),
            "resourcesLent": _resources(alloc, borrowing.get(vc, {}).get("lent", {})),
            "sharing": _sharing(alloc, vc),
        }
    return out


def sku_types(alloc: HivedAllocator, vc: str | None = None) -> dict[str, dict[str, Any]]:
    wanted: set[str] | None = None
    if vc is not None:
        wanted = set(guaranteed_leaves(alloc, vc))
    return {
        s.name: {"cpu": s.cpu, "memory": s.memory_mb, "gpu": s.gpu, **({"fpga": s.fpga} if s.fpga else {})}
        for s in alloc.config.sku_types
        if wanted is None or s.name in wanted
    }
