"""``pai-sim``: replay a workload CSV on a cluster through one scheduling policy and write the figures.

    pai-sim --cluster CLUSTER --workload JOBS.csv [--policy NAME] [--no-departures] --out METRICS.json
            [--jobs-out OUTCOMES.csv]

    pai-sim generate --out-dir DIR [--shape sharing|poisson] [--nodes 1500] [--jobs 10000] [--seed 0]
                     [--load 0.9] [--elastic-fraction 0] [--elastic-growth 4]

The policy is ``hived`` (the production scheduler, as the service runs it) unless ``--policy`` names
another. ``--jobs-out`` writes one row per job (``job_id,vc,state,submit_time,start_time,end_time,
gpus_requested,gpus_held,nodes``, then ``priority,gpu_per_task,min_tasks,max_tasks,queue_time,preemptions,
instances``) from which every figure can be recomputed: ``instances`` is the job's size history over every
attempt, ``time:tasks`` pairs separated by ``|`` (0 tasks when it stopped), from which the GPU demand placed
at any moment is the sum of ``tasks * gpu_per_task`` over the jobs.

``generate`` writes ``DIR/inventory.csv`` and ``DIR/jobs.csv``: ``--shape sharing`` (the default) the
synthetic GPU-sharing trace of ``sharing_trace.py``, meant to be replayed with ``--no-departures``;
``--shape poisson`` the Poisson workload of ``workloads.py`` (offered load ``--load``) on ``--nodes``
nodes of 8 V100s, meant to be replayed with departures. ``--elastic-fraction F`` makes that fraction of
the GPU jobs elastic (``elastic.make_elastic``: the drawn size is the minimum, ``--elastic-growth`` times it
the maximum, the same work).

Exit status: 0 on success, 2 on a bad argument or input file (the message names the file, line and
column), 1 when the policy broke the simulation protocol.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pai_scheduler.hived.config import parse_inventory_csv
from pai_scheduler.hived.errors import ConfigError
from pai_scheduler.sim import sharing_trace
from pai_scheduler.sim.cluster import SimCluster, from_config, load_cluster
from pai_scheduler.sim.elastic import make_elastic
from pai_scheduler.sim.engine import SimResult, SimulationError, simulate
from pai_scheduler.sim.jobs import SimJob, WorkloadError, format_workload_csv, parse_workload_csv
from pai_scheduler.sim.registry import make_policy, policies
from pai_scheduler.sim.workloads import WorkloadSpec
from pai_scheduler.sim.workloads import generate as generate_workload

DEFAULT_POLICY = "hived"
JOB_COLUMNS = (
    "job_id",
    "vc",
    "state",
    "submit_time",
    "start_time",
    "end_time",
    "gpus_requested",
    "gpus_held",
    "nodes",
    "priority",
    "gpu_per_task",
    "min_tasks",
    "max_tasks",
    "queue_time",
    "preemptions",
    "instances",
)


def replay(cluster: SimCluster, jobs: Sequence[SimJob], policy: str, departures: bool = True) -> SimResult:
    return simulate(make_policy(policy, cluster), cluster.capacity, jobs, departures, cluster.nodes)


def figures(cluster: SimCluster, result: SimResult) -> dict[str, Any]:
    return {
        "nodes": cluster.node_count,
        "gpu_nodes": len(cluster.nodes),
        "cpu_only_nodes": len(cluster.cpu_only_nodes),
        **result.metrics,
    }


def run(cluster: SimCluster, jobs: Sequence[SimJob], policy: str, departures: bool = True) -> dict[str, Any]:
    """One replay's figures (the CLI and the comparison benchmark share this)."""
    return figures(cluster, replay(cluster, jobs, policy, departures))


def _number(value: float | None) -> str:
    if value is None:
        return ""
    return str(int(value)) if value == int(value) else repr(round(value, 6))


