"""Dead letters through the gateway's routes, and the audit log they and other services' changes feed:
a real auth service, a consumer that fails, the gateway's HTTP app, a real NATS and MongoDB-wire server."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from pai_auth.shell import AuthService, AuthSettings
from pai_common.bus import Bus
from pai_common.consumer import HandlerContext
from pai_common.contract.base import event_subject
from pai_common.contract.events import (
    JobAttemptCompleted,
    JobStopRequested,
    JobSubmitted,
    JobTagsChanged,
    StorageChanged,
)
from pai_common.contract.types import JobSpec, TaskRoleSpec
from pai_common.embedded import ServerProcess, start_nats
from pai_common.envelope import H_MSG_ID, Envelope, encode
from pai_common.service import ServiceApp
from pai_common.settings import Settings
from pai_gateway.http_app import build_http_app
from pai_gateway.settings import GatewaySettings

PASSWORD = "dlq-admin-pw"


@dataclass
class World:
    http: httpx.AsyncClient
    admin: dict[str, str]
    user: dict[str, str]
    victim: ServiceApp
    bus: Bus
    broken: list[bool]


@pytest.fixture(scope="module")
def nats_srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_nats(tmp_path_factory.mktemp("dlq-nats"))
    yield server
    server.stop()


async def _token(http: httpx.AsyncClient, user: str, password: str) -> dict[str, str]:
    r = await http.post("/api/v2/authn/basic/login", json={"username": user, "password": password})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


@pytest.fixture(scope="module")
async def world(
    nats_srv: ServerProcess, mongo_server: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[World]:
    settings = AuthSettings(
        nats_url=nats_srv.url,
        mongo_url=mongo_server.url,
        data_dir=tmp_path_factory.mktemp("dlq-data"),
        admin_password=PASSWORD,
        argon2_time_cost=1,
        argon2_memory_kib=8 * 1024,
        argon2_parallelism=1,
    )
    auth = ServiceApp("auth", settings)
    AuthService(auth, settings)
    auth.name = f"auth_{uuid.uuid4().hex[:8]}"
    broken = [True]
    victim = ServiceApp(
        f"victim{uuid.uuid4().hex[:6]}",
        Settings(nats_url=nats_srv.url, mongo_url=mongo_server.url, nak_base_delay_s=0.05, max_deliver=2),
    )

    @victim.on_event(JobAttemptCompleted)
    async def handle(ctx: HandlerContext, env: Envelope) -> None:
        if broken[0]:
            raise RuntimeError("quota exceeded")
        await ctx.db.done.insert_one({"_id": env.id}, session=ctx.session)

    await auth.start()
    await victim.start()
    bus = await Bus.connect(nats_srv.url, "gateway")
    app = build_http_app(lambda: bus, GatewaySettings(nats_url=nats_srv.url))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as http:
        admin = await _token(http, "admin", PASSWORD)
        created = await http.post(
            "/api/v2/users", json={"username": "carol", "password": "carol-password"}, headers=admin
        )
        assert created.status_code == 201, created.text
        user = await _token(http, "carol", "carol-password")
        yield World(http, admin, user, victim, bus, broken)
    await bus.close()
    await victim.stop()
    await auth.stop()


async def _audit(world: World, action: str, count: int = 1) -> list[dict[str, Any]]:
    """The audit entries of ``action``, once auth's consumer appended ``count`` of them (hang guard only)."""
    for _ in range(600):
        r = await world.http.get("/api/v2/audit-log", params={"limit": 1000}, headers=world.admin)
        assert r.status_code == 200, r.text
        found = [e for e in r.json()["data"] if e["action"] == action]
        if len(found) >= count:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {count} audit entries {action}")


async def test_dead_letters_are_for_admins_only(world: World) -> None:
    for path, method in (
        ("/api/v2/dead-letters", "GET"),
        ("/api/v2/dead-letters/1", "GET"),
        ("/api/v2/dead-letters/1/replay", "POST"),
    ):
        anonymous = await world.http.request(method, path)
        assert anonymous.status_code == 401, (path, anonymous.text)
        user = await world.http.request(method, path, headers=world.user)
        assert (user.status_code, user.json()["code"]) == (403, "ForbiddenUserError"), path
    bad = await world.http.get("/api/v2/dead-letters", params={"consumer": "../x"}, headers=world.admin)
    assert (bad.status_code, bad.json()["code"]) == (400, "InvalidParametersError")
    missing = await world.http.get("/api/v2/dead-letters/999999", headers=world.admin)
    assert (missing.status_code, missing.json()["code"]) == (404, "NoDeadLetterError")


