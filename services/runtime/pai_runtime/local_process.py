"""Tasks as local processes: one working directory, one process group, logs and exit code in files.

The task's supervisor (``supervisor.py``) writes the exit code and signal to a file when the task ends.
The agent therefore learns a task's result even when the agent itself was restarted while the task ran
(it is then no longer the task's parent and cannot ``wait`` for it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import marshal
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pai_runtime import supervisor
from pai_runtime.backend import TaskExit

SUPERVISOR = Path(supervisor.__file__).resolve()
FORK_SERVER = SUPERVISOR.with_name("fork_server.py")
# OpenPAI's runtime keeps two files of 256 MB per stream.
DEFAULT_LOG_MAX_BYTES = 256 * 1024 * 1024
DEFAULT_LOG_KEEP = 2

# What a task inherits from the agent's environment; nothing else (the agent's may hold secrets).
PASSTHROUGH = ("PATH", "LANG", "LC_ALL", "TZ", "TERM")


def task_env(base: dict[str, str], extra: dict[str, str], workdir: Path) -> dict[str, str]:
    env = {k: base[k] for k in PASSTHROUGH if k in base}
    env["HOME"] = str(workdir)
    env["TMPDIR"] = str(workdir / "tmp")
    env.update(extra)
    return env


@dataclass(frozen=True)
class Limits:
    log_max_bytes: int = DEFAULT_LOG_MAX_BYTES
    log_keep: int = DEFAULT_LOG_KEEP
    timeout_s: float | None = None
    grace_s: float = 10.0
    # A per-process address-space limit for the user's commands (ulimit -v), where cgroups are not ours.
    memory_limit_kb: int | None = None
    # A cgroup v2 directory prepared for the task (limits.py); the supervisor moves itself into it.
    cgroup: str | None = None


def _write_private(path: Path, text: str) -> None:
    """Task files may hold rendered secrets: readable by the task's user only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def prepare(
    workdir: Path,
    entrypoint: str,
    pre: str = "",
    post: str = "",
    limits: Limits | None = None,
    mounts: dict[str, Any] | None = None,
) -> None:
    """Write the task's phase scripts and its supervisor's configuration into its working directory."""
    limits = limits or Limits()
    (workdir / "tmp").mkdir(parents=True, exist_ok=True)
    phases: list[dict[str, object]] = []
    if pre.strip():
        _write_private(workdir / "pre.sh", pre + "\n")
        phases.append({"name": "pre", "script": "pre.sh"})
    _write_private(workdir / "user.sh", entrypoint + "\n")
    phases.append({"name": "user", "script": "user.sh", "memory_limit_kb": limits.memory_limit_kb})
    if post.strip():
        _write_private(workdir / "post.sh", post + "\n")
        phases.append({"name": "post", "script": "post.sh"})
    config = {
        "phases": phases,
        "log_max_bytes": limits.log_max_bytes,
        "log_keep": limits.log_keep,
        "timeout_s": limits.timeout_s,
        "grace_s": limits.grace_s,
        "cgroup": limits.cgroup,
        # Storages the supervisor mounts first (local_mounts): steps, credentials folder, failure code.
        **(mounts or {}),
    }
    # marshal: the supervisor reads it without importing json (see supervisor.py); same interpreter.
    (workdir / supervisor.CONFIG).write_bytes(marshal.dumps(config))


def command(workdir: Path) -> list[str]:
    # -I -S: the supervisor needs the standard library only, and starts faster without site-packages.
    return [sys.executable, "-I", "-S", str(SUPERVISOR), str(workdir)]


def claim(workdir: Path, pid: int) -> None:
    """Name ``pid`` as the task's one supervisor: the pid file, written whole or not at all.

    The supervisor runs nothing until this file names it (``supervisor.wait_for_claim``). An agent killed
    between starting a supervisor and writing this file leaves a supervisor that nobody names; the next
    agent, finding no pid file, starts another one and names it, and the unnamed one leaves without
    running anything. So an attempt runs once, however the agent dies; the pid file is also what a
    redelivered launch adopts (``LocalBackend.launch``)."""
    tmp = workdir / f"{supervisor.PID_FILE}.tmp"
    tmp.write_text(str(pid))
    os.replace(tmp, workdir / supervisor.PID_FILE)


async def start(workdir: Path, env: dict[str, str], argv: list[str] | None = None) -> int:
    """Start the task's supervisor: forked by the agent's fork server (``fork_server.py``), or, given
    ``argv`` (a command line that wraps ``command(workdir)``, as ``unshare`` for storages) or where the
    fork server cannot start one, as a process of its own."""
    pid = None
    if argv is None:
        server = await ForkServer.of_this_loop()
        pid = await server.start(workdir, env) if server is not None else None
    if pid is None:
        proc = await asyncio.create_subprocess_exec(
            *(argv or command(workdir)),
            cwd=workdir,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,  # its own process group, so a stop reaches every child
        )
        pid = proc.pid
        _children[pid] = proc
    claim(workdir, pid)
    return pid


_children: dict[int, asyncio.subprocess.Process] = {}


