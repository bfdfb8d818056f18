"""Elastic jobs in the orchestrator's core: the gang (each elastic role at its minimum) launches as any gang
and then asks for its growth tasks; a growth task placed later launches at once while the running tasks get
the new membership (UpdateMembership, job.elastic.resized); growth preempted alone shrinks the gang (notice,
exit, release, asked for again as a new task attempt) rather than stopping it; the attempt completes without
waiting for growth that never got cells; a preemption of the gang itself stops the attempt as before."""

from __future__ import annotations

from typing import TypeVar

from pai_common.contract.commands import KillTask, LaunchTask, UpdateMembership
from pai_common.contract.events import (
    JobAttemptCompleted,
    JobElasticResized,
    JobTaskCompleted,
    SchedulingAllocated,
    SchedulingRequested,
    TaskDiagnosed,
    TaskRunning,
)
from pai_common.contract.types import JobSpec, Placement, TaskRoleSpec
from pai_orchestrator import core
from pai_orchestrator import states as S
from pai_orchestrator.core import Framework, Transition
from pai_orchestrator.policy import Policy

T = TypeVar("T")
T0 = 5_000_000
KEY = "a~grow"


def spec() -> JobSpec:
    """Role ``w`` of 4 tasks elastic from 2, and one fixed ``ps`` task."""
    role = {"gpu": 1, "cpu": 1, "memory_mb": 64, "entrypoint": "x", "min_succeeded_instances": None}
    return JobSpec(
        job_key=KEY,
        user="a",
        name="grow",
        task_roles=[
            TaskRoleSpec(name="ps", instances=1, **role),
            TaskRoleSpec(name="w", instances=4, **role),
        ],
        elastic={"w": 2},
        submitted_at=T0,
    )


def must(tr: Transition) -> Framework:
    assert tr.framework is not None
    return tr.framework


def place(fw: Framework, *tasks: tuple[str, int], now: int = T0 + 1) -> Transition:
    placements = [
        Placement(task_role=r, index=i, node=f"n{i}", gpus=[0], host_ip=f"10.0.0.{10 * (r == 'w') + i}")
        for r, i in tasks
    ]
    event = SchedulingAllocated(job_key=KEY, attempt_id=fw.attempt_id, placements=placements)
    return core.on_allocated(fw, event, now)


def run(fw: Framework, role: str, i: int, now: int) -> Framework:
    task = fw.tasks[core.task_key(role, i)]
    event = TaskRunning(
        job_key=KEY, attempt_id=fw.attempt_id, task_role=role, index=i, node=task.node or "n0",
        host_ip="10.0.0.1", pid=1, started_at=now, task_attempt_id=task.task_attempt_id,
    )  # fmt: skip
    return must(core.on_task_running(fw, event, now))


def end(fw: Framework, role: str, i: int, code: int, now: int) -> Transition:
    event = TaskDiagnosed(
        job_key=KEY, attempt_id=fw.attempt_id, task_role=role, index=i, exit_code=code, spec_code=code,
        task_attempt_id=fw.tasks[core.task_key(role, i)].task_attempt_id, spec_phrase="x",
        failure_type="Succeeded" if code == 0 else "Permanent", message="", finished_at=now,
    )  # fmt: skip
    return core.on_task_diagnosed(fw, event, now)


def of(tr: Transition, kind: type[T]) -> list[T]:
    return [e for e in tr.events if isinstance(e, kind)] + [
        c.command for c in tr.commands if isinstance(c.command, kind)
    ]


def hosts(env: dict[str, str]) -> list[str]:
    """The addresses in role w's host list (each with its task's http port, when it has one)."""
    return [h.split(":")[0] for h in env["PAI_TASK_ROLE_w_HOST_LIST"].split(",")]


def running_gang() -> Framework:
    submitted = core.on_submitted(spec(), T0)
    [asked] = of(submitted, SchedulingRequested)
    # The gang alone: growth is asked for once it is placed.
    assert [(p.task_role, p.index, p.growth) for p in asked.pods] == [
        ("ps", 0, False),
        ("w", 0, False),
        ("w", 1, False),
    ]
    placed = place(must(submitted), ("ps", 0), ("w", 0), ("w", 1))
    fw = must(placed)
    assert fw.state == S.ATTEMPT_PREPARING
    assert sorted((c.task_role, c.index) for c in of(placed, LaunchTask)) == [("ps", 0), ("w", 0), ("w", 1)]
    [launch] = [c for c in of(placed, LaunchTask) if c.task_role == "w" and c.index == 0]
    assert launch.env["PAI_ELASTIC_INSTANCES_w"] == "2" and launch.env["PAI_ELASTIC_MAX_INSTANCES_w"] == "4"
    assert hosts(launch.env) == ["10.0.0.10", "10.0.0.11"]
    # Once the gang is placed its growth tasks are asked for, alone.
    [growth] = of(placed, SchedulingRequested)
    assert [(p.task_role, p.index, p.growth) for p in growth.pods] == [("w", 2, True), ("w", 3, True)]
    for role, i in (("ps", 0), ("w", 0), ("w", 1)):
        fw = run(fw, role, i, T0 + 2)
    return fw


