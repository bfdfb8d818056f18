"""The node's devices: real GPUs through NVML where present, otherwise a declared inventory.

NVML gives each GPU's model, memory, UUID, PCIe bus id, NUMA node and ECC mode, and tells whether it
is still healthy (it answers, and has no uncorrectable ECC errors). FPGAs and InfiniBand adapters are
never seen by NVML; they come from the node's declared inventory file, as do the GPUs of a node
without NVML (a simulated node: the registration says so). Without a file, a node declares a number
of simulated GPUs.

An inventory file (YAML or JSON)::

    gpus: [{model: V100, memory_mb: 16384}, {model: V100, memory_mb: 16384, healthy: false}]
    fpgas: [{model: Arria10, id: "0000:3b:00.0", paths: [/dev/intel-fpga-port.0],
             resource: fpga.intel.com/arria10}]
    infiniband: [{model: ConnectX-6, id: mlx5_0}]

An FPGA's ``paths`` are the device files a task using it gets (``--device`` in its image, and
``PAI_FPGA_DEVICE_PATHS``); ``resource`` is the Kubernetes device plugin's resource name a pod asks for.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pai_common.contract.types import DeviceInfo, GpuInfo
from pai_common.errors import InvalidParametersError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Inventory:
    gpus: list[GpuInfo]
    simulated: bool
    fpgas: list[DeviceInfo] = field(default_factory=list)
    infiniband: list[DeviceInfo] = field(default_factory=list)
    source: str = "simulated"  # "nvml", "declared" or "simulated"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _nvml_gpus() -> list[GpuInfo] | None:
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # no driver, no device: the node has no real GPU to offer
        log.info("NVML unavailable", extra={"error": repr(exc)})
        return None
    try:
        return [_nvml_gpu(pynvml, i) for i in range(pynvml.nvmlDeviceGetCount())]
    finally:
        pynvml.nvmlShutdown()


def _optional(fn: Any, *args: Any) -> Any:
    """An NVML query that not every GPU or driver supports."""
    try:
        return fn(*args)
    except Exception:
        return None


def _nvml_gpu(pynvml: Any, i: int) -> GpuInfo:
    handle = pynvml.nvmlDeviceGetHandleByIndex(i)
    pci = _optional(pynvml.nvmlDeviceGetPciInfo, handle)
    ecc = _optional(pynvml.nvmlDeviceGetEccMode, handle)
    numa = _optional(getattr(pynvml, "nvmlDeviceGetNumaNodeId", None) or (lambda h: None), handle)
    return GpuInfo(
        index=i,
        model=_text(pynvml.nvmlDeviceGetName(handle)),
        memory_mb=int(pynvml.nvmlDeviceGetMemoryInfo(handle).total // (1024 * 1024)),
        uuid=_text(pynvml.nvmlDeviceGetUUID(handle)),
        pci_bus_id=_text(pci.busId) if pci is not None else None,
        numa_node=int(numa) if isinstance(numa, int) and numa >= 0 else None,
        ecc_enabled=bool(ecc[0]) if ecc is not None else None,
        healthy=_nvml_healthy(pynvml, handle),
    )


def _nvml_healthy(pynvml: Any, handle: Any) -> bool:
    errors = _optional(
        pynvml.nvmlDeviceGetTotalEccErrors,
        handle,
        pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
        pynvml.NVML_VOLATILE_ECC,
    )
    return not (isinstance(errors, int) and errors > 0)


def nvml_gpu_report(indices: list[int]) -> dict[str, Any] | None:
    """NVML's view of some GPUs for a task's exit (the diagnosis matches on it); None without NVML."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:
        return None
    try:
        report: dict[str, Any] = {}
        for i in indices:
            try:
                handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            except Exception as exc:  # a GPU that NVML lost is the worst kind of unhealthy
                report[str(i)] = {"healthy": False, "error": repr(exc)}
                continue
            errors = _optional(
                pynvml.nvmlDeviceGetTotalEccErrors,
                handle,
                pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
                pynvml.NVML_VOLATILE_ECC,
            )
            uncorrected = int(errors) if isinstance(errors, int) else None
            report[str(i)] = {
                "healthy": _nvml_healthy(pynvml, handle),
                "eccUncorrectedVolatile": uncorrected,
                # The field name OpenPAI's exit spec matches (gpuInfo.nvidiaDoubleEccError).
                "nvidiaDoubleEccError": bool(uncorrected),
            }
        return report
    finally:
        pynvml.nvmlShutdown()


