"""An elastic job's membership file, ``$PAI_MEMBERSHIP_FILE``, and the signal that says it changed.

Every task of an elastic job (its launch environment holds ``PAI_MEMBERSHIP_VERSION``) finds at
``$PAI_MEMBERSHIP_FILE`` its PAI_* variables as ``export NAME='value'`` lines: the file exists from the
start with the launch membership, and when the gang grows or shrinks (``UpdateMembership``) the runtime
rewrites it whole (an atomic replace: a reader never sees half a file) and then sends SIGWINCH to the task's
process group. SIGWINCH because its default action is to do nothing: a task that does not care is never
killed by it (SIGUSR1's default would kill it), and one that does installs a handler (``trap ... WINCH`` in
bash, ``signal.signal(signal.SIGWINCH, ...)`` in Python) and re-reads the file (``. "$PAI_MEMBERSHIP_FILE"``).
The file's first line names its version; an update never replaces a newer one. Pure, but for ``write`` and
``signal_group``.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
from pathlib import Path

FILE_NAME = "membership.env"
ENV = "PAI_MEMBERSHIP_FILE"
VERSION = "PAI_MEMBERSHIP_VERSION"
SIGNAL = signal.SIGWINCH
_HEADER = re.compile(r"# membership version (\d+)\n")


def is_elastic(env: dict[str, str]) -> bool:
    return VERSION in env


def own_variables(task_env: dict[str, str], launched: dict[str, str]) -> dict[str, str]:
    """The PAI_* variables of an elastic task that the agent added to what the orchestrator sent (its
    address, task attempt, notice and membership files, devices): kept in every rewrite of the file."""
    if not is_elastic(launched):
        return {}
    return {k: v for k, v in task_env.items() if k.startswith("PAI_") and k not in launched}


def render(env: dict[str, str], version: int) -> str:
    """The file: its version, then every PAI_* variable of ``env`` (sorted) for a shell to source."""
    lines = [f"# membership version {version}\n"]
    lines += [f"export {k}={shlex.quote(v)}\n" for k, v in sorted(env.items()) if k.startswith("PAI_")]
    return "".join(lines)


def version_of(text: str) -> int | None:
    found = _HEADER.match(text)
    return int(found.group(1)) if found else None


def write(path: Path, text: str) -> bool:
    """Replace the file with ``text`` unless it holds a newer version already; False when it did."""
    try:
        current = version_of(path.read_text())
    except FileNotFoundError:
        current = None
    new = version_of(text)
    if current is not None and new is not None and current > new:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    return True


def signal_group(pid: int) -> bool:
    """Tell the task's process group (led by its supervisor); False when it is gone."""
    try:
        os.killpg(pid, SIGNAL)
    except ProcessLookupError:
        return False
    return True
