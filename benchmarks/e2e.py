"""End-to-end benchmark of the embedded platform: `pai up` time-to-ready, then job throughput and latency.

Starts the whole platform on this machine (NATS, the MongoDB-wire server, every service, N runtime
agents) exactly as ``pai up`` does, through :class:`pai_cli.platform.Platform`, then submits ``--jobs``
trivial jobs (one task running ``true``) through the REST API v2 at ``--concurrency`` and polls the job
list until every job is final. All traffic is on the loopback interface.

Prints, then one JSON object on the last line:

- ``startup_s``: wall time of ``Platform.start`` (processes spawned until every service reports ready);
- ``jobs_per_s``: completed jobs / (last completedTime - first submissionTime), server timestamps;
- ``submit_ms`` p50/p99: the HTTP round trip of ``POST /api/v2/jobs``, measured by the client;
- ``submit_to_running_ms`` p50/p99: launchedTime - submissionTime, server timestamps;
- ``submit_to_completed_ms`` p50/p99: completedTime - submissionTime, server timestamps;
- ``failures``: jobs that did not succeed: refused, ended other than SUCCEEDED, not final at the deadline,
  or never sent (the platform did not start, or the deadline passed first);
- ``rss_mib``: resident memory of every platform process (servers included) after the run.

``--record`` appends a dated section with the machine and the figures to ``benchmarks/RESULTS.md``.

Run: ``python benchmarks/e2e.py --jobs 100 --concurrency 8 [--record]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import shlex
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from machine import machine

from pai_cli.platform import Platform, PlatformError

FINAL_STATES = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})
RESULTS_FILE = Path(__file__).resolve().parent / "RESULTS.md"
JOB_TEMPLATE = """\
protocolVersion: 2
name: {name}
type: job
jobRetryCount: 0
taskRoles:
  main:
    instances: 1
    resourcePerInstance: {{gpu: {gpu}, cpu: 1, memoryMB: 256}}
    commands:
      - 'true'
defaults:
  virtualCluster: {vc}
