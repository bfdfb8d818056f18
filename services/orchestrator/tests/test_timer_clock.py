"""Jumps of the wall clock against the orchestrator's timers (gang allocation timeout here; the retry
back-off and the wait for a stopped attempt move the same way): a timer keeps the time it had left, never
fired early by a forward jump nor held by a backward one. The clocks are injected (no system clock is
changed): first the pure core, then the service's tick against a real NATS and MongoDB-wire server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from pai_common.bus import Bus
from pai_common.contract.events import JobCompleted, JobSubmitted, SchedulingRequested
from pai_common.contract.types import JobSpec, TaskRoleSpec
from pai_common.embedded import ServerProcess
from pai_common.service import ServiceApp
from pai_common.testing import EventRecorder
from pai_orchestrator import core, shell
from pai_orchestrator import states as S
from pai_orchestrator.policy import Policy
from pai_orchestrator.shell import FRAMEWORKS, Orchestrator, OrchestratorSettings
from pai_orchestrator.timer_clock import JUMP_TOLERANCE_MS, Stamp, TimerClock

HOUR_S = 3600.0
GANG_S = 60.0


def spec(key: str) -> JobSpec:
    role = TaskRoleSpec(name="w", instances=1, gpu=1, cpu=1, memory_mb=64, entrypoint="x")
    return JobSpec(job_key=key, user="u", name=key.split("~")[1], task_roles=[role], submitted_at=1)


class Clocks:
    """A wall clock and a monotonic clock moved by hand."""

    def __init__(self) -> None:
        self.wall = 1_800_000_000.0
        self.mono = 5_000.0

    def elapse(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds

    def clock(self) -> TimerClock:
        return TimerClock(lambda: self.wall, lambda: self.mono, run="this-run")


def test_the_skew_moves_only_when_the_wall_clock_jumps() -> None:
    clocks = Clocks()
    clock = clocks.clock()
    clock.now_ms()
    before = clock.stamp()
    clocks.elapse(30)
    clocks.wall += (JUMP_TOLERANCE_MS - 1) / 1000  # a slew, not a jump
    clock.now_ms()
    assert clock.stamp() == before and clock.shift_ms(before) == 0
    clocks.wall += HOUR_S
    assert clock.shift_ms(before) == pytest.approx(HOUR_S * 1000, abs=JUMP_TOLERANCE_MS)
    assert clock.shift_ms(Stamp("an-earlier-run", before.skew_ms)) == 0  # no common reference but the wall
    assert clock.shift_ms(None) == 0


@pytest.mark.parametrize("jump_s", [HOUR_S, -HOUR_S])
def test_a_gang_timeout_keeps_its_time_across_a_jump(jump_s: float) -> None:
    clocks = Clocks()
    clock = clocks.clock()
    policy = Policy(gang_allocation_timeout_ms=int(GANG_S * 1000))
    fw = core.on_submitted(spec("u~gang"), clock.now_ms(), policy).framework
    assert fw is not None and fw.state == S.ATTEMPT_CREATION_REQUESTED
    stamp = clock.stamp()

    clocks.elapse(1)
    clocks.wall += jump_s
    now = clock.now_ms()
    # Unmoved, the timer would fire one second in (forward), or an hour late (backward).
    assert core.on_tick(fw, now, policy).changed is (jump_s > 0)
    moved = core.shift_timers(fw, clock.shift_ms(stamp), policy)
    assert moved.framework is not None and moved.framework.version == fw.version + 1
    assert "wall clock jumped" in moved.reason
    fw = moved.framework
    assert not core.on_tick(fw, clock.now_ms(), policy).changed
    clocks.elapse(GANG_S - 2)
    assert not core.on_tick(fw, clock.now_ms(), policy).changed
    clocks.elapse(1.5)
    fired = core.on_tick(fw, clock.now_ms(), policy)
    assert fired.framework is not None and fired.framework.exit_code == S.EXIT_GANG_ALLOCATION_TIMEOUT


@pytest.mark.parametrize(
    ("state", "timer"),
    [
        (S.ATTEMPT_CREATION_REQUESTED, "gang_deadline"),
        (S.ATTEMPT_COMPLETED, "retry_at"),
        (S.ATTEMPT_DELETION_REQUESTED, "deletion_deadline"),
        (S.ATTEMPT_RUNNING, "shrink_deadline"),  # an elastic gang waiting for its shrunk growth tasks
    ],
)
def test_every_timer_the_tick_waits_for_moves_with_a_jump(state: str, timer: str) -> None:
    fw = core.on_submitted(spec("u~any"), 1, Policy()).framework
    assert fw is not None
    fw = fw.model_copy(update={"state": state, timer: 10_000})
    assert fw.due_at() == 10_000
    moved = core.shift_timers(fw, 3_600_000).framework
    assert moved is not None and moved.due_at() == 10_000 + 3_600_000


def test_no_timer_no_move() -> None:
    fw = core.on_submitted(spec("u~gang"), 1, Policy()).framework  # no gang timeout: no timer
    assert fw is not None and fw.due_at() is None
    assert not core.shift_timers(fw, 3_600_000).changed


async def until_true(check: Callable[[], object], guard_s: float = 60.0) -> None:
    async with asyncio.timeout(guard_s):
        while not await check():  # type: ignore[misc]
            await asyncio.sleep(0.05)


async def test_the_tick_moves_timers_set_before_a_jump_instead_of_firing_them(
    fresh_nats: ServerProcess,
    mongo_server: ServerProcess,
    fresh_bus: Bus,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clocks = Clocks()
    monkeypatch.setattr(shell, "CLOCK", clocks.clock())
    events = EventRecorder(fresh_bus)
    await events.start()
    settings = OrchestratorSettings(
        nats_url=fresh_nats.url,
        mongo_url=mongo_server.url,
        data_dir=tmp_path,
        tick_s=0.1,
        gang_allocation_timeout_s=GANG_S,
    )
    app = ServiceApp("orchestrator", settings)
    Orchestrator(app, settings)
    app.name = f"orch{uuid.uuid4().hex[:8]}"  # a database of this test's own
    await app.start()
    try:
        await fresh_bus.publish_event(JobSubmitted(spec=spec("u~jump")))
        await events.wait_for(SchedulingRequested, "u~jump")
        doc = await app.db[FRAMEWORKS].find_one({"_id": "u~jump"})
        assert doc is not None
        due = doc["due_at"]
        assert isinstance(due, int)
        assert due == int(clocks.wall * 1000 + GANG_S * 1000)

        clocks.wall += HOUR_S  # the tick (every 0.1 s) sees it

        async def moved_or_fired() -> bool:
            d = await app.db[FRAMEWORKS].find_one({"_id": "u~jump"})
            return d is not None and d["due_at"] != due

        await until_true(moved_or_fired)
        doc = await app.db[FRAMEWORKS].find_one({"_id": "u~jump"})
        assert doc is not None
        assert doc["fw"]["state"] == S.ATTEMPT_CREATION_REQUESTED, doc["fw"]["state"]
        assert doc["due_at"] == due + int(HOUR_S * 1000)
        assert events.of(JobCompleted, "u~jump") == []

        clocks.elapse(GANG_S)  # the time it had left: now it fires
        done = await events.wait_for(JobCompleted, "u~jump")
        assert (done.state, done.exit_code) == ("FAILED", S.EXIT_GANG_ALLOCATION_TIMEOUT)
    finally:
        await app.stop()
