"""extras.elastic (beyond OpenPAI): ``{<role>: {minInstances, maxInstances}}``, task roles whose gang starts
with ``minInstances`` tasks, grows into idle cells up to ``maxInstances`` and is shrunk (down to the minimum)
rather than stopped when preempted. Pure.

Rules (each broken one is a 400 at its path): the role exists; ``1 <= minInstances <= maxInstances``;
``maxInstances`` is the role's ``taskNumber`` (``instances``): the tasks are indices ``0..max-1``, the first
``minInstances`` of them the gang, so a job's shape and its environment's task counts keep their meaning;
``maxInstances`` may be left out (it is the task number). Not with ``gangAllocation: false`` (its tasks are
placed one by one already, so nothing is elastic about it)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from pai_common.contract.types import FrameworkSnapshot, JobSpec

FIELD: Final = "extras.elastic"
KEYS: Final = ("minInstances", "maxInstances")

Report = Callable[[str, str], None]


def parse(
    value: object, instances: Mapping[str, int | None], gang_allocation: bool, report: Report
) -> dict[str, int]:
    """Each elastic role's minimum; ``instances`` are the job's roles and their task numbers (None: the role
    is broken, reported at the role; its limits are checked only for shape). Problems go to
    ``report(field, message)``."""
    if not isinstance(value, dict) or not value:
        report(FIELD, "must be a non-empty mapping {<task role>: {minInstances: N, maxInstances: M}}")
        return {}
    if not gang_allocation:
        report(FIELD, "cannot be used with extras.gangAllocation: false (its tasks are placed one by one)")
    out: dict[str, int] = {}
    for role, limits in value.items():
        path = f"{FIELD}.{role}"
        if role not in instances:
            report(path, f"names no task role of the job ({', '.join(sorted(instances)) or 'none'})")
            continue
        if not isinstance(limits, dict):
            report(path, "must be a mapping {minInstances: N, maxInstances: M}")
            continue
        for extra in sorted(set(limits) - set(KEYS)):
            report(f"{path}.{extra}", "is not a field of an elastic role (minInstances, maxInstances)")
        number = instances[role]
        low, high = limits.get("minInstances"), limits.get("maxInstances", number)
        if not _count(low):
            report(f"{path}.minInstances", f"must be an integer of at least 1, got {low!r}")
            continue
        if high is not None and not _count(high):
            report(f"{path}.maxInstances", f"must be an integer of at least 1, got {high!r}")
            continue
        if number is None or high is None:
            continue
        assert isinstance(low, int) and isinstance(high, int)
        if high != number:
            report(
                f"{path}.maxInstances",
                f"must equal the role's taskNumber ({number}), the most tasks it runs; got {high}",
            )
            continue
        if low > high:
            report(f"{path}.minInstances", f"must be at most maxInstances ({high}), got {low}")
            continue
        out[str(role)] = low
    return out


# The tasks the gang holds: placed and launched, not (being) stopped.
_HELD = ("TaskAttemptPreparing", "TaskAttemptRunning")


def view(spec: JobSpec, snapshot: FrameworkSnapshot | None) -> dict[str, Any]:
    """The job detail's ``jobStatus.elastic``: per elastic role, its limits and ``currentInstances``."""
    sizes = {r.name: r.instances for r in spec.task_roles}
    tasks = snapshot.tasks if snapshot is not None else []
    return {
        role: {
            "minInstances": minimum,
            "maxInstances": sizes.get(role, minimum),
            "currentInstances": sum(1 for t in tasks if t.task_role == role and t.state in _HELD),
        }
        for role, minimum in sorted(spec.elastic.items())
    }


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1
