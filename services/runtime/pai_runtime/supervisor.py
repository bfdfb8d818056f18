"""The process that runs one task attempt: its phases, its logs, its exit record.

Started by the agent as the leader of a new process group, and run by path with only the standard
library, so that it starts fast and outlives a restart of the agent. It runs the phases of the task
(plugin pre-commands, the user's commands, plugin post-commands) each under ``bash`` in the same group,
copies their stdout and stderr into size-limited, rotated log files (``stdout.log``, ``stderr.log`` and
the combined ``all.log``), enforces the task's time limit, and writes the exact result to ``exit.json``
(and the bare code to ``exit_code``) before it leaves: the code, and the signal when a phase was killed
by one. A stop (SIGTERM to the group) reaches every phase process; the supervisor itself only notes it,
so that it can still record how the task ended.

One starts for every task, so its start is on every job's path: it imports only modules built into the
interpreter (``marshal`` for its configuration, ``_thread`` and ``_signal``, ``posix_spawn`` for the
phases), not ``json``, ``subprocess``, ``threading``, ``signal`` or ``pathlib``, which together cost
about 20 ms of CPU per start (measured: 10 ms for ``python -I -S`` with these, against 30 ms).
``subprocess`` is imported only to mount storages.

Usage: ``python -I -S supervisor.py <workdir>``; the workdir holds ``supervisor.cfg`` (written by
``local_process.prepare`` with ``marshal``, by the same interpreter) and the phase scripts.
"""

from __future__ import annotations

import _thread
import marshal
import os
import sys
import time

# `typing` alone costs milliseconds to import: only the type checker reads it.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

try:  # the C module under `signal`, without the enum wrappers that make `signal` slow to import
    import _signal as sig  # type: ignore[import-not-found]
except ImportError:  # another Python implementation
    import signal as sig

CONFIG = "supervisor.cfg"
CHUNK = 65536
# Written by the agent once this process is started (``local_process.claim``): the one supervisor it names.
PID_FILE = "pid"
# The exit of a supervisor that was not named (it writes no record: the task is not its own).
UNCLAIMED_EXIT = 254
# How long a supervisor waits to be named before it leaves: the agent names it within milliseconds, so
# only an agent that died in between leaves it unnamed (and the next agent starts and names another).
CLAIM_WAIT_S = 60.0


class RotatingLog:
    """Appends to ``path``; past ``max_bytes`` the file moves to ``path.1`` (and so on, ``keep`` files)."""

    def __init__(self, path: str | os.PathLike[str], max_bytes: int, keep: int) -> None:
        self.path = os.fspath(path)
        self.max_bytes = max(1, max_bytes)
        self.keep = max(1, keep)
        self.lock = _thread.allocate_lock()
        self.file = open(self.path, "ab", buffering=0)
        self.size = os.fstat(self.file.fileno()).st_size

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
            _unlink(self.path)
        else:
            for i in range(self.keep - 1, 0, -1):
                older = f"{self.path}.{i}"
                if i == self.keep - 1:
                    _unlink(older)
                newer = self.path if i == 1 else f"{self.path}.{i - 1}"
                if os.path.exists(newer):
                    os.rename(newer, older)
        self.file = open(self.path, "ab", buffering=0)
        self.size = 0


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _pump(fd: int, own: RotatingLog, combined: RotatingLog, done: Any) -> None:
    try:
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
    finally:
        done.release()


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


def _kill_others(signum: int) -> None:
    for pid in _others_in_group():
        try:
            os.kill(pid, signum)
        except OSError:
            continue


