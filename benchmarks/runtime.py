"""Launch overhead of one runtime agent: launch-to-running latency and the launches per second it sustains.

Starts an embedded NATS (JetStream) and MongoDB-wire server and one node agent (local-process backend)
in this process, then sends ``runtime.<node>.launch`` commands as the orchestrator would and times the
``task.running`` events that come back (each launch: a command consumed, a working directory and its
scripts written, a supervisor process started, a run document and an outbox event committed):

* latency: ``--single`` launches one after another, each timed from sending its command to receiving
  its ``task.running``; and the time from command to ``task.exited`` for a task that does nothing;
* throughput: ``--burst`` launches sent at once; launches per second = tasks / time until the last
  ``task.running``; the time until the last ``task.exited`` too.

Run: ``python benchmarks/runtime.py [--single 30] [--burst 200]``; prints the figures and one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from machine import describe as machine

from pai_common.bus import EVENTS_STREAM, Bus
from pai_common.contract.commands import LaunchTask
from pai_common.contract.events import TaskExited, TaskRunning
from pai_common.embedded import start_mongo, start_nats
from pai_common.envelope import decode
from pai_runtime.settings import RuntimeSettings
from pai_runtime.shell import Agent


def _launch(node: str, job: str, index: int) -> LaunchTask:
    return LaunchTask(
        job_key=job, attempt_id=0, task_role="worker", index=index, node=node, gpus=[], entrypoint="true",
        env={"PAI_JOB_NAME": job, "PAI_TASK_INDEX": str(index)},
    )  # fmt: skip


class Watcher:
    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.running: dict[tuple[str, int], float] = {}
        self.exited: dict[tuple[str, int], float] = {}

    async def start(self) -> None:
        sub = await self.bus.js.subscribe("pai.evt.task.>", stream=EVENTS_STREAM, ordered_consumer=True)

        async def pump() -> None:
            async for msg in sub.messages:
                body = decode(msg.headers, msg.data).body
                at = time.perf_counter()
                if isinstance(body, TaskRunning):
                    self.running.setdefault((body.job_key, body.index), at)
                elif isinstance(body, TaskExited):
                    self.exited.setdefault((body.job_key, body.index), at)

        self.task = asyncio.create_task(pump())

    async def until(
        self, table: dict[tuple[str, int], float], keys: list[tuple[str, int]], timeout: float
    ) -> None:
        deadline = time.perf_counter() + timeout
        while not all(k in table for k in keys):
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{sum(k in table for k in keys)}/{len(keys)} after {timeout}s")
            await asyncio.sleep(0.002)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(single: int, burst: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        nats, mongo = start_nats(root), start_mongo(root)
        try:
            settings = RuntimeSettings(
                nats_url=nats.url, mongo_url=mongo.url, data_dir=root / "data", node_name="bench-node",
                force_simulated=True, metrics_s=3600, log_retention_s=3600,
            )  # fmt: skip
            agent = Agent(settings)
            await agent.app.start()
            bus = await Bus.connect(nats.url, "bench")
            watcher = Watcher(bus)
            await watcher.start()
            try:
                to_running, to_exited = [], []
                for _ in range(single):
                    job = f"bench~single-{uuid.uuid4().hex[:6]}"
                    t0 = time.perf_counter()
                    await bus.send_command(_launch(agent.node, job, 0), agent.node)
                    await watcher.until(watcher.exited, [(job, 0)], 60)
                    to_running.append((watcher.running[(job, 0)] - t0) * 1000)
                    to_exited.append((watcher.exited[(job, 0)] - t0) * 1000)
                job = "bench~burst"
                keys = [(job, i) for i in range(burst)]
                t0 = time.perf_counter()
                for i in range(burst):
                    await bus.send_command(_launch(agent.node, job, i), agent.node)
                sent = time.perf_counter() - t0
                await watcher.until(watcher.running, keys, 600)
                all_running = max(watcher.running[k] for k in keys) - t0
                await watcher.until(watcher.exited, keys, 600)
                all_exited = max(watcher.exited[k] for k in keys) - t0
            finally:
                watcher.task.cancel()
                await bus.close()
                await agent.app.stop()
        finally:
            nats.stop()
            mongo.stop()
    return {
        "single": single,
        "launch_to_running_ms_p50": round(statistics.median(to_running), 1),
        "launch_to_running_ms_p95": round(_pct(to_running, 0.95), 1),
        "launch_to_exited_ms_p50": round(statistics.median(to_exited), 1),
        "burst": burst,
        "burst_send_s": round(sent, 2),
        "burst_all_running_s": round(all_running, 2),
        "launches_per_s": round(burst / all_running, 1),
        "burst_all_exited_s": round(all_exited, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--single", type=int, default=30)
    parser.add_argument("--burst", type=int, default=200)
    args = parser.parse_args()
    result = asyncio.run(run(args.single, args.burst))
    print(f"machine: {machine()}")
    for key, value in result.items():
        print(f"{key}: {value}")
    print(json.dumps({"machine": machine(), **result}))


if __name__ == "__main__":
    main()
