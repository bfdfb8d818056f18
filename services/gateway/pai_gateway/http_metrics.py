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

from opentelemetry.trace import Span, SpanKind
from prometheus_client import Counter, Histogram
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pai_common.metrics import LATENCY_BUCKETS
from pai_common.telemetry import span_from_headers, traceparent

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
    def __init__(self, app: ASGIApp, fastapi_app: Any, own_span: bool = True) -> None:
        self.app = app
        self.fastapi_app = fastapi_app
        # Start the request's server span here (continuing the client's traceparent), unless an
        # instrumentation outside this middleware does.
        self.own_span = own_span

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not self.own_span:
            await self._measured(scope, receive, send, None)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
        method = scope.get("method", "GET")
        with span_from_headers(f"{method}", headers, SpanKind.SERVER) as span:
            await self._measured(scope, receive, send, span)

    async def _measured(self, scope: Scope, receive: Receive, send: Send, span: Span | None) -> None:
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
                status = int(message["status"])
                HTTP_REQUESTS.labels(method, route, str(status)).inc()
                HTTP_SECONDS.labels(method, route).observe(time.perf_counter() - started)
                if span is not None:
                    span.update_name(f"{method} {route}")
                    span.set_attribute("http.request.method", method)
                    span.set_attribute("http.route", route)
                    span.set_attribute("http.response.status_code", status)
            await send(message)

        await self.app(scope, receive, watch)
