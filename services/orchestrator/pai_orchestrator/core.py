"""The framework state machine: a pure, deterministic core with an injectable clock (``now`` in ms).

Every function takes the current framework and one event and returns the next framework with the
effects to carry out (events to publish, commands to send). An event that does not apply to the
current attempt or state (a duplicate, a late message of an earlier attempt) returns no change, so
the shell may deliver events at least once and in any order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

from pydantic import BaseModel, Field

from pai_common.contract.base import Command, Event
from pai_common.contract.commands import KillTask, LaunchTask
from pai_common.contract.events import (
    FrameworkChanged,
    JobAttemptCompleted,
    JobCompleted,
    SchedulingAllocated,
    SchedulingRejected,
    SchedulingRequested,
    TaskDiagnosed,
    TaskRunning,
)
from pai_common.contract.states import final_state
from pai_common.contract.types import (
    FrameworkSnapshot,
    JobSpec,
    JobState,
    Placement,
    PodRequest,
    TaskSnapshot,
)
from pai_orchestrator import states as S
from pai_orchestrator.environment import task_environment


class Task(BaseModel):
    task_role: str
    index: int
    state: str = S.TASK_CREATION_PENDING
    node: str | None = None
    host_ip: str | None = None
    gpus: list[int] = Field(default_factory=list)
    gpu_milli: int = 0
    gpu_memory_mb: int = 0
    exit_code: int | None = None
    exit_diagnostics: str | None = None
    created_at: int | None = None
    launched_at: int | None = None
    completed_at: int | None = None

    @property
    def key(self) -> str:
        return task_key(self.task_role, self.index)


class Framework(BaseModel):
    """One job as FrameworkController sees it; stored as one document."""

    spec: JobSpec
    version: int = 0
    state: str = S.ATTEMPT_CREATION_REQUESTED
    attempt_id: int = 0
    retries: int = 0
    accountable_retries: int = 0
    created_at: int | None = None
    launched_at: int | None = None
    completed_at: int | None = None
    attempt_created_at: int | None = None
    attempt_launched_at: int | None = None
    attempt_completed_at: int | None = None
    exit_code: int | None = None
    exit_type: str | None = None
    exit_diagnostics: str | None = None
    trigger_task_role: str | None = None
    trigger_task_index: int | None = None
    tasks: dict[str, Task] = Field(default_factory=dict)

    @property
    def job_key(self) -> str:
        return self.spec.job_key

    def snapshot(self) -> FrameworkSnapshot:
        return FrameworkSnapshot(
            job_key=self.job_key,
            version=self.version,
            state=self.state,
            attempt_id=self.attempt_id,
            retries=self.retries,
            accountable_retries=self.accountable_retries,
            created_at=self.created_at,
            launched_at=self.launched_at,
            completed_at=self.completed_at,
            attempt_created_at=self.attempt_created_at,
            attempt_launched_at=self.attempt_launched_at,
            attempt_completed_at=self.attempt_completed_at,
            exit_code=self.exit_code,
            exit_type=self.exit_type,
            exit_diagnostics=self.exit_diagnostics,
            trigger_task_role=self.trigger_task_role,
            trigger_task_index=self.trigger_task_index,
            tasks=[
                TaskSnapshot(
                    task_role=t.task_role,
                    index=t.index,
                    state=t.state,
                    attempt_id=self.attempt_id,
                    node=t.node,
                    host_ip=t.host_ip,
                    gpus=t.gpus,
                    exit_code=t.exit_code,
                    exit_diagnostics=t.exit_diagnostics,
                    created_at=t.created_at,
                    launched_at=t.launched_at,
                    completed_at=t.completed_at,
                )
                for t in self.tasks.values()
            ],
        )


@dataclass(frozen=True)
class SendCommand:
    command: Command
    target: str


@dataclass
class Transition:
    """The framework after an event (None: the event changed nothing) and what to do about it."""

    framework: Framework | None
    events: list[Event] = field(default_factory=list)
    commands: list[SendCommand] = field(default_factory=list)
    reason: str = ""

    @property
    def changed(self) -> bool:
        return self.framework is not None


def no_change() -> Transition:
    """A fresh "nothing happened" each time, so that no caller can add to a shared one."""
    return Transition(None)


def task_key(role: str, index: int) -> str:
    return f"{role}/{index}"


# ---- transitions ---------------------------------------------------------------------------------------


def on_submitted(spec: JobSpec, now: int) -> Transition:
    fw = Framework(spec=spec, created_at=now)
    out = Transition(fw, reason="job submitted")
    _start_attempt(fw, now, out)
    return _finish(out)


def on_allocated(fw: Framework, event: SchedulingAllocated, now: int) -> Transition:
    if event.attempt_id != fw.attempt_id or fw.state != S.ATTEMPT_CREATION_REQUESTED:
        return no_change()
    fw = fw.model_copy(deep=True)
    placements = {task_key(p.task_role, p.index): p for p in event.placements}
    if set(placements) != set(fw.tasks):
        # The scheduler answered for another gang shape; nothing sensible to launch.
        return no_change()
    fw.state = S.ATTEMPT_PREPARING
    out = Transition(fw, reason="gang allocated")
    for task in fw.tasks.values():
        p = placements[task.key]
        task.state = S.TASK_PREPARING
        task.node, task.host_ip, task.gpus = p.node, p.host_ip or None, list(p.gpus)
        task.gpu_milli, task.gpu_memory_mb = p.gpu_milli, p.gpu_memory_mb
    for task in fw.tasks.values():
        out.commands.append(_launch(fw, task, list(placements.values())))
    return _finish(out)


def on_rejected(fw: Framework, event: SchedulingRejected, now: int) -> Transition:
    if event.attempt_id != fw.attempt_id or fw.state != S.ATTEMPT_CREATION_REQUESTED:
        return no_change()
    fw = fw.model_copy(deep=True)
    out = Transition(fw, reason="gang can never be placed")
    fw.exit_type = "USER_FAILURE"
    fw.exit_diagnostics = event.reason
    _complete_attempt(fw, S.EXIT_POD_CREATION_PERMANENT, now, out, retry_allowed=False)
    return _finish(out)


def on_preempted(fw: Framework, attempt_id: int, preemptor: str, now: int) -> Transition:
    """A higher-priority gang needs this attempt's cells: stop it and retry later, uncounted."""
    why = f"preempted by the higher-priority job {preemptor}"
    return _stopped_by_platform(fw, attempt_id, S.EXIT_PREEMPTED, why, now)