def _result(status: int) -> tuple[int, int | None]:
    """(exit code, signal) the way a shell reports them, from a wait status: a signal is 128 + its number."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status), os.WTERMSIG(status)
    return os.WEXITSTATUS(status), None


def _mount_storages(config: dict[str, Any], workdir: str, err_w: int) -> int:
    """Mount the task's storages in this process's own mount namespace (started by ``unshare``); the
    code to end the task with when one cannot be mounted, 0 when all are."""
    steps = config.get("mounts") or []
    if not steps:
        return 0
    import subprocess  # only tasks with storages pay for it

    failed = int(config.get("mount_failed_exit", 1))
    secrets = str(config.get("mount_secrets") or os.path.join(workdir, ".mount-secrets"))

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
        if os.path.isdir(secrets):
            for name in os.listdir(secrets):
                os.unlink(os.path.join(secrets, name))
            os.rmdir(secrets)
    return 0


def _write_atomic(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


def _json_value(value: int | bool | str | None) -> str:
    """The few JSON values of the exit record, without importing ``json``."""
    if value is None:
        return "null"
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    escaped = "".join(
        c if c not in '"\\' and ord(c) >= 0x20 else ("\\" + c if c in '"\\' else f"\\u{ord(c):04x}")
        for c in value
    )
    return f'"{escaped}"'


def exit_record(code: int, signal: int | None, timed_out: bool, failed_phase: str | None) -> str:
    fields = {"exit_code": code, "signal": signal, "timed_out": timed_out, "failed_phase": failed_phase}
    return "{" + ", ".join(f'"{k}": {_json_value(v)}' for k, v in fields.items()) + "}"


def _spawn(argv: list[str], stdout: int, stderr: int, env: dict[str, str] | None = None) -> int:
    """A phase's process, in this process group and directory, stdin from /dev/null, with ``env`` (this
    process's environment unless given). The pipes and files this process opened are not inherited
    (Python opens them close-on-exec)."""
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
        (os.POSIX_SPAWN_DUP2, stdout, 1),
        (os.POSIX_SPAWN_DUP2, stderr, 2),
    ]
    return os.posix_spawnp(argv[0], argv, os.environ if env is None else env, file_actions=actions)


class _Child:
    """A phase's process, waited for by a thread of its own, so that the wait can have a time limit."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.status = 255 << 8  # what is reported if the wait itself failed
        self._ended = _thread.allocate_lock()
        self._ended.acquire()
        _thread.start_new_thread(self._reap, ())

    def _reap(self) -> None:
        try:
            self.status = os.waitpid(self.pid, 0)[1]
        finally:
            self._ended.release()

    def wait(self, timeout_s: float | None = None) -> int | None:
        """The wait status; None if ``timeout_s`` passed first (the process is still running)."""
        if not self._ended.acquire(timeout=-1 if timeout_s is None else max(0.0, timeout_s)):
            return None
        self._ended.release()  # a later wait returns at once
        return self.status


def _give_tasks_default_signals() -> None:
    """A task starts with the signal dispositions of a fresh process. Ignored signals survive exec: an agent
    started in the background or under nohup ignores SIGINT, SIGQUIT or SIGHUP, and so would every task,
    whose `kill -INT`, Ctrl-C handling or reload on SIGHUP would then silently do nothing. Caught signals
    are reset to their defaults by exec, so the supervisor catches these (and leaves what they do to the
    task's phases, which receive them through the process group)."""
    for signum in (sig.SIGINT, sig.SIGQUIT, sig.SIGHUP):
        sig.signal(signum, lambda _signum, _frame: None)


def wait_for_claim(workdir: str, wait_s: float = CLAIM_WAIT_S) -> bool:
    """Whether the agent named this process the task's supervisor; False if it named another one, or
    nobody within ``wait_s`` (its agent died before it could). Nothing may run before this is True: an
    attempt started twice would otherwise run twice."""
    path, me = os.path.join(workdir, PID_FILE), str(os.getpid())
    deadline, pause = time.monotonic() + wait_s, 0.001
    while True:
        try:
            with open(path) as f:
                named = f.read().strip()
        except FileNotFoundError:
            named = ""
        if named:
            return named == me
        if time.monotonic() >= deadline:
            return False
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


