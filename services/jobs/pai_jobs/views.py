"""OpenPAI's response shapes (JobSummary, JobDetail), built from the jobs read model.

Pure: no I/O. The read model document of one job is
``{"_id": job_key, "spec": JobSpec dump, "snapshot": FrameworkSnapshot dump | None, "tags": [...],
"execution_type": "START" | "STOP", "submitted_at": ms}``; the snapshot is None until the orchestrator
first reports the framework, and the views show the job's first attempt waiting meanwhile (as OpenPAI
does from the moment it accepts a job).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, Final

from pai_common.contract.states import final_state as _final_state
from pai_common.contract.states import public_state
from pai_common.contract.types import (
    FrameworkSnapshot,
    JobAttemptRecord,
    JobSpec,
    TaskAttemptRecord,
    TaskSnapshot,
)
from pai_jobs import dependencies, elastic, preemption
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


def retry_details(snapshot: Mapping[str, Any]) -> dict[str, int]:
    """OpenPAI's retryDetails: retries split by cause.

    The orchestrator splits them (user, platform, resource); a snapshot that does not (all three zero while
    there were retries) is split as OpenPAI does: accountable ones are the user's, the rest the platform's.
    """
    retries: int = snapshot.get("retries", 0)
    user: int = snapshot.get("user_retries", 0)
    platform: int = snapshot.get("platform_retries", 0)
    resource: int = snapshot.get("resource_retries", 0)
    if user + platform + resource == retries and retries > 0:
        return {"user": user, "platform": platform, "resource": resource}
    accountable: int = snapshot.get("accountable_retries", 0)
    return {"user": accountable, "platform": retries - accountable, "resource": 0}


def retry_delay_ms(snapshot: Mapping[str, Any]) -> int:
    """How long the next attempt waits after the last one ended (0 when no retry is waiting)."""
    retry_at = snapshot.get("retry_at")
    completed = snapshot.get("attempt_completed_at")
    if retry_at is None or completed is None:
        return 0
    return max(0, int(retry_at) - int(completed))


def execution_type(doc: Mapping[str, Any], snapshot: Mapping[str, Any] | None) -> str:
    """STOP once the jobs service recorded a stop request or the orchestrator reports one."""
    if doc.get("execution_type") == "STOP" or (snapshot or {}).get("execution_type") == "STOP":
        return "STOP"
    return "START"


def container_ports(ports: Mapping[str, list[int]]) -> dict[str, str]:
    """OpenPAI's containerPorts: {label: "p1,p2"}."""
    return {label: ",".join(str(port) for port in numbers) for label, numbers in ports.items()}


def exit_messages(snapshot: FrameworkSnapshot) -> dict[str, Any]:
    """appExitMessages as the job attempts show it: `runtime` is the runtime's analysis as an object."""
    if snapshot.exit_messages is not None:
        return {"container": None, "runtime": None, "launcher": None, **snapshot.exit_messages}
    return {"container": None, "runtime": None, "launcher": snapshot.exit_diagnostics}


def detail_exit_messages(snapshot: FrameworkSnapshot) -> dict[str, Any]:
    """appExitMessages as the job detail shows it: OpenPAI types every message there a string or null, so
    the runtime's analysis is given as its JSON text."""
    messages = exit_messages(snapshot)
    runtime = messages.get("runtime")
    if runtime is not None and not isinstance(runtime, str):
        messages["runtime"] = json.dumps(runtime, sort_keys=True)
    return messages


def exit_diagnostics(snapshot: FrameworkSnapshot) -> dict[str, Any] | None:
    """A job attempt's exitDiagnostics, OpenPAI's object: a summary, the runtime's analysis, the
    launcher's message. None while the attempt has no outcome."""
    if snapshot.exit_code is None and snapshot.exit_diagnostics is None:
        return None
    messages = exit_messages(snapshot)
    runtime = messages.get("runtime")
    return {
        "diagnosticsSummary": snapshot.exit_diagnostics or messages.get("launcher") or "",
        "runtime": {"exitCode": snapshot.exit_code, **runtime} if isinstance(runtime, dict) else None,
        "launcher": messages.get("launcher") or "",
    }


