"""Backfill protection's trade-off in the simulator: a starved big gang against ordinary workloads.

    python benchmarks/sim_backfill.py             # print the tables
    python benchmarks/sim_backfill.py --record    # and append them to benchmarks/RESULTS.md

Each workload is replayed through the HiveD allocator with backfill protection off, at several thresholds
(how long a guaranteed head waits before its cells are held), and with every head protected at once (0 s):

* the starvation workload (``examples/sim/starvation-jobs.csv`` on ``starvation-2x8.yaml``): the big
  gang's wait, the bound the simulator test asserts for it (when it became protected, plus the longest small
  job then running, minus its submission), the small jobs' average completion time, the allocation ratio;
* ordinary workloads (``examples/sim/jobs-500.csv`` and three more seeds of its generator on
  ``cluster-8x8.yaml``): average completion time, p95 queueing delay, the longest wait of a guaranteed
  16-GPU gang, the allocation ratio while jobs arrive.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Sequence
from pathlib import Path

from machine import machine

from pai_scheduler.hived.allocator import PROTECT_HEAD_AFTER_S
from pai_scheduler.sim.cluster import SimCluster, load_cluster
from pai_scheduler.sim.engine import SimResult, simulate
from pai_scheduler.sim.hived_policy import HivedPolicy
from pai_scheduler.sim.jobs import SimJob, parse_workload_csv
from pai_scheduler.sim.workloads import BIG_JOB_ID, WorkloadSpec, generate

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "sim"
RESULTS_FILE = ROOT / "benchmarks" / "RESULTS.md"
THRESHOLDS: tuple[float | None, ...] = (None, 0.0, 3600.0, 43200.0, PROTECT_HEAD_AFTER_S)


def label(threshold: float | None) -> str:
    if threshold is None:
        return "off"
    name = f"{threshold / 3600:g} h" if threshold else "0 s (strict)"
    return f"{name} (default)" if threshold == PROTECT_HEAD_AFTER_S else name


def replay(cluster: SimCluster, jobs: Sequence[SimJob], threshold: float | None) -> SimResult:
    return simulate(HivedPolicy(cluster, protect_head_after_s=threshold), cluster.capacity, jobs)


def protection_bound(result: SimResult, threshold: float) -> float:
    """The wait the big gang may have under protection: from its submission to the moment it became a
    protected head, then the longest remaining run of the small jobs on the cluster at that moment."""
    big = result.records[BIG_JOB_ID]
    submit = big.job.submit_time
    ahead = [r for r in result.records.values() if r.job.submit_time < submit or r.job.job_id == BIG_JOB_ID]
    # It is the head once every gang submitted before it has started.
    head_at = max((r.history[1][1] for r in ahead if r.job.job_id != BIG_JOB_ID), default=submit)
    protected_at = max(head_at, submit + threshold)
    running_until = max(
        (
            r.end
            for r in result.records.values()
            if r.job.job_id != BIG_JOB_ID and r.start is not None and r.end is not None
            if r.start <= protected_at < r.end
        ),
        default=protected_at,
    )
    return running_until - submit


def starvation_table() -> list[str]:
    cluster = load_cluster(EXAMPLES / "starvation-2x8.yaml")
    jobs = parse_workload_csv((EXAMPLES / "starvation-jobs.csv").read_text(encoding="utf-8"))
    lines = [
        "| protection | big gang's wait (s) | bound: protected + longest running small job (s) | "
        "small jobs' JCT avg (s) | allocation ratio |",
        "|---|---|---|---|---|",
    ]
    for t in THRESHOLDS:
        r = replay(cluster, jobs, t)
        small = [x for k, x in r.records.items() if k != BIG_JOB_ID and x.end is not None]
        jct = sum(x.end - x.job.submit_time for x in small if x.end is not None) / len(small)
        bound = "n/a" if t is None else f"{protection_bound(r, t):.0f}"
        lines.append(
            f"| {label(t)} | {r.records[BIG_JOB_ID].queue_time:.0f} | {bound} | {jct:.0f} | "
            f"{r.metrics['gpu_allocation_ratio']:.4f} |"
        )
    return lines


def ordinary_workloads() -> dict[str, list[SimJob]]:
    out = {"jobs-500.csv": parse_workload_csv((EXAMPLES / "jobs-500.csv").read_text(encoding="utf-8"))}
    for seed in (2, 3, 4):
        spec = WorkloadSpec(
            jobs=400,
            seed=seed,
            capacity_gpus=64,
            load=0.8,
            vcs=(("vc-a", 0.4), ("vc-b", 0.35), ("vc-c", 0.25)),
            max_job_gpus=16,
        )
        out[f"seed {seed} (400 jobs)"] = generate(spec)
    return out


def ordinary_table() -> list[str]:
    cluster = load_cluster(EXAMPLES / "cluster-8x8.yaml")
    lines = [
        "| workload | protection | JCT avg (s) | vs off | queueing p95 (s) | longest 16-GPU wait (s) | "
        "allocation ratio while arriving |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, jobs in ordinary_workloads().items():
        base: float | None = None
        for t in THRESHOLDS:
            r = replay(cluster, jobs, t)
            jct = r.metrics["jct_s"]["avg"]
            base = jct if base is None else base
            big = [x.queue_time for x in r.records.values() if x.job.tasks * x.job.gpu_per_task >= 16]
            lines.append(
                f"| {name} | {label(t)} | {jct:.0f} | {100 * (jct / base - 1):+.0f}% | "
                f"{r.metrics['queueing_delay_s']['p95']:.0f} | {max(big, default=0):.0f} | "
                f"{r.metrics['gpu_allocation_ratio_while_arriving']:.4f} |"
            )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--record", action="store_true", help="append the tables to benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    starved = starvation_table()
    ordinary = ordinary_table()
    print("\n".join(starved))
    print()
    print("\n".join(ordinary))
    if args.record:
        host = machine()
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        text = [
            "",
            f"## {now} — sim_backfill, backfill protection: starvation vs ordinary workloads",
            "",
            "Command: `python benchmarks/sim_backfill.py --record`",
            "",
            f"Machine: {host['platform']}; {host['cpus']} CPUs; {host['memory_gib']:.1f} GiB memory; "
            f"Python {host['python']}; no GPU. Simulated time, deterministic (wall time plays no part).",
            "",
            "Starvation workload (`examples/sim/starvation-jobs.csv` on `starvation-2x8.yaml`: VC vc-a owns"
            " both 8-GPU nodes; 1-2 GPU jobs every 75 s for 36 h, 10-30 min each, about 1.3x the quota;"
            " a 16-GPU gang `big` at 300 s):",
            "",
            *starved,
            "",
            "Ordinary workloads (`cluster-8x8.yaml`; `jobs-500.csv` and the same generator, load 0.8,"
            " seeds 2-4):",
            "",
            *ordinary,
        ]
        with RESULTS_FILE.open("a", encoding="utf-8") as out:
            out.write("\n".join(text) + "\n")
        print(f"recorded in {RESULTS_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
