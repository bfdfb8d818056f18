"""Durable pull consumers: explicit ack after commit, idempotent handling, back-off, dead letters."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from opentelemetry.trace import SpanKind
from pymongo import AsyncMongoClient
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure

from pai_common import dead_letters
from pai_common.bookkeeping import FinalWrite, MarkerExists, supports_one_request, write_in_one_request
from pai_common.bus import Bus
from pai_common.contract.rpc import ReplayDeadLetterReply, ReplayDeadLetterRequest
from pai_common.database import is_transient, retry_transient
from pai_common.envelope import Envelope, MalformedMessage, decode
from pai_common.errors import DeadLetterReplayError, NoDeadLetterError, ServiceUnavailableError
from pai_common.held_messages import HeldMessages
from pai_common.logs import current_job_key
from pai_common.metrics import HANDLE_SECONDS, MESSAGES, REDELIVERIES
from pai_common.outbox import COLLECTION as OUTBOX
from pai_common.outbox import Outbox, PendingMessages
from pai_common.telemetry import span_from_headers

CONSUMER = SpanKind.CONSUMER

log = logging.getLogger(__name__)

PROCESSED = "processed"
# How long a handled message's id is remembered. A message can come back only while its stream keeps it
# (PAI_EVENTS: 7 days; a work-queue command goes once acked), so a marker older than that guards
# nothing: MongoDB's TTL monitor deletes it and the collection stops growing with the traffic.
PROCESSED_TTL_S = 8 * 24 * 3600
# How long one fetch waits for a first message; then how long it gives the server to hand over the
# messages pending behind it (it answers at once; the bound is for a slow answer or a race). The first wait
# ends as soon as a message comes, so its length costs no latency; what it costs is an idle consumer's
# rounds: each one a pull request, its expiry and a wake-up. At 0.5 s, an idle platform spent 22-35% more
# CPU, NATS 2.5 times as much (benchmarks/RESULTS.md, 2026-12-07 18:00). A stop and a lost connection end
# the wait at once (``_first``); a pull request lost some other way (a JetStream consumer's leader moving
# in a cluster) holds the consumer up to this long.
FETCH_WAIT_S = 5.0
MORE_WAIT_S = 0.05
# How long a delivered message may go unacknowledged before the server hands it out again: how soon the
# messages a killed service held come back to its restarted self (or another replica). While a batch is in
# hand, the consumer tells the server every third of it that the work goes on (held_messages.py), so a
# slow batch is not handed out under it. 60 s before: a crash stalled the messages in hand for a minute.
ACK_WAIT_S = 10.0


_Kept = TypeVar("_Kept")


@dataclass
class HandlerContext:
    """What a handler may touch: its own database inside one transaction, and the outbox."""

    db: AsyncDatabase[dict[str, Any]]
    session: AsyncClientSession
    out: PendingMessages
    # Run once the transaction committed (never for one that aborted or is retried): metrics of what
    # really happened, counted once.
    after_commit: list[Callable[[], None]] = field(default_factory=list)
    # What the handlers of this one transaction share (a context is made per transaction and per retry,
    # so nothing here outlives an aborted attempt): e.g. the jobs service's one list update number.
    memo: dict[str, Any] = field(default_factory=dict)
    # Writes a handler leaves to the end of the transaction, after every handler of the batch ran: one
    # write for what several messages changed (``flush``).
    before_commit: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # Every message this transaction applies (the whole fetch, or the one message): a handler may read
    # what all of them need in one request (e.g. the orchestrator's frameworks of the batch's jobs).
    batch: Sequence[Envelope] = ()
    # Writes no handler reads back, sent after the ``before_commit`` ones ran: in the request that carries
    # the transaction's bookkeeping where the server can (pai_common.bookkeeping), else one bulk write each.
    final_writes: list[FinalWrite] = field(default_factory=list)

    def on_commit(self, fn: Callable[[], None]) -> None:
        self.after_commit.append(fn)

    def kept(self, key: str, make: Callable[[HandlerContext], _Kept]) -> _Kept:
        """The one ``make(self)`` of this transaction, kept in its memo under ``key``: what the handlers of
        a batch add to, written once at its end (through ``on_before_commit``)."""
        kept = self.memo.get(key)
        if kept is None:
            kept = self.memo[key] = make(self)
        return cast(_Kept, kept)

    def on_before_commit(self, fn: Callable[[], Awaitable[None]]) -> None:
        self.before_commit.append(fn)

    def namespace(self, collection: str) -> str:
        """``collection``'s full name, for the ops of a final write."""
        return f"{self.db.name}.{collection}"

    def write_at_end(self, write: FinalWrite) -> None:
        """Send ``write`` at the transaction's end; nothing in the transaction may read what it writes."""
        if write.ops:
            self.final_writes.append(write)

    async def flush(self, keep_final_writes: bool = False) -> None:
        """Run the writes left to the end of the transaction (inside it, before the outbox is staged); the
        final writes too, unless the caller sends them with its bookkeeping."""
        while self.before_commit:
            await self.before_commit.pop(0)()
        if not keep_final_writes:
            while self.final_writes:
                await self.final_writes.pop(0).write_alone(self.db, self.session)

    def committed(self) -> None:
        for fn in self.after_commit:
            try:
                fn()
            except Exception as exc:  # a metric must never undo or repeat committed work
                log.warning("after-commit hook failed", extra={"error": repr(exc)})
        self.after_commit.clear()


