"""extras.elastic in the jobs service's pure parts: each rule refused at its path with a clear message; the
job detail's current instances per role; the job events that say when the gang grew or shrank."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pai_common.contract.events import JobElasticResized
from pai_common.contract.types import FrameworkSnapshot, TaskSnapshot
from pai_common.errors import InvalidProtocolError
from pai_jobs import elastic, job_events
from pai_jobs.protocol import parse_job
from pai_jobs.shell import new_job_document
from pai_jobs.views import job_detail

HEAD = """protocolVersion: 2
name: grow
type: job
taskRoles:
  worker:
    instances: 4
    resourcePerInstance: {cpu: 1, memoryMB: 256, gpu: 1}
    commands: [python train.py]
  ps:
    instances: 1
    resourcePerInstance: {cpu: 1, memoryMB: 256, gpu: 0}
    commands: [python ps.py]
"""


def problems(extras: str) -> list[dict[str, Any]]:
    with pytest.raises(InvalidProtocolError) as caught:
        parse_job(HEAD + "extras:\n" + extras, "alice", 1)
    return list(json.loads(str(caught.value)))


def check(value: object, gang: bool = True) -> tuple[dict[str, int], list[tuple[str, str]]]:
    seen: list[tuple[str, str]] = []
    out = elastic.parse(value, {"worker": 4, "ps": 1, "broken": None}, gang, lambda f, m: seen.append((f, m)))
    return out, seen


def test_each_elastic_role_gives_its_minimum() -> None:
    assert check({"worker": {"minInstances": 2, "maxInstances": 4}}) == ({"worker": 2}, [])
    # maxInstances defaults to the task number; min == max is allowed (a fixed role, said twice).
    assert check({"worker": {"minInstances": 1}, "ps": {"minInstances": 1, "maxInstances": 1}}) == (
        {"worker": 1, "ps": 1},
        [],
    )
    # A broken role (reported at the role) is known: only the shape of its limits is checked.
    assert check({"broken": {"minInstances": 2, "maxInstances": 9}}) == ({}, [])


@pytest.mark.parametrize(
    ("value", "field", "words"),
    [
        ([1], "extras.elastic", "non-empty mapping"),
        ({}, "extras.elastic", "non-empty mapping"),
        ({"nobody": {"minInstances": 1}}, "extras.elastic.nobody", "names no task role"),
        ({"worker": 3}, "extras.elastic.worker", "must be a mapping"),
        ({"worker": {"minInstances": 0}}, "extras.elastic.worker.minInstances", "at least 1"),
        ({"worker": {"minInstances": True}}, "extras.elastic.worker.minInstances", "at least 1"),
        ({"worker": {"maxInstances": 4}}, "extras.elastic.worker.minInstances", "at least 1"),
        (
            {"worker": {"minInstances": 1, "maxInstances": "4"}},
            "extras.elastic.worker.maxInstances",
            "integer",
        ),
        (
            {"worker": {"minInstances": 1, "maxInstances": 8}},
            "extras.elastic.worker.maxInstances",
            "taskNumber (4)",
        ),
        ({"worker": {"minInstances": 5, "maxInstances": 4}}, "extras.elastic.worker.minInstances", "at most"),
        ({"worker": {"minInstances": 1, "max": 4}}, "extras.elastic.worker.max", "not a field"),
    ],
)
def test_bad_limits_are_refused_at_their_path(value: object, field: str, words: str) -> None:
    _, seen = check(value)
    assert any(f == field and words in m for f, m in seen), seen


def test_not_with_gang_allocation_off() -> None:
    _, seen = check({"worker": {"minInstances": 1}}, gang=False)
    assert seen and seen[0][0] == "extras.elastic" and "gangAllocation: false" in seen[0][1]


def test_a_submission_reports_the_rule_it_breaks() -> None:
    [problem] = problems("  elastic: {worker: {minInstances: 1, maxInstances: 5}}\n")
    assert problem["field"] == "extras.elastic.worker.maxInstances"
    assert "must equal the role's taskNumber (4)" in problem["message"]


def test_a_valid_elastic_job_carries_its_minimums() -> None:
    parsed = parse_job(
        HEAD + "extras:\n  elastic: {worker: {minInstances: 2, maxInstances: 4}}\n", "alice", 1
    )
    assert parsed.spec.elastic == {"worker": 2}
    assert parse_job(HEAD, "alice", 1).spec.elastic == {}


def test_the_detail_shows_each_roles_current_instances_and_events_say_when_it_changed() -> None:
    spec = parse_job(HEAD + "extras:\n  elastic: {worker: {minInstances: 2}}\n", "alice", 1).spec
    states = [
        "TaskAttemptRunning",
        "TaskAttemptRunning",
        "TaskAttemptPreparing",
        "TaskAttemptCreationPending",
    ]
    tasks = [TaskSnapshot(task_role="worker", index=i, state=s) for i, s in enumerate(states)]
    tasks.append(TaskSnapshot(task_role="ps", index=0, state="TaskAttemptRunning"))
    snapshot = FrameworkSnapshot(
        job_key=spec.job_key, version=3, state="AttemptRunning", attempt_id=0, tasks=tasks
    )
    assert elastic.view(spec, snapshot) == {
        "worker": {"minInstances": 2, "maxInstances": 4, "currentInstances": 3}
    }
    doc = new_job_document(spec.model_dump(mode="json"), {})
    doc["snapshot"] = snapshot.model_dump(mode="json")
    assert job_detail(doc)["jobStatus"]["elastic"]["worker"]["currentInstances"] == 3
    plain = new_job_document(parse_job(HEAD, "alice", 1).spec.model_dump(mode="json"), {})
    plain["snapshot"] = snapshot.model_dump(mode="json")
    assert "elastic" not in job_detail(plain)["jobStatus"]

    grew = JobElasticResized(
        job_key=spec.job_key, attempt_id=0, change="grew", tasks=["worker/2"], instances={"worker": 3},
        version=2, reason="task(s) worker/2 placed in idle cells",
    )  # fmt: skip
    event = job_events.elastic_resized(grew, 1_000)
    assert (event.reason, event.type) == ("ElasticGrew", "Normal")
    assert "worker/2 joined the gang" in event.message and "worker: 3" in event.message
    shrank = job_events.elastic_resized(grew.model_copy(update={"change": "shrunk", "version": 3}), 2_000)
    assert shrank.reason == "ElasticShrank" and "left the gang" in shrank.message
    assert shrank.key != event.key  # one job event per membership version
