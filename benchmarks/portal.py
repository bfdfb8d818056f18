"""Portal benchmark: how long the web portal takes to answer its pages with 10,000 jobs in the list.

Starts the embedded platform (as ``pai up``: the portal behind the gateway's origin), loads ``--jobs``
jobs into the jobs service's database the way ``job_api.py`` does (and restarts the jobs service over
them), signs in through the portal's sign-in form like a browser, then requests each page below one after
another over loopback HTTP, through the gateway's relay, and times the whole answer (status 200, body
read) client-side:

- ``jobs_default``: the job list, first page (20 jobs, newest first) with its total count;
- ``jobs_100``: 100 jobs a page; ``jobs_sorted``: ordered by state; ``jobs_filtered``: one user's jobs;
  ``jobs_keyword``: a keyword search; ``jobs_deep``: page 100;
- ``job_detail``: a random job's page (detail, events, attempts, config: four API calls);
- ``home``: the home page (my jobs per state and everyone's, in one ``GET /api/v2/jobs/counts``
  each; the user, the virtual clusters, my latest jobs and the node list: six API calls at once).

The target: p95 ≤ 150 ms for the job list pages with 10,000 jobs. Prints p50/p95/p99 per page, then one
JSON object on the last line; ``--record`` appends a section to RESULTS.md with the machine and its load.

Run: ``python benchmarks/portal.py [--jobs 10000] [--requests 200] [--record]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from job_api import PASSWORD, USERS, load, percentile, restart_jobs
from machine import describe, machine

from pai_cli.platform import Platform

RESULTS_FILE = Path(__file__).resolve().parent / "RESULTS.md"
TARGET_P95_MS = 150.0
LIST_PAGES = {
    "jobs_default": "/jobs",
    "jobs_100": "/jobs?size=100",
    "jobs_sorted": "/jobs?order=state&dir=ASC",
    "jobs_filtered": "/jobs?user=user7",
    "jobs_keyword": "/jobs?keyword=job99",
    "jobs_deep": "/jobs?page=100",
}


def sign_in(client: httpx.Client) -> None:
    form = client.get("/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert csrf, "no CSRF token on the sign-in page"
    done = client.post(
        "/login", data={"username": "admin", "password": PASSWORD, "csrf_token": csrf.group(1)}
    )
    assert done.status_code == 303, done.text
    assert client.get("/").status_code == 200


def timed(client: httpx.Client, path: str) -> float:
    started = time.perf_counter()
    response = client.get(path)
    _ = response.content
    elapsed = (time.perf_counter() - started) * 1000
    assert response.status_code == 200, f"{path}: {response.status_code} {response.text[:300]}"
    return elapsed


def figures_of(times: list[float]) -> dict[str, float]:
    return {q: round(percentile(times, v), 1) for q, v in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))}


def measure(url: str, requests: int, jobs: int, seed: int) -> dict[str, dict[str, float]]:
    rng = random.Random(seed)
    out: dict[str, dict[str, float]] = {}
    with httpx.Client(base_url=url, timeout=120, follow_redirects=False) as client:
        sign_in(client)
        listed = client.get("/jobs")
        total = re.search(r'<span id="job-total">(\d+)</span>', listed.text)
        assert total and int(total.group(1)) >= jobs, "the job list does not show the loaded jobs"
        pages = {**LIST_PAGES, "home": "/"}
        for name, path in pages.items():
            timed(client, path)  # one warm-up request per page
            out[name] = figures_of([timed(client, path) for _ in range(requests)])
            print(f"{name}: {out[name]}", flush=True)
        detail = []
        for _ in range(requests):
            i = rng.randrange(jobs)
            detail.append(timed(client, f"/jobs/user{i % USERS}~job{i}"))
        out["job_detail"] = figures_of(detail)
        print(f"job_detail: {out['job_detail']}", flush=True)
    return out


def section(figures: dict[str, Any]) -> str:
    lat = figures["latency_ms"]
    over = [name for name in LIST_PAGES if lat[name]["p95"] > TARGET_P95_MS]
    lines = [
        f"## {figures['when']} — portal pages, {figures['jobs']:,} jobs",
        "",
        f"Command: `python benchmarks/portal.py --jobs {figures['jobs']} --requests {figures['requests']}"
        " --record`",
        "",
        f"Machine: {figures['machine_line']}. Load before the run (`uptime`): {figures['load_before']};"
        f" after: {figures['load_after']}.",
        "",
        "Each page requested one after another through the gateway's origin (browser → gateway → portal →"
        " REST API → jobs service), signed in with the portal's session cookie; times are the whole answer,"
        " client-side.",
        "",
        "| page | p50 | p95 | p99 |",
        "|---|---|---|---|",
        *[f"| {name} | {v['p50']} ms | {v['p95']} ms | {v['p99']} ms |" for name, v in lat.items()],
        "",
        f"Job list pages over the {TARGET_P95_MS:g} ms p95 target: {', '.join(over) or 'none'}.",
        "",
    ]
    return "\n".join(lines)


def load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="pai-bench-portal-") as tmp:
        p = Platform(
            data_dir=Path(tmp),
            nodes=1,
            gpus_per_node=1,
            port=0,
            extra_env={
                "PAI_ADMIN_PASSWORD": PASSWORD,
                "PAI_RATE_LIMIT_LIST_PER_MIN": "0",
                "PAI_RATE_LIMIT_SUBMIT_PER_HOUR": "0",
            },
        )
        p.start()
        try:
            assert p.mongo_url is not None
            load_s = load(p.mongo_url, args.jobs, args.seed)
            print(f"loaded {args.jobs} jobs in {load_s:.1f} s", flush=True)
            print(f"jobs service start-up: {restart_jobs(p, db_plan=False)}", flush=True)
            latency = measure(p.url, args.requests, args.jobs, args.seed)
        finally:
            p.stop()
    figures: dict[str, Any] = {
        "when": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "jobs": args.jobs,
        "requests": args.requests,
        "latency_ms": latency,
        "machine": machine(),
        "machine_line": describe(),
        "load_before": load_before,
        "load_after": load_average(),
    }
    if args.record:
        with RESULTS_FILE.open("a") as f:
            f.write("\n" + section(figures))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
