"""Preemption with notice in the orchestrator's core: the grace each victim gets (its own graceSeconds or
the platform's, at most its VC's cap), the notice carried by every kill, and PAI_RESUME=1 on the attempts
that follow the preemption of a running attempt (and not before)."""

from __future__ import annotations

import pytest

from pai_common.contract.commands import KillTask, LaunchTask
from pai_common.contract.events import JobPreemptionNoticed, SchedulingAllocated, TaskDiagnosed, TaskRunning
from pai_common.contract.types import JobSpec, Placement, TaskRoleSpec
from pai_orchestrator import core
from pai_orchestrator import states as S
from pai_orchestrator.core import Framework
from pai_orchestrator.policy import Policy

T0 = 2_000_000
POLICY = Policy(preempt_grace_s=30)


def spec(grace: float | None = None) -> JobSpec:
    return JobSpec(
        job_key="a~ckpt",
        user="a",
        name="ckpt",
        task_roles=[TaskRoleSpec(name="w", instances=2, gpu=1, cpu=1, memory_mb=64, entrypoint="x")],
        submitted_at=T0,
        preemption_grace_s=grace,
    )


def must(tr: core.Transition) -> Framework:
    assert tr.framework is not None
    return tr.framework


def placed(fw: Framework, now: int) -> core.Transition:
    placements = [
        Placement(task_role="w", index=i, node=f"n{i}", gpus=[0], host_ip="10.0.0.1") for i in (0, 1)
    ]
    event = SchedulingAllocated(job_key="a~ckpt", attempt_id=fw.attempt_id, placements=placements)
    return core.on_allocated(fw, event, now, POLICY)


def run(fw: Framework, now: int) -> Framework:
    """The attempt placed and both tasks running."""
    fw = must(placed(fw, now))
    for i in (0, 1):
        event = TaskRunning(
            job_key="a~ckpt", attempt_id=fw.attempt_id, task_role="w", index=i, node=f"n{i}",
            host_ip="10.0.0.1", pid=1, started_at=now,
        )  # fmt: skip
        fw = must(core.on_task_running(fw, event, now, POLICY))
    return fw


def preempt(fw: Framework, now: int, cap: float | None = None) -> tuple[core.Transition, Framework]:
    """Preempted, and every told task reported its exit (143 after SIGTERM)."""
    tr = core.on_preempted(fw, fw.attempt_id, "b~urgent", now, POLICY, grace_cap_s=cap)
    after = must(tr)
    for send in tr.commands:
        kill = send.command
        assert isinstance(kill, KillTask)
        report = TaskDiagnosed(
            job_key="a~ckpt", attempt_id=kill.attempt_id, task_role="w", index=kill.index, exit_code=143,
            spec_code=143, spec_phrase="SigTerm", failure_type="Transient", message="", finished_at=now + 1,
        )  # fmt: skip
        after = must(core.on_task_diagnosed(after, report, now + 1, POLICY))
    return tr, after


@pytest.mark.parametrize(
    ("asked", "cap", "grace"),
    [(None, None, 30.0), (120.0, None, 120.0), (120.0, 45.0, 45.0), (None, 10.0, 10.0), (5.0, 45.0, 5.0)],
)
def test_the_grace_is_the_jobs_own_capped_by_its_vc(
    asked: float | None, cap: float | None, grace: float
) -> None:
    fw = run(must(core.on_submitted(spec(asked), T0, POLICY)), T0 + 1)
    tr, _ = preempt(fw, T0 + 100, cap)
    [noticed] = [e for e in tr.events if isinstance(e, JobPreemptionNoticed)]
    assert noticed.notice.grace_seconds == grace and noticed.notice.deadline == T0 + 100 + int(grace * 1000)
    kills = [s.command for s in tr.commands]
    assert len(kills) == 2 and all(isinstance(k, KillTask) for k in kills)
    assert {(k.grace_period_s, k.preemption_deadline, k.preemptor) for k in kills} == {  # type: ignore[union-attr]
        (grace, noticed.notice.deadline, "b~urgent")
    }
    # The attempt waits for its told tasks at most the grace and the margin before it releases its cells.
    assert must(tr).deletion_deadline == noticed.notice.deadline + POLICY.stop_confirm_margin_ms


def _launch_env(tr: core.Transition) -> list[dict[str, str]]:
    return [s.command.env for s in tr.commands if isinstance(s.command, LaunchTask)]


def test_the_attempts_after_a_preempted_running_attempt_resume() -> None:
    fw = must(core.on_submitted(spec(), T0, POLICY))
    assert all("PAI_RESUME" not in env for env in _launch_env(placed(fw, T0 + 1)))
    # Preempted before it ran: nothing was checkpointed, so the next attempt does not resume.
    _, fw = preempt(fw, T0 + 2)
    assert fw.attempt_id == 1 and fw.state == S.ATTEMPT_CREATION_REQUESTED and not fw.resume
    assert fw.attempts[-1].preemption is not None
    fw = run(fw, T0 + 3)
    _, fw = preempt(fw, T0 + 4)
    assert fw.attempt_id == 2 and fw.resume and fw.snapshot().resume
    assert [env["PAI_RESUME"] for env in _launch_env(placed(fw, T0 + 5))] == ["1", "1"]
    # Every later attempt keeps resuming.
    fw = run(fw, T0 + 5)
    _, fw = preempt(fw, T0 + 6)
    assert fw.attempt_id == 3 and fw.resume and fw.attempts[-1].resume
