"""Load phases against a running embedded platform: submit trivial jobs over HTTP, wait until every one is
final, and keep the raw outcome of each job and each request, with the platform's CPU over the phase.

Used by ``vs_slurm.py`` and ``scale.py``. Every figure is computed from the raw outcomes kept here
(``PhaseResult.raw()``), so a reader can recompute it: the client's own clock for HTTP round trips, the
server's timestamps (``submissionTime``, ``launchedTime``, ``completedTime``, ms) for the job's path.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
from e2e import FINAL_STATES, JOB_TEMPLATE, percentile
from proc_stats import delta, load_average, snapshot

# What the raw outcomes keep of a job's row: its state and the server's timestamps (ms).
ROW_FIELDS = ("name", "state", "submissionTime", "launchedTime", "completedTime")


def rnd(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def peak_overlap(intervals: Sequence[tuple[float, float]]) -> int:
    """The most intervals open at one instant (a job counts as running from launch to completion)."""
    points = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    best = now = 0
    for _, step in points:
        now += step
        best = max(best, now)
    return best


@dataclass
class Request:
    name: str
    latency_ms: float | None = None
    # The HTTP status (None: no answer, or not HTTP); accepted: the job exists (202, sbatch's job id).
    status: int | None = None
    accepted: bool = False
    error: str | None = None


@dataclass
class PhaseResult:
    system: str
    label: str
    jobs: int
    concurrency: int
    requests: list[Request] = field(default_factory=list)
    # name -> the job's row as the list API returned it last (state and server timestamps).
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    submit_wall_s: float | None = None
    # From the first request sent until the client saw every accepted job final.
    wall_s: float | None = None
    cpu_s: dict[str, float] = field(default_factory=dict)
    # Database round trips and bus messages over the phase (bus_db_counts), load-independent.
    counts: dict[str, float] = field(default_factory=dict)
    rss_mib: float | None = None
    load_before: str = ""
    load_after: str = ""
    timed_out: bool = False
    capacity: int | None = None

    def raw(self) -> dict[str, Any]:
        return asdict(self)

    def figures(self) -> dict[str, Any]:
        accepted = [r for r in self.requests if r.accepted]
        statuses: dict[str, int] = {}
        for r in self.requests:
            key = str(r.status) if r.status is not None else ("ok" if r.accepted else "no answer")
            statuses[key] = statuses.get(key, 0) + 1
        server_errors = sum(1 for r in self.requests if r.status is not None and r.status >= 500)
        no_answer = sum(1 for r in self.requests if r.status is None and not r.accepted)
        submit_ms = [r.latency_ms for r in accepted if r.latency_ms is not None]
        rows = [self.rows[r.name] for r in accepted if r.name in self.rows]
        final = [j for j in rows if j.get("state") in FINAL_STATES]
        # Answered with an error, yet created: an untrue answer, and a job that costs like any other.
        refused_created = [n for n in self.rows if n not in {r.name for r in accepted}]
        all_final = [j for j in self.rows.values() if j.get("state") in FINAL_STATES]

        def stamps(key_from: str, key_to: str) -> list[float]:
            return [
                float(j[key_to] - j[key_from])
                for j in rows
                if j.get(key_to) is not None and j.get(key_from) is not None
            ]

        to_running = stamps("submissionTime", "launchedTime")
        to_completed = stamps("submissionTime", "completedTime")
        first = min((j["submissionTime"] for j in final if j.get("submissionTime")), default=None)
        last = max((j["completedTime"] for j in final if j.get("completedTime")), default=None)
        span_s = (last - first) / 1000.0 if first is not None and last is not None and last > first else None
        running = [
            (float(j["launchedTime"]), float(j["completedTime"]))
            for j in final
            if j.get("launchedTime") is not None and j.get("completedTime") is not None
        ]
        cpu_total = sum(self.cpu_s.values())
        ok = sum(1 for j in final if j.get("state") == "SUCCEEDED")
        return {
            "system": self.system,
            "phase": self.label,
            "jobs": self.jobs,
            "concurrency": self.concurrency,
            "accepted": len(accepted),
            "statuses": statuses,
            "server_errors_5xx": server_errors,
            "no_answer": no_answer,
            "succeeded": ok,
            "not_succeeded": len(accepted) - ok,
            "submit_wall_s": rnd(self.submit_wall_s, 2),
            "submit_per_s": rnd(len(accepted) / self.submit_wall_s, 1) if self.submit_wall_s else None,
            "submit_ms_p50": rnd(percentile(submit_ms, 50)),
            "submit_ms_p99": rnd(percentile(submit_ms, 99)),
            "e2e_span_s": rnd(span_s, 2),
            "jobs_per_s": rnd(len(final) / span_s, 2) if span_s else None,
            "wall_s": rnd(self.wall_s, 2),
            "jobs_per_s_wall": rnd(len(final) / self.wall_s, 2) if self.wall_s else None,
            "submit_to_running_ms_p50": rnd(percentile(to_running, 50)),
            "submit_to_running_ms_p99": rnd(percentile(to_running, 99)),
            "submit_to_completed_ms_p50": rnd(percentile(to_completed, 50)),
            "submit_to_completed_ms_p99": rnd(percentile(to_completed, 99)),
            "peak_running": peak_overlap(running) if running else None,
            "capacity": self.capacity,
            "cpu_s": rnd(cpu_total, 2),
            "refused_but_created": len(refused_created),
            "cpu_ms_per_job": rnd(1000.0 * cpu_total / len(all_final), 1) if all_final else None,
            "cpu_share": {
                name: round(100.0 * v / cpu_total, 1)
                for name, v in sorted(self.cpu_s.items(), key=lambda kv: -kv[1])
                if cpu_total > 0 and v > 0
            },
            "per_job": {
                k: round(v / len(all_final), 2) for k, v in sorted(self.counts.items()) if all_final and v > 0
            },
            "rss_mib": self.rss_mib,
            "load_before": self.load_before,
            "load_after": self.load_after,
            "timed_out": self.timed_out,
        }


def submit_jobs(
    client: httpx.Client, names: Sequence[str], concurrency: int, body: Callable[[str], str]
) -> list[Request]:
    """POST one job per name, ``concurrency`` in flight (one connection each), each round trip timed."""
    requests = [Request(n) for n in names]
    stop = threading.Event()

    def one(req: Request) -> None:
        if stop.is_set():
            req.error = "not sent"
            return
        started = time.perf_counter()
        try:
            response = client.post(
                "/api/v2/jobs", content=body(req.name), headers={"Content-Type": "text/yaml"}
            )
        except httpx.HTTPError as exc:
            req.error = f"{type(exc).__name__}: {exc}"
            return
        finally:
            req.latency_ms = (time.perf_counter() - started) * 1000.0
        req.status = response.status_code
        req.accepted = response.status_code == 202
        if response.status_code >= 300:
            req.error = response.text[:300]

    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="submit") as pool:
        try:
            list(pool.map(one, requests))
        except BaseException:
            stop.set()
            raise
    return requests


def wait_final(
    client: httpx.Client,
    user: str,
    names: set[str],
    rows: dict[str, dict[str, Any]],
    timeout_s: float,
    poll_interval_s: float,
    alive: Callable[[], list[str]],
    sent: set[str] | None = None,
) -> bool:
    """One list call per poll until every named job is final, and every job of ``sent`` the list shows
    (refused, yet created); False at the deadline."""
    watched = names | (sent or set())
    deadline = time.monotonic() + timeout_s
    last_report = time.monotonic()
    while True:
        try:
            # Newest first (the default order): this phase's jobs come before any earlier phase's.
            response = client.get(
                "/api/v2/jobs",
                params={"username": user, "limit": str(len(watched) + 50)},
                timeout=30.0,
            )
            response.raise_for_status()
            body = response.json()
            for job in body["data"] if isinstance(body, dict) else body:
                if job.get("name") in watched:
                    rows[job["name"]] = {k: job.get(k) for k in ROW_FIELDS}
        except httpx.HTTPError as exc:
            print(f"  list call failed: {type(exc).__name__}: {exc}", flush=True)
        done = sum(1 for n in names if rows.get(n, {}).get("state") in FINAL_STATES)
        # Jobs refused with an error that exist all the same are waited for too (they cost the same).
        seen_open = any(row.get("state") not in FINAL_STATES for row in rows.values())
        if done == len(names) and not seen_open:
            return True
        dead = alive()
        if dead:
            raise RuntimeError(f"platform processes exited during the run: {', '.join(dead)}")
        if time.monotonic() > deadline:
            return False
        if time.monotonic() - last_report > 10:
            last_report = time.monotonic()
            print(f"  {done}/{len(names)} final", flush=True)
        time.sleep(poll_interval_s)


def platform_phase(
    client: httpx.Client,
    *,
    label: str,
    run_id: str,
    jobs: int,
    concurrency: int,
    pids: Callable[[], Mapping[str, int]],
    alive: Callable[[], list[str]],
    rss_mib: Callable[[], float],
    user: str,
    capacity: int,
    timeout_s: float = 600.0,
    poll_interval_s: float = 0.5,
    gpu: int = 0,
    vc: str = "default",
    counts: Callable[[], dict[str, float]] | None = None,
) -> PhaseResult:
    result = PhaseResult("platform", label, jobs, concurrency, capacity=capacity)
    names = [f"{run_id}-{label}-{i:05d}" for i in range(jobs)]
    result.load_before = load_average()
    counted = counts() if counts is not None else {}
    before = snapshot(pids())
    started = time.monotonic()
    result.requests = submit_jobs(
        client, names, concurrency, lambda n: JOB_TEMPLATE.format(name=n, gpu=gpu, vc=vc)
    )
    result.submit_wall_s = time.monotonic() - started
    accepted = {r.name for r in result.requests if r.accepted}
    sent = {r.name for r in result.requests if r.status is not None or r.latency_ms is not None}
    finished = wait_final(client, user, accepted, result.rows, timeout_s, poll_interval_s, alive, sent)
    if finished:
        result.wall_s = time.monotonic() - started
    result.timed_out = not finished
    result.cpu_s = delta(before, snapshot(pids()))
    if counts is not None:
        result.counts = delta(counted, counts())
    result.rss_mib = round(rss_mib(), 1)
    result.load_after = load_average()
    return result
