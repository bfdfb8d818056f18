"""The alert handler against a real NATS server (JetStream), a real MongoDB-wire server and a real SMTP
server (aiosmtpd): notifications as Alertmanager posts them become kept alerts and actions that run once
per firing, each recorded by an ``alert.action.taken`` event. The services the actions call (jobs,
scheduler, auth) answer here as small responders on the same bus, recording what they were asked."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from prometheus_client import REGISTRY

from pai_common.bus import Bus
from pai_common.contract.base import RpcRequest
from pai_common.contract.events import AlertActionTaken
from pai_common.contract.rpc import (
    AlertListReply,
    AlertsReceivedReply,
    AlertsReceivedRequest,
    GetUserRequest,
    JobExecutionTypeRequest,
    JobMutationReply,
    JobTagRequest,
    ListAlertsRequest,
    NodeReply,
    ReceivedAlert,
    SetNodeSchedulableRequest,
    UserReply,
)
from pai_common.embedded import ServerProcess, free_port
from pai_common.errors import NoJobError
from pai_common.service import ServiceApp
from pai_common.testing import EventRecorder
from pai_monitoring.shell import ACTIONS, MonitoringSettings, build_app

ACTIONS_YAML = """
rules:
  - match: {alertname: PaiJobGpuIdle}
    actions: [email-user, email-admin, stop-jobs, {tag-jobs: stopped-by-alert-manager}]
  - match: {alertname: PaiGpuEccErrors}
    actions: [cordon-nodes]
  - match: {alertname: PaiGoneJob}
    actions: [stop-jobs]
  - match: {alertname: PaiExtension}
    actions: [{webhook: "http://127.0.0.1:%d/hook"}]
