"""The orchestrator service against a real NATS server (JetStream) and a real MongoDB-wire server:
stops that overtake their job, timers fired by the background tick, restarts and redelivery."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from pai_common.bus import EVENTS_STREAM, Bus
from pai_common.contract.base import Event
from pai_common.contract.events import (
    FrameworkChanged,
    JobAttemptCompleted,
    JobCompleted,
    JobStopRequested,
    JobSubmitted,
    SchedulingAllocated,
    SchedulingRequested,
    TaskDiagnosed,
    TaskRunning,
)
from pai_common.contract.types import JobSpec, Placement, TaskRoleSpec
from pai_common.embedded import ServerProcess, start_nats
from pai_common.envelope import decode
from pai_common.service import ServiceApp
from pai_orchestrator.shell import FRAMEWORKS, STOPS, Orchestrator, OrchestratorSettings


@pytest.fixture
def nats_srv(tmp_path: Path) -> Iterator[ServerProcess]:
    server = start_nats(tmp_path)
    yield server
    server.stop()


@pytest.fixture
async def client(nats_srv: ServerProcess) -> AsyncIterator[Bus]:
    bus = await Bus.connect(nats_srv.url, "test")
    await bus.ensure_streams()
    yield bus
    await bus.close()


def orchestrator_app(
    nats: ServerProcess, mongo: ServerProcess, db: str, data: Path, **overrides: Any
) -> ServiceApp:
    settings = OrchestratorSettings(
        nats_url=nats.url,
        mongo_url=mongo.url,
        data_dir=data,
        nak_base_delay_s=0.05,
        tick_s=0.1,
        **overrides,
    )
    app = ServiceApp("orchestrator", settings)
    Orchestrator(app, settings)
    app.name = db  # a database of this test's own; the bus subjects stay the orchestrator's
    return app


class Events:
    """Every event the orchestrator publishes, read back from the stream."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.seen: list[Any] = []

    async def start(self) -> None:
        self.sub = await self.bus.js.subscribe("pai.evt.>", stream=EVENTS_STREAM, ordered_consumer=True)

    async def drain(self, wait_s: float = 0.3) -> None:
        while True:
            try:
                msg = await self.sub.next_msg(timeout=wait_s)
            except Exception:
                return
            self.seen.append(decode(msg.headers, msg.data).body)

    def of(self, kind: type, job_key: str) -> list[Any]:
        return [e for e in self.seen if isinstance(e, kind) and _key(e) == job_key]

    async def wait_for(self, kind: type, job_key: str, timeout: float = 15, **fields: Any) -> Any:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            for e in self.of(kind, job_key):
                if all(_field(e, k) == v for k, v in fields.items()):
                    return e
            remaining = deadline - asyncio.get_running_loop().time()
            assert remaining > 0, f"no {kind.__name__} {fields} for {job_key}"
            try:
                msg = await self.sub.next_msg(timeout=min(remaining, 1))
            except Exception:
                continue
            self.seen.append(decode(msg.headers, msg.data).body)


def _key(e: Event) -> str:
    return e.snapshot.job_key if isinstance(e, FrameworkChanged) else str(getattr(e, "job_key", ""))


def _field(e: Event, name: str) -> Any:
    if isinstance(e, FrameworkChanged):
        return getattr(e.snapshot, name)
    return getattr(e, name)


def spec(key: str, workers: int = 1) -> JobSpec:
    return JobSpec(
        job_key=key,
        user=key.split("~")[0],
        name=key.split("~")[1],
        task_roles=[TaskRoleSpec(name="w", instances=workers, gpu=1, cpu=1, memory_mb=64, entrypoint="x")],
        submitted_at=1,
    )


def allocated(key: str, attempt: int = 0, workers: int = 1) -> SchedulingAllocated:
    return SchedulingAllocated(
        job_key=key,
        attempt_id=attempt,
        placements=[
            Placement(task_role="w", index=i, node="n0", gpus=[i], host_ip="10.0.0.1") for i in range(workers)
        ],
    )


def exited(key: str, code: int, failure: str, attempt: int = 0, index: int = 0) -> TaskDiagnosed:
    return TaskDiagnosed(
        job_key=key,
        attempt_id=attempt,
        task_role="w",
        index=index,
        exit_code=code,
        spec_code=code,
        spec_phrase="P",
        failure_type=failure,  # type: ignore[arg-type]
        message=f"exit {code}",
        finished_at=2,
    )


