"""FPGA SKUs are cells like GPU SKUs: configs and inventories name them, a task asks for them by SKU type,
the allocation says which FPGAs, and a bad FPGA gets no new work, as a bad GPU does."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from pai_common.bus import Bus
from pai_common.contract.events import (
    NodeRegistered,
    SchedulingAllocated,
    SchedulingPending,
    SchedulingRequested,
)
from pai_common.contract.rpc import ListVirtualClustersRequest, VirtualClustersReply
from pai_common.contract.types import DeviceInfo, GpuInfo, PodRequest
from pai_common.embedded import ServerProcess
from pai_common.service import ServiceApp
from pai_common.testing import EventRecorder
from pai_scheduler import vc_views
from pai_scheduler.hived import (
    Allocated,
    ConfigError,
    GangRequest,
    HivedAllocator,
    Member,
    Queued,
    Rejected,
    load_hived_config,
    parse_inventory_csv,
)
from pai_scheduler.hived.audit import audit
from pai_scheduler.shell import Scheduler, SchedulerSettings

CLUSTER = """
physicalCluster:
  skuTypes:
    A100: {gpu: 1, cpu: 8, memory: 64Gi}
    Arria10: {fpga: 1, cpu: 4, memory: 16Gi}
  cellTypes:
    A100-NODE: {childCellType: A100, childCellNumber: 4, isNodeLevel: true}
    FPGA-NODE: {childCellType: Arria10, childCellNumber: 2, isNodeLevel: true}
  physicalCells:
    - {cellType: A100-NODE, cellAddress: a0}
    - {cellType: FPGA-NODE, cellAddress: f0}
virtualClusters:
  research:
    virtualCells:
      - {cellType: A100-NODE, cellNumber: 1}
      - {cellType: FPGA-NODE, cellNumber: 1}