"""


@dataclass
class Mailbox:
    messages: list[tuple[list[str], str]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((list(envelope.rcpt_tos), envelope.content.decode()))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    yield box, port
    controller.stop()


@pytest.fixture
def hook() -> Iterator[tuple[list[dict[str, Any]], int]]:
    calls: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            calls.append(
                {"key": self.headers["Idempotency-Key"], "body": json.loads(self.rfile.read(length))}
            )
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield calls, server.server_address[1]
    server.shutdown()


class Responders:
    """Jobs, scheduler and auth, as far as the actions need them: answer and remember the request."""

    def __init__(self) -> None:
        self.asked: list[RpcRequest] = []
        self.app: ServiceApp

    async def start(self, settings: MonitoringSettings) -> None:
        self.app = ServiceApp("responders", settings)
        self.app.rpc(
            {
                JobExecutionTypeRequest: self.stop,
                JobTagRequest: self.tag,
                SetNodeSchedulableRequest: self.cordon,
                GetUserRequest: self.user,
            }
        )
        await self.app.start()

    async def stop(self, req: JobExecutionTypeRequest) -> JobMutationReply:
        if req.job_key == "alice~gone":
            raise NoJobError(f"Job {req.job_key} is not found.")
        self.asked.append(req)
        return JobMutationReply(message="ok")

    async def tag(self, req: JobTagRequest) -> JobMutationReply:
        self.asked.append(req)
        return JobMutationReply(message="ok")

    async def cordon(self, req: SetNodeSchedulableRequest) -> NodeReply:
        self.asked.append(req)
        return NodeReply(node={"name": req.node, "schedulable": req.schedulable})

    async def user(self, req: GetUserRequest) -> UserReply:
        self.asked.append(req)
        return UserReply(user={"username": req.username, "email": f"{req.username}@example.org"})


def firing(alertname: str, starts_at: str = "2026-12-01T10:00:00Z", **labels: str) -> ReceivedAlert:
    return ReceivedAlert(
        status="firing",
        labels={"alertname": alertname, **labels},
        annotations={"summary": f"{alertname} fired"},
        starts_at=starts_at,
        fingerprint=uuid.uuid5(uuid.NAMESPACE_URL, alertname + str(sorted(labels.items()))).hex[:16],
    )


async def wait_for(check: Any, timeout: float = 20) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.05)


async def test_notifications_become_alerts_and_actions_that_run_once(
    fresh_nats: ServerProcess,
    mongo_server: ServerProcess,
    fresh_bus: Bus,
    tmp_path: Path,
    smtp: tuple[Mailbox, int],
    hook: tuple[list[dict[str, Any]], int],
) -> None:
    box, smtp_port = smtp
    calls, hook_port = hook
    config = tmp_path / "actions.yaml"
    config.write_text(ACTIONS_YAML % hook_port)
    settings = MonitoringSettings(
        nats_url=fresh_nats.url,
        mongo_url=mongo_server.url,
        data_dir=tmp_path,
        alert_actions=config,
        smtp_host="127.0.0.1",
        smtp_port=smtp_port,
        smtp_from="pai@example.org",
        alert_admin_emails="ops@example.org, lead@example.org",
        action_retry_s=0.1,
    )
    events = await EventRecorder(fresh_bus).start()
    responders = Responders()
    await responders.start(settings)
    app = build_app(settings)
    app.name = f"mon{uuid.uuid4().hex[:8]}"  # a database of this test's own
    await app.start()
    try:
        idle = firing("PaiJobGpuIdle", job_name="alice~train", username="alice", node="node-0")
        ecc = firing("PaiGpuEccErrors", node="node-1", gpu="2")
        gone = firing("PaiGoneJob", job_name="alice~gone")
        ext = firing("PaiExtension", job_name="bob~x", username="bob")
        notification = AlertsReceivedRequest(
            receiver="pai", status="firing", alerts=[idle, ecc, gone, ext], actor="admin"
        )
        reply = await fresh_bus.request(notification, AlertsReceivedReply)
        assert (reply.alerts, reply.actions) == (4, 7)
        # Alertmanager repeats itself (repeat_interval, group changes): nothing new is scheduled.
        again = await fresh_bus.request(notification, AlertsReceivedReply)
        assert (again.alerts, again.actions) == (4, 0)

        async def all_finished() -> bool:
            open_ = await app.db[ACTIONS].count_documents({"status": {"$in": ["pending", "running"]}})
            return open_ == 0 and await app.db[ACTIONS].count_documents({}) == 7

        await wait_for(all_finished)
        outcomes = {
            (d["kind"], d["labels"]["alertname"]): d["status"] async for d in app.db[ACTIONS].find({})
        }
        assert outcomes == {
            ("email-user", "PaiJobGpuIdle"): "done",
            ("email-admin", "PaiJobGpuIdle"): "done",
            ("stop-jobs", "PaiJobGpuIdle"): "done",
            ("tag-jobs", "PaiJobGpuIdle"): "done",
            ("cordon-nodes", "PaiGpuEccErrors"): "done",
            ("stop-jobs", "PaiGoneJob"): "failed",  # NoJobError: no retry can fix it
            ("webhook", "PaiExtension"): "done",
        }
        stops = [r for r in responders.asked if isinstance(r, JobExecutionTypeRequest)]
        assert [(r.job_key, r.value, r.username, r.admin) for r in stops] == [
            ("alice~train", "STOP", "alert-handler", True)
        ]
        tags = [r for r in responders.asked if isinstance(r, JobTagRequest)]
        assert [(r.job_key, r.tag) for r in tags] == [("alice~train", "stopped-by-alert-manager")]
        cordons = [r for r in responders.asked if isinstance(r, SetNodeSchedulableRequest)]
        assert [(r.node, r.schedulable, r.drain, r.by) for r in cordons] == [
            ("node-1", False, False, "alert-handler")
        ]
        recipients = sorted(tuple(sorted(to)) for to, _ in box.messages)
        assert recipients == [("alice@example.org",), ("lead@example.org", "ops@example.org")]
        assert all("PaiJobGpuIdle" in text and "alice~train" in text for _, text in box.messages)
        assert len(calls) == 1 and calls[0]["body"]["alert"]["labels"]["job_name"] == "bob~x"
        assert calls[0]["key"].endswith(f":webhook:http://127.0.0.1:{hook_port}/hook")

        # Every outcome is announced for the audit log, once, with the reason of a failure.
        for _ in range(7):
            await events.wait_until(lambda e: isinstance(e, AlertActionTaken), what="an action record")
        await events.drain()
        taken = events.of(AlertActionTaken)
        assert len(taken) == 7
        failed = [t for t in taken if t.outcome == "failed"]
        assert [(t.action, t.target) for t in failed] == [("stop-jobs", "alice~gone")]
        assert "NoJobError" in failed[0].detail
        assert all("@" not in t.target for t in taken)  # mail addresses stay out of the audit log

        # The alerts as OpenPAI's GET /api/v2/alerts answers them: everything for an admin, a user's own.
        admin = await fresh_bus.request(ListAlertsRequest(username="root", admin=True), AlertListReply)
        assert len(admin.alerts) == 4
        alice = await fresh_bus.request(ListAlertsRequest(username="alice", admin=False), AlertListReply)
        assert [a["labels"]["alertname"] for a in alice.alerts] == ["PaiJobGpuIdle"]

        # Resolved: no longer listed; firing again later is a new firing whose actions run again.
        resolved = idle.model_copy(update={"status": "resolved", "ends_at": "2026-12-01T11:00:00Z"})
        await fresh_bus.request(
            AlertsReceivedRequest(receiver="pai", status="resolved", alerts=[resolved], actor="admin"),
            AlertsReceivedReply,
        )
        alice = await fresh_bus.request(ListAlertsRequest(username="alice", admin=False), AlertListReply)
        assert alice.alerts == []
        later = idle.model_copy(update={"starts_at": "2026-12-01T12:00:00Z"})
        reply = await fresh_bus.request(
            AlertsReceivedRequest(receiver="pai", status="firing", alerts=[later], actor="admin"),
            AlertsReceivedReply,
        )
        assert reply.actions == 4
    finally:
        await app.stop()
        await responders.app.stop()


async def test_dead_letters_are_counted_by_service_and_consumer(
    fresh_nats: ServerProcess, mongo_server: ServerProcess, fresh_bus: Bus, tmp_path: Path
) -> None:
    settings = MonitoringSettings(
        nats_url=fresh_nats.url, mongo_url=mongo_server.url, data_dir=tmp_path, dead_letters_s=0.1
    )
    app = build_app(settings)
    app.name = f"mon{uuid.uuid4().hex[:8]}"
    await app.start()
    try:
        # Consumer names of this test only: the registry is the process's, other tests count theirs too.
        first, second = f"orchestrator{uuid.uuid4().hex[:6]}", f"jobs{uuid.uuid4().hex[:6]}"
        for _ in range(2):
            await fresh_bus.dead_letter(first, {"ce-type": "x"}, b"{}", "boom")
        await fresh_bus.dead_letter(second, {"ce-type": "x"}, b"{}", "boom")

        def count(consumer: str) -> float | None:
            return REGISTRY.get_sample_value(
                "pai_bus_dead_letters", {"consumer_service": "test", "consumer": consumer}
            )

        async def counted() -> bool:
            return count(first) is not None and count(second) is not None

        await wait_for(counted)
        assert (count(first), count(second)) == (2, 1)
    finally:
        await app.stop()


def test_a_bad_action_file_stops_the_service_with_its_error(tmp_path: Path) -> None:
    bad = tmp_path / "actions.yaml"
    bad.write_text("rules: [{match: {}, actions: [reboot]}]\n")
    with pytest.raises(Exception, match="unknown action 'reboot'"):
        build_app(MonitoringSettings(data_dir=tmp_path, alert_actions=bad))
