"""The one place where errors become HTTP responses, in OpenPAI's ``{code, message}`` shape."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import ServiceUnavailableError as JetStreamUnavailableError
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from pai_common.bus import BUS_DOWN_ERRORS
from pai_common.errors import (
    InvalidParametersError,
    NoApiError,
    PaiError,
    ServiceUnavailableError,
    UnknownError,
)

log = logging.getLogger(__name__)
# Failures of the bus itself, raised by JetStream calls: a 503 that may be retried.
_BUS_UNAVAILABLE = (*BUS_DOWN_ERRORS, NatsTimeoutError, NoRespondersError, JetStreamUnavailableError)


def error_response(err: PaiError) -> JSONResponse:
    response = JSONResponse(err.to_body(), status_code=err.status)
    if err.retry_after_s is not None:
        response.headers["Retry-After"] = str(err.retry_after_s)
    return response


def install(app: FastAPI) -> None:
    @app.exception_handler(PaiError)
    async def pai_error(request: Request, exc: PaiError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'] if p != 'body') or 'body'}: {e['msg']}" for e in exc.errors()
        )
        return error_response(InvalidParametersError(problems))

    @app.exception_handler(ValidationError)
    async def refused_by_the_contract(request: Request, exc: ValidationError) -> JSONResponse:
        # A route built a message of the contract from what the client sent, and the contract refused it
        # (a VC name with characters no VC has, say): the client's input is at fault, not the platform.
        # Replies are checked where they arrive (Bus.request), so no reply's fault ends up here.
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
        )
        return error_response(InvalidParametersError(problems))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return error_response(NoApiError(f"API {request.url.path} is not found."))
        if exc.status_code == 405:
            return JSONResponse(
                {"code": "NoApiError", "message": f"{request.method} is not allowed on {request.url.path}."},
                status_code=405,
            )
        return JSONResponse({"code": "UnknownError", "message": str(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(NatsError)
    async def bus_failure(request: Request, exc: NatsError) -> JSONResponse:
        # A route that reads JetStream itself (the dead letters) met the bus going down, or JetStream not
        # answering in time: a read that may be retried, not a fault of the platform. RPCs never get
        # here (Bus.request maps its failures to PaiErrors); any other bus error stays a 500.
        if isinstance(exc, _BUS_UNAVAILABLE):
            log.warning("bus unavailable", extra={"path": request.url.path, "error": repr(exc)})
            return error_response(ServiceUnavailableError(f"the bus is unavailable ({type(exc).__name__})"))
        return await unexpected(request, exc)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", extra={"path": request.url.path})
        return error_response(UnknownError("internal error"))
