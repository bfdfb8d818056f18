"""A deleteMany or updateMany outside a transaction that meets an open transaction's write lets that
transaction go on (pai_common.mongo_conflict_waits), on the embedded server as `pai up` runs it.

Each test starts a server of its own: on SecantusDB alone the transaction's next statement waited for
ever, and the server with it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.collection import Collection

from pai_common.embedded import ServerProcess, start_mongo

# Long enough for the other client's statement to have met the conflict and be waiting to retry.
MEET_S = 0.3


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[ServerProcess]:
    server = start_mongo(tmp_path / "mongo")
    yield server
    server.stop()


def _in_background(work: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(work())
        except Exception as exc:  # reported by the test's assertion on the outcome
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


@pytest.mark.parametrize("kind", ["delete_many", "update_many"])
def test_a_chunked_write_meeting_an_open_transaction_lets_it_go_on_and_then_completes(
    own_server: ServerProcess, kind: str
) -> None:
    # A socket timeout: on the unpatched server the transaction's second statement never got an answer.
    mine: MongoClient[dict[str, Any]] = MongoClient(own_server.url, socketTimeoutMS=15_000)
    other: MongoClient[dict[str, Any]] = MongoClient(own_server.url, socketTimeoutMS=15_000)
    try:
        outbox: Collection[dict[str, Any]] = mine["pai_runtime"]["outbox"]
        outbox.insert_many([{"_id": i, "n": 0} for i in range(1, 5)])
        theirs = other["pai_runtime"]["outbox"]
        with mine.start_session() as session:
            session.start_transaction()
            # The open transaction's write, which the other client's statement will conflict with.
            outbox.update_one({"_id": 1}, {"$inc": {"n": 10}}, session=session)
            if kind == "delete_many":
                thread, outcome = _in_background(
                    lambda: theirs.delete_many({"_id": {"$in": [1, 2]}}).deleted_count
                )
            else:
                thread, outcome = _in_background(
                    lambda: theirs.update_many({}, {"$inc": {"n": 1}}).modified_count
                )
            time.sleep(MEET_S)
            assert thread.is_alive()  # waiting for the transaction, which has not ended
            # The transaction's next statement on the same collection, then its commit.
            started = time.monotonic()
            outbox.insert_one({"_id": 9, "n": 0}, session=session)
            session.commit_transaction()
            assert time.monotonic() - started < 10
        thread.join(15)
        assert not thread.is_alive()
        docs = {d["_id"]: d["n"] for d in outbox.find()}
        if kind == "delete_many":
            # Both deleted, the transaction's update committed first; its insert is kept.
            assert outcome == [2]
            assert docs == {3: 0, 4: 0, 9: 0}
        else:
            # Every document the statement saw incremented once, after the transaction's own increment.
            assert outcome == [4]
            assert docs == {1: 11, 2: 1, 3: 1, 4: 1, 9: 0}
    finally:
        mine.close()
        other.close()
