"""Elastic jobs through ``pai-sim`` (issue 18 part 4): elastic vs the same jobs rigid, every policy, one run.

    python benchmarks/sim_elastic.py [--nodes 16] [--jobs 800] [--seed 0] [--load 0.8]
                                     [--elastic-fraction 0.5] [--growth 4] [--raw DIR] [--record]
    python benchmarks/sim_elastic.py --recompute DIR      # the figures again, from the raw outcomes only

One seeded Poisson workload (``pai-sim generate --shape poisson``: ``--nodes`` nodes of 8 V100s, one VC,
10% opportunistic jobs) of which ``--elastic-fraction`` of the jobs are elastic (their drawn size is the
minimum, ``--growth`` times it the maximum, the same work: ``elastic.py``), replayed with departures in three
variants of the same jobs:

* ``elastic``: as written; HiveD grows them into idle cells (opportunistic growth gangs) and shrinks them
  when a guaranteed job needs the cells. First-fit, best-fit and quota-only cannot grow a job: they run
  each elastic job rigidly at its minimum, with the same work (so their ``elastic`` row is their
  ``rigid-min`` row: the comparison is stated, not hidden);
* ``rigid-min``: every elastic job rigid at its minimum (the work at the minimum's speed);
* ``rigid-max``: every elastic job rigid at its maximum (the same work, four times the gang, all or nothing).

For each policy (first-fit, best-fit, quota-only, plain HiveD ``hived-plain``, ``hived``) and variant: mean
and p95 completion time (JCT) of all jobs and of the elastic ones, the GPU allocation ratio (the GPU demand
of the running tasks over capacity, averaged over the run and over the arrivals), the makespan, and the
queueing delay of the rigid guaranteed jobs (the jobs growth must not delay: growth takes only idle cells and
is preempted first) and of the rigid opportunistic jobs (growth is opportunistic work too: they compete).
``--raw DIR`` writes each replay's ``--jobs-out`` CSV (with the instance history) and ``--recompute DIR``
recomputes every figure from those files alone and checks them against the run's.
The last line is one JSON object with every figure; ``--record`` appends a dated section (machine, load) to
``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import itertools
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from machine import describe

from pai_scheduler.sim.cli import figures, format_jobs_csv, poisson_workload, replay
from pai_scheduler.sim.cluster import load_cluster
from pai_scheduler.sim.elastic import make_elastic, rigid_at_max, rigid_at_min
from pai_scheduler.sim.jobs import SimJob

ROOT = Path(__file__).resolve().parent.parent
RESULTS_FILE = ROOT / "benchmarks" / "RESULTS.md"
POLICIES = ("first-fit", "best-fit", "quota-only", "hived-plain", "hived")
VARIANTS = ("elastic", "rigid-min", "rigid-max")


def variants(jobs: list[SimJob]) -> dict[str, list[SimJob]]:
    return {
        "elastic": jobs,
        "rigid-min": [rigid_at_min(j) for j in jobs],
        "rigid-max": [rigid_at_max(j) for j in jobs],
    }


def _pick(m: dict[str, Any]) -> dict[str, Any]:
    g = m["guaranteed_rigid"]
    return {
        "jct_avg": m["jct_s"]["avg"],
        "jct_p95": m["jct_s"]["p95"],
        "alloc": m["gpu_allocation_ratio"],
        "alloc_arriving": m["gpu_allocation_ratio_while_arriving"],
        "makespan": m["makespan_s"],
        "guaranteed_wait_avg": g["queueing_delay_s"]["avg"],
        "guaranteed_wait_p95": g["queueing_delay_s"]["p95"],
        "completed": m["jobs_completed"],
        "preemptions": m["preemptions"],
        "resizes": m.get("elastic", {}).get("resizes", 0),
        "mean_instances": m.get("elastic", {}).get("mean_instances"),
        "wall_s": m["wall_s"],
    }


def bench(args: argparse.Namespace) -> dict[str, Any]:
    inventory, base = poisson_workload(args.nodes, args.jobs, args.seed, args.load)
    # An elastic job's maximum fits the cluster (so that rigid at its maximum it can run at all).
    jobs = make_elastic(base, args.elastic_fraction, args.growth, args.seed, max_gpus=args.nodes * 8)
    elastic_ids = {j.job_id for j in jobs if j.elastic}
    guaranteed_rigid = {j.job_id for j in jobs if j.guaranteed and not j.elastic}
    opportunistic_rigid = {j.job_id for j in jobs if not j.guaranteed and not j.elastic}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "inventory.csv"
        path.write_text(inventory)
        cluster = load_cluster(path)
    raw = Path(args.raw) if args.raw else None
    if raw is not None:
        raw.mkdir(parents=True, exist_ok=True)
        (raw / "inventory.csv").write_text(inventory)
    out: dict[str, Any] = {
        "nodes": cluster.node_count,
        "gpus": cluster.capacity,
        "jobs": len(jobs),
        "elastic_jobs": len(elastic_ids),
        "load": args.load,
        "growth": args.growth,
        "seed": args.seed,
        "runs": {},
    }
    for variant, workload in variants(jobs).items():
        for policy in POLICIES:
            t0 = time.perf_counter()
            result = replay(cluster, workload, policy)
            m = figures(cluster, result)
            row = _pick(m)
            row["elastic_jct_avg"] = _mean_jct(result, elastic_ids)
            # The same jobs in every variant: the guaranteed jobs that are rigid in the workload.
            row["guaranteed_wait_avg"], row["guaranteed_wait_p95"] = _waits(result, guaranteed_rigid)
            # Growth is opportunistic work: it competes with the rigid opportunistic jobs for idle cells.
            row["opportunistic_wait_avg"], _ = _waits(result, opportunistic_rigid)
            row["wall_s"] = round(time.perf_counter() - t0, 2)
            out["runs"][f"{variant}/{policy}"] = row
            if raw is not None:
                (raw / f"{variant}-{policy}.csv").write_text(format_jobs_csv(result))
            print(f"{variant:9} {policy:11} {json.dumps(row)}", file=sys.stderr, flush=True)
    return out


def _waits(result: Any, ids: set[str]) -> tuple[float | None, float | None]:
    waits = [r.queue_time for r in result.records.values() if r.job.job_id in ids and r.attempt > 0]
    if not waits:
        return None, None
    return round(sum(waits) / len(waits), 3), round(_p95(waits), 3)  # type: ignore[arg-type]


def _mean_jct(result: Any, ids: set[str]) -> float | None:
    jct = [r.end - r.job.submit_time for r in result.records.values() if r.job.job_id in ids and r.end]
    return round(sum(jct) / len(jct), 3) if jct else None


# ---------------------------------------------------------------------------------- from raw outcomes


def _p95(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(0.95 * len(ordered))) - 1]


def recompute_file(path: Path, capacity: float, guaranteed_rigid: set[str]) -> dict[str, Any]:
    """The figures of one replay from its ``--jobs-out`` CSV alone (definitions: the engine's docstring)."""
    with path.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    done = [r for r in rows if r["state"] == "completed"]
    jct = [float(r["end_time"]) - float(r["submit_time"]) for r in done]
    first = min(float(r["submit_time"]) for r in rows)
    demand_area, last = 0.0, first
    for r in rows:
        last = max(last, float(r["submit_time"]))
        gpu = float(r["gpu_per_task"])
        points = [(float(t), int(n)) for t, n in (p.split(":") for p in r["instances"].split("|") if p)]
        for (t0, n), (t1, _) in itertools.pairwise(points):
            demand_area += n * gpu * (t1 - t0)
        if points:
            last = max(last, points[-1][0])
    guaranteed = [float(r["queue_time"]) for r in rows if r["job_id"] in guaranteed_rigid and r["instances"]]
    return {
        "jct_avg": round(sum(jct) / len(jct), 3) if jct else None,
        "jct_p95": round(_p95(jct), 3) if jct else None,  # type: ignore[arg-type]
        "alloc": round(demand_area / (capacity * (last - first)), 4) if last > first else None,
        "makespan": round(max(float(r["end_time"]) for r in done) - first, 3) if done else None,
        "guaranteed_wait_avg": round(sum(guaranteed) / len(guaranteed), 3) if guaranteed else None,
        "completed": len(done),
    }


def recompute(raw: Path) -> dict[str, Any]:
    capacity = float(load_cluster(raw / "inventory.csv").capacity)
    # The rigid guaranteed jobs: those rigid in the elastic variant's workload (the same ids in every file).
    with (raw / "elastic-hived.csv").open(encoding="utf-8") as f:
        ids = {
            r["job_id"]
            for r in csv.DictReader(f)
            if int(r["priority"]) >= 0 and r["min_tasks"] == r["max_tasks"]
        }
    files = sorted(f for f in raw.glob("*.csv") if f.name != "inventory.csv")
    return {f.stem: recompute_file(f, capacity, ids) for f in files}


# ---------------------------------------------------------------------------------- report


def _f(v: float | None, digits: int = 0) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def table(result: dict[str, Any]) -> list[str]:
    lines = [
        "| variant | policy | JCT mean (s) | JCT p95 (s) | elastic jobs' JCT mean (s) | allocation ratio"
        " (while arriving) | makespan (s) | rigid guaranteed jobs' wait mean / p95 (s) | rigid opportunistic"
        " jobs' wait mean (s) | preemptions | resizes | elastic jobs' mean tasks |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, r in result["runs"].items():
        variant, policy = key.split("/")
        lines.append(
            f"| {variant} | {policy} | {_f(r['jct_avg'])} | {_f(r['jct_p95'])} | {_f(r['elastic_jct_avg'])} |"
            f" {_f(r['alloc'], 3)} ({_f(r['alloc_arriving'], 3)}) | {_f(r['makespan'])} |"
            f" {_f(r['guaranteed_wait_avg'])} / {_f(r['guaranteed_wait_p95'])} |"
            f" {_f(r['opportunistic_wait_avg'])} | {r['preemptions']} |"
            f" {r['resizes']} | {_f(r['mean_instances'], 2)} |"
        )
    return lines


def ratios(result: dict[str, Any]) -> list[str]:
    """``hived`` with elastic jobs against every policy on the same workload (elastic rows: the baselines run
    the elastic jobs at their minimum) and against itself with the jobs rigid; below 1 is better for times,
    above 1 for the allocation ratio."""
    runs = result["runs"]
    mine = runs["elastic/hived"]
    lines = [
        "| hived, elastic, against | JCT mean | JCT p95 | makespan | allocation ratio while arriving |"
        " rigid guaranteed jobs' mean wait |",
        "|---|---|---|---|---|---|",
    ]

    def q(a: float | None, b: float | None) -> str:
        return "-" if a is None or not b else f"{a / b:.2f}"

    for key, other in runs.items():
        if key == "elastic/hived":
            continue
        lines.append(
            f"| {key} | {q(mine['jct_avg'], other['jct_avg'])} | {q(mine['jct_p95'], other['jct_p95'])} |"
            f" {q(mine['makespan'], other['makespan'])} |"
            f" {q(mine['alloc_arriving'], other['alloc_arriving'])} |"
            f" {q(mine['guaranteed_wait_avg'], other['guaranteed_wait_avg'])} |"
        )
    return lines


def record(result: dict[str, Any], command: str, load: str) -> None:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "",
        f"## {now} — sim_elastic, elastic vs rigid jobs (issue 18 part 4)",
        "",
        f"`{command}`. Machine: {describe()}; load average before the run: {load} (shared machine; the"
        " figures are simulated times, independent of the load; wall times are not).",
        "",
        f"{result['nodes']} nodes, {result['gpus']} GPUs; {result['jobs']} jobs (Poisson, offered load"
        f" {result['load']}), {result['elastic_jobs']} of them elastic (min = drawn size,"
        f" max = {result['growth']}x within the cluster, the same work). first-fit, best-fit and"
        " quota-only run elastic jobs rigidly at their minimum.",
        "",
        *table(result),
        "",
        *ratios(result),
        "",
    ]
    with RESULTS_FILE.open("a", encoding="utf-8") as f:
        f.write("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=16)
    parser.add_argument("--jobs", type=int, default=800)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--load", type=float, default=0.8)
    parser.add_argument("--elastic-fraction", type=float, default=0.5)
    parser.add_argument("--growth", type=int, default=4)
    parser.add_argument("--raw", help="write each replay's outcomes (--jobs-out CSV) and the inventory here")
    parser.add_argument("--recompute", help="recompute the figures from a --raw directory and print them")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args(argv)
    if args.recompute:
        print(json.dumps(recompute(Path(args.recompute)), indent=1))
        return 0
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3]) if Path("/proc/loadavg").exists() else "?"
    result = bench(args)
    if args.raw:
        again = recompute(Path(args.raw))
        for key, run in result["runs"].items():
            mine = again[key.replace("/", "-")]
            for field in ("jct_avg", "jct_p95", "makespan", "completed", "guaranteed_wait_avg"):
                if mine[field] != run[field] and not math.isclose(mine[field], run[field], abs_tol=2e-3):
                    raise SystemExit(f"{key}: {field} from the raw outcomes {mine[field]} != {run[field]}")
            if not math.isclose(mine["alloc"], run["alloc"], abs_tol=2e-4):
                raise SystemExit(
                    f"{key}: allocation ratio from the raw outcomes {mine['alloc']} != {run['alloc']}"
                )
        result["recomputed_from_raw"] = True
    print("\n".join([*table(result), "", *ratios(result)]))
    if args.record:
        record(result, "python benchmarks/sim_elastic.py " + " ".join(argv or sys.argv[1:]), load)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
