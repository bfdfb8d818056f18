"""Every event of the platform: facts, in the past tense."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from pai_common.contract.base import Event
from pai_common.contract.types import (
    AttemptRef,
    DependencyCondition,
    DeviceInfo,
    EpochMs,
    ExitSpecEntry,
    FailureType,
    FrameworkSnapshot,
    GpuInfo,
    GpuShareStatus,
    GpuSharing,
    JobSpec,
    JobState,
    NodeName,
    Placement,
    PodRequest,
    PreemptionNotice,
    Victim,
)


class JobSubmitted(Event):
    TYPE = "job.submitted"
    PRODUCER = "jobs"
    CONSUMERS = ("orchestrator", "storage", "auth")
    DESCRIPTION = (
        "A job passed validation and was stored; the orchestrator starts its first attempt; auth records it"
        " in the audit log."
    )

    spec: JobSpec

    def subject_key(self) -> str:
        return self.spec.job_key


class JobStopRequested(Event):
    TYPE = "job.stop.requested"
    PRODUCER = "jobs"
    CONSUMERS = ("orchestrator", "auth")
    DESCRIPTION = (
        "The owner or an admin asked to stop a job (executionType STOP). The orchestrator stops every task"
        " of the current attempt and completes the job as STOPPED (-210), whatever stage it is in; auth"
        " records it in the audit log."
    )

    job_key: str
    requested_by: str
    requested_at: EpochMs

    def subject_key(self) -> str:
        return self.job_key


class SchedulingRequested(Event):
    TYPE = "scheduling.requested"
    PRODUCER = "orchestrator"
    CONSUMERS = ("scheduler",)
    DESCRIPTION = "An attempt needs its gang of tasks placed."

    job_key: str
    attempt_id: int
    virtual_cluster: str
    priority: int
    pods: list[PodRequest] = Field(min_length=1)
    lazy_preemption: bool = False
    # extras.gangAllocation false: each pod is placed on its own as capacity allows (one scheduling.allocated
    # per pod), and released when its task completes (job.task.completed).
    gang_allocation: bool = True
    # Pods with ``growth`` (an elastic job's tasks beyond their roles' minimum) are each a gang of their own,
    # opportunistic: the orchestrator asks for them once the attempt's gang (its other pods) is placed, with
    # a second scheduling.requested of the same attempt that holds only growth pods (a request mixing both
    # is rejected).

    def subject_key(self) -> str:
        return self.job_key


class SchedulingAllocated(Event):
    TYPE = "scheduling.allocated"
    PRODUCER = "scheduler"
    CONSUMERS = ("orchestrator",)
    DESCRIPTION = "Every task of an attempt's gang was placed on a node with its devices."

    job_key: str
    attempt_id: int
    placements: list[Placement]

    def subject_key(self) -> str:
        return self.job_key


class SchedulingRejected(Event):
    TYPE = "scheduling.rejected"
    PRODUCER = "scheduler"
    CONSUMERS = ("orchestrator", "jobs")
    DESCRIPTION = "An attempt's gang can never be placed on this cluster (it asks for more than exists)."

    job_key: str
    attempt_id: int
    reason: str

    def subject_key(self) -> str:
        return self.job_key


class SchedulingPreempting(Event):
    TYPE = "scheduling.preempting"
    PRODUCER = "scheduler"
    CONSUMERS = ("orchestrator", "jobs")
    DESCRIPTION = (
        "A gang of higher priority needs cells that lower-priority gangs hold; those victims must stop."
        " The preemptor is allocated once every victim's attempt has been released."
    )

    job_key: str
    attempt_id: int
    # Each with the most notice its VC allows (preemptionGraceSeconds; a reclaimed borrower also at most
    # the cluster's reclaimGraceSeconds): the orchestrator gives the victim's own grace up to that cap.
    victims: list[Victim] = Field(min_length=1)

    def subject_key(self) -> str:
        return self.job_key


class SchedulingLost(Event):
    TYPE = "scheduling.lost"
    PRODUCER = "scheduler"
    CONSUMERS = ("orchestrator",)
    DESCRIPTION = (
        "A new cluster config no longer has the cells a running attempt holds (a node was removed, its"
        " devices changed), or an admin drains a node it runs on: the attempt must stop; it is retried like"
        " any attempt lost to the platform. A drain stops it gracefully (the preemption grace period)."
    )

    job_key: str
    attempt_id: int
    reason: str
    drain: bool = False

    def subject_key(self) -> str:
        return self.job_key


class SchedulingDowngraded(Event):
    TYPE = "scheduling.downgraded"
    PRODUCER = "scheduler"
    CONSUMERS = ("jobs",)
    DESCRIPTION = (
        "Lazy preemption: the attempt keeps running where it is, but as opportunistic work, so that a"
        " higher-priority job could run within the VC's quota; it may be preempted later like any"
        " opportunistic job."
    )

    job_key: str
    attempt_id: int
    preemptor: AttemptRef | None = None

    def subject_key(self) -> str:
        return self.job_key


class SchedulingPending(Event):
    TYPE = "scheduling.pending"
    PRODUCER = "scheduler"
    CONSUMERS = ("jobs",)
    DESCRIPTION = (
        "An attempt's gang starts waiting, or the cause of its wait changed; says why in words a user can"
        " act on, and its place in its queue then. Not published when only the place (or a count in the"
        " reason) moves: the current ones are asked of the scheduler (scheduler.pending)."
    )

    job_key: str
    attempt_id: int
    reason: str = Field(max_length=2000)
    # The 1-based place in its VC's queue when published (None while it waits for a preemption).
    position: int | None = Field(default=None, ge=1)

    def subject_key(self) -> str:
        return self.job_key


class SchedulingReleased(Event):
    TYPE = "scheduling.released"
    PRODUCER = "scheduler"
    # No service consumes it today; extensions may.
    CONSUMERS = ()
    DESCRIPTION = "The cells of an attempt were given back."

    job_key: str
    attempt_id: int

    def subject_key(self) -> str:
        return self.job_key


class NodeRegistered(Event):
    TYPE = "node.registered"
    PRODUCER = "runtime"
    CONSUMERS = ("scheduler",)
    DESCRIPTION = "A runtime agent started on a node and declared its devices."

    node: NodeName
    host_ip: str
    cpu: int
    memory_mb: int
    gpus: list[GpuInfo]
    simulated: bool
    # Declared in the node's inventory file (NVML does not see them).
    fpgas: list[DeviceInfo] = Field(default_factory=list)
    infiniband: list[DeviceInfo] = Field(default_factory=list)
    # Where the GPU list comes from: "nvml", "declared" (inventory file) or "simulated" (a count).
    inventory_source: str = "simulated"
    # Whether GPU shares are enforced here (CUDA MPS), and if not, why.
    gpu_sharing: GpuSharing = Field(default_factory=GpuSharing)

    def subject_key(self) -> str:
        return self.node


class NodeHealthChanged(Event):
    TYPE = "node.health.changed"
    PRODUCER = "scheduler"
    CONSUMERS = ("scheduler",)
    DESCRIPTION = (
        "A node became bad (its agent stopped sending heartbeats) or healthy again, or the set of its GPUs"
        " reported unhealthy changed (bad_gpus). Bad nodes and bad GPUs get no new work; what runs there is"
        " not killed for it."
    )

    node: NodeName
    healthy: bool
    reason: str
    # Set when the event reports GPU health: the indices of the node's GPUs that are bad now (empty once
    # all recovered). None: the event is about the node as a whole.
    bad_gpus: list[int] | None = None

    def subject_key(self) -> str:
        return self.node


class TaskRunning(Event):
    TYPE = "task.running"
    PRODUCER = "runtime"
    CONSUMERS = ("orchestrator",)
    DESCRIPTION = "A task's process started on its node."

    job_key: str
    attempt_id: int
    task_role: str
    index: int
    task_attempt_id: int = 0
    node: NodeName
    host_ip: str
    pid: int
    started_at: EpochMs
    # How it runs: "host" (a local process), "docker"/"podman" (the job's image), "kubernetes" (a pod).
    backend: str = "host"
    # A task with a GPU share: whether the node enforces it (an MPS daemon's limits) and, if not, why.
    gpu_share: GpuShareStatus | None = None

    def subject_key(self) -> str:
        return self.job_key


class TaskExited(Event):
    TYPE = "task.exited"
    PRODUCER = "runtime"
    CONSUMERS = ("diagnosis",)
    DESCRIPTION = "A task's process ended; carries the exit code, the signal and the tail of its logs."

    job_key: str
    attempt_id: int
    task_role: str
    index: int
    task_attempt_id: int = 0
    node: NodeName
    exit_code: int
    signal: int | None = None
    log_tail: str = Field(default="", max_length=65536)
    finished_at: EpochMs
    # Where the backend has them: Kubernetes pod/container reasons (OOMKilled, Evicted, ImagePullBackOff…).
    pod_reason: str | None = None
    container_reason: str | None = None
    # NVML's view of the task's GPUs at exit (xid, ecc errors…), free-form per GPU index.
    gpu_health: dict[str, Any] | None = None

    def subject_key(self) -> str:
        return self.job_key


class TaskDiagnosed(Event):
    TYPE = "task.diagnosed"
    PRODUCER = "diagnosis"
    CONSUMERS = ("orchestrator",)
    DESCRIPTION = "A task exit classified by the exit spec: code, failure type and what to do about it."

    job_key: str
    attempt_id: int
    task_role: str
    index: int
    task_attempt_id: int = 0
    exit_code: int
    spec_code: int
    spec_phrase: str
    failure_type: FailureType
    message: str
    finished_at: EpochMs
    # The exit spec entry (OpenPAI's containerExitSpec shape), its reaction, and the explanation.
    reaction: str = ""
    exit_spec: ExitSpecEntry | None = None
    matched: str | None = Field(default=None, max_length=8192)
    explanation: str = ""
    suggestion: str = ""

    def subject_key(self) -> str:
        return self.job_key


class FrameworkChanged(Event):
    TYPE = "framework.changed"
    PRODUCER = "orchestrator"
    CONSUMERS = ("jobs",)
    DESCRIPTION = "The framework (job) status changed; the snapshot is versioned, older versions are ignored."

    snapshot: FrameworkSnapshot

    def subject_key(self) -> str:
        return self.snapshot.job_key


class JobAttemptCompleted(Event):
    TYPE = "job.attempt.completed"
    PRODUCER = "orchestrator"
    CONSUMERS = ("scheduler", "jobs")
    DESCRIPTION = "An attempt ended (it may be retried); its cells can be released."

    job_key: str
    attempt_id: int
    exit_code: int

    def subject_key(self) -> str:
        return self.job_key


class JobTaskCompleted(Event):
    TYPE = "job.task.completed"
    PRODUCER = "orchestrator"
    CONSUMERS = ("scheduler",)
    DESCRIPTION = (
        "A task of an attempt whose tasks are placed one by one (gangAllocation false) completed for good (no"
        " task retry follows; a retried task keeps its cells), or an elastic job's growth task stopped (done,"
        " or shrunk away by a preemption): the cells it alone held can be released while the attempt goes on."
    )

    job_key: str
    attempt_id: int
    task_role: str
    index: int

    def subject_key(self) -> str:
        return self.job_key


class JobCompleted(Event):
    TYPE = "job.completed"
    PRODUCER = "orchestrator"
    CONSUMERS = ("storage", "orchestrator")
    DESCRIPTION = (
        "A job reached its final state and will not run again; the jobs that depend on it (the"
        " orchestrator's own consumer) may start or fail."
    )

    job_key: str
    state: JobState
    exit_code: int
    completed_at: EpochMs
    # Whether the job mounted storages: the storage service releases their use then, and has nothing to do
    # otherwise. True where a producer does not say (an event of an earlier version).
    mounted_storages: bool = True
    # Whether jobs were listed as waiting for this one when it completed: the orchestrator's own consumer
    # has nothing to do otherwise (one that is listed later finds the final state itself). True where a
    # producer does not say (an event of an earlier version).
    has_dependents: bool = True

    def subject_key(self) -> str:
        return self.job_key


class JobDependencyResolved(Event):
    TYPE = "job.dependency.resolved"
    PRODUCER = "orchestrator"
    CONSUMERS = ("jobs",)
    DESCRIPTION = (
        "A dependency of a waiting job ended: it satisfies the dependent (which starts once all do), or"
        " it never can (the dependent fails with -240 JobDependencyUnsatisfied)."
    )

    job_key: str  # the dependent job
    dependency: str
    on: DependencyCondition
    dependency_state: JobState
    satisfied: bool

    def subject_key(self) -> str:
        return self.job_key


class JobPreemptionNoticed(Event):
    TYPE = "job.preemption.noticed"
    PRODUCER = "orchestrator"
    CONSUMERS = ("jobs",)
    DESCRIPTION = (
        "A preempted attempt's tasks were told to stop (SIGTERM and a notice file with the deadline) and"
        " get the grace before they are killed; the attempt is retried uncounted, with PAI_RESUME=1."
    )

    job_key: str
    attempt_id: int
    notice: PreemptionNotice

    def subject_key(self) -> str:
        return self.job_key


class JobElasticResized(Event):
    TYPE = "job.elastic.resized"
    PRODUCER = "orchestrator"
    CONSUMERS = ("jobs",)
    DESCRIPTION = (
        "An elastic job's gang grew (growth tasks placed in idle cells) or shrank (growth tasks preempted"
        " alone); its running tasks were sent their new membership."
    )

    job_key: str
    attempt_id: int
    change: Literal["grew", "shrunk"]
    # The tasks that joined or left ("<role>/<index>"), and each elastic role's instances now.
    tasks: list[str] = Field(min_length=1)
    instances: dict[str, int]
    # The attempt's membership version the tasks were sent (PAI_MEMBERSHIP_VERSION).
    version: int = Field(ge=1)
    reason: str = ""

    def subject_key(self) -> str:
        return self.job_key


class UserChanged(Event):
    TYPE = "user.changed"
    PRODUCER = "auth"
    CONSUMERS = ("gateway",)
    DESCRIPTION = (
        "A user was created, changed or deleted (never with a password or hash); the gateway drops cached"
        " identities of that user."
    )

    username: str
    change: Literal["created", "updated", "password_changed", "deleted"]
    admin: bool
    grouplist: list[str]
    actor: str
    at: EpochMs

    def subject_key(self) -> str:
        return self.username


class GroupChanged(Event):
    TYPE = "group.changed"
    PRODUCER = "auth"
    CONSUMERS = ("gateway",)
    DESCRIPTION = "A group or its ACLs (admin, virtualClusters, storageConfigs) changed."

    groupname: str
    change: Literal["created", "updated", "deleted"]
    acls: dict[str, Any]
    actor: str
    at: EpochMs

    def subject_key(self) -> str:
        return self.groupname


class TokenIssued(Event):
    TYPE = "token.issued"
    PRODUCER = "auth"
    CONSUMERS = ()
    DESCRIPTION = "A login or application token was issued; carries its id, never the token."

    username: str
    token_id: str
    application: bool
    expires_at: EpochMs | None
    at: EpochMs

    def subject_key(self) -> str:
        return self.username


class TokenRevoked(Event):
    TYPE = "token.revoked"
    PRODUCER = "auth"
    CONSUMERS = ("gateway",)
    DESCRIPTION = (
        "Tokens stopped being valid (logout, revocation, password change, user deleted); carries their ids,"
        " never the tokens. The gateway drops them from its identity cache at once."
    )

    username: str
    token_ids: list[str]
    reason: Literal["logout", "revoked", "password_changed", "user_deleted"]
    actor: str
    at: EpochMs

    def subject_key(self) -> str:
        return self.username


class JobTagsChanged(Event):
    TYPE = "job.tags.changed"
    PRODUCER = "jobs"
    CONSUMERS = ("auth",)
    DESCRIPTION = (
        "The owner or an admin added a tag to a job or removed one; auth records it in the audit log."
    )

    job_key: str
    tag: str = Field(min_length=1, max_length=256)
    removed: bool = False
    by: str = Field(min_length=1, max_length=64)
    at: EpochMs

    def subject_key(self) -> str:
        return self.job_key


class StorageChanged(Event):
    TYPE = "storage.changed"
    PRODUCER = "storage"
    CONSUMERS = ("auth",)
    DESCRIPTION = (
        "An admin created, replaced or deleted a storage definition; auth records it in the audit log."
        " Carries the storage's name and type, never its credentials."
    )

    name: str = Field(min_length=1, max_length=256)
    change: Literal["created", "updated", "deleted"]
    storage_type: str = Field(default="", max_length=64)
    by: str = Field(min_length=1, max_length=64)
    at: EpochMs

    def subject_key(self) -> str:
        return self.name


class DeadLetterReplayed(Event):
    TYPE = "deadletter.replayed"
    PRODUCER = "gateway"
    CONSUMERS = ("auth",)
    DESCRIPTION = (
        "An admin replayed a dead letter: the consumer that had given up on the message handled it again"
        " (outcome replayed) or found it already handled (duplicate), and the letter left the dead-letter"
        " stream. Carries the error that had sent it there; auth records it in the audit log."
    )

    seq: int = Field(ge=1)
    service: str = Field(max_length=64)
    consumer: str = Field(min_length=1, max_length=300)
    message_type: str = Field(default="", max_length=128)
    message_id: str = Field(default="", max_length=256)
    error: str = Field(default="", max_length=4000)
    outcome: Literal["replayed", "duplicate"]
    by: str = Field(min_length=1, max_length=64)
    at: EpochMs

    def subject_key(self) -> str:
        return self.consumer


class NodeSchedulableChanged(Event):
    TYPE = "node.schedulable.changed"
    PRODUCER = "scheduler"
    CONSUMERS = ("scheduler", "auth")
    DESCRIPTION = (
        "An admin (or an alert action) cordoned a node (no new work goes there; with drain, the gangs"
        " running there are stopped gracefully and retried elsewhere) or made it schedulable again. The"
        " scheduler applies it to its allocator; auth records it in the audit log."
    )

    node: NodeName
    schedulable: bool
    drain: bool = False
    by: str = Field(min_length=1, max_length=64)
    reason: str = Field(default="", max_length=1000)
    at: EpochMs

    def subject_key(self) -> str:
        return self.node


class AlertActionTaken(Event):
    TYPE = "alert.action.taken"
    PRODUCER = "monitoring"
    CONSUMERS = ("auth",)
    DESCRIPTION = (
        "The alert handler ran an action for a firing alert (mail, stop or tag a job, cordon a node, call a"
        " webhook), or gave up on it; auth records it in the audit log. Never carries a secret."
    )

    alertname: str
    fingerprint: str
    action: str
    target: str
    outcome: Literal["done", "failed"]
    detail: str = Field(default="", max_length=2000)
    actor: str
    at: EpochMs

    def subject_key(self) -> str:
        return self.target


ALL_EVENTS: tuple[type[Event], ...] = (
    JobSubmitted,
    JobStopRequested,
    SchedulingRequested,
    SchedulingAllocated,
    SchedulingRejected,
    SchedulingPreempting,
    SchedulingLost,
    SchedulingDowngraded,
    SchedulingPending,
    SchedulingReleased,
    NodeRegistered,
    NodeHealthChanged,
    TaskRunning,
    TaskExited,
    TaskDiagnosed,
    FrameworkChanged,
    JobAttemptCompleted,
    JobTaskCompleted,
    JobCompleted,
    JobDependencyResolved,
    JobPreemptionNoticed,
    JobElasticResized,
    UserChanged,
    GroupChanged,
    TokenIssued,
    TokenRevoked,
    JobTagsChanged,
    StorageChanged,
    DeadLetterReplayed,
    NodeSchedulableChanged,
    AlertActionTaken,
)

EVENTS_BY_TYPE: dict[str, type[Event]] = {e.TYPE: e for e in ALL_EVENTS}
