"""What one scheduler transaction writes to the database while many jobs wait: documents and bytes, not time.

Starts a NATS server and the embedded MongoDB-wire server of its own, runs the scheduler service in this
process on one 4-GPU node, fills the queue with ``--waiting`` whole-node gangs (one runs, the rest wait),
then publishes ``--events`` requests that join the queue one at a time and as many completions of the
running gang (each places the next waiting one and moves every other waiting job one place). Every write
command the scheduler's client sends is seen by a PyMongo command listener and grouped by transaction; the
figures are the documents and BSON bytes of each transaction that saved the allocator, and the CPU seconds
the database server spent over the measured events (its own counters in /proc). Prints one JSON line per
size; ``--record`` appends them with the machine line and the load to ``benchmarks/RESULTS.md``.

The same script measures the code before the split layout: put an older ``pai_scheduler`` first on
``PYTHONPATH`` (the output names the module it ran).

Run: ``python benchmarks/scheduler_writes.py --waiting 100 2000 [--events 10] [--record]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import bson
from machine import describe
from pymongo import AsyncMongoClient, monitoring

import pai_scheduler
from pai_common import service
from pai_common.bus import Bus
from pai_common.contract.events import (
    JobAttemptCompleted,
    NodeRegistered,
    SchedulingAllocated,
    SchedulingPending,
    SchedulingRequested,
)
from pai_common.contract.types import GpuInfo, PodRequest
from pai_common.embedded import start_mongo, start_nats
from pai_common.service import ServiceApp
from pai_common.testing import EventRecorder
from pai_scheduler.shell import Scheduler, SchedulerSettings

RESULTS_FILE = Path(__file__).resolve().parent / "RESULTS.md"
CLUSTER = """
physicalCluster:
  skuTypes:
    A100: {gpu: 1, cpu: 8, memory: 64Gi}
  cellTypes:
    A100-NODE: {childCellType: A100, childCellNumber: 4, isNodeLevel: true}
  physicalCells:
    - {cellType: A100-NODE, cellAddress: a0}
virtualClusters:
  default:
    virtualCells:
      - {cellType: A100-NODE, cellNumber: 1}
"""
WRITES = {"insert": "documents", "update": "updates", "delete": "deletes", "findAndModify": None}


class WriteLog(monitoring.CommandListener):
    def __init__(self) -> None:
        self.writes: list[tuple[Any, str, str, int, int]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name not in WRITES:
            return
        cmd = event.command
        field = WRITES[event.command_name]
        docs = len(cmd[field]) if field else 1
        txn = (bytes(cmd["lsid"]["id"]), cmd.get("txnNumber")) if "lsid" in cmd else None
        self.writes.append(
            (txn, event.command_name, str(cmd[event.command_name]), docs, len(bson.encode(cmd)))
        )

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def saves(self) -> list[tuple[int, int]]:
        """(documents, bytes) of each transaction that saved the allocator."""
        # (the old layout wrote two documents of "allocator" in one transaction: counted once)
        txns = list(dict.fromkeys(w[0] for w in self.writes if w[1] == "update" and w[2] == "allocator"))
        return [
            (sum(w[3] for w in self.writes if w[0] == t), sum(w[4] for w in self.writes if w[0] == t))
            for t in txns
        ]


def request(job: str) -> SchedulingRequested:
    pod = PodRequest(task_role="w", index=0, gpu=4, cpu=1, memory_mb=1024)
    return SchedulingRequested(job_key=job, attempt_id=0, virtual_cluster="default", priority=10, pods=[pod])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(waiting: int, events: int, tmp: Path) -> dict[str, Any]:
    nats_server = start_nats(tmp / f"nats{waiting}")
    mongo = start_mongo(tmp / f"mongo{waiting}")
    log = WriteLog()

    def connect(url: str) -> AsyncMongoClient[dict[str, Any]]:
        return AsyncMongoClient(url, tz_aware=True, uuidRepresentation="standard", event_listeners=[log])

    service.connect_mongo = connect  # type: ignore[assignment]
    cluster = tmp / f"cluster{waiting}.yaml"
    cluster.write_text(CLUSTER)
    bus = await Bus.connect(nats_server.url, "bench")
    await bus.ensure_streams()
    recorder = EventRecorder(bus, "pai.evt.scheduling.>")
    await recorder.start()
    settings = SchedulerSettings(
        nats_url=nats_server.url, mongo_url=mongo.url, scheduler_cluster=cluster, data_dir=tmp
    )
    app = ServiceApp("scheduler", settings)
    Scheduler(app, settings)
    await app.start()
    try:
        gpus = [GpuInfo(index=i, model="x", memory_mb=1, uuid=f"a0-{i}", healthy=True) for i in range(4)]
        await bus.publish_event(
            NodeRegistered(node="a0", host_ip="10.0.0.1", cpu=32, memory_mb=65536, gpus=gpus, simulated=True)
        )
        started = time.monotonic()
        for i in range(waiting + 1):
            await bus.publish_event(request(f"u~w{i:05d}"))
        await recorder.wait_for(SchedulingPending, f"u~w{waiting:05d}", timeout=600)
        fill_s = time.monotonic() - started
        log.writes.clear()
        cpu_before = cpu_seconds(mongo.proc.pid)
        for k in range(events):
            await bus.publish_event(request(f"u~late{k:03d}"))
            await recorder.wait_for(SchedulingPending, f"u~late{k:03d}", timeout=120)
        joins = log.saves()
        log.writes.clear()
        for k in range(events):
            await bus.publish_event(JobAttemptCompleted(job_key=f"u~w{k:05d}", attempt_id=0, exit_code=0))
            await recorder.wait_for(SchedulingAllocated, f"u~w{k + 1:05d}", timeout=120)
        places = log.saves()
        cpu = cpu_seconds(mongo.proc.pid) - cpu_before
    finally:
        await app.stop()
        await bus.close()
        mongo.stop()
        nats_server.stop()

    def summary(saves: list[tuple[int, int]]) -> dict[str, float]:
        return {
            "transactions": len(saves),
            "documents_mean": round(statistics.mean(d for d, _ in saves), 1),
            "kib_mean": round(statistics.mean(b for _, b in saves) / 1024, 1),
            "kib_max": round(max(b for _, b in saves) / 1024, 1),
        }

    return {
        "module": str(Path(pai_scheduler.__file__).parent),
        "waiting": waiting,
        "fill_s": round(fill_s, 1),
        "request_joins_queue": summary(joins),
        "placement_moves_queue": summary(places),
        "db_server_cpu_ms_per_event": round(1000 * cpu / (2 * events), 1),
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--waiting", type=int, nargs="+", default=[100, 2000])
    parser.add_argument("--events", type=int, default=10)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="sched-writes-") as tmp:
        for n in args.waiting:
            row = await measure(n, args.events, Path(tmp))
            print(json.dumps(row), flush=True)
            rows.append(row)
    if args.record:
        load = Path("/proc/loadavg").read_text().split()[:3]
        with RESULTS_FILE.open("a") as f:
            f.write(f"\n<!-- scheduler_writes.py, {describe()}, load {' '.join(load)} -->\n")
            for row in rows:
                f.write(f"    {json.dumps(row)}\n")


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
