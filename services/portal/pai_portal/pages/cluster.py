"""Home (my jobs by state, my virtual clusters' GPUs, cluster health) and the virtual clusters and
nodes page."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from pai_portal import charts
from pai_portal.api import ApiError
from pai_portal.pages.jobs import STATES
from pai_portal.web import job_url, portal, render, user_session

router = APIRouter()
# Where the API's node list names a node's bad GPUs (the gateway's k8s_views).
BAD_GPUS_ANNOTATION = "pai.platform/bad-gpus"


def _gpus(resources: Any) -> float:
    if not isinstance(resources, dict):
        return 0.0
    value = resources.get("GPUs", resources.get("gpu", 0))
    return float(value) if isinstance(value, int | float) else 0.0


def vc_rows(vcs: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name, vc in sorted(vcs.items()):
        guaranteed = _gpus(vc.get("resourcesGuaranteed"))
        used = _gpus(vc.get("resourcesUsed"))
        rows.append(
            {
                "name": name,
                "guaranteed": guaranteed,
                "used": used,
                "available": _gpus(vc.get("resourcesAvailable")),
                "total": _gpus(vc.get("resourcesTotal")),
                "cpu": (vc.get("resourcesUsed") or {}).get("cpu", 0),
                "cpu_total": (vc.get("resourcesTotal") or {}).get("cpu", 0),
                "memory": (vc.get("resourcesUsed") or {}).get("memory", 0),
                "memory_total": (vc.get("resourcesTotal") or {}).get("memory", 0),
                "chart": charts.quota_bar(f"GPUs of {name}", guaranteed, used),
            }
        )
    return rows


async def nodes(request: Request, token: str) -> tuple[list[dict[str, Any]] | None, str]:
    """The node list from the API's Kubernetes-shaped route, or why there is none."""
    try:
        answer = await portal(request).api.get("/api/v2/kubernetes/nodes", token)
    except ApiError as exc:
        if exc.missing_route:
            return None, "This platform's API has no node list (GET /api/v2/kubernetes/nodes answered 404)."
        return None, f"The node list is not available: {exc.message}"
    return node_rows(answer.get("items", []) if isinstance(answer, dict) else []), ""


def node_rows(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The node table's rows from a Kubernetes NodeList's items (as the API's `kubernetes/nodes` gives)."""
    rows = []
    for item in items:
        status = item.get("status") or {}
        ready: dict[str, Any] = next(
            (c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {}
        )
        capacity = status.get("capacity") or {}
        annotations = (item.get("metadata") or {}).get("annotations") or {}
        rows.append(
            {
                "name": (item.get("metadata") or {}).get("name", ""),
                "ready": ready.get("status") == "True",
                "reason": ready.get("reason") or ready.get("message") or "",
                "gpus": capacity.get("nvidia.com/gpu") or capacity.get("gpu") or "",
                "cpu": capacity.get("cpu", ""),
                "memory": capacity.get("memory", ""),
                "unschedulable": bool((item.get("spec") or {}).get("unschedulable")),
                "bad_gpus": annotations.get(BAD_GPUS_ANNOTATION, ""),
            }
        )
    return rows


async def _counts(request: Request, token: str, user: str) -> dict[str, int]:
    """Jobs per state (one user's, or everyone's when `user` is empty), in one API call."""
    answer = await portal(request).api.get("/api/v2/jobs/counts", token, username=user)
    states = answer.get("states", {}) if isinstance(answer, dict) else {}
    return {str(state): int(n) for state, n in states.items()}


@router.get("/")
async def home(request: Request) -> Response:
    session = user_session(request)
    api = portal(request).api
    # Every call at once: the page costs the slowest of them, not their sum.
    my_counts, everyone, me, vcs, recent, (node_rows, node_note) = await asyncio.gather(
        _counts(request, session.token, session.user),
        _counts(request, session.token, ""),
        api.get("/api/v2/users/me", session.token),
        api.get("/api/v2/virtual-clusters", session.token),
        api.get("/api/v2/jobs", session.token, username=session.user, limit=8, withTotalCount="true"),
        nodes(request, session.token),
    )
    waiting, running = everyone.get("WAITING", 0), everyone.get("RUNNING", 0)
    by_state = {state: my_counts.get(state, 0) for state in STATES}
    bars = [charts.Segment(s, by_state[s], charts.PALETTE.get(s, "#888")) for s in STATES]
    my_vcs = set(me.get("virtualCluster") or []) if isinstance(me, dict) else set()
    all_rows = vc_rows(vcs if isinstance(vcs, dict) else {})
    health = {
        "gpus_total": sum(r["total"] for r in all_rows),
        "gpus_used": sum(r["used"] for r in all_rows),
        "waiting": waiting,
        "running": running,
        "nodes": len(node_rows) if node_rows is not None else None,
        "nodes_ready": sum(1 for n in node_rows if n["ready"]) if node_rows is not None else None,
        "node_note": node_note,
    }
    return render(
        request,
        "home.html",
        by_state=by_state,
        states=STATES,
        state_chart=charts.bar_chart("My jobs by state", bars),
        vcs=[r for r in all_rows if session.admin or r["name"] in my_vcs],
        recent=recent.get("data", []),
        health=health,
        job_url=job_url,
    )


@router.get("/virtual-clusters")
async def clusters(request: Request) -> Response:
    session = user_session(request)
    api = portal(request).api
    vcs, skus = await asyncio.gather(
        api.get("/api/v2/virtual-clusters", session.token),
        api.get("/api/v2/cluster/sku-types", session.token),
    )
    rows = vc_rows(vcs if isinstance(vcs, dict) else {})
    per_vc_skus = await asyncio.gather(
        *(api.get("/api/v2/cluster/sku-types", session.token, vc=r["name"]) for r in rows)
    )
    for row, vc_skus in zip(rows, per_vc_skus, strict=True):
        row["skus"] = sorted((vc_skus or {}).keys()) if isinstance(vc_skus, dict) else []
    node_rows, node_note = await nodes(request, session.token)
    return render(
        request,
        "clusters.html",
        vcs=rows,
        skus=skus if isinstance(skus, dict) else {},
        nodes=node_rows,
        node_note=node_note,
    )
