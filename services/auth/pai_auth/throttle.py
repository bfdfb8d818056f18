"""Brute-force login throttling, per user and per client address. Pure: the clock is passed in.

Failures are counted in a sliding window. Once a user has failed ``user_limit`` times in the window,
every further attempt for that user is refused without checking the password, for a delay that doubles
with each further failure (capped); the same holds per client address with a larger ``client_limit``, so
that spraying many usernames from one address is stopped too. A successful login clears the user's count
(never the address's: a valid account must not launder an attacker's address).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ThrottlePolicy:
    window_s: float = 900.0
    user_limit: int = 5
    client_limit: int = 20
    base_delay_s: float = 1.0
    max_delay_s: float = 900.0
    # Keys remembered at most; the least recently failed are forgotten first.
    max_keys: int = 100_000


@dataclass
class LoginThrottle:
    policy: ThrottlePolicy = field(default_factory=ThrottlePolicy)
    _failures: OrderedDict[str, deque[float]] = field(default_factory=OrderedDict)

    def retry_after(self, username: str, client: str, now: float) -> float:
        """Seconds until an attempt for this user from this client is allowed again; 0 when it is now."""
        wait = self._wait(f"u:{username}", self.policy.user_limit, now)
        if client:
            wait = max(wait, self._wait(f"c:{client}", self.policy.client_limit, now))
        return wait

    def failed(self, username: str, client: str, now: float) -> None:
        self._add(f"u:{username}", now)
        if client:
            self._add(f"c:{client}", now)

    def succeeded(self, username: str) -> None:
        self._failures.pop(f"u:{username}", None)

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.get(key)
        if times is None:
            return deque()
        while times and times[0] <= now - self.policy.window_s:
            times.popleft()
        if not times:
            del self._failures[key]
        return times

    def _wait(self, key: str, limit: int, now: float) -> float:
        times = self._recent(key, now)
        if len(times) < limit:
            return 0.0
        over = len(times) - limit
        delay = min(self.policy.base_delay_s * float(2**over), self.policy.max_delay_s)
        return max(0.0, times[-1] + delay - now)

    def _add(self, key: str, now: float) -> None:
        times = self._recent(key, now)
        if key not in self._failures:
            self._failures[key] = times
        times.append(now)
        self._failures.move_to_end(key)
        while len(self._failures) > self.policy.max_keys:
            self._failures.popitem(last=False)
