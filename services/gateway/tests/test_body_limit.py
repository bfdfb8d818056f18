"""The gateway's body limit, through the whole HTTP app: refused before any route (or the bus) is reached,
in OpenPAI's {code, message} shape."""

from __future__ import annotations

from typing import Any

import httpx

from pai_gateway.http_app import build_http_app
from pai_gateway.settings import GatewaySettings

LIMIT = 1000


def _app() -> Any:
    # No bus: a request that got past the limit to a route would fail, not be answered 413/400.
    return build_http_app(lambda: None, GatewaySettings(max_body_bytes=LIMIT))  # type: ignore[arg-type,return-value]


async def _post(headers: list[tuple[bytes, bytes]], body: bytes) -> tuple[int, dict[str, Any]]:
    """One raw ASGI request (a client library would not send a malformed Content-Length)."""
    sent: list[dict[str, Any]] = []
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/v2/jobs",
        "raw_path": b"/api/v2/jobs",
        "query_string": b"",
        "headers": [(b"host", b"gw"), (b"content-type", b"text/yaml"), *headers],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    chunks = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        return chunks.pop(0) if chunks else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await _app()(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body_out = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], httpx.Response(start["status"], content=body_out).json()


async def test_a_body_announced_over_the_limit_is_refused_with_413() -> None:
    status, body = await _post([(b"content-length", str(LIMIT + 1).encode())], b"x" * (LIMIT + 1))
    assert status == 413
    assert body == {"code": "PayloadTooLargeError", "message": f"request body exceeds {LIMIT} bytes"}


async def test_a_content_length_that_is_not_a_number_is_refused_with_400() -> None:
    status, body = await _post([(b"content-length", b"12abc")], b"x")
    assert status == 400
    assert body == {"code": "InvalidParametersError", "message": "Content-Length is not a number"}


async def test_the_first_content_length_is_the_one_judged() -> None:
    status, _ = await _post([(b"content-length", str(LIMIT + 5).encode()), (b"content-length", b"1")], b"x")
    assert status == 413


async def test_a_body_within_the_limit_reaches_the_route() -> None:
    # The route needs a token: its refusal (401) shows the request got past the limit.
    status, body = await _post([(b"content-length", str(LIMIT).encode())], b"x" * LIMIT)
    assert status == 401 and body["code"] == "UnauthorizedUserError"
