"""Job events: what happened to a job, kept by the jobs service and served by `GET …/events`.

Pure: records are built from facts passed in (the time included). A record repeated with the same key
(a job that keeps waiting for the same reason) is folded into one, with a count and first/last times,
the way Kubernetes aggregates the events OpenPAI shows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

from pai_common.contract.events import JobDependencyResolved, JobElasticResized, JobPreemptionNoticed
from pai_common.contract.types import JobSpec
from pai_jobs.views import debug_id

EventType = Literal["Normal", "Warning"]
SOURCE_COMPONENT: Final = "pai-jobs"
MAX_MESSAGE_CHARS: Final = 2000


@dataclass(frozen=True)
class JobEvent:
    """One fact about a job; `key` identifies repeats of the same fact."""

    job_key: str
    key: str
    type: EventType
    reason: str
    message: str
    at_ms: int
    task_role: str | None = None
    task_index: int | None = None

    def upsert(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The (filter, update) that records this event once, or counts one more repeat of it."""
        uid = hashlib.md5(f"{self.job_key}/{self.key}".encode(), usedforsecurity=False).hexdigest()
        return (
            {"_id": uid},
            {
                "$setOnInsert": {
                    "job_key": self.job_key,
                    "type": self.type,
                    "reason": self.reason,
                    "task_role": self.task_role,
                    "task_index": self.task_index,
                    "first_at": self.at_ms,
                },
                "$set": {"message": self.message[:MAX_MESSAGE_CHARS], "last_at": self.at_ms},
                "$inc": {"count": 1},
            },
        )


def epoch_ms(cloud_event_time: str, fallback_ms: int) -> int:
    """The CloudEvents `time` attribute (RFC 3339) as epoch milliseconds; `fallback_ms` when a producer
    left it out or wrote something else (the event is still worth recording)."""
    try:
        moment = datetime.fromisoformat(cloud_event_time.replace("Z", "+00:00"))
    except ValueError:
        return fallback_ms
    if moment.tzinfo is None:
        return fallback_ms
    return int(moment.timestamp() * 1000)


