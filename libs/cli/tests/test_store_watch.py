"""pai up's watch on the embedded NATS server's JetStream store: a critical write error (disk full) makes
the server be restarted once the disk has room again, and only then (benchmarks/chaos.py bus-disk-full)."""

from __future__ import annotations

from pathlib import Path

from pai_cli.store_watch import ROOM_BYTES, StoreWatch

FULL = (
    "[1] 2026/12/06 12:45:43.258420 [ERR] Filestore [PAI_EVENTS] Critical write error: write"
    " /data/nats/jetstream/$G/streams/PAI_EVENTS/msgs/1.blk: no space left on device\n"
)


def test_a_critical_write_error_restarts_the_server_once_room_is_back(tmp_path: Path) -> None:
    log = tmp_path / "nats.log"
    log.write_text("[1] old run: " + FULL)  # logged before pai up started: not this server's
    room = [0]
    watch = StoreWatch(log, tmp_path, free=lambda _: room[0])
    room[0] = ROOM_BYTES * 4
    assert not watch.restart_now()

    with open(log, "a") as f:
        f.write("[1] [INF] fine\n" + FULL[:40])  # half a line: not read as one yet
    assert not watch.restart_now()
    room[0] = 0
    with open(log, "a") as f:
        f.write(FULL[40:])
    assert not watch.restart_now() and watch.stuck  # still full: a restart would fail the same way
    assert not watch.restart_now()
    room[0] = ROOM_BYTES
    assert watch.restart_now()
    assert not watch.restart_now()  # once: the restarted server starts clean


def test_no_log_yet_is_no_error(tmp_path: Path) -> None:
    watch = StoreWatch(tmp_path / "absent.log", tmp_path, free=lambda _: ROOM_BYTES)
    assert not watch.restart_now()
