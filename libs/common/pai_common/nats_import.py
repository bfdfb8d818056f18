"""nats-py without its WebSocket transport, whoever imports nats first.

nats-py imports aiohttp when it is installed (the official Kubernetes client brings it), only to offer
``ws://`` and ``wss://`` servers, which the platform never uses (its URLs are ``nats://`` and ``tls://``).
That import cost every service process about 100 ms of CPU at start and 9.5 MiB of memory (59 modules), on
a platform of a dozen such processes: a tenth of `pai up`'s memory and of its CPU to get ready. So nats's
transport module (the one that imports aiohttp) is executed while aiohttp looks absent, and aiohttp is then
importable again for whoever needs it (the Kubernetes client's asyncio API): only nats's WebSocket transport
is left without it. A ``ws://`` URL is refused with its own error (``bus.py``).

``pai_common/__init__`` installs this as an import hook rather than importing nats itself: a process that
imports ``pai_common`` but never nats (the MongoDB-wire servers, ``python -m pai_common.mongo_server``)
does not pay nats's import (about 40 ms of CPU and 5 MiB each).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types
from collections.abc import Sequence

WEBSOCKET_SCHEMES = ("ws", "wss")
TRANSPORT = "nats.aio.transport"


class _WithoutAiohttp(importlib.abc.Loader):
    """Runs a module's own loader while ``import aiohttp`` raises ImportError."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        missing = object()
        saved = sys.modules.get("aiohttp", missing)
        sys.modules["aiohttp"] = None  # type: ignore[assignment]  # `import aiohttp` raises ImportError
        try:
            self.loader.exec_module(module)
        finally:
            if saved is missing:
                del sys.modules["aiohttp"]
            else:
                sys.modules["aiohttp"] = saved  # type: ignore[assignment]


class _TransportFinder(importlib.abc.MetaPathFinder):
    """Finds nats's transport module as the other finders do, and gives it the loader above."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != TRANSPORT:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _WithoutAiohttp(spec.loader)
                return spec
        return None


def import_nats_without_websockets() -> None:
    """From now on, nats's transport is imported without aiohttp (nothing to do once it is imported)."""
    if TRANSPORT in sys.modules or any(isinstance(f, _TransportFinder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _TransportFinder())
