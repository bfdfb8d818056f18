"""OpenPAI's response shapes (JobSummary, JobDetail), built from the jobs read model.

Pure: no I/O. The read model document of one job is
``{"_id": job_key, "spec": JobSpec dump, "snapshot": FrameworkSnapshot dump | None, "tags": [...],
"execution_type": "START" | "STOP", "submitted_at": ms}``; the snapshot is None until the orchestrator
first reports the framework.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, Final

from pai_common.contract.states import final_state as _final_state
from pai_common.contract.states import public_state
from pai_common.contract.types import FrameworkSnapshot, JobSpec, TaskSnapshot
from pai_jobs.protocol import PRIORITY_BY_CLASS

# ---- FrameworkController state names, in one place ---------------------------------------------------

# The attempt has a completion status and is being torn down (or is waiting to be retried).
FRAMEWORK_COMPLETING_STATES: Final = frozenset(
    {"AttemptDeletionPending", "AttemptDeletionRequested", "AttemptDeleting", "AttemptCompleted"}
)
FRAMEWORK_ATTEMPT_COMPLETED_STATE: Final = "AttemptCompleted"
FRAMEWORK_COMPLETED_STATE: Final = "Completed"
# What a job with no snapshot yet reports as subState: the state every framework starts in, which
# public_state maps to WAITING like the job's state.
INITIAL_FRAMEWORK_STATE: Final = "AttemptCreationPending"

TASK_WAITING_STATES: Final = frozenset(
    {"TaskAttemptCreationPending", "TaskAttemptCreationRequested", "TaskAttemptPreparing"}
)
TASK_RUNNING_STATE: Final = "TaskAttemptRunning"
TASK_COMPLETING_STATES: Final = frozenset(
    {
        "TaskAttemptDeletionPending",
        "TaskAttemptDeletionRequested",
        "TaskAttemptDeleting",
        "TaskAttemptCompleted",
    }
)
TASK_ATTEMPT_COMPLETED_STATE: Final = "TaskAttemptCompleted"
TASK_COMPLETED_STATE: Final = "TaskCompleted"

# Exit codes FrameworkController records when a user stopped the job (-210) or its attempt was force
# completed by a stop (-220).
USER_STOP_EXIT_CODES: Final = frozenset({-210, -220})

_CLASS_BY_PRIORITY: Final[Mapping[int, str]] = {value: name for name, value in PRIORITY_BY_CLASS.items()}


# ---- state mapping -----------------------------------------------------------------------------------


def _completing_state(exit_code: int | None) -> str:
    # Between the end of an attempt and the next one (or the final state), only a stop shows.
    return "STOPPING" if exit_code in USER_STOP_EXIT_CODES else "RUNNING"


def attempt_state(fc_state: str, exit_code: int | None) -> str:
    """The state of the current attempt: as public_state, but a completed attempt shows its own result."""
    if fc_state == FRAMEWORK_ATTEMPT_COMPLETED_STATE:
        return _final_state(exit_code)
    return public_state(fc_state, exit_code)


def task_state(fc_state: str, exit_code: int | None) -> str:
    """OpenPAI's task state for a FrameworkController task state."""
    if fc_state in TASK_WAITING_STATES:
        return "WAITING"
    if fc_state == TASK_RUNNING_STATE:
        return "RUNNING"
    if fc_state in TASK_COMPLETING_STATES:
        return _completing_state(exit_code)
    if fc_state == TASK_COMPLETED_STATE:
        return _final_state(exit_code)
    return "UNKNOWN"


def task_attempt_state(fc_state: str, exit_code: int | None) -> str:
    if fc_state == TASK_ATTEMPT_COMPLETED_STATE:
        return _final_state(exit_code)
    return task_state(fc_state, exit_code)


def priority_name(priority: int) -> str:
    """The HiveD priority class of a numeric priority, or the number itself when it is not a class."""
    return _CLASS_BY_PRIORITY.get(priority, str(priority))


def debug_id(job_key: str) -> str:
    # OpenPAI names the framework md5(<user>~<job>) and reports that name as debugId.
    return hashlib.md5(job_key.encode("utf-8"), usedforsecurity=False).hexdigest()


def container_log_url(job_key: str, job_attempt_id: int, task_role: str, index: int) -> str:
    """The (relative) logs route of one task, as OpenPAI reports it in containerLog."""
    return (
        f"/api/v2/jobs/{job_key}/attempts/{job_attempt_id}"
        f"/taskRoles/{task_role}/taskIndex/{index}/attempts/0/logs"
    )


# ---- JobSummary --------------------------------------------------------------------------------------


