"""The framework state machine (FrameworkController semantics), driven event by event.

Every changing transition is checked by ``_step``: the input framework is left untouched, the version
goes up by exactly one and exactly one FrameworkChanged (the last event) carries the new snapshot.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pai_common.contract.commands import KillTask, LaunchTask
from pai_common.contract.events import (
    FrameworkChanged,
    JobAttemptCompleted,
    JobCompleted,
    JobPreemptionNoticed,
    SchedulingAllocated,
    SchedulingRejected,
    SchedulingRequested,
    TaskDiagnosed,
    TaskRunning,
)
from pai_common.contract.types import JobSpec, Placement, StorageMount, TaskRoleSpec
from pai_orchestrator import core
from pai_orchestrator import states as S
from pai_orchestrator.core import Framework, Transition, no_change

JOB = "alice~job"
T0 = 1_000_000


# ---- builders ------------------------------------------------------------------------------------------


def role(
    name: str,
    instances: int,
    min_failed: int | None = 1,
    min_succeeded: int | None = None,
    gpu: int = 1,
) -> TaskRoleSpec:
    return TaskRoleSpec(
        name=name,
        instances=instances,
        gpu=gpu,
        cpu=4,
        memory_mb=8192,
        entrypoint=f"echo {name}",
        min_failed_instances=min_failed,
        min_succeeded_instances=min_succeeded,
    )


def spec(*roles: TaskRoleSpec, retries: int = 0) -> JobSpec:
    return JobSpec(
        job_key=JOB,
        user="alice",
        name="job",
        virtual_cluster="vc1",
        priority=42,
        job_retry_count=retries,
        task_roles=list(roles) or [role("worker", 2)],
        submitted_at=T0 - 5,
    )


def node_of(task_role: str, index: int) -> str:
    return f"node-{task_role}-{index}"


def ip_of(task_role: str, index: int) -> str:
    return f"10.0.{len(task_role)}.{index + 1}"


def placements(fw: Framework) -> list[Placement]:
    return [
        Placement(
            task_role=t.task_role,
            index=t.index,
            node=node_of(t.task_role, t.index),
            gpus=[t.index],
            host_ip=ip_of(t.task_role, t.index),
        )
        for t in fw.tasks.values()
    ]


def allocated(fw: Framework, attempt: int | None = None, pl: list[Placement] | None = None):
    return SchedulingAllocated(
        job_key=JOB,
        attempt_id=fw.attempt_id if attempt is None else attempt,
        placements=placements(fw) if pl is None else pl,
    )


def running(fw: Framework, task_role: str, index: int, at: int, attempt: int | None = None) -> TaskRunning:
    return TaskRunning(
        job_key=JOB,
        attempt_id=fw.attempt_id if attempt is None else attempt,
        task_role=task_role,
        index=index,
        node=node_of(task_role, index),
        host_ip="192.168.0." + str(index + 1),
        pid=1234,
        started_at=at,
    )


def diagnosed(
    fw: Framework,
    task_role: str,
    index: int,
    code: int,
    failure: str | None = None,
    at: int = T0 + 500,
    attempt: int | None = None,
) -> TaskDiagnosed:
    if failure is None:
        failure = "Succeeded" if code == 0 else "Unknown"
    return TaskDiagnosed(
        job_key=JOB,
        attempt_id=fw.attempt_id if attempt is None else attempt,
        task_role=task_role,
        index=index,
        exit_code=code,
        spec_code=code,
        spec_phrase="Phrase",
        failure_type=failure,
        message=f"exited with {code}",
        finished_at=at,
    )


# ---- checks --------------------------------------------------------------------------------------------


def _check_changed(prev: Framework | None, tr: Transition) -> Framework:
    assert tr.changed and tr.framework is not None
    fw = tr.framework
    assert fw is not prev
    assert fw.version == (prev.version if prev is not None else 0) + 1
    changed = [e for e in tr.events if isinstance(e, FrameworkChanged)]
    assert len(changed) == 1
    assert tr.events[-1] is changed[0], "the snapshot is published after the other effects"
    assert changed[0].snapshot == fw.snapshot()
    assert changed[0].snapshot.version == fw.version
    return fw


def _step(fn: Callable[..., Transition], fw: Framework, *args: Any) -> Transition:
    """Apply one transition and check the invariants of every changing transition.

    When it stops tasks, the runtime's answer (each stopped task's exit report) is applied too, and the
    result is returned as one transition: the tests here are about what follows once they stopped."""
    before = fw.model_dump()
    tr = fn(fw, *args)
    assert fw.model_dump() == before, "a transition must not mutate its input framework"
    if tr.changed:
        _check_changed(fw, tr)
        tr = _confirm_stops(tr, args[-1])
    else:
        assert tr.events == [] and tr.commands == []
    return tr


def _confirm_stops(tr: Transition, now: int) -> Transition:
    fw = tr.framework
    assert fw is not None
    if fw.state != S.ATTEMPT_DELETION_REQUESTED:
        return tr
    events = [e for e in tr.events if not isinstance(e, FrameworkChanged)]
    commands = list(tr.commands)
    kills = [c.command for c in tr.commands if isinstance(c.command, KillTask)]
    assert kills, "an attempt waits for its tasks only when it stopped some"
    assert not any(isinstance(e, JobAttemptCompleted) for e in events), "cells are released after the stop"
    for kill in kills:
        report = diagnosed(fw, kill.task_role, kill.index, 143, "Transient", at=now, attempt=kill.attempt_id)
        step = core.on_task_diagnosed(fw, report, now)
        assert step.framework is not None
        fw = _check_changed(fw, step)
        events += [e for e in step.events if not isinstance(e, FrameworkChanged)]
        commands += step.commands
    assert fw.state != S.ATTEMPT_DELETION_REQUESTED
    return Transition(fw, [*events, FrameworkChanged(snapshot=fw.snapshot())], commands, tr.reason)


def _types(tr: Transition) -> list[type]:
    return [type(e) for e in tr.events]


def submit(s: JobSpec, now: int = T0) -> Framework:
    tr = core.on_submitted(s, now)
    return _check_changed(None, tr)


def started(s: JobSpec, now: int = T0) -> Framework:
    """Submitted, allocated and every task running."""
    fw = submit(s, now)
    fw = _step(core.on_allocated, fw, allocated(fw), now + 10).framework
    for i, t in enumerate(list(fw.tasks.values())):
        fw = _step(
            core.on_task_running, fw, running(fw, t.task_role, t.index, now + 20 + i), now + 20
        ).framework
    assert fw.state == S.ATTEMPT_RUNNING
    return fw


# ---- submit --------------------------------------------------------------------------------------------


def test_submit_requests_the_whole_gang() -> None:
    s = spec(role("ps", 1, gpu=0), role("worker", 3, gpu=2))
    tr = core.on_submitted(s, T0)
    fw = _check_changed(None, tr)

    assert fw.version == 1
    assert fw.state == S.ATTEMPT_CREATION_REQUESTED
    assert fw.attempt_id == 0 and fw.retries == 0 and fw.accountable_retries == 0
    assert fw.created_at == T0 and fw.attempt_created_at == T0
    assert fw.launched_at is None and fw.completed_at is None and fw.exit_code is None
    assert sorted(fw.tasks) == ["ps/0", "worker/0", "worker/1", "worker/2"]
    assert all(t.state == S.TASK_CREATION_PENDING and t.created_at == T0 for t in fw.tasks.values())
    assert tr.commands == []
    assert _types(tr) == [SchedulingRequested, FrameworkChanged]

    req = tr.events[0]
    assert isinstance(req, SchedulingRequested)
    assert (req.job_key, req.attempt_id, req.virtual_cluster, req.priority) == (JOB, 0, "vc1", 42)
    pods = {(p.task_role, p.index): (p.gpu, p.cpu, p.memory_mb) for p in req.pods}
    assert pods == {
        ("ps", 0): (0, 4, 8192),
        ("worker", 0): (2, 4, 8192),
        ("worker", 1): (2, 4, 8192),
        ("worker", 2): (2, 4, 8192),
    }
    assert len(req.pods) == 4


# ---- allocation ----------------------------------------------------------------------------------------


def test_allocated_prepares_and_launches_every_task_with_the_gang_environment() -> None:
    fw = submit(spec(role("ps", 1, gpu=0), role("worker", 2)))
    tr = _step(core.on_allocated, fw, allocated(fw), T0 + 10)
    fw = tr.framework
    assert fw.state == S.ATTEMPT_PREPARING
    assert _types(tr) == [FrameworkChanged]
    for t in fw.tasks.values():
        assert t.state == S.TASK_PREPARING
        assert t.node == node_of(t.task_role, t.index)
        assert t.host_ip == ip_of(t.task_role, t.index)
        assert t.gpus == [t.index]

    assert len(tr.commands) == 3
    launched = {}
    for sc in tr.commands:
        cmd = sc.command
        assert isinstance(cmd, LaunchTask)
        assert sc.target == cmd.node == node_of(cmd.task_role, cmd.index)
        assert cmd.job_key == JOB and cmd.attempt_id == 0
        assert cmd.gpus == [cmd.index]
        assert cmd.entrypoint == f"echo {cmd.task_role}"
        launched[(cmd.task_role, cmd.index)] = cmd.env
    assert set(launched) == {("ps", 0), ("worker", 0), ("worker", 1)}

    for (r, i), env in launched.items():
        # The whole gang's addresses, in every task.
        assert env["PAI_HOST_IP_ps_0"] == ip_of("ps", 0)
        assert env["PAI_HOST_IP_worker_0"] == ip_of("worker", 0)
        assert env["PAI_HOST_IP_worker_1"] == ip_of("worker", 1)
        hosts = env["PAI_TASK_ROLE_worker_HOST_LIST"].split(",")
        assert [h.split(":")[0] for h in hosts] == [ip_of("worker", 0), ip_of("worker", 1)]
        assert env["PAI_TASK_ROLE_ps_HOST_LIST"].split(":")[0] == ip_of("ps", 0)
        assert env["PAI_JOB_TASK_COUNT"] == "3"
        assert env["PAI_TASK_ROLE_COUNT"] == "2"
        assert env["PAI_TASK_ROLE_TASK_COUNT_worker"] == "2"
        assert env["PAI_TASK_ROLE_TASK_COUNT_ps"] == "1"
        # Its own role and index.
        assert env["PAI_CURRENT_TASK_ROLE_NAME"] == r
        assert env["PAI_CURRENT_TASK_ROLE_CURRENT_TASK_INDEX"] == str(i)
        assert env["PAI_TASK_INDEX"] == str(i)
        assert env["PAI_JOB_NAME"] == JOB and env["PAI_USER_NAME"] == "alice"


def test_allocated_twice_is_ignored() -> None:
    fw = submit(spec(role("worker", 2)))
    fw = _step(core.on_allocated, fw, allocated(fw), T0 + 10).framework
    assert _step(core.on_allocated, fw, allocated(fw), T0 + 11).framework is None


@pytest.mark.parametrize("attempt", [-1, 1, 7])
def test_allocated_for_another_attempt_is_ignored(attempt: int) -> None:
    fw = submit(spec(role("worker", 2)))
    assert _step(core.on_allocated, fw, allocated(fw, attempt=attempt), T0 + 10).framework is None


@pytest.mark.parametrize("shape", ["missing", "extra", "renamed"])
def test_allocated_for_another_gang_shape_is_ignored(shape: str) -> None:
    fw = submit(spec(role("worker", 2)))
    pl = placements(fw)
    if shape == "missing":
        pl = pl[:1]
    elif shape == "extra":
        pl = [*pl, Placement(task_role="worker", index=2, node="n", gpus=[], host_ip="1.1.1.1")]
    else:
        pl = [p.model_copy(update={"task_role": "other"}) for p in pl]
    assert _step(core.on_allocated, fw, allocated(fw, pl=pl), T0 + 10).framework is None


# ---- running -------------------------------------------------------------------------------------------


def test_first_running_task_makes_the_attempt_running_with_launch_times() -> None:
    fw = submit(spec(role("worker", 2)))
    fw = _step(core.on_allocated, fw, allocated(fw), T0 + 10).framework

    tr = _step(core.on_task_running, fw, running(fw, "worker", 1, T0 + 30), T0 + 31)
    fw = tr.framework
    assert _types(tr) == [FrameworkChanged] and tr.commands == []
    assert fw.state == S.ATTEMPT_RUNNING
    assert fw.attempt_launched_at == T0 + 30 and fw.launched_at == T0 + 30
    t = fw.tasks["worker/1"]
    assert t.state == S.TASK_RUNNING and t.launched_at == T0 + 30 and t.host_ip == "192.168.0.2"
    assert fw.tasks["worker/0"].state == S.TASK_PREPARING

    tr = _step(core.on_task_running, fw, running(fw, "worker", 0, T0 + 40), T0 + 41)
    fw = tr.framework
    assert fw.state == S.ATTEMPT_RUNNING
    assert fw.attempt_launched_at == T0 + 30 and fw.launched_at == T0 + 30  # unchanged by later tasks
    assert fw.tasks["worker/0"].launched_at == T0 + 40


def test_running_events_that_do_not_apply_are_ignored() -> None:
    fw = submit(spec(role("worker", 2)))
    # Before allocation: the task is not preparing yet.
    assert _step(core.on_task_running, fw, running(fw, "worker", 0, T0), T0).framework is None
    fw = _step(core.on_allocated, fw, allocated(fw), T0 + 10).framework
    assert _step(core.on_task_running, fw, running(fw, "worker", 0, T0, attempt=1), T0).framework is None
    assert _step(core.on_task_running, fw, running(fw, "worker", 5, T0), T0).framework is None
    assert _step(core.on_task_running, fw, running(fw, "ghost", 0, T0), T0).framework is None
    fw = _step(core.on_task_running, fw, running(fw, "worker", 0, T0 + 20), T0 + 20).framework
    # Duplicate delivery.
    assert _step(core.on_task_running, fw, running(fw, "worker", 0, T0 + 25), T0 + 25).framework is None


# ---- completion policy ---------------------------------------------------------------------------------

# (roles, exits in order as (role, index, code), expected final: None = attempt still running, else
# (job state, exit code, trigger role, trigger index)).
COMPLETION_CASES = [
    pytest.param(
        [role("worker", 2)],
        [("worker", 0, 1)],
        ("FAILED", 1, "worker", 0),
        id="default-minFailed-1-first-failure-fails",
    ),
    pytest.param(
        [role("worker", 2)],
        [("worker", 0, 0), ("worker", 1, 0)],
        ("SUCCEEDED", 0, None, None),
        id="all-completed-succeeds-without-trigger",
    ),
    pytest.param(
        [role("worker", 2)],
        [("worker", 1, 0)],
        None,
        id="one-success-of-two-waits",
    ),
    pytest.param(
        [role("worker", 2, min_failed=None)],
        [("worker", 0, 3), ("worker", 1, 0)],
        ("SUCCEEDED", 0, None, None),
        id="minFailed-disabled-failure-then-all-completed-succeeds",
    ),
    pytest.param(
        [role("worker", 2, min_failed=None)],
        [("worker", 0, 0), ("worker", 1, 3)],
        ("SUCCEEDED", 0, None, None),
        id="minFailed-disabled-last-task-failing-still-succeeds",
    ),
    pytest.param(
        [role("worker", 3, min_failed=2)],
        [("worker", 0, 1), ("worker", 1, 0), ("worker", 2, 137)],
        ("FAILED", 137, "worker", 2),
        id="minFailed-2-second-failure-fails",
    ),
    pytest.param(
        [role("worker", 3, min_failed=2)],
        [("worker", 0, 1)],
        None,
        id="minFailed-2-one-failure-waits",
    ),
    pytest.param(
        [role("worker", 3, min_succeeded=1)],
        [("worker", 1, 0)],
        ("SUCCEEDED", 0, "worker", 1),
        id="minSucceeded-1-first-success-succeeds",
    ),
    pytest.param(
        [role("worker", 3, min_failed=None, min_succeeded=2)],
        [("worker", 0, 1), ("worker", 2, 0), ("worker", 1, 0)],
        ("SUCCEEDED", 0, "worker", 1),
        id="minSucceeded-2-counts-only-successes",
    ),
    pytest.param(
        [role("ps", 1, min_failed=1), role("worker", 2, min_succeeded=2)],
        [("worker", 0, 0), ("worker", 1, 0)],
        ("SUCCEEDED", 0, "worker", 1),
        id="ps-worker-workers-succeed-ps-killed",
    ),
    pytest.param(
        [role("ps", 1, min_failed=None), role("worker", 2)],
        [("ps", 0, 2)],
        None,
        id="policy-is-per-role-disabled-role-failure-waits",
    ),
    pytest.param(
        [role("ps", 1, min_failed=None), role("worker", 2)],
        [("ps", 0, 2), ("worker", 1, 5)],
        ("FAILED", 5, "worker", 1),
        id="policy-is-per-role-other-role-failure-fails",
    ),
    pytest.param(
        [role("ps", 1, min_succeeded=1), role("worker", 2, min_failed=2)],
        [("worker", 0, 1), ("ps", 0, 0)],
        ("SUCCEEDED", 0, "ps", 0),
        id="other-role-success-policy-wins",
    ),
]


@pytest.mark.parametrize(("roles", "exits", "expected"), COMPLETION_CASES)
def test_completion_policy(roles: list[TaskRoleSpec], exits: list[tuple[str, int, int]], expected) -> None:
    fw = started(spec(*roles))
    done_at = T0 + 1000
    for n, (r, i, code) in enumerate(exits):
        prev = fw
        tr = _step(core.on_task_diagnosed, fw, diagnosed(fw, r, i, code, at=done_at + n), done_at + n)
        fw = tr.framework
        assert fw.tasks[f"{r}/{i}"].state == S.TASK_COMPLETED
        assert fw.tasks[f"{r}/{i}"].exit_code == code
        assert fw.tasks[f"{r}/{i}"].completed_at == done_at + n
        assert fw.tasks[f"{r}/{i}"].exit_diagnostics == f"exited with {code}"
        if n < len(exits) - 1 or expected is None:
            assert fw.state == S.ATTEMPT_RUNNING
            assert _types(tr) == [FrameworkChanged] and tr.commands == []
    if expected is None:
        return

    state, code, trigger_role, trigger_index = expected
    now = done_at + len(exits) - 1
    last = f"{exits[-1][0]}/{exits[-1][1]}"
    still_running = {k for k, t in prev.tasks.items() if t.state == S.TASK_RUNNING} - {last}
    assert fw.state == S.COMPLETED
    assert fw.exit_code == code
    assert (fw.trigger_task_role, fw.trigger_task_index) == (trigger_role, trigger_index)
    assert fw.completed_at == now and fw.attempt_completed_at == now
    assert fw.exit_type == ("USER_SUCCESS" if state == "SUCCEEDED" else "UNKNOWN_FAILURE")
    assert all(t.state == S.TASK_COMPLETED for t in fw.tasks.values())

    assert _types(tr) == [JobAttemptCompleted, JobCompleted, FrameworkChanged]
    attempt_done, job_done = tr.events[0], tr.events[1]
    assert (attempt_done.job_key, attempt_done.attempt_id, attempt_done.exit_code) == (JOB, 0, code)
    assert (job_done.job_key, job_done.state, job_done.exit_code, job_done.completed_at) == (
        JOB,
        state,
        code,
        now,
    )

    # Tasks still running are killed and recorded with FrameworkAttemptCompletion.
    killed = {}
    for sc in tr.commands:
        assert isinstance(sc.command, KillTask)
        assert sc.target == sc.command.node
        assert sc.command.attempt_id == 0 and sc.command.job_key == JOB
        killed[f"{sc.command.task_role}/{sc.command.index}"] = sc.command.node
    assert set(killed) == still_running
    for k in still_running:
        assert killed[k] == prev.tasks[k].node
        assert fw.tasks[k].exit_code == S.EXIT_ATTEMPT_COMPLETION
        assert fw.tasks[k].completed_at == now


def test_a_task_ending_before_its_running_report_runs_the_attempt() -> None:
    fw = submit(spec(role("worker", 2)))
    fw = _step(core.on_allocated, fw, allocated(fw), T0 + 10).framework
    tr = _step(core.on_task_diagnosed, fw, diagnosed(fw, "worker", 0, 0, at=T0 + 50), T0 + 51)
    fw = tr.framework
    assert fw.state == S.ATTEMPT_RUNNING
    assert fw.attempt_launched_at == T0 + 50 and fw.launched_at == T0 + 50
    # The late running report of the completed task is ignored.
    assert _step(core.on_task_running, fw, running(fw, "worker", 0, T0 + 40), T0 + 52).framework is None
    # The other task, still preparing, is killed when the attempt fails.
    tr = _step(core.on_task_diagnosed, fw, diagnosed(fw, "worker", 1, 9, at=T0 + 60), T0 + 61)
    assert tr.framework.state == S.COMPLETED
    assert tr.framework.exit_code == 9
    assert tr.commands == []  # no task left preparing or running


def test_preparing_tasks_are_killed_when_the_attempt_completes() -> None:
    fw = submit(spec(role("worker", 2)))
    fw = _step(core.on_allocated, fw, allocated(fw), T0 + 10).framework
    tr = _step(core.on_task_diagnosed, fw, diagnosed(fw, "worker", 0, 1), T0 + 51)
    assert [(c.command.task_role, c.command.index) for c in tr.commands] == [("worker", 1)]
    assert all(isinstance(c.command, KillTask) for c in tr.commands)
    assert tr.framework.tasks["worker/1"].exit_code == S.EXIT_ATTEMPT_COMPLETION


def test_diagnosed_events_that_do_not_apply_are_ignored() -> None:
    fw = submit(spec(role("worker", 3, min_failed=2)))
    # Before allocation: nothing runs, nothing can end.
    assert _step(core.on_task_diagnosed, fw, diagnosed(fw, "worker", 0, 1), T0).framework is None
    fw = started(spec(role("worker", 3, min_failed=2)))
    assert _step(core.on_task_diagnosed, fw, diagnosed(fw, "worker", 0, 1, attempt=1), T0).framework is None
    assert _step(core.on_task_diagnosed, fw, diagnosed(fw, "worker", 9, 1), T0).framework is None
    fw = _step(core.on_task_diagnosed, fw, diagnosed(fw, "worker", 0, 1), T0 + 100).framework
    # Duplicate delivery of an already completed task, with another code.
    assert _step(core.on_task_diagnosed, fw, diagnosed(fw, "worker", 0, 0), T0 + 101).framework is None
    assert fw.tasks["worker/0"].exit_code == 1


def test_a_completed_framework_ignores_every_event() -> None:
    fw = started(spec(role("worker", 2)))
    fw = _step(core.on_task_diagnosed, fw, diagnosed(fw, "worker", 0, 1), T0 + 100).framework
    assert fw.state == S.COMPLETED
    assert _step(core.on_task_diagnosed, fw, diagnosed(fw, "worker", 1, 0), T0 + 101).framework is None
    assert _step(core.on_task_running, fw, running(fw, "worker", 1, T0), T0 + 101).framework is None
    assert _step(core.on_allocated, fw, allocated(fw), T0 + 101).framework is None
    rejected = SchedulingRejected(job_key=JOB, attempt_id=0, reason="x")
    assert _step(core.on_rejected, fw, rejected, T0 + 101).framework is None
    assert _step(core.on_preempted, fw, 0, "bob~big", T0 + 101).framework is None


# ---- retry policy --------------------------------------------------------------------------------------


def _assert_retried(tr: Transition, prev: Framework, code: int, now: int) -> Framework:
    fw = tr.framework
    assert fw.state == S.ATTEMPT_CREATION_REQUESTED
    assert fw.attempt_id == prev.attempt_id + 1
    assert fw.retries == prev.retries + 1
    assert fw.exit_code is None and fw.exit_type is None and fw.exit_diagnostics is None
    assert fw.completed_at is None
    assert fw.trigger_task_role is None and fw.trigger_task_index is None
    assert fw.attempt_launched_at is None and fw.attempt_completed_at is None
    assert fw.attempt_created_at == now and fw.attempt_completed_at is None
    assert all(t.created_at == now for t in fw.tasks.values())
    assert all(t.state == S.TASK_CREATION_PENDING and t.node is None for t in fw.tasks.values())
    assert set(fw.tasks) == set(prev.tasks)
    # A preemption also tells the read model about its notice, first.
    notices = [e for e in tr.events if isinstance(e, JobPreemptionNoticed)]
    events = [e for e in tr.events if not isinstance(e, JobPreemptionNoticed)]
    assert len(notices) == (code == S.EXIT_PREEMPTED) and tr.events[: len(notices)] == notices
    assert [type(e) for e in events] == [JobAttemptCompleted, SchedulingRequested, FrameworkChanged]
    assert events[0].attempt_id == prev.attempt_id and events[0].exit_code == code
    req = events[1]
    assert req.attempt_id == fw.attempt_id
    assert {(p.task_role, p.index) for p in req.pods} == {(t.task_role, t.index) for t in fw.tasks.values()}
    # Tasks of the ended attempt that still ran are killed, under the old attempt id.
    assert all(
        isinstance(c.command, KillTask) and c.command.attempt_id == prev.attempt_id for c in tr.commands
    )
    return fw


def _run_attempt(fw: Framework, now: int) -> Framework:
    fw = _step(core.on_allocated, fw, allocated(fw), now).framework
    for t in list(fw.tasks.values()):
        fw = _step(core.on_task_running, fw, running(fw, t.task_role, t.index, now + 1), now + 1).framework
    return fw


def test_unknown_failures_retry_until_job_retry_count_and_are_accountable() -> None:
    fw = started(spec(role("worker", 2), retries=2))
    first_launch = fw.launched_at
    for attempt in range(3):
        assert fw.attempt_id == attempt
        now = T0 + 1000 * (attempt + 1)
        prev = fw
        tr = _step(core.on_task_diagnosed, fw, diagnosed(fw, "worker", 0, 1, "Unknown", at=now), now)
        if attempt < 2:
            fw = _assert_retried(tr, prev, 1, now)
            assert fw.accountable_retries == attempt + 1
            assert fw.launched_at == first_launch  # the job's launch time is its first attempt's
            assert [(c.command.task_role, c.command.index) for c in tr.commands] == [("worker", 1)]
            fw = _run_attempt(fw, now + 10)
        else:
            fw = tr.framework
            assert fw.state == S.COMPLETED and fw.exit_code == 1
            assert fw.retries == 2 and fw.accountable_retries == 2
            assert _types(tr) == [JobAttemptCompleted, JobCompleted, FrameworkChanged]
            assert tr.events[1].state == "FAILED" and tr.events[1].exit_code == 1


def test_job_retry_count_zero_never_retries_unknown_failures() -> None:
    fw = started(spec(role("worker", 1)))
    tr = _step(core.on_task_diagnosed, fw, diagnosed(fw, "worker", 0, 1, "Unknown"), T0 + 100)
    assert tr.framework.state == S.COMPLETED and tr.framework.retries == 0


def test_transient_failures_always_retry_uncounted() -> None:
    fw = started(spec(role("worker", 1), retries=0))
    for attempt in range(5):
        now = T0 + 1000 * (attempt + 1)
        prev = fw
        tr = _step(core.on_task_diagnosed, fw, diagnosed(fw, "worker", 0, 137, "Transient", at=now), now)
        fw = _assert_retried(tr, prev, 137, now)
        assert fw.accountable_retries == 0
        assert fw.retries == attempt + 1
        fw = _run_attempt(fw, now + 10)


def test_transient_failures_do_not_use_up_the_accountable_budget() -> None:
    fw = started(spec(role("worker", 1), retries=1))
    prev = fw
    tr = _step(core.on_task_diagnosed, fw, diagnosed(fw, "worker", 0, 137, "Transient"), T0)
    fw = _assert_retried(tr, prev, 137, T0)
    fw = _run_attempt(fw, T0 + 10)
    prev = fw
    tr = _step(core.on_task_diagnosed, fw, diagnosed(fw, "worker", 0, 1, "Unknown"), T0 + 20)
    fw = _assert_retried(tr, prev, 1, T0 + 20)
    assert (fw.retries, fw.accountable_retries) == (2, 1)
    fw = _run_attempt(fw, T0 + 30)
    tr = _step(core.on_task_diagnosed, fw, diagnosed(fw, "worker", 0, 1, "Unknown"), T0 + 40)
    assert tr.framework.state == S.COMPLETED and tr.framework.attempt_id == 2


def test_permanent_failures_never_retry() -> None:
    fw = started(spec(role("worker", 2), retries=5))
    tr = _step(core.on_task_diagnosed, fw, diagnosed(fw, "worker", 1, 2, "Permanent"), T0 + 100)
    fw = tr.framework
    assert fw.state == S.COMPLETED and fw.retries == 0 and fw.exit_code == 2
    assert fw.exit_type == "USER_FAILURE"
    assert _types(tr) == [JobAttemptCompleted, JobCompleted, FrameworkChanged]
    assert tr.events[1].state == "FAILED"


def test_success_never_retries() -> None:
    fw = started(spec(role("worker", 1), retries=5))
    tr = _step(core.on_task_diagnosed, fw, diagnosed(fw, "worker", 0, 0), T0 + 100)
    assert tr.framework.state == S.COMPLETED and tr.framework.retries == 0
    assert tr.events[1].state == "SUCCEEDED"


@pytest.mark.parametrize("mounts", [0, 1])
def test_a_completed_job_says_whether_it_mounted_storages(mounts: int) -> None:
    """The storage service releases a job's storages when it completes, and skips the jobs that mounted
    none."""
    mount = StorageMount(name="data", type="local", mount_path="/mnt/data", data={"path": "/srv"})
    fw = started(spec(role("worker", 1)).model_copy(update={"storages": [mount][:mounts]}))
    tr = _step(core.on_task_diagnosed, fw, diagnosed(fw, "worker", 0, 0), T0 + 100)
    (completed,) = [e for e in tr.events if isinstance(e, JobCompleted)]
    assert completed.mounted_storages is bool(mounts)


def test_events_of_an_earlier_attempt_are_ignored_after_a_retry() -> None:
    fw = started(spec(role("worker", 2), retries=1))
    old = fw
    fw = _step(core.on_task_diagnosed, fw, diagnosed(fw, "worker", 0, 1), T0 + 100).framework
    assert fw.attempt_id == 1
    assert _step(core.on_allocated, fw, allocated(fw, attempt=0), T0 + 101).framework is None
    assert _step(core.on_task_diagnosed, fw, diagnosed(old, "worker", 1, 0), T0 + 101).framework is None
    rejected = SchedulingRejected(job_key=JOB, attempt_id=0, reason="late")
    assert _step(core.on_rejected, fw, rejected, T0 + 101).framework is None
    fw = _step(core.on_allocated, fw, allocated(fw), T0 + 102).framework
    assert _step(core.on_task_running, fw, running(old, "worker", 0, T0 + 103), T0 + 103).framework is None
    assert _step(core.on_preempted, fw, 0, "bob~big", T0 + 104).framework is None


# ---- rejection -----------------------------------------------------------------------------------------


def test_rejection_fails_the_job_with_pod_creation_permanent_error() -> None:
    fw = submit(spec(role("worker", 2), retries=3))
    rejected = SchedulingRejected(job_key=JOB, attempt_id=0, reason="asks for 64 GPUs, the VC has 8")
    tr = _step(core.on_rejected, fw, rejected, T0 + 5)
    fw = tr.framework
    assert fw.state == S.COMPLETED
    assert fw.exit_code == S.EXIT_POD_CREATION_PERMANENT == -200
    assert fw.exit_diagnostics == "asks for 64 GPUs, the VC has 8"
    assert fw.retries == 0  # never retried, whatever the retry count
    assert fw.completed_at == T0 + 5
    assert tr.commands == []  # nothing was launched
    assert all(t.exit_code == S.EXIT_ATTEMPT_COMPLETION for t in fw.tasks.values())
    assert _types(tr) == [JobAttemptCompleted, JobCompleted, FrameworkChanged]
    assert tr.events[1].state == "FAILED" and tr.events[1].exit_code == -200


def test_rejection_that_does_not_apply_is_ignored() -> None:
    fw = submit(spec(role("worker", 2)))
    wrong = SchedulingRejected(job_key=JOB, attempt_id=1, reason="x")
    assert _step(core.on_rejected, fw, wrong, T0).framework is None
    fw = _step(core.on_allocated, fw, allocated(fw), T0 + 1).framework
    late = SchedulingRejected(job_key=JOB, attempt_id=0, reason="x")
    assert _step(core.on_rejected, fw, late, T0 + 2).framework is None


# ---- preemption ----------------------------------------------------------------------------------------


def test_preemption_of_a_running_attempt_kills_it_and_retries_uncounted() -> None:
    fw = started(spec(role("ps", 1), role("worker", 2), retries=0))
    prev = fw
    tr = _step(core.on_preempted, fw, 0, "bob~urgent", T0 + 500)
    fw = _assert_retried(tr, prev, S.EXIT_PREEMPTED, T0 + 500)
    assert tr.events[1].exit_code == -1003
    assert (fw.retries, fw.accountable_retries) == (1, 0)
    kills = {(c.command.task_role, c.command.index): c.target for c in tr.commands}
    assert kills == {(t.task_role, t.index): node_of(t.task_role, t.index) for t in prev.tasks.values()}
    assert all(c.command.node == c.target for c in tr.commands)
    # With notice: the platform's grace (30 s), the deadline in every kill, the next attempt resumes.
    notice = tr.events[0].notice
    assert (notice.preemptor, notice.grace_seconds, notice.deadline) == ("bob~urgent", 30.0, T0 + 30_500)
    assert {(c.command.grace_period_s, c.command.preemption_deadline) for c in tr.commands} == {
        (30.0, T0 + 30_500)
    }
    assert fw.resume and fw.attempts[-1].preemption == notice and not fw.attempts[-1].resume
    assert fw.snapshot().resume and fw.snapshot().preemption is None


def test_preemption_of_a_preparing_attempt_kills_the_preparing_tasks() -> None:
    fw = submit(spec(role("worker", 2)))
    fw = _step(core.on_allocated, fw, allocated(fw), T0 + 1).framework
    prev = fw
    tr = _step(core.on_preempted, fw, 0, "bob~urgent", T0 + 2)
    _assert_retried(tr, prev, -1003, T0 + 2)
    assert len(tr.commands) == 2


def test_preemption_that_does_not_apply_is_ignored() -> None:
    fw = started(spec(role("worker", 2)))
    assert _step(core.on_preempted, fw, 1, "bob~urgent", T0).framework is None
    assert _step(core.on_preempted, fw, -1, "bob~urgent", T0).framework is None


def test_preemption_keeps_retrying_past_the_job_retry_count() -> None:
    fw = started(spec(role("worker", 1), retries=0))
    for n in range(4):
        fw = _step(core.on_preempted, fw, fw.attempt_id, "bob~urgent", T0 + n).framework
        assert fw.state == S.ATTEMPT_CREATION_REQUESTED and fw.accountable_retries == 0
        fw = _run_attempt(fw, T0 + n)
    assert fw.retries == 4


def test_lost_cells_stop_the_attempt_and_retry_uncounted() -> None:
    fw = started(spec(role("worker", 2), retries=0))
    prev = fw
    tr = _step(core.on_cells_lost, fw, 0, "node k0 is no longer in the cluster", T0 + 7)
    fw = _assert_retried(tr, prev, S.EXIT_NODE_LOST, T0 + 7)
    assert tr.events[0].exit_code == -1001
    assert (fw.retries, fw.accountable_retries) == (1, 0)
    assert len(tr.commands) == 2
    assert _step(core.on_cells_lost, fw, 0, "late copy", T0 + 8).framework is None


def test_no_change_is_never_polluted() -> None:
    fw = started(spec(role("worker", 2)))
    for _ in range(3):
        _step(core.on_preempted, fw, 5, "x", T0)
    unchanged = no_change()
    assert unchanged.framework is None and unchanged.events == [] and unchanged.commands == []
    assert no_change() is not unchanged


# ---- random interleavings ------------------------------------------------------------------------------


KINDS = ["allocated", "rejected", "preempted", "running", "diagnosed"]


@st.composite
def small_specs(draw: st.DrawFn) -> JobSpec:
    roles = [
        role(
            "ps",
            draw(st.integers(1, 2)),
            min_failed=draw(st.sampled_from([None, 1])),
            min_succeeded=draw(st.sampled_from([None, 1])),
        ),
        role(
            "worker",
            draw(st.integers(1, 2)),
            min_failed=draw(st.sampled_from([None, 1, 2])),
            min_succeeded=draw(st.sampled_from([None, 1, 2])),
        ),
    ]
    return spec(*roles, retries=draw(st.integers(0, 2)))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(s=small_specs(), data=st.data())
def test_random_interleavings_keep_the_invariants(s: JobSpec, data: st.DataObject) -> None:
    now = T0
    fw = submit(s, now)
    completed_events = 0
    last_version = fw.version
    keys = list(fw.tasks)
    for _ in range(data.draw(st.integers(1, 40), label="steps")):
        now += data.draw(st.integers(0, 50))
        kind = data.draw(st.sampled_from(KINDS), label="kind")
        attempt = fw.attempt_id + data.draw(st.sampled_from([0, 0, 0, 0, -1, 1]), label="attempt offset")
        key = data.draw(st.sampled_from(keys), label="task")
        r, i = key.split("/")[0], int(key.split("/")[1])
        prev = fw
        if kind == "allocated":
            pl = placements(fw)
            if data.draw(st.integers(0, 9)) == 0:
                pl = pl[1:]
            tr = _step(core.on_allocated, fw, allocated(fw, attempt, pl), now)
        elif kind == "rejected":
            if data.draw(st.integers(0, 4)) != 0:
                continue  # keep rejections rare, so that the runs go deep
            tr = _step(
                core.on_rejected, fw, SchedulingRejected(job_key=JOB, attempt_id=attempt, reason="r"), now
            )
        elif kind == "preempted":
            tr = _step(core.on_preempted, fw, attempt, "bob~urgent", now)
        elif kind == "running":
            tr = _step(core.on_task_running, fw, running(fw, r, i, now, attempt), now)
        else:
            code = data.draw(st.sampled_from([0, 0, 1, 137]), label="code")
            failure = (
                "Succeeded"
                if code == 0
                else data.draw(st.sampled_from(["Unknown", "Transient", "Permanent"]), label="failure")
            )
            tr = _step(core.on_task_diagnosed, fw, diagnosed(fw, r, i, code, failure, now, attempt), now)

        if prev.state == S.COMPLETED:
            assert tr.framework is None, "a completed framework never changes again"
        if not tr.changed:
            continue
        fw = tr.framework
        assert fw.version > last_version
        last_version = fw.version
        completed_events += sum(isinstance(e, JobCompleted) for e in tr.events)
        assert completed_events <= 1
        if any(isinstance(e, JobCompleted) for e in tr.events):
            assert fw.state == S.COMPLETED
        assert (fw.state == S.COMPLETED) == (completed_events == 1)
        assert fw.attempt_id == fw.retries
        assert 0 <= fw.accountable_retries <= min(fw.retries, s.job_retry_count)
        attempts_done = [e for e in tr.events if isinstance(e, JobAttemptCompleted)]
        assert all(e.attempt_id == prev.attempt_id for e in attempts_done)
        requested = [e for e in tr.events if isinstance(e, SchedulingRequested)]
        if fw.attempt_id != prev.attempt_id:
            assert len(attempts_done) == 1 and len(requested) == 1
            assert requested[0].attempt_id == fw.attempt_id
        else:
            assert requested == []
        for sc in tr.commands:
            assert sc.command.attempt_id == prev.attempt_id
            assert sc.target == sc.command.node
        if fw.state == S.COMPLETED:
            assert fw.exit_code is not None
            assert all(t.state == S.TASK_COMPLETED and t.exit_code is not None for t in fw.tasks.values())
    event(f"final state {fw.state}, attempt {min(fw.attempt_id, 3)}")
