"""Requests that announce a body over the gateway's limit are refused before any route reads them.

A plain ASGI middleware: Starlette's ``BaseHTTPMiddleware`` (``@app.middleware("http")``) runs the rest of
the app in a task of its own per request and relays its response through a stream, which was the largest
single cost of the gateway's middleware stack (py-spy, issue 17). This one only looks at the headers.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from pai_common.errors import InvalidParametersError, PaiError, PayloadTooLargeError
from pai_gateway.errors import error_response


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def refusal(self, scope: Scope) -> PaiError | None:
        """Why the request's Content-Length refuses it (the first such header is the one read), or None."""
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    return InvalidParametersError("Content-Length is not a number")
                if length > self.max_bytes:
                    return PayloadTooLargeError(f"request body exceeds {self.max_bytes} bytes")
                return None
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refused = self.refusal(scope)
            if refused is not None:
                await error_response(refused)(scope, receive, send)
                return
        await self.app(scope, receive, send)
