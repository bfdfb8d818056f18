"""Routes that say what this API is: open to everyone, as in OpenPAI."""

from __future__ import annotations

from fastapi import APIRouter, Request

from pai_common.contract.rpc import OidcConfigReply, OidcConfigRequest
from pai_gateway.deps import rpc

router = APIRouter()

INFO = {"name": "PAI RESTful API", "version": "0.1.0", "launcherType": "local", "authnMethod": "basic"}


@router.get("/api/v1")
async def v1_info() -> dict[str, str]:
    return INFO


@router.get("/api/v2/info")
async def v2_info() -> dict[str, str]:
    return INFO


@router.get("/api/v2/authn/info")
async def authn_info(request: Request) -> dict[str, str]:
    """OpenPAI's answer: OIDC when single sign-on is configured (see routes_oidc), else basic."""
    if (await rpc(request, OidcConfigRequest(), OidcConfigReply)).enabled:
        return {"authn_type": "OIDC", "loginURI": "/api/v1/authn/oidc/login", "loginURIMethod": "get"}
    return {"authn_type": "basic", "loginURI": "/api/v1/authn/basic/login", "loginURIMethod": "post"}
