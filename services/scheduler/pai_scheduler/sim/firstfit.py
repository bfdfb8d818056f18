"""The retired first-fit core: a gang best-fit allocator over whole GPUs (the platform's scheduler before the
HiveD allocator replaced it). It lives on only as the simulator's whole-GPU baselines (``baselines.py``).

Everything here is pure: no I/O, no async, no clock, no randomness. Every choice is made with explicit
tie-breaks (never by set or dict iteration order), so the same sequence of calls always produces the same
decisions. That is what lets the service rebuild the allocator from a snapshot after a restart, and lets
the simulator measure exactly the code that runs in production.

Rules:

* Gangs are all-or-nothing: every pod of a gang is placed, or none is.
* Pods are placed largest first (best-fit decreasing: placing big pods first avoids stranding them
  behind small ones). Each pod that wants GPUs goes to the healthy node with the *fewest* free GPUs that
  still fits it (best fit, to limit fragmentation), ties broken by node name; it gets that node's lowest
  free GPU indices. A pod with ``gpu == 0`` goes to the healthy node with the most free GPUs (CPU and
  memory are not tracked yet, so any node would do; this just spreads them away from tight nodes).
* A gang that this rule cannot place on the cluster even when it is completely empty is ``Rejected``:
  queueing it would leave it waiting forever. Sizes used for that test are the nodes' declared sizes, and
  unhealthy nodes count (they are expected to come back).
* Otherwise a gang that does not fit now is ``Queued``. The pending queue is ordered by priority (higher
  first), then arrival. Whenever capacity appears the queue is walked in that order and every gang that
  fits is placed; a gang that does not fit is skipped and does not block smaller ones behind it
  (backfill). Consequence: after every call, no pending gang fits the current free GPUs.

  Future work: backfill can starve a large gang at the head of the queue indefinitely while smaller gangs
  keep taking the GPUs it waits for. Starvation protection (reservations, or aging) and preemption belong
  to the HiveD allocator that replaces this one.

Node resizes: a node re-registering with the same size keeps its allocations. A new size is applied, but
GPUs held by running allocations are never lost: the node's ``gpu_count`` is clamped to cover the highest
allocated index. GPUs beyond the declared size are never handed out again; as their allocations are
released the node shrinks back to its declared size.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, TypeAlias

from pai_common.contract.types import Placement, PodRequest

SNAPSHOT_VERSION = 1


def alloc_key(job_key: str, attempt_id: int) -> str:
    """The key of one attempt's gang. ``attempt_id`` is an int, so splitting on the last '#' is exact."""
    return f"{job_key}#{attempt_id}"


@dataclass
class NodeState:
    """One node as the allocator sees it.

    ``free_gpus`` holds the indices that can be handed out. ``gpu_count`` is the node's effective size:
    its declared size, or more while allocations still hold GPUs above a shrunken declared size.
    """

    name: str
    gpu_count: int
    free_gpus: set[int]
    healthy: bool = True


@dataclass(frozen=True)
class GangRequest:
    """All pods of one job attempt, to be placed together or not at all."""

    job_key: str
    attempt_id: int
    priority: int
    pods: tuple[PodRequest, ...]

    def __post_init__(self) -> None:
        # Callers building from an event have a list (pydantic's field type); a tuple keeps the request
        # immutable and hashable, so normalise rather than make every caller remember.
        if not isinstance(self.pods, tuple):
            object.__setattr__(self, "pods", tuple(self.pods))

    @property
    def alloc_key(self) -> str:
        return alloc_key(self.job_key, self.attempt_id)


@dataclass(frozen=True)
class Allocated:
    request: GangRequest
    # In the order of ``request.pods``, one per pod.
    placements: tuple[Placement, ...]


@dataclass(frozen=True)
class Rejected:
    request: GangRequest
    reason: str


@dataclass(frozen=True)
class Queued:
    request: GangRequest


@dataclass(frozen=True)
class Released:
    job_key: str
    attempt_id: int


Decision: TypeAlias = Allocated | Rejected | Queued | Released


def _place(pods: Sequence[PodRequest], free: dict[str, set[int]]) -> tuple[Placement, ...] | None:
    """Place every pod on ``free`` (node -> free GPU indices), or return None if one does not fit.

    ``free`` is consumed as pods are placed, so callers pass a copy. Returned placements follow the order
    of ``pods``; a failed gang leaves nothing behind because the caller discards the copy.
    """
    placed: dict[int, Placement] = {}
    # Largest pods first; the original position breaks ties so the order is total and deterministic.
    order = sorted(range(len(pods)), key=lambda i: (-pods[i].gpu, i))
    for i in order:
        pod = pods[i]
        if pod.gpu == 0:
            if not free:
                return None
            node = min(free, key=lambda n: (-len(free[n]), n))
            gpus: list[int] = []
        else:
            fitting = [n for n, f in free.items() if len(f) >= pod.gpu]
            if not fitting:
                return None
            node = min(fitting, key=lambda n: (len(free[n]), n))
            gpus = sorted(free[node])[: pod.gpu]
            free[node].difference_update(gpus)
        placed[i] = Placement(task_role=pod.task_role, index=pod.index, node=node, gpus=gpus)
    return tuple(placed[i] for i in range(len(pods)))


