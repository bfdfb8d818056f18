"""The framework state machine: a pure, deterministic core with an injectable clock (``now`` in ms).

Every function takes the current framework and one event and returns the next framework with the
effects to carry out (events to publish, commands to send). An event that does not apply to the
current attempt or state (a duplicate, a late message of an earlier attempt) returns no change, so
the shell may deliver events at least once and in any order. Timers (gang allocation timeout, retry
back-off) are deadlines stored in the framework; ``on_tick`` fires the ones that are due.

Every state change is appended to the framework's bounded transition log with its reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Literal, cast

from pydantic import BaseModel, Field

from pai_common.contract.base import Command, Event
from pai_common.contract.commands import KillTask, LaunchTask, UpdateMembership
from pai_common.contract.events import (
    FrameworkChanged,
    JobAttemptCompleted,
    JobCompleted,
    JobDependencyResolved,
    JobElasticResized,
    JobPreemptionNoticed,
    JobStopRequested,
    JobTaskCompleted,
    SchedulingAllocated,
    SchedulingRejected,
    SchedulingRequested,
    TaskDiagnosed,
    TaskRunning,
)
from pai_common.contract.states import final_state
from pai_common.contract.types import (
    DependencyStatus,
    EpochMs,
    ExitSpecEntry,
    FrameworkSnapshot,
    GpuShareStatus,
    JobAttemptRecord,
    JobSpec,
    JobState,
    Placement,
    PodRequest,
    PreemptionNotice,
    TaskAttemptRecord,
    TaskRoleSpec,
    TaskSnapshot,
)
from pai_orchestrator import completion_policy, dependencies, elastic, exit_codes, retry_policy
from pai_orchestrator import states as S
from pai_orchestrator.environment import task_environment
from pai_orchestrator.policy import DEFAULT_POLICY, Policy
from pai_orchestrator.ports import assign_ports
from pai_orchestrator.retry_policy import FailureClass, RetryKind
from pai_orchestrator.snapshot_budget import SNAPSHOT_BUDGET_BYTES, fit_snapshot, without_tasks


class Task(BaseModel):
    task_role: str
    index: int
    state: str = S.TASK_CREATION_PENDING
    task_attempt_id: int = 0
    node: str | None = None
    host_ip: str | None = None
    gpus: list[int] = Field(default_factory=list)
    gpu_milli: int = 0
    gpu_memory_mb: int = 0
    fpgas: list[int] = Field(default_factory=list)
    # How the node holds the task's GPU share (reported when it started).
    gpu_share: GpuShareStatus | None = None
    ports: dict[str, list[int]] = Field(default_factory=dict)
    exit_code: int | None = None
    exit_spec: ExitSpecEntry | None = None
    exit_diagnostics: str | None = None
    created_at: int | None = None
    launched_at: int | None = None
    completed_at: int | None = None
    retries: int = 0
    accountable_retries: int = 0
    history: list[TaskAttemptRecord] = Field(default_factory=list)

    @property
    def key(self) -> str:
        return task_key(self.task_role, self.index)

    def snapshot(self) -> TaskSnapshot:
        return TaskSnapshot(
            task_role=self.task_role,
            index=self.index,
            state=self.state,
            attempt_id=self.task_attempt_id,
            node=self.node,
            host_ip=self.host_ip,
            gpus=self.gpus,
            fpgas=self.fpgas,
            gpu_share=self.gpu_share,
            ports=self.ports,
            exit_code=self.exit_code,
            exit_spec=self.exit_spec,
            exit_diagnostics=self.exit_diagnostics,
            created_at=self.created_at,
            launched_at=self.launched_at,
            completed_at=self.completed_at,
            retries=self.retries,
            accountable_retries=self.accountable_retries,
            history=self.history,
        )


class TransitionRecord(BaseModel):
    """One entry of a framework's transition log."""

    at: EpochMs
    attempt_id: int
    from_state: str
    to_state: str
    reason: str


class Framework(BaseModel):
    """One job as FrameworkController sees it; stored as one document."""

    spec: JobSpec
    version: int = 0
    state: str = S.ATTEMPT_CREATION_PENDING
    execution_type: Literal["START", "STOP"] = "START"
    attempt_id: int = 0
    retries: int = 0
    accountable_retries: int = 0  # the user retries: the ones jobRetryCount limits
    user_retries: int = 0
    platform_retries: int = 0
    resource_retries: int = 0
    created_at: int | None = None
    launched_at: int | None = None
    completed_at: int | None = None
    attempt_created_at: int | None = None
    attempt_launched_at: int | None = None
    attempt_completed_at: int | None = None
    exit_code: int | None = None
    exit_type: str | None = None
    exit_spec: ExitSpecEntry | None = None
    exit_diagnostics: str | None = None
    exit_messages: dict[str, Any] | None = None
    trigger_task_role: str | None = None
    trigger_task_index: int | None = None
    tasks: dict[str, Task] = Field(default_factory=dict)
    # The placed gang (with its ports), which every task's environment describes.
    gang: list[Placement] = Field(default_factory=list)
    # Timers: when the gang must be placed by, and when a backed-off retry starts.
    gang_deadline: int | None = None
    retry_at: int | None = None
    retry_kind: RetryKind | None = None
    # While the attempt's stopped tasks finish (AttemptDeletionRequested): how the attempt ended, whether
    # it may be retried, whether its cells are to be released, and until when its tasks are waited for.
    ending_failure: str | None = None
    ending_retry_allowed: bool = False
    ending_release: bool = True
    deletion_deadline: int | None = None
    attempts: list[JobAttemptRecord] = Field(default_factory=list)
    log: list[TransitionRecord] = Field(default_factory=list)
    # extras.dependencies as followed so far: the first attempt starts once every one is satisfied.
    dependencies: list[DependencyStatus] = Field(default_factory=list)
    # The current attempt's preemption notice; whether it resumes (PAI_RESUME=1), which every attempt does
    # once a running attempt of the job was preempted (``resumable``).
    preemption: PreemptionNotice | None = None
    resume: bool = False
    resumable: bool = False
    # extras.elastic: the version of the gang's membership (grows with each change the tasks are told of),
    # and until when the growth tasks being shrunk away are waited for.
    membership_version: int = 0
    shrink_deadline: int | None = None

    # Every wall-clock deadline ``due_at`` may answer: what a jump of the wall clock moves (shift_timers).
    TIMERS: ClassVar[tuple[str, ...]] = ("gang_deadline", "retry_at", "deletion_deadline", "shrink_deadline")

    @property
    def job_key(self) -> str:
        return self.spec.job_key

    @property
    def waiting_for_dependencies(self) -> bool:
        """No attempt asked for cells yet: the job waits for jobs it depends on."""
        return self.state == S.ATTEMPT_CREATION_PENDING and bool(dependencies.waiting_for(self.dependencies))

    def due_at(self) -> int | None:
        """When ``on_tick`` has something to do for this framework (None: nothing is pending)."""
        if self.state == S.ATTEMPT_CREATION_REQUESTED:
            return self.gang_deadline
        if self.state == S.ATTEMPT_COMPLETED:
            return self.retry_at
        if self.state == S.ATTEMPT_DELETION_REQUESTED:
            return self.deletion_deadline
        if self.state in (S.ATTEMPT_PREPARING, S.ATTEMPT_RUNNING):
            return self.shrink_deadline
        return None

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
            tasks=[t.snapshot() for t in self.tasks.values()],
            execution_type=self.execution_type,
            user_retries=self.user_retries,
            platform_retries=self.platform_retries,
            resource_retries=self.resource_retries,
            retry_at=self.retry_at if self.state == S.ATTEMPT_COMPLETED else None,
            exit_spec=self.exit_spec,
            exit_messages=self.exit_messages,
            attempts=self.attempts,
            dependencies=self.dependencies,
            preemption=self.preemption,
            resume=self.resume,
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
    policy: Policy = DEFAULT_POLICY
    # What the shell should log as a warning (the core does no I/O).
    warnings: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return self.framework is not None


