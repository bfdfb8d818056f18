"""The jobs service against a real NATS server (JetStream) and a real MongoDB-wire server: submission,
queries, mutations, secrets, job events from the other services' events, and a restart."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from pai_common.bus import EVENTS_STREAM, Bus
from pai_common.contract.events import (
    FrameworkChanged,
    JobAttemptCompleted,
    JobDependencyResolved,
    JobStopRequested,
    JobSubmitted,
    SchedulingPending,
    SchedulingPreempting,
    SchedulingRejected,
)
from pai_common.contract.rpc import (
    GetJobRequest,
    JobAttemptsReply,
    JobAttemptsRequest,
    JobConfigReply,
    JobConfigRequest,
    JobDetailReply,
    JobEventsReply,
    JobEventsRequest,
    JobExecutionTypeRequest,
    JobListReply,
    JobMutationReply,
    JobSecretsReply,
    JobSecretsRequest,
    JobTagRequest,
    ListJobsRequest,
    ResolveStoragesRequest,
    SubmitJobReply,
    SubmitJobRequest,
    TaskAttemptsReply,
    TaskAttemptsRequest,
    TaskPlacementReply,
    TaskPlacementRequest,
)
from pai_common.contract.types import FrameworkSnapshot, TaskSnapshot, Victim
from pai_common.embedded import ServerProcess, start_nats
from pai_common.envelope import decode
from pai_common.errors import (
    ConflictJobError,
    ForbiddenUserError,
    InvalidParametersError,
    InvalidProtocolError,
    NoJobError,
    NoTagError,
    NoVirtualClusterError,
    ServiceUnavailableError,
)
from pai_common.service import ServiceApp
from pai_common.settings import Settings
from pai_common.testing import no_storages
from pai_jobs.protocol import parse_job
from pai_jobs.shell import COUNTERS, COUNTS, JOBS, LIST, SEQ_COUNTER, JobsService, new_job_document


def job_yaml(name: str, vc: str = "default", secrets: bool = False, priority: str = "test") -> str:
    secret_part = "secrets:\n  token: hunter2-very-secret\n" if secrets else ""
    return f"""protocolVersion: 2
name: {name}
type: job
{secret_part}prerequisites:
  - {{type: dockerimage, name: img, uri: "python:3.11"}}
taskRoles:
  worker:
    instances: 2
    dockerImage: img
    resourcePerInstance: {{cpu: 1, memoryMB: 256, gpu: 1, ports: {{http: 1}}}}
    commands: ["echo <% $secrets.token %>"]
defaults: {{virtualCluster: {vc}}}
extras:
  hivedScheduler: {{jobPriorityClass: {priority}}}
"""


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


async def known_vcs() -> set[str]:
    return {"default", "research", "prod"}


def jobs_app(nats: ServerProcess, mongo: ServerProcess, db: str, data: Path) -> ServiceApp:
    settings = Settings(nats_url=nats.url, mongo_url=mongo.url, data_dir=data, nak_base_delay_s=0.05)
    app = ServiceApp("jobs", settings)
    # The VCs the scheduler would name (it owns them; the platform tests ask the real one).
    JobsService(app, virtual_clusters=known_vcs)
    app.rpc({ResolveStoragesRequest: no_storages})
    app.name = db  # a database of this test's own; the bus subjects stay the jobs service's
    return app


class Published:
    """Every job.* event on the stream, decoded, with the raw payload kept for secret checks."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.seen: list[tuple[Any, bytes]] = []

    async def start(self) -> None:
        self.sub = await self.bus.js.subscribe("pai.evt.job.>", stream=EVENTS_STREAM, ordered_consumer=True)

    async def drain(self, seconds: float = 0.5) -> None:
        deadline = asyncio.get_running_loop().time() + seconds
        while (remaining := deadline - asyncio.get_running_loop().time()) > 0:
            try:
                msg = await self.sub.next_msg(timeout=remaining)
            except Exception:
                break
            self.seen.append((decode(msg.headers, msg.data).body, msg.data))

    async def wait_for(self, kind: type, count: int = 1, timeout: float = 10) -> list[Any]:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            found = [body for body, _ in self.seen if isinstance(body, kind)]
            if len(found) >= count:
                return found
            assert asyncio.get_running_loop().time() < deadline, f"only {len(found)} {kind.__name__}"
            await self.drain(0.3)


