"""The orchestrator service against a real NATS server (JetStream) and a real MongoDB-wire server:
stops that overtake their job, timers fired by the background tick, restarts and redelivery, dependents
that start once whenever they arrive, an elastic gang that grows and shrinks."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

from pai_common.bus import Bus
from pai_common.contract.commands import KillTask, LaunchTask, UpdateMembership
from pai_common.contract.events import (
    FrameworkChanged,
    JobAttemptCompleted,
    JobCompleted,
    JobElasticResized,
    JobStopRequested,
    JobSubmitted,
    JobTaskCompleted,
    SchedulingAllocated,
    SchedulingPreempting,
    SchedulingRequested,
    TaskDiagnosed,
    TaskRunning,
)
from pai_common.contract.rpc import TaskPlacementReply, TaskPlacementRequest
from pai_common.contract.types import JobDependency, JobSpec, Placement, TaskRoleSpec, Victim
from pai_common.embedded import ServerProcess
from pai_common.envelope import decode
from pai_common.metrics import MESSAGES
from pai_common.service import ServiceApp
from pai_common.testing import EventRecorder
from pai_orchestrator.shell import DEPENDENTS, FRAMEWORKS, STOPS, Orchestrator, OrchestratorSettings


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


def spec(key: str, workers: int = 1) -> JobSpec:
    return JobSpec(
        job_key=key,
        user=key.split("~")[0],
        name=key.split("~")[1],
        task_roles=[TaskRoleSpec(name="w", instances=workers, gpu=1, cpu=1, memory_mb=64, entrypoint="x")],
        submitted_at=1,
    )


def dspec(key: str, *deps: tuple[str, str]) -> JobSpec:
    """A job of one task that depends on ``deps`` ((job key, on) pairs)."""
    return spec(key).model_copy(
        update={"dependencies": [JobDependency(job_key=k, on=on) for k, on in deps]}  # type: ignore[arg-type]
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
    fresh_nats: ServerProcess, mongo_server: ServerProcess, fresh_bus: Bus, tmp_path: Path
) -> None:
    db = f"orch{uuid.uuid4().hex[:8]}"
    events = EventRecorder(fresh_bus)
    await events.start()
    app = orchestrator_app(fresh_nats, mongo_server, db, tmp_path, gang_allocation_timeout_s=0.5)
    await app.start()
    try:
        # The stop overtakes its job: it is kept, and the job is stopped the moment it arrives.
        await fresh_bus.publish_event(JobStopRequested(job_key="u~early", requested_by="u", requested_at=1))
        await asyncio.sleep(0.5)
        assert await app.db[STOPS].find_one({"_id": "u~early"}) is not None
        await fresh_bus.publish_event(JobSubmitted(spec=spec("u~early")))
        done = await events.wait_for(JobCompleted, "u~early")
        assert (done.state, done.exit_code) == ("STOPPED", -210)
        assert await app.db[STOPS].find_one({"_id": "u~early"}) is None

        # Never placed: the background tick fails it with the gang allocation timeout.
        await fresh_bus.publish_event(JobSubmitted(spec=spec("u~unplaced")))
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
    fresh_nats: ServerProcess, mongo_server: ServerProcess, fresh_bus: Bus, tmp_path: Path
) -> None:
    db = f"orch{uuid.uuid4().hex[:8]}"
    events = EventRecorder(fresh_bus)
    await events.start()
    overrides = {"conflict_retry_min_s": 1.0, "conflict_retry_max_s": 1.5}
    app = orchestrator_app(fresh_nats, mongo_server, db, tmp_path, **overrides)
    await app.start()
    try:
        for key in ("u~resume", "u~conflict"):
            await fresh_bus.publish_event(JobSubmitted(spec=spec(key)))
            await events.wait_for(SchedulingRequested, key)
            await fresh_bus.publish_event(allocated(key))
            await events.wait_for(FrameworkChanged, key, state="AttemptPreparing")
        await fresh_bus.publish_event(exited("u~conflict", 201, "TransientConflict"))
        waiting = await events.wait_for(FrameworkChanged, "u~conflict", state="AttemptCompleted")
        assert waiting.snapshot.retry_at is not None
    finally:
        await app.stop()

    # While the orchestrator is down its job runs and ends; the messages wait in the stream, one twice.
    running = TaskRunning(
        job_key="u~resume", attempt_id=0, task_role="w", index=0, node="n0", host_ip="h", pid=1, started_at=2
    )
    await fresh_bus.publish_event(running)
    await fresh_bus.publish_event(exited("u~resume", 0, "Succeeded"))
    await fresh_bus.publish_event(exited("u~resume", 0, "Succeeded"))

    app = orchestrator_app(fresh_nats, mongo_server, db, tmp_path, **overrides)
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


async def test_dependents_start_once_whenever_they_arrive(
    fresh_nats: ServerProcess, mongo_server: ServerProcess, fresh_bus: Bus, tmp_path: Path
) -> None:
    """`before` is submitted before its dependency, `during` and `also` while it runs, `after` once it
    completed; `orphan` depends on a job that fails. Each dependent starts (or fails) exactly once, and a
    restart of the orchestrator between the completion and its consumer loses nothing."""
    db = f"orch{uuid.uuid4().hex[:8]}"
    events = EventRecorder(fresh_bus)
    await events.start()
    app = orchestrator_app(fresh_nats, mongo_server, db, tmp_path)
    await app.start()
    try:
        await fresh_bus.publish_event(JobSubmitted(spec=dspec("u~before", ("u~dep", "succeeded"))))
        await fresh_bus.publish_event(JobSubmitted(spec=dspec("u~dep")))
        await events.wait_for(SchedulingRequested, "u~dep")
        await fresh_bus.publish_event(JobSubmitted(spec=dspec("u~during", ("u~dep", "completed"))))
        await fresh_bus.publish_event(JobSubmitted(spec=dspec("u~also", ("u~dep", "succeeded"))))
        for key in ("u~during", "u~also"):
            await _until(lambda key=key: app.db[FRAMEWORKS].find_one({"_id": key}))
        for key in ("u~before", "u~during", "u~also"):
            doc = await app.db[FRAMEWORKS].find_one({"_id": key})
            assert doc is not None and doc["fw"]["state"] == "AttemptCreationPending", key
        listed = await app.db[DEPENDENTS].find_one({"_id": "u~dep"})
        assert listed is not None and set(listed["dependents"]) == {"u~before", "u~during", "u~also"}

        await fresh_bus.publish_event(allocated("u~dep"))
        await fresh_bus.publish_event(exited("u~dep", 0, "Succeeded"))
        done = await events.wait_for(JobCompleted, "u~dep")
        assert done.state == "SUCCEEDED" and done.has_dependents
        for key in ("u~before", "u~during", "u~also"):
            await events.wait_for(SchedulingRequested, key)
        await fresh_bus.publish_event(JobSubmitted(spec=dspec("u~after", ("u~dep", "succeeded"))))
        await events.wait_for(SchedulingRequested, "u~after")

        # A dependency that fails: its dependent asking for success fails with -240, once.
        await fresh_bus.publish_event(JobSubmitted(spec=dspec("u~bad")))
        await fresh_bus.publish_event(JobSubmitted(spec=dspec("u~orphan", ("u~bad", "succeeded"))))
        await events.wait_for(SchedulingRequested, "u~bad")
        await _until(lambda: app.db[FRAMEWORKS].find_one({"_id": "u~orphan"}))
        await app.stop()
        await fresh_bus.publish_event(allocated("u~bad"))
        await fresh_bus.publish_event(exited("u~bad", 1, "Permanent"))
        app = orchestrator_app(fresh_nats, mongo_server, db, tmp_path)
        await app.start()
        failed = await events.wait_for(JobCompleted, "u~orphan")
        assert (failed.state, failed.exit_code) == ("FAILED", -240)
        await events.drain(1.0)
        for key in ("u~before", "u~during", "u~also", "u~after"):
            assert len(events.of(SchedulingRequested, key)) == 1, key
        assert len(events.of(JobCompleted, "u~orphan")) == 1
        assert not events.of(SchedulingRequested, "u~orphan")
    finally:
        await app.stop()


async def test_a_job_nobody_waits_for_completes_without_a_second_transaction(
    fresh_nats: ServerProcess, mongo_server: ServerProcess, fresh_bus: Bus, tmp_path: Path
) -> None:
    """A job.completed says whether jobs were listed as waiting when it completed; the orchestrator's own
    consumer acks one without dependents with no transaction (no processed marker), and handles one with
    dependents. A dependent listed after the completion finds the final state itself."""
    db = f"orch{uuid.uuid4().hex[:8]}"
    events = EventRecorder(fresh_bus)
    await events.start()
    app = orchestrator_app(fresh_nats, mongo_server, db, tmp_path)
    await app.start()
    ignored = MESSAGES.labels(db, JobCompleted.TYPE, "ignored")
    handled = MESSAGES.labels(db, JobCompleted.TYPE, "ok")
    before = (ignored._value.get(), handled._value.get())
    try:
        await fresh_bus.publish_event(JobSubmitted(spec=spec("u~solo")))
        await fresh_bus.publish_event(JobSubmitted(spec=spec("u~awaited")))
        await fresh_bus.publish_event(JobSubmitted(spec=dspec("u~waiter", ("u~awaited", "succeeded"))))
        await _until(lambda: app.db[FRAMEWORKS].find_one({"_id": "u~waiter"}))
        for key in ("u~solo", "u~awaited"):
            await events.wait_for(SchedulingRequested, key)
            await fresh_bus.publish_event(allocated(key))
            await fresh_bus.publish_event(exited(key, 0, "Succeeded"))
        solo = await events.wait_for(JobCompleted, "u~solo")
        awaited = await events.wait_for(JobCompleted, "u~awaited")
        assert (solo.has_dependents, awaited.has_dependents) == (False, True)
        await events.wait_for(SchedulingRequested, "u~waiter")
        await _until(lambda: _done((ignored._value.get(), handled._value.get()), before))
        assert (ignored._value.get() - before[0], handled._value.get() - before[1]) == (1, 1)
        # Listed after the completion: it starts from the final state it reads, once.
        await fresh_bus.publish_event(JobSubmitted(spec=dspec("u~late", ("u~solo", "succeeded"))))
        await events.wait_for(SchedulingRequested, "u~late")
        await events.drain(0.5)
        assert len(events.of(SchedulingRequested, "u~late")) == 1
        assert len(events.of(SchedulingRequested, "u~waiter")) == 1
    finally:
        await app.stop()


async def _done(now: tuple[float, float], before: tuple[float, float]) -> bool:
    return now[0] + now[1] - before[0] - before[1] >= 2


async def test_placement_is_answered_from_the_framework_that_launched_the_task(
    fresh_nats: ServerProcess, mongo_server: ServerProcess, fresh_bus: Bus, tmp_path: Path
) -> None:
    db = f"orch{uuid.uuid4().hex[:8]}"
    events = EventRecorder(fresh_bus)
    await events.start()
    app = orchestrator_app(fresh_nats, mongo_server, db, tmp_path)
    await app.start()
    try:
        ask = TaskPlacementRequest(job_key="u~placed", attempt_id=0, task_role="w", index=1)
        unknown = await fresh_bus.request(ask, TaskPlacementReply)
        assert unknown.node is None and "knows no job u~placed" in unknown.reason
        await fresh_bus.publish_event(JobSubmitted(spec=spec("u~placed", workers=2)))
        await events.wait_for(SchedulingRequested, "u~placed")
        waiting = await fresh_bus.request(ask, TaskPlacementReply)
        assert waiting.node is None and "not starting or running" in waiting.reason
        await fresh_bus.publish_event(allocated("u~placed", workers=2))
        # The launch command is sent after the placement is committed: whoever holds it gets the answer.
        launch = await _next_command(fresh_bus, "n0")
        assert (launch.job_key, launch.index) in {("u~placed", 0), ("u~placed", 1)}
        placed = await fresh_bus.request(ask, TaskPlacementReply)
        assert (placed.node, placed.reason) == ("n0", "")
        other = await fresh_bus.request(ask.model_copy(update={"attempt_id": 1}), TaskPlacementReply)
        assert other.node is None
    finally:
        await app.stop()


async def _until(probe, timeout_s: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await probe():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def _next_command(bus: Bus, node: str) -> LaunchTask:
    sub = await bus.js.pull_subscribe(f"pai.cmd.runtime.{node}.>", durable=f"t{uuid.uuid4().hex[:8]}")
    msgs = await sub.fetch(1, timeout=30)
    env = decode(msgs[0].headers, msgs[0].data)
    assert isinstance(env.body, LaunchTask)
    return env.body


ELASTIC = "u~elastic"


async def _commands(bus: Bus, node: str, n: int) -> list[Any]:
    sub = await bus.js.pull_subscribe(f"pai.cmd.runtime.{node}.>", durable=f"t{uuid.uuid4().hex[:8]}")
    out: list[Any] = []
    while len(out) < n:
        for msg in await sub.fetch(n - len(out), timeout=30):
            out.append(decode(msg.headers, msg.data).body)
            await msg.ack()
    return out


async def test_an_elastic_gang_grows_and_shrinks_through_the_service(
    fresh_nats: ServerProcess, mongo_server: ServerProcess, fresh_bus: Bus, tmp_path: Path
) -> None:
    events = EventRecorder(fresh_bus)
    await events.start()
    app = orchestrator_app(fresh_nats, mongo_server, f"orch{uuid.uuid4().hex[:8]}", tmp_path)
    await app.start()
    try:
        role = TaskRoleSpec(name="w", instances=3, gpu=1, cpu=1, memory_mb=64, entrypoint="x")
        spec = JobSpec(
            job_key=ELASTIC, user="u", name="elastic", task_roles=[role], elastic={"w": 1}, submitted_at=1
        )
        await fresh_bus.publish_event(JobSubmitted(spec=spec))
        first = await events.wait_for(SchedulingRequested, ELASTIC)
        assert [(p.index, p.growth) for p in first.pods] == [(0, False)]

        def placed(i: int) -> SchedulingAllocated:
            where = Placement(task_role="w", index=i, node=f"n{i}", gpus=[0], host_ip=f"10.0.0.{i}")
            return SchedulingAllocated(job_key=ELASTIC, attempt_id=0, placements=[where])

        await fresh_bus.publish_event(placed(0))
        await events.wait_until(
            lambda e: (
                isinstance(e, SchedulingRequested) and e.job_key == ELASTIC and all(p.growth for p in e.pods)
            )
        )
        await fresh_bus.publish_event(
            TaskRunning(job_key=ELASTIC, attempt_id=0, task_role="w", index=0, node="n0", host_ip="10.0.0.0",
                        pid=1, started_at=2)
        )  # fmt: skip
        await fresh_bus.publish_event(placed(1))
        grew = await events.wait_for(JobElasticResized, ELASTIC, change="grew")
        assert (grew.tasks, grew.instances) == (["w/1"], {"w": 2})

        await fresh_bus.publish_event(
            SchedulingPreempting(
                job_key="v~urgent", attempt_id=0,
                victims=[Victim(job_key=ELASTIC, attempt_id=0, task_role="w", index=1, grace_cap_seconds=5)],
            )
        )  # fmt: skip
        launch1, kill1 = await _commands(fresh_bus, "n1", 2)
        assert isinstance(launch1, LaunchTask) and isinstance(kill1, KillTask)
        assert (kill1.index, kill1.preemptor, kill1.grace_period_s) == (1, "v~urgent", 5)
        await fresh_bus.publish_event(
            TaskDiagnosed(job_key=ELASTIC, attempt_id=0, task_role="w", index=1, exit_code=143, spec_code=143,
                          spec_phrase="P", failure_type="Transient", message="stopped", finished_at=3)
        )  # fmt: skip
        shrank = await events.wait_for(JobElasticResized, ELASTIC, change="shrunk")
        assert (shrank.tasks, shrank.instances) == (["w/1"], {"w": 1})
        released = await events.wait_for(JobTaskCompleted, ELASTIC, index=1)
        assert released.attempt_id == 0
        again = [e for e in events.of(SchedulingRequested, ELASTIC) if [p.index for p in e.pods] == [1]]
        assert again and again[-1].pods[0].growth

        launch0, grown, shrunk = await _commands(fresh_bus, "n0", 3)
        assert isinstance(launch0, LaunchTask) and launch0.env["PAI_ELASTIC_INSTANCES_w"] == "1"
        assert isinstance(grown, UpdateMembership) and isinstance(shrunk, UpdateMembership)
        assert (grown.env["PAI_ELASTIC_INSTANCES_w"], shrunk.env["PAI_ELASTIC_INSTANCES_w"]) == ("2", "1")
        assert shrunk.version > grown.version
        # The gang itself was never stopped.
        assert not events.of(JobAttemptCompleted, ELASTIC)
    finally:
        await app.stop()


async def test_a_whole_batch_in_one_transaction_reads_and_writes_each_framework_once(
    fresh_nats: ServerProcess, mongo_server: ServerProcess, fresh_bus: Bus, tmp_path: Path
) -> None:
    """Messages waiting in the stream are applied as one batch (batch_store.py): a job's whole life, a stop
    that overtakes its job and the job, and a dependent of a job that completes in the same batch, each come
    out as they would one event at a time, with one transition record per framework version."""
    db = f"orch{uuid.uuid4().hex[:8]}"
    events = EventRecorder(fresh_bus)
    await events.start()
    running = TaskRunning(
        job_key="u~whole", attempt_id=0, task_role="w", index=0, node="n0", host_ip="h", pid=1, started_at=2
    )
    for message in (
        JobSubmitted(spec=spec("u~whole")),
        JobStopRequested(job_key="u~early", requested_by="u", requested_at=1),
        allocated("u~whole"),
        JobSubmitted(spec=spec("u~early")),
        running,
        exited("u~whole", 0, "Succeeded"),
        JobSubmitted(spec=dspec("u~next", ("u~whole", "succeeded"))),
    ):
        await fresh_bus.publish_event(message)
    app = orchestrator_app(fresh_nats, mongo_server, db, tmp_path)
    await app.start()
    try:
        whole = await events.wait_for(JobCompleted, "u~whole")
        assert (whole.state, whole.exit_code) == ("SUCCEEDED", 0)
        early = await events.wait_for(JobCompleted, "u~early")
        assert (early.state, early.exit_code) == ("STOPPED", -210)
        await events.wait_for(SchedulingRequested, "u~next")
        await events.drain(0.5)
        assert events.of(SchedulingRequested, "u~early") == []
        assert len(events.of(SchedulingRequested, "u~next")) == 1
        # The seven were one transaction: their processed markers were written together (the two
        # job.completed this orchestrator published came later).
        markers = [d["at"] async for d in app.db["processed"].find({})]
        assert max(markers.count(at) for at in set(markers)) == 7
        doc = await app.db[FRAMEWORKS].find_one({"_id": "u~whole"})
        assert doc is not None and doc["fw"]["state"] == "Completed"
        versions = [d["version"] async for d in app.db["transitions"].find({"job_key": "u~whole"})]
        assert sorted(versions) == list(range(min(versions), doc["version"] + 1))
        final = await app.db[DEPENDENTS].find_one({"_id": "u~whole"})
        assert final is not None and final["final_state"] == "SUCCEEDED" and final["dependents"] == ["u~next"]
        assert await app.db[STOPS].find_one({"_id": "u~early"}) is None
    finally:
        await app.stop()
