"""Job API benchmark: list and detail latency with a long history (100,000 jobs by default).

Starts the embedded platform (as ``pai up`` does), loads ``--jobs`` jobs straight into the jobs service's
database (batched inserts of the same documents the service writes at submission, each with a framework
snapshot of 1-4 tasks), restarts the jobs service and waits until its in-memory list (``list_sync``) has
loaded them (the time to ready, the load time from its log and the process's memory are printed), then
measures one request after another over loopback HTTP, through the gateway (token check cached) and the
``jobs.list`` / ``jobs.get`` RPC:

- ``list_*``: ``GET /api/v2/jobs`` pages of ``--page`` jobs, filtered, sorted and paged as named below
  (every order field, both directions, keyword searches);
- ``detail``: ``GET /api/v2/jobs/{user}~{job}`` of random jobs;
- ``rpc_list_default`` / ``rpc_detail``: the same RPCs sent straight on the bus (no HTTP, no gateway).

Latencies are client-side wall times in ms, p50 and p99 (nearest rank) of ``--requests`` requests each.
The target: p99 under 50 ms for a page of 100 on the embedded MongoDB-wire server. ``--db-plan`` runs the
jobs service with ``PAI_JOBS_LIST_INDEX=0`` (every list from the database plan of ``pai_jobs.list_plan``;
orders other than submission then take seconds: measure them with a small ``--requests``). Prints the
figures, then one JSON object on the last line; ``--record`` appends a section to RESULTS.md.

Run: ``python benchmarks/job_api.py [--jobs 100000] [--requests 200] [--db-plan] [--record]``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import random
import re
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from machine import describe, machine
from pymongo import MongoClient

from pai_cli.platform import Platform
from pai_common.bus import Bus
from pai_common.contract.rpc import GetJobRequest, JobDetailReply, JobListReply, ListJobsRequest
from pai_common.contract.states import public_state
from pai_common.contract.types import FrameworkSnapshot, JobSpec, TaskRoleSpec, TaskSnapshot
from pai_jobs import list_plan
from pai_jobs.list_sync import UPDATE_COUNTER
from pai_jobs.shell import COUNTERS, COUNTS, JOBS, LIST, SEQ_COUNTER, new_job_document, read_model_fields

RESULTS_FILE = Path(__file__).resolve().parent / "RESULTS.md"
PASSWORD = "bench-admin-password"
USERS = 200
VCS = ("default", "vc1", "vc2", "vc3", "vc4")
T0 = 1_700_000_000_000
# Final states dominate a long history; a few jobs are live.
STATE_MIX = (("Completed", 0, 70), ("Completed", 1, 10), ("Completed", -210, 5), ("AttemptRunning", None, 10))
BATCH = 2000


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def job_document(i: int, rng: random.Random) -> dict[str, Any]:
    user = f"user{i % USERS}"
    instances = rng.randint(1, 4)
    submitted = T0 + i * 1000
    spec = JobSpec(
        job_key=f"{user}~job{i}",
        user=user,
        name=f"job{i}",
        virtual_cluster=VCS[i % len(VCS)],
        priority=rng.choice((100, 10, 10, -1)),
        task_roles=[
            TaskRoleSpec(
                name="worker",
                instances=instances,
                gpu=rng.randint(0, 2),
                cpu=2,
                memory_mb=4096,
                entrypoint="train",
            )
        ],
        submitted_at=submitted,
    )
    doc = new_job_document(spec.model_dump(mode="json"), {"name": spec.name, "protocolVersion": 2})
    doc["tags"] = ["nightly"] if i % 10 == 0 else []
    roll = rng.randrange(100)
    fc_state, exit_code = STATE_MIX[-1][:2]
    for state, code, weight in STATE_MIX:
        if roll < weight:
            fc_state, exit_code = state, code
            break
        roll -= weight
    if i % 20 == 0:
        return doc  # still waiting: no snapshot yet
    done = fc_state == "Completed"
    snapshot = FrameworkSnapshot(
        job_key=spec.job_key,
        version=5,
        state=fc_state,
        attempt_id=0,
        created_at=submitted + 100,
        launched_at=submitted + 2000,
        completed_at=submitted + 60_000 if done else None,
        exit_code=exit_code,
        tasks=[
            TaskSnapshot(
                task_role="worker",
                index=t,
                state="TaskCompleted" if done else "TaskAttemptRunning",
                node=f"node-{rng.randrange(64)}",
                host_ip=f"10.0.{t}.{rng.randrange(250)}",
                gpus=[t],
                ports={"ssh": [15000 + t], "http": [16000 + t]},
                exit_code=exit_code if done else None,
            )
            for t in range(instances)
        ],
    )
    doc.update(read_model_fields(snapshot.model_dump(mode="json")))
    assert doc["state"] == public_state(fc_state, exit_code)
    return doc


def load(mongo_url: str, n: int, seed: int) -> float:
    """Jobs, their list entries, the counters and the seq counter, as the service would have written them."""
    rng = random.Random(seed)
    counts: Counter[str] = Counter()
    started = time.perf_counter()
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_url)
    with client:
        db = client["pai_jobs"]
        for start in range(0, n, BATCH):
            docs = [{**job_document(i, rng), "seq": i + 1} for i in range(start, min(n, start + BATCH))]
            entries = [{**list_plan.list_entry(doc), "update_seq": doc["seq"]} for doc in docs]
            for entry in entries:
                counts.update(list_plan.count_keys(entry))
            db[JOBS].insert_many(docs, ordered=False)
            db[LIST].insert_many(entries, ordered=False)
        db[COUNTS].insert_many([{"_id": key, "n": value} for key, value in counts.items()])
        db[COUNTERS].update_one({"_id": SEQ_COUNTER}, {"$set": {"value": n}}, upsert=True)
        db[COUNTERS].update_one({"_id": UPDATE_COUNTER}, {"$set": {"value": n}}, upsert=True)
        assert db[LIST].estimated_document_count() >= n
    return time.perf_counter() - started


LIST_CASES: dict[str, dict[str, Any]] = {
    "list_default": {},
    "list_user": {"username": "user42"},
    "list_state_running": {"state": "RUNNING"},
    "list_vc_and_state": {"vc": "vc3", "state": "FAILED"},
    "list_tag": {"tagsContain": "nightly"},
    "list_priority_prod": {"jobPriority": "prod"},
    "list_offset_1000": {"offset": 1000},
    "list_offset_half": {"offset": -1},  # half the jobs deep; set from --jobs
    "list_user_with_total": {"username": "user42", "withTotalCount": "true"},
    "list_all_with_total": {"withTotalCount": "true"},
    "list_vc_state_with_total": {"vc": "vc3", "state": "FAILED", "withTotalCount": "true"},
    **{
        f"order_{field}_{direction.lower()}": {"order": f"{field},{direction}"}
        for field in (
            "jobName",
            "submissionTime",
            "username",
            "vc",
            "retries",
            "totalTaskNumber",
            "totalGpuNumber",
            "state",
            "completionTime",
            "jobPriority",
        )
        for direction in ("ASC", "DESC")
    },
    "order_jobName_offset_half": {"order": "jobName,ASC", "offset": -1},
    "order_completionTime_user": {"order": "completionTime,DESC", "username": "user42"},
    "order_totalGpuNumber_state_running": {"order": "totalGpuNumber,DESC", "state": "RUNNING"},
    "order_retries_not_tagged_with_total": {
        "order": "retries,DESC",
        "tagsNotContain": "nightly",
        "withTotalCount": "true",
    },
    "keyword_job42": {"keyword": "job42"},
    "keyword_job42_with_total": {"keyword": "job42", "withTotalCount": "true"},
    "keyword_job4_by_name": {"keyword": "job4", "order": "jobName,ASC"},
    "keyword_user4_vc_by_completion": {"keyword": "user4", "vc": "vc1", "order": "completionTime,DESC"},
    "keyword_every_job_offset_half": {"keyword": "job", "offset": -1},
}


def measure_http(p: Platform, args: argparse.Namespace, n: int) -> dict[str, dict[str, float]]:
    login = httpx.post(f"{p.url}/api/v2/authn/basic/login", json={"username": "admin", "password": PASSWORD})
    token = login.json()["token"]
    rng = random.Random(args.seed + 1)
    figures: dict[str, dict[str, float]] = {}
    with httpx.Client(base_url=p.url, timeout=60, headers={"Authorization": f"Bearer {token}"}) as api:
        cases = [(name, params, args.requests) for name, params in LIST_CASES.items()]
        for name, params, requests in cases:
            query = {"limit": args.page, **params}
            if query.get("offset") == -1:
                query["offset"] = n // 2
            first = api.get("/api/v2/jobs", params=query)
            assert first.status_code == 200, f"{name}: {first.text}"
            body = first.json()
            page = body["data"] if isinstance(body, dict) else body
            assert page or int(query.get("offset", 0)) >= n, f"{name} found no job"
            times = []
            for _ in range(requests):
                t = time.perf_counter()
                response = api.get("/api/v2/jobs", params=query)
                times.append((time.perf_counter() - t) * 1000)
                assert response.status_code == 200, f"{name}: {response.text}"
            figures[name] = summary(times)
            print(f"{name}: p50 {figures[name]['p50']} ms, p99 {figures[name]['p99']} ms", flush=True)
        times = []
        for _ in range(args.requests):
            i = rng.randrange(n)
            t = time.perf_counter()
            response = api.get(f"/api/v2/jobs/user{i % USERS}~job{i}")
            times.append((time.perf_counter() - t) * 1000)
            assert response.status_code == 200, response.text
        figures["detail"] = summary(times)
    return figures


async def measure_rpc(p: Platform, args: argparse.Namespace, n: int) -> dict[str, dict[str, float]]:
    assert p.nats_url is not None
    bus = await Bus.connect(p.bus_url("operator"), "bench")
    rng = random.Random(args.seed + 2)
    try:
        times = []
        for _ in range(args.requests):
            t = time.perf_counter()
            reply = await bus.request(ListJobsRequest(limit=args.page, count_total=False), JobListReply)
            times.append((time.perf_counter() - t) * 1000)
            assert len(reply.jobs) == args.page
        detail_times = []
        for _ in range(args.requests):
            i = rng.randrange(n)
            t = time.perf_counter()
            await bus.request(GetJobRequest(job_key=f"user{i % USERS}~job{i}"), JobDetailReply)
            detail_times.append((time.perf_counter() - t) * 1000)
        return {"rpc_list_default": summary(times), "rpc_detail": summary(detail_times)}
    finally:
        await bus.close()


def summary(times: list[float]) -> dict[str, float]:
    return {"p50": round(percentile(times, 0.50), 1), "p99": round(percentile(times, 0.99), 1)}


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def restart_jobs(p: Platform, db_plan: bool, timeout_s: float = 600) -> dict[str, float]:
    """Restart the jobs service over the loaded jobs; with the index, wait until its list is loaded.
    Returns the start-up figures: seconds to ready, to the index loaded, its own read/total seconds as
    logged, and the process's resident memory before and after the load."""
    child = p.children["jobs"]
    started = time.perf_counter()
    p.restart("jobs")
    ready_s = time.perf_counter() - started
    assert child.proc is not None
    figures = {"restart_ready_s": round(ready_s, 1), "rss_at_ready_mib": rss_mib(child.proc.pid)}
    if db_plan:
        return figures
    deadline = time.monotonic() + timeout_s
    pattern = re.compile(r'"msg": "job list index loaded"')
    while True:
        loaded = [line for line in child.log_path.read_text().splitlines() if pattern.search(line)]
        # The log is appended across restarts: the load of this run is the one with every job.
        done = [json.loads(line) for line in loaded if json.loads(line).get("jobs", 0) > 0]
        if done:
            break
        assert time.monotonic() < deadline, "the jobs service never loaded its list index"
        time.sleep(0.2)
    figures["index_loaded_s"] = round(time.perf_counter() - started, 1)
    figures["index_read_s"] = done[-1]["read_s"]
    figures["index_total_s"] = done[-1]["total_s"]
    figures["rss_loaded_mib"] = rss_mib(child.proc.pid)
    return figures


