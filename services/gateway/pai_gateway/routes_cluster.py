"""Virtual clusters and SKU types: what a user may run on (storages: ``routes_storages``)."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request

from pai_common.contract.rpc import (
    ListVirtualClustersRequest,
    SkuTypesReply,
    SkuTypesRequest,
    VirtualClustersReply,
)
from pai_common.errors import InvalidParametersError, NoVirtualClusterError
from pai_gateway.deps import User, rpc

router = APIRouter()


async def _all_vcs(request: Request) -> dict[str, dict[str, Any]]:
    return (await rpc(request, ListVirtualClustersRequest(), VirtualClustersReply)).virtual_clusters


@router.get("/api/v2/virtual-clusters")
async def virtual_clusters(request: Request, user: User) -> dict[str, Any]:
    return await _all_vcs(request)


@router.get("/api/v2/virtual-clusters/{vc}")
async def virtual_cluster(request: Request, vc: str, user: User) -> dict[str, Any]:
    if not re.fullmatch(r"[A-Za-z0-9_]+", vc):
        raise InvalidParametersError(f"virtual cluster name {vc!r} must match ^[A-Za-z0-9_]+$")
    vcs = await _all_vcs(request)
    if vc not in vcs:
        raise NoVirtualClusterError(f"Virtual cluster {vc} is not found.")
    return vcs[vc]


@router.get("/api/v2/cluster/sku-types")
async def sku_types(request: Request, user: User, vc: str | None = None) -> dict[str, Any]:
    return (await rpc(request, SkuTypesRequest(virtual_cluster=vc), SkuTypesReply)).sku_types
