"""The gateway process: the bus connection of ServiceApp plus an HTTP server in the same event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator

import uvicorn

from pai_common.service import ServiceApp
from pai_common.telemetry import setup_tracing
from pai_gateway.http_app import build_http_app
from pai_gateway.settings import GatewaySettings
from pai_gateway.slow_clients import protocol_with

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """Uvicorn without its own signal handling: the service runner owns SIGTERM and drains everything."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def build_app(settings: GatewaySettings | None = None) -> ServiceApp:
    settings = settings or GatewaySettings()
    app = ServiceApp("gateway", settings)
    # Before the HTTP app is built: whether spans are exported decides how requests are instrumented.
    setup_tracing("gateway", settings.otel_exporter)
    http = build_http_app(lambda: app.bus, settings)
    config = uvicorn.Config(
        http,
        host=settings.gateway_host,
        port=settings.gateway_port,
        log_config=None,
        access_log=False,
        lifespan="off",
        http=protocol_with(settings.header_timeout_s),
        timeout_keep_alive=int(max(1, settings.keep_alive_s)),
        limit_concurrency=settings.max_connections,
    )
    server = _Server(config)
    sockets: list[socket.socket] = []

    async def bind(app: ServiceApp) -> None:
        # Bound before the service says it is ready: a port someone else holds ends the process during
        # start-up (uvicorn exits), where `pai up` and its callers see it and can try another port,
        # rather than after readiness, while a stranger answers on the port.
        if settings.gateway_fd is not None:
            sockets.append(socket.socket(fileno=settings.gateway_fd))
        else:
            sockets.append(config.bind_socket())

    async def serve() -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await server.serve(sockets=sockets)

    async def stop_http(app: ServiceApp) -> None:
        server.should_exit = True

    app.on_startup(bind)
    app.background(serve)
    app.on_shutdown(stop_http)
    return app


def main() -> None:
    build_app().run()
