"""What `pai up` declares to the scheduler for its nodes."""

from __future__ import annotations

from pathlib import Path

from pai_cli.platform import Platform


def test_every_simulated_node_has_its_gpus_and_cpu_leaves_after_them(tmp_path: Path) -> None:
    p = Platform(data_dir=tmp_path, nodes=3, gpus_per_node=2)
    config = p.cluster_config()
    physical = config["physicalCluster"]
    assert physical["skuTypes"] == {
        "gpu": {"gpu": 1, "cpu": 8, "memory": "65536Mi"},
        "CPU": {"gpu": 0, "cpu": 1, "memory": "8192Mi"},
    }
    cells = [(c["cellType"], c["cellAddress"]) for c in physical["physicalCells"]]
    assert cells == [(t, n) for n in ("node-0", "node-1", "node-2") for t in ("gpu-2-NODE", "CPU-16-NODE")]
    # CPU leaves are numbered after the node's GPUs, so (node, index) names one leaf.
    cpu_leaves = physical["physicalCells"][1]["cellChildren"]
    assert [c["cellAddress"] for c in cpu_leaves] == [str(i) for i in range(2, 18)]
    assert config["virtualClusters"]["default"]["virtualCells"] == [
        {"cellType": "gpu-2-NODE", "cellNumber": 3},
        {"cellType": "CPU-16-NODE", "cellNumber": 3},
    ]


def test_real_gpu_model_becomes_the_leaf_type(tmp_path: Path) -> None:
    p = Platform(data_dir=tmp_path, nodes=1, gpus_per_node=1, leaf_type="NVIDIA-H200")
    physical = p.cluster_config()["physicalCluster"]
    assert set(physical["skuTypes"]) == {"NVIDIA-H200", "CPU"}
    assert physical["cellTypes"]["NVIDIA-H200-1-NODE"]["childCellType"] == "NVIDIA-H200"
