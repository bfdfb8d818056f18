"""What `pai up` declares to the scheduler for its nodes."""

from __future__ import annotations

from pathlib import Path

from pai_cli.platform import Platform


def test_inventory_lists_every_simulated_node_with_generous_cpu_and_memory(tmp_path: Path) -> None:
    p = Platform(data_dir=tmp_path, nodes=3, gpus_per_node=2)
    lines = p.inventory_csv().splitlines()
    assert lines[0] == "node,leaf_type,leaf_count,cpu,memory_mb"
    assert lines[1:] == ["node-0,gpu,2,16,131072", "node-1,gpu,2,16,131072", "node-2,gpu,2,16,131072"]


def test_real_gpu_model_becomes_the_leaf_type(tmp_path: Path) -> None:
    p = Platform(data_dir=tmp_path, nodes=1, gpus_per_node=1, leaf_type="NVIDIA-H200")
    assert p.inventory_csv().splitlines()[1] == "node-0,NVIDIA-H200,1,8,65536"