def no_change() -> Transition:
    """A fresh "nothing happened" each time, so that no caller can add to a shared one."""
    return Transition(None)


def task_key(role: str, index: int) -> str:
    return f"{role}/{index}"


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended, as the retry policy and the read model need it."""

    exit_code: int
    failure: FailureClass
    exit_type: str
    diagnostics: str | None
    exit_spec: ExitSpecEntry | None = None
    runtime_message: dict[str, Any] | None = None
    launcher_message: str | None = None
    grace_period_s: float | None = None  # None: the policy's kill grace
    notice: PreemptionNotice | None = None  # a preemption: the tasks are told the deadline first


# ---- transitions ---------------------------------------------------------------------------------------


def on_submitted(
    spec: JobSpec,
    now: int,
    policy: Policy = DEFAULT_POLICY,
    stop: JobStopRequested | None = None,
    ended: Mapping[str, JobState] | None = None,
) -> Transition:
    """A new framework; ``stop`` is a stop request that arrived before the job did; ``ended``: the final
    states of the job's dependencies that completed already."""
    fw = Framework(spec=spec, created_at=now, dependencies=dependencies.initial(spec, ended or {}))
    out = Transition(fw, policy=policy)
    _move(fw, out, now, S.ATTEMPT_CREATION_PENDING, "job submitted")
    if stop is not None:
        fw.execution_type = "STOP"
        fw.attempt_created_at = now
        fw.tasks = _fresh_tasks(fw, now)
        # Nothing was asked of the scheduler, so there is nothing to release.
        _complete_attempt(fw, out, now, _stop_outcome(stop), retry_allowed=False, release=False)
        return _finish(out)
    for dep in fw.dependencies:
        if dep.ended is not None:
            out.events.append(_resolved(fw, dep))
    _start_when_ready(fw, out, now)
    return _finish(out)


def on_dependency_ended(
    fw: Framework, dependency: str, state: JobState, now: int, policy: Policy = DEFAULT_POLICY
) -> Transition:
    """A job this one waits for completed: start once every dependency is satisfied, fail if it never can
    be. Anything else (not a dependency, already recorded, the job no longer waiting) changes nothing."""
    if not fw.waiting_for_dependencies or fw.execution_type == "STOP":
        return no_change()
    found = dependencies.record(fw.dependencies, dependency, state)
    if found is None:
        return no_change()
    fw = _copy(fw)
    out = Transition(fw, policy=policy)
    fw.dependencies, changed = found
    out.events.append(_resolved(fw, changed))
    _start_when_ready(fw, out, now)
    return _finish(out)


def _resolved(fw: Framework, dep: DependencyStatus) -> JobDependencyResolved:
    assert dep.ended is not None
    return JobDependencyResolved(
        job_key=fw.job_key,
        dependency=dep.job_key,
        on=dep.on,
        dependency_state=dep.ended,
        satisfied=dep.satisfied,
    )


def _start_when_ready(fw: Framework, out: Transition, now: int) -> None:
    """The first attempt starts once every dependency is satisfied; one that never can be fails the job
    (-240) before anything was asked of the scheduler."""
    bad = dependencies.first_unsatisfiable(fw.dependencies)
    if bad is not None:
        why = dependencies.failure_reason(bad)
        fw.attempt_created_at = now
        fw.tasks = _fresh_tasks(fw, now)
        outcome = Outcome(
            exit_code=S.EXIT_DEPENDENCY_UNSATISFIED,
            failure="Permanent",
            exit_type="USER_FAILURE",
            diagnostics=why,
            launcher_message=why,
        )
        _complete_attempt(fw, out, now, outcome, retry_allowed=False, release=False)
        return
    if dependencies.waiting_for(fw.dependencies):
        fw.tasks = fw.tasks or _fresh_tasks(fw, now)
        out.reason = f"{out.reason}; {dependencies.describe_wait(fw.dependencies)}"
        return
    _start_attempt(fw, now, out)


def on_allocated(
    fw: Framework, event: SchedulingAllocated, now: int, policy: Policy = DEFAULT_POLICY
) -> Transition:
    if not fw.spec.gang_allocation:
        return _allocated_in_part(fw, event, now, policy)
    if fw.spec.elastic:
        return _allocated_elastic(fw, event, now, policy)
    if event.attempt_id != fw.attempt_id or fw.state != S.ATTEMPT_CREATION_REQUESTED:
        return no_change()
    placements = {task_key(p.task_role, p.index): p for p in event.placements}
    if set(placements) != set(fw.tasks) or len(placements) != len(event.placements):
        # The scheduler answered for another gang shape; nothing sensible to launch.
        return no_change()
    fw = _copy(fw)
    out = Transition(fw, policy=policy)
    gang = assign_ports(fw.job_key, fw.attempt_id, fw.spec, list(event.placements))
    fw.gang = gang
    fw.gang_deadline = None
    by_key = {task_key(p.task_role, p.index): p for p in gang}
    for task in fw.tasks.values():
        p = by_key[task.key]
        task.state = S.TASK_PREPARING
        task.node, task.host_ip, task.gpus = p.node, p.host_ip or None, list(p.gpus)
        task.gpu_milli, task.gpu_memory_mb, task.fpgas = p.gpu_milli, p.gpu_memory_mb, list(p.fpgas)
        task.ports = {label: list(ports) for label, ports in p.ports.items()}
    for task in fw.tasks.values():
        out.commands.append(_launch(fw, task))
    _move(fw, out, now, S.ATTEMPT_PREPARING, "gang allocated: every task placed, launching all of them")
    return _finish(out)


