"""The one place where errors become HTTP responses, in OpenPAI's ``{code, message}`` shape."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from pai_common.errors import InvalidParametersError, NoApiError, PaiError, UnknownError

log = logging.getLogger(__name__)


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

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", extra={"path": request.url.path})
        return error_response(UnknownError("internal error"))