def container_gpus(gpus: list[int]) -> int | None:
    """OpenPAI's containerGpus: the task's GPU indexes as a bit mask (GPU i sets bit i); null without GPUs."""
    return sum(1 << index for index in set(gpus)) if gpus else None


def debug_id(job_key: str) -> str:
    # OpenPAI names the framework md5(<user>~<job>) and reports that name as debugId.
    return hashlib.md5(job_key.encode("utf-8"), usedforsecurity=False).hexdigest()


def container_log_url(
    job_key: str, job_attempt_id: int, task_role: str, index: int, task_attempt_id: int = 0
) -> str:
    """The (relative) logs route of one task attempt, as OpenPAI reports it in containerLog."""
    return (
        f"/api/v2/jobs/{job_key}/attempts/{job_attempt_id}"
        f"/taskRoles/{task_role}/taskIndex/{index}/attempts/{task_attempt_id}/logs"
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
    return {
        "debugId": debug_id(job_key),
        "name": spec["name"],
        "username": spec["user"],
        "state": state,
        "subState": sub_state,
        "executionType": execution_type(doc, snapshot),
        "tags": list(doc.get("tags", [])),
        "retries": retries,
        "retryDetails": retry_details(snapshot),
        "retryDelayTime": retry_delay_ms(snapshot),
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
    job_key: str, role: str, index: int, job_attempt_id: int, task: TaskSnapshot | None
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
            "containerLog": container_log_url(job_key, job_attempt_id, role, index),
            "containerExitCode": None,
            "containerExitSpec": None,
            "containerExitDiagnostics": None,
            "retries": 0,
            "accountableRetries": 0,
            "createdTime": None,
            "launchedTime": None,
            "completedTime": None,
            "attemptId": 0,
            "attemptState": "WAITING",
            "currentAttemptCreatedTime": None,
            "currentAttemptLaunchedTime": None,
            "currentAttemptCompletedTime": None,
        }
    attempt = job_attempt_id
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
        "containerPorts": container_ports(task.ports),
        "containerGpus": container_gpus(task.gpus),
        "containerLog": container_log_url(job_key, attempt, role, index, task.attempt_id),
        "containerExitCode": task.exit_code,
        "containerExitSpec": task.exit_spec,
        "containerExitDiagnostics": task.exit_diagnostics,
        # Without retry counts from the orchestrator, every earlier attempt of the task was a retry.
        "retries": task.retries or task.attempt_id,
        "accountableRetries": task.accountable_retries if task.retries else task.attempt_id,
        "createdTime": task.created_at,
        "launchedTime": task.launched_at,
        "completedTime": task.completed_at,
        "attemptId": task.attempt_id,
        "attemptState": task_attempt_state(task.state, task.exit_code),
        "currentAttemptCreatedTime": task.created_at,
        "currentAttemptLaunchedTime": task.launched_at,
        "currentAttemptCompletedTime": task.completed_at,
        **_device_extras(task),
    }


def _device_extras(task: TaskSnapshot) -> dict[str, Any]:
    """Beyond OpenPAI, only when they apply: the task's FPGAs, and how its node holds its GPU share."""
    out: dict[str, Any] = {}
    if task.fpgas:
        out["containerFpgas"] = list(task.fpgas)
    if task.gpu_share is not None:
        share = task.gpu_share
        out["gpuShare"] = {
            "milli": share.milli,
            "memoryMB": share.memory_mb,
            "enforced": share.enforced,
            "note": share.note,
        }
    return out


