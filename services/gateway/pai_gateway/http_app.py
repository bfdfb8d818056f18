"""The FastAPI application: OpenPAI REST API v2 routes, each one RPC (or a few) on the bus."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Annotated, Any
from urllib.parse import parse_qs, quote

from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from pai_common.bus import Bus
from pai_common.contract.rpc import (
    GetJobRequest,
    Identity,
    JobDetailReply,
    JobListReply,
    ListJobsRequest,
    ListStoragesRequest,
    ListVirtualClustersRequest,
    LoginReply,
    LoginRequest,
    SkuTypesReply,
    SkuTypesRequest,
    StorageListReply,
    SubmitJobReply,
    SubmitJobRequest,
    TaskLogReply,
    TaskLogRequest,
    VirtualClustersReply,
)
from pai_common.errors import (
    InvalidParametersError,
    InvalidProtocolError,
    NoJobError,
    NoTaskLogError,
    NoVirtualClusterError,
    PayloadTooLargeError,
)
from pai_gateway import errors
from pai_gateway.identity import IdentityResolver
from pai_gateway.settings import GatewaySettings

JOB_KEY_PATTERN = r"^[\w.-]+~[\w-]+$"


async def _identity(request: Request) -> Identity:
    resolver: IdentityResolver = request.app.state.resolver()
    return await resolver.resolve(request)


# Every route that takes a ``User`` needs a valid token.
User = Annotated[Identity, Depends(_identity)]


def build_http_app(bus_provider: Callable[[], Bus], settings: GatewaySettings) -> FastAPI:
    app = FastAPI(title="OpenPAI REST API v2 (Python)", version="0.1.0", docs_url="/api/v2/docs")
    errors.install(app)
    app.state.identity_resolver = None

    def bus() -> Bus:
        return bus_provider()

    def resolver() -> IdentityResolver:
        if app.state.identity_resolver is None:
            app.state.identity_resolver = IdentityResolver(
                bus(), settings.identity_cache_s, settings.rpc_timeout_s
            )
        resolved: IdentityResolver = app.state.identity_resolver
        return resolved

    app.state.resolver = resolver
    timeout = settings.rpc_timeout_s

    @app.middleware("http")
    async def limit_body(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        length = request.headers.get("content-length")
        if length is not None:
            try:
                too_big = int(length) > settings.max_body_bytes
            except ValueError:
                return errors.error_response(InvalidParametersError("Content-Length is not a number"))
            if too_big:
                return errors.error_response(
                    PayloadTooLargeError(f"request body exceeds {settings.max_body_bytes} bytes")
                )
        return await call_next(request)

    async def read_body(request: Request) -> bytes:
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > settings.max_body_bytes:
                raise PayloadTooLargeError(f"request body exceeds {settings.max_body_bytes} bytes")
        return body

    # ---- meta ----------------------------------------------------------------------------------------

    info = {"name": "PAI RESTful API", "version": "0.1.0", "launcherType": "local", "authnMethod": "basic"}

    @app.get("/api/v1")
    async def v1_info() -> dict[str, str]:
        return info

    @app.get("/api/v2/info")
    async def v2_info() -> dict[str, str]:
        return info

    @app.get("/api/v2/authn/info")
    async def authn_info() -> dict[str, str]:
        return {"authn_type": "basic", "loginURI": "/api/v1/authn/basic/login", "loginURIMethod": "post"}

    # ---- authn ---------------------------------------------------------------------------------------

    @app.post("/api/v2/authn/basic/login")
    @app.post("/api/v1/authn/basic/login")
    async def login(request: Request) -> dict[str, Any]:
        raw = await read_body(request)
        ctype = request.headers.get("content-type", "")
        try:
            if ctype.startswith("application/x-www-form-urlencoded"):
                data: Any = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
            else:
                data = json.loads(raw or b"{}")
        except (ValueError, UnicodeDecodeError):
            raise InvalidParametersError("the login body is neither JSON nor a form") from None
        if not isinstance(data, dict):
            raise InvalidParametersError("the login body must be an object with username and password")
        expiration = data.get("expiration", 7 * 24 * 3600)
        try:
            req = LoginRequest(
                username=data.get("username", ""),
                password=data.get("password", ""),
                expiration_s=int(expiration),
            )
        except (ValueError, TypeError) as exc:
            raise InvalidParametersError(_first_line(str(exc))) from None
        reply = await bus().request(req, LoginReply, timeout=timeout)
        return {"user": reply.user, "token": reply.token, "admin": reply.admin, "hasGitHubPAT": False}

    @app.get("/api/v2/tokens/check")
    async def token_check(user: User) -> dict[str, Any]:
        return {"username": user.username, "application": user.application, "admin": user.admin}

    # ---- jobs ----------------------------------------------------------------------------------------

    @app.post("/api/v2/jobs", status_code=202)
    async def submit_job(request: Request, user: User) -> dict[str, Any]:
        ctype = request.headers.get("content-type", "")
        if not ctype.startswith("text/"):
            raise InvalidProtocolError("send the job protocol as YAML with Content-Type: text/yaml")
        raw = await read_body(request)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidProtocolError("the job protocol is not UTF-8 text") from None
        req = SubmitJobRequest(
            username=user.username,
            virtual_clusters=user.virtual_clusters,
            admin=user.admin,
            protocol_yaml=text,
        )
        reply = await bus().request(req, SubmitJobReply, timeout=timeout)
        name = reply.job_key.split("~", 1)[1]
        return {"status": 202, "message": f"Update job {name} for user {user.username} successfully."}

    @app.get("/api/v2/jobs", response_model=None)
    async def list_jobs(
        user: User,
        username: str | None = None,
        vc: str | None = None,
        state: str | None = None,
        keyword: str | None = None,
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=50000)] = 5000,
        order: str = "submissionTime,DESC",
        withTotalCount: bool = False,
    ) -> Any:
        field, _, direction = order.partition(",")
        direction = (direction or "DESC").upper()
        if direction not in ("ASC", "DESC"):
            raise InvalidParametersError(f"order direction {direction!r} is not ASC or DESC")
        req = ListJobsRequest(
            usernames=[u for u in (username or "").split(",") if u],
            virtual_cluster=vc,
            states=[s for s in (state or "").split(",") if s],
            keyword=keyword,
            offset=offset,
            limit=limit,
            order_field=field,
            order="ASC" if direction == "ASC" else "DESC",
        )
        reply = await bus().request(req, JobListReply, timeout=timeout)
        if withTotalCount:
            return {"totalCount": reply.total, "data": reply.jobs}
        return reply.jobs

    async def job_detail(job_key: str) -> dict[str, Any]:
        return (await bus().request(GetJobRequest(job_key=job_key), JobDetailReply, timeout=timeout)).detail

    @app.get("/api/v2/jobs/{framework_name}")
    async def get_job(framework_name: str, user: User) -> dict[str, Any]:
        return await job_detail(_job_key(framework_name))

    logs_route = (
        "/api/v2/jobs/{framework_name}/attempts/{job_attempt}/taskRoles/{task_role}"
        "/taskIndex/{index}/attempts/{task_attempt}/logs"
    )

    @app.get(logs_route)
    async def task_log_locations(
        framework_name: str, job_attempt: int, task_role: str, index: int, task_attempt: int, user: User
    ) -> dict[str, Any]:
        key = _job_key(framework_name)
        await _task_node(await job_detail(key), task_role, index)
        base = logs_route.format(
            framework_name=quote(key, safe="~"),
            job_attempt=job_attempt,
            task_role=task_role,
            index=index,
            task_attempt=task_attempt,
        )
        return {"locations": [{"name": s, "uri": f"{base}/{s}"} for s in ("stdout", "stderr")]}

    @app.get(logs_route + "/{stream}")
    async def task_log_content(
        framework_name: str,
        job_attempt: int,
        task_role: str,
        index: int,
        task_attempt: int,
        stream: str,
        user: User,
        tail_bytes: Annotated[int, Query(ge=1, le=16 * 1024 * 1024)] = 1024 * 1024,
    ) -> PlainTextResponse:
        if stream not in ("stdout", "stderr"):
            raise NoTaskLogError(f"no log named {stream!r}; use stdout or stderr")
        key = _job_key(framework_name)
        node = await _task_node(await job_detail(key), task_role, index)
        req = TaskLogRequest(
            job_key=key,
            attempt_id=job_attempt,
            task_role=task_role,
            index=index,
            stream="stdout" if stream == "stdout" else "stderr",
            tail_bytes=tail_bytes,
        )
        reply = await bus().request(req, TaskLogReply, target=node, timeout=timeout)
        return PlainTextResponse(reply.content)

    # ---- virtual clusters ------------------------------------------------------------------------------

    async def all_vcs() -> dict[str, dict[str, Any]]:
        reply = await bus().request(ListVirtualClustersRequest(), VirtualClustersReply, timeout=timeout)
        return reply.virtual_clusters

    @app.get("/api/v2/virtual-clusters")
    async def virtual_clusters(user: User) -> dict[str, Any]:
        return await all_vcs()

    @app.get("/api/v2/virtual-clusters/{vc}")
    async def virtual_cluster(vc: str, user: User) -> dict[str, Any]:
        if not re.fullmatch(r"[A-Za-z0-9_]+", vc):
            raise InvalidParametersError(f"virtual cluster name {vc!r} must match ^[A-Za-z0-9_]+$")
        vcs = await all_vcs()
        if vc not in vcs:
            raise NoVirtualClusterError(f"Virtual cluster {vc} is not found.")
        return vcs[vc]

    @app.get("/api/v2/cluster/sku-types")
    async def sku_types(user: User, vc: str | None = None) -> dict[str, Any]:
        reply = await bus().request(SkuTypesRequest(virtual_cluster=vc), SkuTypesReply, timeout=timeout)
        return reply.sku_types

    # ---- storage -------------------------------------------------------------------------------------

    @app.get("/api/v2/storages")
    async def storages(user: User) -> dict[str, Any]:
        req = ListStoragesRequest(username=user.username, admin=user.admin)
        return {"storages": (await bus().request(req, StorageListReply, timeout=timeout)).storages}

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return app


def _job_key(framework_name: str) -> str:
    if not re.match(JOB_KEY_PATTERN, framework_name):
        raise NoJobError(f"Job {framework_name} is not found.")
    return framework_name


async def _task_node(detail: dict[str, Any], task_role: str, index: int) -> str:
    role = detail.get("taskRoles", {}).get(task_role)
    statuses = role.get("taskStatuses", []) if role else []
    if index < 0 or index >= len(statuses):
        raise NoTaskLogError(f"task {task_role}[{index}] does not exist")
    node = statuses[index].get("containerNodeName")
    if not node:
        raise NoTaskLogError(f"task {task_role}[{index}] has not been placed on a node yet")
    return str(node)


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text
