"""A node's own figures on its agent's /metrics: CPU, memory and disk always; GPUs listed with whether
they are simulated, and no utilisation made up for simulated ones."""

from __future__ import annotations

from pathlib import Path

from pai_common.contract.types import GpuInfo
from pai_runtime.node_metrics import NodeSampler


def test_simulated_gpus_are_listed_as_such_without_nvml_figures(tmp_path: Path) -> None:
    gpus = [GpuInfo(index=i, model="simulated", memory_mb=16384, uuid=f"GPU-sim-n0-{i}") for i in range(2)]
    families = {f.name: f for f in NodeSampler("n0", tmp_path / "not-yet-created").families(gpus, True)}

    def values(name: str) -> list[tuple[dict[str, str], float]]:
        return [(s.labels, s.value) for s in families[name].samples]

    (cpu,) = values("pai_node_cpu_utilization_ratio")
    assert cpu[0] == {"node": "n0"} and 0 <= cpu[1] <= 1
    (used,), (total,) = values("pai_node_memory_used_bytes"), values("pai_node_memory_total_bytes")
    assert 0 < used[1] <= total[1]
    (free,), (size,) = values("pai_node_filesystem_avail_bytes"), values("pai_node_filesystem_size_bytes")
    assert 0 < free[1] <= size[1]  # the nearest existing folder's disk
    info = values("pai_node_gpu_info")
    assert [labels["simulated"] for labels, _ in info] == ["true", "true"]
    assert [labels["uuid"] for labels, _ in info] == ["GPU-sim-n0-0", "GPU-sim-n0-1"]
    assert [v for _, v in values("pai_node_gpu_memory_total_bytes")] == [16384 * 1024 * 1024] * 2
    for nvml_only in (
        "pai_node_gpu_utilization_ratio",
        "pai_node_gpu_memory_used_bytes",
        "pai_node_gpu_ecc_errors",
    ):
        assert values(nvml_only) == [], nvml_only
