"""A waiting job's reason and place in its queue as the scheduler holds them now. Pure.

The scheduler publishes ``scheduling.pending`` when an attempt starts waiting and when the cause of its wait
changes, not each time its place moves (that made the events grow with jobs x placements). So the read model
keeps the cause as last published, and the place it stores is only the one at publication: the job detail asks
the scheduler (``scheduler.pending``) for the current reason and place. When the scheduler does not answer in
time, the detail shows the stored cause and no place (``pendingPosition: null``) rather than a stale one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pai_common.contract.rpc import JobPendingReply


def asks_scheduler(doc: Mapping[str, Any], detail: Mapping[str, Any]) -> bool:
    """Whether the detail shows the scheduler's reason for the current attempt (not a dependency's, nor one
    about another attempt): only then is the scheduler asked for the current one."""
    status = detail["jobStatus"]
    pending = doc.get("pending") or {}
    return bool(
        status.get("state") == "WAITING"
        and pending.get("attempt_id") == status.get("attemptId")
        and status.get("pendingReason") == pending.get("reason")
    )


def apply(detail: dict[str, Any], live: JobPendingReply | None) -> None:
    """Put the scheduler's current reason and place into the detail when they are about its attempt;
    otherwise (no answer, or the attempt no longer waits there: placed since) the stored cause stays,
    without a place."""
    status = detail["jobStatus"]
    if live is not None and live.attempt_id is not None and live.attempt_id == status.get("attemptId"):
        status["pendingReason"] = live.reason
        status["pendingPosition"] = live.position
