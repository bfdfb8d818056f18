"""Typed views of what the REST API answers (OpenPAI's shapes).

Fields are snake_case in Python and camelCase on the wire; every model keeps fields it does not declare
(``extra="allow"``), so a newer server's additions are not lost, and ``wire()`` gives back exactly what
the server sent (for ``-o json``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

FINAL_STATES: frozenset[str] = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})
"""Public OpenPAI job states from which a job never moves again."""


class PaiModel(BaseModel):
    # defer_build: each model's validator is built at its first use, not at every `pai` command's import.
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="allow", defer_build=True
    )

    def wire(self) -> dict[str, Any]:
        """The object as the server sent it (camelCase, only the fields it had)."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


class Message(PaiModel):
    """``{message}`` (and OpenPAI's ``status`` on job mutations)."""

    message: str = ""
    status: int | None = None


# ---- meta and login ------------------------------------------------------------------------------------


class ServerInfo(PaiModel):
    name: str = ""
    version: str = ""
    launcher_type: str = ""
    authn_method: str = ""


class AuthnInfo(PaiModel):
    authn_type: str = Field(default="basic", alias="authn_type")
    login_uri: str = Field(default="", alias="loginURI")
    login_uri_method: str = Field(default="", alias="loginURIMethod")


class OidcConfig(PaiModel):
    enabled: bool = False
    name: str = ""
    basic_login: bool = True


class LoginResult(PaiModel):
    user: str
    token: str
    admin: bool = False
    has_git_hub_pat: bool = Field(default=False, alias="hasGitHubPAT")


class ApplicationToken(PaiModel):
    token: str
    application: bool = True


class TokenCheck(PaiModel):
    username: str
    application: bool = False
    job_specific: bool = False
    admin: bool = False
    iat: int | None = None
    exp: int | None = None


# ---- users, groups, audit ------------------------------------------------------------------------------


class User(PaiModel):
    username: str
    grouplist: list[str] = []
    email: str = ""
    extension: dict[str, Any] = {}
    admin: bool = False
    virtual_cluster: list[str] = []
    storage_config: list[str] = []


class Group(PaiModel):
    groupname: str
    description: str = ""
    external_name: str = ""
    extension: dict[str, Any] = {}

    @property
    def acls(self) -> dict[str, Any]:
        acls = self.extension.get("acls")
        return acls if isinstance(acls, dict) else {}


class GroupMember(PaiModel):
    username: str
    cluster_admin: bool = False


class AuditEntry(PaiModel):
    at: int
    actor: str
    action: str
    target: str
    details: dict[str, Any] = {}


class AuditLog(PaiModel):
    total_count: int
    data: list[AuditEntry]


class DeadLetter(PaiModel):
    """A message a consumer gave up on (this project's, not OpenPAI's), with the error that sent it there;
    ``headers`` and ``body`` (the message as delivered) only in the detail."""

    seq: int
    service: str = ""
    consumer: str = ""
    type: str = ""
    id: str = ""
    subject: str = ""
    error: str = ""
    dead_lettered_at: str | None = None
    size: int = 0
    headers: dict[str, str] | None = None
    body: Any = None


class DeadLetterPage(PaiModel):
    """Oldest first; ``next`` is the ``after`` of the following page (None on the last one)."""

    data: list[DeadLetter]
    next: int | None = None


class DeadLetterReplay(DeadLetter):
    """What a replay did: ``outcome`` as the consumer's service said it, and whether it was audited."""

    outcome: str = ""
    replayed_by: str = ""
    audited: bool = False


# ---- jobs ----------------------------------------------------------------------------------------------


class JobSummary(PaiModel):
    """One row of ``GET /api/v2/jobs``."""

    name: str
    username: str = ""
    state: str = "UNKNOWN"
    sub_state: str | None = None
    execution_type: str | None = None
    tags: list[str] = []
    retries: int = 0
    retry_details: dict[str, int] = {}
    submission_time: int | None = None
    created_time: int | None = None
    launched_time: int | None = None
    completed_time: int | None = None
    app_exit_code: int | None = None
    virtual_cluster: str = ""
    total_gpu_number: float = 0
    total_task_number: int = 0
    total_task_role_number: int = 0
    job_priority: str | None = None
    debug_id: str | None = None

    @property
    def key(self) -> str:
        return f"{self.username}~{self.name}"


