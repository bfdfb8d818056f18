"""extras.gangAllocation false in the orchestrator's core: the attempt asks for its pods one by one, launches
each task as soon as it is placed (the others wait, the environment names the peers placed so far, ports
never clash with theirs), releases each task's cells when it completes for good, and ends as any attempt
does (completion policy, preemption of any of its tasks stopping the attempt, release of what is left)."""

from __future__ import annotations

from pai_common.contract.commands import KillTask, LaunchTask
from pai_common.contract.events import (
    JobAttemptCompleted,
    JobCompleted,
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

T0 = 4_000_000
KEY = "a~mnist"


def spec(workers: int = 3, min_failed: int | None = 1) -> JobSpec:
    return JobSpec(
        job_key=KEY,
        user="a",
        name="mnist",
        gang_allocation=False,
        task_roles=[
            TaskRoleSpec(
                name="w",
                instances=workers,
                gpu=0,
                cpu=1,
                memory_mb=64,
                entrypoint="x",
                min_failed_instances=min_failed,
                min_succeeded_instances=None,
            )
        ],
        submitted_at=T0,
    )


def must(tr: Transition) -> Framework:
    assert tr.framework is not None
    return tr.framework


def place(fw: Framework, *indices: int, now: int = T0 + 1) -> Transition:
    placements = [Placement(task_role="w", index=i, node="n0", gpus=[], host_ip="10.0.0.1") for i in indices]
    return core.on_allocated(
        fw, SchedulingAllocated(job_key=KEY, attempt_id=fw.attempt_id, placements=placements), now
    )


def launches(tr: Transition) -> dict[int, LaunchTask]:
    return {s.command.index: s.command for s in tr.commands if isinstance(s.command, LaunchTask)}


def run(fw: Framework, i: int, now: int) -> Framework:
    event = TaskRunning(
        job_key=KEY, attempt_id=fw.attempt_id, task_role="w", index=i, node="n0", host_ip="10.0.0.1",
        pid=1, started_at=now, task_attempt_id=fw.tasks[core.task_key("w", i)].task_attempt_id,
    )  # fmt: skip
    return must(core.on_task_running(fw, event, now))


def end(fw: Framework, i: int, code: int, now: int, failure: str = "Permanent") -> Transition:
    event = TaskDiagnosed(
        job_key=KEY, attempt_id=fw.attempt_id, task_role="w", index=i, exit_code=code, spec_code=code,
        task_attempt_id=fw.tasks[core.task_key("w", i)].task_attempt_id,
        spec_phrase="x", failure_type="Succeeded" if code == 0 else failure, message="", finished_at=now,
    )  # fmt: skip
    return core.on_task_diagnosed(fw, event, now)


def test_tasks_start_as_they_are_placed_and_give_their_cells_back_as_they_end() -> None:
    submitted = core.on_submitted(spec(), T0)
    [asked] = [e for e in submitted.events if isinstance(e, SchedulingRequested)]
    assert not asked.gang_allocation and len(asked.pods) == 3
    fw = must(submitted)

    first = place(fw, 1)
    fw = must(first)
    assert fw.state == S.ATTEMPT_PREPARING and list(launches(first)) == [1]
    assert {t.index for t in fw.tasks.values() if t.state == S.TASK_CREATION_PENDING} == {0, 2}
    assert not place(fw, 1).changed  # a repeated allocation changes nothing
    fw = run(fw, 1, T0 + 2)
    assert fw.state == S.ATTEMPT_RUNNING

    second = place(fw, 0, 2, now=T0 + 3)
    fw = must(second)
    started = launches(second)
    assert sorted(started) == [0, 2]
    # Ports never clash on the host with those of the task placed before; the environment names it.
    taken = [p for t in fw.tasks.values() for ports in t.ports.values() for p in ports]
    assert len(taken) == len(set(taken)) == 6
    assert "PAI_HOST_IP_w_1" in started[0].env and "PAI_HOST_IP_w_2" in started[0].env

    done = end(fw, 1, 0, T0 + 4)
    fw = must(done)
    released = [e for e in done.events if isinstance(e, JobTaskCompleted)]
    assert [(e.task_role, e.index) for e in released] == [("w", 1)]
    assert fw.state == S.ATTEMPT_RUNNING and not [
        e for e in done.events if isinstance(e, JobAttemptCompleted)
    ]
    fw = must(end(fw, 0, 0, T0 + 5))
    last = end(fw, 2, 0, T0 + 6)
    assert [(e.state, e.exit_code) for e in last.events if isinstance(e, JobCompleted)] == [("SUCCEEDED", 0)]
    assert [e.attempt_id for e in last.events if isinstance(e, JobAttemptCompleted)] == [0]


def test_a_failed_task_ends_the_attempt_and_the_waiting_tasks_never_start() -> None:
    fw = must(core.on_submitted(spec(workers=4), T0))
    fw = must(place(fw, 0, 1))
    fw = run(fw, 0, T0 + 2)
    failed = end(fw, 0, 1, T0 + 3)
    fw = must(failed)
    kills = [s.command for s in failed.commands if isinstance(s.command, KillTask)]
    assert [k.index for k in kills] == [1]  # the other placed task is stopped; 2 and 3 never ran
    assert {t.index: t.state for t in fw.tasks.values()}[3] == S.TASK_COMPLETED
    assert not place(fw, 2).changed  # placed after the attempt ended: nothing starts


def test_a_preempted_task_stops_its_whole_attempt_which_queues_again() -> None:
    fw = must(core.on_submitted(spec(), T0))
    fw = run(must(place(fw, 0)), 0, T0 + 2)
    tr = core.on_preempted(fw, 0, "b~urgent", T0 + 3, grace_cap_s=5)
    fw = must(tr)
    kill = next(s.command for s in tr.commands if isinstance(s.command, KillTask))
    assert kill.grace_period_s == 5 and kill.preemption_deadline == T0 + 3 + 5000
    fw = must(end(fw, 0, 143, T0 + 4))
    assert fw.attempt_id == 1 and fw.state == S.ATTEMPT_CREATION_REQUESTED and fw.resume


def test_a_retried_task_keeps_its_cells_and_gives_them_back_once_it_ends_for_good() -> None:
    job = spec(workers=2)
    role = job.task_roles[0].model_copy(update={"task_retry_count": 1})
    job = job.model_copy(update={"task_roles": [role]})
    fw = must(core.on_submitted(job, T0))
    fw = run(must(place(fw, 0, 1)), 0, T0 + 2)
    retried = end(fw, 0, 1, T0 + 3, failure="Unknown")
    fw = must(retried)
    assert list(launches(retried)) == [0]
    assert not [e for e in retried.events if isinstance(e, JobTaskCompleted)]  # its cells stay its own
    assert fw.tasks["w/0"].task_attempt_id == 1 and fw.tasks["w/0"].node == "n0"
    fw = run(fw, 0, T0 + 4)
    done = end(fw, 0, 0, T0 + 5)
    assert [(e.task_role, e.index) for e in done.events if isinstance(e, JobTaskCompleted)] == [("w", 0)]