def _allocated_in_part(fw: Framework, event: SchedulingAllocated, now: int, policy: Policy) -> Transition:
    """Gang allocation off: tasks are placed one by one as capacity allows; each is launched as soon as it
    is placed (its environment names the peers placed so far), while the others wait."""
    if event.attempt_id != fw.attempt_id or fw.state not in S.LIVE_ATTEMPT:
        return no_change()
    waiting = {
        task_key(p.task_role, p.index): p
        for p in event.placements
        if (t := fw.tasks.get(task_key(p.task_role, p.index))) is not None
        and t.state == S.TASK_CREATION_PENDING
        and t.node is None
    }
    if not waiting:
        return no_change()  # a repeated or stale allocation
    fw = _copy(fw)
    out = Transition(fw, policy=policy)
    placed = assign_ports(fw.job_key, fw.attempt_id, fw.spec, list(waiting.values()), fw.gang)
    fw.gang = [*fw.gang, *placed]
    fw.gang_deadline = None
    for p in placed:
        task = fw.tasks[task_key(p.task_role, p.index)]
        task.state = S.TASK_PREPARING
        task.node, task.host_ip, task.gpus = p.node, p.host_ip or None, list(p.gpus)
        task.gpu_milli, task.gpu_memory_mb, task.fpgas = p.gpu_milli, p.gpu_memory_mb, list(p.fpgas)
        task.ports = {label: list(ports) for label, ports in p.ports.items()}
        out.commands.append(_launch(fw, task))
    keys = ", ".join(sorted(waiting))
    if fw.state == S.ATTEMPT_CREATION_REQUESTED:
        _move(fw, out, now, S.ATTEMPT_PREPARING, f"task(s) {keys} placed (one by one), launching them")
    else:
        out.reason = f"task(s) {keys} placed (one by one), launching them"
    return _finish(out)


def _allocated_elastic(fw: Framework, event: SchedulingAllocated, now: int, policy: Policy) -> Transition:
    """An elastic job: first its gang (every task but the growth ones), launched as any gang, after which
    its growth tasks are asked for; then growth tasks one by one as idle cells appear, each launched at
    once while the running tasks are told the new membership."""
    if event.attempt_id != fw.attempt_id or fw.state not in S.LIVE_ATTEMPT:
        return no_change()
    keys = {task_key(p.task_role, p.index) for p in event.placements}
    growth = {k for k, t in fw.tasks.items() if elastic.is_growth(fw.spec, t.task_role, t.index)}
    if fw.state == S.ATTEMPT_CREATION_REQUESTED:
        if keys != set(fw.tasks) - growth or len(keys) != len(event.placements):
            return no_change()  # not this attempt's gang
    elif not keys <= growth:
        return no_change()  # a repeated allocation of the gang
    else:
        fw = _copy(fw)
        fw.membership_version += 1  # the joining tasks start with the new membership
    out = _allocated_in_part(fw, event, now, policy)
    grown = out.framework
    if grown is None:
        return out
    if not keys <= growth:
        # The gang is placed: now its growth tasks may grow into idle cells.
        pending = [grown.tasks[k] for k in sorted(growth)]
        if pending:
            out.events.insert(0, _growth_request(grown, pending))
        return out
    names = sorted(keys)
    reason = f"task(s) {', '.join(names)} placed in idle cells"
    out.events.insert(0, _membership_changed(grown, out, "grew", names, reason, joined=keys))
    return out


def _growth_request(fw: Framework, tasks: list[Task]) -> SchedulingRequested:
    """The second request of an elastic attempt: its growth tasks, each placed on its own when idle
    cells allow (the scheduler makes them opportunistic work)."""
    roles = {r.name: r for r in fw.spec.task_roles}
    return SchedulingRequested(
        job_key=fw.job_key,
        attempt_id=fw.attempt_id,
        virtual_cluster=fw.spec.virtual_cluster,
        priority=fw.spec.priority,
        lazy_preemption=fw.spec.lazy_preemption,
        pods=[_pod_request(roles[t.task_role], t.index, growth=True) for t in tasks],
    )


def _membership_changed(
    fw: Framework,
    out: Transition,
    change: Literal["grew", "shrunk"],
    tasks: list[str],
    reason: str,
    joined: set[str] | None = None,
) -> JobElasticResized:
    """A new membership (``membership_version`` already moved on): every live task of the attempt (but those
    that just joined, launched with it) is told; returns the event that reports it."""
    for task in fw.tasks.values():
        if task.state in S.LIVE_TASK and task.node and task.key not in (joined or set()):
            out.commands.append(
                SendCommand(
                    UpdateMembership(
                        job_key=fw.job_key,
                        attempt_id=fw.attempt_id,
                        task_role=task.task_role,
                        index=task.index,
                        task_attempt_id=task.task_attempt_id,
                        node=task.node,
                        env=_task_env(fw, task),
                        version=fw.membership_version,
                    ),
                    task.node,
                )
            )
    out.reason = f"{out.reason}; gang {change}: {reason}" if out.reason else f"gang {change}: {reason}"
    return elastic.resized(
        fw.job_key, fw.attempt_id, fw.spec, fw.gang, fw.membership_version, change, tasks, reason
    )


def on_rejected(
    fw: Framework, event: SchedulingRejected, now: int, policy: Policy = DEFAULT_POLICY
) -> Transition:
    if event.attempt_id != fw.attempt_id or fw.state != S.ATTEMPT_CREATION_REQUESTED:
        return no_change()
    fw = _copy(fw)
    out = Transition(fw, policy=policy)
    outcome = Outcome(
        exit_code=S.EXIT_POD_CREATION_PERMANENT,
        failure="Permanent",
        exit_type="USER_FAILURE",
        diagnostics=event.reason,
        launcher_message=event.reason,
    )
    _complete_attempt(fw, out, now, outcome, retry_allowed=False)
    return _finish(out)


def preemption_grace(spec: JobSpec, policy: Policy, cap_s: float | None) -> float:
    """The job's own grace (extras.preemption.graceSeconds, else the platform's), at most the VC's cap."""
    asked = spec.preemption_grace_s if spec.preemption_grace_s is not None else policy.preempt_grace_s
    return asked if cap_s is None else min(asked, cap_s)


