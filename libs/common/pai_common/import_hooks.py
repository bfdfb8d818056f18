"""Third-party packages imported without optional parts the platform never uses, whoever imports them first.

Some packages import more when it happens to be installed, for features no service of the platform uses:

* nats-py imports aiohttp (the official Kubernetes client brings it) only to offer ``ws://`` and ``wss://``
  servers; the platform's URLs are ``nats://`` and ``tls://``. About 100 ms of CPU and 9.5 MiB (59
  modules) per process. A ``ws://`` URL is refused with its own error (``bus.py``).
* httpx imports its command-line client (``httpx._main``), and with it rich, pygments and click (the CLI
  and typer bring them), only to define ``httpx.main``. About 45 ms of CPU and 5 MiB in each service that
  speaks HTTP to others (gateway, auth, monitoring, portal). ``httpx.main`` is then httpx's own stand-in,
  which says the CLI's dependencies are missing; ``python -m httpx`` and the ``httpx`` command, which do not
  import ``pai_common``, are unchanged.

On a platform of a dozen such processes these are a tenth of `pai up`'s memory and of its CPU to get
ready. ``pai_common/__init__`` installs an import hook, so that nothing is imported before it is needed (a
process that imports ``pai_common`` but never nats, such as the MongoDB-wire servers, does not pay for nats
at all): when one of the modules of ``HIDDEN_WHILE_IMPORTING`` is executed, the modules listed for it look
absent (``import`` raises ImportError, which these packages expect), and are importable again afterwards
for whoever needs them (aiohttp for the Kubernetes client's asyncio API).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types
from collections.abc import Sequence

HIDDEN_WHILE_IMPORTING: dict[str, tuple[str, ...]] = {
    "nats.aio.transport": ("aiohttp",),
    "httpx": ("httpx._main",),
}


class _Without(importlib.abc.Loader):
    """Runs a module's own loader while ``hidden`` modules look absent."""

    def __init__(self, loader: importlib.abc.Loader, hidden: tuple[str, ...]) -> None:
        self.loader = loader
        self.hidden = hidden

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        missing = object()
        saved = {name: sys.modules.get(name, missing) for name in self.hidden}
        for name in self.hidden:
            sys.modules[name] = None  # type: ignore[assignment]  # `import <name>` raises ImportError
        try:
            self.loader.exec_module(module)
        finally:
            for name, before in saved.items():
                if before is missing:
                    del sys.modules[name]
                else:
                    sys.modules[name] = before  # type: ignore[assignment]


class _Finder(importlib.abc.MetaPathFinder):
    """Finds the modules of ``HIDDEN_WHILE_IMPORTING`` as the other finders do, with the loader above."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        hidden = HIDDEN_WHILE_IMPORTING.get(fullname)
        if hidden is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _Without(spec.loader, hidden)
                return spec
        return None


def install() -> None:
    """From now on, the modules of ``HIDDEN_WHILE_IMPORTING`` are imported without their optional parts
    (those imported already stay as they are)."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