def _job_status(
    spec: JobSpec, snapshot: FrameworkSnapshot, doc: Mapping[str, Any], trigger: TaskSnapshot | None
) -> dict[str, Any]:
    submitted_at = doc.get("submitted_at", spec.submitted_at)
    raw_snapshot = snapshot.model_dump(mode="json")
    executed = execution_type(doc, raw_snapshot)
    return {
        "username": spec.user,
        "state": public_state(snapshot.state, snapshot.exit_code),
        "subState": snapshot.state,
        "executionType": executed,
        "retries": snapshot.retries,
        "retryDetails": retry_details(raw_snapshot),
        "retryDelayTime": retry_delay_ms(raw_snapshot),
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
        "appExitSpec": snapshot.exit_spec,
        "appExitDiagnostics": snapshot.exit_diagnostics,
        "appExitMessages": detail_exit_messages(snapshot),
        "appExitTriggerMessage": trigger.exit_diagnostics if trigger is not None else None,
        "appExitTriggerTaskRoleName": snapshot.trigger_task_role,
        "appExitTriggerTaskIndex": snapshot.trigger_task_index,
        "appExitType": snapshot.exit_type,
        "virtualCluster": spec.virtual_cluster,
    }


def _snapshot_of(doc: Mapping[str, Any]) -> FrameworkSnapshot | None:
    raw = doc.get("snapshot")
    return FrameworkSnapshot.model_validate(raw) if raw is not None else None


def initial_snapshot(job_key: str) -> FrameworkSnapshot:
    """The framework of a job the orchestrator has not reported yet: its first attempt (0), waiting to be
    created. OpenPAI shows that attempt as soon as the job is accepted."""
    return FrameworkSnapshot(job_key=job_key, version=0, state=INITIAL_FRAMEWORK_STATE, attempt_id=0)


def _current_snapshot(doc: Mapping[str, Any]) -> FrameworkSnapshot:
    return _snapshot_of(doc) or initial_snapshot(str(doc["spec"]["job_key"]))


def _attempt_as_snapshot(current: FrameworkSnapshot, record: JobAttemptRecord) -> FrameworkSnapshot:
    """An earlier attempt seen as the framework was when it ended, for OpenPAI's `/attempts/{id}`."""
    return current.model_copy(
        update={
            "state": record.state,
            "attempt_id": record.attempt_id,
            "attempt_created_at": record.created_at,
            "attempt_launched_at": record.launched_at,
            "attempt_completed_at": record.completed_at,
            "exit_code": record.exit_code,
            "exit_type": record.exit_type,
            "exit_spec": record.exit_spec,
            "exit_diagnostics": record.exit_diagnostics,
            "exit_messages": None,
            "trigger_task_role": record.trigger_task_role,
            "trigger_task_index": record.trigger_task_index,
            "tasks": record.tasks,
            "retry_at": None,
            "attempts": [],
            "preemption": record.preemption,
            "resume": record.resume,
        }
    )


def attempt_snapshot(doc: Mapping[str, Any], attempt_id: int) -> FrameworkSnapshot | None:
    """The framework as of job attempt `attempt_id` (the current one or an earlier one); None if unknown."""
    snapshot = _current_snapshot(doc)
    if attempt_id == snapshot.attempt_id:
        return snapshot
    for record in snapshot.attempts:
        if record.attempt_id == attempt_id:
            return _attempt_as_snapshot(snapshot, record)
    return None


