"""A stop ends every background task, also one whose first cancellation was swallowed on the way (as
pymongo's async network layer did inside a metrics sampler: the stop then waited forever)."""

from __future__ import annotations

import asyncio

import pytest

from pai_common import service
from pai_common.service import cancel_and_wait


async def test_a_task_that_swallows_its_cancellation_is_cancelled_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(service, "CANCEL_AGAIN_S", 0.05)
    rounds: list[str] = []

    async def stubborn() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            rounds.append("swallowed")  # what a library did with it: the loop goes on
        await asyncio.sleep(3600)

    async def polite() -> None:
        await asyncio.sleep(3600)

    tasks = [asyncio.create_task(stubborn()), asyncio.create_task(polite())]
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_and_wait(tasks), 60)  # a guard: without the second cancel, it never ends
    assert rounds == ["swallowed"] and all(t.cancelled() for t in tasks)
