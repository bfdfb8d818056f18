"""The scheduler service against a real NATS server (JetStream) and a real MongoDB-wire server; at the end,
attempts placed pod by pod (gangAllocation false)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest

from pai_common.bus import EVENTS_STREAM, Bus
from pai_common.contract.events import (
    JobAttemptCompleted,
    JobTaskCompleted,
    NodeRegistered,
    SchedulingAllocated,
    SchedulingPending,
    SchedulingPreempting,
    SchedulingRejected,
    SchedulingReleased,
    SchedulingRequested,
)
from pai_common.contract.rpc import (
    ListVirtualClustersRequest,
    SkuTypesReply,
    SkuTypesRequest,
    VirtualClustersReply,
)
from pai_common.contract.types import GpuInfo, PodRequest
from pai_common.embedded import ServerProcess
from pai_common.envelope import decode
from pai_common.errors import NoVirtualClusterError
from pai_common.service import ServiceApp
from pai_common.testing import EventRecorder
from pai_scheduler.shell import Scheduler, SchedulerSettings

# Two chains: two A100 nodes of 4 and one K80 node of 2; VC "research" owns one A100 node and the K80 node,
# VC "prod" the other A100 node.
CLUSTER = """
physicalCluster:
  skuTypes:
    A100: {gpu: 1, cpu: 8, memory: 64Gi}
    K80: {gpu: 1, cpu: 4, memory: 16Gi}
  cellTypes:
    A100-NODE: {childCellType: A100, childCellNumber: 4, isNodeLevel: true}
    K80-NODE: {childCellType: K80, childCellNumber: 2, isNodeLevel: true}
  physicalCells:
    - {cellType: A100-NODE, cellAddress: a0}
    - {cellType: A100-NODE, cellAddress: a1}
    - {cellType: K80-NODE, cellAddress: k0.ec2.internal}
virtualClusters:
  research:
    virtualCells:
      - {cellType: A100-NODE, cellNumber: 1}
      - {cellType: K80-NODE, cellNumber: 1}
  prod:
    virtualCells:
      - {cellType: A100-NODE, cellNumber: 1}