async def eventually(check: Callable[[], Any], timeout: float = 10) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            return await check()
        except AssertionError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.1)


async def _state_is(client: Bus, key: str, state: str) -> None:
    """The read model shows ``state`` (the framework.changed it awaits is handled asynchronously)."""
    detail = (await client.request(GetJobRequest(job_key=key), JobDetailReply)).detail
    assert detail["jobStatus"]["state"] == state


async def started_service(
    nats: ServerProcess, mongo: ServerProcess, data: Path
) -> tuple[ServiceApp, JobsService]:
    """A started jobs service with a database of its own; storages resolve to none."""
    app = ServiceApp("jobs", Settings(nats_url=nats.url, mongo_url=mongo.url, data_dir=data))
    service = JobsService(app, virtual_clusters=known_vcs)
    app.rpc({ResolveStoragesRequest: no_storages})
    app.name = f"jobs{uuid.uuid4().hex[:8]}"
    await app.start()
    return app, service


def submit(name: str, user: str = "alice", **kwargs: Any) -> SubmitJobRequest:
    return SubmitJobRequest(
        username=user, virtual_clusters=["default"], protocol_yaml=job_yaml(name, **kwargs)
    )


def running_snapshot(job_key: str, version: int, nodes: tuple[str, str] = ("n1", "n2")) -> FrameworkSnapshot:
    return FrameworkSnapshot(
        job_key=job_key,
        version=version,
        state="AttemptRunning",
        attempt_id=0,
        tasks=[
            TaskSnapshot(
                task_role="worker",
                index=i,
                state="TaskAttemptRunning",
                node=node,
                ports={"http": [15000 + i]},
            )
            for i, node in enumerate(nodes)
        ],
    )


