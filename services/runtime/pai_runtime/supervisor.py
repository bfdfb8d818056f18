"""The process that runs one task attempt: its phases, its logs, its exit record.

Started by the agent as the leader of a new process group, and run by path with only the standard
library, so that it starts fast and outlives a restart of the agent. It runs the phases of the task
(plugin pre-commands, the user's commands, plugin post-commands) each under ``bash`` in the same group,
copies their stdout and stderr into size-limited, rotated log files (``stdout.log``, ``stderr.log`` and
the combined ``all.log``), enforces the task's time limit, and writes the exact result to ``exit.json``
(and the bare code to ``exit_code``) before it leaves: the code, and the signal when a phase was killed
by one. A stop (SIGTERM to the group) reaches every phase process; the supervisor itself only notes it,
so that it can still record how the task ended.

Usage: ``python supervisor.py <workdir>``; the workdir holds ``supervisor.json`` and the phase scripts.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

CONFIG = "supervisor.json"
CHUNK = 65536


class RotatingLog:
    """Appends to ``path``; past ``max_bytes`` the file moves to ``path.1`` (and so on, ``keep`` files)."""

    def __init__(self, path: Path, max_bytes: int, keep: int) -> None:
        self.path = path
        self.max_bytes = max(1, max_bytes)
        self.keep = max(1, keep)
        self.lock = threading.Lock()
        self.file = open(path, "ab", buffering=0)
        self.size = path.stat().st_size

    def write(self, data: bytes) -> None:
        with self.lock:
            while data:
                room = self.max_bytes - self.size
                if room <= 0:
                    self._rotate()
                    room = self.max_bytes
                part, data = data[:room], data[room:]
                self.file.write(part)
                self.size += len(part)

    def _rotate(self) -> None:
        self.file.close()
        if self.keep == 1:
            self.path.unlink(missing_ok=True)
        else:
            for i in range(self.keep - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{i}")
                if i == self.keep - 1:
                    older.unlink(missing_ok=True)
                newer = self.path if i == 1 else self.path.with_name(f"{self.path.name}.{i - 1}")
                if newer.exists():
                    newer.rename(older)
        self.file = open(self.path, "ab", buffering=0)
        self.size = 0


def _pump(fd: int, own: RotatingLog, combined: RotatingLog) -> None:
    while True:
        try:
            data = os.read(fd, CHUNK)
        except OSError:
            break
        if not data:
            break
        own.write(data)
        combined.write(data)
    os.close(fd)


def _others_in_group() -> list[int]:
    me, group = os.getpid(), os.getpgrp()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            if os.getpgid(int(entry)) == group:
                found.append(int(entry))
        except OSError:
            continue
    return found


def _kill_others(sig: int) -> None:
    for pid in _others_in_group():
        try:
            os.kill(pid, sig)
        except OSError:
            continue


def _result(returncode: int) -> tuple[int, int | None]:
    """(exit code, signal) the way a shell reports them: a signal is 128 + its number."""
    if returncode < 0:
        return 128 - returncode, -returncode
    return returncode, None


def _mount_storages(config: dict[str, Any], workdir: Path, err_w: int) -> int:
    """Mount the task's storages in this process's own mount namespace (started by ``unshare``); the
    code to end the task with when one cannot be mounted, 0 when all are."""
    steps = config.get("mounts") or []
    if not steps:
        return 0
    failed = int(config.get("mount_failed_exit", 1))
    secrets = Path(config.get("mount_secrets") or workdir / ".mount-secrets")

    def say(text: str) -> None:
        os.write(err_w, f"[openpai-runtime] {text}\n".encode())

    try:
        host_ns = config.get("host_mount_namespace")
        if host_ns and os.readlink("/proc/self/ns/mnt") == host_ns:
            say(f"storage {steps[0]['name']} not mounted: the task has no private mount namespace")
            return failed
        for step in steps:
            os.makedirs(step["target"], exist_ok=True)
            done = subprocess.run(step["argv"], capture_output=True, timeout=120)
            if done.returncode == 0 and step.get("bind") and step.get("read_only"):
                remount = ["mount", "-o", "remount,bind,ro", step["target"]]
                done = subprocess.run(remount, capture_output=True, timeout=60)
            if done.returncode != 0:
                why = (done.stderr or done.stdout).decode(
                    errors="replace"
                ).strip() or f"exit {done.returncode}"
                say(f"storage {step['name']} not mounted at {step['target']}: {why}")
                return failed
            mode = "read-only" if step.get("read_only") else "read-write"
            say(f"storage {step['name']} mounted at {step['target']} ({mode})")
    except (OSError, subprocess.TimeoutExpired) as exc:
        say(f"storage not mounted: {exc}")
        return failed
    finally:
        if secrets.exists():
            for f in secrets.iterdir():
                f.unlink()
            secrets.rmdir()
    return 0


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.rename(path)


def _give_tasks_default_signals() -> None:
    """A task starts with the signal dispositions of a fresh process. Ignored signals survive exec: an agent
    started in the background or under nohup ignores SIGINT, SIGQUIT or SIGHUP, and so would every task,
    whose `kill -INT`, Ctrl-C handling or reload on SIGHUP would then silently do nothing. Caught signals
    are reset to their defaults by exec, so the supervisor catches these (and leaves what they do to the
    task's phases, which receive them through the process group)."""
    for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP):
        signal.signal(sig, lambda _signum, _frame: None)