def format_jobs_csv(result: SimResult) -> str:
    """One row per job, in workload order: its final state, the times of its last attempt, what it asked
    for and what that attempt held, and the nodes it ran on (``|``-separated)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(JOB_COLUMNS)
    for rec in result.records.values():
        job = rec.job
        ran = rec.attempt > 0
        writer.writerow(
            [
                job.job_id,
                job.vc,
                rec.state,
                _number(job.submit_time),
                _number(rec.start) if ran else "",
                _number(rec.end) if rec.state == "completed" else "",
                _number(job.gpus),
                _number(rec.held) if ran else "0",
                "|".join(sorted({pl.node for pl in rec.placements})) if ran else "",
                job.priority,
                _number(job.gpu_per_task),
                job.minimum,
                job.tasks,
                _number(rec.queue_time),
                rec.preemptions,
                "|".join(f"{_number(t)}:{n}" for t, n in rec.sizes),
            ]
        )
    return out.getvalue()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="pai-sim", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cluster", required=True, help="HiveD config YAML, or a node inventory .csv")
    parser.add_argument("--workload", required=True, help="jobs CSV")
    parser.add_argument(
        "--policy",
        default=DEFAULT_POLICY,
        help=f"scheduling policy (default {DEFAULT_POLICY}; available: {', '.join(policies())})",
    )
    parser.add_argument(
        "--no-departures", action="store_true", help="jobs never finish (measures how full a cluster gets)"
    )
    parser.add_argument("--out", required=True, help="where to write the metrics JSON")
    parser.add_argument("--jobs-out", help="where to write one CSV row per job (its outcome)")
    return parser.parse_args(argv)


def generate_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="pai-sim generate", description=sharing_trace.__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out-dir", required=True, help="where to write inventory.csv and jobs.csv")
    spec = sharing_trace.SharingTraceSpec()
    parser.add_argument("--shape", choices=("sharing", "poisson"), default="sharing")
    parser.add_argument("--nodes", type=int, default=spec.nodes)
    parser.add_argument("--jobs", type=int, default=spec.jobs)
    parser.add_argument("--seed", type=int, default=spec.seed)
    parser.add_argument("--load", type=float, default=0.9, help="poisson: offered load / capacity")
    parser.add_argument("--elastic-fraction", type=float, default=0.0, help="of the GPU jobs (0..1)")
    parser.add_argument("--elastic-growth", type=int, default=4, help="an elastic job's maximum / minimum")
    args = parser.parse_args(argv)
    try:
        if args.shape == "sharing":
            inventory, jobs = sharing_trace.generate(
                sharing_trace.SharingTraceSpec(nodes=args.nodes, jobs=args.jobs, seed=args.seed)
            )
        else:
            inventory, jobs = poisson_workload(args.nodes, args.jobs, args.seed, args.load)
        capacity = from_config(parse_inventory_csv(inventory)).capacity  # an elastic job's maximum fits it
        jobs = make_elastic(jobs, args.elastic_fraction, args.elastic_growth, args.seed, max_gpus=capacity)
    except ValueError as e:
        print(f"pai-sim generate: {e}", file=sys.stderr)
        return 2
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "inventory.csv").write_text(inventory, encoding="utf-8")
    (out / "jobs.csv").write_text(format_workload_csv(jobs), encoding="utf-8")
    elastic = sum(j.elastic for j in jobs)
    print(
        f"wrote {out / 'inventory.csv'} ({args.nodes} nodes) and {out / 'jobs.csv'} ({len(jobs)} jobs,"
        f" {elastic} elastic)"
    )
    return 0


POISSON_GPUS_PER_NODE = 8


def poisson_workload(nodes: int, jobs: int, seed: int, load: float) -> tuple[str, list[SimJob]]:
    """An inventory of ``nodes`` 8-GPU nodes and ``workloads.py``'s Poisson workload at ``load`` on it."""
    if nodes < 1:
        raise ValueError(f"--nodes must be >= 1 (got {nodes})")
    gpus = POISSON_GPUS_PER_NODE
    inventory = "node,leaf_type,leaf_count,cpu,memory_mb\n" + "".join(
        f"node-{i:04d},V100,{gpus},{8 * gpus},{65536 * gpus}\n" for i in range(nodes)
    )
    spec = WorkloadSpec(
        jobs=jobs, seed=seed, capacity_gpus=nodes * gpus, load=load, max_job_gpus=nodes * gpus
    )
    return inventory, generate_workload(spec)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["generate"]:
        return generate_main(argv[1:])
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
        result = replay(cluster, jobs, args.policy, departures=not args.no_departures)
    except (SimulationError, ValueError) as e:
        print(f"pai-sim: {e}", file=sys.stderr)
        return 1
    metrics = {"cluster": str(args.cluster), "workload": str(args.workload), **figures(cluster, result)}
    Path(args.out).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    if args.jobs_out:
        Path(args.jobs_out).write_text(format_jobs_csv(result), encoding="utf-8")
    print(
        f"{metrics['policy']}: {metrics['jobs_completed']}/{metrics['jobs_total']} completed,"
        f" {metrics['jobs_running']} running, {metrics['jobs_rejected']} rejected; {_summary(metrics)};"
        + _elastic_summary(metrics)
        + f" wrote {args.out}"
        + (f" and {args.jobs_out}" if args.jobs_out else "")
    )
    return 0


def _elastic_summary(m: dict[str, Any]) -> str:
    e = m.get("elastic")
    if not e:
        return ""
    if e["run_as"] != "elastic":
        return f" {e['jobs_total']} elastic jobs, run {e['run_as']} ({m['policy']} cannot grow a job);"
    return (
        f" {e['jobs_total']} elastic jobs ({e['resizes']} resizes, {e['mean_instances']} tasks on average"
        " while they ran);"
    )


def _summary(m: dict[str, Any]) -> str:
    """The headline figures: GPU demand placed over capacity (the allocation ratio), and GPUs held apart."""
    if not m["departures"]:
        at = m["allocation_ratio_by_arrived"].get("1.0")
        held = m["held_ratio_by_arrived"].get("1.0")
        if at is None:
            return (
                "arrived demand stayed below 100% of capacity; allocation ratio"
                f" {m['final_allocation_ratio']} at the end (GPUs held {m['final_held_ratio']})"
            )
        return f"allocation ratio at 100% arrived demand {at} (GPUs held {held})"
    return f"allocation ratio {m['gpu_allocation_ratio']} over time (GPUs held {m['gpu_held_ratio']})"