class JobPage(PaiModel):
    """``GET /api/v2/jobs?withTotalCount=true``."""

    total_count: int
    data: list[JobSummary]


class JobStatus(PaiModel):
    username: str = ""
    state: str = "UNKNOWN"
    sub_state: str | None = None
    execution_type: str | None = None
    retries: int = 0
    retry_details: dict[str, int] = {}
    submission_time: int | None = None
    created_time: int | None = None
    launched_time: int | None = None
    completed_time: int | None = None
    attempt_id: int | None = None
    attempt_state: str | None = None
    app_exit_code: int | None = None
    app_exit_spec: dict[str, Any] | None = None
    app_exit_diagnostics: str | None = None
    app_exit_messages: dict[str, Any] | None = None
    app_exit_trigger_message: str | None = None
    app_exit_trigger_task_role_name: str | None = None
    app_exit_trigger_task_index: int | None = None
    app_exit_type: str | None = None
    virtual_cluster: str | None = None
    pending_reason: str | None = None
    pending_position: int | None = None


class TaskStatus(PaiModel):
    task_index: int
    task_state: str = "UNKNOWN"
    task_uid: str | None = None
    container_id: str | None = None
    container_ip: str | None = None
    container_node_name: str | None = None
    container_ports: dict[str, Any] | None = None
    # OpenPAI's GPU bit mask (GPU i sets bit i); earlier versions of this platform sent the list.
    container_gpus: int | list[int] | None = None
    container_log: str | None = None
    container_exit_code: int | None = None
    container_exit_spec: dict[str, Any] | None = None
    container_exit_diagnostics: str | None = None
    retries: int = 0
    accountable_retries: int = 0
    created_time: int | None = None
    launched_time: int | None = None
    completed_time: int | None = None
    attempt_id: int | None = None
    attempt_state: str | None = None

    @property
    def gpus(self) -> list[int]:
        """The task's GPU indexes."""
        value = self.container_gpus
        if isinstance(value, int):
            return [i for i in range(value.bit_length()) if value >> i & 1]
        return list(value or [])


class TaskRole(PaiModel):
    task_role_status: dict[str, Any] = {}
    task_statuses: list[TaskStatus] = []


class JobDetail(PaiModel):
    """``GET /api/v2/jobs/{user}~{job}``."""

    name: str
    tags: list[str] = []
    job_priority: str | None = None
    debug_id: str | None = None
    job_status: JobStatus = Field(default_factory=JobStatus)
    task_roles: dict[str, TaskRole] = {}

    @property
    def state(self) -> str:
        return self.job_status.state

    @property
    def key(self) -> str:
        return f"{self.job_status.username}~{self.name}"


class JobAttempt(PaiModel):
    """One of ``GET /api/v2/jobs/{key}/job-attempts``."""

    job_name: str = ""
    user_name: str = ""
    state: str = "UNKNOWN"
    attempt_index: int = 0
    attempt_started_time: int | None = None
    attempt_completed_time: int | None = None
    exit_code: int | None = None
    exit_phrase: str | None = None
    exit_type: str | None = None
    is_latest: bool = False
    task_roles: dict[str, TaskRole] = {}


class TaskAttempt(PaiModel):
    attempt_id: int
    attempt_state: str = "UNKNOWN"
    current_attempt_created_time: int | None = None
    current_attempt_launched_time: int | None = None
    current_attempt_completed_time: int | None = None
    container_node_name: str | None = None
    container_log: str | None = None
    container_exit_code: int | None = None
    container_exit_spec: dict[str, Any] | None = None


class TaskAttempts(PaiModel):
    """``.../taskRoles/{role}/taskIndex/{i}/attempts``: one task and its attempts."""

    username: str = ""
    job_name: str = ""
    job_attempt_id: int = 0
    task_role_name: str = ""
    task_index: int = 0
    task_state: str = "UNKNOWN"
    retries: int = 0
    attempts: list[TaskAttempt] = []


