"""What the HiveD core answers: plain frozen values the service turns into events."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias


@dataclass(frozen=True)
class PodPlacement:
    role: str
    index: int
    node: str
    leaf_type: str
    leaves: tuple[int, ...]  # device indices on the node
    # A share of the one leaf in ``leaves`` (GPU virtualisation); both 0 for whole leaves.
    milli: int = 0
    memory_mb: int = 0

    @property
    def is_share(self) -> bool:
        return self.milli > 0 or self.memory_mb > 0


@dataclass(frozen=True)
class Allocated:
    key: str
    placements: tuple[PodPlacement, ...]


@dataclass(frozen=True)
class Preempting:
    """The gang holds a reservation on ``placements``; it is allocated once every victim is released.
    Victims are whole gangs (their keys), lowest priority first."""

    key: str
    victims: tuple[str, ...]
    placements: tuple[PodPlacement, ...]
    # Reclaim of borrowed cells: how long the victims may run on before they are stopped (0: at once).
    grace_s: float = 0.0


@dataclass(frozen=True)
class Queued:
    key: str
    reason: str  # why it is pending, in words a user can act on (with its place in the queue)
    position: int  # 1-based, in its VC's queue
    # The reason without the place in the queue: what the service publishes and stores, since the place
    # changes with every gang placed ahead of this one while the cause stays the same.
    cause: str


@dataclass(frozen=True)
class Rejected:
    """The request is invalid or can never be placed on this cluster and VC."""

    key: str
    reason: str


@dataclass(frozen=True)
class Released:
    key: str


@dataclass(frozen=True)
class Downgraded:
    """Lazy preemption (HiveD's): the gang ``key`` (which asked for ``lazy_preemption``) keeps running
    where it is, but as opportunistic work (priority -1) from now on, so that ``preemptor`` could be placed
    within the VC's quota elsewhere; it no longer counts against its VC's quota and can later be
    preempted like any opportunistic gang. Nothing has to be stopped; its placement is unchanged."""

    key: str
    preemptor: str = ""  # empty when a reconfiguration downgraded it
    reason: str = ""  # set when a reconfiguration downgraded it: why it no longer fits its VC's quota


@dataclass(frozen=True)
class Lost:
    """Reconfiguration (``HivedAllocator.reconfigure``): the running gang ``key`` cannot stay where it is
    under the new config (a node or leaf it uses is gone, its leaves changed type or now sit in a pinned
    cell of another VC, or another gang claims them). The allocator no longer holds it (no ``Released``
    follows); the service must stop the attempt (it may be submitted again)."""

    key: str
    reason: str


Decision: TypeAlias = Allocated | Preempting | Queued | Rejected | Released | Downgraded | Lost
