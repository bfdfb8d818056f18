"""What a job with hundreds of tasks costs the jobs service per `framework.changed`, and whether its RPCs
are answered meanwhile (issue 17: stopping the 501-task MNIST job of the acceptance tests was answered
`503 service jobs did not answer in 5s`).

Starts a NATS server, a MongoDB-wire server and the jobs service (its own process, ``python -m pai_jobs``),
answers for the scheduler and the storage service on the bus, submits one job of ``--tasks`` tasks, then
publishes ``--events`` `framework.changed` events of it as the orchestrator does (every event carries the
whole framework: each task's status; event ``v`` moves task ``v mod tasks`` on by one state), as fast as
the bus takes them (a backlog: the consumer's batches are full) or ``--rate`` a second, while a prober
asks ``jobs.get`` and ``jobs.execution_type`` (STOP; after the first one a no-op that still takes the
service's write turn) one after the other, every ``--probe-ms``.

Prints, once the service has applied the last event (its consumer has nothing pending or unacked):

- the size of one event (bytes on the bus);
- per event: the jobs process's CPU-seconds and the database server's (``/proc``, their own counters:
  little moved by other work on the machine), the database requests (``serverStatus``
  ``network.numRequests``), and the bytes the database server read and wrote (``/proc/<pid>/io``
  ``rchar``/``wchar``: its sockets and its files, the journal included);
- the RPCs' latencies while the events flowed (p50, p99, max) and how many missed the gateway's 5 s.

Run: ``.venv/bin/python benchmarks/big_job_events.py --tasks 501 --events 300`` (``--json FILE`` keeps
the raw figures).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from proc_stats import cpu_seconds, load_average
from pymongo import MongoClient

from pai_common.bus import EVENTS_STREAM, Bus
from pai_common.contract.base import event_subject
from pai_common.contract.events import FrameworkChanged
from pai_common.contract.rpc import (
    GetJobRequest,
    JobDetailReply,
    JobExecutionTypeRequest,
    JobMutationReply,
    ListVirtualClustersRequest,
    ResolveStoragesRequest,
    SubmitJobReply,
    SubmitJobRequest,
    VirtualClustersReply,
)
from pai_common.contract.types import FrameworkSnapshot, TaskSnapshot
from pai_common.embedded import ServerProcess, start_mongo, start_nats
from pai_common.envelope import encode
from pai_common.errors import PaiError
from pai_common.testing import no_storages

RPC_TIMEOUT_S = 5.0  # the gateway's deadline for a jobs RPC
TASK_STATES = ("TaskAttemptPreparing", "TaskAttemptRunning", "TaskAttemptCompleted", "TaskCompleted")


def job_yaml(name: str, tasks: int) -> str:
    return f"""protocolVersion: 2
name: {name}
type: job
prerequisites:
  - {{type: dockerimage, name: img, uri: "python:3.11"}}
taskRoles:
  worker:
    instances: {tasks}
    dockerImage: img
    resourcePerInstance: {{cpu: 1, memoryMB: 256, gpu: 0}}
    commands: ["python train.py --shard $PAI_TASK_INDEX"]
