"""The runs one transaction of commands launches: looked up once for the batch, inserted once at its end.

The command consumer applies a whole fetch in one transaction (``HandlerContext.batch``). Whether a task
was launched already (a command is done once) is read for every launch of the batch in one request, and
the new runs are inserted in one request at the transaction's end, with the ``task.running`` events they
cause. A kill or membership change later in the same batch finds a run launched earlier in it here.
"""

from __future__ import annotations

from typing import Any

from pai_common.consumer import HandlerContext
from pai_common.contract.commands import LaunchTask

MEMO_KEY = "runtime.launch_batch"


def run_id(job_key: str, attempt_id: int, role: str, index: int, task_attempt_id: int = 0) -> str:
    return f"{job_key}/{attempt_id}/{role}/{index}/{task_attempt_id}"


def launch_id(cmd: LaunchTask) -> str:
    return run_id(cmd.job_key, cmd.attempt_id, cmd.task_role, cmd.index, cmd.task_attempt_id)


class LaunchBatch:
    def __init__(self, ctx: HandlerContext, collection: str) -> None:
        self.ctx = ctx
        self.collection = collection
        self._stored: set[str] | None = None
        self.pending: dict[str, dict[str, Any]] = {}
        ctx.on_before_commit(self.write)

    @classmethod
    def of(cls, ctx: HandlerContext, collection: str) -> LaunchBatch:
        return ctx.kept(MEMO_KEY, lambda tx: cls(tx, collection))

    async def launched(self, rid: str) -> bool:
        """Whether the run exists (stored, or launched earlier in this transaction)."""
        if rid in self.pending:
            return True
        if self._stored is None:
            rids = {launch_id(e.body) for e in self.ctx.batch if isinstance(e.body, LaunchTask)} | {rid}
            found = self.ctx.db[self.collection].find(
                {"_id": {"$in": sorted(rids)}}, {"_id": 1}, session=self.ctx.session
            )
            self._stored = {str(d["_id"]) async for d in found}
        return rid in self._stored

    def add(self, run: dict[str, Any]) -> None:
        self.pending[str(run["_id"])] = run

    async def write(self) -> None:
        if self.pending:
            runs = list(self.pending.values())
            await self.ctx.db[self.collection].insert_many(runs, session=self.ctx.session)
            self.pending.clear()
