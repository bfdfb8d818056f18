"""What the SDK raises: one type per failure a caller can act on.

Every HTTP failure is a ``PaiApiError`` carrying OpenPAI's ``code`` and ``message`` and the status; its
subclass says what to do about it (fix the request, log in again, ask an admin, wait and retry, ...).
Catch ``PaiError`` for "anything the platform said no to or could not be asked".
"""

from __future__ import annotations


class PaiError(Exception):
    """Anything the SDK reports to its caller; ``code`` follows OpenPAI's error codes where one applies."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class PaiConnectionError(PaiError):
    """The server could not be reached at all (refused, unresolvable, timed out): check the URL."""

    def __init__(self, url: str, message: str) -> None:
        super().__init__("ConnectionError", message)
        self.url = url


class PaiTimeoutError(PaiError):
    """``wait_for_job`` gave up before the job reached one of the awaited states."""

    def __init__(self, job_key: str, state: str, timeout_s: float) -> None:
        super().__init__("WaitTimeout", f"job {job_key} is still {state} after {timeout_s:g} s")
        self.job_key = job_key
        self.state = state


class PaiApiError(PaiError):
    """The server answered with a non-2xx status; ``code``/``message`` come from its ``{code, message}``."""

    def __init__(self, status: int, code: str, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(code, message)
        self.status = status
        self.retry_after_s = retry_after_s


class InvalidRequestError(PaiApiError):
    """400, 413, 422: the request itself is wrong (a protocol error, a bad parameter); fix it."""


class UnauthorizedError(PaiApiError):
    """401: no token, or one that expired or was revoked; log in again."""


class ForbiddenError(PaiApiError):
    """403: the user may not do this; an admin may."""


class NotFoundError(PaiApiError):
    """404: no such job, user, group, VC, log, or route (``code`` says which)."""


class ConflictError(PaiApiError):
    """409: it exists already (a job name is never reused, nor a user or group name)."""


class RateLimitedError(PaiApiError):
    """429: too many requests or failed logins; ``retry_after_s`` says when to try again."""


class ServiceUnavailableError(PaiApiError):
    """503: a service the request needs did not answer in time; try again later."""


class ServerError(PaiApiError):
    """Another 5xx: the platform failed; report it."""


class InvalidResponseError(PaiApiError):
    """The server answered 2xx with something that is not what this route answers (not OpenPAI?)."""


def error_class(status: int) -> type[PaiApiError]:
    if status == 401:
        return UnauthorizedError
    if status == 403:
        return ForbiddenError
    if status == 404:
        return NotFoundError
    if status == 409:
        return ConflictError
    if status == 429:
        return RateLimitedError
    if status == 503:
        return ServiceUnavailableError
    if status >= 500:
        return ServerError
    if 400 <= status < 500:
        return InvalidRequestError
    return PaiApiError
