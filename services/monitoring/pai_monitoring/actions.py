"""Running one alert action: mail, stop or tag a job, cordon a node, call an extension's webhook.

Each action either succeeds (a line saying what it did), fails for good (``ActionFailed``: the alert lacks
the label the action needs, the job is gone, nobody has an address) or fails for now (anything else:
the service or server did not answer; it is tried again later). Stop, tag and cordon are idempotent where
they land; a mail or a webhook call may be repeated if the handler dies between doing it and recording it
(the webhook gets the action's id in ``Idempotency-Key`` to recognise a repeat).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import httpx

from pai_common.bus import Bus
from pai_common.contract.rpc import (
    GetUserRequest,
    JobExecutionTypeRequest,
    JobMutationReply,
    JobTagRequest,
    NodeReply,
    SetNodeSchedulableRequest,
    UserReply,
)
from pai_common.errors import (
    ForbiddenUserError,
    InvalidParametersError,
    NoJobError,
    NoNodeError,
    NoUserError,
)
from pai_monitoring import alerts, mailer

# Errors no retry can fix.
PERMANENT = (NoJobError, NoNodeError, NoUserError, InvalidParametersError, ForbiddenUserError)


class ActionFailed(Exception):
    """The action cannot succeed, however often it is tried."""


@dataclass(frozen=True)
class Toolbox:
    bus: Bus
    actor: str
    smtp: mailer.SmtpConfig | None
    admin_emails: Sequence[str]
    webhook_timeout_s: float = 10.0
    rpc_timeout_s: float = 5.0


@dataclass(frozen=True)
class Action:
    id: str
    kind: str
    param: str
    alertname: str
    status: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at: str
    fingerprint: str

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> Action:
        return cls(
            id=str(doc["_id"]),
            kind=str(doc["kind"]),
            param=str(doc.get("param", "")),
            alertname=str(doc["labels"].get("alertname", "")),
            status=str(doc.get("alert_status", "firing")),
            labels=dict(doc["labels"]),
            annotations=dict(doc.get("annotations", {})),
            starts_at=str(doc["starts_at"]),
            fingerprint=str(doc["fingerprint"]),
        )

    def target(self) -> str:
        """What the action acts on, as the audit log names it (never a mail address)."""
        if self.kind in ("stop-jobs", "tag-jobs"):
            return self.labels.get("job_name", "")
        if self.kind == "cordon-nodes":
            return alerts.node_of(self.labels) or ""
        if self.kind == "email-user":
            return alerts.job_owner(self.labels) or ""
        if self.kind == "email-admin":
            return "admins"
        return urlparse(self.param).netloc


async def run(action: Action, tools: Toolbox) -> str:
    try:
        return await _run(action, tools)
    except PERMANENT as err:
        raise ActionFailed(f"{err.code}: {err.message}") from err


async def _run(action: Action, tools: Toolbox) -> str:
    if action.kind == "stop-jobs":
        job = _job(action)
        req = JobExecutionTypeRequest(job_key=job, value="STOP", username=tools.actor, admin=True)
        await tools.bus.request(req, JobMutationReply, timeout=tools.rpc_timeout_s)
        return f"stop of job {job} requested"
    if action.kind == "tag-jobs":
        job = _job(action)
        tag = JobTagRequest(job_key=job, tag=action.param, username=tools.actor, admin=True)
        await tools.bus.request(tag, JobMutationReply, timeout=tools.rpc_timeout_s)
        return f"job {job} tagged {action.param}"
    if action.kind == "cordon-nodes":
        node = alerts.node_of(action.labels)
        if not node:
            raise ActionFailed("the alert has no node (or node_name) label")
        drain = action.param == "drain"
        cordon = SetNodeSchedulableRequest(
            node=node, schedulable=False, drain=drain, by=tools.actor, reason=f"alert {action.alertname}"
        )
        await tools.bus.request(cordon, NodeReply, timeout=tools.rpc_timeout_s)
        return f"node {node} {'drained' if drain else 'cordoned'}"
    if action.kind == "email-admin":
        if not tools.admin_emails:
            raise ActionFailed("no admin address is configured (PAI_ALERT_ADMIN_EMAILS)")
        await _mail(action, tools, list(tools.admin_emails))
        return f"mailed {len(tools.admin_emails)} admin address(es)"
    if action.kind == "email-user":
        owner = alerts.job_owner(action.labels)
        if not owner:
            raise ActionFailed("the alert names no user (username or job_name label)")
        reply = await tools.bus.request(
            GetUserRequest(actor=tools.actor, username=owner), UserReply, timeout=tools.rpc_timeout_s
        )
        email = str(reply.user.get("email") or "")
        if not email:
            raise ActionFailed(f"user {owner} has no email address")
        await _mail(action, tools, [email])
        return f"mailed user {owner}"
    if action.kind == "webhook":
        return await _webhook(action, tools)
    raise ActionFailed(f"unknown action {action.kind}")


def _job(action: Action) -> str:
    job = action.labels.get("job_name", "")
    if "~" not in job:
        raise ActionFailed("the alert has no job_name label (user~name)")
    return job


async def _mail(action: Action, tools: Toolbox, to: list[str]) -> None:
    if tools.smtp is None:
        raise ActionFailed("no SMTP server is configured (PAI_SMTP_HOST)")
    msg = mailer.compose(
        tools.smtp.sender,
        to,
        action.alertname,
        action.status,
        action.labels,
        action.annotations,
        action.starts_at,
    )
    await asyncio.to_thread(mailer.send, tools.smtp, msg)


async def _webhook(action: Action, tools: Toolbox) -> str:
    body = {
        "action": action.id,
        "alert": {
            "status": action.status,
            "labels": dict(action.labels),
            "annotations": dict(action.annotations),
            "startsAt": action.starts_at,
            "fingerprint": action.fingerprint,
        },
    }
    async with httpx.AsyncClient(timeout=tools.webhook_timeout_s) as client:
        response = await client.post(action.param, json=body, headers={"Idempotency-Key": action.id})
    if 400 <= response.status_code < 500:
        raise ActionFailed(f"the webhook answered {response.status_code}")
    response.raise_for_status()  # 5xx: tried again later
    return f"webhook answered {response.status_code}"
