"""The devices a task got travel from the scheduler's placement to its launch (FPGAs by inventory index),
and how its node holds a GPU share comes back from the runtime into the task's status."""

from __future__ import annotations

from pai_common.contract.commands import LaunchTask
from pai_common.contract.events import SchedulingAllocated, TaskRunning
from pai_common.contract.types import GpuShareStatus, JobSpec, Placement, TaskRoleSpec
from pai_orchestrator import core

T0 = 3_000_000


def test_fpgas_reach_the_launch_and_a_share_status_the_snapshot() -> None:
    spec = JobSpec(
        job_key="a~dev",
        user="a",
        name="dev",
        task_roles=[
            TaskRoleSpec(
                name="fpga", instances=1, gpu=0, cpu=1, memory_mb=64, entrypoint="x", sku_types=("U250",)
            ),
            TaskRoleSpec(
                name="share", instances=1, gpu=0, gpu_milli=250, cpu=1, memory_mb=64, entrypoint="y"
            ),
        ],
        submitted_at=T0,
    )
    fw = core.on_submitted(spec, T0).framework
    assert fw is not None
    placed = SchedulingAllocated(
        job_key="a~dev",
        attempt_id=0,
        placements=[
            Placement(task_role="fpga", index=0, node="n0", gpus=[], fpgas=[1, 2], host_ip="10.0.0.1"),
            Placement(task_role="share", index=0, node="n1", gpus=[3], gpu_milli=250, host_ip="10.0.0.2"),
        ],
    )
    tr = core.on_allocated(fw, placed, T0 + 1)
    launches = {s.command.task_role: s.command for s in tr.commands if isinstance(s.command, LaunchTask)}
    assert launches["fpga"].fpgas == [1, 2] and launches["fpga"].gpus == []
    assert launches["share"].fpgas == [] and (launches["share"].gpus, launches["share"].gpu_milli) == (
        [3],
        250,
    )
    fw = tr.framework
    assert fw is not None
    note = "no GPU seen by NVML (simulated GPUs): GPU shares are not enforced"
    running = TaskRunning(
        job_key="a~dev", attempt_id=0, task_role="share", index=0, node="n1", host_ip="10.0.0.2", pid=7,
        started_at=T0 + 2, gpu_share=GpuShareStatus(milli=250, memory_mb=0, enforced=False, note=note),
    )  # fmt: skip
    fw = core.on_task_running(fw, running, T0 + 2).framework
    assert fw is not None
    tasks = {t.task_role: t for t in fw.snapshot().tasks}
    assert tasks["fpga"].fpgas == [1, 2] and tasks["fpga"].gpu_share is None
    assert tasks["share"].gpu_share is not None and tasks["share"].gpu_share.note == note
