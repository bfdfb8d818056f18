"""Job dependencies (extras.dependencies): what a waiting job still waits for, and whether it can ever run.

Pure. A dependency is satisfied once its job completed as asked (``succeeded``: SUCCEEDED; ``completed``:
any final state) and unsatisfiable once it completed otherwise. The job's first attempt starts once every
dependency is satisfied; the first unsatisfiable one fails the job.
"""

from __future__ import annotations

from collections.abc import Mapping

from pai_common.contract.types import DependencyStatus, JobSpec, JobState


def initial(spec: JobSpec, ended: Mapping[str, JobState]) -> list[DependencyStatus]:
    """The job's dependencies, with the final states of those that already completed."""
    return [
        DependencyStatus(job_key=d.job_key, on=d.on, ended=ended.get(d.job_key)) for d in spec.dependencies
    ]


def record(
    deps: list[DependencyStatus], job_key: str, state: JobState
) -> tuple[list[DependencyStatus], DependencyStatus] | None:
    """The dependencies once ``job_key`` completed in ``state``, and the one that changed; None when it is
    not a dependency or its end was recorded already (a repeated event)."""
    for i, dep in enumerate(deps):
        if dep.job_key == job_key and dep.ended is None:
            changed = dep.model_copy(update={"ended": state})
            return [*deps[:i], changed, *deps[i + 1 :]], changed
    return None


def waiting_for(deps: list[DependencyStatus]) -> list[DependencyStatus]:
    return [d for d in deps if d.ended is None]


def first_unsatisfiable(deps: list[DependencyStatus]) -> DependencyStatus | None:
    return next((d for d in deps if d.unsatisfiable), None)


def _wanted(dep: DependencyStatus) -> str:
    return "succeed" if dep.on == "succeeded" else "complete"


def describe_wait(deps: list[DependencyStatus]) -> str:
    """Why the job waits, in words: ``waiting for its dependencies: alice~prep to succeed, …``."""
    open_ = waiting_for(deps)
    names = ", ".join(f"{d.job_key} to {_wanted(d)}" for d in open_)
    return f"waiting for its dependenc{'y' if len(open_) == 1 else 'ies'}: {names}"


def failure_reason(dep: DependencyStatus) -> str:
    return (
        f"dependency {dep.job_key} ended {dep.ended}, but this job asked for it to succeed;"
        " the job can never start"
    )
