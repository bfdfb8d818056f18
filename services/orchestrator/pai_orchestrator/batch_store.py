"""What one transaction of the orchestrator reads and writes, read once for its batch and written once.

A consumer applies a whole fetch of events in one transaction (``HandlerContext.batch``). Instead of a
read and a write per event, the frameworks of every job the batch names are read in one request when the
first of them is needed, each event's step works on the latest version (an earlier event of the same
batch may have changed it), and what changed is written at the transaction's end: the frameworks in one
bulk write guarded by the versions that were read, the transition records in one insert, the final states
that dependents look for in one bulk write. Those three are final writes (``HandlerContext.write_at_end``):
where the server can, they go in the one request that carries the transaction's processed markers and
outbox messages. The stops that overtook their jobs and the dependents of the jobs that completed are read
the same way, once per batch.

Nothing outlives the transaction (a retried one starts again from the database), so what is committed
is what a read-apply-write per event would have committed, in fewer round trips.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from pymongo import InsertOne, ReplaceOne, UpdateOne

from pai_common.bookkeeping import FinalWrite
from pai_common.consumer import HandlerContext
from pai_common.contract.events import (
    JobCompleted,
    JobStopRequested,
    JobSubmitted,
    SchedulingPreempting,
)
from pai_common.contract.types import JobState
from pai_common.envelope import Envelope

FRAMEWORKS = "frameworks"
HISTORY = "transitions"
STOPS = "stop_requests"
DEPENDENTS = "dependents"

MEMO_KEY = "orchestrator.batch_store"


def job_keys(batch: Sequence[Envelope]) -> set[str]:
    """Every job whose framework an event of the batch may load."""
    keys: set[str] = set()
    for env in batch:
        body = env.body
        if isinstance(body, JobSubmitted):
            keys.add(body.spec.job_key)
        elif isinstance(body, SchedulingPreempting):
            keys.update(v.job_key for v in body.victims)
        elif isinstance(body, JobCompleted):
            continue  # its dependents' frameworks are loaded once they are known
        else:
            key = getattr(body, "job_key", None)
            if isinstance(key, str):
                keys.add(key)
    return keys


class BatchStore:
    def __init__(self, ctx: HandlerContext) -> None:
        self.ctx = ctx
        # Each framework document as this transaction sees it (None: not stored), and the version the
        # database holds (None: to be inserted), which guards the write.
        self.docs: dict[str, dict[str, Any] | None] = {}
        self.stored_version: dict[str, int | None] = {}
        self.changed: dict[str, dict[str, Any]] = {}
        self.history: list[dict[str, Any]] = []
        self.finals: dict[str, JobState] = {}
        self._stops: dict[str, dict[str, Any]] | None = None
        # Who waits for each job read so far (with those listed in this transaction), and which were read.
        self._dependents: dict[str, list[str]] = {}
        self._dependents_read: set[str] = set()
        ctx.on_before_commit(self.write)

    @classmethod
    def of(cls, ctx: HandlerContext) -> BatchStore:
        return ctx.kept(MEMO_KEY, cls)

    # ---- frameworks ----------------------------------------------------------------------------------

    async def get(self, key: str) -> dict[str, Any] | None:
        if key not in self.docs:
            await self.load([key, *sorted(job_keys(self.ctx.batch))])
        return self.docs[key]

    async def load(self, keys: Iterable[str]) -> None:
        todo = sorted({k for k in keys if k not in self.docs})
        if not todo:
            return
        found = self.ctx.db[FRAMEWORKS].find({"_id": {"$in": todo}}, session=self.ctx.session)
        async for doc in found:
            self.docs[doc["_id"]] = doc
            self.stored_version[doc["_id"]] = int(doc["version"])
        for key in todo:
            self.docs.setdefault(key, None)
            self.stored_version.setdefault(key, None)

    def put(self, doc: dict[str, Any], record: dict[str, Any]) -> None:
        """The framework as it is now, and the record of the transition that made it."""
        key = str(doc["_id"])
        self.docs[key] = doc
        self.stored_version.setdefault(key, None)
        self.changed[key] = doc
        self.history.append(record)

    # ---- stops and dependents ------------------------------------------------------------------------

    async def stop_for(self, key: str) -> JobStopRequested | None:
        """A stop that arrived before its job (read for every submission of the batch at once)."""
        if self._stops is None:
            batch = self.ctx.batch
            keys = sorted({e.body.spec.job_key for e in batch if isinstance(e.body, JobSubmitted)} | {key})
            found = self.ctx.db[STOPS].find({"_id": {"$in": keys}}, session=self.ctx.session)
            self._stops = {d["_id"]: d async for d in found}
        doc = self._stops.pop(key, None)
        if doc is None:
            return None
        await self.ctx.db[STOPS].delete_one({"_id": key}, session=self.ctx.session)
        return JobStopRequested.model_validate(doc["stop"])

    def stop_kept(self, doc: dict[str, Any]) -> None:
        """A stop stored in this transaction for a job not known yet (its submission may follow in it)."""
        if self._stops is not None:
            self._stops[str(doc["_id"])] = doc

    async def dependents_of(self, key: str) -> list[str]:
        """Who waits for ``key``: read at the first question for it, with every other job the batch names
        (a job.completed it consumes, or a job an event of it may complete), so a batch reads once."""
        if key not in self._dependents_read:
            batch = self.ctx.batch
            keys = {e.body.job_key for e in batch if isinstance(e.body, JobCompleted)} | {key}
            todo = sorted((keys | job_keys(batch)) - self._dependents_read)
            found = self.ctx.db[DEPENDENTS].find({"_id": {"$in": todo}}, session=self.ctx.session)
            async for d in found:
                # The transaction reads its own writes: a dependent listed in it earlier is in the list.
                listed = self._dependents.setdefault(d["_id"], [])
                listed.extend(x for x in d.get("dependents") or [] if x not in listed)
            self._dependents_read.update(todo)
        return sorted(self._dependents.get(key, []))

    def listed(self, key: str, dependent: str) -> None:
        """``dependent`` was listed as waiting for ``key`` in this transaction."""
        if dependent not in self._dependents.setdefault(key, []):
            self._dependents[key].append(dependent)

    def completed(self, key: str, state: JobState) -> None:
        """Keep the job's final state where its dependents look (written at the transaction's end)."""
        self.finals[key] = state

    # ---- the transaction's end -----------------------------------------------------------------------

    async def write(self) -> None:
        """Leave the transaction's framework, history and final-state writes to its end (final writes: one
        request with its bookkeeping where the server can)."""
        ctx = self.ctx
        inserts: list[InsertOne[dict[str, Any]]] = []
        replaces: list[ReplaceOne[dict[str, Any]]] = []
        ns = ctx.namespace(FRAMEWORKS)
        for key, doc in sorted(self.changed.items()):
            version = self.stored_version.get(key)
            if version is None:
                inserts.append(InsertOne(doc, namespace=ns))
            else:
                replaces.append(ReplaceOne({"_id": key, "version": version}, doc, namespace=ns))
        changed = ", ".join(sorted(k for k in self.changed if self.stored_version.get(k) is not None))

        def check(matched: int) -> None:
            if matched != len(replaces):
                raise RuntimeError(f"a framework of {changed} changed concurrently; retrying")

        ctx.write_at_end(FinalWrite(FRAMEWORKS, [*inserts, *replaces], check if replaces else None))
        ns = ctx.namespace(HISTORY)
        ctx.write_at_end(FinalWrite(HISTORY, [InsertOne(doc, namespace=ns) for doc in self.history]))
        # On the document a dependent's submission writes (``register``): of two transactions that race,
        # one retries, so a dependent sees the final state or is listed, never neither.
        ns = ctx.namespace(DEPENDENTS)
        updates = [
            UpdateOne({"_id": key}, {"$set": {"final_state": state}}, upsert=True, namespace=ns)
            for key, state in sorted(self.finals.items())
        ]
        ctx.write_at_end(FinalWrite(DEPENDENTS, updates))
        self.changed.clear()
        self.history.clear()
        self.finals.clear()
