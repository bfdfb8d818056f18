"""extras.dependencies in the jobs service's pure parts: what the protocol accepts and refuses (each problem
at its path), the job detail's dependencies and pending reason, and the job events they give. The service's
part (unknown jobs refused at submission, events recorded) is in test_jobs_service.py."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pai_common.contract.events import JobDependencyResolved
from pai_common.contract.types import DependencyStatus, FrameworkSnapshot, JobDependency
from pai_common.errors import InvalidProtocolError
from pai_jobs import dependencies, job_events
from pai_jobs.protocol import parse_job
from pai_jobs.shell import new_job_document
from pai_jobs.views import job_detail

HEAD = """protocolVersion: 2
name: train
type: job
taskRoles:
  worker:
    instances: 1
    resourcePerInstance: {cpu: 1, memoryMB: 256, gpu: 0}
    commands: ["true"]
"""


def parse(extras: str) -> Any:
    return parse_job(HEAD + "extras:\n" + extras, "alice", 1)


def problems(extras: str) -> list[dict[str, str]]:
    with pytest.raises(InvalidProtocolError) as caught:
        parse(extras)
    loaded: list[dict[str, str]] = json.loads(str(caught.value))
    return loaded


def test_dependencies_are_read_with_their_conditions() -> None:
    spec = parse(
        "  dependencies:\n"
        "    - {job: bob~prep}\n"
        "    - {job: data, on: completed}\n"  # a bare name: the submitter's own job
        "    - {job: carol~eval, on: succeeded}\n"
    ).spec
    assert spec.dependencies == [
        JobDependency(job_key="bob~prep", on="succeeded"),
        JobDependency(job_key="alice~data", on="completed"),
        JobDependency(job_key="carol~eval", on="succeeded"),
    ]
    assert parse("  gangAllocation: true\n").spec.dependencies == []


@pytest.mark.parametrize(
    ("extras", "field", "needle"),
    [
        ("  dependencies: bob~prep\n", "extras.dependencies", "must be a list"),
        ("  dependencies: [bob~prep]\n", "extras.dependencies.0", "must be a mapping"),
        ("  dependencies: [{on: succeeded}]\n", "extras.dependencies.0.job", "must name a job"),
        ("  dependencies: [{job: 'a~b~c'}]\n", "extras.dependencies.0.job", "must name a job"),
        ("  dependencies: [{job: 7}]\n", "extras.dependencies.0.job", "must name a job"),
        ("  dependencies: [{job: bob~x, on: failed}]\n", "extras.dependencies.0.on", "succeeded, completed"),
        ("  dependencies: [{job: alice~train}]\n", "extras.dependencies.0.job", "cannot depend on itself"),
        ("  dependencies: [{job: train}]\n", "extras.dependencies.0.job", "cannot depend on itself"),
        ("  dependencies: [{job: b~x}, {job: b~x}]\n", "extras.dependencies.1.job", "named twice"),
        ("  dependencies: [{job: b~x, when: now}]\n", "extras.dependencies.0.when", "not a field"),
    ],
)
def test_malformed_dependencies_are_refused_at_their_path(extras: str, field: str, needle: str) -> None:
    found = problems(extras)
    assert any(p["field"] == field and needle in p["message"] for p in found), found


def test_at_most_64_dependencies() -> None:
    many = "".join(f"    - {{job: bob~j{i}}}\n" for i in range(dependencies.MAX_DEPENDENCIES + 1))
    found = problems("  dependencies:\n" + many)
    assert found == [{"field": "extras.dependencies", "message": "at most 64 dependencies, got 65"}]


def test_unknown_names_the_jobs_that_do_not_exist() -> None:
    deps = [JobDependency(job_key="b~x"), JobDependency(job_key="b~y", on="completed")]
    assert dependencies.unknown(deps, {"b~x"}) == [("extras.dependencies.1.job", "names no job: b~y")]
    assert dependencies.unknown(deps, {"b~x", "b~y"}) == []


def _doc(snapshot: FrameworkSnapshot | None) -> dict[str, Any]:
    spec = parse("  dependencies: [{job: bob~prep}, {job: bob~data, on: completed}]\n").spec
    doc = new_job_document(spec.model_dump(mode="json"), {})
    doc["snapshot"] = snapshot.model_dump(mode="json") if snapshot else None
    return doc


def _snapshot(state: str, *ended: tuple[str, str]) -> FrameworkSnapshot:
    done = dict(ended)
    return FrameworkSnapshot(
        job_key="alice~train",
        version=1,
        state=state,
        attempt_id=0,
        dependencies=[
            DependencyStatus(job_key="bob~prep", on="succeeded", ended=done.get("bob~prep")),  # type: ignore[arg-type]
            DependencyStatus(job_key="bob~data", on="completed", ended=done.get("bob~data")),  # type: ignore[arg-type]
        ],
    )


def test_the_detail_says_what_a_waiting_job_waits_for() -> None:
    before = job_detail(_doc(None))["jobStatus"]
    assert before["state"] == "WAITING"
    assert (
        before["pendingReason"] == "waiting for its dependencies: bob~prep to succeed, bob~data to complete"
    )
    status = job_detail(_doc(_snapshot("AttemptCreationPending", ("bob~data", "FAILED"))))["jobStatus"]
    assert status["pendingReason"] == "waiting for its dependency: bob~prep to succeed"
    assert status["dependencies"] == [
        {"job": "bob~prep", "on": "succeeded", "state": None, "satisfied": None},
        {"job": "bob~data", "on": "completed", "state": "FAILED", "satisfied": True},
    ]
    # Once its attempt asked for cells, the scheduler's reason (if any) is the one shown.
    started = _snapshot("AttemptCreationRequested", ("bob~data", "FAILED"), ("bob~prep", "SUCCEEDED"))
    running = job_detail(_doc(started))["jobStatus"]
    assert "pendingReason" not in running and running["dependencies"][0]["satisfied"] is True
    failed = job_detail(_doc(_snapshot("Completed", ("bob~prep", "STOPPED"))))["jobStatus"]
    assert failed["dependencies"][0] == {
        "job": "bob~prep",
        "on": "succeeded",
        "state": "STOPPED",
        "satisfied": False,
    }


def test_job_events_of_dependencies() -> None:
    spec = parse("  dependencies: [{job: bob~prep}, {job: bob~data, on: completed}]\n").spec
    waiting = job_events.waiting_for_dependencies(spec, 5)
    assert waiting.reason == "WaitingForDependencies" and "bob~prep to succeed, bob~data to complete" in (
        waiting.message
    )
    ok = JobDependencyResolved(
        job_key="alice~train",
        dependency="bob~data",
        on="completed",
        dependency_state="FAILED",
        satisfied=True,
    )
    bad = ok.model_copy(update={"dependency": "bob~prep", "on": "succeeded", "satisfied": False})
    good, wrong = job_events.dependency_resolved(ok, 6), job_events.dependency_resolved(bad, 7)
    assert (good.type, good.reason) == ("Normal", "DependencySatisfied")
    assert (wrong.type, wrong.reason) == ("Warning", "DependencyUnsatisfied")
    assert "bob~prep ended FAILED" in wrong.message and "fails without starting" in wrong.message
    assert good.key != wrong.key
