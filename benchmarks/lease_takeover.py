"""Scheduler lease takeover: how long a hot standby takes to become the scheduler when the holder dies.

Target (issue 16): within 15 s of the holder's death. Starts the embedded NATS and MongoDB-wire servers
and two scheduler processes (as two Kubernetes replicas), then, `--rounds` times: SIGKILL the holder,
time until the standby holds the lease and answers the scheduler's RPC, start a new standby. Also times
one clean handover (SIGTERM). Prints the figures, then one JSON line; `--record` appends them to
RESULTS.md with the machine and the load.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from machine import describe

from pai_common.bus import Bus
from pai_common.contract.rpc import ListVirtualClustersRequest, VirtualClustersReply
from pai_common.embedded import ServerProcess, child_env, free_port, start_mongo, start_nats
from pai_common.errors import ServiceUnavailableError
from pai_scheduler.lease import Lease

RESULTS_FILE = Path(__file__).resolve().parent / "RESULTS.md"
CLUSTER_CSV = "node,leaf_type,leaf_count,cpu,memory_mb\nnode-0,gpu,4,32,262144\n"


def start_scheduler(
    name: str, nats: ServerProcess, mongo: ServerProcess, root: Path
) -> subprocess.Popen[bytes]:
    data = root / name
    data.mkdir()
    (data / "cluster.csv").write_text(CLUSTER_CSV)
    env = child_env(
        {
            "PAI_NATS_URL": nats.url,
            "PAI_MONGO_URL": mongo.url,
            "PAI_DATA_DIR": str(data),
            "PAI_HTTP_PORT": str(free_port()),
            "PAI_SCHEDULER_LEASE_HOLDER": name,
        }
    )
    log = open(root / f"{name}.log", "wb")
    return subprocess.Popen(
        [sys.executable, "-m", "pai_scheduler"], env=env, stdout=log, stderr=subprocess.STDOUT
    )


async def until_held_by(lease: Lease, holder: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while await lease.holder_now() != holder:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{holder} never took the lease")
        await asyncio.sleep(0.05)


async def until_answering(bus: Bus, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            await bus.request(ListVirtualClustersRequest(), VirtualClustersReply, timeout=1)
            return
        except ServiceUnavailableError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


async def run(rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        nats, mongo = start_nats(root / "nats"), start_mongo(root / "mongo")
        procs: dict[str, subprocess.Popen[bytes]] = {}
        bus = await Bus.connect(nats.url, "bench")
        try:
            await bus.ensure_streams()
            watcher = await Lease.open(bus, "bench-watcher", 10.0, 1)
            names = iter(f"sched-{i}" for i in range(rounds + 3))
            holder = next(names)
            procs[holder] = start_scheduler(holder, nats, mongo, root)
            await until_held_by(watcher, holder)
            standby = next(names)
            procs[standby] = start_scheduler(standby, nats, mongo, root)
            await asyncio.sleep(3)  # the standby is up and polling
            killed: list[float] = []
            for _ in range(rounds):
                os.kill(procs[holder].pid, signal.SIGKILL)
                procs[holder].wait()
                start = time.monotonic()
                await until_held_by(watcher, standby)
                await until_answering(bus)
                killed.append(time.monotonic() - start)
                holder, standby = standby, next(names)
                procs[standby] = start_scheduler(standby, nats, mongo, root)
                await asyncio.sleep(3)
            procs[holder].send_signal(signal.SIGTERM)
            start = time.monotonic()
            await until_held_by(watcher, standby)
            await until_answering(bus)
            clean = time.monotonic() - start
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            await bus.close()
            nats.stop()
            mongo.stop()
    return {
        "rounds": rounds,
        "after_sigkill_s": [round(x, 2) for x in killed],
        "after_sigkill_max_s": round(max(killed), 2),
        "after_sigkill_median_s": round(statistics.median(killed), 2),
        "after_sigterm_s": round(clean, 2),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


def record(figures: dict[str, Any]) -> None:
    lines = [
        "",
        f"## Scheduler lease takeover ({dt.date.today().isoformat()}, `benchmarks/lease_takeover.py`)",
        "",
        f"Machine: {describe()}. Embedded NATS and MongoDB-wire servers, two scheduler processes, lease TTL"
        f" 10 s, poll 1 s. Load average at the end: {figures['load_avg_1m']} (the machine is shared).",
        "Measured from the holder's death to the standby holding the lease and answering its RPC.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| after SIGKILL, each of {figures['rounds']} rounds (s)"
        f" | {', '.join(map(str, figures['after_sigkill_s']))} |",
        f"| after SIGKILL, median / max (s)"
        f" | {figures['after_sigkill_median_s']} / {figures['after_sigkill_max_s']} |",
        f"| after SIGTERM (the holder lets go) (s) | {figures['after_sigterm_s']} |",
        "| target | within 15 s of the holder's death |",
        "",
    ]
    with RESULTS_FILE.open("a") as f:
        f.write("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    figures = asyncio.run(run(args.rounds))
    print(f"takeover after SIGKILL: {figures['after_sigkill_s']} s (max {figures['after_sigkill_max_s']} s)")
    print(f"takeover after SIGTERM: {figures['after_sigterm_s']} s")
    if args.record:
        record(figures)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
