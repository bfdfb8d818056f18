"""Cordon and drain through the scheduler service, against a real NATS server and MongoDB-wire server:
no new placements on a cordoned node (and pending reasons say so), a drain stops the gangs running there
(gracefully, as SchedulingLost with drain), both survive a restart; the VC and node gauges follow."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from prometheus_client import REGISTRY

from pai_common.bus import Bus
from pai_common.contract.events import (
    NodeSchedulableChanged,
    SchedulingAllocated,
    SchedulingLost,
    SchedulingPending,
)
from pai_common.contract.rpc import ListNodesRequest, NodeReply, NodesReply, SetNodeSchedulableRequest
from pai_common.embedded import ServerProcess
from pai_common.errors import InvalidParametersError, NoNodeError
from pai_common.testing import EventRecorder
from pai_scheduler import metrics

from .test_service import cluster_file, gang, register, scheduler_app

__all__ = ["cluster_file"]


async def nodes(bus: Bus) -> dict[str, dict[str, object]]:
    reply = await bus.request(ListNodesRequest(), NodesReply)
    return {str(n["name"]): n for n in reply.nodes}


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


async def test_cordon_drain_and_restart(
    fresh_nats: ServerProcess, mongo_server: ServerProcess, fresh_bus: Bus, cluster_file: Path, tmp_path: Path
) -> None:
    db = f"sched{uuid.uuid4().hex[:8]}"
    events = await EventRecorder(fresh_bus, "pai.evt.>").start()
    app = scheduler_app(fresh_nats, mongo_server, cluster_file, db, tmp_path, gauges_s=0.1)
    await app.start()
    try:
        for node, gpus in (("a0", 4), ("a1", 4), ("k0.ec2.internal", 2)):
            await register(fresh_bus, node, gpus)
        # Cordon both A100 nodes: a 4-GPU gang cannot be placed, and says why.
        cordon = SetNodeSchedulableRequest(node="a0", schedulable=False, by="root", reason="fan")
        reply = await fresh_bus.request(cordon, NodeReply)
        assert reply.applied and reply.node["schedulable"] is False
        assert reply.node["cordon"] == {
            "by": "root",
            "at": reply.node["cordon"]["at"],
            "reason": "fan",
            "drain": False,
        }
        await fresh_bus.request(SetNodeSchedulableRequest(node="a1", schedulable=False, by="root"), NodeReply)
        await fresh_bus.publish_event(gang("u~big", gpu=4))
        pending = await events.wait_for(SchedulingPending, "u~big")
        assert "cordoned by an admin, taking no new work: a0, a1" in pending.reason
        await events.wait_for(NodeSchedulableChanged, timeout=5, node="a0", schedulable=False)

        for bad in (
            SetNodeSchedulableRequest(node="zz", schedulable=False, by="root"),
            SetNodeSchedulableRequest(node="a0", schedulable=True, drain=True, by="root"),
        ):
            try:
                await fresh_bus.request(bad, NodeReply)
                raise AssertionError(f"accepted: {bad}")
            except (NoNodeError, InvalidParametersError) as err:
                assert err.message

        # A restart keeps the cordon: same database, a new process.
        await app.stop()
        app = scheduler_app(fresh_nats, mongo_server, cluster_file, db, tmp_path, gauges_s=0.1)
        await app.start()
        listed = await nodes(fresh_bus)
        assert listed["a0"]["schedulable"] is False and listed["a1"]["schedulable"] is False
        assert listed["k0.ec2.internal"]["schedulable"] is True and listed["a0"]["cordon"]["reason"] == "fan"
        # Cordoned is not unhealthy: the agent is still heard from (OpenPAI's node list says Ready).
        assert listed["a0"]["healthy"] is True and listed["a0"]["gpu_cells"] == {"total": 4, "used": 0}

        # Uncordon: the waiting gang is placed on a0.
        await fresh_bus.request(SetNodeSchedulableRequest(node="a0", schedulable=True, by="root"), NodeReply)
        placed = await events.wait_for(SchedulingAllocated, "u~big")
        assert {p.node for p in placed.placements} == {"a0"}

        # Drain a0: the gang running there is asked to stop gracefully; the node counts as draining until
        # its cells are released.
        drained = await fresh_bus.request(
            SetNodeSchedulableRequest(node="a0", schedulable=False, drain=True, by="root"), NodeReply
        )
        assert drained.node["draining"] is True and drained.node["running_gangs"] == 1
        lost = await events.wait_for(SchedulingLost, "u~big")
        assert lost.drain and "node a0 is drained by root" in lost.reason

        async def gauge(name: str, value: float, **labels: str) -> None:
            for _ in range(100):
                if sample(name, **labels) == value:
                    return
                await asyncio.sleep(0.05)
            raise AssertionError(f"{name}{labels} != {value}: {sample(name, **labels)}")

        await gauge("pai_node_schedulable", 0, node="a0")
        await gauge("pai_node_draining", 1, node="a0")
        await gauge("pai_node_gpus_used", 4, node="a0")
        await gauge("pai_node_gpus", 4, node="a0", sku="A100")
        await gauge("pai_node_healthy", 1, node="a0")
        await gauge("pai_vc_gpus_guaranteed", 4, virtual_cluster="research", sku="A100")
        await gauge("pai_vc_gpus_used", 4, virtual_cluster="research", sku="A100")
        await gauge("pai_vc_jobs_running", 1, virtual_cluster="research")
        assert (sample("pai_scheduler_decision_seconds_count", event="scheduling.requested") or 0) >= 1
    finally:
        await app.stop()
    assert metrics.COLLECTOR is not None
