"""A seeded synthetic workload: the job mix of a shared GPU cluster, as a list of :class:`SimJob`.

Shape, after the published traces of multi-tenant GPU clusters (Microsoft's Philly, Alibaba PAI): most jobs
ask for one GPU, some for 2, 4 or 8 on one node, a few are 16- or 32-GPU gangs of 8-GPU tasks; arrivals are
Poisson; durations are lognormal (a long tail: most jobs are short, a few run for hours). The arrival rate
is derived from the target offered load, so the same ``load`` means the same pressure on any cluster.
Everything comes from one ``random.Random(seed)``: the same arguments always give the same file.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from pai_scheduler.sim.jobs import SimJob

# (tasks, gpu_per_task, weight): the size mix in GPUs is 1: 60%, 2: 12%, 4: 11%, 8: 10%, 16: 5%, 32: 2%.
SIZE_MIX: tuple[tuple[int, float, float], ...] = (
    (1, 1.0, 0.60),
    (1, 2.0, 0.12),
    (1, 4.0, 0.11),
    (1, 8.0, 0.10),
    (2, 8.0, 0.05),
    (4, 8.0, 0.02),
)


@dataclass(frozen=True)
class WorkloadSpec:
    jobs: int = 500
    seed: int = 0
    capacity_gpus: int = 64  # of the cluster the load is meant for
    load: float = 0.9  # offered GPU-seconds per second, as a fraction of capacity
    duration_median_s: float = 1800.0
    duration_sigma: float = 1.2  # of the underlying normal: 1.2 gives a p95 about 7x the median
    max_duration_s: float = 7 * 24 * 3600.0
    vcs: tuple[tuple[str, float], ...] = (("default", 1.0),)  # name, share of jobs
    opportunistic: float = 0.1  # fraction of jobs submitted at priority -1
    fractional: float = 0.0  # fraction of 1-GPU jobs that ask for a share (0.25 or 0.5) instead
    gpu_type: str = ""  # written into every row; empty: any type
    max_job_gpus: int = 0  # drop sizes above this (e.g. the cluster's size); 0: keep all


def mean_gpus(mix: Sequence[tuple[int, float, float]]) -> float:
    total = sum(w for _, _, w in mix)
    return sum(t * g * w for t, g, w in mix) / total


def generate(spec: WorkloadSpec) -> list[SimJob]:
    if spec.jobs < 0 or spec.capacity_gpus <= 0 or spec.load <= 0:
        raise ValueError("jobs must be >= 0, capacity_gpus and load > 0")
    if not spec.vcs or any(w <= 0 for _, w in spec.vcs):
        raise ValueError("vcs must name at least one VC, each with a positive share")
    rng = random.Random(spec.seed)
    mix = [m for m in SIZE_MIX if not spec.max_job_gpus or m[0] * m[1] <= spec.max_job_gpus]
    if not mix:
        raise ValueError(f"no job size fits max_job_gpus={spec.max_job_gpus}")
    mu = math.log(spec.duration_median_s)
    mean_duration = math.exp(mu + spec.duration_sigma**2 / 2)
    # Offered load = rate * E[gpus] * E[duration]; solve for the rate.
    rate = spec.load * spec.capacity_gpus / (mean_gpus(mix) * mean_duration)
    vc_names = [name for name, _ in spec.vcs]
    vc_weights = [w for _, w in spec.vcs]
    size_weights = [w for _, _, w in mix]
    width = len(str(max(spec.jobs - 1, 0)))
    jobs = []
    t = 0.0
    for i in range(spec.jobs):
        t += rng.expovariate(rate)
        tasks, gpu, _ = rng.choices(mix, size_weights)[0]
        if tasks == 1 and gpu == 1.0 and rng.random() < spec.fractional:
            gpu = rng.choice((0.25, 0.5))
        duration = min(spec.max_duration_s, max(1.0, rng.lognormvariate(mu, spec.duration_sigma)))
        vc = rng.choices(vc_names, vc_weights)[0]
        priority = -1 if rng.random() < spec.opportunistic else 100
        jobs.append(
            SimJob(
                job_id=f"job-{i:0{width}d}",
                submit_time=round(t, 3),
                duration=round(duration, 3),
                vc=vc,
                priority=priority,
                tasks=tasks,
                gpu_per_task=gpu,
                gpu_types=(spec.gpu_type,) if spec.gpu_type else (),
                # OpenPAI's default SKU shape on an 8-GPU node: a few cores and some memory per GPU.
                cpu_per_task=max(1.0, 4.0 * math.ceil(gpu)),
                memory_mb_per_task=8192 * max(1, math.ceil(gpu)),
            )
        )
    return jobs


@dataclass(frozen=True)
class StarvationSpec:
    """One VC, a steady overload of small jobs, and one big gang submitted early (backfill starvation).

    Small jobs (1 or 2 GPUs, the big gang's priority) arrive every ``small_interval_s`` from time 0 until
    ``stream_s`` and each runs ``small_min_s``..``small_max_s``; offered load above the VC's quota keeps a
    queue of them, so without backfill protection the freed GPUs always go to a small job that fits and the
    big gang waits for the stream to end."""

    seed: int = 0
    vc: str = "vc-a"
    quota_gpus: int = 16  # the VC's quota (the small jobs' load is sized against it)
    small_interval_s: float = 75.0
    small_min_s: float = 600.0
    small_max_s: float = 1800.0
    stream_s: float = 36 * 3600.0  # longer than the service's 24 h starvation guard
    big_submit_s: float = 300.0
    big_tasks: int = 2
    big_gpu_per_task: int = 8
    big_duration_s: float = 3600.0
    priority: int = 100


BIG_JOB_ID = "big"


def starvation(spec: StarvationSpec) -> list[SimJob]:
    """The jobs of the starvation workload, in submission order; the big gang's id is ``BIG_JOB_ID``."""
    if spec.small_interval_s <= 0 or not 0 < spec.small_min_s <= spec.small_max_s or spec.stream_s <= 0:
        raise ValueError("small_interval_s, stream_s and small_min_s..small_max_s must be positive")
    rng = random.Random(spec.seed)

    def one(job_id: str, t: float, duration: float, tasks: int, gpu: float) -> SimJob:
        return SimJob(
            job_id=job_id,
            submit_time=round(t, 3),
            duration=round(duration, 3),
            vc=spec.vc,
            priority=spec.priority,
            tasks=tasks,
            gpu_per_task=gpu,
            gpu_types=(),
            cpu_per_task=4.0 * gpu,
            memory_mb_per_task=int(8192 * gpu),
        )

    jobs: list[SimJob] = []
    big = one(
        BIG_JOB_ID, spec.big_submit_s, spec.big_duration_s, spec.big_tasks, float(spec.big_gpu_per_task)
    )
    n = math.floor(spec.stream_s / spec.small_interval_s)
    for i in range(n):
        t = i * spec.small_interval_s
        if big not in jobs and t > spec.big_submit_s:
            jobs.append(big)
        gpu = float(rng.choice((1, 1, 2)))
        jobs.append(one(f"small-{i:04d}", t, rng.uniform(spec.small_min_s, spec.small_max_s), 1, gpu))
    if big not in jobs:
        jobs.append(big)
    return jobs