def on_preempted(
    fw: Framework,
    attempt_id: int,
    preemptor: str,
    now: int,
    policy: Policy = DEFAULT_POLICY,
    grace_cap_s: float | None = None,
    tasks: list[tuple[str, int]] | None = None,
) -> Transition:
    """Another gang needs this attempt's cells: tell its tasks (SIGTERM and the notice file with the
    deadline), kill what is left at the deadline, and queue again, uncounted; the next attempt gets
    PAI_RESUME=1. ``grace_cap_s``: the most the victim's VC allows (None: no cap). ``tasks``: the victims
    are these tasks alone (None: the attempt); when they are all growth tasks of an elastic job, the gang
    shrinks instead (``_shrink``)."""
    grace = preemption_grace(fw.spec, policy, grace_cap_s)
    if tasks and fw.spec.elastic and all(elastic.is_growth(fw.spec, r, i) for r, i in tasks):
        return _shrink(fw, attempt_id, sorted(set(tasks)), preemptor, now, policy, grace)
    notice = PreemptionNotice(
        preemptor=preemptor, noticed_at=now, grace_seconds=grace, deadline=now + int(grace * 1000)
    )
    why = f"preempted by {preemptor}: its tasks were given {grace:g} s of notice to stop"
    return _stopped_by_platform(fw, attempt_id, S.EXIT_PREEMPTED, why, now, policy, grace, notice)


def _shrink(
    fw: Framework,
    attempt_id: int,
    tasks: list[tuple[str, int]],
    preemptor: str,
    now: int,
    policy: Policy,
    grace: float,
) -> Transition:
    """Growth tasks preempted alone: each is told (SIGTERM and the notice file) and, once it exited (or its
    grace and the margin passed), leaves the membership and gives its cells back (``_shrunk``)."""
    if attempt_id != fw.attempt_id or fw.state not in S.LIVE_ATTEMPT:
        return no_change()
    fw = _copy(fw)
    out = Transition(fw, policy=policy)
    deadline = now + int(grace * 1000)
    gone: list[Task] = []
    for role, index in tasks:
        task = fw.tasks.get(task_key(role, index))
        if task is None:
            continue
        if task.state in S.LIVE_TASK and task.node:
            task.state = S.TASK_DELETION_REQUESTED
            why = f"the elastic gang shrinks: preempted by {preemptor}"
            out.commands.append(_kill(fw, task, why, grace, deadline, preemptor))
            wait_until = deadline + policy.stop_confirm_margin_ms
            fw.shrink_deadline = max(fw.shrink_deadline or wait_until, wait_until)
        elif task.state == S.TASK_CREATION_PENDING:
            gone.append(task)  # placed, but its allocation did not reach us: nothing runs there
    if not out.commands and not gone:
        return no_change()
    out.reason = f"growth task(s) preempted by {preemptor}: shrinking the gang"
    if gone:
        _shrunk(fw, out, now, gone, f"preempted by {preemptor} before it started")
    return _finish(out)


def _shrunk(fw: Framework, out: Transition, now: int, tasks: list[Task], why: str) -> None:
    """Growth tasks that stopped to shrink the gang: they leave the membership, their cells go back (to the
    preemptor), and they are asked for again, each as a new task attempt, to grow back into idle cells."""
    if not any(
        t.state == S.TASK_DELETION_REQUESTED and t.key not in {x.key for x in tasks}
        for t in fw.tasks.values()
    ):
        fw.shrink_deadline = None
    if not tasks:
        return
    keys = {t.key for t in tasks}
    left = sorted(k for k in keys if any(task_key(p.task_role, p.index) == k for p in fw.gang))
    fw.gang = [p for p in fw.gang if task_key(p.task_role, p.index) not in keys]
    for task in tasks:
        if task.node is not None:
            task.history = [*task.history, _task_record(task, S.TASK_ATTEMPT_COMPLETED)][
                -out.policy.task_history_limit :
            ]
            task.task_attempt_id += 1
        task.state = S.TASK_CREATION_PENDING
        task.node = task.host_ip = task.gpu_share = None
        task.gpus, task.fpgas, task.ports = [], [], {}
        task.gpu_milli = task.gpu_memory_mb = 0
        task.exit_code = task.exit_spec = task.exit_diagnostics = None
        task.created_at, task.launched_at, task.completed_at = now, None, None
        # Released first, then asked for again: the scheduler sees them in this order.
        out.events.append(
            JobTaskCompleted(
                job_key=fw.job_key, attempt_id=fw.attempt_id, task_role=task.task_role, index=task.index
            )
        )
    out.events.append(_growth_request(fw, sorted(tasks, key=lambda t: (t.task_role, t.index))))
    if left:
        fw.membership_version += 1
        out.events.append(_membership_changed(fw, out, "shrunk", left, f"task(s) {', '.join(left)} {why}"))


def on_cells_lost(
    fw: Framework, attempt_id: int, reason: str, now: int, policy: Policy = DEFAULT_POLICY
) -> Transition:
    """The cluster no longer has the cells the attempt holds: stop it and retry, uncounted."""
    return _stopped_by_platform(fw, attempt_id, S.EXIT_NODE_LOST, reason, now, policy, None)


def on_drained(
    fw: Framework, attempt_id: int, reason: str, now: int, policy: Policy = DEFAULT_POLICY
) -> Transition:
    """An admin drains a node the attempt runs on: stop it gracefully (as a preemption) and retry it
    elsewhere, uncounted."""
    return _stopped_by_platform(fw, attempt_id, S.EXIT_PREEMPTED, reason, now, policy, policy.preempt_grace_s)


def _stopped_by_platform(
    fw: Framework,
    attempt_id: int,
    exit_code: int,
    why: str,
    now: int,
    policy: Policy,
    grace: float | None,
    notice: PreemptionNotice | None = None,
) -> Transition:
    # An attempt still waiting for its gang counts too: the scheduler may have placed it, and its
    # allocation be on its way, when it decided to take the cells back.
    if attempt_id != fw.attempt_id or fw.state not in S.LIVE_ATTEMPT:
        return no_change()
    fw = _copy(fw)
    out = Transition(fw, policy=policy)
    outcome = Outcome(
        exit_code=exit_code,
        failure="Transient",
        exit_type="PLATFORM_FAILURE",
        diagnostics=why,
        launcher_message=why,
        grace_period_s=grace,
        notice=notice,
    )
    if notice is not None:
        fw.preemption = notice
        # Its tasks ran (and may have checkpointed): every later attempt resumes.
        fw.resumable = fw.resumable or fw.state == S.ATTEMPT_RUNNING
        out.events.append(JobPreemptionNoticed(job_key=fw.job_key, attempt_id=fw.attempt_id, notice=notice))
    _complete_attempt(fw, out, now, outcome, retry_allowed=True)
    return _finish(out)


