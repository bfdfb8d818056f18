"""The discrete-event engine: replays a workload through a :class:`Policy` and measures the result.

Events are arrivals (at ``submit_time``) and departures (when the job's work is done); with
``departures=False`` jobs never finish, which measures how full each policy can pack a cluster. At one
instant departures are handled before arrivals (capacity that frees at ``t`` is there for a job arriving at
``t``), each kind in a fixed order (time, then file order / start order), so a replay is deterministic.

What the engine does with a policy's :class:`Outcome`: a preempted job stops at once (its departure is
cancelled; it will rerun its whole duration, as a killed job does) and is submitted again as a new attempt,
keeping its original submission time for the statistics; a started job runs; a rejected job ends. Every
transition is checked (a job starts only while waiting, is preempted only while running...), so a policy
that breaks the protocol stops the run with a :class:`SimulationError` instead of producing figures.

Elastic jobs (``SimJob.min_tasks``, see ``elastic.py``): a job's work is ``tasks * duration`` task-seconds
(for a rigid job, ``duration`` at its size, as always). While it runs, the work left is divided by the
tasks running now: a ``Resized`` outcome (an elastic policy grew or shrank it) moves its departure to
``now + work left / tasks now``. A shrunk job keeps the work it did; a preempted one loses it (it reruns
all its work, as a killed job does). A policy that does not model elastic jobs gets each as a rigid job of
its minimum with the same work (``elastic.rigid_at_min``), so every policy runs the same work.

Definitions of the figures:

* job completion time (JCT): end - submit, over completed jobs;
* queueing delay: total time a job spent waiting (every attempt), over jobs that started at least once;
* GPU capacity: the cluster's GPU leaves (CPU leaves are none);
* allocation ratio, as the literature on GPU-sharing clusters defines it: the GPU *demand* of the jobs
  running (the sum of their requests, shares as their fraction; an elastic job's request is that of the
  tasks it runs now) divided by the capacity. GPUs *held* are
  reported apart: a scheduler can hold more than the demand (a whole GPU for a 0.5-GPU task, extra GPUs a
  task's CPU and memory need through its SKU, a GPU for a task that asked for none);
* time-averaged allocation ratio: the integral of that demand over the run, divided by capacity times the
  run's span (first arrival to last event); ``..._while_arriving`` stops at the last arrival; the same for
  GPUs held (``gpu_held_ratio``);
* by arrived demand (no departures): at the first arrival that brings the arrived GPU demand to 50%, 60%,
  ... 130% of capacity, the allocation ratio, the held ratio and the fragmentation;
* fragmentation: free GPU capacity (healthy or not: the simulator has no health) that none of the jobs
  waiting at that moment could use, as a fraction of capacity. A free part ``f`` of a GPU of model ``t``
  on node ``n`` is usable by a waiting job whose tasks accept ``t`` and ask for a share ``d < 1`` with
  ``d <= f``, or for ``k`` whole GPUs when the GPU is wholly free and ``n`` has ``k`` wholly free GPUs;
  with nothing waiting it is 0;
* makespan: from the first submission to the last completion;
* ``guaranteed_rigid``: the job figures of the rigid guaranteed jobs only (priority >= 0), whose waits
  growth must not lengthen (growth takes only idle cells, and is preempted first);
* decision latency: the wall time of each policy call (submit or release), in milliseconds;
* percentiles: nearest rank.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pai_scheduler.sim.cluster import SimNode
from pai_scheduler.sim.elastic import rigid_at_min
from pai_scheduler.sim.jobs import SimJob
from pai_scheduler.sim.policy import Outcome, Policy, Resized, TaskPlacement

ARRIVED_LEVELS = tuple(round(0.5 + 0.1 * i, 1) for i in range(9))  # 0.5, 0.6, ..., 1.3
_DEPARTURE, _STOP, _ARRIVAL = 0, 1, 2  # tie order at one instant
_EPS = 1e-9


class SimulationError(RuntimeError):
    """A policy broke the protocol (e.g. started a job twice); the run's figures would be meaningless."""