async def test_submission_queries_mutations_and_secrets(
    nats_srv: ServerProcess, mongo_server: ServerProcess, client: Bus, tmp_path: Path
) -> None:
    published = Published(client)
    await published.start()
    app = jobs_app(nats_srv, mongo_server, f"jobs{uuid.uuid4().hex[:8]}", tmp_path)
    await app.start()
    try:
        reply = await client.request(submit("secretive", secrets=True), SubmitJobReply)
        assert reply.job_key == "alice~secretive"
        (event,) = await published.wait_for(JobSubmitted)
        assert event.spec.has_secrets is True and event.spec.task_roles[0].ports == {"http": 1}
        assert all(b"hunter2" not in raw for _, raw in published.seen)

        with pytest.raises(ConflictJobError, match="alice~secretive already exists"):
            await client.request(submit("secretive"), SubmitJobReply)
        # The same content again (a client retrying a submission that succeeded): the same answer, and
        # still one job.
        again = await client.request(submit("secretive", secrets=True), SubmitJobReply)
        assert again.job_key == "alice~secretive"
        # Also once the user may no longer submit to its VC: the job exists, so the answer is still 202.
        retry = submit("secretive", secrets=True).model_copy(update={"virtual_clusters": []})
        assert (await client.request(retry, SubmitJobReply)).job_key == "alice~secretive"
        with pytest.raises(ForbiddenUserError):
            await client.request(
                submit("other", secrets=True).model_copy(update={"virtual_clusters": []}), SubmitJobReply
            )
        await published.drain()
        submitted = [b for b, _ in published.seen if isinstance(b, JobSubmitted)]
        assert [b.spec.job_key for b in submitted] == ["alice~secretive"]
        with pytest.raises(ForbiddenUserError, match="research"):
            await client.request(submit("elsewhere", vc="research"), SubmitJobReply)
        # OpenPAI's answer for a VC nobody has, before any access check.
        with pytest.raises(NoVirtualClusterError, match=r"Virtual cluster nowhere is not found\.") as caught:
            await client.request(submit("lost", vc="nowhere"), SubmitJobReply)
        assert caught.value.status == 404
        with pytest.raises(InvalidProtocolError, match="taskRoles"):
            await client.request(
                SubmitJobRequest(username="alice", virtual_clusters=["default"], protocol_yaml="name: x\n"),
                SubmitJobReply,
            )
        for i, (user, priority) in enumerate([("alice", "prod"), ("bob", "test"), ("bob", "oppo")]):
            await client.request(submit(f"job{i}", user=user, priority=priority), SubmitJobReply)

        # -- config: secrets masked
        config = (await client.request(JobConfigRequest(job_key="alice~secretive"), JobConfigReply)).config
        assert config["secrets"] == {"token": "******"}

        # -- list: filters, paging, order, total
        async def listing(**fields: Any) -> JobListReply:
            return await client.request(ListJobsRequest(**fields), JobListReply)

        every = await listing()
        assert [j["name"] for j in every.jobs] == ["job2", "job1", "job0", "secretive"] and every.total == 4
        assert [j["name"] for j in (await listing(usernames=["bob"])).jobs] == ["job2", "job1"]
        assert [j["name"] for j in (await listing(job_priorities=["prod"])).jobs] == ["job0"]
        page = await listing(offset=1, limit=2, order_field="jobName", order="ASC")
        assert [j["name"] for j in page.jobs] == ["job1", "job2"] and page.total == 4
        assert (await listing(offset=10)).jobs == []
        assert (await listing(limit=1, count_total=False)).total == -1
        with pytest.raises(InvalidParametersError, match="order field"):
            await listing(order_field="bogus")

        # -- tags
        tag = JobTagRequest(job_key="alice~job0", tag="nightly", username="alice")
        assert "Add tag nightly" in (await client.request(tag, JobMutationReply)).message
        with pytest.raises(ForbiddenUserError):
            await client.request(tag.model_copy(update={"username": "bob"}), JobMutationReply)
        await client.request(
            tag.model_copy(update={"username": "bob", "admin": True, "tag": "big"}), JobMutationReply
        )
        assert [j["name"] for j in (await listing(tags_contain=["nightly"])).jobs] == ["job0"]
        assert "job0" not in [j["name"] for j in (await listing(tags_not_contain=["big"])).jobs]
        await client.request(tag.model_copy(update={"remove": True}), JobMutationReply)
        with pytest.raises(NoTagError):
            await client.request(tag.model_copy(update={"remove": True}), JobMutationReply)
        detail = (await client.request(GetJobRequest(job_key="alice~job0"), JobDetailReply)).detail
        assert detail["tags"] == ["big"]

        # -- secrets: only for the node the orchestrator placed that task attempt on. This service's read
        # model has not heard of any placement yet (no framework.changed): the answer must not depend on it.
        secrets_req = JobSecretsRequest(
            job_key="alice~secretive", node="n1", attempt_id=0, task_role="worker", index=1
        )
        with pytest.raises(ServiceUnavailableError, match="orchestrator"):
            await client.request(secrets_req, JobSecretsReply)  # nobody answers for the placement yet
        placements = {("alice~secretive", 0, "worker", 1, 0): "n1"}
        asked: list[TaskPlacementRequest] = []

        async def placement(req: TaskPlacementRequest) -> TaskPlacementReply:
            asked.append(req)
            key = (req.job_key, req.attempt_id, req.task_role, req.index, req.task_attempt_id)
            node = placements.get(key)
            return TaskPlacementReply(node=node, reason="" if node else "not placed in this test")

        orchestrator = await Bus.connect(nats_srv.url, "orchestrator")
        await orchestrator.serve_rpc({TaskPlacementRequest: placement})
        got = await client.request(secrets_req, JobSecretsReply)
        assert got.secrets == {"token": "hunter2-very-secret"}
        assert [(a.job_key, a.attempt_id, a.task_role, a.index) for a in asked] == [
            ("alice~secretive", 0, "worker", 1)
        ]
        with pytest.raises(ForbiddenUserError, match=r"n9 runs no task worker\[1\].*placed on n1"):
            await client.request(secrets_req.model_copy(update={"node": "n9"}), JobSecretsReply)
        with pytest.raises(ForbiddenUserError, match="not placed in this test"):
            await client.request(secrets_req.model_copy(update={"attempt_id": 1}), JobSecretsReply)
        with pytest.raises(ForbiddenUserError, match="not placed in this test"):
            await client.request(secrets_req.model_copy(update={"task_attempt_id": 2}), JobSecretsReply)
        with pytest.raises(NoJobError):
            await client.request(secrets_req.model_copy(update={"job_key": "alice~nope"}), JobSecretsReply)
        await orchestrator.close()
        await client.publish_event(FrameworkChanged(snapshot=running_snapshot("alice~secretive", 3)))
        await eventually(partial(_state_is, client, "alice~secretive", "RUNNING"))
        detail = (await client.request(GetJobRequest(job_key="alice~secretive"), JobDetailReply)).detail
        assert detail["jobStatus"]["state"] == "RUNNING"
        assert detail["taskRoles"]["worker"]["taskStatuses"][1]["containerPorts"] == {"http": "15001"}
        assert "hunter2" not in str(detail)
        # An older snapshot changes nothing.
        await client.publish_event(
            FrameworkChanged(
                snapshot=running_snapshot("alice~secretive", 2).model_copy(
                    update={"state": "AttemptPreparing"}
                )
            )
        )
        await asyncio.sleep(0.5)
        detail = (await client.request(GetJobRequest(job_key="alice~secretive"), JobDetailReply)).detail
        assert detail["jobStatus"]["state"] == "RUNNING"
        assert [j["state"] for j in (await listing(states=["RUNNING"])).jobs] == ["RUNNING"]

        # -- attempts
        attempts = (
            await client.request(JobAttemptsRequest(job_key="alice~secretive"), JobAttemptsReply)
        ).attempts
        assert [a["attemptIndex"] for a in attempts] == [0]
        with pytest.raises(NoJobError):
            await client.request(
                JobAttemptsRequest(job_key="alice~secretive", attempt_id=4), JobAttemptsReply
            )
        with pytest.raises(NoJobError):
            await client.request(GetJobRequest(job_key="alice~secretive", attempt_id=4), JobDetailReply)
        task = TaskAttemptsRequest(job_key="alice~secretive", attempt_id=0, task_role="worker", index=1)
        status = (await client.request(task, TaskAttemptsReply)).status
        assert status["attempts"][0]["containerNodeName"] == "n2"
        with pytest.raises(NoJobError):
            await client.request(task.model_copy(update={"index": 2}), TaskAttemptsReply)

        # -- stop: owner or admin; published once
        stop = JobExecutionTypeRequest(job_key="alice~secretive", value="STOP", username="bob")
        with pytest.raises(ForbiddenUserError):
            await client.request(stop, JobMutationReply)
        for _ in range(2):
            done = await client.request(stop.model_copy(update={"username": "alice"}), JobMutationReply)
            assert done.message == "Execute job alice~secretive successfully."
        (stopped,) = await published.wait_for(JobStopRequested)
        assert (stopped.job_key, stopped.requested_by) == ("alice~secretive", "alice")
        await published.drain(1.0)
        assert len([b for b, _ in published.seen if isinstance(b, JobStopRequested)]) == 1
        await client.request(
            stop.model_copy(update={"value": "START", "username": "alice"}), JobMutationReply
        )
        detail = (await client.request(GetJobRequest(job_key="alice~secretive"), JobDetailReply)).detail
        assert detail["jobStatus"]["executionType"] == "STOP"  # START does not resume

        # -- job events from the other services' events
        for position in (2, 1):
            await client.publish_event(
                SchedulingPending(
                    job_key="bob~job1", attempt_id=0, reason="VC default is full", position=position
                )
            )
        await client.publish_event(
            SchedulingPreempting(
                job_key="alice~job0",
                attempt_id=0,
                # Two tasks of one attempt placed one by one (gangAllocation false): one Preempted event.
                victims=[
                    Victim(job_key="bob~job2", attempt_id=0, task_role="w", index=i, grace_cap_seconds=30)
                    for i in range(2)
                ],
            )
        )
        await client.publish_event(
            SchedulingRejected(job_key="bob~job1", attempt_id=0, reason="asks for 99 GPUs")
        )
        await client.publish_event(JobAttemptCompleted(job_key="bob~job2", attempt_id=0, exit_code=-210))

        async def recorded() -> None:
            events = (await client.request(JobEventsRequest(job_key="bob~job1"), JobEventsReply)).events
            assert [(e["reason"], e["count"]) for e in events] == [
                ("Submitted", 1),
                ("SchedulingPending", 2),
                ("FailedScheduling", 1),
            ]
            victim = (
                await client.request(JobEventsRequest(job_key="bob~job2", type="Warning"), JobEventsReply)
            ).events
            assert [e["reason"] for e in victim] == ["Preempted", "AttemptCompleted"]
            assert "alice~job0#0" in victim[0]["message"]

        await eventually(recorded)
        stops = (await client.request(JobEventsRequest(job_key="alice~secretive"), JobEventsReply)).events
        assert [e["reason"] for e in stops] == ["Submitted", "StopRequested"]
        with pytest.raises(NoJobError):
            await client.request(JobEventsRequest(job_key="alice~nope"), JobEventsReply)
    finally:
        await app.stop()


