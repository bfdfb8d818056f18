"""What a Pod's status means for its task: still pending, running, or exited with which code.

Pure, over the Pod as the API server returns it (JSON, camelCase). Kubernetes reasons become the codes of
OpenPAI's exit spec (FrameworkController's pod failure spec): an evicted pod is -1000, a lost node
-1001, an out-of-memory kill -1200, a container that could not start -1201…-1205; an image that cannot be
pulled is 254, the code of OpenPAI's image checker. Anything else is the container's own exit code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

POD_REASONS: list[tuple[str, int]] = [
    (r"Evicted", -1000),
    (r"NodeLost", -1001),
    (r"OutOf\S+", -1002),
    (r"Preempting", -1003),
    (r"DeadlineExceeded", -1004),
    (r"Forbidden", -1005),
    (r"UnexpectedAdmissionError|UnknownReason|InvalidNodeInfo|UnexpectedPredicateFailureType", -1006),
]
# Conditions Kubernetes sets on a pod it is about to delete (DisruptionTarget), by reason.
DISRUPTIONS = {
    "DeletionByTaintManager": ("NodeLost", -1001),  # the node became unreachable
    "TerminationByKubelet": ("Evicted", -1000),  # node pressure
    "EvictionByEvictionAPI": ("Evicted", -1000),
    "PreemptionByScheduler": ("Preempting", -1003),
    "PreemptionByKubeScheduler": ("Preempting", -1003),
    "DeletionByPodGC": ("NodeLost", -1001),  # its node object was deleted
}
IMAGE_PULL_FAILURES = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull")
IMAGE_PULL_EXIT = 254
OOM_EXIT = -1200
EXTERNAL_DELETE_EXIT = -101
CREATE_FAILURES = ("CreateContainerConfigError", "CreateContainerError", "RunContainerError")


@dataclass(frozen=True)
class PodOutcome:
    state: Literal["pending", "running", "exited"]
    exit_code: int | None = None
    signal: int | None = None
    pod_reason: str | None = None
    container_reason: str | None = None
    message: str = ""


PENDING = PodOutcome("pending")


def _app_status(pod: dict[str, Any]) -> dict[str, Any]:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return statuses[0] if statuses else {}


def _cannot_run(code: int, message: str) -> int:
    if code == 125:
        return -1201
    if code == 126:
        return -1202
    if code == 127:
        return -1203
    if code == 128 and re.search(r"(?i)nvidia-container-cli: device error: unknown device id", message):
        return -1205
    if code == 128 and re.search(r"(?i)not found|cannot find|no such", message):
        return -1203
    return -1204 if code == 128 else code


def interpret(pod: dict[str, Any], deleted: bool = False) -> PodOutcome:
    status = pod.get("status") or {}
    phase = status.get("phase")
    pod_reason = status.get("reason")
    message = status.get("message") or ""
    app = _app_status(pod)
    state = app.get("state") or {}
    terminated = state.get("terminated")
    waiting = state.get("waiting")

    if pod_reason:
        for pattern, code in POD_REASONS:
            if re.fullmatch(f"(?i){pattern}", pod_reason):
                return PodOutcome("exited", code, None, pod_reason, None, message)
    if terminated:
        reason = terminated.get("reason")
        code = int(terminated.get("exitCode", 0))
        signal = terminated.get("signal") or None
        detail = terminated.get("message") or ""
        if signal is None and 128 < code < 160:
            signal = code - 128  # the runtime reports a signal death as 128 + its number
        if reason == "OOMKilled":
            return PodOutcome("exited", OOM_EXIT, signal, pod_reason, reason, detail)
        if reason == "ContainerCannotRun" or reason == "StartError":
            return PodOutcome("exited", _cannot_run(code, detail), None, pod_reason, reason, detail)
        return PodOutcome("exited", code, signal, pod_reason, reason, detail)
    if waiting and waiting.get("reason") in IMAGE_PULL_FAILURES:
        reason = waiting["reason"]
        return PodOutcome("exited", IMAGE_PULL_EXIT, None, pod_reason, reason, waiting.get("message") or "")
    if waiting and waiting.get("reason") in CREATE_FAILURES:
        reason = waiting["reason"]
        return PodOutcome("exited", -1201, None, pod_reason, reason, waiting.get("message") or "")
    for condition in status.get("conditions") or []:
        if condition.get("type") == "DisruptionTarget" and condition.get("status") == "True":
            reason, code = DISRUPTIONS.get(condition.get("reason", ""), ("PodExternalDeleted", -101))
            if deleted or phase == "Failed":
                return PodOutcome("exited", code, None, reason, None, condition.get("message") or "")
    if phase == "Succeeded":
        return PodOutcome("exited", 0)
    if phase == "Failed":
        return PodOutcome(
            "exited", -300, None, pod_reason, None, message or "pod failed without a failed container"
        )
    if deleted:
        return PodOutcome("exited", EXTERNAL_DELETE_EXIT, None, "PodExternalDeleted", None, message)
    if phase == "Running" and state.get("running") is not None:
        return PodOutcome("running")
    return PENDING
