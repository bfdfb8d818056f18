"""Value types shared by several messages."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from pai_common.contract.base import NODE_NAME_MAX, NODE_NAME_PATTERN, Message

# Epoch milliseconds, as OpenPAI reports every time.
EpochMs = int
# A node's name (base.NODE_NAME_PATTERN): Kubernetes node names with dots included.
NodeName = Annotated[str, Field(min_length=1, max_length=NODE_NAME_MAX, pattern=NODE_NAME_PATTERN)]


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
    # resourcePerInstance.ports: how many ports each task needs per label (e.g. {"http": 1, "nccl": 2}).
    ports: dict[str, int] = Field(default_factory=dict)
    # extraContainerOptions.shmMB; the dockerImage prerequisite's uri (runtimes with containers use it).
    shm_mb: int = Field(default=512, ge=0)
    image: str | None = None


StorageType = Literal["nfs", "samba", "azureFile", "azureBlob", "local", "pvc"]


class StorageMount(Message):
    """A storage a job's tasks mount, resolved by the storage service when the job is submitted. Carries no
    secret: credentials stay with the storage service (``storage.credentials``) or in a Kubernetes Secret."""

    name: str
    type: StorageType
    # Absolute path inside the task: /mnt/<name> unless the job gives mountPath.
    mount_path: str
    read_only: bool = False
    # The submitting user's folder inside a storage that is not shared (OpenPAI's subPath <user>).
    sub_path: str | None = None
    mount_options: list[str] = Field(default_factory=list)
    # The type's data: server/path (nfs), address (samba), accountName/shareName (azureFile),
    # accountName/containerName (azureBlob), path (local), claimName (pvc).
    data: dict[str, str] = Field(default_factory=dict)
    # A Kubernetes Secret in the tasks' namespace holding the credentials, where the admin named one.
    secret_name: str | None = None
    # The storage service keeps credentials for it: the runtime asks for them when it mounts.
    has_credentials: bool = False


# extras.dependencies[].on: the dependency must succeed, or only end (whatever its final state).
DependencyCondition = Literal["succeeded", "completed"]


class JobDependency(Message):
    """A job another job waits for (extras.dependencies); it must exist when the dependent is submitted."""

    job_key: str  # "<user>~<name>"
    on: DependencyCondition = "succeeded"


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
    # extras.gangAllocation (default true): false lets tasks start alone and enables taskRetryCount.
    gang_allocation: bool = True
    # extras["com.microsoft.pai.runtimeplugin"], as submitted (plugin name, parameters, failurePolicy).
    runtime_plugins: list[dict[str, Any]] = Field(default_factory=list)
    # The job has `secrets`; they never travel on the bus: the runtime asks the jobs service (jobs.secrets).
    has_secrets: bool = False
    # What every task mounts (extras.storages, the teamwise_storage plugin, or the user's defaults).
    storages: list[StorageMount] = Field(default_factory=list)
    # extras.dependencies: the job's first attempt starts only once each of these ended as it asks.
    dependencies: list[JobDependency] = Field(default_factory=list)
    # extras.preemption.graceSeconds: how long the job's tasks get between a preemption notice and being
    # killed (capped by the VC); None: the platform's default.
    preemption_grace_s: float | None = Field(default=None, ge=0)
    # extras.elastic: the elastic task roles and the fewest instances each may run with (its taskNumber is
    # the most). The gang starts with the minimum and grows into idle cells; a preemption shrinks it first.
    elastic: dict[str, int] = Field(default_factory=dict)


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
    # A task of an elastic role beyond its minimum: placed on its own, only into idle cells (opportunistic
    # work), and preempted alone (the gang shrinks) before the gang itself is.
    growth: bool = False


class Placement(Message):
    """Where one task of a gang was placed."""

    task_role: str
    index: int
    node: NodeName
    gpus: list[int]
    # Filled in by the scheduler from the node's registration; tasks use it to find their peers.
    host_ip: str = ""
    # Set when the task got a share of gpus[0] rather than whole GPUs.
    gpu_milli: int = 0
    gpu_memory_mb: int = 0
    # FPGAs the task got (their indices in the node's declared FPGA inventory), when its SKU type is an
    # FPGA; ``gpus`` is then empty. The runtime passes them to the task (devices, PAI_FPGA_* variables).
    fpgas: list[int] = Field(default_factory=list)
    # Host ports per label, chosen by the orchestrator when the gang is placed (ports.assign_ports).
    ports: dict[str, list[int]] = Field(default_factory=dict)


class GpuInfo(Message):
    index: int
    model: str
    memory_mb: int
    uuid: str
    # What NVML tells where it is present (None where it does not, or for simulated GPUs).
    pci_bus_id: str | None = None
    numa_node: int | None = None
    ecc_enabled: bool | None = None
    # False once the agent finds the GPU bad (uncorrectable ECC errors, lost from NVML, declared bad).
    healthy: bool = True


class DeviceInfo(Message):
    """A device other than a GPU, from the node's declared inventory: an FPGA or an InfiniBand HCA."""

    index: int
    model: str
    id: str
    healthy: bool = True
    # The device files a task using it needs (e.g. /dev/xclmgmt256, /dev/dri/renderD128), and the
    # Kubernetes device plugin's resource name for it (e.g. xilinx.com/fpga-…), as the inventory declares.
    paths: list[str] = Field(default_factory=list)
    resource: str | None = None


class GpuSharing(Message):
    """Whether the node enforces GPU shares (one CUDA MPS control daemon per shared GPU), and why not."""

    mps: bool = False
    reason: str = ""


class GpuShareStatus(Message):
    """How a task's GPU share is held on its node: by an MPS daemon's limits, or only by the scheduler."""

    milli: int = Field(ge=0, le=999)
    memory_mb: int = Field(ge=0)
    enforced: bool
    note: str = ""


