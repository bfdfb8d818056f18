"""The consumer's batches and the outbox's publishing, against real NATS (JetStream) and MongoDB-wire
servers: what makes a job cost fewer round trips must keep every guarantee."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from pymongo import InsertOne, ReplaceOne, UpdateOne
from pymongo.errors import OperationFailure

from pai_common import consumer as consumer_module
from pai_common import dead_letters
from pai_common.bookkeeping import FinalWrite
from pai_common.bus import EVENTS_STREAM, Bus
from pai_common.consumer import PROCESSED, HandlerContext
from pai_common.contract.events import JobAttemptCompleted, SchedulingReleased
from pai_common.database import connect_mongo, service_database
from pai_common.embedded import ServerProcess
from pai_common.envelope import H_MSG_ID, MAX_BODY_BYTES, Envelope, encode
from pai_common.errors import DeadLetterReplayError
from pai_common.metrics import REDELIVERIES
from pai_common.outbox import COLLECTION as OUTBOX
from pai_common.outbox import DEAD_COLLECTION, Outbox, PendingMessages
from pai_common.service import ServiceApp
from pai_common.settings import Settings


def make_app(nats: ServerProcess, mongo: ServerProcess) -> ServiceApp:
    settings = Settings(nats_url=nats.url, mongo_url=mongo.url, nak_base_delay_s=0.05)
    return ServiceApp(f"t{uuid.uuid4().hex[:10]}", settings)


async def wait_until(predicate: Any, timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("one_request", [True, False], ids=["markers-last", "markers-first"])
async def test_a_batch_with_a_message_handled_before_applies_each_message_once(
    fresh_nats: ServerProcess, mongo_server: ServerProcess, one_request: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A marker that exists (its message handled before a crash, not acked; here delivered for the first
    time, as a copy published again after the bus's duplicate window would be) stops the batch's
    transaction, that message is acked as a duplicate and the rest of the batch is applied once. With the
    bookkeeping in one request (a MongoDB 8 server: SecantusDB) the markers go last, so the batch's handlers
    ran once in the transaction that aborted; with a server before 8.0 they go first."""
    if not one_request:

        async def before_8(client: Any) -> bool:
            return False

        monkeypatch.setattr(consumer_module, "supports_one_request", before_8)
    app = make_app(fresh_nats, mongo_server)
    handled: list[str] = []

    @app.on_event(JobAttemptCompleted)
    async def handle(ctx: HandlerContext, env: Envelope) -> None:
        handled.append(env.id)
        await ctx.db.done.update_one({"_id": env.id}, {"$inc": {"n": 1}}, upsert=True, session=ctx.session)
        # The same, left to the transaction's end: with the bookkeeping in one request, or alone.
        count = UpdateOne({"_id": env.id}, {"$inc": {"n": 1}}, upsert=True, namespace=ctx.namespace("at_end"))
        ctx.write_at_end(FinalWrite("at_end", [count]))

    bus = await Bus.connect(fresh_nats.url, "test")
    await bus.ensure_streams()
    events = {f"e{i}": JobAttemptCompleted(job_key=f"b~j{i}", attempt_id=0, exit_code=0) for i in range(4)}
    for mid, event in events.items():
        await bus.publish_event(event, msg_id=mid)
    # e1 once more under another NATS id: the same CloudEvents id twice in one fetch.
    _, headers, payload = encode(events["e1"], "test", "e1")
    headers[H_MSG_ID] = "e1-copy"
    await bus.publish_raw("pai.evt.job.attempt.completed", headers, payload)
    await bus.close()
    # e3 was handled by an earlier run that died before acking it.
    client = connect_mongo(mongo_server.url)
    db = service_database(client, app.name)
    await db[PROCESSED].insert_one({"_id": f"{app.name}/e3", "at": datetime.now(UTC)})
    await db.done.insert_one({"_id": "e3", "n": 1})
    await client.close()

    await app.start()
    try:

        async def all_acked() -> bool:
            info = await app.bus.js.consumer_info(EVENTS_STREAM, app.name)
            return info.num_pending == 0 and info.num_ack_pending == 0

        await wait_until(all_acked)
        counts = {d["_id"]: d["n"] async for d in app.db.done.find({})}
        assert counts == {"e0": 1, "e1": 1, "e2": 1, "e3": 1}
        assert {d["_id"]: d["n"] async for d in app.db.at_end.find({})} == {"e0": 1, "e1": 1, "e2": 1}
        assert all(c.one_request is one_request for c in app._consumers)
        if one_request:
            # e3's handler ran in a transaction that aborted; so did the others' if they were fetched in one
            # batch with it (then each ran again in the transaction that committed).
            assert handled.count("e3") == 1
            assert all(handled.count(e) in (1, 2) for e in ("e0", "e1", "e2"))
        else:
            assert sorted(handled) == ["e0", "e1", "e2"]
        markers = {d["_id"] async for d in app.db[PROCESSED].find({})}
        assert markers == {f"{app.name}/e{i}" for i in range(4)}
        assert await app.db[OUTBOX].count_documents({}) == 0
    finally:
        await app.stop()


