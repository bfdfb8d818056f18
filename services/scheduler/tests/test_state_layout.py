"""The allocator's stored state: a header plus one document per gang and per waiting attempt, written only
where they changed, so what a transaction writes does not grow with the jobs waiting (issue 17)."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bson
import pytest
from pymongo import AsyncMongoClient, monitoring

from pai_common import service
from pai_common.bus import EVENTS_STREAM, Bus
from pai_common.contract.events import JobAttemptCompleted, SchedulingAllocated, SchedulingPending
from pai_common.contract.rpc import JobPendingRequest
from pai_common.database import connect_mongo
from pai_common.embedded import ServerProcess
from pai_common.service import ServiceApp
from pai_common.testing import EventRecorder
from pai_scheduler import state_layout
from pai_scheduler.cluster_source import load_cluster
from pai_scheduler.hived.allocator import GroupState, HivedAllocator
from pai_scheduler.hived.mix import MIX_WINDOW
from pai_scheduler.job_gangs import requests_of
from pai_scheduler.node_marks import NodeMarks
from pai_scheduler.shell import Scheduler, SchedulerSettings

from .test_service import cluster_file, gang

__all__ = ["cluster_file"]

WRITES = {"insert": "documents", "update": "updates", "delete": "deletes", "findAndModify": None}


class WriteLog(monitoring.CommandListener):
    """Every write command the scheduler's client sends to one database, by transaction."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.writes: list[tuple[Any, str, str, int, int]] = []  # (txn, command, collection, docs, bytes)

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "bulkWrite":
            self._bulk_write(event.command)
            return
        if event.database_name != self.database or event.command_name not in WRITES:
            return
        cmd = event.command
        field = WRITES[event.command_name]
        docs = len(cmd[field]) if field else 1
        txn = (bytes(cmd["lsid"]["id"]), cmd.get("txnNumber")) if "lsid" in cmd else None
        self.writes.append(
            (txn, event.command_name, str(cmd[event.command_name]), docs, len(bson.encode(cmd)))
        )

    def _bulk_write(self, cmd: Any) -> None:
        """MongoDB 8's one-request writes (a transaction's final writes and bookkeeping): each op in this
        database as a write of one document."""
        names = [entry["ns"] for entry in cmd["nsInfo"]]
        txn = (bytes(cmd["lsid"]["id"]), cmd.get("txnNumber")) if "lsid" in cmd else None
        for op in cmd["ops"]:
            kind = next(k for k in ("insert", "update", "delete") if k in op)
            db, _, collection = names[op[kind]].partition(".")
            if db == self.database:
                self.writes.append((txn, kind, collection, 1, len(bson.encode(op))))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def allocator_transactions(self) -> list[tuple[int, int]]:
        """(documents, bytes) written by each transaction that saved the allocator, in order."""
        saving = list(dict.fromkeys(w[0] for w in self.writes if w[1] == "update" and w[2] == "allocator"))
        return [
            (sum(w[3] for w in self.writes if w[0] == t), sum(w[4] for w in self.writes if w[0] == t))
            for t in saving
        ]


@pytest.fixture
def write_log(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, WriteLog]]:
    """The write log of each database a scheduler started in this test opens (by its service name)."""
    logs: dict[str, WriteLog] = {}

    def connect(url: str) -> AsyncMongoClient[dict[str, Any]]:
        listener = WriteLog("")
        logs[str(len(logs))] = listener
        return AsyncMongoClient(url, tz_aware=True, uuidRepresentation="standard", event_listeners=[listener])

    monkeypatch.setattr(service, "connect_mongo", connect)
    yield logs


def start_scheduler(
    nats: ServerProcess, mongo: ServerProcess, cluster: Path, db: str, data: Path
) -> tuple[ServiceApp, Scheduler]:
    settings = SchedulerSettings(
        nats_url=nats.url,
        mongo_url=mongo.url,
        scheduler_cluster=cluster,
        data_dir=data,
        nak_base_delay_s=0.05,
    )
    app = ServiceApp("scheduler", settings)
    scheduler = Scheduler(app, settings)
    app.name = db
    return app, scheduler


def waiting_allocator(cluster: Path, n: int, user: str) -> HivedAllocator:
    """An allocator with ``n`` whole-node gangs of VC research submitted: one or two run, the rest wait."""
    alloc = HivedAllocator(load_cluster(cluster))
    for i in range(n):
        for request in requests_of(gang(f"{user}~w{i:04d}", 4, sku_types=["A100"])):
            alloc.submit_all(request, now=time.time())
    return alloc


@pytest.mark.parametrize("n", [10, 200])
def test_split_and_join_round_trip_and_a_submit_changes_one_gang(cluster_file: Path, n: int) -> None:
    alloc = waiting_allocator(cluster_file, n, "u")
    header, docs = state_layout.split(alloc.snapshot())
    assert len(docs.groups) == n and "groups" not in header and "mix" not in header
    assert state_layout.join(header, docs) == alloc.snapshot()
    restored = HivedAllocator.restore(alloc.config, state_layout.join(header, docs))
    assert restored.snapshot() == alloc.snapshot()

    for request in requests_of(gang("u~new", 4, sku_types=["A100"])):
        alloc.submit_all(request, now=time.time())
    _, after = state_layout.split(alloc.snapshot())
    groups, mix, _ = state_layout.writes(docs, after)
    assert list(groups.upsert) == ["u~new#0"] and groups.delete == []
    assert len(mix.upsert) == 1 and mix.delete == []  # the mix's last chunk


