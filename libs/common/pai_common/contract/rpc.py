"""Every RPC: request and reply bodies, with the service and endpoint that answers."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from pai_common.contract.base import Message, RpcReply, RpcRequest
from pai_common.contract.types import NodeName, StorageMount

# The furthest a list may be paged: well past any real list, within every database's 32-bit skip.
MAX_OFFSET = 2**31 - 1

# ---- auth -------------------------------------------------------------------------------------------


class Identity(RpcReply):
    username: str
    admin: bool
    virtual_clusters: list[str]
    application: bool = False
    # The token's id (its `jti`), never the token: lets a cache drop it when token.revoked names it.
    token_id: str = ""


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
    # The caller's network address, for throttling repeated failures per client as well as per user.
    client: str = Field(default="", max_length=256)


class VerifyTokenRequest(RpcRequest):
    SERVICE = "auth"
    ENDPOINT = "verify"
    DESCRIPTION = "Who holds this token; refused when it is malformed, expired, forged or revoked."
    REPLY = Identity

    token: str = Field(min_length=1, max_length=4096)


class AuthorizeReply(RpcReply):
    username: str
    admin: bool
    groups: list[str]
    virtual_clusters: list[str]
    storage_configs: list[str]
    # Whether the user may use the virtual cluster and the storage asked about (both, when both given).
    allowed: bool


class AuthorizeRequest(RpcRequest):
    SERVICE = "auth"
    ENDPOINT = "authorize"
    DESCRIPTION = (
        "A user's rights from their groups: admin, virtual clusters, storages; and whether they may use"
        " the virtual cluster and/or storage named. Unknown user: NoUserError."
    )
    REPLY = AuthorizeReply

    username: str = Field(min_length=1, max_length=64)
    virtual_cluster: str | None = None
    storage: str | None = None


class AuthMessageReply(RpcReply):
    message: str


class UserReply(RpcReply):
    # OpenPAI's user shape: username, grouplist, email, extension, admin, virtualCluster, storageConfig.
    user: dict[str, Any]


class UserListReply(RpcReply):
    users: list[dict[str, Any]]


class GetUserRequest(RpcRequest):
    SERVICE = "auth"
    ENDPOINT = "user_get"
    DESCRIPTION = "One user as `actor` may see them (private keys only to the user themself)."
    REPLY = UserReply

    actor: str
    username: str = Field(min_length=1, max_length=64)


class ListUsersRequest(RpcRequest):
    SERVICE = "auth"
    ENDPOINT = "user_list"
    DESCRIPTION = "Every user as `actor` may see them."
    REPLY = UserListReply

    actor: str


class CreateUserRequest(RpcRequest):
    SERVICE = "auth"
    ENDPOINT = "user_create"
    DESCRIPTION = "Create a user (admin only); publishes user.changed."
    REPLY = AuthMessageReply

    actor: str
    username: str = Field(min_length=1, max_length=64, pattern=r"^[\w.-]+$")
    password: str = Field(min_length=6, max_length=256)
    email: str = Field(default="", max_length=256)
    admin: bool = False
    virtual_clusters: list[str] = Field(default_factory=list)
    extension: dict[str, Any] = Field(default_factory=dict)


class UpdateUserRequest(RpcRequest):
    SERVICE = "auth"
    ENDPOINT = "user_update"
    DESCRIPTION = (
        "Change a user: fields left None stay as they are. Self or admin for email, password and extension;"
        " admin for rights. A new password revokes the user's non-application tokens but the caller's."
    )
    REPLY = AuthMessageReply

    actor: str
    username: str = Field(min_length=1, max_length=64)
    email: str | None = Field(default=None, max_length=256)
    password: str | None = Field(default=None, min_length=6, max_length=256)
    # Required when a non-admin changes their own password.
    old_password: str | None = Field(default=None, max_length=256)
    admin: bool | None = None
    virtual_clusters: list[str] | None = None
    grouplist: list[str] | None = None
    add_group: str | None = None
    remove_group: str | None = None
    extension: dict[str, Any] | None = None
    # Merge `extension` into the stored one (true) or replace it (false).
    merge_extension: bool = True
    # The id (jti) of the token making the request: a password change ends the user's other sessions,
    # never the one that made it.
    keep_token_id: str | None = Field(default=None, max_length=128)


class DeleteUserRequest(RpcRequest):
    SERVICE = "auth"
    ENDPOINT = "user_delete"
    DESCRIPTION = "Delete a non-admin user and revoke their tokens (admin only)."
    REPLY = AuthMessageReply

    actor: str
    username: str = Field(min_length=1, max_length=64)


class GroupReply(RpcReply):
    # OpenPAI's group shape: groupname, description, externalName, extension.acls.
    group: dict[str, Any]


class GroupListReply(RpcReply):
    groups: list[dict[str, Any]]


class GetGroupRequest(RpcRequest):
    SERVICE = "auth"
    ENDPOINT = "group_get"
    DESCRIPTION = "One group."
    REPLY = GroupReply

    groupname: str = Field(min_length=1, max_length=64)


class ListGroupsRequest(RpcRequest):
    SERVICE = "auth"
    ENDPOINT = "group_list"
    DESCRIPTION = "Every group."
    REPLY = GroupListReply


class CreateGroupRequest(RpcRequest):
    SERVICE = "auth"
    ENDPOINT = "group_create"
    DESCRIPTION = "Create a group with its ACLs (admin only); publishes group.changed."
    REPLY = AuthMessageReply

    actor: str
    groupname: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_]+$")
    description: str = Field(default="", max_length=1024)
    external_name: str = Field(default="", max_length=256)
    extension: dict[str, Any] = Field(default_factory=dict)


class UpdateGroupRequest(RpcRequest):
    SERVICE = "auth"
    ENDPOINT = "group_update"
    DESCRIPTION = "Change a group (admin only); fields left None stay as they are."
    REPLY = AuthMessageReply

    actor: str
    groupname: str = Field(min_length=1, max_length=64)
    description: str | None = Field(default=None, max_length=1024)
    external_name: str | None = Field(default=None, max_length=256)
    extension: dict[str, Any] | None = None
    merge_extension: bool = True


class DeleteGroupRequest(RpcRequest):
    SERVICE = "auth"
    ENDPOINT = "group_delete"
    DESCRIPTION = "Delete a group and remove it from every user (admin only; not the built-in groups)."
    REPLY = AuthMessageReply

    actor: str
    groupname: str = Field(min_length=1, max_length=64)


class GroupMembersReply(RpcReply):
    # OpenPAI's userlist shape: [{username, clusterAdmin}].
    members: list[dict[str, Any]]


class GroupMembersRequest(RpcRequest):
    SERVICE = "auth"
    ENDPOINT = "group_members"
    DESCRIPTION = "The users of a group (admin only)."
    REPLY = GroupMembersReply

    actor: str
    groupname: str = Field(min_length=1, max_length=64)


class TokenListReply(RpcReply):
    tokens: list[str]


class ListTokensRequest(RpcRequest):
    SERVICE = "auth"
    ENDPOINT = "token_list"
    DESCRIPTION = "The caller's own valid tokens."
    REPLY = TokenListReply

    actor: str


class TokenReply(RpcReply):
    token: str


class CreateApplicationTokenRequest(RpcRequest):
    SERVICE = "auth"
    ENDPOINT = "token_application"
    DESCRIPTION = "Issue a long-lived application token to the caller; publishes token.issued."
    REPLY = TokenReply

    actor: str


class RevokeTokenRequest(RpcRequest):
    SERVICE = "auth"
    ENDPOINT = "token_revoke"
    DESCRIPTION = "Revoke one of the caller's own tokens (another user's: ForbiddenUserError)."
    REPLY = AuthMessageReply

    actor: str
    token: str = Field(min_length=1, max_length=4096)
    reason: Literal["revoked", "logout"] = "revoked"


class AuditLogReply(RpcReply):
    # Oldest last: [{at, actor, action, target, details}].
    entries: list[dict[str, Any]]
    total: int


class AuditLogRequest(RpcRequest):
    SERVICE = "auth"
    ENDPOINT = "audit"
    DESCRIPTION = "Recorded changes of users, groups, rights and tokens, newest first (admin only)."
    REPLY = AuditLogReply

    actor: str
    target: str | None = None
    by: str | None = None
    # Bounded so that no database is handed a skip it cannot hold (found by the API fuzz: a 500).
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET)
    limit: int = Field(default=100, ge=1, le=1000)


class OidcConfigReply(RpcReply):
    enabled: bool
    # The provider's label for a "Sign in with ..." button.
    name: str
    basic_login: bool


class OidcConfigRequest(RpcRequest):
    SERVICE = "auth"
    ENDPOINT = "oidc_config"
    DESCRIPTION = (
        "Whether OpenID Connect sign-in is configured (and its label), and whether basic login is on."
    )
    REPLY = OidcConfigReply


class OidcBeginReply(RpcReply):
    # The provider's authorization endpoint with the request's parameters (state, nonce, PKCE challenge).
    authorize_url: str


class OidcBeginRequest(RpcRequest):
    SERVICE = "auth"
    ENDPOINT = "oidc_begin"
    DESCRIPTION = (
        "Start an OpenID Connect sign-in: store a one-time state with its nonce, PKCE verifier and the path"
        " to return to, and answer the provider URL to send the browser to. OIDC off: NoApiError."
    )
    REPLY = OidcBeginReply

    # A path on the platform's own origin (never another site: no open redirects).
    redirect: str = Field(
        default="/", min_length=1, max_length=2048, pattern=r"^/([^/\\\s\x00-\x1f][^\\\s\x00-\x1f]*)?$"
    )
    # The gateway's callback URL as the browser sees it; the auth setting PAI_OIDC_REDIRECT_URI wins.
    redirect_uri: str = Field(min_length=1, max_length=2048)
    # A random value the gateway also put in a cookie of the browser: the sign-in must come back to the
    # browser that started it (no login CSRF).
    binding: str = Field(min_length=16, max_length=256)


class OidcReturnReply(RpcReply):
    # Where to send the browser: the stored path, with a one-time login code or an error to show.
    redirect: str
    login_code: str | None = None
    error: str | None = None


class OidcReturnRequest(RpcRequest):
    SERVICE = "auth"
    ENDPOINT = "oidc_return"
    DESCRIPTION = (
        "The provider sent the browser back: consume the state (once), redeem the code with the PKCE"
        " verifier, verify the ID token (signature, issuer, audience, expiry, nonce), create or update the"
        " user and their mapped groups, and answer a one-time login code (60 s). Unknown, expired or used"
        " state: UnauthorizedUserError."
    )
    REPLY = OidcReturnReply

    state: str = Field(min_length=1, max_length=256)
    code: str | None = Field(default=None, max_length=4096)
    # The provider's own error (`error`, `error_description` of RFC 6749), when it refused.
    error: str | None = Field(default=None, max_length=256)
    error_description: str | None = Field(default=None, max_length=1024)
    # The browser's binding cookie ("" when it sent none).
    binding: str = Field(default="", max_length=256)


class OidcExchangeRequest(RpcRequest):
    SERVICE = "auth"
    ENDPOINT = "oidc_exchange"
    DESCRIPTION = "Trade a one-time login code for a login token (once, within 60 s of the sign-in)."
    REPLY = LoginReply

    code: str = Field(min_length=1, max_length=256)


class OidcLogoutReply(RpcReply):
    # The provider's end-session URL (with the return address), or None when it has none.
    end_session_url: str | None = None


class OidcLogoutRequest(RpcRequest):
    SERVICE = "auth"
    ENDPOINT = "oidc_logout"
    DESCRIPTION = "Where to send the browser to end the provider's session too. OIDC off: NoApiError."
    REPLY = OidcLogoutReply

    post_logout_redirect_uri: str | None = Field(default=None, max_length=2048)


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
    # How long the submission may wait for its turn; past it, it is refused with 429 and nothing is done,
    # so that a caller waiting longer than this (plus one write) always learns whether the job exists.
    wait_ms: int = Field(default=4000, ge=0, le=600_000)


class JobDetailReply(RpcReply):
    # OpenPAI's JobDetail shape, built by the jobs service (the read model owner).
    detail: dict[str, Any]


class GetJobRequest(RpcRequest):
    SERVICE = "jobs"
    ENDPOINT = "get"
    DESCRIPTION = "One job's status in OpenPAI's JobDetail shape."
    REPLY = JobDetailReply

    job_key: str
    # An earlier (or the current) job attempt: OpenPAI's `/attempts/{id}` JobDetail; None = the job now.
    attempt_id: int | None = Field(default=None, ge=0)


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
    # Bounded so that no database is handed a skip it cannot hold (found by the API fuzz: a 500).
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET)
    limit: int = Field(default=5000, ge=1, le=50000)
    order_field: str = "submissionTime"
    order: Literal["ASC", "DESC"] = "DESC"
    # OpenPAI's tagsContain / tagsNotContain (any of / none of) and jobPriority (class names; "default"
    # means no class).
    tags_contain: list[str] = Field(default_factory=list)
    tags_not_contain: list[str] = Field(default_factory=list)
    job_priorities: list[str] = Field(default_factory=list)
    # Counting every match costs a second query; OpenPAI only counts with withTotalCount=true.
    count_total: bool = True


class JobCountsReply(RpcReply):
    # How many of the matching jobs are in each OpenPAI job state (states no job is in are left out).
    states: dict[str, int]
    total: int


class JobCountsRequest(RpcRequest):
    SERVICE = "jobs"
    ENDPOINT = "counts"
    DESCRIPTION = (
        "How many jobs are in each state, for some users and/or one virtual cluster (the portal's home"
        " page): one question instead of a counted list per state."
    )
    REPLY = JobCountsReply

    usernames: list[str] = Field(default_factory=list)
    virtual_cluster: str | None = None


class JobSecretsReply(RpcReply):
    secrets: dict[str, Any]


class JobSecretsRequest(RpcRequest):
    SERVICE = "jobs"
    ENDPOINT = "secrets"
    DESCRIPTION = (
        "A job's `secrets`, for the runtime agent that launches one of its tasks (and no one else):"
        " secrets never travel in events or commands. The jobs service asks the orchestrator"
        " (orchestrator.placement) whether that task attempt is placed on that node."
    )
    REPLY = JobSecretsReply

    job_key: str
    node: NodeName
    # The task attempt being launched, as its LaunchTask command names it.
    attempt_id: int
    task_role: str
    index: int
    task_attempt_id: int = 0


class JobConfigReply(RpcReply):
    # The submitted protocol as parsed, every value under `secrets` masked as "******".
    config: dict[str, Any]


class JobConfigRequest(RpcRequest):
    SERVICE = "jobs"
    ENDPOINT = "config"
    DESCRIPTION = "The protocol a job was submitted with, secrets masked."
    REPLY = JobConfigReply

    job_key: str


class JobMutationReply(RpcReply):
    message: str


class JobExecutionTypeRequest(RpcRequest):
    SERVICE = "jobs"
    ENDPOINT = "execution_type"
    DESCRIPTION = (
        "Set a job's executionType (owner or admin). STOP is recorded and published as job.stop.requested;"
        " START is accepted and changes nothing (a stopped job is never resumed, as in OpenPAI)."
    )
    REPLY = JobMutationReply

    job_key: str
    value: Literal["START", "STOP"]
    username: str
    admin: bool = False


class JobTagRequest(RpcRequest):
    SERVICE = "jobs"
    ENDPOINT = "tag"
    DESCRIPTION = "Add a tag to a job, or remove one (owner or admin)."
    REPLY = JobMutationReply

    job_key: str
    tag: str = Field(min_length=1, max_length=256, pattern=r"^[^,]+$")
    remove: bool = False
    username: str
    admin: bool = False


class JobEventsReply(RpcReply):
    # OpenPAI's job event shape: {uid, frameworkName, taskroleName, taskIndex, type, reason, message, ...}.
    events: list[dict[str, Any]]
    total: int


class JobEventsRequest(RpcRequest):
    SERVICE = "jobs"
    ENDPOINT = "events"
    DESCRIPTION = "What happened to a job (scheduling, preemption, stop requests, attempt ends), oldest first"
    REPLY = JobEventsReply

    job_key: str
    type: Literal["Normal", "Warning"] | None = None


class JobAttemptsReply(RpcReply):
    # OpenPAI's JobAttempt shape: the current attempt first (isLatest), then the earlier ones ascending.
    attempts: list[dict[str, Any]]


class JobAttemptsRequest(RpcRequest):
    SERVICE = "jobs"
    ENDPOINT = "attempts"
    DESCRIPTION = "A job's attempts in OpenPAI's JobAttempt shape; one attempt when attempt_id is given."
    REPLY = JobAttemptsReply

    job_key: str
    attempt_id: int | None = Field(default=None, ge=0)


class TaskAttemptsReply(RpcReply):
    # OpenPAI's TaskStatus shape with every attempt of the task.
    status: dict[str, Any]


class TaskAttemptsRequest(RpcRequest):
    SERVICE = "jobs"
    ENDPOINT = "task_attempts"
    DESCRIPTION = "One task of one job attempt with all of its task attempts."
    REPLY = TaskAttemptsReply

    job_key: str
    attempt_id: int = Field(ge=0)
    task_role: str
    index: int = Field(ge=0)


class LiveTasksReply(RpcReply):
    # One record per task: job_key, user, job_name, virtual_cluster, debug_id, task_role, index, state
    # (FrameworkController task state), attempt_id, node, host_ip, gpus, cpu, memory_mb, gpu, image,
    # created_at, launched_at, exit_code.
    tasks: list[dict[str, Any]]


class ListLiveTasksRequest(RpcRequest):
    SERVICE = "jobs"
    ENDPOINT = "live_tasks"
    DESCRIPTION = "Every task of every job not finished yet, with where it runs (OpenPAI's pod list)."
    REPLY = LiveTasksReply


# ---- cluster nodes (scheduler) ----------------------------------------------------------------------


class NodeReply(RpcReply):
    # One record as ListNodesRequest answers it.
    node: dict[str, Any]
    # False: the change was accepted but the allocator had not applied it when the answer was sent.
    applied: bool = True


class SetNodeSchedulableRequest(RpcRequest):
    SERVICE = "scheduler"
    ENDPOINT = "node_schedulable"
    DESCRIPTION = (
        "Cordon a node (schedulable false: no new work; with drain, its running gangs are stopped gracefully"
        " and retried elsewhere) or make it schedulable again. Admins only (the caller checks); persisted;"
        " published as node.schedulable.changed. Unknown node: NoNodeError."
    )
    REPLY = NodeReply

    node: NodeName
    schedulable: bool
    drain: bool = False
    by: str = Field(min_length=1, max_length=64)
    reason: str = Field(default="", max_length=1000)


# ---- monitoring (alerts) ----------------------------------------------------------------------------


class ReceivedAlert(Message):
    """One alert of an Alertmanager webhook notification."""

    status: Literal["firing", "resolved"]
    labels: dict[str, str] = Field(max_length=64)
    annotations: dict[str, str] = Field(default_factory=dict, max_length=64)
    starts_at: str = Field(min_length=1, max_length=64)
    ends_at: str = Field(default="", max_length=64)
    generator_url: str = Field(default="", max_length=2048)
    fingerprint: str = Field(default="", max_length=64)


class AlertsReceivedReply(RpcReply):
    alerts: int  # alerts stored or updated
    actions: int  # actions newly scheduled (repeated notifications schedule none)


class AlertsReceivedRequest(RpcRequest):
    SERVICE = "monitoring"
    ENDPOINT = "alerts_received"
    DESCRIPTION = (
        "An Alertmanager webhook notification: the alerts are kept (GET /api/v2/alerts) and the actions"
        " configured for each firing alert are scheduled once per firing (repeats change nothing)."
    )
    REPLY = AlertsReceivedReply

    receiver: str = Field(default="", max_length=256)
    status: Literal["firing", "resolved"]
    alerts: list[ReceivedAlert] = Field(max_length=1000)
    external_url: str = Field(default="", max_length=2048)
    actor: str


class AlertListReply(RpcReply):
    # Alertmanager's alert shape: labels, annotations, startsAt, endsAt, generatorURL, status, receivers,
    # fingerprint.
    alerts: list[dict[str, Any]]


class ListAlertsRequest(RpcRequest):
    SERVICE = "monitoring"
    ENDPOINT = "alerts"
    DESCRIPTION = (
        "The firing alerts: all of them for an admin, otherwise those whose labels name one of the user's"
        " jobs (job_name and username), as OpenPAI answers."
    )
    REPLY = AlertListReply

    username: str
    admin: bool = False


# ---- storage ----------------------------------------------------------------------------------------


STORAGE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"


class StorageListReply(RpcReply):
    # OpenPAI's shape: [{name, share, volumeName, default}].
    storages: list[dict[str, Any]]


class ListStoragesRequest(RpcRequest):
    SERVICE = "storage"
    ENDPOINT = "list"
    DESCRIPTION = "The storages a user's groups grant (acls.storageConfigs; every storage for an admin)."
    REPLY = StorageListReply

    username: str
    admin: bool = False
    # Only the default storages (OpenPAI's ?default=true).
    default_only: bool = False


class StorageReply(RpcReply):
    # OpenPAI's shape: {name, share, volumeName, type, data, readOnly, secretName?, mountOptions?} plus
    # `default`; never a credential.
    storage: dict[str, Any]


class GetStorageRequest(RpcRequest):
    SERVICE = "storage"
    ENDPOINT = "get"
    DESCRIPTION = "One storage, to a user it is granted to (ForbiddenUserError) that exists (NoStorageError)."
    REPLY = StorageReply

    name: str = Field(min_length=1, max_length=256)
    username: str
    admin: bool = False


class StorageMessageReply(RpcReply):
    message: str


class PutStorageRequest(RpcRequest):
    SERVICE = "storage"
    ENDPOINT = "put"
    DESCRIPTION = (
        "An admin defines a storage (create: ConflictStorageError if it exists) or replaces one (update:"
        " NoStorageError if it does not). `body` is {name, type, share, default, readOnly?, mountOptions?,"
        " data}; every wrong field is named (InvalidParametersError). Credentials in `data` are kept apart"
        " and never shown."
    )
    REPLY = StorageMessageReply

    mode: Literal["create", "update"]
    # The name in the route (update); create takes it from the body.
    name: str | None = Field(default=None, max_length=256)
    body: dict[str, Any]
    actor: str
    admin: bool = False


class DeleteStorageRequest(RpcRequest):
    SERVICE = "storage"
    ENDPOINT = "delete"
    DESCRIPTION = (
        "An admin deletes a storage; ConflictStorageError while unfinished jobs mount it, NoStorageError if"
        " absent."
    )
    REPLY = StorageMessageReply

    name: str = Field(min_length=1, max_length=256)
    actor: str
    admin: bool = False


class ResolveStoragesReply(RpcReply):
    mounts: list[StorageMount]


class ResolveStoragesRequest(RpcRequest):
    SERVICE = "storage"
    ENDPOINT = "resolve"
    DESCRIPTION = (
        "At submission: the storages a job names ([{name, mountPath?}]; None: the user's default storages)"
        " as mounts; NoStorageError or ForbiddenUserError naming the first one that does not exist or is not"
        " granted, InvalidParametersError for a bad or repeated mount path."
    )
    REPLY = ResolveStoragesReply

    username: str
    admin: bool = False
    requests: list[dict[str, Any]] | None = None
    # Storages the job's data/output prerequisites point into (storage://<name>/...): mounted at
    # /mnt/<name> too unless named above.
    referenced: list[str] = Field(default_factory=list)
    # The job being submitted: its storages count as in use (DeleteStorageRequest) from this moment.
    job_key: str | None = None


class StorageCredentialsReply(RpcReply):
    values: dict[str, str]


class StorageCredentialsRequest(RpcRequest):
    SERVICE = "storage"
    ENDPOINT = "credentials"
    DESCRIPTION = (
        "A storage's credentials, for the runtime agent that mounts it for a task (and no one else):"
        " credentials never travel in events, commands or API responses."
    )
    REPLY = StorageCredentialsReply

    storage: str
    node: NodeName


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


class JobPendingReply(RpcReply):
    # The job's waiting attempt as the scheduler last committed it: why it waits and its 1-based place in
    # its VC's queue (None while it waits for a preemption). attempt_id None: no attempt of it waits.
    attempt_id: int | None = None
    reason: str = ""
    position: int | None = None


class JobPendingRequest(RpcRequest):
    SERVICE = "scheduler"
    ENDPOINT = "pending"
    DESCRIPTION = (
        "Why a job's attempt waits and its current place in its VC's queue: the place is not published on"
        " every move (scheduling.pending says when the cause changes), so readers ask for it."
    )
    REPLY = JobPendingReply

    job_key: str = Field(min_length=1, max_length=512)


class NodesReply(RpcReply):
    # One record per node: name, registered, configured, host_ip, cpu, memory_mb, gpus (index, model,
    # memory_mb, healthy), simulated, healthy (its agent is heard from), bad_gpus; and what the scheduler
    # holds of it: sku_types (leaf type -> cells), gpu_cells {total, used}, schedulable, cordon ({by, at,
    # reason, drain} or null), draining, running_gangs.
    nodes: list[dict[str, Any]]


class ListNodesRequest(RpcRequest):
    SERVICE = "scheduler"
    ENDPOINT = "nodes"
    DESCRIPTION = (
        "Every node of the cluster: its resources, address, health and whether it takes new work"
        " (OpenPAI's node list; the admins' cordon view)."
    )
    REPLY = NodesReply


# ---- orchestrator -----------------------------------------------------------------------------------


class TaskPlacementReply(RpcReply):
    # The node the task attempt is placed on while it may still start or run; None otherwise.
    node: str | None
    # Why it has no live placement (unknown job, another attempt, completed task...), for the caller's error.
    reason: str = ""


class TaskPlacementRequest(RpcRequest):
    SERVICE = "orchestrator"
    ENDPOINT = "placement"
    DESCRIPTION = (
        "Where a task attempt runs, from the framework that launched it: the authority the jobs service"
        " checks before giving a node a job's secrets (its own read model may lag the launch)."
    )
    REPLY = TaskPlacementReply

    job_key: str
    attempt_id: int
    task_role: str
    index: int
    task_attempt_id: int = 0


# ---- diagnosis --------------------------------------------------------------------------------------


class ExitSpecReply(RpcReply):
    # The exit spec in effect: the document as validated (entries with their patterns) and its origin.
    spec: dict[str, Any]
    revision: int
    source: Literal["builtin", "uploaded"]
    updated_by: str | None = None
    updated_at: int | None = None  # epoch ms


class GetExitSpecRequest(RpcRequest):
    SERVICE = "diagnosis"
    ENDPOINT = "get_spec"
    DESCRIPTION = "The exit spec in effect, or the one shipped with the service (admins only)."
    REPLY = ExitSpecReply

    builtin: bool = False
    username: str
    admin: bool = False


class PutExitSpecRequest(RpcRequest):
    SERVICE = "diagnosis"
    ENDPOINT = "put_spec"
    DESCRIPTION = (
        "An admin sets the exit spec from YAML or JSON text: `replace` it, `overlay` it (an entry with the"
        " same code replaces in place, a new code is added at the end) or `reset` it to the shipped one."
        " It is validated (schema, unique codes, RE2 regexes) before it takes effect."
    )
    REPLY = ExitSpecReply

    text: str = Field(default="", max_length=1 << 20)
    mode: Literal["replace", "overlay", "reset"] = "replace"
    username: str
    admin: bool = False


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
    # The task attempt (0 unless the task was retried on its own); "all" is stdout and stderr as written.
    task_attempt_id: int = 0
    stream: Literal["stdout", "stderr", "all"] = "stdout"
    tail_bytes: int = Field(default=65536, ge=1, le=16 * 1024 * 1024)


# ---- marketplace ------------------------------------------------------------------------------------

TEMPLATE_ID = r"^[a-z0-9][a-z0-9-]{0,79}$"
TEMPLATE_ORDERS = Literal["stars", "uses", "updated", "name"]


class MarketplaceCaller(RpcRequest):
    """Who asks: visibility and the right to edit follow from the user, their groups and admin rights."""

    SERVICE = "marketplace"
    ENDPOINT = ""
    username: str = Field(min_length=1, max_length=64)
    admin: bool = False


class TemplateReply(RpcReply):
    # {id, name, description, tags, protocol, author, visibility: {type, groups}, starCount, starred,
    #  useCount, createdTime, updatedTime}
    template: dict[str, Any]


class TemplateListReply(RpcReply):
    # Summaries: the template shape without `protocol`.
    templates: list[dict[str, Any]]
    total: int


class TemplateMessageReply(RpcReply):
    message: str


class ListTemplatesRequest(MarketplaceCaller):
    ENDPOINT = "list"
    DESCRIPTION = "The templates the caller may see, searched (keyword, tag, author), ordered and paged."
    REPLY = TemplateListReply

    keyword: str = Field(default="", max_length=256)
    tag: str = Field(default="", max_length=64)
    author: str = Field(default="", max_length=64)
    order: TEMPLATE_ORDERS = "stars"
    offset: int = Field(default=0, ge=0)
    limit: int = Field(default=50, ge=1, le=500)


class GetTemplateRequest(MarketplaceCaller):
    ENDPOINT = "get"
    DESCRIPTION = "One template with its protocol, if the caller may see it (otherwise NoTemplateError)."
    REPLY = TemplateReply

    id: str = Field(max_length=80)


class TemplateFields(MarketplaceCaller):
    """The fields a template is made of; None leaves a field as it is on update."""

    name: str | None = Field(default=None, max_length=200)
    description: str | None = Field(default=None, max_length=8192)
    tags: list[str] | None = Field(default=None, max_length=32)
    protocol: str | None = Field(default=None, max_length=256 * 1024)
    visibility: Literal["all", "groups"] | None = None
    groups: list[str] | None = Field(default=None, max_length=64)


class CreateTemplateRequest(TemplateFields):
    ENDPOINT = "create"
    DESCRIPTION = "Publish a template; the caller is its author. Fields are checked as on update."
    REPLY = TemplateReply


class UpdateTemplateRequest(TemplateFields):
    ENDPOINT = "update"
    DESCRIPTION = "Change a template (its author or an admin)."
    REPLY = TemplateReply

    id: str = Field(max_length=80)


class DeleteTemplateRequest(MarketplaceCaller):
    ENDPOINT = "delete"
    DESCRIPTION = "Delete a template (its author or an admin)."
    REPLY = TemplateMessageReply

    id: str = Field(max_length=80)


class StarTemplateRequest(MarketplaceCaller):
    ENDPOINT = "star"
    DESCRIPTION = "Star (or unstar) a template the caller may see; each user stars a template once."
    REPLY = TemplateReply

    id: str = Field(max_length=80)
    starred: bool = True


class UseTemplateRequest(MarketplaceCaller):
    ENDPOINT = "use"
    DESCRIPTION = "Count one use of a template the caller may see (the portal's Use opens Submit with it)."
    REPLY = TemplateReply

    id: str = Field(max_length=80)


# ---- dead letters (every service that runs a durable consumer) ---------------------------------------


class ReplayDeadLetterReply(RpcReply):
    # replayed: handled now; duplicate: the consumer had handled the message already (nothing changed).
    outcome: Literal["replayed", "duplicate"]
    message_type: str
    message_id: str


class ReplayDeadLetterRequest(RpcRequest):
    SERVICE = "deadletters"
    ENDPOINT = "replay"  # addressed to the consumer: pai.rpc.deadletters.<durable>.replay
    DESCRIPTION = (
        "Handle a dead letter of this durable consumer again, through its handler, transaction and processed"
        " marker, then remove it from the dead-letter stream. Served by whichever service runs the consumer."
        " NoDeadLetterError if there is no such letter for this consumer; DeadLetterReplayError (the letter"
        " stays) if it is malformed or its handler fails again."
    )
    REPLY = ReplayDeadLetterReply

    seq: int = Field(ge=1)
    actor: str = Field(min_length=1, max_length=64)


ALL_RPCS: tuple[type[RpcRequest], ...] = (
    LoginRequest,
    VerifyTokenRequest,
    AuthorizeRequest,
    GetUserRequest,
    ListUsersRequest,
    CreateUserRequest,
    UpdateUserRequest,
    DeleteUserRequest,
    GetGroupRequest,
    ListGroupsRequest,
    CreateGroupRequest,
    UpdateGroupRequest,
    DeleteGroupRequest,
    GroupMembersRequest,
    ListTokensRequest,
    CreateApplicationTokenRequest,
    RevokeTokenRequest,
    AuditLogRequest,
    OidcConfigRequest,
    OidcBeginRequest,
    OidcReturnRequest,
    OidcExchangeRequest,
    OidcLogoutRequest,
    SubmitJobRequest,
    GetJobRequest,
    ListJobsRequest,
    JobCountsRequest,
    JobSecretsRequest,
    JobConfigRequest,
    JobExecutionTypeRequest,
    JobTagRequest,
    JobEventsRequest,
    JobAttemptsRequest,
    TaskAttemptsRequest,
    TaskPlacementRequest,
    ListLiveTasksRequest,
    ListStoragesRequest,
    GetStorageRequest,
    PutStorageRequest,
    DeleteStorageRequest,
    ResolveStoragesRequest,
    StorageCredentialsRequest,
    ListVirtualClustersRequest,
    SkuTypesRequest,
    JobPendingRequest,
    ListNodesRequest,
    TaskLogRequest,
    GetExitSpecRequest,
    PutExitSpecRequest,
    SetNodeSchedulableRequest,
    AlertsReceivedRequest,
    ListAlertsRequest,
    ListTemplatesRequest,
    GetTemplateRequest,
    CreateTemplateRequest,
    UpdateTemplateRequest,
    DeleteTemplateRequest,
    StarTemplateRequest,
    UseTemplateRequest,
    ReplayDeadLetterRequest,
)