def job_summary(doc: Mapping[str, Any]) -> dict[str, Any]:
    """OpenPAI's JobSummary of one read-model document.

    Reads the stored dicts directly instead of validating them into models: the list endpoint builds
    thousands of summaries and never needs the per-task part of the snapshot.
    """
    spec: Mapping[str, Any] = doc["spec"]
    snapshot: Mapping[str, Any] | None = doc.get("snapshot")
    roles: list[Mapping[str, Any]] = spec["task_roles"]
    job_key: str = spec["job_key"]
    if snapshot is None:
        state, sub_state = "WAITING", INITIAL_FRAMEWORK_STATE
        snapshot = {}
    else:
        sub_state = snapshot["state"]
        state = public_state(sub_state, snapshot.get("exit_code"))
    retries: int = snapshot.get("retries", 0)
    accountable: int = snapshot.get("accountable_retries", 0)
    return {
        "debugId": debug_id(job_key),
        "name": spec["name"],
        "username": spec["user"],
        "state": state,
        "subState": sub_state,
        "executionType": doc.get("execution_type", "START"),
        "tags": list(doc.get("tags", [])),
        "retries": retries,
        "retryDetails": {"user": accountable, "platform": retries - accountable, "resource": 0},
        "retryDelayTime": 0,
        "submissionTime": doc.get("submitted_at", spec["submitted_at"]),
        "createdTime": snapshot.get("created_at"),
        "launchedTime": snapshot.get("launched_at"),
        "completedTime": snapshot.get("completed_at"),
        "appExitCode": snapshot.get("exit_code"),
        "virtualCluster": spec["virtual_cluster"],
        "totalGpuNumber": sum(role["gpu"] * role["instances"] for role in roles),
        "totalTaskNumber": sum(role["instances"] for role in roles),
        "totalTaskRoleNumber": len(roles),
        "jobPriority": priority_name(spec["priority"]),
    }


# ---- JobDetail ---------------------------------------------------------------------------------------


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def _task_status(
    job_key: str, role: str, index: int, job_attempt_id: int | None, task: TaskSnapshot | None
) -> dict[str, Any]:
    # Stable across attempts, like the position of the task in the job.
    task_uid = _md5(f"{job_key}/{role}/{index}")
    if task is None:
        # Not reported by the orchestrator yet: the task waits for its attempt to be created.
        return {
            "taskIndex": index,
            "taskUid": task_uid,
            "taskState": "WAITING",
            "containerId": None,
            "containerIp": None,
            "containerNodeName": None,
            "containerPorts": {},
            "containerGpus": None,
            "containerLog": None,
            "containerExitCode": None,
            "containerExitSpec": None,
            "containerExitDiagnostics": None,
            "retries": 0,
            "accountableRetries": 0,
            "createdTime": None,
            "launchedTime": None,
            "completedTime": None,
            "attemptId": None,
            "attemptState": "WAITING",
            "currentAttemptCreatedTime": None,
            "currentAttemptLaunchedTime": None,
            "currentAttemptCompletedTime": None,
        }
    attempt = job_attempt_id if job_attempt_id is not None else 0
    return {
        "taskIndex": index,
        "taskUid": task_uid,
        "taskState": task_state(task.state, task.exit_code),
        # One container per task attempt once it is placed; OpenPAI reports the pod's UID here.
        "containerId": (
            _md5(f"{job_key}/{attempt}/{role}/{index}/{task.attempt_id}") if task.node is not None else None
        ),
        "containerIp": task.host_ip,
        "containerNodeName": task.node,
        "containerPorts": {},
        "containerGpus": list(task.gpus) if task.gpus else None,
        "containerLog": container_log_url(job_key, attempt, role, index),
        "containerExitCode": task.exit_code,
        "containerExitSpec": None,
        "containerExitDiagnostics": task.exit_diagnostics,
        # The read model keeps only the task's attempt id: every earlier attempt was a retry.
        "retries": task.attempt_id,
        "accountableRetries": task.attempt_id,
        "createdTime": task.created_at,
        "launchedTime": task.launched_at,
        "completedTime": task.completed_at,
        "attemptId": task.attempt_id,
        "attemptState": task_attempt_state(task.state, task.exit_code),
        "currentAttemptCreatedTime": task.created_at,
        "currentAttemptLaunchedTime": task.launched_at,
        "currentAttemptCompletedTime": task.completed_at,
    }


