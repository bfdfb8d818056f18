"""The machine a benchmark ran on, recorded beside every figure so that no two machines are compared."""

from __future__ import annotations

import os
import platform as pyplatform
from pathlib import Path
from typing import Any


def machine() -> dict[str, Any]:
    mem_total = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_total = int(line.split()[1]) * 1024
                break
    except OSError:
        pass
    return {
        "platform": pyplatform.platform(),
        "cpus": os.cpu_count(),
        "memory_gib": round(mem_total / 2**30, 1) if mem_total else None,
        "python": pyplatform.python_version(),
    }


def describe() -> str:
    m = machine()
    return f"{m['platform']}; {m['cpus']} CPUs; {m['memory_gib']} GiB memory; Python {m['python']}"
