"""Fixtures shared by every package's tests: real NATS (JetStream) and MongoDB-wire servers, started here."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from pai_common.bus import Bus
from pai_common.embedded import ServerProcess, start_mongo, start_nats
from pai_common.reference import REFERENCE_ENV, not_run, reference_dir


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "reference(path): checks against ../shared/reference/<path>; not run, and reported, without it",
    )
    # The public reference material sits beside the repository in a development checkout only.
    os.environ.setdefault(REFERENCE_ENV, str(config.rootpath.parent / "shared" / "reference"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``reference`` are deselected where their material is absent (and reported below)."""
    kept, dropped = [], []
    for item in items:
        marker = item.get_closest_marker("reference")
        if marker is not None and reference_dir(str(marker.args[0]), item.nodeid) is None:
            dropped.append(item)
        else:
            kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    missing = not_run()
    if not missing:
        return
    terminalreporter.section("checks against ../shared/reference/ NOT RUN (not found)", yellow=True)
    for where, checks in missing.items():
        terminalreporter.line(f"{where}: {len(checks)} check(s) not run")
        for check in checks:
            terminalreporter.line(f"    {check}")
    terminalreporter.line(f"(they run where the reference exists; set {REFERENCE_ENV} to point at it)")


@pytest.fixture(scope="session")
def servers_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("servers")


@pytest.fixture(scope="session")
def nats_server(servers_dir: Path) -> Iterator[ServerProcess]:
    server = start_nats(servers_dir)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mongo_server(servers_dir: Path) -> Iterator[ServerProcess]:
    server = start_mongo(servers_dir)
    yield server
    server.stop()


@pytest.fixture
def fresh_nats(tmp_path: Path) -> Iterator[ServerProcess]:
    """A NATS server of the test's own, so streams and consumers start empty."""
    server = start_nats(tmp_path / "fresh-nats")
    yield server
    server.stop()


@pytest.fixture
async def fresh_bus(fresh_nats: ServerProcess) -> AsyncIterator[Bus]:
    """A client on ``fresh_nats`` with the platform's streams created."""
    bus = await Bus.connect(fresh_nats.url, "test")
    await bus.ensure_streams()
    yield bus
    await bus.close()


# A client that deletes one document in a transaction, says so, then waits: only SIGKILL ends it.
_OPEN_A_TRANSACTION_AND_WAIT = """
import sys, time
from pymongo import MongoClient
url, database, collection, doc_id = sys.argv[1:]
client = MongoClient(url)
session = client.start_session()
session.start_transaction()
client[database][collection].delete_one({"_id": int(doc_id)}, session=session)
print("in transaction", flush=True)
time.sleep(600)
"""


@pytest.fixture
def kill_a_client_in_a_transaction() -> Callable[[str, str, str, int], None]:
    """``kill(url, database, collection, doc_id)``: a client process deletes ``doc_id`` in a transaction and
    is SIGKILLed with it open, as a service killed mid-handling: the document stays locked until the server
    reaps (or is told to abort) the transaction."""

    def kill(url: str, database: str, collection: str, doc_id: int) -> None:
        argv = [sys.executable, "-c", _OPEN_A_TRANSACTION_AND_WAIT, url, database, collection, str(doc_id)]
        client = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        try:
            assert client.stdout is not None and client.stdout.readline().strip() == "in transaction"
        finally:
            client.kill()
            client.wait()

    return kill