def _job_status(
    spec: JobSpec, snapshot: FrameworkSnapshot | None, doc: Mapping[str, Any], trigger: TaskSnapshot | None
) -> dict[str, Any]:
    submitted_at = doc.get("submitted_at", spec.submitted_at)
    execution_type = doc.get("execution_type", "START")
    if snapshot is None:
        return {
            "username": spec.user,
            "state": "WAITING",
            "subState": INITIAL_FRAMEWORK_STATE,
            "executionType": execution_type,
            "retries": 0,
            "retryDetails": {"user": 0, "platform": 0, "resource": 0},
            "retryDelayTime": 0,
            "submissionTime": submitted_at,
            "createdTime": None,
            "launchedTime": None,
            "completedTime": None,
            "attemptId": None,
            "attemptState": "WAITING",
            "appId": None,
            "appProgress": 0,
            "appTrackingUrl": "",
            "appCreatedTime": None,
            "appLaunchedTime": None,
            "appCompletedTime": None,
            "appExitCode": None,
            "appExitSpec": None,
            "appExitDiagnostics": None,
            "appExitMessages": {"container": None, "runtime": None, "launcher": None},
            "appExitTriggerMessage": None,
            "appExitTriggerTaskRoleName": None,
            "appExitTriggerTaskIndex": None,
            "appExitType": None,
            "virtualCluster": spec.virtual_cluster,
        }
    return {
        "username": spec.user,
        "state": public_state(snapshot.state, snapshot.exit_code),
        "subState": snapshot.state,
        "executionType": execution_type,
        "retries": snapshot.retries,
        "retryDetails": {
            "user": snapshot.accountable_retries,
            "platform": snapshot.retries - snapshot.accountable_retries,
            "resource": 0,
        },
        "retryDelayTime": 0,
        "submissionTime": submitted_at,
        "createdTime": snapshot.created_at,
        "launchedTime": snapshot.launched_at,
        "completedTime": snapshot.completed_at,
        "attemptId": snapshot.attempt_id,
        "attemptState": attempt_state(snapshot.state, snapshot.exit_code),
        "appId": f"{debug_id(spec.job_key)}-{snapshot.attempt_id}",
        # 1 once the attempt has a completion status (OpenPAI: completionStatus ? 1 : 0).
        "appProgress": 1
        if snapshot.state in FRAMEWORK_COMPLETING_STATES or snapshot.state == FRAMEWORK_COMPLETED_STATE
        else 0,
        "appTrackingUrl": "",
        "appCreatedTime": snapshot.attempt_created_at,
        "appLaunchedTime": snapshot.attempt_launched_at,
        "appCompletedTime": snapshot.attempt_completed_at,
        "appExitCode": snapshot.exit_code,
        "appExitSpec": None,
        "appExitDiagnostics": snapshot.exit_diagnostics,
        "appExitMessages": {"container": None, "runtime": None, "launcher": snapshot.exit_diagnostics},
        "appExitTriggerMessage": trigger.exit_diagnostics if trigger is not None else None,
        "appExitTriggerTaskRoleName": snapshot.trigger_task_role,
        "appExitTriggerTaskIndex": snapshot.trigger_task_index,
        "appExitType": snapshot.exit_type,
        "virtualCluster": spec.virtual_cluster,
    }


def job_detail(doc: Mapping[str, Any]) -> dict[str, Any]:
    """OpenPAI's JobDetail of one read-model document: one task status per instance of each task role."""
    spec = JobSpec.model_validate(doc["spec"])
    raw_snapshot = doc.get("snapshot")
    snapshot = FrameworkSnapshot.model_validate(raw_snapshot) if raw_snapshot is not None else None
    tasks: dict[tuple[str, int], TaskSnapshot] = (
        {(task.task_role, task.index): task for task in snapshot.tasks} if snapshot is not None else {}
    )
    trigger = None
    if snapshot is not None and snapshot.trigger_task_role is not None:
        trigger = tasks.get((snapshot.trigger_task_role, snapshot.trigger_task_index or 0))
    job_attempt_id = snapshot.attempt_id if snapshot is not None else None
    status = _job_status(spec, snapshot, doc, trigger)
    # Beyond OpenPAI: why a waiting job waits, as long as the reason is about its current attempt.
    pending = doc.get("pending")
    if status["state"] == "WAITING" and pending and pending.get("attempt_id") == (job_attempt_id or 0):
        status["pendingReason"] = pending.get("reason")
        status["pendingPosition"] = pending.get("position")
    # HiveD's view of the gang; lazily preempted means it runs on as opportunistic work.
    lazy = doc.get("downgraded") or {}
    lazy_now = bool(lazy) and lazy.get("attempt_id") == (job_attempt_id or 0)
    hived = {
        "affinityGroupName": spec.job_key,
        "lazyPreempted": lazy_now,
        "lazyPreemptionStatus": {"preemptor": lazy.get("preemptor")} if lazy_now else None,
    }
    return {
        "debugId": debug_id(spec.job_key),
        "name": spec.name,
        "tags": list(doc.get("tags", [])),
        "jobPriority": priority_name(spec.priority),
        "jobStatus": status,
        "taskRoles": {
            role.name: {
                "taskRoleStatus": {"name": role.name},
                "taskStatuses": [
                    {
                        **_task_status(spec.job_key, role.name, i, job_attempt_id, tasks.get((role.name, i))),
                        "hived": hived,
                    }
                    for i in range(role.instances)
                ],
            }
            for role in spec.task_roles
        },
    }
