"""Errors become OpenPAI's ``{code, message}``; those a client may retry say when (Retry-After)."""

from __future__ import annotations

import json

import httpx

from pai_common.contract.rpc import Identity
from pai_common.errors import (
    SERVICE_UNAVAILABLE_RETRY_AFTER_S,
    NoJobError,
    ServiceUnavailableError,
    TooManyRequestsError,
    error_from_code,
)
from pai_gateway import deps
from pai_gateway.errors import error_response
from pai_gateway.http_app import build_http_app
from pai_gateway.settings import GatewaySettings


def test_503_carries_retry_after() -> None:
    response = error_response(ServiceUnavailableError("service jobs did not answer in 5s"))
    assert response.status_code == 503
    assert response.headers["Retry-After"] == str(SERVICE_UNAVAILABLE_RETRY_AFTER_S)
    assert json.loads(bytes(response.body)) == {
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


async def test_input_the_contract_refuses_is_400_not_500() -> None:
    # Found by the API fuzz: a VC name with control characters made the route's RPC request model refuse
    # it, and the ValidationError came out as 500 UnknownError.
    app = build_http_app(lambda: None, GatewaySettings())  # type: ignore[arg-type,return-value]
    app.dependency_overrides[deps._identity] = lambda: Identity(
        username="u", admin=False, virtual_clusters=["default"]
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        r = await client.get("/api/v2/cluster/sku-types", params={"vc": "\x8f4\x1b"})
    assert r.status_code == 400
    assert r.json()["code"] == "InvalidParametersError" and "virtual cluster" in r.json()["message"]
