"""Which log of a job to follow and when to stop, from the job's detail and its stream's events. Pure.

``pai job logs -f`` and the clients' ``follow_log`` read the job's Server-Sent Events for the task's state
and its current log (a retried task gets a new one), and poll that log for new text until the job ends.
"""

from __future__ import annotations

from dataclasses import dataclass

from pai_cli.errors import PaiError
from pai_cli.models import FINAL_STATES, JobDetail, StreamEvent


@dataclass
class FollowState:
    role: str | None
    index: int
    container_log: str | None = None
    task_state: str = "UNKNOWN"
    job_state: str = "UNKNOWN"
    ended: bool = False

    def from_detail(self, detail: JobDetail) -> None:
        roles = detail.task_roles
        if not roles:
            raise PaiError("NoTaskRoleError", f"job {detail.key} has no task roles yet")
        if self.role is None:
            self.role = next(iter(roles))
        role = roles.get(self.role)
        if role is None:
            raise PaiError(
                "NoTaskRoleError",
                f"job {detail.key} has no task role {self.role!r}; it has: {', '.join(roles)}",
            )
        if not 0 <= self.index < len(role.task_statuses):
            raise PaiError(
                "NoTaskError",
                f"task role {self.role} of job {detail.key} has no task {self.index}"
                f" ({len(role.task_statuses)} tasks)",
            )
        task = role.task_statuses[self.index]
        self.container_log = task.container_log or self.container_log
        self.task_state = task.task_state
        self.job_state = detail.state
        self.ended = self.ended or detail.state in FINAL_STATES

    def from_event(self, event: StreamEvent) -> None:
        data = event.data
        if event.event == "job":
            status = data.get("jobStatus")
            if isinstance(status, dict) and isinstance(status.get("state"), str):
                self.job_state = status["state"]
        elif event.event == "task":
            if data.get("taskRoleName") == self.role and data.get("taskIndex") == self.index:
                log = data.get("containerLog")
                self.container_log = log if isinstance(log, str) and log else self.container_log
                self.task_state = str(data.get("taskState", self.task_state))
        elif event.event == "end":
            self.job_state = str(data.get("state", self.job_state))
            self.ended = True


def pick_location(listing: object, stream: str) -> str | None:
    """The URI of ``stream`` in a log listing ``{locations: [{name, uri}]}``."""
    locations = listing.get("locations") if isinstance(listing, dict) else None
    for location in locations if isinstance(locations, list) else []:
        if (
            isinstance(location, dict)
            and location.get("name") == stream
            and isinstance(location.get("uri"), str)
        ):
            return str(location["uri"])
    return None
