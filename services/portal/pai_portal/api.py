"""The portal's only way to the platform: the REST API v2 over HTTP, with the signed-in user's token."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any

import httpx


class ApiError(Exception):
    """An error answer of the API, in its ``{code, message}`` shape (or the transport's failure)."""

    def __init__(self, status: int, code: str, message: str, retry_after_s: int | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        # From the answer's Retry-After (429 and transient 503s): when the same request may succeed.
        self.retry_after_s = retry_after_s

    @property
    def missing_route(self) -> bool:
        """The API has no such route (an older or partial platform), as opposed to a missing object."""
        return self.code == "NoApiError" or self.status == 405


def _retry_after(response: httpx.Response) -> int | None:
    """Retry-After in seconds; its HTTP-date form is not sent by the gateway and is ignored."""
    value = response.headers.get("Retry-After", "").strip()
    return int(value) if value.isdigit() else None


def _error(response: httpx.Response) -> ApiError:
    try:
        body = response.json()
    except ValueError:
        body = None
    retry = _retry_after(response)
    if isinstance(body, dict) and "code" in body:
        return ApiError(response.status_code, str(body["code"]), str(body.get("message", "")), retry)
    text = response.text.strip()[:500] or response.reason_phrase
    return ApiError(response.status_code, "UnknownError", text, retry)


class Api:
    """One shared HTTP client; every call names the token it acts with."""

    def __init__(self, base_url: str, timeout_s: float) -> None:
        # Shared by every user's requests, so it must keep no cookies: each call names its token.
        self.client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            timeout=timeout_s,
            headers={"User-Agent": "pai-portal"},
            cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
            # Each open job page holds one connection for its event stream: room for many.
            limits=httpx.Limits(max_connections=2000, max_keepalive_connections=100),
        )

    async def close(self) -> None:
        await self.client.aclose()

    async def call(
        self,
        method: str,
        path: str,
        token: str | None,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        content: str | bytes | None = None,
        content_type: str | None = None,
    ) -> Any:
        """The decoded answer (JSON, or text when it is not JSON); an error answer raises ApiError."""
        headers: dict[str, str] = {}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if content_type:
            headers["Content-Type"] = content_type
        clean = {k: v for k, v in (params or {}).items() if v is not None and v != ""}
        try:
            response = await self.client.request(
                method, path, params=clean, json=json_body, content=content, headers=headers
            )
        except httpx.HTTPError as exc:
            raise ApiError(503, "ServiceUnavailableError", f"the API did not answer: {exc!r}") from None
        if response.status_code >= 400:
            raise _error(response)
        if not response.content:
            return None
        try:
            return response.json()
        except (ValueError, json.JSONDecodeError):
            return response.text

    async def get(self, path: str, token: str | None, **params: Any) -> Any:
        return await self.call("GET", path, token, params=params)

    @asynccontextmanager
    async def stream(self, path: str, token: str) -> AsyncIterator[httpx.Response]:
        """A streamed GET (the job's Server-Sent Events); the caller reads ``aiter_raw``."""
        request = self.client.build_request(
            "GET", path, headers={"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
        )
        response = await self.client.send(request, stream=True)
        try:
            if response.status_code >= 400:
                await response.aread()
                raise _error(response)
            yield response
        finally:
            await response.aclose()
