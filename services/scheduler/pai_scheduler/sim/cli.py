"""``pai-sim``: replay a workload CSV on a cluster through one scheduling policy and write the figures.

    pai-sim --cluster CLUSTER --workload JOBS.csv [--policy NAME] [--no-departures] --out METRICS.json

Exit status: 0 on success, 2 on a bad argument or input file (the message names the file, line and
column), 1 when the policy broke the simulation protocol.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pai_scheduler.hived.errors import ConfigError
from pai_scheduler.sim.cluster import SimCluster, load_cluster
from pai_scheduler.sim.engine import SimulationError, simulate
from pai_scheduler.sim.jobs import SimJob, WorkloadError, parse_workload_csv
from pai_scheduler.sim.registry import make_policy, policies


def run(cluster: SimCluster, jobs: Sequence[SimJob], policy: str, departures: bool = True) -> dict[str, Any]:
    """One replay's figures (the CLI and the comparison benchmark share this)."""
    result = simulate(make_policy(policy, cluster), cluster.capacity, jobs, departures)
    return {"nodes": len(cluster.nodes), **result.metrics}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="pai-sim", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cluster", required=True, help="HiveD config YAML, or a node inventory .csv")
    parser.add_argument("--workload", required=True, help="jobs CSV")
    parser.add_argument(
        "--policy", default="first-fit", help=f"scheduling policy (available: {', '.join(policies())})"
    )
    parser.add_argument(
        "--no-departures", action="store_true", help="jobs never finish (measures how full a cluster gets)"
    )
    parser.add_argument("--out", required=True, help="where to write the metrics JSON")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.policy not in policies():
        print(f"pai-sim: unknown policy {args.policy!r}; available: {', '.join(policies())}", file=sys.stderr)
        return 2
    try:
        cluster = load_cluster(args.cluster)
    except (OSError, ConfigError) as e:
        print(f"pai-sim: {args.cluster}: {e}", file=sys.stderr)
        return 2
    try:
        jobs = parse_workload_csv(Path(args.workload).read_text(encoding="utf-8"))
    except (OSError, WorkloadError) as e:
        print(f"pai-sim: {args.workload}: {e}", file=sys.stderr)
        return 2
    try:
        metrics = run(cluster, jobs, args.policy, departures=not args.no_departures)
    except (SimulationError, ValueError) as e:
        print(f"pai-sim: {e}", file=sys.stderr)
        return 1
    metrics = {"cluster": str(args.cluster), "workload": str(args.workload), **metrics}
    Path(args.out).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    print(
        f"{metrics['policy']}: {metrics['jobs_completed']}/{metrics['jobs_total']} completed,"
        f" {metrics['jobs_rejected']} rejected,"
        f" allocation ratio {metrics['gpu_allocation_ratio']}, wrote {args.out}"
    )
    return 0