def run(workdir: Path) -> int:
    config: dict[str, Any] = json.loads((workdir / CONFIG).read_text())
    stopping = threading.Event()

    def on_term(signum: int, _frame: object) -> None:
        stopping.set()  # the phases got the same signal; what they do with it is the task's result

    signal.signal(signal.SIGTERM, on_term)
    _give_tasks_default_signals()
    cgroup = config.get("cgroup")
    if cgroup:
        try:
            Path(cgroup, "cgroup.procs").write_text(str(os.getpid()))
        except OSError as exc:
            print(f"[openpai-runtime] cgroup not joined: {exc}", file=sys.stderr)

    max_bytes, keep = int(config["log_max_bytes"]), int(config["log_keep"])
    logs = {s: RotatingLog(workdir / f"{s}.log", max_bytes, keep) for s in ("stdout", "stderr", "all")}
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pumps = [
        threading.Thread(target=_pump, args=(out_r, logs["stdout"], logs["all"]), daemon=True),
        threading.Thread(target=_pump, args=(err_r, logs["stderr"], logs["all"]), daemon=True),
    ]
    for t in pumps:
        t.start()

    timeout_s = config.get("timeout_s")
    deadline = time.monotonic() + float(timeout_s) if timeout_s else None
    grace_s = float(config.get("grace_s", 10.0))
    code, sig, failed_phase, timed_out = 0, None, None, False
    code = _mount_storages(config, workdir, err_w)
    if code:
        failed_phase = "mount"
    for phase in config["phases"]:
        if stopping.is_set() or code != 0:
            break  # a failed phase ends the task: pre-commands guard the user's, post-commands need success
        argv = ["bash", phase["script"]]
        limit_kb = phase.get("memory_limit_kb")
        if limit_kb:
            # A per-process address-space limit: what the OS allows without cgroups.
            argv = ["bash", "-c", f'ulimit -v {int(limit_kb)} && exec bash "$0"', phase["script"]]
        proc = subprocess.Popen(
            argv, cwd=workdir, stdin=subprocess.DEVNULL, stdout=out_w, stderr=err_w, close_fds=True
        )
        while True:
            try:
                wait_s = None if deadline is None else max(0.0, deadline - time.monotonic())
                returncode = proc.wait(timeout=wait_s)
                break
            except subprocess.TimeoutExpired:
                timed_out = True
                os.write(err_w, f"[openpai-runtime] time limit of {timeout_s}s reached; stopping\n".encode())
                _kill_others(signal.SIGTERM)
                try:
                    returncode = proc.wait(timeout=grace_s)
                except subprocess.TimeoutExpired:
                    _kill_others(signal.SIGKILL)
                    returncode = proc.wait()
                break
        code, sig = _result(returncode)
        if code != 0:
            failed_phase = phase["name"]
        if timed_out:
            break

    os.close(out_w)
    os.close(err_w)
    if stopping.is_set():
        # A stop gives every process of the task its grace period, not just the one that ended first.
        until = time.monotonic() + grace_s
        while _others_in_group() and time.monotonic() < until:
            time.sleep(0.05)
    # Whatever a phase left behind goes with the task, as it would with its container.
    _kill_others(signal.SIGKILL)
    for t in pumps:
        t.join(timeout=float(config.get("drain_s", 2.0)))
    record = {"exit_code": code, "signal": sig, "timed_out": timed_out, "failed_phase": failed_phase}
    _write_atomic(workdir / "exit.json", json.dumps(record))
    _write_atomic(workdir / "exit_code", f"{code}\n")
    return code


if __name__ == "__main__":
    sys.exit(run(Path(sys.argv[1]).resolve()) & 0xFF)