def on_stop_requested(
    fw: Framework, event: JobStopRequested, now: int, policy: Policy = DEFAULT_POLICY
) -> Transition:
    """executionType STOP: whatever stage the job is in, stop its tasks and complete it with -210."""
    if fw.state == S.COMPLETED or fw.execution_type == "STOP":
        return no_change()
    fw = _copy(fw)
    fw.execution_type = "STOP"
    out = Transition(fw, policy=policy)
    outcome = _stop_outcome(event)
    if fw.state == S.ATTEMPT_DELETION_REQUESTED:
        # The attempt is ending already: it will not be retried, and unless it had succeeded the job
        # ends as stopped once its tasks are gone.
        fw.ending_retry_allowed = False
        if fw.exit_code != S.EXIT_SUCCEEDED:
            _record_outcome(fw, outcome)
        out.reason = f"{outcome.diagnostics} while the attempt's tasks were stopping"
    elif fw.state == S.ATTEMPT_COMPLETED:
        # Between attempts (a retry backing off): the last attempt released its cells already.
        fw.retry_at = fw.retry_kind = None
        last = f" (its last attempt had exited with {fw.exit_code})" if fw.exit_code is not None else ""
        outcome = replace(outcome, diagnostics=f"{outcome.diagnostics}{last}")
        _record_outcome(fw, outcome)
        _complete_job(fw, out, now, "stopped while its retry was backing off")
    elif fw.state == S.ATTEMPT_CREATION_PENDING:
        # Waiting for its dependencies: the scheduler was never asked, so there is nothing to release.
        fw.attempt_created_at = fw.attempt_created_at or now
        _complete_attempt(fw, out, now, outcome, retry_allowed=False, release=False)
    else:
        _complete_attempt(fw, out, now, outcome, retry_allowed=False)
    return _finish(out)


def on_task_running(
    fw: Framework, event: TaskRunning, now: int, policy: Policy = DEFAULT_POLICY
) -> Transition:
    task = fw.tasks.get(task_key(event.task_role, event.index))
    if (
        event.attempt_id != fw.attempt_id
        or task is None
        or event.task_attempt_id != task.task_attempt_id
        or task.state != S.TASK_PREPARING
        or fw.state not in (S.ATTEMPT_PREPARING, S.ATTEMPT_RUNNING)
    ):
        return no_change()
    fw = _copy(fw)
    out = Transition(fw, policy=policy)
    task = fw.tasks[task.key]
    task.state = S.TASK_RUNNING
    task.launched_at = event.started_at
    task.host_ip = event.host_ip
    task.gpu_share = event.gpu_share
    out.reason = f"task {task.key} running"
    _attempt_started(fw, out, event.started_at, f"task {task.key} is running")
    return _finish(out)


def on_task_diagnosed(
    fw: Framework, event: TaskDiagnosed, now: int, policy: Policy = DEFAULT_POLICY
) -> Transition:
    task = fw.tasks.get(task_key(event.task_role, event.index))
    if event.attempt_id != fw.attempt_id or task is None or event.task_attempt_id != task.task_attempt_id:
        return no_change()
    if fw.state == S.ATTEMPT_DELETION_REQUESTED and task.state == S.TASK_DELETION_REQUESTED:
        return _stop_confirmed(fw, task.key, event, now, policy)
    if fw.state in (S.ATTEMPT_PREPARING, S.ATTEMPT_RUNNING) and task.state == S.TASK_DELETION_REQUESTED:
        # A growth task shrunk away has exited.
        fw = _copy(fw)
        out = Transition(fw, policy=policy)
        out.reason = f"task {task.key} stopped (exit {event.exit_code}) to shrink the gang"
        task = fw.tasks[task.key]
        task.exit_code, task.exit_spec, task.exit_diagnostics = (
            event.exit_code,
            event.exit_spec,
            event.message,
        )
        task.completed_at = event.finished_at
        _shrunk(fw, out, now, [task], "left after its preemption notice")
        return _finish(out)
    if task.state not in S.LIVE_TASK or fw.state not in (S.ATTEMPT_PREPARING, S.ATTEMPT_RUNNING):
        return no_change()
    fw = _copy(fw)
    out = Transition(fw, policy=policy)
    task = fw.tasks[task.key]
    # A task can end before its running report arrives; the attempt did run.
    _attempt_started(fw, out, event.finished_at, f"task {task.key} ended before it was seen running")
    task.exit_code = event.exit_code
    task.exit_spec = event.exit_spec
    task.exit_diagnostics = event.message
    task.completed_at = event.finished_at

    if event.exit_code != 0 and not fw.spec.gang_allocation:
        role = next(r for r in fw.spec.task_roles if r.name == task.task_role)
        decision = retry_policy.task_retry(
            event.failure_type,
            event.exit_code,
            accountable=task.accountable_retries,
            limit=role.task_retry_count,
        )
        if decision.retry:
            _retry_task(fw, task, out, now, decision)
            return _finish(out)

    task.state = S.TASK_COMPLETED
    out.reason = f"task {task.key} completed with {event.exit_code}"
    if not fw.spec.gang_allocation or elastic.is_growth(fw.spec, task.task_role, task.index):
        # Placed on its own: the cells it alone held go back now, for the tasks still waiting.
        out.events.append(
            JobTaskCompleted(
                job_key=fw.job_key,
                attempt_id=fw.attempt_id,
                task_role=task.task_role,
                index=task.index,
            )
        )
    exits = {
        (t.task_role, t.index): (t.exit_code if t.state == S.TASK_COMPLETED else None)
        for t in fw.tasks.values()
        # An elastic job's growth tasks that are not placed are not part of it (yet).
        if not (t.state == S.TASK_CREATION_PENDING and elastic.is_growth(fw.spec, t.task_role, t.index))
    }
    verdict = completion_policy.verdict(fw.spec.task_roles, exits, (task.task_role, task.index))
    if verdict is None:
        return _finish(out)
    if verdict.trigger is not None:
        fw.trigger_task_role, fw.trigger_task_index = verdict.trigger
    if verdict.succeeded:
        outcome = Outcome(
            exit_code=S.EXIT_SUCCEEDED,
            failure="Succeeded",
            exit_type="USER_SUCCESS",
            diagnostics=None,
            exit_spec=exit_codes.exit_spec(S.EXIT_SUCCEEDED),
            launcher_message=verdict.why,
        )
    else:
        runtime: dict[str, Any] | None = None
        if event.explanation or event.matched or event.suggestion:
            runtime = {
                "reason": event.explanation or None,
                "matchedLog": event.matched,
                "solution": [event.suggestion] if event.suggestion else [],
            }
        outcome = Outcome(
            exit_code=event.exit_code,
            failure=event.failure_type,
            exit_type=_exit_type(event),
            diagnostics=event.message,
            exit_spec=event.exit_spec,
            runtime_message=runtime,
            launcher_message=verdict.why,
        )
    _complete_attempt(fw, out, now, outcome, retry_allowed=True, why=verdict.why)
    return _finish(out)


