"""Dead letters against a real NATS server and MongoDB-wire server: listed with their error, inspected,
replayed through the consumer that gave up on them (once), refused while they still fail."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from pai_common import dead_letters
from pai_common.bus import Bus
from pai_common.consumer import HandlerContext
from pai_common.contract.events import JobAttemptCompleted
from pai_common.contract.rpc import ReplayDeadLetterReply, ReplayDeadLetterRequest
from pai_common.embedded import ServerProcess
from pai_common.envelope import Envelope, encode
from pai_common.errors import DeadLetterReplayError, NoDeadLetterError
from pai_common.service import ServiceApp
from pai_common.settings import Settings


class MultiLineError(Exception):
    """Like pydantic's ValidationError, whose repr spans several lines."""

    def __repr__(self) -> str:
        return "MultiLineError: the disk is full\r\n  on /data"


def make_app(nats: ServerProcess, mongo: ServerProcess) -> ServiceApp:
    settings = Settings(nats_url=nats.url, mongo_url=mongo.url, nak_base_delay_s=0.05, max_deliver=2)
    return ServiceApp(f"t{uuid.uuid4().hex[:10]}", settings)


async def letters_of(bus: Bus, service: str, count: int) -> list[dead_letters.DeadLetter]:
    """Wait until ``service`` has ``count`` dead letters (a guard only against a hang)."""
    for _ in range(400):
        found, _ = await dead_letters.page(bus, service=service)
        if len(found) >= count:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"{service} has not dead-lettered {count} messages")


async def replay(bus: Bus, durable: str, seq: int) -> ReplayDeadLetterReply:
    req = ReplayDeadLetterRequest(seq=seq, actor="admin")
    return await bus.request(req, ReplayDeadLetterReply, target=durable, timeout=30)


async def test_a_dead_letter_is_listed_shown_refused_while_failing_then_replayed_once(
    fresh_nats: ServerProcess, mongo_server: ServerProcess
) -> None:
    app = make_app(fresh_nats, mongo_server)
    broken = True

    @app.on_event(JobAttemptCompleted)
    async def handle(ctx: HandlerContext, env: Envelope) -> None:
        assert isinstance(env.body, JobAttemptCompleted)
        if broken:
            raise MultiLineError()
        await ctx.db.done.insert_one({"_id": env.body.job_key}, session=ctx.session)

    await app.start()
    admin = await Bus.connect(fresh_nats.url, "admin")
    try:
        await app.bus.publish_event(JobAttemptCompleted(job_key="bob~j", attempt_id=1, exit_code=1))
        [letter] = await letters_of(admin, app.name, 1)
        summary = letter.summary()
        assert summary["service"] == app.name and summary["consumer"] == app.name
        assert summary["type"] == "job.attempt.completed" and summary["subject"] == "bob~j"
        # The error that sent it there, on one line (a header cannot hold a line break).
        assert summary["error"] == "MultiLineError: the disk is full on /data"
        detail = (await dead_letters.fetch(admin, letter.seq)).detail()
        assert detail["body"] == {"job_key": "bob~j", "attempt_id": 1, "exit_code": 1}
        assert "pai-error" not in detail["headers"] and detail["headers"]["ce-id"] == summary["id"]

        # Still failing: refused with the new error, and the letter stays.
        with pytest.raises(DeadLetterReplayError, match="disk is full"):
            await replay(admin, app.name, letter.seq)
        assert (await dead_letters.fetch(admin, letter.seq)).seq == letter.seq
        assert await app.db.done.count_documents({}) == 0

        broken = False
        reply = await replay(admin, app.name, letter.seq)
        assert (reply.outcome, reply.message_type, reply.message_id) == (
            "replayed",
            "job.attempt.completed",
            summary["id"],
        )
        assert await app.db.done.count_documents({"_id": "bob~j"}) == 1
        # Replayed letters leave the stream; a second replay finds nothing to do.
        with pytest.raises(NoDeadLetterError):
            await dead_letters.fetch(admin, letter.seq)
        with pytest.raises(NoDeadLetterError):
            await replay(admin, app.name, letter.seq)
    finally:
        await admin.close()
        await app.stop()


async def test_replay_of_a_message_already_handled_changes_nothing(
    fresh_nats: ServerProcess, mongo_server: ServerProcess
) -> None:
    app = make_app(fresh_nats, mongo_server)
    handled: list[str] = []

    @app.on_event(JobAttemptCompleted)
    async def handle(ctx: HandlerContext, env: Envelope) -> None:
        handled.append(env.id)

    await app.start()
    admin = await Bus.connect(fresh_nats.url, "admin")
    try:
        event = JobAttemptCompleted(job_key="a~b", attempt_id=0, exit_code=0)
        await app.bus.publish_event(event, msg_id="handled-once")
        while not handled:
            await asyncio.sleep(0.05)
        # The same message also sits in the dead letters (say a replica gave up on it meanwhile).
        _, headers, payload = encode(event, "test", "handled-once")
        await app.bus.dead_letter(app.name, headers, payload, "RuntimeError('a replica gave up')")
        [letter] = await letters_of(admin, app.name, 1)
        assert (await replay(admin, app.name, letter.seq)).outcome == "duplicate"
        assert handled == ["handled-once"]
    finally:
        await admin.close()
        await app.stop()


async def test_malformed_letters_and_other_consumers_letters_are_refused(
    fresh_nats: ServerProcess, mongo_server: ServerProcess
) -> None:
    first, second = make_app(fresh_nats, mongo_server), make_app(fresh_nats, mongo_server)
    for app in (first, second):

        @app.on_event(JobAttemptCompleted)
        async def handle(ctx: HandlerContext, env: Envelope) -> None:
            pass

        await app.start()
    admin = await Bus.connect(fresh_nats.url, "admin")
    try:
        _, headers, _ = encode(JobAttemptCompleted(job_key="x~y", attempt_id=0, exit_code=0), "test")
        await admin.publish_raw("pai.evt.job.attempt.completed", headers, b'{"job_key": 5}')
        [letter] = await letters_of(admin, first.name, 1)
        assert letter.summary()["error"].startswith("malformed: invalid job.attempt.completed body")
        assert (await dead_letters.fetch(admin, letter.seq)).detail()["body"] == {"job_key": 5}
        with pytest.raises(DeadLetterReplayError, match="cannot be replayed"):
            await replay(admin, first.name, letter.seq)
        # Another consumer does not touch it.
        with pytest.raises(NoDeadLetterError, match=f"for consumer {second.name}"):
            await replay(admin, second.name, letter.seq)
        # Both consumers dead-lettered their own copy; each list shows its own.
        [theirs] = await letters_of(admin, second.name, 1)
        assert theirs.seq != letter.seq and theirs.consumer == second.name
        everything, cursor = await dead_letters.page(admin)
        assert {d.seq for d in everything} >= {letter.seq, theirs.seq} and cursor is None
        one, cursor = await dead_letters.page(admin, limit=1)
        assert len(one) == 1 and cursor == one[0].seq
        rest, _ = await dead_letters.page(admin, after=cursor)
        assert one[0].seq not in {d.seq for d in rest} and rest
    finally:
        await admin.close()
        for app in (first, second):
            await app.stop()


def test_a_body_that_is_not_json_is_shown_as_text_or_base64() -> None:
    def letter(data: bytes) -> dict[str, Any]:
        return dead_letters.DeadLetter(1, "pai.dlq.s.d", None, {}, data).detail()

    assert letter(b"plain words")["body"] == "plain words"
    assert letter(b"\xff\xfe")["body"] == {"base64": "//4="}
