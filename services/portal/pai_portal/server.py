"""The portal process: one HTTP server (uvicorn) and nothing else — no bus, no database.

It tells a local launcher that it is up the way the other services do (``<data dir>/run/portal.json``
with the port that answers ``/readyz``), so ``pai up`` waits for it like for any service.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

import uvicorn

from pai_common import event_loop
from pai_common.health import HealthServer, announce
from pai_common.logs import setup_logging
from pai_portal.app import build_app
from pai_portal.settings import PortalSettings

log = logging.getLogger(__name__)


async def serve(settings: PortalSettings) -> None:
    app = build_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.portal_host,
        port=settings.portal_port,
        log_config=None,
        access_log=False,
        lifespan="on",
    )
    # Uvicorn handles SIGTERM and SIGINT itself: it stops accepting, finishes what is in flight, exits.
    server = uvicorn.Server(config)
    handed = None if settings.portal_fd is None else [socket.socket(fileno=settings.portal_fd)]
    task = asyncio.create_task(server.serve(sockets=handed))
    # /metrics, /healthz and /readyz on the service port every platform process has (PAI_HTTP_PORT).
    health = HealthServer(settings.http_host, settings.http_port, lambda: bool(server.started))
    health_port = await health.start()
    try:
        while not server.started and not task.done():
            await asyncio.sleep(0.05)
        if server.started:
            announce(Path(settings.data_dir), "portal", "portal", settings.http_host, health_port)
            log.info("portal ready", extra={"port": settings.portal_port, "api": settings.portal_api_url})
        await task
    finally:
        await health.stop()


def main() -> None:
    settings = PortalSettings()
    setup_logging("portal", settings.log_level)
    # One line per API call at INFO would drown the portal's own log.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    event_loop.run(serve(settings))
