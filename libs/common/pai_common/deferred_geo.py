"""SecantusDB's geospatial modules loaded at the first geo operation, not when the server starts.

SecantusDB imports ``secantus.geo`` and ``secantus.geo_index`` at start, and they import Shapely, which
imports numpy: about 50 ms of CPU and 18 MiB of memory in each MongoDB-wire server process of `pai up`
(three of them), for ``2d``/``2dsphere`` indexes and ``$near``/``$geoWithin``/``$geoIntersects`` queries
that the platform never runs. ``defer()`` (called by ``pai_common.mongo_server`` before it imports
SecantusDB) puts stand-ins for both modules into ``sys.modules``: each holds, from the start, only what
SecantusDB's own modules take from it when they are imported (the ``GeoError`` class and a forwarder per
function, ``MODULE_LEVEL_NAMES``). The first call of a forwarder, or the first look-up of any other name,
executes the real module and makes the stand-in the real module's contents: a geo query then works as it
always did, only its first one pays the import. Should a SecantusDB release take another name at import,
that look-up loads the real module at once: the start is slower again, never wrong
(``libs/common/tests/test_deferred_geo.py`` notices).

``GeoError`` is the one class: the stand-in's is kept, and the real module's functions raise it (their
module's ``GeoError`` is replaced by it before they can run), so ``except GeoError`` in SecantusDB's
command layer still turns a malformed geo query into the client's ``BadValue`` error.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import threading
import types
from collections.abc import Callable
from typing import Any

# What SecantusDB's modules import from the two geo modules at their own import (secantus 0.7):
# ``storage.py`` and ``commands.py``. Everything else is imported inside functions, at their call.
MODULE_LEVEL_NAMES: dict[str, tuple[str, ...]] = {
    "secantus.geo": ("parse_doc_geometry", "parse_query_geometry", "validate_coordinates"),
    "secantus.geo_index": (
        "encode_cell",
        "planar_2d_covering_ranges",
        "planar_2d_index_for_point",
        "s2_doc_covering",
        "s2_query_covering",
    ),
}

_LOCK = threading.RLock()


class GeoError(ValueError):
    """Malformed query geometry. Surfaced as ``BadValue`` to the client."""


GeoError.__module__ = "secantus.geo"


class DeferredModule(types.ModuleType):
    """A module whose real code runs at the first look-up of a name it does not hold yet."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)  # the import system's probes (``__path__``...) load nothing
        load(self)
        try:
            return self.__dict__[name]
        except KeyError:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}") from None


def defer() -> None:
    """Put the stand-ins in place; does nothing where SecantusDB's geo modules are imported already."""
    with _LOCK:
        if any(name in sys.modules for name in MODULE_LEVEL_NAMES):
            return
        package = importlib.util.find_spec("secantus")  # finds the package without importing it
        if package is None or not package.submodule_search_locations:
            return  # no SecantusDB here: whoever imports it gets the import error
        for name, functions in MODULE_LEVEL_NAMES.items():
            spec = importlib.machinery.PathFinder.find_spec(name, list(package.submodule_search_locations))
            if spec is None or spec.loader is None:
                return
            module = DeferredModule(name)
            module.__spec__ = spec
            module.__loader__ = spec.loader
            module.__file__ = spec.origin
            module.__package__ = "secantus"
            module.__dict__["_deferred_loaded"] = False
            for function in functions:
                setattr(module, function, _forwarder(module, function))
            if name == "secantus.geo":
                module.GeoError = GeoError  # type: ignore[attr-defined]
            sys.modules[name] = module


def loaded(module: types.ModuleType) -> bool:
    return bool(module.__dict__.get("_deferred_loaded", True))


def load(module: types.ModuleType) -> None:
    """Execute the real module once and give the stand-in its contents (any thread, any number of times)."""
    with _LOCK:
        if loaded(module):
            return
        spec = module.__spec__
        assert spec is not None and spec.loader is not None
        real = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(real)
        if module.__name__ == "secantus.geo":
            bases = real.__dict__["GeoError"].__bases__
            if bases != GeoError.__bases__:
                raise ImportError(
                    f"secantus.geo.GeoError derives from {bases}, not ValueError:"
                    " pai_common.deferred_geo no longer matches this SecantusDB"
                )
            # What the real functions raise from now on: the class SecantusDB's modules catch.
            real.__dict__["GeoError"] = GeoError
        contents = {k: v for k, v in real.__dict__.items() if k not in ("__spec__", "__loader__")}
        module.__dict__.update(contents)
        module.__dict__["_deferred_loaded"] = True
        parent = sys.modules.get("secantus")
        if parent is not None:
            setattr(parent, module.__name__.rsplit(".", 1)[1], module)


def _forwarder(module: types.ModuleType, name: str) -> Callable[..., Any]:
    def forward(*args: Any, **kwargs: Any) -> Any:
        load(module)
        return module.__dict__[name](*args, **kwargs)

    forward.__name__ = forward.__qualname__ = name
    forward.__module__ = module.__name__
    return forward
