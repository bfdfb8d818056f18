"""The cluster's nodes: list them (any user), cordon, drain or uncordon one (admins).

OpenPAI has no such routes (it cordons through Kubernetes; its alert handler patches
``spec.unschedulable``); these are the project's. ``PUT /api/v2/cluster/nodes/{node}`` takes
``{"schedulable": false}`` to cordon, ``{"schedulable": false, "drain": true}`` to also stop the gangs
running there (gracefully; they are retried elsewhere without counting), ``{"schedulable": true}`` to
undo it, with an optional ``reason``.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import Field

from pai_common.contract.rpc import ListNodesRequest, NodeReply, NodesReply, SetNodeSchedulableRequest
from pai_common.errors import ForbiddenUserError, NoNodeError
from pai_gateway.auth_deps import Body, parse_body
from pai_gateway.deps import User, rpc

router = APIRouter()
NODE_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,251}[A-Za-z0-9])?$")


class SchedulableBody(Body):
    schedulable: bool
    drain: bool = False
    reason: str = Field(default="", max_length=1000)


def node_view(record: dict[str, Any]) -> dict[str, Any]:
    """A scheduler node record (``ListNodesRequest``) as this route answers it."""
    return {
        "name": record["name"],
        "hostIp": record.get("host_ip", ""),
        "registered": record.get("registered", False),
        "simulated": record.get("simulated", False),
        "skuTypes": record.get("sku_types", {}),
        "gpus": {
            "total": record.get("gpu_cells", {}).get("total", 0),
            "used": record.get("gpu_cells", {}).get("used", 0),
            "bad": record.get("bad_gpus", []),
        },
        "healthy": record.get("healthy", False),
        "schedulable": record.get("schedulable", True),
        "cordon": record.get("cordon"),
        "draining": record.get("draining", False),
        "runningGangs": record.get("running_gangs", 0),
    }


@router.get("/api/v2/cluster/nodes")
async def nodes(request: Request, user: User) -> dict[str, Any]:
    records = (await rpc(request, ListNodesRequest(), NodesReply)).nodes
    return {"nodes": [node_view(r) for r in records]}


@router.put("/api/v2/cluster/nodes/{node}")
async def set_schedulable(request: Request, node: str, user: User, response: Response) -> dict[str, Any]:
    if not user.admin:
        raise ForbiddenUserError("Only admins may cordon, drain or uncordon a node.")
    if not NODE_NAME.match(node):
        raise NoNodeError(f"Node {node} is not found.")
    body = await parse_body(request, SchedulableBody)
    req = SetNodeSchedulableRequest(
        node=node, schedulable=body.schedulable, drain=body.drain, by=user.username, reason=body.reason
    )
    reply = await rpc(request, req, NodeReply)
    if not reply.applied:
        response.status_code = 202  # accepted; the scheduler applies it in a moment
    return node_view(reply.node)
