"""A consumer transaction's markers, new outbox messages and the outbox's deletions in one request, against
the MongoDB-wire server the platform runs (SecantusDB, which answers as MongoDB 8)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.errors import ClientBulkWriteException

from pai_common.bookkeeping import MarkerExists, supports_one_request, write_in_one_request
from pai_common.database import connect_mongo, is_transient
from pai_common.embedded import ServerProcess


@pytest.fixture
async def client(mongo_server: ServerProcess) -> AsyncIterator[AsyncMongoClient[dict[str, Any]]]:
    client = connect_mongo(mongo_server.url)
    yield client
    await client.close()


def marker(n: int) -> dict[str, Any]:
    return {"_id": f"c/m{n}", "at": datetime.now(UTC)}


def message(n: int) -> dict[str, Any]:
    return {"_id": f"msg{n}", "order": n, "subject": "pai.evt.x", "headers": {}, "data": b"{}"}


async def ids(client: AsyncMongoClient[dict[str, Any]], db: str, coll: str) -> set[str]:
    return {d["_id"] async for d in client[db][coll].find({}, {"_id": 1})}


async def test_the_platforms_server_takes_the_bookkeeping_in_one_request(
    client: AsyncMongoClient[dict[str, Any]],
) -> None:
    assert await supports_one_request(client)


async def test_markers_and_messages_are_written_and_the_published_deleted_in_the_transaction(
    client: AsyncMongoClient[dict[str, Any]],
) -> None:
    db = f"t{uuid.uuid4().hex[:8]}"
    await client[db].outbox.insert_many([message(1), message(2), message(3)])
    async with client.start_session() as session:
        async with await session.start_transaction():
            await client[db].state.insert_one({"_id": "s"}, session=session)
            await write_in_one_request(
                client,
                session,
                db,
                "processed",
                [marker(1), marker(2)],
                "outbox",
                [message(4)],
                ["msg1", "msg3"],
            )
            # Nothing shows outside the transaction before it commits.
            assert await ids(client, db, "processed") == set()
    assert await ids(client, db, "processed") == {"c/m1", "c/m2"}
    assert await ids(client, db, "outbox") == {"msg2", "msg4"}
    assert await ids(client, db, "state") == {"s"}


async def test_a_marker_that_exists_aborts_the_whole_transaction(
    client: AsyncMongoClient[dict[str, Any]],
) -> None:
    db = f"t{uuid.uuid4().hex[:8]}"
    await client[db].processed.insert_one(marker(2))
    await client[db].outbox.insert_one(message(1))
    with pytest.raises(MarkerExists):
        async with client.start_session() as session:
            async with await session.start_transaction():
                await client[db].state.insert_one({"_id": "s"}, session=session)
                await write_in_one_request(
                    client, session, db, "processed", [marker(1), marker(2)], "outbox", [message(5)], ["msg1"]
                )
    assert await ids(client, db, "processed") == {"c/m2"}
    assert await ids(client, db, "outbox") == {"msg1"}
    assert await ids(client, db, "state") == set()


async def test_a_duplicate_message_is_not_taken_for_a_marker(
    client: AsyncMongoClient[dict[str, Any]],
) -> None:
    db = f"t{uuid.uuid4().hex[:8]}"
    await client[db].outbox.insert_one(message(1))
    with pytest.raises(ClientBulkWriteException) as caught:
        async with client.start_session() as session:
            async with await session.start_transaction():
                await write_in_one_request(
                    client, session, db, "processed", [marker(1)], "outbox", [message(1)], []
                )
    assert not isinstance(caught.value, MarkerExists)
    assert await ids(client, db, "processed") == set()


async def test_a_write_conflict_is_raised_as_transient(client: AsyncMongoClient[dict[str, Any]]) -> None:
    """What the consumer's retry looks for: the same failure a single write would raise."""
    db = f"t{uuid.uuid4().hex[:8]}"
    await client[db].outbox.insert_one(message(1))
    async with client.start_session() as holder:
        async with await holder.start_transaction():
            await client[db].outbox.update_one({"_id": "msg1"}, {"$set": {"held": True}}, session=holder)
            with pytest.raises(Exception) as caught:
                async with client.start_session() as session:
                    async with await session.start_transaction():
                        await write_in_one_request(
                            client, session, db, "processed", [marker(1)], "outbox", [], ["msg1"]
                        )
            assert is_transient(caught.value), repr(caught.value)
    assert await ids(client, db, "processed") == set()


async def test_nothing_to_write_sends_nothing(client: AsyncMongoClient[dict[str, Any]]) -> None:
    async with client.start_session() as session:
        async with await session.start_transaction():
            await write_in_one_request(client, session, "unused", "processed", [], "outbox", [], [])
    assert "unused" not in await client.list_database_names()
