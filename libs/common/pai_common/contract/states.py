"""FrameworkController states as OpenPAI shows them to users (its ``convertState``).

Part of the contract because every read model (jobs, monitoring, extensions) must map them alike.
"""

from __future__ import annotations

JOB_STATES = ("WAITING", "RUNNING", "STOPPING", "SUCCEEDED", "FAILED", "STOPPED", "UNKNOWN")

USER_STOP_CODES = frozenset({-210, -220})

_WAITING = frozenset({"AttemptCreationPending", "AttemptCreationRequested", "AttemptPreparing"})
_COMPLETING = frozenset(
    {"AttemptDeletionPending", "AttemptDeletionRequested", "AttemptDeleting", "AttemptCompleted"}
)


def final_state(exit_code: int | None) -> str:
    if exit_code == 0:
        return "SUCCEEDED"
    if exit_code in USER_STOP_CODES:
        return "STOPPED"
    return "FAILED"


def public_state(fc_state: str | None, exit_code: int | None) -> str:
    """The public job state; a job with no framework yet is WAITING."""
    if fc_state is None or fc_state in _WAITING:
        return "WAITING"
    if fc_state == "AttemptRunning":
        return "RUNNING"
    if fc_state in _COMPLETING:
        # Between attempts a job still counts as running; only a user stop shows as stopping.
        return "STOPPING" if exit_code in USER_STOP_CODES else "RUNNING"
    if fc_state == "Completed":
        return final_state(exit_code)
    return "UNKNOWN"