"""


# ---- figures -----------------------------------------------------------------------------------------


def percentile(values: Sequence[float], pct: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


@dataclass
class Submission:
    name: str
    latency_ms: float | None = None
    status: int | None = None
    error: str | None = None

    sent: bool = False

    @property
    def accepted(self) -> bool:
        return self.status == 202


@dataclass
class Run:
    args: argparse.Namespace
    run_id: str
    startup_s: float | None = None
    submissions: list[Submission] = field(default_factory=list)
    submit_wall_s: float | None = None
    final: dict[str, dict[str, Any]] = field(default_factory=dict)
    pending: dict[str, dict[str, Any]] = field(default_factory=dict)
    polls: int = 0
    poll_ms: list[float] = field(default_factory=list)
    rss_bytes: int | None = None
    timed_out: bool = False
    dead_services: list[str] = field(default_factory=list)
    error: str | None = None

    def figures(self) -> dict[str, Any]:
        accepted = [s for s in self.submissions if s.accepted]
        refused = [s for s in self.submissions if not s.accepted and s.sent]
        not_sent = self.args.jobs - len(accepted) - len(refused)
        submit_ms = [s.latency_ms for s in accepted if s.latency_ms is not None]
        jobs = list(self.final.values())
        # Jobs still running at a deadline have launched too: count them for submit-to-running.
        to_running = [
            float(j["launchedTime"] - j["submissionTime"])
            for j in [*jobs, *self.pending.values()]
            if j.get("launchedTime") is not None and j.get("submissionTime") is not None
        ]
        to_completed = [
            float(j["completedTime"] - j["submissionTime"])
            for j in jobs
            if j.get("completedTime") is not None and j.get("submissionTime") is not None
        ]
        succeeded = sum(1 for j in jobs if j.get("state") == "SUCCEEDED")
        ended_badly = [j["name"] for j in jobs if j.get("state") != "SUCCEEDED"]
        not_final = len(accepted) - len(jobs)
        first_submission = min((j["submissionTime"] for j in jobs if j.get("submissionTime")), default=None)
        last_completion = max((j["completedTime"] for j in jobs if j.get("completedTime")), default=None)
        jobs_per_s = None
        span_s = None
        if (
            first_submission is not None
            and last_completion is not None
            and last_completion > first_submission
        ):
            span_s = (last_completion - first_submission) / 1000.0
            jobs_per_s = len(jobs) / span_s
        return {
            "run_id": self.run_id,
            "jobs": self.args.jobs,
            "concurrency": self.args.concurrency,
            "nodes": self.args.nodes,
            "gpus_per_node": self.args.gpus_per_node,
            "gpu_per_job": self.args.gpu,
            "startup_s": _round(self.startup_s, 2),
            "submitted": len(accepted),
            "submit_refused": len(refused),
            "succeeded": succeeded,
            "failed_jobs": len(ended_badly),
            "not_final": not_final,
            "not_sent": not_sent,
            "failures": len(refused) + len(ended_badly) + not_final + not_sent,
            "submit_wall_s": _round(self.submit_wall_s, 2),
            "submit_per_s": _round(len(accepted) / self.submit_wall_s, 1)
            if self.submit_wall_s and accepted
            else None,
            "e2e_span_s": _round(span_s, 2),
            "jobs_per_s": _round(jobs_per_s, 2),
            "submit_ms_p50": _round(percentile(submit_ms, 50)),
            "submit_ms_p99": _round(percentile(submit_ms, 99)),
            "submit_to_running_ms_p50": _round(percentile(to_running, 50)),
            "submit_to_running_ms_p99": _round(percentile(to_running, 99)),
            "submit_to_completed_ms_p50": _round(percentile(to_completed, 50)),
            "submit_to_completed_ms_p99": _round(percentile(to_completed, 99)),
            "list_polls": self.polls,
            "list_poll_ms_p50": _round(percentile(self.poll_ms, 50)),
            "rss_mib": _round(self.rss_bytes / 2**20 if self.rss_bytes is not None else None),
            "timed_out": self.timed_out,
            "dead_services": self.dead_services,
            "error": self.error,
            "failed_job_names": ended_badly[:20],
            "submit_errors": sorted({s.error or f"HTTP {s.status}" for s in refused})[:10],
        }


# ---- the HTTP side -----------------------------------------------------------------------------------


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds

    def left(self) -> float:
        return self.at - time.monotonic()

    @property
    def passed(self) -> bool:
        return self.left() <= 0


def login(client: httpx.Client, username: str, password: str) -> str:
    response = client.post("/api/v2/authn/basic/login", json={"username": username, "password": password})
    response.raise_for_status()
    return str(response.json()["token"])


def submit_all(client: httpx.Client, run: Run, deadline: Deadline) -> None:
    args = run.args
    vc = args.virtual_cluster
    stop = threading.Event()

    def submit(sub: Submission) -> None:
        if stop.is_set() or deadline.passed:
            sub.error = "not sent: deadline passed"
            return
        body = JOB_TEMPLATE.format(name=sub.name, gpu=args.gpu, vc=vc)
        started = time.perf_counter()
        sub.sent = True
        try:
            response = client.post("/api/v2/jobs", content=body, headers={"Content-Type": "text/yaml"})
        except httpx.HTTPError as exc:
            sub.error = f"{type(exc).__name__}: {exc}"
            return
        finally:
            sub.latency_ms = (time.perf_counter() - started) * 1000.0
        sub.status = response.status_code
        if response.status_code != 202:
            sub.error = f"HTTP {response.status_code}: {response.text[:200]}"

    run.submissions = [Submission(f"{run.run_id}-{i:05d}") for i in range(args.jobs)]
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.concurrency, thread_name_prefix="submit") as pool:
        try:
            list(pool.map(submit, run.submissions))
        except BaseException:
            stop.set()
            raise
    run.submit_wall_s = time.perf_counter() - started


def poll_until_final(client: httpx.Client, pai: Platform, run: Run, user: str, deadline: Deadline) -> None:
    """One list call per poll; keeps the summaries of this run's jobs, final ones in run.final."""
    wanted = {s.name for s in run.submissions if s.accepted}
    # A reused data dir may hold other jobs: ask for enough rows to see them all (the API caps at 50000).
    limit = min(50000, max(5000, 2 * len(wanted) + 1000))
    last_report = 0.0
    while wanted - run.final.keys():
        if deadline.passed:
            run.timed_out = True
            return
        dead = pai.dead_children()
        if dead:
            run.dead_services = dead
            run.error = f"platform processes exited during the run: {', '.join(dead)}"
            return
        started = time.perf_counter()
        try:
            response = client.get(
                "/api/v2/jobs",
                params={"username": user, "withTotalCount": "true", "limit": str(limit)},
                timeout=min(30.0, max(1.0, deadline.left())),
            )
            response.raise_for_status()
        except httpx.HTTPError as exc:
            print(f"  list call failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            time.sleep(min(1.0, max(0.0, deadline.left())))
            continue
        run.poll_ms.append((time.perf_counter() - started) * 1000.0)
        run.polls += 1
        body = response.json()
        rows = body["data"] if isinstance(body, dict) else body
        run.pending.clear()
        for job in rows:
            name = job.get("name")
            if name not in wanted:
                continue
            if job.get("state") in FINAL_STATES:
                run.final[name] = job
            else:
                run.pending[name] = job
        now = time.monotonic()
        if now - last_report >= 5.0:
            last_report = now
            states: dict[str, int] = {}
            for job in run.pending.values():
                states[job.get("state", "?")] = states.get(job.get("state", "?"), 0) + 1
            unseen = len(wanted) - len(run.final) - len(run.pending)
            print(
                f"  {len(run.final)}/{len(wanted)} final; pending {states or '-'}"
                + (f"; not listed yet {unseen}" if unseen else ""),
                flush=True,
            )
        if wanted - run.final.keys():
            time.sleep(min(run.args.poll_interval, max(0.0, deadline.left())))


# ---- report ------------------------------------------------------------------------------------------


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "n/a"
    return f"{value}{unit}"


def print_report(fig: dict[str, Any]) -> None:
    def pair(key: str) -> str:
        return f"p50 {_fmt(fig[key + '_p50'], ' ms')}, p99 {_fmt(fig[key + '_p99'], ' ms')}"

    jobs = f"{fig['submitted']} submitted, {fig['succeeded']} succeeded, {fig['failures']} failures"
    jobs += (
        f" (refused {fig['submit_refused']}, ended badly {fig['failed_jobs']}, not final {fig['not_final']},"
        f" not sent {fig['not_sent']})"
    )
    throughput = f"{_fmt(fig['jobs_per_s'], ' jobs/s')} over {_fmt(fig['e2e_span_s'], ' s')}"
    submit_rate = f"{_fmt(fig['submit_per_s'], ' jobs/s')} over {_fmt(fig['submit_wall_s'], ' s')}"
    polls = f"p50 {_fmt(fig['list_poll_ms_p50'], ' ms')} over {fig['list_polls']} polls"
    rows = [
        ("pai up time-to-ready", _fmt(fig["startup_s"], " s")),
        ("jobs", jobs),
        ("throughput end to end", throughput),
        ("submit rate (client)", submit_rate),
        ("submit latency (HTTP)", pair("submit_ms")),
        ("submit -> running", pair("submit_to_running_ms")),
        ("submit -> completed", pair("submit_to_completed_ms")),
        ("list poll (one call)", polls),
        ("platform RSS after the run", _fmt(fig["rss_mib"], " MiB")),
    ]
    print()
    for label, value in rows:
        print(f"{label:<28}{value}")
    if fig["timed_out"]:
        print("TIMED OUT: the figures cover only the jobs that were final at the deadline")
    if fig["error"]:
        print(f"ERROR: {fig['error']}")
    if fig["failed_job_names"]:
        print(f"jobs that ended other than SUCCEEDED: {', '.join(fig['failed_job_names'])}")
    if fig["submit_errors"]:
        print(f"submit errors: {'; '.join(fig['submit_errors'])}")


RESULTS_ROWS: tuple[tuple[str, str, str], ...] = (
    ("pai up time-to-ready", "startup_s", "s"),
    ("jobs submitted / succeeded", "", ""),
    ("failures", "failures", ""),
    ("throughput end to end", "jobs_per_s", "jobs/s"),
    ("first submission to last completion", "e2e_span_s", "s"),
    ("submit rate (client side)", "submit_per_s", "jobs/s"),
    ("submit latency p50", "submit_ms_p50", "ms"),
    ("submit latency p99", "submit_ms_p99", "ms"),
    ("submit to running p50", "submit_to_running_ms_p50", "ms"),
    ("submit to running p99", "submit_to_running_ms_p99", "ms"),
    ("submit to completed p50", "submit_to_completed_ms_p50", "ms"),
    ("submit to completed p99", "submit_to_completed_ms_p99", "ms"),
    ("job list call p50", "list_poll_ms_p50", "ms"),
    ("platform RSS after the run", "rss_mib", "MiB"),
)


def record(fig: dict[str, Any], argv: Sequence[str]) -> None:
    host = machine()
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "",
        f"## {now} — e2e, {fig['jobs']} jobs, concurrency {fig['concurrency']}",
        "",
        f"Command: `python benchmarks/e2e.py {shlex.join(argv)}`",
        "",
        f"Machine: {host['platform']}; {host['cpus']} CPUs; {_fmt(host['memory_gib'], ' GiB')} memory; "
        f"Python {host['python']}. Cluster: {fig['nodes']} nodes x {fig['gpus_per_node']} simulated GPUs, "
        f"{fig['gpu_per_job']} GPU per job.",
        "",
        "| figure | value |",
        "|---|---|",
    ]
    for label, key, unit in RESULTS_ROWS:
        if not key:
            value = f"{fig['submitted']} / {fig['succeeded']}"
        else:
            value = _fmt(fig[key], f" {unit}" if unit else "")
        lines.append(f"| {label} | {value} |")
    notes = []
    if fig["timed_out"]:
        notes.append("the run hit its deadline; the figures cover only the jobs final by then")
    if fig["error"]:
        notes.append(str(fig["error"]))
    if notes:
        lines += ["", "Notes: " + "; ".join(notes) + "."]
    if not RESULTS_FILE.exists():
        RESULTS_FILE.write_text("# Benchmark results\n")
    with RESULTS_FILE.open("a", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n")
    print(f"recorded in {RESULTS_FILE}")


# ---- main --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=50, help="number of jobs to submit (default 50)")
    parser.add_argument("--concurrency", type=int, default=8, help="submissions in flight (default 8)")
    parser.add_argument("--nodes", type=int, default=2, help="runtime agents (default 2)")
    parser.add_argument("--gpus-per-node", type=int, default=4, help="simulated GPUs per node (default 4)")
    parser.add_argument(
        "--gpu",
        type=int,
        choices=(0, 1),
        default=0,
        help="GPUs per job (default 0: jobs never queue on GPUs)",
    )
    parser.add_argument("--virtual-cluster", default="default", help="virtual cluster (default 'default')")
    parser.add_argument("--record", action="store_true", help="append the figures to benchmarks/RESULTS.md")
    parser.add_argument("--data-dir", type=Path, default=None, help="platform data dir (default: a temp dir)")
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="global deadline in seconds (default 600)"
    )
    parser.add_argument(
        "--poll-interval", type=float, default=0.5, help="seconds between list calls (default 0.5)"
    )
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.concurrency < 1 or args.nodes < 1 or args.gpus_per_node < 0:
        parser.error("--jobs, --concurrency and --nodes must be at least 1, --gpus-per-node at least 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    deadline = Deadline(args.timeout)
    temp = args.data_dir is None
    data_dir = Path(tempfile.mkdtemp(prefix="pai-bench-")) if args.data_dir is None else args.data_dir
    run = Run(args=args, run_id=f"bench-{uuid.uuid4().hex[:8]}")
    pai = Platform(data_dir=data_dir, nodes=args.nodes, gpus_per_node=args.gpus_per_node, port=0)
    print(f"data dir {data_dir} (logs under {data_dir / 'logs'})", flush=True)
    try:
        try:
            started = time.perf_counter()
            pai.start(timeout_s=max(1.0, min(180.0, deadline.left())))
            run.startup_s = time.perf_counter() - started
            print(f"platform ready at {pai.url} in {run.startup_s:.2f} s", flush=True)
            user, password = pai.admin_credentials()
            # trust_env=False: never route loopback traffic through a proxy from the environment.
            limits = httpx.Limits(
                max_connections=args.concurrency + 2, max_keepalive_connections=args.concurrency + 2
            )
            with httpx.Client(base_url=pai.url, timeout=30.0, limits=limits, trust_env=False) as client:
                token = login(client, user, password)
                client.headers["Authorization"] = f"Bearer {token}"
                print(f"submitting {args.jobs} jobs at concurrency {args.concurrency}", flush=True)
                submit_all(client, run, deadline)
                accepted = sum(1 for s in run.submissions if s.accepted)
                print(f"submitted {accepted}/{args.jobs} in {run.submit_wall_s:.2f} s; polling", flush=True)
                poll_until_final(client, pai, run, user, deadline)
            run.rss_bytes = pai.rss_bytes()
            run.dead_services = run.dead_services or pai.dead_children()
        except (PlatformError, httpx.HTTPError, OSError, KeyError, ValueError) as exc:
            run.error = f"{type(exc).__name__}: {exc}"
            run.dead_services = pai.dead_children() if pai.children else []
            if pai.children:
                run.rss_bytes = pai.rss_bytes()
        except KeyboardInterrupt:
            run.error = "interrupted"
    finally:
        pai.stop()
    fig = run.figures()
    ok = not fig["timed_out"] and not fig["error"] and fig["failures"] == 0 and not fig["dead_services"]
    if temp:
        if ok:
            shutil.rmtree(data_dir, ignore_errors=True)
        else:
            # Keep the logs of a failed run for whoever looks into it.
            print(f"kept the data dir for its logs: {data_dir / 'logs'}")
    print_report(fig)
    if args.record:
        if fig["startup_s"] is None:
            print("not recorded: the platform did not start, so there are no figures to record")
        else:
            record(fig, argv)
    print(json.dumps(fig, sort_keys=True))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
