"""Every transition of the framework state machine, table-driven, plus FrameworkController's own examples,
stop from every stage, the gang allocation timeout, task-level retries and what the read model gets."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from pai_common.contract.commands import KillTask, LaunchTask
from pai_common.contract.events import (
    FrameworkChanged,
    JobAttemptCompleted,
    JobCompleted,
    JobPreemptionNoticed,
    JobStopRequested,
    SchedulingAllocated,
    SchedulingRejected,
    SchedulingRequested,
    TaskDiagnosed,
    TaskRunning,
)
from pai_common.contract.types import JobSpec, Placement, TaskRoleSpec
from pai_orchestrator import core, retry_policy
from pai_orchestrator import states as S
from pai_orchestrator.core import Framework, Transition
from pai_orchestrator.environment import task_environment
from pai_orchestrator.policy import Policy

JOB = "alice~fc"
T0 = 5_000_000
POLICY = Policy(gang_allocation_timeout_ms=5_000, conflict_retry_min_ms=1_000, conflict_retry_max_ms=2_000)

# FailureType each example exit code gets from the exit spec (FrameworkController's completion codes).
FAILURE = {0: "Succeeded", 200: "Transient", 201: "TransientConflict", 210: "Permanent", 1: "Unknown"}


# ---- builders ------------------------------------------------------------------------------------------


def role(name: str, instances: int, **kw: Any) -> TaskRoleSpec:
    return TaskRoleSpec(
        name=name, instances=instances, gpu=1, cpu=2, memory_mb=1024, entrypoint=f"run {name}", **kw
    )


def job(*roles: TaskRoleSpec, retries: int = 1, **kw: Any) -> JobSpec:
    return JobSpec(
        job_key=JOB,
        user="alice",
        name="fc",
        job_retry_count=retries,
        task_roles=list(roles) or [role("worker", 2)],
        submitted_at=T0,
        **kw,
    )


def step(fn: Callable[..., Transition], fw: Framework, *args: Any) -> Transition:
    """Apply a transition, checking what every transition must do."""
    before = fw.model_dump()
    tr = fn(fw, *args, POLICY)
    assert fw.model_dump() == before, "a transition never mutates its input"
    if tr.framework is None:
        assert tr.events == [] and tr.commands == []
        return tr
    new = tr.framework
    assert new.version == fw.version + 1
    assert isinstance(tr.events[-1], FrameworkChanged) and tr.events[-1].snapshot == new.snapshot()
    assert tr.reason, "every change says why"
    if new.state != fw.state:
        assert new.log and new.log[-1].to_state == new.state and new.log[-1].reason
    return tr


def submit(s: JobSpec, now: int = T0) -> Framework:
    tr = core.on_submitted(s, now, POLICY)
    assert tr.framework is not None
    return tr.framework


def allocated(fw: Framework, attempt: int | None = None) -> SchedulingAllocated:
    return SchedulingAllocated(
        job_key=JOB,
        attempt_id=fw.attempt_id if attempt is None else attempt,
        placements=[
            Placement(
                task_role=t.task_role,
                index=t.index,
                node=f"n{t.index}",
                gpus=[0],
                host_ip=f"10.0.0.{t.index + 1}",
            )
            for t in fw.tasks.values()
        ],
    )


def running(fw: Framework, key: str, at: int, attempt: int | None = None) -> TaskRunning:
    r, i = key.split("/")
    return TaskRunning(
        job_key=JOB,
        attempt_id=fw.attempt_id if attempt is None else attempt,
        task_role=r,
        index=int(i),
        task_attempt_id=fw.tasks[key].task_attempt_id,
        node=f"n{i}",
        host_ip="10.0.0.9",
        pid=7,
        started_at=at,
    )


def diagnosed(
    fw: Framework, key: str, code: int, at: int, attempt: int | None = None, failure: str | None = None
) -> TaskDiagnosed:
    r, i = key.split("/")
    return TaskDiagnosed(
        job_key=JOB,
        attempt_id=fw.attempt_id if attempt is None else attempt,
        task_role=r,
        index=int(i),
        task_attempt_id=fw.tasks[key].task_attempt_id,
        exit_code=code,
        spec_code=code,
        spec_phrase=f"Phrase{code}",
        failure_type=failure or FAILURE.get(code, "Unknown"),  # type: ignore[arg-type]
        message=f"exited {code}",
        finished_at=at,
        exit_spec={"code": code, "phrase": f"Phrase{code}", "type": "USER_FAILURE"} if code else None,
        explanation="because" if code else "",
    )


def stop(at: int = T0 + 1) -> JobStopRequested:
    return JobStopRequested(job_key=JOB, requested_by="alice", requested_at=at)


def run_all(fw: Framework, at: int) -> Framework:
    fw = must(step(core.on_allocated, fw, allocated(fw), at))
    for key in list(fw.tasks):
        fw = must(step(core.on_task_running, fw, running(fw, key, at + 1), at + 1))
    assert fw.state == S.ATTEMPT_RUNNING
    return fw


def must(tr: Transition) -> Framework:
    assert tr.framework is not None
    return tr.framework


def settle(fw: Framework, now: int) -> tuple[Framework, list[Any]]:
    """The runtime's answer to stopped tasks: each reports its exit. Returns the framework after that and
    the events it caused (without the snapshots)."""
    events: list[Any] = []
    for t in list(fw.tasks.values()):
        if t.state == S.TASK_DELETION_REQUESTED:
            report = diagnosed(fw, t.key, 143, now, failure="Transient")
            tr = step(core.on_task_diagnosed, fw, report, now)
            fw = must(tr)
            events += [e for e in tr.events if not isinstance(e, FrameworkChanged)]
    assert fw.state != S.ATTEMPT_DELETION_REQUESTED
    return fw, events


def stage(name: str) -> Framework:
    """A two-worker job (jobRetryCount 1) brought to a stage of its life."""
    fw = submit(job())
    if name == "requested":
        return fw
    if name == "preparing":
        return must(step(core.on_allocated, fw, allocated(fw), T0 + 10))
    fw = run_all(fw, T0 + 10)
    if name == "running":
        return fw
    fw = must(step(core.on_task_diagnosed, fw, diagnosed(fw, "worker/0", 201, T0 + 20), T0 + 20))
    if name == "deleting":
        assert (
            fw.state == S.ATTEMPT_DELETION_REQUESTED
            and fw.tasks["worker/1"].state == S.TASK_DELETION_REQUESTED
        )
        return fw
    fw, _ = settle(fw, T0 + 25)
    if name == "backoff":
        assert fw.state == S.ATTEMPT_COMPLETED and fw.retry_at is not None
        return fw
    assert name == "completed"
    fw = must(step(core.on_stop_requested, fw, stop(), T0 + 30))
    assert fw.state == S.COMPLETED
    return fw


# ---- the table -----------------------------------------------------------------------------------------

NOW = T0 + 100
Apply = Callable[[Framework], Transition]


def ev_allocated(fw: Framework) -> Apply:
    msg = allocated(fw)
    return lambda target: step(core.on_allocated, target, msg, NOW)


def ev_allocated_old(fw: Framework) -> Apply:
    msg = allocated(fw, fw.attempt_id - 1)
    return lambda target: step(core.on_allocated, target, msg, NOW)


def ev_rejected(fw: Framework) -> Apply:
    msg = SchedulingRejected(job_key=JOB, attempt_id=fw.attempt_id, reason="needs 9 gpus on one node")
    return lambda target: step(core.on_rejected, target, msg, NOW)


def ev_preempted(fw: Framework) -> Apply:
    attempt = fw.attempt_id
    return lambda target: step(core.on_preempted, target, attempt, "bob~urgent", NOW)


def ev_lost(fw: Framework) -> Apply:
    attempt = fw.attempt_id
    return lambda target: step(core.on_cells_lost, target, attempt, "node n0 left", NOW)


def ev_running(fw: Framework) -> Apply:
    msg = running(fw, "worker/0", NOW)
    return lambda target: step(core.on_task_running, target, msg, NOW)


def ev_exit(code: int) -> Callable[[Framework], Apply]:
    def make(fw: Framework) -> Apply:
        msg = diagnosed(fw, "worker/0", code, NOW)
        return lambda target: step(core.on_task_diagnosed, target, msg, NOW)

    make.__name__ = f"ev_exit_{code}"
    return make


def ev_old_exit(fw: Framework) -> Apply:
    msg = diagnosed(fw, "worker/0", 1, NOW, fw.attempt_id - 1)
    return lambda target: step(core.on_task_diagnosed, target, msg, NOW)


def ev_stop(fw: Framework) -> Apply:
    msg = stop(NOW)
    return lambda target: step(core.on_stop_requested, target, msg, NOW)


def ev_kill_report(fw: Framework) -> Apply:
    msg = diagnosed(fw, "worker/1", 143, NOW, failure="Transient")
    return lambda target: step(core.on_task_diagnosed, target, msg, NOW)


def ev_tick_early(fw: Framework) -> Apply:
    return lambda target: step(core.on_tick, target, NOW)


def ev_tick_due(fw: Framework) -> Apply:
    return lambda target: step(core.on_tick, target, T0 + 1_000_000)


JAC, SR, JC, JPN = JobAttemptCompleted, SchedulingRequested, JobCompleted, JobPreemptionNoticed
R, P, RUN, D, AC, C = (
    S.ATTEMPT_CREATION_REQUESTED,
    S.ATTEMPT_PREPARING,
    S.ATTEMPT_RUNNING,
    S.ATTEMPT_DELETION_REQUESTED,
    S.ATTEMPT_COMPLETED,
    S.COMPLETED,
)

# (stage, event, next state or None for "no change", events before FrameworkChanged, launches, kills).
# A transition that stops tasks first waits in AttemptDeletionRequested, releasing nothing; the state and
# events given are those after the stopped tasks reported their exits.
TABLE: list[tuple[str, Callable[[Framework], Apply], str | None, list[type], int, int]] = [
    ("requested", ev_allocated, P, [], 2, 0),
    ("requested", ev_rejected, C, [JAC, JC], 0, 0),
    ("requested", ev_preempted, R, [JPN, JAC, SR], 0, 0),
    ("requested", ev_lost, R, [JAC, SR], 0, 0),
    ("requested", ev_running, None, [], 0, 0),
    ("requested", ev_exit(1), None, [], 0, 0),
    ("requested", ev_stop, C, [JAC, JC], 0, 0),
    ("requested", ev_tick_early, None, [], 0, 0),
    ("requested", ev_tick_due, AC, [JAC], 0, 0),  # gang timeout; a resource retry backs off
    ("preparing", ev_allocated, None, [], 0, 0),
    ("preparing", ev_rejected, None, [], 0, 0),
    ("preparing", ev_running, RUN, [], 0, 0),
    ("preparing", ev_exit(0), RUN, [], 0, 0),
    ("preparing", ev_exit(200), R, [JAC, SR], 0, 1),
    ("preparing", ev_preempted, R, [JPN, JAC, SR], 0, 2),
    ("preparing", ev_lost, R, [JAC, SR], 0, 2),
    ("preparing", ev_stop, C, [JAC, JC], 0, 2),
    ("preparing", ev_tick_due, None, [], 0, 0),
    ("running", ev_allocated, None, [], 0, 0),
    ("running", ev_rejected, None, [], 0, 0),
    ("running", ev_running, None, [], 0, 0),
    ("running", ev_exit(0), RUN, [], 0, 0),
    ("running", ev_exit(200), R, [JAC, SR], 0, 1),
    ("running", ev_exit(201), AC, [JAC], 0, 1),
    ("running", ev_exit(210), C, [JAC, JC], 0, 1),
    ("running", ev_exit(1), R, [JAC, SR], 0, 1),
    ("running", ev_old_exit, None, [], 0, 0),
    ("running", ev_preempted, R, [JPN, JAC, SR], 0, 2),
    ("running", ev_lost, R, [JAC, SR], 0, 2),
    ("running", ev_stop, C, [JAC, JC], 0, 2),
    ("running", ev_tick_due, None, [], 0, 0),
    ("deleting", ev_kill_report, AC, [JAC], 0, 0),  # the stopped task exited; the 201 retry backs off
    ("deleting", ev_tick_early, None, [], 0, 0),
    ("deleting", ev_tick_due, AC, [JAC], 0, 0),  # it never reported: assumed stopped after the margin
    ("deleting", ev_stop, D, [], 0, 0),  # no retry any more; still waits for the stopped task
    ("deleting", ev_preempted, None, [], 0, 0),
    ("deleting", ev_lost, None, [], 0, 0),
    ("deleting", ev_allocated, None, [], 0, 0),
    ("deleting", ev_rejected, None, [], 0, 0),
    ("deleting", ev_running, None, [], 0, 0),
    ("deleting", ev_exit(0), None, [], 0, 0),
    ("backoff", ev_tick_early, None, [], 0, 0),
    ("backoff", ev_tick_due, R, [SR], 0, 0),
    ("backoff", ev_stop, C, [JC], 0, 0),
    ("backoff", ev_allocated, None, [], 0, 0),
    ("backoff", ev_allocated_old, None, [], 0, 0),
    ("backoff", ev_exit(0), None, [], 0, 0),
    ("backoff", ev_preempted, None, [], 0, 0),
    ("backoff", ev_lost, None, [], 0, 0),
    ("backoff", ev_rejected, None, [], 0, 0),
] + [
    ("completed", ev, None, [], 0, 0)
    for ev in (
        ev_allocated,
        ev_rejected,
        ev_preempted,
        ev_lost,
        ev_running,
        ev_exit(0),
        ev_exit(1),
        ev_stop,
        ev_tick_due,
    )
]


@pytest.mark.parametrize(
    ("stage_name", "event", "expected", "emitted", "launches", "kills"),
    TABLE,
    ids=[f"{row[0]}-{row[1].__name__}" for row in TABLE],
)
def test_transition_table(
    stage_name: str,
    event: Callable[[Framework], Apply],
    expected: str | None,
    emitted: list[type],
    launches: int,
    kills: int,
) -> None:
    fw = stage(stage_name)
    apply = event(fw)
    tr = apply(fw)
    if expected is None:
        assert tr.framework is None
        return
    new = must(tr)
    assert sum(isinstance(c.command, LaunchTask) for c in tr.commands) == launches
    assert sum(isinstance(c.command, KillTask) for c in tr.commands) == kills
    assert all(c.target == c.command.node for c in tr.commands)  # type: ignore[attr-defined]
    events = [e for e in tr.events if not isinstance(e, FrameworkChanged)]
    # The same event delivered again changes nothing (at-least-once delivery).
    assert apply(new).framework is None
    if kills:
        # Only a preemption's notice is told at once; nothing is released before the stopped tasks exit.
        notices = [e for e in events if isinstance(e, JobPreemptionNoticed)]
        assert new.state == D and events == notices, "nothing is released before the stopped tasks exit"
        assert all(t.state != S.TASK_RUNNING for t in new.tasks.values())
        new, events = settle(new, NOW + 5)
        events = notices + events
        assert apply(new).framework is None
    assert new.state == expected
    assert [type(e) for e in events] == emitted
    for e in events:
        if isinstance(e, JobAttemptCompleted):
            assert e.attempt_id == fw.attempt_id
        if isinstance(e, SchedulingRequested):
            assert e.attempt_id == fw.attempt_id + 1 == new.attempt_id


def test_the_table_covers_every_stage_and_event() -> None:
    stages = {row[0] for row in TABLE}
    assert stages == {"requested", "preparing", "running", "deleting", "backoff", "completed"}
    for name in stages:
        events = {row[1].__name__ for row in TABLE if row[0] == name}
        assert {"ev_stop", "ev_preempted", "ev_allocated", "ev_rejected"} <= events


# ---- FrameworkController's examples ---------------------------------------------------------------------


def single(retries: int) -> Framework:
    return run_all(submit(job(role("worker", 1), retries=retries)), T0)


def test_fc_example_transient_exit_200_is_retried_uncounted() -> None:
    fw = single(retries=0)
    fw = must(step(core.on_task_diagnosed, fw, diagnosed(fw, "worker/0", 200, T0 + 50), T0 + 50))
    assert fw.state == S.ATTEMPT_CREATION_REQUESTED and fw.attempt_id == 1
    assert (fw.retries, fw.accountable_retries, fw.platform_retries, fw.user_retries) == (1, 0, 1, 0)
    assert fw.attempts[0].exit_code == 200 and fw.attempts[0].exit_type == "USER_FAILURE"


def test_fc_example_permanent_exit_210_is_not_retried() -> None:
    fw = single(retries=5)
    tr = step(core.on_task_diagnosed, fw, diagnosed(fw, "worker/0", 210, T0 + 50), T0 + 50)
    fw = must(tr)
    assert fw.state == S.COMPLETED and fw.exit_code == 210 and fw.retries == 0
    done = [e for e in tr.events if isinstance(e, JobCompleted)]
    assert len(done) == 1 and done[0].state == "FAILED"


def test_fc_example_conflict_exit_201_is_retried_after_a_randomised_delay() -> None:
    fw = single(retries=0)
    fw = must(step(core.on_task_diagnosed, fw, diagnosed(fw, "worker/0", 201, T0 + 50), T0 + 50))
    assert fw.state == S.ATTEMPT_COMPLETED and fw.attempt_id == 0
    delay = retry_policy.backoff_ms(JOB, 0, POLICY)
    assert POLICY.conflict_retry_min_ms <= delay <= POLICY.conflict_retry_max_ms
    assert fw.retry_at == T0 + 50 + delay == fw.due_at()
    assert fw.snapshot().retry_at == fw.retry_at
    assert step(core.on_tick, fw, T0 + 50 + delay - 1).framework is None
    tr = step(core.on_tick, fw, T0 + 50 + delay)
    fw = must(tr)
    assert fw.state == S.ATTEMPT_CREATION_REQUESTED and fw.attempt_id == 1
    assert (fw.retries, fw.platform_retries, fw.user_retries) == (1, 1, 0)
    assert [type(e) for e in tr.events] == [SchedulingRequested, FrameworkChanged]
    assert fw.snapshot().retry_at is None and fw.attempts[0].exit_code == 201


def test_conflict_delays_are_deterministic_per_job_and_attempt_and_spread() -> None:
    delays = {retry_policy.backoff_ms(f"u~j{i}", a, POLICY) for i in range(30) for a in range(3)}
    assert len(delays) > 20, "a randomised back-off, not one fixed delay"
    assert all(POLICY.conflict_retry_min_ms <= d <= POLICY.conflict_retry_max_ms for d in delays)
    assert retry_policy.backoff_ms("u~j", 2, POLICY) == retry_policy.backoff_ms("u~j", 2, POLICY)


def test_fc_example_max_retry_count_1_with_exit_1_is_retried_once() -> None:
    fw = single(retries=1)
    fw = must(step(core.on_task_diagnosed, fw, diagnosed(fw, "worker/0", 1, T0 + 50), T0 + 50))
    assert fw.state == S.ATTEMPT_CREATION_REQUESTED and fw.attempt_id == 1
    assert (fw.retries, fw.accountable_retries, fw.user_retries) == (1, 1, 1)
    fw = run_all(fw, T0 + 60)
    fw = must(step(core.on_task_diagnosed, fw, diagnosed(fw, "worker/0", 1, T0 + 70), T0 + 70))
    assert fw.state == S.COMPLETED and fw.exit_code == 1 and fw.retries == 1
    assert fw.snapshot().state == S.COMPLETED and len(fw.attempts) == 1


def test_fc_example_batch_with_service_succeeds_when_min_succeeded_workers_do() -> None:
    # 2 servers that run for ever, 3 workers with minSucceededInstances 3.
    s = job(role("server", 2, min_succeeded_instances=None), role("worker", 3, min_succeeded_instances=3))
    fw = run_all(submit(s), T0)
    for i in range(2):
        tr = step(core.on_task_diagnosed, fw, diagnosed(fw, f"worker/{i}", 0, T0 + 10 + i), T0 + 10 + i)
        fw = must(tr)
        assert fw.state == S.ATTEMPT_RUNNING
    tr = step(core.on_task_diagnosed, fw, diagnosed(fw, "worker/2", 0, T0 + 20), T0 + 20)
    fw = must(tr)
    assert fw.state == S.ATTEMPT_DELETION_REQUESTED and fw.exit_code == 0
    assert (fw.trigger_task_role, fw.trigger_task_index) == ("worker", 2)
    killed = sorted((c.command.task_role, c.command.index) for c in tr.commands)  # type: ignore[attr-defined]
    assert killed == [("server", 0), ("server", 1)]
    assert all(isinstance(c.command, KillTask) for c in tr.commands)
    fw, events = settle(fw, T0 + 30)
    assert fw.state == S.COMPLETED and fw.exit_code == 0
    assert {fw.tasks[f"server/{i}"].exit_code for i in range(2)} == {S.EXIT_ATTEMPT_COMPLETION}
    assert fw.tasks["server/0"].exit_spec is not None
    assert fw.tasks["server/0"].exit_spec["phrase"] == "FrameworkAttemptCompletion"
    assert [e.state for e in events if isinstance(e, JobCompleted)] == ["SUCCEEDED"]


def test_min_failed_trigger_role_and_index_are_recorded_and_the_rest_stopped() -> None:
    s = job(role("ps", 1), role("worker", 3, min_failed_instances=2), retries=0)
    fw = run_all(submit(s), T0)
    fw = must(step(core.on_task_diagnosed, fw, diagnosed(fw, "worker/1", 1, T0 + 5), T0 + 5))
    assert fw.state == S.ATTEMPT_RUNNING  # one failure of two needed
    tr = step(core.on_task_diagnosed, fw, diagnosed(fw, "worker/2", 3, T0 + 6), T0 + 6)
    fw, _ = settle(must(tr), T0 + 7)
    assert fw.state == S.COMPLETED and fw.exit_code == 3
    assert (fw.trigger_task_role, fw.trigger_task_index) == ("worker", 2)
    assert fw.exit_messages is not None and "minFailedInstances 2" in fw.exit_messages["launcher"]
    assert fw.exit_messages["runtime"]["reason"] == "because"
    assert fw.exit_spec is not None and fw.exit_spec["code"] == 3
    assert sorted(c.command.task_role for c in tr.commands) == ["ps", "worker"]  # type: ignore[attr-defined]


def test_disabled_thresholds_wait_for_every_task() -> None:
    s = job(role("worker", 2, min_failed_instances=-1), retries=0)
    fw = run_all(submit(s), T0)
    fw = must(step(core.on_task_diagnosed, fw, diagnosed(fw, "worker/0", 1, T0 + 5), T0 + 5))
    assert fw.state == S.ATTEMPT_RUNNING
    fw = must(step(core.on_task_diagnosed, fw, diagnosed(fw, "worker/1", 1, T0 + 6), T0 + 6))
    # FrameworkController: without a trigger, an attempt whose tasks all completed succeeded.
    assert fw.state == S.COMPLETED and fw.exit_code == 0 and fw.trigger_task_role is None


# ---- stop ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stage_name", ["requested", "preparing", "running", "backoff"])
def test_stop_from_every_stage_completes_as_stopped(stage_name: str) -> None:
    fw = stage(stage_name)
    tr = step(core.on_stop_requested, fw, stop(NOW), NOW)
    new = must(tr)
    kills = [c.command for c in tr.commands if isinstance(c.command, KillTask)]
    assert len(kills) == (2 if stage_name in ("preparing", "running") else 0)
    assert all(k.grace_period_s == POLICY.kill_grace_s for k in kills)
    events = [e for e in tr.events if not isinstance(e, FrameworkChanged)]
    if kills:
        # Stopping: the job shows STOPPING until its tasks have exited.
        assert new.state == S.ATTEMPT_DELETION_REQUESTED and events == []
        assert new.snapshot().exit_code == -210
        new, events = settle(new, NOW + 1)
    assert new.state == S.COMPLETED and new.exit_code == S.EXIT_STOP_REQUESTED
    assert new.execution_type == "STOP" and new.snapshot().execution_type == "STOP"
    assert new.exit_spec is not None and new.exit_spec["phrase"] == "StopFrameworkRequested"
    assert new.exit_type == "USER_STOP" and "alice" in (new.exit_diagnostics or "")
    done = [e for e in events if isinstance(e, JobCompleted)]
    assert [(e.state, e.exit_code) for e in done] == [("STOPPED", -210)]
    released = [e for e in events if isinstance(e, JobAttemptCompleted)]
    # Cells are released unless the attempt had released them already (waiting out a retry back-off).
    assert len(released) == (0 if stage_name == "backoff" else 1)
    assert all(t.state == S.TASK_COMPLETED for t in new.tasks.values())
    assert new.due_at() is None
    # A second stop, and a late tick, change nothing.
    assert step(core.on_stop_requested, new, stop(NOW + 1), NOW + 1).framework is None
    assert step(core.on_tick, new, T0 + 10_000_000).framework is None


def test_stop_that_arrived_before_the_job_stops_it_at_once() -> None:
    tr = core.on_submitted(job(), T0, POLICY, stop=stop())
    fw = must(tr)
    assert fw.state == S.COMPLETED and fw.exit_code == -210 and fw.execution_type == "STOP"
    assert [type(e) for e in tr.events] == [JobCompleted, FrameworkChanged]  # nothing asked of the scheduler


def test_stop_records_the_attempt_states_it_passes() -> None:
    fw = stage("running")
    new = must(step(core.on_stop_requested, fw, stop(NOW), NOW))
    new, _ = settle(new, NOW + 7)
    passed = [(r.to_state, r.at) for r in new.log if r.at >= NOW]
    assert passed == [
        (S.ATTEMPT_DELETION_PENDING, NOW),
        (S.ATTEMPT_DELETION_REQUESTED, NOW),
        (S.ATTEMPT_COMPLETED, NOW + 7),
        (S.COMPLETED, NOW + 7),
    ]
    assert all(r.reason for r in new.log)


def test_stop_while_a_failed_attempt_is_stopping_cancels_its_retry() -> None:
    fw = stage("deleting")  # worker/0 failed with 201 (a retried conflict); worker/1 is stopping
    fw = must(step(core.on_stop_requested, fw, stop(NOW), NOW))
    assert fw.state == S.ATTEMPT_DELETION_REQUESTED and fw.execution_type == "STOP"
    fw, events = settle(fw, NOW + 1)
    assert fw.state == S.COMPLETED and fw.exit_code == -210 and fw.retries == 0
    assert [type(e) for e in events] == [JobAttemptCompleted, JobCompleted]


def test_stop_while_a_succeeded_attempt_stops_its_service_tasks_keeps_the_success() -> None:
    s = job(role("server", 1, min_succeeded_instances=None), role("worker", 1, min_succeeded_instances=1))
    fw = run_all(submit(s), T0)
    fw = must(step(core.on_task_diagnosed, fw, diagnosed(fw, "worker/0", 0, T0 + 5), T0 + 5))
    assert fw.state == S.ATTEMPT_DELETION_REQUESTED and fw.exit_code == 0
    fw = must(step(core.on_stop_requested, fw, stop(T0 + 6), T0 + 6))
    fw, events = settle(fw, T0 + 7)
    assert fw.state == S.COMPLETED and fw.exit_code == 0 and fw.execution_type == "STOP"
    assert [e.state for e in events if isinstance(e, JobCompleted)] == ["SUCCEEDED"]


def test_stopped_tasks_that_never_report_are_given_up_on_after_grace_and_margin() -> None:
    fw = stage("deleting")
    deadline = T0 + 20 + int(POLICY.kill_grace_s * 1000) + POLICY.stop_confirm_margin_ms
    assert fw.due_at() == deadline
    assert step(core.on_tick, fw, deadline - 1).framework is None
    tr = step(core.on_tick, fw, deadline)
    fw = must(tr)
    assert fw.state == S.ATTEMPT_COMPLETED and fw.retry_at is not None
    assert fw.tasks["worker/1"].exit_code == S.EXIT_ATTEMPT_COMPLETION
    assert "no exit report in time from worker/1" in tr.reason


# ---- gang allocation timeout ---------------------------------------------------------------------------


def test_gang_not_placed_in_time_fails_with_251_and_a_reason() -> None:
    fw = submit(job(retries=0))
    assert fw.gang_deadline == T0 + POLICY.gang_allocation_timeout_ms == fw.due_at()
    assert step(core.on_tick, fw, T0 + 4_999).framework is None
    tr = step(core.on_tick, fw, T0 + 5_000)
    fw = must(tr)
    assert fw.state == S.COMPLETED and fw.exit_code == S.EXIT_GANG_ALLOCATION_TIMEOUT
    assert fw.exit_spec is not None and fw.exit_spec["phrase"] == "JobGangAllocationTimeout"
    assert "could not be placed within the gang allocation timeout (5 s" in (fw.exit_diagnostics or "")
    assert [type(e) for e in tr.events] == [JobAttemptCompleted, JobCompleted, FrameworkChanged]
    # The late allocation of the timed-out attempt changes nothing.
    assert step(core.on_allocated, fw, allocated(fw, 0), T0 + 6_000).framework is None


def test_gang_timeout_retries_as_resource_retries_while_allowed() -> None:
    fw = submit(job(retries=1))
    fw = must(step(core.on_tick, fw, T0 + 5_000))
    assert fw.state == S.ATTEMPT_COMPLETED and fw.retry_kind == "resource" and fw.retry_at is not None
    fw = must(step(core.on_tick, fw, fw.retry_at))
    assert fw.state == S.ATTEMPT_CREATION_REQUESTED and fw.attempt_id == 1
    assert (fw.resource_retries, fw.user_retries, fw.platform_retries, fw.retries) == (1, 0, 0, 1)
    assert fw.gang_deadline is not None
    fw = must(step(core.on_tick, fw, fw.gang_deadline))
    assert fw.state == S.COMPLETED and fw.exit_code == 251 and fw.resource_retries == 1


def test_placed_gang_has_no_timer_and_zero_timeout_waits_for_ever() -> None:
    fw = stage("preparing")
    assert fw.gang_deadline is None and fw.due_at() is None
    forever = core.on_submitted(job(), T0, Policy()).framework
    assert forever is not None and forever.due_at() is None
    assert core.on_tick(forever, T0 + 10**12, Policy()).framework is None


# ---- launches, ports and the read model ----------------------------------------------------------------


def test_launch_carries_limits_image_plugins_secrets_and_ports() -> None:
    s = job(
        role("worker", 2, ports={"nccl": 2}, shm_mb=2048, image="pytorch:2"),
        runtime_plugins=[{"plugin": "ssh", "parameters": {"jobssh": True}}],
        has_secrets=True,
    )
    fw = submit(s)
    tr = step(core.on_allocated, fw, allocated(fw), T0 + 1)
    fw = must(tr)
    launches = [c.command for c in tr.commands if isinstance(c.command, LaunchTask)]
    assert len(launches) == 2 and len(fw.gang) == 2
    for cmd in launches:
        task = fw.tasks[f"{cmd.task_role}/{cmd.index}"]
        assert (cmd.cpu, cmd.memory_mb, cmd.shm_mb, cmd.image) == (2, 1024, 2048, "pytorch:2")
        assert cmd.plugins == [{"plugin": "ssh", "parameters": {"jobssh": True}}] and cmd.has_secrets
        assert len(cmd.ports["nccl"]) == 2 and cmd.ports == task.ports
        assert cmd.env == task_environment(fw.spec, cmd.task_role, cmd.index, fw.gang)
    snap = {(t.task_role, t.index): t for t in fw.snapshot().tasks}
    assert snap[("worker", 0)].ports == fw.tasks["worker/0"].ports


def test_attempt_history_and_transition_log_stay_bounded() -> None:
    small = Policy(attempt_history_limit=3, transition_log_limit=10)
    fw = core.on_submitted(job(role("worker", 1)), T0, small).framework
    assert fw is not None
    for n in range(8):
        fw = core.on_preempted(fw, fw.attempt_id, "bob~x", T0 + n, small).framework
        assert fw is not None
    assert fw.retries == 8 and fw.platform_retries == 8 and fw.accountable_retries == 0
    assert [a.attempt_id for a in fw.attempts] == [5, 6, 7]
    assert len(fw.log) == 10 and fw.log[-1].to_state == S.ATTEMPT_CREATION_REQUESTED
    assert [a.attempt_id for a in fw.snapshot().attempts] == [5, 6, 7]
    assert fw.attempts[-1].exit_code == S.EXIT_PREEMPTED


# ---- task-level retries (gang allocation off) ---------------------------------------------------------


def loose(task_retries: int, job_retries: int = 0) -> Framework:
    s = job(role("worker", 2, task_retry_count=task_retries), retries=job_retries, gang_allocation=False)
    return run_all(submit(s), T0)


def test_task_retries_relaunch_the_task_alone_until_its_limit() -> None:
    fw = loose(task_retries=1)
    tr = step(core.on_task_diagnosed, fw, diagnosed(fw, "worker/1", 1, T0 + 5), T0 + 5)
    fw = must(tr)
    task = fw.tasks["worker/1"]
    assert fw.state == S.ATTEMPT_RUNNING and fw.attempt_id == 0
    assert (task.state, task.task_attempt_id, task.retries, task.accountable_retries) == (
        S.TASK_PREPARING,
        1,
        1,
        1,
    )
    assert [h.exit_code for h in task.history] == [1] and task.history[0].attempt_id == 0
    [launch] = [c.command for c in tr.commands]
    assert isinstance(launch, LaunchTask) and launch.task_attempt_id == 1 and launch.node == "n1"
    # Events of the first task attempt are late now.
    old = diagnosed(fw, "worker/1", 1, T0 + 6).model_copy(update={"task_attempt_id": 0})
    assert step(core.on_task_diagnosed, fw, old, T0 + 6).framework is None
    fw = must(step(core.on_task_running, fw, running(fw, "worker/1", T0 + 7), T0 + 7))
    assert fw.tasks["worker/1"].state == S.TASK_RUNNING
    tr = step(core.on_task_diagnosed, fw, diagnosed(fw, "worker/1", 1, T0 + 8), T0 + 8)
    fw, _ = settle(must(tr), T0 + 9)
    assert fw.state == S.COMPLETED and fw.exit_code == 1  # task retries used up: the attempt fails
    snap = next(t for t in fw.snapshot().tasks if t.index == 1)
    assert (snap.attempt_id, snap.retries, snap.accountable_retries, len(snap.history)) == (1, 1, 1, 1)


def test_transient_task_failures_retry_uncounted_and_gang_jobs_never_retry_tasks() -> None:
    fw = loose(task_retries=0)
    fw = must(step(core.on_task_diagnosed, fw, diagnosed(fw, "worker/0", 200, T0 + 5), T0 + 5))
    task = fw.tasks["worker/0"]
    assert (task.retries, task.accountable_retries, task.task_attempt_id) == (1, 0, 1)
    gang = stage("running")
    tr = step(core.on_task_diagnosed, gang, diagnosed(gang, "worker/0", 1, NOW), NOW)
    assert must(tr).tasks["worker/0"].task_attempt_id == 0
    after, _ = settle(must(tr), NOW + 1)
    assert after.attempt_id == 1 and after.attempts[0].tasks[0].attempt_id == 0


# ---- preemption ----------------------------------------------------------------------------------------


def test_preemption_stops_gracefully_and_requeues_uncounted() -> None:
    fw = stage("running")
    tr = step(core.on_preempted, fw, 0, "bob~urgent", NOW)
    new = must(tr)
    kills = [c.command for c in tr.commands if isinstance(c.command, KillTask)]
    assert len(kills) == 2 and {k.grace_period_s for k in kills} == {POLICY.preempt_grace_s}
    # The preemptor gets the cells only once the victim's tasks are gone: no release before that.
    assert new.state == S.ATTEMPT_DELETION_REQUESTED
    assert not any(isinstance(e, JobAttemptCompleted) for e in tr.events)
    assert new.due_at() == NOW + int(POLICY.preempt_grace_s * 1000) + POLICY.stop_confirm_margin_ms
    new, events = settle(new, NOW + 2)
    assert [type(e) for e in events] == [JobAttemptCompleted, SchedulingRequested]
    assert new.attempts[0].exit_type == "PLATFORM_FAILURE" and new.attempts[0].exit_code == S.EXIT_PREEMPTED
    assert "bob~urgent" in (new.attempts[0].exit_diagnostics or "")
    assert (new.retries, new.platform_retries, new.user_retries, new.accountable_retries) == (1, 1, 0, 0)
    assert new.state == S.ATTEMPT_CREATION_REQUESTED


# ---- the retry policy alone ----------------------------------------------------------------------------

# (failure, exit code, user retries used, resource retries used, limit) -> (retry, kind, backs off)
RETRY_CASES = [
    ("Succeeded", 0, 0, 0, 5, (False, None, False)),
    ("Transient", -210, 0, 0, 5, (False, None, False)),  # stops never retry
    ("Unknown", -220, 0, 0, 5, (False, None, False)),
    ("Transient", 200, 9, 9, 0, (True, "platform", False)),  # uncounted, whatever the limit
    ("TransientConflict", 201, 9, 9, 0, (True, "platform", True)),
    ("Permanent", 210, 0, 0, 5, (False, None, False)),
    ("Unknown", 1, 0, 0, 1, (True, "user", False)),
    ("Unknown", 1, 1, 0, 1, (False, None, False)),
    ("Unknown", 1, 0, 0, 0, (False, None, False)),
    ("Resource", 251, 0, 0, 1, (True, "resource", True)),
    ("Resource", 251, 0, 1, 1, (False, None, False)),
]


@pytest.mark.parametrize(("failure", "code", "user", "resource", "limit", "expected"), RETRY_CASES)
def test_job_retry_policy(
    failure: str, code: int, user: int, resource: int, limit: int, expected: tuple[bool, str | None, bool]
) -> None:
    d = retry_policy.job_retry(
        failure,
        code,
        job_key=JOB,
        attempt_id=3,
        user_retries=user,
        resource_retries=resource,
        limit=limit,
        policy=POLICY,
    )
    assert (d.retry, d.kind, d.delay_ms > 0) == expected
    assert d.why


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="min <= max"):
        Policy(conflict_retry_min_ms=5, conflict_retry_max_ms=1)
    with pytest.raises(ValueError, match="gang_allocation_timeout_ms"):
        Policy(gang_allocation_timeout_ms=-1)
    with pytest.raises(ValueError, match="history limits"):
        Policy(attempt_history_limit=0)


def test_a_task_exit_classified_transient_stops_retrying_after_the_cap() -> None:
    from pai_orchestrator import retry_policy
    from pai_orchestrator.policy import Policy

    def decide(code: int, platform_retries: int) -> retry_policy.RetryDecision:
        return retry_policy.job_retry(
            "Transient",
            code,
            job_key="u~j",
            attempt_id=5,
            user_retries=0,
            resource_retries=0,
            limit=0,
            policy=Policy(transient_exit_retry_limit=3),
            platform_retries=platform_retries,
        )

    assert decide(137, 2).retry
    stop = decide(137, 3)
    assert not stop.retry and "137" in stop.why
    # Preemption and lost nodes (negative, platform codes) are never capped.
    assert decide(-1003, 500).retry
