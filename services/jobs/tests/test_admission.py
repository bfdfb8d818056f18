"""Admission of submissions (how many wait, when to come back, turns with a deadline) and the cache of
the virtual clusters that exist."""

from __future__ import annotations

import asyncio

import pytest

from pai_common.errors import NoVirtualClusterError, ServiceUnavailableError
from pai_jobs.admission import Admission, Turns
from pai_jobs.vc_names import VirtualClusterNames


def test_admission_refuses_past_its_limit_with_a_retry_after() -> None:
    admission = Admission(limit=2, average_write_s=0.5)
    assert admission.refusal() is None
    admission.waiting = 2
    # Two waiting at 0.5 s each, plus this one: 1.5 s, in whole seconds.
    assert admission.refusal() == 2
    admission.waiting = 0
    assert admission.retry_after_s() == 1  # never 0


def test_the_average_write_follows_what_was_measured() -> None:
    admission = Admission(limit=1, average_write_s=0.0)
    for _ in range(50):
        admission.record_write(2.0)
    assert 1.9 < admission.average_write_s <= 2.0
    admission.record_write(-1.0)  # a clock oddity counts as nothing, not as a negative time
    assert admission.average_write_s > 1.5


async def test_a_turn_that_does_not_come_in_time_is_refused_and_taken_by_nobody() -> None:
    turns = Turns()
    await asyncio.wait_for(turns.acquire(), 1)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(turns.acquire(), 0.05)  # held: refused at the deadline
    turns.release()
    # The refused waiter did not keep the turn: the next one gets it at once.
    await asyncio.wait_for(turns.acquire(), 0.05)
    turns.release()


async def test_turns_are_taken_in_order() -> None:
    turns = Turns()
    await turns.acquire()
    order: list[int] = []

    async def take(i: int) -> None:
        await asyncio.wait_for(turns.acquire(), 5)
        order.append(i)
        turns.release()

    waiters = [asyncio.create_task(take(i)) for i in range(3)]
    await asyncio.sleep(0.01)
    turns.release()
    await asyncio.gather(*waiters)
    assert order == [0, 1, 2]


class Scheduler:
    """What the scheduler answers (the test's own list), counting the questions."""

    def __init__(self, names: set[str]) -> None:
        self.names = names
        self.asked = 0
        self.down = False

    async def __call__(self) -> set[str]:
        self.asked += 1
        if self.down:
            raise ServiceUnavailableError("service scheduler is not running")
        return set(self.names)


async def test_known_names_are_trusted_and_unknown_ones_asked_about_again() -> None:
    scheduler = Scheduler({"default"})
    vcs = VirtualClusterNames(scheduler)
    await vcs.check("default")
    await vcs.check("default")
    assert scheduler.asked == 1
    scheduler.names.add("team")  # added since: found at once
    await vcs.check("team")
    assert scheduler.asked == 2
    with pytest.raises(NoVirtualClusterError, match=r"^Virtual cluster nowhere is not found\.$") as caught:
        await vcs.check("nowhere")
    assert caught.value.status == 404


async def test_without_the_scheduler_only_a_known_name_passes() -> None:
    scheduler = Scheduler({"default"})
    vcs = VirtualClusterNames(scheduler, fresh_s=0)
    await vcs.check("default")
    scheduler.down = True
    await vcs.check("default")  # known from the last answer
    with pytest.raises(ServiceUnavailableError):
        await vcs.check("other")  # not known: no answer is not "it does not exist"


async def _holds(turns: Turns, order: list[str], name: str, urgent: bool) -> None:
    """Take a turn (a write's or a batch's), note it, give it back."""
    if urgent:
        await turns.acquire()
        order.append(name)
        turns.release()
    else:
        async with turns.batch_turn():
            order.append(name)


async def test_a_waited_on_write_goes_before_a_batch_that_queued_first() -> None:
    turns = Turns(batch_patience_s=60)
    await turns.acquire()
    order: list[str] = []
    batch = asyncio.create_task(_holds(turns, order, "batch", urgent=False))
    await asyncio.sleep(0)
    write = asyncio.create_task(_holds(turns, order, "write", urgent=True))
    await asyncio.sleep(0)
    turns.release()
    await asyncio.gather(batch, write)
    assert order == ["write", "batch"]


async def test_a_batch_passed_over_for_its_patience_goes_next() -> None:
    turns = Turns(batch_patience_s=0.05)
    await turns.acquire()
    order: list[str] = []
    batch = asyncio.create_task(_holds(turns, order, "batch", urgent=False))
    await asyncio.sleep(0.06)  # the batch has waited its patience
    write = asyncio.create_task(_holds(turns, order, "write", urgent=True))
    await asyncio.sleep(0)
    turns.release()
    await asyncio.gather(batch, write)
    assert order == ["batch", "write"]


async def test_a_holder_keeps_the_turn_until_another_write_or_an_overdue_batch_waits() -> None:
    turns = Turns(batch_patience_s=0.05)
    await turns.acquire()
    order: list[str] = []
    batch = asyncio.create_task(_holds(turns, order, "batch", urgent=False))
    await asyncio.sleep(0)
    await turns.pass_if_due()  # the batch is within its patience: kept
    assert order == []
    await asyncio.sleep(0.06)
    write = asyncio.create_task(_holds(turns, order, "write", urgent=True))
    await asyncio.sleep(0)
    await turns.pass_if_due()  # the overdue batch first, then the write that waited, then the turn is back
    assert order == ["batch", "write"]
    await asyncio.gather(batch, write)
    # Held again: a new batch waits until the holder lets go.
    late_batch = asyncio.create_task(_holds(turns, order, "late batch", urgent=False))
    await asyncio.sleep(0.01)
    assert order == ["batch", "write"]
    turns.release()
    await late_batch
    assert order[-1] == "late batch"


async def test_a_waiter_cancelled_as_its_turn_came_passes_it_on() -> None:
    turns = Turns()
    await turns.acquire()
    order: list[str] = []
    first = asyncio.create_task(turns.acquire())
    await asyncio.sleep(0)
    second = asyncio.create_task(_holds(turns, order, "second", urgent=True))
    await asyncio.sleep(0)
    turns.release()  # handed to `first`, which is cancelled before it runs
    first.cancel()
    await asyncio.wait_for(second, 1)
    assert order == ["second"]
    await asyncio.wait_for(turns.acquire(), 0.05)  # free again: nobody kept it
    turns.release()
