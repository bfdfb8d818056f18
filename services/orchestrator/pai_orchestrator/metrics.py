"""What the orchestrator counts as its transitions commit: completions, retries, how long jobs waited.

``observations`` is pure: it compares a framework before and after one transition and says what to
count; the shell counts it once the transition committed (a retried transaction counts nothing twice).
Waits are from the job's submission (server time) for its first attempt only, so that a retried job
does not count its earlier attempts' run time as waiting.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

from prometheus_client import Counter, Histogram

from pai_common.contract.base import Event
from pai_common.contract.events import JobCompleted
from pai_common.metrics import WAIT_BUCKETS
from pai_orchestrator.core import Framework

COMPLETIONS = Counter(
    "pai_job_completions_total",
    "Jobs that reached their final state, by state and exit type (USER_SUCCESS, USER_FAILURE, ...).",
    ["state", "exit_type"],
)
RETRIES = Counter(
    "pai_job_retries_total",
    "Job attempts retried, by kind: user (counts against jobRetryCount), platform, resource.",
    ["kind"],
)
SUBMIT_TO_ALLOCATED = Histogram(
    "pai_job_submit_to_allocated_seconds",
    "From a job's submission to its first attempt's gang being placed, by virtual cluster.",
    ["virtual_cluster"],
    buckets=WAIT_BUCKETS,
)
SUBMIT_TO_RUNNING = Histogram(
    "pai_job_submit_to_running_seconds",
    "From a job's submission to its first task running, by virtual cluster.",
    ["virtual_cluster"],
    buckets=WAIT_BUCKETS,
)

Observation = Callable[[], None]


def observations(
    before: Framework | None, after: Framework, events: Sequence[Event], now_ms: int
) -> list[Observation]:
    out: list[Observation] = []
    vc = after.spec.virtual_cluster
    submitted = after.spec.submitted_at
    for event in events:
        if isinstance(event, JobCompleted):
            exit_type = after.exit_type or "none"
            out.append(COMPLETIONS.labels(event.state, exit_type).inc)
    if before is not None:
        for kind, was, now in (
            ("user", before.user_retries, after.user_retries),
            ("platform", before.platform_retries, after.platform_retries),
            ("resource", before.resource_retries, after.resource_retries),
        ):
            if now > was:
                out.append(partial(RETRIES.labels(kind).inc, now - was))
        if after.attempt_id == 0 and not before.gang and after.gang:
            out.append(partial(SUBMIT_TO_ALLOCATED.labels(vc).observe, _seconds(submitted, now_ms)))
        if before.launched_at is None and after.launched_at is not None:
            out.append(partial(SUBMIT_TO_RUNNING.labels(vc).observe, _seconds(submitted, after.launched_at)))
    return out


def _seconds(start_ms: int, end_ms: int) -> float:
    return max(0.0, (end_ms - start_ms) / 1000)
