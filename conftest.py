"""Fixtures shared by every package's tests: real NATS (JetStream) and MongoDB-wire servers, started here."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from pai_common.bus import Bus
from pai_common.embedded import ServerProcess, start_mongo, start_nats


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
