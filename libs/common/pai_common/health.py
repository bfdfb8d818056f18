"""A tiny HTTP server for /metrics, /healthz and /readyz, so every service can be probed and scraped."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

MAX_REQUEST_LINE = 8192


class HealthServer:
    def __init__(self, host: str, port: int, ready: Callable[[], bool]) -> None:
        self.host = host
        self.port = port
        self._ready = ready
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), timeout=5)
            while (await asyncio.wait_for(reader.readline(), timeout=5)) not in (b"\r\n", b"\n", b""):
                pass
            parts = line.decode("latin-1").split()
            path = parts[1].split("?")[0] if len(parts) >= 2 and len(line) < MAX_REQUEST_LINE else ""
            if path == "/metrics":
                status, ctype, body = "200 OK", CONTENT_TYPE_LATEST, generate_latest()
            elif path == "/healthz":
                status, ctype, body = "200 OK", "text/plain", b"ok"
            elif path == "/readyz":
                ok = self._ready()
                status = "200 OK" if ok else "503 Service Unavailable"
                ctype, body = "text/plain", b"ready" if ok else b"not ready"
            else:
                status, ctype, body = "404 Not Found", "text/plain", b"not found"
            head = (
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()


def announce(data_dir: Path, service: str, instance: str, host: str, port: int) -> None:
    """Tell a local launcher, and a local Prometheus, where this process serves health and metrics.

    ``run/<instance>.json`` holds the port (``pai up`` waits on it); ``run/targets/<instance>.json`` is the
    same as a Prometheus file-based service discovery target with the labels ``service`` and ``process``
    (no metric of the platform has these, so Prometheus renames none), so that a Prometheus watching
    ``run/targets/*.json`` follows restarts, which pick new ports. Best effort: a read-only data dir
    (a container) just has none.
    """
    run_dir = Path(data_dir) / "run"
    with contextlib.suppress(OSError):
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / f"{instance}.json").write_text(json.dumps({"health_port": port}))
        host = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
        target = [{"targets": [f"{host}:{port}"], "labels": {"service": service, "process": instance}}]
        targets = run_dir / "targets"
        targets.mkdir(exist_ok=True)
        # Written whole, then renamed: Prometheus rereads the file as soon as it changes.
        partial = targets / f"{instance}.json.tmp"
        partial.write_text(json.dumps(target))
        partial.replace(targets / f"{instance}.json")
