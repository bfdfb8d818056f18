"""Why a node takes no new work: its agent is silent (down) or an admin cordoned it (pure).

The allocator knows one thing per node, whether it is bad (HiveD's bad node: no new pods, what runs
there stays, its cells count as bad for quota, as HiveD does for an unschedulable Kubernetes node). Two
independent causes feed it, and neither may undo the other: a node heard from again stays cordoned, and
an uncordoned node whose agent is silent stays bad. Both are stored with the allocator's state, so they
survive restarts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class Cordon:
    by: str
    at_ms: int
    reason: str = ""
    # Drain: the gangs running there were asked to stop (gracefully, retried elsewhere, uncounted).
    drain: bool = False


@dataclass
class NodeMarks:
    down: set[str] = field(default_factory=set)
    cordoned: dict[str, Cordon] = field(default_factory=dict)

    def schedulable(self, node: str) -> bool:
        """Whether the allocator may place new work on the node."""
        return node not in self.down and node not in self.cordoned

    def cordon(self, node: str, cordon: Cordon) -> None:
        self.cordoned[node] = cordon

    def uncordon(self, node: str) -> None:
        self.cordoned.pop(node, None)

    def restricted_to(self, nodes: Iterable[str]) -> NodeMarks:
        """Only the nodes a (new) cluster config still has."""
        keep = set(nodes)
        return NodeMarks(
            {n for n in self.down if n in keep}, {n: c for n, c in self.cordoned.items() if n in keep}
        )

    def pending_note(self) -> str:
        """What a waiting gang's reason adds while nodes are cordoned (empty when none is)."""
        if not self.cordoned:
            return ""
        names = ", ".join(sorted(self.cordoned))
        return f"; cordoned by an admin, taking no new work: {names}"

    def to_doc(self) -> dict[str, Any]:
        return {
            "down": sorted(self.down),
            # A list of records, not a mapping: node names may hold "." which MongoDB reads as a path.
            "cordoned": [
                {"node": n, "by": c.by, "at": c.at_ms, "reason": c.reason, "drain": c.drain}
                for n, c in sorted(self.cordoned.items())
            ],
        }

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any] | None, bad_nodes: Iterable[str]) -> NodeMarks:
        """Read back ``to_doc``; a state saved before marks existed had only silent nodes as bad ones."""
        if doc is None:
            return cls(down=set(bad_nodes))
        return cls(
            down={str(n) for n in doc.get("down", [])},
            cordoned={
                str(c["node"]): Cordon(
                    str(c["by"]), int(c["at"]), str(c.get("reason", "")), bool(c.get("drain", False))
                )
                for c in doc.get("cordoned", [])
            },
        )

    def copy(self) -> NodeMarks:
        return NodeMarks(set(self.down), {n: replace(c) for n, c in self.cordoned.items()})
