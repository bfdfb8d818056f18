"""A gang as the allocator keeps it: its request, state, chain, the leaves of each pod, and its preemption
links. HiveD calls it an affinity group; its states are HiveD's (Pending, Preempting, Allocated,
BeingPreempted)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from enum import Enum

from pai_scheduler.hived.cells import OPPORTUNISTIC_PRIORITY, Cell
from pai_scheduler.hived.requests import GangRequest

# One pod's leaves: (role, index, leaves).
PodSlot = tuple[str, int, tuple[Cell, ...]]


class GroupState(Enum):
    PENDING = "Pending"
    PREEMPTING = "Preempting"
    ALLOCATED = "Allocated"
    BEING_PREEMPTED = "BeingPreempted"


@dataclass
class Gang:
    request: GangRequest
    seq: int
    state: GroupState = GroupState.PENDING
    chain: str | None = None
    slots: list[PodSlot] = field(default_factory=list)
    victims: set[str] = field(default_factory=set)  # outstanding victims of a Preempting gang
    preemptors: set[str] = field(default_factory=set)  # gangs preempting a BeingPreempted one
    downgraded: bool = False  # lazily preempted: runs on as opportunistic work
    since: float | None = None  # clock time it was submitted (None: no clock given yet)
    held_by: str | None = None  # the protected head its last placement attempt was held back for
    started: int = -1  # order in which gangs were allocated (-1: not yet, or before it was recorded)
    borrowed: bool = False  # a guaranteed gang running on another VC's idle cells (borrowing.py)
    # role -> (milli, GPU memory MB) for the roles whose pods take a share of one leaf
    shares: dict[str, tuple[int, int]] = field(init=False)

    # the request without its key: gangs of one shape fit or fail alike (_retry_pending)
    shape: GangRequest = field(init=False)

    def __post_init__(self) -> None:
        self.shares = {m.role: (m.gpu_milli, m.gpu_memory_mb) for m in self.request.members if m.is_share}
        self.shape = replace(self.request, key="")

    @property
    def priority(self) -> int:
        """The priority its leaves run at: -1 once downgraded, or while it borrows."""
        return OPPORTUNISTIC_PRIORITY if self.downgraded or self.borrowed else self.request.priority

    def leaves(self) -> Iterable[Cell]:
        for _, _, leaves in self.slots:
            yield from leaves
