"""The job list: OpenPAI's filters (user, VC, state, keyword, tags), paging, sorting, bulk stop, and a
table fragment that the page refreshes in place."""

from __future__ import annotations

import asyncio
import math
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from pai_portal.api import ApiError
from pai_portal.web import checked_form, job_url, portal, query, redirect, render, user_session

router = APIRouter()

STATES = ("WAITING", "RUNNING", "STOPPING", "SUCCEEDED", "FAILED", "STOPPED")
# The columns the API sorts by, with their headings.
COLUMNS = (
    ("jobName", "Name"),
    ("username", "User"),
    ("vc", "Virtual cluster"),
    ("state", "State"),
    ("submissionTime", "Submitted"),
    ("totalGpuNumber", "GPUs"),
    ("totalTaskNumber", "Tasks"),
    ("retries", "Retries"),
)
SIZES = (20, 50, 100, 200)


def _filters(
    user: str, vc: str, state: list[str], keyword: str, tag: str, order: str, dir: str, size: int
) -> dict[str, Any]:
    return {
        "user": user.strip(),
        "vc": vc.strip(),
        "state": [s for s in state if s in STATES],
        "keyword": keyword.strip(),
        "tag": tag.strip(),
        "order": order if order in dict(COLUMNS) else "submissionTime",
        "dir": "ASC" if dir.upper() == "ASC" else "DESC",
        "size": size if size in SIZES else SIZES[0],
    }


async def _page(request: Request, token: str, filters: dict[str, Any], page: int) -> dict[str, Any]:
    size = filters["size"]
    answer = await portal(request).api.get(
        "/api/v2/jobs",
        token,
        username=filters["user"],
        vc=filters["vc"],
        state=",".join(filters["state"]),
        keyword=filters["keyword"],
        tagsContain=filters["tag"],
        offset=(page - 1) * size,
        limit=size,
        order=f"{filters['order']},{filters['dir']}",
        withTotalCount="true",
    )
    total = int(answer.get("totalCount", 0))
    pages = max(1, math.ceil(total / size))
    return {"jobs": answer.get("data", []), "total": total, "page": page, "pages": pages}


def _params(
    user: str = "",
    vc: str = "",
    state: list[str] | None = None,
    keyword: str = "",
    tag: str = "",
    order: str = "submissionTime",
    dir: str = "DESC",
    size: int = 20,
) -> dict[str, Any]:
    return _filters(user, vc, state or [], keyword, tag, order, dir, size)


@router.get("/jobs")
async def jobs_page(
    request: Request,
    user: str = "",
    vc: str = "",
    state: list[str] = Query(default=[]),  # noqa: B008
    keyword: str = "",
    tag: str = "",
    order: str = "submissionTime",
    dir: str = "DESC",
    size: int = 20,
    page: int = Query(default=1, ge=1),
    fragment: bool = False,
) -> Response:
    session = user_session(request)
    filters = _params(user, vc, state, keyword, tag, order, dir, size)
    listing = await _page(request, session.token, filters, page)
    context = {
        "filters": filters,
        "states": STATES,
        "columns": COLUMNS,
        "sizes": SIZES,
        "query": query,
        "job_url": job_url,
        "self_query": query({**filters, "page": page}),
        **listing,
    }
    if fragment:
        return render(request, "jobs_table.html", fragment=True, **context)
    return render(request, "jobs.html", **context)


@router.post("/jobs/stop")
async def stop_selected(request: Request) -> Response:
    session = user_session(request)
    form = await checked_form(request)
    keys = [k for k in form.getlist("job") if isinstance(k, str) and k]
    back = form.get("back")
    back_url = back if isinstance(back, str) and back.startswith("/jobs") else "/jobs"
    if not keys:
        session.flash("Select the jobs to stop first.", "error")
        return redirect(request, back_url)
    api = portal(request).api

    async def stop(key: str) -> str | None:
        try:
            await api.call(
                "PUT", f"/api/v2/jobs/{key}/executionType", session.token, json_body={"value": "STOP"}
            )
        except ApiError as exc:
            return f"{key}: {exc.message}"
        return None

    failures = [f for f in await asyncio.gather(*(stop(k) for k in keys)) if f]
    stopped = len(keys) - len(failures)
    if failures:
        session.flash(f"Asked {stopped} job(s) to stop; not stopped: " + "; ".join(failures), "error")
    else:
        session.flash(f"Asked {stopped} job(s) to stop.")
    return redirect(request, back_url)
