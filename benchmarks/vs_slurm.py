"""Throughput of the embedded platform against Slurm on the same machine, in one run (issue 17).

Installs (Debian ``slurm-wlm`` and ``munge``, root) and starts a private single-node Slurm when it is
missing (``slurm_peer.py``), then runs the same number of trivial jobs through both with the same
number of concurrent submitters, alternating:

1. Slurm: ``sbatch --wrap true`` from ``--concurrency`` submitters;
2. the platform as ``pai up`` starts it (``pai_cli.platform.Platform``: NATS, the MongoDB-wire server(s),
   every service, 2 runtime agents x 4 simulated GPUs), jobs of one task running ``true`` posted over
   HTTP by ``--concurrency`` clients; then the platform is stopped;
3. Slurm again.

Then the platform is started again on the same data (a second time-to-ready) for the other targets:
``--latency-clients`` (16) concurrent submitters, then each count of ``--ramp`` (32, 64), every job
waited for before the next phase.

Figures (server timestamps for the job's path, the client's clock for round trips; nearest-rank
percentiles):

- ``jobs_per_s``: jobs / (last completion - first submission), each system's own timestamps (the
  platform's ``completedTime``/``submissionTime``; slurmctld's log at ms); the ratio platform ÷ the mean of
  the two Slurm runs; ``jobs_per_s_wall`` the same over the client's wall time (first request sent → every
  job seen final, polled every ``--poll-interval`` for both);
- ``submit_ms`` p50/p99: one HTTP ``POST /api/v2/jobs`` (202), or one ``sbatch`` call;
- ``5xx``: answers ≥ 500 in every platform phase (and requests with no answer at all);
- ``submit_to_running_ms`` p99 while the cluster has room (``peak_running`` < the slots);
- slots: how many of these jobs each side can run at once. The platform's are what its scheduler
  reports (``/api/v2/cluster/nodes``: the CPU leaves a one-core, 256 MB job needs, or one GPU leaf each
  on a cluster without CPU leaves); Slurm's node gets as many CPUs (``--slurm-cpus`` overrides), so
  both run at equal slots;
- ``cpu_ms_per_job``: CPU seconds of every process of the system (servers and reaped children — task
  supervisors, ``slurmstepd`` — included) over the phase, divided by its jobs;
- ``rss_mib``: every platform process after the phase; ``startup_s``: time to ready.

The load average (1, 5, 15 min) is printed and recorded beside every phase: the machine is shared.
``--profile DIR`` runs only the platform's main phase with py-spy attached to each Python process and
writes one flame graph (SVG) per process; its figures are not recorded (profiling costs CPU).
``--raw FILE`` (default with ``--record``: ``benchmarks/raw/vs_slurm-<time>.json``) keeps every request
and job outcome the figures come from. ``--record`` appends a section to ``RESULTS.md``.

Run: ``python benchmarks/vs_slurm.py [--jobs 200] [--concurrency 8] [--record]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from bus_db_counts import counts
from load_phases import PhaseResult, Request, platform_phase, rnd
from machine import describe
from proc_stats import delta, load_average, rss_bytes, snapshot
from slurm_peer import LocalSlurm, SlurmError, version

from pai_cli.platform import Platform, PlatformError

HERE = Path(__file__).resolve().parent
RESULTS_FILE = HERE / "RESULTS.md"
RAW_DIR = HERE / "raw"

# ---- the platform ------------------------------------------------------------------------------------


def trivial_slots(
    skus: dict[str, Any], nodes: list[dict[str, Any]], cpu: float = 1, memory_mb: int = 256
) -> int:
    """How many one-task jobs asking for ``cpu`` and ``memory_mb`` and no GPU run at once: per node, its
    CPU leaves (SKU ``gpu: 0``) divided by the leaves one needs (its cores or its memory, whichever needs
    more); where the cluster has no CPU leaves, each holds one GPU leaf."""
    cpu_skus = {name: s for name, s in skus.items() if not s.get("gpu") and not s.get("fpga")}
    if cpu_skus:
        total = 0
        for name, sku in cpu_skus.items():
            need = max(
                1,
                -(-cpu // sku["cpu"]) if sku["cpu"] else 1,
                -(-memory_mb // sku["memory"]) if sku["memory"] else 1,
            )
            total += sum(int(n["skuTypes"].get(name, 0) // need) for n in nodes)
        return total
    return sum(int(n["gpus"]["total"]) for n in nodes)


def config_slots(pai: Platform) -> int:
    """``trivial_slots`` of the cluster config ``pai up`` writes for ``pai`` (before anything starts)."""
    physical = pai.cluster_config()["physicalCluster"]
    skus = {
        name: {"gpu": s["gpu"], "cpu": s["cpu"], "memory": int(str(s["memory"]).removesuffix("Mi"))}
        for name, s in physical["skuTypes"].items()
    }
    per_node: dict[str, dict[str, Any]] = {}
    for cell in physical["physicalCells"]:
        kind = physical["cellTypes"][cell["cellType"]]
        node = per_node.setdefault(cell["cellAddress"], {"skuTypes": {}, "gpus": {"total": 0}})
        node["skuTypes"][kind["childCellType"]] = kind["childCellNumber"]
        if skus[kind["childCellType"]]["gpu"]:
            node["gpus"]["total"] += kind["childCellNumber"]
    return trivial_slots(skus, list(per_node.values()))


class RunningPlatform:
    """One start of the embedded platform, its HTTP client logged in as the admin."""

    def __init__(self, pai: Platform, concurrency: int) -> None:
        self.pai = pai
        self.concurrency = concurrency
        self.startup_s: float | None = None
        self.client: httpx.Client | None = None
        self.user = ""
        self._slots: int | None = None

    def start(self) -> None:
        started = time.perf_counter()
        self.pai.start(timeout_s=180.0)
        self.startup_s = time.perf_counter() - started
        self.user, password = self.pai.admin_credentials()
        limits = httpx.Limits(
            max_connections=self.concurrency + 4, max_keepalive_connections=self.concurrency + 4
        )
        self.client = httpx.Client(base_url=self.pai.url, timeout=30.0, limits=limits, trust_env=False)
        token = (
            self.client.post("/api/v2/authn/basic/login", json={"username": self.user, "password": password})
            .raise_for_status()
            .json()["token"]
        )
        self.client.headers["Authorization"] = f"Bearer {token}"

    def pids(self) -> dict[str, int]:
        named = {name: c.proc.pid for name, c in self.pai.children.items() if c.proc is not None}
        for server in self.pai.servers:
            named[server.name] = server.proc.pid
        return named

    def counts(self) -> dict[str, float]:
        mongo = [s.url for s in self.pai.servers if s.name.startswith("mongo")] or [self.pai.mongo_url or ""]
        # The operator's login: the embedded bus refuses a connection without credentials.
        return counts([u for u in mongo if u], self.pai.bus_url("operator") if self.pai.nats_url else None)

    def rss_mib(self) -> float:
        return self.pai.rss_bytes() / 2**20

    def capacity(self) -> int:
        """The slots a trivial job (no GPU, 1 CPU, 256 MB: ``e2e.JOB_TEMPLATE``) really has, from what the
        scheduler says of its nodes: the CPU leaves each node could give such jobs at once, or, on a
        cluster without CPU leaves, its GPU leaves (one such job holds one there)."""
        assert self.client is not None
        if self._slots is None:
            skus = self.client.get("/api/v2/cluster/sku-types").raise_for_status().json()
            nodes = self.client.get("/api/v2/cluster/nodes").raise_for_status().json()["nodes"]
            self._slots = trivial_slots(skus, nodes)
        return self._slots

    def phase(self, args: argparse.Namespace, run_id: str, label: str, clients: int) -> PhaseResult:
        assert self.client is not None
        print(
            f"platform: {label}, {args.jobs} jobs from {clients} clients (load {load_average()})", flush=True
        )
        result = platform_phase(
            self.client,
            label=label,
            run_id=run_id,
            jobs=args.jobs,
            concurrency=clients,
            pids=self.pids,
            alive=self.pai.dead_children,
            rss_mib=self.rss_mib,
            user=self.user,
            capacity=self.capacity(),
            timeout_s=args.timeout,
            poll_interval_s=args.poll_interval,
            counts=self.counts,
        )
        show(result.figures())
        return result

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
        self.pai.stop()


# ---- Slurm -------------------------------------------------------------------------------------------


def slurm_phase(slurm: LocalSlurm, args: argparse.Namespace, run_id: str, label: str) -> PhaseResult:
    print(
        f"slurm: {label}, {args.jobs} jobs from {args.concurrency} submitters (load {load_average()})",
        flush=True,
    )
    result = PhaseResult("slurm", label, args.jobs, args.concurrency, capacity=slurm.cpus)
    names = [f"{run_id}-{label}-{i:05d}" for i in range(args.jobs)]
    result.load_before = load_average()
    before = snapshot(slurm.pids())
    started = time.monotonic()
    subs = slurm.submit(names, args.concurrency)
    result.submit_wall_s = time.monotonic() - started
    result.requests = [Request(s.name, s.latency_ms, None, s.job_id is not None, s.error) for s in subs]
    ids = {s.job_id: s.name for s in subs if s.job_id is not None}
    jobs, seen = slurm.wait_done(list(ids), args.timeout, args.poll_interval)
    result.timed_out = seen is None
    if seen is not None:
        result.wall_s = seen - started
    for job_id, job in jobs.items():
        result.rows[ids[job_id]] = {
            "name": ids[job_id],
            "state": None
            if job.completed_ms is None
            else ("SUCCEEDED" if job.exit_status == 0 else "FAILED"),
            "submissionTime": job.submitted_ms,
            "launchedTime": job.started_ms,
            "completedTime": job.completed_ms,
        }
    result.cpu_s = delta(before, snapshot(slurm.pids()))
    result.rss_mib = round(sum(rss_bytes(p) for p in slurm.pids().values()) / 2**20, 1)
    result.load_after = load_average()
    show(result.figures())
    return result


# ---- profiles ----------------------------------------------------------------------------------------


class Profilers:
    """py-spy attached to every Python process of the platform; flame graphs written when stopped."""

    def __init__(self, out_dir: Path, pids: dict[str, int], rate: int) -> None:
        self.out_dir = out_dir
        self.procs: list[subprocess.Popen[bytes]] = []
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        out_dir.mkdir(parents=True, exist_ok=True)
        for name, pid in pids.items():
            if name == "nats":  # a Go binary
                continue
            argv = [
                spy, "record", "--pid", str(pid), "--rate", str(rate), "--nonblocking",
                "--format", "flamegraph", "--output", str(out_dir / f"{name}.svg"),
            ]  # fmt: skip
            log = open(out_dir / f"{name}.py-spy.log", "wb")
            self.procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT))

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in self.procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()


# ---- figures and report ------------------------------------------------------------------------------


def show(fig: dict[str, Any]) -> None:
    top = ", ".join(f"{k} {v}%" for k, v in list(fig["cpu_share"].items())[:8])
    print(
        f"  {fig['system']} {fig['phase']}: {fig['accepted']}/{fig['jobs']} accepted, "
        f"{fig['succeeded']} succeeded; {fig['jobs_per_s']} jobs/s end to end ({fig['e2e_span_s']} s), "
        f"{fig['jobs_per_s_wall']} jobs/s by the client's clock; submit p50 {fig['submit_ms_p50']} ms "
        f"p99 {fig['submit_ms_p99']} ms; submit→running p50 {fig['submit_to_running_ms_p50']} "
        f"p99 {fig['submit_to_running_ms_p99']} ms (peak running {fig['peak_running']}/{fig['capacity']}); "
        f"5xx {fig['server_errors_5xx']}, no answer {fig['no_answer']}, refused but created "
        f"{fig['refused_but_created']}; CPU {fig['cpu_s']} s = "
        f"{fig['cpu_ms_per_job']} ms/job; RSS {fig['rss_mib']} MiB; load {fig['load_before']} → "
        f"{fig['load_after']}",
        flush=True,
    )
    if top:
        print(f"  CPU by process: {top}", flush=True)
    if fig.get("per_job"):
        print(f"  per job: {', '.join(f'{k} {v}' for k, v in fig['per_job'].items())}", flush=True)


def summarise(phases: list[dict[str, Any]], startups: list[float]) -> dict[str, Any]:
    slurm = [p for p in phases if p["system"] == "slurm" and p["jobs_per_s"]]
    main = next((p for p in phases if p["system"] == "platform" and p["phase"] == "main"), None)
    platform = [p for p in phases if p["system"] == "platform"]
    lat16 = next((p for p in platform if p["phase"].startswith("clients-16")), None)
    slurm_mean = sum(p["jobs_per_s"] for p in slurm) / len(slurm) if slurm else None
    ratio = main["jobs_per_s"] / slurm_mean if main and main["jobs_per_s"] and slurm_mean else None
    wall_slurm = [p["jobs_per_s_wall"] for p in slurm if p["jobs_per_s_wall"]]
    wall_ratio = (
        main["jobs_per_s_wall"] / (sum(wall_slurm) / len(wall_slurm))
        if main and main["jobs_per_s_wall"] and wall_slurm
        else None
    )
    roomy = [
        p for p in platform if p["peak_running"] is not None and p["peak_running"] < (p["capacity"] or 0)
    ]
    to_running = max((p["submit_to_running_ms_p99"] or 0.0 for p in roomy), default=None)
    return {
        "slurm_jobs_per_s": [p["jobs_per_s"] for p in slurm],
        "platform_jobs_per_s": main["jobs_per_s"] if main else None,
        "ratio": rnd(ratio, 2),
        "ratio_wall": rnd(wall_ratio, 2),
        "submit_p99_ms_16": lat16["submit_ms_p99"] if lat16 else None,
        "submit_p50_ms_16": lat16["submit_ms_p50"] if lat16 else None,
        "server_errors": sum(p["server_errors_5xx"] + p["no_answer"] for p in platform) if platform else None,
        "max_clients": max((p["concurrency"] for p in platform), default=None),
        "to_running_p99_ms": to_running,
        "cpu_ms_per_job": main["cpu_ms_per_job"] if main else None,
        "slurm_cpu_ms_per_job": [p["cpu_ms_per_job"] for p in slurm],
        "rss_mib": max((p["rss_mib"] or 0.0 for p in platform), default=None),
        "startup_s": [round(s, 2) for s in startups],
    }


def verdicts(summary: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(target, measured, bound, met?) rows."""

    def met(ok: bool | None) -> str:
        return "n/a" if ok is None else ("met" if ok else "NOT met")

    s = summary
    startup = max(s["startup_s"]) if s["startup_s"] else None
    rows = [
        (
            "end to end ÷ Slurm (same run)",
            s["ratio"],
            "≥ 1 (goal 3)",
            s["ratio"] is not None and s["ratio"] >= 1.0,
        ),
        ("submit p99, 16 clients", s["submit_p99_ms_16"], "≤ 250 ms", _le(s["submit_p99_ms_16"], 250.0)),
        (
            f"5xx/no answer up to {s['max_clients']} clients",
            s["server_errors"],
            "0",
            _le(s["server_errors"], 0),
        ),
        (
            "submit→running p99 with room",
            s["to_running_p99_ms"],
            "≤ 250 ms",
            _le(s["to_running_p99_ms"], 250.0),
        ),
        ("platform CPU per job", s["cpu_ms_per_job"], "≤ 36 ms", _le(s["cpu_ms_per_job"], 36.0)),
        ("whole-platform RSS", s["rss_mib"], "≤ 1024 MiB", _le(s["rss_mib"], 1024.0)),
        ("time to ready (each start)", startup, "≤ 5 s", _le(startup, 5.0)),
    ]
    return [(name, "n/a" if v is None else str(v), bound, met(ok)) for name, v, bound, ok in rows]


