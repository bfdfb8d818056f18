"""What both clients share around one HTTP exchange: the token, the retry rule, errors from answers.

Retries (``RetryPolicy``): a ``429`` is retried for any request (the platform refuses it before acting, so
even a submission is safe to send again), a ``503`` only for idempotent ones (GET, PUT, DELETE, and a job
submission, which names its job: sent again, it answers for the job that exists). Other POSTs are not: one
that timed out may have been acted on. The wait is the answer's ``Retry-After`` (seconds or an HTTP date),
else a doubling back-off; an answer that asks for longer than ``max_delay_s``, or the ``max_retries``-th
failure, goes to the caller as its error.
"""

from __future__ import annotations

import email.utils
import json
import time
from dataclasses import dataclass
from typing import Any

import httpx

from pai_cli.config import DEFAULT_URL
from pai_cli.errors import PaiApiError, PaiConnectionError, PaiError, error_class
from pai_cli.routes import Call


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 3
    max_delay_s: float = 30.0
    backoff_s: float = 0.5


NO_RETRIES = RetryPolicy(max_retries=0)


def retry_after_s(response: httpx.Response, now: float | None = None) -> float | None:
    """The answer's ``Retry-After`` in seconds (RFC 9110: delay-seconds or an HTTP date), if any."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def retry_delay(call: Call[Any], response: httpx.Response, attempt: int, policy: RetryPolicy) -> float | None:
    """How long to wait before sending ``call`` again after ``response``, or None: do not retry."""
    status = response.status_code
    if attempt >= policy.max_retries:
        return None
    if status != 429 and not (status == 503 and call.idempotent):
        return None
    asked = retry_after_s(response)
    delay = asked if asked is not None else policy.backoff_s * (2**attempt)
    return delay if delay <= policy.max_delay_s else None


def error_from_response(response: httpx.Response) -> PaiApiError:
    status = response.status_code
    reason = response.reason_phrase or f"HTTP {status}"
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    code: object = None
    message: object = None
    if isinstance(body, dict):
        code, message = body.get("code"), body.get("message")
        if message is None and "detail" in body:
            detail = body["detail"]
            message = detail if isinstance(detail, str) else json.dumps(detail)
    if not isinstance(message, str) or not message:
        # Some OpenPAI errors are plain text (its rate limiter's 429) or a JSON `null` (job-attempts of a
        # missing job): the raw text is the most useful thing to show.
        raw = response.text.strip()
        message = raw if raw and raw != "null" else reason
    kind = error_class(status)
    return kind(status, str(code) if code else reason, message, retry_after_s(response))


class ClientCore:
    """The state both clients keep (URL, token, user, retry policy) and what they compute from it."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        token: str | None = None,
        username: str | None = None,
        *,
        retry: RetryPolicy = RetryPolicy(),
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.username = username
        self.retry = retry
        self._base = httpx.URL(self.base_url)

    def job_key(self, name: str) -> str:
        """``user~job`` stays as is; a bare ``job`` is taken to be this client's user's job."""
        if "~" in name:
            return name
        if not self.username:
            raise PaiError(
                "NoUserError",
                f"cannot tell whose job {name!r} is: give it as <user>~{name}, or log in with `pai login`",
            )
        return f"{self.username}~{name}"

    def _same_origin(self, url: httpx.URL) -> bool:
        if url.is_relative_url:
            return True
        return (url.scheme, url.host, url.port) == (self._base.scheme, self._base.host, self._base.port)

    def _prepare(self, call: Call[Any]) -> tuple[dict[str, str], str]:
        """Headers for ``call`` and a name of where it goes (for error messages)."""
        target = httpx.URL(call.path)
        same_origin = self._same_origin(target)
        headers = dict(call.headers)
        # Log URIs may point at another host (OpenPAI's log manager, blob storage): never hand it our token.
        if call.auth and self.token and same_origin:
            headers["Authorization"] = f"Bearer {self.token}"
        where = self.base_url if same_origin else f"{target.scheme}://{target.netloc.decode()}"
        return headers, where

    def _request_args(self, call: Call[Any], headers: dict[str, str]) -> dict[str, Any]:
        args: dict[str, Any] = {"headers": headers}
        if call.params:
            args["params"] = dict(call.params)
        if call.json is not None:
            args["json"] = call.json
        if call.content is not None:
            args["content"] = call.content
        return args

    def login_url(self, redirect: str = "/api/v2/authn/oidc/code") -> str:
        """Where a browser starts single sign-on; it comes back to ``redirect?pai_login_code=...``."""
        return str(httpx.URL(self.base_url + "/api/v2/authn/oidc/login", params={"redirect": redirect}))


def connection_error(where: str, exc: httpx.TransportError) -> PaiConnectionError:
    if isinstance(exc, httpx.ConnectError):
        return PaiConnectionError(
            where, f"cannot connect to {where} ({exc}); is the platform running? try `pai up`"
        )
    if isinstance(exc, httpx.TimeoutException):
        return PaiConnectionError(where, f"{where} did not answer in time ({exc!r})")
    return PaiConnectionError(where, f"cannot talk to {where}: {exc!r}")