def nvml_health() -> dict[int, bool] | None:
    """Each real GPU's health now; None without NVML."""
    gpus = _nvml_gpus()
    return None if gpus is None else {g.index: g.healthy for g in gpus}


def parse_inventory(node: str, doc: Any) -> Inventory:
    """A declared inventory document, refused precisely when it is malformed."""
    if not isinstance(doc, dict):
        raise InvalidParametersError("the inventory must be a mapping with gpus, fpgas and infiniband lists")
    unknown = set(doc) - {"gpus", "fpgas", "infiniband"}
    if unknown:
        raise InvalidParametersError(f"the inventory has unknown keys: {', '.join(sorted(unknown))}")

    def entries(key: str) -> list[dict[str, Any]]:
        items = doc.get(key) or []
        if not isinstance(items, list) or not all(isinstance(e, dict) for e in items):
            raise InvalidParametersError(f"inventory {key} must be a list of mappings")
        return items

    try:
        gpus = [
            GpuInfo(
                index=i,
                model=str(e.get("model", "declared")),
                memory_mb=int(e.get("memory_mb", 16384)),
                uuid=str(e.get("uuid", f"GPU-declared-{node}-{i}")),
                pci_bus_id=e.get("pci_bus_id"),
                numa_node=e.get("numa_node"),
                healthy=bool(e.get("healthy", True)),
            )
            for i, e in enumerate(entries("gpus"))
        ]
        others = {
            key: [
                DeviceInfo(
                    index=i,
                    model=str(e.get("model", key)),
                    id=str(e.get("id", f"{key}-{i}")),
                    healthy=bool(e.get("healthy", True)),
                    paths=_device_paths(key, i, e.get("paths")),
                    resource=_resource_name(key, i, e.get("resource")),
                )
                for i, e in enumerate(entries(key))
            ]
            for key in ("fpgas", "infiniband")
        }
    except (TypeError, ValueError) as exc:
        raise InvalidParametersError(f"the inventory has a bad device entry: {exc}") from exc
    return Inventory(gpus, True, others["fpgas"], others["infiniband"], "declared")


_RESOURCE_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


def _device_paths(key: str, i: int, value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(p, str) and p.startswith("/dev/") for p in value):
        raise InvalidParametersError(f"inventory {key}[{i}].paths must be a list of /dev/... device files")
    return list(value)


def _resource_name(key: str, i: int, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 253 or not _RESOURCE_RE.match(value):
        raise InvalidParametersError(
            f"inventory {key}[{i}].resource must be a Kubernetes extended resource name (domain/name),"
            f" got {value!r}"
        )
    return value


def load_inventory(node: str, path: Path) -> Inventory:
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidParametersError(f"cannot read the inventory {path}: {exc}") from exc
    return parse_inventory(node, doc)


def detect(
    node: str, simulated_count: int, force_simulated: bool = False, inventory_file: Path | None = None
) -> Inventory:
    declared = load_inventory(node, inventory_file) if inventory_file else None
    real = None if force_simulated else _nvml_gpus()
    if real:
        if declared:  # NVML knows the GPUs; the file still declares what NVML cannot see
            return Inventory(real, False, declared.fpgas, declared.infiniband, "nvml")
        return Inventory(real, simulated=False, source="nvml")
    if declared:
        return declared
    gpus = [
        GpuInfo(index=i, model="simulated", memory_mb=16384, uuid=f"GPU-sim-{node}-{i}")
        for i in range(simulated_count)
    ]
    return Inventory(gpus, simulated=True)
