"""FrameworkController's fancy retry policy, for job attempts and for single tasks. Pure.

- codes -210/-220/-230 (stops) never retry, nor does success;
- Transient failures always retry and are not counted against the limit (a platform retry) — except
  that a task's own exit code (> 0) classified transient, such as 137 or 143, retries uncounted only
  ``policy.transient_exit_retry_limit`` times: a command that kills itself every time must not loop
  forever (FrameworkController would). Platform causes (negative codes: preemption, lost nodes) stay
  unbounded;
- TransientConflict failures retry the same way, after a randomised back-off at the job level;
- Permanent failures never retry;
- a gang allocation timeout ("Resource") retries after the back-off while resource retries are left;
- anything else (Unknown) retries while the accountable (user) retries are below the limit.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

from pai_orchestrator import states as S
from pai_orchestrator.policy import Policy

# What an attempt's failure is, for the retry policy: the diagnosis' FailureType, plus "Resource" for
# attempts that never got their gang placed.
FailureClass = Literal["Succeeded", "Transient", "TransientConflict", "Permanent", "Unknown", "Resource"]
RetryKind = Literal["user", "platform", "resource"]


@dataclass(frozen=True)
class RetryDecision:
    retry: bool
    kind: RetryKind | None = None
    delay_ms: int = 0
    why: str = ""


def backoff_ms(job_key: str, attempt_id: int, policy: Policy) -> int:
    """A delay in the policy's range, the same for the same job and attempt (so a replay agrees)."""
    low, high = policy.conflict_retry_min_ms, policy.conflict_retry_max_ms
    digest = int.from_bytes(hashlib.sha256(f"{job_key}|{attempt_id}".encode()).digest()[:8], "big")
    return low + digest % (high - low + 1)


def job_retry(
    failure: str,
    exit_code: int,
    *,
    job_key: str,
    attempt_id: int,
    user_retries: int,
    resource_retries: int,
    limit: int,
    policy: Policy,
    platform_retries: int = 0,
) -> RetryDecision:
    if exit_code == S.EXIT_SUCCEEDED or failure == "Succeeded":
        return RetryDecision(False, why="succeeded")
    if exit_code in S.NEVER_RETRY_CODES:
        return RetryDecision(False, why=f"exit code {exit_code} never retries")
    if failure == "Permanent":
        return RetryDecision(False, why="a permanent failure never retries")
    if failure in ("Transient", "TransientConflict") and exit_code > 0:
        cap = policy.transient_exit_retry_limit
        if platform_retries >= cap:
            return RetryDecision(
                False, why=f"exit code {exit_code} came back after {platform_retries} uncounted retries"
            )
    if failure == "Transient":
        return RetryDecision(True, "platform", 0, "a transient failure retries, uncounted")
    if failure == "TransientConflict":
        delay = backoff_ms(job_key, attempt_id, policy)
        return RetryDecision(True, "platform", delay, f"a transient conflict retries after {delay} ms")
    if failure == "Resource":
        if resource_retries < limit:
            delay = backoff_ms(job_key, attempt_id, policy)
            return RetryDecision(True, "resource", delay, f"resource retry {resource_retries + 1} of {limit}")
        return RetryDecision(False, why=f"no resource retries left ({resource_retries} of {limit} used)")
    if user_retries < limit:
        return RetryDecision(True, "user", 0, f"retry {user_retries + 1} of {limit}")
    return RetryDecision(False, why=f"no retries left ({user_retries} of {limit} used)")


def task_retry(failure: str, exit_code: int, *, accountable: int, limit: int) -> RetryDecision:
    """A single task's retry (gang allocation off). Conflicts retry at once, as FrameworkController's
    tasks do: the back-off is a framework-level remedy."""
    if exit_code == S.EXIT_SUCCEEDED or exit_code in S.NEVER_RETRY_CODES or failure == "Permanent":
        return RetryDecision(False)
    if failure in ("Transient", "TransientConflict"):
        return RetryDecision(True, "platform", 0, "a transient task failure retries, uncounted")
    if accountable < limit:
        return RetryDecision(True, "user", 0, f"task retry {accountable + 1} of {limit}")
    return RetryDecision(False, why=f"no task retries left ({accountable} of {limit} used)")
