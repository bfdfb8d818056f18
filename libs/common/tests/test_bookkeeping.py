"""A consumer transaction's final writes, markers, new outbox messages and the outbox's deletions in one
request, against the MongoDB-wire server the platform runs (SecantusDB, which answers as MongoDB 8)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from pymongo import AsyncMongoClient, InsertOne, ReplaceOne, UpdateOne
from pymongo.errors import ClientBulkWriteException

from pai_common.bookkeeping import FinalWrite, MarkerExists, supports_one_request, write_in_one_request
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


class Matched:
    """A final write's check that keeps what it was told, and refuses fewer than ``wanted``."""

    def __init__(self, wanted: int) -> None:
        self.wanted = wanted
        self.told: list[int] = []

    def __call__(self, matched: int) -> None:
        self.told.append(matched)
        if matched < self.wanted:
            raise RuntimeError(f"matched {matched} of {self.wanted}")


def versioned(db: str, version: int, *ids: str) -> list[ReplaceOne[dict[str, Any]]]:
    return [
        ReplaceOne({"_id": i, "v": version}, {"v": version + 1}, namespace=f"{db}.frameworks") for i in ids
    ]


async def test_final_writes_go_first_in_the_request_and_their_checks_count_only_their_own_matches(
    client: AsyncMongoClient[dict[str, Any]],
) -> None:
    db = f"t{uuid.uuid4().hex[:8]}"
    await client[db].frameworks.insert_many([{"_id": "a", "v": 1}, {"_id": "b", "v": 1}])
    await client[db].counts.insert_one({"_id": "n", "n": 1})
    frameworks, counts = Matched(2), Matched(0)
    final = [
        FinalWrite("frameworks", versioned(db, 1, "a", "b"), frameworks),
        FinalWrite("history", [InsertOne({"_id": "h1"}, namespace=f"{db}.history")]),
        # An upsert that inserts matches nothing; one that finds its document matches one.
        FinalWrite(
            "counts",
            [
                UpdateOne({"_id": "n"}, {"$inc": {"n": 1}}, upsert=True, namespace=f"{db}.counts"),
                UpdateOne({"_id": "m"}, {"$inc": {"n": 1}}, upsert=True, namespace=f"{db}.counts"),
            ],
            counts,
        ),
    ]
    async with client.start_session() as session:
        async with await session.start_transaction():
            await write_in_one_request(
                client, session, db, "processed", [marker(1)], "outbox", [message(1)], [], final
            )
    assert (frameworks.told, counts.told) == ([2], [1])
    assert {d["_id"]: d["v"] async for d in client[db].frameworks.find()} == {"a": 2, "b": 2}
    assert await ids(client, db, "history") == {"h1"}
    assert {d["_id"]: d["n"] async for d in client[db].counts.find()} == {"n": 2, "m": 1}
    assert await ids(client, db, "processed") == {"c/m1"}


async def test_a_final_writes_check_that_refuses_aborts_the_transaction(
    client: AsyncMongoClient[dict[str, Any]],
) -> None:
    db = f"t{uuid.uuid4().hex[:8]}"
    await client[db].frameworks.insert_many([{"_id": "a", "v": 1}, {"_id": "b", "v": 2}])
    frameworks = Matched(2)
    with pytest.raises(RuntimeError, match="matched 1 of 2"):
        async with client.start_session() as session:
            async with await session.start_transaction():
                final = [FinalWrite("frameworks", versioned(db, 1, "a", "b"), frameworks)]
                await write_in_one_request(
                    client, session, db, "processed", [marker(1)], "outbox", [], [], final
                )
    assert frameworks.told == [1]
    assert {d["_id"]: d["v"] async for d in client[db].frameworks.find()} == {"a": 1, "b": 2}
    assert await ids(client, db, "processed") == set()


async def test_a_marker_behind_final_writes_is_still_known_and_their_own_duplicate_is_not_a_marker(
    client: AsyncMongoClient[dict[str, Any]],
) -> None:
    db = f"t{uuid.uuid4().hex[:8]}"
    await client[db].processed.insert_one(marker(2))
    await client[db].history.insert_one({"_id": "h1"})
    history = f"{db}.history"
    with pytest.raises(MarkerExists):
        async with client.start_session() as session:
            async with await session.start_transaction():
                final = [
                    FinalWrite("history", [InsertOne({"_id": f"h{n}"}, namespace=history) for n in (2, 3)])
                ]
                await write_in_one_request(
                    client, session, db, "processed", [marker(2)], "outbox", [], [], final
                )
    with pytest.raises(ClientBulkWriteException) as caught:
        async with client.start_session() as session:
            async with await session.start_transaction():
                final = [FinalWrite("history", [InsertOne({"_id": "h1"}, namespace=history)])]
                await write_in_one_request(
                    client, session, db, "processed", [marker(1)], "outbox", [], [], final
                )
    assert not isinstance(caught.value, MarkerExists)
    assert await ids(client, db, "history") == {"h1"}
    assert await ids(client, db, "processed") == {"c/m2"}


async def test_a_final_write_alone_is_one_bulk_write_of_its_collection_with_its_check(
    client: AsyncMongoClient[dict[str, Any]],
) -> None:
    """What a server without the one-request ``bulkWrite`` gets: the ops' namespaces are left aside."""
    db = f"t{uuid.uuid4().hex[:8]}"
    await client[db].frameworks.insert_many([{"_id": "a", "v": 1}, {"_id": "b", "v": 2}])
    frameworks = Matched(1)
    async with client.start_session() as session:
        async with await session.start_transaction():
            await FinalWrite("frameworks", versioned(db, 1, "a"), frameworks).write_alone(client[db], session)
            with pytest.raises(RuntimeError, match="matched 0 of 1"):
                await FinalWrite("frameworks", versioned(db, 1, "b"), frameworks).write_alone(
                    client[db], session
                )
    assert frameworks.told == [1, 0]
