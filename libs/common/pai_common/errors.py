"""Errors a caller can act on, each with OpenPAI's error code and HTTP status.

They are raised anywhere (cores, shells, RPC handlers), travel across RPC as ``{code, message}`` with the
status, and are mapped to HTTP once, at the gateway.
"""

from __future__ import annotations

from typing import ClassVar


class PaiError(Exception):
    # The status of the error type; one error may take another where OpenPAI answers the same code with a
    # different status in one place (e.g. NoUserError: 400 at login, 404 when a user is changed).
    status: int = 500
    code: ClassVar[str] = "UnknownError"
    # Seconds after which the same request may succeed (HTTP Retry-After); None where retrying is no use.
    retry_after_s: int | None = None

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status

    def to_body(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


class InvalidParametersError(PaiError):
    status = 400
    code = "InvalidParametersError"


class InvalidProtocolError(PaiError):
    status = 400
    code = "InvalidProtocolError"


class UnauthorizedUserError(PaiError):
    status = 401
    code = "UnauthorizedUserError"


class IncorrectPasswordError(PaiError):
    status = 400
    code = "IncorrectPasswordError"


class NoUserError(PaiError):
    status = 400
    code = "NoUserError"


class ForbiddenUserError(PaiError):
    status = 403
    code = "ForbiddenUserError"


class NoJobError(PaiError):
    status = 404
    code = "NoJobError"


class NoTaskLogError(PaiError):
    status = 404
    code = "NoTaskLogError"


class NoApiError(PaiError):
    status = 404
    code = "NoApiError"


class NoVirtualClusterError(PaiError):
    status = 404
    code = "NoVirtualClusterError"


class NoNodeError(PaiError):
    """Not in OpenPAI's list (it manages nodes through Kubernetes); named after NoJobError."""

    status = 404
    code = "NoNodeError"


class NoTemplateError(PaiError):
    """A marketplace template that does not exist, or that the caller may not see (the same answer)."""

    status = 404
    code = "NoTemplateError"


class ConflictJobError(PaiError):
    status = 409
    code = "ConflictJobError"


class NoTagError(PaiError):
    status = 404
    code = "NoTagError"


class TooManyRequestsError(PaiError):
    """A per-user rate limit was reached; the caller may retry after ``retry_after_s`` (HTTP Retry-After)."""

    status = 429
    code = "TooManyRequestsError"

    def __init__(self, message: str, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ConflictUserError(PaiError):
    status = 409
    code = "ConflictUserError"


class ConflictGroupError(PaiError):
    """Not in OpenPAI's list (it has no group-conflict code); named after ConflictUserError."""

    status = 409
    code = "ConflictGroupError"


class NoGroupError(PaiError):
    status = 400
    code = "NoGroupError"


class NoStorageError(PaiError):
    status = 404
    code = "NoStorageError"


class ConflictStorageError(PaiError):
    """Not in OpenPAI's list (it has no storage routes that write): a storage that exists already, or one
    that jobs still mount."""

    status = 409
    code = "ConflictStorageError"


class NoDeadLetterError(PaiError):
    """Not in OpenPAI (it has no dead letters): no dead letter has this number, or it was replayed."""

    status = 404
    code = "NoDeadLetterError"


class DeadLetterReplayError(PaiError):
    """Not in OpenPAI: the dead letter cannot be handled (malformed) or its handler failed again; it stays
    where it is, with the new error in the message."""

    status = 409
    code = "DeadLetterReplayError"


class RemoveAdminError(PaiError):
    status = 403
    code = "RemoveAdminError"


class RequestTimeoutError(PaiError):
    """Not in OpenPAI: the client sent its request too slowly (the gateway's body deadline)."""

    status = 408
    code = "RequestTimeoutError"


class PayloadTooLargeError(PaiError):
    status = 413
    code = "PayloadTooLargeError"


# What a 503 tells the caller to wait: a restarting service or a database failover is back in seconds.
SERVICE_UNAVAILABLE_RETRY_AFTER_S = 2


class ServiceUnavailableError(PaiError):
    """A service the request needs did not answer in time, or met a transient failure (a write conflict
    that outlasted the retries, a database or bus connection being re-established); nothing was changed
    and the request may be retried after ``retry_after_s`` (HTTP Retry-After)."""

    status = 503
    code = "ServiceUnavailableError"

    def __init__(self, message: str, retry_after_s: int | None = SERVICE_UNAVAILABLE_RETRY_AFTER_S) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class RpcTimeoutError(ServiceUnavailableError):
    """The request reached the service, which did not answer in time: whether it acted is not known.

    Same code and status as its parent; the caller may ask again to learn the outcome."""


class BusUnavailableError(ServiceUnavailableError):
    """The bus is unreachable (the connection is down or being re-established): the request was not sent,
    so nothing was done. Answered at once instead of after the RPC's timeout."""


class RpcInterruptedError(RpcTimeoutError):
    """No answer can come any more: the bus went down while the request waited for it (the request may
    have reached the service, or be sent when the connection is back), or every instance of the service
    that could have taken it stopped running. Whether the service acted is not known, as after a timeout;
    the asker learns it at once instead of at the timeout."""


class UnknownError(PaiError):
    status = 500
    code = "UnknownError"


_BY_CODE: dict[str, type[PaiError]] = {
    cls.code: cls
    for cls in (
        InvalidParametersError,
        InvalidProtocolError,
        UnauthorizedUserError,
        IncorrectPasswordError,
        NoUserError,
        ForbiddenUserError,
        NoJobError,
        NoTaskLogError,
        NoApiError,
        NoVirtualClusterError,
        NoNodeError,
        NoTemplateError,
        ConflictJobError,
        NoTagError,
        TooManyRequestsError,
        ConflictUserError,
        ConflictGroupError,
        NoGroupError,
        NoStorageError,
        ConflictStorageError,
        NoDeadLetterError,
        DeadLetterReplayError,
        RemoveAdminError,
        PayloadTooLargeError,
        RequestTimeoutError,
        ServiceUnavailableError,
        UnknownError,
    )
}


def error_from_code(
    code: str, message: str, retry_after_s: int | None = None, status: int | None = None
) -> PaiError:
    """Rebuild an error received over RPC (with its status, when it took another than its type's);
    unknown codes become UnknownError, keeping the message."""
    if code == TooManyRequestsError.code:
        return TooManyRequestsError(message, retry_after_s)
    if code == ServiceUnavailableError.code:
        return ServiceUnavailableError(message, retry_after_s or SERVICE_UNAVAILABLE_RETRY_AFTER_S)
    cls = _BY_CODE.get(code, UnknownError)
    if status is not None and (not 400 <= status <= 599 or cls is UnknownError):
        status = None
    return cls(message, status)
