"""Every command: a request to one owner to act, done once, surviving restarts of the doer."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from pai_common.contract.base import Command
from pai_common.contract.types import EpochMs, NodeName, StorageMount


class LaunchTask(Command):
    TYPE = "runtime.launch"
    PRODUCER = "orchestrator"
    CONSUMER = "runtime"
    DESCRIPTION = "Start one task of an attempt on the node the scheduler placed it on."

    job_key: str
    attempt_id: int
    task_role: str
    index: int
    task_attempt_id: int = 0
    node: NodeName
    gpus: list[int]
    # A share of gpus[0] (GPU virtualisation): the runtime limits the task to it where it can.
    gpu_milli: int = 0
    gpu_memory_mb: int = 0
    # FPGAs of the node's declared inventory the task got (by index).
    fpgas: list[int] = Field(default_factory=list)
    entrypoint: str
    # PAI_* variables computed by the orchestrator from the job and the whole gang's placement.
    env: dict[str, str] = Field(default_factory=dict)
    # Limits where the backend can enforce them; the image where the backend runs containers.
    cpu: int = 0
    memory_mb: int = 0
    shm_mb: int = 0
    image: str | None = None
    # This task's host ports per label (also in env as PAI_PORT_LIST_*).
    ports: dict[str, list[int]] = Field(default_factory=dict)
    # com.microsoft.pai.runtimeplugin entries of the job, as submitted.
    plugins: list[dict[str, Any]] = Field(default_factory=list)
    # The job has secrets: the runtime fetches them (jobs.secrets RPC) and renders $secrets in the task only.
    has_secrets: bool = False
    # The storages the task mounts; the task does not run where one of them cannot be mounted.
    mounts: list[StorageMount] = Field(default_factory=list)


class KillTask(Command):
    TYPE = "runtime.kill"
    PRODUCER = "orchestrator"
    CONSUMER = "runtime"
    DESCRIPTION = "Stop one task of an attempt (SIGTERM, grace period, SIGKILL of its process group)."

    job_key: str
    attempt_id: int
    task_role: str
    index: int
    task_attempt_id: int = 0
    node: NodeName
    reason: str
    grace_period_s: float = 10.0
    # A preemption with notice: before SIGTERM the runtime writes the notice file ($PAI_PREEMPTION_NOTICE)
    # with this deadline (epoch ms) and the preemptor, so that the task can checkpoint in time.
    preemption_deadline: EpochMs | None = None
    preemptor: str | None = None


class UpdateMembership(Command):
    TYPE = "runtime.membership"
    PRODUCER = "orchestrator"
    CONSUMER = "runtime"
    DESCRIPTION = (
        "An elastic job's gang grew or shrank: rewrite one running task's membership file"
        " ($PAI_MEMBERSHIP_FILE, its PAI_* variables) and send the task SIGWINCH."
    )

    job_key: str
    attempt_id: int
    task_role: str
    index: int
    task_attempt_id: int = 0
    node: NodeName
    # Every PAI_* variable of the task for the new membership (host lists, instance counts); a task that
    # reads its environment at start gets the same names from the file.
    env: dict[str, str] = Field(default_factory=dict)
    # Grows with each change of the attempt's membership: an older update never overwrites a newer one.
    version: int = Field(ge=1)


ALL_COMMANDS: tuple[type[Command], ...] = (LaunchTask, KillTask, UpdateMembership)
COMMANDS_BY_TYPE: dict[str, type[Command]] = {c.TYPE: c for c in ALL_COMMANDS}
