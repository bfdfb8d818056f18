"""The job snapshot a framework.changed carries stays within its byte budget: the oldest earlier attempts
lose their task lists first, say how many they lost, and keep their summary."""

from __future__ import annotations

from pai_common.contract.events import FrameworkChanged
from pai_common.contract.types import FrameworkSnapshot, JobAttemptRecord, JobSpec, TaskRoleSpec, TaskSnapshot
from pai_common.envelope import MAX_BODY_BYTES, encode
from pai_orchestrator import core
from pai_orchestrator import states as S
from pai_orchestrator.policy import Policy
from pai_orchestrator.snapshot_budget import SNAPSHOT_BUDGET_BYTES, body_bytes, fit_snapshot

T0 = 5_000_000


def tasks(n: int, attempt: int) -> list[TaskSnapshot]:
    return [
        TaskSnapshot(
            task_role="worker",
            index=i,
            state=S.TASK_COMPLETED,
            attempt_id=0,
            node=f"node-{i % 64:03d}",
            host_ip=f"10.0.{i % 64}.1",
            gpus=[i % 8],
            exit_code=1,
            created_at=T0 + attempt,
            launched_at=T0 + attempt + 1,
            completed_at=T0 + attempt + 2,
        )
        for i in range(n)
    ]


def record(attempt: int, n: int) -> JobAttemptRecord:
    return JobAttemptRecord(
        attempt_id=attempt,
        state=S.ATTEMPT_COMPLETED,
        created_at=T0 + attempt,
        completed_at=T0 + attempt + 2,
        exit_code=1,
        exit_type="Failed",
        exit_diagnostics=f"attempt {attempt}: worker 3 exited with 1",
        trigger_task_role="worker",
        trigger_task_index=3,
        tasks=tasks(n, attempt),
    )


def snapshot(n: int, earlier: int) -> FrameworkSnapshot:
    return FrameworkSnapshot(
        job_key="alice~big",
        version=7,
        state=S.ATTEMPT_RUNNING,
        attempt_id=earlier,
        tasks=tasks(n, earlier),
        attempts=[record(a, n) for a in range(earlier)],
    )


def test_a_snapshot_within_the_budget_is_left_as_it_is() -> None:
    snap = snapshot(200, 2)
    fitted = fit_snapshot(snap)
    assert fitted.snapshot == snap and fitted.attempts_cut == 0 and not fitted.over_budget
    assert fitted.body_bytes == body_bytes(snap) <= SNAPSHOT_BUDGET_BYTES


def test_the_oldest_attempts_lose_their_tasks_first_and_only_as_many_as_needed() -> None:
    snap = snapshot(501, 6)  # the measured case: ~180 KB an attempt, about 1.2 MB in all
    assert body_bytes(snap) > MAX_BODY_BYTES
    fitted = fit_snapshot(snap)
    out = fitted.snapshot
    assert not fitted.over_budget
    # Measured on the encoded event body, as the outbox writes it.
    assert fitted.body_bytes == len(encode(FrameworkChanged(snapshot=out), "orchestrator")[2])
    assert fitted.body_bytes <= SNAPSHOT_BUDGET_BYTES
    cut = [a.attempt_id for a in out.attempts if a.tasks_omitted]
    assert cut == list(range(fitted.attempts_cut)) and fitted.attempts_cut >= 1
    for before, after in zip(snap.attempts, out.attempts, strict=True):
        if after.tasks_omitted:
            assert after.tasks == [] and after.tasks_omitted == 501
            # The summary stays.
            assert after.model_dump(exclude={"tasks", "tasks_omitted"}) == before.model_dump(
                exclude={"tasks", "tasks_omitted"}
            )
        else:
            assert after == before
    # As few as needed: with the newest cut attempt's tasks back, it would be over.
    last = fitted.attempts_cut - 1
    restored = [*out.attempts[:last], snap.attempts[last], *out.attempts[last + 1 :]]
    assert body_bytes(out.model_copy(update={"attempts": restored})) > SNAPSHOT_BUDGET_BYTES
    assert out.tasks == snap.tasks  # the current attempt is whole


def test_a_current_attempt_over_the_budget_is_reported_not_cut() -> None:
    snap = snapshot(200, 3)
    fitted = fit_snapshot(snap, budget=20_000)
    assert fitted.over_budget and fitted.body_bytes is not None and fitted.body_bytes > 20_000
    assert fitted.attempts_cut == 3 and all(a.tasks == [] for a in fitted.snapshot.attempts)
    assert [a.tasks_omitted for a in fitted.snapshot.attempts] == [200, 200, 200]
    assert fitted.snapshot.tasks == snap.tasks


def test_an_attempt_cut_twice_counts_every_task_left_out() -> None:
    snap = snapshot(50, 1)
    earlier = snap.attempts[0].model_copy(update={"tasks_omitted": 7})
    fitted = fit_snapshot(snap.model_copy(update={"attempts": [earlier]}), budget=1)
    assert fitted.snapshot.attempts[0].tasks_omitted == 57


def test_a_big_job_retried_again_and_again_publishes_every_change_within_the_budget() -> None:
    """Through the core: a 1,000-task job (the submission cap) preempted five times, with no cap on task
    records in the history: each framework.changed stays within the budget, the newest attempts keep
    their tasks, and the stored framework keeps them all."""
    policy = Policy(attempt_task_budget=1_000_000)
    spec = JobSpec(
        job_key="alice~big",
        user="alice",
        name="big",
        job_retry_count=10,
        task_roles=[
            TaskRoleSpec(name="worker", instances=1000, gpu=1, cpu=2, memory_mb=1024, entrypoint="run")
        ],
        submitted_at=T0,
    )
    tr = core.on_submitted(spec, T0, policy)
    for n in range(5):
        assert tr.framework is not None
        tr = core.on_preempted(tr.framework, tr.framework.attempt_id, "bob~x", T0 + n, policy)
        [changed] = [e for e in tr.events if isinstance(e, FrameworkChanged)]
        assert len(encode(changed, "orchestrator")[2]) <= SNAPSHOT_BUDGET_BYTES
        assert not tr.warnings
    assert tr.framework is not None
    assert len(tr.framework.attempts) == 5 and all(len(a.tasks) == 1000 for a in tr.framework.attempts)
    published = changed.snapshot.attempts
    omitted = [a.tasks_omitted for a in published]
    assert omitted[0] == 1000 and omitted[-1] == 0 and len(published[-1].tasks) == 1000
    assert omitted == sorted(omitted, reverse=True)  # oldest first


def test_the_stored_history_says_which_attempts_lost_their_tasks_to_its_record_budget() -> None:
    """The history's own cap on task records (``attempt_task_budget``) leaves tasks out the same way."""
    policy = Policy(attempt_task_budget=5)
    spec = JobSpec(
        job_key="alice~small",
        user="alice",
        name="small",
        job_retry_count=10,
        task_roles=[TaskRoleSpec(name="worker", instances=3, gpu=1, cpu=2, memory_mb=1024, entrypoint="run")],
        submitted_at=T0,
    )
    fw = core.on_submitted(spec, T0, policy).framework
    for n in range(3):
        assert fw is not None
        fw = core.on_preempted(fw, fw.attempt_id, "bob~x", T0 + n, policy).framework
    assert fw is not None
    assert [(len(a.tasks), a.tasks_omitted) for a in fw.attempts] == [(0, 3), (0, 3), (3, 0)]