defaults: {{virtualCluster: default}}
"""


def snapshot(job_key: str, version: int, tasks: int) -> FrameworkSnapshot:
    """The framework after ``version`` single-task moves: task ``i`` has moved ``(version - i) // tasks``
    times beyond its first state (one task changes per event, in turn, as task events come one by one)."""
    return FrameworkSnapshot(
        job_key=job_key,
        version=version,
        state="AttemptRunning",
        attempt_id=0,
        created_at=1_700_000_000_000,
        launched_at=1_700_000_001_000,
        tasks=[
            TaskSnapshot(
                task_role="worker",
                index=i,
                state=TASK_STATES[min(max(0, (version - i + tasks - 1) // tasks), len(TASK_STATES) - 1)],
                node=f"node-{i % 20:02d}",
                host_ip=f"10.0.{i % 20}.1",
                ports={"http": [20000 + i]},
                created_at=1_700_000_000_000 + i,
                launched_at=1_700_000_001_000 + i if version > i else None,
            )
            for i in range(tasks)
        ],
    )


def db_requests(client: MongoClient[Any]) -> float:
    return float(client.admin.command("serverStatus").get("network", {}).get("numRequests", 0))


def io_bytes(pid: int) -> tuple[int, int]:
    """Bytes ``pid`` read and wrote through system calls (sockets and files)."""
    fields = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
    return int(fields["rchar"]), int(fields["wchar"])


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def wait_consumed(bus: Bus, timeout_s: float) -> None:
    """Until the jobs service's consumer has nothing pending and nothing unacknowledged."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        info = await bus.js.consumer_info(EVENTS_STREAM, "jobs")
        if info.num_pending == 0 and info.num_ack_pending == 0:
            return
        await asyncio.sleep(0.2)
    raise TimeoutError(f"the jobs service did not apply the events within {timeout_s:g} s")


async def wait_serving(bus: Bus, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            await bus.request(GetJobRequest(job_key="nobody~nothing"), JobDetailReply, timeout=2.0)
        except PaiError as exc:
            if exc.code == "NoJobError":
                return
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.3)


async def probe(bus: Bus, job_key: str, every_s: float, stop: asyncio.Event) -> dict[str, list[float]]:
    """``jobs.get`` then ``jobs.execution_type`` STOP, again and again: each one's latency (a miss of the
    gateway's deadline counts as the deadline, and is counted)."""
    lat: dict[str, list[float]] = {"get": [], "stop": [], "missed_get": [], "missed_stop": []}
    requests: list[tuple[str, Any, Any]] = [
        ("get", GetJobRequest(job_key=job_key), JobDetailReply),
        ("stop", JobExecutionTypeRequest(job_key=job_key, value="STOP", username="alice"), JobMutationReply),
    ]
    while not stop.is_set():
        for name, req, reply in requests:
            started = time.monotonic()
            try:
                await bus.request(req, reply, timeout=RPC_TIMEOUT_S)
            except PaiError as exc:
                # The gateway answers 503 for a missed deadline, 5xx for the rest: both counted, by code.
                key = "missed" if exc.code == "ServiceUnavailableError" else f"error {exc.code}"
                lat.setdefault(f"{key}_{name}", []).append(1.0)
            lat[name].append(time.monotonic() - started)
        try:
            await asyncio.wait_for(stop.wait(), every_s)
        except TimeoutError:
            pass
    return lat


