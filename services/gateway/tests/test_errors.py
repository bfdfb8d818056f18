"""Errors become OpenPAI's ``{code, message}``; those a client may retry say when (Retry-After)."""

from __future__ import annotations

import json

from pai_common.errors import (
    SERVICE_UNAVAILABLE_RETRY_AFTER_S,
    NoJobError,
    ServiceUnavailableError,
    TooManyRequestsError,
    error_from_code,
)
from pai_gateway.errors import error_response


def test_503_carries_retry_after() -> None:
    response = error_response(ServiceUnavailableError("service jobs did not answer in 5s"))
    assert response.status_code == 503
    assert response.headers["Retry-After"] == str(SERVICE_UNAVAILABLE_RETRY_AFTER_S)
    assert json.loads(response.body) == {
        "code": "ServiceUnavailableError",
        "message": "service jobs did not answer in 5s",
    }


def test_503_from_another_service_keeps_its_delay() -> None:
    # An RPC error body carries retryAfter across the bus; the gateway answers it as sent.
    err = error_from_code("ServiceUnavailableError", "service jobs is busy; try again", 7)
    assert error_response(err).headers["Retry-After"] == "7"
    assert error_response(TooManyRequestsError("slow down", 30)).headers["Retry-After"] == "30"


def test_errors_that_retrying_cannot_fix_have_no_retry_after() -> None:
    assert "Retry-After" not in error_response(NoJobError("Job a~b is not found.")).headers
