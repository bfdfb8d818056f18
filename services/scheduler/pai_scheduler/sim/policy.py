"""What the simulator asks of a scheduling policy, and what it gets back.

A policy is the scheduler's pure core behind a thin adapter. The engine drives it with two calls and reads
one view:

* ``submit(job, now)`` — a job arrives (or comes back after being preempted, as a new attempt);
* ``release(job_id, now)`` — a running job finished: its resources come back;
* ``stop(job_id, now)`` — the grace a policy gave a running job it preempts (``Outcome.stopping``) is over:
  the job stops now (policies that never defer a preemption answer an empty outcome);
* ``running()`` — the jobs that hold resources now.

A policy that models elastic jobs (``elastic = True``) starts an elastic job with its minimum
(``Started.instances``) and reports each later change of its size as ``Resized``; the engine hands any
other policy each elastic job as a rigid job of its minimum with the same work (``elastic.rigid_at_min``).

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
    # A share of leaves[0] in thousandths of a GPU (GPU sharing); 0: the task holds its leaves whole.
    milli: int = 0


@dataclass(frozen=True)
class Started:
    job_id: str
    placements: tuple[TaskPlacement, ...]
    # GPUs this job holds, as the policy accounts for them: a scheduler without GPU sharing holds a whole
    # GPU for a 0.5-GPU task, so this can exceed the job's demand.
    gpus: float
    # Tasks running; 0: every task of the job as the policy was given it. An elastic job starts with fewer.
    instances: int = 0


@dataclass(frozen=True)
class Resized:
    """An elastic job's size changed while it runs (it grew into idle cells, or growth was preempted): the
    tasks it runs now, every placement it holds now and the GPUs they hold."""

    job_id: str
    instances: int
    placements: tuple[TaskPlacement, ...]
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
    # Running jobs to be stopped later (preempted after a grace): (job, when); the engine then calls
    # ``stop`` at that time, unless the job ended first.
    stopping: tuple[tuple[str, float], ...] = ()
    # Running elastic jobs whose size changed, applied after ``started`` (the last one of a job counts).
    resized: tuple[Resized, ...] = ()

    def __add__(self, other: Outcome) -> Outcome:
        return Outcome(
            self.started + other.started,
            self.preempted + other.preempted,
            self.rejected + other.rejected,
            self.stopping + other.stopping,
            self.resized + other.resized,
        )


class Policy(Protocol):
    name: str

    def submit(self, job: SimJob, now: float) -> Outcome: ...

    def release(self, job_id: str, now: float) -> Outcome: ...

    def stop(self, job_id: str, now: float) -> Outcome: ...

    def running(self) -> Mapping[str, Started]: ...


PolicyFactory = Callable[[SimCluster], Policy]
