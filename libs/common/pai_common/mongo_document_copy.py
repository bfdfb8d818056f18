"""The embedded MongoDB-wire server copies stored documents with a copier made for them.

SecantusDB copies a document before it applies an update to it (the old one still names the index
entries to remove) and before a projection cuts fields from it, with ``copy.deepcopy``. Under a burst of
jobs those copies were 6-8% of the three database servers' CPU (py-spy, issue 17). ``deepcopy`` pays for
generality these documents never need: a memo of every object it met, so that shared and cyclic
references survive, and a dispatch through ``__deepcopy__``/``__reduce_ex__`` for each value.

A document decoded from BSON is a tree of dicts and lists whose leaves are immutable (strings, numbers,
``None``, ``bytes``, datetimes, ``ObjectId`` and the like), with no shared or cyclic parts. ``copy_document``
rebuilds the dicts and lists, shares the immutable leaves, and hands anything else (a ``Regex``, a
``SON``, a ``Code`` with its scope) to ``copy.deepcopy``. About five times cheaper on a job's document.
A tree SecantusDB built with one value at two places (an update that sets the same list twice) gets two
copies instead of one shared: equal, and written to BSON alike.
"""

from __future__ import annotations

import copy
import datetime
import logging
import types
import uuid
from typing import Any

from bson import Binary, Decimal128, Int64, ObjectId, Timestamp

log = logging.getLogger(__name__)

# Exact types only: a subclass may carry state of its own.
_IMMUTABLE: frozenset[type] = frozenset(
    {
        str,
        int,
        float,
        bool,
        type(None),
        bytes,
        datetime.datetime,
        ObjectId,
        Int64,
        Decimal128,
        Timestamp,
        Binary,
        uuid.UUID,
    }
)

# SecantusDB's modules whose ``copy.deepcopy`` only ever copies documents or values from them.
MODULES = ("secantus.update", "secantus.projection")


def copy_document(value: Any, memo: dict[int, Any] | None = None) -> Any:
    """A deep copy of ``value``, a document or a value in one; ``copy.deepcopy``'s signature."""
    if memo is not None:
        return copy.deepcopy(value, memo)
    kind = type(value)
    if kind is dict:
        return {key: copy_document(item) for key, item in value.items()}
    if kind is list:
        return [copy_document(item) for item in value]
    if kind in _IMMUTABLE:
        return value
    return copy.deepcopy(value)


def copy_documents_faster() -> bool:
    """Make SecantusDB's update and projection steps copy with ``copy_document`` (the whole process);
    False, and nothing changed, when one of them no longer uses the ``copy`` module, e.g. after an
    upgrade."""
    import importlib

    modules = [importlib.import_module(name) for name in MODULES]
    if all(getattr(getattr(module, "copy", None), "deepcopy", None) is copy_document for module in modules):
        return True  # installed already
    if not all(getattr(module, "copy", None) is copy for module in modules):
        log.warning("SecantusDB's update or projection no longer copies with copy.deepcopy: left as it is")
        return False
    shim = types.ModuleType("copy", "copy, with deepcopy replaced by pai_common's copy_document")
    shim.__dict__.update({k: v for k, v in vars(copy).items() if not k.startswith("__")})
    shim.deepcopy = copy_document  # type: ignore[attr-defined]
    for module in modules:
        module.copy = shim  # type: ignore[attr-defined]
    return True
