"""OpenPAI's views of virtual clusters and SKU types, computed from the allocator (pure)."""

from __future__ import annotations

from typing import Any

from pai_scheduler.hived.allocator import HivedAllocator


def _resources(alloc: HivedAllocator, leaves_by_type: dict[str, int]) -> dict[str, Any]:
    cpu = 0.0
    memory = 0
    for leaf_type, n in leaves_by_type.items():
        sku = alloc.config.sku(leaf_type)
        if sku is not None:
            cpu += sku.cpu * n
            memory += sku.memory_mb * n
    # CPU leaves (SKU gpu 0) carry CPU and memory but no GPU.
    gpus = sum(n for leaf_type, n in leaves_by_type.items() if not alloc.config.is_cpu_leaf(leaf_type))
    return {"cpu": int(cpu), "vCores": int(cpu), "memory": memory, "gpu": gpus, "GPUs": gpus}


def _cluster_leaves(alloc: HivedAllocator) -> dict[str, int]:
    out: dict[str, int] = {}
    for chain, tops in alloc.cluster.tops.items():
        leaf_type = alloc.cluster.chains[chain].leaf_type
        out[leaf_type] = out.get(leaf_type, 0) + sum(len(t.leaves) for t in tops)
    return out


def _guaranteed_leaves(alloc: HivedAllocator, vc: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for chain in alloc.quota.chains_of(vc):
        leaf_type = alloc.cluster.chains[chain].leaf_type
        out[leaf_type] = out.get(leaf_type, 0) + alloc.quota.quota_leaves(vc, chain)
    for cell in alloc.quota.pinned_of.get(vc, []):
        leaf_type = alloc.cluster.chains[cell.chain].leaf_type
        out[leaf_type] = out.get(leaf_type, 0) + len(cell.leaves)
    return out


def _counted(alloc: HivedAllocator, leaves_by_type: dict[str, int], gpu_cluster: bool) -> int:
    """Leaves that count for capacity percentages: accelerators on a cluster that has any, else CPU leaves."""
    return sum(n for t, n in leaves_by_type.items() if alloc.config.is_cpu_leaf(t) != gpu_cluster)


def virtual_clusters(alloc: HivedAllocator) -> dict[str, dict[str, Any]]:
    total = _cluster_leaves(alloc)
    gpu_cluster = any(not alloc.config.is_cpu_leaf(t) for t in total)
    total_n = _counted(alloc, total, gpu_cluster) or 1
    used = alloc.used_leaves()
    out: dict[str, dict[str, Any]] = {}
    for vc in alloc.quota.vcs:
        guaranteed = _guaranteed_leaves(alloc, vc)
        vc_used = used.get(vc, {})
        out[vc] = {
            "capacity": round(100 * _counted(alloc, guaranteed, gpu_cluster) / total_n, 2),
            "usedCapacity": round(100 * _counted(alloc, vc_used, gpu_cluster) / total_n, 2),
            # Opportunistic jobs may use any idle cell, so every VC can reach the whole cluster.
            "maxCapacity": 100,
            "dedicated": False,
            "resourcesUsed": _resources(alloc, vc_used),
            "resourcesGuaranteed": _resources(alloc, guaranteed),
            "resourcesTotal": _resources(alloc, total),
        }
    return out


def sku_types(alloc: HivedAllocator, vc: str | None = None) -> dict[str, dict[str, Any]]:
    wanted: set[str] | None = None
    if vc is not None:
        wanted = set(_guaranteed_leaves(alloc, vc))
    return {
        s.name: {"cpu": s.cpu, "memory": s.memory_mb, "gpu": s.gpu}
        for s in alloc.config.sku_types
        if wanted is None or s.name in wanted
    }
