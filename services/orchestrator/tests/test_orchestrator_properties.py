"""Property tests: the framework state machine driven by a simulated platform that delivers its messages
in any order, some of them twice.

The simulated world answers the orchestrator as the real services would: a scheduling request is
allocated, a launch makes the task run and (per a drawn script) exit, a kill makes a late exit report.
Each attempt's script is either "every task succeeds" or "these tasks fail with this code, the others
run until stopped", so that the outcome is decided by the script, not by the order of delivery.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pai_common.contract.commands import KillTask, LaunchTask
from pai_common.contract.events import (
    JobCompleted,
    JobStopRequested,
    SchedulingAllocated,
    SchedulingRequested,
    TaskDiagnosed,
    TaskRunning,
)
from pai_common.contract.types import JobSpec, Placement, TaskRoleSpec
from pai_orchestrator import core
from pai_orchestrator import states as S
from pai_orchestrator.core import Framework, Transition
from pai_orchestrator.policy import Policy

JOB = "carol~prop"
T0 = 10_000_000
POLICY = Policy(conflict_retry_min_ms=1_000, conflict_retry_max_ms=3_000)
FAILURES = [(200, "Transient"), (201, "TransientConflict"), (210, "Permanent"), (1, "Unknown")]


@dataclass(frozen=True)
class Script:
    """What one attempt's tasks do: None succeeds everywhere; else (code, failure, failing task keys)."""

    failing: tuple[int, str, frozenset[str]] | None


@dataclass(frozen=True)
class World:
    spec: JobSpec
    scripts: tuple[Script, ...]  # attempts beyond the scripts succeed

    def outcome(self, attempt: int, key: str) -> tuple[int, str] | None:
        """A task's exit (code, failure); None: it runs until it is stopped."""
        script = self.scripts[attempt] if attempt < len(self.scripts) else Script(None)
        if script.failing is None:
            return 0, "Succeeded"
        code, failure, keys = script.failing
        return (code, failure) if key in keys else None


@st.composite
def worlds(draw: st.DrawFn) -> World:
    gang = draw(st.booleans())
    roles = [
        TaskRoleSpec(
            name=name,
            instances=draw(st.integers(1, 2)),
            gpu=1,
            cpu=1,
            memory_mb=1,
            entrypoint="x",
            min_failed_instances=draw(st.sampled_from([None, 1, 2])),
            min_succeeded_instances=draw(st.sampled_from([None, 1, 2])),
            task_retry_count=draw(st.integers(0, 2)),
        )
        for name in ("ps", "worker")
    ]
    spec = JobSpec(
        job_key=JOB,
        user="carol",
        name="prop",
        job_retry_count=draw(st.integers(0, 2)),
        task_roles=roles,
        submitted_at=T0,
        gang_allocation=gang,
    )
    keys = sorted(f"{r.name}/{i}" for r in roles for i in range(r.instances))
    # Task retries of transient failures never end; the scripts give loose tasks countable failures only.
    menu = FAILURES if gang else [(210, "Permanent"), (1, "Unknown")]
    scripts = []
    for _ in range(draw(st.integers(0, 3))):
        if draw(st.booleans()):
            scripts.append(Script(None))
        else:
            code, failure = draw(st.sampled_from(menu))
            failing = frozenset(draw(st.sets(st.sampled_from(keys), min_size=1)))
            scripts.append(Script((code, failure, failing)))
    return World(spec, tuple(scripts))


# With chaos: gangs that wait too long time out, and conflicts back off briefly.
CHAOS_POLICY = Policy(gang_allocation_timeout_ms=300, conflict_retry_min_ms=100, conflict_retry_max_ms=400)


@dataclass
class Run:
    fw: Framework
    completions: int
    steps: int
    stopped: bool = False


def apply(fw: Framework, msg: tuple[str, Any], now: int, policy: Policy = POLICY) -> Transition:
    kind, body = msg
    if kind == "allocated":
        return core.on_allocated(fw, body, now, policy)
    if kind == "running":
        return core.on_task_running(fw, body, now, policy)
    assert kind == "diagnosed"
    return core.on_task_diagnosed(fw, body, now, policy)


