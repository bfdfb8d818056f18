"""One platform per data dir: ``pai up`` holds a lock on it that names its pid, its URL and its processes.

The lock is an ``flock`` on ``<data dir>/pai-up.lock``: the kernel releases it when its holder dies, even
by SIGKILL, so a lock that can be taken is never held by a live platform. The file's content stays behind
a holder that died without cleaning up; the next owner reads it and stops whatever of that platform is
still running (only processes that really belong to this data dir), then starts.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

LOCK_FILE = "pai-up.lock"


class DataDirBusyError(RuntimeError):
    """A live platform already runs on this data dir."""


@dataclass
class Takeover:
    """What was left by a platform whose ``pai up`` died without stopping it."""

    pid: int
    url: str
    stopped: list[str]


def _belongs_to(pid: int, data_dir: Path) -> bool:
    """Whether a live process is one of this data dir's platform (its command line or environment
    names the data dir): a pid recorded long ago may have been reused by anything."""
    needle = str(data_dir).encode()
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        if needle in cmdline:
            return True
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"PAI_DATA_DIR=" + needle in environ


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead for every purpose here
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


class DataDirLock:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.path = data_dir / LOCK_FILE
        self._file: IO[str] | None = None
        self._record: dict[str, Any] = {}

    def acquire(self, url: str) -> Takeover | None:
        """Take the data dir for this process; raises DataDirBusyError naming the live owner."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+")  # held open (and locked) for as long as the platform runs
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            owner = _parse(f.read())
            f.close()
            pid, owner_url = owner.get("pid", "?"), owner.get("url", "?")
            since = owner.get("started_at", "?")
            raise DataDirBusyError(
                f"a platform is already running on {self.data_dir}: pid {pid}, {owner_url} (since {since});"
                f" stop it first (Ctrl-C where it runs, or kill {pid}) or use another --data-dir"
            ) from None
        f.seek(0)
        left = _parse(f.read())
        self._file = f
        takeover = self._clean_up(left) if left else None
        self._record = {
            "pid": os.getpid(),
            "url": url,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "processes": {},
        }
        self._write()
        return takeover

    def record(self, processes: dict[str, int]) -> None:
        """Name the processes this platform runs now (read by whoever cleans up after a crash)."""
        if self._file is None:
            return
        self._record["processes"] = dict(processes)
        self._write()

    def release(self) -> None:
        if self._file is None:
            return
        with contextlib.suppress(OSError):
            self._file.truncate(0)
            self._file.flush()
        self._file.close()  # closing the descriptor releases the flock
        self._file = None

    def _write(self) -> None:
        assert self._file is not None
        self._file.seek(0)
        self._file.truncate(0)
        self._file.write(json.dumps(self._record))
        self._file.flush()

    def _clean_up(self, left: dict[str, Any]) -> Takeover:
        stopped: list[str] = []
        killed: list[int] = []
        processes = left.get("processes") or {}
        for name, pid in processes.items():
            if (
                isinstance(pid, int)
                and pid != os.getpid()
                and _alive(pid)
                and _belongs_to(pid, self.data_dir)
            ):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                stopped.append(f"{name} (pid {pid})")
                killed.append(pid)
        deadline = time.monotonic() + 10.0
        while any(_alive(pid) for pid in killed) and time.monotonic() < deadline:
            time.sleep(0.05)  # their ports and files are free once they are gone
        return Takeover(pid=int(left.get("pid") or 0), url=str(left.get("url") or "?"), stopped=stopped)


def _parse(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