# FrameworkController's completion types; TransientConflict is retried after a randomised back-off.
FailureType = Literal["Succeeded", "Transient", "TransientConflict", "Permanent", "Unknown"]
# An entry of the exit spec as OpenPAI's API shows it (appExitSpec / containerExitSpec):
# code, phrase, issuer, causer, type, stage, behavior, reaction, reason, repro, solution.
ExitSpecEntry = dict[str, Any]
JobState = Literal["WAITING", "RUNNING", "STOPPING", "SUCCEEDED", "FAILED", "STOPPED", "UNKNOWN"]


class TaskAttemptRecord(Message):
    """One finished attempt of a task (task retries when gang allocation is off), for the attempts routes."""

    attempt_id: int
    state: str
    node: str | None = None
    host_ip: str | None = None
    ports: dict[str, list[int]] = Field(default_factory=dict)
    gpus: list[int] = Field(default_factory=list)
    exit_code: int | None = None
    exit_spec: ExitSpecEntry | None = None
    exit_diagnostics: str | None = None
    created_at: EpochMs | None = None
    launched_at: EpochMs | None = None
    completed_at: EpochMs | None = None


class TaskSnapshot(Message):
    """A task as the orchestrator knows it; the read model copies it."""

    task_role: str
    index: int
    state: str  # FrameworkController task state
    attempt_id: int = 0  # the task attempt (0 unless the task was retried on its own)
    node: str | None = None
    host_ip: str | None = None
    gpus: list[int] = Field(default_factory=list)
    fpgas: list[int] = Field(default_factory=list)
    # A GPU share: whether its node enforces it (reported by the runtime when the task started).
    gpu_share: GpuShareStatus | None = None
    ports: dict[str, list[int]] = Field(default_factory=dict)
    exit_code: int | None = None
    exit_spec: ExitSpecEntry | None = None
    exit_diagnostics: str | None = None
    created_at: EpochMs | None = None
    launched_at: EpochMs | None = None
    completed_at: EpochMs | None = None
    retries: int = 0
    accountable_retries: int = 0
    # Earlier attempts of this task within the current job attempt, oldest first.
    history: list[TaskAttemptRecord] = Field(default_factory=list)


class PreemptionNotice(Message):
    """An attempt was preempted: its tasks were told (SIGTERM and the notice file) at ``noticed_at`` to be
    gone by ``deadline``, when what is left of them is killed."""

    preemptor: str
    noticed_at: EpochMs
    grace_seconds: float = Field(ge=0)
    deadline: EpochMs


class JobAttemptRecord(Message):
    """One finished attempt of a job, kept for OpenPAI's job-attempts routes."""

    attempt_id: int
    state: str  # FrameworkController state when it ended (AttemptCompleted or Completed)
    created_at: EpochMs | None = None
    launched_at: EpochMs | None = None
    completed_at: EpochMs | None = None
    exit_code: int | None = None
    exit_type: str | None = None
    exit_spec: ExitSpecEntry | None = None
    exit_diagnostics: str | None = None
    trigger_task_role: str | None = None
    trigger_task_index: int | None = None
    tasks: list[TaskSnapshot] = Field(default_factory=list)
    # The attempt was preempted with notice; it resumed an earlier, preempted one (PAI_RESUME=1).
    preemption: PreemptionNotice | None = None
    resume: bool = False
    # How many of the attempt's task records were left out of ``tasks`` (to keep a long history within
    # what a document and a bus message hold); 0: ``tasks`` is the attempt's whole list.
    tasks_omitted: int = 0


class DependencyStatus(Message):
    """A dependency as the orchestrator follows it: what it must do, and how it ended once it did."""

    job_key: str
    on: DependencyCondition = "succeeded"
    # The dependency's final state (SUCCEEDED, FAILED, STOPPED) once it completed; None while it has not.
    ended: JobState | None = None

    @property
    def satisfied(self) -> bool:
        return self.ended is not None and (self.on == "completed" or self.ended == "SUCCEEDED")

    @property
    def unsatisfiable(self) -> bool:
        return self.ended is not None and not self.satisfied


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
    # "STOP" once a stop was asked for (OpenPAI's executionType).
    execution_type: Literal["START", "STOP"] = "START"
    # retries split by cause: user (accountable), platform (transient), resource (gang/scheduling).
    user_retries: int = 0
    platform_retries: int = 0
    resource_retries: int = 0
    # When the next attempt starts (epoch ms) while a retry waits out its back-off.
    retry_at: EpochMs | None = None
    exit_spec: ExitSpecEntry | None = None
    # OpenPAI's appExitMessages: {container, runtime, launcher}.
    exit_messages: dict[str, Any] | None = None
    # Earlier attempts, oldest first; the current one is described by the fields above.
    attempts: list[JobAttemptRecord] = Field(default_factory=list)
    # extras.dependencies as followed so far; the first attempt waits until every one is satisfied.
    dependencies: list[DependencyStatus] = Field(default_factory=list)
    # The current attempt was preempted with this notice; it resumes a preempted one (PAI_RESUME=1).
    preemption: PreemptionNotice | None = None
    resume: bool = False


class AttemptRef(Message):
    job_key: str
    attempt_id: int


class Victim(AttemptRef):
    """A gang a preemptor needs stopped: a whole attempt, or one task of an attempt whose tasks are placed
    one by one (``task_role``/``index`` set), with the most notice its VC allows it (None: no cap)."""

    task_role: str | None = None
    index: int | None = None
    grace_cap_seconds: float | None = Field(default=None, ge=0)
    # The task is an elastic job's growth: its gang shrinks (job.elastic.resized says so), it is not stopped.
    growth: bool = False
