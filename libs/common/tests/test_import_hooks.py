"""Packages imported without optional parts the platform never uses (pai_common.import_hooks): nats-py
without aiohttp, httpx without its command-line client (rich, click); both stay importable for whoever
needs them, and a WebSocket URL is refused with its own message."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pai_common.bus import Bus

PROBE = """
import sys
import pai_jobs.shell, pai_runtime.shell, pai_gateway.shell, pai_auth.shell, pai_monitoring.shell
import pai_portal.server
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


async def test_a_websocket_url_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"WebSocket \(ws://, wss://\) is not supported"):
        await Bus.connect("ws://127.0.0.1:1", "jobs")
