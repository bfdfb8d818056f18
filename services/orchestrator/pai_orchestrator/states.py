"""FrameworkController state names (framework and task), and exit codes the orchestrator issues."""

from __future__ import annotations

# Framework (job) attempt states, in the order an attempt passes through them.
ATTEMPT_CREATION_PENDING = "AttemptCreationPending"
ATTEMPT_CREATION_REQUESTED = "AttemptCreationRequested"  # the gang waits for the scheduler
ATTEMPT_PREPARING = "AttemptPreparing"  # placed; tasks launched, none running yet
ATTEMPT_RUNNING = "AttemptRunning"
ATTEMPT_DELETION_PENDING = "AttemptDeletionPending"  # the attempt's outcome is decided
ATTEMPT_DELETION_REQUESTED = "AttemptDeletionRequested"  # its live tasks were asked to stop
ATTEMPT_DELETING = "AttemptDeleting"
ATTEMPT_COMPLETED = "AttemptCompleted"  # cells released; waits here while a retry backs off
COMPLETED = "Completed"  # final

ATTEMPT_STATES = (
    ATTEMPT_CREATION_PENDING,
    ATTEMPT_CREATION_REQUESTED,
    ATTEMPT_PREPARING,
    ATTEMPT_RUNNING,
    ATTEMPT_DELETION_PENDING,
    ATTEMPT_DELETION_REQUESTED,
    ATTEMPT_DELETING,
    ATTEMPT_COMPLETED,
    COMPLETED,
)
# States in which an attempt holds (or waits for) cells and may still change its course.
LIVE_ATTEMPT = (ATTEMPT_CREATION_REQUESTED, ATTEMPT_PREPARING, ATTEMPT_RUNNING)

# Task attempt states.
TASK_CREATION_PENDING = "TaskAttemptCreationPending"
TASK_PREPARING = "TaskAttemptPreparing"
TASK_RUNNING = "TaskAttemptRunning"
TASK_DELETION_REQUESTED = "TaskAttemptDeletionRequested"  # asked to stop; its exit report is awaited
TASK_ATTEMPT_COMPLETED = "TaskAttemptCompleted"  # an earlier attempt of a task that was retried alone
TASK_COMPLETED = "TaskCompleted"
LIVE_TASK = (TASK_PREPARING, TASK_RUNNING)

# Exit codes of the exit spec that the orchestrator itself decides.
EXIT_SUCCEEDED = 0
EXIT_STOP_REQUESTED = -210  # the owner or an admin stopped the job
EXIT_ATTEMPT_COMPLETION = -220  # a task stopped because its attempt completed
EXIT_POD_CREATION_PERMANENT = -200  # the gang can never be placed: the request is invalid here
EXIT_DEPENDENCY_UNSATISFIED = -240  # a dependency ended in a way that can never satisfy the job
EXIT_NODE_LOST = -1001  # the cells of a running attempt are gone (node removed or lost): transient
EXIT_PREEMPTED = -1003  # a transient platform cause: stopped so that higher-priority work can run
EXIT_GANG_ALLOCATION_TIMEOUT = 251  # the gang was not placed within the configured time
# FrameworkController never retries these, whatever the policy says.
NEVER_RETRY_CODES = frozenset({-210, -220, -230})