def _le(value: float | None, bound: float) -> bool | None:
    return None if value is None else value <= bound


PHASE_ROWS = (
    ("accepted / succeeded", None),
    ("end to end (server clocks)", ("jobs_per_s", "jobs/s")),
    ("end to end (client clock)", ("jobs_per_s_wall", "jobs/s")),
    ("submit p50 / p99", None),
    ("submit→running p50 / p99", None),
    ("peak running / slots", None),
    ("5xx / no answer", None),
    ("CPU per job", ("cpu_ms_per_job", "ms")),
    ("RSS after", ("rss_mib", "MiB")),
    ("load before → after", None),
)


def phase_cell(fig: dict[str, Any], label: str) -> str:
    match label:
        case "accepted / succeeded":
            return f"{fig['accepted']}/{fig['jobs']} / {fig['succeeded']}"
        case "submit p50 / p99":
            return f"{fig['submit_ms_p50']} / {fig['submit_ms_p99']} ms"
        case "submit→running p50 / p99":
            return f"{fig['submit_to_running_ms_p50']} / {fig['submit_to_running_ms_p99']} ms"
        case "peak running / slots":
            return f"{fig['peak_running']} / {fig['capacity']}"
        case "5xx / no answer":
            return f"{fig['server_errors_5xx']} / {fig['no_answer']}"
        case "load before → after":
            return f"{fig['load_before']} → {fig['load_after']}"
    key, unit = dict(PHASE_ROWS)[label] or ("", "")
    return "n/a" if fig.get(key) is None else f"{fig[key]} {unit}"