def start_jobs(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen([sys.executable, "-m", "pai_jobs"], env=env, stdout=log, stderr=log)


async def run(args: argparse.Namespace, base: Path) -> dict[str, Any]:
    nats: ServerProcess = start_nats(base)
    mongo: ServerProcess = start_mongo(base)
    jobs: subprocess.Popen[bytes] | None = None
    prober: asyncio.Task[dict[str, list[float]]] | None = None
    bus = await Bus.connect(nats.url, "orchestrator")
    try:
        await bus.ensure_streams()

        async def vcs(_: ListVirtualClustersRequest) -> VirtualClustersReply:
            return VirtualClustersReply(virtual_clusters={"default": {}})

        await bus.serve_rpc({ListVirtualClustersRequest: vcs})
        await bus.serve_rpc({ResolveStoragesRequest: no_storages})
        env = {
            **os.environ,
            "PAI_NATS_URL": nats.url,
            "PAI_MONGO_URL": mongo.url,
            "PAI_DATA_DIR": str(base / "jobs"),
            "PAI_LOG_LEVEL": "WARNING",
        }
        jobs = start_jobs(env, base / "jobs.log")
        await wait_serving(bus)
        key = (
            await bus.request(
                SubmitJobRequest(
                    username="alice",
                    virtual_clusters=["default"],
                    protocol_yaml=job_yaml("mnist", args.tasks),
                ),
                SubmitJobReply,
                timeout=30.0,
            )
        ).job_key
        subject = event_subject(FrameworkChanged.TYPE)
        # Encoded beforehand: the publisher's own work is not this benchmark's subject.
        messages = [
            encode(FrameworkChanged(snapshot=snapshot(key, v, args.tasks)), "orchestrator")
            for v in range(1, args.events + 1)
        ]
        size = statistics.mean(len(payload) for _, _, payload in messages)
        db: MongoClient[dict[str, Any]] = MongoClient(mongo.url)
        await wait_consumed(bus, 60.0)
        requests0, io0 = db_requests(db), io_bytes(mongo.proc.pid)
        jobs_cpu0, db_cpu0 = cpu_seconds(jobs.pid) or 0.0, cpu_seconds(mongo.proc.pid) or 0.0
        started = time.monotonic()
        stop = asyncio.Event()
        # Without probes (--probe-ms 0) the CPU and request figures are the events' alone.
        if args.probe_ms:
            prober = asyncio.create_task(probe(bus, key, args.probe_ms / 1000, stop))
        for i, (_, headers, payload) in enumerate(messages):
            if args.rate:
                await asyncio.sleep(max(0.0, started + i / args.rate - time.monotonic()))
            await bus.publish_raw(subject, headers, payload)
        published_s = time.monotonic() - started
        await wait_consumed(bus, args.timeout)
        applied_s = time.monotonic() - started
        stop.set()
        lat = await prober if prober is not None else {}
        requests1, io1 = db_requests(db), io_bytes(mongo.proc.pid)
        jobs_cpu1, db_cpu1 = cpu_seconds(jobs.pid) or 0.0, cpu_seconds(mongo.proc.pid) or 0.0
        detail = (await bus.request(GetJobRequest(job_key=key), JobDetailReply, timeout=30.0)).detail
        statuses = detail["taskRoles"]["worker"]["taskStatuses"]
        assert len(statuses) == args.tasks, f"the detail shows {len(statuses)} tasks, not {args.tasks}"
        db.close()
        n = args.events
        return {
            "tasks": args.tasks,
            "rate": args.rate or "at once",
            "events": n,
            "event_bytes": round(size),
            "published_s": round(published_s, 2),
            "applied_s": round(applied_s, 2),
            "events_per_s": round(n / applied_s, 1),
            "jobs_cpu_ms_per_event": round((jobs_cpu1 - jobs_cpu0) * 1000 / n, 2),
            "db_cpu_ms_per_event": round((db_cpu1 - db_cpu0) * 1000 / n, 2),
            "db_requests_per_event": round((requests1 - requests0) / n, 2),
            "db_read_bytes_per_event": round((io1[0] - io0[0]) / n),
            "db_written_bytes_per_event": round((io1[1] - io0[1]) / n),
            "probed": bool(lat),
            "rpc": {
                name: {
                    "n": len(lat[name]),
                    "p50_ms": round(percentile(lat[name], 0.5) * 1000, 1),
                    "p99_ms": round(percentile(lat[name], 0.99) * 1000, 1),
                    "max_ms": round(max(lat[name], default=float("nan")) * 1000, 1),
                    "missed_5s": len(lat[f"missed_{name}"]),
                    "errors": {
                        k: len(v) for k, v in lat.items() if k.startswith("error") and k.endswith(name)
                    },
                }
                for name in ("get", "stop")
                if lat
            },
        }
    finally:
        if prober is not None and not prober.done():
            prober.cancel()
        await bus.close()
        if jobs is not None:
            jobs.terminate()
            try:
                jobs.wait(20)
            except subprocess.TimeoutExpired:
                jobs.kill()
        mongo.stop()
        nats.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=501)
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--rate", type=float, default=0.0, help="events per second (0: at once)")
    parser.add_argument("--probe-ms", type=float, default=100.0)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the events")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="big-job-events-") as tmp:
        figures = asyncio.run(run(args, Path(tmp)))
    figures["load_average"] = load_average()
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