def test_a_handler_registered_again_without_acts_on_acts_on_every_event() -> None:
    app = ServiceApp("filters")

    async def handle(ctx: HandlerContext, env: Envelope) -> None:
        return None

    def envelope(exit_code: int) -> Envelope:
        body = JobAttemptCompleted(job_key="f~j", attempt_id=0, exit_code=exit_code)
        return Envelope("i", body.TYPE, "t", "f~j", "", body, {})

    app.on_event(JobAttemptCompleted, acts_on=lambda body: body.exit_code != 0)(handle)
    assert app._acts_on(envelope(1)) and not app._acts_on(envelope(0))
    app.on_event(JobAttemptCompleted)(handle)
    assert app._acts_on(envelope(0))


async def test_events_the_handler_does_not_act_on_are_acked_without_a_transaction(
    fresh_nats: ServerProcess, mongo_server: ServerProcess
) -> None:
    """``on_event(..., acts_on=...)``: the events it refuses are acked, never redelivered, and leave no
    processed marker and no handler call; the others are handled as before, batch or not."""
    app = make_app(fresh_nats, mongo_server)
    handled: list[str] = []

    @app.on_event(JobAttemptCompleted, acts_on=lambda body: body.exit_code != 0)
    async def handle(ctx: HandlerContext, env: Envelope) -> None:
        handled.append(env.id)
        await ctx.db.done.insert_one({"_id": env.id}, session=ctx.session)

    bus = await Bus.connect(fresh_nats.url, "test")
    await bus.ensure_streams()
    for i in range(6):
        event = JobAttemptCompleted(job_key=f"f~j{i}", attempt_id=0, exit_code=i % 2)
        await bus.publish_event(event, msg_id=f"f{i}")
    await bus.close()
    await app.start()
    try:

        async def all_acked() -> bool:
            info = await app.bus.js.consumer_info(EVENTS_STREAM, app.name)
            return info.num_pending == 0 and info.num_ack_pending == 0 and len(handled) >= 3

        await wait_until(all_acked)
        await asyncio.sleep(0.3)  # a redelivery would come now
        assert sorted(handled) == ["f1", "f3", "f5"]
        markers = sorted([d["_id"] async for d in app.db[PROCESSED].find({})])
        assert markers == [f"{app.name}/f{i}" for i in (1, 3, 5)]
        info = await app.bus.js.consumer_info(EVENTS_STREAM, app.name)
        assert info.num_redelivered == 0
        # One alone in its fetch takes the consumer's other path.
        lone = JobAttemptCompleted(job_key="f~j6", attempt_id=0, exit_code=0)
        await app.bus.publish_event(lone, msg_id="f6")
        await wait_until(all_acked)
        info = await app.bus.js.consumer_info(EVENTS_STREAM, app.name)
        assert info.delivered.stream_seq >= 7 and info.num_redelivered == 0
        assert len(handled) == 3 and await app.db[PROCESSED].count_documents({}) == 3
    finally:
        await app.stop()


