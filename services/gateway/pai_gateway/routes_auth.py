"""Login, logout and tokens: each route one RPC to the auth service."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request

from pai_common.contract.rpc import (
    AuthMessageReply,
    CreateApplicationTokenRequest,
    ListTokensRequest,
    LoginReply,
    LoginRequest,
    RevokeTokenRequest,
    TokenListReply,
    TokenReply,
)
from pai_common.errors import InvalidParametersError
from pai_gateway.auth_deps import Human
from pai_gateway.deps import User, first_line, read_body, rpc
from pai_gateway.identity import _token_from_header

router = APIRouter()


@router.post("/api/v2/authn/basic/login")
@router.post("/api/v1/authn/basic/login")
@router.post("/api/v2/tokens")
@router.post("/api/v1/token")
async def login(request: Request) -> dict[str, Any]:
    raw = await read_body(request)
    ctype = request.headers.get("content-type", "")
    try:
        if ctype.startswith("application/x-www-form-urlencoded"):
            data: Any = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
        else:
            data = json.loads(raw or b"{}")
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested too deeply
        raise InvalidParametersError("the login body is neither JSON nor a form") from None
    if not isinstance(data, dict):
        raise InvalidParametersError("the login body must be an object with username and password")
    expiration = data.get("expiration", 7 * 24 * 3600)
    try:
        req = LoginRequest(
            username=data.get("username", ""),
            password=data.get("password", ""),
            expiration_s=int(expiration),
            # The direct peer: forwarded-for headers are the client's to forge, so they are not trusted.
            client=request.client.host if request.client else "",
        )
    except (ValueError, TypeError) as exc:
        # Never echo the input: a pydantic message may quote the password.
        raise InvalidParametersError(_without_input(exc)) from None
    reply = await rpc(request, req, LoginReply)
    return {"user": reply.user, "token": reply.token, "admin": reply.admin, "hasGitHubPAT": False}


def _without_input(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors())
    return first_line(str(exc)).split(" [", 1)[0]


@router.delete("/api/v2/authn/basic/logout")
@router.delete("/api/v1/authn/basic/logout")
async def logout(request: Request, user: Human) -> dict[str, Any]:
    token, _ = _token_from_header(request.headers.get("authorization"))
    reply = await rpc(
        request, RevokeTokenRequest(actor=user.username, token=token, reason="logout"), AuthMessageReply
    )
    return {"message": reply.message}


@router.get("/api/v2/tokens")
@router.get("/api/v1/token")
async def list_tokens(request: Request, user: Human) -> dict[str, Any]:
    reply = await rpc(request, ListTokensRequest(actor=user.username), TokenListReply)
    return {"tokens": reply.tokens}


@router.post("/api/v2/tokens/application")
@router.post("/api/v1/token/application")
async def application_token(request: Request, user: Human) -> dict[str, Any]:
    reply = await rpc(request, CreateApplicationTokenRequest(actor=user.username), TokenReply)
    return {"token": reply.token, "application": True}


@router.get("/api/v2/tokens/check")
@router.get("/api/v1/token/check")
async def token_check(request: Request, user: User) -> dict[str, Any]:
    """OpenPAI's answer: the token's payload plus ``admin`` (the token was verified by the auth service)."""
    token, _ = _token_from_header(request.headers.get("authorization"))
    claims = _payload(token)
    out: dict[str, Any] = {"username": user.username, "application": user.application, "jobSpecific": False}
    out.update({k: claims[k] for k in ("iat", "exp") if isinstance(claims.get(k), int)})
    out["admin"] = user.admin
    return out


def _payload(token: str) -> dict[str, Any]:
    try:
        segment = token.split(".")[1]
        data = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (IndexError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


@router.delete("/api/v2/tokens/{token}")
@router.delete("/api/v1/token/{token}")
async def revoke_token(request: Request, token: str, user: Human) -> dict[str, Any]:
    if len(token) > 4096:
        raise InvalidParametersError("token is too long")
    reply = await rpc(request, RevokeTokenRequest(actor=user.username, token=token), AuthMessageReply)
    return {"message": reply.message}