async def test_a_restarted_service_keeps_its_jobs_and_resends_nothing(
    nats_srv: ServerProcess, mongo_server: ServerProcess, client: Bus, tmp_path: Path
) -> None:
    published = Published(client)
    await published.start()
    db = f"jobs{uuid.uuid4().hex[:8]}"
    app = jobs_app(nats_srv, mongo_server, db, tmp_path)
    await app.start()
    try:
        await client.request(submit("durable"), SubmitJobReply)
        await client.request(
            JobExecutionTypeRequest(job_key="alice~durable", value="STOP", username="alice"), JobMutationReply
        )
    finally:
        await app.stop()
    app = jobs_app(nats_srv, mongo_server, db, tmp_path)
    await app.start()
    try:
        detail = (await client.request(GetJobRequest(job_key="alice~durable"), JobDetailReply)).detail
        assert detail["jobStatus"]["executionType"] == "STOP"
        # Retried after the restart: the same answer, nothing published again; other content is refused.
        assert (await client.request(submit("durable"), SubmitJobReply)).job_key == "alice~durable"
        with pytest.raises(ConflictJobError):
            await client.request(submit("durable", priority="prod"), SubmitJobReply)
        await published.drain(1.5)
        kinds = [type(b).__name__ for b, _ in published.seen]
        assert kinds.count("JobSubmitted") == 1 and kinds.count("JobStopRequested") == 1
    finally:
        await app.stop()


