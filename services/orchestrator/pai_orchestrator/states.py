"""FrameworkController state names (framework and task), and exit codes the orchestrator issues."""

from __future__ import annotations

# Framework (job) attempt states.
ATTEMPT_CREATION_REQUESTED = "AttemptCreationRequested"
ATTEMPT_PREPARING = "AttemptPreparing"
ATTEMPT_RUNNING = "AttemptRunning"
ATTEMPT_COMPLETED = "AttemptCompleted"
COMPLETED = "Completed"

# Task attempt states.
TASK_CREATION_PENDING = "TaskAttemptCreationPending"
TASK_PREPARING = "TaskAttemptPreparing"
TASK_RUNNING = "TaskAttemptRunning"
TASK_COMPLETED = "TaskCompleted"

# Exit codes of the exit spec that the orchestrator itself decides.
EXIT_SUCCEEDED = 0
EXIT_ATTEMPT_COMPLETION = -220  # a task stopped because its attempt completed
EXIT_POD_CREATION_PERMANENT = -200  # the gang can never be placed: the request is invalid here
EXIT_NODE_LOST = -1001  # the cells of a running attempt are gone (node removed or lost): transient
EXIT_PREEMPTED = -1003  # a transient platform cause: stopped so that higher-priority work can run
