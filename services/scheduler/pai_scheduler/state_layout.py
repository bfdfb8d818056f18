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

# The recent request mix (``hived/mix.py``, up to 2,000 entries) is stored in chunks of this many entries,
# numbered by the position of their entries among all ever added: an entry added writes the last chunk
# only, and a chunk leaves once the window has slid past it.
MIX_CHUNK = 32


@dataclass
class Writes:
    """Documents to replace (by key) and to delete: what changed between two stored states."""

    upsert: dict[Any, Any] = field(default_factory=dict)
    delete: list[Any] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.upsert) + len(self.delete)


@dataclass(frozen=True)
class Documents:
    """What is stored beside the header: each gang's document by its key, the mix's chunks by number."""

    groups: dict[str, Doc] = field(default_factory=dict)
    mix: dict[int, list[Any]] = field(default_factory=dict)


def split(snapshot: Mapping[str, Any]) -> tuple[Doc, Documents]:
    """A snapshot as its header (counters, bindings, bad nodes, holds) and the documents beside it."""
    header = {k: v for k, v in snapshot.items() if k not in ("groups", "mix")}
    groups = {str(g["request"]["key"]): g for g in snapshot["groups"]}
    mix = list(snapshot.get("mix", ()))
    chunks: dict[int, list[Any]] = {}
    if mix:
        header["mix_len"] = len(mix)
        first = int(snapshot["mix_total"]) - len(mix)
        for i, entry in enumerate(mix, start=first):
            chunks.setdefault(i // MIX_CHUNK, []).append(entry)
    return header, Documents(groups, chunks)


def join(header: Mapping[str, Any], docs: Documents) -> Doc:
    """The snapshot ``split`` came from: the gangs in their submission order, the mix's window."""
    snapshot = {k: v for k, v in header.items() if k != "mix_len"}
    snapshot["groups"] = sorted(docs.groups.values(), key=lambda g: int(g["seq"]))
    if "mix_len" in header:
        entries = [e for c in sorted(docs.mix) for e in docs.mix[c]]
        length = int(header["mix_len"])
        if len(entries) < length:
            raise ValueError(f"the request mix has {len(entries)} entries stored of its {length}")
        snapshot["mix"] = entries[len(entries) - length :]
    return snapshot


def writes(stored: Documents, now: Documents) -> tuple[Writes, Writes, Documents]:
    """The gang and mix documents a save writes (those new or changed since ``stored``, those gone), and
    the documents stored once it commits. A first chunk that only lost entries at its head is left as it
    is (``join`` keeps the window's length): so an entry added rewrites the last chunk only."""
    groups = Writes(
        upsert={k: g for k, g in now.groups.items() if stored.groups.get(k) != g},
        delete=sorted(k for k in stored.groups if k not in now.groups),
    )
    kept: dict[int, list[Any]] = {}
    mix = Writes(delete=sorted(c for c in stored.mix if c not in now.mix))
    first = min(now.mix, default=None)
    for c, entries in now.mix.items():
        old = stored.mix.get(c)
        if old is not None and (old == entries or (c == first and old[len(old) - len(entries) :] == entries)):
            kept[c] = old
        else:
            kept[c] = mix.upsert[c] = entries
    return groups, mix, Documents(now.groups, kept)


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
