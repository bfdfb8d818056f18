"""Packages imported without optional parts the platform never uses (pai_common.import_hooks): nats-py
without aiohttp, httpx without its command-line client (rich, click); both stay importable for whoever
needs them, and a WebSocket URL is refused with its own message."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from pai_common.bus import Bus

PROBE = """
import sys
import pai_common  # as every service's __main__ does first (test below)
import pai_scheduler.shell, pai_jobs.shell, pai_runtime.shell, pai_gateway.shell, pai_auth.shell
import pai_monitoring.shell, pai_portal.server, pai_orchestrator.shell, pai_storage.shell
extras = ("aiohttp", "httpx._main", "rich", "pygments")  # click: uvicorn imports it itself
print(",".join(sorted(m for m in sys.modules if m in extras or m.startswith("aiohttp."))) or "-")
import nats.aio.transport, httpx
print(nats.aio.transport.aiohttp is None, httpx.main.__module__)
import aiohttp
import kubernetes.aio
import httpx._main
print(type(aiohttp.ClientSession).__name__, httpx._main.main.name)
"""


def test_services_start_without_the_extras_which_stay_importable() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["-", "True", "httpx", "type", "main"]


def test_every_service_imports_pai_common_first() -> None:
    # The scheduler imported nats (and so aiohttp) before anything imported pai_common.
    mains = sorted(Path(__file__).resolve().parents[3].glob("services/*/pai_*/__main__.py"))
    assert len(mains) >= 11
    for main in mains:
        first = ast.parse(main.read_text()).body[0]
        assert isinstance(first, ast.Import) and first.names[0].name == "pai_common", main


async def test_a_websocket_url_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"WebSocket \(ws://, wss://\) is not supported"):
        await Bus.connect("ws://127.0.0.1:1", "jobs")
