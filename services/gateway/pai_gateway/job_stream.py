"""What the job stream (`GET /api/v2/jobs/{user}~{job}/stream`, Server-Sent Events) sends: the changes
between two JobDetails of the same job.

Pure. The gateway has no database and holds no subscription state: each open stream polls the jobs
service's detail RPC at a short interval and sends what changed since the last poll. That costs one RPC
per stream per interval, and shows every state a job holds for longer than the interval.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

FINAL_STATES: Final = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})
# A comment line that keeps proxies from closing an idle stream.
KEEPALIVE: Final = ": keep-alive\n\n"


@dataclass(frozen=True)
class StreamEvent:
    event: str
    data: dict[str, Any]

    def encode(self, event_id: int) -> str:
        return (
            f"id: {event_id}\nevent: {self.event}\ndata: {json.dumps(self.data, separators=(',', ':'))}\n\n"
        )


def _tasks(detail: Mapping[str, Any]) -> dict[tuple[str, int], dict[str, Any]]:
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for role, body in (detail.get("taskRoles") or {}).items():
        for status in body.get("taskStatuses", []):
            out[(role, status["taskIndex"])] = status
    return out


def changes(previous: Mapping[str, Any] | None, current: Mapping[str, Any]) -> list[StreamEvent]:
    """The events that bring a client from `previous` (None: nothing sent yet) to `current`.

    `job`: the jobStatus, when any field of it changed (the first one always). `task`: one per task whose
    status changed, with its role. `end`: once the job reached a final state; the stream closes after it.
    """
    events: list[StreamEvent] = []
    status = dict(current.get("jobStatus") or {})
    if previous is None or previous.get("jobStatus") != status:
        events.append(StreamEvent("job", {"name": current.get("name"), "jobStatus": status}))
    before = _tasks(previous) if previous is not None else {}
    for (role, index), task in _tasks(current).items():
        if before.get((role, index)) != task:
            events.append(StreamEvent("task", {"taskRoleName": role, **task}))
    if status.get("state") in FINAL_STATES:
        events.append(StreamEvent("end", {"state": status["state"]}))
    return events
