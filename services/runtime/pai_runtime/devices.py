"""The node's devices: real GPUs through NVML where present, otherwise a declared simulated inventory."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pai_common.contract.types import GpuInfo

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Inventory:
    gpus: list[GpuInfo]
    simulated: bool


def _nvml_gpus() -> list[GpuInfo] | None:
    try:
        import pynvml  # type: ignore[import-not-found]
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # no driver, no device: the node has no real GPU to offer
        log.info("NVML unavailable", extra={"error": repr(exc)})
        return None
    try:
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(handle)
            uuid = pynvml.nvmlDeviceGetUUID(handle)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle).total // (1024 * 1024)
            gpus.append(
                GpuInfo(
                    index=i,
                    model=name.decode() if isinstance(name, bytes) else str(name),
                    memory_mb=int(memory),
                    uuid=uuid.decode() if isinstance(uuid, bytes) else str(uuid),
                )
            )
        return gpus
    finally:
        pynvml.nvmlShutdown()


def detect(node: str, simulated_count: int, force_simulated: bool = False) -> Inventory:
    real = None if force_simulated else _nvml_gpus()
    if real:
        return Inventory(real, simulated=False)
    gpus = [
        GpuInfo(index=i, model="simulated", memory_mb=16384, uuid=f"GPU-sim-{node}-{i}")
        for i in range(simulated_count)
    ]
    return Inventory(gpus, simulated=True)