Handler = Callable[[HandlerContext, Envelope], Awaitable[None]]
# What a consumer holds around each of its transactions (see ServiceApp.serialize_writes).
WriteGuard = Callable[[], AbstractAsyncContextManager[object]]


@dataclass(frozen=True)
class ConsumerSpec:
    durable: str
    stream: str
    filter_subjects: list[str]
    handler: Handler
    max_deliver: int = 5
    nak_base_delay_s: float = 0.5
    batch: int = 64
    ack_wait_s: float | None = None  # None: ACK_WAIT_S
    # Which messages the handler acts on (None: all). The others are acked without a transaction: a
    # message the handler would do nothing for needs no processed marker, since handling it again changes
    # nothing (the storage service and a job that mounts no storage: two transactions per job saved).
    acts_on: Callable[[Envelope], bool] | None = None


async def ensure_processed_ttl(db: AsyncDatabase[dict[str, Any]]) -> None:
    """The TTL index on ``processed.at``; an older plain index on the same key is replaced by it."""
    processed = db[PROCESSED]
    try:
        await processed.create_index("at", expireAfterSeconds=PROCESSED_TTL_S)
    except OperationFailure as exc:
        # IndexOptionsConflict / IndexKeySpecsConflict: the index of earlier versions, without a TTL.
        if exc.code not in (85, 86):
            raise
        await processed.drop_index("at_1")
        await processed.create_index("at", expireAfterSeconds=PROCESSED_TTL_S)


