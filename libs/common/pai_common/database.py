"""Per-service MongoDB access through PyMongo's async API."""

from __future__ import annotations

from typing import Any

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

Doc = dict[str, Any]


def connect_mongo(url: str) -> AsyncMongoClient[Doc]:
    return AsyncMongoClient(url, serverSelectionTimeoutMS=10_000, tz_aware=True, uuidRepresentation="standard")


def service_database(client: AsyncMongoClient[Doc], service: str) -> AsyncDatabase[Doc]:
    """Each service owns exactly one database, ``pai_<service>``, and touches no other."""
    return client[f"pai_{service}"]
