"""A job of hundreds of tasks: what one `framework.changed` of it costs the jobs service's database must
not grow with the number of tasks (issue 17), against a real MongoDB-wire server.

Every event carries the whole framework (~180 KB for 501 tasks). Stored whole, each event rewrote the job
document with all of it; stored in parts, an event that moves one task writes the job's head and one part
of 32 tasks, and of a consumer's batch only each job's newest snapshot is written at all. The handler runs
here inside real transactions of a client of the test's own, whose commands are recorded (pymongo's
command monitoring: what was sent, not a stand-in for the server), so the figures are counts and bytes,
never times. The consumer's batching itself is covered by `pai_common`'s consumer tests; here the batch is
given, as the consumer gives it.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bson
import pytest
from pymongo import AsyncMongoClient
from pymongo.monitoring import CommandFailedEvent, CommandListener, CommandStartedEvent, CommandSucceededEvent

from pai_common.consumer import HandlerContext
from pai_common.contract.base import Event
from pai_common.contract.events import FrameworkChanged, JobAttemptCompleted, SchedulingPending
from pai_common.contract.rpc import GetJobRequest, JobEventsRequest, TaskAttemptsRequest
from pai_common.contract.types import FrameworkSnapshot, JobAttemptRecord, TaskSnapshot
from pai_common.embedded import ServerProcess
from pai_common.envelope import Envelope
from pai_common.outbox import PendingMessages
from pai_common.service import ServiceApp
from pai_common.settings import Settings
from pai_jobs import job_events
from pai_jobs.protocol import parse_job
from pai_jobs.shell import (
    JOBS,
    LIST,
    JobsService,
    NewJob,
    _record,
    new_job_document,
    read_model_fields,
    store_new_jobs,
)
from pai_jobs.snapshot_parts import DIGESTS, PARTS, TASKS_PER_PART

TASKS = 501
STATES = ("TaskAttemptPreparing", "TaskAttemptRunning", "TaskAttemptCompleted")
WRITES = ("insert", "update", "delete")


@dataclass
class Recorder(CommandListener):
    """The write commands sent to one database: (command, collection, BSON bytes of the whole command)."""

    database: str
    writes: list[tuple[str, str, int]] = field(default_factory=list)
    # The commands recorded (reads too where a test counts them).
    kinds: tuple[str, ...] = WRITES

    def started(self, event: CommandStartedEvent) -> None:
        if event.database_name == self.database and event.command_name in self.kinds:
            collection = str(event.command[event.command_name])
            self.writes.append((event.command_name, collection, len(bson.encode(event.command))))

    def succeeded(self, event: CommandSucceededEvent) -> None:
        pass

    def failed(self, event: CommandFailedEvent) -> None:
        pass

    def take(self) -> list[tuple[str, str, int]]:
        taken, self.writes = self.writes, []
        return taken


def job_yaml(tasks: int) -> str:
    return f"""protocolVersion: 2
name: mnist
type: job
prerequisites:
  - {{type: dockerimage, name: img, uri: "python:3.11"}}
taskRoles:
  worker:
    instances: {tasks}
    dockerImage: img
    resourcePerInstance: {{cpu: 1, memoryMB: 256, gpu: 0}}
    commands: ["python train.py"]