async def test_stop_before_submission_and_gang_timeout_by_the_tick(
    nats_srv: ServerProcess, mongo_server: ServerProcess, client: Bus, tmp_path: Path
) -> None:
    db = f"orch{uuid.uuid4().hex[:8]}"
    events = Events(client)
    await events.start()
    app = orchestrator_app(nats_srv, mongo_server, db, tmp_path, gang_allocation_timeout_s=0.5)
    await app.start()
    try:
        # The stop overtakes its job: it is kept, and the job is stopped the moment it arrives.
        await client.publish_event(JobStopRequested(job_key="u~early", requested_by="u", requested_at=1))
        await asyncio.sleep(0.5)
        assert await app.db[STOPS].find_one({"_id": "u~early"}) is not None
        await client.publish_event(JobSubmitted(spec=spec("u~early")))
        done = await events.wait_for(JobCompleted, "u~early")
        assert (done.state, done.exit_code) == ("STOPPED", -210)
        assert await app.db[STOPS].find_one({"_id": "u~early"}) is None

        # Never placed: the background tick fails it with the gang allocation timeout.
        await client.publish_event(JobSubmitted(spec=spec("u~unplaced")))
        timed_out = await events.wait_for(JobCompleted, "u~unplaced")
        assert (timed_out.state, timed_out.exit_code) == ("FAILED", 251)
        snap = (await events.wait_for(FrameworkChanged, "u~unplaced", state="Completed")).snapshot
        assert "gang allocation timeout" in snap.exit_diagnostics
        assert snap.exit_spec["phrase"] == "JobGangAllocationTimeout"
        assert len(events.of(JobAttemptCompleted, "u~unplaced")) == 1  # the scheduler withdraws it
        await events.drain()
        assert events.of(SchedulingRequested, "u~early") == []
    finally:
        await app.stop()


async def test_restart_resumes_jobs_and_their_timers_and_duplicates_change_nothing(
    nats_srv: ServerProcess, mongo_server: ServerProcess, client: Bus, tmp_path: Path
) -> None:
    db = f"orch{uuid.uuid4().hex[:8]}"
    events = Events(client)
    await events.start()
    overrides = {"conflict_retry_min_s": 1.0, "conflict_retry_max_s": 1.5}
    app = orchestrator_app(nats_srv, mongo_server, db, tmp_path, **overrides)
    await app.start()
    try:
        for key in ("u~resume", "u~conflict"):
            await client.publish_event(JobSubmitted(spec=spec(key)))
            await events.wait_for(SchedulingRequested, key)
            await client.publish_event(allocated(key))
            await events.wait_for(FrameworkChanged, key, state="AttemptPreparing")
        await client.publish_event(exited("u~conflict", 201, "TransientConflict"))
        waiting = await events.wait_for(FrameworkChanged, "u~conflict", state="AttemptCompleted")
        assert waiting.snapshot.retry_at is not None
    finally:
        await app.stop()

    # While the orchestrator is down its job runs and ends; the messages wait in the stream, one twice.
    running = TaskRunning(
        job_key="u~resume", attempt_id=0, task_role="w", index=0, node="n0", host_ip="h", pid=1, started_at=2
    )
    await client.publish_event(running)
    await client.publish_event(exited("u~resume", 0, "Succeeded"))
    await client.publish_event(exited("u~resume", 0, "Succeeded"))

    app = orchestrator_app(nats_srv, mongo_server, db, tmp_path, **overrides)
    await app.start()
    try:
        done = await events.wait_for(JobCompleted, "u~resume")
        assert (done.state, done.exit_code) == ("SUCCEEDED", 0)
        # The back-off timer stored before the restart fires in the new process.
        retry = await events.wait_for(SchedulingRequested, "u~conflict", attempt_id=1)
        assert retry.attempt_id == 1
        await events.drain()
        assert len(events.of(JobCompleted, "u~resume")) == 1
        doc = await app.db[FRAMEWORKS].find_one({"_id": "u~conflict"})
        assert doc is not None and doc["fw"]["platform_retries"] == 1 and doc["fw"]["attempt_id"] == 1
        assert doc["due_at"] is None
        history = [d["state"] async for d in app.db["transitions"].find({"job_key": "u~resume"})]
        assert history[0] == "AttemptCreationRequested" and history[-1] == "Completed"
    finally:
        await app.stop()
