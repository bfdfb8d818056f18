"""Every route of the REST API v2 as a request description (``Call``) and how to read its answer. Pure.

One function per route; ``PaiClient`` and ``AsyncPaiClient`` expose each as a method of the same name and
signature (see ``endpoint``), returning the parsed answer, or an awaitable of it. The first argument is the
client (``Context``), which turns a bare job name into ``<user>~<job>``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Protocol, TypedDict, TypeVar, Unpack
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from pai_cli import models as m
from pai_cli.errors import InvalidResponseError

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE"})
LogStream = Literal["stdout", "stderr", "all"]
Params = Mapping[str, str | int]


class Context(Protocol):
    def job_key(self, name: str) -> str: ...


@dataclass(frozen=True)
class Call(Generic[T]):
    """One HTTP request and the parser of its 2xx answer."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: Params = field(default_factory=dict)
    json: Any = None
    content: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    # Sent with the client's token; False for the login routes.
    auth: bool = True
    # A POST whose repetition changes nothing more than the first one did (a job submission: see submit).
    repeatable: bool = False

    @property
    def idempotent(self) -> bool:
        return self.method in IDEMPOTENT_METHODS or self.repeatable


# ---- reading answers -----------------------------------------------------------------------------------


def body_of(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise InvalidResponseError(
            response.status_code,
            "InvalidResponse",
            f"expected JSON from {response.request.url.path}, got: {response.text[:200]!r}",
        ) from None


def _invalid(response: httpx.Response, exc: ValidationError) -> InvalidResponseError:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    return InvalidResponseError(
        response.status_code,
        "InvalidResponse",
        f"{response.request.url.path} answered an unexpected shape ({where}: {first['msg']})",
    )


def model(kind: type[M]) -> Callable[[httpx.Response], M]:
    def parse(response: httpx.Response) -> M:
        try:
            return kind.model_validate(body_of(response))
        except ValidationError as exc:
            raise _invalid(response, exc) from None

    return parse


def model_list(kind: type[M], key: str | None = None) -> Callable[[httpx.Response], list[M]]:
    def parse(response: httpx.Response) -> list[M]:
        body = body_of(response)
        items = body.get(key) if key is not None and isinstance(body, dict) else body
        if not isinstance(items, list):
            raise InvalidResponseError(
                response.status_code, "InvalidResponse", f"{response.request.url.path} answered no list"
            )
        try:
            return [kind.model_validate(item) for item in items]
        except ValidationError as exc:
            raise _invalid(response, exc) from None

    return parse


def model_map(kind: type[M]) -> Callable[[httpx.Response], dict[str, M]]:
    def parse(response: httpx.Response) -> dict[str, M]:
        body = body_of(response)
        if not isinstance(body, dict):
            raise InvalidResponseError(
                response.status_code, "InvalidResponse", f"{response.request.url.path} answered no object"
            )
        try:
            return {str(k): kind.model_validate(v) for k, v in body.items()}
        except ValidationError as exc:
            raise _invalid(response, exc) from None

    return parse


def json_object(response: httpx.Response) -> dict[str, Any]:
    # `/config` answers JSON under a text/yaml header, as OpenPAI does; YAML clients read it as YAML.
    try:
        body = json.loads(response.text)
    except ValueError:
        import yaml

        body = yaml.safe_load(response.text)
    if not isinstance(body, dict):
        raise InvalidResponseError(
            response.status_code, "InvalidResponse", f"{response.request.url.path} answered no object"
        )
    return body


def text(response: httpx.Response) -> str:
    return response.text


def string_list(key: str) -> Callable[[httpx.Response], list[str]]:
    def parse(response: httpx.Response) -> list[str]:
        body = body_of(response)
        items = body.get(key) if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise InvalidResponseError(
                response.status_code, "InvalidResponse", f"{response.request.url.path} answered no {key}"
            )
        return [str(i) for i in items]

    return parse


def healthy(response: httpx.Response) -> bool:
    return response.is_success


message = model(m.Message)


# ---- paths ---------------------------------------------------------------------------------------------


def job_path(key: str) -> str:
    # `~` stays literal: the route splits the key on it.
    return f"/api/v2/jobs/{quote(key, safe='~')}"


def _segment(value: str) -> str:
    return quote(value, safe="")


def task_path(key: str, attempt: int, role: str, index: int) -> str:
    return f"{job_path(key)}/attempts/{attempt}/taskRoles/{_segment(role)}/taskIndex/{index}"


def _csv(value: str | Iterable[str] | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return ",".join(value)


def _params(**values: Any) -> dict[str, str | int]:
    out: dict[str, str | int] = {}
    for name, value in values.items():
        if value is None:
            continue
        out[name] = ("true" if value else "false") if isinstance(value, bool) else value
    return out


# ---- meta and login ------------------------------------------------------------------------------------


def info(ctx: Context) -> Call[m.ServerInfo]:
    """What this API is (``GET /api/v2/info``)."""
    return Call("GET", "/api/v2/info", model(m.ServerInfo), auth=False)


def authn_info(ctx: Context) -> Call[m.AuthnInfo]:
    """How users sign in: basic or OIDC (``GET /api/v2/authn/info``)."""
    return Call("GET", "/api/v2/authn/info", model(m.AuthnInfo), auth=False)


def oidc_config(ctx: Context) -> Call[m.OidcConfig]:
    """Whether single sign-on is offered, its label, and whether password login is on."""
    return Call("GET", "/api/v2/authn/oidc/config", model(m.OidcConfig), auth=False)


def basic_login(
    ctx: Context, username: str, password: str, expiration_s: int | None = None
) -> Call[m.LoginResult]:
    body: dict[str, Any] = {"username": username, "password": password}
    if expiration_s is not None:
        body["expiration"] = expiration_s
    return Call("POST", "/api/v2/authn/basic/login", model(m.LoginResult), json=body, auth=False)


def oidc_exchange_code(ctx: Context, code: str) -> Call[m.LoginResult]:
    return Call("POST", "/api/v2/authn/oidc/exchange", model(m.LoginResult), json={"code": code}, auth=False)


def basic_logout(ctx: Context) -> Call[m.Message]:
    """Revoke this client's token."""
    return Call("DELETE", "/api/v2/authn/basic/logout", message)


# ---- tokens --------------------------------------------------------------------------------------------


def list_tokens(ctx: Context) -> Call[list[str]]:
    """Your valid tokens."""
    return Call("GET", "/api/v2/tokens", string_list("tokens"))


def create_application_token(ctx: Context) -> Call[m.ApplicationToken]:
    """A token that never expires, for scripts (it may not manage users, groups or tokens)."""
    return Call("POST", "/api/v2/tokens/application", model(m.ApplicationToken))


def revoke_token(ctx: Context, token: str) -> Call[m.Message]:
    """Revoke one of your tokens."""
    return Call("DELETE", f"/api/v2/tokens/{_segment(token)}", message)


def check_token(ctx: Context) -> Call[m.TokenCheck]:
    """Who this client's token is, and whether it is an admin's."""
    return Call("GET", "/api/v2/tokens/check", model(m.TokenCheck))


# ---- users ---------------------------------------------------------------------------------------------


def list_users(ctx: Context) -> Call[list[m.User]]:
    return Call("GET", "/api/v2/users", model_list(m.User))


def get_user(ctx: Context, username: str) -> Call[m.User]:
    return Call("GET", f"/api/v2/users/{_segment(username)}", model(m.User))


def me(ctx: Context) -> Call[m.User]:
    """The user this client is logged in as."""
    return Call("GET", "/api/v2/users/me", model(m.User))


def update_me(
    ctx: Context,
    *,
    email: str | None = None,
    new_password: str | None = None,
    old_password: str | None = None,
    extension: dict[str, Any] | None = None,
) -> Call[m.Message]:
    """Change your own email, password (with the old one) or extension (merged)."""
    data = _params(email=email, newPassword=new_password, oldPassword=old_password)
    body: dict[str, Any] = {"data": {**data, **({"extension": extension} if extension is not None else {})}}
    return Call("PUT", "/api/v2/users/me", message, json={**body, "patch": True})


def create_user(
    ctx: Context,
    username: str,
    password: str,
    *,
    email: str = "",
    admin: bool = False,
    virtual_clusters: list[str] | None = None,
    extension: dict[str, Any] | None = None,
) -> Call[m.Message]:
    """(admin) A new user; ``virtual_clusters`` are groups of the same names."""
    body = {
        "username": username,
        "password": password,
        "email": email,
        "admin": admin,
        "virtualCluster": virtual_clusters or [],
        "extension": extension or {},
    }
    return Call("POST", "/api/v2/users", message, json=body)


def update_user(
    ctx: Context,
    username: str,
    *,
    email: str | None = None,
    admin: bool | None = None,
    virtual_clusters: list[str] | None = None,
    password: str | None = None,
    extension: dict[str, Any] | None = None,
) -> Call[m.Message]:
    """(admin) Change the fields given; ``extension`` is merged."""
    data: dict[str, Any] = {"username": username, **_params(email=email, password=password)}
    if admin is not None:
        data["admin"] = admin
    if virtual_clusters is not None:
        data["virtualCluster"] = virtual_clusters
    if extension is not None:
        data["extension"] = extension
    return Call("PUT", "/api/v2/users", message, json={"data": data, "patch": True})


def delete_user(ctx: Context, username: str) -> Call[m.Message]:
    return Call("DELETE", f"/api/v2/users/{_segment(username)}", message)


def _user_put(username: str, what: str, body: dict[str, Any]) -> Call[m.Message]:
    return Call("PUT", f"/api/v2/users/{_segment(username)}/{what}", message, json=body)


def set_user_extension(ctx: Context, username: str, extension: dict[str, Any]) -> Call[m.Message]:
    return _user_put(username, "extension", {"extension": extension})


def set_user_grouplist(ctx: Context, username: str, grouplist: list[str]) -> Call[m.Message]:
    """(admin) Replace the user's groups."""
    return _user_put(username, "grouplist", {"grouplist": grouplist})


def add_user_to_group(ctx: Context, username: str, groupname: str) -> Call[m.Message]:
    return _user_put(username, "group", {"groupname": groupname})


def remove_user_from_group(ctx: Context, username: str, groupname: str) -> Call[m.Message]:
    path = f"/api/v2/users/{_segment(username)}/group"
    return Call("DELETE", path, message, json={"groupname": groupname})


def set_user_virtual_clusters(ctx: Context, username: str, virtual_clusters: list[str]) -> Call[m.Message]:
    return _user_put(username, "virtualcluster", {"virtualCluster": virtual_clusters})


def set_user_password(
    ctx: Context, username: str, new_password: str, old_password: str | None = None
) -> Call[m.Message]:
    """Your own (with the old password) or, as an admin, anyone's; ends the user's login sessions."""
    body = {"newPassword": new_password, **_params(oldPassword=old_password)}
    return _user_put(username, "password", body)


def set_user_email(ctx: Context, username: str, email: str) -> Call[m.Message]:
    return _user_put(username, "email", {"email": email})


def set_user_admin(ctx: Context, username: str, admin: bool) -> Call[m.Message]:
    return _user_put(username, "admin", {"admin": admin})


# ---- groups --------------------------------------------------------------------------------------------


def list_groups(ctx: Context) -> Call[list[m.Group]]:
    return Call("GET", "/api/v2/groups", model_list(m.Group))


def get_group(ctx: Context, groupname: str) -> Call[m.Group]:
    return Call("GET", f"/api/v2/groups/{_segment(groupname)}", model(m.Group))


def group_members(ctx: Context, groupname: str) -> Call[list[m.GroupMember]]:
    """(admin) The users of a group."""
    return Call("GET", f"/api/v2/groups/{_segment(groupname)}/userlist", model_list(m.GroupMember))


def acls(
    admin: bool = False, virtual_clusters: list[str] | None = None, storages: list[str] | None = None
) -> dict[str, Any]:
    """A group extension granting these rights (OpenPAI's ``extension.acls``)."""
    return {
        "acls": {"admin": admin, "virtualClusters": virtual_clusters or [], "storageConfigs": storages or []}
    }


def create_group(
    ctx: Context,
    groupname: str,
    *,
    description: str = "",
    external_name: str = "",
    extension: dict[str, Any] | None = None,
) -> Call[m.Message]:
    """(admin) A new group; its rights are ``extension.acls`` (see ``acls``)."""
    body = {
        "groupname": groupname,
        "description": description,
        "externalName": external_name,
        "extension": extension or {},
    }
    return Call("POST", "/api/v2/groups", message, json=body)


def update_group(
    ctx: Context,
    groupname: str,
    *,
    description: str | None = None,
    external_name: str | None = None,
    extension: dict[str, Any] | None = None,
) -> Call[m.Message]:
    """(admin) Change the fields given; ``extension`` is merged."""
    data: dict[str, Any] = {"groupname": groupname, **_params(description=description)}
    if external_name is not None:
        data["externalName"] = external_name
    if extension is not None:
        data["extension"] = extension
    return Call("PUT", "/api/v2/groups", message, json={"data": data, "patch": True})


def delete_group(ctx: Context, groupname: str) -> Call[m.Message]:
    return Call("DELETE", f"/api/v2/groups/{_segment(groupname)}", message)


def set_group_extension(ctx: Context, groupname: str, extension: dict[str, Any]) -> Call[m.Message]:
    """(admin) Replace the group's extension."""
    path = f"/api/v2/groups/{_segment(groupname)}/extension"
    return Call("PUT", path, message, json={"extension": extension})


def set_group_extension_attribute(
    ctx: Context, groupname: str, attribute: str, value: Any
) -> Call[m.Message]:
    """(admin) Set one attribute of the extension by path, e.g. ``acls/virtualClusters``."""
    path = f"/api/v2/groups/{_segment(groupname)}/extension/{quote(attribute, safe='/')}"
    return Call("PUT", path, message, json={"data": value})


def set_group_description(ctx: Context, groupname: str, description: str) -> Call[m.Message]:
    path = f"/api/v2/groups/{_segment(groupname)}/description"
    return Call("PUT", path, message, json={"description": description})


def set_group_external_name(ctx: Context, groupname: str, external_name: str) -> Call[m.Message]:
    """(admin) The provider's group this group maps (OIDC sign-in: its name or object id)."""
    path = f"/api/v2/groups/{_segment(groupname)}/externalname"
    return Call("PUT", path, message, json={"externalName": external_name})


def audit_log(
    ctx: Context,
    *,
    target: str | None = None,
    actor: str | None = None,
    offset: int = 0,
    limit: int = 100,
) -> Call[m.AuditLog]:
    """(admin) Changes of users, groups, rights and tokens, newest first."""
    params = _params(target=target, actor=actor, offset=offset, limit=limit)
    return Call("GET", "/api/v2/audit-log", model(m.AuditLog), params=params)


# ---- dead letters (this project's, not OpenPAI's) ------------------------------------------------------


def dead_letters(
    ctx: Context,
    *,
    service: str | None = None,
    consumer: str | None = None,
    after: int = 0,
    limit: int = 100,
) -> Call[m.DeadLetterPage]:
    """(admin) The messages consumers gave up on, oldest first, with the error that sent each there."""
    params = _params(service=service, consumer=consumer, after=after, limit=limit)
    return Call("GET", "/api/v2/dead-letters", model(m.DeadLetterPage), params=params)


def dead_letter(ctx: Context, seq: int) -> Call[m.DeadLetter]:
    """(admin) One dead letter: its error, and its headers and body as delivered."""
    return Call("GET", f"/api/v2/dead-letters/{int(seq)}", model(m.DeadLetter))


def replay_dead_letter(ctx: Context, seq: int) -> Call[m.DeadLetterReplay]:
    """(admin) Have its consumer handle it again; a message already handled changes nothing."""
    return Call("POST", f"/api/v2/dead-letters/{int(seq)}/replay", model(m.DeadLetterReplay))


# ---- jobs ----------------------------------------------------------------------------------------------


def submit(ctx: Context, yaml_text: str) -> Call[m.Message]:
    # A job is named: the same protocol sent again is answered 202 for the job that exists (OpenPAI's
    # "Update job"), never a second job. So a 503 (a service restarting: nothing was done, or, in the one
    # window the README names, the job was stored) is retried like an idempotent request's, and the retry
    # answers for the job either way.
    # OpenPAI parses the body as YAML only under a text/* content type.
    return Call(
        "POST",
        "/api/v2/jobs",
        message,
        content=yaml_text.encode("utf-8"),
        headers={"Content-Type": "text/yaml"},
        repeatable=True,
    )


class JobFilters(TypedDict, total=False):
    """OpenPAI's job list filters (None: no filter); ``order`` is ``field,ASC|DESC``, newest first by
    default; a list of users, states or tags matches any of them."""

    username: str | Iterable[str] | None
    vc: str | None
    state: str | Iterable[str] | None
    keyword: str | None
    tags: str | Iterable[str] | None
    without_tags: str | Iterable[str] | None
    offset: int | None
    limit: int | None
    order: str | None


def _list_params(filters: JobFilters) -> dict[str, str | int]:
    return _params(
        username=_csv(filters.get("username")),
        vc=filters.get("vc"),
        state=_csv(filters.get("state")),
        keyword=filters.get("keyword"),
        tagsContain=_csv(filters.get("tags")),
        tagsNotContain=_csv(filters.get("without_tags")),
        offset=filters.get("offset"),
        limit=filters.get("limit"),
        order=filters.get("order"),
    )


def list_jobs(ctx: Context, **filters: Unpack[JobFilters]) -> Call[list[m.JobSummary]]:
    """Job summaries with OpenPAI's filters (``JobFilters``), newest first."""
    return Call("GET", "/api/v2/jobs", model_list(m.JobSummary), params=_list_params(filters))


def list_jobs_page(ctx: Context, **filters: Unpack[JobFilters]) -> Call[m.JobPage]:
    """Like ``list_jobs``, with the total count of jobs matching the filters."""
    params = {**_list_params(filters), "withTotalCount": "true"}
    return Call("GET", "/api/v2/jobs", model(m.JobPage), params=params)


def get_job(ctx: Context, name: str) -> Call[m.JobDetail]:
    """The job's detail; ``name`` is ``<user>~<job>``, or ``<job>`` for your own."""
    return Call("GET", job_path(ctx.job_key(name)), model(m.JobDetail))


def get_job_attempt_detail(ctx: Context, name: str, attempt: int) -> Call[m.JobDetail]:
    """The job's detail as it was in one of its attempts."""
    return Call("GET", f"{job_path(ctx.job_key(name))}/attempts/{attempt}", model(m.JobDetail))


def job_config(ctx: Context, name: str) -> Call[dict[str, Any]]:
    """The job's protocol as submitted (secrets masked)."""
    return Call("GET", f"{job_path(ctx.job_key(name))}/config", json_object)


def set_execution_type(ctx: Context, name: str, value: Literal["START", "STOP"]) -> Call[m.Message]:
    return Call("PUT", f"{job_path(ctx.job_key(name))}/executionType", message, json={"value": value})


def stop_job(ctx: Context, name: str) -> Call[m.Message]:
    """Ask the job to stop (202: it is stopping; follow it to STOPPED)."""
    return set_execution_type(ctx, name, "STOP")


def add_tag(ctx: Context, name: str, tag: str) -> Call[m.Message]:
    return Call("PUT", f"{job_path(ctx.job_key(name))}/tag", message, json={"value": tag})


def remove_tag(ctx: Context, name: str, tag: str) -> Call[m.Message]:
    return Call("DELETE", f"{job_path(ctx.job_key(name))}/tag", message, json={"value": tag})


def job_events(
    ctx: Context, name: str, type: Literal["Normal", "Warning"] | None = None
) -> Call[m.JobEvents]:
    return Call("GET", f"{job_path(ctx.job_key(name))}/events", model(m.JobEvents), params=_params(type=type))


def job_attempts(ctx: Context, name: str) -> Call[list[m.JobAttempt]]:
    """Every attempt of the job (retries), newest first."""
    return Call("GET", f"{job_path(ctx.job_key(name))}/job-attempts", model_list(m.JobAttempt))


def job_attempt(ctx: Context, name: str, attempt: int) -> Call[m.JobAttempt]:
    return Call("GET", f"{job_path(ctx.job_key(name))}/job-attempts/{attempt}", model(m.JobAttempt))


def job_attempts_healthz(ctx: Context, name: str) -> Call[bool]:
    """Whether the job history (attempts) can be read."""
    return Call("GET", f"{job_path(ctx.job_key(name))}/job-attempts/healthz", healthy)


def task_attempts(ctx: Context, name: str, attempt: int, role: str, index: int) -> Call[m.TaskAttempts]:
    """One task of one job attempt, with its own attempts (per-task retries)."""
    path = task_path(ctx.job_key(name), attempt, role, index) + "/attempts"
    return Call("GET", path, model(m.TaskAttempts))


def task_log_locations(
    ctx: Context,
    name: str,
    attempt: int,
    role: str,
    index: int,
    task_attempt: int = 0,
    tail_mode: bool = False,
) -> Call[m.LogLocations]:
    """Where a task attempt's logs are (``stdout``, ``stderr``, ``all``)."""
    path = task_path(ctx.job_key(name), attempt, role, index) + f"/attempts/{task_attempt}/logs"
    return Call("GET", path, model(m.LogLocations), params=_params(**{"tail-mode": tail_mode or None}))


def task_attempt_log(
    ctx: Context,
    name: str,
    attempt: int,
    role: str,
    index: int,
    task_attempt: int = 0,
    stream: LogStream = "stdout",
    tail_bytes: int | None = None,
) -> Call[str]:
    """The end of one task attempt's log (``tail_bytes``, 1 MiB by default)."""
    path = task_path(ctx.job_key(name), attempt, role, index) + f"/attempts/{task_attempt}/logs/{stream}"
    return Call("GET", path, text, params=_params(tail_bytes=tail_bytes))


# ---- marketplace ---------------------------------------------------------------------------------------

TEMPLATES = "/api/v2/marketplace/templates"


def list_templates(
    ctx: Context,
    *,
    keyword: str | None = None,
    tag: str | None = None,
    author: str | None = None,
    order: Literal["stars", "uses", "updated", "name"] | None = None,
    offset: int | None = None,
    limit: int | None = None,
) -> Call[m.TemplatePage]:
    """Marketplace templates you may see (without their protocol), most starred first."""
    params = _params(keyword=keyword, tag=tag, author=author, order=order, offset=offset, limit=limit)
    return Call("GET", TEMPLATES, model(m.TemplatePage), params=params)


def get_template(ctx: Context, template_id: str) -> Call[m.Template]:
    return Call("GET", f"{TEMPLATES}/{_segment(template_id)}", model(m.Template))


def _template_body(
    name: str | None,
    protocol: str | None,
    description: str | None,
    tags: list[str] | None,
    groups: list[str] | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, "protocol": protocol, "description": description, "tags": tags}
    if groups is not None:
        body["visibility"] = {"type": "groups" if groups else "all", "groups": groups}
    return {k: v for k, v in body.items() if v is not None}


def create_template(
    ctx: Context,
    name: str,
    protocol: str,
    *,
    description: str = "",
    tags: list[str] | None = None,
    groups: list[str] | None = None,
) -> Call[m.Template]:
    """Publish a job protocol (YAML) as a template; ``groups``: visible to those only (else to all)."""
    body = _template_body(name, protocol, description, tags or [], groups)
    return Call("POST", TEMPLATES, model(m.Template), json=body)


def update_template(
    ctx: Context,
    template_id: str,
    *,
    name: str | None = None,
    protocol: str | None = None,
    description: str | None = None,
    tags: list[str] | None = None,
    groups: list[str] | None = None,
) -> Call[m.Template]:
    """Change the fields given (its author or an admin)."""
    body = _template_body(name, protocol, description, tags, groups)
    return Call("PUT", f"{TEMPLATES}/{_segment(template_id)}", model(m.Template), json=body)


def delete_template(ctx: Context, template_id: str) -> Call[m.Message]:
    return Call("DELETE", f"{TEMPLATES}/{_segment(template_id)}", message)


def star_template(ctx: Context, template_id: str, starred: bool = True) -> Call[m.Template]:
    method = "PUT" if starred else "DELETE"
    return Call(method, f"{TEMPLATES}/{_segment(template_id)}/star", model(m.Template))


def use_template(ctx: Context, template_id: str) -> Call[m.Template]:
    """Count a use of the template and get it with its protocol (to submit it)."""
    return Call("POST", f"{TEMPLATES}/{_segment(template_id)}/uses", model(m.Template))


# ---- cluster -------------------------------------------------------------------------------------------


def virtual_clusters(ctx: Context) -> Call[dict[str, m.VirtualCluster]]:
    return Call("GET", "/api/v2/virtual-clusters", model_map(m.VirtualCluster))


def virtual_cluster(ctx: Context, name: str) -> Call[m.VirtualCluster]:
    return Call("GET", f"/api/v2/virtual-clusters/{_segment(name)}", model(m.VirtualCluster))


def sku_types(ctx: Context, vc: str | None = None) -> Call[dict[str, m.SkuType]]:
    return Call("GET", "/api/v2/cluster/sku-types", model_map(m.SkuType), params=_params(vc=vc))


def storages(ctx: Context, default: bool | None = None) -> Call[list[m.Storage]]:
    """The storages you may mount (``default=True``: only those mounted when a job names none)."""
    return Call("GET", "/api/v2/storages", model_list(m.Storage, "storages"), params=_params(default=default))


def storage(ctx: Context, name: str) -> Call[m.Storage]:
    return Call("GET", f"/api/v2/storages/{_segment(name)}", model(m.Storage))


def create_storage(ctx: Context, definition: dict[str, Any]) -> Call[m.Message]:
    """(admin) Define a storage: ``{name, type, share, default, readOnly?, mountOptions?, data}``."""
    return Call("POST", "/api/v2/storages", message, json=definition)


def replace_storage(ctx: Context, name: str, definition: dict[str, Any]) -> Call[m.Message]:
    """(admin) Replace a storage's definition (credentials left out are kept)."""
    return Call("PUT", f"/api/v2/storages/{_segment(name)}", message, json=definition)


def delete_storage(ctx: Context, name: str) -> Call[m.Message]:
    """(admin) Remove a storage (refused while an unfinished job mounts it)."""
    return Call("DELETE", f"/api/v2/storages/{_segment(name)}", message)


def nodes(ctx: Context) -> Call[list[m.Node]]:
    """The cluster's nodes, as OpenPAI answers them (Kubernetes ``Node`` objects)."""
    return Call("GET", "/api/v2/kubernetes/nodes", model_list(m.Node, "items"))


def set_node_schedulable(
    ctx: Context, node: str, schedulable: bool, drain: bool = False, reason: str = ""
) -> Call[dict[str, Any]]:
    """(admin) Cordon a node (``schedulable=False``: no new work; with ``drain``, its running gangs are
    stopped gracefully and retried elsewhere) or make it schedulable again. This platform's route; a stock
    OpenPAI cordons through Kubernetes."""
    body: dict[str, Any] = {"schedulable": schedulable, "drain": drain, "reason": reason}
    return Call("PUT", f"/api/v2/cluster/nodes/{_segment(node)}", json_object, json=body)


def pods(ctx: Context, namespace: str | None = None) -> Call[list[m.Pod]]:
    """(admin) Every task of every unfinished job, as OpenPAI answers them (Kubernetes ``Pod`` objects)."""
    params = _params(namespace=namespace)
    return Call("GET", "/api/v2/kubernetes/pods", model_list(m.Pod, "items"), params=params)


def exit_spec(ctx: Context, builtin: bool = False) -> Call[m.ExitSpec]:
    """(admin) The exit spec in effect, or the one shipped."""
    return Call(
        "GET", "/api/v2/diagnosis/exit-spec", model(m.ExitSpec), params=_params(builtin=builtin or None)
    )


def put_exit_spec(
    ctx: Context, spec_text: str, mode: Literal["replace", "overlay"] = "replace"
) -> Call[m.ExitSpec]:
    """(admin) Replace the exit spec, or overlay entries on it (YAML or JSON text)."""
    return Call(
        "PUT",
        "/api/v2/diagnosis/exit-spec",
        model(m.ExitSpec),
        params={"mode": mode},
        content=spec_text.encode("utf-8"),
        headers={"Content-Type": "text/yaml"},
    )


def reset_exit_spec(ctx: Context) -> Call[m.ExitSpec]:
    """(admin) Back to the shipped exit spec."""
    return Call("DELETE", "/api/v2/diagnosis/exit-spec", model(m.ExitSpec))