def section(figures: dict[str, Any]) -> str:
    """The RESULTS.md section of a run."""
    lat = figures["latency_ms"]
    over = [name for name, v in lat.items() if v["p99"] >= 50]
    start = figures["startup"]
    plan = (
        "every list from the database plan (`PAI_JOBS_LIST_INDEX=0`)"
        if figures["db_plan"]
        else "lists from the in-memory index of each jobs-service process (`pai_jobs.list_index`,"
        " kept current by `update_seq` changes, `pai_jobs.list_sync`)"
    )
    startup = (
        f"Jobs service restarted over the {figures['jobs']:,} jobs: ready (RPCs answered, by the database"
        f" plan) after {start['restart_ready_s']} s"
        + (
            ""
            if figures["db_plan"]
            else f"; its in-memory list loaded {start['index_loaded_s']} s after the restart (reading and"
            f" applying the entries {start['index_read_s']} s, then sorting every order; load total"
            f" {start['index_total_s']} s). Resident memory of the jobs process: {start['rss_at_ready_mib']}"
            f" MiB at ready, {start['rss_loaded_mib']} MiB with the index loaded."
        )
    )
    lines = [
        "",
        f"## Job API: every order and keyword search with {figures['jobs']:,} jobs"
        f" ({dt.date.today().isoformat()}, `benchmarks/job_api.py`)",
        "",
        f"Machine: {describe()} (2 cores, 24 GiB, no GPU, shared with other work). Embedded platform"
        f" (SecantusDB MongoDB-wire server), loopback HTTP through the gateway, one request at a time,"
        f" {figures['requests']} requests per figure, pages of {figures['page']}; {plan}."
        f" {figures['jobs']:,} jobs loaded in {figures['load_s']} s. Target: p99 < 50 ms for a page.",
        "",
        startup,
        "",
        "| request | p50 (ms) | p99 (ms) |",
        "|---|---|---|",
        *(f"| {name} | {v['p50']} | {v['p99']} |" for name, v in lat.items()),
        "",
        f"Pages over the target at p99: {', '.join(over) or 'none'}.",
        "",
    ]
    return "\n".join(lines)


