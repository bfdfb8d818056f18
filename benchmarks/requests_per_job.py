"""Database requests, bus messages and CPU per trivial job, by service, on a running ``pai up``.

Attaches to a platform started with ``pai up --data-dir DIR`` (it reads ``DIR/endpoints.json``, the
process ids in ``DIR/pai-up.lock`` and the bus URL in ``DIR/bus/operator.url``), measures the platform
idle for ``--idle`` seconds (what it costs per second with no job), then submits ``--jobs`` trivial jobs
(``true``, no GPU) from ``--clients`` threads, waits until each is final and the database falls quiet, and
prints per job:

- the MongoDB-wire server's commands per database and collection (``top``: queries, inserts, updates,
  removes, other commands; a transaction's commit is not counted under a namespace, so it is only in the
  server's total ``numRequests``), with the idle rate over the phase's length taken off;
- the JetStream streams' messages (events, commands);
- each process's CPU-seconds (``/proc``: its own counters, so little moved by other work on the machine);
  and, from the idle measurement, each process's CPU per second of idling (``idle_cpu_ms_per_s_by_process``).

These counts do not depend on the machine's load except through batch sizes. ``--json FILE`` keeps the
raw figures. Run: ``python benchmarks/requests_per_job.py --data-dir .pai --password PW --jobs 100``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from bus_db_counts import _stream_counts
from proc_stats import delta, load_average, snapshot
from pymongo import MongoClient

FINAL = ("SUCCEEDED", "FAILED", "STOPPED")
OPS = ("queries", "getmore", "insert", "update", "remove", "commands")


def db_counts(clients: list[MongoClient[Any]]) -> dict[str, float]:
    """Requests every server received in all, and per namespace and kind of operation (each database
    lives on one server: ``pai up`` gives the busiest their own)."""
    out = {"requests": 0.0}
    for client in clients:
        out["requests"] += float(client.admin.command("serverStatus")["network"]["numRequests"])
        for namespace, sections in client.admin.command("top")["totals"].items():
            if not isinstance(sections, dict) or "." not in namespace:
                continue
            for op in OPS:
                count = float(sections.get(op, {}).get("count", 0))
                if count:
                    out[f"{namespace} {op}"] = count
    return out


def streams(nats_url: str) -> dict[str, float]:
    import asyncio

    return asyncio.run(_stream_counts(nats_url))


def diff(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after.get(k, 0.0) - before.get(k, 0.0) for k in set(before) | set(after)}


def quiet(client: list[MongoClient[Any]], settle_s: float, idle_per_s: float) -> None:
    """Wait until the server's request count grows no faster than idle (the last events are handled)."""
    last = db_counts(client)["requests"]
    while True:
        time.sleep(settle_s)
        now = db_counts(client)["requests"]
        if now - last <= idle_per_s * settle_s + 3 * len(
            client
        ):  # its own two requests per server, and slack
            return
        last = now


