"""How many ``scheduling.pending`` events a burst of queued jobs causes: a count, not a time.

Starts the embedded platform (``pai_cli.platform.Platform``: 2 nodes x 4 simulated GPUs), submits ``--jobs``
one-GPU jobs that each sleep ``--sleep`` seconds from ``--concurrency`` clients at once through the REST API
v2, so that most of them queue and are placed one by one as others finish, waits until every job is final,
and counts the ``scheduling.pending`` messages in the events stream (read with the operator's bus login).
While jobs wait it samples waiting jobs' details (``pendingReason``, ``pendingPosition``) to show what a user
sees. Prints one JSON object; ``--record`` appends it with the machine and the load to
``benchmarks/RESULTS.md``.

With the old rule (an event each time a waiting job's place moved) the count grows as the square of the
queue's length; with the rule of issue 17 (an event when a wait starts or its cause changes) as its length.

Run: ``python benchmarks/pending_events.py --jobs 200 [--port 9211] [--record]``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import shlex
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import nats
from machine import describe

from pai_cli.platform import Platform

RESULTS_FILE = Path(__file__).resolve().parent / "RESULTS.md"
PASSWORD = "pending-events"
FINAL = ("SUCCEEDED", "FAILED", "STOPPED")
SUBJECT = "pai.evt.scheduling.pending"


async def _published(url: str) -> int:
    nc = await nats.connect(url, connect_timeout=5)
    try:
        info = await nc.jetstream().stream_info("PAI_EVENTS", subjects_filter=SUBJECT)
        return int((info.state.subjects or {}).get(SUBJECT, 0))
    finally:
        await nc.close()


def published(data_dir: Path) -> int:
    """scheduling.pending messages in the events stream (the secured bus refuses the bare URL)."""
    return asyncio.run(_published((data_dir / "bus" / "operator.url").read_text().strip()))


def job_text(name: str, sleep_s: float) -> str:
    return (
        f"protocolVersion: 2\nname: {name}\ntype: job\njobRetryCount: 0\ntaskRoles:\n  main:\n"
        "    instances: 1\n    resourcePerInstance: {gpu: 1, cpu: 1, memoryMB: 256}\n"
        f"    commands: ['sleep {sleep_s:g}']\n"
    )


def run(jobs: int, concurrency: int, sleep_s: float, port: int, data_dir: Path) -> dict[str, Any]:
    platform = Platform(data_dir=data_dir, port=port, extra_env={"PAI_ADMIN_PASSWORD": PASSWORD})
    platform.start()
    try:
        login = {"username": "admin", "password": PASSWORD}
        token = httpx.post(f"{platform.url}/api/v2/authn/basic/login", json=login, timeout=60).json()["token"]
        headers = {"Authorization": f"Bearer {token}"}
        client = httpx.Client(base_url=platform.url, headers=headers, timeout=120)
        time.sleep(3)  # the nodes' registrations are handled
        before = published(data_dir)
        stamp = int(time.time() * 1000)
        names = [f"pend-{stamp}-{i}" for i in range(jobs)]

        def submit(name: str) -> int:
            with httpx.Client(base_url=platform.url, headers=headers, timeout=120) as c:
                r = c.post(
                    "/api/v2/jobs", content=job_text(name, sleep_s), headers={"Content-Type": "text/yaml"}
                )
                return r.status_code

        with ThreadPoolExecutor(concurrency) as pool:
            codes = list(pool.map(submit, names))
        keys = [f"admin~{n}" for n, code in zip(names, codes, strict=True) if code == 202]
        samples: list[dict[str, Any]] = []
        deadline = time.monotonic() + 1200
        states: list[str] = []
        while time.monotonic() < deadline:
            states = []
            for key in keys:
                status = client.get(f"/api/v2/jobs/{key}").json()["jobStatus"]
                states.append(status["state"])
                if status["state"] == "WAITING" and status.get("pendingReason") and len(samples) < 5:
                    samples.append(
                        {
                            "job": key,
                            "reason": status["pendingReason"],
                            "position": status.get("pendingPosition"),
                        }
                    )
            if all(s in FINAL for s in states):
                break
            time.sleep(2)
        time.sleep(3)  # the last decisions' events are in the stream
        after = published(data_dir)
    finally:
        platform.stop()
    events = after - before
    return {
        "jobs": jobs,
        "accepted": len(keys),
        "refused_codes": sorted({c for c in codes if c != 202}),
        "final_states": {s: states.count(s) for s in sorted(set(states))},
        "pending_events": events,
        "pending_events_per_job": round(events / max(len(keys), 1), 2),
        "samples": samples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--sleep", type=float, default=1.0, help="seconds each job's task sleeps")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--label", default="", help="what code ran (recorded)")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="pai-pending-"))
    load_before = os.getloadavg()[0]
    figures = run(args.jobs, args.concurrency, args.sleep, args.port, data_dir)
    figures["load_1min"] = [round(load_before, 1), round(os.getloadavg()[0], 1)]
    print(json.dumps(figures))
    if args.record:
        when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        with RESULTS_FILE.open("a", encoding="utf-8") as out:
            out.write(
                f"\n## {when} — scheduling.pending events of a burst, {args.jobs} jobs {args.label}\n\n"
                f"Command: `python benchmarks/pending_events.py {shlex.join(sys.argv[1:])}`\n\n"
                f"Machine: {describe()}; load (1 min) {figures['load_1min'][0]} before,"
                f" {figures['load_1min'][1]} after.\n\n```json\n{json.dumps(figures, indent=1)}\n```\n"
            )


if __name__ == "__main__":
    main()
