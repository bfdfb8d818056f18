"""The bus against a real NATS server with JetStream and a real MongoDB-wire server."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from pai_common import bus as bus_module
from pai_common.bus import DEAD_LETTER_STREAM, EVENTS_STREAM, Bus
from pai_common.consumer import HandlerContext
from pai_common.contract.events import JobAttemptCompleted, SchedulingReleased
from pai_common.contract.rpc import GetJobRequest, JobDetailReply
from pai_common.embedded import ServerProcess
from pai_common.envelope import H_MSG_ID, Envelope, encode
from pai_common.errors import InvalidParametersError, NoJobError, ServiceUnavailableError
from pai_common.outbox import PendingMessages
from pai_common.service import ServiceApp
from pai_common.settings import Settings


def make_app(nats: ServerProcess, mongo: ServerProcess, **overrides: Any) -> ServiceApp:
    name = f"t{uuid.uuid4().hex[:10]}"
    settings = Settings(nats_url=nats.url, mongo_url=mongo.url, nak_base_delay_s=0.05, **overrides)
    return ServiceApp(name, settings)


async def wait_until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


async def test_event_handled_once_and_state_committed(
    fresh_nats: ServerProcess, mongo_server: ServerProcess
) -> None:
    app = make_app(fresh_nats, mongo_server)

    @app.on_event(JobAttemptCompleted)
    async def handle(ctx: HandlerContext, env: Envelope) -> None:
        assert isinstance(env.body, JobAttemptCompleted)
        await ctx.db.seen.update_one(
            {"_id": env.body.job_key}, {"$inc": {"n": 1}}, upsert=True, session=ctx.session
        )
        ctx.out.event(SchedulingReleased(job_key=env.body.job_key, attempt_id=env.body.attempt_id))

    await app.start()
    try:
        event = JobAttemptCompleted(job_key="alice~job1", attempt_id=0, exit_code=0)
        await app.bus.publish_event(event, msg_id="e-1")
        # The same id again is dropped by JetStream's duplicate window.
        await app.bus.publish_event(event, msg_id="e-1")
        # The same CloudEvents id under another NATS id reaches the consumer and must be a no-op.
        _, headers, payload = encode(event, "test", "e-1")
        headers[H_MSG_ID] = "other-nats-id"
        await app.bus.publish_raw("pai.evt.job.attempt.completed", headers, payload)

        async def handled() -> bool:
            doc = await app.db.seen.find_one({"_id": "alice~job1"})
            return doc is not None

        await wait_until(handled)
        await asyncio.sleep(0.5)
        doc = await app.db.seen.find_one({"_id": "alice~job1"})
        assert doc is not None and doc["n"] == 1
        info = await app.bus.js.stream_info(EVENTS_STREAM)
        # Two attempts at publishing the event (one deduplicated), one raw copy, one released event.
        assert info.state.messages == 3

        async def outbox_emptied() -> bool:
            # Published messages are deleted from the outbox in the background, shortly after.
            return await app.db.outbox.count_documents({}) == 0

        await wait_until(outbox_emptied)
    finally:
        await app.stop()


async def test_failing_handler_dead_letters(fresh_nats: ServerProcess, mongo_server: ServerProcess) -> None:
    app = make_app(fresh_nats, mongo_server, max_deliver=3)
    attempts: list[int] = []

    @app.on_event(JobAttemptCompleted)
    async def handle(ctx: HandlerContext, env: Envelope) -> None:
        attempts.append(1)
        raise RuntimeError("boom")

    await app.start()
    try:
        await app.bus.publish_event(JobAttemptCompleted(job_key="bob~j", attempt_id=1, exit_code=1))

        async def dead_lettered() -> bool:
            info = await app.bus.js.stream_info(DEAD_LETTER_STREAM)
            return info.state.messages >= 1

        await wait_until(dead_lettered)
        sub = await app.bus.js.pull_subscribe(f"pai.dlq.{app.name}.>", stream=DEAD_LETTER_STREAM)
        msgs = await sub.fetch(1, timeout=2)
        assert msgs[0].headers is not None
        assert "boom" in msgs[0].headers["pai-error"]
        assert msgs[0].headers["ce-type"] == "job.attempt.completed"
        assert len(attempts) == 3
        # Nothing written for a failed handler: the transaction was rolled back every time.
        assert await app.db.processed.count_documents({}) == 0
    finally:
        await app.stop()


async def test_malformed_message_dead_lettered(
    fresh_nats: ServerProcess, mongo_server: ServerProcess
) -> None:
    app = make_app(fresh_nats, mongo_server)
    calls: list[str] = []

    @app.on_event(JobAttemptCompleted)
    async def handle(ctx: HandlerContext, env: Envelope) -> None:
        calls.append(env.id)

    await app.start()
    try:
        _, headers, _ = encode(JobAttemptCompleted(job_key="x~y", attempt_id=0, exit_code=0), "test")
        await app.bus.publish_raw("pai.evt.job.attempt.completed", headers, b'{"job_key": 5}')

        async def dead_lettered() -> bool:
            return (await app.bus.js.stream_info(DEAD_LETTER_STREAM)).state.messages == 1

        await wait_until(dead_lettered)
        assert calls == []
    finally:
        await app.stop()


async def test_outbox_left_by_a_crash_is_sent_at_start(
    fresh_nats: ServerProcess, mongo_server: ServerProcess
) -> None:
    app = make_app(fresh_nats, mongo_server)
    pending = PendingMessages(app.name)
    pending.event(SchedulingReleased(job_key="c~d", attempt_id=2), msg_id="left-behind")
    # A previous run committed this but died before publishing it.
    from pai_common.database import connect_mongo, service_database

    client = connect_mongo(mongo_server.url)
    await service_database(client, app.name).outbox.insert_many(pending.docs)
    await client.close()
    await app.start()
    try:
        info = await app.bus.js.stream_info(EVENTS_STREAM)
        assert info.state.messages == 1
        assert await app.db.outbox.count_documents({}) == 0
    finally:
        await app.stop()


async def test_rpc_roundtrip_and_errors(fresh_nats: ServerProcess, mongo_server: ServerProcess) -> None:
    app = make_app(fresh_nats, mongo_server)

    async def get_job(req: GetJobRequest) -> JobDetailReply:
        if req.job_key == "missing~job":
            raise NoJobError(f"Job {req.job_key} is not found.")
        return JobDetailReply(detail={"name": req.job_key})

    app.rpc({GetJobRequest: get_job})
    await app.start()
    client = await Bus.connect(fresh_nats.url, "client")
    try:
        reply = await client.request(GetJobRequest(job_key="a~b"), JobDetailReply)
        assert reply.detail == {"name": "a~b"}
        with pytest.raises(NoJobError, match="missing~job is not found"):
            await client.request(GetJobRequest(job_key="missing~job"), JobDetailReply)
        # A body the endpoint's model refuses comes back as InvalidParametersError naming the field.
        msg = await client.nc.request("pai.rpc.jobs.get", b'{"job_key": 3}', timeout=2)
        assert msg.headers is not None and msg.headers["Nats-Service-Error-Code"] == "400"
        assert b"job_key" in msg.data
        with pytest.raises(InvalidParametersError):
            raise_from = await client.nc.request("pai.rpc.jobs.get", b"not json", timeout=2)
            assert raise_from.headers is not None
            raise InvalidParametersError(raise_from.headers["Nats-Service-Error"])
    finally:
        await client.close()
        await app.stop()
    client2 = await Bus.connect(fresh_nats.url, "client2")
    try:
        with pytest.raises(ServiceUnavailableError, match="jobs is not running"):
            await client2.request(GetJobRequest(job_key="a~b"), JobDetailReply, timeout=1)
    finally:
        await client2.close()


async def test_a_request_waits_briefly_for_a_responder_that_is_starting(
    fresh_nats: ServerProcess, mongo_server: ServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Long enough for a slow start on a loaded machine; the test never waits for it to run out.
    monkeypatch.setattr(bus_module, "NO_RESPONDERS_WAIT_S", 30.0)
    app = make_app(fresh_nats, mongo_server)

    async def get_job(req: GetJobRequest) -> JobDetailReply:
        return JobDetailReply(detail={"name": req.job_key})

    app.rpc({GetJobRequest: get_job})
    client = await Bus.connect(fresh_nats.url, "client")
    try:
        # Sent while nothing answers yet (a service restarting): answered once the responder appears.
        pending = asyncio.create_task(
            client.request(GetJobRequest(job_key="a~b"), JobDetailReply, timeout=30)
        )
        await asyncio.sleep(0.1)
        assert not pending.done()
        await app.start()
        assert (await pending).detail == {"name": "a~b"}
    finally:
        await client.close()
        await app.stop()


async def test_streams_created_idempotently(fresh_nats: ServerProcess) -> None:
    bus = await Bus.connect(fresh_nats.url, "a")
    try:
        await bus.ensure_streams()
        await bus.ensure_streams()
        names = {s.config.name for s in await bus.js.streams_info()}
        assert {"PAI_EVENTS", "PAI_COMMANDS", "PAI_DEAD_LETTERS"} <= names
    finally:
        await bus.close()


async def test_trace_context_travels_with_the_event(
    fresh_nats: ServerProcess, mongo_server: ServerProcess
) -> None:
    from opentelemetry import trace

    from pai_common.telemetry import setup_tracing, tracer

    setup_tracing("test")
    app = make_app(fresh_nats, mongo_server)
    seen: list[int] = []

    @app.on_event(JobAttemptCompleted)
    async def handle(ctx: HandlerContext, env: Envelope) -> None:
        seen.append(trace.get_current_span().get_span_context().trace_id)

    await app.start()
    try:
        with tracer().start_as_current_span("submit") as span:
            sent_trace = span.get_span_context().trace_id
            await app.bus.publish_event(JobAttemptCompleted(job_key="t~r", attempt_id=0, exit_code=0))

        async def handled() -> bool:
            return bool(seen)

        await wait_until(handled)
        assert sent_trace != 0
        assert seen == [sent_trace]
    finally:
        await app.stop()


async def test_rpc_services_are_discoverable(fresh_nats: ServerProcess, mongo_server: ServerProcess) -> None:
    import json

    app = make_app(fresh_nats, mongo_server)

    async def get_job(req: GetJobRequest) -> JobDetailReply:
        return JobDetailReply(detail={})

    app.rpc({GetJobRequest: get_job})
    await app.start()
    try:
        # The NATS micro services API answers PING and INFO for every registered service.
        ping = await app.bus.nc.request(f"$SRV.PING.pai-{app.name}", b"", timeout=2)
        assert json.loads(ping.data)["name"] == f"pai-{app.name}"
        info = json.loads((await app.bus.nc.request(f"$SRV.INFO.pai-{app.name}", b"", timeout=2)).data)
        assert [e["subject"] for e in info["endpoints"]] == ["pai.rpc.jobs.get"]
    finally:
        await app.stop()


async def test_transient_failures_retry_past_max_deliver(
    fresh_nats: ServerProcess, mongo_server: ServerProcess
) -> None:
    from pymongo.errors import OperationFailure

    app = make_app(fresh_nats, mongo_server, max_deliver=2)
    attempts: list[int] = []

    @app.on_event(JobAttemptCompleted)
    async def handle(ctx: HandlerContext, env: Envelope) -> None:
        attempts.append(1)
        if len(attempts) <= 4:
            # What MongoDB answers while another (perhaps dead) transaction holds the document.
            raise OperationFailure("WriteConflict", code=112)
        await ctx.db.done.insert_one({"_id": env.id}, session=ctx.session)

    await app.start()
    try:
        await app.bus.publish_event(
            JobAttemptCompleted(job_key="w~c", attempt_id=0, exit_code=0), msg_id="wc"
        )

        async def done() -> bool:
            return await app.db.done.count_documents({}) == 1

        await wait_until(done, timeout=20)
        assert len(attempts) == 5
        assert (await app.bus.js.stream_info(DEAD_LETTER_STREAM)).state.messages == 0
    finally:
        await app.stop()
