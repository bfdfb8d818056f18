"""The orchestrator's tunables, handed to the pure core (the shell builds them from its settings)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Policy:
    # A gang not placed within this many ms of its attempt's start fails with code 251; 0 waits forever,
    # as HiveD's queue does.
    gang_allocation_timeout_ms: int = 0
    # Back-off before retrying a transient-conflict failure (and a gang allocation timeout): a delay drawn
    # from this range, deterministic per job and attempt. FrameworkController's defaults: 60 s to 900 s.
    conflict_retry_min_ms: int = 60_000
    conflict_retry_max_ms: int = 900_000
    # Uncounted retries of a task's own transient exit code (137, 143…) before the job fails anyway.
    transient_exit_retry_limit: int = 20
    # What a stopped task gets between SIGTERM and SIGKILL: when its attempt completed or was stopped,
    # and when it was preempted (longer, so that it can checkpoint).
    kill_grace_s: float = 10.0
    preempt_grace_s: float = 30.0
    # An attempt's cells are released once every stopped task reported its exit, or at the latest this
    # long after its grace period ended (a task on a lost node never reports).
    stop_confirm_margin_ms: int = 15_000
    # Bounds on what one framework document keeps, so that a job retried forever stays small.
    attempt_history_limit: int = 100
    attempt_task_budget: int = 1_000  # task records kept across the attempt history
    task_history_limit: int = 20
    transition_log_limit: int = 200

    def __post_init__(self) -> None:
        if self.gang_allocation_timeout_ms < 0:
            raise ValueError("gang_allocation_timeout_ms must be >= 0")
        if not 0 <= self.conflict_retry_min_ms <= self.conflict_retry_max_ms:
            raise ValueError("conflict retry delays must satisfy 0 <= min <= max")
        if self.kill_grace_s < 0 or self.preempt_grace_s < 0 or self.stop_confirm_margin_ms < 0:
            raise ValueError("grace periods must be >= 0")
        limits = (self.attempt_history_limit, self.task_history_limit, self.transition_log_limit)
        if min(limits) < 1 or self.attempt_task_budget < 0:
            raise ValueError("history limits must be >= 1")


DEFAULT_POLICY = Policy()
