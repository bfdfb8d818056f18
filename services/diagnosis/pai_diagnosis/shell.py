"""The diagnosis shell: classify each task exit by the spec in effect, store the diagnosis, publish it;
and let admins read and set that spec.

The spec in effect lives in this service's database (one document), so it survives restarts and every
instance uses the same one: a handler compares the stored revision with the one it holds and reloads when
another instance has changed it.
"""

from __future__ import annotations

import json
import logging
import time
from functools import partial
from typing import Any

from pymongo import ReplaceOne

from pai_common.bookkeeping import FinalWrite
from pai_common.consumer import HandlerContext
from pai_common.contract.events import TaskDiagnosed, TaskExited
from pai_common.contract.rpc import ExitSpecReply, GetExitSpecRequest, PutExitSpecRequest
from pai_common.envelope import Envelope
from pai_common.errors import ForbiddenUserError, InvalidParametersError
from pai_common.service import ServiceApp
from pai_diagnosis.matcher import ContainerStatus, Diagnosis, PodStatus, TaskEnd, diagnose
from pai_diagnosis.spec import ExitSpec, build_spec, builtin_spec, overlay, parse_document

log = logging.getLogger(__name__)

DIAGNOSES = "diagnoses"
SPECS = "exit_spec"
CURRENT = "current"
SPEC_MEMO = "diagnosis.spec"
RECORDS_MEMO = "diagnosis.records"


def task_end(exited: TaskExited) -> TaskEnd:
    """What the runtime reported, in the matcher's terms. The event carries one log tail (stdout and
    stderr together); it is offered to both the user-log and the platform-log patterns."""
    pod = None
    if exited.pod_reason or exited.container_reason:
        pod = PodStatus(
            reason=exited.pod_reason,
            containers=(ContainerStatus(reason=exited.container_reason, exit_code=exited.exit_code),),
        )
    return TaskEnd(
        exit_code=exited.exit_code,
        signal=exited.signal,
        user_log=exited.log_tail,
        platform_log=exited.log_tail,
        pod=pod,
        gpu_health=exited.gpu_health,
    )


def diagnosis_key(exited: TaskExited) -> str:
    return f"{exited.job_key}/{exited.attempt_id}/{exited.task_role}/{exited.index}/{exited.task_attempt_id}"


def diagnosed_event(exited: TaskExited, d: Diagnosis) -> TaskDiagnosed:
    return TaskDiagnosed(
        job_key=exited.job_key,
        attempt_id=exited.attempt_id,
        task_role=exited.task_role,
        index=exited.index,
        task_attempt_id=exited.task_attempt_id,
        exit_code=d.exit_code,
        spec_code=d.code,
        spec_phrase=d.phrase,
        failure_type=d.failure_type,
        message=d.explanation,
        finished_at=exited.finished_at,
        reaction=d.reaction,
        exit_spec=d.entry.api_view(),
        matched=d.matched_context,
        explanation=d.explanation,
        suggestion=d.suggestion,
    )


def _source(stored: dict[str, Any]) -> str:
    """Where a stored spec came from: the shipped one (a reset) or an admin's upload."""
    return "builtin" if stored.get("mode") == "reset" else "uploaded"


