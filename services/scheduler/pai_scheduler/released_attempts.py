"""Attempts that ended before the scheduler applied their request: tombstones (pure).

An attempt's ``scheduling.requested`` comes before its ``job.attempt.completed`` in the stream, but a
request that keeps failing (a database away for longer than a transaction's retries) goes back to the
stream with a delay, and the completion behind it can be applied first. The release then finds nothing,
and the request, applied afterwards, would take cells for an attempt that has ended: nothing would ever
give them back. So a completion that finds nothing of its attempt leaves a tombstone, and a request that
meets one is dropped and takes it away.

Tombstones are stored with the allocator's state (in the same transaction, one document each), so they
outlive a restart. An attempt placed pod by pod whose every pod its tasks' completions released leaves
none (its request was applied: the shell keeps such attempts until their end), unless the scheduler
restarted meanwhile. One whose request never comes is forgotten after ``KEEP_S``: an attempt that ended
before it asked, whose request was refused, or the one of a restart just named. While the scheduler
runs, a request lags at most a redelivery delay (naks back off to 30 s, an unacknowledged message comes
back after the 60 s ack wait) behind what overtook it; an hour is far beyond that. A request replayed from
the dead letters later than that is not guarded.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

KEEP_S = 3600.0


@dataclass
class ReleasedAttempts:
    """Attempt key → when (epoch seconds) its completion found nothing to release, oldest first."""

    at: dict[str, float] = field(default_factory=dict)

    def remember(self, key: str, now: float) -> None:
        self.at.setdefault(key, now)

    def take(self, key: str) -> bool:
        """Whether the attempt ended before its request came; the tombstone goes either way."""
        return self.at.pop(key, None) is not None

    def forget_older_than(self, cutoff: float) -> None:
        """Looks only at the oldest ones: called once a batch, with thousands kept."""
        old = []
        for key, when in self.at.items():
            if when >= cutoff:
                break
            old.append(key)
        for key in old:
            del self.at[key]

    def changes_from(self, stored: ReleasedAttempts) -> tuple[dict[str, float], list[str]]:
        """What to write so that the stored tombstones become these: (added, removed)."""
        added = {k: when for k, when in self.at.items() if k not in stored.at}
        removed = sorted(k for k in stored.at if k not in self.at)
        return added, removed

    def copy(self) -> ReleasedAttempts:
        return ReleasedAttempts(dict(self.at))

    @classmethod
    def from_docs(cls, docs: Iterable[Mapping[str, Any]]) -> ReleasedAttempts:
        return cls(dict(sorted(((str(d["_id"]), float(d["at"])) for d in docs), key=lambda kv: kv[1])))
