"""OpenID Connect sign-in (OpenPAI's ``/authn/oidc/login|return|logout``) and the platform's one-time code
exchange, each route a thin shell over an auth RPC.

The browser's journey: ``login?redirect=/path`` (302 to the provider, with a binding cookie) → the provider
→ ``return`` (303 to ``/path?pai_login_code=<code>``, or ``?pai_login_error=<why>``) → the page's server
trades the code for a token with ``POST exchange`` (once, within 60 s). ``config`` says whether to offer it.
The CLI sends ``redirect=/api/v2/authn/oidc/code``, a page that shows the code to paste.
"""

from __future__ import annotations

import html
import json
import re
import secrets
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import BaseModel, ValidationError

from pai_common.contract.rpc import (
    AuthMessageReply,
    Identity,
    LoginReply,
    OidcBeginReply,
    OidcBeginRequest,
    OidcConfigReply,
    OidcConfigRequest,
    OidcExchangeRequest,
    OidcLogoutReply,
    OidcLogoutRequest,
    OidcReturnReply,
    OidcReturnRequest,
    RevokeTokenRequest,
)
from pai_common.errors import InvalidParametersError, PaiError
from pai_gateway.deps import read_body, rpc
from pai_gateway.identity import IdentityResolver, _token_from_header

router = APIRouter()

PREFIXES = ("/api/v2/authn/oidc", "/api/v1/authn/oidc")
RETURN_PATH = "/api/v2/authn/oidc/return"
CODE_PAGE_PATH = "/api/v2/authn/oidc/code"
BINDING_COOKIE = "pai_oidc_binding"
# A path on this origin: one leading slash, no scheme, no host, no backslash, no whitespace or control.
SAFE_PATH = re.compile(r"/([^/\\\s\x00-\x1f\x7f][^\\\s\x00-\x1f\x7f]{0,2046})?")
NO_STORE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}

M = TypeVar("M", bound=BaseModel)
F = TypeVar("F", bound=Callable[..., Any])


def _model(model: type[M], **fields: Any) -> M:
    """An RPC body from request values; a value that breaks the contract is a 400, never echoed."""
    try:
        return model(**fields)
    except ValidationError as exc:
        fields_at_fault = ", ".join(sorted({str(e["loc"][0]) for e in exc.errors() if e["loc"]}))
        raise InvalidParametersError(f"invalid {fields_at_fault or 'request'}") from None


def _redirect_path(value: str | None) -> str:
    path = value or "/"
    if not SAFE_PATH.fullmatch(path):
        raise InvalidParametersError("redirect must be a path on this site, such as /jobs")
    return path


def _with_param(path: str, name: str, value: str) -> str:
    return f"{path}{'&' if '?' in path else '?'}{urlencode({name: value})}"


