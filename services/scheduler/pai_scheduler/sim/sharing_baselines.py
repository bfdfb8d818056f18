"""``first-fit`` and ``best-fit``: the plain GPU-sharing schedulers the literature compares against.

Both see each node as its GPUs (each with a free fraction, in thousandths), its cores and its memory (what
its leaves' SKUs carry; unlimited where the cluster file says nothing). A task asking for a share ``d < 1``
of a GPU takes ``d`` of one GPU with that much free; a task asking for ``k`` whole GPUs takes ``k`` wholly
free GPUs of one node; a task asking for no GPU takes only cores and memory (it never holds a GPU), on a
CPU-only node first. GPU-model constraints are hard (one model or a list). A gang is placed whole or not
at all. Jobs wait in one queue (priority, then arrival), retried in order whenever a job ends; a job that
does not fit does not block the ones behind it. No VCs, no preemption.

* ``first-fit`` takes the first node that fits, in the order of the cluster file (CPU-only nodes first
  for CPU-only tasks), and inside it the first GPUs that fit;
* ``best-fit`` takes the node left with the least free GPU capacity (then the fewest free cores, then
  file order), and inside it the GPU left with the least free fraction.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from pai_scheduler.sim import policy as p
from pai_scheduler.sim.cluster import SimCluster
from pai_scheduler.sim.jobs import SimJob

MILLI = 1000


@dataclass
class _Node:
    name: str
    model: str  # "" for a node without GPUs
    order: int
    free: list[int]  # milli-GPU free per GPU index
    cpu: float
    memory: float
    jobs: set[str] = field(default_factory=set)

    @property
    def free_gpu(self) -> int:
        return sum(self.free)


# One task's claim on a node: (node, GPU indices, milli per GPU (0: whole), cores, memory).
_Claim = tuple[_Node, tuple[int, ...], int, float, float]


class SharingPolicy:
    """The common machinery; ``best`` chooses between first fit and best fit."""

    def __init__(self, cluster: SimCluster, best: bool):
        self.name = "best-fit" if best else "first-fit"
        self._best = best
        self._nodes: list[_Node] = []
        gpu_names = {n.name for n in cluster.nodes}
        inf = math.inf
        for name in cluster.cpu_only_nodes:
            cpu, mem = cluster.resources.get(name, (inf, inf))
            self._nodes.append(_Node(name, "", len(self._nodes), [], cpu, mem))
        for n in cluster.nodes:
            cpu, mem = cluster.resources.get(n.name, (inf, inf))
            self._nodes.append(_Node(n.name, n.leaf_type, len(self._nodes), [MILLI] * n.leaves, cpu, mem))
        self._models = {n.leaf_type for n in cluster.nodes}
        self._cpu_first = [n for n in self._nodes if n.name not in gpu_names]
        self._gpu_nodes = [n for n in self._nodes if n.model]
        self._queue: dict[str, tuple[tuple[int, int], SimJob]] = {}
        self._seq = 0
        self._running: dict[str, p.Started] = {}
        self._claims: dict[str, list[_Claim]] = {}

    def running(self) -> Mapping[str, p.Started]:
        return MappingProxyType(self._running)

    def submit(self, job: SimJob, now: float) -> p.Outcome:
        reason = self._never_fits(job)
        if reason is not None:
            return p.Outcome(rejected=(p.Rejected(job.job_id, reason),))
        started = self._try(job)
        if started is not None:
            return p.Outcome(started=(started,))
        self._queue[job.job_id] = ((-job.priority, self._seq), job)
        self._seq += 1
        return p.Outcome()

    def stop(self, job_id: str, now: float) -> p.Outcome:
        return p.Outcome()  # never defers a preemption

    def release(self, job_id: str, now: float) -> p.Outcome:
        if self._queue.pop(job_id, None) is not None or job_id not in self._running:
            return p.Outcome()
        del self._running[job_id]
        for node, gpus, milli, cpu, mem in self._claims.pop(job_id):
            for g in gpus:
                node.free[g] += milli or MILLI
            node.cpu += cpu
            node.memory += mem
        started = []
        for _, job in sorted(self._queue.values(), key=lambda e: e[0]):
            s = self._try(job)
            if s is not None:
                del self._queue[job.job_id]
                started.append(s)
        return p.Outcome(started=tuple(started))

    # ------------------------------------------------------------------------------------ internals

    def _never_fits(self, job: SimJob) -> str | None:
        if job.gpu_types and not set(job.gpu_types) & self._models:
            known = ", ".join(sorted(self._models))
            return f"no node has GPU model {'|'.join(job.gpu_types)} (cluster: {known})"
        g = job.gpu_per_task
        if g >= 1:
            fitting = [n for n in self._gpu_nodes if self._model_ok(job, n) and len(n.free) >= g]
            if not fitting:
                return f"no node has {int(g)} GPUs of an acceptable model"
        return None

    @staticmethod
    def _model_ok(job: SimJob, node: _Node) -> bool:
        return not job.gpu_types or node.model in job.gpu_types

    def _try(self, job: SimJob) -> p.Started | None:
        claims: list[_Claim] = []
        for _ in range(job.tasks):
            claim = self._place_task(job)
            if claim is None:
                for c in claims:
                    self._undo(c)
                return None
            claims.append(claim)
        self._claims[job.job_id] = claims
        placements = tuple(
            p.TaskPlacement(i, node.name, gpus, node.model if gpus else "", milli)
            for i, (node, gpus, milli, _, _) in enumerate(claims)
        )
        held = sum((milli or MILLI) * len(gpus) for _, gpus, milli, _, _ in claims) / MILLI
        s = p.Started(job.job_id, placements, held)
        self._running[job.job_id] = s
        return s

    def _undo(self, claim: _Claim) -> None:
        node, gpus, milli, cpu, mem = claim
        for g in gpus:
            node.free[g] += milli or MILLI
        node.cpu += cpu
        node.memory += mem

    def _place_task(self, job: SimJob) -> _Claim | None:
        g = job.gpu_per_task
        cpu, mem = job.cpu_per_task, float(job.memory_mb_per_task)
        share = 0 if g >= 1 or g == 0 else max(1, round(g * MILLI))
        whole = int(g) if g >= 1 else 0
        candidates = self._cpu_first + self._gpu_nodes if g == 0 else self._gpu_nodes
        best: tuple[tuple[float, ...], _Node, tuple[int, ...]] | None = None
        for node in candidates:
            if node.cpu < cpu or node.memory < mem or (g > 0 and not self._model_ok(job, node)):
                continue
            gpus = self._gpus_on(node, share, whole)
            if gpus is None:
                continue
            if not self._best:
                best = ((), node, gpus)
                break
            taken = share * len(gpus) if share else MILLI * len(gpus)
            key = (node.free_gpu - taken, node.cpu - cpu, node.order)
            if best is None or key < best[0]:
                best = (key, node, gpus)
        if best is None:
            return None
        _, node, gpus = best
        for i in gpus:
            node.free[i] -= share or MILLI
        node.cpu -= cpu
        node.memory -= mem
        return (node, gpus, share, cpu, mem)

    def _gpus_on(self, node: _Node, share: int, whole: int) -> tuple[int, ...] | None:
        if share:
            fitting = [i for i, f in enumerate(node.free) if f >= share]
            if not fitting:
                return None
            if self._best:
                return (min(fitting, key=lambda i: (node.free[i], i)),)
            return (fitting[0],)
        if whole:
            free = [i for i, f in enumerate(node.free) if f == MILLI]
            return tuple(free[:whole]) if len(free) >= whole else None
        return ()


def first_fit(cluster: SimCluster) -> SharingPolicy:
    return SharingPolicy(cluster, best=False)


def best_fit(cluster: SimCluster) -> SharingPolicy:
    return SharingPolicy(cluster, best=True)
