"""Tests of OpenPAI's response shapes built from the read model (pai_jobs.views)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from pai_common.contract.types import FrameworkSnapshot, GpuShareStatus, JobSpec, TaskRoleSpec, TaskSnapshot
from pai_jobs.views import (
    attempt_state,
    job_detail,
    job_summary,
    priority_name,
    public_state,
    task_attempt_state,
    task_state,
)

JOB_KEY = "alice~ps_worker"
SUBMITTED = 1_700_000_000_000


def _spec(priority: int = 10) -> JobSpec:
    return JobSpec(
        job_key=JOB_KEY,
        user="alice",
        name="ps_worker",
        virtual_cluster="research",
        priority=priority,
        job_retry_count=2,
        task_roles=[
            TaskRoleSpec(name="ps", instances=1, gpu=0, cpu=2, memory_mb=1024, entrypoint="ps"),
            TaskRoleSpec(name="worker", instances=3, gpu=2, cpu=4, memory_mb=4096, entrypoint="w"),
        ],
        submitted_at=SUBMITTED - 5,
    )


def _doc(
    snapshot: FrameworkSnapshot | None = None, *, priority: int = 10, execution_type: str = "START"
) -> dict[str, Any]:
    return {
        "_id": JOB_KEY,
        "spec": _spec(priority).model_dump(),
        "snapshot": snapshot.model_dump() if snapshot is not None else None,
        "tags": ["nightly"],
        "execution_type": execution_type,
        "submitted_at": SUBMITTED,
    }


def _failed_snapshot() -> FrameworkSnapshot:
    """Attempt 1 (after one platform retry) failed: worker 1 exited with 1, the rest were stopped."""
    return FrameworkSnapshot(
        job_key=JOB_KEY,
        version=17,
        state="Completed",
        attempt_id=1,
        retries=1,
        accountable_retries=0,
        created_at=SUBMITTED + 10,
        launched_at=SUBMITTED + 20,
        completed_at=SUBMITTED + 900,
        attempt_created_at=SUBMITTED + 500,
        attempt_launched_at=SUBMITTED + 510,
        attempt_completed_at=SUBMITTED + 890,
        exit_code=1,
        exit_type="Failed",
        exit_diagnostics="worker 1 exited with 1",
        trigger_task_role="worker",
        trigger_task_index=1,
        tasks=[
            TaskSnapshot(
                task_role="ps",
                index=0,
                state="TaskCompleted",
                node="node-a",
                host_ip="10.0.0.1",
                exit_code=-220,
                completed_at=SUBMITTED + 880,
            ),
            TaskSnapshot(
                task_role="worker",
                index=0,
                state="TaskCompleted",
                node="node-b",
                host_ip="10.0.0.2",
                gpus=[0, 1],
                exit_code=0,
                created_at=SUBMITTED + 501,
                launched_at=SUBMITTED + 511,
                completed_at=SUBMITTED + 800,
            ),
            TaskSnapshot(
                task_role="worker",
                index=1,
                state="TaskCompleted",
                attempt_id=0,
                node="node-c",
                host_ip="10.0.0.3",
                gpus=[2, 3],
                exit_code=1,
                exit_diagnostics="Traceback: boom",
                created_at=SUBMITTED + 502,
                launched_at=SUBMITTED + 512,
                completed_at=SUBMITTED + 850,
            ),
            # worker 2 never got a status in this snapshot.
        ],
    )


# ---- state mapping ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fc_state", "exit_code", "expected"),
    [
        ("AttemptCreationPending", None, "WAITING"),
        ("AttemptCreationRequested", None, "WAITING"),
        ("AttemptPreparing", None, "WAITING"),
        ("AttemptRunning", None, "RUNNING"),
        ("AttemptDeletionPending", 1, "RUNNING"),
        ("AttemptDeletionPending", -210, "STOPPING"),
        ("AttemptDeletionRequested", -220, "STOPPING"),
        ("AttemptDeleting", 0, "RUNNING"),
        ("AttemptDeleting", -210, "STOPPING"),
        ("AttemptCompleted", 137, "RUNNING"),  # between two attempts
        ("AttemptCompleted", -220, "STOPPING"),
        ("Completed", 0, "SUCCEEDED"),
        ("Completed", -210, "STOPPED"),
        ("Completed", -220, "STOPPED"),
        ("Completed", 1, "FAILED"),
        ("Completed", -1100, "FAILED"),
        ("Completed", None, "FAILED"),
        ("SomethingElse", 0, "UNKNOWN"),
        ("", None, "UNKNOWN"),
    ],
)
def test_public_state(fc_state: str, exit_code: int | None, expected: str) -> None:
    assert public_state(fc_state, exit_code) == expected


@pytest.mark.parametrize(
    ("exit_code", "expected"), [(0, "SUCCEEDED"), (-210, "STOPPED"), (-220, "STOPPED"), (3, "FAILED")]
)
def test_a_completed_attempt_shows_its_own_result(exit_code: int, expected: str) -> None:
    assert attempt_state("AttemptCompleted", exit_code) == expected
    assert attempt_state("AttemptRunning", exit_code) == "RUNNING"


@pytest.mark.parametrize(
    ("fc_state", "exit_code", "expected"),
    [
        ("TaskAttemptCreationPending", None, "WAITING"),
        ("TaskAttemptCreationRequested", None, "WAITING"),
        ("TaskAttemptPreparing", None, "WAITING"),
        ("TaskAttemptRunning", None, "RUNNING"),
        ("TaskAttemptDeletionPending", 1, "RUNNING"),
        ("TaskAttemptDeleting", -210, "STOPPING"),
        ("TaskAttemptCompleted", 1, "RUNNING"),
        ("TaskCompleted", 0, "SUCCEEDED"),
        ("TaskCompleted", -210, "STOPPED"),
        ("TaskCompleted", -220, "STOPPED"),
        ("TaskCompleted", 143, "FAILED"),
        ("TaskCompleted", None, "FAILED"),
        ("Completed", 0, "UNKNOWN"),  # a framework state is not a task state
    ],
)
def test_task_state(fc_state: str, exit_code: int | None, expected: str) -> None:
    assert task_state(fc_state, exit_code) == expected


def test_task_attempt_state() -> None:
    assert task_attempt_state("TaskAttemptCompleted", 1) == "FAILED"
    assert task_attempt_state("TaskAttemptCompleted", 0) == "SUCCEEDED"
    assert task_attempt_state("TaskAttemptRunning", None) == "RUNNING"


@pytest.mark.parametrize(
    ("priority", "expected"), [(120, "crit"), (100, "prod"), (10, "test"), (-1, "oppo"), (50, "50"), (0, "0")]
)
def test_priority_name(priority: int, expected: str) -> None:
    assert priority_name(priority) == expected


# ---- a job without a snapshot ----------------------------------------------------------------------


def test_snapshotless_job_is_waiting() -> None:
    detail = job_detail(_doc())
    status = detail["jobStatus"]
    assert status["state"] == "WAITING"
    assert status["attemptState"] == "WAITING"
    assert public_state(status["subState"], None) == "WAITING"
    assert status["appExitCode"] is None
    assert status["retries"] == 0
    assert status["submissionTime"] == SUBMITTED
    assert list(detail["taskRoles"]) == ["ps", "worker"]
    for role, instances in (("ps", 1), ("worker", 3)):
        tasks = detail["taskRoles"][role]["taskStatuses"]
        assert detail["taskRoles"][role]["taskRoleStatus"] == {"name": role}
        assert [task["taskIndex"] for task in tasks] == list(range(instances))
        assert {task["taskState"] for task in tasks} == {"WAITING"}
        assert all(task["containerNodeName"] is None and task["attemptId"] == 0 for task in tasks)
        # OpenPAI types containerLog a string: the logs route of the first attempt, known from the start.
        assert [task["containerLog"] for task in tasks] == [
            f"/api/v2/jobs/alice~ps_worker/attempts/0/taskRoles/{role}/taskIndex/{i}/attempts/0/logs"
            for i in range(instances)
        ]
    # As OpenPAI, the job's first attempt exists from the moment it is accepted.
    assert status["attemptId"] == 0


def test_snapshotless_summary() -> None:
    summary = job_summary(_doc())
    assert summary["state"] == "WAITING"
    assert summary["createdTime"] is None
    assert summary["appExitCode"] is None
    assert summary["retryDetails"] == {"user": 0, "platform": 0, "resource": 0}


# ---- a completed, failed job -----------------------------------------------------------------------


def test_failed_job_detail() -> None:
    detail = job_detail(_doc(_failed_snapshot()))
    status = detail["jobStatus"]
    assert status["state"] == "FAILED"
    assert status["subState"] == "Completed"
    assert status["attemptState"] == "FAILED"
    assert status["appExitCode"] == 1
    assert status["appExitTriggerTaskRoleName"] == "worker"
    assert status["appExitTriggerTaskIndex"] == 1
    assert status["appExitTriggerMessage"] == "Traceback: boom"
    assert status["appExitType"] == "Failed"
    assert status["appExitDiagnostics"] == "worker 1 exited with 1"
    assert status["appExitMessages"] == {
        "container": None,
        "runtime": None,
        "launcher": "worker 1 exited with 1",
    }
    assert status["appProgress"] == 1
    assert status["attemptId"] == 1
    assert status["retries"] == 1
    assert status["retryDetails"] == {"user": 0, "platform": 1, "resource": 0}
    assert (status["createdTime"], status["launchedTime"], status["completedTime"]) == (
        SUBMITTED + 10,
        SUBMITTED + 20,
        SUBMITTED + 900,
    )
    assert (status["appCreatedTime"], status["appLaunchedTime"], status["appCompletedTime"]) == (
        SUBMITTED + 500,
        SUBMITTED + 510,
        SUBMITTED + 890,
    )
    assert status["virtualCluster"] == "research"
    assert status["username"] == "alice"


def test_failed_job_tasks() -> None:
    roles = job_detail(_doc(_failed_snapshot()))["taskRoles"]
    (ps,) = roles["ps"]["taskStatuses"]
    assert ps["taskState"] == "STOPPED"
    assert ps["containerExitCode"] == -220
    assert ps["containerGpus"] is None  # a CPU-only task

    workers = roles["worker"]["taskStatuses"]
    assert [task["taskState"] for task in workers] == ["SUCCEEDED", "FAILED", "WAITING"]
    failed = workers[1]
    assert failed["containerExitCode"] == 1
    assert failed["containerExitDiagnostics"] == "Traceback: boom"
    assert failed["containerIp"] == "10.0.0.3"
    assert failed["containerNodeName"] == "node-c"
    assert failed["containerGpus"] == 0b1100  # OpenPAI's bit mask of GPUs 2 and 3
    assert failed["containerLog"] == (
        "/api/v2/jobs/alice~ps_worker/attempts/1/taskRoles/worker/taskIndex/1/attempts/0/logs"
    )
    assert failed["attemptState"] == "FAILED"
    assert (failed["createdTime"], failed["launchedTime"], failed["completedTime"]) == (
        SUBMITTED + 502,
        SUBMITTED + 512,
        SUBMITTED + 850,
    )
    # The task missing from the snapshot waits, with nothing of a container yet but its logs route.
    assert workers[2]["containerLog"].endswith("/attempts/1/taskRoles/worker/taskIndex/2/attempts/0/logs")
    assert workers[2]["containerExitCode"] is None and workers[2]["containerId"] is None
    # Container ids differ between tasks; task uids are stable and distinct.
    assert workers[0]["containerId"] != workers[1]["containerId"]
    assert len({task["taskUid"] for task in workers}) == 3


def test_failed_job_summary() -> None:
    summary = job_summary(_doc(_failed_snapshot()))
    assert summary["state"] == "FAILED"
    assert summary["subState"] == "Completed"
    assert summary["appExitCode"] == 1
    assert summary["retries"] == 1
    assert summary["retryDetails"] == {"user": 0, "platform": 1, "resource": 0}
    assert summary["completedTime"] == SUBMITTED + 900


def test_stopping_job() -> None:
    snapshot = _failed_snapshot().model_copy(
        update={"state": "AttemptDeletionPending", "exit_code": -210, "completed_at": None}
    )
    doc = _doc(snapshot, execution_type="STOP")
    assert job_summary(doc)["state"] == "STOPPING"
    assert job_summary(doc)["executionType"] == "STOP"
    assert job_detail(doc)["jobStatus"]["state"] == "STOPPING"


def test_running_job_has_no_progress() -> None:
    snapshot = _failed_snapshot().model_copy(update={"state": "AttemptRunning", "exit_code": None})
    status = job_detail(_doc(snapshot))["jobStatus"]
    assert status["state"] == "RUNNING"
    assert status["appProgress"] == 0


# ---- shapes ----------------------------------------------------------------------------------------

SUMMARY_FIELDS = {
    "debugId",
    "name",
    "username",
    "state",
    "subState",
    "executionType",
    "tags",
    "retries",
    "retryDetails",
    "retryDelayTime",
    "submissionTime",
    "createdTime",
    "launchedTime",
    "completedTime",
    "appExitCode",
    "virtualCluster",
    "totalGpuNumber",
    "totalTaskNumber",
    "totalTaskRoleNumber",
    "jobPriority",
}

JOB_STATUS_FIELDS = {
    "username",
    "state",
    "subState",
    "executionType",
    "retries",
    "retryDetails",
    "retryDelayTime",
    "submissionTime",
    "createdTime",
    "launchedTime",
    "completedTime",
    "attemptId",
    "attemptState",
    "appId",
    "appProgress",
    "appTrackingUrl",
    "appCreatedTime",
    "appLaunchedTime",
    "appCompletedTime",
    "appExitCode",
    "appExitSpec",
    "appExitDiagnostics",
    "appExitMessages",
    "appExitTriggerMessage",
    "appExitTriggerTaskRoleName",
    "appExitTriggerTaskIndex",
    "appExitType",
    "virtualCluster",
}

TASK_STATUS_FIELDS = {
    "taskIndex",
    "taskUid",
    "taskState",
    "containerId",
    "containerIp",
    "containerNodeName",
    "containerPorts",
    "containerGpus",
    "containerLog",
    "containerExitCode",
    "containerExitSpec",
    "containerExitDiagnostics",
    "retries",
    "accountableRetries",
    "createdTime",
    "launchedTime",
    "completedTime",
    "attemptId",
    "attemptState",
    "currentAttemptCreatedTime",
    "currentAttemptLaunchedTime",
    "currentAttemptCompletedTime",
    "hived",
}


@pytest.mark.parametrize("snapshot", [None, _failed_snapshot()], ids=["no snapshot", "failed"])
def test_shapes(snapshot: FrameworkSnapshot | None) -> None:
    doc = _doc(snapshot)
    summary = job_summary(doc)
    detail = job_detail(doc)
    assert set(summary) == SUMMARY_FIELDS
    assert set(detail) == {"debugId", "name", "tags", "jobPriority", "jobStatus", "taskRoles"}
    assert set(detail["jobStatus"]) == JOB_STATUS_FIELDS
    for role in detail["taskRoles"].values():
        for task in role["taskStatuses"]:
            assert set(task) == TASK_STATUS_FIELDS
    # Both go over the wire as JSON.
    json.dumps(summary)
    json.dumps(detail)


def test_summary_fields() -> None:
    summary = job_summary(_doc(_failed_snapshot(), priority=100))
    assert summary["debugId"] == hashlib.md5(JOB_KEY.encode()).hexdigest()
    assert summary["name"] == "ps_worker"
    assert summary["username"] == "alice"
    assert summary["executionType"] == "START"
    assert summary["tags"] == ["nightly"]
    assert summary["retryDelayTime"] == 0
    assert summary["submissionTime"] == SUBMITTED
    assert summary["createdTime"] == SUBMITTED + 10
    assert summary["launchedTime"] == SUBMITTED + 20
    assert summary["virtualCluster"] == "research"
    assert summary["totalGpuNumber"] == 6  # 3 workers x 2 GPUs, ps has none
    assert summary["totalTaskNumber"] == 4
    assert summary["totalTaskRoleNumber"] == 2
    assert summary["jobPriority"] == "prod"


def test_detail_header() -> None:
    detail = job_detail(_doc(priority=7))
    assert detail["debugId"] == hashlib.md5(JOB_KEY.encode()).hexdigest()
    assert detail["name"] == "ps_worker"
    assert detail["tags"] == ["nightly"]
    assert detail["jobPriority"] == "7"


def test_summary_and_detail_agree() -> None:
    doc = _doc(_failed_snapshot())
    summary = job_summary(doc)
    status = job_detail(doc)["jobStatus"]
    for field in ("state", "subState", "retries", "retryDetails", "submissionTime", "appExitCode"):
        assert summary[field] == status[field], field


def test_waiting_job_shows_why_it_waits_for_its_current_attempt_only() -> None:
    doc = _doc()
    doc["pending"] = {"attempt_id": 0, "reason": "waiting for 8 GPU(s)", "position": 2}
    status = job_detail(doc)["jobStatus"]
    assert status["state"] == "WAITING"
    assert status["pendingReason"] == "waiting for 8 GPU(s)"
    # The stored place is the one at publication (places move without an event): none is claimed.
    assert status["pendingPosition"] is None
    doc["pending"] = {"attempt_id": 3, "reason": "about another attempt", "position": None}
    assert "pendingReason" not in job_detail(doc)["jobStatus"]


def test_lazily_preempted_tasks_say_so_for_the_current_attempt_only() -> None:
    doc = _doc(_failed_snapshot())
    attempt = _failed_snapshot().attempt_id
    doc["downgraded"] = {"attempt_id": attempt, "preemptor": "bob~urgent#0"}
    task = job_detail(doc)["taskRoles"]["worker"]["taskStatuses"][0]
    assert task["hived"] == {
        "affinityGroupName": JOB_KEY,
        "lazyPreempted": {"preemptor": "bob~urgent#0"},
        "lazyPreemptionStatus": {"preemptor": "bob~urgent#0"},
    }
    doc["downgraded"] = {"attempt_id": attempt - 1, "preemptor": "bob~urgent#0"}
    assert job_detail(doc)["taskRoles"]["worker"]["taskStatuses"][0]["hived"]["lazyPreempted"] is None


def test_tasks_show_their_fpgas_and_how_their_gpu_share_is_held_only_when_they_have_them() -> None:
    share = GpuShareStatus(milli=250, memory_mb=4096, enforced=False, note="no MPS here")
    snapshot = FrameworkSnapshot(
        job_key=JOB_KEY,
        version=3,
        state="AttemptRunning",
        attempt_id=0,
        tasks=[
            TaskSnapshot(task_role="worker", index=0, state="TaskAttemptRunning", node="n", fpgas=[0, 2]),
            TaskSnapshot(
                task_role="worker", index=1, state="TaskAttemptRunning", node="n", gpus=[1], gpu_share=share
            ),
        ],
    )
    spec = _spec().model_copy(
        update={
            "task_roles": [
                TaskRoleSpec(name="worker", instances=2, gpu=1, cpu=1, memory_mb=1, entrypoint="x")
            ]
        }
    )
    doc = {"_id": JOB_KEY, "spec": spec.model_dump(mode="json"), "snapshot": snapshot.model_dump(mode="json")}
    first, second = job_detail(doc)["taskRoles"]["worker"]["taskStatuses"]
    assert first["containerFpgas"] == [0, 2] and "gpuShare" not in first
    assert second["gpuShare"] == {"milli": 250, "memoryMB": 4096, "enforced": False, "note": "no MPS here"}
    assert "containerFpgas" not in second