def on_tick(fw: Framework, now: int, policy: Policy = DEFAULT_POLICY) -> Transition:
    """Fire the framework's timer if it is due: a gang allocation timeout, or a backed-off retry."""
    due = fw.due_at()
    if due is None or now < due:
        return no_change()
    fw = _copy(fw)
    out = Transition(fw, policy=policy)
    if fw.state == S.ATTEMPT_DELETION_REQUESTED:
        waiting = sorted(t.key for t in fw.tasks.values() if t.state == S.TASK_DELETION_REQUESTED)
        _finish_attempt(fw, out, now, f"no exit report in time from {', '.join(waiting)}; assumed stopped")
    elif fw.state in (S.ATTEMPT_PREPARING, S.ATTEMPT_RUNNING):
        shrinking = [t for t in fw.tasks.values() if t.state == S.TASK_DELETION_REQUESTED]
        out.reason = "growth task(s) being shrunk away did not report their exit in time; assumed stopped"
        _shrunk(fw, out, now, shrinking, "left (no exit report in time)")
    elif fw.state == S.ATTEMPT_CREATION_REQUESTED:
        created = fw.attempt_created_at if fw.attempt_created_at is not None else now
        limit_s = ((fw.gang_deadline or now) - created) / 1000
        why = (
            f"the gang of {len(fw.tasks)} task(s) could not be placed within the gang allocation timeout"
            f" ({limit_s:g} s; waited {(now - created) / 1000:g} s)"
        )
        outcome = Outcome(
            exit_code=S.EXIT_GANG_ALLOCATION_TIMEOUT,
            failure="Resource",
            exit_type="RESOURCE_ALLOCATION_TIMEOUT",
            diagnostics=why,
            exit_spec=exit_codes.exit_spec(S.EXIT_GANG_ALLOCATION_TIMEOUT),
            launcher_message=why,
        )
        _complete_attempt(fw, out, now, outcome, retry_allowed=True)
    else:
        kind = fw.retry_kind or "platform"
        _begin_retry(fw, out, now, kind, "the retry back-off is over")
    return _finish(out)


def shift_timers(fw: Framework, delta_ms: int, policy: Policy = DEFAULT_POLICY) -> Transition:
    """The wall clock jumped by ``delta_ms`` since the framework's timers were set: move them by as much,
    so that each keeps the time it had left (timer_clock.py says why). Timestamps stay as they were."""
    if delta_ms == 0 or fw.due_at() is None:
        return no_change()
    fw = _copy(fw)
    out = Transition(fw, policy=policy)
    for name in Framework.TIMERS:
        value = getattr(fw, name)
        if value is not None:
            setattr(fw, name, value + delta_ms)
    out.reason = f"the wall clock jumped by {delta_ms / 1000:+g} s: the timers keep the time they had left"
    return _finish(out)


# ---- helpers -------------------------------------------------------------------------------------------


def _copy(fw: Framework) -> Framework:
    """A copy a transition may change. Copy-on-write: the containers a transition changes in place (the
    tasks, the log, the attempts) are copied; what is only ever replaced whole (the spec, placements,
    exit specs, a task's lists) is shared with the input, which stays as it was."""
    return fw.model_copy(
        update={
            "tasks": {k: t.model_copy() for k, t in fw.tasks.items()},
            "log": list(fw.log),
            "attempts": list(fw.attempts),
        }
    )


def _move(fw: Framework, out: Transition, now: int, to: str, reason: str) -> None:
    """Enter a state, logging why; the log keeps the newest entries only."""
    fw.log.append(
        TransitionRecord(at=now, attempt_id=fw.attempt_id, from_state=fw.state, to_state=to, reason=reason)
    )
    del fw.log[: max(0, len(fw.log) - out.policy.transition_log_limit)]
    fw.state = to
    out.reason = f"{out.reason}; {reason}" if out.reason else reason


def _attempt_started(fw: Framework, out: Transition, at: int, reason: str) -> None:
    """The first task of a preparing attempt is running (or already done): the attempt runs."""
    if fw.state == S.ATTEMPT_PREPARING:
        fw.attempt_launched_at = fw.attempt_launched_at or at
        fw.launched_at = fw.launched_at or at
        _move(fw, out, at, S.ATTEMPT_RUNNING, reason)


def _fresh_tasks(fw: Framework, now: int) -> dict[str, Task]:
    return {
        task_key(role.name, i): Task(task_role=role.name, index=i, created_at=now)
        for role in fw.spec.task_roles
        for i in range(role.instances)
    }


def _start_attempt(fw: Framework, now: int, out: Transition) -> None:
    fw.attempt_created_at = now
    fw.attempt_launched_at = None
    fw.attempt_completed_at = None
    fw.exit_code = fw.exit_type = fw.exit_spec = fw.exit_diagnostics = fw.exit_messages = None
    fw.trigger_task_role = fw.trigger_task_index = None
    fw.retry_at = fw.retry_kind = None
    fw.gang = []
    fw.shrink_deadline = None
    fw.preemption = None
    fw.resume = fw.resumable
    timeout = out.policy.gang_allocation_timeout_ms
    fw.gang_deadline = now + timeout if timeout > 0 else None
    fw.tasks = _fresh_tasks(fw, now)
    out.events.append(
        SchedulingRequested(
            job_key=fw.job_key,
            attempt_id=fw.attempt_id,
            virtual_cluster=fw.spec.virtual_cluster,
            priority=fw.spec.priority,
            lazy_preemption=fw.spec.lazy_preemption,
            gang_allocation=fw.spec.gang_allocation,
            # An elastic job's growth tasks are asked for once this gang is placed (_allocated_elastic).
            pods=[
                _pod_request(r, i, growth=False)
                for r in fw.spec.task_roles
                for i in range(r.instances)
                if not elastic.is_growth(fw.spec, r.name, i)
            ],
        )
    )
    _move(fw, out, now, S.ATTEMPT_CREATION_REQUESTED, f"attempt {fw.attempt_id} asks for its gang")


