"""The transactional outbox: messages written in the same transaction as the state they follow from.

A handler never publishes directly. It adds messages to the outbox inside its database transaction;
after the commit, the relay publishes them (with their fixed ids, so JetStream drops a second copy) and
deletes them. A crash between commit and publish leaves them in the outbox, and the relay sends them at
the next start: nothing is lost, nothing is sent twice.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from pai_common.bus import Bus
from pai_common.contract.base import Command, Event, command_subject, event_subject
from pai_common.envelope import encode

log = logging.getLogger(__name__)

COLLECTION = "outbox"
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


class Outbox:
    def __init__(self, db: AsyncDatabase[dict[str, Any]], bus: Bus) -> None:
        self.collection = db[COLLECTION]
        self.bus = bus
        self._lock = asyncio.Lock()

    async def stage(self, pending: PendingMessages, session: AsyncClientSession | None) -> None:
        if pending.docs:
            await self.collection.insert_many(pending.docs, session=session, ordered=True)

    async def flush(self, chunk: int = 128) -> int:
        """Publish everything in the outbox, oldest first; returns how many were sent.

        A chunk's publishes are pipelined on the one connection (written in order, acks awaited
        together), then deleted in one write.
        """
        async with self._lock:
            sent = 0
            while True:
                docs = await self.collection.find({}).sort("order", 1).limit(chunk).to_list()
                if not docs:
                    return sent
                await asyncio.gather(
                    *(self.bus.publish_raw(d["subject"], dict(d["headers"]), bytes(d["data"])) for d in docs)
                )
                await self.collection.delete_many({"_id": {"$in": [d["_id"] for d in docs]}})
                sent += len(docs)

    async def relay_forever(self, interval_s: float = 2.0) -> None:
        """Catch what a failed flush left behind (the bus was down, the process restarted)."""
        while True:
            try:
                await self.flush()
            except Exception as exc:
                log.warning("outbox relay failed, will retry", extra={"error": repr(exc)})
            await asyncio.sleep(interval_s)
