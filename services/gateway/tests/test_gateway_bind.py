"""The gateway binds its HTTP port before it says it is ready: a port another program holds ends its
start-up (so `pai up` sees the gateway exit during start-up), instead of a ready gateway whose port a
stranger answers. Real NATS and a real MongoDB-wire server."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pai_common.embedded import ServerProcess, start_nats
from pai_gateway.settings import GatewaySettings
from pai_gateway.shell import build_app


@pytest.fixture
def nats_srv(tmp_path: Path) -> Iterator[ServerProcess]:
    server = start_nats(tmp_path / "nats")
    yield server
    server.stop()


def _settings(nats: ServerProcess, mongo: ServerProcess, data: Path, port: int) -> GatewaySettings:
    return GatewaySettings(
        nats_url=nats.url, mongo_url=mongo.url, data_dir=data, gateway_port=port, http_port=0
    )


async def test_a_taken_port_ends_the_start_up_before_ready(
    nats_srv: ServerProcess, mongo_server: ServerProcess, tmp_path: Path
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as stranger:
        stranger.bind(("127.0.0.1", 0))
        stranger.listen()
        app = build_app(_settings(nats_srv, mongo_server, tmp_path, stranger.getsockname()[1]))
        with pytest.raises(SystemExit):
            await app.start()
        try:
            assert not app.is_ready()
        finally:
            await app.stop()


async def test_a_free_port_is_bound_when_ready(
    nats_srv: ServerProcess, mongo_server: ServerProcess, tmp_path: Path
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = build_app(_settings(nats_srv, mongo_server, tmp_path, port))
    await app.start()
    try:
        assert app.is_ready()
        async with httpx.AsyncClient() as client:
            info = await client.get(f"http://127.0.0.1:{port}/api/v2/info")
        assert info.status_code == 200 and info.json()["name"] == "PAI RESTful API"
    finally:
        await app.stop()