"""


@pytest.fixture
def cluster_file(tmp_path: Path) -> Path:
    path = tmp_path / "cluster.yaml"
    path.write_text(CLUSTER)
    return path


def scheduler_app(
    nats: ServerProcess, mongo: ServerProcess, cluster: Path, db: str, data: Path, **overrides: Any
) -> ServiceApp:
    settings = SchedulerSettings(
        nats_url=nats.url,
        mongo_url=mongo.url,
        scheduler_cluster=cluster,
        data_dir=data,
        nak_base_delay_s=0.05,
        **overrides,
    )
    app = ServiceApp("scheduler", settings)
    Scheduler(app, settings)
    app.name = db  # a database of this test's own; the bus subjects stay the scheduler's
    return app


def gang(
    job: str, gpu: int, n: int = 1, vc: str = "research", priority: int = 10, **extra: Any
) -> SchedulingRequested:
    return SchedulingRequested(
        job_key=job,
        attempt_id=0,
        virtual_cluster=vc,
        priority=priority,
        pods=[PodRequest(task_role="w", index=i, gpu=gpu, cpu=1, memory_mb=1024, **extra) for i in range(n)],
    )


async def register(bus: Bus, node: str, gpus: int, unhealthy: tuple[int, ...] = ()) -> None:
    await bus.publish_event(
        NodeRegistered(
            node=node,
            host_ip=f"10.0.0.{len(node)}",
            cpu=32,
            memory_mb=65536,
            gpus=[
                GpuInfo(index=i, model="x", memory_mb=1, uuid=f"{node}-{i}", healthy=i not in unhealthy)
                for i in range(gpus)
            ],
            simulated=True,
        )
    )


async def recording_scheduler(
    nats: ServerProcess, mongo: ServerProcess, bus: Bus, cluster: Path, db: str, data: Path
) -> tuple[ServiceApp, EventRecorder]:
    """A started scheduler on database ``db``, and a recorder of the scheduling events, started first."""
    events = EventRecorder(bus, "pai.evt.scheduling.>")
    await events.start()
    app = scheduler_app(nats, mongo, cluster, db, data)
    await app.start()
    return app, events


async def register_cluster(bus: Bus) -> None:
    """Every node of CLUSTER registers: two A100 nodes of 4 and the K80 node of 2."""
    for node, n in (("a0", 4), ("a1", 4), ("k0.ec2.internal", 2)):
        await register(bus, node, n)


async def test_sku_types_queueing_restart_and_views(
    fresh_nats: ServerProcess, mongo_server: ServerProcess, fresh_bus: Bus, cluster_file: Path, tmp_path: Path
) -> None:
    db = f"sched{uuid.uuid4().hex[:8]}"
    app, events = await recording_scheduler(fresh_nats, mongo_server, fresh_bus, cluster_file, db, tmp_path)
    try:
        # Before its agent registers, a node is bad: a K80 job waits and says so.
        await fresh_bus.publish_event(gang("u~k80", 2, sku_types=["K80"]))
        pending = await events.wait_for(SchedulingPending, "u~k80")
        assert "K80" in pending.reason
        await register_cluster(fresh_bus)
        placed = await events.wait_for(SchedulingAllocated, "u~k80")
        assert [(p.node, sorted(p.gpus)) for p in placed.placements] == [("k0.ec2.internal", [0, 1])]
        assert placed.placements[0].host_ip == "10.0.0.15"  # the test gives 10.0.0.<len(name)>

        # Either type will do: research's only free quota is its A100 node.
        await fresh_bus.publish_event(gang("u~any", 4, sku_types=["K80", "A100"]))
        any_job = await events.wait_for(SchedulingAllocated, "u~any")
        assert {p.node for p in any_job.placements} <= {"a0", "a1"}

        # Task roles that disagree on the SKU are refused with the reason.
        mixed = SchedulingRequested(
            job_key="u~mixed",
            attempt_id=0,
            virtual_cluster="research",
            priority=10,
            pods=[
                PodRequest(task_role="a", index=0, gpu=1, cpu=1, memory_mb=1, sku_types=["A100"]),
                PodRequest(task_role="b", index=0, gpu=1, cpu=1, memory_mb=1, sku_types=["K80"]),
            ],
        )
        await fresh_bus.publish_event(mixed)
        rejected = await events.wait_for(SchedulingRejected, "u~mixed")
        assert "different SKU types" in rejected.reason

        # research is full: the next guaranteed A100 job waits for its own quota.
        await fresh_bus.publish_event(gang("u~wait", 1, sku_types=["A100"]))
        waiting = await events.wait_for(SchedulingPending, "u~wait")
        assert waiting.position == 1

        vcs = (await fresh_bus.request(ListVirtualClustersRequest(), VirtualClustersReply)).virtual_clusters
        assert vcs["research"]["resourcesUsed"]["gpu"] == 6
        assert vcs["prod"]["resourcesUsed"]["gpu"] == 0
        assert vcs["research"]["resourcesGuaranteed"]["gpu"] == 6
        skus = (await fresh_bus.request(SkuTypesRequest(virtual_cluster="prod"), SkuTypesReply)).sku_types
        assert set(skus) == {"A100"}
        with pytest.raises(NoVirtualClusterError):
            await fresh_bus.request(SkuTypesRequest(virtual_cluster="nope"), SkuTypesReply)
    finally:
        await app.stop()

    # A new scheduler process rebuilds the same state: releasing u~any lets u~wait in, nothing else moves.
    app = scheduler_app(fresh_nats, mongo_server, cluster_file, db, tmp_path)
    await app.start()
    try:
        await fresh_bus.publish_event(JobAttemptCompleted(job_key="u~any", attempt_id=0, exit_code=0))
        after = await events.wait_for(SchedulingAllocated, "u~wait")
        assert after.placements[0].node in {p.node for p in any_job.placements}
        vcs = (await fresh_bus.request(ListVirtualClustersRequest(), VirtualClustersReply)).virtual_clusters
        assert vcs["research"]["resourcesUsed"]["gpu"] == 3  # the K80 pair and one A100
    finally:
        await app.stop()


async def test_silent_nodes_go_bad_and_come_back(
    fresh_nats: ServerProcess, mongo_server: ServerProcess, fresh_bus: Bus, cluster_file: Path, tmp_path: Path
) -> None:
    from pai_common.contract.base import heartbeat_subject
    from pai_common.contract.events import NodeHealthChanged

    health = await fresh_bus.js.subscribe(
        "pai.evt.node.health.>", stream=EVENTS_STREAM, ordered_consumer=True
    )
    app = scheduler_app(
        fresh_nats, mongo_server, cluster_file, f"sched{uuid.uuid4().hex[:8]}", tmp_path, node_lost_s=1.0
    )
    await app.start()
    try:
        events = EventRecorder(fresh_bus, "pai.evt.scheduling.>")
        await events.start()
        await register_cluster(fresh_bus)
        # a0 and a1 keep beating; k0.ec2.internal falls silent and is reported bad, and nothing new lands
        # there.
        changes: list[NodeHealthChanged] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while not any(c.node == "k0.ec2.internal" and not c.healthy for c in changes):
            assert loop.time() < deadline, changes
            for node in ("a0", "a1"):
                await fresh_bus.nc.publish(heartbeat_subject(node), b"{}")
            try:
                msg = await health.next_msg(timeout=0.3)
                changes.append(decode(msg.headers, msg.data).body)
            except Exception:
                pass
        assert not any(c.node in ("a0", "a1") and not c.healthy for c in changes)
        assert "heartbeat" in next(c for c in changes if c.node == "k0.ec2.internal").reason
        await fresh_bus.publish_event(gang("u~k", 1, sku_types=["K80"]))
        waiting = await events.wait_for(SchedulingPending, "u~k")
        assert "K80" in waiting.reason
        # k0.ec2.internal speaks again: it is healthy, and the waiting job is placed there.
        deadline = loop.time() + 15
        placed = None
        while placed is None:
            assert loop.time() < deadline, "k0.ec2.internal never came back"
            for node in ("a0", "a1", "k0.ec2.internal"):
                await fresh_bus.nc.publish(heartbeat_subject(node), b"{}")
            try:
                placed = await events.wait_for(SchedulingAllocated, "u~k", timeout=0.3)
            except AssertionError:
                continue
        assert placed.placements[0].node == "k0.ec2.internal"
    finally:
        await health.unsubscribe()
        await app.stop()


LAZY_CLUSTER = """
physicalCluster:
  skuTypes:
    A100: {gpu: 1, cpu: 8, memory: 64Gi}
  cellTypes:
    A100-NODE: {childCellType: A100, childCellNumber: 4, isNodeLevel: true}
  physicalCells:
    - {cellType: A100-NODE, cellAddress: a0}
    - {cellType: A100-NODE, cellAddress: a1}
    - {cellType: A100-NODE, cellAddress: a2}
