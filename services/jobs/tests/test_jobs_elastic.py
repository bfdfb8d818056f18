"""extras.elastic in the jobs service's pure parts: each rule refused at its path with a clear message."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pai_common.errors import InvalidProtocolError
from pai_jobs import elastic
from pai_jobs.protocol import parse_job

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


def test_a_valid_elastic_job_is_refused_until_its_membership_is_delivered() -> None:
    [problem] = problems("  elastic: {worker: {minInstances: 2, maxInstances: 4}}\n")
    assert problem["field"] == "extras.elastic" and "not supported yet" in problem["message"]
