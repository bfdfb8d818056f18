"""Exit spec entries (OpenPAI's appExitSpec shape) for the codes the orchestrator decides itself.

Codes, phrases and classification follow OpenPAI's exit spec; the wording of reason and solution is ours.
Task exits carry the entry the diagnosis service chose; these cover what no task process reported.
"""

from __future__ import annotations

from typing import Any

from pai_orchestrator import states as S


def _entry(
    code: int,
    phrase: str,
    *,
    issuer: str,
    causer: str,
    type_: str,
    stage: str,
    behavior: str,
    reaction: str,
    reason: str,
    solution: list[str],
) -> dict[str, Any]:
    return {
        "code": code,
        "phrase": phrase,
        "issuer": issuer,
        "causer": causer,
        "type": type_,
        "stage": stage,
        "behavior": behavior,
        "reaction": reaction,
        "reason": reason,
        "repro": [],
        "solution": solution,
    }


ENTRIES: dict[int, dict[str, Any]] = {
    S.EXIT_SUCCEEDED: _entry(
        0,
        "Succeeded",
        issuer="USER_CONTAINER",
        causer="USER_CONTAINER",
        type_="SUCCEEDED",
        stage="COMPLETING",
        behavior="UNKNOWN",
        reaction="NEVER_RETRY",
        reason="every task the completion policy waits for ended well",
        solution=[],
    ),
    S.EXIT_POD_CREATION_PERMANENT: _entry(
        S.EXIT_POD_CREATION_PERMANENT,
        "PodCreationPermanentError",
        issuer="PAI_FC",
        causer="USER_SUBMISSION",
        type_="USER_FAILURE",
        stage="SUBMITTING",
        behavior="PERMANENT",
        reaction="NEVER_RETRY",
        reason="the job asks for resources that this cluster can never give it",
        solution=["ask for fewer or smaller tasks, or for a virtual cluster that has the resources"],
    ),
    S.EXIT_DEPENDENCY_UNSATISFIED: _entry(
        S.EXIT_DEPENDENCY_UNSATISFIED,
        "JobDependencyUnsatisfied",
        issuer="PAI_FC",
        causer="USER_SUBMISSION",
        type_="USER_FAILURE",
        stage="SUBMITTING",
        behavior="PERMANENT",
        reaction="NEVER_RETRY",
        reason="a job this one depends on ended in a way that can never satisfy the dependency",
        solution=[
            "read appExitDiagnostics: it names the dependency and how it ended",
            "fix and rerun the dependency, then submit this job again (or depend on it with on: completed)",
        ],
    ),
    S.EXIT_STOP_REQUESTED: _entry(
        S.EXIT_STOP_REQUESTED,
        "StopFrameworkRequested",
        issuer="PAI_FC",
        causer="USER_STOP",
        type_="USER_STOP",
        stage="UNKNOWN",
        behavior="PERMANENT",
        reaction="NEVER_RETRY",
        reason="the job was stopped on request",
        solution=[],
    ),
    S.EXIT_ATTEMPT_COMPLETION: _entry(
        S.EXIT_ATTEMPT_COMPLETION,
        "FrameworkAttemptCompletion",
        issuer="PAI_FC",
        causer="USER_STOP",
        type_="USER_STOP",
        stage="UNKNOWN",
        behavior="PERMANENT",
        reaction="NEVER_RETRY",
        reason="the task was still going when its job attempt completed, so it was stopped",
        solution=[],
    ),
    S.EXIT_NODE_LOST: _entry(
        S.EXIT_NODE_LOST,
        "PodNodeLost",
        issuer="PAI_K8S",
        causer="PAI_K8S",
        type_="PLATFORM_FAILURE",
        stage="RUNNING",
        behavior="TRANSIENT",
        reaction="ALWAYS_RETRY",
        reason="the node or devices the attempt ran on left the cluster",
        solution=["wait for the next attempt", "contact the cluster admin if it keeps happening"],
    ),
    S.EXIT_PREEMPTED: _entry(
        S.EXIT_PREEMPTED,
        "PodPreemptedForCriticalPod",
        issuer="PAI_K8S",
        causer="PAI_K8S",
        type_="PLATFORM_FAILURE",
        stage="RUNNING",
        behavior="TRANSIENT",
        reaction="ALWAYS_RETRY",
        reason="the attempt gave its resources to a job of higher priority",
        solution=["wait for the next attempt, which queues again without using up a retry"],
    ),
    S.EXIT_GANG_ALLOCATION_TIMEOUT: _entry(
        S.EXIT_GANG_ALLOCATION_TIMEOUT,
        "JobGangAllocationTimeout",
        issuer="PAI_RUNTIME",
        causer="RESOURCE_ALLOCATION_TIMEOUT",
        type_="RESOURCE_ALLOCATION_TIMEOUT",
        stage="ALLOCATING",
        behavior="TRANSIENT_CONFLICT",
        reaction="ALWAYS_BACKOFF_RETRY",
        reason="the resources of every task of the job could not all be found in time",
        solution=[
            "wait for the next attempt",
            "ask for fewer tasks or smaller ones",
            "ask the cluster admin for more quota in the virtual cluster",
        ],
    ),
}


def exit_spec(code: int) -> dict[str, Any] | None:
    entry = ENTRIES.get(code)
    return dict(entry) if entry is not None else None
