"""Run every available simulator policy on one cluster and workload and print them side by side.

    python benchmarks/sim_compare.py                                    # the examples under examples/sim
    python benchmarks/sim_compare.py --cluster C.yaml --workload J.csv --record

Each policy is replayed twice: with departures (completion times, queueing delay, allocation ratio,
preemptions, decision latency) and with ``--no-departures`` (how full the cluster gets as the arrived
demand grows, and how many jobs could not be placed). The last line printed is one JSON object with every
figure. ``--record`` appends a dated section to ``benchmarks/RESULTS.md`` (append only).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from machine import machine

from pai_scheduler.sim.cli import run
from pai_scheduler.sim.cluster import load_cluster
from pai_scheduler.sim.jobs import parse_workload_csv
from pai_scheduler.sim.registry import policies

ROOT = Path(__file__).resolve().parent.parent
RESULTS_FILE = ROOT / "benchmarks" / "RESULTS.md"
DEFAULT_CLUSTER = ROOT / "examples" / "sim" / "cluster-8x8.yaml"
DEFAULT_WORKLOAD = ROOT / "examples" / "sim" / "jobs-500.csv"


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def rows(results: dict[str, dict[str, Any]]) -> list[tuple[str, list[str]]]:
    """(label, one value per policy) for the table."""

    def col(get: Any) -> list[str]:
        return [_fmt(get(r)) for r in results.values()]

    out: list[tuple[str, list[str]]] = [
        (
            "jobs total / completed",
            [f"{r['run']['jobs_total']} / {r['run']['jobs_completed']}" for r in results.values()],
        ),
        ("jobs rejected", col(lambda r: r["run"]["jobs_rejected"])),
        ("JCT avg (s)", col(lambda r: r["run"]["jct_s"]["avg"])),
        ("JCT p50 (s)", col(lambda r: r["run"]["jct_s"]["p50"])),
        ("JCT p95 (s)", col(lambda r: r["run"]["jct_s"]["p95"])),
        ("queueing delay avg (s)", col(lambda r: r["run"]["queueing_delay_s"]["avg"])),
        ("queueing delay p95 (s)", col(lambda r: r["run"]["queueing_delay_s"]["p95"])),
    ]
    vcs = sorted({vc for r in results.values() for vc in r["run"]["per_vc"]})
    for vc in vcs:
        out.append(
            (
                f"{vc}: queueing delay avg (s)",
                col(lambda r, vc=vc: r["run"]["per_vc"].get(vc, {}).get("queueing_delay_s", {}).get("avg")),
            )
        )
    out += [
        ("GPU allocation ratio (whole run)", col(lambda r: r["run"]["gpu_allocation_ratio"])),
        (
            "GPU allocation ratio (while arriving)",
            col(lambda r: r["run"]["gpu_allocation_ratio_while_arriving"]),
        ),
        ("GPUs held (whole run)", col(lambda r: r["run"]["gpu_held_ratio"])),
        ("preemptions", col(lambda r: r["run"]["preemptions"])),
        ("decision latency p50 (ms)", col(lambda r: r["run"]["decision_latency_ms"]["p50"])),
        ("decision latency p99 (ms)", col(lambda r: r["run"]["decision_latency_ms"]["p99"])),
        ("replay wall time (s)", col(lambda r: r["run"]["wall_s"])),
    ]
    levels = next(iter(results.values()))["fill"]["allocation_ratio_by_arrived"]
    for name, label in (
        ("allocation_ratio", "allocation ratio"),
        ("held_ratio", "GPUs held"),
        ("fragmentation", "fragmentation"),
    ):
        for level in levels:
            out.append(
                (
                    f"no departures: {label} at {level}x demand",
                    col(lambda r, lv=level, n=name: r["fill"][f"{n}_by_arrived"][lv]),
                )
            )
    out.append(("no departures: jobs not placed", col(lambda r: r["fill"]["jobs_unplaced"])))
    return out


def table(results: dict[str, dict[str, Any]]) -> list[str]:
    names = list(results)
    lines = ["| figure | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for label, values in rows(results):
        lines.append(f"| {label} | " + " | ".join(values) + " |")
    return lines


def record(results: dict[str, dict[str, Any]], argv: Sequence[str], cluster: str, workload: str) -> None:
    host = machine()
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    first = next(iter(results.values()))["run"]
    lines = [
        "",
        f"## {now} — sim_compare, {', '.join(results)}",
        "",
        f"Command: `python benchmarks/sim_compare.py {shlex.join(argv)}`",
        "",
        f"Machine: {host['platform']}; {host['cpus']} CPUs; {_fmt(host['memory_gib'])} GiB memory; "
        f"Python {host['python']}. "
        f"Cluster: `{cluster}` ({first['nodes']} nodes, {first['capacity_gpus']} GPUs). "
        f"Workload: `{workload}` ({first['jobs_total']} jobs).",
        "",
        *table(results),
    ]
    if not RESULTS_FILE.exists():
        RESULTS_FILE.write_text("# Benchmark results\n", encoding="utf-8")
    with RESULTS_FILE.open("a", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n")
    print(f"recorded in {RESULTS_FILE}")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cluster", default=str(DEFAULT_CLUSTER))
    parser.add_argument("--workload", default=str(DEFAULT_WORKLOAD))
    parser.add_argument("--policy", action="append", help="only these policies (repeatable); default: all")
    parser.add_argument("--record", action="store_true", help="append the table to benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    cluster = load_cluster(args.cluster)
    jobs = parse_workload_csv(Path(args.workload).read_text(encoding="utf-8"))
    names = args.policy or list(policies())
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        results[name] = {
            "run": run(cluster, jobs, name, departures=True),
            "fill": run(cluster, jobs, name, departures=False),
        }
    cluster_label = os.path.relpath(args.cluster, ROOT)
    workload_label = os.path.relpath(args.workload, ROOT)
    print(
        f"cluster {cluster_label}: {len(cluster.nodes)} nodes, {cluster.capacity} GPUs; "
        f"workload {workload_label}: {len(jobs)} jobs"
    )
    print()
    print("\n".join(table(results)))
    print()
    if args.record:
        record(results, argv, cluster_label, workload_label)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
