"""The embedded default's cluster (`pai up`'s own config) as the scheduler reads it: jobs asking for no GPU
run on CPU leaves, never on one of the GPUs (issue 17: they used to take the 8 GPU leaves, 8 at a time)."""

from __future__ import annotations

from pathlib import Path

import yaml

from pai_cli.platform import Platform
from pai_scheduler import vc_views
from pai_scheduler.hived import Allocated, GangRequest, HivedAllocator, Member, Queued, load_hived_config
from pai_scheduler.hived.audit import audit


def test_gpu_less_jobs_take_cpu_leaves_and_leave_every_gpu_to_gpu_jobs(tmp_path: Path) -> None:
    platform = Platform(data_dir=tmp_path)  # the default: 2 nodes x 4 GPUs
    alloc = HivedAllocator(load_hived_config(yaml.safe_dump(platform.cluster_config())))
    trivial = [
        alloc.submit(GangRequest(f"u~t{i}", "default", 0, (Member("task", 1, 0, cpu=1, memory_mb=256),)))
        for i in range(65)
    ]
    # 64 run at once (one CPU leaf each), far more than the 8 GPUs; the 65th waits for a CPU leaf.
    assert all(isinstance(d, Allocated) and d.placements[0].leaf_type == "CPU" for d in trivial[:64])
    assert isinstance(trivial[64], Queued) and "CPU leaves" in trivial[64].reason
    assert alloc.used_leaves() == {"default": {"CPU": 64}}
    # Every GPU is still free: a job of the default VC asking for all 8 runs beside them.
    gpus = alloc.submit(GangRequest("u~gpus", "default", 0, (Member("worker", 2, 4),)))
    assert isinstance(gpus, Allocated) and {p.leaf_type for p in gpus.placements} == {"gpu"}
    default = vc_views.virtual_clusters(alloc)["default"]
    assert default["resourcesTotal"]["gpu"] == 8 and default["usedCapacity"] == 100
    assert default["resourcesUsed"]["cpu"] == 64 + 8 * 8
    assert audit(alloc) == []
