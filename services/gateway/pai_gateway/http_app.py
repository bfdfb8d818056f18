"""The FastAPI application: OpenPAI REST API v2, assembled from one router per area.

Each route is one RPC (or a few) on the bus; the routers find the bus, the settings and the identity
resolver in ``app.state`` (see ``deps``).
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

from pai_common.bus import Bus
from pai_common.telemetry import exporting
from pai_gateway import (
    docs_ui,
    errors,
    portal_proxy,
    routes_auth,
    routes_cluster,
    routes_dead_letters,
    routes_diagnosis,
    routes_groups,
    routes_jobs,
    routes_marketplace,
    routes_meta,
    routes_monitoring,
    routes_nodes,
    routes_oidc,
    routes_storages,
    routes_users,
)
from pai_gateway.body_limit import BodyLimit
from pai_gateway.http_metrics import HttpMetrics
from pai_gateway.identity import IdentityResolver
from pai_gateway.paths import OpenPaiPaths
from pai_gateway.settings import GatewaySettings


def build_http_app(bus_provider: Callable[[], Bus], settings: GatewaySettings) -> FastAPI:
    # Docs from local assets (docs_ui); ReDoc is off: it loads its script from a CDN.
    app = FastAPI(title="OpenPAI REST API v2 (Python)", version="0.1.0", docs_url=None, redoc_url=None)
    errors.install(app)
    app.state.settings = settings
    app.state.bus_provider = bus_provider
    app.state.identity_resolver = None

    def resolver() -> IdentityResolver:
        if app.state.identity_resolver is None:
            app.state.identity_resolver = IdentityResolver(
                bus_provider(), settings.identity_cache_s, settings.rpc_timeout_s
            )
        resolved: IdentityResolver = app.state.identity_resolver
        return resolved

    app.state.resolver = resolver

    # Innermost of the middlewares, as it was added first: the metrics count its refusals.
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)

    for module in (
        routes_meta,
        routes_auth,
        routes_oidc,
        routes_users,
        routes_groups,
        routes_jobs,
        routes_cluster,
        routes_storages,
        routes_diagnosis,
        routes_dead_letters,
        routes_monitoring,
        routes_nodes,
        routes_marketplace,
    ):
        app.include_router(module.router)
    # The server span of each request, whose trace every RPC of the route continues and whose
    # traceparent every answer carries: FastAPI's instrumentation while spans are exported (outermost, so
    # that the metrics middleware sees its span; body chunks make no spans of their own), otherwise a
    # cheap span of the metrics middleware's own.
    instrumented = exporting()
    app.add_middleware(HttpMetrics, fastapi_app=app, own_span=not instrumented)
    if instrumented:
        FastAPIInstrumentor.instrument_app(app, exclude_spans=["receive", "send"])

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    docs_ui.install(app)
    # Last: every path no route above claims goes to the web portal (never /api/ paths).
    app.include_router(portal_proxy.router)

    # Outermost: routing sees the canonical path whatever address the client used.
    app.add_middleware(OpenPaiPaths)
    return app