def on_cells_lost(fw: Framework, attempt_id: int, reason: str, now: int) -> Transition:
    """The cluster no longer has the cells the attempt holds: stop it and retry, uncounted."""
    return _stopped_by_platform(fw, attempt_id, S.EXIT_NODE_LOST, reason, now)


def _stopped_by_platform(fw: Framework, attempt_id: int, exit_code: int, why: str, now: int) -> Transition:
    if attempt_id != fw.attempt_id or fw.state not in (S.ATTEMPT_PREPARING, S.ATTEMPT_RUNNING):
        return no_change()
    fw = fw.model_copy(deep=True)
    out = Transition(fw, reason=why)
    fw.exit_type = "PLATFORM_FAILURE"
    fw.exit_diagnostics = why
    _complete_attempt(fw, exit_code, now, out, retry_allowed=True, failure="Transient")
    return _finish(out)


def on_task_running(fw: Framework, event: TaskRunning, now: int) -> Transition:
    task = fw.tasks.get(task_key(event.task_role, event.index))
    if event.attempt_id != fw.attempt_id or task is None or task.state != S.TASK_PREPARING:
        return no_change()
    fw = fw.model_copy(deep=True)
    task = fw.tasks[task.key]
    task.state = S.TASK_RUNNING
    task.launched_at = event.started_at
    task.host_ip = event.host_ip
    out = Transition(fw, reason=f"task {task.key} running")
    _attempt_started(fw, event.started_at)
    return _finish(out)


def on_task_diagnosed(fw: Framework, event: TaskDiagnosed, now: int) -> Transition:
    task = fw.tasks.get(task_key(event.task_role, event.index))
    if (
        event.attempt_id != fw.attempt_id
        or task is None
        or task.state not in (S.TASK_PREPARING, S.TASK_RUNNING)
        or fw.state not in (S.ATTEMPT_PREPARING, S.ATTEMPT_RUNNING)
    ):
        return no_change()
    fw = fw.model_copy(deep=True)
    task = fw.tasks[task.key]
    task.state = S.TASK_COMPLETED
    task.exit_code = event.exit_code
    task.exit_diagnostics = event.message
    task.completed_at = event.finished_at
    out = Transition(fw, reason=f"task {task.key} completed with {event.exit_code}")
    # A task can end before its running report arrives; the attempt did run.
    _attempt_started(fw, event.finished_at)

    verdict = _completion_verdict(fw, task)
    if verdict is None:
        return _finish(out)
    succeeded, trigger = verdict
    if trigger is not None:
        fw.trigger_task_role, fw.trigger_task_index = trigger.task_role, trigger.index
    if succeeded:
        fw.exit_type, fw.exit_diagnostics = "USER_SUCCESS", None
        _complete_attempt(fw, S.EXIT_SUCCEEDED, now, out, retry_allowed=False)
    else:
        assert trigger is not None and trigger.exit_code is not None
        fw.exit_type = _exit_type(event.failure_type)
        fw.exit_diagnostics = event.message
        _complete_attempt(fw, trigger.exit_code, now, out, retry_allowed=True, failure=event.failure_type)
    return _finish(out)


# ---- helpers -------------------------------------------------------------------------------------------


def _attempt_started(fw: Framework, at: int) -> None:
    """The first task of a preparing attempt is running (or already done): the attempt runs."""
    if fw.state == S.ATTEMPT_PREPARING:
        fw.state = S.ATTEMPT_RUNNING
        fw.attempt_launched_at = fw.attempt_launched_at or at
        fw.launched_at = fw.launched_at or at


