"""GPU sharing and fair sharing of idle quota, measured through ``pai-sim`` (issue 18, parts 1 and 2).

    python benchmarks/sim_sharing.py [--nodes 1500] [--jobs 10000] [--seeds 0] [--record]

Part 1, packing: the synthetic GPU-sharing trace (``pai-sim generate``: about 1,500 nodes of which a fifth
CPU-only, about 6,200 GPUs of five models; pods asking for a share of a GPU, whole GPUs, several GPUs or no
GPU; a quarter naming a model) replayed without departures through first-fit and best-fit (both sharing
GPUs), the retired whole-GPU core, quota-only, plain HiveD and HiveD with the fragmentation-aware chain
preference (``hived``, the production default): the allocation ratio (GPU demand placed over capacity) at
arrived demand 50%..130%, GPUs held, fragmentation, and the replay's wall time.

Part 2, borrowing: ``examples/sim/sharing-3vc.yaml`` (a busy VC that may borrow, a VC divided among two
teams, an idle lender; reclaim grace 600 s) under a seeded workload in which the busy VC asks for about
2.5 times its quota, with and without borrowing (``hived``, ``hived-no-borrow``) and quota-only: per-VC
completion and queueing times, the allocation ratio, preemptions, and every reclaim's wait (a lender's
gang from preempting borrowers to starting), which the grace bounds.

The last line is one JSON object with every figure; ``--record`` appends a dated section (machine, load)
to ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from machine import describe

from pai_scheduler.sim.cli import replay, run
from pai_scheduler.sim.cluster import load_cluster
from pai_scheduler.sim.engine import simulate
from pai_scheduler.sim.hived_policy import HivedPolicy
from pai_scheduler.sim.sharing_trace import SharingTraceSpec, generate
from pai_scheduler.sim.workloads import WorkloadSpec
from pai_scheduler.sim.workloads import generate as generate_workload

ROOT = Path(__file__).resolve().parent.parent
RESULTS_FILE = ROOT / "benchmarks" / "RESULTS.md"
PACKING = ("first-fit", "best-fit", "whole-gpu", "quota-only", "hived-plain", "hived")
LEVELS = ("0.5", "0.6", "0.7", "0.8", "0.9", "1.0", "1.1", "1.2", "1.3")
BORROW_MIX = (("vc-busy", 0.5), ("nlp", 0.2), ("cv", 0.1), ("vc-idle", 0.2))


def packing(nodes: int, jobs: int, seed: int) -> dict[str, Any]:
    inventory, workload = generate(SharingTraceSpec(nodes=nodes, jobs=jobs, seed=seed))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "inventory.csv"
        path.write_text(inventory)
        cluster = load_cluster(path)
    out: dict[str, Any] = {"nodes": cluster.node_count, "gpus": cluster.capacity, "jobs": len(workload)}
    for policy in PACKING:
        t0, cpu0 = time.perf_counter(), time.process_time()
        m = run(cluster, workload, policy, departures=False)
        out[policy] = {
            "allocation": m["allocation_ratio_by_arrived"],
            "held": m["held_ratio_by_arrived"],
            "fragmentation": m["fragmentation_by_arrived"],
            "wall_s": round(time.perf_counter() - t0, 1),
            "cpu_s": round(time.process_time() - cpu0, 1),
            "decision_p99_ms": m["decision_latency_ms"]["p99"],
        }
        print(f"  seed {seed} {policy}: {m['allocation_ratio_by_arrived']['1.0']} at 100%", flush=True)
    return out


def borrowing(seed: int) -> dict[str, Any]:
    cluster = load_cluster(ROOT / "examples" / "sim" / "sharing-3vc.yaml")
    spec = WorkloadSpec(
        jobs=600, seed=seed, capacity_gpus=96, load=0.8, vcs=BORROW_MIX, opportunistic=0.0, max_job_gpus=16
    )
    jobs = generate_workload(spec)
    out: dict[str, Any] = {}
    for name in ("hived", "hived-no-borrow", "quota-only"):
        if name == "hived":
            policy = HivedPolicy(cluster)
            m = simulate(policy, cluster.capacity, jobs, nodes=cluster.nodes).metrics
            waits = [wait for _, wait, _ in policy.reclaim_waits]
            extra = {"reclaims": len(waits), "reclaim_wait_max_s": max(waits, default=0.0)}
        else:
            m = replay(cluster, jobs, name).metrics
            extra = {}
        out[name] = {
            "per_vc": {
                vc: {"jct_avg_s": f["jct_s"]["avg"], "queueing_avg_s": f["queueing_delay_s"]["avg"]}
                for vc, f in m["per_vc"].items()
            },
            "allocation_ratio": m["gpu_allocation_ratio"],
            "preemptions": m["preemptions"],
            **extra,
        }
    return out


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def tables(result: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for seed, p in result["packing"].items():
        lines += [
            f"**Packing, seed {seed}** ({p['nodes']} nodes, {p['gpus']} GPUs, {p['jobs']} jobs, no"
            " departures): allocation ratio (GPU demand placed / capacity) at arrived demand; GPUs held and"
            " fragmentation (free GPU capacity no waiting job could use) at 100%; replay wall/CPU time.",
            "",
            "| policy | "
            + " | ".join(f"{lv}x" for lv in LEVELS)
            + " | held at 1.0x | fragm. at 1.0x | wall / CPU |",
            "|---|" + "---|" * (len(LEVELS) + 3),
        ]
        for policy in PACKING:
            r = p[policy]
            cells = " | ".join(_pct(r["allocation"][lv]) for lv in LEVELS)
            lines.append(
                f"| {policy} | {cells} | {_pct(r['held']['1.0'])} | {_pct(r['fragmentation']['1.0'])}"
                f" | {r['wall_s']} s / {r['cpu_s']} s |"
            )
        lines.append("")
    for seed, b in result["borrowing"].items():
        vcs = sorted(next(iter(b.values()))["per_vc"])
        lines += [
            f"**Borrowing, seed {seed}** (`examples/sim/sharing-3vc.yaml`, 600 jobs, vc-busy asks ~2.5x its"
            " quota; reclaim grace 600 s): average completion / queueing time per VC (s).",
            "",
            "| policy | " + " | ".join(vcs) + " | allocation ratio | preemptions | reclaims (max wait) |",
            "|---|" + "---|" * (len(vcs) + 3),
        ]
        for name, r in b.items():
            cells = " | ".join(
                f"{r['per_vc'][vc]['jct_avg_s']:.0f} / {r['per_vc'][vc]['queueing_avg_s']:.0f}" for vc in vcs
            )
            reclaims = f"{r['reclaims']} ({r['reclaim_wait_max_s']:.0f} s)" if "reclaims" in r else "-"
            lines.append(f"| {name} | {cells} | {r['allocation_ratio']} | {r['preemptions']} | {reclaims} |")
        lines.append("")
    return lines


def record(result: dict[str, Any], command: str, load: str) -> None:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "",
        f"## {now} — sim_sharing, GPU sharing and borrowing (issue 18 parts 1 and 2)",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {describe()}; load average before the run: {load} (shared machine: wall times are"
        " inflated, the CPU time is the figure to compare). In process, no I/O.",
        "",
        *tables(result),
    ]
    with RESULTS_FILE.open("a", encoding="utf-8") as f:
        f.write("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--nodes", type=int, default=1500)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args(argv)
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3]) if Path("/proc/loadavg").exists() else "?"
    result: dict[str, Any] = {"packing": {}, "borrowing": {}}
    for seed in args.seeds:
        result["packing"][str(seed)] = packing(args.nodes, args.jobs, seed)
        result["borrowing"][str(seed)] = borrowing(seed)
    print("\n".join(tables(result)))
    if args.record:
        argv_text = " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
        record(result, f"python benchmarks/sim_sharing.py {argv_text}".strip(), load)
    print(json.dumps({"benchmark": "sim_sharing", "cpus": os.cpu_count(), **result}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
