"""The transactional outbox: messages written in the same transaction as the state they follow from.

A handler never publishes directly. It adds messages to the outbox inside its database transaction;
after the commit they are published (with their fixed ids, so JetStream drops a second copy) and then
deleted. A crash between commit and publish leaves them in the outbox, and the relay sends them at the
next start: nothing is lost, and a copy sent twice is dropped by JetStream or by the consumers' processed
markers.

The committer publishes what it committed straight from memory (no read back) while the outbox holds
nothing older that is still unsent; after a failed publish, and at start, the oldest-first flush of the
whole collection takes over until it succeeds. The deletion of published messages is batched in the
background: it is off the handler's path, and one delete serves every commit of the moment.

A message that no retry can publish (larger than the server's ``max_payload``, or than the body a
consumer accepts) would otherwise stop every message after it: it is moved out of the outbox to the
``outbox_dead_letters`` collection (whole, with the error) and a notice with the error goes to the
service's dead letters (``pai.dlq.<service>.outbox``, where an admin lists them), then the rest goes on.
A failure of the bus itself is not such a refusal: it leaves everything in place for the next try.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from nats.errors import MaxPayloadError
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from pai_common.bus import Bus
from pai_common.contract.base import Command, Event, command_subject, event_subject
from pai_common.dead_letters import (
    CONSUMER_HEADER,
    ERROR_HEADER,
    UNPUBLISHED_COLLECTION,
    UNPUBLISHED_HEADER,
    subject_of,
)
from pai_common.envelope import H_ID, H_MSG_ID, H_TYPE, MAX_BODY_BYTES, encode

log = logging.getLogger(__name__)

COLLECTION = "outbox"
DEAD_COLLECTION = UNPUBLISHED_COLLECTION
# The consumer name an outbox's dead letters are filed under (a node agent, allowed only its own
# durable's dead-letter subject, passes that durable instead).
DEAD_LETTER_DURABLE = "outbox"
_HEADER_CUT = 1000
_seq = itertools.count()


@dataclass
class PendingMessages:
    """Messages a handler decided to send; written to the outbox when its transaction commits."""

    source: str
    docs: list[dict[str, Any]] = field(default_factory=list)

    def event(self, event: Event, msg_id: str | None = None) -> str:
        return self._add(event_subject(event.TYPE), event, msg_id)

    def command(self, command: Command, target: str, msg_id: str | None = None) -> str:
        return self._add(command_subject(command.TYPE, target), command, msg_id)

    def _add(self, subject: str, message: Event | Command, msg_id: str | None) -> str:
        mid, headers, payload = encode(message, self.source, msg_id)
        # time_ns plus a process-wide counter keeps the publish order of one handler's messages.
        order = (time.time_ns() // 1000) * 1000 + next(_seq) % 1000
        self.docs.append(
            {"_id": mid, "order": order, "subject": subject, "headers": headers, "data": payload}
        )
        return mid


def wire_size(headers: dict[str, str], payload: bytes) -> int:
    """The bytes the server counts against ``max_payload``: the header block as nats-py writes it
    (``NATS/1.0``, one ``key: value`` line each, a blank line) plus the body."""
    header_block = 10 + sum(len(k.encode()) + len(v.encode()) + 4 for k, v in headers.items()) + 2
    return header_block + len(payload)


def refusal(headers: dict[str, str], payload: bytes, max_payload: int) -> str | None:
    """Why no retry can ever publish this message, or None if it can be tried."""
    size = wire_size(headers, payload)
    if size > max_payload:
        return f"message of {size} bytes exceeds the bus's max_payload of {max_payload}"
    if len(payload) > MAX_BODY_BYTES:
        return f"body of {len(payload)} bytes exceeds {MAX_BODY_BYTES}, the most a consumer accepts"
    return None


class Outbox:
    def __init__(
        self, db: AsyncDatabase[dict[str, Any]], bus: Bus, dead_letter_durable: str = DEAD_LETTER_DURABLE
    ) -> None:
        self.collection = db[COLLECTION]
        self.dead = db[DEAD_COLLECTION]
        self.dead_letter_durable = dead_letter_durable
        self.bus = bus
        self._lock = asyncio.Lock()
        # Something older than the next commit may still be unsent (at start, after a failed publish):
        # then every flush goes through the collection, oldest first, until one empties it.
        self._backlog = True
        # Published, not yet deleted; the relay deletes them in one write.
        self._sent: set[str] = set()
        self._sent_signal = asyncio.Event()

    async def stage(self, pending: PendingMessages, session: AsyncClientSession | None) -> None:
        if pending.docs:
            await self.collection.insert_many(pending.docs, session=session, ordered=True)

    async def publish_committed(self, docs: Sequence[dict[str, Any]]) -> None:
        """Publish what a transaction just committed. Raises when the bus fails: the messages stay in the
        outbox for the relay, and the flushes that follow read the collection until it is empty."""
        if not docs:
            return
        async with self._lock:
            if self._backlog:
                await self._flush_locked(chunk=128)
                return
            try:
                await self._publish(docs)
            except BaseException:
                self._backlog = True
                raise
            self._sent.update(d["_id"] for d in docs)
            self._sent_signal.set()

    async def publish_after_commit(self, docs: Sequence[dict[str, Any]]) -> None:
        """``publish_committed`` for a committer that goes on whatever happens: the state is committed,
        and what could not be published now the relay sends later."""
        try:
            await self.publish_committed(docs)
        except Exception as exc:
            log.warning("outbox publish failed after commit", extra={"error": repr(exc)})

    async def flush(self, chunk: int = 128) -> int:
        """Publish everything in the outbox, oldest first; returns how many were sent."""
        async with self._lock:
            return await self._flush_locked(chunk)

    async def _flush_locked(self, chunk: int) -> int:
        """A chunk's publishes are pipelined on the one connection (written in order, acks awaited
        together), then deleted in one write."""
        sent = 0
        self._backlog = True
        # What was published already goes first, so that it is not sent again.
        await self.delete_sent()
        while True:
            docs = await self.collection.find({}).sort("order", 1).limit(chunk).to_list()
            if not docs:
                self._backlog = False
                return sent
            await self._publish(docs)
            await self.collection.delete_many({"_id": {"$in": [d["_id"] for d in docs]}})
            sent += len(docs)

    async def _publish(self, docs: Sequence[dict[str, Any]]) -> None:
        # Checked before sending: a message over the server's limit that reached it would close the
        # connection (nats-py checks the body alone, the server headers and body).
        live: list[dict[str, Any]] = []
        for doc in docs:
            why = refusal(dict(doc["headers"]), bytes(doc["data"]), self.bus.max_payload)
            if why is None:
                live.append(doc)
            else:
                await self._dead_letter(doc, why)
        await asyncio.gather(*(self._publish_one(d) for d in live))

    async def _publish_one(self, doc: dict[str, Any]) -> None:
        try:
            await self.bus.publish_raw(doc["subject"], dict(doc["headers"]), bytes(doc["data"]))
        except MaxPayloadError as exc:
            # The server's limit went down since (a reconnection to another server).
            await self._dead_letter(doc, f"refused by the bus: {exc}")

    async def _dead_letter(self, doc: dict[str, Any], error: str) -> None:
        """Move a message that can never be published out of the outbox, with why. The notice goes first
        and carries a fixed id: a failure at any step leaves the message in the outbox, and the next try
        repeats the steps without a second notice (within the stream's two-minute duplicate window)."""
        # Header values cut short: the notice itself must fit, whatever made the message too big.
        headers = {k: v[:_HEADER_CUT] for k, v in dict(doc["headers"]).items() if k != H_MSG_ID}
        size = len(bytes(doc["data"]))
        headers[ERROR_HEADER] = error
        headers[CONSUMER_HEADER] = self.dead_letter_durable
        headers[UNPUBLISHED_HEADER] = doc["subject"]
        headers[H_MSG_ID] = f"outbox-dead:{doc['_id']}"
        notice = {
            "error": error,
            "bytes": size,
            "subject": doc["subject"],
            "keptIn": f"the {self.bus.service} database's {DEAD_COLLECTION} collection, _id {doc['_id']}",
        }
        await self.bus.publish_raw(
            subject_of(self.bus.service, self.dead_letter_durable), headers, json.dumps(notice).encode()
        )
        kept = {**doc, "error": error, "deadLetteredAt": datetime.now(UTC)}
        await self.dead.replace_one({"_id": doc["_id"]}, kept, upsert=True)
        await self.collection.delete_one({"_id": doc["_id"]})
        log.error(
            "outbox message can never be published: dead-lettered",
            extra={
                "message_id": headers.get(H_ID, ""),
                "type": headers.get(H_TYPE, ""),
                "subject": doc["subject"],
                "bytes": size,
                "error": error,
            },
        )

    def take_sent(self) -> list[str]:
        """What was published and is not deleted yet, for a transaction that deletes it in its own request
        (``pai_common.bookkeeping``); ``restore_sent`` gives it back unless that transaction commits."""
        ids = list(self._sent)
        self._sent.clear()
        return ids

    def restore_sent(self, ids: Sequence[str]) -> None:
        self._sent.update(ids)

    async def delete_sent(self) -> int:
        """Delete what was published; a failure keeps the ids for the next try. The ids leave ``_sent``
        before the delete: a transaction that ``take_sent`` meanwhile must not delete them too (its delete
        would meet this one's as a write conflict, and its messages would be handled again)."""
        if not self._sent:
            return 0
        ids = list(self._sent)
        self._sent.difference_update(ids)
        try:
            await self.collection.delete_many({"_id": {"$in": ids}})
        except BaseException:
            self._sent.update(ids)
            raise
        return len(ids)

    async def relay_forever(self, interval_s: float = 2.0, delete_after_s: float = 0.1) -> None:
        """Delete what was published shortly after (one write for every commit of the moment); every
        ``interval_s``, send what a failed publish left behind (the bus was down, the process restarted)."""
        next_flush = time.monotonic() + interval_s
        while True:
            # Not asyncio.wait_for: on Python 3.11 it swallows a cancellation that comes as the event is
            # set (a commit published just as the service stops), and the relay would never stop.
            signalled = asyncio.ensure_future(self._sent_signal.wait())
            try:
                await asyncio.wait({signalled}, timeout=max(0.0, next_flush - time.monotonic()))
            finally:
                signalled.cancel()
            if self._sent_signal.is_set():
                await asyncio.sleep(delete_after_s)
            self._sent_signal.clear()
            try:
                # Not under the lock: publishing goes on meanwhile (a flush that reads a message being
                # deleted sends it again, and JetStream drops the copy).
                await self.delete_sent()
                if time.monotonic() >= next_flush:
                    next_flush = time.monotonic() + interval_s
                    await self.flush()
            except Exception as exc:
                log.warning("outbox relay failed, will retry", extra={"error": repr(exc)})
                await asyncio.sleep(min(interval_s, 0.5))
