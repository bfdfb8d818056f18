"""The node's inventory, task limits and container commands: pure parts and their OS-facing edges."""

from __future__ import annotations

from pathlib import Path

import pytest

from pai_common.errors import InvalidParametersError
from pai_runtime import containers, devices, limits


def test_a_declared_inventory_has_gpus_fpgas_and_infiniband(tmp_path: Path) -> None:
    path = tmp_path / "inventory.yaml"
    path.write_text(
        "gpus:\n"
        "  - {model: V100, memory_mb: 32768, pci_bus_id: '0000:3b:00.0', numa_node: 0}\n"
        "  - {model: V100, memory_mb: 32768, healthy: false}\n"
        "fpgas: [{model: Arria10, id: '0000:af:00.0'}]\n"
        "infiniband: [{model: ConnectX-6, id: mlx5_0}, {model: ConnectX-6, id: mlx5_1}]\n"
    )
    inv = devices.detect("n1", simulated_count=4, force_simulated=True, inventory_file=path)
    assert inv.source == "declared" and inv.simulated
    assert [(g.model, g.memory_mb, g.healthy) for g in inv.gpus] == [
        ("V100", 32768, True),
        ("V100", 32768, False),
    ]
    assert inv.gpus[0].pci_bus_id == "0000:3b:00.0" and inv.gpus[0].numa_node == 0
    assert inv.gpus[1].uuid == "GPU-declared-n1-1"
    assert [f.id for f in inv.fpgas] == ["0000:af:00.0"]
    assert [d.id for d in inv.infiniband] == ["mlx5_0", "mlx5_1"]


def test_without_nvml_or_inventory_the_node_declares_simulated_gpus() -> None:
    inv = devices.detect("n2", simulated_count=3, force_simulated=True)
    assert inv.source == "simulated" and inv.simulated
    assert [g.uuid for g in inv.gpus] == ["GPU-sim-n2-0", "GPU-sim-n2-1", "GPU-sim-n2-2"]
    assert inv.fpgas == [] and inv.infiniband == []


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "must be a mapping"),
        ({"gpu": []}, "unknown keys: gpu"),
        ({"gpus": {"a": 1}}, "gpus must be a list of mappings"),
        ({"fpgas": ["x"]}, "fpgas must be a list of mappings"),
        ({"gpus": [{"memory_mb": "lots"}]}, "bad device entry"),
    ],
)
def test_a_malformed_inventory_is_refused_precisely(doc: object, message: str) -> None:
    with pytest.raises(InvalidParametersError, match=message):
        devices.parse_inventory("n", doc)


def test_an_unreadable_inventory_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidParametersError, match="cannot read the inventory"):
        devices.load_inventory("n", tmp_path / "missing.yaml")


def test_cgroup_limits_and_the_fallback() -> None:
    assert limits.cgroup_values(4, 8192) == {"memory.max": str(8192 * 2**20), "cpu.max": "400000 100000"}
    assert limits.cgroup_values(0, 0) == {}
    assert limits.address_space_kb(1024, []) == 1024 * 1024
    assert limits.address_space_kb(1024, [0]) is None  # CUDA reserves more address space than it uses
    assert limits.address_space_kb(0, []) is None


def test_a_cgroup_root_is_used_only_when_it_is_v2_with_cpu_and_memory(tmp_path: Path) -> None:
    assert limits.usable_cgroup_root(None) is None
    assert limits.usable_cgroup_root(tmp_path) is None  # not a cgroup v2 directory
    (tmp_path / "cgroup.controllers").write_text("cpuset io\n")
    assert limits.usable_cgroup_root(tmp_path) is None
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    assert limits.usable_cgroup_root(tmp_path) == tmp_path
    group = limits.prepare_cgroup(tmp_path, "pai-task", 2, 512)
    assert group is not None and (group / "memory.max").read_text() == str(512 * 2**20)
    assert (group / "cpu.max").read_text() == "200000 100000"
    assert limits.prepare_cgroup(tmp_path, "pai-none", 0, 0) is None


def test_container_commands_use_the_host_network_devices_and_limits(tmp_path: Path) -> None:
    argv = containers.run_command(
        "docker", "python:3.11", "pai-x", tmp_path, tmp_path / ".task.env", "user.sh", [1, 3], 4, 2048, 512
    )
    assert argv[:3] == ["docker", "run", "--rm"]
    joined = " ".join(argv)
    wanted = ["--network host", "--gpus device=1,3", "--cpus 4", "--memory 2048m", "--shm-size 512m"]
    wanted += [f"-v {tmp_path}:{tmp_path}", f"-w {tmp_path}", f"--env-file {tmp_path}/.task.env"]
    for part in wanted:
        assert part in joined
    assert argv[-3:] == ["python:3.11", "bash", str(tmp_path / "user.sh")]
    podman = containers.run_command("podman", "img", "n", tmp_path, tmp_path / "e", "u.sh", [0], 0, 0, 0)
    assert "nvidia.com/gpu=0" in podman and "--cpus" not in podman


def test_no_engine_without_an_image_or_when_the_operator_says_none() -> None:
    assert containers.choose("auto", None) is None
    assert containers.choose("none", "python:3.11") is None
    working = containers.available("docker")
    assert containers.choose("docker", "python:3.11") == ("docker" if working else None)
    containers.available.cache_clear()
    assert containers.available("no-such-engine-binary") is False