class JobEvent(PaiModel):
    type: str = "Normal"
    reason: str = ""
    message: str = ""
    taskrole_name: str | None = Field(default=None, alias="taskroleName")
    # -1 for an event of the whole job; times are OpenPAI's ISO strings (epoch ms in earlier versions).
    task_index: int | None = None
    first_timestamp: int | str | None = None
    last_timestamp: int | str | None = None
    count: int = 1


class JobEvents(PaiModel):
    total_count: int
    data: list[JobEvent]


class LogLocation(PaiModel):
    name: str
    uri: str


class LogLocations(PaiModel):
    locations: list[LogLocation]


class StreamEvent(PaiModel):
    """One Server-Sent Event of ``GET /api/v2/jobs/{key}/stream``: ``job`` (its jobStatus), ``task`` (one
    task's status, with ``taskRoleName``) or ``end`` (the final state; the stream closes)."""

    event: Literal["job", "task", "end"] | str
    id: int | None = None
    data: dict[str, Any] = {}


# ---- cluster -------------------------------------------------------------------------------------------


class VirtualCluster(PaiModel):
    capacity: float = 0
    used_capacity: float = 0
    max_capacity: float = 0
    dedicated: bool = False
    resources_used: dict[str, float] = {}
    resources_guaranteed: dict[str, float] = {}
    resources_total: dict[str, float] = {}
    resources_available: dict[str, float] = {}


class SkuType(PaiModel):
    cpu: float = 0
    memory: float = 0
    gpu: float = 0


class Storage(PaiModel):
    name: str
    share: bool | None = None
    volume_name: str | None = None
    default: bool | None = None
    type: str | None = None
    storage_type: str | None = None
    read_only: bool | None = None
    mount_options: list[str] | None = None
    data: dict[str, Any] = {}


class Node(PaiModel):
    """A node of ``GET /api/v2/kubernetes/nodes`` (a Kubernetes ``Node``, as OpenPAI answers)."""

    metadata: dict[str, Any] = {}
    spec: dict[str, Any] = {}
    status: dict[str, Any] = {}

    @property
    def name(self) -> str:
        return str(self.metadata.get("name", ""))

    @property
    def ready(self) -> bool | None:
        for condition in self.status.get("conditions") or []:
            if isinstance(condition, dict) and condition.get("type") == "Ready":
                return condition.get("status") == "True"
        return None

    @property
    def schedulable(self) -> bool:
        return not self.spec.get("unschedulable", False)

    def resource(self, kind: Literal["capacity", "allocatable"], name: str) -> str:
        values = self.status.get(kind) or {}
        return str(values.get(name, "")) if isinstance(values, dict) else ""

    @property
    def address(self) -> str:
        for item in self.status.get("addresses") or []:
            if isinstance(item, dict) and item.get("type") == "InternalIP":
                return str(item.get("address", ""))
        return ""


class Template(PaiModel):
    """A marketplace job template (``protocol`` is left out of the list)."""

    id: str
    name: str = ""
    description: str = ""
    tags: list[str] = []
    author: str = ""
    visibility: dict[str, Any] = {}
    star_count: int = 0
    starred: bool = False
    use_count: int = 0
    created_time: int | None = None
    updated_time: int | None = None
    editable: bool = False
    protocol: str | None = None


class TemplatePage(PaiModel):
    total_count: int
    data: list[Template]


class Pod(PaiModel):
    """A task of ``GET /api/v2/kubernetes/pods`` (a Kubernetes ``Pod``, as OpenPAI answers)."""

    metadata: dict[str, Any] = {}
    spec: dict[str, Any] = {}
    status: dict[str, Any] = {}

    @property
    def name(self) -> str:
        return str(self.metadata.get("name", ""))


class ExitSpec(PaiModel):
    revision: int
    source: str
    updated_by: str | None = None
    updated_at: int | None = None
    spec: dict[str, Any] = {}