class DurableConsumer:
    def __init__(
        self,
        spec: ConsumerSpec,
        bus: Bus,
        client: AsyncMongoClient[dict[str, Any]],
        db: AsyncDatabase[dict[str, Any]],
        outbox: Outbox,
        write_guard: WriteGuard | None = None,
    ) -> None:
        self.spec = spec
        self.bus = bus
        self.client = client
        self.db = db
        self.outbox = outbox
        self._guard: WriteGuard = write_guard or contextlib.nullcontext
        # Markers, outbox messages and the outbox's deletions in one request (pai_common.bookkeeping);
        # decided at start by the server's version.
        self.one_request = False
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._waiting: asyncio.Future[list[Msg]] | None = None  # the fetch waiting for a first message

    @property
    def ack_wait_s(self) -> float:
        return self.spec.ack_wait_s if self.spec.ack_wait_s is not None else ACK_WAIT_S

    async def start(self) -> None:
        await retry_transient(lambda: ensure_processed_ttl(self.db))
        self.one_request = await retry_transient(lambda: supports_one_request(self.client))
        config = ConsumerConfig(
            durable_name=self.spec.durable,
            name=self.spec.durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            # Unlimited on the server: the handler decides when a message is dead (transient failures are
            # retried as long as they last, others go to the dead letters after max_deliver tries).
            max_deliver=-1,
            ack_wait=self.ack_wait_s,
            max_ack_pending=10_000,
            filter_subjects=self.spec.filter_subjects,
        )
        # A consumer that exists already is updated in place: an earlier version's (ack_wait 60 s) takes
        # this one's settings, its position and its unacknowledged messages kept.
        await self.bus.js.add_consumer(self.spec.stream, config=config)
        self._sub = await self.bus.js.pull_subscribe_bind(durable=self.spec.durable, stream=self.spec.stream)
        self._task = asyncio.create_task(self._loop(), name=f"consumer:{self.spec.durable}")

    async def stop(self) -> None:
        """Finish the batch in hand, then stop fetching; unacked messages are redelivered later.

        A fetch still waiting for its first message is given up at once. The server skips a pull request
        whose inbox lost its subscription, so what is published after the unsubscription goes to the next
        consumer at once. A message the server handed over in the instant between the two is redelivered
        after ``ack_wait``, as if the service had been killed then."""
        self._stopping.set()
        if self._waiting is not None:
            self._waiting.cancel()
        if self._task:
            await self._task
        await self._sub.unsubscribe()

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                msgs = await self._fetch()
            except (NatsTimeoutError, TimeoutError):
                continue  # nothing to do within the fetch window
            except Exception as exc:
                log.warning("fetch failed", extra={"consumer": self.spec.durable, "error": repr(exc)})
                await asyncio.sleep(0.5)
                continue
            if not msgs:
                continue  # stopping, or the connection dropped
            for msg in msgs:
                if (msg.metadata.num_delivered or 1) > 1:
                    REDELIVERIES.labels(self.spec.durable).inc()
            try:
                with HeldMessages(msgs, self.ack_wait_s / 3):
                    if len(msgs) == 1:
                        await self._handle(msgs[0])
                    else:
                        await self._handle_batch(msgs)
            except Exception as exc:
                # Not even the failure could be recorded (the bus went away while dead-lettering, an ack
                # was lost): what was not acked comes back after ack_wait. The loop itself must go on, or
                # the service would look alive while consuming nothing.
                log.error("consumer step failed", extra={"consumer": self.spec.durable, "error": repr(exc)})
                await asyncio.sleep(0.5)

    async def _fetch(self) -> list[Msg]:
        """Wait for the next message, then take whatever else is there already.

        Not one ``fetch(batch)``: once its pull request has to wait, nats-py's fetch returns only when the
        whole batch came or the request expired, so every message would wait up to the fetch window
        (measured: about 300 ms per service on a job's path). Here the wait ends with the first message;
        the rest of the batch is what had accumulated behind it, as many as the server said were pending (a
        request for messages that are there is answered at once; asking for more would wait again).
        """
        msgs = await self._first()
        if not msgs:
            return msgs
        more = min(self.spec.batch - 1, msgs[-1].metadata.num_pending or 0)
        if more > 0:
            try:
                msgs += await self._sub.fetch(more, timeout=MORE_WAIT_S)
            except (NatsTimeoutError, TimeoutError):
                pass  # taken by another replica meanwhile, or a slow answer: they come with the next fetch
        return msgs

    async def _first(self) -> list[Msg]:
        """The first message, within ``FETCH_WAIT_S``; none when the consumer stops or the connection drops
        meanwhile. A pull request sent on a connection that dropped is gone with it, and its answer would
        never come: the next round sends one on the new connection (nats-py holds it until reconnected)."""
        fetch = asyncio.ensure_future(self._sub.fetch(1, timeout=FETCH_WAIT_S))
        self._waiting = fetch
        try:
            if self._stopping.is_set():
                fetch.cancel()  # the stop came before the wait began
            await asyncio.wait((fetch, self.bus.link.lost()), return_when=asyncio.FIRST_COMPLETED)
            if not fetch.done():
                fetch.cancel()  # the connection dropped
                await asyncio.wait((fetch,))
        except BaseException:
            fetch.cancel()  # this task itself is cancelled
            raise
        finally:
            self._waiting = None
        # A message that came just as the wait was given up is taken, not left to ack_wait.
        return [] if fetch.cancelled() else fetch.result()

    async def _handle_batch(self, msgs: list[Msg]) -> None:
        """Apply a whole fetch in one transaction: one commit, one outbox write, one publish, then the acks.

        This is where throughput comes from (a round trip per batch instead of per message). The processed
        markers are written first in that transaction: when one exists already (a redelivery) the
        transaction stops there, the markers are read, those messages are acked as duplicates and the rest
        is applied; so the markers are read only when a redelivery is in the batch. If anything else in the
        batch fails, nothing of it was committed and each message is handled on its own, so a poison
        message is retried or dead-lettered alone.
        """
        decoded: list[tuple[Msg, Envelope]] = []
        for msg in msgs:
            try:
                decoded.append((msg, decode(msg.headers, msg.data)))
            except MalformedMessage:
                await self._handle(msg)  # dead-letters it
            # Validating a body is CPU work without an await: a batch of large ones (a job of hundreds of
            # tasks, each event carrying every task's status: ~5 ms each, 64 in a batch) would hold the
            # event loop for the whole batch, and the RPCs of this process would wait on it (issue 17).
            await asyncio.sleep(0)
        decoded = await self._ack_ignored(decoded)
        if not decoded:
            return
        try:
            try:
                await retry_transient(lambda: self._commit_batch(decoded))
            except _AlreadyProcessed:
                decoded = await self._drop_processed(decoded)
                if decoded:
                    await retry_transient(lambda: self._commit_batch(decoded))
        except Exception as exc:
            log.info("batch failed; handling its messages one by one", extra={"error": repr(exc)})
            for msg, _ in decoded:
                await self._handle(msg)

    async def _ack_ignored(self, decoded: list[tuple[Msg, Envelope]]) -> list[tuple[Msg, Envelope]]:
        """Ack the messages the handler does not act on (``ConsumerSpec.acts_on``); the others."""
        acts_on = self.spec.acts_on
        if acts_on is None:
            return decoded
        todo: list[tuple[Msg, Envelope]] = []
        for msg, env in decoded:
            if acts_on(env):
                todo.append((msg, env))
            else:
                await msg.ack()
                MESSAGES.labels(self.spec.durable, env.type, "ignored").inc()
        return todo

    async def _drop_processed(self, decoded: list[tuple[Msg, Envelope]]) -> list[tuple[Msg, Envelope]]:
        """Ack the messages handled before (their marker exists); the others."""
        durable = self.spec.durable
        keys = [f"{durable}/{env.id}" for _, env in decoded]
        done = {d["_id"] async for d in self.db[PROCESSED].find({"_id": {"$in": keys}}, {"_id": 1})}
        todo: list[tuple[Msg, Envelope]] = []
        for msg, env in decoded:
            if f"{durable}/{env.id}" in done:
                await msg.ack()
                MESSAGES.labels(durable, env.type, "duplicate").inc()
            else:
                todo.append((msg, env))
        return todo

    async def _commit_batch(self, todo: list[tuple[Msg, Envelope]]) -> None:
        durable = self.spec.durable
        started = time.perf_counter()
        out = PendingMessages(self.bus.service)
        # The same event twice in one fetch is applied once.
        unique = list({env.id: env for _, env in todo}.values())
        # A redelivery may have been handled before: its marker goes first and stops the batch at once.
        markers_last = self.one_request and all(_first_delivery(msg) for msg, _ in todo)
        taken: list[str] = []
        try:
            async with self._guard(), self.client.start_session() as session:
                async with await session.start_transaction():
                    now = datetime.now(UTC)
                    markers = [{"_id": f"{durable}/{env.id}", "at": now} for env in unique]
                    if not markers_last:
                        await self._insert_markers(markers, session)
                    ctx = HandlerContext(self.db, session, out, batch=unique)
                    for env in unique:
                        job_token = current_job_key.set(env.subject or None)
                        try:
                            with span_from_headers(f"handle {env.type}", env.headers, CONSUMER):
                                await self.spec.handler(ctx, env)
                        finally:
                            current_job_key.reset(job_token)
                    await self._end(ctx, markers, markers_last, taken)
        except BaseException:
            self.outbox.restore_sent(taken)
            raise
        ctx.committed()
        await self.outbox.publish_after_commit(out.docs)
        elapsed = (time.perf_counter() - started) / len(todo)
        for msg, env in todo:
            await msg.ack()
            MESSAGES.labels(durable, env.type, "ok").inc()
            HANDLE_SECONDS.labels(durable, env.type).observe(elapsed)

    async def _insert_markers(self, markers: list[dict[str, Any]], session: AsyncClientSession) -> None:
        try:
            await self.db[PROCESSED].insert_many(markers, session=session)
        except (DuplicateKeyError, BulkWriteError) as exc:
            if not _duplicate_key(exc):
                raise
            raise _AlreadyProcessed from exc

    async def _end(
        self, ctx: HandlerContext, markers: list[dict[str, Any]], markers_last: bool, taken: list[str]
    ) -> None:
        try:
            await end_transaction(ctx, self.client, self.outbox, markers, markers_last, taken)
        except MarkerExists as exc:
            raise _AlreadyProcessed from exc

    async def _handle(self, msg: Msg) -> None:
        durable = self.spec.durable
        try:
            env = decode(msg.headers, msg.data)
        except MalformedMessage as exc:
            log.error("malformed message dead-lettered", extra={"consumer": durable, "error": str(exc)})
            await self.bus.dead_letter(durable, dict(msg.headers or {}), msg.data, f"malformed: {exc}")
            await msg.ack()
            MESSAGES.labels(durable, "malformed", "dead_lettered").inc()
            return

        if not await self._ack_ignored([(msg, env)]):
            return
        job_token = current_job_key.set(env.subject or None)
        started = time.perf_counter()
        try:
            with span_from_headers(f"handle {env.type}", env.headers, CONSUMER):
                # A write conflict is retried here at once, as a batch's is: a nak would let the messages
                # behind this one overtake it (a release handled before the allocation it releases).
                markers_last = self.one_request and _first_delivery(msg)
                outcome = await retry_transient(lambda: self._apply(env, markers_last=markers_last))
            await msg.ack()
        except Exception as exc:
            delivered = msg.metadata.num_delivered or 1
            # A service that did not answer an RPC is restarting or busy: also a lag that resolves itself.
            transient = is_transient(exc) or isinstance(exc, ServiceUnavailableError)
            # A transient failure (a write conflict, a lost connection) is retried for as long as it lasts;
            # only a handler that fails for another reason runs out of deliveries.
            if not transient and delivered >= self.spec.max_deliver:
                log.error(
                    "handler kept failing; message dead-lettered",
                    extra={"consumer": durable, "type": env.type, "id": env.id, "error": repr(exc)},
                )
                await self.bus.dead_letter(durable, env.headers, msg.data, repr(exc))
                await msg.ack()
                outcome = "dead_lettered"
            else:
                delay = min(self.spec.nak_base_delay_s * 2 ** (delivered - 1), 5.0 if transient else 30.0)
                log.warning(
                    "handler failed; will retry",
                    extra={
                        "consumer": durable,
                        "type": env.type,
                        "delivery": delivered,
                        "transient": transient,
                        "error": repr(exc),
                    },
                )
                await msg.nak(delay=delay)
                outcome = "retried"
        finally:
            current_job_key.reset(job_token)
        MESSAGES.labels(durable, env.type, outcome).inc()
        HANDLE_SECONDS.labels(durable, env.type).observe(time.perf_counter() - started)

    async def replay(self, req: ReplayDeadLetterRequest) -> ReplayDeadLetterReply:
        """Handle one of this consumer's dead letters again, exactly as a live delivery; then drop it."""
        letter = await dead_letters.fetch(self.bus, req.seq)
        if letter.subject != dead_letters.subject_of(self.bus.service, self.spec.durable):
            raise NoDeadLetterError(f"Dead letter {req.seq} is not found for consumer {self.spec.durable}.")
        env = letter.envelope()
        job_token = current_job_key.set(env.subject or None)
        try:
            with span_from_headers(f"replay {env.type}", env.headers):
                outcome = await retry_transient(lambda: self._apply(env))
        except Exception as exc:
            log.warning(
                "dead letter replay failed; it stays",
                extra={"consumer": self.spec.durable, "seq": req.seq, "error": repr(exc)},
            )
            raise DeadLetterReplayError(
                f"dead letter {req.seq} failed again in {self.spec.durable}: {exc!r}"[:2000]
            ) from None
        finally:
            current_job_key.reset(job_token)
        await dead_letters.remove(self.bus, req.seq)
        log.info(
            "dead letter replayed",
            extra={"consumer": self.spec.durable, "seq": req.seq, "type": env.type, "by": req.actor},
        )
        MESSAGES.labels(self.spec.durable, env.type, f"replay_{outcome}").inc()
        return ReplayDeadLetterReply(
            outcome="duplicate" if outcome == "duplicate" else "replayed",
            message_type=env.type,
            message_id=env.id,
        )

    async def _apply(self, env: Envelope, markers_last: bool = False) -> str:
        key = f"{self.spec.durable}/{env.id}"
        out = PendingMessages(self.bus.service)
        taken: list[str] = []
        try:
            async with self._guard(), self.client.start_session() as session:
                async with await session.start_transaction():
                    markers = [{"_id": key, "at": datetime.now(UTC)}]
                    if not markers_last:
                        # The marker first: a message handled before stops here, without a read beforehand.
                        await self._insert_markers(markers, session)
                    ctx = HandlerContext(self.db, session, out, batch=(env,))
                    await self.spec.handler(ctx, env)
                    await self._end(ctx, markers, markers_last, taken)
        except _AlreadyProcessed:
            self.outbox.restore_sent(taken)
            return "duplicate"
        except BaseException:
            self.outbox.restore_sent(taken)
            raise
        ctx.committed()
        await self.outbox.publish_after_commit(out.docs)
        return "ok"


