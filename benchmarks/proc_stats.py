"""CPU time and resident memory of a set of processes, read from ``/proc`` (Linux).

A process's CPU is its own user + system time plus that of the children it has waited for
(``cutime``/``cstime``): a runtime agent's count includes the task supervisors it started and reaped,
so the sum over a platform's processes is the CPU of the whole platform, task processes included.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU of ``pid`` and of its reaped children, in seconds; None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: the fields start after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
    return (utime + stime + cutime + cstime) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def snapshot(pids: Mapping[str, int]) -> dict[str, float]:
    """CPU seconds per named process (those still running)."""
    taken: dict[str, float] = {}
    for name, pid in pids.items():
        value = cpu_seconds(pid)
        if value is not None:
            taken[name] = value
    return taken


def delta(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    """CPU spent per process between two snapshots (a process missing from either counts 0)."""
    return {name: max(0.0, after[name] - before[name]) for name in after if name in before}


def load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())