defaults: {{virtualCluster: default}}
"""


def framework(version: int, moved: int = 0, attempts: int = 0) -> FrameworkSnapshot:
    """The 501-task framework after ``moved`` single-task moves (task i moved once when i < moved)."""
    return FrameworkSnapshot(
        job_key="alice~mnist",
        version=version,
        state="AttemptRunning",
        attempt_id=attempts,
        tasks=[
            TaskSnapshot(
                task_role="worker",
                index=i,
                state=STATES[1 if i < moved else 0],
                node=f"node-{i % 20}",
                ports={"http": [20000 + i]},
                created_at=1_700_000_000_000 + i,
            )
            for i in range(TASKS)
        ],
        attempts=[
            JobAttemptRecord(
                attempt_id=a,
                state="AttemptCompleted",
                exit_code=1,
                tasks=[TaskSnapshot(task_role="worker", index=i, state=STATES[2]) for i in range(TASKS)],
            )
            for a in range(attempts)
        ],
    )


def envelope(snapshot: FrameworkSnapshot | Event) -> Envelope:
    body = FrameworkChanged(snapshot=snapshot) if isinstance(snapshot, FrameworkSnapshot) else snapshot
    return Envelope(
        id=uuid.uuid4().hex,
        type=body.TYPE,
        source="pai/orchestrator",
        subject=body.subject_key(),
        time="",
        body=body,
        headers={},
    )


@dataclass
class Harness:
    client: AsyncMongoClient[dict[str, Any]]
    recorder: Recorder
    service: JobsService

    @property
    def db(self) -> Any:
        return self.client[self.recorder.database]

    async def transaction(
        self, batch: list[Envelope], work: Callable[[HandlerContext], Awaitable[None]]
    ) -> None:
        """One consumer transaction over ``batch``, as `DurableConsumer` runs it (without the bus)."""
        async with self.client.start_session() as session, await session.start_transaction():
            ctx = HandlerContext(self.db, session, PendingMessages("jobs"), batch=batch)
            await work(ctx)
            await ctx.flush()

    async def apply(self, *snapshots: FrameworkSnapshot) -> list[tuple[str, str, int]]:
        """The snapshots as one consumer batch; the write commands it sent."""
        batch = [envelope(s) for s in snapshots]

        async def handle(ctx: HandlerContext) -> None:
            for env in batch:
                await self.service.on_framework_changed(ctx, env)

        self.recorder.take()
        await self.transaction(batch, handle)
        return self.recorder.take()


@pytest.fixture
async def harness(mongo_server: ServerProcess, tmp_path: Path) -> AsyncIterator[Harness]:
    recorder = Recorder(f"jobs{uuid.uuid4().hex[:8]}")
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        mongo_server.url, tz_aware=True, uuidRepresentation="standard", event_listeners=[recorder]
    )
    app = ServiceApp("jobs", Settings(mongo_url=mongo_server.url, data_dir=tmp_path))
    service = JobsService(app, list_index=False)
    app.db = client[recorder.database]  # the service's reads (jobs.get) go to the test's database
    h = Harness(client, recorder, service)
    parsed = parse_job(job_yaml(TASKS), "alice", 1_700_000_000_000)
    doc = new_job_document(parsed.spec.model_dump(mode="json"), parsed.masked)
    new = NewJob(parsed.spec, doc, parsed.raw, deadline=float("inf"))

    async def store(ctx: HandlerContext) -> None:
        await store_new_jobs(ctx, [new])

    await h.transaction([], store)
    yield h
    await client.close()


def written(writes: list[tuple[str, str, int]], collection: str, command: str = "update") -> list[int]:
    return [size for cmd, coll, size in writes if coll == collection and cmd == command]


async def test_an_event_of_a_big_job_writes_what_changed_not_the_job(harness: Harness) -> None:
    event_bytes = len(FrameworkChanged(snapshot=framework(1)).model_dump_json())
    assert event_bytes > 100_000  # every task's status: the event itself stays as large as the job

    # The first snapshot writes every part (16 of 32 tasks), once.
    first = await harness.apply(framework(1))
    assert len(written(first, JOBS)) == 1
    assert sum(written(first, PARTS)) > TASKS * 100

    # Then each event moves one task: the job's head and one part, whatever the number of tasks.
    for moved in range(1, 11):
        writes = await harness.apply(framework(1 + moved, moved=moved))
        per_event = sum(size for _, _, size in writes)
        assert len(written(writes, JOBS)) == 1 and len(written(writes, PARTS)) == 1, writes
        assert per_event < event_bytes / 10, (per_event, event_bytes, writes)
        assert sum(written(writes, PARTS)) < event_bytes * 2 * TASKS_PER_PART / TASKS

    # What jobs.get answers is the newest snapshot whole: every task's status.
    detail = (await harness.service.get(GetJobRequest(job_key="alice~mnist"))).detail
    statuses = detail["taskRoles"]["worker"]["taskStatuses"]
    assert len(statuses) == TASKS
    assert [s["taskState"] for s in statuses[:12]] == ["RUNNING"] * 10 + ["WAITING"] * 2
    doc = await harness.db[JOBS].find_one({"_id": "alice~mnist"})
    assert doc is not None and "tasks" not in doc["snapshot"] and len(doc[DIGESTS]["tasks"]) == 16

    # A late or repeated snapshot writes nothing.
    assert await harness.apply(framework(5, moved=4)) == []
    assert await harness.apply(framework(11, moved=10)) == []


async def test_a_batch_of_one_jobs_events_stores_its_newest_snapshot_once(harness: Harness) -> None:
    await harness.apply(framework(1))
    # Ten changes of the job in one consumer batch, out of order: one write of the job and of its parts.
    batch = [framework(v, moved=v - 1) for v in (2, 3, 4, 6, 5, 7, 8, 9, 10, 11)]
    writes = await harness.apply(*batch)
    assert len(written(writes, JOBS)) == 1, writes
    assert len(written(writes, PARTS)) == 1, writes
    stored = await harness.service._job("alice~mnist")
    assert stored["snapshot"] == framework(11, moved=10).model_dump(mode="json")
    entry = await harness.db[LIST].find_one({"_id": "alice~mnist"})
    assert entry is not None and entry["state"] == "RUNNING"


async def test_attempts_are_parts_written_once_and_parts_that_are_gone_are_deleted(harness: Harness) -> None:
    await harness.apply(framework(1))
    # A retry: the new attempt's tasks start over and the finished attempt is one new part.
    writes = await harness.apply(framework(2, attempts=1))
    assert len(written(writes, PARTS)) == 1
    stored = await harness.service._job("alice~mnist")
    assert stored["snapshot"] == framework(2, attempts=1).model_dump(mode="json")
    # OpenPAI's view of the earlier attempt's last task comes from that part.
    earlier = await harness.service.task_attempts(
        TaskAttemptsRequest(job_key="alice~mnist", attempt_id=0, task_role="worker", index=500)
    )
    assert earlier.status["attempts"]
    writes = await harness.apply(framework(3, moved=1, attempts=1))
    assert len(written(writes, PARTS)) == 1  # one task part; the attempt part is unchanged
    assert sum(written(writes, PARTS)) < 20_000

    # Fewer tasks (an elastic job shrank): the parts past the end are deleted with the change.
    full = framework(4, attempts=1)
    smaller = full.model_copy(update={"tasks": full.tasks[:40]})
    writes = await harness.apply(smaller)
    assert written(writes, PARTS, "delete")
    left = await harness.db[PARTS].count_documents({"job_key": "alice~mnist"})
    assert left == 2 + 1  # tasks 0-31, 32-39, and the attempt
    stored = await harness.service._job("alice~mnist")
    assert stored["snapshot"] == smaller.model_dump(mode="json")


async def test_a_snapshot_stored_whole_by_an_earlier_version_is_read_and_then_stored_in_parts(
    harness: Harness,
) -> None:
    whole = framework(3, moved=2).model_dump(mode="json")
    await harness.db[JOBS].update_one({"_id": "alice~mnist"}, {"$set": read_model_fields(whole)})
    detail = (await harness.service.get(GetJobRequest(job_key="alice~mnist"))).detail
    assert len(detail["taskRoles"]["worker"]["taskStatuses"]) == TASKS
    writes = await harness.apply(framework(4, moved=3))
    assert len(written(writes, PARTS)) == 1 and len(written(writes, JOBS)) == 1
    stored = await harness.service._job("alice~mnist")
    assert stored["snapshot"] == framework(4, moved=3).model_dump(mode="json")
    assert await harness.db[PARTS].count_documents({"job_key": "alice~mnist"}) == 16


async def test_a_small_snapshot_stays_whole_in_the_job_document(harness: Harness) -> None:
    """Most jobs have a task or a few: their snapshot is no bigger than one part, so it is kept in the job
    document, and neither a change nor a read asks for parts; one that grows goes to parts, and back."""
    full = framework(1)
    small = full.model_copy(update={"tasks": full.tasks[:4]})
    writes = await harness.apply(small)
    assert [(cmd, coll) for cmd, coll, _ in writes if coll in (JOBS, PARTS)] == [("update", JOBS)], writes
    doc = await harness.db[JOBS].find_one({"_id": "alice~mnist"})
    assert doc is not None and DIGESTS not in doc and len(doc["snapshot"]["tasks"]) == 4
    harness.recorder.kinds = (*WRITES, "find")
    harness.recorder.take()
    stored = await harness.service._job("alice~mnist")
    assert stored["snapshot"] == small.model_dump(mode="json")
    assert [coll for _, coll, _ in harness.recorder.take()] == [JOBS]  # no read of parts
    harness.recorder.kinds = WRITES

    # Grown past one part (here: a retry whose earlier attempt kept 501 tasks): stored in parts.
    grown = framework(2, attempts=1)
    writes = await harness.apply(grown)
    assert written(writes, PARTS)
    doc = await harness.db[JOBS].find_one({"_id": "alice~mnist"})
    assert doc is not None and "tasks" not in doc["snapshot"] and DIGESTS in doc

    # Small again (an elastic job shrank, its history cut): whole in the document, every part deleted.
    again = framework(3).model_copy(update={"tasks": full.tasks[:2]})
    writes = await harness.apply(again)
    assert written(writes, PARTS, "delete")
    assert await harness.db[PARTS].count_documents({"job_key": "alice~mnist"}) == 0
    doc = await harness.db[JOBS].find_one({"_id": "alice~mnist"})
    assert doc is not None and DIGESTS not in doc
    stored = await harness.service._job("alice~mnist")
    assert stored["snapshot"] == again.model_dump(mode="json")


def small(job_key: str, version: int, state: str = STATES[1]) -> FrameworkSnapshot:
    return FrameworkSnapshot(
        job_key=job_key,
        version=version,
        state="AttemptRunning",
        attempt_id=0,
        tasks=[TaskSnapshot(task_role="worker", index=i, state=state) for i in range(2)],
    )


async def test_a_batch_of_several_jobs_reads_them_in_one_request_and_writes_them_in_one(
    harness: Harness,
) -> None:
    """A consumer's batch carries the snapshots of several jobs: their documents are read in one request
    and written in one, except a job whose document another event of the batch touches, read and written
    at its turn so that its other handler sees the snapshot's write. An attempt's end, which only records
    a job event, keeps its job in the batch's one read and one write."""
    keys = []
    for name in ("one", "two", "three"):
        parsed = parse_job(job_yaml(2).replace("name: mnist", f"name: {name}"), "alice", 1_700_000_000_000)
        doc = new_job_document(parsed.spec.model_dump(mode="json"), parsed.masked)
        new = NewJob(parsed.spec, doc, parsed.raw, deadline=float("inf"))

        async def store(ctx: HandlerContext, new: NewJob = new) -> None:
            await store_new_jobs(ctx, [new])

        await harness.transaction([], store)
        keys.append(parsed.spec.job_key)
    one, two, three = keys
    pending = SchedulingPending(job_key=three, attempt_id=0, reason="waiting for GPUs", position=1)
    ended = JobAttemptCompleted(job_key=two, attempt_id=0, exit_code=0)
    batch = [
        envelope(small(one, 1)),
        envelope(small(two, 1)),
        envelope(ended),
        envelope(small(three, 1)),
        envelope(pending),
    ]

    async def handle(ctx: HandlerContext) -> None:
        for env in batch:
            if isinstance(env.body, FrameworkChanged):
                await harness.service.on_framework_changed(ctx, env)
            elif isinstance(env.body, JobAttemptCompleted):
                await harness.service.on_attempt_completed(ctx, env)
            else:
                await harness.service.on_pending(ctx, env)

    harness.recorder.kinds = (*WRITES, "find")
    harness.recorder.take()
    await harness.transaction(batch, handle)
    sent = [(cmd, coll) for cmd, coll, _ in harness.recorder.take() if coll == JOBS]
    # one, two: one find and one update between them; three: its own read and write, then the pending.
    assert sent.count(("find", JOBS)) == 2, sent
    assert sent.count(("update", JOBS)) == 3, sent
    harness.recorder.kinds = WRITES
    for key in keys:
        stored = await harness.service._job(key)
        assert stored["snapshot"] == small(key, 1).model_dump(mode="json")
        entry = await harness.db[LIST].find_one({"_id": key})
        assert entry is not None and entry["state"] == "RUNNING", entry
    stored = await harness.service._job(three)
    assert stored["pending"]["reason"] == "waiting for GPUs"
    listed = (await harness.service.events(JobEventsRequest(job_key=two))).events
    assert [e["reason"] for e in listed] == ["Submitted", "AttemptCompleted"], listed

    # A job whose write was left to the end comes back in the batch (the same version under another id):
    # its write goes first, and the repeat sees it and changes nothing.
    again = [envelope(small(one, 2)), envelope(small(two, 2)), envelope(small(one, 2))]
    writes = await harness.apply(*(e.body.snapshot for e in again if isinstance(e.body, FrameworkChanged)))
    assert len(written(writes, JOBS)) == 1, writes  # the repeat wrote nothing
    counts = {d["_id"]: d["n"] async for d in harness.db["job_counts"].find()}
    assert counts.get("state:RUNNING") == 3, counts  # each job counted once, whatever the repeats


async def test_job_events_of_the_same_millisecond_are_listed_in_the_order_recorded(harness: Harness) -> None:
    """Two producers' events published back to back can carry the same millisecond: the job's events list
    them in the order they were recorded, not in the order of their ids' hashes (each order, once)."""
    job_key = "alice~mnist"
    recorded: list[str] = []
    for attempt, preempted_first in ((0, True), (1, False)):
        at = 1_700_000_000_000 + attempt * 1000
        preempted = job_events.preempted(job_key, attempt, "bob~big#0", at)
        ended = job_events.attempt_completed(job_key, attempt, -210, at)
        ordered = [preempted, ended] if preempted_first else [ended, preempted]

        async def record(ctx: HandlerContext, ordered: list[job_events.JobEvent] = ordered) -> None:
            for event in ordered:
                await _record(ctx, event)

        await harness.transaction([], record)
        recorded += [event.reason for event in ordered]
    listed = (await harness.service.events(JobEventsRequest(job_key=job_key, type="Warning"))).events
    assert [e["reason"] for e in listed] == recorded