def job_detail(doc: Mapping[str, Any], snapshot_override: FrameworkSnapshot | None = None) -> dict[str, Any]:
    """OpenPAI's JobDetail of one read-model document: one task status per instance of each task role.

    With `snapshot_override` (see attempt_snapshot), the detail of that attempt instead of the current one.
    """
    spec = JobSpec.model_validate(doc["spec"])
    snapshot = snapshot_override if snapshot_override is not None else _current_snapshot(doc)
    tasks = {(task.task_role, task.index): task for task in snapshot.tasks}
    trigger = None
    if snapshot.trigger_task_role is not None:
        trigger = tasks.get((snapshot.trigger_task_role, snapshot.trigger_task_index or 0))
    job_attempt_id = snapshot.attempt_id
    status = _job_status(spec, snapshot, doc, trigger)
    # Beyond OpenPAI: why a waiting job waits, as long as the reason is about its current attempt. The stored
    # place is only the one when the cause was last published: no place here; the shell puts in the
    # scheduler's current reason and place (live_wait.py).
    pending = doc.get("pending")
    if status["state"] == "WAITING" and pending and pending.get("attempt_id") == job_attempt_id:
        status["pendingReason"] = pending.get("reason")
        status["pendingPosition"] = None
    # Beyond OpenPAI: the current attempt's preemption notice, and whether it resumes a preempted one.
    status.update(preemption.view(snapshot))
    if spec.elastic:
        # Beyond OpenPAI: each elastic role's limits and how many of its tasks the gang holds now.
        status["elastic"] = elastic.view(spec, snapshot)
    if spec.dependencies:
        # Beyond OpenPAI: extras.dependencies as followed so far, and why the job has not started.
        status["dependencies"] = dependencies.view(spec, snapshot)
        waiting = dependencies.pending_reason(status["dependencies"], snapshot.state if snapshot else None)
        if waiting is not None:
            status["pendingReason"], status["pendingPosition"] = waiting, None
    # HiveD's view of the gang; lazily preempted means it runs on as opportunistic work.
    lazy = doc.get("downgraded") or {}
    lazy_now = bool(lazy) and lazy.get("attempt_id") == job_attempt_id
    hived = {
        "affinityGroupName": spec.job_key,
        # OpenPAI types both as objects (HiveD's annotations), null when the gang is not lazily preempted.
        "lazyPreempted": {"preemptor": lazy.get("preemptor")} if lazy_now else None,
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


# ---- JobAttempt --------------------------------------------------------------------------------------


def _attempt_task_statuses(
    spec: JobSpec, attempt_id: int, tasks: list[TaskSnapshot]
) -> dict[str, dict[str, Any]]:
    by_key = {(task.task_role, task.index): task for task in tasks}
    out: dict[str, dict[str, Any]] = {}
    for role in spec.task_roles:
        statuses = []
        for i in range(role.instances):
            task = by_key.get((role.name, i))
            status: dict[str, Any] = {
                "taskIndex": i,
                "taskState": task_state(task.state, task.exit_code) if task else "WAITING",
                "containerId": (
                    _md5(f"{spec.job_key}/{attempt_id}/{role.name}/{i}/{task.attempt_id}")
                    if task is not None and task.node is not None
                    else None
                ),
                "containerGpus": container_gpus(task.gpus) if task else None,
                "containerLog": container_log_url(
                    spec.job_key, attempt_id, role.name, i, task.attempt_id if task else 0
                ),
                "containerExitCode": task.exit_code if task else None,
            }
            # OpenPAI's job attempts leave out the IP of a task not placed yet (a string when present).
            if task is not None and task.host_ip:
                status["containerIp"] = task.host_ip
            statuses.append(status)
        out[role.name] = {"taskRoleStatus": {"name": role.name}, "taskStatuses": statuses}
    return out


def _job_attempt(
    spec: JobSpec, snapshot: FrameworkSnapshot, latest: bool, tasks_omitted: int = 0
) -> dict[str, Any]:
    """``tasks_omitted``: the attempt's task records were left out of its history (a big job retried often,
    to keep its events within the bus's limit): its task roles show no task statuses rather than tasks
    that seem to wait, and ``tasksOmitted`` says how many are missing."""
    state = attempt_state(snapshot.state, snapshot.exit_code)
    exit_spec = snapshot.exit_spec or {}
    return {
        "jobName": spec.name,
        "frameworkName": debug_id(spec.job_key),
        "uid": f"{debug_id(spec.job_key)}-{snapshot.attempt_id}",
        "userName": spec.user,
        "state": state,
        "originState": snapshot.state,
        "attemptIndex": snapshot.attempt_id,
        "jobStartedTime": snapshot.created_at,
        "attemptStartedTime": snapshot.attempt_created_at,
        "attemptCompletedTime": snapshot.attempt_completed_at,
        "exitCode": snapshot.exit_code,
        "exitPhrase": exit_spec.get("phrase"),
        "exitType": snapshot.exit_type,
        "exitDiagnostics": exit_diagnostics(snapshot),
        "appExitTriggerMessage": None,
        "appExitTriggerTaskRoleName": snapshot.trigger_task_role,
        "appExitTriggerTaskIndex": snapshot.trigger_task_index,
        "appExitSpec": snapshot.exit_spec,
        "appExitDiagnostics": snapshot.exit_diagnostics,
        "appExitMessages": exit_messages(snapshot),
        "totalGpuNumber": sum(role.gpu * role.instances for role in spec.task_roles),
        "totalTaskNumber": sum(role.instances for role in spec.task_roles),
        "totalTaskRoleNumber": len(spec.task_roles),
        "jobPriority": priority_name(spec.priority),
        "taskRoles": (
            {r.name: {"taskRoleStatus": {"name": r.name}, "taskStatuses": []} for r in spec.task_roles}
            if tasks_omitted
            else _attempt_task_statuses(spec, snapshot.attempt_id, snapshot.tasks)
        ),
        "isLatest": latest,
        # Beyond OpenPAI, only when they apply: the attempt's preemption notice, its resume, the tasks left
        # out of it.
        **preemption.view(snapshot),
        **({"tasksOmitted": tasks_omitted} if tasks_omitted else {}),
    }


def job_attempts(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """OpenPAI's `/job-attempts`: the current attempt first (isLatest), then the earlier ones ascending.

    A job the orchestrator has not reported yet has its first attempt, waiting.
    """
    spec = JobSpec.model_validate(doc["spec"])
    snapshot = _current_snapshot(doc)
    earlier = sorted(snapshot.attempts, key=lambda record: record.attempt_id)
    return [
        _job_attempt(spec, snapshot, latest=True),
        *(
            _job_attempt(spec, _attempt_as_snapshot(snapshot, record), False, record.tasks_omitted)
            for record in earlier
            if record.attempt_id != snapshot.attempt_id
        ),
    ]


def job_attempt(doc: Mapping[str, Any], attempt_id: int) -> dict[str, Any] | None:
    """OpenPAI's `/job-attempts/{id}`: that attempt, reported with isLatest true as OpenPAI does."""
    spec = JobSpec.model_validate(doc["spec"])
    current = _current_snapshot(doc)  # read once: an earlier attempt's record says what it left out
    if attempt_id == current.attempt_id:
        return _job_attempt(spec, current, latest=True)
    for record in current.attempts:
        if record.attempt_id == attempt_id:
            return _job_attempt(spec, _attempt_as_snapshot(current, record), True, record.tasks_omitted)
    return None


# ---- task attempts -----------------------------------------------------------------------------------


def _task_attempt(
    job_key: str, job_attempt_id: int, role: str, index: int, record: TaskAttemptRecord, lazy: dict[str, Any]
) -> dict[str, Any]:
    return {
        "attemptId": record.attempt_id,
        "attemptState": task_attempt_state(record.state, record.exit_code),
        "currentAttemptCreatedTime": record.created_at,
        "currentAttemptLaunchedTime": record.launched_at,
        "currentAttemptCompletedTime": record.completed_at,
        "containerId": (
            _md5(f"{job_key}/{job_attempt_id}/{role}/{index}/{record.attempt_id}") if record.node else None
        ),
        "containerIp": record.host_ip,
        "containerNodeName": record.node,
        "containerPorts": container_ports(record.ports),
        "containerGpus": container_gpus(record.gpus),
        "containerLog": container_log_url(job_key, job_attempt_id, role, index, record.attempt_id),
        "containerExitCode": record.exit_code,
        "containerExitSpec": record.exit_spec,
        "containerExitDiagnostics": record.exit_diagnostics,
        "hived": lazy,
    }


def task_attempts(
    doc: Mapping[str, Any], job_attempt_id: int, task_role: str, index: int
) -> dict[str, Any] | None:
    """OpenPAI's task-attempts TaskStatus: one task of one job attempt with every attempt of it, the
    current one first, then the earlier ones newest first. None when the job attempt or the task does not
    exist (a task not reported yet has no attempt)."""
    spec = JobSpec.model_validate(doc["spec"])
    roles = {role.name: role for role in spec.task_roles}
    if task_role not in roles or not 0 <= index < roles[task_role].instances:
        return None
    snapshot = attempt_snapshot(doc, job_attempt_id)
    if snapshot is None:
        return None
    task = next((t for t in snapshot.tasks if (t.task_role, t.index) == (task_role, index)), None)
    records: list[TaskAttemptRecord] = []
    if task is not None:
        current = TaskAttemptRecord.model_validate(
            task.model_dump(include=set(TaskAttemptRecord.model_fields))
        )
        records = [current, *sorted(task.history, key=lambda r: r.attempt_id, reverse=True)]
    hived = {"affinityGroupName": spec.job_key, "lazyPreempted": None, "lazyPreemptionStatus": None}
    return {
        "username": spec.user,
        "jobName": spec.name,
        "jobAttemptId": job_attempt_id,
        "taskRoleName": task_role,
        "taskIndex": index,
        "taskUid": _md5(f"{spec.job_key}/{task_role}/{index}"),
        "taskState": task_state(task.state, task.exit_code) if task else "WAITING",
        "retries": (task.retries or task.attempt_id) if task else 0,
        "accountableRetries": (task.accountable_retries if task.retries else task.attempt_id) if task else 0,
        "createdTime": task.created_at if task else None,
        "launchedTime": task.launched_at if task else None,
        "completedTime": task.completed_at if task else None,
        "attempts": [
            _task_attempt(spec.job_key, job_attempt_id, task_role, index, record, hived) for record in records
        ],
    }


# ---- live tasks (OpenPAI's pod list) ------------------------------------------------------------------


def live_task_records(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One record per task of a job that has not finished: every instance of every role, where it runs
    (nothing yet for a task waiting to be placed) and its FrameworkController state."""
    spec = JobSpec.model_validate(doc["spec"])
    snapshot = _current_snapshot(doc)
    tasks = {(task.task_role, task.index): task for task in snapshot.tasks}
    out: list[dict[str, Any]] = []
    for role in spec.task_roles:
        for index in range(role.instances):
            task = tasks.get((role.name, index))
            out.append(
                {
                    "job_key": spec.job_key,
                    "user": spec.user,
                    "job_name": spec.name,
                    "virtual_cluster": spec.virtual_cluster,
                    "debug_id": debug_id(spec.job_key),
                    "job_attempt_id": snapshot.attempt_id,
                    "task_role": role.name,
                    "index": index,
                    "task_uid": _md5(f"{spec.job_key}/{role.name}/{index}"),
                    "state": task.state if task else "TaskAttemptCreationPending",
                    "attempt_id": task.attempt_id if task else 0,
                    "node": task.node if task else None,
                    "host_ip": task.host_ip if task else None,
                    "gpus": list(task.gpus) if task else [],
                    "gpu": role.gpu,
                    "cpu": role.cpu,
                    "memory_mb": role.memory_mb,
                    "image": role.image,
                    "created_at": task.created_at if task else None,
                    "launched_at": task.launched_at if task else None,
                    "exit_code": task.exit_code if task else None,
                }
            )
    return out
