"""``hived``: the HiveD allocator (``pai_scheduler.hived.allocator``) behind the simulator's protocol.

The simulator plays the orchestrator's part: when the allocator answers ``Preempting`` (the gang reserved
its cells; whole victim gangs must stop first), the victims are stopped at once, by releasing them, and
the allocator's ``Allocated`` for the preemptor comes out of the last of those releases. Victims are
reported to the engine as preempted and come back as new attempts (a new allocator key per attempt, so a
resubmission is never mistaken for the idempotent repeat of a submission).

Fractional tasks (``gpu_per_task`` below 1) ask the allocator for a share of one GPU (``gpu_milli``) and
hold exactly that fraction. Tasks asking for no GPU go to the cluster's CPU leaves (they hold no GPU), or,
on a cluster without any, hold one GPU leaf each as OpenPAI does. Requests the allocator would raise
``UnsupportedRequestError`` for are reported as rejected with its reason: the simulator measures the
allocator as it is, it does not round requests into something else. ``Downgraded`` decisions (lazy
preemption) need nothing here: the gang keeps running where it is (the simulator's workloads do not ask
for lazy preemption).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from types import MappingProxyType

from pai_scheduler.hived.allocator import PROTECT_HEAD_AFTER_S, HivedAllocator
from pai_scheduler.hived.cells import MILLI_PER_LEAF
from pai_scheduler.hived.decisions import Allocated, Decision, PodPlacement, Preempting, Rejected
from pai_scheduler.hived.errors import UnsupportedRequestError
from pai_scheduler.hived.requests import GangRequest, Member
from pai_scheduler.sim import policy as p
from pai_scheduler.sim.cluster import SimCluster
from pai_scheduler.sim.jobs import SimJob

TASK_ROLE = "task"


def gang_of(job: SimJob, key: str) -> GangRequest:
    gpu = job.gpu_per_task
    whole, milli = (int(gpu), 0) if gpu == int(gpu) else (0, max(1, round(gpu * MILLI_PER_LEAF)))
    member = Member(
        TASK_ROLE, job.tasks, whole, cpu=job.cpu_per_task, memory_mb=job.memory_mb_per_task, gpu_milli=milli
    )
    return GangRequest(key, job.vc, job.priority, (member,), job.gpu_types)


def _held(pl: PodPlacement, cpu_types: frozenset[str]) -> float:
    """GPUs the pod holds (CPU leaves are none)."""
    if pl.leaf_type in cpu_types:
        return 0.0
    return pl.milli / MILLI_PER_LEAF if pl.is_share else float(len(pl.leaves))


class HivedPolicy:
    def __init__(
        self,
        cluster: SimCluster,
        protect_head_after_s: float | None = PROTECT_HEAD_AFTER_S,
        *,
        mix_aware: bool = True,
        name: str = "hived",
    ):
        """``protect_head_after_s``: backfill protection as the service runs it (its default is the
        service's); None runs the plain HiveD behaviour, where nothing is ever held. ``mix_aware``: the
        fragmentation-aware chain preference (``hived/mix.py``) as the service runs it; off, chains in
        name order (plain HiveD)."""
        self.name = name
        self._alloc = HivedAllocator(cluster.config, protect_head_after_s, mix_aware=mix_aware)
        self.grace = cluster.config.reclaim_grace_s
        self._cpu_types = frozenset(s.name for s in cluster.config.sku_types if s.gpu == 0)
        # The allocator sees simulated time only when it protects heads (time changes nothing else).
        self._clock = protect_head_after_s is not None
        self._now: float | None = None
        self._jobs: dict[str, SimJob] = {}
        self._attempt: dict[str, int] = {}
        self._job_of_key: dict[str, str] = {}
        self._key_of_job: dict[str, str] = {}
        self._running: dict[str, p.Started] = {}
        self._time = 0.0  # simulated time of the current call
        # Borrowers being reclaimed, running on until the grace ends: job -> when it is stopped.
        self._stopping: dict[str, float] = {}
        # Reclaims: lender's job -> when it started preempting borrowers; and, once it started, how long
        # it waited for them (the figure the grace bounds).
        self._reclaiming: dict[str, float] = {}
        self.reclaim_waits: list[tuple[str, float, float]] = []  # (job, wait, grace)

    def running(self) -> Mapping[str, p.Started]:
        return MappingProxyType(self._running)

    def submit(self, job: SimJob, now: float) -> p.Outcome:
        self._time = now
        self._now = now if self._clock else None
        self._jobs[job.job_id] = job
        return self._handle(self._submit(job))

    def stop(self, job_id: str, now: float) -> p.Outcome:
        """A reclaimed borrower's grace is over: it stops now (its lender's gang is allocated)."""
        if self._stopping.pop(job_id, None) is None:
            return p.Outcome()
        self._time = now
        self._now = now if self._clock else None
        key = self._key_of_job.pop(job_id)
        del self._job_of_key[key]
        del self._running[job_id]
        return p.Outcome(preempted=(job_id,)) + self._handle(self._alloc.release(key, now=self._now))

    def release(self, job_id: str, now: float) -> p.Outcome:
        self._time = now
        self._now = now if self._clock else None
        self._stopping.pop(job_id, None)
        key = self._key_of_job.pop(job_id, None)
        if key is None:
            return p.Outcome()
        del self._job_of_key[key]
        self._running.pop(job_id, None)
        return self._handle(self._alloc.release(key, now=self._now))

    # ------------------------------------------------------------------------------------ internals

    def _submit(self, job: SimJob) -> list[Decision | p.Rejected]:
        attempt = self._attempt.get(job.job_id, -1) + 1
        self._attempt[job.job_id] = attempt
        key = f"{job.job_id}#{attempt}"
        try:
            decision = self._alloc.submit(gang_of(job, key), now=self._now)
        except UnsupportedRequestError as e:
            return [p.Rejected(job.job_id, str(e))]
        if isinstance(decision, Rejected):
            return [p.Rejected(job.job_id, decision.reason)]
        self._job_of_key[key] = job.job_id
        self._key_of_job[job.job_id] = key
        return [decision]

    def _handle(self, decisions: Iterable[Decision | p.Rejected]) -> p.Outcome:
        started: list[p.Started] = []
        preempted: list[str] = []
        rejected: list[p.Rejected] = []
        stopping: list[tuple[str, float]] = []
        waiting: set[str] = set()  # preemptors whose victims are being stopped
        work: deque[Decision | p.Rejected] = deque(decisions)
        while work:
            d = work.popleft()
            if isinstance(d, p.Rejected):
                rejected.append(d)
            elif isinstance(d, Allocated):
                waiting.discard(d.key)
                job_id = self._job_of_key[d.key]
                placements = tuple(
                    p.TaskPlacement(pl.index, pl.node, pl.leaves, pl.leaf_type, pl.milli)
                    for pl in d.placements
                )
                s = p.Started(job_id, placements, sum(_held(pl, self._cpu_types) for pl in d.placements))
                self._running[job_id] = s
                since = self._reclaiming.pop(job_id, None)
                if since is not None:
                    self.reclaim_waits.append((job_id, self._time - since, self.grace))
                started.append(s)
            elif isinstance(d, Preempting):
                waiting.add(d.key)
                if d.grace_s > 0:
                    self._reclaiming.setdefault(self._job_of_key[d.key], self._time)
                deferred = False
                for victim in d.victims:
                    victim_job = self._job_of_key.get(victim)
                    if victim_job is None:
                        continue  # already stopped for an earlier preemptor in this call
                    if d.grace_s > 0 and not any(s.job_id == victim_job for s in started):
                        # A reclaimed borrower runs on for the grace; the engine stops it then.
                        deferred = True
                        if victim_job not in self._stopping:
                            self._stopping[victim_job] = self._time + d.grace_s
                            stopping.append((victim_job, self._time + d.grace_s))
                        continue
                    del self._job_of_key[victim]
                    del self._key_of_job[victim_job]
                    del self._running[victim_job]
                    work.extend(self._alloc.release(victim, now=self._now))
                    if any(s.job_id == victim_job for s in started):
                        # It started in this very call, so the engine never saw it run: take the start
                        # back and queue it again here, as a new attempt.
                        started = [s for s in started if s.job_id != victim_job]
                        work.extend(self._submit(self._jobs[victim_job]))
                    else:
                        preempted.append(victim_job)  # the engine stops it and submits it again
                if deferred:
                    waiting.discard(d.key)  # allocated when its reclaimed borrowers stop (``stop``)
            # Queued: it stays in the allocator's queue. Released: nothing is held any more.
        if waiting:
            raise RuntimeError(f"preemptions did not complete after their victims stopped: {sorted(waiting)}")
        return p.Outcome(tuple(started), tuple(preempted), tuple(rejected), tuple(stopping))