class Diagnoser:
    """The service: the spec in effect, the task-exit handler and the spec RPCs."""

    def __init__(self, app: ServiceApp) -> None:
        self.app = app
        self.spec: ExitSpec = builtin_spec()
        self.revision = 0
        self.source = "builtin"
        self.updated_by: str | None = None
        self.updated_at: int | None = None
        app.on_startup(self._load)
        app.on_event(TaskExited)(self.handle)
        app.rpc({GetExitSpecRequest: self.get_spec, PutExitSpecRequest: self.put_spec})

    # ---- the spec in effect --------------------------------------------------------------------------

    async def _load(self, app: ServiceApp) -> None:
        await self._refresh(None)

    async def _refresh(self, ctx: HandlerContext | None) -> ExitSpec:
        db = ctx.db if ctx is not None else self.app.db
        session = ctx.session if ctx is not None else None
        meta = await db[SPECS].find_one({"_id": CURRENT}, {"revision": 1}, session=session)
        if meta is None or meta["revision"] == self.revision:
            return self.spec
        stored = await db[SPECS].find_one({"_id": CURRENT}, session=session)
        assert stored is not None
        try:
            spec = build_spec(json.loads(stored["document"]))
        except InvalidParametersError as exc:
            # Stored specs were validated on upload; one that no longer validates (an older service
            # version's) must not stop diagnosing: keep the one in hand and say so.
            log.error("stored exit spec is invalid; keeping the one in effect", extra={"error": exc.message})
            return self.spec
        self.spec, self.revision = spec, stored["revision"]
        self.source = _source(stored)
        self.updated_by, self.updated_at = stored["updated_by"], stored["updated_at"]
        log.info("exit spec loaded", extra={"revision": self.revision, "entries": len(spec.entries)})
        return spec

    def _reply(self, spec: ExitSpec | None = None) -> ExitSpecReply:
        if spec is not None:
            return ExitSpecReply(spec=spec.document, revision=0, source="builtin")
        return ExitSpecReply(
            spec=self.spec.document,
            revision=self.revision,
            source="uploaded" if self.source == "uploaded" else "builtin",
            updated_by=self.updated_by,
            updated_at=self.updated_at,
        )

    async def get_spec(self, req: GetExitSpecRequest) -> ExitSpecReply:
        if not req.admin:
            raise ForbiddenUserError("only admins may read the exit spec")
        if req.builtin:
            return self._reply(builtin_spec())
        await self._refresh(None)
        return self._reply()

    async def put_spec(self, req: PutExitSpecRequest) -> ExitSpecReply:
        if not req.admin:
            raise ForbiddenUserError("only admins may change the exit spec")
        current = await self._refresh(None)
        if req.mode == "reset":
            document = builtin_spec().document
        else:
            if not req.text.strip():
                raise InvalidParametersError("the exit spec text is empty")
            upload = parse_document(req.text)
            document = overlay(current.document, upload) if req.mode == "overlay" else upload
        spec = build_spec(document)  # refused here, before anything is stored, when invalid
        revision = self.revision + 1
        now = int(time.time() * 1000)
        await self.app.db[SPECS].replace_one(
            {"_id": CURRENT},
            {
                "_id": CURRENT,
                "revision": revision,
                "document": json.dumps(spec.document),
                "mode": req.mode,
                "updated_by": req.username,
                "updated_at": now,
            },
            upsert=True,
        )
        self.spec, self.revision = spec, revision
        # A reset stores the shipped spec as a new revision (so every replica takes it), and says so.
        self.source = "builtin" if req.mode == "reset" else "uploaded"
        self.updated_by, self.updated_at = req.username, now
        log.info(
            "exit spec set",
            extra={"revision": revision, "mode": req.mode, "by": req.username, "entries": len(spec.entries)},
        )
        return self._reply()

    # ---- task exits ----------------------------------------------------------------------------------

    async def handle(self, ctx: HandlerContext, env: Envelope) -> None:
        exited = env.body
        assert isinstance(exited, TaskExited)
        # The spec in effect is looked up once a batch (an upload during the batch is seen by the next).
        if SPEC_MEMO not in ctx.memo:
            ctx.memo[SPEC_MEMO] = (await self._refresh(ctx), self.revision)
        spec, revision = ctx.memo[SPEC_MEMO]
        d = diagnose(spec, task_end(exited))
        key = diagnosis_key(exited)
        record: dict[str, Any] = {
            "_id": key,
            "job_key": exited.job_key,
            "attempt_id": exited.attempt_id,
            "task_role": exited.task_role,
            "index": exited.index,
            "task_attempt_id": exited.task_attempt_id,
            "node": exited.node,
            "exit_code": d.exit_code,
            "signal": exited.signal,
            "spec_code": d.code,
            "phrase": d.phrase,
            "failure_type": d.failure_type,
            "reaction": d.reaction,
            "matched_by": d.matched_by,
            "matched": d.matched_context,
            "explanation": d.explanation,
            "suggestion": d.suggestion,
            "spec_revision": revision,
            "finished_at": exited.finished_at,
        }
        records: dict[str, dict[str, Any]] | None = ctx.memo.get(RECORDS_MEMO)
        if records is None:
            records = ctx.memo[RECORDS_MEMO] = {}
            ctx.on_before_commit(partial(_write_diagnoses, ctx, records))
        records[key] = record  # written with the batch's others at the transaction's end
        ctx.out.event(diagnosed_event(exited, d), msg_id=f"diagnosed:{env.id}")


async def _write_diagnoses(ctx: HandlerContext, records: dict[str, dict[str, Any]]) -> None:
    """The batch's diagnoses in one final write (a task's diagnosis replaced when its exit came again),
    sent with the transaction's bookkeeping."""
    ns = ctx.namespace(DIAGNOSES)
    writes = [
        ReplaceOne({"_id": key}, record, upsert=True, namespace=ns) for key, record in sorted(records.items())
    ]
    ctx.write_at_end(FinalWrite(DIAGNOSES, writes))


def build_app() -> ServiceApp:
    app = ServiceApp("diagnosis")
    Diagnoser(app)
    return app


def main() -> None:
    build_app().run()
