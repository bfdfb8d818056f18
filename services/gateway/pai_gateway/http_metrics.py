"""Per-route request counts and latency, and the ``traceparent`` of each answer.

A plain ASGI middleware (not Starlette's BaseHTTPMiddleware): it only watches ``http.response.start``, so
streamed answers (the job stream's Server-Sent Events) flow through untouched. Latency is measured to the
start of the answer: a stream's length is how long its client listens, not how fast the gateway was.
Routes are labelled by their template (``/api/v2/jobs/{frameworkName}``), never by the raw path, so that
the number of series stays bounded whatever clients send.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import Counter, Histogram
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pai_common.metrics import LATENCY_BUCKETS
from pai_common.telemetry import traceparent

HTTP_REQUESTS = Counter(
    "pai_http_requests_total",
    "HTTP requests the gateway answered, by method, route template and status code.",
    ["method", "route", "code"],
)
HTTP_SECONDS = Histogram(
    "pai_http_request_duration_seconds",
    "Time from a request's arrival to the start of its answer, by method and route template.",
    ["method", "route"],
    buckets=LATENCY_BUCKETS,
)
UNMATCHED = "unmatched"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def route_template(app: Any, scope: Scope) -> str:
    """The path template of the route that handles this request, or ``unmatched``."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    for candidate in getattr(getattr(app, "router", None), "routes", ()):
        match, _ = candidate.matches(scope)
        if match is Match.FULL:
            return str(getattr(candidate, "path", UNMATCHED))
    return UNMATCHED


class HttpMetrics:
    def __init__(self, app: ASGIApp, fastapi_app: Any) -> None:
        self.app = app
        self.fastapi_app = fastapi_app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        method = scope.get("method", "GET")
        method = method if method in METHODS else "OTHER"
        recorded = False

        async def watch(message: Message) -> None:
            nonlocal recorded
            if message["type"] == "http.response.start" and not recorded:
                recorded = True
                parent = traceparent()
                if parent:
                    message = {
                        **message,
                        "headers": [*message.get("headers", []), (b"traceparent", parent.encode())],
                    }
                route = route_template(self.fastapi_app, scope)
                HTTP_REQUESTS.labels(method, route, str(message["status"])).inc()
                HTTP_SECONDS.labels(method, route).observe(time.perf_counter() - started)
            await send(message)

        await self.app(scope, receive, watch)
