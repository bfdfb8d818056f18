"""Task exits recorded together: every exit waiting when a transaction starts goes into it (issue 17).

Each exit used to be its own transaction (an update of its run, the ``task.exited`` event staged in the
outbox, a commit: three database requests a task). Exits that arrive while one transaction is being
written wait for the next, which records all of them in one update request (one update statement per
run), one outbox insert and one commit: with one exit at a time nothing changes, and under load the
requests per task fall with the number of exits per transaction. Nothing waits to fill a batch.

A run is updated only while it is ``running`` (an exit is reported once, however often it is recorded).
Each transaction stamps the runs it updates with its own token, read back only when fewer runs matched
than it updated, so that it knows which it reported. A run that does not exist yet (its launch is not
committed) is tried again after ``RETRY_S``, as is a whole batch whose transaction failed; after
``TRIES`` the exit is given up and logged (the run stays ``running``; the next agent start records it
from the task's exit file).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from pymongo import UpdateOne

from pai_common.contract.events import TaskExited
from pai_common.service import ServiceApp
from pai_runtime.backend import TaskExit

log = logging.getLogger(__name__)

RETRY_S = 0.2
TRIES = 300
# The most exits one transaction records (a 1,000-task job ending at once: four transactions, each well
# under the database's and the bus's size limits with 4 KiB log tails).
MAX_BATCH = 256
# The field a transaction stamps on the runs it updated (its own token).
TOKEN = "exit_report"


@dataclass
class Exit:
    rid: str
    template: dict[str, Any]
    result: TaskExit
    tail: str
    finished: int
    pod_reason: str | None = None
    container_reason: str | None = None
    gpu_health: dict[str, Any] | None = None
    tries: int = 0
    done: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    def event(self) -> TaskExited:
        return TaskExited(
            **self.template,
            exit_code=self.result.exit_code,
            signal=self.result.signal,
            log_tail=self.tail,
            finished_at=self.finished,
            pod_reason=self.pod_reason,
            container_reason=self.container_reason,
            gpu_health=self.gpu_health,
        )


class ExitWriter:
    def __init__(self, app: ServiceApp, collection: str) -> None:
        self.app = app
        self.collection = collection
        self._queue: list[Exit] = []
        self._writing: asyncio.Task[None] | None = None
        self._retries: set[asyncio.TimerHandle] = set()

    async def record(self, exit: Exit) -> None:
        """Returns once the exit is recorded (or reported already), or given up."""
        self._add(exit)
        await asyncio.shield(exit.done)

    def close(self) -> None:
        """The agent stops: what is not recorded stays ``running``, for the next agent to record."""
        for handle in self._retries:
            handle.cancel()
        self._retries.clear()
        if self._writing is not None:
            self._writing.cancel()
        for e in self._queue:
            if not e.done.done():
                e.done.cancel()
        self._queue.clear()

    def _add(self, exit: Exit) -> None:
        self._queue.append(exit)
        if self._writing is None:
            self._writing = asyncio.create_task(self._drain(), name="record-exits")

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch: dict[str, Exit] = {}
                later: list[Exit] = []
                for e in self._queue:  # the same run twice: the second finds it reported by the first
                    if e.rid in batch or len(batch) >= MAX_BATCH:
                        later.append(e)
                    else:
                        batch[e.rid] = e
                self._queue = later
                await self._write(list(batch.values()))
        finally:
            self._writing = None

    def _retry(self, e: Exit) -> None:
        e.tries += 1
        if e.tries >= TRIES:
            log.error("task exit could not be recorded", extra={"run": e.rid})
            _finish(e)
            return

        def again() -> None:
            self._retries.discard(handle)
            self._add(e)

        handle = asyncio.get_running_loop().call_later(RETRY_S, again)
        self._retries.add(handle)

    async def _write(self, batch: list[Exit]) -> None:
        token = uuid.uuid4().hex
        try:
            async with self.app.transaction() as tx:
                runs = tx.db[self.collection]
                updates = [
                    UpdateOne(
                        {"_id": e.rid, "status": "running"},
                        {
                            "$set": {
                                "status": "exited",
                                "exit_code": e.result.exit_code,
                                "signal": e.result.signal,
                                "finished_at": e.finished,
                                TOKEN: token,
                            }
                        },
                    )
                    for e in batch
                ]
                written = await runs.bulk_write(updates, ordered=False, session=tx.session)
                if written.matched_count == len(batch):
                    reported, stored = {e.rid for e in batch}, {e.rid for e in batch}
                else:
                    found = runs.find(
                        {"_id": {"$in": [e.rid for e in batch]}}, {TOKEN: 1}, session=tx.session
                    )
                    tokens = {str(d["_id"]): d.get(TOKEN) async for d in found}
                    reported = {e.rid for e in batch if tokens.get(e.rid) == token}
                    stored = set(tokens)
                for e in batch:
                    if e.rid in reported:
                        tx.out.event(e.event(), msg_id=f"exited:{e.rid}")
        except Exception as exc:
            log.warning(
                "could not record task exits; retrying", extra={"runs": len(batch), "error": repr(exc)}
            )
            for e in batch:
                self._retry(e)
            return
        for e in batch:
            if e.rid not in stored:
                self._retry(e)  # its launch has not committed yet
                continue
            if e.rid in reported:
                log.info("task exited", extra={"run": e.rid, "exit_code": e.result.exit_code})
            _finish(e)


def _finish(e: Exit) -> None:
    if not e.done.done():  # not cancelled by the agent's stop
        e.done.set_result(None)
