"""An embedded MongoDB-wire server told to abort its open transactions
(``ServerProcess.release_transactions``) unlocks at once what a killed client's transaction held, instead
of when the server reaps it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pymongo import MongoClient

from pai_common.embedded import launch_mongo

# Far past every guard below: the server never reaps the transaction by itself during the test.
NEVER_REAPED = ["--transaction-lifetime-s", "600"]


def test_a_release_unlocks_what_a_killed_clients_transaction_held(
    tmp_path: Path, kill_a_client_in_a_transaction: Callable[[str, str, str, int], None]
) -> None:
    server = launch_mongo(tmp_path, options=NEVER_REAPED)
    server.wait_listening(60)
    try:
        with MongoClient(server.url) as setup:
            setup["pai_jobs"]["jobs"].insert_many([{"_id": i} for i in range(3)])
        kill_a_client_in_a_transaction(server.url, "pai_jobs", "jobs", 1)
        assert server.release_transactions()
        # Without the release this delete would wait out the 600 s lifetime; the socket gives up at 30 s.
        with MongoClient(server.url, socketTimeoutMS=30_000) as later:
            jobs = later["pai_jobs"]["jobs"]
            assert jobs.delete_many({"_id": {"$in": [0, 1]}}).deleted_count == 2
            # The killed client's delete was rolled back, not committed.
            assert [d["_id"] for d in jobs.find()] == [2]
    finally:
        server.stop()


def test_a_release_of_a_server_that_does_not_answer_says_so(tmp_path: Path) -> None:
    server = launch_mongo(tmp_path)
    server.wait_listening(60)
    server.stop()
    assert not server.release_transactions(timeout_s=0.5)
