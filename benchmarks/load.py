"""Load on `pai up`: submissions as fast as N clients can, many jobs in the system, many live streams; the
answers must be true (202 if and only if the job exists) and their latencies are reported.

1. ``--jobs`` submissions (default 1,000) from ``--clients`` threads (default 64), each a one-task CPU job.
   Every answer is recorded; afterwards each job's existence is read back: a 202 whose job does not exist,
   or a refusal (an answer but 202) whose job exists, is an untrue answer; a submission the client got no
   answer to within its 60 s (status 0) is no answer, and whether its job exists is counted apart.
2. ``--fill`` jobs in the system (default 0; the issue's figure is 10,000): more submissions, 1,000 at a
   time and each answer read back as above, until the list counts that many (the rate and latency of each
   thousand: the curve); the latency of listing and of one job's detail; then every job is waited for
   until it ended (or nothing moved for 5 minutes), and the jobs that did not end are counted.
3. ``--streams`` live job streams (default 100) open at once on running jobs: the time each takes to
   deliver its first event, and that every one ends with its job.

    python benchmarks/load.py --jobs 1000 --clients 64 --streams 100 [--fill 10000] [--record]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from machine import describe  # noqa: E402

from tests.acceptance.harness import RunningPlatform, start_platform, stop_platform  # noqa: E402

YAML = {"Content-Type": "text/yaml"}


def job(name: str, command: str = "true") -> str:
    return f"""protocolVersion: 2
name: {name}
type: job
prerequisites:
  - {{type: dockerimage, uri: "python:3.11-slim", name: image}}
taskRoles:
  main:
    instances: 1
    dockerImage: image
    resourcePerInstance: {{gpu: 0, cpu: 1, memoryMB: 128}}
    commands: [{json.dumps(command)}]
