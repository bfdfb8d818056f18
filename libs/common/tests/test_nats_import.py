"""nats-py is imported without aiohttp (pai_common.nats_import): a service process does not load aiohttp's
59 modules for a WebSocket transport it never uses, aiohttp stays importable for the Kubernetes client, and
a WebSocket URL is refused with its own message."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pai_common.bus import Bus

PROBE = """
import sys
import pai_jobs.shell, pai_runtime.shell, pai_gateway.http_app
loaded = sorted(m for m in sys.modules if m == "aiohttp" or m.startswith("aiohttp."))
import nats.aio.transport
print(len(loaded), nats.aio.transport.aiohttp is None)
import aiohttp
import kubernetes.aio
print(type(aiohttp.ClientSession).__name__)
"""


def test_services_start_without_aiohttp_which_stays_importable() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["0", "True", "type"]


async def test_a_websocket_url_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"WebSocket \(ws://, wss://\) is not supported"):
        await Bus.connect("ws://127.0.0.1:1", "jobs")
