"""FrameworkController's attempt completion policy, evaluated each time a task completes. Pure.

Per task role (only values >= 1 take effect): the attempt fails once ``min_failed_instances`` of the
role's tasks have failed, and succeeds once ``min_succeeded_instances`` have succeeded, inheriting the
status of the task that tipped it (the trigger). The first trigger wins: the attempt is over once one
fires, and later task ends no longer count. Without a trigger the attempt succeeds when every task has
completed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pai_common.contract.types import TaskRoleSpec


@dataclass(frozen=True)
class Verdict:
    succeeded: bool
    trigger: tuple[str, int] | None  # (task role, index); None when every task simply completed
    why: str


def _active(threshold: int | None) -> int | None:
    return threshold if threshold is not None and threshold >= 1 else None


def verdict(
    roles: list[TaskRoleSpec],
    exits: Mapping[tuple[str, int], int | None],
    completed: tuple[str, int],
) -> Verdict | None:
    """``exits`` holds every task's exit code, None while it has not completed; ``completed`` just did."""
    role = next(r for r in roles if r.name == completed[0])
    code = exits[completed]
    mine = [c for (r, _), c in exits.items() if r == role.name and c is not None]
    failed = sum(1 for c in mine if c != 0)
    succeeded = len(mine) - failed
    min_failed = _active(role.min_failed_instances)
    min_succeeded = _active(role.min_succeeded_instances)
    if code != 0 and min_failed is not None and failed >= min_failed:
        return Verdict(
            False,
            completed,
            f"{failed} task(s) of role {role.name} failed, reaching minFailedInstances {min_failed}",
        )
    if code == 0 and min_succeeded is not None and succeeded >= min_succeeded:
        return Verdict(
            True,
            completed,
            f"{succeeded} task(s) of role {role.name} succeeded, reaching minSucceededInstances"
            f" {min_succeeded}",
        )
    if all(c is not None for c in exits.values()):
        return Verdict(True, None, "every task completed")
    return None
