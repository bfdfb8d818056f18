"""Admission of submissions: how many may wait for their turn to write, and when to come back.

Every submission of a jobs process writes in turn (they all bump the same counters). Under a burst they
queue; a queue without bound would only make callers wait past their own timeouts and then be told
"failed" about jobs that were created. So a submission is refused with 429 and a Retry-After, before
anything is done, when too many already wait or when its turn does not come within the time its caller
said it would wait (``SubmitJobRequest.wait_ms``).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import deque
from collections.abc import AsyncIterator
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
class _Waiter:
    turn: asyncio.Future[None]
    urgent: bool
    since: float  # event-loop time


@dataclass
class Turns:
    """One write at a time. A write someone waits on (a submission, a stop) goes before the event handlers'
    batches, which nobody waits on; a batch is passed over for at most ``batch_patience_s``.

    Measured with 16 clients submitting (issue 17): taken in arrival order, writes and batches alternated,
    and a submission waited for its turn behind a batch of events ~100 ms on average (a batch of 30-60
    snapshots is 80-190 ms of writing), most of the time the jobs service spent on it. The batches' share
    is bounded from below by the patience: one batch at least every ``batch_patience_s`` plus a write, so
    the job states a list shows lag by that much more at worst while submissions keep coming, and never
    stop being recorded (a batch's messages stay unacknowledged far less than the consumers' ack wait).
    """

    batch_patience_s: float = 0.5
    _held: bool = False
    _queue: deque[_Waiter] = field(default_factory=deque)

    async def acquire(self) -> None:
        """The turn of a write someone waits on. A waiter cancelled (its caller's timeout) keeps no turn."""
        await self._take(urgent=True)

    @contextlib.asynccontextmanager
    async def batch_turn(self) -> AsyncIterator[None]:
        """The turn of an event handlers' batch, as an ``async with`` (``ServiceApp.serialize_writes``)."""
        await self._take(urgent=False)
        try:
            yield
        finally:
            self.release()

    async def pass_if_due(self) -> None:
        """For a holder with more waited-on writes to do: keep the turn, unless another such write waits
        or a batch has waited its patience. Then the turn goes to them, and comes back after the writes
        waiting now (arrival order among them) and before the batches still within their patience.
        Returns, or raises on cancellation, holding the turn (so the holder's release stays right)."""
        chosen = self._overdue() or next((w for w in self._queue if w.urgent and not w.turn.done()), None)
        if chosen is None:
            return
        self._queue.remove(chosen)
        loop = asyncio.get_running_loop()
        back = _Waiter(loop.create_future(), True, loop.time())
        self._queue.append(back)
        chosen.turn.set_result(None)
        # Waited for even when cancelled: the others' writes are bounded, and the turn must come back.
        cancelled = False
        while not back.turn.done():
            try:
                await asyncio.shield(back.turn)
            except asyncio.CancelledError:
                cancelled = True
        if cancelled:
            raise asyncio.CancelledError

    def release(self) -> None:
        """Hand the turn to the next waiter (see the class's docstring for which), or free it."""
        waiter = self._next()
        if waiter is None:
            self._held = False
            return
        waiter.turn.set_result(None)  # the turn passes on held: nobody can take it in between

    def _next(self) -> _Waiter | None:
        live = [w for w in self._queue if not w.turn.done()]
        if not live:
            self._queue.clear()
            return None
        self._queue = deque(live)
        chosen = self._overdue() or next((w for w in live if w.urgent), live[0])
        self._queue.remove(chosen)
        return chosen

    def _overdue(self) -> _Waiter | None:
        """The first batch passed over for its patience."""
        now = asyncio.get_running_loop().time()
        return next(
            (
                w
                for w in self._queue
                if not w.urgent and not w.turn.done() and now - w.since >= self.batch_patience_s
            ),
            None,
        )

    async def _take(self, urgent: bool) -> None:
        if not self._held:
            self._held = True
            return
        loop = asyncio.get_running_loop()
        waiter = _Waiter(loop.create_future(), urgent, loop.time())
        self._queue.append(waiter)
        try:
            await asyncio.shield(waiter.turn)
        except asyncio.CancelledError:
            if waiter.turn.done() and not waiter.turn.cancelled():
                self.release()  # given as the waiter was cancelled: passed on, not kept
            else:
                waiter.turn.cancel()
            raise
