"""The two whole-GPU baseline policies, both over the retired first-fit core (``firstfit.py``).

* ``whole-gpu`` — the core as the service ran it before the HiveD allocator: gangs placed best-fit on whole
  GPUs, a priority-ordered backfilling queue, no VCs, no topology, no preemption. The naive baseline (the
  GPU-sharing ones are ``sharing_baselines.py``).
* ``quota-only`` — each VC's quota enforced as a number of GPUs (per leaf type) in front of the same
  placement: guaranteed jobs (priority >= 0) run while their VC's in-use GPUs plus theirs stay within the
  quota, opportunistic jobs (-1) use any idle GPU and are preempted (whole gangs, newest first) when a
  guaranteed job within its quota does not fit. Because the quota is only a number, a VC can be within its
  quota and still unable to place a gang on a fragmented cluster: the sharing anomaly HiveD removes.

Neither shares GPUs: a task asking for part of a GPU gets a whole one (the ratio of allocated GPUs counts
it as one). Leaf types are hard constraints (a job asking for ``A100`` never gets a V100), handled with one
core per leaf type; a job accepting several types is tried on each in the order it lists them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType

from pai_common.contract.types import PodRequest
from pai_scheduler.sim import policy as p
from pai_scheduler.sim.cluster import SimCluster
from pai_scheduler.sim.firstfit import Allocated, FirstFitScheduler, GangRequest, Queued, Rejected, _place
from pai_scheduler.sim.jobs import SimJob

TASK_ROLE = "task"


def whole_gpus(job: SimJob) -> int:
    """GPUs one task holds on a scheduler without sharing."""
    return math.ceil(job.gpu_per_task)


def gang_of(job: SimJob, attempt: int) -> GangRequest:
    pod_gpu = whole_gpus(job)
    pods = tuple(
        PodRequest(
            task_role=TASK_ROLE,
            index=i,
            gpu=pod_gpu,
            cpu=math.ceil(job.cpu_per_task),
            memory_mb=job.memory_mb_per_task,
        )
        for i in range(job.tasks)
    )
    return GangRequest(job_key=job.job_id, attempt_id=attempt, priority=job.priority, pods=pods)


def started_of(allocated: Allocated, leaf_type: str) -> p.Started:
    placements = tuple(
        p.TaskPlacement(task=pl.index, node=pl.node, leaves=tuple(pl.gpus), leaf_type=leaf_type)
        for pl in allocated.placements
    )
    return p.Started(allocated.request.job_key, placements, float(sum(len(pl.leaves) for pl in placements)))


class TypedCores:
    """One first-fit core per leaf type, built from the cluster's nodes."""

    def __init__(self, cluster: SimCluster):
        self.cores: dict[str, FirstFitScheduler] = {}
        for node in cluster.nodes:
            core = self.cores.setdefault(node.leaf_type, FirstFitScheduler())
            core.add_node(node.name, node.leaves)

    def candidates(self, job: SimJob) -> tuple[list[str], str | None]:
        """Leaf types the job may use, in its order of preference, or a reason it can use none."""
        if not job.gpu_types:
            return sorted(self.cores), None if self.cores else "the cluster has no accelerators"
        types = [t for t in job.gpu_types if t in self.cores]
        if not types:
            return (
                [],
                f"no node has leaf type {'|'.join(job.gpu_types)} (cluster: {', '.join(sorted(self.cores))})",
            )
        return types, None


class FirstFitPolicy:
    """The production first-fit core, its own queue included."""

    name = "whole-gpu"

    def __init__(self, cluster: SimCluster):
        self._cores = TypedCores(cluster)
        self._attempt: dict[str, int] = {}
        self._queued_on: dict[str, str] = {}  # job -> leaf type whose core queues it
        self._running: dict[str, p.Started] = {}
        self._running_on: dict[str, str] = {}

    def running(self) -> Mapping[str, p.Started]:
        return MappingProxyType(self._running)

    def submit(self, job: SimJob, now: float) -> p.Outcome:
        attempt = self._attempt.get(job.job_id, -1) + 1
        self._attempt[job.job_id] = attempt
        req = gang_of(job, attempt)
        types, reason = self._cores.candidates(job)
        if reason is not None:
            return p.Outcome(rejected=(p.Rejected(job.job_id, reason),))
        reasons: list[str] = []
        queued_on: str | None = None
        for leaf_type in types:
            core = self._cores.cores[leaf_type]
            decision = core.submit(req)
            if isinstance(decision, Allocated):
                if queued_on is not None:
                    # Queued on an earlier type while this one had room: take it back from that queue.
                    self._cores.cores[queued_on].release(job.job_id, attempt)
                return p.Outcome(started=(self._start(decision, leaf_type),))
            if isinstance(decision, Queued):
                if queued_on is None:
                    queued_on = leaf_type  # the first type that could ever run it keeps it queued
                else:
                    core.release(job.job_id, attempt)
            elif isinstance(decision, Rejected):
                reasons.append(f"{leaf_type}: {decision.reason}")
        if queued_on is not None:
            self._queued_on[job.job_id] = queued_on
            return p.Outcome()
        return p.Outcome(rejected=(p.Rejected(job.job_id, "; ".join(reasons)),))

    def stop(self, job_id: str, now: float) -> p.Outcome:
        return p.Outcome()  # never defers a preemption

    def release(self, job_id: str, now: float) -> p.Outcome:
        leaf_type = self._running_on.pop(job_id, None)
        if leaf_type is None:
            leaf_type = self._queued_on.pop(job_id, None)
            if leaf_type is not None:
                self._cores.cores[leaf_type].release(job_id, self._attempt[job_id])
            return p.Outcome()
        del self._running[job_id]
        started = []
        for decision in self._cores.cores[leaf_type].release(job_id, self._attempt[job_id]):
            if isinstance(decision, Allocated):
                del self._queued_on[decision.request.job_key]
                started.append(self._start(decision, leaf_type))
        return p.Outcome(started=tuple(started))

    def _start(self, allocated: Allocated, leaf_type: str) -> p.Started:
        s = started_of(allocated, leaf_type)
        self._running[s.job_id] = s
        self._running_on[s.job_id] = leaf_type
        return s