async def test_the_write_guard_is_held_around_every_consumer_transaction(
    fresh_nats: ServerProcess, mongo_server: ServerProcess
) -> None:
    app = make_app(fresh_nats, mongo_server)
    lock = asyncio.Lock()
    held: list[bool] = []
    entered: list[int] = []

    @asynccontextmanager
    async def guard() -> AsyncIterator[None]:
        async with lock:
            entered.append(1)
            yield

    app.serialize_writes(guard)

    @app.on_event(JobAttemptCompleted)
    async def handle(ctx: HandlerContext, env: Envelope) -> None:
        held.append(lock.locked())

    await app.start()
    try:
        for i in range(3):
            await app.bus.publish_event(JobAttemptCompleted(job_key=f"g~j{i}", attempt_id=0, exit_code=0))

        async def three() -> bool:
            return len(held) == 3

        await wait_until(three)
        assert held == [True, True, True]
        assert entered
    finally:
        await app.stop()


class FlakyBus:
    """The bus, whose publishes fail while ``down`` is set."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.down = False
        self.service = bus.service
        self.max_payload = bus.max_payload

    async def publish_raw(self, subject: str, headers: dict[str, str], payload: bytes) -> None:
        if self.down:
            raise ConnectionError("bus down")
        await self.bus.publish_raw(subject, headers, payload)


@pytest.fixture
async def outbox_parts(
    fresh_nats: ServerProcess, mongo_server: ServerProcess
) -> AsyncIterator[tuple[Outbox, FlakyBus, Bus, Any, Any]]:
    bus = await Bus.connect(fresh_nats.url, "test")
    await bus.ensure_streams()
    client = connect_mongo(mongo_server.url)
    db = client[f"t{uuid.uuid4().hex[:10]}"]
    flaky = FlakyBus(bus)
    outbox = Outbox(db, flaky)  # type: ignore[arg-type]
    yield outbox, flaky, bus, client, db
    await client.close()
    await bus.close()


async def commit(client: Any, outbox: Outbox, job: str) -> list[dict[str, Any]]:
    pending = PendingMessages("test")
    pending.event(SchedulingReleased(job_key=job, attempt_id=0), msg_id=f"released:{job}")
    async with client.start_session() as session:
        async with await session.start_transaction():
            await outbox.stage(pending, session)
    return pending.docs


async def stream_jobs(bus: Bus) -> list[str]:
    info = await bus.js.stream_info(EVENTS_STREAM)
    jobs: list[str] = []
    if info.state.messages == 0:
        return jobs
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await bus.js.get_msg(EVENTS_STREAM, seq)
        jobs.append((msg.headers or {})["ce-subject"])
    return jobs


async def test_outbox_publishes_commits_from_memory_and_deletes_them_later(
    outbox_parts: tuple[Outbox, FlakyBus, Bus, Any, Any],
) -> None:
    outbox, _, bus, client, db = outbox_parts
    assert await outbox.flush() == 0  # the start's flush: nothing older is waiting
    docs = await commit(client, outbox, "a~1")
    await outbox.publish_committed(docs)
    assert await stream_jobs(bus) == ["a~1"]
    # Published, still in the collection until the relay's batched delete.
    assert await db.outbox.count_documents({}) == 1
    assert await outbox.delete_sent() == 1
    assert await db.outbox.count_documents({}) == 0


async def test_a_transaction_never_takes_what_the_relay_is_deleting(
    outbox_parts: tuple[Outbox, FlakyBus, Bus, Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The relay's delete and a transaction's (``take_sent``) of the same published messages met as a write
    conflict, which aborted the transaction (in CI: a scheduler's allocation retried after a release that
    had overtaken it). What the relay is deleting is not taken, and comes back if its delete fails."""
    outbox, _, _, client, db = outbox_parts
    await outbox.flush()
    docs = await commit(client, outbox, "a~1")
    await outbox.publish_committed(docs)
    deleting, release = asyncio.Event(), asyncio.Event()
    delete_many = outbox.collection.delete_many

    async def held(*args: Any, **kwargs: Any) -> Any:
        deleting.set()
        await release.wait()
        return await delete_many(*args, **kwargs)

    monkeypatch.setattr(outbox.collection, "delete_many", held)
    relay = asyncio.create_task(outbox.delete_sent())
    await deleting.wait()
    assert outbox.take_sent() == []
    release.set()
    assert await relay == 1
    assert await db.outbox.count_documents({}) == 0

    docs = await commit(client, outbox, "a~2")
    await outbox.publish_committed(docs)

    async def fails(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("the database went away")

    monkeypatch.setattr(outbox.collection, "delete_many", fails)
    with pytest.raises(ConnectionError):
        await outbox.delete_sent()
    assert outbox.take_sent() == [docs[0]["_id"]]


async def test_after_a_failed_publish_the_outbox_is_flushed_oldest_first(
    outbox_parts: tuple[Outbox, FlakyBus, Bus, Any, Any],
) -> None:
    outbox, flaky, bus, client, db = outbox_parts
    await outbox.flush()
    flaky.down = True
    first = await commit(client, outbox, "a~1")
    with pytest.raises(ConnectionError):
        await outbox.publish_committed(first)
    assert await stream_jobs(bus) == []
    flaky.down = False
    # The next commit does not overtake the one left behind: the whole outbox goes, in commit order.
    second = await commit(client, outbox, "a~2")
    await outbox.publish_committed(second)
    assert await stream_jobs(bus) == ["a~1", "a~2"]
    assert await db.outbox.count_documents({}) == 0
    # And once caught up, commits go straight from memory again.
    third = await commit(client, outbox, "a~3")
    await outbox.publish_committed(third)
    assert await stream_jobs(bus) == ["a~1", "a~2", "a~3"]
    assert await db.outbox.count_documents({}) == 1


async def test_the_relay_deletes_what_was_published_and_sends_it_once(
    outbox_parts: tuple[Outbox, FlakyBus, Bus, Any, Any],
) -> None:
    outbox, _, bus, client, db = outbox_parts
    await outbox.flush()
    relay = asyncio.create_task(outbox.relay_forever(interval_s=0.2, delete_after_s=0.01))
    try:
        for i in range(5):
            await outbox.publish_committed(await commit(client, outbox, f"r~{i}"))

        async def emptied() -> bool:
            return await db.outbox.count_documents({}) == 0

        await wait_until(emptied)
        await asyncio.sleep(0.5)  # two more periods of the relay's flush: nothing is sent again
        assert await stream_jobs(bus) == [f"r~{i}" for i in range(5)]
    finally:
        relay.cancel()
        with pytest.raises(asyncio.CancelledError):
            await relay


async def test_the_relay_stops_when_cancelled_as_a_commit_is_published(
    outbox_parts: tuple[Outbox, FlakyBus, Bus, Any, Any],
) -> None:
    """A service stopping just as it publishes (the runtime reporting a task's exit) stops its relay."""
    outbox, _, _, client, _ = outbox_parts
    await outbox.flush()
    relay = asyncio.create_task(outbox.relay_forever(interval_s=60.0))
    await asyncio.sleep(0.05)  # the relay waits for a publish
    await outbox.publish_committed(await commit(client, outbox, "s~1"))  # sets its signal...
    relay.cancel()  # ...and the cancellation comes in the same turn of the loop
    done, _ = await asyncio.wait({relay}, timeout=10.0)
    assert relay in done and relay.cancelled()


async def test_a_backlog_is_applied_in_full_batches_each_acked_after_its_commit(
    fresh_nats: ServerProcess, mongo_server: ServerProcess
) -> None:
    """A consumer far behind (the burst test's jobs service: tens of thousands of events queued) takes
    the backlog in full batches, one transaction each, and acks each batch once it committed: it never
    sits on a batch waiting for a fetch window, a timer or more messages."""
    app = make_app(fresh_nats, mongo_server)
    total = 300
    # The handlers' contexts, kept alive so that each transaction's has its own id.
    contexts: list[HandlerContext] = []
    handled: list[str] = []

    @app.on_event(JobAttemptCompleted)
    async def handle(ctx: HandlerContext, env: Envelope) -> None:
        contexts.append(ctx)
        handled.append(env.id)
        await ctx.db.done.insert_one({"_id": env.id}, session=ctx.session)

    bus = await Bus.connect(fresh_nats.url, "test")
    await bus.ensure_streams()
    for i in range(total):
        await bus.publish_event(
            JobAttemptCompleted(job_key=f"q~j{i}", attempt_id=0, exit_code=0), msg_id=f"q{i}"
        )
    await bus.close()

    await app.start()
    try:

        async def all_acked() -> bool:
            info = await app.bus.js.consumer_info(EVENTS_STREAM, app.name)
            return info.num_pending == 0 and info.num_ack_pending == 0

        await wait_until(all_acked, timeout=60.0)
        assert sorted(handled) == sorted(f"q{i}" for i in range(total))
        assert await app.db.done.count_documents({}) == total
        transactions = len({id(ctx) for ctx in contexts})
        batch = 64
        # ceil(300 / 64) = 5 full or nearly full batches; a few more if a fetch raced the publishes.
        assert transactions <= -(-total // batch) + 2, transactions
    finally:
        await app.stop()


async def commit_big(client: Any, outbox: Outbox, job: str, size: int) -> list[dict[str, Any]]:
    """A message whose body is ``size`` bytes or more: the job key is padded (any big field would do)."""
    pending = PendingMessages("test")
    big = JobAttemptCompleted(job_key=job + "x" * size, attempt_id=0, exit_code=0)
    pending.event(big, msg_id=f"big:{job}")
    async with client.start_session() as session:
        async with await session.start_transaction():
            await outbox.stage(pending, session)
    return pending.docs


async def test_a_message_too_big_for_the_bus_does_not_wedge_the_outbox(
    outbox_parts: tuple[Outbox, FlakyBus, Bus, Any, Any],
) -> None:
    """A message over the server's max_payload can never be published: it goes to the service's dead
    letters (its body kept in the database, a notice with the error on the dead-letter stream), and every
    message after it is published, in order, by the from-memory path and by the flush alike."""
    outbox, _, bus, client, db = outbox_parts
    await outbox.flush()
    limit = bus.nc.max_payload
    await outbox.publish_committed(await commit(client, outbox, "o~1"))
    with contextlib.suppress(Exception):  # before the fix: nats' MaxPayloadError
        await outbox.publish_committed(await commit_big(client, outbox, "o~big", limit))
    for job in ("o~2", "o~3"):
        with contextlib.suppress(Exception):
            await outbox.publish_committed(await commit(client, outbox, job))
    with contextlib.suppress(Exception):
        await outbox.flush()
    assert await stream_jobs(bus) == ["o~1", "o~2", "o~3"]
    assert await db.outbox.count_documents({}) == 0
    # Kept, whole, with why.
    kept = await db[DEAD_COLLECTION].find({}).to_list()
    assert [d["_id"] for d in kept] == ["big:o~big"]
    assert len(bytes(kept[0]["data"])) > limit and "max_payload" in kept[0]["error"]
    letters, _ = await dead_letters.page(bus, service="test")
    assert [(x.consumer, x.headers["ce-id"]) for x in letters] == [("outbox", "big:o~big")]
    assert "max_payload" in letters[0].headers[dead_letters.ERROR_HEADER]
    # Shown with why; a replay is refused by name (it could only fail the same way).
    assert letters[0].detail()["body"]["bytes"] == len(bytes(kept[0]["data"]))
    with pytest.raises(DeadLetterReplayError, match="outbox_dead_letters"):
        letters[0].envelope()
    # Once only, also when the flush reads the collection again.
    await outbox.flush()
    assert len((await dead_letters.page(bus, service="test"))[0]) == 1


async def test_a_body_over_what_consumers_accept_is_dead_lettered_at_the_source(
    outbox_parts: tuple[Outbox, FlakyBus, Bus, Any, Any],
) -> None:
    """A body over MAX_BODY_BYTES would only be dead-lettered by every consumer: it stops at the outbox,
    even where the server's max_payload is larger."""
    outbox, flaky, bus, client, db = outbox_parts
    await outbox.flush()
    flaky.max_payload = 8 * MAX_BODY_BYTES
    await outbox.publish_committed(await commit_big(client, outbox, "c~big", MAX_BODY_BYTES))
    await outbox.publish_committed(await commit(client, outbox, "c~1"))
    assert await stream_jobs(bus) == ["c~1"]
    assert [d["_id"] async for d in db[DEAD_COLLECTION].find({})] == ["big:c~big"]


async def test_a_big_message_stays_in_the_outbox_while_the_bus_is_down(
    outbox_parts: tuple[Outbox, FlakyBus, Bus, Any, Any],
) -> None:
    """Dead-lettering needs the bus too: while it is down nothing is moved or lost, and it is retried."""
    outbox, flaky, bus, client, db = outbox_parts
    await outbox.flush()
    flaky.down = True
    docs = await commit_big(client, outbox, "d~big", bus.nc.max_payload)
    with pytest.raises(ConnectionError):
        await outbox.publish_committed(docs)
    assert await db.outbox.count_documents({}) == 1
    assert await db[DEAD_COLLECTION].count_documents({}) == 0
    flaky.down = False
    await outbox.publish_committed(await commit(client, outbox, "d~1"))
    assert await stream_jobs(bus) == ["d~1"]
    assert await db.outbox.count_documents({}) == 0
    assert await db[DEAD_COLLECTION].count_documents({}) == 1


async def test_a_service_whose_handler_emits_a_message_too_big_for_the_bus_goes_on(
    fresh_nats: ServerProcess, mongo_server: ServerProcess
) -> None:
    """Through a running service: a handler's event over the server's max_payload is dead-lettered under
    the service's ``outbox`` consumer, and the events the following messages cause are published."""
    app = make_app(fresh_nats, mongo_server)

    @app.on_event(JobAttemptCompleted)
    async def handle(ctx: HandlerContext, env: Envelope) -> None:
        body = env.body
        assert isinstance(body, JobAttemptCompleted)
        pad = "x" * app.bus.max_payload if body.job_key.startswith("big") else ""
        ctx.out.event(SchedulingReleased(job_key=body.job_key + pad, attempt_id=0), msg_id=f"rel:{env.id}")

    await app.start()
    try:
        for i, job in enumerate(["s~0", "big~1", "s~2", "s~3"]):
            await app.bus.publish_event(JobAttemptCompleted(job_key=job, attempt_id=0, exit_code=0), f"m{i}")

        async def released() -> list[str]:
            info = await app.bus.js.stream_info(EVENTS_STREAM)
            out = []
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                msg = await app.bus.js.get_msg(EVENTS_STREAM, seq)
                if (msg.headers or {}).get("ce-type") == SchedulingReleased.TYPE:
                    out.append((msg.headers or {})["ce-subject"])
            return out

        async def three() -> bool:
            return len(await released()) == 3

        await wait_until(three)
        assert sorted(await released()) == ["s~0", "s~2", "s~3"]
        letters, _ = await dead_letters.page(app.bus, service=app.name)
        assert [(x.consumer, x.headers["ce-id"]) for x in letters] == [("outbox", "rel:m1")]
        assert await app.db[DEAD_COLLECTION].count_documents({}) == 1

        async def outbox_emptied() -> bool:
            return await app.db.outbox.count_documents({}) == 0

        await wait_until(outbox_emptied)  # the relay deletes what was sent: nothing is left to resend
    finally:
        await app.stop()


@pytest.mark.parametrize("one_request", [True, False], ids=["one-request", "before-8"])
async def test_a_transactions_final_writes_commit_with_it_or_not_at_all(
    fresh_nats: ServerProcess, mongo_server: ServerProcess, one_request: bool
) -> None:
    """Work that does not start from a message (``ServiceApp.transaction``) sends its final writes with
    its outbox messages (one request on a MongoDB 8 server, a bulk write each before 8.0); a final write's
    check that refuses aborts the transaction, its message included."""
    app = make_app(fresh_nats, mongo_server)
    await app.start()
    app._one_request = one_request
    try:
        ns = app.db.name + ".at_end"
        async with app.transaction() as tx:
            tx.write_at_end(FinalWrite("at_end", [InsertOne({"_id": "a", "v": 1}, namespace=ns)]))
            tx.out.event(JobAttemptCompleted(job_key="b~kept", attempt_id=0, exit_code=0), msg_id="kept")

        def refuse(matched: int) -> None:
            raise RuntimeError(f"matched {matched}")

        with pytest.raises(RuntimeError, match="matched 1"):
            async with app.transaction() as tx:
                replace = ReplaceOne({"_id": "a"}, {"v": 2}, namespace=ns)
                tx.write_at_end(FinalWrite("at_end", [replace], refuse))
                tx.out.event(JobAttemptCompleted(job_key="b~lost", attempt_id=0, exit_code=0), msg_id="lost")
        assert [d async for d in app.db.at_end.find({})] == [{"_id": "a", "v": 1}]
        assert app._one_request is one_request
        # What committed was published and leaves the outbox; what aborted never entered it.
        await wait_until(lambda: _outbox_empty(app))
        info = await app.bus.js.stream_info(EVENTS_STREAM)
        assert info.state.messages == 1
    finally:
        await app.stop()


async def _outbox_empty(app: ServiceApp) -> bool:
    await app.outbox.delete_sent()
    return await app.db[OUTBOX].count_documents({}) == 0


async def test_a_single_message_that_meets_a_write_conflict_is_retried_in_place_not_overtaken(
    fresh_nats: ServerProcess, mongo_server: ServerProcess
) -> None:
    """A message fetched alone whose transaction meets a write conflict runs again at once, as a batch
    does: naked, the messages behind it were handled first (in CI, a release before the allocation it
    releases, which then stayed allocated)."""
    app = make_app(fresh_nats, mongo_server)
    handled: list[tuple[str, int]] = []
    conflicts = [OperationFailure("WriteConflict", code=112)]

    @app.on_event(JobAttemptCompleted)
    async def handle(ctx: HandlerContext, env: Envelope) -> None:
        handled.append((env.id, len(conflicts)))
        if conflicts:
            raise conflicts.pop()

    await app.start()
    try:
        bus = await Bus.connect(fresh_nats.url, "test")
        await bus.publish_event(JobAttemptCompleted(job_key="b~one", attempt_id=0, exit_code=0), msg_id="one")
        await bus.close()

        async def acked() -> bool:
            info = await app.bus.js.consumer_info(EVENTS_STREAM, app.name)
            return info.num_pending == 0 and info.num_ack_pending == 0

        await wait_until(acked)
        assert REDELIVERIES.labels(app.name)._value.get() == 0  # never naked and fetched again
        assert handled == [("one", 1), ("one", 0)]
        assert {d["_id"] async for d in app.db[PROCESSED].find({})} == {f"{app.name}/one"}
    finally:
        await app.stop()