virtualClusters:
  research:
    virtualCells:
      - {cellType: A100-NODE, cellNumber: 1}
  prod:
    virtualCells:
      - {cellType: A100-NODE, cellNumber: 1}
"""


async def test_lazy_preemption_downgrades_instead_of_killing(
    fresh_nats: ServerProcess, mongo_server: ServerProcess, fresh_bus: Bus, tmp_path: Path
) -> None:
    from pai_common.contract.events import SchedulingDowngraded, SchedulingPreempting

    cluster = tmp_path / "lazy.yaml"
    cluster.write_text(LAZY_CLUSTER)
    app = scheduler_app(fresh_nats, mongo_server, cluster, f"sched{uuid.uuid4().hex[:8]}", tmp_path)
    events = EventRecorder(fresh_bus, "pai.evt.scheduling.>")
    await events.start()
    await app.start()
    try:
        for node in ("a0", "a1", "a2"):
            await register(fresh_bus, node, 4)
        lazy = gang("u~lazy", 4)
        await fresh_bus.publish_event(lazy.model_copy(update={"lazy_preemption": True}))
        first = await events.wait_for(SchedulingAllocated, "u~lazy")
        await fresh_bus.publish_event(gang("u~urgent", 4, priority=100))
        downgraded = await events.wait_for(SchedulingDowngraded, "u~lazy")
        assert downgraded.preemptor is not None and downgraded.preemptor.job_key == "u~urgent"
        urgent = await events.wait_for(SchedulingAllocated, "u~urgent")
        # The urgent job got other cells; the lazy one was never asked to stop.
        assert urgent.placements[0].node != first.placements[0].node
        assert not any(isinstance(e, SchedulingPreempting) for e in events.seen)
    finally:
        await app.stop()


async def test_a_changed_cluster_config_keeps_what_fits_and_stops_what_lost_its_cells(
    fresh_nats: ServerProcess, mongo_server: ServerProcess, fresh_bus: Bus, cluster_file: Path, tmp_path: Path
) -> None:
    from pai_common.contract.events import SchedulingLost

    db = f"sched{uuid.uuid4().hex[:8]}"
    app, events = await recording_scheduler(fresh_nats, mongo_server, fresh_bus, cluster_file, db, tmp_path)
    try:
        await register_cluster(fresh_bus)
        await fresh_bus.publish_event(gang("u~on-k80", 2, sku_types=["K80"]))
        await fresh_bus.publish_event(gang("u~on-a100", 4, sku_types=["A100"]))
        await events.wait_for(SchedulingAllocated, "u~on-k80")
        await events.wait_for(SchedulingAllocated, "u~on-a100")
    finally:
        await app.stop()

    # The K80 node leaves the cluster (and research's K80 quota with it).
    cluster_file.write_text(
        CLUSTER.replace("    - {cellType: K80-NODE, cellAddress: k0.ec2.internal}\n", "").replace(
            "      - {cellType: K80-NODE, cellNumber: 1}\n", ""
        )
    )
    app = scheduler_app(fresh_nats, mongo_server, cluster_file, db, tmp_path)
    await app.start()
    try:
        lost = await events.wait_for(SchedulingLost, "u~on-k80")
        assert "k0.ec2.internal" in lost.reason
        assert not any(isinstance(e, SchedulingLost) and e.job_key == "u~on-a100" for e in events.seen)
        vcs = (await fresh_bus.request(ListVirtualClustersRequest(), VirtualClustersReply)).virtual_clusters
        assert vcs["research"]["resourcesUsed"]["gpu"] == 4
        assert vcs["research"]["resourcesGuaranteed"]["gpu"] == 4
    finally:
        await app.stop()


async def test_cpu_only_jobs_run_on_cpu_only_nodes(
    fresh_nats: ServerProcess, mongo_server: ServerProcess, fresh_bus: Bus, tmp_path: Path
) -> None:
    """A node inventory with a CPU-only node: a job asking for no GPU is placed on its CPU leaves and sees
    no GPU; a GPU job never lands there."""
    inventory = tmp_path / "cluster.csv"
    inventory.write_text("node,leaf_type,leaf_count,cpu,memory_mb\ng0,V100,2,16,131072\nc0,,0,8,32768\n")
    db = f"sched{uuid.uuid4().hex[:8]}"
    app, events = await recording_scheduler(fresh_nats, mongo_server, fresh_bus, inventory, db, tmp_path)
    try:
        for node, n in (("g0", 2), ("c0", 0)):
            await register(fresh_bus, node, n)
        await fresh_bus.publish_event(gang("u~cpu", 0, n=2, vc="default"))
        cpu = await events.wait_for(SchedulingAllocated, "u~cpu")
        assert [(p.node, p.gpus) for p in cpu.placements] == [("c0", []), ("c0", [])]
        await fresh_bus.publish_event(gang("u~gpu", 1, n=2, vc="default"))
        gpu = await events.wait_for(SchedulingAllocated, "u~gpu")
        assert sorted((p.node, tuple(p.gpus)) for p in gpu.placements) == [("g0", (0,)), ("g0", (1,))]
        vcs = (await fresh_bus.request(ListVirtualClustersRequest(), VirtualClustersReply)).virtual_clusters
        assert vcs["default"]["resourcesUsed"]["gpu"] == 2
        assert vcs["default"]["resourcesTotal"]["cpu"] == 16 + 8
    finally:
        await app.stop()


async def test_unhealthy_gpus_get_no_work_until_they_recover(
    fresh_nats: ServerProcess, mongo_server: ServerProcess, fresh_bus: Bus, cluster_file: Path, tmp_path: Path
) -> None:
    from pai_common.contract.events import NodeHealthChanged

    health = await fresh_bus.js.subscribe(
        "pai.evt.node.health.>", stream=EVENTS_STREAM, ordered_consumer=True
    )

    async def next_health(node: str) -> NodeHealthChanged:
        deadline = asyncio.get_running_loop().time() + 10
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            assert remaining > 0, f"no node.health.changed for {node}"
            msg = await health.next_msg(timeout=remaining)
            change = decode(msg.headers, msg.data).body
            if isinstance(change, NodeHealthChanged) and change.node == node and change.bad_gpus is not None:
                return change

    app = scheduler_app(fresh_nats, mongo_server, cluster_file, f"sched{uuid.uuid4().hex[:8]}", tmp_path)
    await app.start()
    try:
        events = EventRecorder(fresh_bus, "pai.evt.scheduling.>")
        await events.start()
        # a0's agent reports GPU 2 unhealthy: monitoring and users see it as a node health change.
        await register(fresh_bus, "a0", 4, unhealthy=(2,))
        for node, n in (("a1", 4), ("k0.ec2.internal", 2)):
            await register(fresh_bus, node, n)
        change = await next_health("a0")
        assert change.bad_gpus == [2] and change.healthy and "GPU(s) 2 unhealthy" in change.reason
        # research takes the healthy A100 node; prod's quota is left with a0, whose GPU 2 is bad.
        await fresh_bus.publish_event(gang("u~research", 4, sku_types=["A100"]))
        placed = await events.wait_for(SchedulingAllocated, "u~research")
        assert [p.node for p in placed.placements] == ["a1"]
        await fresh_bus.publish_event(gang("u~all", 4, vc="prod", sku_types=["A100"]))
        waiting = await events.wait_for(SchedulingPending, "u~all")
        assert "a0 #2" in waiting.reason, waiting.reason
        vcs = (await fresh_bus.request(ListVirtualClustersRequest(), VirtualClustersReply)).virtual_clusters
        assert vcs["prod"]["resourcesAvailable"]["gpu"] == 3
        assert vcs["prod"]["resourcesGuaranteed"]["gpu"] == 4
        # A one-GPU job of prod runs, never on the bad GPU.
        await fresh_bus.publish_event(gang("u~one", 1, vc="prod", sku_types=["A100"], priority=20))
        one = await events.wait_for(SchedulingAllocated, "u~one")
        assert one.placements[0].node == "a0" and one.placements[0].gpus != [2]
        await fresh_bus.publish_event(JobAttemptCompleted(job_key="u~one", attempt_id=0, exit_code=0))
        # The GPU recovers (the agent registers again): the waiting job gets the whole node.
        await register(fresh_bus, "a0", 4)
        after = await events.wait_for(SchedulingAllocated, "u~all")
        assert [(p.node, sorted(p.gpus)) for p in after.placements] == [("a0", [0, 1, 2, 3])]
        change = await next_health("a0")
        assert change.bad_gpus == [] and "healthy again" in change.reason
    finally:
        await health.unsubscribe()
        await app.stop()


def pod_request(n: int, gang: bool) -> SchedulingRequested:
    return SchedulingRequested(
        job_key="u~many",
        attempt_id=2,
        virtual_cluster="research",
        priority=10,
        gang_allocation=gang,
        pods=[PodRequest(task_role="w", index=i, gpu=1, cpu=1, memory_mb=1024) for i in range(n)],
    )


async def test_pods_without_gang_allocation_run_as_capacity_allows(
    fresh_nats: ServerProcess, mongo_server: ServerProcess, fresh_bus: Bus, tmp_path: Path
) -> None:
    """research holds one A100 node (4 GPUs) and a K80 node: 6 one-GPU A100 pods get 4 at once, the fifth
    when a task completes, the sixth once the attempt's release frees the rest."""
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(CLUSTER)
    events = EventRecorder(fresh_bus, "pai.evt.scheduling.>")
    await events.start()
    app = scheduler_app(fresh_nats, mongo_server, cluster, f"sched{uuid.uuid4().hex[:8]}", tmp_path)
    await app.start()
    try:
        await register_cluster(fresh_bus)
        # A pod that can never fit (5 GPUs on 4-GPU nodes) refuses the whole attempt, none of it starts.
        refused = pod_request(2, gang=False).model_copy(update={"job_key": "u~refused"})
        refused = refused.model_copy(
            update={"pods": [*refused.pods, PodRequest(task_role="big", index=0, gpu=5, cpu=1, memory_mb=1)]}
        )
        await fresh_bus.publish_event(refused)
        no = await events.wait_for(SchedulingRejected, "u~refused")
        assert no.reason.startswith("task role big:")

        many = pod_request(6, gang=False)
        many = many.model_copy(
            update={"pods": [p.model_copy(update={"sku_types": ("A100",)}) for p in many.pods]}
        )
        await fresh_bus.publish_event(many)
        for i in range(4):
            await events.wait_until(
                lambda e, i=i: (
                    isinstance(e, SchedulingAllocated)
                    and e.job_key == "u~many"
                    and e.placements[0].index == i
                )
            )
        waiting = await events.wait_for(SchedulingPending, "u~many")
        assert waiting.attempt_id == 2 and waiting.reason.startswith("some of its tasks wait to be placed")
        placed = [e for e in events.of(SchedulingAllocated, "u~many")]
        assert all(len(e.placements) == 1 and e.placements[0].node == "a0" for e in placed)

        first = placed[0].placements[0]
        await fresh_bus.publish_event(
            JobTaskCompleted(job_key="u~many", attempt_id=2, task_role="w", index=first.index)
        )
        fifth = await events.wait_until(
            lambda e: (
                isinstance(e, SchedulingAllocated) and e.job_key == "u~many" and e.placements[0].index == 4
            )
        )
        assert fifth.placements[0].gpus == first.gpus  # the completed task's GPU
        await fresh_bus.publish_event(JobAttemptCompleted(job_key="u~many", attempt_id=2, exit_code=0))
        released = await events.wait_for(SchedulingReleased, "u~many")
        assert released.attempt_id == 2
        # Everything of the attempt is gone: a whole-node gang of research fits again.
        await fresh_bus.publish_event(
            SchedulingRequested(
                job_key="u~after", attempt_id=0, virtual_cluster="research", priority=10,
                pods=[PodRequest(task_role="w", index=0, gpu=4, cpu=1, memory_mb=1, sku_types=("A100",))],
            )
        )  # fmt: skip
        await events.wait_for(SchedulingAllocated, "u~after")
        await events.drain()
        assert not [e for e in events.of(SchedulingAllocated, "u~many") if e.placements[0].index == 5]
        assert len(events.of(SchedulingReleased, "u~many")) == 1

        # A prod-priority gang preempts it; each victim names its cap (the cluster's default here).
        await fresh_bus.publish_event(
            SchedulingRequested(
                job_key="u~urgent", attempt_id=0, virtual_cluster="research", priority=100,
                pods=[PodRequest(task_role="w", index=0, gpu=4, cpu=1, memory_mb=1, sku_types=("A100",))],
            )
        )  # fmt: skip
        preempting = await events.wait_for(SchedulingPreempting, "u~urgent")
        assert [(v.job_key, v.task_role, v.grace_cap_seconds) for v in preempting.victims] == [
            ("u~after", None, 300.0)
        ]
    finally:
        await app.stop()