def record(
    args: argparse.Namespace,
    argv: Sequence[str],
    phases: list[dict[str, Any]],
    summary: dict[str, Any],
    raw_path: Path | None,
    slurm_version: str,
) -> None:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    heads = [f"{p['system']} {p['phase']} ({p['concurrency']} clients)" for p in phases]
    lines = [
        "",
        f"## {now} — vs_slurm, {args.jobs} trivial jobs a phase",
        "",
        f"Command: `python benchmarks/vs_slurm.py {shlex.join(argv)}`",
        "",
        f"Machine: {describe()}. Shared with other engineers: the load average (1/5/15 min) is in each "
        f"phase's column. Platform: {args.nodes} nodes x {args.gpus_per_node} simulated GPUs and "
        f"{summary.get('platform_slots')} slots for these jobs (its CPU leaves); Slurm: "
        f"{slurm_version}, one node of {summary.get('slurm_cpus')} CPUs, backfill.",
        "",
        "| target | measured | bound | |",
        "|---|---|---|---|",
        *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in verdicts(summary)],
        "",
        f"Slurm runs: {summary['slurm_jobs_per_s']} jobs/s; "
        f"platform {summary['platform_jobs_per_s']} jobs/s; "
        f"ratio by the client's clock {summary['ratio_wall']}. Slurm CPU per job (daemons + steps): "
        f"{summary['slurm_cpu_ms_per_job']} ms. Time to ready: {summary['startup_s']} s (fresh, then on "
        "the same data).",
        "",
        "| figure | " + " | ".join(heads) + " |",
        "|---|" + "---|" * len(heads),
    ]
    for label, _ in PHASE_ROWS:
        lines.append(f"| {label} | " + " | ".join(phase_cell(p, label) for p in phases) + " |")
    main = next((p for p in phases if p["system"] == "platform" and p["phase"] == "main"), None)
    if main:
        share = ", ".join(f"{k} {v}%" for k, v in main["cpu_share"].items())
        lines += ["", f"Platform CPU by process (main phase): {share}."]
    if raw_path is not None:
        try:
            shown = raw_path.resolve().relative_to(HERE.parent.resolve())
        except ValueError:  # kept outside the repository
            shown = raw_path
        lines += ["", f"Raw outcomes: `{shown}`."]
    with RESULTS_FILE.open("a", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n")
    print(f"recorded in {RESULTS_FILE}")


# ---- main --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=200, help="jobs per phase (default 200)")
    parser.add_argument(
        "--concurrency", type=int, default=8, help="submitters of the main phases (default 8)"
    )
    parser.add_argument("--latency-clients", type=int, default=16, help="clients of the latency phase")
    parser.add_argument(
        "--ramp", default="32,64", help="further client counts for the 5xx check (default 32,64; '' none)"
    )
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--gpus-per-node", type=int, default=4)
    parser.add_argument(
        "--slurm-cpus", type=int, default=None, help="Slurm's node CPUs (default: the platform's slots)"
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="per phase, seconds")
    parser.add_argument("--poll-interval", type=float, default=0.5)
    parser.add_argument(
        "--profile", type=Path, default=None, help="only the platform's main phase, under py-spy"
    )
    parser.add_argument(
        "--platform-only", action="store_true", help="only the platform's main phase (quick iterations)"
    )
    parser.add_argument("--profile-rate", type=int, default=50, help="py-spy samples per second")
    parser.add_argument("--raw", type=Path, default=None, help="write the raw outcomes here (JSON)")
    parser.add_argument("--record", action="store_true")
    parser.add_argument("--data-dir", type=Path, default=None)
    return parser.parse_args(argv)


def write_raw(
    path: Path, args: argparse.Namespace, phases: Sequence[PhaseResult], startups: list[float]
) -> None:
    """The raw outcomes of every phase run, from which each printed figure can be computed again."""
    path.write_text(
        json.dumps(
            {
                "machine": describe(),
                "args": vars(args) | {"profile": None, "raw": None, "data_dir": None},
                "phases": [p.raw() for p in phases],
                "startups_s": startups,
            },
            separators=(",", ":"),
        )
    )
    print(f"raw outcomes in {path}")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    run_id = f"vs-{uuid.uuid4().hex[:6]}"
    work = Path(tempfile.mkdtemp(prefix="pai-vs-slurm-"))
    data_dir = args.data_dir or work / "platform"
    print(f"machine: {describe()}; load {load_average()}; work dir {work}", flush=True)
    phases: list[PhaseResult] = []
    startups: list[float] = []
    # Rate limits are a per-user policy, not a cost: off, so one user can submit every phase's jobs.
    extra = {"PAI_RATE_LIMIT_SUBMIT_PER_HOUR": "0", "PAI_RATE_LIMIT_LIST_PER_MIN": "0"}
    ramp = [int(c) for c in args.ramp.split(",") if c.strip()]

    def platform() -> RunningPlatform:
        pai = Platform(
            data_dir=data_dir, nodes=args.nodes, gpus_per_node=args.gpus_per_node, port=0, extra_env=extra
        )
        running = RunningPlatform(pai, max([args.concurrency, args.latency_clients, *ramp]))
        try:
            running.start()
        except BaseException:
            running.stop()
            raise
        assert running.startup_s is not None
        startups.append(running.startup_s)
        print(f"platform ready in {running.startup_s:.2f} s at {pai.url} (load {load_average()})", flush=True)
        return running

    if args.profile or args.platform_only:
        running = platform()
        try:
            profilers = Profilers(args.profile, running.pids(), args.profile_rate) if args.profile else None
            time.sleep(1.0)  # py-spy attached
            try:
                phases.append(running.phase(args, run_id, "main", args.concurrency))
            finally:
                if profilers is not None:
                    profilers.stop()
                    print(f"flame graphs in {args.profile}")
        finally:
            running.stop()
        if args.raw is not None:
            write_raw(args.raw, args, phases, startups)
        print(json.dumps({"phases": [p.figures() for p in phases]}, sort_keys=True))
        return 0

    # Equal slots: Slurm's node gets as many CPUs as the platform's cluster (the config `pai up` writes)
    # has slots for these jobs; each platform phase records the slots its scheduler reports.
    slots = config_slots(Platform(data_dir=data_dir, nodes=args.nodes, gpus_per_node=args.gpus_per_node))
    slurm_cpus = args.slurm_cpus or slots
    print(f"the platform has {slots} slots for a trivial job; Slurm gets {slurm_cpus} CPUs", flush=True)
    slurm = LocalSlurm(work / "slurm", slurm_cpus)
    failed = False
    try:
        try:
            slurm_ready = slurm.start()
            print(f"slurm ({version()}) ready in {slurm_ready:.2f} s, {slurm_cpus} CPUs", flush=True)
            phases.append(slurm_phase(slurm, args, run_id, "run-1"))
            running = platform()
            try:
                phases.append(running.phase(args, run_id, "main", args.concurrency))
                if running.capacity() != slots:
                    print(
                        f"WARNING: the scheduler reports {running.capacity()} slots, not {slots}", flush=True
                    )
            finally:
                running.stop()
            phases.append(slurm_phase(slurm, args, run_id, "run-2"))
        finally:
            slurm.stop()
        running = platform()
        try:
            for clients in [args.latency_clients, *ramp]:
                phases.append(running.phase(args, run_id, f"clients-{clients}", clients))
        finally:
            running.stop()
    except (PlatformError, SlurmError, RuntimeError, httpx.HTTPError) as exc:
        print(f"ERROR: {type(exc).__name__}: {exc}", flush=True)
        failed = True
    figures = [p.figures() for p in phases]
    summary = summarise(figures, startups)
    summary["slurm_cpus"] = slurm_cpus
    summary["platform_slots"] = slots
    print()
    for name, measured, bound, ok in verdicts(summary):
        print(f"{name:<40}{measured:>12}  {bound:<14}{ok}")
    print(f"load average now {load_average()}")
    raw_path = args.raw
    if raw_path is None and args.record and not failed:
        RAW_DIR.mkdir(exist_ok=True)
        raw_path = RAW_DIR / f"vs_slurm-{dt.datetime.now(dt.UTC):%Y%m%d-%H%M}.json"
    if raw_path is not None:
        write_raw(raw_path, args, phases, startups)
    if args.record and not failed:
        record(args, argv, figures, summary, raw_path, version())
    print(json.dumps({"summary": summary, "phases": figures}, sort_keys=True))
    if not failed:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"kept {work} (logs)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
