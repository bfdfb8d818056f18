"""Job dependencies in the orchestrator's core: a job waits (asking nothing of the scheduler) until its
dependencies end, starts once every one is satisfied, fails with -240 when one never can be, and stays
idempotent under repeated or unrelated completions. The service's part (dependents submitted before, while
and after their dependency runs) is in test_orchestrator_service.py."""

from __future__ import annotations

import pytest

from pai_common.contract.events import (
    JobAttemptCompleted,
    JobCompleted,
    JobDependencyResolved,
    JobStopRequested,
    SchedulingRequested,
)
from pai_common.contract.types import JobDependency, JobSpec, JobState, TaskRoleSpec
from pai_orchestrator import core
from pai_orchestrator import states as S
from pai_orchestrator.core import Framework, Transition

T0 = 1_000_000


def spec(key: str, *deps: tuple[str, str]) -> JobSpec:
    user, name = key.split("~")
    return JobSpec(
        job_key=key,
        user=user,
        name=name,
        task_roles=[TaskRoleSpec(name="w", instances=1, gpu=1, cpu=1, memory_mb=64, entrypoint="x")],
        submitted_at=T0,
        dependencies=[JobDependency(job_key=k, on=on) for k, on in deps],  # type: ignore[arg-type]
    )


def events_of(out: Transition, kind: type) -> list:  # type: ignore[type-arg]
    return [e for e in out.events if isinstance(e, kind)]


def ended(fw: Framework, dep: str, state: JobState, at: int = T0 + 10) -> Transition:
    return core.on_dependency_ended(fw, dep, state, at)


def test_a_job_with_dependencies_waits_without_asking_for_cells() -> None:
    out = core.on_submitted(spec("a~d", ("a~p", "succeeded"), ("b~q", "completed")), T0)
    fw = out.framework
    assert fw is not None and fw.state == S.ATTEMPT_CREATION_PENDING and fw.waiting_for_dependencies
    assert not events_of(out, SchedulingRequested)
    assert "waiting for its dependencies: a~p to succeed, b~q to complete" in out.reason
    snap = fw.snapshot()
    assert [(d.job_key, d.on, d.ended) for d in snap.dependencies] == [
        ("a~p", "succeeded", None),
        ("b~q", "completed", None),
    ]
    assert {t.state for t in snap.tasks} == {S.TASK_CREATION_PENDING}


def test_it_starts_once_every_dependency_is_satisfied() -> None:
    fw = core.on_submitted(spec("a~d", ("a~p", "succeeded"), ("b~q", "completed")), T0).framework
    assert fw is not None
    first = ended(fw, "b~q", "FAILED")  # `completed`: any final state satisfies it
    assert first.framework is not None and first.framework.waiting_for_dependencies
    assert not events_of(first, SchedulingRequested)
    resolved = events_of(first, JobDependencyResolved)
    assert [(e.dependency, e.dependency_state, e.satisfied) for e in resolved] == [("b~q", "FAILED", True)]
    second = ended(first.framework, "a~p", "SUCCEEDED")
    assert second.framework is not None and second.framework.state == S.ATTEMPT_CREATION_REQUESTED
    asked = events_of(second, SchedulingRequested)
    assert len(asked) == 1 and asked[0].attempt_id == 0
    # Later news about a dependency changes nothing.
    assert not ended(second.framework, "a~p", "SUCCEEDED").changed
    assert not ended(second.framework, "x~other", "SUCCEEDED").changed


def test_dependencies_already_ended_are_taken_at_submission() -> None:
    out = core.on_submitted(spec("a~d", ("a~p", "succeeded")), T0, ended={"a~p": "SUCCEEDED"})
    assert out.framework is not None and out.framework.state == S.ATTEMPT_CREATION_REQUESTED
    assert len(events_of(out, SchedulingRequested)) == 1
    assert [e.satisfied for e in events_of(out, JobDependencyResolved)] == [True]


@pytest.mark.parametrize("state", ["FAILED", "STOPPED"])
def test_a_dependency_that_can_never_satisfy_fails_the_job(state: JobState) -> None:
    fw = core.on_submitted(spec("a~d", ("a~p", "succeeded"), ("b~q", "completed")), T0).framework
    assert fw is not None
    out = ended(fw, "a~p", state)
    done = out.framework
    assert done is not None and done.state == S.COMPLETED
    assert done.exit_code == S.EXIT_DEPENDENCY_UNSATISFIED and done.exit_type == "USER_FAILURE"
    assert done.exit_spec is not None and done.exit_spec["phrase"] == "JobDependencyUnsatisfied"
    assert done.exit_diagnostics is not None and f"a~p ended {state}" in done.exit_diagnostics
    completed = events_of(out, JobCompleted)
    assert [(c.state, c.exit_code) for c in completed] == [("FAILED", -240)]
    # Nothing was asked of the scheduler, so nothing is released and nothing was requested.
    assert not events_of(out, JobAttemptCompleted) and not events_of(out, SchedulingRequested)
    assert [e.satisfied for e in events_of(out, JobDependencyResolved)] == [False]
    assert not ended(done, "b~q", "SUCCEEDED").changed


def test_an_unsatisfiable_dependency_at_submission_fails_at_once() -> None:
    out = core.on_submitted(spec("a~d", ("a~p", "succeeded")), T0, ended={"a~p": "FAILED"})
    assert out.framework is not None and out.framework.state == S.COMPLETED
    assert [(c.state, c.exit_code) for c in events_of(out, JobCompleted)] == [("FAILED", -240)]


def test_a_waiting_job_can_be_stopped_and_then_ignores_its_dependencies() -> None:
    fw = core.on_submitted(spec("a~d", ("a~p", "succeeded")), T0).framework
    assert fw is not None
    stop = JobStopRequested(job_key="a~d", requested_by="a", requested_at=T0 + 1)
    out = core.on_stop_requested(fw, stop, T0 + 1)
    assert out.framework is not None and out.framework.state == S.COMPLETED
    assert [(c.state, c.exit_code) for c in events_of(out, JobCompleted)] == [("STOPPED", -210)]
    assert not events_of(out, JobAttemptCompleted)
    assert not ended(out.framework, "a~p", "SUCCEEDED").changed


def test_a_job_without_dependencies_starts_as_before() -> None:
    out = core.on_submitted(spec("a~plain"), T0)
    assert out.framework is not None and out.framework.state == S.ATTEMPT_CREATION_REQUESTED
    assert not out.framework.waiting_for_dependencies and out.framework.snapshot().dependencies == []
