"""Admission of submissions: how many may wait for their turn to write, and when to come back.

Every submission of a jobs process writes in turn (they all bump the same counters). Under a burst they
queue; a queue without bound would only make callers wait past their own timeouts and then be told
"failed" about jobs that were created. So a submission is refused with 429 and a Retry-After, before
anything is done, when too many already wait or when its turn does not come within the time its caller
said it would wait (``SubmitJobRequest.wait_ms``).
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from typing import Final

# Weight of the newest write in the running average of write times.
AVERAGE_WEIGHT: Final = 0.2


@dataclass
class Admission:
    """Pure bookkeeping (the caller measures the writes)."""

    limit: int
    waiting: int = 0
    average_write_s: float = 0.05

    def refusal(self) -> int | None:
        """None to admit one more, else the seconds after which to retry."""
        if self.waiting < self.limit:
            return None
        return self.retry_after_s()

    def retry_after_s(self) -> int:
        """Whole seconds until the submissions waiting now have been written (at least 1)."""
        return max(1, math.ceil((self.waiting + 1) * self.average_write_s))

    def record_write(self, seconds: float) -> None:
        self.average_write_s += AVERAGE_WEIGHT * (max(seconds, 0.0) - self.average_write_s)


@dataclass
class Turns:
    """One write at a time, in arrival order, with a deadline for getting one's turn."""

    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def acquire_by(self, deadline: float) -> bool:
        """Wait for the turn until `deadline` (event-loop time); False when it did not come."""
        loop = asyncio.get_running_loop()
        acquiring = asyncio.ensure_future(self._lock.acquire())
        done, _ = await asyncio.wait({acquiring}, timeout=max(deadline - loop.time(), 0.0))
        if acquiring in done:
            return True
        acquiring.cancel()
        try:
            await acquiring
        except asyncio.CancelledError:
            return False
        return True  # the turn came as the deadline passed: take it

    async def acquire(self) -> None:
        await self._lock.acquire()

    def guard(self) -> asyncio.Lock:
        """The turn as an ``async with`` (the service's event handlers take turns with the writes too)."""
        return self._lock

    def release(self) -> None:
        self._lock.release()
