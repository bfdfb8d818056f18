"""The monitoring shell: the alert handler (alerts kept, actions run and audited) and the dead letters.

The platform's own state is exported by the services that own it (the scheduler its cells and nodes, the
jobs service its jobs, the orchestrator what happens to them, the agents their nodes); this service
consumes no per-job event. It counts the dead letters, receives Alertmanager's notifications (through the
gateway's webhook route), keeps the alerts, and runs the actions configured for them.

An action is stored once per firing of its alert (its id is the alert's fingerprint, the firing's start
and the action), in the same transaction as the alert, so a repeated notification schedules nothing
new. A worker runs the pending ones, retries those that failed for now (with a growing pause, up to
``action_attempts``), and records the outcome with an ``alert.action.taken`` event that auth keeps in the
audit log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr
from pymongo import ReturnDocument, UpdateOne

from pai_common.bus import DEAD_LETTER_STREAM
from pai_common.consumer import HandlerContext
from pai_common.contract.base import DEAD_LETTER_PREFIX
from pai_common.contract.events import AlertActionTaken
from pai_common.contract.rpc import (
    AlertListReply,
    AlertsReceivedReply,
    AlertsReceivedRequest,
    ListAlertsRequest,
    ReceivedAlert,
)
from pai_common.metrics import gauge_family, register_snapshot
from pai_common.service import ServiceApp
from pai_common.settings import Settings
from pai_monitoring import actions, actions_config, alerts, mailer

log = logging.getLogger(__name__)

ALERTS = "alerts"
ACTIONS = "alert_actions"

DEAD_LETTERS = (
    "pai_bus_dead_letters",
    "Messages in the dead-letter stream, by the service and consumer that gave up on them.",
    ("consumer_service", "consumer"),
)
DEAD_LETTER_COLLECTOR = register_snapshot(lambda: [gauge_family(*DEAD_LETTERS, ())])


class MonitoringSettings(Settings):
    # Which actions run for which alerts (actions_config.py); unset: mail the admins about every alert
    # when mail is configured, nothing otherwise.
    alert_actions: Path | None = None
    # The name actions are taken in (jobs' stop requests, cordons, the audit log).
    alert_actor: str = Field(default="alert-handler", min_length=1, max_length=64)
    alert_admin_emails: str = ""  # comma-separated
    smtp_host: str = ""
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_from: str = "openpai@localhost"
    smtp_username: str = ""
    smtp_password: SecretStr = SecretStr("")
    smtp_starttls: bool = False
    action_attempts: int = Field(default=5, ge=1)
    action_retry_s: float = Field(default=5.0, gt=0)
    action_lease_s: float = Field(default=120.0, gt=0)
    webhook_timeout_s: float = Field(default=10.0, gt=0)
    dead_letters_s: float = Field(default=15.0, gt=0)

    def smtp(self) -> mailer.SmtpConfig | None:
        if not self.smtp_host:
            return None
        return mailer.SmtpConfig(
            host=self.smtp_host,
            port=self.smtp_port,
            sender=self.smtp_from,
            username=self.smtp_username,
            password=self.smtp_password.get_secret_value(),
            starttls=self.smtp_starttls,
        )

    def admin_emails(self) -> list[str]:
        return [e.strip() for e in self.alert_admin_emails.split(",") if e.strip()]

    def action_config(self) -> actions_config.ActionConfig:
        if self.alert_actions is not None:
            return actions_config.load(self.alert_actions)
        return actions_config.DEFAULT_WITH_MAIL if self.smtp_host else actions_config.ActionConfig()


def now_ms() -> int:
    return int(time.time() * 1000)


class Monitoring:
    def __init__(self, app: ServiceApp, settings: MonitoringSettings) -> None:
        self.app = app
        self.settings = settings
        # Read at start: a bad file stops the service with the file's error rather than run no actions.
        self.config = settings.action_config()
        self._wake = asyncio.Event()
        app.rpc({AlertsReceivedRequest: self.received, ListAlertsRequest: self.list_alerts})
        app.on_startup(self._indexes)
        app.background(self.run_actions_forever)
        app.background(self.count_dead_letters_forever)

    async def _indexes(self, app: ServiceApp) -> None:
        await app.db[ACTIONS].create_index([("status", 1), ("next_at", 1)])
        await app.db[ALERTS].create_index("status")

    # ---- alerts in -------------------------------------------------------------------------------------

    async def received(self, req: AlertsReceivedRequest) -> AlertsReceivedReply:
        at = now_ms()
        counts = {"alerts": 0, "actions": 0}

        async def store(tx: HandlerContext) -> None:
            counts.update(alerts=0, actions=0)
            for alert in req.alerts:
                key = alerts.fingerprint(alert)
                before = await tx.db[ALERTS].find_one({"_id": key}, {"starts_at": 1}, session=tx.session)
                if not alerts.newer_or_same(before, alert):
                    continue  # a late notification of an earlier firing
                doc = alerts.stored(alert, req.receiver, at)
                await tx.db[ALERTS].replace_one({"_id": key}, doc, upsert=True, session=tx.session)
                counts["alerts"] += 1
                if alert.status != "firing":
                    continue
                writes = [
                    UpdateOne(
                        {"_id": f"{key}:{alert.starts_at}:{spec.key}"},
                        {"$setOnInsert": self._action_doc(key, alert, spec, req.actor, at)},
                        upsert=True,
                    )
                    for spec in self.config.actions_for(alert.labels)
                ]
                if writes:
                    result = await tx.db[ACTIONS].bulk_write(writes, session=tx.session)
                    counts["actions"] += result.upserted_count

        await self.app.transact(store)
        if counts["actions"]:
            self._wake.set()
        log.info("alert notification received", extra={"receiver": req.receiver, **counts})
        return AlertsReceivedReply(alerts=counts["alerts"], actions=counts["actions"])

    @staticmethod
    def _action_doc(
        key: str, alert: ReceivedAlert, spec: actions_config.ActionSpec, notified_by: str, at: int
    ) -> dict[str, Any]:
        return {
            "fingerprint": key,
            "kind": spec.kind,
            "param": spec.param,
            "labels": dict(alert.labels),
            "annotations": dict(alert.annotations),
            "starts_at": alert.starts_at,
            "alert_status": alert.status,
            "notified_by": notified_by,
            "status": "pending",
            "attempts": 0,
            "next_at": at,
            "created_at": at,
        }

    async def list_alerts(self, req: ListAlertsRequest) -> AlertListReply:
        docs = self.app.db[ALERTS].find({"status": "firing"}).sort("starts_at", 1)
        return AlertListReply(
            alerts=[
                alerts.view(d) async for d in docs if alerts.visible_to(d["labels"], req.username, req.admin)
            ]
        )

    # ---- actions ---------------------------------------------------------------------------------------

    def toolbox(self) -> actions.Toolbox:
        s = self.settings
        return actions.Toolbox(
            bus=self.app.bus,
            actor=s.alert_actor,
            smtp=s.smtp(),
            admin_emails=s.admin_emails(),
            webhook_timeout_s=s.webhook_timeout_s,
        )

    async def run_actions_forever(self) -> None:
        while True:
            try:
                while await self.run_one():
                    pass
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("alert actions not run", extra={"error": repr(exc)})
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=1.0)
            except TimeoutError:
                pass

    async def run_one(self) -> bool:
        """Claim one due action and run it; False when none is due."""
        at = now_ms()
        doc = await self.app.db[ACTIONS].find_one_and_update(
            {
                "$or": [
                    {"status": "pending", "next_at": {"$lte": at}},
                    # A handler that died while running it: its lease ran out.
                    {"status": "running", "lease_until": {"$lte": at}},
                ]
            },
            {
                "$set": {"status": "running", "lease_until": at + int(self.settings.action_lease_s * 1000)},
                "$inc": {"attempts": 1},
            },
            sort=[("next_at", 1)],
            return_document=ReturnDocument.AFTER,
        )
        if doc is None:
            return False
        action = actions.Action.from_doc(doc)
        try:
            detail = await actions.run(action, self.toolbox())
            outcome: str | None = "done"
        except actions.ActionFailed as exc:
            detail, outcome = str(exc), "failed"
        except Exception as exc:  # for now: tried again, up to the attempts allowed
            detail = f"{type(exc).__name__}: {exc}"[:500]
            outcome = "failed" if doc["attempts"] >= self.settings.action_attempts else None
        await self._record(doc, action, outcome, detail)
        return True

    async def _record(
        self, doc: dict[str, Any], action: actions.Action, outcome: str | None, detail: str
    ) -> None:
        at = now_ms()
        if outcome is None:
            pause = self.settings.action_retry_s * 2 ** (doc["attempts"] - 1)
            update: dict[str, Any] = {"status": "pending", "next_at": at + int(pause * 1000), "error": detail}
            log.warning("alert action failed; will retry", extra={"action": action.id, "error": detail})
        else:
            update = {"status": outcome, "finished_at": at, "detail": detail}
            log.info("alert action " + outcome, extra={"action": action.id, "detail": detail})

        async def write(tx: HandlerContext) -> None:
            await tx.db[ACTIONS].update_one({"_id": doc["_id"]}, {"$set": update}, session=tx.session)
            if outcome is not None:
                tx.out.event(
                    AlertActionTaken(
                        alertname=action.alertname,
                        fingerprint=action.fingerprint,
                        action=action.kind + (f":{action.param}" if action.kind == "tag-jobs" else ""),
                        target=action.target(),
                        outcome="done" if outcome == "done" else "failed",
                        detail=detail[:2000],
                        actor=self.settings.alert_actor,
                        at=at,
                    ),
                    msg_id=f"action:{action.id}",
                )

        await self.app.transact(write)

    # ---- dead letters ----------------------------------------------------------------------------------

    async def count_dead_letters_forever(self) -> None:
        while True:
            try:
                await self.count_dead_letters()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("dead letters not counted", extra={"error": repr(exc)})
            await asyncio.sleep(self.settings.dead_letters_s)

    async def count_dead_letters(self) -> None:
        info = await self.app.bus.js.stream_info(
            DEAD_LETTER_STREAM, subjects_filter=f"{DEAD_LETTER_PREFIX}.>"
        )
        rows = []
        for subject, n in sorted((info.state.subjects or {}).items()):
            parts = subject.split(".")  # pai.dlq.<service>.<consumer>
            if len(parts) >= 4:
                rows.append(((parts[2], ".".join(parts[3:])), float(n)))
        DEAD_LETTER_COLLECTOR.publish([gauge_family(*DEAD_LETTERS, rows)])


def build_app(settings: MonitoringSettings | None = None) -> ServiceApp:
    settings = settings or MonitoringSettings()
    app = ServiceApp("monitoring", settings)
    Monitoring(app, settings)
    return app


def main() -> None:
    build_app().run()
