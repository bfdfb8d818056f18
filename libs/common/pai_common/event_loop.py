"""The event loop a service process runs on: uvloop's where it is installed, asyncio's otherwise.

Every service is a loop of small messages (bus deliveries, database round trips, HTTP requests), so the
loop's own cost (its scheduling, its socket transports) is a real share of each job's CPU; uvloop runs
both in C (libuv). ``PAI_EVENT_LOOP=asyncio`` keeps the standard loop (to compare, or where uvloop
misbehaves); unset, the standard loop is used where uvloop is not installed (it does not exist on
Windows). ``PAI_EVENT_LOOP=uvloop`` insists on it, and any other value is refused by name: a misspelt
setting would otherwise go unnoticed. Measured effect: ``benchmarks/RESULTS.md`` (issue 17).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

ENV = "PAI_EVENT_LOOP"
CHOICES = ("uvloop", "asyncio")


class EventLoopSettingError(ValueError):
    """``PAI_EVENT_LOOP`` names no loop this process can run."""


def chosen() -> str:
    """``uvloop`` or ``asyncio``: what ``run`` will use in this process."""
    asked = os.environ.get(ENV, "").strip().lower()
    if asked not in ("", *CHOICES):
        raise EventLoopSettingError(f"{ENV}={asked!r}: expected one of {', '.join(CHOICES)}")
    if asked == "asyncio":
        return "asyncio"
    try:
        import uvloop  # noqa: F401
    except ImportError:
        if asked == "uvloop":
            raise EventLoopSettingError(f"{ENV}=uvloop, but uvloop is not installed") from None
        return "asyncio"
    return "uvloop"


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on the chosen loop."""
    if chosen() == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)
