"""Per-task resource use, exposed on the agent's /metrics for monitoring to scrape.

A task is every process of its process group. CPU and memory come from psutil; GPU memory per process
from NVML where it is present (a node without NVML reports no GPU series rather than zeros).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any

import psutil
from prometheus_client import Gauge

# `job_name` is OpenPAI's `user~name` (the label its alert actions act on); never `job`, which Prometheus
# keeps for the scrape job (and would rename ours to `exported_job`).
LABELS = ("node", "job_name", "username", "task_role", "index", "task_attempt")
TASK_CPU = Gauge(
    "pai_task_cpu_utilization_ratio", "CPU use of a task's processes, in cores (1 = one core busy)", LABELS
)
TASK_MEMORY = Gauge("pai_task_memory_bytes", "Resident memory of a task's processes", LABELS)
TASK_PROCESSES = Gauge("pai_task_processes", "Processes in a task's process group", LABELS)
TASK_GPU_MEMORY = Gauge("pai_task_gpu_memory_bytes", "GPU memory used by a task's processes (NVML)", LABELS)
TASK_GPU_UTIL = Gauge(
    "pai_task_gpu_utilization_ratio",
    "Utilisation of the task's GPUs, 0 to 1 (NVML; mean over its GPUs)",
    LABELS,
)
ALL = (TASK_CPU, TASK_MEMORY, TASK_PROCESSES, TASK_GPU_MEMORY, TASK_GPU_UTIL)


@dataclass(frozen=True)
class Usage:
    cpu_percent: float
    memory_bytes: int
    processes: int
    gpu_memory_bytes: int | None = None
    gpu_utilization: float | None = None


def group_pids(pgid: int) -> list[int]:
    pids = []
    for p in psutil.process_iter(["pid"]):
        with contextlib.suppress(psutil.Error, OSError):
            if os.getpgid(p.pid) == pgid:
                pids.append(p.pid)
    return pids


class TaskSampler:
    """Keeps psutil's process objects between samples, as their CPU percent is relative to the last."""

    def __init__(self) -> None:
        self._procs: dict[int, psutil.Process] = {}

    def sample(self, pgid: int, gpus: list[int]) -> Usage:
        cpu, rss, count = 0.0, 0, 0
        seen: dict[int, psutil.Process] = {}
        for pid in group_pids(pgid):
            proc = self._procs.get(pid)
            try:
                if proc is None:
                    proc = psutil.Process(pid)
                    proc.cpu_percent(None)  # the first call only starts the measurement
                else:
                    cpu += proc.cpu_percent(None)
                rss += proc.memory_info().rss
                count += 1
                seen[pid] = proc
            except psutil.Error:
                continue
        self._procs = {**{k: v for k, v in self._procs.items() if k in seen}, **seen}
        gpu_mem, gpu_util = _nvml_usage(set(seen), gpus)
        return Usage(cpu, rss, count, gpu_mem, gpu_util)

    def forget(self, pids: set[int]) -> None:
        for pid in pids:
            self._procs.pop(pid, None)


def _nvml_usage(pids: set[int], gpus: list[int]) -> tuple[int | None, float | None]:
    try:
        import pynvml
    except ImportError:
        return None, None
    try:
        pynvml.nvmlInit()
    except Exception:
        return None, None
    try:
        used, utils = 0, []
        for index in gpus:
            handle: Any = pynvml.nvmlDeviceGetHandleByIndex(index)
            with contextlib.suppress(Exception):
                for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                    if proc.pid in pids and proc.usedGpuMemory:
                        used += int(proc.usedGpuMemory)
            with contextlib.suppress(Exception):
                utils.append(float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu))
        return used, (sum(utils) / len(utils) if utils else None)
    except Exception:
        return None, None
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def task_labels(node: str, job_key: str, task_role: str, index: int, task_attempt: int) -> dict[str, str]:
    return {
        "node": node,
        "job_name": job_key,
        "username": job_key.split("~", 1)[0],
        "task_role": task_role,
        "index": str(index),
        "task_attempt": str(task_attempt),
    }


def publish(labels: dict[str, str], usage: Usage) -> None:
    TASK_CPU.labels(**labels).set(usage.cpu_percent / 100)
    TASK_MEMORY.labels(**labels).set(usage.memory_bytes)
    TASK_PROCESSES.labels(**labels).set(usage.processes)
    if usage.gpu_memory_bytes is not None:
        TASK_GPU_MEMORY.labels(**labels).set(usage.gpu_memory_bytes)
    if usage.gpu_utilization is not None:
        TASK_GPU_UTIL.labels(**labels).set(usage.gpu_utilization / 100)


def remove(labels: dict[str, str]) -> None:
    for gauge in ALL:
        with contextlib.suppress(KeyError):
            gauge.remove(*(labels[k] for k in LABELS))