class QuotaOnlyPolicy:
    """VC quotas as GPU counts in front of first-fit placement; opportunistic work is preemptible."""

    name = "quota-only"

    def __init__(self, cluster: SimCluster):
        self._cores = TypedCores(cluster)
        # Free GPUs per leaf type: a cheap test that skips the core for gangs that cannot fit anyway, which
        # keeps a long queue's passes fast.
        self._free: dict[str, int] = {}
        for node in cluster.nodes:
            self._free[node.leaf_type] = self._free.get(node.leaf_type, 0) + node.leaves
        self._quota = {vc: dict(q) for vc, q in cluster.quotas.items()}
        self._used: dict[tuple[str, str], int] = {}  # (vc, leaf type) -> guaranteed GPUs held
        self._attempt: dict[str, int] = {}
        # job -> (queue key, job); the key is priority first, then original submission (a preempted job
        # comes back at its old place), then arrival at this policy for a total order.
        self._queue: dict[str, tuple[tuple[int, float, int], SimJob]] = {}
        self._seq = 0
        self._running: dict[str, p.Started] = {}
        self._running_job: dict[str, tuple[SimJob, str, int]] = {}  # job -> (job, leaf type, start seq)

    def running(self) -> Mapping[str, p.Started]:
        return MappingProxyType(self._running)

    def submit(self, job: SimJob, now: float) -> p.Outcome:
        self._attempt[job.job_id] = self._attempt.get(job.job_id, -1) + 1
        reason = self._never_fits(job)
        if reason is not None:
            return p.Outcome(rejected=(p.Rejected(job.job_id, reason),))
        self._queue[job.job_id] = ((-job.priority, job.submit_time, self._seq), job)
        self._seq += 1
        return self._schedule()

    def stop(self, job_id: str, now: float) -> p.Outcome:
        return p.Outcome()  # never defers a preemption

    def release(self, job_id: str, now: float) -> p.Outcome:
        if self._queue.pop(job_id, None) is not None:
            return p.Outcome()
        if job_id not in self._running:
            return p.Outcome()
        self._stop(job_id)
        return self._schedule()

    # ------------------------------------------------------------------------------------ internals

    def _never_fits(self, job: SimJob) -> str | None:
        if job.vc not in self._quota:
            return f"unknown virtual cluster {job.vc!r} (known: {', '.join(sorted(self._quota))})"
        types, reason = self._cores.candidates(job)
        if reason is not None:
            return reason
        need = whole_gpus(job) * job.tasks
        reasons = []
        for leaf_type in types:
            quota = self._quota[job.vc].get(leaf_type, 0)
            if job.guaranteed and need > quota:
                reasons.append(f"{leaf_type}: needs {need} GPUs, VC {job.vc} has a quota of {quota}")
                continue
            # The core's own feasibility test (does it pack onto the empty cluster?) without placing: the
            # simulator lives in the scheduler package precisely to measure the production code.
            req = gang_of(job, self._attempt[job.job_id])
            why = self._cores.cores[leaf_type]._infeasible_reason(req)
            if why is None:
                return None
            reasons.append(f"{leaf_type}: {why}")
        return "; ".join(reasons)

    def _schedule(self) -> p.Outcome:
        # One pass in queue order; a job that cannot start is skipped (backfill), as in the core. Starting a
        # job only takes capacity; what a preemption frees beyond the preemptor's need is seen by the next
        # pass, which the engine's resubmission of every victim runs.
        outcome = p.Outcome()
        room = self._room()
        for _, job in sorted(self._queue.values(), key=lambda e: e[0]):
            if not self._may_start(job, room):
                continue  # what _try_start would find too, without building the gang (a long queue)
            result = self._try_start(job)
            if result is not None:
                del self._queue[job.job_id]
                outcome = outcome + result
                room = self._room()
        return outcome

    def _room(self) -> dict[str, tuple[int, int, bool]]:
        """Per leaf type: free GPUs, the most free on one healthy node, and whether opportunistic work runs
        there (a guaranteed job may then start by preempting it)."""
        oppo = {t for job, t, _ in self._running_job.values() if not job.guaranteed}
        out = {}
        for leaf_type, core in self._cores.cores.items():
            # The core's own nodes, read only (its public view copies every node).
            most = max((len(n.free_gpus) for n in core._nodes.values() if n.healthy), default=0)
            out[leaf_type] = (self._free[leaf_type], most, leaf_type in oppo)
        return out

    def _may_start(self, job: SimJob, room: dict[str, tuple[int, int, bool]]) -> bool:
        types, _ = self._cores.candidates(job)
        need = whole_gpus(job) * job.tasks
        for leaf_type in types:
            free, most, oppo = room[leaf_type]
            if (need <= free and whole_gpus(job) <= most) or (job.guaranteed and oppo):
                return True
        return False

    def _try_start(self, job: SimJob) -> p.Outcome | None:
        types, _ = self._cores.candidates(job)
        need = whole_gpus(job) * job.tasks
        attempt = self._attempt[job.job_id]
        req = gang_of(job, attempt)
        for leaf_type in types:
            if job.guaranteed and self._used.get((job.vc, leaf_type), 0) + need > self._quota[job.vc].get(
                leaf_type, 0
            ):
                continue
            if need > self._free[leaf_type]:
                continue
            core = self._cores.cores[leaf_type]
            decision = core.submit(req)
            if isinstance(decision, Queued):
                # The core's queue is not used here: this policy keeps its own, with the quota in front.
                core.release(job.job_id, attempt)
            elif isinstance(decision, Allocated):
                return p.Outcome(started=(self._start(job, decision, leaf_type),))
        if not job.guaranteed:
            return None
        for leaf_type in types:
            if self._used.get((job.vc, leaf_type), 0) + need > self._quota[job.vc].get(leaf_type, 0):
                continue
            victims = self._victims(req, leaf_type)
            if victims is None:
                continue
            for v in victims:
                self._stop(v)
            decision = self._cores.cores[leaf_type].submit(req)
            # _victims proved, with the core's own placement function, that it fits once they are gone.
            assert isinstance(decision, Allocated), decision
            return p.Outcome(started=(self._start(job, decision, leaf_type),), preempted=tuple(victims))
        return None

    def _victims(self, req: GangRequest, leaf_type: str) -> list[str] | None:
        """The fewest newest opportunistic gangs on ``leaf_type`` whose removal lets ``req`` fit, if any."""
        candidates = sorted(
            (
                (seq, job_id)
                for job_id, (job, t, seq) in self._running_job.items()
                if t == leaf_type and not job.guaranteed
            ),
            reverse=True,
        )
        need = sum(pod.gpu for pod in req.pods)
        if need > self._free[leaf_type] + sum(self._running[j].gpus for _, j in candidates):
            return None  # even every victim together would not free enough (also covers no candidates)
        core = self._cores.cores[leaf_type]
        free = {name: set(node.free_gpus) for name, node in core.nodes.items() if node.healthy}
        chosen: list[str] = []
        for _, job_id in candidates:
            chosen.append(job_id)
            for pl in self._running[job_id].placements:
                if pl.node in free:
                    free[pl.node].update(pl.leaves)
            if _place(req.pods, {n: set(g) for n, g in free.items()}) is not None:
                return chosen
        return None

    def _start(self, job: SimJob, allocated: Allocated, leaf_type: str) -> p.Started:
        s = started_of(allocated, leaf_type)
        self._free[leaf_type] -= len([g for pl in s.placements for g in pl.leaves])
        self._running[job.job_id] = s
        self._running_job[job.job_id] = (job, leaf_type, self._seq)
        self._seq += 1
        if job.guaranteed:
            key = (job.vc, leaf_type)
            self._used[key] = self._used.get(key, 0) + whole_gpus(job) * job.tasks
        return s

    def _stop(self, job_id: str) -> None:
        job, leaf_type, _ = self._running_job.pop(job_id)
        s = self._running.pop(job_id)
        self._free[leaf_type] += len([g for pl in s.placements for g in pl.leaves])
        # The core's queue is always empty here, so its release starts nothing behind our back.
        self._cores.cores[leaf_type].release(job_id, self._attempt[job_id])
        if job.guaranteed:
            self._used[(job.vc, leaf_type)] -= whole_gpus(job) * job.tasks
