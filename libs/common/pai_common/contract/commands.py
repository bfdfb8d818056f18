"""Every command: a request to one owner to act, done once, surviving restarts of the doer."""

from __future__ import annotations

from pydantic import Field

from pai_common.contract.base import Command


class LaunchTask(Command):
    TYPE = "runtime.launch"
    PRODUCER = "orchestrator"
    CONSUMER = "runtime"
    DESCRIPTION = "Start one task of an attempt on the node the scheduler placed it on."

    job_key: str
    attempt_id: int
    task_role: str
    index: int
    node: str
    gpus: list[int]
    # A share of gpus[0] (GPU virtualisation): the runtime limits the task to it where it can.
    gpu_milli: int = 0
    gpu_memory_mb: int = 0
    entrypoint: str
    # PAI_* variables computed by the orchestrator from the job and the whole gang's placement.
    env: dict[str, str] = Field(default_factory=dict)


class KillTask(Command):
    TYPE = "runtime.kill"
    PRODUCER = "orchestrator"
    CONSUMER = "runtime"
    DESCRIPTION = "Stop one task of an attempt (SIGTERM, grace period, SIGKILL of its process group)."

    job_key: str
    attempt_id: int
    task_role: str
    index: int
    node: str
    reason: str
    grace_period_s: float = 10.0


ALL_COMMANDS: tuple[type[Command], ...] = (LaunchTask, KillTask)
COMMANDS_BY_TYPE: dict[str, type[Command]] = {c.TYPE: c for c in ALL_COMMANDS}
