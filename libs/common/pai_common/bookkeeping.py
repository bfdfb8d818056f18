"""A consumer transaction's bookkeeping in one database request.

Every transaction a consumer commits writes, besides what its handlers change, the processed markers of
the messages it applies and the outbox's copies of the messages they send; and the outbox deletes what
it published before. Each was a request of its own: under a burst of trivial jobs about 2.4 marker
inserts, 2.4 outbox inserts and 1.1 outbox deletes per job out of 22-23 database requests, each costing
0.3-0.5 ms in the server and about 0.3 ms in the client whatever it carried (issue 17).

MongoDB 8.0's ``bulkWrite`` command writes to several collections in one request, inside a transaction
too. ``write_in_one_request`` sends, once the handlers ran: the markers, the new messages, and the
deletion of messages published since the last such request (``Outbox.take_sent``). Writing the markers
last instead of first changes one thing: a message handled before (its marker exists) is found out after
its handlers ran, not before; the transaction then aborts as a write conflict's does, nothing of it
stays, and the consumer acks that message as a duplicate. Handlers must stand a run that aborts anyway
(any transaction may meet a write conflict at commit). Consumers keep the markers first for a batch that
holds a redelivery, where a duplicate is likely.

The same request carries a transaction's final writes (``FinalWrite``): what its handlers left to its end
and never read back (the jobs service's list entries, counters and job events, the orchestrator's
frameworks and their history, the scheduler's state, diagnoses, audit entries), ahead of the markers. A
final write may check how many documents its updates matched (the orchestrator's frameworks are replaced
only at the version it read).

A server before 8.0 (wire version 25) has no such command: ``supports_one_request`` says so once (a
consumer asks at start, ``ServiceApp.transaction`` at its first use), and the bookkeeping is written as
before, and each final write as one bulk write of its own (``pai_common.consumer.end_transaction``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import ClientBulkWriteException
from pymongo.operations import DeleteMany, DeleteOne, InsertOne, ReplaceOne, UpdateMany, UpdateOne

WriteOp = (
    InsertOne[dict[str, Any]] | UpdateOne | UpdateMany | ReplaceOne[dict[str, Any]] | DeleteOne | DeleteMany
)

# The wire version of MongoDB 8.0, the first with the multi-collection ``bulkWrite`` command.
ONE_REQUEST_WIRE_VERSION = 25


class MarkerExists(Exception):
    """A message of the transaction was handled before: its processed marker is there."""


@dataclass(frozen=True)
class FinalWrite:
    """Writes to one collection that a transaction sends at its end, in order. Each op names its
    namespace (``HandlerContext.namespace``), which a collection's own ``bulk_write`` ignores. ``check``,
    when given, is called with how many documents the updates and replaces matched, and raises to abort
    the transaction."""

    collection: str
    ops: Sequence[WriteOp]
    check: Callable[[int], None] | None = None

    async def write_alone(self, db: AsyncDatabase[dict[str, Any]], session: AsyncClientSession) -> None:
        """As one bulk write of its own (a server without the one-request ``bulkWrite``)."""
        if not self.ops:
            return
        result = await db[self.collection].bulk_write(list(self.ops), ordered=True, session=session)
        if self.check is not None:
            self.check(result.matched_count)


async def supports_one_request(client: AsyncMongoClient[dict[str, Any]]) -> bool:
    hello = await client.admin.command("hello")
    return int(hello.get("maxWireVersion", 0)) >= ONE_REQUEST_WIRE_VERSION


async def write_in_one_request(
    client: AsyncMongoClient[dict[str, Any]],
    session: AsyncClientSession,
    db: str,
    processed: str,
    markers: Sequence[dict[str, Any]],
    outbox: str,
    messages: Sequence[dict[str, Any]],
    published: Sequence[str],
    final: Sequence[FinalWrite] = (),
) -> None:
    """Send the ``final`` writes, insert ``markers`` into ``db.processed`` and ``messages`` into
    ``db.outbox``, and delete the ``published`` messages from it, in one ordered request within
    ``session``'s transaction, then run the final writes' checks. Raises ``MarkerExists`` when a marker
    is there already; a failure of the request itself (a write conflict, a lost connection) is raised as
    PyMongo raises it for a single write, labels included."""
    ops: list[WriteOp] = [op for write in final for op in write.ops]
    first_marker = len(ops)
    ops += [
        *(InsertOne(marker, namespace=f"{db}.{processed}") for marker in markers),
        *(InsertOne(message, namespace=f"{db}.{outbox}") for message in messages),
    ]
    if published:
        ops.append(DeleteMany({"_id": {"$in": list(published)}}, namespace=f"{db}.{outbox}"))
    if not ops:
        return
    checked = any(write.check is not None for write in final)
    try:
        result = await client.bulk_write(ops, session=session, ordered=True, verbose_results=checked)
    except ClientBulkWriteException as exc:
        if isinstance(exc.error, Exception):
            # The request failed as a whole: what a single write would have raised.
            raise exc.error from exc
        errors: list[Any] = list(exc.write_errors or [])
        markers_at = range(first_marker, first_marker + len(markers))
        if any(e.get("code") == 11000 and int(e.get("idx", -1)) in markers_at for e in errors):
            raise MarkerExists from exc
        raise
    if checked:
        # An upsert that inserted counts as one match here, as in no collection's own bulk write.
        matched = {
            i: 0 if r.upserted_id is not None else r.matched_count for i, r in result.update_results.items()
        }
        at = 0
        for write in final:
            if write.check is not None:
                write.check(sum(matched.get(i, 0) for i in range(at, at + len(write.ops))))
            at += len(write.ops)
