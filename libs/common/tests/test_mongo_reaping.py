"""The embedded MongoDB-wire server looks for idle transactions once per interval, not at every statement.

SecantusDB walks the last transaction of every session it ever saw at each statement and commit; the
platform's server runner (`pai_common.mongo_server`) limits that walk to once per `REAP_INTERVAL_S`. A
transaction idle past its lifetime must still be reaped, only up to that interval later.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pymongo import MongoClient
from secantus import SecantusDBServer
from secantus.transactions import TransactionRegistry, TxnState

from pai_common.embedded import launch_mongo
from pai_common.mongo_server import REAP_INTERVAL_S, throttle_reaping

LIFETIME_S = 10.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_an_idle_transaction_is_reaped_at_most_one_interval_late() -> None:
    server_time, throttle_time = Clock(), Clock()
    rolled_back: list[bytes] = []
    registry = TransactionRegistry(
        rollback_func=lambda txn: rolled_back.append(txn.lsid_bytes),
        lifetime_seconds=LIFETIME_S,
        time_func=server_time,
    )
    assert throttle_reaping(registry, REAP_INTERVAL_S, clock=throttle_time)

    idle, error = registry.for_statement(b"idle", None, 1, start=True)  # a walk: the first since set
    assert idle is not None and error is None
    server_time.now += LIFETIME_S + 1  # idle past its lifetime from here on

    # Statements of other sessions within the interval after that walk: nothing looked at, nothing reaped.
    throttle_time.now += REAP_INTERVAL_S / 2
    registry.for_statement(b"second", None, 1, start=True)
    registry.prune_expired()
    assert idle.state is TxnState.IN_PROGRESS and rolled_back == []

    # The first statement once the interval is over walks, and reaps it.
    throttle_time.now += REAP_INTERVAL_S / 2
    registry.for_statement(b"third", None, 1, start=True)
    assert idle.state is TxnState.ABORTED and rolled_back == [b"idle"]


def test_without_the_throttle_every_statement_walks() -> None:
    """What the throttle changes: SecantusDB alone reaps at the very next statement."""
    server_time = Clock()
    registry = TransactionRegistry(lifetime_seconds=LIFETIME_S, time_func=server_time)
    first, _ = registry.for_statement(b"first", None, 1, start=True)
    assert first is not None
    server_time.now += LIFETIME_S + 1
    registry.for_statement(b"second", None, 1, start=True)
    assert first.state is TxnState.ABORTED


def test_the_installed_secantusdb_has_the_step_the_throttle_replaces(tmp_path: Path) -> None:
    """An upgrade of SecantusDB that reworks its registry must be seen here, not as a silently unthrottled
    (or broken) server: the runner's registry is the one it throttles."""
    server = SecantusDBServer(host="127.0.0.1", port=0, storage_path=str(tmp_path / "db"))
    try:
        assert isinstance(server.transactions, TransactionRegistry)
        assert throttle_reaping(server.transactions, REAP_INTERVAL_S)
    finally:
        server.stop()


def test_a_killed_clients_transaction_is_reaped_with_no_other_statement_coming(
    tmp_path: Path, kill_a_client_in_a_transaction: Callable[[str, str, str, int], None]
) -> None:
    """A transaction left open by a client killed mid-way is reaped even when no other statement arrives
    (`reap_while_idle`): a deleteMany of what it wrote then completes. On SecantusDB's reaping alone
    (at statements only), the deleteMany waited for good."""
    server = launch_mongo(tmp_path, options=["--transaction-lifetime-s", "2"])
    server.wait_listening(60)
    try:
        with MongoClient(server.url) as setup:
            setup["pai_scheduler"]["outbox"].insert_many([{"_id": i} for i in range(3)])
        kill_a_client_in_a_transaction(server.url, "pai_scheduler", "outbox", 1)
        # Nothing else talks to the server: only the idle reaper can end that transaction.
        with MongoClient(server.url, socketTimeoutMS=30_000) as later:
            outbox = later["pai_scheduler"]["outbox"]
            assert outbox.delete_many({"_id": {"$in": [0, 1]}}).deleted_count == 2
            assert [d["_id"] for d in outbox.find()] == [2]
    finally:
        server.stop()