def _origin(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def route(method: str, suffix: str) -> Callable[[F], F]:
    """Register a handler under OpenPAI's v1 and v2 prefixes."""

    def register(fn: F) -> F:
        for prefix in PREFIXES:
            router.add_api_route(prefix + suffix, fn, methods=[method])
        return fn

    return register


@route("GET", "/config")
async def oidc_config(request: Request) -> dict[str, Any]:
    reply = await rpc(request, OidcConfigRequest(), OidcConfigReply)
    return {"enabled": reply.enabled, "name": reply.name, "basicLogin": reply.basic_login}


@route("GET", "/login")
async def oidc_login(request: Request, redirect: str | None = None) -> Response:
    path = _redirect_path(redirect)
    binding = secrets.token_urlsafe(32)
    body = _model(
        OidcBeginRequest, redirect=path, redirect_uri=_origin(request) + RETURN_PATH, binding=binding
    )
    reply = await rpc(request, body, OidcBeginReply)
    response = RedirectResponse(reply.authorize_url, status_code=302, headers=NO_STORE)
    # SameSite=Lax: sent on the provider's top-level GET back to `return`, never on a cross-site POST.
    response.set_cookie(
        BINDING_COOKIE,
        binding,
        max_age=3600,
        path="/api/",
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )
    return response


async def _return_params(request: Request) -> dict[str, str]:
    if request.method == "GET":
        return dict(request.query_params)
    raw = await read_body(request)
    try:
        return {k: v[0] for k, v in parse_qs(raw.decode("utf-8")).items()}
    except UnicodeDecodeError:
        raise InvalidParametersError("the provider's answer is not a UTF-8 form") from None


@route("GET", "/return")
@route("POST", "/return")
async def oidc_return(request: Request) -> Response:
    params = await _return_params(request)
    if not params.get("state"):
        raise InvalidParametersError("the identity provider sent the browser back without a state")
    body = _model(
        OidcReturnRequest,
        state=params["state"],
        code=params.get("code") or None,
        error=(params.get("error") or "")[:256] or None,
        error_description=(params.get("error_description") or "")[:1024] or None,
        binding=request.cookies.get(BINDING_COOKIE, "")[:256],
    )
    reply = await rpc(request, body, OidcReturnReply)
    if reply.login_code is not None:
        target = _with_param(reply.redirect, "pai_login_code", reply.login_code)
    else:
        target = _with_param(reply.redirect, "pai_login_error", reply.error or "sign-in failed")
    response = RedirectResponse(target, status_code=303, headers=NO_STORE)
    response.delete_cookie(BINDING_COOKIE, path="/api/")
    return response


@route("POST", "/exchange")
async def oidc_exchange(request: Request) -> dict[str, Any]:
    raw = await read_body(request)
    try:
        data: Any = json.loads(raw or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise InvalidParametersError('the body must be JSON: {"code": "..."}') from None
    code = data.get("code") if isinstance(data, dict) else None
    if not isinstance(code, str) or not code:
        raise InvalidParametersError('"code" is required')
    reply = await rpc(request, _model(OidcExchangeRequest, code=code), LoginReply)
    return {"user": reply.user, "token": reply.token, "admin": reply.admin, "hasGitHubPAT": False}


@route("GET", "/logout")
async def oidc_logout(request: Request, redirect: str | None = None) -> Response:
    """Revoke the bearer token when one comes (a browser navigating sends none), then leave the provider's
    session too: 302 to its end-session endpoint, which sends the browser back to ``redirect``."""
    path = _redirect_path(redirect)
    if request.headers.get("authorization"):
        await _revoke(request)
    body = _model(OidcLogoutRequest, post_logout_redirect_uri=_origin(request) + path)
    reply = await rpc(request, body, OidcLogoutReply)
    return RedirectResponse(reply.end_session_url or path, status_code=302, headers=NO_STORE)


async def _revoke(request: Request) -> None:
    token, _ = _token_from_header(request.headers.get("authorization"))
    resolver: IdentityResolver = request.app.state.resolver()
    try:
        user: Identity = await resolver.resolve(request)
    except PaiError:
        return  # an invalid token is as logged out as it gets
    body = RevokeTokenRequest(actor=user.username, token=token, reason="logout")
    await rpc(request, body, AuthMessageReply)


CODE_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font-family:sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem}}
code{{font-size:1.2rem;word-break:break-all;background:#eee;padding:.3rem}}</style></head>
<body><h1>{title}</h1>{body}</body></html>
"""


@router.get(CODE_PAGE_PATH, include_in_schema=False)
async def oidc_code_page(request: Request) -> HTMLResponse:
    """Where ``pai login --sso`` sends the browser: the one-time code to paste into the terminal."""
    code = request.query_params.get("pai_login_code", "")
    error = request.query_params.get("pai_login_error", "")
    if code:
        title = "Signed in"
        body = (
            f"<p>Your one-time login code:</p><p><code>{html.escape(code)}</code></p>"
            "<p>Paste it into the terminal running <code>pai login --sso</code> within 60 seconds."
            " It works once.</p>"
        )
    else:
        title = "Sign-in failed"
        reason = html.escape(error or "No login code was given.")
        body = f"<p>{reason}</p><p>Run <code>pai login --sso</code> again.</p>"
    headers = {**NO_STORE, "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"}
    return HTMLResponse(CODE_PAGE.format(title=title, body=body), headers=headers)
