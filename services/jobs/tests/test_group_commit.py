"""Group commit (pure asyncio): what arrives while a write is under way is written together next; a
failed batch is written one by one, each item with its own error. The jobs service's use of it is tested
against real servers in test_jobs_service.py."""

from __future__ import annotations

import asyncio

import pytest

from pai_jobs.admission import Turns
from pai_jobs.group_commit import GroupCommit


class Store:
    """A store that records what was written together and what alone, and refuses some items."""

    def __init__(self, refused: set[str] = frozenset(), slow_s: float = 0.05) -> None:  # type: ignore[assignment]
        self.refused = set(refused)
        self.slow_s = slow_s
        self.together_calls: list[list[str]] = []
        self.alone_calls: list[str] = []
        self.stored: list[str] = []

    async def together(self, items: list[str]) -> None:
        self.together_calls.append(list(items))
        await asyncio.sleep(self.slow_s)
        if self.refused & set(items):
            raise ValueError("one of them is refused: nothing written")
        self.stored += items

    async def alone(self, item: str) -> None:
        self.alone_calls.append(item)
        await asyncio.sleep(self.slow_s / 5)
        if item in self.refused:
            raise ValueError(f"{item} refused")
        self.stored.append(item)


def key(item: str) -> str:
    return item.split("#")[0]


async def test_stores_that_arrive_while_one_is_written_share_the_next_transaction() -> None:
    store = Store()
    group = GroupCommit(store.together, store.alone, key)
    first = asyncio.create_task(group.store("a"))
    await asyncio.sleep(0)  # the writer took "a" alone; the next ones arrive while it writes
    rest = [asyncio.create_task(group.store(name)) for name in ("b", "c", "d")]
    await asyncio.gather(first, *rest)
    assert store.alone_calls == ["a"]
    assert store.together_calls == [["b", "c", "d"]]
    assert sorted(store.stored) == ["a", "b", "c", "d"]
    assert group.batches == [1, 3]


async def test_a_failed_batch_is_stored_one_by_one_each_with_its_own_error() -> None:
    store = Store(refused={"bad"})
    group = GroupCommit(store.together, store.alone, key)
    blocker = asyncio.create_task(group.store("first"))
    await asyncio.sleep(0)
    results = await asyncio.gather(*(group.store(name) for name in ("x", "bad", "y")), return_exceptions=True)
    await blocker
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], ValueError) and "bad refused" in str(results[1])
    assert store.together_calls == [["x", "bad", "y"]]
    assert store.alone_calls == ["first", "x", "bad", "y"]
    assert sorted(store.stored) == ["first", "x", "y"]


async def test_the_same_key_twice_is_never_in_one_batch() -> None:
    store = Store()
    group = GroupCommit(store.together, store.alone, key)
    blocker = asyncio.create_task(group.store("z"))
    await asyncio.sleep(0)
    await asyncio.gather(group.store("k#1"), group.store("k#2"), group.store("m"))
    await blocker
    assert all(len({key(i) for i in batch}) == len(batch) for batch in store.together_calls)
    assert ["k#1", "m"] in store.together_calls
    assert store.alone_calls[-1] == "k#2"


async def test_batches_are_bounded() -> None:
    store = Store()
    group = GroupCommit(store.together, store.alone, key, max_batch=4)
    blocker = asyncio.create_task(group.store("first"))
    await asyncio.sleep(0)
    await asyncio.gather(*(group.store(f"j{i}") for i in range(10)))
    await blocker
    assert group.batches == [1, 4, 4, 2]


async def test_waiting_stores_fail_when_the_writer_is_cancelled() -> None:
    store = Store(slow_s=10)
    group = GroupCommit(store.together, store.alone, key)
    first = asyncio.create_task(group.store("a"))
    await asyncio.sleep(0)
    second = asyncio.create_task(group.store("b"))
    await asyncio.sleep(0.01)
    assert group._writer is not None
    group._writer.cancel()
    for task in (first, second):
        with pytest.raises(RuntimeError, match="not stored"):
            await task


async def test_an_item_past_its_deadline_is_refused_unwritten_while_the_others_are_stored() -> None:
    store = Store()
    group = GroupCommit(store.together, store.alone, key, late=lambda item: LookupError(f"{item} late"))
    now = asyncio.get_running_loop().time()
    blocker = asyncio.create_task(group.store("first"))
    await asyncio.sleep(0)  # "first" is being written; the next ones wait for the following batch
    results = await asyncio.gather(
        group.store("patient", deadline=now + 60), group.store("hasty", deadline=now), return_exceptions=True
    )
    await blocker
    assert results[0] is None
    assert isinstance(results[1], LookupError) and "hasty late" in str(results[1])
    assert "hasty" not in store.stored and "hasty" not in store.alone_calls
    assert sorted(store.stored) == ["first", "patient"]


async def test_a_batch_failure_that_is_nobodys_own_goes_to_every_caller_without_retrying_alone() -> None:
    store = Store(refused={"bad"})
    group = GroupCommit(store.together, store.alone, key, split=lambda exc: "refused" not in str(exc))
    blocker = asyncio.create_task(group.store("first"))
    await asyncio.sleep(0)
    results = await asyncio.gather(*(group.store(name) for name in ("x", "bad")), return_exceptions=True)
    await blocker
    assert all(isinstance(r, ValueError) and "nothing written" in str(r) for r in results)
    assert store.alone_calls == ["first"]
    assert store.stored == ["first"]


async def test_with_a_turn_the_writer_holds_it_across_batches_and_what_came_meanwhile_joins_its_batch() -> (
    None
):
    store = Store(slow_s=0.02)
    turns = Turns(batch_patience_s=60)
    group = GroupCommit(store.together, store.alone, key, max_batch=3, turn=turns)
    await turns.acquire()  # another write of the process holds the turn
    stores = [asyncio.create_task(group.store(name)) for name in ("a", "b", "c", "d", "e")]
    await asyncio.sleep(0.01)
    assert store.stored == []  # all five wait for the turn, none taken yet
    batch_wrote: list[int] = []

    async def batch() -> None:
        async with turns.batch_turn():
            batch_wrote.append(len(store.stored))

    events = asyncio.create_task(batch())  # an event batch queues for the turn too
    await asyncio.sleep(0)
    turns.release()
    await asyncio.gather(*stores, events)
    # Everything that came while the writer waited is in its first batch (up to max_batch); the writer
    # kept the turn for its second batch, and the event batch (within its patience) wrote after both.
    assert group.batches == [3, 2]
    assert batch_wrote == [5]
    await asyncio.wait_for(turns.acquire(), 0.05)  # given back at the end
    turns.release()


async def test_with_a_turn_the_writer_gives_it_back_when_cancelled() -> None:
    store = Store(slow_s=10)
    turns = Turns()
    group = GroupCommit(store.together, store.alone, key, turn=turns)
    first = asyncio.create_task(group.store("a"))
    await asyncio.sleep(0.01)
    assert group._writer is not None
    group._writer.cancel()
    with pytest.raises(RuntimeError, match="not stored"):
        await first
    await asyncio.wait_for(turns.acquire(), 0.05)  # given back
    turns.release()
