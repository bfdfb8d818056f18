"""Job routes of REST API v2: submit, list, detail, attempts, config, executionType, tags, events, task
logs and the live job stream, each backed by the jobs service (or, for log content, the node's runtime)."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

from pai_common.contract.rpc import (
    GetJobRequest,
    Identity,
    JobAttemptsReply,
    JobAttemptsRequest,
    JobConfigReply,
    JobConfigRequest,
    JobCountsReply,
    JobCountsRequest,
    JobDetailReply,
    JobEventsReply,
    JobEventsRequest,
    JobExecutionTypeRequest,
    JobListReply,
    JobMutationReply,
    JobTagRequest,
    ListJobsRequest,
    SubmitJobReply,
    SubmitJobRequest,
    TaskAttemptsReply,
    TaskAttemptsRequest,
    TaskLogReply,
    TaskLogRequest,
)
from pai_common.contract.states import JOB_STATES
from pai_common.errors import (
    InvalidParametersError,
    InvalidProtocolError,
    NoJobError,
    NoTaskLogError,
    RpcTimeoutError,
    ServiceUnavailableError,
    TooManyRequestsError,
)
from pai_gateway.deps import User, job_key, read_body, rpc, settings_of
from pai_gateway.job_stream import KEEPALIVE, changes
from pai_gateway.rate_limit import FixedWindowLimiter

router = APIRouter()

MAX_LIST_LIMIT = 50_000
# What `tail-mode=true` log locations return: the end of the log, as OpenPAI's tail logs (16 KiB).
TAIL_MODE_BYTES = 16 * 1024
KEEPALIVE_S = 15.0


# ---- rate limits ---------------------------------------------------------------------------------------


def _limiters(request: Request) -> dict[str, FixedWindowLimiter]:
    state = request.app.state
    limiters: dict[str, FixedWindowLimiter] | None = getattr(state, "job_rate_limiters", None)
    if limiters is None:
        settings = settings_of(request)
        limiters = {
            "submit": FixedWindowLimiter(settings.rate_limit_submit_per_hour, 3600.0),
            "list": FixedWindowLimiter(settings.rate_limit_list_per_min, 60.0),
        }
        state.job_rate_limiters = limiters
    return limiters


def _limit(request: Request, which: str, user: Identity) -> None:
    wait = _limiters(request)[which].hit(user.username, time.monotonic())
    if wait is not None:
        seconds = max(1, math.ceil(wait))
        raise TooManyRequestsError(
            f"Too many {which} requests from user {user.username}; retry in {seconds} s.", seconds
        )


# ---- submit and list -----------------------------------------------------------------------------------


@router.post("/api/v2/jobs", status_code=202)
async def submit_job(request: Request, user: User) -> dict[str, Any]:
    _limit(request, "submit", user)
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("text/"):
        raise InvalidProtocolError("send the job protocol as YAML with Content-Type: text/yaml")
    raw = await read_body(request)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidProtocolError("the job protocol is not UTF-8 text") from None
    settings = settings_of(request)
    req = SubmitJobRequest(
        username=user.username,
        virtual_clusters=user.virtual_clusters,
        admin=user.admin,
        protocol_yaml=text,
        wait_ms=int(settings.submit_wait_s * 1000),
    )
    reply = await _submit_truly(request, req, settings.submit_timeout_s)
    name = reply.job_key.split("~", 1)[1]
    return {"status": 202, "message": f"Update job {name} for user {user.username} successfully."}


async def _submit_truly(request: Request, req: SubmitJobRequest, timeout: float) -> SubmitJobReply:
    """The jobs service's answer, which is the truth (it bounds its own wait, see admission).

    Should it not answer in time (it died with the request, or a write stalled), the job may or may not
    exist: the same submission is sent once more, which an identical stored job answers with 202. If that
    fails too, the answer says that the outcome is unknown, never that the job was not created.
    """
    try:
        return await rpc(request, req, SubmitJobReply, timeout=timeout)
    except RpcTimeoutError:
        pass
    try:
        return await rpc(request, req, SubmitJobReply, timeout=timeout)
    except (ServiceUnavailableError, TooManyRequestsError):
        raise ServiceUnavailableError(
            "The jobs service did not answer in time, so whether the job was created is not known: submit"
            " the same job again to find out (an identical submission is answered 202 if the job exists)."
        ) from None


def _csv(value: str | None) -> list[str]:
    return [item for item in (value or "").split(",") if item]


@router.get("/api/v2/jobs", response_model=None)
async def list_jobs(
    request: Request,
    user: User,
    username: str | None = None,
    vc: str | None = None,
    state: str | None = None,
    keyword: str | None = None,
    tagsContain: str | None = None,
    tagsNotContain: str | None = None,
    jobPriority: str | None = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST_LIMIT)] = 5000,
    order: str = "submissionTime,DESC",
    withTotalCount: bool = False,
) -> Any:
    _limit(request, "list", user)
    field, _, direction = order.partition(",")
    direction = (direction or "DESC").upper()
    if direction not in ("ASC", "DESC"):
        raise InvalidParametersError(f"order direction {direction!r} is not ASC or DESC")
    req = ListJobsRequest(
        usernames=_csv(username),
        virtual_cluster=vc,
        states=_csv(state),
        keyword=keyword,
        tags_contain=_csv(tagsContain),
        tags_not_contain=_csv(tagsNotContain),
        job_priorities=_csv(jobPriority),
        offset=offset,
        limit=limit,
        order_field=field,
        order="ASC" if direction == "ASC" else "DESC",
        count_total=withTotalCount,
    )
    reply = await rpc(request, req, JobListReply)
    # Plain JSON data from the jobs service: skip FastAPI's per-field encoding of up to 50,000 summaries.
    if withTotalCount:
        return JSONResponse({"totalCount": reply.total, "data": reply.jobs})
    return JSONResponse(reply.jobs)


@router.get("/api/v2/jobs/counts")
async def count_jobs(request: Request, user: User, username: str | None = None, vc: str | None = None) -> Any:
    """How many jobs are in each state (this platform's own route, not OpenPAI's): the filters of the
    list's `username` (comma-separated) and `vc`; every state is named, with 0 when no job is in it.
    Registered before `/jobs/{framework_name}`, which "counts" (no `~`) could never be."""
    _limit(request, "list", user)
    reply = await rpc(request, JobCountsRequest(usernames=_csv(username), virtual_cluster=vc), JobCountsReply)
    states = {state: 0 for state in JOB_STATES} | reply.states
    return JSONResponse({"totalCount": reply.total, "states": states})


# ---- one job -------------------------------------------------------------------------------------------


async def _job_detail(request: Request, key: str, attempt_id: int | None = None) -> dict[str, Any]:
    return (await rpc(request, GetJobRequest(job_key=key, attempt_id=attempt_id), JobDetailReply)).detail


@router.get("/api/v2/jobs/{framework_name}")
async def get_job(request: Request, framework_name: str, user: User) -> dict[str, Any]:
    return await _job_detail(request, job_key(framework_name))


@router.get("/api/v2/jobs/{framework_name}/attempts/{job_attempt}")
async def get_job_attempt_detail(
    request: Request, framework_name: str, job_attempt: int, user: User
) -> dict[str, Any]:
    return await _job_detail(request, job_key(framework_name), job_attempt)


@router.get("/api/v2/jobs/{framework_name}/config")
async def get_job_config(request: Request, framework_name: str, user: User) -> Response:
    reply = await rpc(request, JobConfigRequest(job_key=job_key(framework_name)), JobConfigReply)
    # As OpenPAI: a JSON body under a text/yaml header (its clients parse it as YAML, which JSON is).
    return Response(json.dumps(reply.config), media_type="text/yaml")


async def _json_value(request: Request) -> Any:
    raw = await read_body(request)
    try:
        data = json.loads(raw or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise InvalidParametersError('the body must be JSON: {"value": ...}') from None
    if not isinstance(data, dict) or "value" not in data:
        raise InvalidParametersError('"value" is required')
    return data["value"]


@router.put("/api/v2/jobs/{framework_name}/executionType", status_code=202)
async def put_execution_type(request: Request, framework_name: str, user: User) -> dict[str, Any]:
    key = job_key(framework_name)
    value = await _json_value(request)
    if value not in ("START", "STOP"):
        raise InvalidParametersError(f'"value" must be one of [START, STOP], got {json.dumps(value)}')
    req = JobExecutionTypeRequest(job_key=key, value=value, username=user.username, admin=user.admin)
    reply = await rpc(request, req, JobMutationReply)
    return {"status": 202, "message": reply.message}


async def _tag(request: Request, framework_name: str, user: Identity, remove: bool) -> dict[str, Any]:
    key = job_key(framework_name)
    value = await _json_value(request)
    if not isinstance(value, str) or not value or "," in value or len(value) > 256:
        raise InvalidParametersError(
            '"value" must be a non-empty string without commas (at most 256 characters)'
        )
    req = JobTagRequest(job_key=key, tag=value, remove=remove, username=user.username, admin=user.admin)
    reply = await rpc(request, req, JobMutationReply)
    return {"status": 200, "message": reply.message}


@router.put("/api/v2/jobs/{framework_name}/tag")
async def put_tag(request: Request, framework_name: str, user: User) -> dict[str, Any]:
    return await _tag(request, framework_name, user, remove=False)


@router.delete("/api/v2/jobs/{framework_name}/tag")
async def delete_tag(request: Request, framework_name: str, user: User) -> dict[str, Any]:
    return await _tag(request, framework_name, user, remove=True)


@router.get("/api/v2/jobs/{framework_name}/events")
async def get_job_events(
    request: Request, framework_name: str, user: User, type: str | None = None
) -> dict[str, Any]:
    kind: Literal["Normal", "Warning"] | None = None
    if type == "Normal":
        kind = "Normal"
    elif type == "Warning":
        kind = "Warning"
    elif type is not None:
        raise InvalidParametersError(f"type must be Normal or Warning, got {type!r}")
    req = JobEventsRequest(job_key=job_key(framework_name), type=kind)
    reply = await rpc(request, req, JobEventsReply)
    return {"totalCount": reply.total, "data": reply.events}


# ---- attempts ------------------------------------------------------------------------------------------


@router.get("/api/v2/jobs/{framework_name}/job-attempts/healthz")
async def job_attempts_healthz(framework_name: str, user: User) -> PlainTextResponse:
    # Job history is always kept here.
    return PlainTextResponse("ok")


@router.get("/api/v2/jobs/{framework_name}/job-attempts", response_model=None)
async def get_job_attempts(request: Request, framework_name: str, user: User) -> Any:
    try:
        reply = await rpc(request, JobAttemptsRequest(job_key=job_key(framework_name)), JobAttemptsReply)
    except NoJobError:
        # OpenPAI answers a missing job here with 404 and the body `null`.
        return JSONResponse(None, status_code=404)
    return reply.attempts


@router.get("/api/v2/jobs/{framework_name}/job-attempts/{job_attempt}")
async def get_job_attempt(request: Request, framework_name: str, job_attempt: int, user: User) -> Any:
    if job_attempt < 0:
        raise NoJobError(f"Job {framework_name} has no attempt {job_attempt}.")
    req = JobAttemptsRequest(job_key=job_key(framework_name), attempt_id=job_attempt)
    return (await rpc(request, req, JobAttemptsReply)).attempts[0]


TASK_ROUTE = "/api/v2/jobs/{framework_name}/attempts/{job_attempt}/taskRoles/{task_role}/taskIndex/{index}"


@router.get(TASK_ROUTE + "/attempts")
async def get_task_attempts(
    request: Request, framework_name: str, job_attempt: int, task_role: str, index: int, user: User
) -> dict[str, Any]:
    if job_attempt < 0 or index < 0:
        raise NoJobError(f"Job {framework_name} has no task {task_role}[{index}] in attempt {job_attempt}.")
    req = TaskAttemptsRequest(
        job_key=job_key(framework_name), attempt_id=job_attempt, task_role=task_role, index=index
    )
    return (await rpc(request, req, TaskAttemptsReply)).status


# ---- logs ----------------------------------------------------------------------------------------------

LOGS_ROUTE = TASK_ROUTE + "/attempts/{task_attempt}/logs"
# The streams a runtime agent keeps per task attempt; "all" interleaves stdout and stderr.
LOG_STREAMS: dict[str, Literal["stdout", "stderr", "all"]] = {
    "stdout": "stdout",
    "stderr": "stderr",
    "all": "all",
}


@router.get(LOGS_ROUTE)
async def task_log_locations(
    request: Request,
    framework_name: str,
    job_attempt: int,
    task_role: str,
    index: int,
    task_attempt: int,
    user: User,
    tail_mode: Annotated[bool, Query(alias="tail-mode")] = False,
) -> dict[str, Any]:
    key = job_key(framework_name)
    await _task_node(await _job_detail(request, key, job_attempt), task_role, index)
    base = LOGS_ROUTE.format(
        framework_name=quote(key, safe="~"),
        job_attempt=job_attempt,
        task_role=task_role,
        index=index,
        task_attempt=task_attempt,
    )
    query = f"?tail_bytes={TAIL_MODE_BYTES}" if tail_mode else ""
    return {"locations": [{"name": s, "uri": f"{base}/{s}{query}"} for s in LOG_STREAMS]}


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
    if stream not in LOG_STREAMS:
        raise NoTaskLogError(f"no log named {stream!r}; use one of {', '.join(LOG_STREAMS)}")
    key = job_key(framework_name)
    # The node of that job attempt (task retries stay on their attempt's cells).
    node = await _task_node(await _job_detail(request, key, job_attempt), task_role, index)
    req = TaskLogRequest(
        job_key=key,
        attempt_id=job_attempt,
        task_role=task_role,
        index=index,
        task_attempt_id=task_attempt,
        stream=LOG_STREAMS[stream],
        tail_bytes=tail_bytes,
    )
    reply = await rpc(request, req, TaskLogReply, target=node)
    # The whole log's length: a client polling the tail can tell exactly what is new (`pai job logs -f`).
    return PlainTextResponse(reply.content, headers={"X-PAI-Log-Size": str(reply.size)})


async def _task_node(detail: dict[str, Any], task_role: str, index: int) -> str:
    role = detail.get("taskRoles", {}).get(task_role)
    statuses = role.get("taskStatuses", []) if role else []
    if index < 0 or index >= len(statuses):
        raise NoTaskLogError(f"task {task_role}[{index}] does not exist")
    node = statuses[index].get("containerNodeName")
    if not node:
        raise NoTaskLogError(f"task {task_role}[{index}] has not been placed on a node yet")
    return str(node)


# ---- live stream ---------------------------------------------------------------------------------------


@router.get("/api/v2/jobs/{framework_name}/stream")
async def stream_job(request: Request, framework_name: str, user: User) -> StreamingResponse:
    """Server-Sent Events: `job` (jobStatus), `task` (one task status) as they change, `end` at the end.

    See job_stream for how changes are found. The first poll happens before the response starts, so a
    missing job is a plain 404.
    """
    key = job_key(framework_name)
    first = await _job_detail(request, key)
    interval = settings_of(request).job_stream_poll_s

    async def events() -> AsyncIterator[str]:
        sent = 0
        previous: dict[str, Any] | None = None
        current = first
        quiet_since = time.monotonic()
        while True:
            for event in changes(previous, current):
                sent += 1
                yield event.encode(sent)
                quiet_since = time.monotonic()
                if event.event == "end":
                    return
            previous = current
            if time.monotonic() - quiet_since >= KEEPALIVE_S:
                yield KEEPALIVE
                quiet_since = time.monotonic()
            await asyncio.sleep(interval)
            if await request.is_disconnected():
                return
            try:
                current = await _job_detail(request, key)
            except Exception:
                # The jobs service did not answer this time; the next poll tries again.
                current = previous

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)