def test_the_mix_window_slides_chunk_by_chunk(cluster_file: Path) -> None:
    """Past its 2,000 entries the mix drops its oldest as it adds one: a save writes the last chunk (and
    deletes a chunk the window left), never the window; what is stored reads back as the window."""
    alloc = HivedAllocator(load_cluster(cluster_file))

    def submit_and_release(key: str) -> None:
        for request in requests_of(gang(key, 1, sku_types=["A100"])):
            alloc.submit_all(request, now=time.time())
        alloc.release(f"{key}#0")

    for i in range(MIX_WINDOW + 3):
        submit_and_release(f"u~w{i}")
    header, stored = state_layout.split(alloc.snapshot())
    assert len(alloc.snapshot()["mix"]) == MIX_WINDOW
    for i in range(3 * state_layout.MIX_CHUNK):
        submit_and_release(f"u~more{i}")
        header, now = state_layout.split(alloc.snapshot())
        _, mix, stored = state_layout.writes(stored, now)
        assert len(mix.upsert) == 1 and len(mix.delete) <= 1
        assert state_layout.join(header, stored) == alloc.snapshot()


async def seed_old_layout(mongo: ServerProcess, db: str, cluster: Path, alloc: HivedAllocator) -> None:
    """The state as the single-document layout stored it: the whole snapshot, and every reason in one."""
    client = connect_mongo(mongo.url)
    try:
        marks = NodeMarks()
        waiting = Scheduler._waiting_now(alloc, marks, [])
        await client[f"pai_{db}"]["allocator"].insert_many(
            [
                {
                    "_id": "cluster",
                    "snapshot": alloc.snapshot(),
                    "marks": marks.to_doc(),
                    "version": 1,
                    "config": hashlib.sha256(cluster.read_bytes()).hexdigest(),
                },
                {"_id": "reasons", "reasons": list(waiting.items())},
            ]
        )
    finally:
        await client.close()


async def test_old_layout_is_converted_and_writes_per_event_do_not_grow_with_the_queue(
    fresh_nats: ServerProcess,
    mongo_server: ServerProcess,
    fresh_bus: Bus,
    cluster_file: Path,
    tmp_path: Path,
    write_log: dict[str, WriteLog],
) -> None:
    """With 10 or 266 gangs waiting, a request that joins the queue and a placement that moves every
    waiting attempt one place each write the same documents and about the same bytes; the old layout's
    state is read once and converted; a restarted scheduler restores exactly what was committed."""
    events = EventRecorder(fresh_bus, "pai.evt.scheduling.>")
    await events.start()
    per_event: dict[int, list[tuple[int, int]]] = {}
    # Counts at the same place in a chunk of the request mix: the last chunk, rewritten on a submission,
    # holds as many entries in both (up to MIX_CHUNK bytes-worth of difference otherwise, whatever n).
    small_n, large_n = 10, 10 + 8 * state_layout.MIX_CHUNK
    for n, user in ((small_n, "a"), (large_n, "b")):
        await fresh_bus.js.purge_stream(EVENTS_STREAM)  # each scheduler sees its own round only
        db = f"sched{uuid.uuid4().hex[:8]}"
        alloc = waiting_allocator(cluster_file, n, user)
        seeded = alloc.snapshot()
        running = [k for k, s in alloc.groups().items() if s is not GroupState.PENDING]
        await seed_old_layout(mongo_server, db, cluster_file, alloc)
        app, scheduler = start_scheduler(fresh_nats, mongo_server, cluster_file, db, tmp_path)
        await app.start()
        try:
            log = write_log[str(len(write_log) - 1)]
            log.database = f"pai_{db}"
            # Converted at start: one header without the snapshot, one document per gang and waiting attempt.
            header = await app.db["allocator"].find_one({"_id": "cluster"})
            assert header is not None and "snapshot" not in header and header["version"] == 2
            assert await app.db["allocator"].find_one({"_id": "reasons"}) is None
            assert await app.db["allocator_groups"].count_documents({}) == n
            assert await app.db["allocator_waiting"].count_documents({}) == n - len(running)
            assert (await scheduler._load(None))[0].snapshot() == seeded

            log.writes.clear()
            await fresh_bus.publish_event(gang(f"{user}~late", 4, sku_types=["A100"]))
            await events.wait_for(SchedulingPending, f"{user}~late")
            # The first running gang ends: the next waiting one is placed, every other moves up one place.
            await fresh_bus.publish_event(
                JobAttemptCompleted(job_key=running[0][:-2], attempt_id=0, exit_code=0)
            )
            await events.wait_for(SchedulingAllocated, f"{user}~w000{len(running)}")
            per_event[n] = log.allocator_transactions()
            reply = await scheduler.job_pending(JobPendingRequest(job_key=f"{user}~w{n - 1:04d}"))
            committed = scheduler._cached
            assert committed is not None and reply.position is not None
        finally:
            await app.stop()

        # A restart (or a standby taking over) restores exactly the committed state, and answers the same.
        app, again = start_scheduler(fresh_nats, mongo_server, cluster_file, db, tmp_path)
        await app.start()
        try:
            assert (await again._load(None))[0].snapshot() == committed.alloc.snapshot()
            assert await again.job_pending(JobPendingRequest(job_key=f"{user}~w{n - 1:04d}")) == reply
        finally:
            await app.stop()

    small, large = per_event[small_n], per_event[large_n]
    assert len(small) == len(large) == 2  # one transaction per event
    for (docs_small, bytes_small), (docs_large, bytes_large) in zip(small, large, strict=True):
        assert docs_small == docs_large
        assert abs(bytes_small - bytes_large) <= 64, (small, large)
    # The old layout rewrote the whole snapshot each time: far more than a transaction writes now.
    assert max(b for _, b in large) * 20 < len(bson.encode({"s": seeded}))
