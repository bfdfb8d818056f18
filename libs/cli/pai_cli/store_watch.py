"""Whether the embedded NATS server's JetStream store is stuck after its disk filled, and when to restart it.

When a write of the JetStream file store fails (the disk is full: ``no space left on device``), nats-server
logs a "Critical write error" and keeps failing every later store on that stream with the same error, also
once space is back (seen on `pai up`: benchmarks/chaos.py's bus-disk-full; nats-server issue #2792 is the
same stickiness for another write error). No message is lost meanwhile (a publisher gets no
acknowledgement and its outbox keeps the message), but nothing moves until the server starts again. So
`pai up` reads the server's log as it grows, and once a critical write error was seen and the store's disk
has room again, restarts the server (the services reconnect by themselves, as after kill-nats-server).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

# What nats-server logs when a write of the file store fails (the stream then refuses every store).
CRITICAL_WRITE = "Critical write error"
# Room the store needs again before a restart is worth it (a restart onto a full disk fails the same way).
ROOM_BYTES = 16 * 1024 * 1024


def free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


class StoreWatch:
    """Fed the server's log; answers whether the server is to be restarted now."""

    def __init__(self, log_path: Path, store: Path, free: Callable[[Path], int] = free_bytes) -> None:
        self.log_path = log_path
        self.store = store
        self._free = free
        self._offset = log_path.stat().st_size if log_path.exists() else 0
        self._partial = ""
        self.stuck = False

    def _read_new(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return ""
        self._offset += len(data)
        text = self._partial + data.decode(errors="replace")
        text, _, self._partial = text.rpartition("\n")
        return text

    def restart_now(self) -> bool:
        """True once: a critical write error was logged since the last restart, and there is room again."""
        if CRITICAL_WRITE in self._read_new():
            self.stuck = True
        if not self.stuck:
            return False
        try:
            room = self._free(self.store)
        except OSError:
            return False
        if room < ROOM_BYTES:
            return False
        self.stuck = False
        return True