def _pod_request(r: TaskRoleSpec, index: int, growth: bool) -> PodRequest:
    return PodRequest(
        task_role=r.name,
        index=index,
        gpu=r.gpu,
        cpu=r.cpu,
        memory_mb=r.memory_mb,
        sku_types=r.sku_types,
        pinned_cell=r.pinned_cell,
        gpu_milli=r.gpu_milli,
        gpu_memory_mb=r.gpu_memory_mb,
        infiniband=r.infiniband,
        growth=growth,
    )


def _retry_task(
    fw: Framework, task: Task, out: Transition, now: int, decision: retry_policy.RetryDecision
) -> None:
    """Gang allocation off: the task alone starts again, on the cells its attempt holds."""
    task.history = [*task.history, _task_record(task, S.TASK_ATTEMPT_COMPLETED)][
        -out.policy.task_history_limit :
    ]
    task.retries += 1
    if decision.kind == "user":
        task.accountable_retries += 1
    task.task_attempt_id += 1
    task.state = S.TASK_PREPARING
    task.exit_code = task.exit_spec = task.exit_diagnostics = None
    task.created_at, task.launched_at, task.completed_at = now, None, None
    out.commands.append(_launch(fw, task))
    out.reason = f"task {task.key} retried as task attempt {task.task_attempt_id}: {decision.why}"


def _task_record(task: Task, state: str) -> TaskAttemptRecord:
    return TaskAttemptRecord(
        attempt_id=task.task_attempt_id,
        state=state,
        node=task.node,
        host_ip=task.host_ip,
        ports=task.ports,
        gpus=task.gpus,
        exit_code=task.exit_code,
        exit_spec=task.exit_spec,
        exit_diagnostics=task.exit_diagnostics,
        created_at=task.created_at,
        launched_at=task.launched_at,
        completed_at=task.completed_at,
    )


def _stop_outcome(stop: JobStopRequested) -> Outcome:
    why = f"stop requested by {stop.requested_by}"
    return Outcome(
        exit_code=S.EXIT_STOP_REQUESTED,
        failure="Permanent",
        exit_type="USER_STOP",
        diagnostics=why,
        exit_spec=exit_codes.exit_spec(S.EXIT_STOP_REQUESTED),
        launcher_message=why,
    )


def _record_outcome(fw: Framework, outcome: Outcome) -> None:
    fw.exit_code = outcome.exit_code
    fw.exit_type = outcome.exit_type
    fw.exit_spec = outcome.exit_spec or exit_codes.exit_spec(outcome.exit_code)
    fw.exit_diagnostics = outcome.diagnostics
    fw.exit_messages = {
        "container": None,
        "runtime": outcome.runtime_message,
        "launcher": outcome.launcher_message,
    }


def _complete_attempt(
    fw: Framework,
    out: Transition,
    now: int,
    outcome: Outcome,
    *,
    retry_allowed: bool,
    why: str | None = None,
    release: bool = True,
) -> None:
    """The attempt's outcome is decided: stop what still runs; once it has stopped, release the cells
    and retry or finish (at once when nothing runs)."""
    why = why or outcome.diagnostics or f"attempt ended with {outcome.exit_code}"
    _record_outcome(fw, outcome)
    fw.attempt_completed_at = now
    fw.gang_deadline = fw.shrink_deadline = None
    fw.ending_failure, fw.ending_retry_allowed, fw.ending_release = outcome.failure, retry_allowed, release
    _move(fw, out, now, S.ATTEMPT_DELETION_PENDING, why)
    grace = outcome.grace_period_s if outcome.grace_period_s is not None else out.policy.kill_grace_s
    killed = 0
    for task in fw.tasks.values():
        if task.state in S.LIVE_TASK and task.node:
            killed += 1
            task.state = S.TASK_DELETION_REQUESTED
            notice = outcome.notice
            out.commands.append(
                _kill(
                    fw,
                    task,
                    f"attempt completed: {why}",
                    grace,
                    notice.deadline if notice else None,
                    notice.preemptor if notice else None,
                )
            )
        elif task.state == S.TASK_DELETION_REQUESTED:
            killed += 1  # a growth task being shrunk away: asked to stop already, its exit is awaited
        elif task.state != S.TASK_COMPLETED:
            _task_stopped(task, now, "stopped because its job attempt completed before it started")
    if killed:
        fw.deletion_deadline = now + int(grace * 1000) + out.policy.stop_confirm_margin_ms
        _move(fw, out, now, S.ATTEMPT_DELETION_REQUESTED, f"{killed} live task(s) asked to stop")
        return
    _finish_attempt(fw, out, now, "no task was running")


def _kill(
    fw: Framework, task: Task, why: str, grace: float, deadline: int | None, preemptor: str | None
) -> SendCommand:
    """Stop one task: SIGTERM, the grace, SIGKILL; with a deadline, the preemption notice first."""
    assert task.node is not None
    return SendCommand(
        KillTask(
            job_key=fw.job_key,
            attempt_id=fw.attempt_id,
            task_role=task.task_role,
            index=task.index,
            task_attempt_id=task.task_attempt_id,
            node=task.node,
            reason=why[:500],
            grace_period_s=grace,
            preemption_deadline=deadline,
            preemptor=preemptor,
        ),
        task.node,
    )


def _task_stopped(task: Task, now: int, why: str) -> None:
    task.state = S.TASK_COMPLETED
    task.exit_code = S.EXIT_ATTEMPT_COMPLETION
    task.exit_spec = exit_codes.exit_spec(S.EXIT_ATTEMPT_COMPLETION)
    task.exit_diagnostics = why
    task.completed_at = now


def _stop_confirmed(fw: Framework, key: str, event: TaskDiagnosed, now: int, policy: Policy) -> Transition:
    """A task stopped for its attempt's completion reported its exit."""
    fw = _copy(fw)
    out = Transition(fw, policy=policy)
    task = fw.tasks[key]
    _task_stopped(
        task, event.finished_at, f"stopped because its job attempt completed (exit {event.exit_code})"
    )
    out.reason = f"task {key} stopped"
    if all(t.state != S.TASK_DELETION_REQUESTED for t in fw.tasks.values()):
        _finish_attempt(fw, out, now, "every stopped task has exited")
    return _finish(out)


