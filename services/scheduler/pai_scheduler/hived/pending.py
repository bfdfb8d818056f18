"""The queue of waiting gangs, kept in retry order (highest priority, then oldest) as gangs enter and leave
it, with each VC's own queue beside it: a gang's position and each VC's head are found without sorting the
whole queue on every decision (a busy cluster has thousands of gangs waiting)."""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Mapping

from pai_scheduler.hived.gangs import Gang

# (minus priority, submission order, key): sorts in retry order.
_Entry = tuple[int, int, str]


def _entry(g: Gang) -> _Entry:
    return (-g.request.priority, g.seq, g.request.key)


class PendingQueue:
    def __init__(self) -> None:
        self._all: list[_Entry] = []
        self._by_vc: dict[str, list[_Entry]] = {}

    def __len__(self) -> int:
        return len(self._all)

    def __contains__(self, g: Gang) -> bool:
        entries = self._by_vc.get(g.request.vc, [])
        i = bisect.bisect_left(entries, _entry(g))
        return i < len(entries) and entries[i] == _entry(g)

    def add(self, g: Gang) -> None:
        """The gang waits (again); adding a gang already queued changes nothing."""
        if g in self:
            return
        e = _entry(g)
        bisect.insort(self._all, e)
        bisect.insort(self._by_vc.setdefault(g.request.vc, []), e)

    def discard(self, g: Gang) -> None:
        """The gang no longer waits (placed, preempting, or withdrawn); unknown gangs are ignored."""
        e = _entry(g)
        for entries in (self._all, self._by_vc.get(g.request.vc, [])):
            i = bisect.bisect_left(entries, e)
            if i < len(entries) and entries[i] == e:
                del entries[i]

    def keys(self) -> Iterator[str]:
        """Keys of the waiting gangs in retry order."""
        return (key for _, _, key in self._all)

    def position(self, g: Gang) -> int:
        """1-based position of a waiting gang in its VC's queue."""
        entries = self._by_vc[g.request.vc]
        i = bisect.bisect_left(entries, _entry(g))
        assert i < len(entries) and entries[i] == _entry(g), f"{g.request.key} is not queued"
        return i + 1

    def heads(self, groups: Mapping[str, Gang]) -> dict[str, Gang]:
        """The first waiting gang of each VC that has one."""
        return {vc: groups[entries[0][2]] for vc, entries in self._by_vc.items() if entries}