def _start_attempt(fw: Framework, now: int, out: Transition) -> None:
    fw.state = S.ATTEMPT_CREATION_REQUESTED
    fw.attempt_created_at = now
    fw.attempt_launched_at = None
    fw.attempt_completed_at = None
    fw.trigger_task_role = fw.trigger_task_index = None
    fw.tasks = {
        task_key(role.name, i): Task(task_role=role.name, index=i, created_at=now)
        for role in fw.spec.task_roles
        for i in range(role.instances)
    }
    out.events.append(
        SchedulingRequested(
            job_key=fw.job_key,
            attempt_id=fw.attempt_id,
            virtual_cluster=fw.spec.virtual_cluster,
            priority=fw.spec.priority,
            lazy_preemption=fw.spec.lazy_preemption,
            pods=[
                PodRequest(
                    task_role=r.name,
                    index=i,
                    gpu=r.gpu,
                    cpu=r.cpu,
                    memory_mb=r.memory_mb,
                    sku_types=r.sku_types,
                    pinned_cell=r.pinned_cell,
                    gpu_milli=r.gpu_milli,
                    gpu_memory_mb=r.gpu_memory_mb,
                    infiniband=r.infiniband,
                )
                for r in fw.spec.task_roles
                for i in range(r.instances)
            ],
        )
    )


def _completion_verdict(fw: Framework, trigger: Task) -> tuple[bool, Task | None] | None:
    """FrameworkController's completion policy, evaluated after ``trigger`` completed.

    Per task role: the attempt fails once minFailedInstances tasks failed, succeeds once
    minSucceededInstances tasks succeeded; otherwise it succeeds when every task has completed.
    """
    role = next(r for r in fw.spec.task_roles if r.name == trigger.task_role)
    done = [t for t in fw.tasks.values() if t.task_role == role.name and t.state == S.TASK_COMPLETED]
    failed = sum(1 for t in done if t.exit_code != 0)
    succeeded = len(done) - failed
    if (
        trigger.exit_code != 0
        and role.min_failed_instances is not None
        and failed >= role.min_failed_instances
    ):
        return False, trigger
    if trigger.exit_code == 0 and role.min_succeeded_instances is not None:
        if succeeded >= role.min_succeeded_instances:
            return True, trigger
    if all(t.state == S.TASK_COMPLETED for t in fw.tasks.values()):
        return True, None
    return None


def _complete_attempt(
    fw: Framework,
    exit_code: int,
    now: int,
    out: Transition,
    *,
    retry_allowed: bool,
    failure: str = "Unknown",
) -> None:
    fw.exit_code = exit_code
    fw.attempt_completed_at = now
    for task in fw.tasks.values():
        if task.state in (S.TASK_PREPARING, S.TASK_RUNNING) and task.node:
            out.commands.append(
                SendCommand(
                    KillTask(
                        job_key=fw.job_key,
                        attempt_id=fw.attempt_id,
                        task_role=task.task_role,
                        index=task.index,
                        node=task.node,
                        reason="attempt completed",
                    ),
                    task.node,
                )
            )
        if task.state != S.TASK_COMPLETED:
            task.state = S.TASK_COMPLETED
            task.exit_code = S.EXIT_ATTEMPT_COMPLETION
            task.completed_at = now
    out.events.append(JobAttemptCompleted(job_key=fw.job_key, attempt_id=fw.attempt_id, exit_code=exit_code))

    # FrameworkController's retry policy: transient failures always retry and are not counted; permanent
    # never retry; unknown retry while accountable retries are below the limit.
    if retry_allowed and exit_code != 0 and failure != "Permanent":
        transient = failure == "Transient"
        if transient or fw.accountable_retries < fw.spec.job_retry_count:
            fw.retries += 1
            if not transient:
                fw.accountable_retries += 1
            fw.attempt_id += 1
            fw.exit_code = fw.exit_type = fw.exit_diagnostics = None
            _start_attempt(fw, now, out)
            return

    fw.state = S.COMPLETED
    fw.completed_at = now
    out.events.append(
        JobCompleted(
            job_key=fw.job_key,
            state=cast(JobState, final_state(exit_code)),
            exit_code=exit_code,
            completed_at=now,
        )
    )


def _exit_type(failure: str) -> str:
    return {"Transient": "PLATFORM_FAILURE", "Permanent": "USER_FAILURE"}.get(failure, "UNKNOWN_FAILURE")


def _launch(fw: Framework, task: Task, gang: list[Placement]) -> SendCommand:
    role = next(r for r in fw.spec.task_roles if r.name == task.task_role)
    assert task.node is not None
    return SendCommand(
        LaunchTask(
            job_key=fw.job_key,
            attempt_id=fw.attempt_id,
            task_role=task.task_role,
            index=task.index,
            node=task.node,
            gpus=task.gpus,
            gpu_milli=task.gpu_milli,
            gpu_memory_mb=task.gpu_memory_mb,
            entrypoint=role.entrypoint,
            env=task_environment(fw.spec, task.task_role, task.index, gang),
        ),
        task.node,
    )


def _finish(out: Transition) -> Transition:
    """Every change bumps the version and publishes the snapshot the read models copy."""
    assert out.framework is not None
    out.framework.version += 1
    out.events.append(FrameworkChanged(snapshot=out.framework.snapshot()))
    return out
