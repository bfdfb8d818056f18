"""extras.preemption (beyond OpenPAI): ``{graceSeconds: N}``, how long the job's tasks get between a
preemption notice (SIGTERM and the file at ``$PAI_PREEMPTION_NOTICE``) and being killed, so that they can
checkpoint; the VC caps it. Pure."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from pai_common.contract.types import FrameworkSnapshot

FIELD: Final = "extras.preemption"
# Beyond a day a notice is no longer a notice; the VC's cap is usually far lower.
MAX_GRACE_S: Final = 86_400

Report = Callable[[str, str], None]


def parse(value: object, report: Report) -> float | None:
    """The job's grace in seconds, or None when it names none; problems go to ``report(field, message)``."""
    if not isinstance(value, dict):
        report(FIELD, "must be a mapping {graceSeconds: <seconds>}")
        return None
    for extra in sorted(set(value) - {"graceSeconds"}):
        report(f"{FIELD}.{extra}", "is not a field of extras.preemption (graceSeconds)")
    grace: Any = value.get("graceSeconds")
    if grace is None:
        return None
    if isinstance(grace, bool) or not isinstance(grace, int | float) or not 0 <= grace <= MAX_GRACE_S:
        report(f"{FIELD}.graceSeconds", f"must be a number of seconds from 0 to {MAX_GRACE_S}, got {grace!r}")
        return None
    return float(grace)


def view(snapshot: FrameworkSnapshot | None) -> dict[str, Any]:
    """What the job detail adds to ``jobStatus``, only when it applies (as ``pendingReason``): the current
    attempt's notice (``preemption``) and ``resume: true`` once the attempt was started with PAI_RESUME=1."""
    out: dict[str, Any] = {}
    notice = snapshot.preemption if snapshot is not None else None
    if notice is not None:
        out["preemption"] = {
            "preemptor": notice.preemptor,
            "noticeTime": notice.noticed_at,
            "graceSeconds": notice.grace_seconds,
            "deadline": notice.deadline,
        }
    if snapshot is not None and snapshot.resume:
        out["resume"] = True
    return out