async def test_a_batch_is_decided_on_one_load_and_saved_once(
    fresh_nats: ServerProcess, mongo_server: ServerProcess, fresh_bus: Bus, cluster_file: Path, tmp_path: Path
) -> None:
    """Messages waiting in the stream are applied in one transaction on one loaded allocator, saved once
    with the queue's reasons: each decision is the one the events would make one at a time, and an
    attempt placed and released within the batch is never reported waiting."""
    db = f"sched{uuid.uuid4().hex[:8]}"
    events = EventRecorder(fresh_bus, "pai.evt.scheduling.>")
    await events.start()
    await register_cluster(fresh_bus)
    await fresh_bus.publish_event(gang("u~first", 4, sku_types=["A100"]))
    await fresh_bus.publish_event(gang("u~queued", 1, sku_types=["A100"]))
    await fresh_bus.publish_event(gang("u~brief", 2, sku_types=["K80"]))
    await fresh_bus.publish_event(JobAttemptCompleted(job_key="u~brief", attempt_id=0, exit_code=0))
    app = scheduler_app(fresh_nats, mongo_server, cluster_file, db, tmp_path)
    await app.start()
    try:
        first = await events.wait_for(SchedulingAllocated, "u~first")
        assert {p.node for p in first.placements} in ({"a0"}, {"a1"})
        await events.wait_for(SchedulingAllocated, "u~brief")
        await events.wait_for(SchedulingReleased, "u~brief")
        waiting = await events.wait_for(SchedulingPending, "u~queued")
        assert waiting.position == 1
        await events.drain(0.5)
        assert events.of(SchedulingPending, "u~brief") == [] and events.of(SchedulingPending, "u~first") == []
        state = await app.db["allocator"].find_one({"_id": "cluster"})
        assert state is not None and state["version"] == 1  # seven messages, one save
        reasons = [d async for d in app.db["allocator_waiting"].find({})]
        assert [d["_id"] for d in reasons] == ["u~queued#0"]

        # Another writer saved a version behind this process's back: the cached allocator it would start
        # from is refused by the guarded write, and the transaction starts again from the stored state.
        await app.db["allocator"].update_one({"_id": "cluster"}, {"$inc": {"version": 1}})
        await fresh_bus.publish_event(JobAttemptCompleted(job_key="u~first", attempt_id=0, exit_code=0))
        await events.wait_for(SchedulingAllocated, "u~queued")
        state = await app.db["allocator"].find_one({"_id": "cluster"})
        assert state is not None and state["version"] == 3
        assert await app.db["allocator_waiting"].count_documents({}) == 0
    finally:
        await app.stop()