async def test_an_admin_lists_inspects_and_replays_a_dead_letter_and_the_audit_log_says_so(
    world: World,
) -> None:
    await world.bus.publish_event(JobAttemptCompleted(job_key="carol~train", attempt_id=0, exit_code=0))
    letters: list[dict[str, Any]] = []
    for _ in range(600):
        r = await world.http.get(
            "/api/v2/dead-letters", params={"service": world.victim.name}, headers=world.admin
        )
        assert r.status_code == 200, r.text
        letters = r.json()["data"]
        if letters:
            break
        await asyncio.sleep(0.05)
    [letter] = letters
    assert letter["consumer"] == world.victim.name and letter["type"] == "job.attempt.completed"
    assert "quota exceeded" in letter["error"] and letter["subject"] == "carol~train"
    detail = await world.http.get(f"/api/v2/dead-letters/{letter['seq']}", headers=world.admin)
    assert detail.status_code == 200 and detail.json()["body"]["job_key"] == "carol~train"

    again = await world.http.post(f"/api/v2/dead-letters/{letter['seq']}/replay", headers=world.admin)
    assert (again.status_code, again.json()["code"]) == (409, "DeadLetterReplayError")
    assert "quota exceeded" in again.json()["message"]

    world.broken[0] = False
    done = await world.http.post(f"/api/v2/dead-letters/{letter['seq']}/replay", headers=world.admin)
    assert done.status_code == 200, done.text
    assert done.json()["outcome"] == "replayed" and done.json()["audited"] is True
    assert await world.victim.db.done.count_documents({"_id": letter["id"]}) == 1
    gone = await world.http.get(f"/api/v2/dead-letters/{letter['seq']}", headers=world.admin)
    assert gone.status_code == 404

    [entry] = await _audit(world, "deadletter.replayed")
    assert entry["actor"] == "admin" and entry["target"] == world.victim.name
    assert entry["details"]["seq"] == letter["seq"] and "quota exceeded" in entry["details"]["error"]


async def test_job_and_storage_changes_reach_the_audit_log_once_each(world: World) -> None:
    now = int(time.time() * 1000)
    spec = JobSpec(
        job_key="carol~etl",
        user="carol",
        name="etl",
        task_roles=[TaskRoleSpec(name="main", instances=1, gpu=0, cpu=1, memory_mb=512, entrypoint="true")],
        submitted_at=now,
    )
    facts = [
        JobSubmitted(spec=spec),
        JobTagsChanged(job_key="carol~etl", tag="nightly", by="carol", at=now),
        JobTagsChanged(job_key="carol~etl", tag="nightly", removed=True, by="admin", at=now),
        JobStopRequested(job_key="carol~etl", requested_by="admin", requested_at=now),
        StorageChanged(name="team-nfs", change="created", storage_type="nfs", by="admin", at=now),
        StorageChanged(name="team-nfs", change="deleted", by="admin", at=now),
    ]
    for i, fact in enumerate(facts):
        # Each delivered twice (a redelivery JetStream's duplicate window does not catch): one entry each.
        _, headers, payload = encode(fact, "test", f"audit-fact-{i}")
        await world.bus.publish_raw(event_subject(fact.TYPE), headers, payload)
        await world.bus.publish_raw(event_subject(fact.TYPE), {**headers, H_MSG_ID: f"again-{i}"}, payload)
    expected = {
        "job.submitted": ("carol", "carol~etl", {"virtualCluster": "default"}),
        "job.tag.added": ("carol", "carol~etl", {"tag": "nightly"}),
        "job.tag.removed": ("admin", "carol~etl", {"tag": "nightly"}),
        "job.stop": ("admin", "carol~etl", {}),
        "storage.created": ("admin", "team-nfs", {"type": "nfs"}),
        "storage.deleted": ("admin", "team-nfs", {}),
    }
    for action, (actor, target, details) in expected.items():
        entries = await _audit(world, action)
        assert [(e["actor"], e["target"], e["details"]) for e in entries] == [(actor, target, details)]


async def test_the_audit_log_is_append_only_for_admins_too(world: World) -> None:
    before = (await world.http.get("/api/v2/audit-log", headers=world.admin)).json()["totalCount"]
    assert before > 0
    for method in ("DELETE", "PUT", "POST", "PATCH"):
        r = await world.http.request(method, "/api/v2/audit-log", headers=world.admin, json={"data": []})
        assert r.status_code == 405, (method, r.text)
    after = (await world.http.get("/api/v2/audit-log", headers=world.admin)).json()["totalCount"]
    assert after >= before
    refused = await world.http.get("/api/v2/audit-log", headers=world.user)
    assert refused.status_code == 403
