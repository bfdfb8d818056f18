"""One process per agent that forks the task supervisors, so that a task does not start an interpreter.

Starting ``python -I -S supervisor.py`` costs about 18 ms of CPU per task on the development machine
(9 ms for the interpreter alone, the rest to compile and import); a fork of this small, already started
process costs well under a millisecond (issue 17). The agent starts it once (``local_process.ForkServer``)
with pipes on its stdin and stdout, and the same flags and interpreter as a supervisor (``-I -S``, the
standard library's built-in modules only, ``supervisor`` imported once).

Protocol (stdin, from the agent): a request is 4 bytes of big-endian length, then ``marshal`` of
``(workdir, env)``. For each request, in order, it answers ``started <pid>\\n`` (or ``failed <reason>\\n``)
on stdout; when a supervisor it forked ends, ``exited <pid> <wait status>\\n``. At end of input (the agent
is gone, killed or stopped) it leaves at once: the supervisors it forked lead sessions of their own and run
on, as supervisors an agent started itself did; the next agent adopts them through their ``pid`` files.

Each forked child is what ``python -I -S supervisor.py <workdir>`` was: the leader of a new session and
process group, stdin, stdout and stderr on ``/dev/null``, in the task's directory, with the task's
environment, and it runs ``supervisor.run`` (which waits to be named in the ``pid`` file first).

Usage: ``python -I -S fork_server.py``.
"""

from __future__ import annotations

import marshal
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # -I leaves the script's folder out

import supervisor  # the folder added above

try:  # the C module under `signal` (see supervisor.py)
    import _signal as sig  # type: ignore[import-not-found]
except ImportError:  # another Python implementation
    import signal as sig

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def _read_exactly(fd: int, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        try:
            part = os.read(fd, n - len(data))
        except InterruptedError:
            continue
        if not part:
            return None
        data += part
    return data


def _say(line: str) -> None:
    data = (line + "\n").encode()
    while data:
        try:
            data = data[os.write(1, data) :]
        except InterruptedError:
            continue


def _child(workdir: str, env: dict[str, str], keep_out: list[int], led: int) -> None:
    """In the forked child: become what an exec'd supervisor was, run it, and never return. ``led`` is
    closed once it leads its session and group: the agent may stop the group as soon as it has the pid."""
    code = 1
    try:
        os.setsid()
        os.close(led)
        sig.signal(sig.SIGCHLD, sig.SIG_DFL)
        sig.set_wakeup_fd(-1)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.close(null)
        for fd in keep_out:
            os.close(fd)
        os.environ.clear()
        os.environ.update(env)
        code = supervisor.run(workdir, env) & 0xFF
    finally:
        os._exit(code)


def _reap() -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _say(f"exited {pid} {status}")


def serve() -> int:
    import select  # built in; only this long-lived process needs it

    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    sig.set_wakeup_fd(wake_w)
    sig.signal(sig.SIGCHLD, lambda _signum, _frame: None)  # a handler, so that the wake-up fd is written
    while True:
        try:
            ready, _, _ = select.select([0, wake_r], [], [])
        except InterruptedError:
            continue
        if wake_r in ready:
            os.read(wake_r, 512)
            _reap()
        if 0 not in ready:
            continue
        head = _read_exactly(0, 4)
        body = None if head is None else _read_exactly(0, int.from_bytes(head, "big"))
        if body is None:
            return 0  # the agent is gone: the supervisors run on without this process
        try:
            request: Any = marshal.loads(body)
            workdir, env = str(request[0]), dict(request[1])
            led_r, led_w = os.pipe()
        except Exception as exc:  # a bad request: the agent starts that one itself
            _say(f"failed {exc!r}".replace("\n", " "))
            continue
        try:
            pid = os.fork()
        except OSError as exc:  # no fork now: the agent starts that one itself
            os.close(led_r)
            os.close(led_w)
            _say(f"failed {exc!r}".replace("\n", " "))
            continue
        if pid == 0:
            _child(workdir, env, [wake_r, wake_w, led_r], led_w)
        os.close(led_w)
        os.read(led_r, 1)  # end of file: the child has its session (or is gone)
        os.close(led_r)
        _say(f"started {pid}")


if __name__ == "__main__":
    sys.exit(serve())