def record(figures: dict[str, Any]) -> None:
    with RESULTS_FILE.open("a") as f:
        f.write(section(figures))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--page", type=int, default=100)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--db-plan", action="store_true")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pai-bench-jobs-") as tmp:
        p = Platform(
            data_dir=Path(tmp),
            nodes=1,
            gpus_per_node=1,
            port=0,
            extra_env={
                "PAI_ADMIN_PASSWORD": PASSWORD,
                "PAI_RATE_LIMIT_LIST_PER_MIN": "0",
                "PAI_RATE_LIMIT_SUBMIT_PER_HOUR": "0",
                # The database plan's other orders may take longer than the gateway's default 5 s.
                "PAI_RPC_TIMEOUT_S": "120",
                "PAI_JOBS_LIST_INDEX": "0" if args.db_plan else "1",
            },
        )
        p.start()
        try:
            # The jobs database's own server (pai up may give it one: PAI_MONGO_SPLIT).
            load_s = load(p.mongo_urls["jobs"], args.jobs, args.seed)
            print(f"loaded {args.jobs} jobs in {load_s:.1f} s", flush=True)
            startup = restart_jobs(p, args.db_plan)
            print(f"jobs service start-up: {startup}", flush=True)
            latency = measure_http(p, args, args.jobs)
            latency.update(asyncio.run(measure_rpc(p, args, args.jobs)))
        finally:
            p.stop()
    figures: dict[str, Any] = {
        "jobs": args.jobs,
        "requests": args.requests,
        "page": args.page,
        "db_plan": args.db_plan,
        "load_s": round(load_s, 1),
        "startup": startup,
        "latency_ms": latency,
        "machine": machine(),
    }
    for name, value in latency.items():
        print(f"{name}: p50 {value['p50']} ms, p99 {value['p99']} ms")
    if args.record:
        record(figures)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
