"""One platform per data dir: the lock names a live owner, and the leftovers of a dead one are cleaned up."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pai_cli.lock import LOCK_FILE, DataDirBusyError, DataDirLock
from pai_cli.platform import BACKOFF_MAX_S, STABLE_AFTER_S, Backoff

HOLD = """
import sys, time
from pathlib import Path
from pai_cli.lock import DataDirLock
lock = DataDirLock(Path(sys.argv[1]))
lock.acquire("http://127.0.0.1:9999")
lock.record({"gateway": 4242})
print("held", flush=True)
time.sleep(600)
"""


def _holder(data_dir: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(data_dir)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_live_owner_is_named_and_its_lock_is_released_when_it_dies(tmp_path: Path) -> None:
    owner = _holder(tmp_path)
    try:
        with pytest.raises(DataDirBusyError) as refused:
            DataDirLock(tmp_path).acquire("http://127.0.0.1:1")
        message = str(refused.value)
        assert f"already running on {tmp_path}: pid {owner.pid}, http://127.0.0.1:9999" in message
        assert f"kill {owner.pid}" in message
    finally:
        owner.send_signal(signal.SIGKILL)  # no clean-up: the kernel releases the flock anyway
        owner.wait()
    lock = DataDirLock(tmp_path)
    takeover = lock.acquire("http://127.0.0.1:2")
    assert takeover is not None and (takeover.pid, takeover.url) == (owner.pid, "http://127.0.0.1:9999")
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    lock.release()
    assert (tmp_path / LOCK_FILE).read_text() == ""
    # A clean stop leaves nothing to take over.
    again = DataDirLock(tmp_path)
    assert again.acquire("http://127.0.0.1:3") is None
    again.release()


def test_leftovers_of_this_data_dir_are_stopped_and_nothing_else(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    ours = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)"],
        env={**os.environ, "PAI_DATA_DIR": str(data_dir)},
    )
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        left = {
            "pid": 999999,
            "url": "http://127.0.0.1:9186",
            "processes": {"jobs": ours.pid, "x": stranger.pid},
        }
        (data_dir / LOCK_FILE).write_text(json.dumps(left))
        lock = DataDirLock(data_dir)
        takeover = lock.acquire("http://127.0.0.1:9186")
        assert takeover is not None and takeover.stopped == [f"jobs (pid {ours.pid})"]
        assert ours.wait(10) == -signal.SIGKILL
        assert stranger.poll() is None  # a reused pid of some other program is left alone
        lock.release()
    finally:
        for proc in (ours, stranger):
            proc.kill()
            proc.wait()


def test_backoff_restarts_at_once_then_waits_longer_for_a_process_that_keeps_dying() -> None:
    b = Backoff()
    b.started(0.0)
    delays = []
    now = 0.0
    for _ in range(8):
        now += 1.0  # dies a second after each start
        delays.append(b.died(now))
        now = b.next_start_at
        b.started(now)
    assert delays == [0.0, 1.0, 2.0, 4.0, 8.0, 16.0, BACKOFF_MAX_S, BACKOFF_MAX_S]
    # One that ran long enough is restarted at once again.
    assert b.died(now + STABLE_AFTER_S + 1) == 0.0


def test_children_die_with_the_process_that_started_them(tmp_path: Path) -> None:
    parent = """
import subprocess, sys, time
from pai_common.embedded import die_with_parent
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], preexec_fn=die_with_parent())
print(child.pid, flush=True)
time.sleep(600)
"""
    proc = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    child = int(proc.stdout.readline())
    os.kill(child, 0)  # running
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 30
    while _alive(child):
        assert time.monotonic() < deadline, f"the child {child} outlived its parent"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
