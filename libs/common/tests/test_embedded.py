"""The embedded servers under supervision: a server started again keeps its port and its data; a service
stops on SIGTERM even while its start waits for a database that is down."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import nats
from nats.errors import TimeoutError as NatsTimeoutError

from pai_common import embedded
from pai_common.database import connect_mongo
from pai_common.embedded import free_port, start_mongo, start_nats, wait_for_port


async def test_a_respawned_nats_server_keeps_its_port_and_its_streams(tmp_path: Path) -> None:
    server = start_nats(tmp_path)
    try:
        nc = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
        js = nc.jetstream()
        await js.add_stream(name="KEEP", subjects=["keep.>"])
        await js.publish("keep.one", b"before the crash")
        server.proc.kill()
        server.proc.wait()
        assert not server.running
        server.respawn()
        wait_for_port(server.port, 20, server.proc)
        # The same client reconnects by itself to the same URL and finds the stream and its message.
        msg = await _first_answer(lambda: js.get_msg("KEEP", 1))
        assert msg.data == b"before the crash"
        await nc.close()
    finally:
        server.stop()


async def _first_answer(ask: Callable[[], Awaitable[Any]], tries: int = 100) -> Any:
    """The answer once the client has reconnected and JetStream has recovered its streams."""
    for _ in range(tries - 1):
        try:
            return await ask()
        except (NatsTimeoutError, TimeoutError):
            await asyncio.sleep(0.1)
    return await ask()


PROBE = """
import asyncio
from pai_common.service import ServiceApp
from pai_common.settings import Settings

app = ServiceApp("probe", Settings())

async def needs_the_database(app: ServiceApp) -> None:
    await app.db["x"].find_one({})  # waits for server selection: the database is down

app.on_startup(needs_the_database)
app.run()
"""


def test_a_service_stops_on_sigterm_while_its_start_waits_for_the_database(tmp_path: Path) -> None:
    server = start_nats(tmp_path)
    try:
        env = {
            **os.environ,
            "PAI_NATS_URL": server.url,
            "PAI_MONGO_URL": f"mongodb://127.0.0.1:{free_port()}/?directConnection=true",
            "PAI_DATA_DIR": str(tmp_path),
            "PAI_HTTP_PORT": "0",
        }
        proc = subprocess.Popen(
            [sys.executable, "-c", PROBE], env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL
        )
        port_file = tmp_path / "run" / "probe.json"
        while not port_file.exists():  # written once the bus is up, before the start-up hooks run
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.05)
        json.loads(port_file.read_text() or "{}")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert b"signal received during start-up" in err
    finally:
        server.stop()


async def test_a_client_polling_a_respawned_mongo_server_finds_it_again_with_its_data(tmp_path: Path) -> None:
    """The embedded server's clients poll it (no streamed hello, whose server thread wakes four times a
    second): a server killed and started again is found by the next requests, not after a heartbeat."""
    server = start_mongo(tmp_path)
    client = connect_mongo(server.url)
    try:
        assert client.options.server_monitoring_mode == "poll"
        coll = client["t"]["c"]
        await coll.insert_one({"_id": "before"})
        server.proc.kill()
        server.proc.wait()
        server.respawn()
        server.wait_listening(60)
        for _ in range(200):  # a guard: each try fails fast while the client reconnects
            try:
                await asyncio.wait_for(coll.insert_one({"_id": "after"}), 10)
                break
            except Exception:
                await asyncio.sleep(0.05)
        assert sorted([d["_id"] async for d in coll.find({})]) == ["after", "before"]
    finally:
        await client.close()
        server.stop()


def test_free_port_never_hands_out_a_port_it_just_gave_even_when_the_kernel_offers_it_again(
    monkeypatch: Any,
) -> None:
    """Servers launched together bind only as they start: a port offered twice in a row by the kernel must
    not go to two of them."""
    offers = iter([41001, 41001, 41002, 41001, 41003])

    class Offering:
        def __init__(self, *args: Any) -> None:
            self.port = next(offers)

        def __enter__(self) -> Offering:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def bind(self, address: tuple[str, int]) -> None:
            assert address == ("127.0.0.1", 0)

        def getsockname(self) -> tuple[str, int]:
            return ("127.0.0.1", self.port)

    monkeypatch.setattr(embedded, "_HANDED_OUT", type(embedded._HANDED_OUT)(maxlen=8))
    monkeypatch.setattr(embedded.socket, "socket", Offering)
    assert [free_port(), free_port(), free_port()] == [41001, 41002, 41003]