def test_the_gang_starts_at_its_minimum_and_grows_into_idle_cells() -> None:
    fw = running_gang()
    assert fw.state == S.ATTEMPT_RUNNING
    # A repeated allocation of the gang changes nothing.
    assert not place(fw, ("ps", 0), ("w", 0), ("w", 1)).changed

    grew = place(fw, ("w", 3), now=T0 + 5)
    fw = must(grew)
    [launch] = of(grew, LaunchTask)
    assert (launch.index, launch.env["PAI_ELASTIC_INSTANCES_w"]) == (3, "3")
    updates = of(grew, UpdateMembership)
    assert sorted((u.task_role, u.index) for u in updates) == [("ps", 0), ("w", 0), ("w", 1)]
    assert (
        {u.version for u in updates} == {fw.membership_version} == {int(launch.env["PAI_MEMBERSHIP_VERSION"])}
    )
    assert hosts(updates[0].env) == ["10.0.0.10", "10.0.0.11", "10.0.0.13"]
    [resized] = of(grew, JobElasticResized)
    assert (resized.change, resized.tasks, resized.instances) == ("grew", ["w/3"], {"w": 3})
    # Growth of a task placed already is a repeat: nothing changes.
    assert not place(fw, ("w", 3), now=T0 + 6).changed


def test_preempted_growth_shrinks_the_gang_and_asks_for_its_cells_again() -> None:
    fw = must(place(running_gang(), ("w", 2), ("w", 3), now=T0 + 5))
    fw = run(fw, "w", 3, T0 + 6)
    shrink = core.on_preempted(fw, 0, "b~urgent", T0 + 10, Policy(), grace_cap_s=20, tasks=[("w", 3)])
    fw = must(shrink)
    [kill] = of(shrink, KillTask)
    assert (kill.index, kill.grace_period_s, kill.preemptor) == (3, 20, "b~urgent")
    assert kill.preemption_deadline == T0 + 10 + 20_000
    assert fw.state == S.ATTEMPT_RUNNING and fw.tasks["w/3"].state == S.TASK_DELETION_REQUESTED
    assert fw.due_at() is not None and fw.due_at() > kill.preemption_deadline  # type: ignore[operator]
    assert not of(shrink, JobAttemptCompleted)

    gone = end(fw, "w", 3, 143, T0 + 12)
    fw = must(gone)
    task = fw.tasks["w/3"]
    assert task.state == S.TASK_CREATION_PENDING and task.node is None and task.task_attempt_id == 1
    assert [(h.attempt_id, h.exit_code) for h in task.history] == [(0, 143)]
    # Released, then asked for again, in that order; the others learn the smaller membership.
    kinds = [type(e).__name__ for e in gone.events if not e.TYPE.startswith("framework")]
    assert kinds.index("JobTaskCompleted") < kinds.index("SchedulingRequested")
    [again] = of(gone, SchedulingRequested)
    assert [(p.index, p.growth) for p in again.pods] == [(3, True)]
    [resized] = of(gone, JobElasticResized)
    assert (resized.change, resized.tasks, resized.instances) == ("shrunk", ["w/3"], {"w": 3})
    assert sorted((u.task_role, u.index) for u in of(gone, UpdateMembership)) == [
        ("ps", 0), ("w", 0), ("w", 1), ("w", 2),
    ]  # fmt: skip
    assert hosts(of(gone, UpdateMembership)[0].env) == ["10.0.0.10", "10.0.0.11", "10.0.0.12"]
    assert fw.due_at() is None

    # It grows back as a new task attempt (the runtime launches each task attempt once).
    back = place(fw, ("w", 3), now=T0 + 20)
    [launch] = of(back, LaunchTask)
    assert (launch.index, launch.task_attempt_id) == (3, 1)


def test_a_shrunk_task_that_never_reports_is_given_up_on_at_its_deadline() -> None:
    fw = must(place(running_gang(), ("w", 2), now=T0 + 5))
    fw = must(core.on_preempted(fw, 0, "b~urgent", T0 + 10, Policy(), grace_cap_s=5, tasks=[("w", 2)]))
    due = fw.due_at()
    assert due is not None and not core.on_tick(fw, due - 1).changed
    ticked = core.on_tick(fw, due)
    fw = must(ticked)
    assert fw.tasks["w/2"].state == S.TASK_CREATION_PENDING and fw.state == S.ATTEMPT_RUNNING
    assert of(ticked, JobTaskCompleted) and of(ticked, SchedulingRequested)


def test_growth_that_is_unplaced_does_not_hold_the_attempt_and_the_gang_is_preempted_whole() -> None:
    fw = running_gang()
    for role, i in (("ps", 0), ("w", 0), ("w", 1)):
        fw = must(end(fw, role, i, 0, T0 + 30))
    assert fw.state in (S.ATTEMPT_COMPLETED, S.COMPLETED) and fw.exit_code == 0

    # A victim that is the gang (or one of its minimum tasks) stops the attempt, as for any job.
    fw = running_gang()
    stopped = core.on_preempted(fw, 0, "b~urgent", T0 + 10, Policy(), tasks=None)
    assert must(stopped).state == S.ATTEMPT_DELETION_REQUESTED and len(of(stopped, KillTask)) == 3
    stopped = core.on_preempted(fw, 0, "b~urgent", T0 + 10, Policy(), tasks=[("w", 1), ("w", 3)])
    assert must(stopped).state == S.ATTEMPT_DELETION_REQUESTED


def test_a_growth_task_that_completes_gives_its_cells_back() -> None:
    fw = must(place(running_gang(), ("w", 2), now=T0 + 5))
    fw = run(fw, "w", 2, T0 + 6)
    done = end(fw, "w", 2, 0, T0 + 7)
    assert [(e.task_role, e.index) for e in of(done, JobTaskCompleted)] == [("w", 2)]
    assert must(done).state == S.ATTEMPT_RUNNING
