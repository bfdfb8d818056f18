"""Slow-loris clients against the gateway's real HTTP server (uvicorn with the gateway's protocol):
connections that dribble their headers or their body are closed or answered 408, and meanwhile other
clients are served."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import httpx
import pytest
import uvicorn

from pai_common.embedded import free_port
from pai_gateway.http_app import build_http_app
from pai_gateway.settings import GatewaySettings
from pai_gateway.slow_clients import protocol_with

HEAD_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 1.0


@pytest.fixture
async def gateway() -> AsyncIterator[int]:
    port = free_port()
    settings = GatewaySettings(body_timeout_s=BODY_TIMEOUT_S)
    config = uvicorn.Config(
        build_http_app(lambda: None, settings),  # type: ignore[arg-type,return-value]
        host="127.0.0.1",
        port=port,
        log_config=None,
        lifespan="off",
        http=protocol_with(HEAD_TIMEOUT_S),
        timeout_keep_alive=1,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    yield port
    server.should_exit = True
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _closed_by_server(reader: asyncio.StreamReader, guard_s: float) -> bytes:
    """What the server sent before closing (b"" for a plain close); fails if it keeps the connection. A
    reset is a close too: the server closed while the client's bytes were still arriving, and the kernel
    answers those with a reset."""
    try:
        return await asyncio.wait_for(reader.read(), timeout=guard_s)
    except ConnectionResetError:
        return b""


async def test_headers_sent_a_byte_at_a_time_are_cut_off_and_others_are_served(gateway: int) -> None:
    loris = [await asyncio.open_connection("127.0.0.1", gateway) for _ in range(50)]
    request = b"GET /healthz HTTP/1.1\r\nHost: gw\r\nX-Slow: "
    for _, writer in loris:
        writer.write(request[:5])
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway}") as client:
        # Fifty connections holding half a request do not keep anyone else waiting.
        assert (await client.get("/healthz")).status_code == 200

    # Keep dribbling: a byte every 0.2 s is "activity", but the head's deadline counts from its first byte.
    async def dribble(writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            for byte in request[5:]:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.2)

    dribblers = [asyncio.create_task(dribble(w)) for _, w in loris]
    for reader, _ in loris:
        assert await _closed_by_server(reader, guard_s=30) == b""
    for task in dribblers:
        task.cancel()
    for _, writer in loris:
        writer.close()


async def test_a_connection_that_never_speaks_is_closed(gateway: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway)
    assert await _closed_by_server(reader, guard_s=30) == b""
    writer.close()


async def test_a_body_that_arrives_too_slowly_is_408(gateway: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway)
    writer.write(
        b"POST /api/v2/authn/basic/login HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n{"
    )
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(4096), timeout=30)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"RequestTimeoutError" in answer
    writer.close()


async def test_a_keep_alive_connection_that_starts_a_second_request_slowly_is_cut_off(gateway: int) -> None:
    sock = socket.create_connection(("127.0.0.1", gateway))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n")
    await writer.drain()
    first = await asyncio.wait_for(reader.readuntil(b'{"status":"ok"}'), timeout=30)
    assert first.startswith(b"HTTP/1.1 200")
    writer.write(b"GET /hea")  # the next request's head, never finished
    await writer.drain()
    assert await _closed_by_server(reader, guard_s=30) == b""
    writer.close()