def by_database(per: dict[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in per.items():
        if key == "requests" or " " not in key:
            continue
        db = key.split(".", 1)[0]
        out[db] = out.get(db, 0.0) + value
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--password", default=os.environ.get("PAI_ADMIN_PASSWORD", ""))
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--idle", type=float, default=15.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    endpoints = json.loads((args.data_dir / "endpoints.json").read_text())
    pids = json.loads((args.data_dir / "pai-up.lock").read_text())["processes"]
    nats_url = (args.data_dir / "bus" / "operator.url").read_text().strip()
    urls = sorted(set(endpoints.get("mongo_databases", {}).values()) | {endpoints["mongo"]})
    mongo = [MongoClient(url, serverSelectionTimeoutMS=10_000) for url in urls]
    api = endpoints["api"]
    login = {"username": "admin", "password": args.password}
    token = httpx.post(f"{api}/api/v2/authn/basic/login", json=login, timeout=60).json()["token"]
    http = httpx.Client(base_url=api, headers={"Authorization": f"Bearer {token}"}, timeout=120)
    load_before = load_average()

    # Idle: what the platform asks per second with no job (timers, heartbeats, gauges).
    idle0, icpu0, t0 = db_counts(mongo), snapshot(pids), time.monotonic()
    time.sleep(args.idle)
    idle1, icpu1, t1 = db_counts(mongo), snapshot(pids), time.monotonic()
    idle_rate = {k: v / (t1 - t0) for k, v in diff(idle0, idle1).items()}
    idle_cpu_rate = {k: v / (t1 - t0) for k, v in delta(icpu0, icpu1).items()}
    idle_cpu = sum(idle_cpu_rate.values())

    before, s_before, cpu_before = db_counts(mongo), streams(nats_url), snapshot(pids)
    start = time.monotonic()
    stamp = int(time.time() * 1000)
    names = [f"rpj-{stamp}-{i}" for i in range(args.jobs)]

    def submit(name: str) -> None:
        text = (
            f"protocolVersion: 2\nname: {name}\ntype: job\ntaskRoles:\n  main:\n    instances: 1\n"
            "    resourcePerInstance: {gpu: 0, cpu: 1, memoryMB: 256}\n    commands: ['true']\n"
        )
        for _ in range(20):
            r = http.post("/api/v2/jobs", content=text, headers={"Content-Type": "text/yaml"})
            if r.status_code == 202:
                return
            time.sleep(1)
        raise SystemExit(f"submission refused: {r.status_code} {r.text}")

    with ThreadPoolExecutor(args.clients) as pool:
        list(pool.map(submit, names))
    pending = set(names)
    states: dict[str, str] = {}
    deadline = time.monotonic() + 900
    while pending and time.monotonic() < deadline:
        time.sleep(2)
        # One list call per poll (as vs_slurm.py waits): a detail call per job would count the poll's own
        # reads as the jobs' cost.
        page = http.get("/api/v2/jobs", params={"username": "admin", "limit": str(args.jobs + 50)}).json()
        for job in page["data"] if isinstance(page, dict) else page:
            if job.get("name") in pending and job.get("state") in FINAL:
                states[job["name"]] = job["state"]
                pending.discard(job["name"])
    quiet(mongo, 3.0, idle_rate.get("requests", 0.0))
    after, s_after, cpu_after, end = db_counts(mongo), streams(nats_url), snapshot(pids), time.monotonic()

    span = end - start
    raw = diff(before, after)
    per_job = {k: (v - idle_rate.get(k, 0.0) * span) / args.jobs for k, v in raw.items()}
    cpu = delta(cpu_before, cpu_after)
    messages = diff(s_before, s_after)
    by_cpu = sorted(cpu.items(), key=lambda c: -c[1])
    net = {k: v - idle_cpu_rate.get(k, 0.0) * span for k, v in cpu.items()}
    by_net = sorted(net.items(), key=lambda c: -c[1])
    figures = {
        "jobs": args.jobs,
        "clients": args.clients,
        "final": {s: sum(1 for v in states.values() if v == s) for s in set(states.values())},
        "not_final": len(pending),
        "span_s": round(span, 1),
        "load": f"{load_before} -> {load_average()}",
        "idle_requests_per_s": {k: round(v, 2) for k, v in sorted(by_database(idle_rate).items())}
        | {"all": round(idle_rate.get("requests", 0.0), 2)},
        "requests_per_job": round(per_job.get("requests", 0.0), 2),
        "requests_per_job_by_db": {k: round(v, 2) for k, v in sorted(by_database(per_job).items())},
        "requests_per_job_detail": {k: round(v, 2) for k, v in sorted(per_job.items()) if abs(v) >= 0.01},
        "stream_messages_per_job": {k: round(v / args.jobs, 2) for k, v in sorted(messages.items())},
        "cpu_ms_per_job": {k: round(v * 1000 / args.jobs, 1) for k, v in by_cpu},
        "cpu_ms_per_job_all": round(sum(cpu.values()) * 1000 / args.jobs, 1),
        "idle_cpu_ms_per_s": round(idle_cpu * 1000, 1),
        "idle_cpu_ms_per_s_by_process": {
            k: round(v * 1000, 1) for k, v in sorted(idle_cpu_rate.items(), key=lambda c: -c[1])
        },
        # What the jobs cost beyond the platform's idle work over the same span.
        "cpu_ms_per_job_net": {k: round(v * 1000 / args.jobs, 1) for k, v in by_net},
        "cpu_ms_per_job_net_all": round(sum(v for _, v in by_net) * 1000 / args.jobs, 1),
    }
    print(json.dumps(figures, indent=1))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
