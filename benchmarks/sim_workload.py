"""Write a seeded synthetic workload CSV for ``pai-sim`` (see ``pai_scheduler.sim.workloads``).

    python benchmarks/sim_workload.py --jobs 500 --capacity-gpus 64 --load 0.9 \
        --vcs vc-a:0.4,vc-b:0.4,vc-c:0.2 --seed 1 --out examples/sim/jobs-500.csv
    python benchmarks/sim_workload.py --starvation --out examples/sim/starvation-jobs.csv

``--starvation`` writes the backfill-starvation workload instead (``pai_scheduler.sim.workloads.starvation``:
one 16-GPU gang among a 36 h overload of 1-2 GPU jobs in VC vc-a; ``--seed`` is its only other input).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pai_scheduler.sim.jobs import format_workload_csv
from pai_scheduler.sim.workloads import StarvationSpec, WorkloadSpec, generate, starvation


def parse_vcs(text: str) -> tuple[tuple[str, float], ...]:
    out = []
    for part in text.split(","):
        name, _, weight = part.partition(":")
        out.append((name.strip(), float(weight) if weight else 1.0))
    return tuple(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--capacity-gpus", type=int, default=64, help="GPUs of the cluster the load targets")
    parser.add_argument("--load", type=float, default=0.9, help="offered load as a fraction of capacity")
    parser.add_argument("--duration-median", type=float, default=1800.0, help="seconds")
    parser.add_argument("--duration-sigma", type=float, default=1.2)
    parser.add_argument("--vcs", type=parse_vcs, default=(("default", 1.0),), help="name:share,...")
    parser.add_argument("--opportunistic", type=float, default=0.1, help="fraction of jobs at priority -1")
    parser.add_argument("--fractional", type=float, default=0.0, help="fraction of 1-GPU jobs asking a share")
    parser.add_argument("--gpu-type", default="")
    parser.add_argument("--max-job-gpus", type=int, default=0)
    parser.add_argument("--starvation", action="store_true", help="the backfill-starvation workload")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.starvation:
        jobs = starvation(StarvationSpec(seed=args.seed))
        Path(args.out).write_text(format_workload_csv(jobs), encoding="utf-8")
        print(f"wrote {len(jobs)} jobs to {args.out}")
        return 0
    spec = WorkloadSpec(
        jobs=args.jobs,
        seed=args.seed,
        capacity_gpus=args.capacity_gpus,
        load=args.load,
        duration_median_s=args.duration_median,
        duration_sigma=args.duration_sigma,
        vcs=args.vcs,
        opportunistic=args.opportunistic,
        fractional=args.fractional,
        gpu_type=args.gpu_type,
        max_job_gpus=args.max_job_gpus,
    )
    jobs = generate(spec)
    Path(args.out).write_text(format_workload_csv(jobs), encoding="utf-8")
    print(f"wrote {len(jobs)} jobs to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
