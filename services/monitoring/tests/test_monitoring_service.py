"""Monitoring against a real NATS server (JetStream) and a real MongoDB-wire server: node and GPU health
events become the gauges Prometheus scrapes, whatever their kind and order."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from prometheus_client import REGISTRY

from pai_common.bus import Bus
from pai_common.contract.events import NodeHealthChanged, NodeRegistered
from pai_common.contract.types import GpuInfo
from pai_common.embedded import ServerProcess
from pai_common.settings import Settings
from pai_monitoring.shell import NODES, build_app, refresh_gauges


def registered(node: str, gpus: int, bad: tuple[int, ...] = ()) -> NodeRegistered:
    return NodeRegistered(
        node=node,
        host_ip="127.0.0.1",
        cpu=8,
        memory_mb=65536,
        gpus=[
            GpuInfo(index=i, model="V100", memory_mb=16384, uuid=f"GPU-{node}-{i}", healthy=i not in bad)
            for i in range(gpus)
        ],
        simulated=True,
    )


def gauge(name: str) -> float:
    value = REGISTRY.get_sample_value(name)
    assert value is not None, name
    return value


async def test_node_and_gpu_health_become_gauges(
    fresh_nats: ServerProcess, mongo_server: ServerProcess, fresh_bus: Bus, tmp_path: Path
) -> None:
    settings = Settings(nats_url=fresh_nats.url, mongo_url=mongo_server.url, data_dir=tmp_path)
    app = build_app(settings)
    app.name = f"mon{uuid.uuid4().hex[:8]}"  # a database of this test's own
    await app.start()
    try:
        await fresh_bus.publish_event(registered("n0", 4, bad=(1,)))
        await fresh_bus.publish_event(registered("n1", 2))
        # n1 falls silent (node-level), then the scheduler reports n0's GPUs 1 and 3 bad (GPU-level):
        # the GPU event must not make the node count as healthy or bad.
        await fresh_bus.publish_event(NodeHealthChanged(node="n1", healthy=False, reason="no heartbeat"))
        await fresh_bus.publish_event(
            NodeHealthChanged(node="n0", healthy=True, reason="GPU 1, 3 unhealthy", bad_gpus=[3, 1])
        )
        await fresh_bus.publish_event(
            NodeHealthChanged(node="n1", healthy=True, reason="GPUs healthy", bad_gpus=[])
        )

        async def settled() -> bool:
            nodes = {n["_id"]: n async for n in app.db[NODES].find({})}
            return (
                nodes.get("n0", {}).get("bad_gpus") == [1, 3]
                and nodes.get("n1", {}).get("healthy") is False
                and nodes.get("n1", {}).get("bad_gpus") == []
            )

        for _ in range(200):
            if await settled():
                break
            await asyncio.sleep(0.05)
        assert await settled()
        await refresh_gauges(app)
        assert gauge("pai_nodes") == 2
        assert gauge("pai_nodes_bad") == 1
        assert gauge("pai_gpus_bad") == 2

        # n0 registers again with every GPU healthy: its bad GPUs are cleared.
        await fresh_bus.publish_event(registered("n0", 4))
        for _ in range(200):
            await refresh_gauges(app)
            if gauge("pai_gpus_bad") == 0:
                break
            await asyncio.sleep(0.05)
        assert gauge("pai_gpus_bad") == 0
        assert gauge("pai_nodes_bad") == 1
    finally:
        await app.stop()