async def test_jobs_stored_before_the_list_get_entries_at_start(
    nats_srv: ServerProcess, mongo_server: ServerProcess, client: Bus, tmp_path: Path
) -> None:
    """A job document from before `seq` and `job_list` existed is listed (and counted) soon after a
    restart."""
    db = f"jobs{uuid.uuid4().hex[:8]}"
    app = jobs_app(nats_srv, mongo_server, db, tmp_path)
    await app.start()
    try:
        await client.request(submit("fresh"), SubmitJobReply)
        legacy = new_job_document(
            parse_job(job_yaml("legacy"), "bob", 1).spec.model_dump(mode="json"), {"name": "legacy"}
        )
        await app.db[JOBS].insert_one(legacy)  # as an older version stored it: no seq, no list entry
    finally:
        await app.stop()
    app = jobs_app(nats_srv, mongo_server, db, tmp_path)
    await app.start()
    try:
        # The backfill runs once the service is ready.
        async def both_listed() -> None:
            listed = await client.request(ListJobsRequest(), JobListReply)
            assert [j["name"] for j in listed.jobs] == ["legacy", "fresh"]

        await eventually(both_listed)
        bobs = await client.request(ListJobsRequest(usernames=["bob"], limit=1, offset=0), JobListReply)
        assert [j["name"] for j in bobs.jobs] == ["legacy"]
        counted = await client.request(ListJobsRequest(usernames=["bob"], offset=1), JobListReply)
        assert counted.jobs == [] and counted.total == 1  # from the counters
    finally:
        await app.stop()


