"""Value types shared by several messages."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pai_common.contract.base import Message

# Epoch milliseconds, as OpenPAI reports every time.
EpochMs = int


class TaskRoleSpec(Message):
    """One task role of a job, after the protocol has been validated and rendered."""

    name: str
    instances: int = Field(ge=1)
    gpu: int = Field(ge=0)
    cpu: int = Field(ge=0)
    memory_mb: int = Field(ge=0)
    # The rendered entrypoint: deployment pre-commands, commands and post-commands joined by newlines.
    entrypoint: str
    min_failed_instances: int | None = 1
    min_succeeded_instances: int | None = None
    task_retry_count: int = 0
    # extras.hivedScheduler.taskRoles.<role>: acceptable leaf (SKU) types, none meaning any; a pinned cell.
    sku_types: tuple[str, ...] = ()
    pinned_cell: str | None = None
    # A share of one GPU instead of whole GPUs (gpu is then 0): thousandths of its compute, MB of its memory.
    gpu_milli: int = Field(default=0, ge=0, le=999)
    gpu_memory_mb: int = Field(default=0, ge=0)
    # extraContainerOptions.infiniband: every task of the job under one InfiniBand domain.
    infiniband: bool = False


class JobSpec(Message):
    """What the jobs service hands to the rest of the platform for a submitted job."""

    job_key: str  # "<user>~<name>", OpenPAI's frameworkName
    user: str
    name: str
    virtual_cluster: str = "default"
    priority: int = 10  # HiveD priority; OpenPAI's "test" class by default
    job_retry_count: int = Field(default=0, ge=0)
    task_roles: list[TaskRoleSpec] = Field(min_length=1)
    submitted_at: EpochMs
    # HiveD's lazy preemption: when preempted, keep running as opportunistic work where possible.
    lazy_preemption: bool = False


class PodRequest(Message):
    """One task of a gang as the scheduler sees it."""

    task_role: str
    index: int = Field(ge=0)
    gpu: int = Field(ge=0)
    cpu: int = Field(ge=0)
    memory_mb: int = Field(ge=0)
    sku_types: tuple[str, ...] = ()
    pinned_cell: str | None = None
    gpu_milli: int = Field(default=0, ge=0, le=999)
    gpu_memory_mb: int = Field(default=0, ge=0)
    infiniband: bool = False


class Placement(Message):
    """Where one task of a gang was placed."""

    task_role: str
    index: int
    node: str
    gpus: list[int]
    # Filled in by the scheduler from the node's registration; tasks use it to find their peers.
    host_ip: str = ""
    # Set when the task got a share of gpus[0] rather than whole GPUs.
    gpu_milli: int = 0
    gpu_memory_mb: int = 0


class GpuInfo(Message):
    index: int
    model: str
    memory_mb: int
    uuid: str


FailureType = Literal["Succeeded", "Transient", "Permanent", "Unknown"]
JobState = Literal["WAITING", "RUNNING", "STOPPING", "SUCCEEDED", "FAILED", "STOPPED", "UNKNOWN"]


class TaskSnapshot(Message):
    """A task as the orchestrator knows it; the read model copies it."""

    task_role: str
    index: int
    state: str  # FrameworkController task state
    attempt_id: int = 0
    node: str | None = None
    host_ip: str | None = None
    gpus: list[int] = Field(default_factory=list)
    exit_code: int | None = None
    exit_diagnostics: str | None = None
    created_at: EpochMs | None = None
    launched_at: EpochMs | None = None
    completed_at: EpochMs | None = None


class FrameworkSnapshot(Message):
    """The whole framework (job) status, versioned so that stale copies are ignored."""

    job_key: str
    version: int
    state: str  # FrameworkController framework state
    attempt_id: int
    retries: int = 0
    accountable_retries: int = 0
    created_at: EpochMs | None = None
    launched_at: EpochMs | None = None
    completed_at: EpochMs | None = None
    attempt_created_at: EpochMs | None = None
    attempt_launched_at: EpochMs | None = None
    attempt_completed_at: EpochMs | None = None
    exit_code: int | None = None
    exit_type: str | None = None
    exit_diagnostics: str | None = None
    trigger_task_role: str | None = None
    trigger_task_index: int | None = None
    tasks: list[TaskSnapshot] = Field(default_factory=list)


class AttemptRef(Message):
    job_key: str
    attempt_id: int
