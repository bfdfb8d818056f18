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

A server before 8.0 (wire version 25) has no such command: ``supports_one_request`` says so once at start,
and the consumer writes its bookkeeping as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import ClientBulkWriteException
from pymongo.operations import DeleteMany, InsertOne

# The wire version of MongoDB 8.0, the first with the multi-collection ``bulkWrite`` command.
ONE_REQUEST_WIRE_VERSION = 25


class MarkerExists(Exception):
    """A message of the transaction was handled before: its processed marker is there."""


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
) -> None:
    """Insert ``markers`` into ``db.processed`` and ``messages`` into ``db.outbox``, and delete the
    ``published`` messages from it, in one ordered request within ``session``'s transaction. Raises
    ``MarkerExists`` when a marker is there already; a failure of the request itself (a write conflict,
    a lost connection) is raised as PyMongo raises it for a single write, labels included."""
    ops: list[InsertOne[dict[str, Any]] | DeleteMany] = [
        *(InsertOne(marker, namespace=f"{db}.{processed}") for marker in markers),
        *(InsertOne(message, namespace=f"{db}.{outbox}") for message in messages),
    ]
    if published:
        ops.append(DeleteMany({"_id": {"$in": list(published)}}, namespace=f"{db}.{outbox}"))
    if not ops:
        return
    try:
        await client.bulk_write(ops, session=session, ordered=True)
    except ClientBulkWriteException as exc:
        if isinstance(exc.error, Exception):
            # The request failed as a whole: what a single write would have raised.
            raise exc.error from exc
        errors: list[Any] = list(exc.write_errors or [])
        if any(e.get("code") == 11000 and int(e.get("idx", len(markers))) < len(markers) for e in errors):
            raise MarkerExists from exc
        raise
