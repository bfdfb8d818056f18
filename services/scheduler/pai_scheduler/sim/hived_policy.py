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

Elastic jobs (``SimJob.min_tasks``) run as the service runs them (``job_gangs.py``): the gang of the job's
minimum is submitted as any job's; once it is allocated, the tasks above the minimum are asked for as the
orchestrator asks for them, a second request of growth pods turned into gangs by the scheduler's own
``job_gangs.requests_of`` (one opportunistic gang per task, keyed ``<job>#<attempt>:task:<i>:grow``). Each
growth gang allocated grows the job (``Resized``); one preempted shrinks it, at once (the service's notice
to a shrunk task is not modelled), and is asked for again after the call, as the orchestrator does; the
gang preempted stops the whole job (growth included), as today. A growth request the allocator rejects is
counted (``growth_rejected``), and the job runs without that task.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from types import MappingProxyType

from pai_common.contract.events import SchedulingRequested
from pai_common.contract.types import PodRequest
from pai_scheduler.hived.allocator import PROTECT_HEAD_AFTER_S, HivedAllocator
from pai_scheduler.hived.cells import MILLI_PER_LEAF
from pai_scheduler.hived.decisions import Allocated, Decision, PodPlacement, Preempting, Rejected
from pai_scheduler.hived.errors import UnsupportedRequestError
from pai_scheduler.hived.requests import GangRequest, Member
from pai_scheduler.job_gangs import parse_key, requests_of
from pai_scheduler.sim import policy as p
from pai_scheduler.sim.cluster import SimCluster
from pai_scheduler.sim.jobs import SimJob

TASK_ROLE = "task"


def _gpu_request(job: SimJob) -> tuple[int, int]:
    """(whole GPUs, milli-GPU share) one task asks for."""
    gpu = job.gpu_per_task
    return (int(gpu), 0) if gpu == int(gpu) else (0, max(1, round(gpu * MILLI_PER_LEAF)))


def gang_of(job: SimJob, key: str) -> GangRequest:
    """The job's gang: all its tasks, or an elastic job's minimum."""
    whole, milli = _gpu_request(job)
    member = Member(
        TASK_ROLE, job.minimum, whole, cpu=job.cpu_per_task, memory_mb=job.memory_mb_per_task, gpu_milli=milli
    )
    return GangRequest(key, job.vc, job.priority, (member,), job.gpu_types)


def growth_of(job: SimJob, attempt: int, indices: Iterable[int]) -> list[GangRequest]:
    """The growth gangs of an elastic job's tasks ``indices``, built by the scheduler's own code from the
    request the orchestrator sends (cores round up to whole ones, as a PodRequest carries them)."""
    whole, milli = _gpu_request(job)
    pods = [
        PodRequest(
            task_role=TASK_ROLE,
            index=i,
            gpu=whole,
            cpu=math.ceil(job.cpu_per_task),
            memory_mb=job.memory_mb_per_task,
            sku_types=job.gpu_types,
            gpu_milli=milli,
            growth=True,
        )
        for i in indices
    ]
    body = SchedulingRequested(
        job_key=job.job_id, attempt_id=attempt, virtual_cluster=job.vc, priority=job.priority, pods=pods
    )
    return requests_of(body)


def _held(pl: PodPlacement, cpu_types: frozenset[str]) -> float:
    """GPUs the pod holds (CPU leaves are none)."""
    if pl.leaf_type in cpu_types:
        return 0.0
    return pl.milli / MILLI_PER_LEAF if pl.is_share else float(len(pl.leaves))


class HivedPolicy:
    elastic = True  # grows and shrinks elastic jobs (the engine hands it them as they are)

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
        # Elastic jobs: growth key -> job, job -> its growth keys by task index (asked for: queued or placed),
        # the placements of its gang and of its placed growth.
        self._job_of_growth: dict[str, str] = {}
        self._growth: dict[str, dict[int, str]] = {}
        self._gang: dict[str, tuple[p.TaskPlacement, ...]] = {}
        self._grown: dict[str, dict[int, p.TaskPlacement]] = {}
        self.growth_rejected = 0

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
        decisions = self._drop_growth(job_id) + self._alloc.release(key, now=self._now)
        return p.Outcome(preempted=(job_id,)) + self._handle(decisions)

    def release(self, job_id: str, now: float) -> p.Outcome:
        self._time = now
        self._now = now if self._clock else None
        self._stopping.pop(job_id, None)
        key = self._key_of_job.pop(job_id, None)
        if key is None:
            return p.Outcome()
        del self._job_of_key[key]
        self._running.pop(job_id, None)
        return self._handle(self._drop_growth(job_id) + self._alloc.release(key, now=self._now))

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
        resized: set[str] = set()  # elastic jobs whose size changed
        shrunk: set[str] = set()  # elastic jobs whose growth was preempted: asked for again at the end
        work: deque[Decision | p.Rejected] = deque(decisions)
        while work or shrunk:
            if not work:
                for job_id in sorted(shrunk):
                    if job_id in self._running and job_id not in self._stopping:
                        work.extend(self._grow(self._jobs[job_id]))
                shrunk.clear()
                continue
            d = work.popleft()
            if isinstance(d, p.Rejected):
                rejected.append(d)
            elif isinstance(d, Rejected) and d.key in self._job_of_growth:
                self._forget_growth(d.key)
                self.growth_rejected += 1
            elif isinstance(d, Allocated) and parse_key(d.key).growth:
                waiting.discard(d.key)
                job_id = self._job_of_growth.get(d.key, "")
                if job_id not in self._running:
                    continue  # released since (its job ended or was preempted in this call)
                index = parse_key(d.key).index
                assert index is not None and len(d.placements) == 1, d
                pl = d.placements[0]
                self._grown[job_id][index] = p.TaskPlacement(
                    index, pl.node, pl.leaves, pl.leaf_type, pl.milli
                )
                self._refresh(job_id)
                resized.add(job_id)
            elif isinstance(d, Allocated):
                waiting.discard(d.key)
                job_id = self._job_of_key[d.key]
                placements = tuple(
                    p.TaskPlacement(pl.index, pl.node, pl.leaves, pl.leaf_type, pl.milli)
                    for pl in d.placements
                )
                job = self._jobs[job_id]
                s = p.Started(
                    job_id,
                    placements,
                    sum(_held(pl, self._cpu_types) for pl in d.placements),
                    job.minimum if job.elastic else 0,
                )
                self._running[job_id] = s
                if job.elastic:
                    self._gang[job_id] = placements
                    self._grown[job_id] = {}
                    work.extend(self._grow(job))
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
                    if parse_key(victim).growth:
                        grown = self._job_of_growth.get(victim)
                        if grown is not None:  # else: gone with its job earlier in this call
                            # Shrink rather than stop: the growth task alone goes, at once.
                            self._forget_growth(victim)
                            work.extend(self._alloc.release(victim, now=self._now))
                            self._refresh(grown)
                            resized.add(grown)
                            shrunk.add(grown)
                        continue
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
                    # Below its minimum an elastic job stops whole, as any job: its growth goes first.
                    work.extend(self._drop_growth(victim_job))
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
        sizes = tuple(
            p.Resized(j, self._running[j].instances, self._running[j].placements, self._running[j].gpus)
            for j in sorted(resized)
            if j in self._running
        )
        return p.Outcome(tuple(started), tuple(preempted), tuple(rejected), tuple(stopping), sizes)

    # ------------------------------------------------------------------------------------ elastic jobs

    def _grow(self, job: SimJob) -> list[Decision | p.Rejected]:
        """Ask for the elastic job's growth tasks not asked for yet (all of them once its gang is placed;
        the shrunk ones again after a preemption)."""
        asked = self._growth.setdefault(job.job_id, {})
        missing = [i for i in range(job.minimum, job.tasks) if i not in asked]
        if not missing:
            return []
        out: list[Decision | p.Rejected] = []
        for req in growth_of(job, self._attempt[job.job_id], missing):
            index = parse_key(req.key).index
            assert index is not None
            asked[index] = req.key
            self._job_of_growth[req.key] = job.job_id
            out.append(self._alloc.submit(req, now=self._now))
        return out

    def _forget_growth(self, key: str) -> None:
        job_id = self._job_of_growth.pop(key)
        index = parse_key(key).index
        assert index is not None
        del self._growth[job_id][index]
        self._grown.get(job_id, {}).pop(index, None)

    def _drop_growth(self, job_id: str) -> list[Decision]:
        """The job stops: withdraw its queued growth, then release its placed growth."""
        keys = self._growth.pop(job_id, {})
        placed = self._grown.pop(job_id, {})
        self._gang.pop(job_id, None)
        out: list[Decision] = []
        for _, key in sorted(keys.items(), key=lambda e: (e[0] in placed, e[0])):
            del self._job_of_growth[key]
            out.extend(self._alloc.release(key, now=self._now))
        return out

    def _refresh(self, job_id: str) -> None:
        """The running job's view after its growth changed: the gang's placements and the growth's."""
        grown = self._grown[job_id]
        placements = self._gang[job_id] + tuple(grown[i] for i in sorted(grown))
        gpus = sum(
            0.0
            if pl.leaf_type in self._cpu_types
            else (pl.milli / MILLI_PER_LEAF if pl.milli else len(pl.leaves))
            for pl in placements
        )
        self._running[job_id] = p.Started(job_id, placements, gpus, len(placements))
