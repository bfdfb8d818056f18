"""The gateway serves the web portal on its origin: non-API paths are relayed (both ways, streamed,
cookies untouched and never kept), API paths never are, and a wrong method on an API path stays 405."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from pai_gateway import portal_proxy
from pai_gateway.http_app import build_http_app
from pai_gateway.settings import GatewaySettings


def portal_stand_in() -> FastAPI:
    """A small HTTP application in the portal's place: it answers what it was sent."""
    app = FastAPI()

    @app.api_route("/{path:path}", methods=["GET", "POST"])
    async def echo(request: Request, path: str) -> Response:
        if path == "events":

            async def chunks() -> AsyncIterator[bytes]:
                for i in range(3):
                    yield f"event: n\ndata: {i}\n\n".encode()

            return StreamingResponse(chunks(), media_type="text/event-stream")
        body = await request.body()
        response = JSONResponse(
            {
                "path": request.url.path,
                "query": request.url.query,
                "method": request.method,
                "body": body.decode(),
                "cookie": request.headers.get("cookie"),
                "forwarded_for": request.headers.get("x-forwarded-for"),
            }
        )
        if path == "login":
            response.set_cookie("session", "secret-of-one-browser", httponly=True)
            response.set_cookie("other", "x")
        return response

    return app


def gateway(portal_url: str = "http://portal") -> FastAPI:
    app = build_http_app(lambda: None, GatewaySettings(portal_url=portal_url))  # type: ignore[arg-type,return-value]
    if portal_url:
        # The relay's own client, as the gateway makes it, sending to the stand-in.
        transport = httpx.ASGITransport(app=portal_stand_in())
        app.state.portal_client = portal_proxy.new_client(portal_url, 30, transport=transport)
    return app


async def test_non_api_paths_are_relayed_with_their_bodies_and_cookies() -> None:
    transport = httpx.ASGITransport(app=gateway())
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as browser:
        answer = await browser.post("/login?next=/jobs", data={"user": "ann"}, headers={"cookie": "c=1"})
        assert answer.status_code == 200
        sent = answer.json()
        assert (sent["path"], sent["query"], sent["method"]) == ("/login", "next=/jobs", "POST")
        assert sent["body"] == "user=ann" and sent["cookie"] == "c=1"
        assert sent["forwarded_for"]
        # Both cookies reach the browser; the relay itself remembers none of them.
        assert len(answer.headers.get_list("set-cookie")) == 2
        assert answer.headers.get_list("date") == [] or len(answer.headers.get_list("date")) == 1
    # One browser signs in; another, on the same gateway, is sent no cookie of the first.
    app = gateway()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as first:
        await first.post("/login")
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as second:
        assert (await second.get("/home")).json()["cookie"] is None
    assert len(app.state.portal_client.cookies.jar) == 0


async def test_streams_are_relayed() -> None:
    transport = httpx.ASGITransport(app=gateway())
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as browser:
        answer = await browser.get("/events")
        assert answer.headers["content-type"].startswith("text/event-stream")
        assert answer.text.count("event: n") == 3


async def test_api_paths_stay_the_apis() -> None:
    for portal_url in ("http://portal", ""):
        transport = httpx.ASGITransport(app=gateway(portal_url))
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            missing = await client.get("/api/v2/no-such-route")
            assert (missing.status_code, missing.json()["code"]) == (404, "NoApiError")
            wrong_method = await client.patch("/api/v2/jobs")
            assert wrong_method.status_code == 405
            assert (await client.get("/rest-server/x")).status_code == 404
    transport = httpx.ASGITransport(app=gateway(""))
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        assert (await client.get("/")).json()["code"] == "NoApiError"


async def test_an_unreachable_portal_is_a_clear_503() -> None:
    app = build_http_app(lambda: None, GatewaySettings(portal_url="http://127.0.0.1:1"))  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
        answer = await client.get("/jobs")
        assert (answer.status_code, answer.json()["code"]) == (503, "ServiceUnavailableError")


async def test_swagger_ui_is_served_from_local_assets() -> None:
    app = build_http_app(lambda: None, GatewaySettings())  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
        page = await client.get("/api/v2/docs")
        assert page.status_code == 200
        assert "/api/v2/docs/assets/swagger-ui-bundle.js" in page.text
        assert "cdn" not in page.text.lower() and "https://" not in page.text
        for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png"):
            assert (await client.get(f"/api/v2/docs/assets/{asset}")).status_code == 200
        assert (await client.get("/redoc")).status_code == 404