def chaos(fw: Framework, data: st.DataObject, now: int) -> tuple[str, Transition, int]:
    """Something the platform or a user does at an arbitrary moment."""
    kind = data.draw(st.sampled_from(["preempt", "lose", "stop", "wait"]), label="chaos")
    if kind == "preempt":
        return kind, core.on_preempted(fw, fw.attempt_id, "x~urgent", now, CHAOS_POLICY), now
    if kind == "lose":
        return kind, core.on_cells_lost(fw, fw.attempt_id, "node gone", now, CHAOS_POLICY), now
    if kind == "stop":
        stop = JobStopRequested(job_key=JOB, requested_by="carol", requested_at=now)
        return kind, core.on_stop_requested(fw, stop, now, CHAOS_POLICY), now
    later = now + data.draw(st.integers(0, 60_000), label="wait ms")
    return kind, core.on_tick(fw, later, CHAOS_POLICY), later


def reactions(world: World, tr: Transition, now: int) -> list[tuple[str, Any]]:
    """What the simulated scheduler and runtime send back for a transition's effects."""
    out: list[tuple[str, Any]] = []
    for e in tr.events:
        if isinstance(e, SchedulingRequested):
            placements = [
                Placement(task_role=p.task_role, index=p.index, node=f"n-{p.task_role}-{p.index}", gpus=[0])
                for p in e.pods
            ]
            out.append(
                (
                    "allocated",
                    SchedulingAllocated(job_key=JOB, attempt_id=e.attempt_id, placements=placements),
                )
            )
    for c in tr.commands:
        cmd = c.command
        ids = dict(
            job_key=JOB,
            attempt_id=cmd.attempt_id,  # type: ignore[attr-defined]
            task_role=cmd.task_role,  # type: ignore[attr-defined]
            index=cmd.index,  # type: ignore[attr-defined]
            task_attempt_id=cmd.task_attempt_id,  # type: ignore[attr-defined]
        )
        if isinstance(cmd, LaunchTask):
            out.append(("running", TaskRunning(**ids, node=cmd.node, host_ip="h", pid=1, started_at=now)))
            result = world.outcome(cmd.attempt_id, f"{cmd.task_role}/{cmd.index}")
            if result is not None:
                out.append(("diagnosed", diagnosis(ids, result[0], result[1], now)))
        elif isinstance(cmd, KillTask):
            out.append(("diagnosed", diagnosis(ids, 143, "Transient", now)))  # the late exit of a kill
    return out


def diagnosis(ids: dict[str, Any], code: int, failure: str, now: int) -> TaskDiagnosed:
    return TaskDiagnosed(
        **ids,
        exit_code=code,
        spec_code=code,
        spec_phrase="P",
        failure_type=failure,  # type: ignore[arg-type]
        message="m",
        finished_at=now,
    )


def simulate(world: World, data: st.DataObject | None, with_chaos: bool = False) -> Run:
    """Deliver every message until nothing is left to deliver and no timer is due.

    Without ``data``: first in, first out, each once. With it: in the order hypothesis picks, with
    duplicates; ``with_chaos`` adds preemptions, lost cells, a stop and jumps of the clock."""
    policy = CHAOS_POLICY if with_chaos else POLICY
    tr = core.on_submitted(world.spec, T0, policy)
    assert tr.framework is not None
    fw, now = tr.framework, T0
    serial = iter(range(10**9))
    pool = [(next(serial), m) for m in reactions(world, tr, now)]
    completions, steps, duplicates, upsets = 0, 0, 0, 0
    stopped = False
    delivered: set[int] = set()
    limits = {r.name: r.task_retry_count for r in world.spec.task_roles}
    while steps < 400:
        steps += 1
        now += 10
        if with_chaos and data is not None and upsets < 6 and data.draw(st.integers(0, 7)) == 0:
            upsets += 1
            kind, tr, now = chaos(fw, data, now)
            stopped = stopped or (kind == "stop" and tr.framework is not None)
        elif not pool:
            due = fw.due_at()
            if due is None:
                break
            now = max(now, due)
            tr = core.on_tick(fw, now, policy)
        else:
            pick = 0 if data is None else data.draw(st.integers(0, len(pool) - 1), label="deliver")
            duplicate = data is not None and duplicates < 30 and data.draw(st.integers(0, 5)) == 0
            duplicates += duplicate
            number, msg = pool[pick] if duplicate else pool.pop(pick)
            was_completed = fw.state == S.COMPLETED
            tr = apply(fw, msg, now, policy)
            if was_completed:
                assert tr.framework is None, "a completed job never changes again"
            if number in delivered:
                assert tr.framework is None, f"a message delivered again changed the job: {msg[0]}"
            delivered.add(number)
        if tr.framework is None:
            continue
        if fw.state == S.COMPLETED:
            raise AssertionError("a completed job never changes again")
        fw = tr.framework
        completions += sum(isinstance(e, JobCompleted) for e in tr.events)
        # Never completes twice; retries never exceed their limits.
        assert completions <= 1
        assert fw.accountable_retries == fw.user_retries <= world.spec.job_retry_count
        assert fw.resource_retries <= world.spec.job_retry_count
        assert fw.retries == fw.user_retries + fw.platform_retries + fw.resource_retries == fw.attempt_id
        for t in fw.tasks.values():
            assert t.accountable_retries <= limits[t.task_role]
            assert t.retries == t.task_attempt_id == len(t.history)
            if world.spec.gang_allocation:
                assert t.retries == 0, "a gang job never retries a task alone"
        pool.extend((next(serial), m) for m in reactions(world, tr, now))
    assert steps < 400, "the simulation settles"
    return Run(fw, completions, steps, stopped)


