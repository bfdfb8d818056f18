"""The monitoring shell: follows job and node events and exposes them as Prometheus gauges.

The gauges are read back from the service's own database, so they stay right across restarts and
whatever the order in which events were handled.
"""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import Gauge

from pai_common.consumer import HandlerContext
from pai_common.contract.events import (
    FrameworkChanged,
    JobCompleted,
    JobSubmitted,
    NodeHealthChanged,
    NodeRegistered,
)
from pai_common.contract.states import JOB_STATES, public_state
from pai_common.envelope import Envelope
from pai_common.service import ServiceApp
from pai_common.settings import Settings

log = logging.getLogger(__name__)

JOBS = "jobs"
NODES = "nodes"

JOBS_BY_STATE = Gauge("pai_jobs", "Jobs known to the platform, by public state.", ["state"])
NODES_GAUGE = Gauge("pai_nodes", "Nodes whose runtime agent registered.")
BAD_NODES_GAUGE = Gauge(
    "pai_nodes_bad", "Registered nodes that are bad (no heartbeat): no new work goes there."
)
GPUS_GAUGE = Gauge("pai_gpus", "GPUs declared by the registered nodes.", ["simulated"])
BAD_GPUS_GAUGE = Gauge(
    "pai_gpus_bad", "GPUs reported unhealthy (by their agent or the scheduler): no new work goes there."
)


async def handle(ctx: HandlerContext, env: Envelope) -> None:
    body = env.body
    jobs = ctx.db[JOBS]
    if isinstance(body, JobSubmitted):
        await jobs.update_one(
            {"_id": body.spec.job_key},
            {"$setOnInsert": {"state": "WAITING", "version": 0}},
            upsert=True,
            session=ctx.session,
        )
    elif isinstance(body, FrameworkChanged):
        snap = body.snapshot
        await jobs.update_one(
            {"_id": snap.job_key, "version": {"$lt": snap.version}},
            {"$set": {"state": public_state(snap.state, snap.exit_code), "version": snap.version}},
            session=ctx.session,
        )
    elif isinstance(body, JobCompleted):
        await jobs.update_one(
            {"_id": body.job_key}, {"$set": {"state": body.state, "final": True}}, session=ctx.session
        )
    elif isinstance(body, NodeRegistered):
        await ctx.db[NODES].replace_one(
            {"_id": body.node},
            {
                "_id": body.node,
                "gpus": len(body.gpus),
                "simulated": body.simulated,
                "healthy": True,
                "bad_gpus": sorted(g.index for g in body.gpus if not g.healthy),
            },
            upsert=True,
            session=ctx.session,
        )
    elif isinstance(body, NodeHealthChanged):
        # An event about some GPUs of a node says nothing about the node as a whole, and the other way round.
        change = (
            {"bad_gpus": sorted(body.bad_gpus)}
            if body.bad_gpus is not None
            else {"healthy": body.healthy, "reason": body.reason}
        )
        await ctx.db[NODES].update_one({"_id": body.node}, {"$set": change}, session=ctx.session)


async def refresh_gauges(app: ServiceApp) -> None:
    counts = {state: 0 for state in JOB_STATES}
    async for row in await app.db[JOBS].aggregate([{"$group": {"_id": "$state", "n": {"$sum": 1}}}]):
        counts[str(row["_id"])] = int(row["n"])
    for state, n in counts.items():
        JOBS_BY_STATE.labels(state).set(n)
    nodes = [n async for n in app.db[NODES].find({})]
    NODES_GAUGE.set(len(nodes))
    BAD_NODES_GAUGE.set(sum(1 for n in nodes if not n.get("healthy", True)))
    BAD_GPUS_GAUGE.set(sum(len(n.get("bad_gpus", [])) for n in nodes))
    for simulated in (True, False):
        GPUS_GAUGE.labels(str(simulated).lower()).set(
            sum(n["gpus"] for n in nodes if n["simulated"] == simulated)
        )


def build_app(settings: Settings | None = None) -> ServiceApp:
    app = ServiceApp("monitoring", settings)
    app.on_event(JobSubmitted, FrameworkChanged, JobCompleted, NodeRegistered, NodeHealthChanged)(handle)

    async def refresher() -> None:
        while True:
            try:
                await refresh_gauges(app)
            except Exception as exc:
                log.warning("gauge refresh failed", extra={"error": repr(exc)})
            await asyncio.sleep(1.0)

    app.background(refresher)
    return app


def main() -> None:
    build_app().run()