def _digest(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()[:12]


def submitted(job_key: str, at_ms: int) -> JobEvent:
    return JobEvent(job_key, "submitted", "Normal", "Submitted", "the job was accepted", at_ms)


def stop_requested(job_key: str, by: str, at_ms: int) -> JobEvent:
    return JobEvent(job_key, "stop", "Normal", "StopRequested", f"{by} asked to stop the job", at_ms)


def pending(job_key: str, attempt_id: int, reason: str, position: int | None, at_ms: int) -> JobEvent:
    where = f" (position {position} in its queue)" if position is not None else ""
    return JobEvent(
        job_key,
        f"pending/{attempt_id}/{_digest(reason)}",
        "Warning",
        "SchedulingPending",
        f"attempt {attempt_id} waits: {reason}{where}",
        at_ms,
    )


def rejected(job_key: str, attempt_id: int, reason: str, at_ms: int) -> JobEvent:
    return JobEvent(
        job_key,
        f"rejected/{attempt_id}",
        "Warning",
        "FailedScheduling",
        f"attempt {attempt_id}: {reason}",
        at_ms,
    )


def preempting(job_key: str, attempt_id: int, victims: list[str], at_ms: int) -> JobEvent:
    return JobEvent(
        job_key,
        f"preempting/{attempt_id}",
        "Normal",
        "Preempting",
        f"attempt {attempt_id} waits for lower-priority work to stop: {', '.join(victims)}",
        at_ms,
    )


def preempted(job_key: str, attempt_id: int, preemptor: str, at_ms: int) -> JobEvent:
    return JobEvent(
        job_key,
        f"preempted/{attempt_id}",
        "Warning",
        "Preempted",
        f"attempt {attempt_id} is preempted by {preemptor}",
        at_ms,
    )


def downgraded(job_key: str, attempt_id: int, preemptor: str | None, at_ms: int) -> JobEvent:
    by = f" for {preemptor}" if preemptor else ""
    return JobEvent(
        job_key,
        f"downgraded/{attempt_id}",
        "Warning",
        "LazyPreempted",
        f"attempt {attempt_id} runs on as opportunistic work{by}",
        at_ms,
    )


def attempt_completed(job_key: str, attempt_id: int, exit_code: int, at_ms: int) -> JobEvent:
    return JobEvent(
        job_key,
        f"attempt-completed/{attempt_id}",
        "Normal" if exit_code == 0 else "Warning",
        "AttemptCompleted",
        f"attempt {attempt_id} completed with exit code {exit_code}",
        at_ms,
    )


def waiting_for_dependencies(spec: JobSpec, at_ms: int) -> JobEvent:
    wanted = ", ".join(
        f"{d.job_key} to {'succeed' if d.on == 'succeeded' else 'complete'}" for d in spec.dependencies
    )
    return JobEvent(
        spec.job_key,
        "dependencies",
        "Normal",
        "WaitingForDependencies",
        f"the first attempt starts once these jobs end as asked: {wanted}",
        at_ms,
    )


def dependency_resolved(event: JobDependencyResolved, at_ms: int) -> JobEvent:
    wanted = "succeed" if event.on == "succeeded" else "complete"
    if event.satisfied:
        message = f"dependency {event.dependency} ended {event.dependency_state}, as this job asked"
    else:
        message = (
            f"dependency {event.dependency} ended {event.dependency_state}, but this job asked for it to"
            f" {wanted}: the job fails without starting"
        )
    return JobEvent(
        event.job_key,
        f"dependency/{_digest(event.dependency)}",
        "Normal" if event.satisfied else "Warning",
        "DependencySatisfied" if event.satisfied else "DependencyUnsatisfied",
        message,
        at_ms,
    )


def preemption_noticed(event: JobPreemptionNoticed) -> JobEvent:
    n = event.notice
    deadline = datetime.fromtimestamp(n.deadline / 1000, UTC).isoformat().replace("+00:00", "Z")
    return JobEvent(
        event.job_key,
        f"notice/{event.attempt_id}",
        "Warning",
        "PreemptionNotice",
        f"attempt {event.attempt_id} is preempted by {n.preemptor}: its tasks were sent SIGTERM and the"
        f" notice ($PAI_PREEMPTION_NOTICE) with {n.grace_seconds:g} s to stop, until {deadline}; the next"
        " attempt gets PAI_RESUME=1",
        n.noticed_at,
    )


def elastic_resized(event: JobElasticResized, at_ms: int) -> JobEvent:
    counts = ", ".join(f"{role}: {n}" for role, n in sorted(event.instances.items()))
    tasks = ", ".join(event.tasks)
    joined = "joined" if event.change == "grew" else "left"
    return JobEvent(
        event.job_key,
        f"elastic/{event.attempt_id}/{event.version}",
        "Normal",
        "ElasticGrew" if event.change == "grew" else "ElasticShrank",
        f"attempt {event.attempt_id}: task(s) {tasks} {joined} the gang ({event.reason}); instances now"
        f" {counts}; the running tasks got membership version {event.version}"
        " ($PAI_MEMBERSHIP_FILE, SIGWINCH)",
        at_ms,
    )


def iso_time(epoch_ms: int) -> str:
    """A Kubernetes event time as OpenPAI shows it: `2020-09-29T09:46:42.000Z`."""
    moment = datetime.fromtimestamp(epoch_ms / 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{epoch_ms % 1000:03d}Z"


def event_view(record: Mapping[str, Any]) -> dict[str, Any]:
    """OpenPAI's job event shape of one stored record.

    OpenPAI's events are its pods' Kubernetes events: each names a pod, a task role and an index. An event
    of the job as a whole names none (empty strings, index -1), in the types OpenPAI's swagger gives.
    """
    job_key: str = record["job_key"]
    role = record.get("task_role")
    index = record.get("task_index")
    per_task = role is not None and index is not None
    return {
        "uid": record["_id"],
        "frameworkName": debug_id(job_key),
        "podUid": debug_id(f"{job_key}/{role}/{index}") if per_task else "",
        "taskroleName": role or "",
        "taskName": f"{debug_id(job_key)}-{role}-{index}" if per_task else "",
        "taskIndex": index if index is not None else -1,
        "type": record["type"],
        "reason": record["reason"],
        "message": record["message"],
        "firstTimestamp": iso_time(int(record["first_at"])),
        "lastTimestamp": iso_time(int(record["last_at"])),
        "count": record["count"],
        "sourceComponent": SOURCE_COMPONENT,
        "sourceHost": None,
    }
