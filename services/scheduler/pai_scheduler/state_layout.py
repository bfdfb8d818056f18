"""How the allocator's state is stored: a small header and one document per gang. Pure.

A single document holding the whole snapshot was rewritten by every transaction, so each event cost
bytes in proportion to the gangs in the system (351 KB with 1,600 jobs waiting, issue 17). Split, a
transaction writes the header (the version guard, sequence counters, bindings, bad nodes, holds) and only
the gangs whose stored form changed since the state it started from; a request arriving while thousands
wait writes its own gang, not theirs. The waiting attempts' reasons are stored the same way, one document
per attempt holding only what decides a ``scheduling.pending`` event (the reason's gist): places and counts
move with every placement, so storing them would rewrite every waiting attempt each time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pai_scheduler.pending_events import gist

Doc = dict[str, Any]


def split(snapshot: Mapping[str, Any]) -> tuple[Doc, dict[str, Doc]]:
    """A snapshot as its header (everything but the gangs) and its gangs by key."""
    header = {k: v for k, v in snapshot.items() if k != "groups"}
    return header, {str(g["request"]["key"]): g for g in snapshot["groups"]}


def join(header: Mapping[str, Any], groups: Mapping[str, Mapping[str, Any]]) -> Doc:
    """The snapshot ``split`` came from: the gangs back in their submission order."""
    return {**header, "groups": sorted(groups.values(), key=lambda g: int(g["seq"]))}


@dataclass
class Writes:
    """Documents to replace (by key) and to delete: what changed between two stored states."""

    upsert: dict[str, Any] = field(default_factory=dict)
    delete: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.upsert) + len(self.delete)


def group_writes(stored: Mapping[str, Any], now: Mapping[str, Any]) -> Writes:
    """The gang documents a save writes: those new or changed since ``stored``, and those gone."""
    return Writes(
        upsert={k: g for k, g in now.items() if stored.get(k) != g},
        delete=sorted(k for k in stored if k not in now),
    )


def reason_writes(stored: Mapping[str, str], waiting: Mapping[str, list[Any]]) -> Writes:
    """The reason documents a save writes (``stored``: gist by attempt key; ``waiting``: [reason, place]
    by attempt key): an attempt that starts waiting or whose cause changed, and those no longer waiting."""
    return Writes(
        upsert={k: g for k, (reason, _) in waiting.items() if stored.get(k) != (g := gist(str(reason)))},
        delete=sorted(k for k in stored if k not in waiting),
    )


def gists(waiting: Mapping[str, list[Any]]) -> dict[str, str]:
    """What is stored of each waiting attempt's [reason, place]."""
    return {k: gist(str(reason)) for k, (reason, _) in waiting.items()}
