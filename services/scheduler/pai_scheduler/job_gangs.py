"""How a job attempt's request becomes gangs of the HiveD core, and how the core's keys name them back.

An attempt with gang allocation (OpenPAI's default) is one gang, keyed ``<job>#<attempt>``. An attempt with
``extras.gangAllocation: false`` is one gang per pod, keyed ``<job>#<attempt>:<role>:<index>`` (a retried task
keeps its cells): as in OpenPAI with HiveD (whose pods without an affinity group are groups of their own),
each task is placed on its own as capacity allows, and released when it completes.

An elastic job's tasks beyond their roles' minimum (``PodRequest.growth``) are gangs of their own too, keyed
``<job>#<attempt>:<role>:<index>:grow`` and submitted as opportunistic work (``OPPORTUNISTIC``): they grow
into idle cells only after every waiting guaranteed gang (the queue serves priorities in order), never bind
quota (so the sharing-anomaly guarantee is untouched), and a preemptor takes them before the gang itself (the
opportunistic pass comes before the pass over a VC's own lower-priority gangs): the gang shrinks rather than
stops. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pai_common.contract.events import SchedulingRequested
from pai_common.contract.types import AttemptRef, PodRequest
from pai_scheduler.hived.requests import GangRequest, Member, gang_from_pods


def alloc_key(job_key: str, attempt_id: int) -> str:
    return f"{job_key}#{attempt_id}"


def pod_key(job_key: str, attempt_id: int, role: str, index: int) -> str:
    return f"{alloc_key(job_key, attempt_id)}:{role}:{index}"


GROWTH_SUFFIX = ":grow"
# Growth is opportunistic work whatever the job's priority: it never delays a guaranteed gang's admission.
OPPORTUNISTIC = -1


def growth_key(job_key: str, attempt_id: int, role: str, index: int) -> str:
    return pod_key(job_key, attempt_id, role, index) + GROWTH_SUFFIX


@dataclass(frozen=True)
class KeyParts:
    """What a core key names: the attempt, and the task when the attempt's pods are gangs of their own."""

    job_key: str
    attempt_id: int
    task_role: str | None = None
    index: int | None = None
    growth: bool = False

    @property
    def attempt(self) -> str:
        return alloc_key(self.job_key, self.attempt_id)

    def ref(self) -> AttemptRef:
        return AttemptRef(job_key=self.job_key, attempt_id=self.attempt_id)


def parse_key(key: str) -> KeyParts:
    job_key, _, rest = key.rpartition("#")
    attempt, *pod = rest.split(":")
    if len(pod) == 2:
        return KeyParts(job_key, int(attempt), pod[0], int(pod[1]))
    if len(pod) == 3 and f":{pod[2]}" == GROWTH_SUFFIX:
        return KeyParts(job_key, int(attempt), pod[0], int(pod[1]), growth=True)
    return KeyParts(job_key, int(attempt))


def split_key(key: str) -> AttemptRef:
    return parse_key(key).ref()


def pods_of_attempt(keys: Iterable[str], job_key: str, attempt_id: int) -> list[str]:
    """The keys among ``keys`` of the attempt's pods placed one by one."""
    prefix = f"{alloc_key(job_key, attempt_id)}:"
    return sorted(k for k in keys if k.startswith(prefix))


def gang_placement(pods: list[PodRequest]) -> tuple[list[str], str | None, bool]:
    """The SKU types and pinned cell of a whole gang: one job's gang lives in one chain, so its task
    roles must agree (roles that name nothing go along with those that do)."""
    sku_sets = {tuple(p.sku_types) for p in pods if p.sku_types}
    pinned = {p.pinned_cell for p in pods if p.pinned_cell}
    if len(sku_sets) > 1:
        names = ", ".join("|".join(s) for s in sorted(sku_sets))
        raise ValueError(f"the task roles ask for different SKU types ({names}); one job must use one")
    if len(pinned) > 1:
        raise ValueError(f"the task roles name different pinned cells ({', '.join(sorted(pinned))})")
    infiniband = any(p.infiniband for p in pods)
    return (list(sku_sets.pop()) if sku_sets else []), (pinned.pop() if pinned else None), infiniband


def _pod_gang(body: SchedulingRequested, pod: PodRequest) -> GangRequest:
    member = Member(
        pod.task_role, 1, pod.gpu, float(pod.cpu), pod.memory_mb, pod.gpu_milli, pod.gpu_memory_mb
    )
    if pod.growth:
        key = growth_key(body.job_key, body.attempt_id, pod.task_role, pod.index)
        # Opportunistic work is never lazily preempted (downgraded): it is preempted, i.e. shrunk away.
        priority, lazy = OPPORTUNISTIC, False
    else:
        key = pod_key(body.job_key, body.attempt_id, pod.task_role, pod.index)
        priority, lazy = body.priority, body.lazy_preemption
    return GangRequest(
        key,
        body.virtual_cluster,
        priority,
        (member,),
        tuple(pod.sku_types),
        pod.pinned_cell,
        lazy_preemption=lazy,
    )


def requests_of(body: SchedulingRequested) -> list[GangRequest]:
    """The gangs an attempt asks for: one, or (gang allocation off) one per pod in index order, or (an elastic
    job's second request) one per growth pod. ValueError for a request no gang can be built from."""
    by_index = sorted(body.pods, key=lambda p: (p.task_role, p.index))
    pods = [p for p in by_index if not p.growth]
    if not pods:
        return [_pod_gang(body, p) for p in by_index]
    if len(pods) < len(by_index):
        # Growth asked with its gang could be placed while the gang waits, holding cells for nothing.
        raise ValueError("growth pods are asked for alone, once the attempt's gang is placed")
    if not body.gang_allocation:
        return [_pod_gang(body, p) for p in pods]
    leaf_types, pinned, infiniband = gang_placement(pods)
    return [
        gang_from_pods(
            alloc_key(body.job_key, body.attempt_id),
            body.virtual_cluster,
            body.priority,
            pods,
            leaf_types,
            pinned,
            lazy_preemption=body.lazy_preemption,
            infiniband=infiniband,
        )
    ]


def pending_by_attempt(reasons: Mapping[str, list[Any]]) -> dict[str, list[Any]]:
    """Why each waiting attempt waits ([reason, position] by core key): an attempt placed pod by pod waits
    as one, with its first waiting pod's reason (and place in the queue), so that a job of 500 tasks gives
    one pending reason, not 500. How many of its pods wait is left out: the reason changes (and is published
    again) only when the cause does, not each time one more task is placed."""
    out: dict[str, list[Any]] = {}
    pods: dict[str, list[tuple[int, str, str]]] = {}
    for key, (reason, position) in reasons.items():
        parts = parse_key(key)
        if parts.growth:
            continue  # growth waits for idle cells while its job runs: the job itself does not wait
        if parts.task_role is None:
            out[key] = [reason, position]
        else:
            order = position if position is not None else 1 << 30
            pods.setdefault(parts.attempt, []).append((order, key, reason))
    for attempt, waiting in pods.items():
        order, _, reason = min(waiting)
        out[attempt] = [
            f"some of its tasks wait to be placed (one by one: gangAllocation is false); the first waits"
            f" because: {reason}",
            None if order == 1 << 30 else order,
        ]
    return out