class FirstFitScheduler:
    """A gang best-fit allocator over whole GPUs with a priority-ordered, backfilling pending queue."""

    def __init__(self) -> None:
        self._nodes: dict[str, NodeState] = {}
        # The size each node last declared; ``NodeState.gpu_count`` may exceed it while allocations still
        # hold GPUs above it.
        self._declared: dict[str, int] = {}
        # Insertion (allocation) order is kept so that snapshots are stable and readable.
        self._allocations: dict[str, Allocated] = {}
        # alloc_key -> (arrival sequence, request). The sequence makes queue order total and survives a
        # restore, which insertion order alone would not guarantee after requests leave the queue.
        self._pending: dict[str, tuple[int, GangRequest]] = {}
        self._next_seq = 0

    # ----------------------------------------------------------------------------------------- views

    @property
    def allocations(self) -> Mapping[str, Allocated]:
        """Current allocations by alloc_key, in allocation order (read-only)."""
        return MappingProxyType(self._allocations)

    @property
    def pending(self) -> tuple[GangRequest, ...]:
        """Queued gangs in the order they will be tried."""
        return tuple(req for _, req in self._queue())

    @property
    def nodes(self) -> Mapping[str, NodeState]:
        """Copies of the nodes: NodeState is mutable, so handing out the originals would let callers
        corrupt the allocator's bookkeeping."""
        return MappingProxyType(
            {
                name: NodeState(node.name, node.gpu_count, set(node.free_gpus), node.healthy)
                for name, node in self._nodes.items()
            }
        )

    def declared_gpu_count(self, name: str) -> int:
        """The size the node last declared (``nodes[name].gpu_count`` can be larger while shrinking)."""
        return self._declared[name]

    # ------------------------------------------------------------------------------------ commands

    def add_node(self, name: str, gpu_count: int) -> list[Decision]:
        """Register a node, or re-register it (a runtime agent restart), possibly with a new size.

        Returns ``Rejected`` for queued gangs that a shrink made impossible, then ``Allocated`` for queued
        gangs that now fit.
        """
        if gpu_count < 0:
            raise ValueError(f"node {name}: gpu_count must be >= 0, got {gpu_count}")
        node = self._nodes.get(name)
        self._declared[name] = gpu_count
        if node is None:
            self._nodes[name] = NodeState(name, gpu_count, set(range(gpu_count)))
        else:
            used = self._used_on(name)
            # An agent that registers is alive, so a re-registration also clears an unhealthy mark.
            node.healthy = True
            node.gpu_count = max(gpu_count, max(used, default=-1) + 1)
            node.free_gpus = set(range(gpu_count)) - used
        return self._reconcile_pending()

    def set_node_health(self, name: str, healthy: bool) -> list[Decision]:
        """Mark a node (un)healthy. Unhealthy nodes get no new pods; their allocations stay until released.

        An unknown node is ignored (a health report can overtake the registration); a node that becomes
        healthy retries the queue.
        """
        node = self._nodes.get(name)
        if node is None or node.healthy == healthy:
            return []
        node.healthy = healthy
        return self._retry_pending() if healthy else []

    def submit(self, req: GangRequest) -> Decision:
        """Place a gang now, queue it, or reject it. Idempotent per ``alloc_key``: a key already allocated
        returns its Allocated, a key already queued returns Queued with the stored request (a resubmission
        with different contents does not replace it)."""
        key = req.alloc_key
        existing = self._allocations.get(key)
        if existing is not None:
            return existing
        queued = self._pending.get(key)
        if queued is not None:
            return Queued(queued[1])
        reason = self._infeasible_reason(req)
        if reason is not None:
            return Rejected(req, reason)
        allocated = self._try_allocate(req)
        if allocated is not None:
            return allocated
        self._pending[key] = (self._next_seq, req)
        self._next_seq += 1
        return Queued(req)

    def release(self, job_key: str, attempt_id: int) -> list[Decision]:
        """Give back an attempt's GPUs, or drop it from the queue.

        Returns ``Released`` first, then ``Allocated`` for queued gangs that now fit. An unknown key (never
        submitted, rejected, or already released) is a no-op returning ``[]`` so that redelivered messages
        are harmless.
        """
        key = alloc_key(job_key, attempt_id)
        if self._pending.pop(key, None) is not None:
            # Nothing was held, so no capacity appears and the queue need not be retried.
            return [Released(job_key, attempt_id)]
        allocated = self._allocations.pop(key, None)
        if allocated is None:
            return []
        for placement in allocated.placements:
            self._give_back(placement.node, placement.gpus)
        decisions: list[Decision] = [Released(job_key, attempt_id)]
        decisions.extend(self._retry_pending())
        return decisions

    # ------------------------------------------------------------------------------------- snapshot

    def snapshot(self) -> dict[str, Any]:
        """The whole state as plain JSON values (str, int, bool, list, dict), e.g. for a MongoDB document."""
        return {
            "version": SNAPSHOT_VERSION,
            "next_seq": self._next_seq,
            "nodes": [
                {
                    "name": node.name,
                    "gpu_count": node.gpu_count,
                    "declared_gpu_count": self._declared[node.name],
                    "free_gpus": sorted(node.free_gpus),
                    "healthy": node.healthy,
                }
                for node in self._nodes.values()
            ],
            "allocations": [
                {
                    **_request_to_dict(a.request),
                    "placements": [p.model_dump(mode="json", exclude_defaults=True) for p in a.placements],
                }
                for a in self._allocations.values()
            ],
            "pending": [{"seq": seq, **_request_to_dict(req)} for seq, req in self._queue()],
        }

    @classmethod
    def restore(cls, d: Mapping[str, Any]) -> FirstFitScheduler:
        """Rebuild exactly the allocator that produced ``d``; raises ValueError on an inconsistent snapshot
        rather than start allocating from corrupt bookkeeping."""
        if d.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"unsupported scheduler snapshot version {d.get('version')!r}")
        s = cls()
        s._next_seq = int(d["next_seq"])
        for n in d["nodes"]:
            name = str(n["name"])
            if name in s._nodes:
                raise ValueError(f"node {name} appears twice in the snapshot")
            s._nodes[name] = NodeState(
                name, int(n["gpu_count"]), {int(g) for g in n["free_gpus"]}, bool(n["healthy"])
            )
            s._declared[name] = int(n["declared_gpu_count"])
        for a in d["allocations"]:
            req = _request_from_dict(a)
            placements = tuple(Placement.model_validate(p) for p in a["placements"])
            if req.alloc_key in s._allocations:
                raise ValueError(f"allocation {req.alloc_key} appears twice in the snapshot")
            s._allocations[req.alloc_key] = Allocated(req, placements)
        for p in d["pending"]:
            req = _request_from_dict(p)
            if req.alloc_key in s._pending or req.alloc_key in s._allocations:
                raise ValueError(f"pending gang {req.alloc_key} appears twice in the snapshot")
            s._pending[req.alloc_key] = (int(p["seq"]), req)
        s._validate()
        return s

    # ------------------------------------------------------------------------------------ internals

    def _queue(self) -> list[tuple[int, GangRequest]]:
        return sorted(self._pending.values(), key=lambda e: (-e[1].priority, e[0]))

    def _used_on(self, name: str) -> set[int]:
        return {g for a in self._allocations.values() for p in a.placements if p.node == name for g in p.gpus}

    def _give_back(self, name: str, gpus: Iterable[int]) -> None:
        node = self._nodes[name]
        declared = self._declared[name]
        # GPUs above the declared size no longer exist on the node: they are retired, not freed.
        node.free_gpus.update(g for g in gpus if g < declared)
        if node.gpu_count > declared:
            node.gpu_count = max(declared, max(self._used_on(name), default=-1) + 1)

    def _try_allocate(self, req: GangRequest) -> Allocated | None:
        free = {n.name: set(n.free_gpus) for n in self._nodes.values() if n.healthy}
        placements = _place(req.pods, free)
        if placements is None:
            return None
        for p in placements:
            self._nodes[p.node].free_gpus.difference_update(p.gpus)
        allocated = Allocated(req, placements)
        self._allocations[req.alloc_key] = allocated
        return allocated

    def _retry_pending(self) -> list[Decision]:
        # One pass suffices: placing a gang only removes capacity, so a gang skipped earlier in the pass
        # cannot fit later in it.
        decisions: list[Decision] = []
        for _, req in self._queue():
            allocated = self._try_allocate(req)
            if allocated is not None:
                del self._pending[req.alloc_key]
                decisions.append(allocated)
        return decisions

    def _reconcile_pending(self) -> list[Decision]:
        # After a resize, a queued gang may have become impossible (a node shrank): reject it rather than
        # let it wait forever, so that "queued" always means "will fit once enough is released".
        decisions: list[Decision] = []
        for _, req in self._queue():
            reason = self._infeasible_reason(req)
            if reason is not None:
                del self._pending[req.alloc_key]
                decisions.append(Rejected(req, reason))
        decisions.extend(self._retry_pending())
        return decisions

    def _infeasible_reason(self, req: GangRequest) -> str | None:
        """Why ``req`` can never be placed on this cluster, or None if it fits the cluster when empty."""
        if not req.pods:
            return "the gang has no pods"
        seen: set[tuple[str, int]] = set()
        for pod in req.pods:
            ident = (pod.task_role, pod.index)
            if ident in seen:
                return f"pod {pod.task_role}[{pod.index}] appears more than once in the gang"
            seen.add(ident)
        if not self._nodes:
            # At boot jobs can arrive before any agent registers: wait for nodes instead of refusing.
            return None
        largest = min(self._declared, key=lambda n: (-self._declared[n], n))
        largest_size = self._declared[largest]
        for pod in req.pods:
            if pod.gpu > largest_size:
                return (
                    f"pod {pod.task_role}[{pod.index}] wants {pod.gpu} GPUs but the largest node"
                    f" ({largest}) has {largest_size}"
                )
        wanted = sum(pod.gpu for pod in req.pods)
        total = sum(self._declared.values())
        if wanted > total:
            return (
                f"the gang wants {wanted} GPUs in total but the cluster has {total}"
                f" on {len(self._declared)} node(s)"
            )
        empty = {name: set(range(size)) for name, size in self._declared.items()}
        if _place(req.pods, empty) is None:
            sizes = ", ".join(f"{n}={self._declared[n]}" for n in sorted(self._declared))
            return (
                f"the gang's {len(req.pods)} pods ({wanted} GPUs: "
                f"{'+'.join(str(p.gpu) for p in sorted(req.pods, key=lambda p: -p.gpu))})"
                f" do not pack onto the nodes ({sizes}) even when the cluster is empty"
            )
        return None

    def _validate(self) -> None:
        """Check the bookkeeping invariants; used on restore, where the input comes from storage."""
        holder: dict[tuple[str, int], str] = {}
        for key, a in self._allocations.items():
            if len(a.placements) != len(a.request.pods):
                raise ValueError(
                    f"allocation {key}: {len(a.placements)} placements for {len(a.request.pods)} pods"
                )
            for pod, p in zip(a.request.pods, a.placements, strict=True):
                if (p.task_role, p.index) != (pod.task_role, pod.index) or len(p.gpus) != pod.gpu:
                    raise ValueError(f"allocation {key}: placement {p} does not match pod {pod}")
                node = self._nodes.get(p.node)
                if node is None:
                    raise ValueError(f"allocation {key}: unknown node {p.node}")
                for g in p.gpus:
                    if not 0 <= g < node.gpu_count or g in node.free_gpus:
                        raise ValueError(f"allocation {key}: GPU {p.node}/{g} is out of range or free")
                    other = holder.setdefault((p.node, g), key)
                    if other != key:
                        raise ValueError(f"GPU {p.node}/{g} is held by both {other} and {key}")
        for name, node in self._nodes.items():
            declared = self._declared[name]
            if declared < 0 or any(not 0 <= g < declared for g in node.free_gpus):
                raise ValueError(f"node {name}: free GPUs outside its declared size {declared}")
            used = {g for (n, g) in holder if n == name}
            if set(range(declared)) - used != node.free_gpus:
                raise ValueError(f"node {name}: free GPUs do not complement the allocated ones")
            if node.gpu_count != max(declared, max(used, default=-1) + 1):
                raise ValueError(f"node {name}: gpu_count {node.gpu_count} does not match its allocations")
        seqs = [seq for seq, _ in self._pending.values()]
        if len(set(seqs)) != len(seqs) or any(not 0 <= seq < self._next_seq for seq in seqs):
            raise ValueError("pending queue sequence numbers are duplicated or out of range")


def _request_to_dict(req: GangRequest) -> dict[str, Any]:
    return {
        "job_key": req.job_key,
        "attempt_id": req.attempt_id,
        "priority": req.priority,
        "pods": [pod.model_dump(mode="json", exclude_defaults=True) for pod in req.pods],
    }


def _request_from_dict(d: Mapping[str, Any]) -> GangRequest:
    return GangRequest(
        job_key=str(d["job_key"]),
        attempt_id=int(d["attempt_id"]),
        priority=int(d["priority"]),
        pods=tuple(PodRequest.model_validate(p) for p in d["pods"]),
    )
