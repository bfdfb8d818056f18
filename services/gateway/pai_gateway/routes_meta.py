"""Routes that say what this API is: open to everyone, as in OpenPAI."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse

from pai_common.contract.rpc import OidcConfigReply, OidcConfigRequest
from pai_gateway.deps import rpc

router = APIRouter()

# launcherType is one of OpenPAI's two ("yarn", "k8s"): clients choose the API generation by it, and this
# API is the k8s one (FrameworkController states, job attempts, task attempts), whatever runs the tasks.
INFO = {"name": "PAI RESTful API", "version": "0.1.0", "launcherType": "k8s", "authnMethod": "basic"}


@router.get("/api/v1")
async def v1_info() -> dict[str, str]:
    return INFO


@router.get("/api/v2", response_class=PlainTextResponse)
async def v2_banner() -> str:
    return "PAI RESTful API v2 (beta version)"


@router.get("/api/v2/info")
async def v2_info() -> dict[str, str]:
    return INFO


@router.get("/api/v2/authn/info")
async def authn_info(request: Request) -> dict[str, str]:
    """OpenPAI's answer: OIDC when single sign-on is configured (see routes_oidc), else basic."""
    if (await rpc(request, OidcConfigRequest(), OidcConfigReply)).enabled:
        return {"authn_type": "OIDC", "loginURI": "/api/v1/authn/oidc/login", "loginURIMethod": "get"}
    return {"authn_type": "basic", "loginURI": "/api/v1/authn/basic/login", "loginURIMethod": "post"}