def run(workdir: str, env: dict[str, str] | None = None) -> int:
    """Run the task of ``workdir`` once named; its exit code. ``env``: the task's environment, when this
    process was forked (``fork_server``) rather than started with it."""
    os.chdir(workdir)  # the phases run there (the agent starts this process there too)
    if not wait_for_claim(workdir):
        return UNCLAIMED_EXIT  # another supervisor has the task, or it is a leftover: it runs nothing here
    with open(os.path.join(workdir, CONFIG), "rb") as f:
        config: dict[str, Any] = marshal.load(f)
    stopping: list[bool] = []

    def on_term(signum: int, _frame: object) -> None:
        stopping.append(True)  # the phases got the same signal; what they do with it is the task's result

    sig.signal(sig.SIGTERM, on_term)
    _give_tasks_default_signals()
    cgroup = config.get("cgroup")
    if cgroup:
        try:
            with open(os.path.join(cgroup, "cgroup.procs"), "w") as procs:
                procs.write(str(os.getpid()))
        except OSError as exc:
            print(f"[openpai-runtime] cgroup not joined: {exc}", file=sys.stderr)

    max_bytes, keep = int(config["log_max_bytes"]), int(config["log_keep"])
    logs = {
        stream: RotatingLog(os.path.join(workdir, f"{stream}.log"), max_bytes, keep)
        for stream in ("stdout", "stderr", "all")
    }
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pumped = []
    for fd, own in ((out_r, logs["stdout"]), (err_r, logs["stderr"])):
        done = _thread.allocate_lock()
        done.acquire()
        pumped.append(done)
        _thread.start_new_thread(_pump, (fd, own, logs["all"], done))

    timeout_s = config.get("timeout_s")
    deadline = time.monotonic() + float(timeout_s) if timeout_s else None
    grace_s = float(config.get("grace_s", 10.0))
    code, signal, failed_phase, timed_out = 0, None, None, False
    code = _mount_storages(config, workdir, err_w)
    if code:
        failed_phase = "mount"
    for phase in config["phases"]:
        if stopping and code == 0:
            # Stopped before this phase began: the task did not succeed, it was stopped, as a phase that
            # got the SIGTERM would have been (it used to be recorded as a success).
            code, signal, failed_phase = 128 + sig.SIGTERM, sig.SIGTERM, phase["name"]
        if stopping or code != 0:
            break  # a failed phase ends the task: pre-commands guard the user's, post-commands need success
        argv = ["bash", phase["script"]]
        limit_kb = phase.get("memory_limit_kb")
        if limit_kb:
            # A per-process address-space limit: what the OS allows without cgroups.
            argv = ["bash", "-c", f'ulimit -v {int(limit_kb)} && exec bash "$0"', phase["script"]]
        child = _Child(_spawn(argv, out_w, err_w, env))
        status = child.wait(None if deadline is None else deadline - time.monotonic())
        if status is None:
            timed_out = True
            os.write(err_w, f"[openpai-runtime] time limit of {timeout_s}s reached; stopping\n".encode())
            _kill_others(sig.SIGTERM)
            status = child.wait(grace_s)
            if status is None:
                _kill_others(sig.SIGKILL)
                status = child.wait()
        code, signal = _result(status if status is not None else child.status)
        if code != 0:
            failed_phase = phase["name"]
        if timed_out:
            break

    os.close(out_w)
    os.close(err_w)
    if stopping:
        # A stop gives every process of the task its grace period, not just the one that ended first.
        until = time.monotonic() + grace_s
        while _others_in_group() and time.monotonic() < until:
            time.sleep(0.05)
    # Whatever a phase left behind goes with the task, as it would with its container.
    _kill_others(sig.SIGKILL)
    drain_s = float(config.get("drain_s", 2.0))
    for done in pumped:
        done.acquire(timeout=drain_s)
    _write_atomic(os.path.join(workdir, "exit.json"), exit_record(code, signal, timed_out, failed_phase))
    _write_atomic(os.path.join(workdir, "exit_code"), f"{code}\n")
    return code


if __name__ == "__main__":
    sys.exit(run(os.path.abspath(sys.argv[1])) & 0xFF)
