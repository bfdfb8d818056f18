"""What a job asks the HiveD core for: one gang (HiveD's affinity group) per job attempt.

A gang has members, one per task role: ``pods`` pods of ``leaves`` leaves each (a leaf is one GPU or FPGA;
``cpu``/``memory_mb`` per pod may raise the leaf count through the SKU's per-leaf resources). Leaves of one
pod always lie on one node. ``leaf_types`` names the acceptable leaf types (``("A100", "H100")`` for
``A100|H100``), or is empty for any. Priority is guaranteed (0..1000, within the VC's quota) or
opportunistic (-1, anywhere idle).
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


@dataclass(frozen=True)
class GangRequest:
    key: str
    vc: str
    priority: int
    members: tuple[Member, ...]
    leaf_types: tuple[str, ...] = ()
    pinned_cell: str | None = None
    # Not implemented in this part; a request asking for them is refused with UnsupportedRequestError.
    lazy_preemption: bool = False
    infiniband: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.members, tuple):
            object.__setattr__(self, "members", tuple(self.members))
        if not isinstance(self.leaf_types, tuple):
            object.__setattr__(self, "leaf_types", tuple(self.leaf_types))

    @property
    def guaranteed(self) -> bool:
        return self.priority >= 0


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
) -> GangRequest:
    """Build a gang from the contract's per-pod requests; the pods of one role must be alike and indexed
    0..n-1 (as the orchestrator renders them)."""
    roles: dict[str, list[PodRequest]] = {}
    for p in pods:
        roles.setdefault(p.task_role, []).append(p)
    members = []
    for role, ps in roles.items():
        shapes = {(p.gpu, p.cpu, p.memory_mb) for p in ps}
        if len(shapes) != 1 or sorted(p.index for p in ps) != list(range(len(ps))):
            raise ValueError(f"task role {role}: pods must be alike and indexed 0..{len(ps) - 1}")
        gpu, cpu, mem = shapes.pop()
        members.append(Member(role, len(ps), gpu, float(cpu), mem))
    return GangRequest(key, vc, priority, tuple(members), tuple(leaf_types), pinned_cell)


def request_to_dict(r: GangRequest) -> dict[str, Any]:
    return {
        "key": r.key,
        "vc": r.vc,
        "priority": r.priority,
        "members": [
            {"role": m.role, "pods": m.pods, "leaves": m.leaves, "cpu": m.cpu, "memory_mb": m.memory_mb}
            for m in r.members
        ],
        "leaf_types": list(r.leaf_types),
        "pinned_cell": r.pinned_cell,
    }


def request_from_dict(d: Mapping[str, Any]) -> GangRequest:
    return GangRequest(
        key=str(d["key"]),
        vc=str(d["vc"]),
        priority=int(d["priority"]),
        members=tuple(
            Member(str(m["role"]), int(m["pods"]), int(m["leaves"]), float(m["cpu"]), int(m["memory_mb"]))
            for m in d["members"]
        ),
        leaf_types=tuple(str(t) for t in d["leaf_types"]),
        pinned_cell=None if d["pinned_cell"] is None else str(d["pinned_cell"]),
    )