"""


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))] if ordered else 0.0


def burst(platform: RunningPlatform, token: str, count: int, clients: int, tag: str) -> dict[str, Any]:
    names = [f"{tag}{i}" for i in range(count)]
    answers: dict[str, tuple[int, float]] = {}
    local = threading.local()

    def one(name: str) -> None:
        if not hasattr(local, "client"):
            local.client = httpx.Client(
                base_url=platform.url, timeout=60, headers={"Authorization": f"Bearer {token}"}
            )
        started = time.perf_counter()
        try:
            status = local.client.post("/api/v2/jobs", content=job(name), headers=YAML).status_code
        except httpx.TransportError:
            status = 0
        answers[name] = (status, (time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, names))
    wall = time.perf_counter() - started
    untrue = []
    # No answer within the client's timeout (status 0) is not an answer: whether the job exists then is
    # counted apart (the gateway may still have answered 202 after the client left).
    unanswered_exists = 0
    with httpx.Client(base_url=platform.url, timeout=60, headers={"Authorization": f"Bearer {token}"}) as c:
        for name, (status, _) in answers.items():
            exists = c.get(f"/api/v2/jobs/{platform.admin_user}~{name}").status_code == 200
            if status == 0:
                unanswered_exists += exists
            elif exists != (status == 202):
                untrue.append(f"{name}: answered {status}, exists {exists}")
    by_status: dict[str, int] = {}
    for status, _ in answers.values():
        by_status[str(status)] = by_status.get(str(status), 0) + 1
    accepted = [ms for status, ms in answers.values() if status == 202]
    return {
        "submissions": count,
        "clients": clients,
        "answers": by_status,
        "untrue_answers": len(untrue),
        "untrue_examples": untrue[:5],
        "unanswered_job_exists": unanswered_exists,
        "accepted_per_s": round(len(accepted) / wall, 1),
        "submit_ms_p50": round(pct(accepted, 50), 1),
        "submit_ms_p95": round(pct(accepted, 95), 1),
        "submit_ms_p99": round(pct(accepted, 99), 1),
    }


FILL_CHUNK = 1000
SETTLE_STALL_S = 300.0
ENDED = ("SUCCEEDED", "FAILED", "STOPPED")


def fill(platform: RunningPlatform, token: str, total: int, clients: int) -> dict[str, Any]:
    """Submit until ``total`` jobs are in the system, a chunk at a time, each chunk's answers read back.

    The chunks give the curve the scale target asks for (does a submission cost more as jobs accumulate?);
    then every job is waited for until it ended, so that none was lost on the way.
    """
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=platform.url, timeout=60, headers=headers) as c:
        have = int(c.get("/api/v2/jobs", params={"withTotalCount": "true", "limit": 1}).json()["totalCount"])
    curve: list[dict[str, Any]] = []
    answers: dict[str, int] = {}
    untrue, unanswered_exists = 0, 0
    started = time.perf_counter()
    while have < total:
        n = min(FILL_CHUNK, total - have)
        part = burst(platform, token, n, clients, f"fill{uuid.uuid4().hex[:4]}")
        have += n
        for status, count in part["answers"].items():
            answers[status] = answers.get(status, 0) + count
        untrue += part["untrue_answers"]
        unanswered_exists += part["unanswered_job_exists"]
        point = {
            "submitted": have,
            "accepted_per_s": part["accepted_per_s"],
            "submit_ms_p50": part["submit_ms_p50"],
            "submit_ms_p99": part["submit_ms_p99"],
            "untrue": part["untrue_answers"],
            "at_s": round(time.perf_counter() - started, 1),
        }
        curve.append(point)
        print(json.dumps({"fill": point}), file=sys.stderr, flush=True)
    list_ms, detail_ms = [], []
    with httpx.Client(base_url=platform.url, timeout=60, headers=headers) as c:
        count = int(c.get("/api/v2/jobs", params={"withTotalCount": "true", "limit": 1}).json()["totalCount"])
        # Without withTotalCount the list is a bare array (OpenPAI's shape); with it, {"data": [...]}.
        first = c.get("/api/v2/jobs", params={"limit": 1}).json()
        rows = first if isinstance(first, list) else first.get("data", [])
        key = f"{rows[0]['username']}~{rows[0]['name']}" if rows else ""
        for _ in range(50):
            t = time.perf_counter()
            c.get("/api/v2/jobs", params={"limit": 20, "offset": 0, "withTotalCount": "true"})
            list_ms.append((time.perf_counter() - t) * 1000)
            if key:
                t = time.perf_counter()
                c.get(f"/api/v2/jobs/{key}")
                detail_ms.append((time.perf_counter() - t) * 1000)
        states, settle_s = settle(c, count)
    return {
        "jobs_in_system": count,
        "answers": answers,
        "untrue_answers": untrue,
        "unanswered_job_exists": unanswered_exists,
        "curve": curve,
        "list_ms_p50": round(pct(list_ms, 50), 1),
        "list_ms_p95": round(pct(list_ms, 95), 1),
        "detail_ms_p50": round(pct(detail_ms, 50), 1),
        "end_states": states,
        "not_ended": count - sum(states.get(s, 0) for s in ENDED),
        "all_ended_after_s": settle_s,
    }


def settle(c: httpx.Client, count: int) -> tuple[dict[str, int], float | None]:
    """Wait until every job ended, or nothing moved for SETTLE_STALL_S; the states, and when all ended."""
    started = time.perf_counter()
    last, moved = -1, time.perf_counter()
    while True:
        states = c.get("/api/v2/jobs/counts").json()["states"]
        ended = sum(states.get(s, 0) for s in ENDED)
        if ended >= count:
            return states, round(time.perf_counter() - started, 1)
        if ended != last:
            last, moved = ended, time.perf_counter()
            print(json.dumps({"settle": states}), file=sys.stderr, flush=True)
        elif time.perf_counter() - moved > SETTLE_STALL_S:
            return states, None
        time.sleep(5)


def streams(platform: RunningPlatform, token: str, count: int) -> dict[str, Any]:
    tag = f"stream{uuid.uuid4().hex[:4]}"
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=platform.url, timeout=60, headers=headers) as c:
        for i in range(count):
            assert (
                c.post("/api/v2/jobs", content=job(f"{tag}{i}", "sleep 20"), headers=YAML).status_code == 202
            )
    first_ms: list[float] = []
    ended: list[str] = []
    lock = threading.Lock()

    def follow(i: int) -> None:
        key = f"{platform.admin_user}~{tag}{i}"
        started = time.perf_counter()
        with httpx.Client(base_url=platform.url, headers=headers, timeout=httpx.Timeout(60, read=900)) as c:
            with c.stream("GET", f"/api/v2/jobs/{key}/stream") as stream:
                seen_first = False
                event = ""
                for line in stream.iter_lines():
                    if line.startswith("data:") and not seen_first:
                        seen_first = True
                        with lock:
                            first_ms.append((time.perf_counter() - started) * 1000)
                    if line.startswith("event:"):
                        event = line.split(":", 1)[1].strip()
                    elif line.startswith("data:") and event == "end":
                        with lock:
                            ended.append(key)
                        return

    threads = [threading.Thread(target=follow, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(1200)
    return {
        "streams": count,
        "streams_ended_with_their_job": len(ended),
        "first_event_ms_p50": round(pct(first_ms, 50), 1),
        "first_event_ms_p95": round(pct(first_ms, 95), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--fill", type=int, default=0)
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    load = os.getloadavg()
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="pai-load-") as tmp:
        # Per-user limits off: the load is one user's, far past what a person sends (OpenPAI's are per user).
        env = {"PAI_RATE_LIMIT_SUBMIT_PER_HOUR": "0", "PAI_RATE_LIMIT_LIST_PER_MIN": "0"}
        platform = start_platform(Path(tmp) / "pai", nodes=2, gpus_per_node=4, env=env)
        try:
            token = platform.admin_token
            figures["burst"] = burst(platform, token, args.jobs, args.clients, f"load{uuid.uuid4().hex[:4]}")
            print(json.dumps(figures["burst"]), file=sys.stderr, flush=True)
            if args.streams:
                figures["streams"] = streams(platform, token, args.streams)
                print(json.dumps(figures["streams"]), file=sys.stderr, flush=True)
            if args.fill:
                figures["fill"] = fill(platform, token, args.fill, args.clients)
        finally:
            stop_platform(platform.proc, grace_s=120)
    print(json.dumps(figures))
    if args.record:
        after = os.getloadavg()
        now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        rows = [
            f"| {section}.{k} | {v} |"
            for section, values in figures.items()
            for k, v in values.items()
            if k != "curve"
        ]
        curve = figures.get("fill", {}).get("curve", [])
        if curve:
            rows.append(
                "\n\nThe fill, a thousand at a time:\n\n| jobs submitted | accepted/s | submit p50 (ms)"
                " | submit p99 (ms) | untrue answers | at (s) |\n|---|---|---|---|---|---|"
            )
            rows += [
                f"| {p['submitted']} | {p['accepted_per_s']} | {p['submit_ms_p50']} | {p['submit_ms_p99']} |"
                f" {p['untrue']} | {p['at_s']} |"
                for p in curve
            ]
        with open(ROOT / "benchmarks" / "RESULTS.md", "a") as f:
            f.write(
                f"\n## {now} — load: submissions, jobs in the system, live streams\n\nMachine: {describe()};"
                f" load average {load[0]:.1f} before, {after[0]:.1f} after (shared with other engineers'"
                " runs)."
                f"\nCommand: `python benchmarks/load.py {' '.join(sys.argv[1:])}`\n\n| figure | value |\n"
                "|---|---|\n" + "\n".join(rows) + "\n"
            )


if __name__ == "__main__":
    main()
