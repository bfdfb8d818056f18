"""The in-memory job list of each jobs-service replica (list_sync) against a real MongoDB-wire server:
the same pages as the database plan in every order, what one replica writes is listed by another at once,
a restart loads it all again, and a replica far behind reloads in the background while the database plan
serves."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pai_common.contract.events import FrameworkChanged
from pai_common.contract.rpc import (
    JobCountsRequest,
    JobExecutionTypeRequest,
    JobListReply,
    JobTagRequest,
    ListJobsRequest,
    ResolveStoragesRequest,
    SubmitJobRequest,
)
from pai_common.contract.types import FrameworkSnapshot
from pai_common.embedded import ServerProcess, start_nats
from pai_common.envelope import Envelope
from pai_common.service import ServiceApp
from pai_common.settings import Settings
from pai_common.testing import no_storages
from pai_jobs.list_sync import COUNTERS, UPDATE_COUNTER
from pai_jobs.queries import ORDER_FIELDS
from pai_jobs.shell import LIST, JobsService


@pytest.fixture
def nats_srv(tmp_path: Path) -> Iterator[ServerProcess]:
    server = start_nats(tmp_path)
    yield server
    server.stop()


async def known_vcs() -> set[str]:
    return {"default", "gpu"}


def replica(
    nats: ServerProcess, mongo: ServerProcess, db: str, data: Path, index: bool = True
) -> JobsService:
    settings = Settings(nats_url=nats.url, mongo_url=mongo.url, data_dir=data, nak_base_delay_s=0.05)
    app = ServiceApp("jobs", settings)
    service = JobsService(app, list_index=index, virtual_clusters=known_vcs)
    app.rpc({ResolveStoragesRequest: no_storages})
    app.name = db  # a database of this test's own
    return service


def yaml(name: str, vc: str = "default", priority: str = "test", instances: int = 1) -> str:
    return f"""protocolVersion: 2
name: {name}
type: job
prerequisites:
  - {{type: dockerimage, name: img, uri: "python:3.11"}}
taskRoles:
  worker:
    instances: {instances}
    dockerImage: img
    resourcePerInstance: {{cpu: 1, memoryMB: 256, gpu: {instances % 2}}}
    commands: ["true"]
defaults: {{virtualCluster: {vc}}}
extras:
  hivedScheduler: {{jobPriorityClass: {priority}}}
