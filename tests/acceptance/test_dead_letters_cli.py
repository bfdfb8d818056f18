"""`pai admin dlq` against `pai up`: a message the platform's consumers cannot handle is kept with its error,
listed and shown by the CLI, and its replay refused with the reason; an ordinary user sees none of it."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

from pai_common.bus import Bus
from pai_common.contract.events import JobAttemptCompleted
from pai_common.envelope import encode
from tests.acceptance.harness import JOB_GUARD_S, RunningPlatform


def _publish_malformed(pai: RunningPlatform, marker: str) -> None:
    """As the platform's operator: a job.attempt.completed whose body the contract refuses."""
    url = (pai.data_dir / "bus" / "operator.url").read_text().strip()

    async def publish() -> None:
        bus = await Bus.connect(url, "operator")
        try:
            _, headers, _ = encode(JobAttemptCompleted(job_key="x~y", attempt_id=0, exit_code=0), "operator")
            headers["ce-id"] = headers["Nats-Msg-Id"] = marker
            await bus.publish_raw("pai.evt.job.attempt.completed", headers, b'{"job_key": 5}')
        finally:
            await bus.close()

    asyncio.run(publish())


def test_an_admin_lists_shows_and_replays_dead_letters_with_the_cli(pai: RunningPlatform) -> None:
    marker = f"dlq-cli-{uuid.uuid4().hex}"
    _publish_malformed(pai, marker)
    deadline = time.monotonic() + JOB_GUARD_S
    mine: list[dict[str, object]] = []
    while not mine:
        assert time.monotonic() < deadline, "the malformed message was never dead-lettered"
        listed = pai.cli("admin", "dlq", "list", "-o", "json", "--limit", "1000", check=True)
        mine = [d for d in json.loads(listed.stdout)["data"] if d["id"] == marker]
        time.sleep(0.5)
    letter = mine[0]
    assert str(letter["error"]).startswith("malformed: invalid job.attempt.completed body")
    table = pai.cli("admin", "dlq", "list", check=True).stdout
    assert str(letter["seq"]) in table and "malformed" in table
    shown = json.loads(pai.cli("admin", "dlq", "show", str(letter["seq"]), check=True).stdout)
    assert shown["body"] == {"job_key": 5} and shown["headers"]["ce-id"] == marker
    refused = pai.cli("admin", "dlq", "replay", str(letter["seq"]))
    assert refused.returncode == 1
    assert "DeadLetterReplayError" in refused.stderr and "cannot be replayed" in refused.stderr
    # Still there, for an admin to look at; ordinary users get nothing.
    assert pai.cli("admin", "dlq", "show", str(letter["seq"]), check=True).returncode == 0
    with pai.client() as admin:
        user = f"dlq{uuid.uuid4().hex[:6]}"
        assert (
            admin.post("/api/v2/users", json={"username": user, "password": f"{user}-pw-1"}).status_code
            == 201
        )
    token = pai.login(user, f"{user}-pw-1")
    denied = pai.cli("admin", "dlq", "list", token=token)
    assert denied.returncode == 1 and "ForbiddenUserError" in denied.stderr