async def test_dependencies_must_name_stored_jobs_and_their_news_is_recorded(
    nats_srv: ServerProcess, mongo_server: ServerProcess, client: Bus, tmp_path: Path
) -> None:
    published = Published(client)
    await published.start()
    app = jobs_app(nats_srv, mongo_server, f"jobs{uuid.uuid4().hex[:8]}", tmp_path)
    await app.start()
    try:
        await client.request(submit("prep", user="bob"), SubmitJobReply)
        depends = (
            job_yaml("train")
            + "  dependencies: [{job: bob~prep}, {job: bob~ghost, on: completed}, {job: alice~nope}]\n"
        )
        request = SubmitJobRequest(username="alice", virtual_clusters=["default"], protocol_yaml=depends)
        with pytest.raises(InvalidProtocolError) as refused:
            await client.request(request, SubmitJobReply)
        assert json.loads(str(refused.value)) == [
            {"field": "extras.dependencies.1.job", "message": "names no job: bob~ghost"},
            {"field": "extras.dependencies.2.job", "message": "names no job: alice~nope"},
        ]
        with pytest.raises(NoJobError):
            await client.request(GetJobRequest(job_key="alice~train"), JobDetailReply)

        ok = job_yaml("train") + "  dependencies: [{job: bob~prep}]\n"
        request = SubmitJobRequest(username="alice", virtual_clusters=["default"], protocol_yaml=ok)
        await client.request(request, SubmitJobReply)
        submitted = [s for s in await published.wait_for(JobSubmitted, 2) if s.spec.job_key == "alice~train"]
        assert [(d.job_key, d.on) for d in submitted[0].spec.dependencies] == [("bob~prep", "succeeded")]
        detail = (await client.request(GetJobRequest(job_key="alice~train"), JobDetailReply)).detail
        assert detail["jobStatus"]["pendingReason"] == "waiting for its dependency: bob~prep to succeed"

        resolved = JobDependencyResolved(
            job_key="alice~train",
            dependency="bob~prep",
            on="succeeded",
            dependency_state="FAILED",
            satisfied=False,
        )
        await client.publish_event(resolved)
        await client.publish_event(resolved)  # delivered twice: recorded once, counted twice

        async def recorded() -> None:
            events = (await client.request(JobEventsRequest(job_key="alice~train"), JobEventsReply)).events
            # The first two share the submission's time.
            assert {e["reason"] for e in events[:2]} == {"Submitted", "WaitingForDependencies"}
            assert [(e["reason"], e["count"]) for e in events[2:]] == [("DependencyUnsatisfied", 2)]
            assert events[2]["type"] == "Warning" and "bob~prep ended FAILED" in events[2]["message"]

        await eventually(recorded)
    finally:
        await app.stop()


async def test_a_stop_outlasts_writes_that_conflict_with_it(
    nats_srv: ServerProcess, mongo_server: ServerProcess, client: Bus, tmp_path: Path
) -> None:
    """A job whose tasks change all the time (hundreds placed one by one) is written by the event handlers
    constantly; a STOP that conflicts with them for longer than one transaction's retries is run again,
    not answered with an error."""
    db = f"jobs{uuid.uuid4().hex[:8]}"
    app = jobs_app(nats_srv, mongo_server, db, tmp_path)
    await app.start()
    try:
        await client.request(submit("busy"), SubmitJobReply)
        held = asyncio.Event()

        async def busy_writer() -> None:
            async with app.mongo.start_session() as session:
                async with await session.start_transaction():
                    await app.db[JOBS].update_one(
                        {"_id": "alice~busy"}, {"$set": {"touched": True}}, session=session
                    )
                    held.set()
                    await asyncio.sleep(5.0)  # longer than app.transact's own retries (about 3.5 s)

        writer = asyncio.create_task(busy_writer())
        await held.wait()
        stop = JobExecutionTypeRequest(job_key="alice~busy", value="STOP", username="alice")
        reply = await client.request(stop, JobMutationReply, timeout=40)
        await writer
        assert reply.message == "Execute job alice~busy successfully."
        detail = (await client.request(GetJobRequest(job_key="alice~busy"), JobDetailReply)).detail
        assert detail["jobStatus"]["executionType"] == "STOP"
    finally:
        await app.stop()