"""


def gang(key: str, leaves: int, types: tuple[str, ...] = (), milli: int = 0) -> GangRequest:
    return GangRequest(key, "research", 10, (Member("w", 1, leaves, gpu_milli=milli),), types)


def test_fpgas_go_only_to_gangs_that_name_them_and_are_never_shared() -> None:
    a = HivedAllocator(load_hived_config(CLUSTER))
    untyped = a.submit(gang("gpu", 4))
    assert isinstance(untyped, Allocated) and untyped.placements[0].node == "a0"
    assert isinstance(a.submit(gang("gpu2", 1)), Queued)  # the A100s are busy; the FPGAs are no GPUs
    fpga = a.submit(gang("fpga", 2, ("Arria10",)))
    assert isinstance(fpga, Allocated) and fpga.placements[0].leaf_type == "Arria10"
    assert fpga.placements[0].leaves == (0, 1)
    share = a.submit(gang("share", 0, ("Arria10",), milli=500))
    assert isinstance(share, Rejected) and "never a share" in share.reason
    views = vc_views.virtual_clusters(a)
    assert views["research"]["resourcesUsed"]["fpga"] == 2 and views["research"]["resourcesUsed"]["gpu"] == 4
    assert views["research"]["resourcesGuaranteed"] == {
        "cpu": 40,
        "vCores": 40,
        "memory": 4 * 65536 + 2 * 16384,
        "gpu": 4,
        "GPUs": 4,
        "fpga": 2,
    }
    assert vc_views.sku_types(a)["Arria10"] == {"cpu": 4.0, "memory": 16384, "gpu": 0, "fpga": 1}
    assert a.fragmentation().free_leaves == 0  # FPGAs are not GPUs
    assert audit(a) == []


def test_a_bad_fpga_gets_no_new_work() -> None:
    a = HivedAllocator(load_hived_config(CLUSTER))
    a.set_bad_leaves("f0", [1])
    got = a.submit(gang("one", 1, ("Arria10",)))
    assert isinstance(got, Allocated) and got.placements[0].leaves == (0,)
    waiting = a.submit(gang("two", 1, ("Arria10",)))
    assert isinstance(waiting, Queued) and "bad Arria10 leaves (no new work): f0 #1" in waiting.reason
    out = a.set_bad_leaves("f0", [])
    assert [d.key for d in out if isinstance(d, Allocated)] == ["two"]


def test_sku_and_inventory_rows_name_fpgas() -> None:
    with pytest.raises(ConfigError, match="a leaf is one device"):
        load_hived_config(CLUSTER.replace("{fpga: 1, cpu: 4", "{fpga: 1, gpu: 1, cpu: 4"))
    header = "node,leaf_type,leaf_count,cpu,memory_mb,rack,device\n"
    config = parse_inventory_csv(header + "g0,V100,8,64,524288,r0,gpu\nf0,Arria10,2,16,65536,r1,fpga\n")
    assert config.is_fpga_leaf("Arria10") and config.is_gpu_leaf("V100") and not config.is_cpu_leaf("Arria10")
    no_device = parse_inventory_csv("node,leaf_type,leaf_count,cpu,memory_mb\ng0,V100,8,64,524288\n")
    assert no_device.is_gpu_leaf("V100")
    with pytest.raises(
        ConfigError, match=r"line 3 \(node f1\): leaf type 'Arria10' is a gpu here but a fpga"
    ):
        parse_inventory_csv(header + "f0,Arria10,2,16,65536,r1,fpga\nf1,Arria10,2,16,65536,r1,gpu\n")
    with pytest.raises(ConfigError, match="device must be gpu or fpga"):
        parse_inventory_csv(header + "f0,Arria10,2,16,65536,r1,asic\n")


async def test_the_allocation_says_which_fpgas(
    fresh_nats: ServerProcess, mongo_server: ServerProcess, fresh_bus: Bus, tmp_path: Path
) -> None:
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(CLUSTER)
    settings = SchedulerSettings(
        nats_url=fresh_nats.url, mongo_url=mongo_server.url, scheduler_cluster=cluster, data_dir=tmp_path
    )
    app = ServiceApp("scheduler", settings)
    Scheduler(app, settings)
    app.name = f"sched{uuid.uuid4().hex[:8]}"
    events = EventRecorder(fresh_bus, "pai.evt.scheduling.>")
    await events.start()
    await app.start()
    try:
        gpus = [GpuInfo(index=i, model="A100", memory_mb=1, uuid=f"a0-{i}") for i in range(4)]
        await fresh_bus.publish_event(
            NodeRegistered(node="a0", host_ip="10.0.0.1", cpu=32, memory_mb=262144, gpus=gpus, simulated=True)
        )
        fpgas = [DeviceInfo(index=i, model="Arria10", id=f"0000:3b:0{i}.0", healthy=i != 0) for i in range(2)]
        await fresh_bus.publish_event(
            NodeRegistered(
                node="f0", host_ip="10.0.0.2", cpu=8, memory_mb=32768, gpus=[], fpgas=fpgas, simulated=True
            )
        )

        def request(job: str, n: int, skus: list[str]) -> SchedulingRequested:
            pod = PodRequest(task_role="w", index=0, gpu=n, cpu=1, memory_mb=1024, sku_types=skus)
            return SchedulingRequested(
                job_key=job, attempt_id=0, virtual_cluster="research", priority=10, pods=[pod]
            )

        await fresh_bus.publish_event(request("u~fpga", 1, ["Arria10"]))
        placed = await events.wait_for(SchedulingAllocated, "u~fpga")
        # FPGA 0 is reported bad: the task gets FPGA 1, and no GPU.
        assert [(p.node, p.fpgas, p.gpus) for p in placed.placements] == [("f0", [1], [])]
        await fresh_bus.publish_event(request("u~fpga2", 1, ["Arria10"]))
        waiting = await events.wait_for(SchedulingPending, "u~fpga2")
        assert "f0 #0" in waiting.reason
        await fresh_bus.publish_event(request("u~gpu", 2, []))
        gpu_job = await events.wait_for(SchedulingAllocated, "u~gpu")
        assert gpu_job.placements[0].node == "a0" and gpu_job.placements[0].fpgas == []
        vcs = (await fresh_bus.request(ListVirtualClustersRequest(), VirtualClustersReply)).virtual_clusters
        assert vcs["research"]["resourcesUsed"]["fpga"] == 1
    finally:
        await app.stop()
