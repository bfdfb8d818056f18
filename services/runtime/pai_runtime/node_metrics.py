"""The node's own resources on the agent's /metrics: CPU, memory, the data disk, and its GPUs.

GPU utilisation, memory use and ECC errors come from NVML where the node has real GPUs. A simulated or
declared inventory has none of those figures: its GPUs are listed in ``pai_node_gpu_info`` with
``simulated="true"`` and get no utilisation series rather than made-up ones.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Any

import psutil
from prometheus_client.core import Metric

from pai_common.contract.types import GpuInfo
from pai_common.metrics import Row, counter_family, gauge_family, register_snapshot

NODE = ("node",)
GPU = ("node", "gpu")
SPECS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("pai_node_cpu_utilization_ratio", "CPU busy on the node, 0 to 1 (all cores).", NODE),
    ("pai_node_cpu_cores", "CPU cores of the node.", NODE),
    ("pai_node_memory_used_bytes", "Memory in use on the node (total minus available).", NODE),
    ("pai_node_memory_total_bytes", "Memory of the node.", NODE),
    ("pai_node_filesystem_avail_bytes", "Free space for tasks on the disk holding the agent's data.", NODE),
    ("pai_node_filesystem_size_bytes", "Size of the disk holding the agent's data.", NODE),
    (
        "pai_node_gpu_info",
        "Always 1 per GPU of the node; labels say its model, UUID and whether it is simulated.",
        ("node", "gpu", "model", "uuid", "simulated"),
    ),
    ("pai_node_gpu_memory_total_bytes", "Memory of a GPU (declared for simulated GPUs).", GPU),
    ("pai_node_gpu_memory_used_bytes", "Memory in use on a GPU (NVML only).", GPU),
    ("pai_node_gpu_utilization_ratio", "Utilisation of a GPU, 0 to 1 (NVML only).", GPU),
)
ECC = (
    "pai_node_gpu_ecc_errors_total",
    "Uncorrected (double-bit) ECC errors of a GPU since the driver loaded (NVML only).",
    GPU,
)


def empty() -> list[Metric]:
    return [gauge_family(n, d, labels, ()) for n, d, labels in SPECS] + [counter_family(*ECC, ())]


COLLECTOR = register_snapshot(empty)
MIB = 1024 * 1024


class NodeSampler:
    def __init__(self, node: str, data_dir: Path) -> None:
        self.node = node
        self.data_dir = data_dir
        psutil.cpu_percent(None)  # the first call only starts the measurement

    def sample(self, gpus: list[GpuInfo], simulated: bool) -> None:
        COLLECTOR.publish(self.families(gpus, simulated))

    def families(self, gpus: list[GpuInfo], simulated: bool) -> list[Metric]:
        n = (self.node,)
        rows: dict[str, list[Row]] = {name: [] for name, _, _ in SPECS}
        memory = psutil.virtual_memory()
        rows["pai_node_cpu_utilization_ratio"].append((n, psutil.cpu_percent(None) / 100))
        rows["pai_node_cpu_cores"].append((n, float(psutil.cpu_count() or 0)))
        rows["pai_node_memory_used_bytes"].append((n, float(memory.total - memory.available)))
        rows["pai_node_memory_total_bytes"].append((n, float(memory.total)))
        disk = _disk(self.data_dir)
        if disk is not None:
            rows["pai_node_filesystem_avail_bytes"].append((n, float(disk.free)))
            rows["pai_node_filesystem_size_bytes"].append((n, float(disk.total)))
        ecc: list[Row] = []
        live = {} if simulated else _nvml_figures([g.index for g in gpus])
        for g in gpus:
            gpu = (self.node, str(g.index))
            flag = "true" if simulated else "false"
            rows["pai_node_gpu_info"].append(((self.node, str(g.index), g.model, g.uuid, flag), 1.0))
            rows["pai_node_gpu_memory_total_bytes"].append((gpu, float(g.memory_mb * MIB)))
            figures = live.get(g.index)
            if figures is None:
                continue
            used, utilisation, errors = figures
            if used is not None:
                rows["pai_node_gpu_memory_used_bytes"].append((gpu, float(used)))
            if utilisation is not None:
                rows["pai_node_gpu_utilization_ratio"].append((gpu, utilisation / 100))
            if errors is not None:
                ecc.append((gpu, float(errors)))
        return [gauge_family(name, doc, labels, rows[name]) for name, doc, labels in SPECS] + [
            counter_family(*ECC, ecc)
        ]


def _disk(path: Path) -> Any:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return shutil.disk_usage(probe)
    except OSError:
        return None


def _nvml_figures(indices: list[int]) -> dict[int, tuple[int | None, float | None, int | None]]:
    """GPU index -> (memory used bytes, utilisation percent, uncorrected ECC errors); {} without NVML."""
    try:
        import pynvml
    except ImportError:
        return {}
    try:
        pynvml.nvmlInit()
    except Exception:
        return {}
    out: dict[int, tuple[int | None, float | None, int | None]] = {}
    try:
        for index in indices:
            handle: Any = None
            with contextlib.suppress(Exception):
                handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            if handle is None:
                continue
            used = utilisation = errors = None
            with contextlib.suppress(Exception):
                used = int(pynvml.nvmlDeviceGetMemoryInfo(handle).used)
            with contextlib.suppress(Exception):
                utilisation = float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            with contextlib.suppress(Exception):
                errors = int(
                    pynvml.nvmlDeviceGetTotalEccErrors(
                        handle, pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, pynvml.NVML_VOLATILE_ECC
                    )
                )
            out[index] = (used, utilisation, errors)
        return out
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()