@dataclass
class JobRecord:
    job: SimJob
    # future -> pending (submitted) -> running -> completed, or back to pending (preempted); pending ->
    # rejected. "future" makes a policy that starts a job before its submission a protocol error.
    state: str = "future"
    attempt: int = 0  # attempts started so far
    start: float | None = None  # start of the current or last attempt
    end: float | None = None
    waiting_since: float | None = None
    queue_time: float = 0.0
    gpus: float = 0.0  # held now
    held: float = 0.0  # held by the current or last attempt
    placements: tuple[TaskPlacement, ...] = ()  # of the current or last attempt
    preemptions: int = 0
    reason: str = ""
    # (what, when): "submit", "start", "preempt", "end", "reject", "resize"; for tests and debugging.
    history: list[tuple[str, float]] = field(default_factory=list)
    # The job as the policy sees it: itself, or (a policy without elastic jobs) rigid at its minimum.
    view: SimJob | None = None
    instances: int = 0  # tasks running now
    demand: float = 0.0  # GPU demand of those tasks
    work_left: float = 0.0  # task-seconds, as of ``work_since``
    work_since: float = 0.0
    epoch: int = 0  # of the departure event in force (a resize moves it)
    resizes: int = 0
    # Every change of the tasks running (when, how many; 0 when it stops), over every attempt.
    sizes: list[tuple[float, int]] = field(default_factory=list)


@dataclass
class SimResult:
    records: dict[str, JobRecord]
    metrics: dict[str, Any]


