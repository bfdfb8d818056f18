"""A transient failure inside an RPC handler is a 503 with Retry-After that changed nothing, never a 500.

Seen after an unclean stop: the first submissions of the next start met write conflicts with the
consumers replaying their backlog (or the database still coming back) for longer than the handler's
retries lasted, and the RPC wrapper answered them as ``UnknownError`` (HTTP 500).
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from pymongo import AsyncMongoClient

from pai_common.bus import Bus, give_up_if_abandoned
from pai_common.consumer import HandlerContext
from pai_common.contract.rpc import GetJobRequest, JobDetailReply
from pai_common.database import connect_mongo
from pai_common.embedded import ServerProcess
from pai_common.errors import SERVICE_UNAVAILABLE_RETRY_AFTER_S, ServiceUnavailableError
from pai_common.service import ServiceApp
from pai_common.settings import Settings


def make_app(nats: ServerProcess, mongo: ServerProcess) -> ServiceApp:
    return ServiceApp(f"t{uuid.uuid4().hex[:10]}", Settings(nats_url=nats.url, mongo_url=mongo.url))


async def test_a_write_conflict_that_outlasts_the_retries_is_503_and_then_succeeds(
    fresh_nats: ServerProcess, mongo_server: ServerProcess
) -> None:
    app = make_app(fresh_nats, mongo_server)

    async def bump(req: GetJobRequest) -> JobDetailReply:
        async def work(tx: HandlerContext) -> None:
            await tx.db.counters.update_one(
                {"_id": "seq"}, {"$inc": {"n": 1}}, upsert=True, session=tx.session
            )

        await app.transact(work)
        return JobDetailReply(detail={"done": req.job_key})

    app.rpc({GetJobRequest: bump})
    await app.start()
    client = await Bus.connect(fresh_nats.url, "client")
    other: AsyncMongoClient[dict[str, object]] = connect_mongo(mongo_server.url)
    try:
        db = other[f"pai_{app.name}"]
        await db.counters.insert_one({"_id": "seq", "n": 0})
        # Another writer holds the counter in an open transaction for longer than the handler retries.
        async with other.start_session() as session:
            await session.start_transaction()
            await db.counters.update_one({"_id": "seq"}, {"$inc": {"n": 100}}, session=session)
            with pytest.raises(ServiceUnavailableError, match="busy") as caught:
                await client.request(GetJobRequest(job_key="a~b"), JobDetailReply, timeout=30)
            assert caught.value.retry_after_s == SERVICE_UNAVAILABLE_RETRY_AFTER_S
            await session.abort_transaction()
        # Nothing of the refused request was written; once the conflict is gone the same request works.
        assert (await db.counters.find_one({"_id": "seq"}) or {}).get("n") == 0
        reply = await client.request(GetJobRequest(job_key="a~b"), JobDetailReply, timeout=30)
        assert reply.detail == {"done": "a~b"}
        assert (await db.counters.find_one({"_id": "seq"}) or {}).get("n") == 1
    finally:
        await other.close()
        await client.close()
        await app.stop()


async def test_a_handler_does_not_commit_what_its_asker_stopped_waiting_for(
    fresh_nats: ServerProcess, mongo_server: ServerProcess
) -> None:
    app = make_app(fresh_nats, mongo_server)
    release = asyncio.Event()
    finished: list[str] = []

    async def slow_write(req: GetJobRequest) -> JobDetailReply:
        await release.wait()  # queued behind other work until the asker gave up
        try:
            async with app.transaction() as tx:
                await tx.db.jobs.insert_one({"_id": req.job_key}, session=tx.session)
                give_up_if_abandoned(0.5)
        finally:
            finished.append(req.job_key)
        return JobDetailReply(detail={"stored": req.job_key})

    app.rpc({GetJobRequest: slow_write})
    await app.start()
    client = await Bus.connect(fresh_nats.url, "client")
    try:
        with pytest.raises(ServiceUnavailableError, match="did not answer"):
            await client.request(GetJobRequest(job_key="late~job"), JobDetailReply, timeout=1)
        release.set()
        while not finished:
            await asyncio.sleep(0.05)
        # The asker was told 503: the job must not exist.
        assert await app.db.jobs.find_one({"_id": "late~job"}) is None
        # An asker that still waits gets the write.
        reply = await client.request(GetJobRequest(job_key="on~time"), JobDetailReply, timeout=30)
        assert reply.detail == {"stored": "on~time"}
        assert await app.db.jobs.find_one({"_id": "on~time"}) is not None
    finally:
        await client.close()
        await app.stop()


async def test_a_closed_bus_is_unavailable_not_an_internal_error(fresh_nats: ServerProcess) -> None:
    client = await Bus.connect(fresh_nats.url, "client")
    await client.nc.close()
    with pytest.raises(ServiceUnavailableError, match="bus is unavailable"):
        await client.request(GetJobRequest(job_key="a~b"), JobDetailReply, timeout=1)
