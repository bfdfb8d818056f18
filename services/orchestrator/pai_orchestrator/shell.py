"""The orchestrator's shell: loads a framework, applies one event through the core, saves, emits."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from pai_common.consumer import HandlerContext
from pai_common.contract.events import (
    JobSubmitted,
    SchedulingAllocated,
    SchedulingLost,
    SchedulingPreempting,
    SchedulingRejected,
    TaskDiagnosed,
    TaskRunning,
)
from pai_common.envelope import Envelope
from pai_common.service import ServiceApp
from pai_orchestrator import core

log = logging.getLogger(__name__)

FRAMEWORKS = "frameworks"
HISTORY = "transitions"


def now_ms() -> int:
    return int(time.time() * 1000)


async def save(
    ctx: HandlerContext, env: Envelope, transition: core.Transition, previous: int | None, now: int
) -> None:
    """Store the framework a transition produced (guarded by its version) and stage what it causes."""
    fw = transition.framework
    assert fw is not None
    frameworks = ctx.db[FRAMEWORKS]
    new_doc: dict[str, Any] = {"_id": fw.job_key, "version": fw.version, "fw": fw.model_dump(mode="json")}
    if previous is None:
        await frameworks.insert_one(new_doc, session=ctx.session)
    else:
        result = await frameworks.replace_one(
            {"_id": fw.job_key, "version": previous}, new_doc, session=ctx.session
        )
        if result.matched_count != 1:
            raise RuntimeError(f"framework {fw.job_key} changed concurrently; retrying")
    await ctx.db[HISTORY].insert_one(
        {
            "job_key": fw.job_key,
            "version": fw.version,
            "attempt_id": fw.attempt_id,
            "state": fw.state,
            "reason": transition.reason,
            "event": env.type,
            "event_id": env.id,
            "at": now,
        },
        session=ctx.session,
    )
    for event in transition.events:
        ctx.out.event(event)
    for send in transition.commands:
        ctx.out.command(send.command, send.target)
    log.info(
        "framework transition", extra={"job": fw.job_key, "state": fw.state, "reason": transition.reason}
    )


async def stop_by_platform(
    ctx: HandlerContext, env: Envelope, job_key: str, step: Callable[..., core.Transition]
) -> None:
    """Load one job's framework, apply a platform-caused stop to it, and save what changed."""
    now = now_ms()
    doc = await ctx.db[FRAMEWORKS].find_one({"_id": job_key}, session=ctx.session)
    if doc is None:
        return
    fw = core.Framework.model_validate(doc["fw"])
    transition = step(fw, now=now)
    if transition.framework is not None:
        await save(ctx, env, transition, fw.version, now)


async def handle_preempting(ctx: HandlerContext, env: Envelope) -> None:
    body = env.body
    assert isinstance(body, SchedulingPreempting)
    for victim in body.victims:
        await stop_by_platform(
            ctx,
            env,
            victim.job_key,
            partial(core.on_preempted, attempt_id=victim.attempt_id, preemptor=body.job_key),
        )


async def handle_lost(ctx: HandlerContext, env: Envelope) -> None:
    body = env.body
    assert isinstance(body, SchedulingLost)
    await stop_by_platform(
        ctx, env, body.job_key, partial(core.on_cells_lost, attempt_id=body.attempt_id, reason=body.reason)
    )


async def handle(ctx: HandlerContext, env: Envelope) -> None:
    body = env.body
    now = now_ms()
    frameworks = ctx.db[FRAMEWORKS]
    previous: int | None = None
    if isinstance(body, JobSubmitted):
        if await frameworks.find_one({"_id": body.spec.job_key}, {"_id": 1}, session=ctx.session):
            return  # submitted twice under different ids: the first one counts
        transition = core.on_submitted(body.spec, now)
    else:
        if not isinstance(body, SchedulingAllocated | SchedulingRejected | TaskRunning | TaskDiagnosed):
            raise TypeError(f"orchestrator has no transition for {env.type}")
        doc = await frameworks.find_one({"_id": body.job_key}, session=ctx.session)
        if doc is None:
            log.warning("event for an unknown job ignored", extra={"type": env.type})
            return
        fw = core.Framework.model_validate(doc["fw"])
        previous = fw.version
        transition = _apply(fw, body, now)
    if transition.framework is None:
        return
    await save(ctx, env, transition, previous, now)


def _apply(
    fw: core.Framework,
    body: SchedulingAllocated | SchedulingRejected | TaskRunning | TaskDiagnosed,
    now: int,
) -> core.Transition:
    if isinstance(body, SchedulingAllocated):
        return core.on_allocated(fw, body, now)
    if isinstance(body, SchedulingRejected):
        return core.on_rejected(fw, body, now)
    if isinstance(body, TaskRunning):
        return core.on_task_running(fw, body, now)
    return core.on_task_diagnosed(fw, body, now)


def build_app() -> ServiceApp:
    app = ServiceApp("orchestrator")
    app.on_event(JobSubmitted, SchedulingAllocated, SchedulingRejected, TaskRunning, TaskDiagnosed)(handle)
    app.on_event(SchedulingPreempting)(handle_preempting)
    app.on_event(SchedulingLost)(handle_lost)

    async def indexes(app: ServiceApp) -> None:
        await app.db[HISTORY].create_index([("job_key", 1), ("version", 1)])

    app.on_startup(indexes)
    return app


def main() -> None:
    build_app().run()
