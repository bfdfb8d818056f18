"""The jobs shell: submission and queries over RPC, the read model kept current from framework events."""

from __future__ import annotations

import re
import time
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.errors import DuplicateKeyError

from pai_common.consumer import HandlerContext
from pai_common.contract.events import (
    FrameworkChanged,
    JobSubmitted,
    SchedulingDowngraded,
    SchedulingPending,
)
from pai_common.contract.rpc import (
    GetJobRequest,
    JobDetailReply,
    JobListReply,
    ListJobsRequest,
    SubmitJobReply,
    SubmitJobRequest,
)
from pai_common.contract.states import public_state
from pai_common.envelope import Envelope
from pai_common.errors import ConflictJobError, ForbiddenUserError, InvalidParametersError, NoJobError
from pai_common.service import ServiceApp
from pai_jobs.protocol import parse_job
from pai_jobs.views import job_detail, job_summary

JOBS = "jobs"

# OpenPAI's order fields, mapped to where the read model keeps them.
ORDER_FIELDS = {
    "jobName": "name",
    "submissionTime": "submitted_at",
    "username": "user",
    "vc": "vc",
    "retries": "snapshot.retries",
    "totalTaskNumber": "total_tasks",
    "totalGpuNumber": "total_gpus",
    "state": "state",
    "completionTime": "snapshot.completed_at",
    "jobPriority": "spec.priority",
}


def now_ms() -> int:
    return int(time.time() * 1000)


class JobsService:
    def __init__(self, app: ServiceApp) -> None:
        self.app = app
        app.rpc({SubmitJobRequest: self.submit, GetJobRequest: self.get, ListJobsRequest: self.list})
        app.on_event(FrameworkChanged)(self.on_framework_changed)
        app.on_event(SchedulingPending)(self.on_pending)
        app.on_event(SchedulingDowngraded)(self.on_downgraded)
        app.on_startup(self._indexes)

    async def _indexes(self, app: ServiceApp) -> None:
        jobs = app.db[JOBS]
        await jobs.create_index([("submitted_at", DESCENDING)])
        await jobs.create_index([("user", ASCENDING), ("submitted_at", DESCENDING)])
        await jobs.create_index([("state", ASCENDING)])

    async def submit(self, req: SubmitJobRequest) -> SubmitJobReply:
        parsed = parse_job(req.protocol_yaml, req.username, now_ms())
        spec = parsed.spec
        if not req.admin and spec.virtual_cluster not in req.virtual_clusters:
            raise ForbiddenUserError(
                f"User {req.username} is not allowed to do operation in {spec.virtual_cluster}"
            )
        doc = {
            "_id": spec.job_key,
            "name": spec.name,
            "user": spec.user,
            "vc": spec.virtual_cluster,
            "state": "WAITING",
            "submitted_at": spec.submitted_at,
            "total_tasks": sum(r.instances for r in spec.task_roles),
            "total_gpus": sum(r.instances * r.gpu for r in spec.task_roles),
            "spec": spec.model_dump(mode="json"),
            "config": parsed.masked,
            "snapshot": None,
            "snapshot_version": 0,
            "tags": [],
            "execution_type": "START",
        }
        try:
            async with self.app.transaction() as tx:
                await tx.db[JOBS].insert_one(doc, session=tx.session)
                tx.out.event(JobSubmitted(spec=spec), msg_id=f"submitted:{spec.job_key}")
        except DuplicateKeyError:
            # Names are never reused, even after the first job finished (as OpenPAI does).
            raise ConflictJobError(f"Job {spec.job_key} already exists.") from None
        return SubmitJobReply(job_key=spec.job_key)

    async def get(self, req: GetJobRequest) -> JobDetailReply:
        doc = await self.app.db[JOBS].find_one({"_id": req.job_key})
        if doc is None:
            raise NoJobError(f"Job {req.job_key} is not found.")
        return JobDetailReply(detail=job_detail(doc))

    async def list(self, req: ListJobsRequest) -> JobListReply:
        query: dict[str, Any] = {}
        if req.usernames:
            query["user"] = {"$in": req.usernames}
        if req.virtual_cluster:
            query["vc"] = req.virtual_cluster
        if req.states:
            query["state"] = {"$in": req.states}
        if req.keyword:
            pattern = re.escape(req.keyword)
            query["$or"] = [{field: {"$regex": pattern}} for field in ("name", "user", "vc")]
        field = ORDER_FIELDS.get(req.order_field)
        if field is None:
            raise InvalidParametersError(
                f"order field {req.order_field!r} is not one of {sorted(ORDER_FIELDS)}"
            )
        direction = ASCENDING if req.order == "ASC" else DESCENDING
        jobs = self.app.db[JOBS]
        total = await jobs.count_documents(query)
        cursor = (
            jobs.find(query).sort([(field, direction), ("_id", direction)]).skip(req.offset).limit(req.limit)
        )
        return JobListReply(jobs=[job_summary(doc) async for doc in cursor], total=total)

    async def on_framework_changed(self, ctx: HandlerContext, env: Envelope) -> None:
        assert isinstance(env.body, FrameworkChanged)
        snap = env.body.snapshot
        # Only a newer version replaces what is stored: late and duplicated snapshots change nothing.
        await ctx.db[JOBS].update_one(
            {"_id": snap.job_key, "snapshot_version": {"$lt": snap.version}},
            {
                "$set": {
                    "snapshot": snap.model_dump(mode="json"),
                    "snapshot_version": snap.version,
                    "state": public_state(snap.state, snap.exit_code),
                }
            },
            session=ctx.session,
        )

    async def on_pending(self, ctx: HandlerContext, env: Envelope) -> None:
        assert isinstance(env.body, SchedulingPending)
        p = env.body
        # A reason about an earlier attempt never replaces one about a later attempt.
        await ctx.db[JOBS].update_one(
            {
                "_id": p.job_key,
                "$or": [{"pending": None}, {"pending.attempt_id": {"$lte": p.attempt_id}}],
            },
            {"$set": {"pending": {"attempt_id": p.attempt_id, "reason": p.reason, "position": p.position}}},
            session=ctx.session,
        )

    async def on_downgraded(self, ctx: HandlerContext, env: Envelope) -> None:
        assert isinstance(env.body, SchedulingDowngraded)
        d = env.body
        preemptor = f"{d.preemptor.job_key}#{d.preemptor.attempt_id}" if d.preemptor else None
        await ctx.db[JOBS].update_one(
            {"_id": d.job_key},
            {"$set": {"downgraded": {"attempt_id": d.attempt_id, "preemptor": preemptor}}},
            session=ctx.session,
        )


def build_app() -> ServiceApp:
    app = ServiceApp("jobs")
    JobsService(app)
    return app


def main() -> None:
    build_app().run()
