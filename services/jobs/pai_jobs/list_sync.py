"""Keeps this process's in-memory job list (list_index) current with `job_list` (shell: I/O).

Loaded in the background at start-up; until then, and while a large gap is being reloaded, `current()`
answers None and the list is served by the database plan (list_plan). Before each page, the entries whose
`update_seq` is above the index's watermark are read (an index range, empty when nothing changed) and
applied, so every replica shows what any replica committed before the request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Final

from pymongo.asynchronous.database import AsyncDatabase

from pai_jobs.list_index import SORT_KEYS, ListIndex

log = logging.getLogger(__name__)

LIST: Final = "job_list"
COUNTERS: Final = "counters"
# Counted up by every write to `job_list`, in the writing transaction.
UPDATE_COUNTER: Final = "job_list_update"
# More changes than this behind: reload in the background (the DB plan serves meanwhile) rather than
# make one request read them all.
RELOAD_ABOVE: Final = 5000
# Applied a thousand at a time, so that the RPCs served meanwhile wait tens of ms at most.
LOAD_BATCH: Final = 1000

Db = AsyncDatabase[dict[str, Any]]


class ListSync:
    def __init__(self, db_of: Any, reload_above: int = RELOAD_ABOVE) -> None:
        # The database is known only once the service has started: take a callable.
        self._db_of = db_of
        self.reload_above = reload_above
        self.index: ListIndex | None = None
        self.loads = 0
        self._reload = asyncio.Event()
        self._lock = asyncio.Lock()

    @property
    def db(self) -> Db:
        db: Db = self._db_of()
        return db

    async def run(self) -> None:
        """Load now, then again whenever `current` finds the index too far behind."""
        while True:
            try:
                await self._load()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("job list index load failed", extra={"error": repr(exc)})
                await asyncio.sleep(5)
                continue
            self._reload.clear()
            await self._reload.wait()

    async def _top(self) -> int:
        counter = await self.db[COUNTERS].find_one({"_id": UPDATE_COUNTER}, {"value": 1})
        return int(counter["value"]) if counter else 0

    async def _load(self) -> None:
        started = time.perf_counter()
        top = await self._top()  # before the scan: what commits during it is read again as changes
        index = ListIndex()
        batch: list[dict[str, Any]] = []
        async for doc in self.db[LIST].find({}).batch_size(LOAD_BATCH):
            batch.append(doc)
            if len(batch) >= LOAD_BATCH:
                index.apply(batch, watermark=top)
                batch = []
        index.apply(batch, watermark=top)
        read_s = time.perf_counter() - started
        for field in SORT_KEYS:
            index.warm([field])
            await asyncio.sleep(0)  # sorting 100,000 keys takes a while: let requests through
        self.index = index
        self.loads += 1
        log.info(
            "job list index loaded",
            extra={
                "jobs": len(index),
                "watermark": top,
                "read_s": round(read_s, 2),
                "total_s": round(time.perf_counter() - started, 2),
            },
        )

    async def current(self) -> ListIndex | None:
        """The index with every committed change applied, or None while it is (re)loading."""
        if self.index is None:
            return None
        async with self._lock:
            index = self.index
            if index is None:
                return None
            top = await self._top()
            if top - index.watermark > self.reload_above:
                log.info("job list index reloads", extra={"behind": top - index.watermark})
                self.index = None
                self._reload.set()
                return None
            if top > index.watermark:
                cursor = self.db[LIST].find({"update_seq": {"$gt": index.watermark}})
                index.apply(await cursor.to_list())
            return index