def summary(fw: Framework) -> tuple[Any, ...]:
    # Which task attempt a loose task (gang allocation off) had reached when its job attempt ended does
    # depend on the order: a peer's failure may end the attempt before or after its own retry.
    task_attempts = fw.spec.gang_allocation
    return (
        fw.state,
        fw.exit_code,
        fw.attempt_id,
        fw.user_retries,
        fw.platform_retries,
        fw.resource_retries,
        [(a.attempt_id, a.exit_code) for a in fw.attempts],
        sorted((k, t.state, t.task_attempt_id if task_attempts else None) for k, t in fw.tasks.items()),
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(world=worlds(), data=st.data())
def test_any_order_and_duplication_reaches_the_same_final_state(world: World, data: st.DataObject) -> None:
    reference = simulate(world, None)
    shuffled = simulate(world, data)
    assert summary(shuffled.fw) == summary(reference.fw)
    assert shuffled.completions == reference.completions == (1 if reference.fw.state == S.COMPLETED else 0)


@settings(max_examples=150, deadline=None)
@given(world=worlds())
def test_scripted_outcomes_follow_the_retry_policy(world: World) -> None:
    run = simulate(world, None)
    fw = run.fw
    if fw.state != S.COMPLETED:
        # Only a failure that does not reach minFailedInstances leaves an attempt running.
        assert fw.state == S.ATTEMPT_RUNNING
        return
    for record in fw.attempts:
        script = world.scripts[record.attempt_id]
        assert script.failing is not None and record.exit_code == script.failing[0]
        assert script.failing[1] != "Permanent", "a permanent failure is never retried"
    transient_or_unknown = {a.exit_code for a in fw.attempts}
    assert transient_or_unknown <= {200, 201, 1}
    if fw.exit_code == 1:
        assert fw.user_retries == world.spec.job_retry_count, "unknown failures retry up to the limit"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(world=worlds(), data=st.data())
def test_stops_preemptions_and_timeouts_at_any_moment_keep_the_invariants(
    world: World, data: st.DataObject
) -> None:
    run = simulate(world, data, with_chaos=True)
    fw = run.fw
    event(f"stopped={run.stopped} final={fw.state} retries={min(fw.retries, 3)}")
    assert run.completions == (1 if fw.state == S.COMPLETED else 0)
    if run.stopped:
        # A stop takes effect from any stage: the job ends, stopped (unless its attempt had succeeded).
        assert fw.state == S.COMPLETED and fw.execution_type == "STOP"
        assert fw.exit_code in (S.EXIT_STOP_REQUESTED, S.EXIT_SUCCEEDED)
        assert all(t.state == S.TASK_COMPLETED for t in fw.tasks.values())
    if fw.state == S.COMPLETED:
        assert fw.due_at() is None and fw.exit_code is not None
