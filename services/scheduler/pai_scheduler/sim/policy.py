"""What the simulator asks of a scheduling policy, and what it gets back.

A policy is the scheduler's pure core behind a thin adapter. The engine drives it with two calls and reads
one view:

* ``submit(job, now)`` — a job arrives (or comes back after being preempted, as a new attempt);
* ``release(job_id, now)`` — a running job finished: its resources come back;
* ``running()`` — the jobs that hold resources now.

Both calls return an :class:`Outcome`: the jobs that *started* by this call (with their placements; a
release may start queued jobs), the running jobs that were *preempted* (the engine stops them and submits
them again), and the jobs *rejected* (they can never run on this cluster). A job that is none of these
stays queued inside the policy. Policies are deterministic: the same calls give the same outcomes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from pai_scheduler.sim.cluster import SimCluster
from pai_scheduler.sim.jobs import SimJob


@dataclass(frozen=True)
class TaskPlacement:
    task: int  # 0..tasks-1
    node: str
    leaves: tuple[int, ...]  # device indices on the node
    leaf_type: str = ""


@dataclass(frozen=True)
class Started:
    job_id: str
    placements: tuple[TaskPlacement, ...]
    # GPUs this job holds, as the policy accounts for them: a scheduler without GPU sharing holds a whole
    # GPU for a 0.5-GPU task, so this can exceed the job's demand.
    gpus: float


@dataclass(frozen=True)
class Rejected:
    job_id: str
    reason: str


@dataclass(frozen=True)
class Outcome:
    started: tuple[Started, ...] = ()
    preempted: tuple[str, ...] = ()
    rejected: tuple[Rejected, ...] = ()

    def __add__(self, other: Outcome) -> Outcome:
        return Outcome(
            self.started + other.started, self.preempted + other.preempted, self.rejected + other.rejected
        )


class Policy(Protocol):
    name: str

    def submit(self, job: SimJob, now: float) -> Outcome: ...

    def release(self, job_id: str, now: float) -> Outcome: ...

    def running(self) -> Mapping[str, Started]: ...


PolicyFactory = Callable[[SimCluster], Policy]


def policies() -> dict[str, PolicyFactory]:
    """Every policy this installation can run, by name, in the order a comparison shows them."""
    # Imported here: the policy modules import this one for the protocol's types.
    from pai_scheduler.sim.baselines import FirstFitPolicy, QuotaOnlyPolicy
    from pai_scheduler.sim.hived_policy import HivedPolicy

    def hived_strict(cluster: SimCluster) -> Policy:
        return HivedPolicy(cluster, protect_head_after_s=0.0)

    def hived_no_protect(cluster: SimCluster) -> Policy:
        return HivedPolicy(cluster, protect_head_after_s=None)

    return {
        "first-fit": FirstFitPolicy,
        "quota-only": QuotaOnlyPolicy,
        # As the service runs it by default: backfill protection as a starvation guard (24 h).
        "hived": HivedPolicy,
        # Every guaranteed head protected at once: the backfill rule to the letter.
        "hived-strict": hived_strict,
        # Plain HiveD: backfill always passes a waiting head.
        "hived-no-protect": hived_no_protect,
    }


def make_policy(name: str, cluster: SimCluster) -> Policy:
    found = policies()
    if name not in found:
        raise ValueError(f"unknown policy {name!r}; available: {', '.join(found)}")
    return found[name](cluster)
