"""One job: state, retries, pending reason and position, tasks, attempts, events, exit diagnosis, config
(secrets masked by the API), stop, tags, live updates from the job's event stream, and the log view."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote

import yaml
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import PlainTextResponse, Response, StreamingResponse

from pai_portal.api import ApiError
from pai_portal.web import (
    checked_form,
    form_text,
    job_url,
    portal,
    query,
    redirect,
    render,
    user_session,
)

router = APIRouter()

KEY = r"^[\w.-]+~[\w-]+$"
FINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
STREAMS = ("stdout", "stderr", "all")
TAIL_BYTES = 16 * 1024
FULL_BYTES = 1024 * 1024


def _key(key: str) -> str:
    if not re.match(KEY, key):
        raise ApiError(404, "NoJobError", f"Job {key} is not found.")
    return key


async def _optional(coro: Any, default: Any) -> Any:
    """A part of the page that may be missing (an older API, a job without attempts yet)."""
    try:
        return await coro
    except ApiError:
        return default


def _tasks(detail: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for role, body in (detail.get("taskRoles") or {}).items():
        for status in body.get("taskStatuses") or []:
            rows.append({"role": role, **status})
    return rows


async def _live(request: Request, key: str, token: str) -> dict[str, Any]:
    api = portal(request).api
    detail, events, attempts = await asyncio.gather(
        api.get(f"/api/v2/jobs/{key}", token),
        _optional(api.get(f"/api/v2/jobs/{key}/events", token), {"data": []}),
        _optional(api.get(f"/api/v2/jobs/{key}/job-attempts", token), []),
    )
    status = detail.get("jobStatus") or {}
    return {
        "key": key,
        "detail": detail,
        "status": status,
        "final": status.get("state") in FINAL,
        "tasks": _tasks(detail),
        "events": (events or {}).get("data", []) if isinstance(events, dict) else [],
        "attempts": attempts if isinstance(attempts, list) else [],
        "job_url": job_url,
        "query": query,
    }


@router.get("/jobs/{key}")
async def job_page(request: Request, key: str) -> Response:
    session = user_session(request)
    key = _key(key)
    live = await _live(request, key, session.token)
    config = await _optional(portal(request).api.get(f"/api/v2/jobs/{key}/config", session.token), None)
    if isinstance(config, str):
        config = yaml.safe_load(config)
    config_text = yaml.safe_dump(config, sort_keys=False, allow_unicode=True) if config else ""
    mine = session.admin or key.split("~", 1)[0] == session.user
    return render(request, "job.html", config_text=config_text, may_change=mine, **live)


@router.get("/jobs/{key}/live")
async def job_live(request: Request, key: str) -> Response:
    session = user_session(request)
    live = await _live(request, _key(key), session.token)
    mine = session.admin or key.split("~", 1)[0] == session.user
    return render(request, "job_live.html", fragment=True, may_change=mine, **live)


@router.get("/jobs/{key}/stream")
async def job_stream(request: Request, key: str) -> Response:
    """The API's Server-Sent Events of this job, relayed with the session's token (a browser's
    EventSource cannot send the token itself, and the page must never see it)."""
    session = user_session(request)
    key = _key(key)
    api = portal(request).api

    async def relay() -> AsyncIterator[bytes]:
        try:
            async with api.stream(f"/api/v2/jobs/{key}/stream", session.token) as upstream:
                async for chunk in upstream.aiter_raw():
                    yield chunk
        except ApiError as exc:
            yield f"event: error\ndata: {exc.code}\n\n".encode()

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(relay(), media_type="text/event-stream", headers=headers)


@router.post("/jobs/{key}/stop")
async def stop_job(request: Request, key: str) -> Response:
    session = user_session(request)
    key = _key(key)
    await checked_form(request)
    try:
        await portal(request).api.call(
            "PUT", f"/api/v2/jobs/{key}/executionType", session.token, json_body={"value": "STOP"}
        )
        session.flash(f"Asked {key} to stop.")
    except ApiError as exc:
        session.flash(f"Could not stop {key}: {exc.message}", "error")
    return redirect(request, job_url(key))


@router.post("/jobs/{key}/tags")
async def change_tag(request: Request, key: str) -> Response:
    session = user_session(request)
    key = _key(key)
    form = await checked_form(request)
    tag = form_text(form, "tag").strip()
    remove = form_text(form, "action") == "remove"
    if not tag:
        session.flash("Enter a tag.", "error")
        return redirect(request, job_url(key))
    try:
        await portal(request).api.call(
            "DELETE" if remove else "PUT", f"/api/v2/jobs/{key}/tag", session.token, json_body={"value": tag}
        )
        session.flash(f"Tag {'removed' if remove else 'added'}: {tag}")
    except ApiError as exc:
        session.flash(f"Could not change the tag: {exc.message}", "error")
    return redirect(request, job_url(key))


@dataclass(frozen=True)
class LogWhere:
    """Which log: a task attempt's stream, the tail or the whole (the query of both log routes)."""

    role: str
    index: int = 0
    jobAttempt: int = 0
    taskAttempt: int = 0
    stream: str = "stdout"
    tail: bool = True

    def path(self, key: str) -> str:
        stream = self.stream if self.stream in STREAMS else "stdout"
        return (
            f"/api/v2/jobs/{key}/attempts/{self.jobAttempt}/taskRoles/{quote(self.role, safe='')}"
            f"/taskIndex/{self.index}/attempts/{self.taskAttempt}/logs/{stream}"
        )

    @property
    def tail_bytes(self) -> int:
        return TAIL_BYTES if self.tail else FULL_BYTES


def _where(
    role: str,
    index: Annotated[int, Query(ge=0)] = 0,
    jobAttempt: Annotated[int, Query(ge=0)] = 0,
    taskAttempt: Annotated[int, Query(ge=0)] = 0,
    stream: str = "stdout",
    tail: bool = True,
) -> LogWhere:
    return LogWhere(role, index, jobAttempt, taskAttempt, stream if stream in STREAMS else "stdout", tail)


Where = Annotated[LogWhere, Depends(_where)]


@router.get("/jobs/{key}/logs")
async def log_page(request: Request, key: str, where: Where) -> Response:
    session = user_session(request)
    key = _key(key)
    api = portal(request).api
    task_path = (
        f"/api/v2/jobs/{key}/attempts/{where.jobAttempt}/taskRoles/{quote(where.role, safe='')}"
        f"/taskIndex/{where.index}/attempts"
    )
    task = await _optional(api.get(task_path, session.token), {})
    error = None
    try:
        text = await api.get(where.path(key), session.token, tail_bytes=where.tail_bytes)
    except ApiError as exc:
        text, error = "", exc.message
    return render(
        request,
        "logs.html",
        key=key,
        where=where,
        stream=where.stream,
        streams=STREAMS,
        tail=where.tail,
        text=text if isinstance(text, str) else str(text),
        error=error,
        task=task if isinstance(task, dict) else {},
        job_url=job_url,
        query=query,
    )


@router.get("/jobs/{key}/logs/text")
async def log_text(request: Request, key: str, where: Where) -> Response:
    """The log as plain text, for the page's live follow."""
    session = user_session(request)
    text = await portal(request).api.get(where.path(_key(key)), session.token, tail_bytes=where.tail_bytes)
    body = text if isinstance(text, str) else str(text)
    return PlainTextResponse(body, headers={"Cache-Control": "no-store"})