def _finish_attempt(fw: Framework, out: Transition, now: int, why: str) -> None:
    """Nothing of the attempt runs any more: release its cells, then retry or complete the job."""
    for task in fw.tasks.values():
        if task.state != S.TASK_COMPLETED:
            _task_stopped(task, now, "asked to stop; its exit was not reported in time")
    fw.deletion_deadline = None
    assert fw.exit_code is not None
    if fw.ending_release:
        out.events.append(
            JobAttemptCompleted(job_key=fw.job_key, attempt_id=fw.attempt_id, exit_code=fw.exit_code)
        )
    _move(fw, out, now, S.ATTEMPT_COMPLETED, f"{why}; the attempt's cells are released")

    if fw.ending_retry_allowed and fw.execution_type != "STOP":
        decision = retry_policy.job_retry(
            fw.ending_failure or "Unknown",
            fw.exit_code,
            job_key=fw.job_key,
            attempt_id=fw.attempt_id,
            user_retries=fw.user_retries,
            resource_retries=fw.resource_retries,
            platform_retries=fw.platform_retries,
            limit=fw.spec.job_retry_count,
            policy=out.policy,
        )
        if decision.retry:
            assert decision.kind is not None
            if decision.delay_ms > 0:
                fw.retry_at, fw.retry_kind = now + decision.delay_ms, decision.kind
                out.reason = f"{out.reason}; {decision.why}"
                return
            _begin_retry(fw, out, now, decision.kind, decision.why)
            return
        out.reason = f"{out.reason}; {decision.why}"
    _complete_job(fw, out, now, "no retry: the job is complete")


def _begin_retry(fw: Framework, out: Transition, now: int, kind: RetryKind, why: str) -> None:
    """Keep the finished attempt in the history and start the next one."""
    fw.attempts = _trim_attempts([*fw.attempts, _attempt_record(fw)], out.policy)
    fw.retries += 1
    if kind == "user":
        fw.user_retries += 1
        fw.accountable_retries += 1
    elif kind == "resource":
        fw.resource_retries += 1
    else:
        fw.platform_retries += 1
    fw.attempt_id += 1
    _move(fw, out, now, S.ATTEMPT_CREATION_PENDING, f"{kind} retry: {why}")
    _start_attempt(fw, now, out)


def _attempt_record(fw: Framework) -> JobAttemptRecord:
    return JobAttemptRecord(
        attempt_id=fw.attempt_id,
        state=S.ATTEMPT_COMPLETED,
        created_at=fw.attempt_created_at,
        launched_at=fw.attempt_launched_at,
        completed_at=fw.attempt_completed_at,
        exit_code=fw.exit_code,
        exit_type=fw.exit_type,
        exit_spec=fw.exit_spec,
        exit_diagnostics=fw.exit_diagnostics,
        trigger_task_role=fw.trigger_task_role,
        trigger_task_index=fw.trigger_task_index,
        # What OpenPAI's job-attempt routes show of each task; the details stay with the current attempt.
        tasks=[
            TaskSnapshot(
                task_role=t.task_role,
                index=t.index,
                state=t.state,
                attempt_id=t.task_attempt_id,
                node=t.node,
                host_ip=t.host_ip,
                gpus=t.gpus,
                exit_code=t.exit_code,
                created_at=t.created_at,
                launched_at=t.launched_at,
                completed_at=t.completed_at,
                retries=t.retries,
                accountable_retries=t.accountable_retries,
            )
            for t in fw.tasks.values()
        ],
        preemption=fw.preemption,
        resume=fw.resume,
    )


def _trim_attempts(attempts: list[JobAttemptRecord], policy: Policy) -> list[JobAttemptRecord]:
    """The newest attempts, at most ``attempt_history_limit``; past ``attempt_task_budget`` task records
    in all, older attempts keep their summary without their tasks (a big gang retried often would
    otherwise outgrow a document and a message)."""
    kept = attempts[-policy.attempt_history_limit :]
    budget = policy.attempt_task_budget
    out: list[JobAttemptRecord] = []
    for record in reversed(kept):
        if record.tasks and len(record.tasks) > budget:
            record = without_tasks(record)
        budget -= len(record.tasks)
        out.append(record)
    return out[::-1]


def _complete_job(fw: Framework, out: Transition, now: int, reason: str) -> None:
    assert fw.exit_code is not None
    fw.completed_at = now
    _move(fw, out, now, S.COMPLETED, reason)
    out.events.append(
        JobCompleted(
            job_key=fw.job_key,
            state=cast(JobState, final_state(fw.exit_code)),
            exit_code=fw.exit_code,
            completed_at=now,
            mounted_storages=bool(fw.spec.storages),
        )
    )


def _exit_type(event: TaskDiagnosed) -> str:
    if event.exit_spec and isinstance(event.exit_spec.get("type"), str):
        return str(event.exit_spec["type"])
    return {
        "Transient": "PLATFORM_FAILURE",
        "TransientConflict": "PLATFORM_FAILURE",
        "Permanent": "USER_FAILURE",
    }.get(event.failure_type, "UNKNOWN_FAILURE")


def _launch(fw: Framework, task: Task) -> SendCommand:
    role = next(r for r in fw.spec.task_roles if r.name == task.task_role)
    assert task.node is not None
    return SendCommand(
        LaunchTask(
            job_key=fw.job_key,
            attempt_id=fw.attempt_id,
            task_role=task.task_role,
            index=task.index,
            task_attempt_id=task.task_attempt_id,
            node=task.node,
            gpus=task.gpus,
            gpu_milli=task.gpu_milli,
            gpu_memory_mb=task.gpu_memory_mb,
            fpgas=task.fpgas,
            entrypoint=role.entrypoint,
            env=_task_env(fw, task),
            cpu=role.cpu,
            memory_mb=role.memory_mb,
            shm_mb=role.shm_mb,
            image=role.image,
            ports=task.ports,
            plugins=fw.spec.runtime_plugins,
            has_secrets=fw.spec.has_secrets,
            mounts=fw.spec.storages,
        ),
        task.node,
    )


def _task_env(fw: Framework, task: Task) -> dict[str, str]:
    env = task_environment(fw.spec, task.task_role, task.index, fw.gang)
    if fw.spec.elastic:
        env.update(elastic.environment(fw.spec, fw.gang, fw.membership_version))
    return _resumed(env, fw.resume)


def _resumed(env: dict[str, str], resume: bool) -> dict[str, str]:
    """An attempt after a preemption tells its tasks to resume from their checkpoints."""
    return {**env, "PAI_RESUME": "1"} if resume else env


def _finish(out: Transition) -> Transition:
    """Every change bumps the version and publishes the snapshot the read models copy."""
    assert out.framework is not None
    out.framework.version += 1
    fitted = fit_snapshot(out.framework.snapshot())
    if fitted.over_budget:
        out.warnings.append(
            f"framework.changed body of {fitted.body_bytes} bytes is over the budget of "
            f"{SNAPSHOT_BUDGET_BYTES} with every earlier attempt's tasks left out: the current attempt "
            f"has {len(fitted.snapshot.tasks)} tasks"
        )
    out.events.append(FrameworkChanged(snapshot=fitted.snapshot))
    return out
