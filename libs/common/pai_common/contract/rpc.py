"""Every RPC: request and reply bodies, with the service and endpoint that answers."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from pai_common.contract.base import RpcReply, RpcRequest

# ---- auth -------------------------------------------------------------------------------------------


class Identity(RpcReply):
    username: str
    admin: bool
    virtual_clusters: list[str]
    application: bool = False


class LoginReply(RpcReply):
    user: str
    token: str
    admin: bool


class LoginRequest(RpcRequest):
    SERVICE = "auth"
    ENDPOINT = "login"
    DESCRIPTION = "Check a user's password and issue a login token."
    REPLY = LoginReply

    username: str = Field(min_length=1, max_length=64, pattern=r"^[\w.-]+$")
    password: str = Field(min_length=1, max_length=256)
    expiration_s: int = Field(default=7 * 24 * 3600, ge=60, le=7 * 24 * 3600)


class VerifyTokenRequest(RpcRequest):
    SERVICE = "auth"
    ENDPOINT = "verify"
    DESCRIPTION = "Who holds this token; refused when it is malformed, expired, forged or revoked."
    REPLY = Identity

    token: str = Field(min_length=1, max_length=4096)


# ---- jobs -------------------------------------------------------------------------------------------


class SubmitJobReply(RpcReply):
    job_key: str


class SubmitJobRequest(RpcRequest):
    SERVICE = "jobs"
    ENDPOINT = "submit"
    DESCRIPTION = "Validate, render and store a protocol v2 job; publishes job.submitted."
    REPLY = SubmitJobReply

    username: str
    virtual_clusters: list[str]
    admin: bool = False
    protocol_yaml: str


class JobDetailReply(RpcReply):
    # OpenPAI's JobDetail shape, built by the jobs service (the read model owner).
    detail: dict[str, Any]


class GetJobRequest(RpcRequest):
    SERVICE = "jobs"
    ENDPOINT = "get"
    DESCRIPTION = "One job's status in OpenPAI's JobDetail shape."
    REPLY = JobDetailReply

    job_key: str


class JobListReply(RpcReply):
    jobs: list[dict[str, Any]]
    total: int


class ListJobsRequest(RpcRequest):
    SERVICE = "jobs"
    ENDPOINT = "list"
    DESCRIPTION = "Job summaries in OpenPAI's JobSummary shape, filtered and paged."
    REPLY = JobListReply

    usernames: list[str] = Field(default_factory=list)
    virtual_cluster: str | None = None
    states: list[str] = Field(default_factory=list)
    keyword: str | None = None
    offset: int = Field(default=0, ge=0)
    limit: int = Field(default=5000, ge=1, le=50000)
    order_field: str = "submissionTime"
    order: Literal["ASC", "DESC"] = "DESC"


class JobSecretsReply(RpcReply):
    secrets: dict[str, Any]


class JobSecretsRequest(RpcRequest):
    SERVICE = "jobs"
    ENDPOINT = "secrets"
    DESCRIPTION = (
        "A job's `secrets`, for the runtime agent that launches one of its tasks (and no one else):"
        " secrets never travel in events or commands."
    )
    REPLY = JobSecretsReply

    job_key: str
    node: str


# ---- storage ----------------------------------------------------------------------------------------


class StorageListReply(RpcReply):
    storages: list[dict[str, Any]]


class ListStoragesRequest(RpcRequest):
    SERVICE = "storage"
    ENDPOINT = "list"
    DESCRIPTION = "The storages a user's groups may mount."
    REPLY = StorageListReply

    username: str
    admin: bool = False


# ---- scheduler --------------------------------------------------------------------------------------


class VirtualClustersReply(RpcReply):
    # OpenPAI's VirtualCluster shape per VC name.
    virtual_clusters: dict[str, dict[str, Any]]


class ListVirtualClustersRequest(RpcRequest):
    SERVICE = "scheduler"
    ENDPOINT = "virtual_clusters"
    DESCRIPTION = "Every virtual cluster's capacity and usage, in OpenPAI's VirtualCluster shape."
    REPLY = VirtualClustersReply


class SkuTypesReply(RpcReply):
    sku_types: dict[str, dict[str, Any]]


class SkuTypesRequest(RpcRequest):
    SERVICE = "scheduler"
    ENDPOINT = "sku_types"
    DESCRIPTION = "The SKU types (per-leaf GPU, CPU and memory), optionally only those a VC has."
    REPLY = SkuTypesReply

    virtual_cluster: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_]+$")


# ---- runtime ----------------------------------------------------------------------------------------


class TaskLogReply(RpcReply):
    content: str
    size: int
    truncated: bool


class TaskLogRequest(RpcRequest):
    SERVICE = "runtime"
    ENDPOINT = "logs"  # addressed to one node: pai.rpc.runtime.<node>.logs
    DESCRIPTION = "The tail of one task's stdout or stderr, read from the node that ran it."
    REPLY = TaskLogReply

    job_key: str
    attempt_id: int
    task_role: str
    index: int
    stream: Literal["stdout", "stderr"] = "stdout"
    tail_bytes: int = Field(default=65536, ge=1, le=16 * 1024 * 1024)


ALL_RPCS: tuple[type[RpcRequest], ...] = (
    LoginRequest,
    VerifyTokenRequest,
    SubmitJobRequest,
    GetJobRequest,
    ListJobsRequest,
    JobSecretsRequest,
    ListStoragesRequest,
    ListVirtualClustersRequest,
    SkuTypesRequest,
    TaskLogRequest,
)