async def end_transaction(
    ctx: HandlerContext,
    client: AsyncMongoClient[dict[str, Any]],
    outbox: Outbox,
    markers: Sequence[dict[str, Any]],
    one_request: bool,
    taken: list[str],
) -> None:
    """A transaction's last writes: the ones left to its end, then the processed ``markers`` (none, or
    written first, unless ``one_request``) and the outbox's messages, with the deletion of messages
    published since, in one request where the server can (``one_request``). ``taken`` gets the ids
    deleted here, for the caller to give back (``Outbox.restore_sent``) if the transaction aborts. Raises
    ``MarkerExists`` when a marker is there already."""
    await ctx.flush(keep_final_writes=one_request)
    if not one_request:
        await outbox.stage(ctx.out, ctx.session)
        return
    taken.extend(outbox.take_sent())
    await write_in_one_request(
        client, ctx.session, ctx.db.name, PROCESSED, markers, OUTBOX, ctx.out.docs, taken, ctx.final_writes
    )


def _first_delivery(msg: Msg) -> bool:
    return (msg.metadata.num_delivered or 1) <= 1


class _AlreadyProcessed(Exception):
    """The message's processed marker exists: it was handled before (a redelivery)."""


def _duplicate_key(exc: DuplicateKeyError | BulkWriteError) -> bool:
    if isinstance(exc, DuplicateKeyError):
        return True
    errors = exc.details.get("writeErrors", []) if exc.details else []
    return any(e.get("code") == 11000 for e in errors)