async def test_a_request_overtaken_by_its_attempts_end_allocates_nothing_even_after_a_restart(
    fresh_nats: ServerProcess, mongo_server: ServerProcess, fresh_bus: Bus, cluster_file: Path, tmp_path: Path
) -> None:
    """A request that went back to the stream (a long database outage) can come after the completion of
    its attempt: the completion leaves a tombstone with the allocator's state, and the request that meets
    it takes no cells, also when the scheduler restarted between the two."""
    db = f"sched{uuid.uuid4().hex[:8]}"
    app, events = await recording_scheduler(fresh_nats, mongo_server, fresh_bus, cluster_file, db, tmp_path)
    try:
        await register_cluster(fresh_bus)
        # The usual order leaves no tombstone behind.
        await fresh_bus.publish_event(gang("u~usual", 1, sku_types=["A100"]))
        await events.wait_for(SchedulingAllocated, "u~usual")
        await fresh_bus.publish_event(JobAttemptCompleted(job_key="u~usual", attempt_id=0, exit_code=0))
        await events.wait_for(SchedulingReleased, "u~usual")
        # Nor do attempts placed pod by pod whose every pod was released by its task's completion before
        # the attempt ended: in an earlier transaction (u~pods, a placement in between marks it) or in the
        # same batch (u~pods2, published back to back).
        for job in ("u~pods", "u~pods2"):
            await fresh_bus.publish_event(pod_request(2, gang=False).model_copy(update={"job_key": job}))
            for i in range(2):
                await events.wait_until(
                    lambda e, i=i, job=job: (
                        isinstance(e, SchedulingAllocated) and e.job_key == job and e.placements[0].index == i
                    )
                )
            for i in range(2):
                await fresh_bus.publish_event(
                    JobTaskCompleted(job_key=job, attempt_id=2, task_role="w", index=i)
                )
            if job == "u~pods":
                await fresh_bus.publish_event(gang("u~between", 1, sku_types=["K80"]))
                await events.wait_for(SchedulingAllocated, "u~between")
                await fresh_bus.publish_event(
                    JobAttemptCompleted(job_key="u~between", attempt_id=0, exit_code=0)
                )
            await fresh_bus.publish_event(JobAttemptCompleted(job_key=job, attempt_id=2, exit_code=0))
        # The completion first: nothing to release, a tombstone.
        await fresh_bus.publish_event(JobAttemptCompleted(job_key="u~late", attempt_id=0, exit_code=137))
        await fresh_bus.publish_event(gang("u~marker", 1, sku_types=["K80"]))
        await events.wait_for(SchedulingAllocated, "u~marker")
        tombstones = [d async for d in app.db["allocator_released"].find({})]
        assert [d["_id"] for d in tombstones] == ["u~late#0"]
    finally:
        await app.stop()

    app = scheduler_app(fresh_nats, mongo_server, cluster_file, db, tmp_path)
    await app.start()
    try:
        await fresh_bus.publish_event(gang("u~late", 4, sku_types=["A100"]))
        # Applied in stream order: once the next request is decided, the late one was.
        await fresh_bus.publish_event(gang("u~next", 1, sku_types=["K80"]))
        await events.wait_for(SchedulingAllocated, "u~next")
        await events.drain(0.3)
        assert events.of(SchedulingAllocated, "u~late") == []
        assert events.of(SchedulingPending, "u~late") == []
        vcs = (await fresh_bus.request(ListVirtualClustersRequest(), VirtualClustersReply)).virtual_clusters
        assert vcs["research"]["resourcesUsed"]["gpu"] == 2  # the K80s of u~marker and u~next
        assert await app.db["allocator_released"].count_documents({}) == 0  # taken by its request
        # The attempt's next try is a new attempt and is placed as usual.
        retry = gang("u~late", 4, sku_types=["A100"]).model_copy(update={"attempt_id": 1})
        await fresh_bus.publish_event(retry)
        placed = await events.wait_for(SchedulingAllocated, "u~late")
        assert placed.attempt_id == 1
    finally:
        await app.stop()


