"""Tasks as local processes: one working directory, one process group, logs and exit code in files.

The wrapper script writes the exit code to a file when the user's commands end. The agent therefore
learns a task's result even when the agent itself was restarted while the task ran (it is then no
longer the task's parent and cannot ``wait`` for it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from dataclasses import dataclass
from pathlib import Path

WRAPPER = """#!/bin/bash
# Written by the PAI runtime agent. The user's commands run in their own bash so that their exit code
# (or 128+signal) is what gets recorded.
bash ./user-commands.sh > ./stdout.log 2> ./stderr.log
code=$?
echo "$code" > ./exit_code.tmp && mv ./exit_code.tmp ./exit_code
exit "$code"
"""

# What a task inherits from the agent's environment; nothing else (the agent's may hold secrets).
PASSTHROUGH = ("PATH", "LANG", "LC_ALL", "TZ", "TERM")


@dataclass(frozen=True)
class TaskExit:
    exit_code: int
    signal: int | None


def task_env(base: dict[str, str], extra: dict[str, str], workdir: Path) -> dict[str, str]:
    env = {k: base[k] for k in PASSTHROUGH if k in base}
    env["HOME"] = str(workdir)
    env["TMPDIR"] = str(workdir / "tmp")
    env.update(extra)
    return env


def prepare(workdir: Path, entrypoint: str) -> None:
    (workdir / "tmp").mkdir(parents=True, exist_ok=True)
    (workdir / "user-commands.sh").write_text(entrypoint + "\n")
    (workdir / "run.sh").write_text(WRAPPER)


async def start(workdir: Path, env: dict[str, str]) -> int:
    proc = await asyncio.create_subprocess_exec(
        "bash",
        "./run.sh",
        cwd=workdir,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,  # its own process group, so a stop reaches every child
    )
    (workdir / "pid").write_text(str(proc.pid))
    _children[proc.pid] = proc
    return proc.pid


_children: dict[int, asyncio.subprocess.Process] = {}


def read_exit(workdir: Path) -> TaskExit | None:
    try:
        code = int((workdir / "exit_code").read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return TaskExit(code, code - 128 if code > 128 else None)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def wait(pid: int, workdir: Path, poll_s: float = 0.2) -> TaskExit:
    """Wait for the task to end and return its exit; works for children and for adopted tasks."""
    proc = _children.pop(pid, None)
    if proc is not None:
        returncode = await proc.wait()
        recorded = read_exit(workdir)
        if recorded is not None:
            return recorded
        # The wrapper itself was killed (a stop signal reached it before it could record anything).
        if returncode < 0:
            return TaskExit(128 - returncode, -returncode)
        return TaskExit(returncode, None)
    while alive(pid) and read_exit(workdir) is None:
        await asyncio.sleep(poll_s)
    recorded = read_exit(workdir)
    # Adopted, gone, and no record: the process group was lost with the previous agent.
    return recorded if recorded is not None else TaskExit(137, signal.SIGKILL)


async def stop(pid: int, grace_s: float) -> None:
    """SIGTERM the task's process group, then SIGKILL whatever is left after the grace period."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = asyncio.get_running_loop().time() + grace_s
    while asyncio.get_running_loop().time() < deadline:
        if not _group_alive(pid):
            return
        await asyncio.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def tail(path: Path, max_bytes: int) -> tuple[str, int, bool]:
    """The last ``max_bytes`` of a log file, read from the end; (text, file size, truncated)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "", 0, False
    with open(path, "rb") as f:
        if size > max_bytes:
            f.seek(size - max_bytes)
        data = f.read(max_bytes)
    return data.decode("utf-8", errors="replace"), size, size > max_bytes