async def test_concurrent_submissions_are_stored_together_once_each(
    nats_srv: ServerProcess, mongo_server: ServerProcess, client: Bus, tmp_path: Path
) -> None:
    published = Published(client)
    await published.start()
    app, service = await started_service(nats_srv, mongo_server, tmp_path)
    try:
        await client.request(submit("taken"), SubmitJobReply)
        names = [f"burst{i}" for i in range(12)]
        # In the burst: every new name, one of them twice with the same content (the same 202, stored
        # once), and the taken name with other content (409).
        burst = [submit(n) for n in [*names, "burst0"]] + [submit("taken", secrets=True)]
        results = await asyncio.gather(
            *(client.request(r, SubmitJobReply, timeout=30) for r in burst), return_exceptions=True
        )
        assert all(isinstance(r, SubmitJobReply) for r in results[:-1]), results
        assert results[-2] == results[0]
        assert isinstance(results[-1], ConflictJobError)
        jobs = app.db[JOBS]
        seqs = sorted([d["seq"] async for d in jobs.find({}, {"seq": 1})])
        # One seq per stored job, no gap, no repeat (the refused one took none).
        assert seqs == list(range(1, len(names) + 2))
        entries = [d async for d in app.db[LIST].find({}, {"update_seq": 1})]
        assert len(entries) == len(names) + 1
        assert len({e["update_seq"] for e in entries}) == len(entries)
        counts = {d["_id"]: d["n"] async for d in app.db[COUNTS].find({})}
        assert counts["user:alice"] == len(names) + 1
        listed = await client.request(
            ListJobsRequest(usernames=["alice"], limit=100, count_total=True), JobListReply
        )
        assert listed.total == len(names) + 1
        detail = (await client.request(GetJobRequest(job_key="alice~burst3"), JobDetailReply)).detail
        assert detail["jobStatus"]["state"] == "WAITING"
        events = (await client.request(JobEventsRequest(job_key="alice~burst5"), JobEventsReply)).events
        assert [e["reason"] for e in events] == ["Submitted"]
        submitted = await published.wait_for(JobSubmitted, count=len(names) + 1)
        await published.drain(1.0)
        keys = [b.spec.job_key for b, _ in published.seen if isinstance(b, JobSubmitted)]
        assert sorted(keys) == sorted(f"alice~{n}" for n in [*names, "taken"])
        assert len(submitted) == len(names) + 1
        # They were written together, not each in a transaction of its own.
        assert max(service.submissions.batches) > 1
    finally:
        await app.stop()


async def test_a_submission_whose_asker_gave_up_while_it_waited_for_its_turn_is_not_stored(
    nats_srv: ServerProcess, mongo_server: ServerProcess, client: Bus, tmp_path: Path
) -> None:
    """202 if and only if the job exists: a submission whose turn to be written came only after its asker
    stopped waiting (answered 503) is refused rather than committed behind the asker's back."""
    app, service = await started_service(nats_srv, mongo_server, tmp_path)
    try:
        await service._turns.acquire()  # a long write of this process (another batch, an event handler)
        asked = asyncio.create_task(client.request(submit("late"), SubmitJobReply, timeout=2.5))
        with pytest.raises(ServiceUnavailableError):
            await asked  # the asker stops waiting while the submission waits for its turn
        service._turns.release()
        writer = service.submissions._writer
        assert writer is not None and len(service.submissions._queue) == 1  # its writer waited for the turn
        await asyncio.wait_for(writer, 30)  # it runs now, and must refuse it
        assert await app.db[JOBS].count_documents({}) == 0
        with pytest.raises(NoJobError):
            await client.request(GetJobRequest(job_key="alice~late"), JobDetailReply)
        # The next submission is stored as usual.
        assert await client.request(submit("next"), SubmitJobReply, timeout=30)
    finally:
        await app.stop()


async def test_a_submission_whose_write_kept_conflicting_past_its_askers_patience_is_not_stored(
    nats_srv: ServerProcess, mongo_server: ServerProcess, client: Bus, tmp_path: Path
) -> None:
    """The same truth when the submission had its turn and was taken, but its transaction kept meeting a
    write conflict (another replica's transaction holding the job counter) until its asker had been
    answered 503: checked again just before the commit, it is refused, not committed."""
    app, service = await started_service(nats_srv, mongo_server, tmp_path)
    try:
        async with app.mongo.start_session() as other:
            await other.start_transaction()
            await app.db[COUNTERS].update_one(
                {"_id": SEQ_COUNTER}, {"$inc": {"value": 1}}, upsert=True, session=other
            )
            asked = asyncio.create_task(client.request(submit("stuck"), SubmitJobReply, timeout=2.5))
            with pytest.raises(ServiceUnavailableError):
                await asked
            writer = service.submissions._writer
            assert writer is not None and not service.submissions._queue  # taken: its write was under way
            await other.abort_transaction()
        await asyncio.wait_for(writer, 30)  # its next try gets through the counter, and must refuse it
        assert await app.db[JOBS].count_documents({}) == 0
        assert service.submissions.batches == [1]
        assert await client.request(submit("next"), SubmitJobReply, timeout=30)
    finally:
        await app.stop()
