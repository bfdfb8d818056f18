"""Job routes of REST API v2: submit, list, detail and task logs, each backed by the jobs service."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import PlainTextResponse

from pai_common.contract.rpc import (
    GetJobRequest,
    JobDetailReply,
    JobListReply,
    ListJobsRequest,
    SubmitJobReply,
    SubmitJobRequest,
    TaskLogReply,
    TaskLogRequest,
)
from pai_common.errors import InvalidParametersError, InvalidProtocolError, NoTaskLogError
from pai_gateway.deps import User, job_key, read_body, rpc

router = APIRouter()


@router.post("/api/v2/jobs", status_code=202)
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
    reply = await rpc(request, req, SubmitJobReply)
    name = reply.job_key.split("~", 1)[1]
    return {"status": 202, "message": f"Update job {name} for user {user.username} successfully."}


@router.get("/api/v2/jobs", response_model=None)
async def list_jobs(
    request: Request,
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
    reply = await rpc(request, req, JobListReply)
    if withTotalCount:
        return {"totalCount": reply.total, "data": reply.jobs}
    return reply.jobs


async def _job_detail(request: Request, key: str) -> dict[str, Any]:
    return (await rpc(request, GetJobRequest(job_key=key), JobDetailReply)).detail


@router.get("/api/v2/jobs/{framework_name}")
async def get_job(request: Request, framework_name: str, user: User) -> dict[str, Any]:
    return await _job_detail(request, job_key(framework_name))


LOGS_ROUTE = (
    "/api/v2/jobs/{framework_name}/attempts/{job_attempt}/taskRoles/{task_role}"
    "/taskIndex/{index}/attempts/{task_attempt}/logs"
)


@router.get(LOGS_ROUTE)
async def task_log_locations(
    request: Request,
    framework_name: str,
    job_attempt: int,
    task_role: str,
    index: int,
    task_attempt: int,
    user: User,
) -> dict[str, Any]:
    key = job_key(framework_name)
    await _task_node(await _job_detail(request, key), task_role, index)
    base = LOGS_ROUTE.format(
        framework_name=quote(key, safe="~"),
        job_attempt=job_attempt,
        task_role=task_role,
        index=index,
        task_attempt=task_attempt,
    )
    return {"locations": [{"name": s, "uri": f"{base}/{s}"} for s in ("stdout", "stderr")]}


@router.get(LOGS_ROUTE + "/{stream}")
async def task_log_content(
    request: Request,
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
    key = job_key(framework_name)
    node = await _task_node(await _job_detail(request, key), task_role, index)
    req = TaskLogRequest(
        job_key=key,
        attempt_id=job_attempt,
        task_role=task_role,
        index=index,
        stream="stdout" if stream == "stdout" else "stderr",
        tail_bytes=tail_bytes,
    )
    reply = await rpc(request, req, TaskLogReply, target=node)
    return PlainTextResponse(reply.content)


async def _task_node(detail: dict[str, Any], task_role: str, index: int) -> str:
    role = detail.get("taskRoles", {}).get(task_role)
    statuses = role.get("taskStatuses", []) if role else []
    if index < 0 or index >= len(statuses):
        raise NoTaskLogError(f"task {task_role}[{index}] does not exist")
    node = statuses[index].get("containerNodeName")
    if not node:
        raise NoTaskLogError(f"task {task_role}[{index}] has not been placed on a node yet")
    return str(node)
