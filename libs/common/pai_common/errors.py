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


class RemoveAdminError(PaiError):
    status = 403
    code = "RemoveAdminError"


class PayloadTooLargeError(PaiError):
    status = 413
    code = "PayloadTooLargeError"


class ServiceUnavailableError(PaiError):
    """A service the request needs did not answer in time; the request may be retried."""

    status = 503
    code = "ServiceUnavailableError"


class RpcTimeoutError(ServiceUnavailableError):
    """The request reached the service, which did not answer in time: whether it acted is not known.

    Same code and status as its parent; the caller may ask again to learn the outcome."""


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
        RemoveAdminError,
        PayloadTooLargeError,
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
    cls = _BY_CODE.get(code, UnknownError)
    if status is not None and (not 400 <= status <= 599 or cls is UnknownError):
        status = None
    return cls(message, status)
