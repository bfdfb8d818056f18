"""The web portal on the API's origin: every path that is not the API's is passed to the portal process.

The portal is its own service (``pai_portal``); the gateway only relays bytes, streaming both ways (the
job pages hold Server-Sent Events open through it). Paths under ``/api/`` and ``/rest-server/`` are never
relayed: they stay the API's, with its ``404 NoApiError`` for a route it lacks. Without a configured
portal URL (``PAI_PORTAL_URL``) the gateway answers those paths with that 404 too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from pai_common.errors import NoApiError, ServiceUnavailableError
from pai_gateway.deps import settings_of

router = APIRouter()

API_PREFIXES = ("/api/", "/rest-server/")
# Hop-by-hop headers (RFC 9110 7.6.1) are the connection's, not the message's.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
# The gateway's server sets these on its own answers; the portal's copies would be doubled.
OWN_HEADERS = frozenset({"date", "server"})
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def new_client(
    portal_url: str, timeout_s: float, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    # No read timeout: a job page's event stream stays open as long as the browser keeps it. A jar that
    # keeps nothing: a relay that remembered the portal's Set-Cookie would hand one browser's session to
    # every other browser.
    return httpx.AsyncClient(
        base_url=portal_url.rstrip("/"),
        timeout=httpx.Timeout(timeout_s, read=None),
        cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
        transport=transport,
        # Each open job page holds one connection for its event stream: room for many, not httpx's 100.
        limits=httpx.Limits(max_connections=2000, max_keepalive_connections=100),
    )


def _client(request: Request) -> httpx.AsyncClient:
    state = request.app.state
    client: httpx.AsyncClient | None = getattr(state, "portal_client", None)
    if client is None:
        settings = settings_of(request)
        client = new_client(settings.portal_url, settings.rpc_timeout_s * 6)
        state.portal_client = client
    return client


async def _body(request: Request, limit: int) -> AsyncIterator[bytes]:
    seen = 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > limit:
            raise ValueError("request body too large")
        yield chunk


def _other_method_allowed(request: Request) -> bool:
    """Whether an API route has this path with another method (its answer stays 405, not 404)."""
    for route in request.app.router.routes:
        if getattr(route, "endpoint", None) is to_portal:
            continue
        match, _ = route.matches(request.scope)
        if match == Match.PARTIAL:
            return True
    return False


@router.api_route("/{path:path}", methods=METHODS, include_in_schema=False)
async def to_portal(request: Request, path: str) -> Response:
    settings = settings_of(request)
    url_path = request.url.path
    if not settings.portal_url or url_path.startswith(API_PREFIXES) or url_path in ("/api", "/rest-server"):
        if _other_method_allowed(request):
            raise StarletteHTTPException(status_code=405)
        raise NoApiError(f"API {url_path} is not found.")
    headers = [(k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP]
    client_host = request.client.host if request.client else ""
    forwarded = request.headers.get("x-forwarded-for")
    headers += [
        ("x-forwarded-for", f"{forwarded}, {client_host}" if forwarded else client_host),
        ("x-forwarded-proto", request.url.scheme),
        ("x-forwarded-host", request.headers.get("host", "")),
    ]
    has_body = request.method in ("POST", "PUT", "PATCH", "DELETE")
    # The path and query exactly as the browser sent them (not re-encoded).
    raw_path = request.scope.get("raw_path") or url_path.encode()
    target = raw_path.decode("latin-1") + (f"?{request.url.query}" if request.url.query else "")
    upstream_request = _client(request).build_request(
        request.method,
        target,
        headers=headers,
        content=_body(request, settings.max_body_bytes) if has_body else None,
    )
    try:
        upstream = await _client(request).send(upstream_request, stream=True)
    except httpx.HTTPError:
        raise ServiceUnavailableError("the web portal did not answer; try again in a moment") from None
    out_headers = {
        k: v
        for k, v in upstream.headers.items()
        if k.lower() not in HOP_BY_HOP and k.lower() not in OWN_HEADERS
    }
    response = StreamingResponse(
        upstream.aiter_raw(),
        status_code=upstream.status_code,
        headers=out_headers,
        background=BackgroundTask(upstream.aclose),
    )
    # Several Set-Cookie headers must each survive (a dict keeps only one).
    cookies = upstream.headers.get_list("set-cookie")
    if len(cookies) > 1:
        response.headers.__delitem__("set-cookie")
        for cookie in cookies:
            response.headers.append("set-cookie", cookie)
    return response
