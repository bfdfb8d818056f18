"""The embedded MongoDB-wire server stops without waiting out its accept thread (mongo_server.stop_server)."""

from __future__ import annotations

import signal
from pathlib import Path

from pymongo import MongoClient
from secantus import SecantusDBServer

from pai_common.embedded import launch_mongo
from pai_common.mongo_server import stop_server


def test_a_stop_ends_the_thread_waiting_for_connections(tmp_path: Path) -> None:
    server = SecantusDBServer(host="127.0.0.1", port=0, storage_path=str(tmp_path / "db"))
    server.start()
    accepting = server._thread
    assert accepting is not None and accepting.is_alive()
    stop_server(server)
    # SecantusDB's own stop gives up on the thread after 2 s and leaves it blocked in accept() for good.
    assert not accepting.is_alive()


def test_a_sigterm_stops_the_server_cleanly_with_its_data_kept(tmp_path: Path) -> None:
    server = launch_mongo(tmp_path)
    server.wait_listening(60)
    with MongoClient(server.url) as client:
        client["pai_test"]["kept"].insert_one({"_id": 1})
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(30) == 0
    server.respawn()
    try:
        server.wait_listening(60)
        with MongoClient(server.url) as client:
            assert list(client["pai_test"]["kept"].find()) == [{"_id": 1}]
    finally:
        server.stop()
