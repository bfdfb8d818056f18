"""What runs a task: the ``TaskBackend`` protocol every backend implements, and the values it trades.

The agent (``shell.py``) does what every backend shares: the command's idempotency, the job's secrets,
the plugins' commands, the run records, the events, the logs RPC and the metrics. A backend does what
differs: where a task runs and how its storages are mounted (``mounts``), starting it (``launch``),
following it to its end (``wait``), stopping it (``kill``) and reading its log (``logs``). Two exist:
local processes (``local_backend.LocalBackend``) and Kubernetes pods (``kubernetes.KubernetesBackend``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pai_common.contract.commands import LaunchTask
from pai_common.contract.types import DeviceInfo

# A task the runtime could not set up (bad plugin entry, unknown secret): a user error, as OpenPAI's init.
SETUP_FAILED_EXIT = 1
# OpenPAI's exit code for a port already taken on the node (its init port checker: 10 → 253).
PORT_CONFLICT_EXIT = 253
# A storage the task must mount could not be mounted where it runs: the task does not run without its
# data. The exit spec calls it StorageMountFailed (platform failure, retried later).
STORAGE_MOUNT_EXIT = 246
# A task whose stop overtook its launch here: it never starts, and ends as a task asked to terminate does
# (SIGTERM; the exit spec's ContainerSigTermReceived).
STOPPED_BEFORE_LAUNCH_EXIT = 143


class SetupError(Exception):
    """The task cannot start as asked; it ends at once with this code and message in its logs."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class TaskPaths:
    """Where a task finds its own things, as the plugins must name them inside the task."""

    home: str
    python: str
    barrier_script: str
    # The sshd binary where one is installed; "auto": look for one where the task runs.
    sshd: str | None
    # Where the task finds a preemption notice ($PAI_PREEMPTION_NOTICE); None: this backend cannot give one.
    notice: str | None = None
    # Where an elastic task finds its membership file ($PAI_MEMBERSHIP_FILE); None: in its home.
    membership: str | None = None


@dataclass
class TaskFiles:
    """One task as the agent built it: commands with secrets rendered, plugin output, environment."""

    entrypoint: str
    pre: str = ""
    post: str = ""
    # Relative path under the task's home → (content, file mode).
    files: dict[str, tuple[str, int]] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, Any] = field(default_factory=dict)
    # The set-up failed: run only the entrypoint (a message and an exit), with no image and no mount.
    failed: bool = False
    # The node's FPGAs the task got (from its inventory: device files, device plugin resource).
    fpgas: list[DeviceInfo] = field(default_factory=list)


@dataclass(frozen=True)
class Started:
    """A launched task: what to keep in its run record (pid, pod name, …) and where it runs."""

    record: dict[str, Any]
    # host, docker, podman or kubernetes (reported in task.running and kept in the run record).
    backend: str
    pid: int = 0


@dataclass(frozen=True)
class TaskExit:
    exit_code: int
    signal: int | None
    timed_out: bool = False


@dataclass(frozen=True)
class Ended:
    """How a task ended, with the tail of its log (secrets not yet masked) and the backend's reasons."""

    result: TaskExit
    tail: str
    pod_reason: str | None = None
    container_reason: str | None = None


@dataclass(frozen=True)
class LogText:
    content: str
    size: int
    truncated: bool


class TaskBackend(Protocol):
    """Runs tasks somewhere. ``run`` is the task's run record as ``launch`` started it (``Started.record``
    merged in, plus ``workdir``), so that a restarted agent can ``wait``, ``kill`` and read ``logs`` of
    tasks an earlier agent launched."""

    async def start(self) -> None:
        """Connect to what runs the tasks (once, at agent start-up)."""

    async def close(self) -> None: ...

    def paths(self, workdir: Path) -> TaskPaths: ...

    def mounts(self, cmd: LaunchTask, credentials: dict[str, dict[str, str]]) -> Any:
        """The task's storages (``cmd.mounts``) as this backend realises them, checked before anything
        starts; SetupError(STORAGE_MOUNT_EXIT) for one it cannot mount. ``credentials`` per storage name,
        from the storage service, for the types that need them."""

    async def launch(self, cmd: LaunchTask, workdir: Path, task: TaskFiles, mounts: Any) -> Started:
        """Start the task (or find it started by an earlier delivery of the same command). SetupError for
        a task that cannot start here (a port in use); nothing is started then."""

    async def wait(self, run: dict[str, Any]) -> Ended: ...

    async def kill(self, run: dict[str, Any], grace_s: float) -> None: ...

    async def notify(self, run: dict[str, Any], content: dict[str, Any]) -> bool:
        """Put a preemption notice where the task finds it (``TaskPaths.notice``), before ``kill``; False
        where this backend cannot."""

    async def membership(self, run: dict[str, Any], text: str) -> bool:
        """Rewrite an elastic task's membership file (``membership.FILE_NAME`` in its folder) with ``text``
        and send the task ``membership.SIGNAL``; False where this backend cannot."""

    async def logs(self, run: dict[str, Any], stream: str, tail_bytes: int) -> LogText: ...


def failure_script(message: str, code: int) -> str:
    """The one-line task that tells the user why the runtime did not start theirs, and exits."""
    import shlex

    return f"echo {shlex.quote(f'[openpai-runtime] task not started: {message}')} >&2\nexit {code}"
