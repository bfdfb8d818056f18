"""Which virtual clusters exist: the scheduler owns them; the jobs service asks it and remembers.

A name seen recently is trusted; an unknown name is asked about again at once (a VC added a moment ago
is found), and the answer for a name nobody has is `404 NoVirtualClusterError`, OpenPAI's answer at
submission.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Final

from pai_common.errors import NoVirtualClusterError, PaiError

log = logging.getLogger(__name__)

# How long a fetched list of names is trusted for names on it.
FRESH_S: Final = 30.0


class VirtualClusterNames:
    def __init__(self, fetch: Callable[[], Awaitable[set[str]]], fresh_s: float = FRESH_S) -> None:
        self._fetch = fetch
        self._fresh_s = fresh_s
        self._names: set[str] = set()
        self._fetched_at: float | None = None
        self._refreshing = asyncio.Lock()

    async def check(self, name: str) -> None:
        """Return if `name` is a virtual cluster; NoVirtualClusterError (404) if none has it.

        If the scheduler cannot be asked, a name known from an earlier answer is trusted and any other
        refused with the scheduler's error (nothing has been done yet: the caller may retry).
        """
        if name in self._names and self._fresh():
            return
        try:
            await self._refresh()
        except PaiError:
            if name in self._names:
                log.warning("virtual clusters not refreshed; using the last known list", extra={"vc": name})
                return
            raise
        if name not in self._names:
            raise NoVirtualClusterError(f"Virtual cluster {name} is not found.")

    def _fresh(self) -> bool:
        return self._fetched_at is not None and time.monotonic() - self._fetched_at < self._fresh_s

    async def _refresh(self) -> None:
        started = time.monotonic()
        async with self._refreshing:
            if self._fetched_at is not None and self._fetched_at >= started:
                return  # another caller fetched while this one waited
            names = await self._fetch()
            self._names, self._fetched_at = names, time.monotonic()
