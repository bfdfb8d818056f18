"""nats-py without its WebSocket transport, imported before anything else imports nats.

nats-py imports aiohttp when it is installed (the official Kubernetes client brings it), only to offer
``ws://`` and ``wss://`` servers, which the platform never uses (its URLs are ``nats://`` and ``tls://``).
That import cost every service process about 100 ms of CPU at start and 9.5 MiB of memory (59 modules), on
a platform of a dozen such processes: a tenth of `pai up`'s memory and of its CPU to get ready. So nats is
imported here while aiohttp looks absent, and aiohttp is then importable again for whoever needs it (the
Kubernetes client's asyncio API): only nats's WebSocket transport is left without it. A ``ws://`` URL is
refused with its own error (``bus.py``).
"""

from __future__ import annotations

import sys

WEBSOCKET_SCHEMES = ("ws", "wss")


def import_nats_without_websockets() -> None:
    if "nats.aio.transport" in sys.modules:
        return  # imported already (by a process that imported nats first): nothing to save any more
    missing = object()
    saved = sys.modules.get("aiohttp", missing)
    sys.modules["aiohttp"] = None  # type: ignore[assignment]  # `import aiohttp` raises ImportError
    try:
        import nats.aio.transport  # noqa: F401
    finally:
        if saved is missing:
            del sys.modules["aiohttp"]
        else:
            sys.modules["aiohttp"] = saved  # type: ignore[assignment]