"""


async def loaded(service: JobsService, loads: int = 1) -> None:
    assert service.lists is not None
    for _ in range(300):
        if service.lists.index is not None and service.lists.loads >= loads:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the list index never loaded")


def names(reply: JobListReply) -> list[str]:
    return [job["name"] for job in reply.jobs]


async def framework(service: JobsService, job_key: str, version: int, state: str, **fields: Any) -> None:
    snapshot = FrameworkSnapshot(job_key=job_key, version=version, state=state, attempt_id=0, **fields)
    env = Envelope(
        id=uuid.uuid4().hex,
        type="framework.changed",
        source="test",
        subject=job_key,
        time="",
        body=FrameworkChanged(snapshot=snapshot),
        headers={},
    )

    async def apply(tx: Any) -> None:
        await service.on_framework_changed(tx, env)

    await service.app.transact(apply)


REQUESTS = [
    ListJobsRequest(order_field=field, order=order, offset=offset, limit=limit)  # type: ignore[arg-type]
    for field, order, (offset, limit) in itertools.product(
        sorted(ORDER_FIELDS), ("ASC", "DESC"), [(0, 100), (3, 4)]
    )
] + [
    ListJobsRequest(usernames=["bob"], order_field="jobName"),
    ListJobsRequest(keyword="b", order_field="completionTime", order="DESC"),
    ListJobsRequest(states=["RUNNING", "FAILED"], order_field="retries"),
    ListJobsRequest(tags_not_contain=["keep"], job_priorities=["prod", "test"], order_field="vc"),
    ListJobsRequest(tags_contain=["keep"], offset=1, limit=2),
    ListJobsRequest(virtual_cluster="gpu", count_total=False, order_field="totalGpuNumber", order="DESC"),
]


async def test_replicas_list_what_any_replica_wrote_as_the_database_plan_does(
    nats_srv: ServerProcess, mongo_server: ServerProcess, tmp_path: Path
) -> None:
    db = f"jobs{uuid.uuid4().hex[:8]}"
    one = replica(nats_srv, mongo_server, db, tmp_path / "one")
    two = replica(nats_srv, mongo_server, db, tmp_path / "two")
    plain = replica(nats_srv, mongo_server, db, tmp_path / "plain", index=False)
    for service in (one, two, plain):
        await service.app.start()
    try:
        await loaded(one)
        await loaded(two)
        users = ["alice", "bob", "carol"]
        for i in range(12):
            writer = (one, two)[i % 2]
            await writer.submit(
                SubmitJobRequest(
                    username=users[i % 3],
                    virtual_clusters=["default", "gpu"],
                    protocol_yaml=yaml(
                        f"{'ab'[i % 2]}job{i:02}",
                        vc=("default", "gpu")[i % 2],
                        priority=("prod", "test", "oppo")[i % 3],
                        instances=1 + i % 3,
                    ),
                )
            )
            # Written by one replica, listed by the other at once.
            listed = await (two, one)[i % 2].list_jobs(ListJobsRequest(limit=1))
            assert names(listed) == [f"{'ab'[i % 2]}job{i:02}"] and listed.total == i + 1
        jobs = await plain.list_jobs(ListJobsRequest(limit=100))
        keys = [f"{j['username']}~{j['name']}" for j in jobs.jobs]
        for n, key in enumerate(keys[:8]):
            state = ("AttemptRunning", "Completed")[n % 2]
            await framework(
                one,
                key,
                2,
                state,
                retries=n % 3,
                exit_code=(0, 1)[n % 4 // 2],
                completed_at=None if n % 2 == 0 else 50 - n,
            )
        await two.tag(JobTagRequest(job_key=keys[1], tag="keep", username="admin", admin=True))
        await two.tag(JobTagRequest(job_key=keys[2], tag="keep", username="admin", admin=True))
        await one.execution_type(
            JobExecutionTypeRequest(job_key=keys[3], value="STOP", username="admin", admin=True)
        )
        for req in REQUESTS:
            expected = await plain.list_jobs(req)
            assert expected.jobs, req
            for service in (one, two):
                got = await service.list_jobs(req)
                assert (names(got), got.total) == (names(expected), expected.total), req
                assert got.jobs == expected.jobs
        assert one.lists is not None and one.lists.index is not None and len(one.lists.index) == 12
        # Jobs per state: the index and the database's grouping count what the list lists.
        for users, vc in (([], None), (["bob"], None), (["alice", "carol"], "gpu"), ([], "nowhere")):
            listed = await plain.list_jobs(ListJobsRequest(usernames=users, virtual_cluster=vc, limit=100))
            expected = dict(sorted(Counter(job["state"] for job in listed.jobs).items()))
            for service in (one, two, plain):
                counted = await service.counts(JobCountsRequest(usernames=users, virtual_cluster=vc))
                assert (counted.states, counted.total) == (expected, listed.total), (users, vc)
        everyone = await plain.counts(JobCountsRequest())
        assert len(everyone.states) >= 3 and everyone.total == 12, everyone
    finally:
        for service in (one, two, plain):
            await service.app.stop()

    # A restart reads it all again, changes made while it was down included.
    again = replica(nats_srv, mongo_server, db, tmp_path / "again")
    await again.app.start()
    try:
        await loaded(again)
        assert again.lists is not None and again.lists.index is not None and len(again.lists.index) == 12
        by_name = await again.list_jobs(ListJobsRequest(order_field="jobName", order="ASC", limit=3))
        assert names(by_name) == ["ajob00", "ajob02", "ajob04"] and by_name.total == 12
    finally:
        await again.app.stop()


async def test_a_replica_far_behind_reloads_while_the_database_serves(
    nats_srv: ServerProcess, mongo_server: ServerProcess, tmp_path: Path
) -> None:
    db = f"jobs{uuid.uuid4().hex[:8]}"
    service = replica(nats_srv, mongo_server, db, tmp_path)
    await service.app.start()
    try:
        await loaded(service)
        assert service.lists is not None
        service.lists.reload_above = 3
        for i in range(2):
            await service.submit(
                SubmitJobRequest(username="alice", virtual_clusters=["default"], protocol_yaml=yaml(f"j{i}"))
            )
        # Two changes behind: read as changes.
        assert names(await service.list_jobs(ListJobsRequest(order_field="jobName", order="ASC"))) == [
            "j0",
            "j1",
        ]
        assert service.lists.loads == 1
        # Written past this replica (as a bulk load or another version would): far behind, so reload.
        entry = await service.app.db[LIST].find_one({"_id": "alice~j0"})
        assert entry is not None and entry["update_seq"] == 1
        top = await service.app.db[COUNTERS].find_one({"_id": UPDATE_COUNTER})
        assert top is not None and top["value"] == 2
        copies = [
            {
                **entry,
                "_id": f"alice~k{i}",
                "name": f"k{i}",
                "seq": 3 + i,
                "update_seq": 3 + i,
                "summary": entry["summary"].replace('"name":"j0"', f'"name":"k{i}"'),
            }
            for i in range(5)
        ]
        await service.app.db[LIST].insert_many(copies)
        await service.app.db[COUNTERS].update_one({"_id": UPDATE_COUNTER}, {"$set": {"value": 7}})
        assert await service.lists.current() is None  # too far behind: the database plan serves
        await loaded(service, loads=2)
        listed = await service.list_jobs(ListJobsRequest(order_field="jobName", order="DESC", limit=2))
        assert names(listed) == ["k4", "k3"] and listed.total == 7
        assert service.lists.index is not None and service.lists.index.watermark == 7
    finally:
        await service.app.stop()


async def test_a_batch_of_framework_changes_shares_one_update_number_and_writes_once(
    nats_srv: ServerProcess, mongo_server: ServerProcess, tmp_path: Path
) -> None:
    """Framework changes applied in one transaction (a consumer's batch): one update number for all their
    entries, the last change of a job wins, and the counts add up, read by the other replica at once."""
    db = f"jobs_{uuid.uuid4().hex[:8]}"
    one = replica(nats_srv, mongo_server, db, tmp_path / "one")
    other = replica(nats_srv, mongo_server, db, tmp_path / "other")
    for service in (one, other):
        await service.app.start()
    try:
        for i in range(2):
            await one.submit(
                SubmitJobRequest(username="alice", virtual_clusters=["default"], protocol_yaml=yaml(f"b{i}"))
            )
        await loaded(other)
        top = await one.app.db[COUNTERS].find_one({"_id": UPDATE_COUNTER})
        assert top is not None and top["value"] == 2

        def change(job_key: str, version: int, state: str, **fields: Any) -> Envelope:
            snap = FrameworkSnapshot(job_key=job_key, version=version, state=state, attempt_id=0, **fields)
            body = FrameworkChanged(snapshot=snap)
            return Envelope(uuid.uuid4().hex, "framework.changed", "t", job_key, "", body, {})

        batch = [
            change("alice~b0", 1, "AttemptRunning"),
            change("alice~b1", 1, "AttemptRunning"),
            change("alice~b0", 2, "Completed", exit_code=0),
        ]

        async def apply(tx: Any) -> None:
            for env in batch:
                await one.on_framework_changed(tx, env)

        await one.app.transact(apply)
        entries = {e["_id"]: e async for e in one.app.db[LIST].find({})}
        assert {e["update_seq"] for e in entries.values()} == {3}
        assert [e["state"] for _, e in sorted(entries.items())] == ["SUCCEEDED", "RUNNING"]
        counts = await other.counts(JobCountsRequest(usernames=["alice"]))
        assert counts.states == {"RUNNING": 1, "SUCCEEDED": 1} and counts.total == 2
        listed = await other.list_jobs(ListJobsRequest(order_field="jobName", order="ASC"))
        assert [j["state"] for j in listed.jobs] == ["SUCCEEDED", "RUNNING"]
    finally:
        for service in (one, other):
            await service.app.stop()
