"""Elastic jobs in the simulator: the workload transforms that make jobs elastic, or run them rigidly.

An elastic job (``SimJob.min_tasks``) has fixed work, ``tasks * duration`` task-seconds: ``duration`` is its
run time at its largest. The engine divides the work left by the tasks running at each moment, so a job
that runs with half its maximum takes twice as long (perfect scaling: the simplest model that rewards
growth; real jobs scale worse, so the figures are an upper bound on what growth gives).

* ``rigid_at_min``: the job as a rigid job of its minimum, with the same work (``duration`` stretched by
  ``tasks / min_tasks``). It is what a policy that cannot grow a job runs (first-fit, best-fit, the
  whole-GPU core, quota-only): the engine hands it this view, so that every policy runs the same work.
* ``rigid_at_max``: the job as a rigid job of its maximum (the same work, at full size, all or nothing).
* ``make_elastic``: a seeded fraction of a workload's GPU jobs made elastic, each keeping its drawn size as
  its minimum and able to grow ``growth`` times larger; its work is unchanged (what it would run at its
  minimum for the drawn duration), so ``rigid_at_min`` of the result is the original job.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import replace

from pai_scheduler.sim.jobs import SimJob


def rigid_at_min(job: SimJob) -> SimJob:
    if not job.elastic:
        return job
    return replace(job, tasks=job.min_tasks, duration=job.work / job.min_tasks, min_tasks=0)


def rigid_at_max(job: SimJob) -> SimJob:
    return replace(job, min_tasks=0) if job.elastic else job


def make_elastic(
    jobs: Sequence[SimJob], fraction: float, growth: int = 4, seed: int = 0, max_gpus: float = math.inf
) -> list[SimJob]:
    """A copy of ``jobs`` in which a seeded ``fraction`` of the jobs asking for GPUs are elastic
    (``min_tasks`` their drawn tasks, ``tasks`` ``growth`` times that, ``duration`` divided by ``growth``:
    the same work). ``max_gpus`` (e.g. the cluster's GPUs) caps a job's maximum: the growth factor is
    lowered to fit, and a job that cannot at least double within it stays rigid."""
    if not 0 <= fraction <= 1:
        raise ValueError(f"the elastic fraction must be within 0..1 (got {fraction})")
    if growth < 2:
        raise ValueError(f"an elastic job must be able to grow at least 2 times its minimum (got {growth})")
    rng = random.Random(seed)
    out = []
    for job in jobs:
        # One draw per job, whatever it is, so that the same seed picks the same jobs in any workload prefix.
        pick = rng.random() < fraction
        factor = 0  # a job asking for no GPU stays rigid
        if job.gpu_per_task > 0:
            factor = growth if math.isinf(max_gpus) else min(growth, int(max_gpus // job.gpus))
        if pick and not job.elastic and factor >= 2:
            job = replace(job, min_tasks=job.tasks, tasks=job.tasks * factor, duration=job.duration / factor)
        out.append(job)
    return out
