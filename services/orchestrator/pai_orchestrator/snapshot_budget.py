"""A job's published snapshot kept within what one bus message may carry.

Every ``framework.changed`` carries the whole snapshot, earlier attempts' task lists included: a big job
retried often (or with long diagnostics) would outgrow the bus's message limit, and a message that can
never be published reaches no consumer. Over the budget, the task lists of the oldest earlier attempts are
left out first; each such attempt keeps its summary (state, times, exit, trigger) and says how many task
records it lost (``tasks_omitted``). The current attempt is never cut: the task cap at submission keeps it
well within the budget, and a snapshot still over it is reported for the log, not mangled.
"""

from __future__ import annotations

from dataclasses import dataclass

from pai_common.contract.events import FrameworkChanged
from pai_common.contract.types import FrameworkSnapshot, JobAttemptRecord
from pai_common.envelope import MAX_BODY_BYTES

# Room left under the consumers' limit for the envelope's growth and a future field or two.
SNAPSHOT_BUDGET_BYTES = MAX_BODY_BYTES * 3 // 4
# Measuring costs an encoding of the snapshot (1.7 ms for 1,000 tasks): it is skipped where nothing could
# be cut and the job is within the jobs service's cap on tasks (a 1,000-task attempt's body: 330 KB).
UNMEASURED_TASKS = 1_000


@dataclass(frozen=True)
class Fitted:
    snapshot: FrameworkSnapshot
    body_bytes: int | None  # the encoded framework.changed body of ``snapshot``; None: not measured
    attempts_cut: int  # earlier attempts whose task lists were left out here
    over_budget: bool  # still over: every earlier attempt's tasks are out, the current attempt is too big


def body_bytes(snapshot: FrameworkSnapshot) -> int:
    return len(FrameworkChanged(snapshot=snapshot).model_dump_json().encode())


def without_tasks(record: JobAttemptRecord) -> JobAttemptRecord:
    """The attempt's summary, its task records counted in ``tasks_omitted``."""
    return record.model_copy(update={"tasks": [], "tasks_omitted": record.tasks_omitted + len(record.tasks)})


def _record_bytes(record: JobAttemptRecord) -> int:
    return len(record.model_dump_json().encode())


def fit_snapshot(snapshot: FrameworkSnapshot, budget: int = SNAPSHOT_BUDGET_BYTES) -> Fitted:
    """The snapshot with as few earlier attempts' task lists left out (oldest first) as keep its event's
    body within ``budget`` bytes."""
    if len(snapshot.tasks) <= UNMEASURED_TASKS and not any(a.tasks for a in snapshot.attempts):
        return Fitted(snapshot, None, 0, False)
    size = body_bytes(snapshot)
    if size <= budget:
        return Fitted(snapshot, size, 0, False)
    attempts = list(snapshot.attempts)
    cut = 0
    # Oldest first: attempts are kept in the order they ran.
    for i, record in enumerate(attempts):
        if size <= budget:
            break
        if not record.tasks:
            continue
        stripped = without_tasks(record)
        # Items of a JSON list are written independently: the body shrinks by exactly this much.
        size -= _record_bytes(record) - _record_bytes(stripped)
        attempts[i] = stripped
        cut += 1
    fitted = snapshot.model_copy(update={"attempts": attempts})
    size = body_bytes(fitted)
    return Fitted(fitted, size, cut, size > budget)
