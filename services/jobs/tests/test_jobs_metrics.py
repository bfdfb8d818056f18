"""The jobs service's gauges, read from its read model on a real MongoDB-wire server."""

from __future__ import annotations

import uuid
from typing import Any

from pymongo import AsyncMongoClient

from pai_common.embedded import ServerProcess
from pai_jobs import metrics


def samples(families: list[Any], name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(s.labels.items())): s.value for f in families if f.name == name for s in f.samples}


async def test_jobs_by_state_and_retries_of_live_jobs(mongo_server: ServerProcess) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_server.url)
    db = client[f"jobs{uuid.uuid4().hex[:8]}"]
    try:
        await db.counts.insert_many(
            [
                {"_id": "state:RUNNING", "n": 2},
                {"_id": "state:SUCCEEDED", "n": 5},
                {"_id": "user:alice", "n": 7},  # other counters are not states
            ]
        )
        await db.entries.insert_many(
            [
                {"_id": "alice~flaky", "user": "alice", "vc": "default", "state": "RUNNING", "retries": 3},
                {"_id": "alice~fine", "user": "alice", "vc": "default", "state": "RUNNING", "retries": 0},
                {"_id": "bob~done", "user": "bob", "vc": "prod", "state": "FAILED", "retries": 4},
                {"_id": "bob~waits", "user": "bob", "vc": "prod", "state": "WAITING", "retries": 1},
            ]
        )
        families = await metrics.families(db, "counts", "entries")
    finally:
        await client.close()
    states = samples(families, "pai_jobs")
    assert states[(("state", "RUNNING"),)] == 2 and states[(("state", "SUCCEEDED"),)] == 5
    assert states[(("state", "STOPPED"),)] == 0  # every state has a series
    assert len(states) == 7
    retried = samples(families, "pai_job_retries")
    assert retried == {
        (("job_name", "alice~flaky"), ("username", "alice"), ("virtual_cluster", "default")): 3,
        (("job_name", "bob~waits"), ("username", "bob"), ("virtual_cluster", "prod")): 1,
    }
