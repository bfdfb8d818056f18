"""The scheduler's shell: the allocator's state lives in one document, changed in one transaction per event.

Allocation is single-writer by design: one consumer applies events in stream order, so the state read at
the start of a handler is the state every earlier decision left.
"""

from __future__ import annotations

import logging

from pai_common.consumer import HandlerContext
from pai_common.contract.events import (
    JobAttemptCompleted,
    NodeRegistered,
    SchedulingAllocated,
    SchedulingPending,
    SchedulingRejected,
    SchedulingReleased,
    SchedulingRequested,
)
from pai_common.envelope import Envelope
from pai_common.service import ServiceApp
from pai_scheduler.core import Allocated, Decision, FirstFitScheduler, GangRequest, Queued, Rejected, Released

log = logging.getLogger(__name__)

STATE = "allocator"
NODES = "nodes"
STATE_ID = "cluster"


async def load(ctx: HandlerContext) -> tuple[FirstFitScheduler, int]:
    doc = await ctx.db[STATE].find_one({"_id": STATE_ID}, session=ctx.session)
    if doc is None:
        return FirstFitScheduler(), 0
    return FirstFitScheduler.restore(doc["snapshot"]), int(doc["version"])


async def save(ctx: HandlerContext, sched: FirstFitScheduler, version: int) -> None:
    result = await ctx.db[STATE].update_one(
        {"_id": STATE_ID, "version": version},
        {"$set": {"snapshot": sched.snapshot(), "version": version + 1}},
        upsert=version == 0,
        session=ctx.session,
    )
    if version and result.matched_count != 1:
        raise RuntimeError("allocator state changed concurrently; retrying")


async def handle(ctx: HandlerContext, env: Envelope) -> None:
    body = env.body
    sched, version = await load(ctx)
    decisions: list[Decision]
    if isinstance(body, NodeRegistered):
        await ctx.db[NODES].replace_one(
            {"_id": body.node},
            {"_id": body.node, **body.model_dump(mode="json")},
            upsert=True,
            session=ctx.session,
        )
        decisions = sched.add_node(body.node, len(body.gpus))
    elif isinstance(body, SchedulingRequested):
        request = GangRequest(body.job_key, body.attempt_id, body.priority, tuple(body.pods))
        decisions = [sched.submit(request)]
    elif isinstance(body, JobAttemptCompleted):
        decisions = sched.release(body.job_key, body.attempt_id)
    else:
        raise TypeError(f"scheduler has no handler for {type(body).__name__}")
    await save(ctx, sched, version)
    host_ips = await _host_ips(ctx)
    for decision in decisions:
        _emit(ctx, decision, host_ips)


async def _host_ips(ctx: HandlerContext) -> dict[str, str]:
    return {
        d["_id"]: d.get("host_ip", "")
        async for d in ctx.db[NODES].find({}, {"host_ip": 1}, session=ctx.session)
    }


def _emit(ctx: HandlerContext, decision: Decision, host_ips: dict[str, str]) -> None:
    if isinstance(decision, Allocated):
        req = decision.request
        placements = [p.model_copy(update={"host_ip": host_ips.get(p.node, "")}) for p in decision.placements]
        ctx.out.event(
            SchedulingAllocated(job_key=req.job_key, attempt_id=req.attempt_id, placements=placements)
        )
        log.info("gang allocated", extra={"job": req.job_key, "attempt": req.attempt_id})
    elif isinstance(decision, Rejected):
        req = decision.request
        ctx.out.event(
            SchedulingRejected(job_key=req.job_key, attempt_id=req.attempt_id, reason=decision.reason)
        )
        log.info("gang rejected", extra={"job": req.job_key, "reason": decision.reason})
    elif isinstance(decision, Released):
        ctx.out.event(SchedulingReleased(job_key=decision.job_key, attempt_id=decision.attempt_id))
    elif isinstance(decision, Queued):
        req = decision.request
        wanted = sum(p.gpu for p in req.pods)
        reason = f"waiting for {wanted} GPU(s) for {len(req.pods)} task(s), placed all at once"
        ctx.out.event(SchedulingPending(job_key=req.job_key, attempt_id=req.attempt_id, reason=reason))
        log.info("gang queued", extra={"job": req.job_key})


def build_app() -> ServiceApp:
    app = ServiceApp("scheduler")
    app.on_event(NodeRegistered, SchedulingRequested, JobAttemptCompleted)(handle)
    return app


def main() -> None:
    build_app().run()
