"""Where a task attempt runs, as the framework that launched it knows: the authority for its secrets.

The orchestrator commits a task's placement in the same transaction that stages its launch command, so
by the time a runtime agent holds the command, this answer already names the agent's node. A read model
fed by events (the jobs service's) may not yet; that lag once failed every job with secrets.
"""

from __future__ import annotations

from pai_orchestrator import states as S
from pai_orchestrator.core import Framework, task_key


def live_node(
    fw: Framework, attempt_id: int, task_role: str, index: int, task_attempt_id: int
) -> tuple[str | None, str]:
    """(the node, "") where the task attempt is placed and not finished; otherwise (None, why not)."""
    if attempt_id != fw.attempt_id:
        return None, f"attempt {attempt_id} is not the job's current attempt ({fw.attempt_id})"
    task = fw.tasks.get(task_key(task_role, index))
    if task is None:
        return None, f"the job has no task {task_role}[{index}]"
    if task.task_attempt_id != task_attempt_id:
        current = task.task_attempt_id
        return None, f"task {task_role}[{index}] attempt {task_attempt_id} is not its current one ({current})"
    if task.state not in S.LIVE_TASK or task.node is None:
        return None, f"task {task_role}[{index}] is not starting or running (it is {task.state})"
    return task.node, ""
