"""The scheduler's metrics: its cells per VC and node, read from the allocator it owns.

Gauges are computed from the allocator now and then (``families``) and swapped in whole, so a scrape
never waits on the allocator and never sees half an update; decision latency and preemptions are
counted as decisions commit. GPU counts are leaves of accelerator SKUs (``sku`` is the leaf type).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import Counter, Histogram
from prometheus_client.core import Metric

from pai_common.metrics import LATENCY_BUCKETS, Row, gauge_family, register_snapshot
from pai_scheduler import vc_views
from pai_scheduler.hived.allocator import HivedAllocator
from pai_scheduler.hived.gangs import GroupState
from pai_scheduler.node_marks import NodeMarks
from pai_scheduler.node_views import node_view

DECISION_SECONDS = Histogram(
    "pai_scheduler_decision_seconds",
    "Time the allocator took to decide on one event (placement, release, node change), by event type.",
    ["event"],
    buckets=LATENCY_BUCKETS,
)
PREEMPTIONS = Counter(
    "pai_scheduler_preemptions_total",
    "Gangs chosen as victims of a preemption, by the virtual cluster of the preemptor.",
    ["virtual_cluster"],
)

VC = ("virtual_cluster",)
VC_SKU = ("virtual_cluster", "sku")
NODE = ("node",)
NODE_SKU = ("node", "sku")
SPECS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("pai_vc_gpus_guaranteed", "GPUs (accelerator leaves) a virtual cluster's quota guarantees.", VC_SKU),
    ("pai_vc_gpus_used", "GPUs a virtual cluster's jobs hold (guaranteed and opportunistic).", VC_SKU),
    (
        "pai_vc_gpus_free",
        "Guaranteed GPUs a virtual cluster could start work on now (not used, not on bad hardware).",
        VC_SKU,
    ),
    ("pai_vc_jobs_waiting", "Job attempts of a virtual cluster waiting for their gang to be placed.", VC),
    ("pai_vc_jobs_running", "Job attempts of a virtual cluster holding their cells.", VC),
    (
        "pai_vc_queue_head_age_seconds",
        "How long the head of a virtual cluster's queue has waited (0 when nothing waits).",
        VC,
    ),
    ("pai_node_gpus", "GPUs (accelerator leaves) of a node in the cluster config.", NODE_SKU),
    ("pai_node_gpus_used", "GPUs of a node held by gangs.", NODE),
    ("pai_node_gpus_bad", "GPUs of a node reported unhealthy: no new work goes there.", NODE),
    ("pai_node_healthy", "1 while the node's runtime agent is heard from (heartbeats), else 0.", NODE),
    ("pai_node_schedulable", "1 unless an admin cordoned the node (then 0: no new work goes there).", NODE),
    ("pai_node_draining", "1 while a drained node still has gangs that were asked to stop.", NODE),
)


def empty() -> list[Metric]:
    return [gauge_family(name, doc, labels, ()) for name, doc, labels in SPECS]


COLLECTOR = register_snapshot(empty)


def families(
    alloc: HivedAllocator,
    marks: NodeMarks,
    registrations: Mapping[str, Mapping[str, Any]],
    now: float,
) -> list[Metric]:
    rows: dict[str, list[Row]] = {name: [] for name, _, _ in SPECS}
    used = alloc.used_leaves()
    for vc in sorted(alloc.quota.vcs):
        guaranteed = vc_views.guaranteed_leaves(alloc, vc)
        free = vc_views.available_leaves(alloc, vc)
        vc_used = used.get(vc, {})
        for sku in sorted(set(guaranteed) | set(vc_used) | set(free)):
            if alloc.config.is_cpu_leaf(sku):
                continue
            rows["pai_vc_gpus_guaranteed"].append(((vc, sku), guaranteed.get(sku, 0)))
            rows["pai_vc_gpus_used"].append(((vc, sku), vc_used.get(sku, 0)))
            rows["pai_vc_gpus_free"].append(((vc, sku), free.get(sku, 0)))
    waiting = {vc: 0 for vc in alloc.quota.vcs}
    running = {vc: 0 for vc in alloc.quota.vcs}
    head_age = {vc: 0.0 for vc in alloc.quota.vcs}
    for key, state in alloc.groups().items():
        request = alloc.request_of(key)
        if request is None:
            continue
        if state in (GroupState.PENDING, GroupState.PREEMPTING):
            waiting[request.vc] = waiting.get(request.vc, 0) + 1
        else:
            running[request.vc] = running.get(request.vc, 0) + 1
    for queued in alloc.pending():
        request = alloc.request_of(queued.key)
        since = alloc.waiting_since(queued.key)
        if request is not None and queued.position == 1 and since is not None:
            head_age[request.vc] = max(0.0, now - since)
    for vc in sorted(waiting):
        rows["pai_vc_jobs_waiting"].append(((vc,), waiting[vc]))
        rows["pai_vc_jobs_running"].append(((vc,), running.get(vc, 0)))
        rows["pai_vc_queue_head_age_seconds"].append(((vc,), head_age.get(vc, 0.0)))
    for node in sorted(alloc.cluster.nodes):
        view = node_view(alloc, marks, node, registrations.get(node))
        for sku, total in view["sku_types"].items():
            if not alloc.config.is_cpu_leaf(sku):
                rows["pai_node_gpus"].append(((node, sku), total))
        rows["pai_node_gpus_used"].append(((node,), view["gpu_cells"]["used"]))
        rows["pai_node_gpus_bad"].append(((node,), len(view["bad_gpus"])))
        rows["pai_node_healthy"].append(((node,), 1 if view["healthy"] else 0))
        rows["pai_node_schedulable"].append(((node,), 1 if view["schedulable"] else 0))
        rows["pai_node_draining"].append(((node,), 1 if view["draining"] else 0))
    return [gauge_family(name, doc, labels, rows[name]) for name, doc, labels in SPECS]
