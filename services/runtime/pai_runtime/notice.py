"""The preemption notice a task finds at ``$PAI_PREEMPTION_NOTICE`` when it is preempted.

Before the runtime sends SIGTERM to a preempted task it writes this file: the deadline (when whatever is
left of the task is killed) and who preempted it, so that a task that checkpoints knows how long it has.
The file does not exist until a notice; a task may poll for it or read it in its SIGTERM handler. The next
attempt of the job gets ``PAI_RESUME=1``. Pure, but for ``write`` (an atomic replace of one file).
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pai_common.contract.commands import KillTask

FILE_NAME = "preemption-notice.json"
ENV = "PAI_PREEMPTION_NOTICE"


def content(cmd: KillTask) -> dict[str, Any] | None:
    """The notice of a kill that is a preemption with notice; None for any other stop."""
    if cmd.preemption_deadline is None:
        return None
    deadline = datetime.fromtimestamp(cmd.preemption_deadline / 1000, UTC)
    return {
        "deadline": deadline.isoformat().replace("+00:00", "Z"),
        "deadlineMs": cmd.preemption_deadline,
        "graceSeconds": cmd.grace_period_s,
        "preemptor": cmd.preemptor,
        "jobAttemptId": cmd.attempt_id,
        "reason": cmd.reason,
    }


def write(path: Path, notice: dict[str, Any]) -> None:
    """Write the notice whole or not at all (a task reading it never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    with os.fdopen(fd, "w") as f:
        json.dump(notice, f)
    os.replace(tmp, path)
