"""The jobs service's metrics, read from the read model it owns: jobs by state, retries of live jobs.

The counts come from the per-state counters the list keeps (one small read), the retries from the list
entries of jobs that are not final: a job retried again and again shows up with its own series
(``job_name`` is OpenPAI's ``user~name``, the label its alert handler acts on), finished jobs drop out.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from prometheus_client.core import Metric
from pymongo.asynchronous.database import AsyncDatabase

from pai_common.contract.states import JOB_STATES
from pai_common.metrics import gauge_family, register_snapshot

log = logging.getLogger(__name__)

LIVE_STATES = ("WAITING", "RUNNING", "STOPPING")
# A bound on the per-job series: the jobs retried most are the ones to see.
MAX_RETRIED_SERIES = 1000

JOBS = ("pai_jobs", "Jobs known to the platform, by public state.", ("state",))
RETRIES = (
    "pai_job_retries",
    "Retries so far of a job that is not final (only jobs retried at least once).",
    ("job_name", "username", "virtual_cluster"),
)


def empty() -> list[Metric]:
    return [gauge_family(*JOBS, ()), gauge_family(*RETRIES, ())]


COLLECTOR = register_snapshot(empty)


async def families(db: AsyncDatabase[dict[str, Any]], counts: str, entries: str) -> list[Metric]:
    by_state = dict.fromkeys(JOB_STATES, 0)
    async for doc in db[counts].find({"_id": {"$in": [f"state:{s}" for s in JOB_STATES]}}):
        by_state[str(doc["_id"]).split(":", 1)[1]] = int(doc.get("n", 0))
    retried = (
        db[entries]
        .find(
            {"state": {"$in": list(LIVE_STATES)}, "retries": {"$gt": 0}},
            {"_id": 1, "user": 1, "vc": 1, "retries": 1},
        )
        .sort("retries", -1)
        .limit(MAX_RETRIED_SERIES)
    )
    rows = [((d["_id"], d["user"], d["vc"]), float(d["retries"])) async for d in retried]
    return [
        gauge_family(*JOBS, (((state,), float(n)) for state, n in by_state.items())),
        gauge_family(*RETRIES, rows),
    ]


async def refresh_forever(
    db: AsyncDatabase[dict[str, Any]], counts: str, entries: str, every_s: float
) -> None:
    while True:
        try:
            COLLECTOR.publish(await families(db, counts, entries))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("job gauges not refreshed", extra={"error": repr(exc)})
        await asyncio.sleep(every_s)
