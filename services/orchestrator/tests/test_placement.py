"""Where a task attempt runs, as the authority for its secrets: placed and live on one node, or nothing."""

from __future__ import annotations

from pai_common.contract.events import SchedulingAllocated, TaskDiagnosed
from pai_common.contract.types import JobSpec, Placement, TaskRoleSpec
from pai_orchestrator import core
from pai_orchestrator.placement import live_node

JOB = "alice~two-roles"
T0 = 1_000_000


def two_roles() -> core.Framework:
    roles = [
        TaskRoleSpec(name="ps", instances=1, gpu=0, cpu=1, memory_mb=64, entrypoint="x"),
        TaskRoleSpec(name="worker", instances=2, gpu=1, cpu=1, memory_mb=64, entrypoint="x"),
    ]
    spec = JobSpec(
        job_key=JOB, user="alice", name="two-roles", task_roles=roles, submitted_at=1, has_secrets=True
    )
    fw = core.on_submitted(spec, T0).framework
    assert fw is not None
    return fw


def allocate(fw: core.Framework) -> core.Framework:
    nodes = {("ps", 0): "node-0", ("worker", 0): "node-0", ("worker", 1): "node-1"}
    event = SchedulingAllocated(
        job_key=JOB,
        attempt_id=fw.attempt_id,
        placements=[Placement(task_role=r, index=i, node=n, gpus=[]) for (r, i), n in nodes.items()],
    )
    placed = core.on_allocated(fw, event, T0 + 10)
    assert placed.framework is not None
    # The launch commands leave with the placement they name, in the same transition.
    launches = {(c.command.task_role, c.command.index): c.target for c in placed.commands}
    assert launches == nodes
    return placed.framework


def test_every_task_is_placed_on_its_node_as_soon_as_it_is_launched() -> None:
    fw = allocate(two_roles())
    assert live_node(fw, 0, "ps", 0, 0) == ("node-0", "")
    assert live_node(fw, 0, "worker", 0, 0) == ("node-0", "")
    assert live_node(fw, 0, "worker", 1, 0) == ("node-1", "")


def test_no_placement_before_allocation_for_other_attempts_tasks_or_task_attempts() -> None:
    waiting = two_roles()
    node, why = live_node(waiting, 0, "ps", 0, 0)
    assert node is None and "not starting or running" in why
    fw = allocate(waiting)
    node, why = live_node(fw, 1, "ps", 0, 0)
    assert node is None and "not the job's current attempt" in why
    node, why = live_node(fw, 0, "worker", 2, 0)
    assert node is None and "no task worker[2]" in why
    node, why = live_node(fw, 0, "worker", 1, 1)
    assert node is None and "not its current one" in why


def test_a_finished_task_has_no_placement() -> None:
    fw = allocate(two_roles())
    done = TaskDiagnosed(
        job_key=JOB, attempt_id=0, task_role="ps", index=0, exit_code=0, spec_code=0, spec_phrase="Succeeded",
        failure_type="Succeeded", message="exit 0", finished_at=T0 + 50,
    )  # fmt: skip
    after = core.on_task_diagnosed(fw, done, T0 + 60).framework
    assert after is not None
    node, why = live_node(after, 0, "ps", 0, 0)
    assert node is None and "ps[0]" in why
    assert live_node(after, 0, "worker", 1, 0) == ("node-1", "")
