"""CPU and memory limits for a task where the OS lets the agent set them.

A cgroup v2 hierarchy delegated to the agent (``PAI_CGROUP_ROOT``, writable, with the cpu and memory
controllers enabled) gives true limits: ``memory.max`` for the whole task and ``cpu.max`` as a quota of
cores. Without one, the only limit left is a per-process address-space limit (``ulimit -v``), opt-in
(``PAI_ADDRESS_SPACE_LIMIT``) and applied to CPU-only tasks (CUDA reserves far more address space than it
uses, so GPU tasks would fail under it).
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

log = logging.getLogger(__name__)

CPU_PERIOD_US = 100_000


def cgroup_values(cpu: int, memory_mb: int) -> dict[str, str]:
    values = {}
    if memory_mb > 0:
        values["memory.max"] = str(memory_mb * 1024 * 1024)
    if cpu > 0:
        values["cpu.max"] = f"{cpu * CPU_PERIOD_US} {CPU_PERIOD_US}"
    return values


def address_space_kb(memory_mb: int, gpus: list[int]) -> int | None:
    if memory_mb <= 0 or gpus:
        return None
    return memory_mb * 1024


def usable_cgroup_root(root: Path | None) -> Path | None:
    if root is None or not (root / "cgroup.controllers").is_file():
        return None
    controllers = (root / "cgroup.controllers").read_text().split()
    if not {"cpu", "memory"} <= set(controllers):
        return None
    try:
        probe = root / ".pai-probe"
        probe.mkdir(exist_ok=True)
        probe.rmdir()
    except OSError:
        return None
    return root


def prepare_cgroup(root: Path, name: str, cpu: int, memory_mb: int) -> Path | None:
    """A cgroup for one task with its limits written; None (and a log line) when the OS refuses."""
    values = cgroup_values(cpu, memory_mb)
    if not values:
        return None
    group = root / name
    try:
        group.mkdir(exist_ok=True)
        for file, value in values.items():
            (group / file).write_text(value)
    except OSError as exc:
        log.warning(
            "task cgroup not set up; no cgroup limits", extra={"cgroup": str(group), "error": repr(exc)}
        )
        with contextlib.suppress(OSError):
            group.rmdir()
        return None
    return group


def remove_cgroup(group: Path) -> None:
    with contextlib.suppress(OSError):
        group.rmdir()
