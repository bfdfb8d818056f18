"""Group commit: writes that are ready at the same moment share one transaction.

Every submission of a jobs process writes in turn (they all bump the same counters), so under concurrent
submissions each waited for the others' transactions one by one, every one paying its own round trips,
commit and publish. Here a submission joins a queue; one writer at a time takes everything queued (up to
``max_batch``, at most one per key) and stores it with ``together`` in one transaction, while the next
arrivals queue for the following batch. The busier the service, the larger the batches.

If the shared transaction fails for good, nothing of it was committed. When the failure may be one item's
own (``split``: a name taken meanwhile), each item is then stored on its own with ``alone``, its own error
going back to its own caller, exactly as without grouping; otherwise (a conflict that outlasted the
retries) every caller of the batch gets the batch's error, rather than each trying again alone for as long.

An item whose caller's deadline passed before a writer took it is not written at all: its caller gets
``late(item)`` (nothing was done, so it may retry).

With a ``turn`` (the process's one write at a time, shared with other writers), the writer takes it before
its first batch and keeps it while items keep coming, passing it on only when ``turn.pass_if_due`` says
another writer has waited long enough. So what arrives while the writer waits for the turn joins the batch,
and the next batch does not queue behind others' writes again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class _Queued(Generic[T]):
    key: str
    item: T
    done: asyncio.Future[None]
    deadline: float | None  # event-loop time


class WriteTurn(Protocol):
    """The process's turn to write, held by the writer for as long as items keep coming (admission.Turns)."""

    async def acquire(self) -> None: ...

    async def pass_if_due(self) -> None: ...

    def release(self) -> None: ...


def _always(exc: Exception) -> bool:
    return True


class GroupCommit(Generic[T]):
    def __init__(
        self,
        together: Callable[[list[T]], Awaitable[None]],
        alone: Callable[[T], Awaitable[None]],
        key: Callable[[T], str],
        max_batch: int = 64,
        late: Callable[[T], Exception] | None = None,
        split: Callable[[Exception], bool] = _always,
        turn: WriteTurn | None = None,
    ) -> None:
        self.together = together
        self.alone = alone
        self.key = key
        self.late = late or (lambda item: TimeoutError(f"not stored: no turn in time: {item!r}"))
        self.split = split
        self.turn = turn
        self.max_batch = max(1, max_batch)
        self._queue: list[_Queued[T]] = []
        self._writer: asyncio.Task[None] | None = None
        # Sizes of the batches written, for tests and metrics.
        self.batches: list[int] = []

    async def store(self, item: T, deadline: float | None = None) -> None:
        """Returns once ``item`` is committed; raises what storing it raised, or ``late(item)`` when no
        writer took it by ``deadline`` (event-loop time)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(_Queued(self.key(item), item, done, deadline))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain(), name="group-commit")
        await asyncio.shield(done)

    def _take(self) -> list[_Queued[T]]:
        batch: list[_Queued[T]] = []
        keys: set[str] = set()
        rest: list[_Queued[T]] = []
        now = asyncio.get_running_loop().time()
        for queued in self._queue:
            if queued.deadline is not None and queued.deadline < now:
                queued.done.set_exception(self.late(queued.item))
            elif len(batch) < self.max_batch and queued.key not in keys:
                batch.append(queued)
                keys.add(queued.key)
            else:
                rest.append(queued)  # the same key twice waits for the next batch, to be judged alone
        self._queue = rest
        return batch

    async def _drain(self) -> None:
        batch: list[_Queued[T]] = []
        held = False
        try:
            if self.turn is not None:
                # Taken before the batch, and kept from one batch to the next: what arrives while the
                # writer waits joins its batch, and the next batch need not queue for the turn again.
                await self.turn.acquire()
                held = True
            while self._queue:
                if self.turn is not None:
                    await self.turn.pass_if_due()
                batch = self._take()
                if not batch:
                    continue  # all of them were late
                self.batches.append(len(batch))
                if len(batch) == 1:
                    await self._one(batch[0])
                    continue
                try:
                    await self.together([q.item for q in batch])
                except Exception as exc:
                    if not self.split(exc):
                        for queued in batch:
                            if not queued.done.done():
                                queued.done.set_exception(exc)
                        continue
                    log.info(
                        "group commit failed; storing one by one",
                        extra={"batch": len(batch), "error": repr(exc)},
                    )
                    for queued in batch:
                        await self._one(queued)
                    continue
                for queued in batch:
                    if not queued.done.done():
                        queued.done.set_result(None)
        except BaseException as exc:
            # Stopping (cancelled) or a bug: nobody may wait for ever on a write that will not happen.
            for queued in [*batch, *self._queue]:
                if not queued.done.done():
                    queued.done.set_exception(RuntimeError(f"not stored: {exc!r}"))
            self._queue.clear()
            raise
        finally:
            if held and self.turn is not None:
                self.turn.release()

    async def _one(self, queued: _Queued[T]) -> None:
        try:
            await self.alone(queued.item)
        except Exception as exc:
            if not queued.done.done():
                queued.done.set_exception(exc)
            return
        if not queued.done.done():
            queued.done.set_result(None)
