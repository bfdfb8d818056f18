"""What the GPU health reported at a task's exit says, read defensively: the report is free-form.

The runtime sends ``{gpu_index: {...}}`` as NVML gave it. Read from each GPU's mapping:
- Xid errors: ``xid`` / ``xids`` / ``xid_errors`` / ``last_xid`` (an int, a list of ints, or a mapping
  whose keys are Xid numbers);
- uncorrectable ECC: ``ecc_double`` / ``double_bit_ecc`` / ``ecc_errors_double`` / ``volatile_double_bit``
  / ``dbe`` / ``ecc_uncorrected`` / ``uncorrected_ecc`` / ``volatile_uncorrected`` (a count, as NVML's
  volatile uncorrected total), ``ecc: {double: n}`` or ``ecc_errors: {double: n, uncorrected: n}``, or
  OpenPAI's ``nvidiaDoubleEccError: true``.
Anything else is ignored; nothing here raises.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

XID_KEYS = ("xid", "xids", "xid_errors", "last_xid")
DOUBLE_ECC_KEYS = (
    "ecc_double",
    "double_bit_ecc",
    "ecc_errors_double",
    "volatile_double_bit",
    "dbe",
    "ecc_uncorrected",
    "uncorrected_ecc",
    "volatile_uncorrected",
)
ECC_GROUPS = ("ecc", "ecc_errors")
MAX_GPUS = 64
MAX_XIDS_PER_GPU = 256


@dataclass(frozen=True)
class GpuHealth:
    double_ecc: bool = False
    xids: frozenset[int] = frozenset()
    # (gpu index, xid) and gpu indexes with double ECC, to name them in the explanation.
    xid_by_gpu: tuple[tuple[str, int], ...] = ()
    double_ecc_gpus: tuple[str, ...] = ()


def _ints(value: Any) -> list[int]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, str):
        return [int(value)] if value.strip().isdigit() and len(value) < 10 else []
    if isinstance(value, dict):
        return [x for k in list(value)[:MAX_XIDS_PER_GPU] for x in _ints(k)]
    if isinstance(value, list | tuple):
        return [x for v in value[:MAX_XIDS_PER_GPU] for x in _ints(v) if not isinstance(v, list | dict)]
    return []


def _count(value: Any) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value == value and abs(value) < 1e18 else 0
    if isinstance(value, str) and value.strip().isdigit() and len(value) < 19:
        return int(value)
    return 0


def _double_ecc(gpu: dict[str, Any]) -> bool:
    lowered = {str(k).lower(): v for k, v in list(gpu.items())[:256]}
    if lowered.get("nvidiadoubleeccerror") is True:
        return True
    if any(_count(lowered.get(k)) > 0 for k in DOUBLE_ECC_KEYS):
        return True
    for group in ECC_GROUPS:
        sub = lowered.get(group)
        if isinstance(sub, dict):
            inner = {str(k).lower(): v for k, v in list(sub.items())[:64]}
            if any(
                _count(inner.get(k)) > 0
                for k in ("double", "volatile_double", "double_bit", "dbe", "uncorrected")
            ):
                return True
    return False


def _xids(gpu: dict[str, Any]) -> list[int]:
    lowered = {str(k).lower(): v for k, v in list(gpu.items())[:256]}
    return [x for k in XID_KEYS for x in _ints(lowered.get(k))]


def read_gpu_health(report: Any) -> GpuHealth:
    if not isinstance(report, dict) or not report:
        return GpuHealth()
    items = list(report.items())[:MAX_GPUS]
    # A single GPU's mapping sent without the index level.
    if not any(isinstance(v, dict) for _, v in items):
        items = [("0", report)]
    xid_by_gpu: list[tuple[str, int]] = []
    ecc_gpus: list[str] = []
    for index, gpu in items:
        if not isinstance(gpu, dict):
            continue
        name = str(index)[:16]
        xid_by_gpu.extend((name, x) for x in _xids(gpu))
        if _double_ecc(gpu):
            ecc_gpus.append(name)
    return GpuHealth(
        double_ecc=bool(ecc_gpus),
        xids=frozenset(x for _, x in xid_by_gpu),
        xid_by_gpu=tuple(xid_by_gpu),
        double_ecc_gpus=tuple(ecc_gpus),
    )