def percentile(values: Sequence[float], pct: float) -> float | None:
    """Nearest-rank percentile, or None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def _stats(values: Sequence[float]) -> dict[str, float | None]:
    return {
        "avg": _r(sum(values) / len(values)) if values else None,
        "p50": _r(percentile(values, 50)),
        "p95": _r(percentile(values, 95)),
    }


def _r(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


MILLI = 1000


class Engine:
    def __init__(
        self,
        policy: Policy,
        capacity: float,
        jobs: Sequence[SimJob],
        departures: bool = True,
        nodes: Sequence[SimNode] = (),
    ):
        """``nodes``: the cluster's GPU nodes, for the fragmentation figure (none: it is not computed)."""
        if capacity <= 0:
            raise ValueError("the cluster has no GPUs to simulate")
        self.policy = policy
        self.capacity = capacity
        self.departures = departures
        self.elastic = elastic = bool(getattr(policy, "elastic", False))
        self.records = {j.job_id: JobRecord(j, view=j if elastic else rigid_at_min(j)) for j in jobs}
        if len(self.records) != len(jobs):
            raise ValueError("job ids must be unique")
        # (time, kind, sequence, job, attempt, departure epoch)
        self._events: list[tuple[float, int, int, str, int, int]] = []
        for seq, job in enumerate(jobs):
            self._events.append((job.submit_time, _ARRIVAL, seq, job.job_id, 0, 0))
        heapq.heapify(self._events)
        self._seq = len(jobs)
        self.now = 0.0
        self.allocated = 0.0  # GPUs held
        self.demand = 0.0  # GPU demand of the running jobs
        self._area = 0.0
        self._demand_area = 0.0
        self._demand_area_arrivals = 0.0
        self._start_time: float | None = None
        self._last = 0.0
        self._area_arrivals = 0.0
        self._last_arrival = 0.0
        self.latencies_ns: list[int] = []
        self.preemptions = 0
        self.arrived_gpus = 0.0
        # level -> (allocation ratio, held ratio, fragmentation), at the arrival that reached it.
        self.by_arrived: dict[float, tuple[float, float, float | None] | None] = dict.fromkeys(ARRIVED_LEVELS)
        # Fragmentation: every GPU (node, index) -> its model, and the milli-GPU in use on each.
        self._nodes = {n.name: n for n in nodes}
        self._used: dict[tuple[str, int], int] = {}

    # ------------------------------------------------------------------------------------------ run

    def run(self) -> None:
        while self._events:
            t, kind, _, job_id, attempt, epoch = heapq.heappop(self._events)
            if kind == _DEPARTURE and self._stale(job_id, attempt, epoch):
                continue  # not an event: it must not stretch the run's span
            self._advance(t)
            if kind == _DEPARTURE:
                self._depart(job_id, attempt, epoch)
            elif kind == _STOP:
                rec = self.records[job_id]
                if rec.state == "running" and rec.attempt == attempt:
                    self._apply(self._call("stop", job_id))
            else:
                self._arrive(job_id)

    def _advance(self, t: float) -> None:
        if self._start_time is None:
            self._start_time = t
            self._last = t
        self._area += self.allocated * (t - self._last)
        self._demand_area += self.demand * (t - self._last)
        self._last = t
        self.now = t

    def _call(self, what: str, job: SimJob | str) -> Outcome:
        t0 = time.perf_counter_ns()
        if what == "submit":
            assert isinstance(job, SimJob)
            out = self.policy.submit(job, self.now)
        elif what == "stop":
            assert isinstance(job, str)
            out = self.policy.stop(job, self.now)
        else:
            assert isinstance(job, str)
            out = self.policy.release(job, self.now)
        self.latencies_ns.append(time.perf_counter_ns() - t0)
        return out

    def _arrive(self, job_id: str) -> None:
        rec = self.records[job_id]
        rec.state = "pending"
        rec.waiting_since = self.now
        rec.history.append(("submit", self.now))
        self._apply(self._call("submit", self._view(rec)))
        self.arrived_gpus += rec.job.gpus
        self._area_arrivals = self._area
        self._demand_area_arrivals = self._demand_area
        self._last_arrival = self.now
        for level in ARRIVED_LEVELS:
            if self.by_arrived[level] is None and self.arrived_gpus >= level * self.capacity - _EPS:
                self.by_arrived[level] = (
                    self.demand / self.capacity,
                    self.allocated / self.capacity,
                    self.fragmentation(),
                )

    def _stale(self, job_id: str, attempt: int, epoch: int) -> bool:
        """The departure's attempt was preempted, or its job was resized since it was scheduled."""
        rec = self.records[job_id]
        return rec.state != "running" or rec.attempt != attempt or rec.epoch != epoch

    def _depart(self, job_id: str, attempt: int, epoch: int) -> None:
        rec = self.records[job_id]
        rec.state = "completed"
        rec.end = self.now
        rec.history.append(("end", self.now))
        self._stop_holding(rec)
        self._apply(self._call("release", job_id))

    def _apply(self, outcome: Outcome) -> None:
        # Victims are resubmitted after the outcome that preempted them is applied; their resubmission can
        # itself start or preempt jobs, so work through a list rather than recurse.
        work = [outcome]
        while work:
            out = work.pop(0)
            for victim in out.preempted:
                self._preempt(victim)
            for s in out.started:
                self._start(s.job_id, s.gpus, s.placements, s.instances)
            for r in out.rejected:
                self._reject(r.job_id, r.reason)
            for job_id, at in out.stopping:
                rec = self._rec(job_id, "running", "is stopping")
                heapq.heappush(self._events, (max(at, self.now), _STOP, self._seq, job_id, rec.attempt, 0))
                self._seq += 1
            for size in out.resized:
                self._resize(size)
            for victim in out.preempted:
                work.append(self._call("submit", self._view(self.records[victim])))
        if self.allocated > self.capacity + _EPS:
            raise SimulationError(f"t={self.now}: {self.allocated} GPUs allocated on {self.capacity}")

    def _rec(self, job_id: str, state: str, action: str) -> JobRecord:
        rec = self.records.get(job_id)
        if rec is None:
            raise SimulationError(f"t={self.now}: policy {self.policy.name} {action} unknown job {job_id!r}")
        if rec.state != state:
            raise SimulationError(
                f"t={self.now}: policy {self.policy.name} {action} job {job_id} while it is {rec.state}"
            )
        return rec

    def _start(
        self, job_id: str, gpus: float, placements: tuple[TaskPlacement, ...] = (), instances: int = 0
    ) -> None:
        rec = self._rec(job_id, "pending", "started")
        assert rec.waiting_since is not None
        rec.state = "running"
        rec.attempt += 1
        rec.start = self.now
        rec.queue_time += self.now - rec.waiting_since
        rec.waiting_since = None
        rec.gpus = rec.held = gpus
        rec.placements = placements
        rec.history.append(("start", self.now))
        rec.instances = instances or self._view(rec).tasks
        rec.demand = rec.instances * rec.job.gpu_per_task
        rec.work_left, rec.work_since = rec.job.work, self.now  # a new attempt does all the work again
        rec.sizes.append((self.now, rec.instances))
        self.allocated += gpus
        self.demand += rec.demand
        self._hold(placements, 1)
        self._schedule_departure(rec)

    def _schedule_departure(self, rec: JobRecord) -> None:
        rec.epoch += 1
        if self.departures:
            at = self.now + rec.work_left / rec.instances
            heapq.heappush(self._events, (at, _DEPARTURE, self._seq, rec.job.job_id, rec.attempt, rec.epoch))
            self._seq += 1

    def _resize(self, size: Resized) -> None:
        rec = self._rec(size.job_id, "running", "resized")
        if not rec.job.elastic or not rec.job.minimum <= size.instances <= rec.job.tasks:
            raise SimulationError(
                f"t={self.now}: policy {self.policy.name} resized job {size.job_id} to {size.instances}"
                f" tasks (it runs {rec.job.minimum}..{rec.job.tasks} tasks)"
                if rec.job.elastic
                else f"t={self.now}: policy {self.policy.name} resized rigid job {size.job_id}"
            )
        if size.instances == rec.instances and size.placements == rec.placements:
            return
        rec.work_left -= rec.instances * (self.now - rec.work_since)
        rec.work_since = self.now
        self.allocated += size.gpus - rec.gpus
        self.demand -= rec.demand
        self._hold(rec.placements, -1)
        rec.instances = size.instances
        rec.demand = size.instances * rec.job.gpu_per_task
        rec.gpus = rec.held = size.gpus
        rec.placements = size.placements
        rec.resizes += 1
        rec.history.append(("resize", self.now))
        rec.sizes.append((self.now, rec.instances))
        self.demand += rec.demand
        self._hold(rec.placements, 1)
        self._schedule_departure(rec)

    def _view(self, rec: JobRecord) -> SimJob:
        return rec.job if rec.view is None else rec.view

    def _preempt(self, job_id: str) -> None:
        rec = self._rec(job_id, "running", "preempted")
        rec.state = "pending"
        rec.waiting_since = self.now
        rec.preemptions += 1
        rec.history.append(("preempt", self.now))
        self._stop_holding(rec)
        self.preemptions += 1

    def _reject(self, job_id: str, reason: str) -> None:
        rec = self._rec(job_id, "pending", "rejected")
        rec.state = "rejected"
        rec.reason = reason
        rec.end = self.now
        rec.waiting_since = None
        rec.history.append(("reject", self.now))

    def _stop_holding(self, rec: JobRecord) -> None:
        self.allocated -= rec.gpus
        self.demand -= rec.demand
        rec.demand = 0.0
        rec.instances = 0
        rec.sizes.append((self.now, 0))
        rec.gpus = 0.0
        self._hold(rec.placements, -1)

    def _hold(self, placements: Sequence[TaskPlacement], sign: int) -> None:
        if not self._nodes:
            return
        for pl in placements:
            node = self._nodes.get(pl.node)
            if node is None or node.leaf_type != pl.leaf_type:
                continue  # CPU leaves: no GPU
            for leaf in pl.leaves:
                key = (pl.node, leaf)
                self._used[key] = self._used.get(key, 0) + sign * (pl.milli or MILLI)

    def fragmentation(self) -> float | None:
        """Free GPU capacity that none of the waiting jobs could use, as a fraction of capacity (see the
        module docstring); None when the engine was given no nodes."""
        if not self._nodes:
            return None
        # The distinct requests waiting: (accepted models, share in milli or 0, whole GPUs per task).
        wanted: set[tuple[tuple[str, ...], int, int]] = set()
        for rec in self.records.values():
            if rec.state == "pending" and rec.job.gpu_per_task > 0:
                g = rec.job.gpu_per_task
                share = 0 if g >= 1 else max(1, round(g * MILLI))
                wanted.add((rec.job.gpu_types, share, int(g) if g >= 1 else 0))
        if not wanted:
            return 0.0
        unusable = 0
        for node in self._nodes.values():
            free = [MILLI - self._used.get((node.name, i), 0) for i in range(node.leaves)]
            whole = sum(1 for f in free if f >= MILLI)
            shapes = [(share, k) for types, share, k in wanted if not types or node.leaf_type in types]
            for f in free:
                if f <= 0:
                    continue
                if not any((d and d <= f) or (k and f >= MILLI and whole >= k) for d, k in shapes):
                    unusable += f
        return unusable / MILLI / self.capacity

    # -------------------------------------------------------------------------------------- metrics

    def metrics(self) -> dict[str, Any]:
        recs = list(self.records.values())
        span = 0.0 if self._start_time is None else self._last - self._start_time
        held = self._area / (self.capacity * span) if span > 0 else self.allocated / self.capacity
        ratio = self._demand_area / (self.capacity * span) if span > 0 else self.demand / self.capacity
        arriving = 0.0 if self._start_time is None else self._last_arrival - self._start_time
        ratio_arriving = self._demand_area_arrivals / (self.capacity * arriving) if arriving > 0 else ratio
        held_arriving = self._area_arrivals / (self.capacity * arriving) if arriving > 0 else held
        lat_ms = [ns / 1e6 for ns in self.latencies_ns]
        out: dict[str, Any] = {
            "policy": self.policy.name,
            "departures": self.departures,
            "capacity_gpus": self.capacity,
            **_job_figures(recs),
            "gpu_allocation_ratio": _r(ratio, 4),
            # The same average up to the last arrival only: under sustained load, without the drain at the
            # end, where the queue empties and the cluster idles.
            "gpu_allocation_ratio_while_arriving": _r(ratio_arriving, 4),
            # GPUs held, whatever the jobs asked for (see the module docstring).
            "gpu_held_ratio": _r(held, 4),
            "gpu_held_ratio_while_arriving": _r(held_arriving, 4),
            "preemptions": self.preemptions,
            "decision_latency_ms": {
                "p50": _r(percentile(lat_ms, 50), 4),
                "p99": _r(percentile(lat_ms, 99), 4),
                "calls": len(lat_ms),
            },
            "span_s": _r(span),
        }
        ends = [r.end for r in recs if r.state == "completed" and r.end is not None]
        first = min((r.job.submit_time for r in recs), default=0.0)
        out["makespan_s"] = _r(max(ends) - first) if ends else None
        out["guaranteed_rigid"] = _job_figures([r for r in recs if r.job.guaranteed and not r.job.elastic])
        elastic = [r for r in recs if r.job.elastic]
        if elastic:
            out["elastic"] = {
                # How this policy ran them: grown and shrunk, or rigid at their minimum (it cannot grow).
                "run_as": "elastic" if self.elastic else "rigid at their minimum",
                **_job_figures(elastic),
                "resizes": sum(r.resizes for r in elastic),
                # Completed elastic jobs: the mean of their tasks over their last attempt's run.
                "mean_instances": _r(_mean_instances(elastic)),
            }
        vcs = sorted({r.job.vc for r in recs})
        out["per_vc"] = {vc: _job_figures([r for r in recs if r.job.vc == vc]) for vc in vcs}
        if not self.departures:
            for i, name in enumerate(("allocation_ratio", "held_ratio", "fragmentation")):
                out[f"{name}_by_arrived"] = {
                    str(level): None if v is None else _r(v[i], 4) for level, v in self.by_arrived.items()
                }
            out["final_allocation_ratio"] = _r(self.demand / self.capacity, 4)
            out["final_held_ratio"] = _r(self.allocated / self.capacity, 4)
            out["final_fragmentation"] = _r(self.fragmentation(), 4)
        return out


