"""Per-service MongoDB access through PyMongo's async API."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import ConnectionFailure, PyMongoError

Doc = dict[str, Any]


def connect_mongo(url: str) -> AsyncMongoClient[Doc]:
    return AsyncMongoClient(
        url, serverSelectionTimeoutMS=10_000, tz_aware=True, uuidRepresentation="standard"
    )


def service_database(client: AsyncMongoClient[Doc], service: str) -> AsyncDatabase[Doc]:
    """Each service owns exactly one database, ``pai_<service>``, and touches no other."""
    return client[f"pai_{service}"]


T = TypeVar("T")


def is_transient(exc: BaseException) -> bool:
    """Failures that go away by themselves: a write conflict, a lost connection, a failover."""
    if isinstance(exc, ConnectionFailure):  # AutoReconnect, NetworkTimeout, server selection
        return True
    if isinstance(exc, PyMongoError):
        return exc.has_error_label("TransientTransactionError") or getattr(exc, "code", None) == 112
    return False


async def retry_transient(
    fn: Callable[[], Awaitable[T]], attempts: int = 12, base_delay_s: float = 0.01, max_delay_s: float = 0.5
) -> T:
    """Run ``fn`` again when MongoDB says the failure is transient (a write conflict between processes).

    The first pauses are short: a conflicting transaction usually commits within milliseconds, and long
    pauses turned a few concurrent writers into seconds of latency. About 3.5 s of patience in all.
    """
    for attempt in range(attempts):
        try:
            return await fn()
        except PyMongoError as exc:
            if not is_transient(exc) or attempt == attempts - 1:
                raise
            await asyncio.sleep(min(base_delay_s * 2**attempt, max_delay_s) * (0.5 + random.random()))
    raise AssertionError("unreachable")