async def test_node_addresses_are_read_once_and_again_after_a_registration(
    fresh_nats: ServerProcess, mongo_server: ServerProcess, fresh_bus: Bus, cluster_file: Path, tmp_path: Path
) -> None:
    """A placement names its node's address. The addresses read by a committed transaction serve the next
    ones without a read of the nodes, until a node registers again (with a new address, say)."""
    db = f"sched{uuid.uuid4().hex[:8]}"
    app, events = await recording_scheduler(fresh_nats, mongo_server, fresh_bus, cluster_file, db, tmp_path)
    try:
        await register_cluster(fresh_bus)
        await fresh_bus.publish_event(gang("u~first", 1, sku_types=["A100"]))
        first = await events.wait_for(SchedulingAllocated, "u~first")
        assert first.placements[0].host_ip == "10.0.0.2"
        await app.db.command("profile", 2, slowms=0)
        await fresh_bus.publish_event(gang("u~second", 1, sku_types=["A100"]))
        second = await events.wait_for(SchedulingAllocated, "u~second")
        assert second.placements[0].host_ip == "10.0.0.2"
        reads = [p async for p in app.db["system.profile"].find({"ns": f"{app.db.name}.nodes"})]
        assert reads == [], reads
        # Both A100 nodes move: the next placement reads them again and names the new address.
        for node in ("a0", "a1"):
            moved = NodeRegistered(
                node=node,
                host_ip=f"10.9.9.{len(node)}",
                cpu=32,
                memory_mb=65536,
                gpus=[GpuInfo(index=i, model="x", memory_mb=1, uuid=f"{node}-{i}") for i in range(4)],
                simulated=True,
            )
            await fresh_bus.publish_event(moved)
        await fresh_bus.publish_event(gang("u~third", 1, sku_types=["A100"]))
        third = await events.wait_for(SchedulingAllocated, "u~third")
        assert third.placements[0].host_ip == "10.9.9.2"
        await app.db.command("profile", 0)
    finally:
        await app.stop()