def _mean_instances(recs: Sequence[JobRecord]) -> float | None:
    means = []
    for r in recs:
        if r.state != "completed" or r.start is None or r.end is None or r.end <= r.start:
            continue
        area, last, n = 0.0, r.start, 0
        for t, size in r.sizes:
            if t >= r.start:
                area += n * (t - last)
            last, n = max(t, r.start), size
        means.append(area / (r.end - r.start))
    return sum(means) / len(means) if means else None


def _job_figures(recs: Sequence[JobRecord]) -> dict[str, Any]:
    completed = [r for r in recs if r.state == "completed"]
    ran = [r for r in recs if r.attempt > 0]
    jct = [r.end - r.job.submit_time for r in completed if r.end is not None]
    return {
        "jobs_total": len(recs),
        "jobs_completed": len(completed),
        "jobs_running": sum(r.state == "running" for r in recs),
        "jobs_rejected": sum(r.state == "rejected" for r in recs),
        # Not running at the end and never completed: rejected, or still waiting for resources.
        "jobs_unplaced": sum(r.state in ("rejected", "pending") for r in recs),
        "jct_s": _stats(jct),
        "queueing_delay_s": _stats([r.queue_time for r in ran]),
    }


def simulate(
    policy: Policy,
    capacity: float,
    jobs: Sequence[SimJob],
    departures: bool = True,
    nodes: Sequence[SimNode] = (),
) -> SimResult:
    """Replay ``jobs`` (any order; they are replayed by submit time) and return the records and figures;
    ``nodes`` (the cluster's GPU nodes) enable the fragmentation figure."""
    t0 = time.perf_counter()
    engine = Engine(policy, capacity, jobs, departures, nodes)
    engine.run()
    metrics = engine.metrics()
    metrics["wall_s"] = round(time.perf_counter() - t0, 4)
    return SimResult(engine.records, metrics)
