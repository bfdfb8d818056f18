"""Decision latency of the HiveD allocator core (``pai_scheduler.hived``), in process, no I/O.

Cluster: racks of 8 nodes, each node 8 GPUs (GPU -> PCIe switch of 2 -> socket of 4 -> node of 8),
``--nodes`` nodes in all; VCs own equal shares of the nodes as node-level quota cells (4 VCs on 32
nodes, 8 on 512, 20 on 5,000). Workload, modelled on the HiveD measurement in the project's notes: gangs
of 1, 1, 2, 4, 8 GPUs on one pod, and 2x8 and 4x8 GPUs; 20% opportunistic, the rest guaranteed with
priority 10, 100 or 120 in a random VC. Each decision the caller would act on is timed:

* ``submit``; when it is queued, one random running gang is released (timed) and, if the gang is still
  queued after that, it is withdrawn (timed);
* when it is preempting, its victims are released one by one (timed), as the service would on their exit.

Prints the figures, then one JSON object on the last line. ``--record`` appends a dated section with the
machine to ``benchmarks/RESULTS.md``. Run: ``python benchmarks/scheduler.py [--nodes 32 512 5000]
[--jobs N] [--record]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from machine import describe as machine

from pai_scheduler.hived import (
    Allocated,
    GangRequest,
    HivedAllocator,
    Member,
    Preempting,
    Queued,
    parse_hived_config,
)

RESULTS_FILE = Path(__file__).resolve().parent / "RESULTS.md"
SHAPES = [(1, 1), (1, 1), (1, 2), (1, 4), (1, 8), (2, 8), (4, 8)]  # (pods, GPUs per pod)


def cluster_config(nodes: int, vcs: int) -> dict[str, Any]:
    racks = []
    for r in range(0, nodes, 8):
        members = [{"cellAddress": f"node-{i:05d}"} for i in range(r, min(r + 8, nodes))]
        racks.append(members)
    cell_types: dict[str, Any] = {
        "V100-SWITCH": {"childCellType": "V100", "childCellNumber": 2},
        "V100-SOCKET": {"childCellType": "V100-SWITCH", "childCellNumber": 2},
        "V100-NODE": {"childCellType": "V100-SOCKET", "childCellNumber": 2, "isNodeLevel": True},
        "V100-RACK": {"childCellType": "V100-NODE", "childCellNumber": 8},
    }
    physical: list[dict[str, Any]] = []
    for members in racks:
        if len(members) == 8:
            physical.append({"cellType": "V100-RACK", "cellChildren": members})
        else:  # a partial last rack: its nodes stand alone
            physical.extend({"cellType": "V100-NODE", "cellAddress": m["cellAddress"]} for m in members)
    full_nodes = 8 * sum(1 for m in racks if len(m) == 8)
    share = full_nodes // vcs
    virtual = {
        f"vc{v}": {"virtualCells": [{"cellType": "V100-RACK.V100-NODE", "cellNumber": share}]}
        for v in range(vcs)
    }
    return {
        "physicalCluster": {"cellTypes": cell_types, "physicalCells": physical},
        "virtualClusters": virtual,
    }


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def run(nodes: int, jobs: int, seed: int) -> dict[str, Any]:
    vcs = 4 if nodes <= 64 else 8 if nodes <= 1024 else 20
    t0 = time.perf_counter()
    a = HivedAllocator(parse_hived_config(cluster_config(nodes, vcs)))
    build_s = time.perf_counter() - t0
    rng = random.Random(seed)
    running: list[str] = []
    index: dict[str, int] = {}
    submit_ms: list[float] = []
    all_ms: list[float] = []
    counts = {"allocated": 0, "queued": 0, "preempting": 0, "released": 0}

    def track(decisions: list[Any]) -> None:
        for d in decisions:
            if isinstance(d, Allocated) and d.key not in index:
                index[d.key] = len(running)
                running.append(d.key)
                counts["allocated"] += 1

    def forget(key: str) -> None:
        i = index.pop(key, None)
        if i is None:
            return
        last = running.pop()
        if last != key:
            running[i] = last
            index[last] = i

    def timed_release(key: str) -> list[Any]:
        t = time.perf_counter_ns()
        out = a.release(key)
        all_ms.append((time.perf_counter_ns() - t) / 1e6)
        counts["released"] += 1
        forget(key)
        track(out)
        for d in out:
            if isinstance(d, Preempting):
                settle(d)
        return out

    def settle(p: Preempting) -> None:
        counts["preempting"] += 1
        for victim in p.victims:
            if a.decision_of(victim) is not None:
                timed_release(victim)

    wall = time.perf_counter()
    for j in range(jobs):
        pods, gpus = rng.choice(SHAPES)
        prio = -1 if rng.random() < 0.2 else rng.choice([10, 100, 120])
        req = GangRequest(
            f"j{j}", f"vc{rng.randrange(vcs)}", prio, (Member("worker", pods, gpus),), ("V100",)
        )
        t = time.perf_counter_ns()
        d = a.submit(req)
        ms = (time.perf_counter_ns() - t) / 1e6
        submit_ms.append(ms)
        all_ms.append(ms)
        if isinstance(d, Allocated):
            track([d])
        elif isinstance(d, Preempting):
            settle(d)
        elif isinstance(d, Queued):
            counts["queued"] += 1
            if running:
                timed_release(running[rng.randrange(len(running))])
            if isinstance(a.decision_of(req.key), Queued):
                timed_release(req.key)
    wall_s = time.perf_counter() - wall
    used = sum(1 for c in a.cluster.cells.values() if c.is_leaf and c.owner is not None)
    return {
        "nodes": nodes,
        "gpus": nodes * 8,
        "vcs": vcs,
        "jobs": jobs,
        "build_s": round(build_s, 3),
        "wall_s": round(wall_s, 2),
        "decisions": len(all_ms),
        "p50_ms": round(pct(all_ms, 50), 3),
        "p99_ms": round(pct(all_ms, 99), 3),
        "mean_ms": round(statistics.fmean(all_ms), 3),
        "max_ms": round(max(all_ms), 2),
        "submit_p50_ms": round(pct(submit_ms, 50), 3),
        "submit_p99_ms": round(pct(submit_ms, 99), 3),
        "gpu_use_at_end": round(used / (nodes * 8), 3),
        **counts,
    }


def record(results: list[dict[str, Any]], command: str) -> None:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "",
        f"## {now} — scheduler (HiveD core), decision latency",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {machine()}. In process, no I/O: the latency of `submit`/`release` calls of"
        " `pai_scheduler.hived.HivedAllocator` (a mix of whole-GPU gangs and opportunistic jobs; no GPU"
        " shares or lazy preemption in it).",
        "",
        "| nodes (GPUs) | VCs | decisions | p50 | p99 | mean | max | submit p50 / p99 | preemptions |"
        " queued | GPU use at end | wall |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['nodes']} ({r['gpus']}) | {r['vcs']} | {r['decisions']} | {r['p50_ms']} ms"
            f" | {r['p99_ms']} ms | {r['mean_ms']} ms | {r['max_ms']} ms"
            f" | {r['submit_p50_ms']} / {r['submit_p99_ms']} ms"
            f" | {r['preempting']} | {r['queued']} | {r['gpu_use_at_end']:.0%} | {r['wall_s']} s |"
        )
    lines.append("")
    with RESULTS_FILE.open("a") as f:
        f.write("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--nodes", type=int, nargs="+", default=[32, 512, 5000])
    parser.add_argument(
        "--jobs", type=int, default=None, help="gangs submitted per size (default: max(4000, 2 x nodes))"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args(argv)
    results = []
    for n in args.nodes:
        r = run(n, args.jobs or max(4000, 2 * n), args.seed)
        results.append(r)
        print(
            f"{n:>5} nodes ({r['gpus']} GPUs, {r['vcs']} VCs): {r['decisions']} decisions,"
            f" p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, mean {r['mean_ms']} ms,"
            f" max {r['max_ms']} ms; submit p50"
            f" {r['submit_p50_ms']} / p99 {r['submit_p99_ms']} ms; {r['preempting']} preemptions,"
            f" {r['queued']} queued; GPU use at end {r['gpu_use_at_end']:.0%}; wall {r['wall_s']} s",
            flush=True,
        )
    if args.record:
        record(results, "python benchmarks/scheduler.py " + " ".join(sys.argv[1:]))
    print(json.dumps({"benchmark": "scheduler", "results": results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
