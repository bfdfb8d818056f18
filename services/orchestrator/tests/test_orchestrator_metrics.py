"""What the orchestrator counts per transition (pure): waits of the first attempt, retries by kind,
completions by exit type, and drains that stop attempts gracefully and retry them uncounted."""

from __future__ import annotations

from typing import Any

from pai_orchestrator import core, metrics
from pai_orchestrator import states as S

from .test_orchestrator_core import T0, allocated, diagnosed, role, running, spec, submit


def observed(before: core.Framework | None, tr: core.Transition, now: int) -> dict[str, float]:
    """Run a transition's observations against fresh counters and read them back."""
    assert tr.framework is not None
    values: dict[str, float] = {}
    for name, metric in (
        ("completed", metrics.COMPLETIONS),
        ("retries", metrics.RETRIES),
        ("allocated", metrics.SUBMIT_TO_ALLOCATED),
        ("running", metrics.SUBMIT_TO_RUNNING),
    ):
        values[name] = _total(metric)
    for observe in metrics.observations(before, tr.framework, tr.events, now):
        observe()
    return {
        name: _total(metric) - values[name]
        for name, metric in (
            ("completed", metrics.COMPLETIONS),
            ("retries", metrics.RETRIES),
            ("allocated", metrics.SUBMIT_TO_ALLOCATED),
            ("running", metrics.SUBMIT_TO_RUNNING),
        )
    }


def _total(metric: Any) -> float:
    total = 0.0
    for family in metric.collect():
        for s in family.samples:
            if s.name.endswith(("_total", "_count")):
                total += s.value
    return total


def test_first_attempt_waits_and_a_success_are_counted_once() -> None:
    fw = submit(spec(role("worker", 1)))
    now = T0 + 2000
    tr = core.on_allocated(fw, allocated(fw), now)
    assert observed(fw, tr, now) == {"completed": 0, "retries": 0, "allocated": 1, "running": 0}
    fw = tr.framework
    assert fw is not None
    tr = core.on_task_running(fw, running(fw, "worker", 0, now + 1), now + 1)
    assert observed(fw, tr, now + 1) == {"completed": 0, "retries": 0, "allocated": 0, "running": 1}
    fw = tr.framework
    assert fw is not None
    # A second running report changes nothing to count.
    tr2 = core.on_task_running(fw, running(fw, "worker", 0, now + 2), now + 2)
    if tr2.framework is not None:
        assert observed(fw, tr2, now + 2)["running"] == 0
    done = core.on_task_diagnosed(fw, diagnosed(fw, "worker", 0, 0, at=now + 5), now + 5)
    assert observed(fw, done, now + 5)["completed"] == 1
    before = metrics.COMPLETIONS.labels("SUCCEEDED", "USER_SUCCESS")._value.get()
    for observe in metrics.observations(fw, done.framework, done.events, now + 5):  # type: ignore[arg-type]
        observe()
    assert metrics.COMPLETIONS.labels("SUCCEEDED", "USER_SUCCESS")._value.get() == before + 1


def test_retries_are_counted_by_kind_and_waits_only_for_the_first_attempt() -> None:
    fw = submit(spec(role("worker", 1), retries=1))
    fw = core.on_allocated(fw, allocated(fw), T0 + 10).framework
    assert fw is not None
    fw = core.on_task_running(fw, running(fw, "worker", 0, T0 + 20), T0 + 20).framework
    assert fw is not None
    tr = core.on_task_diagnosed(fw, diagnosed(fw, "worker", 0, 1, "Unknown", at=T0 + 30), T0 + 30)
    assert tr.framework is not None and tr.framework.attempt_id == 1
    before = metrics.RETRIES.labels("user")._value.get()
    counted = observed(fw, tr, T0 + 30)
    assert counted["retries"] == 1 and metrics.RETRIES.labels("user")._value.get() == before + 1
    retried = tr.framework
    again = core.on_allocated(retried, allocated(retried), T0 + 40)
    assert observed(retried, again, T0 + 40)["allocated"] == 0  # a later attempt is not a submission wait


def test_a_drain_stops_the_attempt_gracefully_and_retries_it_uncounted() -> None:
    fw = submit(spec(role("worker", 1)))
    fw = core.on_allocated(fw, allocated(fw), T0 + 10).framework
    assert fw is not None
    fw = core.on_task_running(fw, running(fw, "worker", 0, T0 + 20), T0 + 20).framework
    assert fw is not None
    tr = core.on_drained(fw, fw.attempt_id, "node a0 is drained by root", T0 + 30)
    assert tr.framework is not None and tr.framework.state == S.ATTEMPT_DELETION_REQUESTED
    kills = [c.command for c in tr.commands]
    grace = core.DEFAULT_POLICY.preempt_grace_s
    assert kills and all(getattr(k, "grace_period_s", None) == grace for k in kills)
    assert tr.framework.exit_code == S.EXIT_PREEMPTED
    assert "drained by root" in (tr.framework.exit_diagnostics or "")
    # Not the live attempt: nothing happens.
    assert core.on_drained(fw, fw.attempt_id + 1, "x", T0 + 40).framework is None
