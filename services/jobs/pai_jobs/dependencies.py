"""extras.dependencies: jobs a job waits for before its first attempt (beyond OpenPAI).

``extras.dependencies: [{job: "<user>~<name>", on: succeeded | completed}]`` (``on`` defaults to
``succeeded``; a bare ``<name>`` is the submitting user's job). Pure: ``parse`` reads and checks the list as
the protocol checks do (every problem at its path); ``unknown`` says which of them name no stored job, which
the shell asks the database about. A dependency must exist when the dependent is submitted and a job's name
is never reused, so a cycle could only close on the job itself, which ``parse`` refuses.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from typing import Final

from pai_common.contract.types import DependencyStatus, FrameworkSnapshot, JobDependency, JobSpec

FIELD: Final = "extras.dependencies"
MAX_DEPENDENCIES: Final = 64
CONDITIONS: Final = ("succeeded", "completed")
_PART: Final = r"[A-Za-z0-9_.@-]+"
_JOB_RE: Final = re.compile(rf"^(?:({_PART})~)?({_PART})$")

Report = Callable[[str, str], None]


def parse(value: object, username: str, job_name: str | None, report: Report) -> list[JobDependency]:
    """The dependencies of ``extras.dependencies`` (``value``); problems go to ``report(field, message)``."""
    if not isinstance(value, list):
        report(FIELD, "must be a list of {job, on} mappings")
        return []
    if len(value) > MAX_DEPENDENCIES:
        report(FIELD, f"at most {MAX_DEPENDENCIES} dependencies, got {len(value)}")
        return []
    own = f"{username}~{job_name}" if job_name is not None else None
    out: list[JobDependency] = []
    seen: set[str] = set()
    for i, item in enumerate(value):
        path = f"{FIELD}.{i}"
        if not isinstance(item, dict):
            report(path, "must be a mapping {job: <user>~<name>, on: succeeded | completed}")
            continue
        for extra in sorted(set(item) - {"job", "on"}):
            report(f"{path}.{extra}", "is not a field of a dependency (job, on)")
        job = item.get("job")
        match = _JOB_RE.match(job) if isinstance(job, str) else None
        if match is None:
            report(f"{path}.job", "must name a job as <user>~<name> (or <name> for one of your own)")
            continue
        key = f"{match.group(1) or username}~{match.group(2)}"
        on = item.get("on", "succeeded")
        if on not in CONDITIONS:
            report(f"{path}.on", f"must be one of {', '.join(CONDITIONS)}, got {on!r}")
            continue
        if key == own:
            report(f"{path}.job", f"a job cannot depend on itself ({key}): that is a cycle")
            continue
        if key in seen:
            report(f"{path}.job", f"{key} is named twice")
            continue
        seen.add(key)
        out.append(JobDependency(job_key=key, on=on))
    return out


def unknown(dependencies: list[JobDependency], existing: Collection[str]) -> list[tuple[str, str]]:
    """(field, message) for each dependency that names no stored job."""
    return [
        (f"{FIELD}.{i}.job", f"names no job: {d.job_key}")
        for i, d in enumerate(dependencies)
        if d.job_key not in existing
    ]


def view(spec: JobSpec, snapshot: FrameworkSnapshot | None) -> list[dict[str, object]]:
    """The job detail's ``jobStatus.dependencies``: each dependency, what it must do and how it ended
    (``state`` null while it has not), as the orchestrator last reported them."""
    followed = {d.job_key: d for d in snapshot.dependencies} if snapshot is not None else {}
    out: list[dict[str, object]] = []
    for d in spec.dependencies:
        seen = followed.get(d.job_key)
        ended = seen.ended if seen is not None else None
        status = DependencyStatus(job_key=d.job_key, on=d.on, ended=ended)
        out.append(
            {"job": d.job_key, "on": d.on, "state": ended, "satisfied": status.satisfied if ended else None}
        )
    return out


def pending_reason(view_: list[dict[str, object]], fc_state: str | None) -> str | None:
    """Why the job waits while its first attempt has not asked for cells: the dependencies still open."""
    if fc_state not in (None, "AttemptCreationPending"):
        return None
    open_ = [d for d in view_ if d["state"] is None]
    if not open_:
        return None
    names = ", ".join(f"{d['job']} to {'succeed' if d['on'] == 'succeeded' else 'complete'}" for d in open_)
    return f"waiting for its dependenc{'y' if len(open_) == 1 else 'ies'}: {names}"
