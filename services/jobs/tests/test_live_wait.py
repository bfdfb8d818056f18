"""A waiting job's detail shows the scheduler's current reason and queue place (not the place when the last
``scheduling.pending`` was published), and no place when the scheduler does not answer. Pure rules, then the
service against a real NATS server (JetStream) and a real MongoDB-wire server, with a stand-in answering
``scheduler.pending`` on the bus as the scheduler would."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from pai_common.bus import Bus
from pai_common.contract.events import SchedulingPending
from pai_common.contract.rpc import (
    GetJobRequest,
    JobDetailReply,
    JobPendingReply,
    JobPendingRequest,
    SubmitJobReply,
)
from pai_common.embedded import ServerProcess
from pai_jobs import live_wait

from .test_jobs_service import client, eventually, jobs_app, nats_srv, submit  # noqa: F401 (fixtures)


def _detail(state: str = "WAITING", attempt: int = 0, reason: str | None = "cause") -> dict[str, Any]:
    status: dict[str, Any] = {"state": state, "attemptId": attempt}
    if reason is not None:
        status["pendingReason"], status["pendingPosition"] = reason, None
    return {"jobStatus": status}


def test_the_scheduler_is_asked_only_for_its_own_reason_about_the_current_attempt() -> None:
    doc = {"pending": {"attempt_id": 0, "reason": "cause", "position": 9}}
    assert live_wait.asks_scheduler(doc, _detail())
    assert not live_wait.asks_scheduler(doc, _detail(state="RUNNING"))
    assert not live_wait.asks_scheduler(doc, _detail(attempt=1))
    assert not live_wait.asks_scheduler(doc, _detail(reason="waiting for its dependency: a~b to succeed"))
    assert not live_wait.asks_scheduler({}, _detail())


def test_only_an_answer_about_the_shown_attempt_replaces_the_stored_cause() -> None:
    detail = _detail()
    live_wait.apply(detail, JobPendingReply(attempt_id=0, reason="cause now", position=3))
    assert (detail["jobStatus"]["pendingReason"], detail["jobStatus"]["pendingPosition"]) == ("cause now", 3)
    for answer in (None, JobPendingReply(), JobPendingReply(attempt_id=1, reason="other", position=1)):
        detail = _detail()
        live_wait.apply(detail, answer)
        assert (detail["jobStatus"]["pendingReason"], detail["jobStatus"]["pendingPosition"]) == (
            "cause",
            None,
        )


async def test_the_detail_shows_the_current_place_or_none(
    nats_srv: ServerProcess,  # noqa: F811
    mongo_server: ServerProcess,
    client: Bus,  # noqa: F811
    tmp_path: Path,
) -> None:
    app = jobs_app(nats_srv, mongo_server, f"jobs{uuid.uuid4().hex[:8]}", tmp_path)
    await app.start()
    scheduler: Bus | None = None
    try:
        key = (await client.request(submit("queued"), SubmitJobReply)).job_key
        cause = "VC default: 8 of 8 guaranteed gpu leaves in use; needs 1 on one node"
        await client.publish_event(SchedulingPending(job_key=key, attempt_id=0, reason=cause, position=40))

        async def status() -> dict[str, Any]:
            return (await client.request(GetJobRequest(job_key=key), JobDetailReply)).detail["jobStatus"]

        async def stored() -> None:
            now = await status()
            # No scheduler answers: the cause as published, and no place (40 was the place back then).
            assert (now["state"], now.get("pendingReason"), now.get("pendingPosition")) == (
                "WAITING",
                cause,
                None,
            )

        await eventually(stored)

        places = {key: 12}

        async def answer(req: JobPendingRequest) -> JobPendingReply:
            if req.job_key not in places:
                return JobPendingReply()
            return JobPendingReply(
                attempt_id=0, reason=cause.replace("8 of 8", "7 of 8"), position=places[key]
            )

        scheduler = await Bus.connect(nats_srv.url, "scheduler")
        await scheduler.serve_rpc({JobPendingRequest: answer})

        async def live() -> None:
            # Asked again once the pause after the scheduler's silence (LIVE_WAIT_PAUSE_S) is over.
            now = await status()
            assert (now["pendingReason"], now["pendingPosition"]) == (cause.replace("8 of 8", "7 of 8"), 12)

        await eventually(live, timeout=15)
        places[key] = 11
        assert (await status())["pendingPosition"] == 11
        # Placed since, while the read model has not heard yet: no place is claimed.
        places.clear()
        now = await status()
        assert (now["pendingReason"], now["pendingPosition"]) == (cause, None)
    finally:
        if scheduler is not None:
            await scheduler.close()
        await app.stop()
