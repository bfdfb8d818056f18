"""Elastic jobs (``extras.elastic``): which tasks are growth, what the membership is, what tells the tasks.

An elastic role's first ``minInstances`` tasks belong to the gang (placed together, as any job's); the others
are *growth* tasks, asked of the scheduler once the gang is placed and placed one by one into idle cells.
A growth task preempted alone is *shrunk away*: stopped with notice, its cells released, and asked for
again (it may grow back later). Each change of the placed tasks is a new membership *version*: every
live task of the attempt gets ``UpdateMembership`` (the runtime rewrites its ``$PAI_MEMBERSHIP_FILE`` and
sends SIGWINCH), and ``job.elastic.resized`` reports it. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from pai_common.contract.events import JobElasticResized
from pai_common.contract.types import JobSpec, Placement

# The tasks whose placement the membership describes: launched and not yet (being) stopped.
PLACED_STATES = ("TaskAttemptPreparing", "TaskAttemptRunning")


def is_growth(spec: JobSpec, role: str, index: int) -> bool:
    minimum = spec.elastic.get(role)
    return minimum is not None and index >= minimum


def instances(spec: JobSpec, placed: Iterable[tuple[str, int]]) -> dict[str, int]:
    """Each elastic role's tasks in the membership now."""
    counts = dict.fromkeys(spec.elastic, 0)
    for role, _ in placed:
        if role in counts:
            counts[role] += 1
    return counts


def environment(spec: JobSpec, gang: list[Placement], version: int) -> dict[str, str]:
    """What an elastic job's tasks get beside OpenPAI's variables (whose host lists already name only the
    placed tasks): each elastic role's limits and current instances, and the membership's version."""
    env = {"PAI_MEMBERSHIP_VERSION": str(version)}
    role_of = {r.name: r for r in spec.task_roles}
    current = instances(spec, ((p.task_role, p.index) for p in gang))
    for role, minimum in sorted(spec.elastic.items()):
        env[f"PAI_ELASTIC_MIN_INSTANCES_{role}"] = str(minimum)
        env[f"PAI_ELASTIC_MAX_INSTANCES_{role}"] = str(role_of[role].instances)
        env[f"PAI_ELASTIC_INSTANCES_{role}"] = str(current[role])
    return env


def resized(
    job_key: str,
    attempt_id: int,
    spec: JobSpec,
    gang: list[Placement],
    version: int,
    change: Literal["grew", "shrunk"],
    tasks: list[str],
    reason: str,
) -> JobElasticResized:
    return JobElasticResized(
        job_key=job_key,
        attempt_id=attempt_id,
        change=change,
        tasks=sorted(tasks),
        instances=instances(spec, ((p.task_role, p.index) for p in gang)),
        version=version,
        reason=reason[:500],
    )
