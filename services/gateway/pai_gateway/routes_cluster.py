"""Virtual clusters and SKU types, and OpenPAI's Kubernetes views of nodes and pods (storages:
``routes_storages``)."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request

from pai_common.contract.rpc import (
    ListLiveTasksRequest,
    ListNodesRequest,
    ListVirtualClustersRequest,
    LiveTasksReply,
    NodesReply,
    SkuTypesReply,
    SkuTypesRequest,
    VirtualClustersReply,
)
from pai_common.errors import ForbiddenUserError, InvalidParametersError, NoVirtualClusterError
from pai_gateway import k8s_views
from pai_gateway.deps import User, rpc

router = APIRouter()


async def _all_vcs(request: Request) -> dict[str, dict[str, Any]]:
    return (await rpc(request, ListVirtualClustersRequest(), VirtualClustersReply)).virtual_clusters


@router.get("/api/v2/virtual-clusters")
async def virtual_clusters(request: Request, user: User) -> dict[str, Any]:
    return await _all_vcs(request)


@router.get("/api/v2/virtual-clusters/{vc}")
async def virtual_cluster(request: Request, vc: str, user: User) -> dict[str, Any]:
    _check_vc_name(vc)
    vcs = await _all_vcs(request)
    if vc not in vcs:
        raise NoVirtualClusterError(f"Virtual cluster {vc} is not found.")
    return vcs[vc]


@router.get("/api/v2/cluster/sku-types")
async def sku_types(request: Request, user: User, vc: str | None = None) -> dict[str, Any]:
    if vc is not None:
        _check_vc_name(vc)
    return (await rpc(request, SkuTypesRequest(virtual_cluster=vc), SkuTypesReply)).sku_types


@router.get("/api/v2/virtual-clusters/{vc}/sku-types")
async def vc_sku_types(request: Request, vc: str, user: User) -> dict[str, Any]:
    """Where OpenPAI's JavaScript SDK asks for a VC's SKU types (`getVirtualClusterSkuTypes`)."""
    return await sku_types(request, user, vc)


def _check_vc_name(vc: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9_]+", vc):
        raise InvalidParametersError(f"virtual cluster name {vc!r} must match ^[A-Za-z0-9_]+$")


NON_ADMIN = "Non-admin is not allow to do this operation."


@router.get("/api/v2/kubernetes/nodes")
@router.get("/api/v1/kubernetes/nodes")
async def kubernetes_nodes(request: Request, user: User) -> dict[str, Any]:
    """Admins only, as in OpenPAI: every node of the cluster as a Kubernetes NodeList."""
    if not user.admin:
        raise ForbiddenUserError(NON_ADMIN)
    return k8s_views.node_list((await rpc(request, ListNodesRequest(), NodesReply)).nodes)


@router.get("/api/v2/kubernetes/pods")
@router.get("/api/v1/kubernetes/pods")
async def kubernetes_pods(request: Request, user: User, namespace: str | None = None) -> dict[str, Any]:
    """Admins only, as in OpenPAI: every task of every unfinished job as a Kubernetes PodList."""
    if not user.admin:
        raise ForbiddenUserError(NON_ADMIN)
    return k8s_views.pod_list((await rpc(request, ListLiveTasksRequest(), LiveTasksReply)).tasks, namespace)
