"""Per-user request limits (OpenPAI: submit per hour, list per minute), as fixed windows per user.

Pure: the caller passes the time. One limiter per gateway process: with N replicas a user may make up to N
times the limit, which is the price of a gateway without a database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

# Forget finished windows once this many users are tracked, so that memory stays bounded.
PRUNE_AT: Final = 10_000


@dataclass
class FixedWindowLimiter:
    """At most `limit` hits per key in each window of `window_s` seconds, the window starting at the
    key's first hit (as express-rate-limit counts). A limit of 0 allows everything."""

    limit: int
    window_s: float
    _windows: dict[str, tuple[float, int]] = field(default_factory=dict)

    def hit(self, key: str, now: float) -> float | None:
        """Count one request; None when it is allowed, else the seconds until the window resets."""
        if self.limit <= 0:
            return None
        start, count = self._windows.get(key, (now, 0))
        if now - start >= self.window_s:
            start, count = now, 0
        if count >= self.limit:
            return start + self.window_s - now
        if len(self._windows) >= PRUNE_AT and key not in self._windows:
            self._prune(now)
        self._windows[key] = (start, count + 1)
        return None

    def _prune(self, now: float) -> None:
        self._windows = {k: v for k, v in self._windows.items() if now - v[0] < self.window_s}
