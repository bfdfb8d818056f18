"""The ``processed`` markers expire: a TTL index on ``at``, replacing the plain index of earlier versions."""

from __future__ import annotations

import uuid

from pymongo import AsyncMongoClient

from pai_common.consumer import PROCESSED, PROCESSED_TTL_S, ensure_processed_ttl
from pai_common.embedded import ServerProcess


def _ttl_of(info: dict[str, dict[str, object]]) -> object:
    at = [spec for spec in info.values() if spec["key"] == [("at", 1)]]
    assert len(at) == 1, info
    return at[0].get("expireAfterSeconds")


async def test_processed_gets_a_ttl_index(mongo_server: ServerProcess) -> None:
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(mongo_server.url)
    db = client[f"pai_ttl_{uuid.uuid4().hex[:8]}"]
    try:
        await ensure_processed_ttl(db)
        await ensure_processed_ttl(db)  # idempotent on every start
        assert _ttl_of(await db[PROCESSED].index_information()) == PROCESSED_TTL_S
        # Longer than PAI_EVENTS keeps a message, so no marker goes while its message could come back.
        assert PROCESSED_TTL_S > 7 * 24 * 3600
    finally:
        await client.drop_database(db.name)
        await client.close()


async def test_the_plain_index_of_earlier_versions_is_replaced(mongo_server: ServerProcess) -> None:
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(mongo_server.url)
    db = client[f"pai_ttl_{uuid.uuid4().hex[:8]}"]
    try:
        await db[PROCESSED].create_index("at")
        assert _ttl_of(await db[PROCESSED].index_information()) is None
        await ensure_processed_ttl(db)
        assert _ttl_of(await db[PROCESSED].index_information()) == PROCESSED_TTL_S
    finally:
        await client.drop_database(db.name)
        await client.close()
