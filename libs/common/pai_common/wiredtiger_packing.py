"""The embedded MongoDB-wire server packs WiredTiger keys and values with a packer planned per format.

WiredTiger's Python cursors pack every key and value they set, and unpack every one they get, with
``packing.pack``/``unpack``: pure Python that parses the format string through two generators on each
call. SecantusDB sets and gets several per index entry, so under a burst of jobs that was 13% of the
three database servers' CPU (py-spy, issue 17).

``fast_pack``/``fast_unpack`` plan each format once and then do only the per-value work, with the same
``pack_int``/``unpack_int``. They take the formats SecantusDB's tables use, made of ``S`` (a string ended
by a zero byte), ``q`` (an integer) and ``u`` (bytes, length-prefixed unless last), and give the same
bytes and values as WiredTiger's own; any other format, and any value they do not expect (bytes for an
``S``, a string for a ``u``, a count that does not match), goes to WiredTiger's own functions, which
answer or fail as before.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

PLANNED = frozenset("Squ")

# format -> the columns' kinds and whether each is the last, or None for a format left to WiredTiger.
_plans: dict[str, tuple[tuple[str, bool], ...] | None] = {}


def _plan(fmt: str) -> tuple[tuple[str, bool], ...] | None:
    plan = _plans.get(fmt, ())
    if plan == ():
        plan = None
        if fmt and all(c in PLANNED for c in fmt):
            plan = tuple((c, i == len(fmt) - 1) for i, c in enumerate(fmt))
        _plans[fmt] = plan
    return plan


def make_packers(
    pack: Callable[..., Any],
    unpack: Callable[[str, Any], Any],
    pack_int: Callable[[int], bytes],
    unpack_int: Callable[[bytes], tuple[int, bytes]],
) -> tuple[Callable[..., Any], Callable[[str, Any], Any]]:
    """``fast_pack`` and ``fast_unpack`` over WiredTiger's own functions (their fallback)."""

    def fast_pack(fmt: str, *values: Any) -> Any:
        plan = _plan(fmt)
        if plan is None or len(values) != len(plan):
            return pack(fmt, *values)
        parts: list[bytes] = []
        for (kind, last), value in zip(plan, values, strict=True):
            if kind == "q":
                parts.append(pack_int(value))
            elif kind == "S":
                if type(value) is not str:
                    return pack(fmt, *values)
                end = value.find("\0")
                parts.append((value if end < 0 else value[:end]).encode())
                parts.append(b"\0")
            else:
                if type(value) is not bytes:
                    return pack(fmt, *values)
                if not last:
                    parts.append(pack_int(len(value)))
                parts.append(value)
        return b"".join(parts)

    def fast_unpack(fmt: str, data: Any) -> Any:
        plan = _plan(fmt)
        if plan is None or type(data) is not bytes:
            return unpack(fmt, data)
        result: list[Any] = []
        for kind, last in plan:
            if kind == "q":
                number, data = unpack_int(data)
                result.append(number)
            elif kind == "S":
                size = data.find(b"\0")
                result.append(data[:size].decode())
                data = data[size + 1 :]
            else:
                if last:
                    size = len(data)
                else:
                    size, data = unpack_int(data)
                result.append(data[:size])
                data = data[size:]
        return result

    fast_pack.planned = True  # type: ignore[attr-defined]
    return fast_pack, fast_unpack


def plan_wiredtiger_packing() -> bool:
    """Make WiredTiger's cursors (the whole process) pack with ``fast_pack``/``fast_unpack``; False, and
    nothing changed, when its Python layer no longer has the functions this relies on."""
    import wiredtiger  # noqa: F401  (puts its own folder on the path: its modules import each other by name)

    cursors = sys.modules.get("swig_wiredtiger")
    if getattr(getattr(cursors, "pack", None), "planned", False):
        return True  # installed already
    packing = sys.modules.get("packing")
    intpacking = sys.modules.get("wiredtiger.intpacking")
    names = [(cursors, "pack"), (cursors, "unpack"), (intpacking, "pack_int"), (intpacking, "unpack_int")]
    if any(module is None or not callable(getattr(module, name, None)) for module, name in names) or (
        packing is None or getattr(cursors, "pack", None) is not getattr(packing, "pack", None)
    ):
        log.warning("WiredTiger's Python packing changed shape: keys and values are packed as before")
        return False
    fast_pack, fast_unpack = make_packers(
        cursors.pack,  # type: ignore[union-attr]
        cursors.unpack,  # type: ignore[union-attr]
        intpacking.pack_int,  # type: ignore[union-attr]
        intpacking.unpack_int,  # type: ignore[union-attr]
    )
    cursors.pack = fast_pack  # type: ignore[union-attr]
    cursors.unpack = fast_unpack  # type: ignore[union-attr]
    return True
