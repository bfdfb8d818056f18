"""Where a trivial job's time goes between its submission and its task's start, hop by hop (issue 17).

Attaches to a platform started with ``pai up --data-dir DIR`` (``DIR/endpoints.json`` for the API,
``DIR/bus/operator.url`` for the bus), submits ``--jobs`` trivial jobs (``true``, no GPU) from
``--clients`` threads, waits until each is final, then reads every event of those jobs back from the
``PAI_EVENTS`` stream. Each event carries two clocks: when its producer made it (the CloudEvents
``ce-time`` header, set as the handler builds the event) and when the stream stored it (JetStream's own
timestamp, once the producer's transaction committed and its outbox was published). Launch commands are
removed from their work-queue stream once done, so they are watched as they are published (a plain
subscription to ``pai.cmd.>`` during the run; "published" is when it received one). A job's path, with
the producer of each step:

    submitted_at (jobs: parsed)  -> job.submitted made (jobs: the write's turn, the storage check)
    -> stored (jobs: commit, publish) -> scheduling.requested made (orchestrator: delivery, its step)
    -> stored (commit, publish) -> scheduling.allocated made (scheduler) -> stored
    -> runtime.launch made (orchestrator: delivery, its step) -> published (commit, publish)
    -> task started (runtime: delivery, the task's files, its process) -> task.running made -> stored

Every host's clock is the same one here (one machine), so the differences are the hops' durations. Prints
each hop's p50 / p90 / p99 and max in ms, and the whole path's. ``--json FILE`` keeps each job's stamps,
from which every printed figure can be computed again.

Run: ``python benchmarks/job_path.py --data-dir .pai --password PW --jobs 200 --clients 1``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import nats
from e2e import JOB_TEMPLATE, percentile
from load_phases import submit_jobs, wait_final
from nats.aio.msg import Msg
from proc_stats import load_average

# The path's stamps in order: (name, the event type whose clock it is, which of its clocks).
STAMPS: tuple[tuple[str, str, str], ...] = (
    ("submitted", "job.submitted", "submitted_at"),
    ("job.submitted made", "job.submitted", "made"),
    ("job.submitted stored", "job.submitted", "stored"),
    ("scheduling.requested made", "scheduling.requested", "made"),
    ("scheduling.requested stored", "scheduling.requested", "stored"),
    ("scheduling.allocated made", "scheduling.allocated", "made"),
    ("scheduling.allocated stored", "scheduling.allocated", "stored"),
    ("runtime.launch made", "runtime.launch", "made"),
    ("runtime.launch published", "runtime.launch", "stored"),
    ("task started", "task.running", "started_at"),
    ("task.running made", "task.running", "made"),
    ("task.running stored", "task.running", "stored"),
)
TYPES = {event for _, event, _ in STAMPS} - {"runtime.launch"}


def _ms(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000.0


class CommandWatch:
    """Receives every command published while the run goes on (its own thread and event loop)."""

    def __init__(self, nats_url: str, marker: str) -> None:
        self.nats_url, self.marker = nats_url, marker
        self.stamps: dict[str, dict[str, float]] = {}
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._run(),))

    def __enter__(self) -> CommandWatch:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("could not subscribe to the commands")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    async def _run(self) -> None:
        self._stop = asyncio.Event()
        nc = await nats.connect(self.nats_url, connect_timeout=5)

        async def seen(msg: Msg) -> None:
            received = time.time() * 1000.0
            headers = msg.headers or {}
            key = headers.get("ce-subject", "")
            if self.marker in key and headers.get("ce-type") == "runtime.launch":
                job = self.stamps.setdefault(key, {})
                job.setdefault("runtime.launch made", _ms(headers["ce-time"]))
                job.setdefault("runtime.launch published", received)

        await nc.subscribe("pai.cmd.>", cb=seen)
        await nc.flush()
        self._ready.set()
        await self._stop.wait()
        await nc.close()


async def read_stamps(nats_url: str, marker: str, look_back: int) -> dict[str, dict[str, float]]:
    """Per job key containing ``marker``: every stamp of STAMPS found in the last ``look_back`` events."""
    nc = await nats.connect(nats_url, connect_timeout=5)
    stamps: dict[str, dict[str, float]] = {}
    try:
        js = nc.jetstream()
        info = await js.stream_info("PAI_EVENTS")
        last = info.state.last_seq
        for seq in range(max(info.state.first_seq, last - look_back + 1), last + 1):
            try:
                msg = await js.get_msg("PAI_EVENTS", seq)
            except nats.js.errors.NotFoundError:
                continue  # removed by the stream's limits
            headers = msg.headers or {}
            key, kind = headers.get("ce-subject", ""), headers.get("ce-type", "")
            if marker not in key or kind not in TYPES or msg.time is None or msg.data is None:
                continue
            body = json.loads(msg.data)
            clocks = {"made": _ms(headers["ce-time"]), "stored": msg.time.timestamp() * 1000.0}
            if kind == "job.submitted":
                clocks["submitted_at"] = float(body["spec"]["submitted_at"])
            if kind == "task.running":
                clocks["started_at"] = float(body["started_at"])
            job = stamps.setdefault(key, {})
            for name, event, clock in STAMPS:
                # A retried attempt's events come again: the first of each is the path asked about.
                if event == kind and clock in clocks and name not in job:
                    job[name] = clocks[clock]
    finally:
        await nc.close()
    return stamps


def hops(stamps: dict[str, dict[str, float]]) -> dict[str, list[float]]:
    """Each hop's durations (ms) over the jobs that have both its ends, and the whole path's."""
    names = [name for name, _, _ in STAMPS]
    out: dict[str, list[float]] = {}
    for a, b in itertools.pairwise(names):
        out[f"{a} -> {b}"] = [j[b] - j[a] for j in stamps.values() if a in j and b in j]
    out["submitted -> task started"] = [
        j["task started"] - j["submitted"]
        for j in stamps.values()
        if "submitted" in j and "task started" in j
    ]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--password", default=os.environ.get("PAI_ADMIN_PASSWORD", ""))
    parser.add_argument("--user", default="admin")
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--json", type=Path, help="keep each job's stamps and the figures here")
    args = parser.parse_args(argv)

    endpoints = json.loads((args.data_dir / "endpoints.json").read_text())
    nats_url = (args.data_dir / "bus" / "operator.url").read_text().strip()
    api = endpoints["api"]
    login = {"username": args.user, "password": args.password}
    token = httpx.post(f"{api}/api/v2/authn/basic/login", json=login, timeout=60).json()["token"]
    client = httpx.Client(base_url=api, headers={"Authorization": f"Bearer {token}"}, timeout=120)
    marker = f"path{int(time.time() * 1000)}"
    names = [f"{marker}-{i:05d}" for i in range(args.jobs)]
    load_before = load_average()

    def job(name: str) -> str:
        return str(JOB_TEMPLATE.format(name=name, gpu=0, vc="default"))

    with CommandWatch(nats_url, marker) as commands:
        requests = submit_jobs(client, names, args.clients, job)
        accepted = {r.name for r in requests if r.accepted}
        rows: dict[str, dict[str, Any]] = {}
        if not wait_final(client, args.user, accepted, rows, 600.0, 0.5, lambda: []):
            print("not every job was final within 600 s", file=sys.stderr)
            return 1
    load_after = load_average()
    # Each job writes about 9 events; the stream's last ones are this run's (and whatever ran beside it).
    stamps = asyncio.run(read_stamps(nats_url, marker, look_back=args.jobs * 12 + 1000))
    for key, seen in commands.stamps.items():
        stamps.setdefault(key, {}).update(seen)
    figures: dict[str, dict[str, float | int]] = {}
    print(
        f"{len(accepted)}/{args.jobs} accepted, {len(stamps)} jobs' events read; {args.clients} clients;"
        f" load {load_before} -> {load_after}"
    )
    for hop, values in hops(stamps).items():
        if not values:
            continue
        f: dict[str, float | int] = {"n": len(values), "max": round(max(values), 1)}
        for q in (50, 90, 99):
            f[f"p{q}"] = round(percentile(values, q) or 0.0, 1)
        figures[hop] = f
        print(f"  {hop:58s} " + "  ".join(f"{k} {f[k]:7.1f}" for k in ("p50", "p90", "p99", "max")))
    if args.json is not None:
        raw = {
            "jobs": args.jobs,
            "clients": args.clients,
            "load": [load_before, load_after],
            "stamps": stamps,
            "figures": figures,
        }
        args.json.write_text(json.dumps(raw))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