class ForkServer:
    """The agent's side of ``fork_server.py``: one per event loop, started on first use and again if it
    died. Its supervisors' exits arrive as wait statuses on its stdout; if it dies, the waits of its
    supervisors fall back to the exit file, as for adopted tasks."""

    _by_loop: dict[asyncio.AbstractEventLoop, ForkServer] = {}
    _starting: dict[asyncio.AbstractEventLoop, asyncio.Lock] = {}

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.replies: asyncio.Queue[int | None] = asyncio.Queue()
        # pid -> its wait status once reported; None: the server went away before reporting it.
        self.statuses: dict[int, asyncio.Future[int | None]] = {}
        self.lock = asyncio.Lock()
        self.alive = True
        self.reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def of_this_loop(cls) -> ForkServer | None:
        """This loop's running server, started if there is none (or it died); None if it cannot start."""
        loop = asyncio.get_running_loop()
        for old in [k for k in cls._starting if k.is_closed()]:
            cls._by_loop.pop(old, None)
            del cls._starting[old]
        async with cls._starting.setdefault(loop, asyncio.Lock()):  # one server, however many launches
            server = cls._by_loop.get(loop)
            return server if server is not None and server.alive else await cls._launch()

    @classmethod
    def running(cls) -> ForkServer | None:
        """This loop's server, if one was started (alive or not: it still knows the exits it reported)."""
        return cls._by_loop.get(asyncio.get_running_loop())

    async def start(self, workdir: Path, env: dict[str, str]) -> int | None:
        """The pid of a supervisor forked for ``workdir``; None if the server could not fork one."""
        request = marshal.dumps((str(workdir), env))
        async with self.lock:  # requests are answered in order
            if not self.alive:
                return None
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(len(request).to_bytes(4, "big") + request)
                await self.proc.stdin.drain()
            except (OSError, RuntimeError):
                return None
            pid = await self.replies.get()
        if pid is not None:
            self.statuses.setdefault(pid, asyncio.get_running_loop().create_future())
        return pid

    @classmethod
    async def close(cls) -> None:
        """End this loop's server (its supervisors run on); the agent's own stop does it."""
        server = cls._by_loop.pop(asyncio.get_running_loop(), None)
        if server is not None and server.proc.stdin is not None:
            server.proc.stdin.close()
            await server.proc.wait()

    @classmethod
    async def _launch(cls) -> ForkServer | None:
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-I", "-S", str(FORK_SERVER),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=None,
                start_new_session=True,  # a Ctrl-C of `pai up` reaches the agent, which stops it by EOF
            )  # fmt: skip
        except OSError:
            return None
        server = cls(proc)
        cls._by_loop[asyncio.get_running_loop()] = server
        return server

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        try:
            while line := await self.proc.stdout.readline():
                word, _, rest = line.decode().strip().partition(" ")
                if word == "started":
                    await self.replies.put(int(rest))
                elif word == "failed":
                    await self.replies.put(None)
                elif word == "exited":
                    pid, status = (int(v) for v in rest.split())
                    done = self.statuses.setdefault(pid, asyncio.get_running_loop().create_future())
                    if not done.done():
                        done.set_result(status)
        finally:
            self.alive = False
            await self.replies.put(None)  # a start waiting for its answer starts its supervisor itself
            for done in self.statuses.values():
                if not done.done():
                    done.set_result(None)

    async def wait(self, pid: int) -> int | None:
        """The wait status of a supervisor it forked; None if the server went first (or never forked it)."""
        done = self.statuses.get(pid)
        if done is None:
            return None
        try:
            return await done
        finally:
            self.statuses.pop(pid, None)


def returncode_exit(returncode: int) -> TaskExit:
    """A supervisor's return code (negative: the signal that killed it) as a task's exit, for a supervisor
    killed before it recorded one."""
    if returncode < 0:
        return TaskExit(128 - returncode, -returncode)
    return TaskExit(returncode, None)


def read_exit(workdir: Path) -> TaskExit | None:
    try:
        record = json.loads((workdir / "exit.json").read_text())
        return TaskExit(int(record["exit_code"]), record.get("signal"), bool(record.get("timed_out")))
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        pass
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
        # The supervisor itself was killed (SIGKILL of the group) before it could record anything.
        return returncode_exit(returncode)
    server = ForkServer.running()
    status = await server.wait(pid) if server is not None else None
    if status is not None:
        recorded = read_exit(workdir)
        return recorded if recorded is not None else returncode_exit(os.waitstatus_to_exitcode(status))
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


def tail_rotated(path: Path, max_bytes: int) -> tuple[str, int, bool]:
    """Like ``tail``, but reaching back into the rotated files (``path.1``, …) when the current one is
    shorter than asked; the size is that of every kept file together."""
    files = [path]
    i = 1
    while (older := path.with_name(f"{path.name}.{i}")).exists():
        files.append(older)
        i += 1
    chunks: list[bytes] = []
    total = 0
    wanted = max_bytes
    for f in files:
        try:
            size = f.stat().st_size
        except FileNotFoundError:
            continue
        total += size
        if wanted <= 0:
            continue
        with open(f, "rb") as fh:
            if size > wanted:
                fh.seek(size - wanted)
            data = fh.read(wanted)
        chunks.append(data)
        wanted -= len(data)
    data = b"".join(reversed(chunks))
    return data.decode("utf-8", errors="replace"), total, total > len(data)
