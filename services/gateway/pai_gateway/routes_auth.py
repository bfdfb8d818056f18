"""Login and tokens (and, with issue 5, users and groups): each route one RPC to the auth service."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request

from pai_common.contract.rpc import LoginReply, LoginRequest
from pai_common.errors import InvalidParametersError
from pai_gateway.deps import User, first_line, read_body, rpc

router = APIRouter()


@router.post("/api/v2/authn/basic/login")
@router.post("/api/v1/authn/basic/login")
async def login(request: Request) -> dict[str, Any]:
    raw = await read_body(request)
    ctype = request.headers.get("content-type", "")
    try:
        if ctype.startswith("application/x-www-form-urlencoded"):
            data: Any = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
        else:
            data = json.loads(raw or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise InvalidParametersError("the login body is neither JSON nor a form") from None
    if not isinstance(data, dict):
        raise InvalidParametersError("the login body must be an object with username and password")
    expiration = data.get("expiration", 7 * 24 * 3600)
    try:
        req = LoginRequest(
            username=data.get("username", ""),
            password=data.get("password", ""),
            expiration_s=int(expiration),
        )
    except (ValueError, TypeError) as exc:
        raise InvalidParametersError(first_line(str(exc))) from None
    reply = await rpc(request, req, LoginReply)
    return {"user": reply.user, "token": reply.token, "admin": reply.admin, "hasGitHubPAT": False}


@router.get("/api/v2/tokens/check")
async def token_check(user: User) -> dict[str, Any]:
    return {"username": user.username, "application": user.application, "admin": user.admin}
