"""What a job asks the HiveD core for: one gang (HiveD's affinity group) per job attempt.

A gang has members, one per task role: ``pods`` pods of ``leaves`` leaves each (a leaf is one GPU or FPGA;
``cpu``/``memory_mb`` per pod may raise the leaf count through the SKU's per-leaf resources). Leaves of one
pod always lie on one node. A member may instead ask for part of one leaf (GPU virtualisation):
``gpu_milli`` (1..999 thousandths of a GPU) and/or ``gpu_memory_mb`` of GPU memory, with ``leaves = 0``;
each such pod gets a share of one leaf (``leaves=0.5`` is read as ``gpu_milli=500``). ``leaf_types``
names the acceptable leaf types (``("A100", "H100")`` for ``A100|H100``), or is empty for any. Priority
is guaranteed (0..1000, within the VC's quota) or opportunistic (-1, anywhere idle).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pai_common.contract.types import PodRequest

# OpenPAI's priority classes.
PRIORITY_CLASSES = {"crit": 120, "prod": 100, "test": 10, "oppo": -1}


@dataclass(frozen=True)
class Member:
    role: str
    pods: int
    leaves: int
    cpu: float = 0.0
    memory_mb: int = 0
    # A share of one leaf per pod (both 0: whole leaves). CPU and host memory of share pods are not
    # turned into leaves through the SKU.
    gpu_milli: int = 0
    gpu_memory_mb: int = 0

    def __post_init__(self) -> None:
        leaves: object = self.leaves
        if isinstance(leaves, float) and not isinstance(leaves, bool):
            if leaves.is_integer():
                object.__setattr__(self, "leaves", int(leaves))
            elif 0 < leaves < 1 and self.gpu_milli == 0:
                object.__setattr__(self, "leaves", 0)
                object.__setattr__(self, "gpu_milli", max(1, round(leaves * 1000)))

    @property
    def is_share(self) -> bool:
        return self.gpu_milli > 0 or self.gpu_memory_mb > 0


@dataclass(frozen=True)
class GangRequest:
    key: str
    vc: str
    priority: int
    members: tuple[Member, ...]
    leaf_types: tuple[str, ...] = ()
    pinned_cell: str | None = None
    # HiveD's lazy preemption: when a higher-priority gang of the VC needs this gang's cells, downgrade it
    # to opportunistic (it keeps running) if the preemptor can then be placed elsewhere.
    lazy_preemption: bool = False
    # ``extraContainerOptions.infiniband``: all pods under one InfiniBand domain (a cell of the chain's
    # ``isInfiniBand`` level, else its top cell; an inventory's rack).
    infiniband: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.members, tuple):
            object.__setattr__(self, "members", tuple(self.members))
        if not isinstance(self.leaf_types, tuple):
            object.__setattr__(self, "leaf_types", tuple(self.leaf_types))

    @property
    def guaranteed(self) -> bool:
        return self.priority >= 0

    @property
    def demand_milli(self) -> int:
        """The GPUs the gang asks for, in thousandths (shares as their fraction; CPU-only pods ask none)."""
        return sum(m.pods * (m.gpu_milli if m.is_share else m.leaves * 1000) for m in self.members)


def parse_leaf_types(text: str | None) -> tuple[str, ...]:
    """``"A100|H100"`` -> ``("A100", "H100")``; empty or None -> any type."""
    if not text:
        return ()
    return tuple(t.strip() for t in text.split("|") if t.strip())


def gang_from_pods(
    key: str,
    vc: str,
    priority: int,
    pods: Sequence[PodRequest],
    leaf_types: Sequence[str] = (),
    pinned_cell: str | None = None,
    lazy_preemption: bool = False,
    infiniband: bool = False,
) -> GangRequest:
    """Build a gang from the contract's per-pod requests; the pods of one role must be alike and indexed
    0..n-1 (as the orchestrator renders them)."""
    roles: dict[str, list[PodRequest]] = {}
    for p in pods:
        roles.setdefault(p.task_role, []).append(p)
    members = []
    for role, ps in roles.items():
        # gpu_milli / gpu_memory_mb are read when the contract's PodRequest carries them.
        shapes = {
            (p.gpu, p.cpu, p.memory_mb, getattr(p, "gpu_milli", 0) or 0, getattr(p, "gpu_memory_mb", 0) or 0)
            for p in ps
        }
        if len(shapes) != 1 or sorted(p.index for p in ps) != list(range(len(ps))):
            raise ValueError(f"task role {role}: pods must be alike and indexed 0..{len(ps) - 1}")
        gpu, cpu, mem, milli, gmem = shapes.pop()
        members.append(Member(role, len(ps), gpu, float(cpu), mem, int(milli), int(gmem)))
    return GangRequest(
        key,
        vc,
        priority,
        tuple(members),
        tuple(leaf_types),
        pinned_cell,
        lazy_preemption=lazy_preemption,
        infiniband=infiniband,
    )


def request_to_dict(r: GangRequest) -> dict[str, Any]:
    return {
        "key": r.key,
        "vc": r.vc,
        "priority": r.priority,
        "members": [_member_to_dict(m) for m in r.members],
        "leaf_types": list(r.leaf_types),
        "pinned_cell": r.pinned_cell,
        **({"lazy_preemption": True} if r.lazy_preemption else {}),
        **({"infiniband": True} if r.infiniband else {}),
    }


def _member_to_dict(m: Member) -> dict[str, Any]:
    d: dict[str, Any] = {
        "role": m.role,
        "pods": m.pods,
        "leaves": m.leaves,
        "cpu": m.cpu,
        "memory_mb": m.memory_mb,
    }
    if m.is_share:  # whole-leaf members keep the exact shape of earlier snapshots
        d["gpu_milli"] = m.gpu_milli
        d["gpu_memory_mb"] = m.gpu_memory_mb
    return d


def request_from_dict(d: Mapping[str, Any]) -> GangRequest:
    return GangRequest(
        key=str(d["key"]),
        vc=str(d["vc"]),
        priority=int(d["priority"]),
        members=tuple(
            Member(
                str(m["role"]),
                int(m["pods"]),
                int(m["leaves"]),
                float(m["cpu"]),
                int(m["memory_mb"]),
                int(m.get("gpu_milli", 0)),
                int(m.get("gpu_memory_mb", 0)),
            )
            for m in d["members"]
        ),
        leaf_types=tuple(str(t) for t in d["leaf_types"]),
        pinned_cell=None if d["pinned_cell"] is None else str(d["pinned_cell"]),
        lazy_preemption=bool(d.get("lazy_preemption", False)),
        infiniband=bool(d.get("infiniband", False)),
    )
