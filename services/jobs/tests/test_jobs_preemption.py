"""extras.preemption in the jobs service's pure parts: graceSeconds read and checked, the job detail's
preemption notice and resume flag (present only when they apply), the PreemptionNotice job event."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pai_common.contract.events import JobPreemptionNoticed
from pai_common.contract.types import FrameworkSnapshot, PreemptionNotice
from pai_common.errors import InvalidProtocolError
from pai_jobs import job_events
from pai_jobs.protocol import parse_job
from pai_jobs.shell import new_job_document
from pai_jobs.views import job_detail

HEAD = """protocolVersion: 2
name: ckpt
type: job
taskRoles:
  worker:
    instances: 1
    resourcePerInstance: {cpu: 1, memoryMB: 256, gpu: 1}
    commands: [python train.py]
"""


def parse(extras: str) -> Any:
    return parse_job(HEAD + "extras:\n" + extras, "alice", 1)


def test_grace_seconds_is_read() -> None:
    assert parse("  preemption: {graceSeconds: 120}\n").spec.preemption_grace_s == 120.0
    assert parse("  preemption: {graceSeconds: 0.5}\n").spec.preemption_grace_s == 0.5
    assert parse("  preemption: {}\n").spec.preemption_grace_s is None
    assert parse("  gangAllocation: true\n").spec.preemption_grace_s is None


@pytest.mark.parametrize(
    ("extras", "field"),
    [
        ("  preemption: 60\n", "extras.preemption"),
        ("  preemption: {graceSeconds: -1}\n", "extras.preemption.graceSeconds"),
        ("  preemption: {graceSeconds: 86401}\n", "extras.preemption.graceSeconds"),
        ("  preemption: {graceSeconds: true}\n", "extras.preemption.graceSeconds"),
        ("  preemption: {graceSeconds: '60'}\n", "extras.preemption.graceSeconds"),
        ("  preemption: {grace: 60}\n", "extras.preemption.grace"),
    ],
)
def test_bad_grace_is_refused_at_its_path(extras: str, field: str) -> None:
    with pytest.raises(InvalidProtocolError) as caught:
        parse(extras)
    assert field in [p["field"] for p in json.loads(str(caught.value))]


NOTICE = PreemptionNotice(preemptor="bob~urgent", noticed_at=1_000, grace_seconds=60, deadline=61_000)


def _detail(**snapshot: Any) -> dict[str, Any]:
    spec = parse("  preemption: {graceSeconds: 60}\n").spec
    doc = new_job_document(spec.model_dump(mode="json"), {})
    snap = FrameworkSnapshot(
        job_key=spec.job_key, version=2, state="AttemptRunning", attempt_id=1, **snapshot
    )
    doc["snapshot"] = snap.model_dump(mode="json")
    status: dict[str, Any] = job_detail(doc)["jobStatus"]
    return status


def test_the_detail_shows_the_notice_and_the_resume_only_when_they_apply() -> None:
    plain = _detail()
    assert "preemption" not in plain and "resume" not in plain
    noticed = _detail(preemption=NOTICE)
    assert noticed["preemption"] == {
        "preemptor": "bob~urgent",
        "noticeTime": 1_000,
        "graceSeconds": 60,
        "deadline": 61_000,
    }
    assert _detail(resume=True)["resume"] is True


def test_the_notice_job_event() -> None:
    event = job_events.preemption_noticed(
        JobPreemptionNoticed(job_key="alice~ckpt", attempt_id=3, notice=NOTICE)
    )
    assert (event.type, event.reason, event.at_ms) == ("Warning", "PreemptionNotice", 1_000)
    assert "attempt 3 is preempted by bob~urgent" in event.message
    assert "60 s to stop, until 1970-01-01T00:01:01Z" in event.message and "PAI_RESUME=1" in event.message
